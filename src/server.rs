//! The listeners: accept connections, serve the apps, shut down cleanly on a signal.
//!
//! Owns the connection-level limits: the cap on open connections (a semaphore; one over it
//! gets a single JSON 503 and is closed), the cap per client address (one over it gets a
//! single JSON 429 and is closed), the header-read timeout and the hard cap on a request
//! head (hyper's own), and the idle timeout (no byte either way for
//! `limits.idle_timeout_ms`); and, for the binary, fitting the cap to the process's
//! open-files limit ([`fit_open_files`]). Refused connections are counted in
//! `gateway_refusals_total` and logged at most once a second. The public listener speaks
//! HTTP/1.1 and, over TLS (`tls`) or with `server.h2c`, HTTP/2 (`conn`); idle HTTP/1.1
//! connections are parked without buffers (`park`). Shutdown stops accepting, asks every
//! connection to finish its in-flight request and close (idle and parked keep-alive
//! connections close at once), cancels `Gateway::shutdown` for background work, and gives up waiting after
//! `server.shutdown_deadline_ms`. It must not know about routes or the Web API.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::admin::AdminConfig;
use crate::error::Error;
use crate::telemetry::sample::{sampled, Sample};
use crate::telemetry::{OPEN_CONNECTIONS, REFUSALS};
use crate::{app, Gateway};

mod config;
mod conn;
mod park;
pub mod tls;
pub use config::ServerConfig;
use conn::{Listener, Protocols};
use park::{Activity, Route, Serve};

/// Connections past the cap that still get their JSON 503, at most at once; beyond these a
/// connection is closed without a reply.
pub const OVERFLOW_REPLIES: usize = 64;

/// The admin listener's own connection cap.
pub const ADMIN_CONNECTIONS: usize = 64;

/// Binds the public address; separate from [`serve`] so callers learn the bound port.
pub async fn bind(server: &ServerConfig) -> io::Result<TcpListener> {
    TcpListener::bind(server.listen).await
}

/// Binds the admin address, when the admin listener is enabled.
pub async fn bind_admin(admin: &AdminConfig) -> io::Result<Option<TcpListener>> {
    if !admin.enabled {
        return Ok(None);
    }
    TcpListener::bind(admin.listen).await.map(Some)
}

/// Serves the public listener until SIGINT/SIGTERM, then shuts down.
pub async fn serve(listener: TcpListener, gw: Arc<Gateway>) -> io::Result<()> {
    serve_with(listener, None, gw, shutdown_signal()).await
}

/// Serves the public and (when given) admin listeners until `signal` completes, then shuts
/// down within `server.shutdown_deadline_ms`.
pub async fn serve_with(
    public: TcpListener,
    admin: Option<TcpListener>,
    gw: Arc<Gateway>,
    signal: impl Future<Output = ()>,
) -> io::Result<()> {
    let addr: SocketAddr = public.local_addr()?;
    let admin_addr = admin.as_ref().map(|l| l.local_addr()).transpose()?;
    tracing::info!(
        %addr,
        admin = %admin_addr.map_or("off".into(), |a| a.to_string()),
        instances = gw.router().instances().len(),
        workers = tokio::runtime::Handle::current().metrics().num_workers(),
        "webapi-gateway listening"
    );
    crate::telemetry::handle();
    let limits = &gw.config.limits;
    let server = &gw.config.server;
    let (tls, certs) = match &server.tls {
        Some(config) => {
            let invalid = |e: config_types::Invalid| {
                io::Error::new(io::ErrorKind::InvalidInput, e.within("server").to_string())
            };
            let certs = tls::Certs::load(config).map_err(invalid)?;
            let acceptor = certs
                .acceptor()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            (Some((acceptor, config.handshake_timeout)), Some(certs))
        }
        None => (None, None),
    };
    let reloading = certs.map(|certs| {
        tracing::info!(cert_file = %certs.config.cert_file.display(), "TLS on, HTTP/2 offered through ALPN");
        tokio::spawn(crate::reload::watch_certs(certs, crate::reload::POLL))
    });
    let trimming = (!server.park_idle.is_zero()).then(|| tokio::spawn(park::trim_after_parking()));
    let public_listener = Arc::new(Listener {
        tls,
        h2c: server.h2c,
        park: (!server.park_idle.is_zero()).then_some(server.park_idle),
    });
    let admin_listener = Arc::new(Listener {
        tls: None,
        h2c: false,
        park: None,
    });
    let conns = Connections {
        protocols: Arc::new(Protocols::new(limits)),
        tracker: TaskTracker::new(),
    };
    let public_app = app(Arc::clone(&gw));
    let admin_app = crate::admin::app(Arc::clone(&gw));
    let public_caps = Caps {
        permits: Arc::new(Semaphore::new(limits.max_connections.get())),
        per_address: (limits.max_connections_per_ip > 0)
            .then(|| PerAddress::new(limits.max_connections_per_ip)),
    };
    let admin_caps = Caps {
        permits: Arc::new(Semaphore::new(ADMIN_CONNECTIONS)),
        per_address: None,
    };
    let overflow = Arc::new(Semaphore::new(OVERFLOW_REPLIES));
    tokio::pin!(signal);
    loop {
        let admin_accept = async {
            match &admin {
                Some(l) => l.accept().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            accepted = public.accept() => match accepted {
                Ok((stream, remote)) => conns.accept(stream, remote, &public_listener, &public_app, &public_caps, &overflow),
                Err(e) => accept_error(e).await,
            },
            accepted = admin_accept => match accepted {
                Ok((stream, remote)) => conns.accept(stream, remote, &admin_listener, &admin_app, &admin_caps, &overflow),
                Err(e) => accept_error(e).await,
            },
            () = &mut signal => break,
        }
    }
    drop(public);
    drop(admin);
    for task in [reloading, trimming].into_iter().flatten() {
        task.abort();
    }
    tracing::info!("shutting down: finishing in-flight requests");
    gw.shutdown.cancel();
    gw.tasks.close();
    let deadline = gw.config.server.shutdown_deadline;
    let drained = tokio::time::timeout(deadline, async {
        // Parked connections close at once; the others finish their request and close.
        conns.protocols.shutdown.cancel();
        conns.tracker.close();
        conns.tracker.wait().await;
        gw.tasks.wait().await;
    })
    .await;
    match drained {
        Ok(()) => tracing::info!("shut down cleanly"),
        Err(_) => tracing::warn!(
            deadline_ms = deadline.as_millis() as u64,
            "shutdown deadline passed; exiting with work still open"
        ),
    }
    Ok(())
}

/// Too many open files and the like: wait a little rather than spin (and log it once a
/// second, not once per failed accept).
async fn accept_error(e: io::Error) {
    metrics::counter!(REFUSALS, "reason" => "accept_failed").increment(1);
    if let Some(suppressed) = sampled(Sample::Reason("accept_failed")) {
        tracing::warn!(error = %e, suppressed, "accept failed");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// A listener's connection caps: the whole listener's, and one client address's.
struct Caps {
    permits: Arc<Semaphore>,
    per_address: Option<Arc<PerAddress>>,
}

/// Open connections per client address (as `limits::address_key` counts addresses), at
/// most `cap` each. Only addresses with an open connection are remembered, so the map is
/// bounded by the connection cap.
struct PerAddress {
    open: Mutex<HashMap<IpAddr, u32>>,
    cap: u32,
}

/// One connection's place in [`PerAddress`], given back when the connection ends.
struct AddressPermit {
    of: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    fn new(cap: u32) -> Arc<PerAddress> {
        Arc::new(PerAddress {
            open: Mutex::new(HashMap::new()),
            cap,
        })
    }

    fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<AddressPermit> {
        let ip = crate::edge::limits::address_key(ip);
        let mut open = self.open.lock();
        let count = open.entry(ip).or_insert(0);
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(AddressPermit {
            of: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for AddressPermit {
    fn drop(&mut self) {
        let mut open = self.of.open.lock();
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// How connections are admitted and served.
struct Connections {
    protocols: Arc<Protocols>,
    tracker: TaskTracker,
}

impl Connections {
    /// Admits `stream` past the caps (or refuses it: one JSON reply, then closed) and
    /// serves it on its own task.
    fn accept(
        &self,
        stream: TcpStream,
        remote: SocketAddr,
        listener: &Arc<Listener>,
        app: &Router,
        caps: &Caps,
        overflow: &Arc<Semaphore>,
    ) {
        let _ = stream.set_nodelay(true);
        let address = match &caps.per_address {
            Some(per_address) => match per_address.try_acquire(remote.ip()) {
                Some(permit) => Some(permit),
                None => {
                    return self.refuse(
                        stream,
                        remote,
                        listener,
                        overflow,
                        "connections_ip",
                        || Error::TooManyConnectionsFromClient,
                    )
                }
            },
            None => None,
        };
        let Ok(permit) = Arc::clone(&caps.permits).try_acquire_owned() else {
            drop(address);
            return self.refuse(stream, remote, listener, overflow, "connections", || {
                Error::TooManyConnections
            });
        };
        let service = Serve {
            route: Route::App(app.clone()),
            remote,
            activity: Activity::new(),
        };
        let (protocols, listener) = (Arc::clone(&self.protocols), Arc::clone(listener));
        self.tracker.spawn(async move {
            metrics::gauge!(OPEN_CONNECTIONS).increment(1.0);
            protocols.serve(stream, &listener, service).await;
            metrics::gauge!(OPEN_CONNECTIONS).decrement(1.0);
            drop(permit);
            drop(address);
        });
    }

    /// A connection past a cap: counted, then one JSON reply (while fewer than
    /// [`OVERFLOW_REPLIES`] are being sent; closed without one past that) and closed. One
    /// WARN line a second at most says that a cap is being hit.
    fn refuse(
        &self,
        stream: TcpStream,
        remote: SocketAddr,
        listener: &Arc<Listener>,
        overflow: &Arc<Semaphore>,
        reason: &'static str,
        error: fn() -> Error,
    ) {
        metrics::counter!(REFUSALS, "reason" => reason).increment(1);
        if let Some(suppressed) = sampled(Sample::Reason(reason)) {
            tracing::warn!(
                reason,
                suppressed,
                "connection refused: a connection cap is reached"
            );
        }
        let Ok(permit) = Arc::clone(overflow).try_acquire_owned() else {
            return;
        };
        let service = Serve {
            route: Route::Refuse(error),
            remote,
            activity: Activity::new(),
        };
        let (protocols, listener) = (Arc::clone(&self.protocols), Arc::clone(listener));
        self.tracker.spawn(async move {
            protocols.serve(stream, &listener, service).await;
            drop(permit);
        });
    }
}

/// SIGINT (Ctrl-C) or SIGTERM. The handlers are installed when this is called, not when
/// the future is first polled, so a signal that comes right after start-up is not missed
/// (nor kills the process outright).
pub fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let interrupt = signal(SignalKind::interrupt());
        async move {
            match (term, interrupt) {
                (Ok(mut term), Ok(mut interrupt)) => {
                    tokio::select! {
                        _ = term.recv() => {},
                        _ = interrupt.recv() => {},
                    }
                }
                _ => {
                    tracing::warn!("cannot install signal handlers; stop with SIGKILL");
                    std::future::pending::<()>().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Descriptors the process needs besides client connections: the admin listener's
/// connections, the overflow replies, and a margin for everything else (listeners, backend
/// connections, e-mail spool files, logs, DNS).
pub const OPEN_FILES_HEADROOM: u64 = (ADMIN_CONNECTIONS + OVERFLOW_REPLIES) as u64 + 256;

/// What [`fit_open_files`] did: the open-files soft limit before and after, and the
/// connection cap that fits it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFiles {
    pub soft_before: u64,
    pub soft: u64,
    pub hard: u64,
    /// `limits.max_connections` as configured, and as it fits.
    pub wanted: usize,
    pub max_connections: usize,
}

impl OpenFiles {
    /// Whether the cap had to be lowered to fit.
    pub fn lowered(&self) -> bool {
        self.max_connections < self.wanted
    }
}

/// The soft limit to ask for: enough for `wanted` connections and the headroom, up to the
/// hard limit; never lower than it already is.
pub fn soft_limit_for(wanted: usize, soft: u64, hard: u64) -> u64 {
    let needed = (wanted as u64).saturating_add(OPEN_FILES_HEADROOM);
    needed.min(hard).max(soft)
}

/// The connection cap that fits `soft` open files: `wanted` when it fits with the
/// headroom, else what is left after the headroom (at least 1).
pub fn connections_that_fit(wanted: usize, soft: u64) -> usize {
    let room = soft.saturating_sub(OPEN_FILES_HEADROOM).max(1);
    wanted.min(usize::try_from(room).unwrap_or(usize::MAX))
}

/// At start (the binary, before serving): raises the open-files soft limit toward the hard
/// limit as far as `max_connections` needs, and lowers the cap when even that does not fit,
/// so the cap and its 503 engage before `accept` fails with "too many open files".
/// `Err` when the limit cannot be read (then nothing is changed).
#[cfg(unix)]
// `rlim_t` is u64 on 64-bit Linux and macOS but narrower elsewhere (32-bit Linux).
#[allow(clippy::unnecessary_cast)]
pub fn fit_open_files(max_connections: usize) -> io::Result<OpenFiles> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let (soft_before, hard) = (limit.rlim_cur as u64, limit.rlim_max as u64);
    let mut soft = soft_before;
    let target = soft_limit_for(max_connections, soft_before, hard);
    if target > soft_before {
        let raised = libc::rlimit {
            rlim_cur: target as libc::rlim_t,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we pass; raising the soft limit up to the hard
        // one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            soft = target;
        }
    }
    Ok(OpenFiles {
        soft_before,
        soft,
        hard,
        wanted: max_connections,
        max_connections: connections_that_fit(max_connections, soft),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_raised_as_far_as_needed_up_to_the_hard_one() {
        let h = OPEN_FILES_HEADROOM;
        // Enough already: left alone.
        assert_eq!(soft_limit_for(100, 65_536, 65_536), 65_536);
        // Raised to what the cap needs, not further.
        assert_eq!(soft_limit_for(10_000, 1024, 1_048_576), 10_000 + h);
        // Up to the hard limit at most.
        assert_eq!(soft_limit_for(10_000, 1024, 4096), 4096);
        // Never lowered.
        assert_eq!(soft_limit_for(10, 4096, 8192), 4096);
    }

    #[test]
    fn the_cap_is_lowered_to_what_fits_after_the_headroom() {
        let h = OPEN_FILES_HEADROOM;
        assert_eq!(connections_that_fit(10_000, 10_000 + h), 10_000);
        assert_eq!(connections_that_fit(10_000, 4096), 4096 - h as usize);
        assert_eq!(connections_that_fit(500, 1024), 500);
        // Even a tiny limit leaves a cap of one, never zero.
        assert_eq!(connections_that_fit(10_000, 10), 1);
    }

    #[test]
    fn one_address_holds_at_most_its_cap_and_gives_places_back() {
        let cap = PerAddress::new(2);
        let a = IpAddr::from([127, 0, 0, 2]);
        let first = cap.try_acquire(a).unwrap();
        let _second = cap.try_acquire(a).unwrap();
        assert!(cap.try_acquire(a).is_none());
        assert!(cap.try_acquire(IpAddr::from([127, 0, 0, 3])).is_some());
        drop(first);
        assert!(cap.try_acquire(a).is_some());
    }
}

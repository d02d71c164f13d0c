//! The listeners: accept connections, serve the apps, shut down cleanly on a signal.
//!
//! Owns the connection-level limits: the cap on open connections (a semaphore; one over it
//! gets a single JSON 503 and is closed), the header-read timeout and the hard cap on a
//! request head (hyper's own), and the idle timeout (no byte either way for
//! `limits.idle_timeout_ms`). Connections are HTTP/1.1. Shutdown stops accepting, asks every
//! connection to finish its in-flight request and close (idle keep-alive connections close
//! at once), cancels `Gateway::shutdown` for background work, and gives up waiting after
//! `server.shutdown_deadline_ms`. It must not know about routes or the Web API.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use crate::admin::AdminConfig;
use crate::edge::Failure;
use crate::error::Error;
use crate::telemetry::{OPEN_CONNECTIONS, REFUSALS};
use crate::{app, Gateway};

mod config;
pub use config::ServerConfig;

/// Connections past the cap that still get their JSON 503, at most at once; beyond these a
/// connection is closed without a reply.
const OVERFLOW_REPLIES: usize = 64;

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
        "webapi-gateway listening"
    );
    crate::telemetry::handle();
    let limits = &gw.config.limits;
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // The edge refuses heads over max_header_bytes with a JSON 431; this is the hard cap
        // past which hyper refuses them itself, before they are even parsed.
        .max_buf_size((limits.max_header_bytes * 2).max(8192))
        .keep_alive(true);
    let conns = Connections {
        http,
        graceful: GracefulShutdown::new(),
        idle: limits.idle_timeout,
    };
    let public_app = app(Arc::clone(&gw));
    let admin_app = crate::admin::app(Arc::clone(&gw));
    let permits = Arc::new(Semaphore::new(limits.max_connections.get()));
    let admin_permits = Arc::new(Semaphore::new(64));
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
                Ok((stream, remote)) => conns.accept(stream, remote, &public_app, &permits, &overflow),
                Err(e) => accept_error(e).await,
            },
            accepted = admin_accept => match accepted {
                Ok((stream, remote)) => conns.accept(stream, remote, &admin_app, &admin_permits, &overflow),
                Err(e) => accept_error(e).await,
            },
            () = &mut signal => break,
        }
    }
    drop(public);
    drop(admin);
    tracing::info!("shutting down: finishing in-flight requests");
    gw.shutdown.cancel();
    gw.tasks.close();
    let deadline = gw.config.server.shutdown_deadline;
    let drained = tokio::time::timeout(deadline, async {
        conns.graceful.shutdown().await;
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

/// Too many open files and the like: wait a little rather than spin.
async fn accept_error(e: io::Error) {
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// How connections are served.
struct Connections {
    http: http1::Builder,
    graceful: GracefulShutdown,
    idle: Duration,
}

impl Connections {
    fn accept(
        &self,
        stream: TcpStream,
        remote: SocketAddr,
        app: &Router,
        permits: &Arc<Semaphore>,
        overflow: &Arc<Semaphore>,
    ) {
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(IdleTimeout::new(stream, self.idle));
        match Arc::clone(permits).try_acquire_owned() {
            Ok(permit) => {
                let app = app.clone();
                let service = tower::service_fn(move |mut req: hyper::Request<Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(remote));
                    app.clone().oneshot(req)
                });
                let conn = self
                    .http
                    .serve_connection(io, TowerToHyperService::new(service));
                let conn = self.graceful.watch(conn);
                tokio::spawn(async move {
                    metrics::gauge!(OPEN_CONNECTIONS).increment(1.0);
                    if let Err(e) = conn.await {
                        tracing::debug!(%remote, error = %e, "connection ended with an error");
                    }
                    metrics::gauge!(OPEN_CONNECTIONS).decrement(1.0);
                    drop(permit);
                });
            }
            Err(_) => {
                metrics::counter!(REFUSALS, "reason" => "connections").increment(1);
                let Ok(permit) = Arc::clone(overflow).try_acquire_owned() else {
                    return;
                };
                // One reply, then the connection closes.
                let service = tower::service_fn(|_req: hyper::Request<Incoming>| async {
                    let mut response: Response =
                        Failure::from(Error::TooManyConnections).into_response();
                    response.headers_mut().insert(
                        hyper::header::CONNECTION,
                        hyper::header::HeaderValue::from_static("close"),
                    );
                    Ok::<_, std::convert::Infallible>(response)
                });
                let conn = self
                    .http
                    .serve_connection(io, TowerToHyperService::new(service));
                let conn = self.graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                    drop(permit);
                });
            }
        }
    }
}

/// A connection that is closed once no byte has moved either way for `timeout` while the
/// server waits on it.
struct IdleTimeout<S> {
    inner: S,
    sleep: Pin<Box<Sleep>>,
    timeout: Duration,
}

impl<S> IdleTimeout<S> {
    fn new(inner: S, timeout: Duration) -> Self {
        IdleTimeout {
            inner,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            timeout,
        }
    }

    /// Passes a ready result on (and restarts the clock), or fails a pending one whose
    /// clock has run out.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(r) => {
                let deadline = Instant::now() + self.timeout;
                self.sleep.as_mut().reset(deadline);
                Poll::Ready(r)
            }
            Poll::Pending => {
                ready!(self.sleep.as_mut().poll(cx));
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection idle timeout",
                )))
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.watch(cx, polled)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
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

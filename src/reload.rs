//! Reloading the instance list while serving: on SIGHUP, and when the config file changes;
//! and the TLS certificate and key the same way ([`watch_certs`]).
//!
//! Owns noticing that a reload is wanted and loading the new file; applying it is
//! `Gateway::reload` (the certificate: `server::tls::Certs::reload`). A file that does not load or validate is refused with its reason
//! (naming the key) in the log, and the running configuration stays.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::{Config, Gateway};

/// How often the config file is compared with what was last loaded.
pub const POLL: Duration = Duration::from_secs(2);

/// How long a changed file must stay the same before it is loaded.
const SETTLE: Duration = Duration::from_millis(200);

/// Runs until the runtime stops: reloads on SIGHUP, and whenever the file's contents differ
/// from those seen when `watch` was called (checked every `poll`; a half-written file is
/// refused and tried again at the next change).
pub fn watch(gw: Arc<Gateway>, path: PathBuf, poll: Duration) -> impl Future<Output = ()> {
    // Read and listen now, not when the task first runs: a change or a SIGHUP in between
    // must count (an unhandled SIGHUP would end the process). Needs a runtime context.
    let mut seen = std::fs::read(&path).ok();
    let mut hangup = Hangup::new();
    async move {
        loop {
            let forced = tokio::select! {
                () = hangup.recv() => true,
                () = tokio::time::sleep(poll) => false,
            };
            let now = tokio::fs::read(&path).await.ok();
            if !forced && now == seen {
                continue;
            }
            if !forced {
                // A file being written now may be cut short, and still valid: wait until
                // it stays the same for a moment.
                tokio::time::sleep(SETTLE.min(poll)).await;
                if tokio::fs::read(&path).await.ok() != now {
                    continue;
                }
            }
            seen = now;
            tracing::info!(path = %path.display(), signal = forced, "reloading the configuration");
            let _ = reload_from(&gw, &path).await;
        }
    }
}

/// Runs until aborted: loads the TLS certificate and key again on SIGHUP and whenever either
/// file's contents change (checked every `poll`, settled like [`watch`]). New handshakes get
/// the new pair; open connections keep theirs. A pair that does not load is refused with its
/// reason in the log, and the running one stays.
pub fn watch_certs(
    certs: Arc<crate::server::tls::Certs>,
    poll: Duration,
) -> impl Future<Output = ()> {
    let files = [
        certs.config.cert_file.clone(),
        certs.config.key_file.clone(),
    ];
    let read = move || {
        files
            .iter()
            .map(|f| std::fs::read(f).ok())
            .collect::<Vec<_>>()
    };
    let mut seen = read();
    let mut hangup = Hangup::new();
    async move {
        loop {
            let forced = tokio::select! {
                () = hangup.recv() => true,
                () = tokio::time::sleep(poll) => false,
            };
            let now = read();
            if !forced && now == seen {
                continue;
            }
            if !forced {
                tokio::time::sleep(SETTLE.min(poll)).await;
                if read() != now {
                    continue;
                }
            }
            seen = now;
            match certs.reload() {
                Ok(()) => tracing::info!(
                    cert_file = %certs.config.cert_file.display(),
                    signal = forced,
                    "TLS certificate reloaded; new connections get it"
                ),
                Err(reason) => tracing::error!(
                    reason = %reason.within("server"),
                    "new TLS certificate refused; the running one stays"
                ),
            }
        }
    }
}

/// Why a reload was refused; the running configuration stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file could not be read, or it breaks a rule (the message names the key).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The new table could not be built (an adapter could not start).
    #[error(transparent)]
    Start(#[from] crate::StartError),
}

/// Loads and validates `path`, then applies it; on failure logs why and keeps the old.
pub async fn reload_from(gw: &Gateway, path: &Path) -> Result<(), ReloadError> {
    let result = match Config::load(path) {
        Ok(config) => gw.reload(config).await.map_err(ReloadError::from),
        Err(e) => Err(ReloadError::from(e)),
    };
    if let Err(reason) = &result {
        tracing::error!(%reason, "new configuration refused; the running one stays");
    }
    result
}

/// SIGHUP as a stream of wake-ups; never fires where there is no such signal.
struct Hangup {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    fn new() -> Hangup {
        #[cfg(unix)]
        {
            let kind = tokio::signal::unix::SignalKind::hangup();
            Hangup {
                signal: tokio::signal::unix::signal(kind).ok(),
            }
        }
        #[cfg(not(unix))]
        Hangup {}
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = &mut self.signal {
            if signal.recv().await.is_some() {
                return;
            }
        }
        std::future::pending::<()>().await
    }
}

//! A few connections to one instance, each kept up by its own task.
//!
//! Owns reconnecting (exponential backoff with jitter, reset by a successful handshake) and
//! picking a live connection for a request. It must not send requests or interpret replies:
//! the adapter does, through the [`Link`] it is handed.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backoff::Backoff;
use chat_protocol::Status;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::link::{self, ConnectError, Link, LinkEnded};
use crate::TcpConfig;

/// No connection is up: what a request made now is told (as `BackendError::Unreachable`).
#[derive(Debug, thiserror::Error)]
#[error("no connection to {address}: {why}")]
pub struct NoConnection {
    address: String,
    why: Arc<Disconnected>,
}

/// Why no connection is up.
#[derive(Debug, thiserror::Error)]
enum Disconnected {
    #[error("not connected yet")]
    NotYet,
    #[error(transparent)]
    Connect(ConnectError),
    #[error(transparent)]
    Lost(LinkEnded),
}

pub struct Pool {
    address: String,
    /// One per pooled connection: the live link, or `None` while (re)connecting.
    slots: Vec<Mutex<Option<Arc<Link>>>>,
    /// Round-robin cursor over the slots.
    next: AtomicUsize,
    /// Why the last connection attempt failed: what an `Unreachable` error reports.
    last_error: Mutex<Arc<Disconnected>>,
    /// The newest status the instance reported (in a handshake or a status reply).
    status: Mutex<Option<Status>>,
    /// Set once the first connection attempt has ended either way. Until then "no
    /// connection" means "not yet", not "refused": requests wait for it (see `settled`).
    tried: AtomicBool,
    tried_notify: Notify,
}

impl Pool {
    /// Creates the pool and starts one keeper task per connection; they stop with `stop`.
    pub fn start(config: &TcpConfig, stop: &CancellationToken) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            address: config.address.clone(),
            slots: (0..config.connections.max(1))
                .map(|_| Mutex::new(None))
                .collect(),
            next: AtomicUsize::new(0),
            last_error: Mutex::new(Arc::new(Disconnected::NotYet)),
            status: Mutex::new(None),
            tried: AtomicBool::new(false),
            tried_notify: Notify::new(),
        });
        for slot in 0..pool.slots.len() {
            let pool = Arc::clone(&pool);
            let config = config.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = pool.keep_connected(slot, &config) => {}
                }
            });
        }
        pool
    }

    /// A live connection, taking turns among them; the reason none is up otherwise.
    pub fn pick(&self) -> Result<Arc<Link>, NoConnection> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for offset in 0..self.slots.len() {
            let slot = &self.slots[(start + offset) % self.slots.len()];
            if let Some(link) = slot.lock().as_ref().filter(|l| !l.is_closed()) {
                return Ok(Arc::clone(link));
            }
        }
        Err(NoConnection {
            address: self.address.clone(),
            why: Arc::clone(&self.last_error.lock()),
        })
    }

    /// Waits (at most `within`) until the first connection attempt has ended, so a request
    /// made while the pool is still starting is not reported as refused.
    pub async fn settled(&self, within: Duration) {
        let notified = self.tried_notify.notified();
        if self.tried.load(Ordering::Acquire) {
            return;
        }
        let _ = tokio::time::timeout(within, notified).await;
    }

    fn attempt_ended(&self) {
        if !self.tried.swap(true, Ordering::AcqRel) {
            self.tried_notify.notify_waiters();
        }
    }

    pub fn is_connected(&self) -> bool {
        self.slots
            .iter()
            .any(|s| s.lock().as_ref().is_some_and(|l| !l.is_closed()))
    }

    pub fn record_status(&self, status: Status) {
        *self.status.lock() = Some(status);
    }

    /// The instance stopped answering status calls while a connection looks up (a host that
    /// vanished without closing it): place no new chats there until it answers again.
    pub fn mark_unresponsive(&self) {
        if let Some(status) = self.status.lock().as_mut() {
            status.load.accepting = false;
        }
    }

    /// A chat was created here since the last status: count it until the next one says.
    pub fn note_created(&self) {
        if let Some(status) = self.status.lock().as_mut() {
            status.load.active += 1;
        }
    }

    pub fn status(&self) -> Option<Status> {
        self.status.lock().clone()
    }

    /// Runs forever: connect, serve until the connection fails, wait, again.
    async fn keep_connected(&self, slot: usize, config: &TcpConfig) {
        // Jittered, so the gateways of a fleet do not reconnect in lockstep after a chat server
        // restarts.
        let mut backoff = Backoff::new(config.backoff_min, config.backoff_max)
            .with_jitter()
            .failures();
        // An authentication failure repeats on every attempt until someone changes a secret:
        // said once at error level, then at debug until it is fixed.
        let mut auth_reported = false;
        loop {
            let connected = link::connect(
                &config.address,
                &config.peer_name,
                config.secret.as_ref(),
                config.connect_timeout,
            )
            .await;
            match connected {
                Ok(greeted) => {
                    backoff.reset();
                    auth_reported = false;
                    tracing::info!(address = %config.address, alias = %greeted.welcome.alias, slot,
                        "connected to chat server");
                    self.record_status(greeted.welcome.status.clone());
                    let (link, running) = greeted.serve();
                    *self.slots[slot].lock() = Some(link);
                    self.attempt_ended();
                    let reason = running.await;
                    *self.slots[slot].lock() = None;
                    tracing::warn!(address = %config.address, slot, %reason,
                        "connection to chat server lost");
                    *self.last_error.lock() = Arc::new(Disconnected::Lost(reason));
                }
                Err(reason) if reason.is_auth() && !auth_reported => {
                    auth_reported = true;
                    tracing::error!(address = %config.address, slot, %reason,
                        "chat server authentication failed: no requests go there until tcp.secret and the server's --secret-file match");
                    *self.last_error.lock() = Arc::new(Disconnected::Connect(reason));
                    self.attempt_ended();
                }
                Err(reason) => {
                    tracing::debug!(address = %config.address, slot, %reason, "connect failed");
                    *self.last_error.lock() = Arc::new(Disconnected::Connect(reason));
                    self.attempt_ended();
                }
            }
            tokio::time::sleep(backoff.failed()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reason reads as it did when it was a string: operators grep logs for it.
    #[test]
    fn the_reason_reads_as_before() {
        let error = |why| NoConnection {
            address: "127.0.0.1:1".into(),
            why: Arc::new(why),
        };
        assert_eq!(
            error(Disconnected::NotYet).to_string(),
            "no connection to 127.0.0.1:1: not connected yet"
        );
        assert_eq!(
            error(Disconnected::Lost(LinkEnded::Unresponsive)).to_string(),
            "no connection to 127.0.0.1:1: 3 requests in a row got no answer"
        );
        let refused = ConnectError::ClosedInHandshake {
            address: "127.0.0.1:1".into(),
        };
        assert_eq!(
            error(Disconnected::Connect(refused)).to_string(),
            "no connection to 127.0.0.1:1: 127.0.0.1:1 closed the connection in the handshake"
        );
    }
}

//! A standalone chat server speaking the chat-server protocol (`docs/chat-protocol.md`).
//!
//! It hosts chats with the same behaviour as the gateway's mock backend because it runs the
//! same `chat_engine::Engine`; this crate adds only the network and the shared store.
//!
//! Layout, in the order a call travels:
//! - `config`: flags, environment and config file merged and validated once;
//! - `start` (here): binds, connects the store, accepts connections under a cap, and shuts
//!   down gracefully;
//! - `connection`: one client connection: handshake, framing, timeouts, calls in flight;
//! - `dispatch`: what each call does: the engine, then the store, then the answer;
//! - `store`: chats saved to Redis after every accepted event, over the version the saver
//!   holds (fencing), and loaded for restore.

pub mod config;
mod connection;
mod dispatch;
mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chat_engine::Engine;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{Args, Config};

use connection::Limits;
use dispatch::Server;
use store::{Store, StoreError, StoreSettings};

/// How often idle customers are dropped and expired chats forgotten.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Error)]
pub enum StartError {
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
    #[error("cannot connect to the store: {0}")]
    Store(#[from] StoreError),
    /// Anyone who reaches such a port could bypass the gateway (the backend key is part of
    /// every client's secureKey), so the server does not serve there unauthenticated.
    #[error("refusing to listen on {address} without a shared secret: set --secret-file (the gateway's tcp.secret), listen on a loopback address, or pass --allow-no-secret on a private network")]
    NoSecret { address: SocketAddr },
}

/// A started server.
pub struct Running {
    /// The address actually bound (the port is known even when 0 was asked for).
    pub local_addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl Running {
    /// Waits until the server has stopped: after `shutdown` is cancelled, once every
    /// connection has answered its calls in flight (each within the shutdown grace).
    pub async fn stopped(self) {
        let _ = self.accept.await;
    }
}

/// Connects the store, binds, and serves until `shutdown` is cancelled.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, StartError> {
    let store = match &config.store {
        None => None,
        Some(url) => {
            let behaviour = &config.behaviour;
            let settings = StoreSettings {
                ttl: behaviour.disconnect_timeout + behaviour.ended_retention,
                timeout: config.store_timeout,
                connect_timeout: config.store_connect_timeout,
                replicas_ack: config.store_replicas_ack,
                replicas_ack_timeout: config.store_replicas_ack_timeout,
            };
            Some(Store::connect(url, settings).await?)
        }
    };
    let engine = Engine::new(config.behaviour.clone());
    engine.spawn_sweeper(SWEEP_EVERY);
    let server = Arc::new(Server::new(
        config.alias.clone(),
        engine,
        store,
        config.max_watch_wait,
    ));
    let listener =
        TcpListener::bind(&config.listen)
            .await
            .map_err(|source| StartError::Listen {
                address: config.listen.clone(),
                source,
            })?;
    let local_addr = listener.local_addr().map_err(|source| StartError::Listen {
        address: config.listen.clone(),
        source,
    })?;
    if config.secret.is_none() && !local_addr.ip().is_loopback() {
        if !config.allow_no_secret {
            return Err(StartError::NoSecret {
                address: local_addr,
            });
        }
        tracing::warn!(address = %local_addr,
            "serving without a shared secret on a non-loopback address (--allow-no-secret): anyone who reaches this port bypasses the gateway");
    }
    let limits = Limits {
        handshake_timeout: config.handshake_timeout,
        idle_timeout: config.idle_timeout,
        write_timeout: config.write_timeout,
        max_in_flight: config.max_in_flight_per_connection,
        max_watches: config.max_watches_per_connection,
        shutdown_grace: config.shutdown_grace,
        secret: config.secret.clone(),
        previous_secret: config.previous_secret.clone(),
    };
    let accept = tokio::spawn(accept_loop(
        listener,
        server,
        limits,
        config.max_connections,
        shutdown,
    ));
    Ok(Running { local_addr, accept })
}

async fn accept_loop(
    listener: TcpListener,
    server: Arc<Server>,
    limits: Limits,
    max_connections: usize,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                // At the cap the connection is closed at once: a client sees EOF before the
                // handshake and tries another connection later (its backoff).
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    tracing::warn!(%peer, max_connections, "connection limit reached, closing");
                    continue;
                };
                let server = Arc::clone(&server);
                let limits = limits.clone();
                let shutdown = shutdown.clone();
                connections.spawn(async move {
                    connection::serve(server, limits, stream, peer, shutdown).await;
                    drop(slot);
                });
            }
            Err(error) => {
                // Out of file descriptors and the like: pause instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    server.begin_shutdown();
    drop(listener);
    tracing::info!(alias = %server.alias(), "shutting down: finishing calls in flight");
    connections.close();
    connections.wait().await;
}

//! The adapter's settings for one chat-server instance. Plain data; the gateway's config
//! module fills it from `[[chat.instances]]` and validates it there.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// The chat server's `host:port`, resolved again on every connection attempt so a moved
    /// host is found.
    pub address: String,
    /// How this gateway introduces itself in the handshake (shows in the server's log).
    pub peer_name: String,
    /// Connections kept open to the instance. Each carries many requests at once; more than
    /// one keeps a single slow or broken connection from stalling everything.
    pub connections: usize,
    /// Bound on connecting and completing the handshake.
    pub connect_timeout: Duration,
    /// Bound on one request, from sending to its reply. Past it the caller gets
    /// `Interrupted` (statusCode 1): the request may have been served.
    pub request_timeout: Duration,
    /// Most requests in flight to the instance; past it requests fail at once with
    /// `Overloaded` (statusCode 1) instead of queueing behind a slow server.
    pub max_in_flight: usize,
    /// First reconnect delay after a failure; doubles per failure up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// How often the instance's status (its load) is asked for; also keeps idle connections
    /// alive against the server's idle timeout.
    pub status_interval: Duration,
}

impl TcpConfig {
    /// Defaults suited to a chat server on the same network.
    pub fn new(address: impl Into<String>) -> TcpConfig {
        TcpConfig {
            address: address.into(),
            peer_name: "webapi-gateway".into(),
            connections: 2,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            max_in_flight: 512,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            status_interval: Duration::from_secs(2),
        }
    }
}

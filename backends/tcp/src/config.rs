//! The adapter's settings for one chat-server instance, and the `[tcp]` section of the
//! gateway's configuration they are read from (the same for every `kind = "tcp"` instance).
//!
//! Owns the section's keys, defaults and local validation. The gateway's config module
//! loads it; the gateway fills in `address` (from the instance entry) and `peer_name`.

use std::num::NonZeroUsize;
use std::time::Duration;

use config_types::{millis, nonzero, Invalid, Secret};
use serde::Deserialize;

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpConfig {
    /// The chat server's `host:port`, resolved again on every connection attempt so a moved
    /// host is found. Per instance: not a key of `[tcp]`.
    #[serde(skip)]
    pub address: String,
    /// How this gateway introduces itself in the handshake (shows in the server's log).
    #[serde(skip)]
    pub peer_name: String,
    /// Connections kept open to the instance. Each carries many requests at once; more than
    /// one keeps a single slow or broken connection from stalling everything.
    pub connections: usize,
    /// Bound on connecting and completing the handshake.
    #[serde(rename = "connect_timeout_ms", deserialize_with = "millis")]
    pub connect_timeout: Duration,
    /// Bound on one request, from sending to its reply. Past it the caller gets
    /// `Interrupted` (statusCode 1): the request may have been served.
    #[serde(rename = "request_timeout_ms", deserialize_with = "millis")]
    pub request_timeout: Duration,
    /// Most requests in flight to the instance; past it requests fail at once with
    /// `Overloaded` (statusCode 1) instead of queueing behind a slow server.
    pub max_in_flight: NonZeroUsize,
    /// Most `watch` calls (the push channels' long poll, protocol version 3) held at once
    /// on the instance, apart from `max_in_flight`: open streams wait for events, and never
    /// take the permits normal requests need. Past it a watch fails at once with
    /// `Overloaded` (statusCode 1, retryable). Each held watch costs a pending entry and a
    /// task here and one on the chat server (its `max_watches_per_connection`, per
    /// connection).
    pub max_watches: NonZeroUsize,
    /// First reconnect delay after a failure; doubles per failure up to `backoff_max`.
    #[serde(rename = "backoff_min_ms", deserialize_with = "millis")]
    pub backoff_min: Duration,
    #[serde(rename = "backoff_max_ms", deserialize_with = "millis")]
    pub backoff_max: Duration,
    /// How often the instance's status (its load) is asked for; also keeps idle connections
    /// alive against the server's idle timeout.
    #[serde(rename = "status_interval_ms", deserialize_with = "millis")]
    pub status_interval: Duration,
    /// The secret shared with the chat servers (their `--secret-file`), at least 32
    /// characters; best set as `GATEWAY__TCP__SECRET`. The handshake proves it both ways
    /// without sending it. When set, a chat server that does not ask for it is not trusted;
    /// when absent, a chat server that asks for it refuses this gateway. Never logged.
    pub secret: Option<Secret>,
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
            max_in_flight: NonZeroUsize::new(512).expect("non-zero"),
            max_watches: NonZeroUsize::new(20_000).expect("non-zero"),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            status_interval: Duration::from_secs(2),
            secret: None,
        }
    }

    /// Checks what types alone cannot; the key is relative to the section (`connections`).
    pub fn validate(&self) -> Result<(), Invalid> {
        if !(1..=64).contains(&self.connections) {
            return Err(Invalid::new("connections", "must be between 1 and 64"));
        }
        nonzero("connect_timeout_ms", self.connect_timeout)?;
        nonzero("request_timeout_ms", self.request_timeout)?;
        nonzero("backoff_min_ms", self.backoff_min)?;
        nonzero("status_interval_ms", self.status_interval)?;
        if self
            .secret
            .as_ref()
            .is_some_and(|s| s.len() < chat_protocol::auth::MIN_SECRET_BYTES)
        {
            return Err(Invalid::new(
                "secret",
                "must be at least 32 characters (use e.g. `openssl rand -hex 32`)",
            ));
        }
        if self.backoff_max < self.backoff_min {
            return Err(Invalid::new(
                "backoff_max_ms",
                "must be at least tcp.backoff_min_ms",
            ));
        }
        Ok(())
    }
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig::new("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_is_checked_and_never_printed() {
        let long = "0123456789abcdef0123456789abcdef";
        let config = TcpConfig {
            secret: Some(long.into()),
            ..TcpConfig::new("127.0.0.1:7117")
        };
        assert_eq!(config.validate(), Ok(()));
        assert!(!format!("{config:?}").contains(long));
        let short = TcpConfig {
            secret: Some("short".into()),
            ..config
        };
        assert_eq!(short.validate().unwrap_err().key, "secret");
    }
}

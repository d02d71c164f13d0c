//! The `[limits]` section: connection, header, timeout and rate limits against abuse.
//!
//! Owns these keys, their defaults and their local validation; that `idle_timeout_ms`
//! exceeds `server.request_timeout_ms` is the config module's (two sections).

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use config_types::{millis, nonzero, secs, Invalid};
use serde::Deserialize;

/// Limits against abuse. Every refusal is a Web API JSON error.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Most open client connections; past it a new connection gets one 503 reply and is
    /// closed.
    pub max_connections: NonZeroUsize,
    /// Largest request head (request line and headers), in bytes; larger gets 431.
    pub max_header_bytes: usize,
    /// How long a client has to send a whole request head once the gateway waits for one;
    /// this also bounds how long an idle keep-alive connection is kept.
    #[serde(rename = "header_read_timeout_ms", deserialize_with = "millis")]
    pub header_read_timeout: Duration,
    /// No byte moving either way for this long closes a connection (a stalled body upload,
    /// a client that stops reading). Greater than `server.request_timeout_ms`.
    #[serde(rename = "idle_timeout_ms", deserialize_with = "millis")]
    pub idle_timeout: Duration,
    /// How long a client has to send a whole JSON request body; past it 408. (A route with
    /// large bodies, e-mail, has its own rule.)
    #[serde(rename = "body_read_timeout_ms", deserialize_with = "millis")]
    pub body_read_timeout: Duration,
    /// Requests per second one client IP address may make (sustained); 0 turns it off.
    pub per_ip_per_second: u32,
    /// Requests one client IP address may make in a burst.
    pub per_ip_burst: u32,
    /// Requests per second on one chat from one client address (sustained); 0 turns it off.
    pub per_chat_per_second: u32,
    /// Requests on one chat in a burst.
    pub per_chat_burst: u32,
    /// Failed credential checks on one chat before further requests on it are refused.
    pub bad_credentials_burst: NonZeroU32,
    /// How long one failed-check allowance takes to come back (the throttle's period).
    #[serde(rename = "bad_credentials_period_secs", deserialize_with = "secs")]
    pub bad_credentials_period: Duration,
    /// Most clients (addresses, chats) a rate limiter remembers at once. Quiet ones are
    /// forgotten; a new one that finds no room is judged as fresh and not remembered, while
    /// remembered ones stay limited.
    pub max_tracked_keys: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: NonZeroUsize::new(10_000).expect("non-zero"),
            max_header_bytes: 16 * 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(10),
            per_ip_per_second: 50,
            per_ip_burst: 100,
            per_chat_per_second: 10,
            per_chat_burst: 20,
            bad_credentials_burst: NonZeroU32::new(5).expect("non-zero"),
            bad_credentials_period: Duration::from_secs(60),
            max_tracked_keys: 100_000,
        }
    }
}

impl LimitsConfig {
    /// Checks what types alone cannot; the key is relative to `[limits]`.
    pub fn validate(&self) -> Result<(), Invalid> {
        if !(1024..=1024 * 1024).contains(&self.max_header_bytes) {
            return Err(Invalid::new(
                "max_header_bytes",
                "must be between 1024 and 1048576",
            ));
        }
        nonzero("header_read_timeout_ms", self.header_read_timeout)?;
        nonzero("body_read_timeout_ms", self.body_read_timeout)?;
        if self.per_ip_per_second > 0 && self.per_ip_burst == 0 {
            return Err(Invalid::new("per_ip_burst", "must be greater than 0"));
        }
        if self.per_chat_per_second > 0 && self.per_chat_burst == 0 {
            return Err(Invalid::new("per_chat_burst", "must be greater than 0"));
        }
        nonzero("bad_credentials_period_secs", self.bad_credentials_period)?;
        if self.max_tracked_keys < 100 {
            return Err(Invalid::new("max_tracked_keys", "must be at least 100"));
        }
        Ok(())
    }
}

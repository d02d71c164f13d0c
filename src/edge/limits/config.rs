//! The `[limits]` section: connection, header, timeout and rate limits against abuse.
//!
//! Owns these keys, their defaults and their local validation; that `idle_timeout_ms`
//! exceeds `server.request_timeout_ms` is the config module's (two sections).

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use config_types::{millis, nonzero, secs, Invalid};
use serde::Deserialize;

use super::Cidr;

/// Limits against abuse. Every refusal is a Web API JSON error.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Most open client connections; past it a new connection gets one 503 reply and is
    /// closed. At start the binary raises the open-files limit to fit it, or lowers it to
    /// fit the open-files limit (with a warning).
    pub max_connections: NonZeroUsize,
    /// Most open connections from one client address (an IPv6 client by its /64); past it a
    /// new connection from that address gets one 429 reply and is closed. 0 turns it off:
    /// behind a load balancer or proxy every connection comes from its few addresses.
    pub max_connections_per_ip: u32,
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
    /// Every request body (JSON, GMS form and multipart, e-mail) may take this long at any
    /// pace; a body still arriving after it must carry `body_min_bytes_per_sec` over each
    /// further window of this length, or it gets 408.
    #[serde(rename = "body_read_timeout_ms", deserialize_with = "millis")]
    pub body_read_timeout: Duration,
    /// The slowest a body may arrive once `body_read_timeout_ms` has passed, in bytes per
    /// second over each window of that length; 0: every body must be whole within
    /// `body_read_timeout_ms`.
    pub body_min_bytes_per_sec: u32,
    /// No request body may take longer than this, however fast it moves (408 past it).
    #[serde(rename = "body_read_max_ms", deserialize_with = "millis")]
    pub body_read_max: Duration,
    /// The load balancers and reverse proxies in front of the gateway (`10.0.0.0/8`,
    /// `2001:db8::/32`, or one address). A request whose TCP peer is in one of these ranges
    /// is keyed on the client its `Forwarded` (`for=`) or `X-Forwarded-For` header names,
    /// read right to left past the trusted hops; every other request on its TCP peer, so
    /// no client can choose its own address. Empty (the default): trust nobody, every
    /// request is keyed on its TCP peer. The connection caps always count TCP peers.
    pub trusted_proxies: Vec<Cidr>,
    /// Requests per second one client IP address may make (sustained); 0 turns it off.
    pub per_ip_per_second: u32,
    /// Requests one client IP address may make in a burst.
    pub per_ip_burst: u32,
    /// New chats (Request Chat, both dialects) one client address may start per second
    /// (sustained), on top of `per_ip_*`; 0 turns it off. Past it 429 (code 414); chats
    /// already started are not affected.
    pub chat_starts_per_ip_per_second: u32,
    /// New chats one client address may start in a burst.
    pub chat_starts_per_ip_burst: u32,
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
            max_connections_per_ip: 256,
            max_header_bytes: 16 * 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(10),
            body_min_bytes_per_sec: 8 * 1024,
            body_read_max: Duration::from_secs(300),
            trusted_proxies: Vec::new(),
            per_ip_per_second: 50,
            per_ip_burst: 100,
            chat_starts_per_ip_per_second: 1,
            chat_starts_per_ip_burst: 5,
            per_chat_per_second: 10,
            per_chat_burst: 20,
            bad_credentials_burst: NonZeroU32::new(5).expect("non-zero"),
            bad_credentials_period: Duration::from_secs(60),
            max_tracked_keys: 100_000,
        }
    }
}

impl LimitsConfig {
    /// The pace every request body must keep.
    pub fn body_pace(&self) -> crate::edge::body::BodyPace {
        crate::edge::body::BodyPace {
            grace: self.body_read_timeout,
            min_rate: self.body_min_bytes_per_sec,
            max: self.body_read_max,
        }
    }

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
        if self.body_read_max < self.body_read_timeout {
            return Err(Invalid::new(
                "body_read_max_ms",
                "must be at least limits.body_read_timeout_ms",
            ));
        }
        if self.per_ip_per_second > 0 && self.per_ip_burst == 0 {
            return Err(Invalid::new("per_ip_burst", "must be greater than 0"));
        }
        if self.chat_starts_per_ip_per_second > 0 && self.chat_starts_per_ip_burst == 0 {
            return Err(Invalid::new(
                "chat_starts_per_ip_burst",
                "must be greater than 0",
            ));
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

//! The `[cometd]` section: the CometD dialect's long poll, its bounds and its cookies.
//!
//! Owns these keys, their defaults and their local validation; it must not know the rest of
//! the configuration.

use std::time::Duration;

use config_types::{millis, Invalid};
use serde::Deserialize;

/// The CometD dialect (`/genesys/cometd`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CometdConfig {
    /// How long a `/meta/connect` is held when nothing happens (the advice `timeout` of the
    /// handshake). Keep it under the idle timeouts of the proxies in front (docs/cometd.md).
    #[serde(rename = "connect_timeout_ms", deserialize_with = "millis")]
    pub connect_timeout: Duration,
    /// How long a `/meta/connect` of a client that follows no chat yet is held: a client
    /// usually publishes requestChat just after its handshake, and its first held connect
    /// cannot carry that chat yet.
    #[serde(rename = "idle_connect_ms", deserialize_with = "millis")]
    pub idle_connect: Duration,
    /// Most `/meta/connect`s held open at once by this replica; past it a connect is
    /// answered at once, unsuccessful, with a retry advice (code 430).
    pub max_connects: usize,
    /// Most `/meta/connect`s held open at once for one client address (code 431).
    pub max_connects_per_address: usize,
    /// Most chats one CometD client follows (its cookie carries them); a further
    /// requestChat drops the oldest from the cookie.
    pub max_follow: usize,
    /// Most Bayeux messages in one request.
    pub max_batch: usize,
    /// The cookies carry `Secure` (set it when clients reach the gateway over HTTPS).
    pub cookie_secure: bool,
    /// The cookies' `SameSite`: `lax` (the default), `strict`, or `none` (cross-site pages
    /// over HTTPS: needs `cookie_secure`).
    pub cookie_same_site: SameSite,
}

/// A cookie's `SameSite` attribute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SameSite {
    #[default]
    Lax,
    Strict,
    None,
}

impl SameSite {
    pub fn attribute(self) -> &'static str {
        match self {
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
            SameSite::None => "None",
        }
    }
}

impl Default for CometdConfig {
    fn default() -> Self {
        CometdConfig {
            connect_timeout: Duration::from_millis(25_000),
            idle_connect: Duration::from_millis(1_000),
            max_connects: 10_000,
            max_connects_per_address: 32,
            max_follow: 8,
            max_batch: 32,
            cookie_secure: false,
            cookie_same_site: SameSite::Lax,
        }
    }
}

/// The most chats a client may follow: what one 4 KiB cookie holds.
pub const MAX_FOLLOW_CEILING: usize = 8;

impl CometdConfig {
    /// Checks what types alone cannot. Keys are relative to `[cometd]`.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.connect_timeout > Duration::from_secs(120) {
            return Err(Invalid::new("connect_timeout_ms", "at most 120000"));
        }
        if self.idle_connect > self.connect_timeout {
            return Err(Invalid::new(
                "idle_connect_ms",
                "must be at most connect_timeout_ms",
            ));
        }
        if self.max_connects == 0 || self.max_connects_per_address == 0 {
            let key = if self.max_connects == 0 {
                "max_connects"
            } else {
                "max_connects_per_address"
            };
            return Err(Invalid::new(key, "must be at least 1"));
        }
        if self.max_follow == 0 || self.max_follow > MAX_FOLLOW_CEILING {
            return Err(Invalid::new("max_follow", "between 1 and 8"));
        }
        if self.max_batch == 0 || self.max_batch > 1000 {
            return Err(Invalid::new("max_batch", "between 1 and 1000"));
        }
        if self.cookie_same_site == SameSite::None && !self.cookie_secure {
            return Err(Invalid::new(
                "cookie_same_site",
                "`none` needs cookie_secure = true (browsers drop such cookies otherwise)",
            ));
        }
        Ok(())
    }
}

//! The `[push]` section: the Server-Sent Events channel (`GET …/events`).
//!
//! Owns these keys, their defaults and their local validation; that `heartbeat_secs` stays
//! under `limits.idle_timeout_ms` is the config module's (two sections).

use std::time::Duration;

use config_types::{millis, nonzero, secs, Invalid};
use serde::Deserialize;

/// The most `heartbeat_secs` may be: proxies commonly close a response silent for 30 s.
pub const MAX_HEARTBEAT: Duration = Duration::from_secs(25);

/// The push channels (Server-Sent Events).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushConfig {
    /// Serves the SSE routes; when false they answer 404 (code 120) and replies still carry
    /// `streamToken`.
    pub enabled: bool,
    /// A comment line (`: keep-alive`) is sent on every open stream this often, so proxies
    /// and the idle timeout see bytes move. 1 to 25 seconds.
    #[serde(rename = "heartbeat_secs", deserialize_with = "secs")]
    pub heartbeat: Duration,
    /// The reconnection delay a stream asks the browser for (`retry:`), in milliseconds.
    #[serde(rename = "retry_ms", deserialize_with = "millis")]
    pub retry: Duration,
    /// How long one wait on the chat (`operation::watch`) lasts before it is asked again;
    /// 1 to 60 seconds.
    #[serde(rename = "watch_secs", deserialize_with = "secs")]
    pub watch: Duration,
    /// How long a `streamToken` opens a stream after the reply that carried it; an open
    /// stream is not cut when it expires. At least 60 seconds.
    #[serde(rename = "token_ttl_secs", deserialize_with = "secs")]
    pub token_ttl: Duration,
    /// Most streams open at once on this gateway; past it 503 (code 415, retryable).
    pub max_streams: usize,
    /// Most streams open at once from one client address (`limits` counts addresses: an IPv6
    /// client by its /64, behind a trusted proxy the address it forwarded for); past it 429
    /// (code 416). 0 turns it off.
    pub max_streams_per_ip: u32,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            enabled: true,
            heartbeat: Duration::from_secs(15),
            retry: Duration::from_millis(1000),
            watch: Duration::from_secs(20),
            token_ttl: Duration::from_secs(3600),
            max_streams: 10_000,
            max_streams_per_ip: 32,
        }
    }
}

impl PushConfig {
    /// Checks what types alone cannot; the key is relative to `[push]`.
    pub fn validate(&self) -> Result<(), Invalid> {
        nonzero("heartbeat_secs", self.heartbeat)?;
        if self.heartbeat > MAX_HEARTBEAT {
            return Err(Invalid::new("heartbeat_secs", "must be at most 25"));
        }
        if self.retry > Duration::from_secs(600) {
            return Err(Invalid::new("retry_ms", "must be at most 600000"));
        }
        nonzero("watch_secs", self.watch)?;
        if self.watch > Duration::from_secs(60) {
            return Err(Invalid::new("watch_secs", "must be at most 60"));
        }
        if self.token_ttl < Duration::from_secs(60) {
            return Err(Invalid::new("token_ttl_secs", "must be at least 60"));
        }
        if self.max_streams == 0 {
            return Err(Invalid::new("max_streams", "must be greater than 0"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_each_rule_names_its_key() {
        assert_eq!(PushConfig::default().validate(), Ok(()));
        let bad = [
            (
                "heartbeat_secs",
                PushConfig {
                    heartbeat: Duration::ZERO,
                    ..Default::default()
                },
            ),
            (
                "heartbeat_secs",
                PushConfig {
                    heartbeat: Duration::from_secs(26),
                    ..Default::default()
                },
            ),
            (
                "watch_secs",
                PushConfig {
                    watch: Duration::from_secs(61),
                    ..Default::default()
                },
            ),
            (
                "token_ttl_secs",
                PushConfig {
                    token_ttl: Duration::from_secs(59),
                    ..Default::default()
                },
            ),
            (
                "max_streams",
                PushConfig {
                    max_streams: 0,
                    ..Default::default()
                },
            ),
        ];
        for (key, config) in bad {
            let e = config.validate().unwrap_err();
            assert!(e.to_string().starts_with(key), "{e}");
        }
    }
}

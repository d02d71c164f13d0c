//! What the router is configured with: `[chat] placement`, each instance's admin `state`,
//! and the health checks of `[chat.health]`.
//!
//! Owns these keys, their defaults and their local validation. It must not know the rest
//! of the configuration (the config module composes it).

use std::num::NonZeroU32;
use std::time::Duration;

use config_types::{millis, nonzero, Invalid};
use serde::Deserialize;

/// Health checks: an instance takes new chats and keeps its chats only while healthy.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// How often each instance is asked for its status.
    #[serde(rename = "interval_ms", deserialize_with = "millis")]
    pub interval: Duration,
    /// Bound on one status call; past it the check failed.
    #[serde(rename = "timeout_ms", deserialize_with = "millis")]
    pub timeout: Duration,
    /// Consecutive passed checks that bring a down instance back.
    pub rise: NonZeroU32,
    /// Consecutive failed checks that take an instance down.
    pub fall: NonZeroU32,
    /// Consecutive failed client requests (no answer) that eject an instance (passive check).
    pub eject_after: NonZeroU32,
    /// How long an ejected instance is left alone before it is tried again.
    #[serde(rename = "eject_ms", deserialize_with = "millis")]
    pub eject_for: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        let n = |n| NonZeroU32::new(n).expect("a non-zero literal");
        HealthConfig {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            rise: n(2),
            fall: n(2),
            eject_after: n(3),
            eject_for: Duration::from_secs(10),
        }
    }
}

impl HealthConfig {
    /// Checks what types alone cannot; the key is relative to `[chat.health]`.
    pub fn validate(&self) -> Result<(), Invalid> {
        nonzero("interval_ms", self.interval)?;
        nonzero("timeout_ms", self.timeout)?;
        nonzero("eject_ms", self.eject_for)
    }
}

/// An instance's admin state, set by the operator (config or admin listener), separate from
/// its health.
#[derive(Clone, Copy, Debug, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AdminState {
    /// Takes new chats and serves its chats.
    #[default]
    Ready,
    /// Takes no new chats; its chats continue there.
    Drain,
    /// Takes nothing: its chats move to other instances on their next request.
    Maint,
}

/// How new chats are spread over instances.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Pick two instances at random and use the one with less load relative to its weight.
    #[default]
    LeastLoaded,
    /// Take instances in turn.
    RoundRobin,
}

//! One instance's health: the verdict of active checks (rise / fall counters) and of real
//! requests (consecutive failures eject it for a while).
//!
//! Owns the state machine only. The checks themselves run in `gateway` (they do I/O); this
//! module is told their outcomes and must not do any I/O of its own. Each transition is
//! logged once.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::config::HealthConfig;

/// Health of one instance, shared by the checker task and every request.
pub struct Health {
    alias: String,
    /// The active checks' verdict.
    healthy: AtomicBool,
    /// Consecutive passed (while down) or failed (while up) checks.
    streak: AtomicU32,
    /// Consecutive client requests that got no answer.
    request_failures: AtomicU32,
    /// Set while ejected by the passive check: until when.
    ejected_until: Mutex<Option<Instant>>,
    rise: u32,
    fall: u32,
    eject_after: u32,
    eject_for: Duration,
}

/// What an operator sees of an instance's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    Healthy,
    /// The active checks failed `fall` times in a row (or a request found it refusing
    /// connections); back after `rise` passed checks.
    Down,
    /// Real requests failed `eject_after` times in a row; back by itself after `eject_ms`.
    Ejected,
}

impl Health {
    /// A new instance is presumed healthy: its chats keep working while the first checks run.
    pub fn new(alias: &str, config: &HealthConfig) -> Health {
        Health {
            alias: alias.to_owned(),
            healthy: AtomicBool::new(true),
            streak: AtomicU32::new(0),
            request_failures: AtomicU32::new(0),
            ejected_until: Mutex::new(None),
            rise: config.rise,
            fall: config.fall,
            eject_after: config.eject_after,
            eject_for: Duration::from_millis(config.eject_ms),
        }
    }

    pub fn state(&self) -> HealthState {
        if !self.healthy.load(Ordering::Acquire) {
            return HealthState::Down;
        }
        let mut ejected = self.ejected_until.lock();
        match *ejected {
            Some(until) if Instant::now() < until => HealthState::Ejected,
            Some(_) => {
                *ejected = None;
                tracing::info!(alias = %self.alias, "instance back from ejection");
                HealthState::Healthy
            }
            None => HealthState::Healthy,
        }
    }

    /// Whether requests may go there.
    pub fn is_up(&self) -> bool {
        self.state() == HealthState::Healthy
    }

    /// An active check answered.
    pub fn check_passed(&self) {
        if self.healthy.load(Ordering::Acquire) {
            self.streak.store(0, Ordering::Release);
            return;
        }
        if self.streak.fetch_add(1, Ordering::AcqRel) + 1 >= self.rise {
            self.streak.store(0, Ordering::Release);
            self.request_failures.store(0, Ordering::Release);
            self.healthy.store(true, Ordering::Release);
            tracing::info!(alias = %self.alias, "instance healthy again");
        }
    }

    /// An active check failed or timed out.
    pub fn check_failed(&self, why: &str) {
        if !self.healthy.load(Ordering::Acquire) {
            self.streak.store(0, Ordering::Release);
            return;
        }
        if self.streak.fetch_add(1, Ordering::AcqRel) + 1 >= self.fall {
            self.go_down(why);
        }
    }

    /// The instance refused a connection: it is down now, without waiting for the checks.
    pub fn refused(&self, why: &str) {
        if self.healthy.load(Ordering::Acquire) {
            self.go_down(why);
        }
    }

    fn go_down(&self, why: &str) {
        self.streak.store(0, Ordering::Release);
        if self.healthy.swap(false, Ordering::AcqRel) {
            tracing::warn!(alias = %self.alias, reason = %why, "instance down");
        }
    }

    /// A client request got an answer.
    pub fn request_ok(&self) {
        self.request_failures.store(0, Ordering::Release);
    }

    /// A client request got no answer (it may or may not have arrived).
    pub fn request_failed(&self, why: &str) {
        let n = self.request_failures.fetch_add(1, Ordering::AcqRel) + 1;
        if n >= self.eject_after {
            self.request_failures.store(0, Ordering::Release);
            let mut ejected = self.ejected_until.lock();
            if ejected.is_none() {
                tracing::warn!(alias = %self.alias, failures = n, reason = %why,
                    eject_ms = self.eject_for.as_millis() as u64, "instance ejected");
            }
            *ejected = Some(Instant::now() + self.eject_for);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> HealthConfig {
        HealthConfig {
            rise: 2,
            fall: 3,
            eject_after: 2,
            eject_ms: 60_000,
            ..HealthConfig::default()
        }
    }

    #[test]
    fn falls_after_fall_failures_and_rises_after_rise_passes() {
        let h = Health::new("a", &config());
        h.check_failed("x");
        h.check_failed("x");
        h.check_passed(); // a pass breaks the streak
        h.check_failed("x");
        h.check_failed("x");
        assert!(h.is_up());
        h.check_failed("x");
        assert_eq!(h.state(), HealthState::Down);
        h.check_passed();
        assert!(!h.is_up());
        h.check_passed();
        assert!(h.is_up());
        h.refused("connection refused");
        assert_eq!(h.state(), HealthState::Down);
    }

    #[test]
    fn consecutive_request_failures_eject() {
        let h = Health::new("a", &config());
        h.request_failed("x");
        h.request_ok();
        h.request_failed("x");
        assert!(h.is_up());
        h.request_failed("x");
        assert_eq!(h.state(), HealthState::Ejected);
        let h = Health::new(
            "b",
            &HealthConfig {
                eject_after: 1,
                eject_ms: 1,
                ..config()
            },
        );
        h.request_failed("x");
        std::thread::sleep(Duration::from_millis(5));
        assert!(h.is_up(), "back by itself after the ejection");
    }
}

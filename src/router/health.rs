//! One instance's health: the verdict of active checks (rise / fall counters) and of real
//! requests (consecutive failures eject it for a while).
//!
//! Owns the state machine only. The checks themselves run in `gateway` (they do I/O); this
//! module is told their outcomes and must not do any I/O of its own. Each transition is
//! logged once.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::HealthConfig;

/// Health of one instance, shared by the checker task and every request.
pub struct Health {
    alias: String,
    /// The active checks' verdict.
    healthy: AtomicBool,
    /// Consecutive passed (while down) or failed (while up) checks.
    streak: AtomicU32,
    /// Consecutive client requests that got no answer.
    request_failures: AtomicU32,
    /// While ejected by the passive check: until when, in milliseconds after `born` (0: not
    /// ejected). An atomic, since placement reads it for every new chat.
    ejected_until: AtomicU64,
    born: Instant,
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
            ejected_until: AtomicU64::new(0),
            born: Instant::now(),
            rise: config.rise.get(),
            fall: config.fall.get(),
            eject_after: config.eject_after.get(),
            eject_for: config.eject_for,
        }
    }

    pub fn state(&self) -> HealthState {
        if !self.healthy.load(Ordering::Acquire) {
            return HealthState::Down;
        }
        let until = self.ejected_until.load(Ordering::Acquire);
        if until == 0 {
            return HealthState::Healthy;
        }
        if self.now_ms() < until {
            return HealthState::Ejected;
        }
        // Whoever clears it says so, once.
        if self
            .ejected_until
            .compare_exchange(until, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            tracing::info!(alias = %self.alias, "instance back from ejection");
        }
        HealthState::Healthy
    }

    /// Milliseconds since `born`, at least 1 (0 means "not ejected").
    fn now_ms(&self) -> u64 {
        (self.born.elapsed().as_millis() as u64).max(1)
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
            let until = self.now_ms() + self.eject_for.as_millis() as u64;
            if self.ejected_until.swap(until, Ordering::AcqRel) == 0 {
                tracing::warn!(alias = %self.alias, failures = n, reason = %why,
                    eject_ms = self.eject_for.as_millis() as u64, "instance ejected");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> HealthConfig {
        let n = |n| std::num::NonZeroU32::new(n).unwrap();
        HealthConfig {
            rise: n(2),
            fall: n(3),
            eject_after: n(2),
            eject_for: Duration::from_secs(60),
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
                eject_after: std::num::NonZeroU32::MIN,
                eject_for: Duration::from_millis(1),
                ..config()
            },
        );
        h.request_failed("x");
        std::thread::sleep(Duration::from_millis(5));
        assert!(h.is_up(), "back by itself after the ejection");
    }
}

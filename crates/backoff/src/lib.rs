//! Exponential backoff: the wait after the n-th failure in a row is `min·2^(n−1)`, capped at
//! `max`, optionally jittered.
//!
//! The one implementation behind the TCP adapter's reconnects (with jitter) and the e-mail
//! deliverer's retries (without). It owns the arithmetic only: it must not sleep, count
//! attempts against a limit, or decide what is worth retrying — its callers do.

use std::time::Duration;

use rand::Rng;

/// A backoff schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failure.
    min: Duration,
    /// The longest wait; never below `min`.
    max: Duration,
    /// Whether each wait is drawn from `[step/2, step]` rather than being the step itself, so
    /// many clients that failed together (a fleet of gateways after a chat server restarts) do
    /// not retry in lockstep.
    jitter: bool,
}

impl Backoff {
    /// Doubles from `min` up to `max` (a `max` below `min` counts as `min`), without jitter.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            jitter: false,
        }
    }

    /// The same schedule with each wait drawn from the upper half of its step.
    pub fn with_jitter(self) -> Backoff {
        Backoff {
            jitter: true,
            ..self
        }
    }

    /// The step after `failures` failures in a row (1 for the first): `min`, `2·min`, `4·min`…
    /// up to `max`. Never overflows.
    pub fn step(&self, failures: u32) -> Duration {
        let factor = 1u32
            .checked_shl(failures.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.min.saturating_mul(factor).min(self.max)
    }

    /// The wait after `failures` failures in a row: the step, jittered if asked.
    pub fn delay(&self, failures: u32) -> Duration {
        let step = self.step(failures);
        if !self.jitter {
            return step;
        }
        let half = step / 2;
        half + rand::thread_rng().gen_range(Duration::ZERO..=half)
    }

    /// A counter of failures in a row over this schedule, for a loop that retries.
    pub fn failures(self) -> Failures {
        Failures {
            backoff: self,
            in_a_row: 0,
        }
    }
}

/// Failures in a row: each [`Failures::failed`] counts one and returns the wait before the next
/// try; a success [`Failures::reset`]s it.
#[derive(Clone, Debug)]
pub struct Failures {
    backoff: Backoff,
    in_a_row: u32,
}

impl Failures {
    /// Counts a failure and returns how long to wait before trying again.
    pub fn failed(&mut self) -> Duration {
        self.in_a_row = self.in_a_row.saturating_add(1);
        self.backoff.delay(self.in_a_row)
    }

    /// A success: the next failure waits the shortest step again.
    pub fn reset(&mut self) {
        self.in_a_row = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_up_to_the_cap() {
        let backoff = Backoff::new(100 * MS, 500 * MS);
        let waits: Vec<_> = (1..=5).map(|n| backoff.delay(n).as_millis()).collect();
        assert_eq!(waits, vec![100, 200, 400, 500, 500]);
        assert_eq!(backoff.delay(200), 500 * MS);
        assert_eq!(backoff.delay(u32::MAX), 500 * MS);
    }

    #[test]
    fn jitter_stays_in_the_upper_half_of_the_step() {
        let backoff = Backoff::new(100 * MS, 800 * MS).with_jitter();
        for failures in 1..=6 {
            let step = backoff.step(failures);
            for _ in 0..50 {
                let wait = backoff.delay(failures);
                assert!(
                    wait >= step / 2 && wait <= step,
                    "{wait:?} for step {step:?}"
                );
            }
        }
    }

    #[test]
    fn failures_grow_to_the_cap_and_reset() {
        let mut failures = Backoff::new(100 * MS, 800 * MS).with_jitter().failures();
        let delays: Vec<Duration> = (0..6).map(|_| failures.failed()).collect();
        assert!(delays[0] <= 100 * MS);
        assert!(delays[5] >= 400 * MS && delays[5] <= 800 * MS);
        failures.reset();
        assert!(failures.failed() <= 100 * MS);
    }
}

//! Sampled log lines for what floods: refusals and retryable failures.
//!
//! A client that is refused thousands of times a second must not write thousands of log
//! lines: each refusal is counted in metrics (`gateway_refusals_total`,
//! `gateway_http_requests_total`) and logged at debug, and at most one line per error code
//! (or per refusal reason, for what has no reply: a refused connection, a failed accept) per
//! second reaches the default level, carrying how many were left out since the last one.
//! Owns only that bookkeeping (a small map keyed by code or reason, bounded by the code table
//! and the reasons named in code); it decides nothing about requests.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// At most one line per code in this long.
pub const PERIOD: Duration = Duration::from_secs(1);

/// What a sampled line is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sample {
    /// A reply's error code.
    Code(u16),
    /// A refusal with no reply of its own (a `gateway_refusals_total` reason).
    Reason(&'static str),
}

/// Whether a line about `key` may be logged now; if so, how many were suppressed since the
/// last one. Codes are the fixed table of `error.rs` (plus GMS's own) and reasons are
/// named in code, so the map stays small; past a bound the rest share one entry.
pub fn sampled(key: Sample) -> Option<u64> {
    static LAST: OnceLock<Mutex<HashMap<Sample, (Instant, u64)>>> = OnceLock::new();
    const MAX_KEYS: usize = 1024;
    let mut last = LAST.get_or_init(Default::default).lock();
    let key = if last.len() >= MAX_KEYS && !last.contains_key(&key) {
        Sample::Reason("other")
    } else {
        key
    };
    sample_at(&mut last, key, Instant::now())
}

fn sample_at(
    last: &mut HashMap<Sample, (Instant, u64)>,
    code: Sample,
    now: Instant,
) -> Option<u64> {
    match last.get_mut(&code) {
        Some((at, suppressed)) if now.duration_since(*at) < PERIOD => {
            *suppressed += 1;
            None
        }
        Some((at, suppressed)) => {
            *at = now;
            Some(std::mem::take(suppressed))
        }
        None => {
            last.insert(code, (now, 0));
            Some(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_code_per_period_with_the_count_left_out() {
        let mut last = HashMap::new();
        let t0 = Instant::now();
        let (code, other) = (Sample::Code(400), Sample::Reason("connections"));
        assert_eq!(sample_at(&mut last, code, t0), Some(0));
        for _ in 0..99 {
            assert_eq!(sample_at(&mut last, code, t0 + PERIOD / 2), None);
        }
        // Another key has its own allowance.
        assert_eq!(sample_at(&mut last, other, t0 + PERIOD / 2), Some(0));
        assert_eq!(sample_at(&mut last, code, t0 + PERIOD), Some(99));
        assert_eq!(sample_at(&mut last, code, t0 + PERIOD), None);
    }
}

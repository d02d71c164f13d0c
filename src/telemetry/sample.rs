//! Sampled log lines for what floods: refusals and retryable failures.
//!
//! A client that is refused thousands of times a second must not write thousands of log
//! lines: each refusal is counted in metrics (`gateway_refusals_total`,
//! `gateway_http_requests_total`) and logged at debug, and at most one line per error code
//! per second reaches the default level, carrying how many were left out since the last one.
//! Owns only that bookkeeping (a small map keyed by error code, bounded by the code table);
//! it decides nothing about requests.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// At most one line per code in this long.
pub const PERIOD: Duration = Duration::from_secs(1);

/// Whether a line for `code` may be logged now; if so, how many were suppressed since the
/// last one. Codes are the fixed table of `error.rs` (plus GMS's own), so the map stays
/// small; past a bound every code shares one entry.
pub fn sampled(code: u16) -> Option<u64> {
    static LAST: OnceLock<Mutex<HashMap<u16, (Instant, u64)>>> = OnceLock::new();
    const MAX_CODES: usize = 1024;
    let mut last = LAST.get_or_init(Default::default).lock();
    let key = if last.len() >= MAX_CODES && !last.contains_key(&code) {
        u16::MAX
    } else {
        code
    };
    sample_at(&mut last, key, Instant::now())
}

fn sample_at(last: &mut HashMap<u16, (Instant, u64)>, code: u16, now: Instant) -> Option<u64> {
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
        assert_eq!(sample_at(&mut last, 400, t0), Some(0));
        for _ in 0..99 {
            assert_eq!(sample_at(&mut last, 400, t0 + PERIOD / 2), None);
        }
        // Another code has its own allowance.
        assert_eq!(sample_at(&mut last, 411, t0 + PERIOD / 2), Some(0));
        assert_eq!(sample_at(&mut last, 400, t0 + PERIOD), Some(99));
        assert_eq!(sample_at(&mut last, 400, t0 + PERIOD), None);
    }
}

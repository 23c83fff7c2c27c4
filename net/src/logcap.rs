//! Rate-limited warnings: what a peer, a stick or a local client can make a node write to its
//! log is bounded.
//!
//! A warning about something a remote party did (a refused pull, a bad frame, a stalled
//! transfer) is logged at most [`LOG_WARNINGS_PER_WINDOW`] times per [`LOG_WINDOW_MS`] for each
//! (who, reason) pair; the rest are counted, and the next warning logged for that pair carries
//! `suppressed = N`. Whoever is named (a peer id, or the IP of a stranger, which a stranger can
//! vary), one reason logs at most [`LOG_PARTIES_PER_REASON_MAX`] parties' budgets per window.
//! The table of pairs is bounded by [`LOG_KEYS_MAX`]: when it is full, the pair whose window
//! started first is forgotten (its suppressed count is lost, never its first warning of a new
//! window).
//!
//! Every line carries `kind = <reason>`, so one reason's lines can be found (and counted).
//!
//! ```ignore
//! warn_limited!(limiter, peer.as_str(), "pull_refused", seg_id = %id, "catch-up: pull refused");
//! ```

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Warnings logged per (who, reason) pair and window.
pub const LOG_WARNINGS_PER_WINDOW: u32 = 5;
/// Length of a rate-limiting window.
pub const LOG_WINDOW_MS: u64 = 60_000;
/// Most (who, reason) pairs tracked at once.
pub const LOG_KEYS_MAX: usize = 1024;
/// Lines of one reason per window, across everyone: this many parties' full budgets.
pub const LOG_PARTIES_PER_REASON_MAX: u32 = 8;

#[derive(Debug, Clone, Copy)]
struct Slot {
    window_start: Instant,
    emitted: u32,
    suppressed: u64,
}

/// A per-(who, reason) budget of log lines.
#[derive(Debug)]
pub struct LogLimiter {
    per_window: u32,
    window: Duration,
    slots: Mutex<Slots>,
}

#[derive(Debug, Default)]
struct Slots {
    pairs: BTreeMap<(String, &'static str), Slot>,
    /// Lines per reason in its current window (bounded by the number of reasons in the code).
    reasons: BTreeMap<&'static str, Slot>,
}

impl Default for LogLimiter {
    fn default() -> Self {
        LogLimiter::new(
            LOG_WARNINGS_PER_WINDOW,
            Duration::from_millis(LOG_WINDOW_MS),
        )
    }
}

impl LogLimiter {
    /// At most `per_window` lines per pair and `window`.
    pub fn new(per_window: u32, window: Duration) -> Self {
        LogLimiter {
            per_window,
            window,
            slots: Mutex::new(Slots::default()),
        }
    }

    /// Whether a warning about `who` for `reason` may be logged at `now`: `Some(n)` with the
    /// number of warnings of that pair suppressed since the last one logged, or `None` (then
    /// it is counted as suppressed).
    pub fn check(&self, who: &str, reason: &'static str, now: Instant) -> Option<u64> {
        let mut guard = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let Slots { pairs, reasons } = &mut *guard;
        let key = (who.to_owned(), reason);
        if !pairs.contains_key(&key) && pairs.len() >= LOG_KEYS_MAX {
            let oldest = pairs
                .iter()
                .min_by_key(|(_, s)| s.window_start)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                pairs.remove(&oldest);
            }
        }
        let fresh = Slot {
            window_start: now,
            emitted: 0,
            suppressed: 0,
        };
        let slot = pairs.entry(key).or_insert(fresh);
        let all = reasons.entry(reason).or_insert(fresh);
        for s in [&mut *slot, &mut *all] {
            if now.saturating_duration_since(s.window_start) >= self.window {
                s.window_start = now;
                s.emitted = 0;
            }
        }
        let reason_max = self.per_window.saturating_mul(LOG_PARTIES_PER_REASON_MAX);
        if slot.emitted < self.per_window && all.emitted < reason_max {
            slot.emitted += 1;
            all.emitted += 1;
            Some(std::mem::take(&mut slot.suppressed))
        } else {
            slot.suppressed += 1;
            None
        }
    }
}

/// `tracing::warn!` through a [`LogLimiter`]: logs with extra `suppressed` and `kind` fields,
/// or counts.
#[macro_export]
macro_rules! warn_limited {
    ($limiter:expr, $who:expr, $reason:expr, $($rest:tt)+) => {
        if let Some(suppressed) = $limiter.check($who, $reason, ::std::time::Instant::now()) {
            ::tracing::warn!(suppressed, kind = $reason, $($rest)+);
        }
    };
}

/// `tracing::info!` through a [`LogLimiter`], for events a remote party can repeat that are
/// not warnings (they share the pair's budget with warnings of the same reason).
#[macro_export]
macro_rules! info_limited {
    ($limiter:expr, $who:expr, $reason:expr, $($rest:tt)+) => {
        if let Some(suppressed) = $limiter.check($who, $reason, ::std::time::Instant::now()) {
            ::tracing::info!(suppressed, kind = $reason, $($rest)+);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_gets_its_budget_per_window_and_hears_what_was_suppressed() {
        let limiter = LogLimiter::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limiter.check("b", "bad_frame", t0), Some(0));
        assert_eq!(limiter.check("b", "bad_frame", t0), Some(0));
        for _ in 0..1000 {
            assert_eq!(limiter.check("b", "bad_frame", t0), None);
        }
        // Other pairs have budgets of their own.
        assert_eq!(limiter.check("c", "bad_frame", t0), Some(0));
        assert_eq!(limiter.check("b", "stalled", t0), Some(0));
        // Still the same window at its last instant.
        let last = t0 + Duration::from_secs(10) - Duration::from_nanos(1);
        assert_eq!(limiter.check("b", "bad_frame", last), None);
        let next = t0 + Duration::from_secs(10);
        assert_eq!(limiter.check("b", "bad_frame", next), Some(1001));
        assert_eq!(limiter.check("b", "bad_frame", next), Some(0));
        assert_eq!(limiter.check("b", "bad_frame", next), None);
    }

    #[test]
    fn the_table_of_pairs_stays_bounded() {
        let limiter = LogLimiter::new(1, Duration::from_secs(10));
        let t0 = Instant::now();
        for i in 0..(LOG_KEYS_MAX * 3) {
            let who = format!("client-{i}");
            let at = t0 + Duration::from_millis(i as u64);
            // (Past the reason's cap these are counted, not logged; the table is the point.)
            let _ = limiter.check(&who, "r", at);
        }
        let slots = limiter.slots.lock().unwrap();
        assert_eq!(slots.pairs.len(), LOG_KEYS_MAX);
        // The oldest went first.
        assert!(!slots.pairs.contains_key(&("client-0".to_owned(), "r")));
        assert!(
            slots
                .pairs
                .contains_key(&(format!("client-{}", LOG_KEYS_MAX * 3 - 1), "r"))
        );
    }

    #[test]
    fn parties_that_vary_their_name_share_the_reason_cap() {
        let limiter = LogLimiter::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        let cap = 2 * LOG_PARTIES_PER_REASON_MAX as usize;
        let logged = (0..10_000)
            .filter(|i| {
                limiter
                    .check(&format!("10.0.0.{i}"), "stranger", t0)
                    .is_some()
            })
            .count();
        assert_eq!(logged, cap);
        // Another reason is not affected, and the next window opens the reason again.
        assert_eq!(limiter.check("10.0.0.1", "other", t0), Some(0));
        let next = t0 + Duration::from_secs(10);
        assert!(limiter.check("10.0.0.9999", "stranger", next).is_some());
    }
}

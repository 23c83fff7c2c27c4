//! The minimum-rate rule of a transfer (INV-18), without I/O: time is an argument.
//!
//! A stall is "below a minimum rate over a window", not "no byte for a while": a peer sending
//! (or reading) one byte every few seconds makes progress forever and holds its transfer —
//! and, as a sender, the segment — for as long as it likes. So each direction of a transfer
//! runs fixed windows of `stall_timeout_ms`, back to back from the moment the payload may
//! flow; at the end of each the bytes moved in it must reach
//!
//! ```text
//! required = max(1, min(stall_rate_min_bytes_per_s × window, bytes still owed at its start) − slack)
//! ```
//!
//! or the transfer fails as stalled. `slack` is what the observer cannot see in time: zero for
//! the receiver (it counts bytes as they arrive); for the sender, one step of flow-control
//! credit (a QUIC receiver grants more credit only once an eighth of its stream window was
//! read, so a sender sees the reader's progress in steps of that size). The rate of each full
//! window is what the takeover rule ([`crate::takeover`]) judges.

use std::time::Duration;

use tokio::time::Instant;

/// The window just ended below the minimum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stalled {
    pub moved: u64,
    pub required: u64,
}

/// One direction of one transfer.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    window: Duration,
    min_bytes_per_s: u64,
    slack: u64,
    start: Instant,
    moved: u64,
    owed_at_start: u64,
}

impl Progress {
    /// Starts the first window at `now`, with `owed` payload bytes to move.
    pub fn new(
        now: Instant,
        window: Duration,
        min_bytes_per_s: u64,
        slack: u64,
        owed: u64,
    ) -> Self {
        Progress {
            window,
            min_bytes_per_s,
            slack,
            start: now,
            moved: 0,
            owed_at_start: owed,
        }
    }

    /// When the current window ends.
    pub fn deadline(&self) -> Instant {
        self.start + self.window
    }

    pub fn record(&mut self, bytes: u64) {
        self.moved = self.moved.saturating_add(bytes);
    }

    /// What the current window must move.
    pub fn required(&self) -> u64 {
        // Mutation point (INV-18): the old rule, "no byte for a window", which a trickle passes.
        if store::mutants::active("stall_rule_idle") {
            return 1;
        }
        let window_ms = self.window.as_millis().min(u128::from(u64::MAX)) as u64;
        let by_rate = self.min_bytes_per_s.saturating_mul(window_ms) / 1000;
        by_rate
            .min(self.owed_at_start)
            .saturating_sub(self.slack)
            .max(1)
    }

    /// Judges the window if it has ended by `now` (`owed`: bytes still to move). `Ok(Some(r))`:
    /// it ended at rate `r` bytes/s and the next one started; `Ok(None)`: not ended yet.
    pub fn roll(&mut self, now: Instant, owed: u64) -> Result<Option<u64>, Stalled> {
        if now < self.deadline() {
            return Ok(None);
        }
        let required = self.required();
        if self.moved < required {
            return Err(Stalled {
                moved: self.moved,
                required,
            });
        }
        let elapsed_ms = now.duration_since(self.start).as_millis().max(1);
        let rate = (u128::from(self.moved) * 1000 / elapsed_ms).min(u128::from(u64::MAX)) as u64;
        self.start = now;
        self.moved = 0;
        self.owed_at_start = owed;
        Ok(Some(rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(30);

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn inv_18_a_trickle_is_cut_at_the_end_of_the_first_window() {
        // One byte every 20 s, 256 B/s required over 30 s windows.
        let t0 = Instant::now();
        let mut p = Progress::new(t0, W, 256, 0, 1 << 30);
        assert_eq!(p.required(), 256 * 30);
        p.record(1);
        assert_eq!(p.roll(at(t0, 20_000), 1 << 30), Ok(None));
        p.record(1);
        assert_eq!(
            p.roll(at(t0, 30_000), 1 << 30),
            Err(Stalled {
                moved: 2,
                required: 7680
            })
        );
    }

    #[test]
    fn inv_18_a_steady_sender_at_the_minimum_passes_every_window() {
        let t0 = Instant::now();
        let mut p = Progress::new(t0, W, 256, 0, 1 << 30);
        for w in 1..=10u64 {
            p.record(256 * 30);
            let rate = p.roll(at(t0, w * 30_000), 1 << 30).unwrap();
            assert_eq!(rate, Some(256));
        }
        // At N-1 bytes it is cut.
        p.record(256 * 30 - 1);
        assert!(p.roll(at(t0, 11 * 30_000), 1 << 30).is_err());
    }

    #[test]
    fn zero_rate_keeps_only_the_no_progress_rule() {
        let t0 = Instant::now();
        let mut p = Progress::new(t0, W, 0, 0, 1 << 30);
        assert_eq!(p.required(), 1);
        p.record(1);
        assert_eq!(p.roll(at(t0, 30_000), 1 << 30), Ok(Some(0)));
        assert!(p.roll(at(t0, 60_000), 1 << 30).is_err());
    }

    #[test]
    fn the_last_bytes_need_not_fill_a_window_and_slack_lowers_the_bar() {
        let t0 = Instant::now();
        // 100 bytes owed: a window must move them all, not 7680.
        let mut p = Progress::new(t0, W, 256, 0, 100);
        assert_eq!(p.required(), 100);
        p.record(99);
        assert!(p.roll(at(t0, 30_000), 1).is_err());
        // The sender's view: one step of credit is invisible.
        let p = Progress::new(t0, W, 1 << 20, 1 << 20, 1 << 40);
        assert_eq!(p.required(), 29 << 20);
        let p = Progress::new(t0, W, 256, 1 << 20, 1 << 40);
        assert_eq!(p.required(), 1);
    }
}

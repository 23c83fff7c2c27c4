//! The daemon's background scrub: re-verifies stored segments continuously, in id order, at no
//! more than `[store] scrub_bytes_per_sec`, quarantining what fails (as `edged fsck` does, see
//! [`crate::fsck`]). Its position survives restarts (a small state file in the data
//! directory), so a node restarted more often than a pass takes still covers its whole store.
//!
//! This module holds the pure parts (pacing, progress, the state file's format); the thread
//! that reads is in `daemon::scrub`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use store::SegmentId;

/// Every segment counts as at least this many bytes against the rate, so that a store of many
/// small segments is paced by the files it opens too, not only by the bytes it reads.
pub const SCRUB_SEGMENT_COST_BYTES_MIN: u64 = 64 * 1024;
/// Pause after a complete pass before the next begins (also what an empty store costs).
pub const SCRUB_PASS_PAUSE_MS: u64 = 1_000;
/// The position is saved at most this often (and at the end of each pass and at shutdown).
pub const SCRUB_SAVE_INTERVAL_MS: u64 = 10_000;
/// Longest single sleep of the scrub thread: how soon it notices shutdown.
pub const SCRUB_STOP_POLL_MS: u64 = 100;
/// Largest state file read back; anything larger is not ours and is ignored.
pub const SCRUB_STATE_BYTES_MAX: u64 = 4096;

/// How long to wait before reading more: `done` bytes (budget) since `elapsed` may take at
/// `rate` bytes per second no less than `done / rate` seconds. `rate` is not 0.
pub fn pace(done: u64, rate: u64, elapsed: Duration) -> Duration {
    let due = Duration::from_secs_f64(done as f64 / rate as f64);
    due.saturating_sub(elapsed)
}

/// What the scrub has done, for `status` and the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// `[store] scrub_bytes_per_sec`; 0: off.
    pub rate_bytes_per_sec: u64,
    /// The last segment checked in the current pass (`None`: at the start of one).
    pub position: Option<SegmentId>,
    pub pass_started_ms: Option<u64>,
    pub last_full_pass_ms: Option<u64>,
    /// Since the daemon started.
    pub bytes_checked: u64,
    pub segments_checked: u64,
    pub quarantined: u64,
    pub passes_completed: u64,
}

impl Progress {
    /// How far the current pass is, in percent, from the position in the id space (ids are
    /// hashes, spread evenly, so this tracks the share of segments behind it).
    pub fn percent(&self) -> u64 {
        match &self.position {
            None => 0,
            Some(id) => {
                let mut first = [0u8; 8];
                first.copy_from_slice(&id.0[..8]);
                (u128::from(u64::from_be_bytes(first)) * 100 / (u128::from(u64::MAX) + 1)) as u64
            }
        }
    }

    /// The `status` line.
    pub fn line(&self) -> String {
        if self.rate_bytes_per_sec == 0 {
            return "off ([store] scrub_bytes_per_sec = 0)".to_owned();
        }
        let last = self
            .last_full_pass_ms
            .map_or("no full pass yet".to_owned(), |ms| {
                format!("last full pass {}", crate::output::format_ms(ms))
            });
        let at = match &self.position {
            Some(id) => format!("at {}… (~{}%)", &id.to_string()[..12], self.percent()),
            None => "at the start of a pass".to_owned(),
        };
        format!(
            "{last}; {at}; {} checked, {} quarantined since start; {}/s",
            crate::output::bytes(self.bytes_checked),
            self.quarantined,
            crate::output::bytes(self.rate_bytes_per_sec),
        )
    }
}

/// What survives a restart: where the pass is, and when the last one ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedState {
    /// Hex id of the last segment checked, if a pass is under way.
    pub position: Option<String>,
    pub pass_started_ms: Option<u64>,
    pub last_full_pass_ms: Option<u64>,
}

impl SavedState {
    pub fn of(p: &Progress) -> SavedState {
        SavedState {
            position: p.position.map(|id| id.to_string()),
            pass_started_ms: p.pass_started_ms,
            last_full_pass_ms: p.last_full_pass_ms,
        }
    }

    /// The state in `bytes`, or a fresh start if they are not a state file (a damaged file
    /// costs at most a pass started over).
    pub fn parse(bytes: &[u8]) -> SavedState {
        serde_json::from_slice(bytes).unwrap_or_default()
    }

    pub fn position(&self) -> Option<SegmentId> {
        self.position.as_deref().and_then(|s| s.parse().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_holds_reads_to_the_rate() {
        let mib = 1 << 20;
        // 4 MiB at 1 MiB/s take 4 s: after 1 s, wait 3.
        assert_eq!(
            pace(4 * mib, mib, Duration::from_secs(1)),
            Duration::from_secs(3)
        );
        // Behind the rate: no wait.
        assert_eq!(pace(mib, mib, Duration::from_secs(5)), Duration::ZERO);
        assert_eq!(pace(0, 1, Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn percent_follows_the_position_in_the_id_space() {
        let mut p = Progress::default();
        assert_eq!(p.percent(), 0);
        let mut id = [0u8; 32];
        id[0] = 0x80;
        p.position = Some(SegmentId(id));
        assert_eq!(p.percent(), 50);
        p.position = Some(SegmentId([0xff; 32]));
        assert_eq!(p.percent(), 99);
    }

    #[test]
    fn the_status_line_says_off_or_where_the_pass_is() {
        let mut p = Progress::default();
        assert!(p.line().starts_with("off"), "{}", p.line());
        p.rate_bytes_per_sec = 1 << 20;
        p.quarantined = 2;
        let line = p.line();
        assert!(line.contains("no full pass yet"), "{line}");
        assert!(line.contains("2 quarantined"), "{line}");
        p.position = Some(SegmentId([0x40; 32]));
        p.last_full_pass_ms = Some(0);
        let line = p.line();
        assert!(
            line.contains("~25%") && line.contains("1970-01-01T00:00:00Z"),
            "{line}"
        );
    }

    #[test]
    fn the_saved_state_round_trips_and_garbage_starts_over() {
        let p = Progress {
            position: Some(SegmentId([7; 32])),
            last_full_pass_ms: Some(5),
            ..Progress::default()
        };
        let saved = SavedState::of(&p);
        let back = SavedState::parse(&serde_json::to_vec(&saved).unwrap());
        assert_eq!(back.position(), Some(SegmentId([7; 32])));
        assert_eq!(back.last_full_pass_ms, Some(5));
        assert_eq!(SavedState::parse(b"\x00garbage"), SavedState::default());
    }
}

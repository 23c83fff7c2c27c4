//! The clock seam: wall-clock UTC milliseconds for stored due times, tokio's `Instant` for
//! sleeping. Nothing in the relay reads time any other way, so a paused tokio runtime (or the
//! discrete-event harness, which passes `now` explicitly) drives it entirely.

use std::fmt::Debug;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Where the executor gets time.
pub trait Clock: Send + Sync + Debug + 'static {
    /// Wall-clock UTC, milliseconds since the Unix epoch (stored due times, expiry).
    fn now_ms(&self) -> u64;

    /// Monotonic time for sleeping (tokio's, so paused test time applies).
    fn instant(&self) -> Instant {
        Instant::now()
    }
}

/// The real clock: `SystemTime` for wall-clock time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        // A clock set before 1970 reads as the epoch: due times then clamp to "now".
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// A wall clock that follows tokio's (pausable) clock from a fixed start, and can jump: for
/// tests on paused tokio time.
#[derive(Debug)]
pub struct TokioClock {
    base_ms: u64,
    start: Instant,
    offset_ms: AtomicI64,
}

impl TokioClock {
    /// A clock reading `base_ms` now, advancing with tokio's clock.
    pub fn starting_at(base_ms: u64) -> TokioClock {
        TokioClock {
            base_ms,
            start: Instant::now(),
            offset_ms: AtomicI64::new(0),
        }
    }

    /// Jumps the wall clock by `delta_ms` (negative: backwards), as an NTP step or an operator
    /// setting the time would. Monotonic time is unaffected.
    pub fn jump(&self, delta_ms: i64) {
        self.offset_ms.fetch_add(delta_ms, Ordering::SeqCst);
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        let elapsed = Instant::now().saturating_duration_since(self.start);
        let ms = self.base_ms as i64
            + i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX / 2)
            + self.offset_ms.load(Ordering::SeqCst);
        ms.max(0) as u64
    }
}

/// `ms` as a `Duration`.
pub fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

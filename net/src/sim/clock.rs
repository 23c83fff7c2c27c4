//! [`SimClock`]: a wall clock on tokio's (paused) clock.

use std::sync::atomic::{AtomicI64, Ordering};

use tokio::time::Instant;

use crate::clock::Clock;

/// Wall-clock milliseconds that advance with tokio's clock: `base_ms` when created, plus the
/// virtual time elapsed since, plus any [`SimClock::jump`]s. Create it inside the simulation's
/// runtime (outside one, tokio's clock is the system's).
#[derive(Debug)]
pub struct SimClock {
    base_ms: u64,
    start: Instant,
    offset_ms: AtomicI64,
}

impl SimClock {
    pub fn new(base_ms: u64) -> SimClock {
        SimClock {
            base_ms,
            start: Instant::now(),
            offset_ms: AtomicI64::new(0),
        }
    }

    /// Moves this clock by `delta_ms` (a clock jump; negative goes back), for good.
    pub fn jump(&self, delta_ms: i64) {
        self.offset_ms.fetch_add(delta_ms, Ordering::SeqCst);
    }
}

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let now = self.base_ms.saturating_add(elapsed);
        now.saturating_add_signed(self.offset_ms.load(Ordering::SeqCst))
    }
}

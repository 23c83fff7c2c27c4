//! The clock seam: wall-clock UTC milliseconds for what is stored and compared with other
//! nodes (due times, freshness, certificate validity), tokio's monotonic `Instant` for sleeping
//! and deadlines. Nothing in `edged` reads time any other way, so a paused tokio runtime with a
//! [`VirtualClock`] drives every layer at once.
//!
//! A wall clock can jump (an NTP step, an operator setting the date); monotonic time cannot.
//! [`wall_clock_jump_ms`] is the one rule that tells a jump from time passing.

use std::fmt::Debug;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// A wall clock that moved this much more or less than monotonic time between two readings
/// has jumped (smaller differences are scheduling noise).
pub const JUMP_TOLERANCE_MS: i64 = 2_000;

/// Where every layer gets time.
pub trait Clock: Send + Sync + Debug + 'static {
    /// Wall-clock UTC, milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;

    /// Monotonic time for sleeping and deadlines (tokio's, so paused time applies).
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
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A wall clock that follows tokio's (pausable) clock from a fixed start and can jump: for
/// tests and simulations on paused time.
#[derive(Debug)]
pub struct VirtualClock {
    base_ms: u64,
    start: Instant,
    offset_ms: AtomicI64,
}

impl VirtualClock {
    /// A clock reading `base_ms` now, advancing with tokio's clock.
    pub fn starting_at(base_ms: u64) -> VirtualClock {
        VirtualClock {
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

impl Clock for VirtualClock {
    fn now_ms(&self) -> u64 {
        let elapsed = Instant::now().saturating_duration_since(self.start);
        let ms = i64::try_from(self.base_ms).unwrap_or(i64::MAX / 2)
            + i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX / 4)
            + self.offset_ms.load(Ordering::SeqCst);
        u64::try_from(ms.max(0)).unwrap_or(0)
    }
}

/// The clock-jump rule: between two readings the wall clock moved `jump_ms` more (or less)
/// than monotonic time; `Some(jump_ms)` (negative: backwards) when that exceeds
/// [`JUMP_TOLERANCE_MS`] either way. Monotonic readings are milliseconds from any fixed origin.
pub fn wall_clock_jump_ms(
    last_wall_ms: u64,
    last_mono_ms: u64,
    now_wall_ms: u64,
    now_mono_ms: u64,
) -> Option<i64> {
    let wall = i128::from(now_wall_ms) - i128::from(last_wall_ms);
    let mono = i128::from(now_mono_ms) - i128::from(last_mono_ms);
    let jump = wall - mono;
    (jump.abs() > i128::from(JUMP_TOLERANCE_MS))
        .then(|| i64::try_from(jump).unwrap_or(if jump < 0 { i64::MIN } else { i64::MAX }))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const T0: u64 = 1_767_225_600_000;

    #[test]
    fn wall_clock_jump_rule_at_the_tolerance_and_past_it() {
        let tol = JUMP_TOLERANCE_MS as u64;
        // Both clocks moved alike (a long sleep is no jump).
        assert_eq!(wall_clock_jump_ms(T0, 0, T0 + 3_600_000, 3_600_000), None);
        assert_eq!(wall_clock_jump_ms(T0, 0, T0 + 100 + tol, 100), None);
        assert_eq!(wall_clock_jump_ms(T0, 100, T0 - tol, 100), None);
        assert_eq!(
            wall_clock_jump_ms(T0, 0, T0 + 101 + tol, 100),
            Some(JUMP_TOLERANCE_MS + 1)
        );
        assert_eq!(
            wall_clock_jump_ms(T0, 0, T0 - 86_400_000, 500),
            Some(-86_400_500)
        );
        // Extremes do not overflow.
        assert_eq!(wall_clock_jump_ms(u64::MAX, 0, 0, u64::MAX), Some(i64::MIN));
        assert_eq!(wall_clock_jump_ms(0, u64::MAX, u64::MAX, 0), Some(i64::MAX));
    }

    #[tokio::test(start_paused = true)]
    async fn the_virtual_clock_follows_paused_time_and_jumps() {
        let clock = VirtualClock::starting_at(10_000_000);
        let start = clock.instant();
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(clock.now_ms(), 10_030_000);
        assert_eq!(clock.instant() - start, Duration::from_secs(30));
        clock.jump(-3_600_000);
        assert_eq!(clock.now_ms(), 6_430_000);
        clock.jump(-100_000_000);
        assert_eq!(clock.now_ms(), 0, "before the epoch reads as the epoch");
    }
}

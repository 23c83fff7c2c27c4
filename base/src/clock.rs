//! The clock seam: wall-clock UTC milliseconds for what is stored and compared with other
//! nodes (due times, freshness, certificate validity), tokio's monotonic `Instant` for sleeping
//! and deadlines. Nothing in `edged` reads time any other way, so a paused tokio runtime with a
//! [`VirtualClock`] drives every layer at once.
//!
//! A wall clock can jump (an NTP step, an operator setting the date); monotonic time cannot.
//! [`JumpDetector`] holds the one rule that tells a jump from time passing.

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

    /// Both at once, for [`JumpDetector`].
    fn read(&self) -> Reading {
        Reading {
            wall_ms: self.now_ms(),
            mono: self.instant(),
        }
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

/// Wall-clock and monotonic time read together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    pub wall_ms: u64,
    pub mono: Instant,
}

/// How far the wall clock jumped between two readings: `Some(ms)` (negative: backwards) when
/// it moved more than [`JUMP_TOLERANCE_MS`] apart from monotonic time, else `None`.
pub fn jump_ms(last: Reading, now: Reading) -> Option<i64> {
    let mono = i64::try_from(now.mono.saturating_duration_since(last.mono).as_millis())
        .unwrap_or(i64::MAX / 2);
    let wall = i128::from(now.wall_ms) - i128::from(last.wall_ms);
    let jump = i64::try_from(wall - i128::from(mono)).unwrap_or(i64::MAX);
    (jump.abs() > JUMP_TOLERANCE_MS).then_some(jump)
}

/// The last reading and what it takes to notice a jump since: pure, fed readings.
#[derive(Debug, Clone, Copy)]
pub struct JumpDetector {
    last: Reading,
}

impl JumpDetector {
    pub fn new(first: Reading) -> JumpDetector {
        JumpDetector { last: first }
    }

    /// Takes a new reading: the jump since the last one, if any.
    pub fn observe(&mut self, now: Reading) -> Option<i64> {
        let jump = jump_ms(self.last, now);
        self.last = now;
        jump
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(wall_ms: u64, mono: Instant) -> Reading {
        Reading { wall_ms, mono }
    }

    #[tokio::test(start_paused = true)]
    async fn time_passing_is_no_jump_and_the_tolerance_is_exclusive() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(60);
        assert_eq!(jump_ms(at(1_000, t0), at(61_000, t1)), None);
        let tol = JUMP_TOLERANCE_MS as u64;
        assert_eq!(jump_ms(at(1_000, t0), at(61_000 + tol, t1)), None);
        assert_eq!(
            jump_ms(at(1_000, t0), at(61_001 + tol, t1)),
            Some(JUMP_TOLERANCE_MS + 1)
        );
        assert_eq!(
            jump_ms(at(100_000, t0), at(1_000, t1)),
            Some(-(99_000 + 60_000))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn extreme_readings_never_panic() {
        let t0 = Instant::now();
        assert!(jump_ms(at(0, t0), at(u64::MAX, t0)).is_some());
        assert!(jump_ms(at(u64::MAX, t0), at(0, t0)).is_some());
        // Monotonic time never runs backwards; a reading that claims it does counts as no time.
        let later = t0 + Duration::from_secs(5);
        assert_eq!(jump_ms(at(0, later), at(0, t0)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_virtual_clock_follows_paused_time_and_jumps() {
        let clock = VirtualClock::starting_at(10_000_000);
        let mut detector = JumpDetector::new(clock.read());
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(clock.now_ms(), 10_030_000);
        assert_eq!(detector.observe(clock.read()), None);
        clock.jump(-3_600_000);
        assert_eq!(detector.observe(clock.read()), Some(-3_600_000));
        assert_eq!(detector.observe(clock.read()), None);
        clock.jump(-100_000_000);
        assert_eq!(clock.now_ms(), 0, "before the epoch reads as the epoch");
    }
}

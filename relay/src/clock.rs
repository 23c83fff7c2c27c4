//! Time in the relay: the one clock seam of `base` ([`Clock`]: wall-clock UTC ms for stored
//! due times, tokio's `Instant` for sleeping). Nothing in the relay reads time any other way,
//! so a paused tokio runtime with a [`VirtualClock`] (or the discrete-event harness, which
//! passes `now` explicitly) drives it entirely.

use std::time::Duration;

pub use base::clock::{Clock, SystemClock, VirtualClock};

/// `ms` as a `Duration`.
pub fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

//! The clock seam: wall-clock UTC milliseconds, read in one place.
//!
//! The node reads "now" only through a [`Clock`]: for the store's freshness checks and
//! checkpoints, and — through [`ClockTime`] — for certificate validity in TLS. Timeouts use
//! tokio's monotonic clock (which tests can pause).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::UnixTime;

/// Wall-clock UTC time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now_ms(&self) -> u64;
}

/// The system's real-time clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A [`Clock`] as rustls' time provider, so certificate validity is judged on the same clock.
#[derive(Debug, Clone)]
pub struct ClockTime(pub Arc<dyn Clock>);

impl rustls::time_provider::TimeProvider for ClockTime {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(Duration::from_millis(
            self.0.now_ms(),
        )))
    }
}

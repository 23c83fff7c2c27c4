//! Time in the network layer: the one clock seam of `base` ([`Clock`]).
//!
//! The node reads "now" only through a [`Clock`]: for the store's freshness checks and
//! checkpoints, and — through [`ClockTime`] — for certificate validity in TLS. Timeouts use
//! tokio's monotonic clock (which tests can pause).

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::UnixTime;

pub use base::clock::{Clock, SystemClock};

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

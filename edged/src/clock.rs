//! The one place the binary reads the wall clock. Everything below takes `now_ms` as an argument.

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock UTC milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// RFC 3339 rendering of a UTC millisecond timestamp, for humans.
pub fn format_ms(ms: u64) -> String {
    let t = UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

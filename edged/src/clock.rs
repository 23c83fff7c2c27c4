//! The one place the binary reads the wall clock. Everything below takes `now_ms` as an argument.

use std::time::{SystemTime, UNIX_EPOCH};

use store::limits::TIME_MS_MAX;

/// Wall-clock UTC milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// RFC 3339 rendering of a UTC millisecond timestamp, for humans. Never panics: RFC 3339 has
/// four-digit years, so a time after [`TIME_MS_MAX`] (no valid manifest carries one) is shown
/// as a count of milliseconds instead.
pub fn format_ms(ms: u64) -> String {
    if ms > TIME_MS_MAX {
        return format!("{ms} ms after 1970-01-01T00:00:00Z (after year 9999)");
    }
    let t = UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inv_17_format_ms_renders_up_to_the_bound_and_never_panics_beyond() {
        let cases = [
            (0, "1970-01-01T00:00:00Z"),
            (1_767_225_600_000, "2026-01-01T00:00:00Z"),
            (TIME_MS_MAX, "9999-12-31T23:59:59Z"),
            (
                TIME_MS_MAX + 1,
                "253402300800000 ms after 1970-01-01T00:00:00Z (after year 9999)",
            ),
            (
                u64::MAX,
                "18446744073709551615 ms after 1970-01-01T00:00:00Z (after year 9999)",
            ),
        ];
        for (ms, want) in cases {
            assert_eq!(format_ms(ms), want, "{ms}");
        }
    }
}

//! Times as an operator reads them: RFC 3339 in UTC, with the age relative to now. Never raw
//! milliseconds since the epoch.

use std::time::UNIX_EPOCH;

use crate::limits::TIME_MS_MAX;

const SECOND_MS: u64 = 1_000;
const MINUTE_MS: u64 = 60 * SECOND_MS;
const HOUR_MS: u64 = 60 * MINUTE_MS;
const DAY_MS: u64 = 24 * HOUR_MS;

/// RFC 3339 rendering of a UTC millisecond timestamp, to the second. Never panics: RFC 3339
/// has four-digit years, so a time after [`TIME_MS_MAX`] (no valid manifest carries one) is
/// shown as a count of milliseconds instead.
pub fn rfc3339(ms: u64) -> String {
    if ms > TIME_MS_MAX {
        return format!("{ms} ms after 1970-01-01T00:00:00Z (after year 9999)");
    }
    let t = UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// How far `ms` is from `now_ms`, in the largest whole unit: "3 h ago", "in 12 min",
/// "under 1 s ago". The direction is always said: it tells an expiry from a clock ahead.
pub fn age(ms: u64, now_ms: u64) -> String {
    let (span, past) = match now_ms.checked_sub(ms) {
        Some(ago) => (ago, true),
        None => (ms - now_ms, false),
    };
    let amount = match span {
        s if s < SECOND_MS => "under 1 s".to_owned(),
        s if s < MINUTE_MS => format!("{} s", s / SECOND_MS),
        s if s < HOUR_MS => format!("{} min", s / MINUTE_MS),
        s if s < DAY_MS => format!("{} h", s / HOUR_MS),
        s => format!("{} d", s / DAY_MS),
    };
    if past {
        format!("{amount} ago")
    } else {
        format!("in {amount}")
    }
}

/// "2026-12-04T10:11:12Z (3 h ago)".
pub fn rfc3339_with_age(ms: u64, now_ms: u64) -> String {
    format!("{} ({})", rfc3339(ms), age(ms, now_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inv_17_rfc3339_renders_up_to_the_bound_and_never_panics_beyond() {
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
            assert_eq!(rfc3339(ms), want, "{ms}");
        }
    }

    #[test]
    fn age_takes_the_largest_whole_unit_either_way() {
        let now = 10 * DAY_MS;
        let cases = [
            (now, "under 1 s ago"),
            (now - 999, "under 1 s ago"),
            (now + 1, "in under 1 s"),
            (now - SECOND_MS, "1 s ago"),
            (now - MINUTE_MS + 1, "59 s ago"),
            (now - 3 * HOUR_MS - 5 * MINUTE_MS, "3 h ago"),
            (now - 2 * DAY_MS, "2 d ago"),
            (now + 12 * MINUTE_MS, "in 12 min"),
            (now + DAY_MS, "in 1 d"),
        ];
        for (ms, want) in cases {
            assert_eq!(age(ms, now), want, "{ms}");
        }
        assert_eq!(age(u64::MAX, 0), format!("in {} d", u64::MAX / DAY_MS));
        assert_eq!(
            rfc3339_with_age(1_767_225_600_000, 1_767_225_600_000 + 3 * HOUR_MS),
            "2026-01-01T00:00:00Z (3 h ago)"
        );
    }
}

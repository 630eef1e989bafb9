//! Wall-clock time as Unix seconds: what manifests, acks, status and the
//! audit log record. One home, so every timestamp is read the same way.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the epoch now (0 if the clock is before 1970).
pub fn now_unix() -> i64 {
    unix_of(SystemTime::now())
}

/// Milliseconds since the epoch now (0 if the clock is before 1970).
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Seconds since the epoch at `t` (0 before 1970).
pub fn unix_of(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The time `secs` after the epoch (the epoch itself for negative values).
pub fn system_time(secs: i64) -> SystemTime {
    UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

/// An HTTP `Date` header's time, if it parses.
pub fn parse_http_date(text: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(text).ok()
}

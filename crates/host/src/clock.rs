//! Time as the store counts it — Unix milliseconds — and the conversions to and from it.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, millis)
}

/// A duration in whole milliseconds, saturating.
pub fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A span of milliseconds as a duration; a negative span is zero.
pub fn duration_ms(span_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(span_ms).unwrap_or(0))
}

/// A Unix-ms time as a `SystemTime`; before the epoch is the epoch.
pub fn system_time(at_ms: i64) -> SystemTime {
    UNIX_EPOCH + duration_ms(at_ms)
}

/// A `SystemTime` in Unix ms, if it is not before the epoch.
pub fn unix_ms(at: SystemTime) -> Option<i64> {
    at.duration_since(UNIX_EPOCH).ok().map(millis)
}

/// `HH:MM:SS UTC` of a Unix-ms time, for lines a person reads in a workflow log.
pub fn utc_time_of_day(at_ms: i64) -> String {
    let seconds = at_ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02} UTC", seconds / 3600, seconds / 60 % 60, seconds % 60)
}

/// A claimed job's (or an outbox round's) time: the `now` it was claimed at, moved on by the real
/// time since, so stepped tests and production agree.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClaimClock {
    at_claim: i64,
    since: Instant,
}

impl ClaimClock {
    /// The clock of a claim made at `now`, from this instant on.
    pub(crate) fn claimed_at(now: i64) -> ClaimClock {
        ClaimClock { at_claim: now, since: Instant::now() }
    }

    /// The claim's `now` plus the real time since the claim, in Unix ms.
    pub(crate) fn now(&self) -> i64 {
        self.at_claim.saturating_add(millis(self.since.elapsed()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_of_day_is_utc_hours_minutes_seconds() {
        // 2026-11-06 13:04:09.500 UTC
        assert_eq!(utc_time_of_day(1_793_970_249_500), "13:04:09 UTC");
        assert_eq!(utc_time_of_day(0), "00:00:00 UTC");
    }

    #[test]
    fn spans_and_times_convert_both_ways() {
        assert_eq!(duration_ms(-5), Duration::ZERO);
        assert_eq!(duration_ms(1_500), Duration::from_millis(1_500));
        assert_eq!(unix_ms(system_time(1_793_970_249_500)), Some(1_793_970_249_500));
        assert_eq!(system_time(-1), UNIX_EPOCH);
    }
}

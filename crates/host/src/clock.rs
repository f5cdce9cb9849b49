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

/// Unix milliseconds as a UTC time to the second: `2026-11-24 03:10:05Z` (the command line and
/// the console show times so).
pub fn timestamp(unix_ms: i64) -> String {
    let seconds = unix_ms.div_euclid(1000);
    let (days, of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (of_day / 3600, of_day % 3600 / 60, of_day % 60);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}Z")
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A time an operator names to filter jobs by (`jobs list --since`, the console's jobs page):
/// a moment, or a duration before the question is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    At(SystemTime),
    Ago(Duration),
}

impl Moment {
    /// `2026-11-24 03:10:05Z` (UTC; a `T` for the space and no seconds, as a browser's
    /// `datetime-local` field sends it, are taken too) or a duration such as `2h`.
    pub fn parse(text: &str) -> Result<Moment, String> {
        let text = text.trim();
        if let Ok(ago) = humantime::parse_duration(text) {
            return Ok(Moment::Ago(ago));
        }
        let at = text.trim_end_matches('Z').replacen('T', " ", 1);
        let at = if at.len() == "2026-11-24 03:10".len() { format!("{at}:00") } else { at };
        humantime::parse_rfc3339_weak(&at).map(Moment::At).map_err(|_| {
            format!("`{text}` is neither a UTC time (2026-11-24 03:10:05Z) nor a duration (2h)")
        })
    }

    /// Unix milliseconds, `Ago` counted back from `now`.
    pub fn unix_ms(self, now: i64) -> i64 {
        match self {
            Moment::At(at) => unix_ms(at).unwrap_or(0),
            Moment::Ago(ago) => now.saturating_sub(millis(ago)),
        }
    }
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
    fn timestamps_are_utc_to_the_second() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00Z");
        assert_eq!(timestamp(1_700_000_000_000), "2023-11-14 22:13:20Z");
        assert_eq!(timestamp(1_795_489_805_999), "2026-11-24 03:10:05Z");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29 00:00:00Z");
        assert_eq!(timestamp(-1), "1969-12-31 23:59:59Z");
    }

    #[test]
    fn timestamps_agree_with_humantime_over_four_centuries() {
        let mut ms = 0_i64;
        while ms < 13_000_000_000_000 {
            let expected = humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs()),
            )
            .to_string()
            .replace('T', " ");
            assert_eq!(timestamp(ms), expected);
            ms += 7_777_777_777;
        }
    }

    #[test]
    fn moments_are_utc_times_or_durations_ago() {
        let at = |text: &str| Moment::parse(text).unwrap().unix_ms(10_000_000);
        assert_eq!(at("2026-11-24 03:10:05Z"), 1_795_489_805_000);
        assert_eq!(at("2026-11-24T03:10"), 1_795_489_800_000);
        assert_eq!(at("2h"), 10_000_000 - 7_200_000);
        assert!(Moment::parse("yesterday").is_err());
    }

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

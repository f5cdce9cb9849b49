//! Dates as the faked systems write them, computed by hand (no date library, so a test that
//! checks a client's date parser against them does not check it against itself).

use std::time::{SystemTime, UNIX_EPOCH};

/// `2024-05-01T12:34:56Z` (UTC, whole seconds), as Graph writes dates. Times before 1970 read as
/// 1970-01-01T00:00:00Z.
pub fn rfc3339(at: SystemTime) -> String {
    let (year, month, day, seconds) = civil(at);
    let (hours, minutes, seconds) = clock(seconds);
    format!("{year:04}-{month:02}-{day:02}T{hours:02}:{minutes:02}:{seconds:02}Z")
}

/// `Thu, 01 Jan 1970 00:00:00 GMT`: HTTP's IMF-fixdate (RFC 9110 §5.6.7), as in `Retry-After`.
/// Times before 1970 read as the epoch.
pub fn imf_fixdate(at: SystemTime) -> String {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let (year, month, day, seconds) = civil(at);
    let (hours, minutes, seconds) = clock(seconds);
    let weekday = WEEKDAYS[(unix_seconds(at) / 86_400 % 7) as usize];
    let month = MONTHS[(month - 1) as usize];
    format!("{weekday}, {day:02} {month} {year} {hours:02}:{minutes:02}:{seconds:02} GMT")
}

fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Year, month (1–12), day (1–31) and the seconds into that day (UTC).
fn civil(at: SystemTime) -> (i64, i64, i64, u64) {
    let seconds = unix_seconds(at);
    let days = (seconds / 86_400) as i64;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, seconds % 86_400)
}

/// Hours, minutes and seconds of `seconds` into a day.
fn clock(seconds: u64) -> (u64, u64, u64) {
    (seconds / 3_600, seconds / 60 % 60, seconds % 60)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn dates_in_both_formats() {
        for (seconds, in_rfc3339, in_imf_fixdate) in [
            (0, "1970-01-01T00:00:00Z", "Thu, 01 Jan 1970 00:00:00 GMT"),
            // RFC 9110's own example.
            (784_111_777, "1994-11-06T08:49:37Z", "Sun, 06 Nov 1994 08:49:37 GMT"),
            (1_709_210_096, "2024-02-29T12:34:56Z", "Thu, 29 Feb 2024 12:34:56 GMT"),
        ] {
            let at = UNIX_EPOCH + Duration::from_secs(seconds);
            assert_eq!(rfc3339(at), in_rfc3339);
            assert_eq!(imf_fixdate(at), in_imf_fixdate);
        }
    }
}

//! Random identifiers in the shapes Bitrix24 uses: member IDs, tokens, `uniqid` workflow IDs,
//! activity names and event IDs (protocol doc §2.3, §3.4).

use std::time::SystemTime;

use md5::{Digest, Md5};
use rand::Rng;
use rand::distr::{Alphanumeric, SampleString};

/// `n` random lower-case hex digits.
pub(crate) fn hex(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n).map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap_or('0')).collect()
}

/// A portal's `member_id`: 32 hex digits (§2.3).
pub(crate) fn member_id() -> String {
    hex(32)
}

/// An OAuth token: 70 hex digits, as portals issue them (see the example in §2.5).
pub(crate) fn oauth_token() -> String {
    hex(70)
}

/// `uniqid("", true)`: 13 hex digits of the time in microseconds, then one random digit, a dot
/// and 8 more digits, e.g. `681c894d3f0ec8.54818143` (§2.3).
pub(crate) fn workflow_id() -> String {
    let micros =
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_micros());
    let secs = micros / 1_000_000;
    let usec = micros % 1_000_000;
    let mut rng = rand::rng();
    format!(
        "{secs:08x}{usec:05x}{}.{:08}",
        rng.random_range(0..10u32),
        rng.random_range(0..100_000_000u32)
    )
}

/// An activity name as the designer generates them: `A12345_1234_12345_12345`.
pub(crate) fn activity_name() -> String {
    let mut rng = rand::rng();
    format!(
        "A{}_{}_{}_{}",
        rng.random_range(10_000..100_000u32),
        rng.random_range(1000..10_000u32),
        rng.random_range(10_000..100_000u32),
        rng.random_range(10_000..100_000u32)
    )
}

/// `Random::getString(32, true)`: 32 mixed-case alphanumerics (§3.4).
pub(crate) fn event_id() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 32)
}

/// A webhook secret or a signer key: mixed-case alphanumerics.
pub(crate) fn secret(n: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), n)
}

/// Lower-case hex MD5, PHP's `md5()`.
pub(crate) fn md5_hex(s: &str) -> String {
    hex::encode(Md5::digest(s.as_bytes()))
}

//! Backoff maths for connector retries and redeliveries: exponential, capped, with jitter.
//!
//! Pure functions: the random share is a parameter, so tests pin it and property tests check the
//! bounds (design.md §3, style.md "backoff maths against its bounds").

use std::time::Duration;

use crate::clock::millis;
use crate::config::RetryPolicy;

/// The wait after failed attempt number `attempt` (1, 2, …): `base · 2^(attempt-1)`, at most
/// `cap`, then shortened by `jitter · random` of itself, so the waits of many jobs spread out.
///
/// `jitter` is the largest share cut (clamped to 0..=1); `random` is a uniform draw (clamped to
/// 0..=1). Attempt 0 counts as 1. Never panics, whatever the inputs.
pub fn delay(base: Duration, cap: Duration, jitter: f64, attempt: u32, random: f64) -> Duration {
    let full = exponential(base, cap, attempt);
    let share = clamp_unit(jitter) * clamp_unit(random);
    let nanos = full.as_nanos();
    // A float → integer `as` saturates; the cut never exceeds the whole.
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let cut = ((nanos as f64) * share) as u128;
    from_nanos(nanos - cut.min(nanos))
}

/// `min(cap, base · 2^(attempt-1))`, without overflow.
pub fn exponential(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let doublings = attempt.max(1) - 1;
    2u32.checked_pow(doublings)
        .and_then(|factor| base.checked_mul(factor))
        .map_or(cap, |d| d.min(cap))
}

/// When attempt `attempt + 1` may run (Unix ms), after attempt `attempt` failed at `now`: the
/// policy's backoff, but never earlier than the connector's `retry_after`.
pub fn next_attempt_at(
    now: i64,
    attempt: u32,
    policy: &RetryPolicy,
    retry_after: Option<Duration>,
    random: f64,
) -> i64 {
    let wait = delay(policy.backoff_base, policy.backoff_cap, policy.jitter, attempt, random);
    let wait = retry_after.map_or(wait, |asked| wait.max(asked));
    now.saturating_add(millis(wait))
}

fn clamp_unit(value: f64) -> f64 {
    if value.is_nan() { 0.0 } else { value.clamp(0.0, 1.0) }
}

fn from_nanos(nanos: u128) -> Duration {
    const PER_SECOND: u128 = 1_000_000_000;
    let seconds = u64::try_from(nanos / PER_SECOND).unwrap_or(u64::MAX);
    // Always below 10^9, so it fits.
    let rest = u32::try_from(nanos % PER_SECOND).unwrap_or(0);
    Duration::new(seconds, rest)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn doubles_from_the_base_up_to_the_cap() {
        let waits: Vec<u64> =
            (1..=8).map(|n| delay(secs(2), secs(60), 0.0, n, 0.5).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn jitter_cuts_a_random_share() {
        assert_eq!(delay(secs(10), secs(60), 0.2, 1, 0.0), secs(10));
        assert_eq!(delay(secs(10), secs(60), 0.2, 1, 1.0), secs(8));
        assert_eq!(delay(secs(10), secs(60), 0.2, 1, 0.5), secs(9));
    }

    #[test]
    fn retry_after_is_a_floor() {
        let policy = RetryPolicy {
            backoff_base: secs(2),
            backoff_cap: secs(60),
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        assert_eq!(next_attempt_at(1_000, 1, &policy, None, 0.0), 3_000);
        assert_eq!(next_attempt_at(1_000, 1, &policy, Some(secs(30)), 0.0), 31_000);
        assert_eq!(next_attempt_at(1_000, 1, &policy, Some(Duration::from_millis(10)), 0.0), 3_000);
    }

    #[test]
    fn extreme_inputs_do_not_panic() {
        assert_eq!(delay(Duration::MAX, Duration::MAX, 0.0, u32::MAX, 0.0), Duration::MAX);
        assert_eq!(delay(secs(1), Duration::MAX, 1.0, 1, 1.0), Duration::ZERO);
        assert_eq!(delay(secs(1), secs(5), f64::NAN, 0, f64::INFINITY), secs(1));
        let policy = RetryPolicy { backoff_cap: Duration::MAX, ..RetryPolicy::default() };
        assert_eq!(next_attempt_at(i64::MAX - 1, 100, &policy, None, 0.0), i64::MAX);
    }

    fn durations() -> impl Strategy<Value = Duration> {
        (0u64..=3_600_000).prop_map(Duration::from_millis)
    }

    proptest! {
        #[test]
        fn delay_stays_within_its_bounds(
            base in durations(),
            cap in durations(),
            jitter in 0.0f64..=1.0,
            attempt in 1u32..=80,
            random in 0.0f64..=1.0,
        ) {
            let wait = delay(base, cap, jitter, attempt, random);
            let full = exponential(base, cap, attempt);
            prop_assert!(wait <= full);
            prop_assert!(wait <= cap);
            // The lower bound, allowing one nanosecond of float rounding.
            let floor = full.mul_f64(1.0 - jitter).saturating_sub(Duration::from_nanos(1));
            prop_assert!(wait >= floor, "{wait:?} < {floor:?}");
            if let Some(factor) = 2u32.checked_pow(attempt - 1) {
                prop_assert_eq!(full, base.checked_mul(factor).map_or(cap, |d| d.min(cap)));
            }
        }

        #[test]
        fn without_jitter_it_never_shrinks(
            base in durations(),
            cap in durations(),
            attempt in 1u32..=80,
            random in 0.0f64..=1.0,
        ) {
            let now = delay(base, cap, 0.0, attempt, random);
            let next = delay(base, cap, 0.0, attempt + 1, random);
            prop_assert!(now <= next, "attempt {attempt}: {now:?} then {next:?}");
        }

        #[test]
        fn next_attempt_is_never_before_retry_after(
            now in 0i64..=4_000_000_000_000,
            attempt in 1u32..=40,
            after in proptest::option::of(durations()),
            random in 0.0f64..=1.0,
        ) {
            let policy = RetryPolicy::default();
            let at = next_attempt_at(now, attempt, &policy, after, random);
            prop_assert!(at >= now);
            if let Some(after) = after {
                prop_assert!(at >= now + millis(after));
            }
            prop_assert!(at <= now + millis(policy.backoff_cap.max(after.unwrap_or_default())));
        }
    }
}

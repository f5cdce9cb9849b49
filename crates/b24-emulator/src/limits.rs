//! The portal's load limits (protocol doc §5.6): the per-portal leaky bucket behind
//! `QUERY_LIMIT_EXCEEDED` and the per-(app, method) `operating` time ledger behind
//! `OPERATION_TIME_LIMIT`.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

/// How long the `operating` ledger remembers method time: ten one-minute buckets (§5.6).
pub(crate) const OPERATING_WINDOW: Duration = Duration::from_secs(600);

/// A leaky bucket: every request adds one unit, the bucket drains at `rate` units per second,
/// and a request that would lift it over `threshold` is refused without adding to it.
#[derive(Debug)]
pub(crate) struct LeakyBucket {
    level: f64,
    last: Instant,
}

impl LeakyBucket {
    pub(crate) fn new() -> Self {
        Self { level: 0.0, last: Instant::now() }
    }

    /// Admits one request if it fits, given the current drain rate and threshold.
    pub(crate) fn admit(&mut self, rate: f64, threshold: u32) -> bool {
        let now = Instant::now();
        let drained = now.duration_since(self.last).as_secs_f64() * rate;
        self.level = (self.level - drained).max(0.0);
        self.last = now;
        if self.level + 1.0 > f64::from(threshold) {
            return false;
        }
        self.level += 1.0;
        true
    }

    /// Empties the bucket (used when the limit is reconfigured).
    pub(crate) fn reset(&mut self) {
        self.level = 0.0;
        self.last = Instant::now();
    }
}

/// Method time spent per (caller, method) over the last ten minutes.
#[derive(Debug, Default)]
pub(crate) struct OperatingLedger {
    spent: HashMap<(String, String), VecDeque<(SystemTime, Duration)>>,
}

/// Where a (caller, method) pair stands against the operating limit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OperatingStatus {
    /// Seconds of method time in the window.
    pub(crate) operating: f64,
    /// When the oldest entry leaves the window (Unix seconds).
    pub(crate) reset_at: SystemTime,
}

impl OperatingLedger {
    /// The current total for `(caller, method)`, after forgetting entries older than the window.
    pub(crate) fn status(&mut self, caller: &str, method: &str) -> OperatingStatus {
        let now = SystemTime::now();
        let key = (caller.to_owned(), method.to_owned());
        let entries = self.spent.entry(key).or_default();
        while entries
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at).is_ok_and(|age| age >= OPERATING_WINDOW))
        {
            entries.pop_front();
        }
        let operating = entries.iter().map(|(_, d)| d.as_secs_f64()).sum();
        let oldest = entries.front().map_or(now, |(at, _)| *at);
        OperatingStatus { operating, reset_at: oldest + OPERATING_WINDOW }
    }

    /// Adds the time one call spent.
    pub(crate) fn charge(&mut self, caller: &str, method: &str, spent: Duration) {
        let key = (caller.to_owned(), method.to_owned());
        self.spent.entry(key).or_default().push_back((SystemTime::now(), spent));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_admits_up_to_threshold() {
        let mut b = LeakyBucket::new();
        assert!(b.admit(0.0, 2));
        assert!(b.admit(0.0, 2));
        assert!(!b.admit(0.0, 2));
    }
}

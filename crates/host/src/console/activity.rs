//! What this node saw of each portal's REST traffic lately, kept in memory for the console's
//! overview: the portal's refusals for a spent request budget and the failed token refreshes in
//! the last hour, the last refresh that worked, and the last wait for a place in the budget.
//! Fed by the same observer as the Prometheus metrics ([`super::metrics::PortalMetrics`]);
//! Prometheus keeps the history, this keeps only what one page needs. Per node, lost on restart.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::clock;

/// How far back the counts reach.
pub const WINDOW_MS: i64 = 3_600_000;

/// The most events of one kind kept per portal: a portal refusing more than this in an hour is
/// shown as "at least" this many.
pub const MAX_EVENTS: usize = 10_000;

/// Every portal's recent activity, by `member_id`.
#[derive(Debug, Default)]
pub struct PortalActivity {
    portals: Mutex<BTreeMap<String, Recent>>,
}

/// One portal's events, as Unix-ms times.
#[derive(Debug, Default)]
struct Recent {
    rate_limited: VecDeque<i64>,
    refresh_failed: VecDeque<i64>,
    refreshed_at: Option<i64>,
    waited: Option<(Duration, i64)>,
}

/// One portal's activity as the overview shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActivitySummary {
    /// `QUERY_LIMIT_EXCEEDED` (and `OPERATION_TIME_LIMIT`) answers in the last hour.
    pub rate_limited: usize,
    /// Token refreshes refused or failed in the last hour.
    pub refresh_failed: usize,
    /// The last refresh that worked (Unix ms).
    pub refreshed_at: Option<i64>,
    /// How long the last request waited for its place in the budget, and when it was sent.
    pub waited: Option<(Duration, i64)>,
}

impl PortalActivity {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Recent>> {
        // Whole values are pushed and popped under the lock: a poisoned map is consistent.
        self.portals.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The portal refused a request for a spent budget.
    pub fn rate_limited(&self, member_id: &str) {
        let now = clock::now_ms();
        push(&mut self.lock().entry(member_id.to_owned()).or_default().rate_limited, now);
    }

    /// A token refresh for the portal ended so.
    pub fn refreshed(&self, member_id: &str, ok: bool) {
        let now = clock::now_ms();
        let mut portals = self.lock();
        let recent = portals.entry(member_id.to_owned()).or_default();
        if ok {
            recent.refreshed_at = Some(now);
        } else {
            push(&mut recent.refresh_failed, now);
        }
    }

    /// A request to the portal waited `waited` for its place in the budget.
    pub fn waited(&self, member_id: &str, waited: Duration) {
        let now = clock::now_ms();
        self.lock().entry(member_id.to_owned()).or_default().waited = Some((waited, now));
    }

    /// What the portal's activity was as of `now`.
    pub fn summary(&self, member_id: &str, now: i64) -> ActivitySummary {
        let portals = self.lock();
        let Some(recent) = portals.get(member_id) else { return ActivitySummary::default() };
        let within =
            |events: &VecDeque<i64>| events.iter().filter(|at| now - **at < WINDOW_MS).count();
        ActivitySummary {
            rate_limited: within(&recent.rate_limited),
            refresh_failed: within(&recent.refresh_failed),
            refreshed_at: recent.refreshed_at,
            waited: recent.waited,
        }
    }
}

/// Records an event at `now`, dropping those older than the window and the oldest past
/// [`MAX_EVENTS`].
fn push(events: &mut VecDeque<i64>, now: i64) {
    while events.front().is_some_and(|at| now - at >= WINDOW_MS) || events.len() >= MAX_EVENTS {
        events.pop_front();
    }
    events.push_back(now);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_count_for_an_hour_and_per_portal() {
        let activity = PortalActivity::default();
        activity.rate_limited("p1");
        activity.rate_limited("p1");
        activity.refreshed("p1", false);
        activity.refreshed("p2", true);
        activity.waited("p2", Duration::from_millis(1500));
        let now = clock::now_ms();
        let p1 = activity.summary("p1", now);
        assert_eq!((p1.rate_limited, p1.refresh_failed, p1.refreshed_at), (2, 1, None));
        let p2 = activity.summary("p2", now);
        assert_eq!((p2.rate_limited, p2.refresh_failed), (0, 0));
        assert!(p2.refreshed_at.is_some());
        assert_eq!(p2.waited.map(|(waited, _)| waited), Some(Duration::from_millis(1500)));
        let later = activity.summary("p1", now + WINDOW_MS + 1);
        assert_eq!((later.rate_limited, later.refresh_failed), (0, 0), "an hour on");
        assert_eq!(activity.summary("p3", now), ActivitySummary::default());
    }

    #[test]
    fn old_events_are_dropped_as_new_ones_come() {
        let mut events = VecDeque::from([0, 10, WINDOW_MS]);
        push(&mut events, WINDOW_MS + 5);
        assert_eq!(events, [10, WINDOW_MS, WINDOW_MS + 5]);
        let mut full: VecDeque<i64> = (0..MAX_EVENTS as i64).collect();
        push(&mut full, 100);
        assert_eq!(full.len(), MAX_EVENTS);
        assert_eq!(full.front(), Some(&1));
    }
}

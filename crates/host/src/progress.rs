//! Progress lines for workflow logs (`bizproc.activity.log`, protocol §3.2), queued per portal
//! and sent by the outbox in the room results leave in each `batch`.
//!
//! Each line sent on its own would cost a request against the portal's leaky bucket (2/s), the
//! same budget results need: under an outage, with every job retrying, the lines would starve
//! delivery. Queued here they travel inside the outbox's batches — after the results have taken
//! their places, or in a batch of their own when no result is due. They are best effort: kept
//! in memory (a restart loses the unsent ones), and past [`MAX_PENDING_PER_PORTAL`] the oldest
//! are dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use b24::incoming::EventToken;

/// The most lines waiting for one portal; beyond it the oldest go.
pub const MAX_PENDING_PER_PORTAL: usize = 1_000;

/// One line for one waiting activity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressLine {
    pub event_token: EventToken,
    pub message: String,
}

/// The lines waiting, by portal (`member_id`), oldest first.
#[derive(Debug, Default)]
pub struct ProgressLines {
    pending: Mutex<HashMap<String, VecDeque<ProgressLine>>>,
}

impl ProgressLines {
    /// Queues a line for the activity behind `event_token` on portal `member_id`.
    pub fn push(&self, member_id: &str, event_token: EventToken, message: String) {
        let mut pending = self.lock();
        let queue = pending.entry(member_id.to_owned()).or_default();
        if queue.len() == MAX_PENDING_PER_PORTAL {
            queue.pop_front();
            tracing::warn!(portal = %member_id, "too many progress lines waiting; dropped the oldest");
        }
        queue.push_back(ProgressLine { event_token, message });
    }

    /// Takes up to `max` of a portal's lines, oldest first.
    pub fn take(&self, member_id: &str, max: usize) -> Vec<ProgressLine> {
        let mut pending = self.lock();
        let Some(queue) = pending.get_mut(member_id) else { return Vec::new() };
        let taken: Vec<ProgressLine> = queue.drain(..max.min(queue.len())).collect();
        if queue.is_empty() {
            pending.remove(member_id);
        }
        taken
    }

    /// The portals with lines waiting.
    pub fn portals(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<ProgressLine>>> {
        self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(text: &str) -> EventToken {
        EventToken::new(text)
    }

    #[test]
    fn lines_come_out_oldest_first_per_portal() {
        let lines = ProgressLines::default();
        lines.push("p1", token("t1"), "one".into());
        lines.push("p2", token("t2"), "other portal".into());
        lines.push("p1", token("t3"), "two".into());
        let taken: Vec<String> = lines.take("p1", 50).into_iter().map(|l| l.message).collect();
        assert_eq!(taken, ["one", "two"]);
        assert_eq!(lines.portals(), ["p2"]);
        assert!(lines.take("p1", 50).is_empty());
    }

    #[test]
    fn take_leaves_what_does_not_fit() {
        let lines = ProgressLines::default();
        for n in 0..5 {
            lines.push("p", token("t"), format!("line {n}"));
        }
        assert_eq!(lines.take("p", 2).len(), 2);
        assert_eq!(lines.take("p", 0).len(), 0);
        assert_eq!(lines.take("p", 50)[0].message, "line 2");
    }

    #[test]
    fn the_queue_is_bounded_by_dropping_the_oldest() {
        let lines = ProgressLines::default();
        for n in 0..MAX_PENDING_PER_PORTAL + 3 {
            lines.push("p", token("t"), format!("line {n}"));
        }
        let taken = lines.take("p", usize::MAX);
        assert_eq!(taken.len(), MAX_PENDING_PER_PORTAL);
        assert_eq!(taken[0].message, "line 3");
    }
}

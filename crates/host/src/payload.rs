//! The versioned JSON b24act stores with each job: the call as the worker needs it, and the
//! result as the outbox sends it. Both are wire formats (they outlive a process and an upgrade),
//! so they are versioned and changed only deliberately.

use b24::incoming::ActivityCall;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::clock::millis;
use crate::config::RetryPolicy;

/// The version of [`JobPayload`] written today.
pub const PAYLOAD_VERSION: i32 = 1;

/// What the worker needs of a call; the event token, member and code are columns of the job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobPayload {
    /// `[module, entity, id]`.
    pub document_id: [String; 3],
    /// The properties converted to their declared types (`int` → number, …).
    pub properties: Map<String, Value>,
    /// Why the call's input was refused, naming the field: the job then resolves through the
    /// failure policy without running the connector, so the workflow does not hang.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
}

impl JobPayload {
    pub fn from_call(
        call: &ActivityCall,
        properties: Result<Map<String, Value>, String>,
    ) -> JobPayload {
        let d = &call.document_id;
        let (properties, invalid) = match properties {
            Ok(typed) => (typed, None),
            Err(problem) => (Map::new(), Some(problem)),
        };
        JobPayload {
            document_id: [d.module.clone(), d.entity.clone(), d.id.clone()],
            properties,
            invalid,
        }
    }
}

/// What is sent with `bizproc.event.send`: computed once, stored, never recomputed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    /// Return values in the portal's spellings (`Y`/`N`, `user_N`, …), by return property.
    pub return_values: Map<String, Value>,
    /// The workflow log line (`LOG_MESSAGE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_message: Option<String>,
}

/// When a job must be resolved (Unix ms): `max_wait` after the call arrived, or earlier when
/// the portal set a timeout — its `ts + timeout_duration` less a safety margin, so the result
/// arrives while the activity still waits (docs/protocol.md §2.7). Never before the call arrived.
///
/// The margin shrinks for short portal timeouts: it is `deadline_margin`, but at most a quarter
/// of the time the portal left the call when it arrived. A 30 s timeout with the default 30 s
/// margin would otherwise leave no time at all; with the rule, the work gets 22.5 s (the
/// attempt's timeout is cut to fit) and the result 7.5 s to travel back.
pub fn deadline(received_at_ms: i64, call: &ActivityCall, retry: &RetryPolicy) -> i64 {
    let by_max_wait = received_at_ms.saturating_add(millis(retry.max_wait));
    let by_portal = call.timeout.map(|timeout| {
        let dispatched_ms = call.dispatched_at.map_or(received_at_ms, |ts| ts.saturating_mul(1000));
        let portal_gives_up = dispatched_ms.saturating_add(millis(timeout));
        let window = portal_gives_up.saturating_sub(received_at_ms).max(0);
        portal_gives_up.saturating_sub(millis(retry.deadline_margin).min(window / 4))
    });
    by_portal.map_or(by_max_wait, |portal| portal.min(by_max_wait)).max(received_at_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use b24::incoming::Limits;

    fn call(timeout: &str, ts: &str) -> ActivityCall {
        let body = format!(
            "workflow_id=w.1&code=c&document_id[0]=crm&document_id[1]=CCrmDocumentDeal&document_id[2]=DEAL_1\
             &event_token=w.1|A1|E.sig&timeout_duration={timeout}&ts={ts}\
             &auth[domain]=p.example.com&auth[member_id]=m&auth[application_token]=t"
        );
        ActivityCall::from_form(body.as_bytes(), &Limits::default()).unwrap()
    }

    #[test]
    fn deadline_is_max_wait_without_a_portal_timeout() {
        let retry = RetryPolicy::default();
        assert_eq!(deadline(1_000_000, &call("0", "1000"), &retry), 1_000_000 + 30 * 60 * 1000);
    }

    #[test]
    fn a_shorter_portal_timeout_wins_less_the_margin() {
        let retry = RetryPolicy::default();
        // Dispatched at 1000 s with a 10-minute timeout: 1600 s less the 30 s margin.
        assert_eq!(deadline(1_000_500, &call("600", "1000"), &retry), 1_570_000);
    }

    #[test]
    fn a_short_portal_timeout_shrinks_the_margin_to_a_quarter_of_the_time_left() {
        let retry = RetryPolicy::default();
        // Arrived 1 s after dispatch with a 30 s timeout: 29 s left, margin 7.25 s, not 30 s.
        assert_eq!(deadline(1_001_000, &call("30", "1000"), &retry), 1_030_000 - 7_250);
        // A long timeout keeps the configured margin.
        assert_eq!(deadline(1_000_000, &call("600", "1000"), &retry), 1_600_000 - 30_000);
    }

    #[test]
    fn a_timeout_already_past_resolves_at_once() {
        let retry = RetryPolicy::default();
        assert_eq!(deadline(5_000_000, &call("10", "1000"), &retry), 5_000_000);
    }

    #[test]
    fn payload_keeps_its_shape_on_the_wire() {
        let payload = JobPayload {
            document_id: ["crm".into(), "CCrmDocumentDeal".into(), "DEAL_1".into()],
            properties: serde_json::json!({"amount": 1500.5}).as_object().unwrap().clone(),
            invalid: None,
        };
        let wire = serde_json::to_value(&payload).unwrap();
        assert_eq!(
            wire,
            serde_json::json!({"document_id": ["crm", "CCrmDocumentDeal", "DEAL_1"], "properties": {"amount": 1500.5}})
        );
        assert_eq!(serde_json::from_value::<JobPayload>(wire).unwrap(), payload);
    }
}

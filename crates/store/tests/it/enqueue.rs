//! Intake: group commit, dedupe by event token, what a new job looks like.

use std::collections::HashSet;
use std::time::Instant;

use serde_json::json;
use store::{Enqueued, JobFilter, JobState};

use crate::support::{LEASE, T0, TestDb, call, enqueue_new};

store::on_both_stores!(crate::support::run =>

    a_duplicate_call_creates_nothing,
    duplicates_inside_one_batch_create_one_job,
    a_thousand_calls_are_stored_in_one_enqueue,
    a_new_job_is_queued_and_due_at_once_with_its_payload,
    enqueue_of_ten_thousand_jobs_in_batches_of_a_hundred,
);

async fn a_duplicate_call_creates_nothing(db: TestDb) {
    let store = db.open().await;
    let first = enqueue_new(&store, &[call("p1", "a"), call("p1", "b")], T0).await;

    let mut again = call("p1", "a");
    again.payload = json!({ "different": true });
    let second = store.enqueue(&[again, call("p1", "c")], T0 + 5).await.unwrap();

    assert_eq!(second[0], Enqueued::Duplicate(first[0]));
    assert!(matches!(second[1], Enqueued::Created(id) if !first.contains(&id)));
    assert_eq!(store.state_counts().await.unwrap().queued, 3);
    let original = store.job(first[0]).await.unwrap().unwrap().job;
    assert_eq!(original.call.payload["token"], "a", "the duplicate must not replace the payload");
    assert_eq!(original.created_at, T0);
}

async fn duplicates_inside_one_batch_create_one_job(db: TestDb) {
    let store = db.open().await;
    let out =
        store.enqueue(&[call("p1", "x"), call("p1", "x"), call("p1", "y")], T0).await.unwrap();
    let Enqueued::Created(x) = out[0] else { panic!("first x must be created: {out:?}") };
    assert_eq!(out[1], Enqueued::Duplicate(x));
    assert!(matches!(out[2], Enqueued::Created(_)));
    assert_eq!(store.list_jobs(&JobFilter::default()).await.unwrap().len(), 2);
}

async fn a_thousand_calls_are_stored_in_one_enqueue(db: TestDb) {
    let store = db.open().await;
    let early = enqueue_new(&store, &[call("p1", "t-17"), call("p1", "t-600")], T0).await;
    let calls: Vec<_> =
        (0..1000).map(|i| call(if i % 2 == 0 { "p1" } else { "p2" }, &format!("t-{i}"))).collect();

    let out = store.enqueue(&calls, T0 + 1).await.unwrap();

    assert_eq!(out.len(), 1000);
    assert_eq!(out[17], Enqueued::Duplicate(early[0]));
    assert_eq!(out[600], Enqueued::Duplicate(early[1]));
    let created: HashSet<_> =
        out.iter().filter(|e| matches!(e, Enqueued::Created(_))).map(|e| e.id()).collect();
    assert_eq!(created.len(), 998, "every new call gets its own id");
    assert_eq!(store.state_counts().await.unwrap().queued, 1000);
    // Ids map to the right calls, in input order.
    let job = store.job(out[999].id()).await.unwrap().unwrap().job;
    assert_eq!(job.call.event_token, "t-999");
    assert_eq!(job.call.member_id, "p2");
}

async fn a_new_job_is_queued_and_due_at_once_with_its_payload(db: TestDb) {
    let store = db.open().await;
    let mut job = call("p1", "a");
    job.payload_version = 3;
    let id = enqueue_new(&store, &[job.clone()], T0).await[0];

    let stored = store.job(id).await.unwrap().unwrap();
    assert_eq!(stored.job.state, JobState::Queued);
    assert_eq!(stored.job.next_run_at, Some(T0));
    assert_eq!(stored.job.attempts, 0);
    assert!(stored.attempts.is_empty());
    assert_eq!(store.next_wakeup().await.unwrap(), Some(T0));

    assert!(store.claim_due("w", T0 - 1, LEASE, 10).await.unwrap().is_empty(), "not due yet");
    let claimed = store.claim_due("w", T0, LEASE, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let claimed = &claimed[0];
    assert_eq!(claimed.id, id);
    assert_eq!(claimed.call.payload, job.payload);
    assert_eq!(claimed.call.payload_version, 3);
    assert_eq!(claimed.call.event_token, "a");
    assert_eq!(claimed.call.workflow_id, "wf-a");
    assert_eq!(claimed.call.action_code, "check_credit_limit");
    assert!(claimed.call.waits_for_result);
    assert_eq!(claimed.call.deadline_at, job.deadline_at);
    assert_eq!(claimed.attempt, 1);
}

/// Not a benchmark (benchmarks are the host's): prints how long 100 group commits of 100 calls
/// take, and checks they were all stored. Timing is not asserted.
async fn enqueue_of_ten_thousand_jobs_in_batches_of_a_hundred(db: TestDb) {
    let store = db.open().await;
    let batches: Vec<Vec<_>> = (0..100)
        .map(|b| (0..100).map(|i| call(&format!("p{}", i % 7), &format!("bulk-{b}-{i}"))).collect())
        .collect();
    let started = Instant::now();
    for batch in &batches {
        store.enqueue(batch, T0).await.unwrap();
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{:?}: enqueue of 10,000 jobs in batches of 100 took {elapsed:?} ({:.0} jobs/s)",
        db.kind,
        10_000.0 / elapsed.as_secs_f64()
    );
    assert_eq!(store.state_counts().await.unwrap().queued, 10_000);
}

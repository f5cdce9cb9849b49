//! Workers: claiming due jobs under a lease, the fenced transitions, and what survives a crash.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use store::{AttemptKind, AttemptOutcome, Fenced, JobState, Lease, ResultKind, Store};

use crate::support::{LEASE, T0, TestDb, call, claim_one, enqueue_new};

store::on_both_stores!(crate::support::run =>

    a_crashed_workers_job_is_claimed_again_after_its_lease_and_the_stale_worker_is_fenced_off,
    a_late_worker_whose_job_was_not_reclaimed_may_still_finish,
    a_stored_result_is_never_overwritten,
    a_retry_waits_until_its_time_and_every_attempt_is_kept,
    a_killed_job_is_dead_with_its_reason,
    a_job_that_returns_nothing_is_done_without_delivery,
    an_extended_lease_keeps_the_job_from_other_workers,
    claims_take_the_oldest_due_jobs_up_to_the_limit,
    concurrent_claimers_never_get_the_same_job,
);

async fn a_crashed_workers_job_is_claimed_again_after_its_lease_and_the_stale_worker_is_fenced_off(
    db: TestDb,
) {
    let store = db.open().await;
    let id = enqueue_new(&store, &[call("p1", "a")], T0).await[0];
    let stale = store.claim_due("worker-a", T0, LEASE, 10).await.unwrap().remove(0);

    // worker-a "dies". Before its lease ends nobody else may take the job.
    assert!(store.claim_due("worker-b", T0 + 29_999, LEASE, 10).await.unwrap().is_empty());
    assert_eq!(store.next_wakeup().await.unwrap(), Some(T0 + 30_000));
    let fresh = store.claim_due("worker-b", T0 + 30_000, LEASE, 10).await.unwrap().remove(0);
    assert_eq!(fresh.id, id);
    assert_eq!(fresh.attempt, 2);

    // worker-a wakes up: everything it tries is refused and changes nothing.
    let now = T0 + 31_000;
    assert_eq!(
        store.complete(&stale.lease, &json!({ "stale": true }), now).await.unwrap(),
        Fenced::LeaseLost
    );
    assert_eq!(
        store
            .retry_later(&stale.lease, now + 1, AttemptOutcome::Retryable, "x", now)
            .await
            .unwrap(),
        Fenced::LeaseLost
    );
    assert_eq!(
        store.kill(&stale.lease, AttemptOutcome::Fatal, "x", now).await.unwrap(),
        Fenced::LeaseLost
    );
    assert_eq!(fall_back_at_deadline(&store, &stale.lease, "x", now).await, Fenced::LeaseLost);
    let job = store.job(id).await.unwrap().unwrap().job;
    assert_eq!(
        (job.state, job.lease_owner.as_deref(), job.result),
        (JobState::Running, Some("worker-b"), None)
    );

    assert!(store.complete(&fresh.lease, &json!({ "ok": 1 }), now).await.unwrap().is_applied());
    let detail = store.job(id).await.unwrap().unwrap();
    assert_eq!(detail.job.state, JobState::Delivering);
    assert_eq!(detail.job.result, Some(json!({ "ok": 1 })));
    let outcomes: Vec<_> =
        detail.attempts.iter().map(|a| (a.kind, a.number, a.worker.as_str(), a.outcome)).collect();
    assert_eq!(
        outcomes,
        [
            (AttemptKind::Execute, 1, "worker-a", Some(AttemptOutcome::LeaseExpired)),
            (AttemptKind::Execute, 2, "worker-b", Some(AttemptOutcome::Ok)),
        ]
    );
    assert_eq!(detail.attempts[0].finished_at, Some(T0 + 30_000));
}

async fn a_late_worker_whose_job_was_not_reclaimed_may_still_finish(db: TestDb) {
    let store = db.open().await;
    let (_, claimed) = claim_one(&store).await;
    // The lease ran out but no one else claimed the job: the result is still welcome.
    let late = store.complete(&claimed.lease, &json!({ "v": 1 }), T0 + 60_000).await.unwrap();
    assert_eq!(late, Fenced::Applied);
    assert!(store.claim_due("w2", T0 + 120_000, LEASE, 10).await.unwrap().is_empty());
}

async fn a_stored_result_is_never_overwritten(db: TestDb) {
    let store = db.open().await;
    let (id, claimed) = claim_one(&store).await;
    let first = json!({ "available_limit": 1000, "approval_required": false });
    assert!(store.complete(&claimed.lease, &first, T0 + 1).await.unwrap().is_applied());

    // Same lease again, a fallback, a retry: all refused.
    assert_eq!(
        store.complete(&claimed.lease, &json!({ "available_limit": 0 }), T0 + 2).await.unwrap(),
        Fenced::LeaseLost
    );
    assert_eq!(
        fall_back_at_deadline(&store, &claimed.lease, "late", T0 + 2).await,
        Fenced::LeaseLost
    );
    // A delivering job is never handed to a worker to be computed again.
    assert!(store.claim_due("w2", T0 + 10_000_000, LEASE, 10).await.unwrap().is_empty());

    let job = store.job(id).await.unwrap().unwrap().job;
    assert_eq!(job.result, Some(first.clone()));
    assert_eq!(job.result_kind, Some(ResultKind::Success));
    let batch = store.claim_deliveries("sender", T0 + 3, LEASE, 50).await.unwrap();
    assert_eq!(batch[0].jobs[0].result, first);
}

async fn a_retry_waits_until_its_time_and_every_attempt_is_kept(db: TestDb) {
    let store = db.open().await;
    let (id, first) = claim_one(&store).await;
    assert!(
        store
            .retry_later(&first.lease, T0 + 5_000, AttemptOutcome::Timeout, "took 10 s", T0 + 100)
            .await
            .unwrap()
            .is_applied()
    );

    let job = store.job(id).await.unwrap().unwrap().job;
    assert_eq!(
        (job.state, job.next_run_at, job.lease_owner),
        (JobState::RetryWait, Some(T0 + 5_000), None)
    );
    assert!(store.claim_due("w", T0 + 4_999, LEASE, 10).await.unwrap().is_empty());
    assert_eq!(store.next_wakeup().await.unwrap(), Some(T0 + 5_000));

    let second = store.claim_due("w", T0 + 5_000, LEASE, 10).await.unwrap().remove(0);
    assert_eq!(second.attempt, 2);
    assert!(
        store
            .retry_later(
                &second.lease,
                T0 + 9_000,
                AttemptOutcome::Retryable,
                "HTTP 503",
                T0 + 5_100
            )
            .await
            .unwrap()
            .is_applied()
    );
    let third = store.claim_due("w", T0 + 9_000, LEASE, 10).await.unwrap().remove(0);
    assert!(
        store
            .complete(&third.lease, &json!({ "done": true }), T0 + 9_050)
            .await
            .unwrap()
            .is_applied()
    );

    let detail = store.job(id).await.unwrap().unwrap();
    assert_eq!(detail.job.attempts, 3);
    let history: Vec<_> = detail
        .attempts
        .iter()
        .map(|a| (a.number, a.started_at, a.finished_at, a.outcome, a.error.as_deref()))
        .collect();
    assert_eq!(
        history,
        [
            (1, T0, Some(T0 + 100), Some(AttemptOutcome::Timeout), Some("took 10 s")),
            (2, T0 + 5_000, Some(T0 + 5_100), Some(AttemptOutcome::Retryable), Some("HTTP 503")),
            (3, T0 + 9_000, Some(T0 + 9_050), Some(AttemptOutcome::Ok), None),
        ]
    );
}

async fn a_killed_job_is_dead_with_its_reason(db: TestDb) {
    let store = db.open().await;
    let (id, claimed) = claim_one(&store).await;
    assert!(
        store
            .kill(&claimed.lease, AttemptOutcome::Fatal, "HTTP 400: unknown company", T0 + 1)
            .await
            .unwrap()
            .is_applied()
    );

    let detail = store.job(id).await.unwrap().unwrap();
    assert_eq!(detail.job.state, JobState::Dead);
    assert_eq!(detail.job.dead_reason.as_deref(), Some("HTTP 400: unknown company"));
    assert_eq!(detail.attempts[0].outcome, Some(AttemptOutcome::Fatal));
    assert!(store.claim_due("w", T0 + 10_000_000, LEASE, 10).await.unwrap().is_empty());
    assert!(store.claim_deliveries("s", T0 + 10_000_000, LEASE, 50).await.unwrap().is_empty());
    assert_eq!(store.next_wakeup().await.unwrap(), None);
}

async fn a_job_that_returns_nothing_is_done_without_delivery(db: TestDb) {
    let store = db.open().await;
    let mut job = call("p1", "a");
    job.waits_for_result = false;
    let id = enqueue_new(&store, &[job], T0).await[0];
    let claimed = store.claim_due("w", T0, LEASE, 10).await.unwrap().remove(0);
    assert!(!claimed.call.waits_for_result);
    assert!(fall_back_at_deadline(&store, &claimed.lease, "late", T0 + 1).await.is_applied());

    let job = store.job(id).await.unwrap().unwrap().job;
    assert_eq!(job.state, JobState::Done);
    assert_eq!(job.result_kind, Some(ResultKind::Fallback));
    assert_eq!(job.delivered_at, None);
    assert!(store.claim_deliveries("s", T0 + 10_000_000, LEASE, 50).await.unwrap().is_empty());
}

async fn an_extended_lease_keeps_the_job_from_other_workers(db: TestDb) {
    let store = db.open().await;
    let (_, mut claimed) = claim_one(&store).await;
    let extended = store.extend_lease(&mut claimed.lease, LEASE, T0 + 20_000).await.unwrap();
    assert!(extended.is_applied());
    assert_eq!(claimed.lease.until(), T0 + 50_000);
    assert!(store.claim_due("other", T0 + 40_000, LEASE, 10).await.unwrap().is_empty());
    assert!(store.complete(&claimed.lease, &json!(1), T0 + 45_000).await.unwrap().is_applied());
}

async fn claims_take_the_oldest_due_jobs_up_to_the_limit(db: TestDb) {
    let store = db.open().await;
    let old = enqueue_new(&store, &[call("p1", "old-1"), call("p1", "old-2")], T0).await;
    let new = enqueue_new(&store, &[call("p1", "new-1"), call("p1", "new-2")], T0 + 10).await;
    enqueue_new(&store, &[call("p1", "future")], T0 + 1_000).await;

    let first: Vec<_> =
        store.claim_due("w", T0 + 500, LEASE, 3).await.unwrap().iter().map(|j| j.id).collect();
    assert_eq!(first, [old[0], old[1], new[0]]);
    let second: Vec<_> =
        store.claim_due("w", T0 + 500, LEASE, 3).await.unwrap().iter().map(|j| j.id).collect();
    assert_eq!(second, [new[1]]);
    assert_eq!(store.state_counts().await.unwrap().running, 4);
    assert!(store.claim_due("w", T0 + 500, LEASE, 0).await.unwrap().is_empty());
}

async fn concurrent_claimers_never_get_the_same_job(db: TestDb) {
    const JOBS: usize = 300;
    let store = Arc::new(db.open().await);
    let calls: Vec<_> =
        (0..JOBS).map(|i| call(&format!("p{}", i % 5), &format!("c-{i}"))).collect();
    enqueue_new(&store, &calls, T0).await;

    let mut workers = Vec::new();
    for w in 0..6 {
        let store = Arc::clone(&store);
        workers.push(tokio::spawn(async move {
            let worker = format!("worker-{w}");
            let mut mine = Vec::new();
            loop {
                // A lease far longer than the test: nothing is ever re-claimed legitimately.
                let claimed =
                    store.claim_due(&worker, T0, Duration::from_secs(3600), 7).await.unwrap();
                if claimed.is_empty() {
                    break;
                }
                for job in claimed {
                    assert!(
                        store
                            .complete(&job.lease, &json!({ "by": worker }), T0)
                            .await
                            .unwrap()
                            .is_applied()
                    );
                    mine.push(job.id);
                }
                tokio::task::yield_now().await;
            }
            mine
        }));
    }
    let mut seen = HashSet::new();
    let mut total = 0;
    for worker in workers {
        for id in worker.await.unwrap() {
            total += 1;
            assert!(seen.insert(id), "job {id} was claimed twice");
        }
    }
    assert_eq!(total, JOBS);
    let counts = store.state_counts().await.unwrap();
    assert_eq!((counts.delivering, counts.queued, counts.running), (JOBS as u64, 0, 0));
}

/// Ends the job `lease` holds with empty fallback values, its deadline passed for `why`.
async fn fall_back_at_deadline(store: &Store, lease: &Lease, why: &str, now: i64) -> Fenced {
    store
        .resolve_with_fallback(lease, &json!({}), AttemptOutcome::Deadline, why, now)
        .await
        .unwrap()
}

//! The outbox: per-portal batches, exactly-once bookkeeping, crashed senders, dead deliveries.

use serde_json::json;
use store::{AttemptKind, AttemptOutcome, Fenced, JobId, JobState, ResultKind, Store};

use crate::support::{LEASE, T0, TestDb, call, enqueue_new, first_delivery};

store::on_both_stores!(crate::support::run =>

    deliveries_come_grouped_by_portal_at_most_fifty_per_portal,
    a_delivered_job_is_done_and_never_claimed_again,
    a_crashed_senders_results_are_claimed_again_after_its_lease,
    a_failed_send_is_retried_later_with_the_same_result,
    a_refused_result_ends_the_job_dead_with_the_result_kept,
    the_next_wakeup_is_the_earliest_run_retry_lease_or_delivery,
);

/// Enqueues `calls` for `member` and completes them all; returns their ids.
async fn completed(store: &Store, member: &str, count: usize, now: i64) -> Vec<JobId> {
    let calls: Vec<_> = (0..count).map(|i| call(member, &format!("{member}-{now}-{i}"))).collect();
    let ids = enqueue_new(store, &calls, now).await;
    let claimed = store.claim_due("w", now, LEASE, 1000).await.unwrap();
    assert_eq!(claimed.len(), count);
    for job in claimed {
        let result = json!({ "for": job.call.event_token });
        assert!(store.complete(&job.lease, &result, now).await.unwrap().is_applied());
    }
    ids
}

async fn deliveries_come_grouped_by_portal_at_most_fifty_per_portal(db: TestDb) {
    let store = db.open().await;
    let big = completed(&store, "portal-b", 120, T0).await;
    let small = completed(&store, "portal-a", 3, T0).await;

    let first = store.claim_deliveries("s", T0 + 1, LEASE, 50).await.unwrap();
    let shape: Vec<_> = first.iter().map(|b| (b.member_id.as_str(), b.jobs.len())).collect();
    assert_eq!(shape, [("portal-a", 3), ("portal-b", 50)]);
    assert_eq!(first[0].jobs.iter().map(|d| d.id).collect::<Vec<_>>(), small);
    assert_eq!(first[1].jobs.iter().map(|d| d.id).collect::<Vec<_>>(), big[..50]);
    let delivery = &first[1].jobs[0];
    assert_eq!(delivery.result, json!({ "for": "portal-b-1700000000000-0" }));
    assert_eq!((delivery.result_kind, delivery.attempt), (ResultKind::Success, 1));

    // The next claims take the rest, oldest first, never what is already leased.
    let second = store.claim_deliveries("s", T0 + 2, LEASE, 50).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].jobs.iter().map(|d| d.id).collect::<Vec<_>>(), big[50..100]);
    let third = store.claim_deliveries("s", T0 + 3, LEASE, 500).await.unwrap();
    assert_eq!(third[0].jobs.len(), 20, "the rest");
    assert!(store.claim_deliveries("s", T0 + 4, LEASE, 50).await.unwrap().is_empty());
}

async fn a_delivered_job_is_done_and_never_claimed_again(db: TestDb) {
    let store = db.open().await;
    let ids = completed(&store, "p1", 2, T0).await;
    let batch = store.claim_deliveries("s", T0 + 1, LEASE, 50).await.unwrap();
    assert_eq!(batch[0].jobs.len(), 2);

    assert_eq!(store.delivered(&ids, T0 + 2).await.unwrap(), 2);

    for id in &ids {
        let detail = store.job(*id).await.unwrap().unwrap();
        assert_eq!((detail.job.state, detail.job.delivered_at), (JobState::Done, Some(T0 + 2)));
        let deliver: Vec<_> = detail
            .attempts
            .iter()
            .filter(|a| a.kind == AttemptKind::Deliver)
            .map(|a| a.outcome)
            .collect();
        assert_eq!(deliver, [Some(AttemptOutcome::Ok)]);
    }
    let far = T0 + 1_000_000_000;
    assert!(store.claim_deliveries("s", far, LEASE, 50).await.unwrap().is_empty());
    assert!(store.claim_due("w", far, LEASE, 50).await.unwrap().is_empty());
    assert_eq!(store.delivered(&ids, far).await.unwrap(), 0, "already done");
    assert_eq!(store.next_wakeup().await.unwrap(), None);
}

async fn a_crashed_senders_results_are_claimed_again_after_its_lease(db: TestDb) {
    let store = db.open().await;
    let id = completed(&store, "p1", 1, T0).await[0];
    let stale = first_delivery(&store, "sender-a", T0).await;
    assert!(store.claim_deliveries("sender-b", T0 + 29_999, LEASE, 50).await.unwrap().is_empty());

    let fresh = first_delivery(&store, "sender-b", T0 + 30_000).await;
    assert_eq!((fresh.id, fresh.attempt), (id, 2));
    assert_eq!(fresh.result, stale.result, "the same stored result goes out");

    // sender-a comes back and reports a failure: refused, sender-b's lease stands.
    let late = store.delivery_retry(
        &stale.lease,
        T0 + 31_000,
        false,
        AttemptOutcome::Retryable,
        "503",
        T0 + 30_500,
    );
    assert_eq!(late.await.unwrap(), Fenced::LeaseLost);
    assert_eq!(
        store.delivery_dead(&stale.lease, "x", T0 + 30_500).await.unwrap(),
        Fenced::LeaseLost
    );
    // An execution lease is no delivery lease (and the other way round).
    assert_eq!(
        store.complete(&fresh.lease, &json!(0), T0 + 30_500).await.unwrap(),
        Fenced::LeaseLost
    );
    assert!(store.claim_deliveries("sender-c", T0 + 30_600, LEASE, 50).await.unwrap().is_empty());

    assert_eq!(store.delivered(&[id], T0 + 30_700).await.unwrap(), 1);
    let detail = store.job(id).await.unwrap().unwrap();
    let deliver: Vec<_> = detail
        .attempts
        .iter()
        .filter(|a| a.kind == AttemptKind::Deliver)
        .map(|a| (a.number, a.worker.as_str(), a.outcome))
        .collect();
    assert_eq!(
        deliver,
        [
            (1, "sender-a", Some(AttemptOutcome::LeaseExpired)),
            (2, "sender-b", Some(AttemptOutcome::Ok))
        ]
    );
}

async fn a_failed_send_is_retried_later_with_the_same_result(db: TestDb) {
    let store = db.open().await;
    let id = completed(&store, "p1", 1, T0).await[0];
    let first = first_delivery(&store, "s", T0).await;
    let retry = store.delivery_retry(
        &first.lease,
        T0 + 2_000,
        false,
        AttemptOutcome::Retryable,
        "QUERY_LIMIT_EXCEEDED",
        T0 + 10,
    );
    assert!(retry.await.unwrap().is_applied());

    let job = store.job(id).await.unwrap().unwrap().job;
    assert_eq!(
        (job.state, job.next_delivery_at, job.delivery_attempts),
        (JobState::Delivering, Some(T0 + 2_000), 1)
    );
    assert!(store.claim_deliveries("s", T0 + 1_999, LEASE, 50).await.unwrap().is_empty());
    let second = first_delivery(&store, "s", T0 + 2_000).await;
    assert_eq!((second.attempt, &second.result), (2, &first.result));
}

async fn a_refused_result_ends_the_job_dead_with_the_result_kept(db: TestDb) {
    let store = db.open().await;
    let id = completed(&store, "p1", 1, T0).await[0];
    let delivery = first_delivery(&store, "s", T0).await;
    let dead =
        store.delivery_dead(&delivery.lease, "ACCESS_DENIED: the app has no bizproc scope", T0 + 1);
    assert!(dead.await.unwrap().is_applied());

    let detail = store.job(id).await.unwrap().unwrap();
    assert_eq!(detail.job.state, JobState::Dead);
    assert_eq!(
        detail.job.dead_reason.as_deref(),
        Some("ACCESS_DENIED: the app has no bizproc scope")
    );
    assert_eq!(detail.job.result, Some(delivery.result.clone()));
    let last = detail.attempts.last().unwrap();
    assert_eq!((last.kind, last.outcome), (AttemptKind::Deliver, Some(AttemptOutcome::Fatal)));
    assert!(store.claim_deliveries("s", T0 + 1_000_000, LEASE, 50).await.unwrap().is_empty());
}

async fn the_next_wakeup_is_the_earliest_run_retry_lease_or_delivery(db: TestDb) {
    let store = db.open().await;
    assert_eq!(store.next_wakeup().await.unwrap(), None);
    enqueue_new(&store, &[call("p1", "a"), call("p1", "b")], T0).await;
    let mut claimed = store.claim_due("w", T0, LEASE, 10).await.unwrap();
    let b = claimed.pop().unwrap();
    let a = claimed.pop().unwrap();
    // a: running, lease until T0+30s. b: waits until T0+60s.
    assert!(
        store
            .retry_later(&b.lease, T0 + 60_000, AttemptOutcome::Retryable, "x", T0)
            .await
            .unwrap()
            .is_applied()
    );
    assert_eq!(store.next_wakeup().await.unwrap(), Some(T0 + 30_000));
    // a's result is due for delivery at once.
    assert!(store.complete(&a.lease, &json!(1), T0 + 5).await.unwrap().is_applied());
    assert_eq!(store.next_wakeup().await.unwrap(), Some(T0 + 5));
    let d = first_delivery(&store, "s", T0 + 6).await;
    assert_eq!(store.next_wakeup().await.unwrap(), Some(T0 + 30_006), "the sender's lease expiry");
    assert_eq!(store.delivered(&[d.id], T0 + 7).await.unwrap(), 1);
    assert_eq!(store.next_wakeup().await.unwrap(), Some(T0 + 60_000));
}

//! Operators: list, show, retry and cancel, and the rules that keep results from being
//! recomputed or sent twice.

use serde_json::json;
use store::{
    AttemptOutcome, CANCELLED_BY_OPERATOR, Error, Fenced, JobCount, JobFilter, JobId, JobState,
    Retried,
};

use crate::support::{LEASE, T0, TestDb, call, claim_one, enqueue_new, first_delivery};

store::on_both_stores!(crate::support::run =>

    a_dead_job_without_a_result_runs_again_on_retry,
    a_waiting_retry_runs_at_once_on_retry,
    a_dead_delivery_is_resent_on_retry_without_recomputing,
    retry_refuses_pending_and_finished_jobs,
    cancel_ends_a_pending_job_and_fences_off_its_worker,
    cancel_refuses_finished_jobs,
    a_result_cancelled_while_its_send_was_under_way_is_not_resent_without_force,
    list_filters_by_state_and_portal_newest_first,
    counts_by_state_cover_every_state,
    counts_by_portal_and_action_add_up_to_the_counts_by_state,
);

async fn a_dead_job_without_a_result_runs_again_on_retry(db: TestDb) {
    let store = db.open().await;
    let (id, first) = claim_one(&store).await;
    assert!(
        store
            .kill(&first.lease, AttemptOutcome::Fatal, "HTTP 401", T0 + 1)
            .await
            .unwrap()
            .is_applied()
    );

    let new_deadline = T0 + 3_600_000;
    assert_eq!(
        store.retry_job(id, Some(new_deadline), false, "op", T0 + 100).await.unwrap(),
        Retried::Requeued
    );

    let job = store.job(id).await.unwrap().unwrap().job;
    assert_eq!(
        (job.state, job.next_run_at, job.dead_reason),
        (JobState::Queued, Some(T0 + 100), None)
    );
    assert_eq!(job.call.deadline_at, new_deadline);
    let second = store.claim_due("w", T0 + 100, LEASE, 10).await.unwrap().remove(0);
    assert_eq!((second.id, second.attempt, second.call.deadline_at), (id, 2, new_deadline));
    assert_eq!(store.complete(&first.lease, &json!(1), T0 + 101).await.unwrap(), Fenced::LeaseLost);
}

async fn a_waiting_retry_runs_at_once_on_retry(db: TestDb) {
    let store = db.open().await;
    let (id, claimed) = claim_one(&store).await;
    let later =
        store.retry_later(&claimed.lease, T0 + 600_000, AttemptOutcome::Retryable, "down", T0 + 1);
    assert!(later.await.unwrap().is_applied());
    let deadline = store.job(id).await.unwrap().unwrap().job.call.deadline_at;

    assert_eq!(store.retry_job(id, None, false, "op", T0 + 2).await.unwrap(), Retried::Requeued);
    let again = store.claim_due("w", T0 + 2, LEASE, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].call.deadline_at, deadline, "no new deadline given: the old one stays");
}

async fn a_dead_delivery_is_resent_on_retry_without_recomputing(db: TestDb) {
    let store = db.open().await;
    let (id, claimed) = claim_one(&store).await;
    let result = json!({ "available_limit": 250000.5, "approval_required": true });
    assert!(store.complete(&claimed.lease, &result, T0 + 1).await.unwrap().is_applied());
    let sent = first_delivery(&store, "s", T0 + 2).await;
    assert!(
        store
            .delivery_dead(&sent.lease, "404: workflow not found", T0 + 3)
            .await
            .unwrap()
            .is_applied()
    );

    assert_eq!(
        store.retry_job(id, None, false, "op", T0 + 10).await.unwrap(),
        Retried::Redelivering
    );

    assert!(store.claim_due("w", T0 + 10, LEASE, 10).await.unwrap().is_empty(), "not recomputed");
    let resent = first_delivery(&store, "s", T0 + 10).await;
    assert_eq!((resent.id, &resent.result, resent.attempt), (id, &result, 2));
    let job = store.job(id).await.unwrap().unwrap().job;
    assert_eq!((job.attempts, job.dead_reason), (1, None));
}

async fn retry_refuses_pending_and_finished_jobs(db: TestDb) {
    let store = db.open().await;
    let ids =
        enqueue_new(&store, &[call("p1", "queued"), call("p1", "running"), call("p1", "done")], T0)
            .await;
    let mut claimed = store.claim_due("w", T0, LEASE, 2).await.unwrap();
    // "queued" and "running" were claimed; put "queued" back to queued by retrying after a wait.
    let queued = claimed.remove(0);
    assert!(
        store
            .retry_later(&queued.lease, T0, AttemptOutcome::Retryable, "x", T0)
            .await
            .unwrap()
            .is_applied()
    );
    assert_eq!(store.retry_job(ids[0], None, false, "op", T0).await.unwrap(), Retried::Requeued);
    let done = store.claim_due("w", T0, LEASE, 10).await.unwrap();
    let done = done.iter().find(|j| j.id == ids[2]).unwrap();
    assert!(store.complete(&done.lease, &json!(1), T0).await.unwrap().is_applied());
    let delivering = first_delivery(&store, "s", T0).await;
    assert_eq!(store.delivered(&[delivering.id], T0).await.unwrap(), 1);

    let refused = |result: store::Result<Retried>, want: JobState| match result {
        Err(Error::NotAllowed { action: "retry", state, .. }) => assert_eq!(state, want),
        other => panic!("expected a refusal for {want}, got {other:?}"),
    };
    // ids[0] was claimed again above, so it is running now; so is ids[1].
    refused(store.retry_job(ids[0], None, false, "op", T0).await, JobState::Running);
    refused(store.retry_job(ids[1], None, false, "op", T0).await, JobState::Running);
    refused(store.retry_job(ids[2], None, false, "op", T0).await, JobState::Done);
    let fresh = enqueue_new(&store, &[call("p1", "fresh")], T0).await[0];
    refused(store.retry_job(fresh, None, false, "op", T0).await, JobState::Queued);
    assert!(matches!(
        store.retry_job(JobId(999_999), None, false, "op", T0).await,
        Err(Error::JobNotFound(JobId(999_999)))
    ));
    let message = store.retry_job(ids[2], None, false, "op", T0).await.unwrap_err().to_string();
    assert_eq!(message, format!("cannot retry job {}: it is done", ids[2]));
}

async fn cancel_ends_a_pending_job_and_fences_off_its_worker(db: TestDb) {
    let store = db.open().await;
    let ids = enqueue_new(&store, &[call("p1", "queued"), call("p1", "running")], T0).await;
    store.cancel_job(ids[0], "op", T0 + 1).await.unwrap();
    let running = store.claim_due("w", T0 + 2, LEASE, 10).await.unwrap().remove(0);
    assert_eq!(running.id, ids[1]);

    store.cancel_job(ids[1], "op", T0 + 3).await.unwrap();

    assert_eq!(store.complete(&running.lease, &json!(1), T0 + 4).await.unwrap(), Fenced::LeaseLost);
    for id in &ids {
        let job = store.job(*id).await.unwrap().unwrap().job;
        assert_eq!(
            (job.state, job.dead_reason.as_deref()),
            (JobState::Dead, Some(CANCELLED_BY_OPERATOR))
        );
        assert_eq!(job.result, None);
    }
    let attempts = store.job(ids[1]).await.unwrap().unwrap().attempts;
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        (attempts[0].outcome, attempts[0].finished_at),
        (Some(AttemptOutcome::Cancelled), Some(T0 + 3))
    );
    assert!(store.claim_due("w", T0 + 10_000_000, LEASE, 10).await.unwrap().is_empty());
}

async fn a_result_cancelled_while_its_send_was_under_way_is_not_resent_without_force(db: TestDb) {
    let store = db.open().await;
    let (id, claimed) = claim_one(&store).await;
    assert!(store.complete(&claimed.lease, &json!(1), T0 + 1).await.unwrap().is_applied());
    // A sender holds the result: its batch may be at the portal when the operator cancels.
    let sending = store.claim_deliveries("s", T0 + 2, LEASE, 1).await.unwrap();
    assert_eq!(sending[0].jobs[0].id, id);
    store.cancel_job(id, "op", T0 + 3).await.unwrap();

    let job = store.job(id).await.unwrap().unwrap().job;
    assert_eq!((job.state, job.send_uncertain), (JobState::Dead, true));
    let refused = store.retry_job(id, None, false, "op", T0 + 4).await.unwrap_err();
    assert!(matches!(refused, store::Error::MayBeDelivered { .. }), "{refused}");
    assert_eq!(store.retry_job(id, None, true, "op", T0 + 5).await.unwrap(), Retried::Redelivering);
}

async fn cancel_refuses_finished_jobs(db: TestDb) {
    let store = db.open().await;
    let id = enqueue_new(&store, &[call("p1", "a")], T0).await[0];
    store.cancel_job(id, "op", T0).await.unwrap();
    match store.cancel_job(id, "op", T0).await {
        Err(Error::NotAllowed { action: "cancel", state: JobState::Dead, .. }) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(matches!(store.cancel_job(JobId(424_242), "op", T0).await, Err(Error::JobNotFound(_))));
}

async fn list_filters_by_state_and_portal_newest_first(db: TestDb) {
    let store = db.open().await;
    let calls: Vec<_> =
        (0..10).map(|i| call(if i < 6 { "p1" } else { "p2" }, &format!("l-{i}"))).collect();
    let ids = enqueue_new(&store, &calls, T0).await;
    store.cancel_job(ids[1], "op", T0).await.unwrap();
    store.cancel_job(ids[7], "op", T0).await.unwrap();

    let listed = |filter: JobFilter| {
        let store = &store;
        async move {
            store.list_jobs(&filter).await.unwrap().into_iter().map(|j| j.id).collect::<Vec<_>>()
        }
    };
    let newest_first: Vec<_> = ids.iter().rev().copied().collect();
    assert_eq!(listed(JobFilter::default()).await, newest_first);
    assert_eq!(
        listed(JobFilter { state: Some(JobState::Dead), ..JobFilter::default() }).await,
        [ids[7], ids[1]]
    );
    let p2_queued = JobFilter {
        state: Some(JobState::Queued),
        member_id: Some("p2".into()),
        ..JobFilter::default()
    };
    assert_eq!(listed(p2_queued).await, [ids[9], ids[8], ids[6]]);
    let page = JobFilter { limit: 3, ..JobFilter::default() };
    assert_eq!(listed(page.clone()).await, newest_first[..3]);
    let next = JobFilter { before: Some(ids[7]), ..page };
    assert_eq!(listed(next).await, newest_first[3..6]);
}

async fn counts_by_state_cover_every_state(db: TestDb) {
    let store = db.open().await;
    let calls: Vec<_> = (0..6).map(|i| call("p1", &format!("s-{i}"))).collect();
    let ids = enqueue_new(&store, &calls, T0).await;
    let mut claimed = store.claim_due("w", T0, LEASE, 4).await.unwrap().into_iter();
    let (a, b, c, _running) =
        (claimed.next().unwrap(), claimed.next().unwrap(), claimed.next().unwrap(), claimed.next());
    assert!(
        store
            .retry_later(&a.lease, T0 + 9, AttemptOutcome::Retryable, "x", T0)
            .await
            .unwrap()
            .is_applied()
    );
    assert!(store.complete(&b.lease, &json!(1), T0).await.unwrap().is_applied());
    assert!(store.complete(&c.lease, &json!(2), T0).await.unwrap().is_applied());
    let sent = store.claim_deliveries("s", T0, LEASE, 1).await.unwrap().remove(0).jobs.remove(0);
    assert_eq!(store.delivered(&[sent.id], T0).await.unwrap(), 1);
    store.cancel_job(ids[5], "op", T0).await.unwrap();

    let counts = store.state_counts().await.unwrap();
    let by_state: Vec<_> = JobState::ALL.iter().map(|s| (s.as_str(), counts.get(*s))).collect();
    assert_eq!(
        by_state,
        [
            ("queued", 1),
            ("running", 1),
            ("retry_wait", 1),
            ("delivering", 1),
            ("done", 1),
            ("dead", 1)
        ]
    );
}

async fn counts_by_portal_and_action_add_up_to_the_counts_by_state(db: TestDb) {
    let store = db.open().await;
    let mut calls: Vec<_> = (0..5).map(|i| call("p1", &format!("c-{i}"))).collect();
    calls[4].action_code = "notify".to_owned();
    calls.push(call("p2", "c-5"));
    let ids = enqueue_new(&store, &calls, T0).await;
    store.cancel_job(ids[0], "op", T0).await.unwrap();
    store.cancel_job(ids[5], "op", T0).await.unwrap();

    let counted = store.job_counts().await.unwrap();
    let count = |member: &str, action: &str, state, jobs| JobCount {
        member_id: member.to_owned(),
        action_code: action.to_owned(),
        state,
        jobs,
    };
    assert_eq!(
        counted,
        [
            count("p1", "check_credit_limit", JobState::Dead, 1),
            count("p1", "check_credit_limit", JobState::Queued, 3),
            count("p1", "notify", JobState::Queued, 1),
            count("p2", "check_credit_limit", JobState::Dead, 1),
        ]
    );
    let totals = store.state_counts().await.unwrap();
    for state in JobState::ALL {
        let summed: u64 = counted.iter().filter(|c| c.state == state).map(|c| c.jobs).sum();
        assert_eq!(summed, totals.get(state), "{state}");
    }
}

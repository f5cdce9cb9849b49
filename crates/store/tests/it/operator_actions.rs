//! What an operator does to one job beyond retry and cancel — cancel with the fallback,
//! complete by hand, re-send a result — the history that records who did it, the filters that
//! find jobs among many, and the migration that brought them to stores with jobs already in.

use std::borrow::Cow;

use serde_json::{Value, json};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use store::{
    AttemptOutcome, Backend, CANCELLED_BY_OPERATOR, COMPLETED_BY_OPERATOR, Error, Fenced,
    JobFilter, JobId, JobOutcome, JobState, OperatorAction, ResultKind, Store,
};

use crate::support::{LEASE, T0, TestDb, call, claim_one, enqueue_new, first_delivery};

store::on_both_stores!(crate::support::run =>
    cancel_with_fallback_stores_it_for_the_outbox_and_fences_off_the_worker,
    a_dead_job_without_a_result_is_released_by_fallback_or_by_hand,
    settling_by_hand_is_refused_for_a_result_stored_or_nothing_to_send,
    a_result_is_sent_again_only_with_force,
    history_records_every_action_with_its_actor_in_order,
    outcomes_read_ok_fallback_manual_and_dead,
    list_filters_by_action_workflow_document_and_creation_time,
    a_store_with_jobs_keeps_them_through_the_operator_migration,
);

fn fallback() -> Value {
    json!({ "return_values": { "approval_required": "Y" }, "log_message": "cancelled" })
}

fn typed_in() -> Value {
    json!({ "return_values": { "approval_required": "N" }, "log_message": "by hand" })
}

async fn cancel_with_fallback_stores_it_for_the_outbox_and_fences_off_the_worker(db: TestDb) {
    let store = db.open().await;
    let (id, running) = claim_one(&store).await;

    store.cancel_with_fallback(id, &fallback(), "cli:alice", T0 + 5).await.unwrap();

    assert_eq!(
        store.complete(&running.lease, &json!({"late": true}), T0 + 6).await.unwrap(),
        Fenced::LeaseLost,
        "the worker that held the job cannot store its own result over the fallback"
    );
    let detail = store.job(id).await.unwrap().unwrap();
    let job = &detail.job;
    assert_eq!(job.state, JobState::Delivering);
    assert_eq!(
        (job.result.clone(), job.result_kind),
        (Some(fallback()), Some(ResultKind::Fallback))
    );
    assert_eq!((job.lease_owner.as_deref(), job.next_delivery_at), (None, Some(T0 + 5)));
    let attempt = &detail.attempts[0];
    assert_eq!(
        (attempt.outcome, attempt.error.as_deref(), attempt.finished_at),
        (Some(AttemptOutcome::Cancelled), Some(CANCELLED_BY_OPERATOR), Some(T0 + 5))
    );
    let sent = first_delivery(&store, "s", T0 + 6).await;
    assert_eq!((sent.id, sent.result, sent.result_kind), (id, fallback(), ResultKind::Fallback));
}

async fn a_dead_job_without_a_result_is_released_by_fallback_or_by_hand(db: TestDb) {
    let store = db.open().await;
    let ids = enqueue_new(&store, &[call("p1", "cancelled"), call("p1", "dead")], T0).await;
    store.cancel_job(ids[0], "cli:alice", T0 + 1).await.unwrap();
    let claimed = store.claim_due("w", T0 + 2, LEASE, 10).await.unwrap().remove(0);
    assert!(
        store
            .kill(&claimed.lease, AttemptOutcome::Fatal, "HTTP 401", T0 + 3)
            .await
            .unwrap()
            .is_applied()
    );

    store.cancel_with_fallback(ids[0], &fallback(), "cli:alice", T0 + 4).await.unwrap();
    store.complete_by_hand(ids[1], &typed_in(), "console:bob", T0 + 4).await.unwrap();

    for (id, result, kind) in
        [(ids[0], fallback(), ResultKind::Fallback), (ids[1], typed_in(), ResultKind::Manual)]
    {
        let job = store.job(id).await.unwrap().unwrap().job;
        assert_eq!((job.state, job.dead_reason), (JobState::Delivering, None));
        assert_eq!((job.result, job.result_kind), (Some(result), Some(kind)));
    }
    let batch = store.claim_deliveries("s", T0 + 5, LEASE, 50).await.unwrap();
    assert_eq!(batch[0].jobs.iter().map(|job| job.id).collect::<Vec<_>>(), ids);
}

async fn settling_by_hand_is_refused_for_a_result_stored_or_nothing_to_send(db: TestDb) {
    let store = db.open().await;
    let silent = store::NewJob { waits_for_result: false, ..call("p1", "silent") };
    let ids = enqueue_new(
        &store,
        &[call("p1", "waiting"), call("p1", "sending"), call("p1", "done"), silent],
        T0,
    )
    .await;
    for claimed in store.claim_due("w", T0, LEASE, 10).await.unwrap().iter().take(3) {
        assert!(
            store.complete(&claimed.lease, &json!({"ok": 1}), T0 + 1).await.unwrap().is_applied()
        );
    }
    // "waiting" stays due; "sending" is held by a sender; "done" was delivered.
    let batch = store.claim_deliveries("s", T0 + 2, LEASE, 50).await.unwrap();
    let done = batch[0].jobs.iter().find(|job| job.id == ids[2]).unwrap();
    assert_eq!(store.delivered(&[done.id], T0 + 3).await.unwrap(), 1);
    let held = batch[0].jobs.iter().find(|job| job.id == ids[0]).unwrap().lease.clone();
    let retry =
        store.delivery_retry(&held, T0 + 60_000, false, AttemptOutcome::Retryable, "503", T0 + 3);
    assert!(retry.await.unwrap().is_applied());

    let refusal = |id: JobId| {
        let store = &store;
        async move {
            let by_fallback = store.cancel_with_fallback(id, &fallback(), "op", T0 + 4).await;
            let by_hand = store.complete_by_hand(id, &typed_in(), "op", T0 + 4).await;
            (by_fallback.unwrap_err().to_string(), by_hand.unwrap_err().to_string())
        }
    };
    let (waiting, _) = refusal(ids[0]).await;
    assert_eq!(
        waiting,
        format!(
            "cannot cancel with the fallback job {}: it already has a result, which is waiting \
             to be sent; a stored result is never replaced",
            ids[0]
        )
    );
    let (_, sending) = refusal(ids[1]).await;
    assert_eq!(
        sending,
        format!(
            "cannot complete by hand job {}: it already has a result, which may already have \
             reached the workflow; a stored result is never replaced",
            ids[1]
        )
    );
    let (done, _) = refusal(ids[2]).await;
    assert!(done.contains("which the portal accepted"), "{done}");
    let (silent, _) = refusal(ids[3]).await;
    assert!(silent.contains("its action returns nothing"), "{silent}");
    assert!(matches!(
        store.complete_by_hand(JobId(777_777), &typed_in(), "op", T0).await,
        Err(Error::JobNotFound(JobId(777_777)))
    ));

    for (id, result) in ids.iter().zip([json!({"ok": 1}), json!({"ok": 1}), json!({"ok": 1})]) {
        let detail = store.job(*id).await.unwrap().unwrap();
        assert_eq!(detail.job.result, Some(result), "a refusal changes nothing");
        assert!(detail.history.is_empty(), "a refusal records nothing");
    }
}

async fn a_result_is_sent_again_only_with_force(db: TestDb) {
    let store = db.open().await;
    let (id, claimed) = claim_one(&store).await;
    let result = json!({"return_values": {"limit": 5}});
    assert!(store.complete(&claimed.lease, &result, T0 + 1).await.unwrap().is_applied());
    let queued = enqueue_new(&store, &[call("p1", "queued")], T0 + 1).await[0];
    match store.resend_result(id, true, "op", T0 + 2).await {
        Err(Error::NotAllowed { state: JobState::Delivering, .. }) => {}
        other => panic!("a result on its way is not re-sent: {other:?}"),
    }
    let sent = first_delivery(&store, "s", T0 + 2).await;
    assert_eq!(store.delivered(&[sent.id], T0 + 3).await.unwrap(), 1);

    let unforced = store.resend_result(id, false, "op", T0 + 4).await.unwrap_err();
    assert!(matches!(unforced, Error::ResendNeedsForce { .. }), "{unforced:?}");
    assert!(unforced.to_string().contains("only with force"), "{unforced}");
    assert!(matches!(
        store.resend_result(queued, true, "op", T0 + 4).await,
        Err(Error::NoResult { .. })
    ));
    assert_eq!(store.job(id).await.unwrap().unwrap().job.state, JobState::Done);

    store.resend_result(id, true, "cli:alice", T0 + 5).await.unwrap();

    let job = store.job(id).await.unwrap().unwrap().job;
    assert_eq!((job.state, job.delivered_at), (JobState::Delivering, None));
    assert!(
        job.send_uncertain,
        "the first send reached the portal: a \"not found\" now is no dead job"
    );
    let again = first_delivery(&store, "s", T0 + 6).await;
    assert_eq!(
        (again.id, again.result, again.attempt),
        (id, result, 2),
        "the stored result, never recomputed"
    );
    assert!(store.delivery_unconfirmed(&again.lease, "404", T0 + 7).await.unwrap().is_applied());
    let job = store.job(id).await.unwrap().unwrap().job;
    assert_eq!((job.state, job.delivery_unconfirmed), (JobState::Done, true));
}

async fn history_records_every_action_with_its_actor_in_order(db: TestDb) {
    let store = db.open().await;
    let (id, claimed) = claim_one(&store).await;
    assert!(
        store
            .kill(&claimed.lease, AttemptOutcome::Fatal, "HTTP 401", T0 + 1)
            .await
            .unwrap()
            .is_applied()
    );
    store.retry_job(id, None, false, "cli:alice", T0 + 2).await.unwrap();
    store.cancel_job(id, "console:bob", T0 + 3).await.unwrap();
    store.complete_by_hand(id, &typed_in(), "console:bob", T0 + 4).await.unwrap();
    let sent = first_delivery(&store, "s", T0 + 5).await;
    assert_eq!(store.delivered(&[sent.id], T0 + 6).await.unwrap(), 1);
    store.resend_result(id, true, "cli:carol", T0 + 7).await.unwrap();
    let other = enqueue_new(&store, &[call("p1", "other")], T0).await[0];
    store.cancel_with_fallback(other, &fallback(), "cli:dave", T0 + 8).await.unwrap();

    let history = store.job(id).await.unwrap().unwrap().history;
    let lines: Vec<(i64, &str, OperatorAction)> =
        history.iter().map(|entry| (entry.at, entry.actor.as_str(), entry.action)).collect();
    assert_eq!(
        lines,
        [
            (T0 + 2, "cli:alice", OperatorAction::Retry),
            (T0 + 3, "console:bob", OperatorAction::Cancel),
            (T0 + 4, "console:bob", OperatorAction::Complete),
            (T0 + 7, "cli:carol", OperatorAction::Resend),
        ]
    );
    assert_eq!(history[0].detail.as_deref(), Some("runs again now"));
    assert!(history.iter().all(|entry| entry.detail.is_some()), "{history:?}");
    let other = store.job(other).await.unwrap().unwrap().history;
    assert_eq!(
        (other.len(), other[0].actor.as_str(), other[0].action),
        (1, "cli:dave", OperatorAction::CancelWithFallback)
    );
    let closed = store.job(id).await.unwrap().unwrap().attempts;
    assert!(
        closed.iter().all(|attempt| attempt.error.as_deref() != Some(COMPLETED_BY_OPERATOR)),
        "completing a dead job closes no attempt: none was open"
    );
}

async fn outcomes_read_ok_fallback_manual_and_dead(db: TestDb) {
    let store = db.open().await;
    let ids = enqueue_new(
        &store,
        &[call("p1", "ok"), call("p1", "fallback"), call("p1", "manual"), call("p1", "dead")],
        T0,
    )
    .await;
    let claimed = store.claim_due("w", T0, LEASE, 10).await.unwrap();
    assert!(store.complete(&claimed[0].lease, &json!(1), T0).await.unwrap().is_applied());
    let fell_back = fallback();
    let resolved = store.resolve_with_fallback(
        &claimed[1].lease,
        &fell_back,
        AttemptOutcome::Deadline,
        "late",
        T0,
    );
    assert!(resolved.await.unwrap().is_applied());
    store.complete_by_hand(ids[2], &typed_in(), "op", T0).await.unwrap();
    store.cancel_job(ids[3], "op", T0).await.unwrap();
    let fresh = enqueue_new(&store, &[call("p1", "fresh")], T0).await[0];

    let outcome = |id: JobId| {
        let store = &store;
        async move { store.job(id).await.unwrap().unwrap().job.outcome() }
    };
    assert_eq!(outcome(ids[0]).await, Some(JobOutcome::Ok));
    assert_eq!(outcome(ids[1]).await, Some(JobOutcome::Fallback));
    assert_eq!(outcome(ids[2]).await, Some(JobOutcome::Manual));
    assert_eq!(outcome(ids[3]).await, Some(JobOutcome::Dead));
    assert_eq!(outcome(fresh).await, None);
    let words: Vec<&str> =
        [JobOutcome::Ok, JobOutcome::Fallback, JobOutcome::Manual, JobOutcome::Dead]
            .map(JobOutcome::as_str)
            .to_vec();
    assert_eq!(words, ["ok", "fallback", "manual", "dead"]);
}

async fn list_filters_by_action_workflow_document_and_creation_time(db: TestDb) {
    let store = db.open().await;
    let mut ids = Vec::new();
    for n in 0..12_i64 {
        let mut job = call(if n % 2 == 0 { "p1" } else { "p2" }, &format!("f-{n}"));
        job.action_code = if n % 3 == 0 { "notify" } else { "check" }.to_owned();
        job.workflow_id = format!("wf-{}", n / 4);
        job.document_id = Some(format!("DEAL_{}", n % 5));
        ids.push(enqueue_new(&store, &[job], T0 + n * 1000).await[0]);
    }
    let listed = |filter: JobFilter| {
        let store = &store;
        async move {
            store.list_jobs(&filter).await.unwrap().into_iter().map(|j| j.id).collect::<Vec<_>>()
        }
    };
    let pick = |numbers: &[usize]| numbers.iter().map(|&n| ids[n]).collect::<Vec<_>>();
    let all = JobFilter::default();

    let notify = JobFilter { action_code: Some("notify".into()), ..all.clone() };
    assert_eq!(listed(notify.clone()).await, pick(&[9, 6, 3, 0]));
    let workflow = JobFilter { workflow_id: Some("wf-1".into()), ..all.clone() };
    assert_eq!(listed(workflow).await, pick(&[7, 6, 5, 4]));
    let document = JobFilter { document_id: Some("DEAL_2".into()), ..all.clone() };
    assert_eq!(listed(document).await, pick(&[7, 2]));
    let window =
        JobFilter { created_since: Some(T0 + 3000), created_until: Some(T0 + 6000), ..all.clone() };
    assert_eq!(listed(window).await, pick(&[5, 4, 3]), "since is inclusive, until exclusive");
    let combined = JobFilter {
        member_id: Some("p1".into()),
        action_code: Some("check".into()),
        created_since: Some(T0 + 2000),
        ..all.clone()
    };
    assert_eq!(listed(combined).await, pick(&[10, 8, 4, 2]));
    let page = JobFilter { limit: 2, before: Some(ids[6]), ..notify };
    assert_eq!(listed(page).await, pick(&[3, 0]), "paging keeps the filter");
    let nothing = JobFilter { document_id: Some("DEAL_9".into()), ..all };
    assert!(listed(nothing).await.is_empty());
}

/// A store at the schema of migrations 1 and 2, as a running deployment has it, with a job,
/// its attempts and a progress line in it; opening it with this build applies the operator
/// migration, which on SQLite builds the jobs table again.
async fn a_store_with_jobs_keeps_them_through_the_operator_migration(db: TestDb) {
    let old = |files: [&'static str; 2]| {
        Migrator::with_migrations(
            [(1, "jobs attempts installations", files[0]), (2, "several nodes", files[1])]
                .into_iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        version,
                        Cow::Borrowed(description),
                        MigrationType::Simple,
                        sqlx::SqlSafeStr::into_sql_str(sql),
                        false,
                    )
                })
                .collect(),
        )
    };
    let rows = [
        "INSERT INTO jobs (id, member_id, action_code, event_token, workflow_id, payload, \
         payload_version, waits_for_result, deadline_at, state, attempts, result, result_kind, \
         created_at, updated_at) VALUES (41, 'p1', 'check', 'wf|A|e41.s', 'wf', \
         '{\"document_id\":[\"crm\",\"CCrmDocumentDeal\",\"DEAL_7\"],\"properties\":{}}', 1, \
         true, 0, 'delivering', 1, '{\"limit\":5}', 'success', 1, 1)",
        "INSERT INTO attempts (job_id, kind, number, worker, started_at, finished_at, outcome) \
         VALUES (41, 'execute', 1, 'w', 1, 2, 'ok')",
        "INSERT INTO progress_lines (job_id, member_id, message, created_at) \
         VALUES (41, 'p1', 'line', 1)",
        // The newest job was removed: its id must still never come back.
        "INSERT INTO jobs (id, member_id, action_code, event_token, workflow_id, payload, \
         payload_version, waits_for_result, deadline_at, created_at, updated_at) \
         VALUES (50, 'p1', 'check', 'gone', 'wf', '{}', 1, true, 0, 1, 1)",
        "DELETE FROM jobs WHERE id = 50",
    ];
    match db.kind {
        Backend::Sqlite => {
            let options: sqlx::sqlite::SqliteConnectOptions = db.url.parse().unwrap();
            let pool =
                sqlx::SqlitePool::connect_with(options.create_if_missing(true).foreign_keys(true))
                    .await
                    .unwrap();
            old([
                include_str!("../../migrations/sqlite/0001_init.sql"),
                include_str!("../../migrations/sqlite/0002_several_nodes.sql"),
            ])
            .run(&pool)
            .await
            .unwrap();
            for row in rows {
                sqlx::query(row).execute(&pool).await.unwrap();
            }
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            old([
                include_str!("../../migrations/postgres/0001_init.sql"),
                include_str!("../../migrations/postgres/0002_several_nodes.sql"),
            ])
            .run(&pool)
            .await
            .unwrap();
            for row in rows {
                sqlx::query(row).execute(&pool).await.unwrap();
            }
            // Rows inserted with their ids leave the identity behind; a deployment's never are.
            sqlx::query("SELECT setval(pg_get_serial_sequence('jobs', 'id'), 50)")
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
    }

    let store: Store = db.open().await;

    let detail = store.job(JobId(41)).await.unwrap().expect("the job survives");
    assert_eq!(detail.job.call.document_id.as_deref(), Some("DEAL_7"), "taken from the payload");
    assert_eq!(
        (detail.job.state, detail.job.result.clone()),
        (JobState::Delivering, Some(json!({"limit": 5})))
    );
    assert_eq!(detail.attempts.len(), 1, "its attempts survive");
    assert_eq!(
        store.portals_with_progress(T0).await.unwrap(),
        ["p1"],
        "its progress line survives"
    );
    let next = enqueue_new(&store, &[call("p1", "after")], T0).await[0];
    assert!(next.0 > 50, "ids keep growing past every id ever given: {next}");
    store.cancel_job(next, "op", T0).await.unwrap();
    store.complete_by_hand(next, &typed_in(), "op", T0).await.unwrap();
    assert_eq!(store.job(next).await.unwrap().unwrap().job.result_kind, Some(ResultKind::Manual));
    assert_eq!(
        store
            .list_jobs(&JobFilter { document_id: Some("DEAL_7".into()), ..JobFilter::default() })
            .await
            .unwrap()
            .len(),
        1
    );
    store.close().await;
}

//! The outbox against the emulated portal: batching under the rate limit, results before log
//! lines, a locked workflow, a finished workflow, an expired token, a portal outage and an
//! unknown portal.

use std::time::{Duration, Instant};

use b24_emulator::{AnswerLoss, AnswerLost, Faults, PortalSpec, ServerErrorBurst, WorkflowStatus};
use store::{AttemptKind, AttemptOutcome, JobState};

use crate::host_fixture::{CHECK, HALF_HOUR_MS, TestHost};

fn delivery_outcomes(detail: &store::JobDetail) -> Vec<(AttemptOutcome, Option<String>)> {
    detail
        .attempts
        .iter()
        .filter(|a| a.kind == AttemptKind::Deliver)
        .filter_map(|a| a.outcome.map(|outcome| (outcome, a.error.clone())))
        .collect()
}

#[tokio::test]
async fn sixty_results_for_one_portal_go_out_in_two_batches_within_the_rate_limit() {
    // The real plan's limit: 2 requests/s, burst 50. Sixty single sends would be refused.
    let t = TestHost::start_with(PortalSpec::default()).await;
    let calls = t.calls(CHECK, 60, HALF_HOUR_MS, None).await;
    let mut ran = 0;
    loop {
        let claimed = t.work_at(0).await;
        if claimed == 0 {
            break;
        }
        ran += claimed;
    }
    assert_eq!(ran, 60);

    assert_eq!(t.deliver_at(1_000).await, 50, "one batch takes 50 results");
    assert_eq!(t.deliver_at(2_000).await, 10);
    assert_eq!(t.deliver_at(3_000).await, 0);

    let batches: Vec<_> = t.rest_calls("batch").into_iter().filter(|c| !c.in_batch).collect();
    assert_eq!(batches.len(), 2);
    let sends = t.rest_calls("bizproc.event.send");
    assert_eq!(sends.len(), 60);
    assert!(sends.iter().all(|c| c.in_batch && c.error.is_none()), "{sends:?}");
    let limited = t
        .emu
        .rest_calls(t.domain())
        .into_iter()
        .filter(|c| c.error.as_deref() == Some("QUERY_LIMIT_EXCEEDED"));
    assert_eq!(limited.count(), 0);
    for call in &calls {
        assert_eq!(t.workflow(call).status, WorkflowStatus::Closed);
        assert_eq!(t.job(call).await.job.state, JobState::Done);
    }
}

/// A portal's batch carries its results first and progress lines only in the room left: a
/// full batch of lines waiting does not push a result out of the next request.
#[tokio::test]
async fn results_go_first_and_log_lines_take_only_the_room_left() {
    let t = TestHost::start().await;
    let calls = t.calls(CHECK, 3, HALF_HOUR_MS, None).await;
    assert_eq!(t.work_at(0).await, 3, "their results are stored");
    // A workflow still waiting (its job never runs here) to write the lines into.
    let waiting = t.calls(CHECK, 1, HALF_HOUR_MS, None).await;
    let waiting_job = t.job(&waiting[0]).await.job.id;
    for line in 0..60 {
        let message = format!("line {line}");
        t.host
            .store
            .add_progress_line(waiting_job, &t.portal.member_id, &message, t.t0)
            .await
            .unwrap();
    }

    assert_eq!(t.deliver_at(1_000).await, 50, "3 results and 47 lines fill one batch");
    for call in &calls {
        assert_eq!(t.job(call).await.job.state, JobState::Done, "every result went in it");
    }
    let batches: Vec<_> = t.rest_calls("batch").into_iter().filter(|c| !c.in_batch).collect();
    assert_eq!(batches.len(), 1);
    assert_eq!(t.rest_calls("bizproc.activity.log").len(), 47);
    assert_eq!(t.deliver_at(2_000).await, 13, "the lines left go in a batch of their own");
}

#[tokio::test]
async fn a_locked_workflow_is_sent_again_until_it_takes_the_result() {
    let spec = PortalSpec {
        unlimited: true,
        lock_window: Duration::from_millis(1500),
        ..PortalSpec::default()
    };
    let t = TestHost::start_with(spec).await;
    let call = t.call(CHECK, HALF_HOUR_MS).await;
    assert_eq!(t.work_at(0).await, 1);

    assert_eq!(t.deliver_at(1_000).await, 1);
    let detail = t.job(&call).await;
    assert_eq!(detail.job.state, JobState::Delivering);
    let first = &delivery_outcomes(&detail)[0];
    assert_eq!(first.0, AttemptOutcome::Retryable);
    assert!(first.1.as_deref().unwrap_or_default().contains("423"), "{first:?}");
    let next = detail.job.next_delivery_at.expect("a redelivery time");
    // retry_base 1 s, less at most 20 % jitter.
    assert!(next - (t.t0 + 1_000) >= 800, "redelivery at t0+{}", next - t.t0);
    assert_eq!(t.deliver_at(1_500).await, 0, "not before the backoff");

    // The lock is the portal's, in real time: step the outbox until the workflow takes it.
    let until = Instant::now() + Duration::from_secs(10);
    let mut step = 1;
    while t.workflow(&call).status != WorkflowStatus::Closed {
        assert!(Instant::now() < until, "the workflow never took the result");
        tokio::time::sleep(Duration::from_millis(100)).await;
        t.deliver_at(step * 60_000).await;
        step += 1;
    }
    assert_eq!(t.job(&call).await.job.state, JobState::Done);
    let sends = t.rest_calls("bizproc.event.send");
    assert_eq!(sends.iter().filter(|c| c.error.is_none()).count(), 1, "{sends:?}");
    assert!(sends.iter().any(|c| c.error.as_deref() == Some("423")));
}

#[tokio::test]
async fn a_finished_workflow_makes_the_delivery_dead_with_the_reason() {
    let t = TestHost::start().await;
    let call = t.call(CHECK, HALF_HOUR_MS).await;
    assert_eq!(t.work_at(0).await, 1);
    t.emu.finish_workflow(t.domain(), &call.workflow_id).unwrap();

    assert_eq!(t.deliver_at(1_000).await, 1);
    let detail = t.job(&call).await;
    assert_eq!(detail.job.state, JobState::Dead);
    let reason = detail.job.dead_reason.clone().unwrap_or_default();
    assert!(reason.contains("404") && reason.contains("not found"), "{reason}");
    assert!(detail.job.result.is_some(), "the result is kept for an operator's retry");
    assert_eq!(t.deliver_at(60_000).await, 0, "never sent again");
    assert_eq!(t.rest_calls("bizproc.event.send").len(), 1);
}

#[tokio::test]
async fn an_expired_token_is_refreshed_from_the_store_and_the_result_delivered() {
    let t = TestHost::start().await;
    let call = t.call(CHECK, HALF_HOUR_MS).await;
    assert_eq!(t.work_at(0).await, 1);
    t.emu.expire_tokens(t.domain()).unwrap();

    assert_eq!(t.deliver_at(1_000).await, 1);
    assert_eq!(t.workflow(&call).status, WorkflowStatus::Closed);
    assert_eq!(t.job(&call).await.job.state, JobState::Done);
    let batches: Vec<_> = t.rest_calls("batch").into_iter().filter(|c| !c.in_batch).collect();
    assert_eq!(batches.first().and_then(|c| c.error.as_deref()), Some("expired_token"));
    assert_eq!(batches.iter().filter(|c| c.error.is_none()).count(), 1);

    let installation = t.host.store.installation(&t.portal.member_id).await.unwrap().unwrap();
    let refresh = installation.portal.refresh_token.unwrap_or_default();
    assert!(
        !refresh.is_empty() && refresh != t.install_refresh_token,
        "the store holds the new refresh token"
    );
}

#[tokio::test]
async fn a_failed_batch_request_sends_every_result_in_it_again() {
    let t = TestHost::start().await;
    let calls = t.calls(CHECK, 3, HALF_HOUR_MS, None).await;
    assert_eq!(t.work_at(0).await, 3);
    let burst = ServerErrorBurst { count: 1, status: 503 };
    t.emu
        .set_faults(t.domain(), Faults { server_errors: Some(burst), ..Faults::default() })
        .unwrap();

    assert_eq!(t.deliver_at(1_000).await, 3);
    for call in &calls {
        let detail = t.job(call).await;
        assert_eq!(detail.job.state, JobState::Delivering);
        assert_eq!(delivery_outcomes(&detail)[0].0, AttemptOutcome::Retryable);
    }
    assert_eq!(t.deliver_at(60_000).await, 3);
    for call in &calls {
        assert_eq!(t.workflow(call).status, WorkflowStatus::Closed);
        assert_eq!(t.job(call).await.job.state, JobState::Done);
    }
    assert_eq!(t.rest_calls("bizproc.event.send").len(), 3, "each result accepted once");
}

#[tokio::test]
async fn results_for_a_portal_that_is_not_installed_are_dead() {
    let t = TestHost::start().await;
    let job = store::NewJob {
        member_id: "0123456789abcdef0123456789abcdef".into(),
        action_code: CHECK.into(),
        event_token: "wf.1|A1|E1.signature".into(),
        workflow_id: "wf.1".into(),
        document_id: Some("DEAL_1".into()),
        payload: serde_json::json!({"document_id": ["crm", "CCrmDocumentDeal", "DEAL_1"], "properties": {}}),
        payload_version: host::payload::PAYLOAD_VERSION,
        waits_for_result: true,
        deadline_at: t.t0 + HALF_HOUR_MS,
    };
    let id = t.host.store.enqueue(&[job], t.t0).await.unwrap()[0].id();
    assert_eq!(t.work_at(0).await, 1);
    assert_eq!(t.deliver_at(1_000).await, 1);
    let detail = t.host.store.job(id).await.unwrap().unwrap();
    assert_eq!(detail.job.state, JobState::Dead);
    let reason = detail.job.dead_reason.unwrap_or_default();
    assert!(reason.contains("is not installed"), "{reason}");
}

#[tokio::test]
async fn a_refused_event_token_makes_the_delivery_dead_with_the_reason() {
    let t = TestHost::start().await;
    let call = t.call(CHECK, HALF_HOUR_MS).await;
    let token = t.workflow(&call).event_token;
    // Same workflow, a signature the portal did not make.
    let forged = format!(
        "{}.{}",
        token.rsplit_once('.').map_or(token.as_str(), |(payload, _)| payload),
        "0".repeat(64)
    );
    let job = store::NewJob {
        member_id: t.portal.member_id.clone(),
        action_code: CHECK.into(),
        event_token: forged,
        workflow_id: call.workflow_id.clone(),
        document_id: Some("DEAL_1".into()),
        payload: serde_json::json!({"document_id": ["crm", "CCrmDocumentDeal", "DEAL_1"], "properties": {}}),
        payload_version: host::payload::PAYLOAD_VERSION,
        waits_for_result: true,
        deadline_at: t.t0 + HALF_HOUR_MS,
    };
    let id = t.host.store.enqueue(&[job], t.t0).await.unwrap()[0].id();
    // Both results go out in one batch; each command decides its own job.
    assert_eq!(t.work_at(0).await, 2);
    assert_eq!(t.deliver_at(1_000).await, 2);
    let detail = t.host.store.job(id).await.unwrap().unwrap();
    assert_eq!(detail.job.state, JobState::Dead);
    let reason = detail.job.dead_reason.unwrap_or_default();
    assert!(reason.contains("ACCESS_DENIED"), "{reason}");
    assert_eq!(
        t.job(&call).await.job.state,
        JobState::Done,
        "the genuine result in the same batch went through"
    );
    assert_eq!(t.workflow(&call).status, WorkflowStatus::Closed);
}

/// The portal ran a batch but its answer was lost (a proxy's 502 page, or the connection
/// dropped): the results are sent again, and the workflows, which took them the first time and
/// have finished since, answer "not found". Each job ends `done` with its delivery unconfirmed — never `dead`, never
/// sent a third time, and an operator's retry is refused without `--force`.
#[tokio::test]
async fn a_batch_the_portal_ran_but_whose_answer_was_lost_ends_done_unconfirmed_not_dead() {
    for how in [AnswerLoss::ServerError(502), AnswerLoss::DropConnection] {
        let t = TestHost::start().await;
        let calls = t.calls(CHECK, 3, HALF_HOUR_MS, None).await;
        assert_eq!(t.work_at(0).await, 3);
        let lost = Faults { answer_lost: Some(AnswerLost::batches(1, how)), ..Faults::default() };
        t.emu.set_faults(t.domain(), lost).unwrap();

        assert_eq!(t.deliver_at(1_000).await, 3);
        for call in &calls {
            assert_eq!(
                t.workflow(call).status,
                WorkflowStatus::Closed,
                "{how:?}: the portal ran it"
            );
            let job = t.job(call).await.job;
            assert_eq!(job.state, JobState::Delivering, "{how:?}: no answer, so sent again");
            assert!(job.send_uncertain, "{how:?}: the lost answer is remembered");
            // The workflow took the result and went on to its end.
            t.emu.finish_workflow(t.domain(), &t.workflow(call).workflow_id).unwrap();
        }

        assert_eq!(t.deliver_at(60_000).await, 3);
        for call in &calls {
            let detail = t.job(call).await;
            assert_eq!(detail.job.state, JobState::Done, "{how:?}: {detail:?}");
            assert!(detail.job.delivery_unconfirmed, "{how:?}");
            let last = delivery_outcomes(&detail).pop().unwrap();
            assert_eq!(last.0, AttemptOutcome::Unconfirmed, "{how:?}");
            let retry =
                t.host.store.retry_job(detail.job.id, None, false, "op", t.t0 + 61_000).await;
            assert!(
                matches!(retry, Err(store::Error::MayBeDelivered { .. })),
                "{how:?}: {retry:?}"
            );
        }
        assert_eq!(t.deliver_at(120_000).await, 0, "{how:?}: never sent a third time");
        let accepted: Vec<_> = t
            .rest_calls("bizproc.event.send")
            .into_iter()
            .filter(|send| send.error.is_none())
            .collect();
        assert_eq!(accepted.len(), 3, "{how:?}: each workflow took one result");
    }
}

//! Workers against a real SQLite store, the emulated portal and a scripted connector, stepped
//! with explicit times: results, retries with progress lines, deadlines, fallbacks, dead
//! letters, panics, timeouts, invalid input and lease fencing.

use std::sync::Arc;
use std::time::Duration;

use b24_emulator::WorkflowStatus;
use connectors::Outputs;
use host::worker::Workers;
use serde_json::json;
use store::{AttemptKind, AttemptOutcome, JobState};
use tokio::sync::Notify;

use crate::host_fixture::{CHECK, CHECK_DEAD_LETTER, HALF_HOUR_MS, QUICK_CHECK, Step, TestHost};

const MINUTE_MS: i64 = 60_000;

fn execute_outcomes(detail: &store::JobDetail) -> Vec<AttemptOutcome> {
    detail
        .attempts
        .iter()
        .filter(|a| a.kind == AttemptKind::Execute)
        .filter_map(|a| a.outcome)
        .collect()
}

#[tokio::test]
async fn a_successful_attempt_is_stored_and_delivered_once() {
    let t = TestHost::start().await;
    let call = t.call(CHECK, HALF_HOUR_MS).await;

    assert_eq!(t.work_at(0).await, 1);
    let detail = t.job(&call).await;
    assert_eq!(detail.job.state, JobState::Delivering);
    assert_eq!(
        detail.job.result,
        Some(json!({
            "return_values": {"available_limit": 1001.0, "approval_required": "N"},
            "log_message": "limit checked on attempt 1",
        }))
    );
    let request = &t.connector.calls()[0];
    assert_eq!(request.job_id, call.job.to_string(), "the job id is the idempotency key");
    assert_eq!((request.action_code.as_str(), request.attempt), (CHECK, 1));
    assert_eq!(
        request.properties,
        *json!({"company_id": 42, "amount": 1500.5}).as_object().unwrap()
    );
    assert_eq!(request.document.id, "DEAL_1");
    assert_eq!(request.attempt_timeout, Some(Duration::from_secs(10)));

    assert_eq!(t.deliver_at(1_000).await, 1);
    let workflow = t.workflow(&call);
    assert_eq!(workflow.status, WorkflowStatus::Closed);
    assert_eq!(workflow.return_values["approval_required"], "N");
    assert_eq!(workflow.return_values["available_limit"], "1001.0");
    assert_eq!(workflow.log, ["limit checked on attempt 1"]);
    assert_eq!(t.job(&call).await.job.state, JobState::Done);

    // Nothing is due any more: no second send.
    assert_eq!(t.work_at(MINUTE_MS).await, 0);
    assert_eq!(t.deliver_at(MINUTE_MS).await, 0);
    assert_eq!(t.rest_calls("bizproc.event.send").len(), 1);
}

#[tokio::test]
async fn retryable_failures_write_progress_lines_then_the_result_is_delivered_once() {
    let t = TestHost::start().await;
    t.connector
        .then(Step::Retryable("finance API answered 503"))
        .then(Step::Retryable("finance API answered 503"));
    let call = t.call(CHECK, HALF_HOUR_MS).await;

    assert_eq!(t.work_at(0).await, 1);
    let detail = t.job(&call).await;
    assert_eq!(detail.job.state, JobState::RetryWait);
    let first_retry = detail.job.next_run_at.expect("a retry time");
    // jitter = 0: exactly backoff_base later (plus the attempt's own few milliseconds).
    assert!(
        (t.t0 + 2_000..t.t0 + 3_000).contains(&first_retry),
        "retry at t0+{}",
        first_retry - t.t0
    );
    assert_eq!(t.work_at(1_000).await, 0, "not due before the backoff");

    assert_eq!(t.work_at(MINUTE_MS).await, 1);
    let second_retry = t.job(&call).await.job.next_run_at.expect("a retry time");
    assert!(second_retry - (t.t0 + MINUTE_MS) >= 4_000, "the second wait doubles");
    assert_eq!(t.work_at(2 * MINUTE_MS).await, 1);
    // The result and the two progress lines, which ride in the same batch ahead of it.
    assert_eq!(t.deliver_at(2 * MINUTE_MS + 1_000).await, 3);
    assert_eq!(t.rest_calls("batch").len(), 1, "lines cost no request of their own");

    let workflow = t.workflow(&call);
    assert_eq!(workflow.status, WorkflowStatus::Closed);
    assert_eq!(workflow.log.len(), 3, "{:?}", workflow.log);
    assert!(
        workflow.log[0].starts_with("Attempt 1 failed: finance API answered 503; retrying at "),
        "{}",
        workflow.log[0]
    );
    assert!(workflow.log[0].ends_with(" UTC"), "{}", workflow.log[0]);
    assert!(
        workflow.log[1].starts_with("Attempt 2 failed: finance API answered 503; retrying at "),
        "{}",
        workflow.log[1]
    );
    assert_eq!(workflow.log[2], "limit checked on attempt 3");
    assert_eq!(workflow.return_values["available_limit"], "1003.0");

    let detail = t.job(&call).await;
    assert_eq!(
        execute_outcomes(&detail),
        [AttemptOutcome::Retryable, AttemptOutcome::Retryable, AttemptOutcome::Ok]
    );
    assert_eq!(t.rest_calls("bizproc.activity.log").len(), 2);
    assert_eq!(t.deliver_at(10 * MINUTE_MS).await, 0);
    assert_eq!(t.rest_calls("bizproc.event.send").len(), 1, "delivered once");
}

#[tokio::test]
async fn retrying_past_the_deadline_sends_the_fallback_with_the_reason() {
    let t = TestHost::start().await;
    for _ in 0..5 {
        t.connector.then(Step::Retryable("finance API unreachable"));
    }
    // Attempt 1 at t0 (next at +2 s), attempt 2 at +3 s (next at +7 s, past the deadline).
    let call = t.call(CHECK, 5_000).await;
    assert_eq!(t.work_at(0).await, 1);
    assert_eq!(t.work_at(3_000).await, 1);

    let detail = t.job(&call).await;
    assert_eq!(detail.job.state, JobState::Delivering);
    assert_eq!(execute_outcomes(&detail), [AttemptOutcome::Retryable, AttemptOutcome::Deadline]);
    let reason = "gave up after 2 attempts: finance API unreachable";
    assert_eq!(detail.attempts[1].error.as_deref(), Some(reason));

    // The fallback and the first attempt's progress line.
    assert_eq!(t.deliver_at(4_000).await, 2);
    let workflow = t.workflow(&call);
    assert_eq!(workflow.status, WorkflowStatus::Closed);
    assert_eq!(workflow.return_values["approval_required"], "Y");
    assert_eq!(workflow.return_values["reason"], "finance system unavailable");
    assert_eq!(
        workflow.log.last().map(String::as_str),
        Some(&*format!("Finance system unavailable: {reason}"))
    );
    assert_eq!(t.connector.calls().len(), 2);
}

#[tokio::test]
async fn a_job_claimed_after_its_deadline_takes_the_fallback_without_running() {
    let t = TestHost::start().await;
    let call = t.call(CHECK, 1_000).await;
    assert_eq!(t.work_at(2_000).await, 1);
    assert!(t.connector.calls().is_empty());
    let detail = t.job(&call).await;
    assert_eq!(execute_outcomes(&detail), [AttemptOutcome::Deadline]);
    assert_eq!(t.deliver_at(3_000).await, 1);
    let workflow = t.workflow(&call);
    assert_eq!(workflow.log, ["Finance system unavailable: deadline passed"]);
    assert_eq!(workflow.return_values["approval_required"], "Y");
}

#[tokio::test]
async fn a_fatal_error_takes_the_fallback_at_once() {
    let t = TestHost::start().await;
    t.connector.then(Step::Fatal("company 42 does not exist in the finance system"));
    let call = t.call(CHECK, HALF_HOUR_MS).await;
    assert_eq!(t.work_at(0).await, 1);
    let detail = t.job(&call).await;
    assert_eq!(detail.job.state, JobState::Delivering);
    assert_eq!(execute_outcomes(&detail), [AttemptOutcome::Fatal]);
    assert_eq!(t.deliver_at(1_000).await, 1);
    let workflow = t.workflow(&call);
    assert_eq!(workflow.status, WorkflowStatus::Closed);
    assert_eq!(
        workflow.log,
        ["Finance system unavailable: company 42 does not exist in the finance system"]
    );
    assert!(t.rest_calls("bizproc.activity.log").is_empty(), "no progress line for a fatal error");
}

#[tokio::test]
async fn a_result_that_does_not_fit_the_declared_types_takes_the_fallback_naming_the_field() {
    let t = TestHost::start().await;
    t.connector.then(Step::Return(Outputs::new().with("approval_required", "maybe")));
    let call = t.call(CHECK, HALF_HOUR_MS).await;
    assert_eq!(t.work_at(0).await, 1);
    let detail = t.job(&call).await;
    assert_eq!(execute_outcomes(&detail), [AttemptOutcome::Fatal]);
    let error = detail.attempts[0].error.clone().unwrap_or_default();
    assert!(error.contains("`approval_required`"), "{error}");
    assert_eq!(detail.job.result.as_ref().unwrap()["return_values"]["approval_required"], "Y");
}

#[tokio::test]
async fn a_panicking_connector_takes_the_fallback_and_the_workers_carry_on() {
    let t = TestHost::start().await;
    t.connector.then(Step::Panic("index out of bounds"));
    let panicked = t.call(CHECK, HALF_HOUR_MS).await;
    let workers = t.workers();
    assert_eq!(workers.run_once(t.t0).await.unwrap(), 1);
    let detail = t.job(&panicked).await;
    assert_eq!(execute_outcomes(&detail), [AttemptOutcome::Panic]);
    assert_eq!(
        detail.attempts[0].error.as_deref(),
        Some("connector panicked: index out of bounds")
    );

    // The same workers take the next job.
    let next = t.call(CHECK, HALF_HOUR_MS).await;
    assert_eq!(workers.run_once(t.t0 + 1).await.unwrap(), 1);
    assert_eq!(t.job(&next).await.job.state, JobState::Delivering);

    assert_eq!(t.deliver_at(1_000).await, 2);
    assert_eq!(
        t.workflow(&panicked).log,
        ["Finance system unavailable: connector panicked: index out of bounds"]
    );
    assert_eq!(t.workflow(&next).return_values["approval_required"], "N");
}

#[tokio::test]
async fn with_a_dead_letter_policy_a_failed_job_is_dead_and_nothing_is_sent() {
    let t = TestHost::start().await;
    t.connector.then(Step::Fatal("the finance API refused the request (HTTP 400)"));
    let call = t.call(CHECK_DEAD_LETTER, HALF_HOUR_MS).await;
    assert_eq!(t.work_at(0).await, 1);
    let detail = t.job(&call).await;
    assert_eq!(detail.job.state, JobState::Dead);
    assert_eq!(
        detail.job.dead_reason.as_deref(),
        Some("the finance API refused the request (HTTP 400)")
    );
    assert_eq!(detail.job.result, None);
    assert_eq!(t.deliver_at(1_000).await, 0);
    assert!(t.rest_calls("bizproc.event.send").is_empty());
    assert_eq!(t.workflow(&call).status, WorkflowStatus::Waiting);
}

#[tokio::test]
async fn an_attempt_that_outlives_its_timeout_is_abandoned_and_retried() {
    let t = TestHost::start().await;
    t.connector.then(Step::Sleep(Duration::from_secs(30)));
    let call = t.call(QUICK_CHECK, HALF_HOUR_MS).await;
    let started = std::time::Instant::now();
    assert_eq!(t.work_at(0).await, 1);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the worker did not wait for the connector"
    );
    let detail = t.job(&call).await;
    assert_eq!(detail.job.state, JobState::RetryWait);
    assert_eq!(execute_outcomes(&detail), [AttemptOutcome::Timeout]);
    assert_eq!(detail.attempts[0].error.as_deref(), Some("no answer within 300ms"));
    assert_eq!(t.connector.calls()[0].attempt_timeout, Some(Duration::from_millis(300)));

    assert_eq!(t.work_at(MINUTE_MS).await, 1);
    // The result and the first attempt's progress line.
    assert_eq!(t.deliver_at(MINUTE_MS + 1_000).await, 2);
    let workflow = t.workflow(&call);
    assert_eq!(workflow.status, WorkflowStatus::Closed);
    assert!(
        workflow.log[0].starts_with("Attempt 1 failed: no answer within 300ms; retrying at "),
        "{:?}",
        workflow.log
    );
    assert_eq!(workflow.log[1], "limit checked on attempt 2");
}

#[tokio::test]
async fn invalid_input_takes_the_fallback_without_calling_the_connector() {
    let t = TestHost::start().await;
    let problem = "properties[amount]: `lots` is not a number";
    let call = t.call_with(CHECK, HALF_HOUR_MS, Some(problem)).await;
    assert_eq!(t.work_at(0).await, 1);
    assert!(t.connector.calls().is_empty());
    let detail = t.job(&call).await;
    assert_eq!(execute_outcomes(&detail), [AttemptOutcome::Invalid]);
    assert_eq!(t.deliver_at(1_000).await, 1);
    let workflow = t.workflow(&call);
    assert_eq!(workflow.status, WorkflowStatus::Closed);
    assert_eq!(workflow.log, [format!("Finance system unavailable: {problem}")]);
}

#[tokio::test]
async fn a_worker_whose_lease_expired_cannot_store_its_result() {
    let t = TestHost::start().await;
    let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    t.connector.then(Step::Gate { entered: entered.clone(), release: release.clone() });
    let call = t.call(CHECK, HALF_HOUR_MS).await;

    let slow = Workers::new(t.host.clone(), t.wakeups.clone()).with_name("node-a");
    let t0 = t.t0;
    let first = tokio::spawn(async move { slow.run_once(t0).await });
    entered.notified().await;

    // The first worker's lease (1 minute) has run out by the second worker's clock.
    let fast = Workers::new(t.host.clone(), t.wakeups.clone()).with_name("node-b");
    assert_eq!(fast.run_once(t.t0 + 2 * MINUTE_MS).await.unwrap(), 1);
    let stored = t.job(&call).await.job.result;

    release.notify_one();
    assert_eq!(first.await.unwrap().unwrap(), 1);
    let detail = t.job(&call).await;
    assert_eq!(detail.job.result, stored, "the first worker's late result was refused");
    assert_eq!(detail.job.result.as_ref().unwrap()["log_message"], "limit checked on attempt 2");
    assert_eq!(execute_outcomes(&detail), [AttemptOutcome::LeaseExpired, AttemptOutcome::Ok]);
    assert_eq!(detail.attempts[0].worker, "node-a");
    assert_eq!(detail.attempts[1].worker, "node-b");

    assert_eq!(t.deliver_at(3 * MINUTE_MS).await, 1);
    assert_eq!(t.workflow(&call).log, ["limit checked on attempt 2"]);
    assert_eq!(t.rest_calls("bizproc.event.send").len(), 1);
}

#[tokio::test]
async fn running_workers_and_outbox_wake_on_pokes_and_stop_on_cancel() {
    let t = TestHost::start().await;
    let cancel = tokio_util::sync::CancellationToken::new();
    let workers =
        tokio::spawn(host::worker::run(t.host.clone(), t.wakeups.clone(), cancel.clone()));
    let outbox = tokio::spawn(host::outbox::run(t.host.clone(), t.wakeups.clone(), cancel.clone()));

    // A job due in real time: the intake would poke the workers after committing it.
    let call = t.call(CHECK, HALF_HOUR_MS).await;
    t.wakeups.job_arrived();
    let closed = t
        .emu
        .wait_for_workflow(t.domain(), &call.workflow_id, Duration::from_secs(10), |w| {
            w.status == WorkflowStatus::Closed
        })
        .await
        .unwrap();
    assert_eq!(closed.status, WorkflowStatus::Closed);
    assert_eq!(closed.log, ["limit checked on attempt 1"]);

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), async {
        workers.await.unwrap();
        outbox.await.unwrap();
    })
    .await
    .expect("both stop once cancelled");
    assert_eq!(t.job(&call).await.job.state, JobState::Done);
}

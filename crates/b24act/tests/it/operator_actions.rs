//! An operator settling a stuck job from the command line while the host runs, end to end: the
//! emulator's workflow waits on a finance API that is down, `b24act jobs cancel --fallback` or
//! `b24act jobs complete` (the real binary, on the host's own store) settles the job, and the
//! host's outbox releases the workflow with those values. Each scenario on SQLite and again on
//! PostgreSQL (`operator_actions::postgres::*`).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use b24_emulator::WorkflowStatus;
use fakes::finance::Behaviour;
use serde_json::json;
use store::testing::ScratchStore;
use store::{Job, JobFilter, JobOutcome, JobState, OperatorAction};

use crate::support::{Options, TestApp, number};

store::on_both_stores!(store::testing::with_scratch_store =>
    cancel_with_fallback_releases_the_waiting_workflow_with_the_fallback_values,
    complete_by_hand_closes_the_workflow_with_the_typed_values_and_refuses_bad_ones,
);

/// A host whose finance API is down, with a deadline far away: a workflow started on it waits.
async fn stuck(store: ScratchStore) -> (TestApp, String, Job, PathBuf) {
    let options = Options { max_wait: "10m", store_url: Some(store.url), ..Options::default() };
    let app = TestApp::start(options).await;
    app.api.set(Behaviour { down: true, ..Behaviour::default() });
    let workflow = app.start_workflow(42, 0).await;
    app.wait_until("a failed attempt", Duration::from_secs(10), |app| {
        app.api.counts().failures() >= 1
    })
    .await;
    let job = app.store().list_jobs(&JobFilter::default()).await.unwrap().remove(0);
    assert_eq!(job.call.workflow_id, workflow);
    let config = app._dir.path().join("b24act.toml");
    std::fs::write(&config, &app.config_text).unwrap();
    (app, workflow, job, config)
}

/// What `b24act jobs ARGS… --config CONFIG` did, run as login `alice`.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn jobs(config: &PathBuf, args: &[&str]) -> Ran {
    let mut command = Command::new(env!("CARGO_BIN_EXE_b24act"));
    command
        .arg("jobs")
        .args(args)
        .arg("--config")
        .arg(config)
        .env("USER", "alice")
        .env_remove("B24ACT_CONFIG")
        .stdin(Stdio::null());
    let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().unwrap();
    Ran {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// Waits until the job is `done` and returns it with its history.
async fn finished(app: &TestApp, job: &Job) -> store::JobDetail {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let detail = app.store().job(job.id).await.unwrap().unwrap();
        if detail.job.state == JobState::Done {
            return detail;
        }
        assert!(Instant::now() < deadline, "job never done: {:?}", detail.job);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn cancel_with_fallback_releases_the_waiting_workflow_with_the_fallback_values(
    store: ScratchStore,
) {
    let (app, workflow, job, config) = stuck(store).await;
    assert_eq!(app.workflow(&workflow).status, WorkflowStatus::Waiting);

    let ran = jobs(&config, &["cancel", &job.id.to_string(), "--fallback"]).await;
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);

    let state = app.wait_closed(&workflow, Duration::from_secs(10)).await;
    assert_eq!(state.status, WorkflowStatus::Closed);
    assert_eq!(state.return_values["unavailable"], json!("Y"), "the declared fallback: {state:?}");
    assert!(
        state.log.iter().any(|line| line == "Finance system unavailable: cancelled by operator"),
        "the fallback's log line carries the reason: {:?}",
        state.log
    );
    let detail = finished(&app, &job).await;
    assert_eq!(detail.job.outcome(), Some(JobOutcome::Fallback));
    let by: Vec<(&str, OperatorAction)> =
        detail.history.iter().map(|entry| (entry.actor.as_str(), entry.action)).collect();
    assert_eq!(by, [("cli:alice", OperatorAction::CancelWithFallback)]);
    assert_eq!(app.calls_of("bizproc.event.send"), 1, "sent once");

    let again = jobs(&config, &["cancel", &job.id.to_string(), "--fallback"]).await;
    assert_eq!(again.code, Some(1), "a settled job is not settled twice");
    assert!(
        again.stderr.contains("already has a result, which the portal accepted"),
        "{}",
        again.stderr
    );
}

async fn complete_by_hand_closes_the_workflow_with_the_typed_values_and_refuses_bad_ones(
    store: ScratchStore,
) {
    let (app, workflow, job, config) = stuck(store).await;
    let id = job.id.to_string();

    let refused = jobs(&config, &["complete", &id, "--value", "limit=lots"]).await;
    assert_eq!(refused.code, Some(1));
    assert!(
        refused.stderr.lines().any(|line| line == "b24act: `limit`: `lots` is not a number"),
        "the error names the property and what is wrong: {}",
        refused.stderr
    );
    let unknown = jobs(&config, &["complete", &id, "--value", "credit=5"]).await;
    assert!(
        unknown.stderr.contains("`credit` is not a return property of `check_credit`"),
        "{}",
        unknown.stderr
    );
    assert_eq!(app.workflow(&workflow).status, WorkflowStatus::Waiting, "nothing was sent");
    assert_eq!(app.store().job(job.id).await.unwrap().unwrap().job.result, None);

    let values = ["limit=5000", "debt=1250.5", "unavailable=N"];
    let mut args = vec!["complete", id.as_str()];
    for value in &values {
        args.extend(["--value", value]);
    }
    let ran = jobs(&config, &args).await;
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);

    let state = app.wait_closed(&workflow, Duration::from_secs(10)).await;
    assert_eq!(state.status, WorkflowStatus::Closed);
    assert_eq!(number(&state.return_values["limit"]), 5000.0, "{state:?}");
    assert_eq!(number(&state.return_values["debt"]), 1250.5, "{state:?}");
    assert_eq!(state.return_values["unavailable"], json!("N"), "{state:?}");
    let detail = finished(&app, &job).await;
    assert_eq!(detail.job.outcome(), Some(JobOutcome::Manual));
    assert_eq!(detail.history.len(), 1, "refusals are not recorded: {:?}", detail.history);
    assert_eq!(detail.history[0].actor, "cli:alice");

    let shown = jobs(&config, &["show", &id]).await;
    assert!(shown.stdout.contains("  outcome:          manual\n"), "{}", shown.stdout);
    assert!(shown.stdout.contains("cli:alice  complete"), "{}", shown.stdout);
    let listed = jobs(&config, &["list", "--workflow", &workflow]).await;
    assert!(
        listed.stdout.lines().nth(1).is_some_and(|line| {
            line.split_whitespace().take(3).collect::<Vec<_>>() == [id.as_str(), "done", "manual"]
        }),
        "{}",
        listed.stdout
    );
}

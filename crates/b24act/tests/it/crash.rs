//! `b24act serve` killed with SIGKILL in the middle of a job and started again: the job runs
//! again after its lease expires, finishes once, and its result is sent once.

use std::time::Duration;

use b24_emulator::{WorkflowSpec, WorkflowStatus};
use fakes::finance::Behaviour;
use sandbox::Sandbox;
use store::{JobFilter, JobId, JobState, StoreKey, StoreOptions};

use crate::support::{CLIENT_ID, CODE, KEY, Options, ServeSite, Server, number};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_interrupted_by_sigkill_finishes_once_after_restart() {
    let options = Options { lease: "3s", attempt_timeout: "2500ms", ..Options::default() };
    let ServeSite { sandbox, api, dir: _dir, config, store_url, .. } =
        ServeSite::new("b24act-it", 1, &options).await;

    let server = Server::start(&config);
    // ONAPPINSTALL answered 200, and the action registered.
    sandbox
        .install(CLIENT_ID, &[CODE], Duration::from_secs(10))
        .await
        .expect("the host took ONAPPINSTALL (200) and registered the action");
    let Sandbox { emulator, domain } = sandbox;

    // The API answers slowly: the first attempt is still in flight when the process dies.
    api.set(Behaviour { latency: Duration::from_secs(2), ..Behaviour::default() });
    let spec = WorkflowSpec {
        domain: domain.clone(),
        code: CODE.into(),
        properties: serde_json::json!({"company_id": 12}),
        finish_after: None,
        ..WorkflowSpec::default()
    };
    let workflow_id = emulator.start_workflow(spec).await.unwrap().workflow_id;
    wait(|| api.counts().requests >= 1, "the first attempt reaches the API").await;
    server.kill();
    api.set(Behaviour::default());

    let _restarted = Server::start(&config);
    let state = emulator
        .wait_for_workflow(&domain, &workflow_id, Duration::from_secs(20), |s| {
            s.status != WorkflowStatus::Waiting
        })
        .await
        .unwrap();
    assert_eq!(number(&state.return_values["limit"]), api.company(12).unwrap().0);

    let store = store::Store::open(&store_url, StoreOptions::new(StoreKey::from_hex(KEY).unwrap()))
        .await
        .unwrap();
    let mut done = false;
    for _ in 0..200 {
        if store.state_counts().await.unwrap().get(JobState::Done) == 1 {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(done, "the job ends done");
    let jobs = store.list_jobs(&JobFilter::default()).await.unwrap();
    assert_eq!(jobs.len(), 1, "one job");
    let detail = store.job(JobId(jobs[0].id.0)).await.unwrap().unwrap();
    assert_eq!(detail.job.attempts, 2, "run again once after the crash: {:#?}", detail.attempts);
    let sends =
        emulator.rest_calls(&domain).iter().filter(|c| c.method == "bizproc.event.send").count();
    assert_eq!(sends, 1, "the result was sent once");
}

async fn wait(condition: impl Fn() -> bool, what: &str) {
    for _ in 0..400 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

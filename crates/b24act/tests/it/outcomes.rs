//! What a workflow receives in each outcome of the example's own action (examples/b24act.toml:
//! `check_credit_limit`, the `credit_limit` connector, a fallback with
//! `reason_property = "error"`) against the fake finance API, end to end through the emulator:
//! a success (`error` empty), the fallback after retries, the fallback for bad input, an
//! operator's cancel with the fallback (`error` says why, each time), and a dead letter (nothing
//! until an operator completes it by hand).

use std::time::{Duration, Instant};

use b24_emulator::{PortalSpec, WorkflowSpec, WorkflowState, WorkflowStatus};
use fakes::finance::{Company, FinanceApi};
use host::config::{RetryPolicy, WorkersConfig};
use sandbox::{
    AppIdentity, Deployment, HostConfig, Site, TempDir, action_toml, reference_action_against,
    retry_settings, set,
};
use serde_json::{Value, json};
use store::{CANCELLED_BY_OPERATOR, JobFilter, JobId, JobState};

use crate::support::number;

/// The example's action, giving up after 2 s.
const CHECK: &str = "check_credit_limit";
/// The same, patient (10 minutes): an operator cancels it while it retries.
const PATIENT: &str = "check_credit_limit_patient";
/// The same with `on_failure.mode = "dead_letter"`.
const DEAD_LETTER: &str = "check_credit_limit_dl";
const COMPANY: u64 = 42;
/// No workflow or job may take longer than this to get where a test waits for it.
const WITHIN: Duration = Duration::from_secs(20);

/// The emulator (a portal speaking `language`), the fake finance API, and the host running the
/// example's action as [`CHECK`], [`PATIENT`] and [`DEAD_LETTER`], installed the real way.
pub struct Outcomes {
    pub deployment: Deployment,
    pub api: FinanceApi,
    _temp: TempDir,
}

/// The example's action against `api` as `code`, retrying for `max_wait`; a dead letter instead
/// of its fallback when `dead_letter`.
fn example_action(api: &FinanceApi, code: &str, max_wait: Duration, dead_letter: bool) -> String {
    let mut action = reference_action_against(api);
    set(&mut action, "code", code);
    let retry = RetryPolicy {
        max_wait,
        backoff_base: Duration::from_millis(100),
        backoff_cap: Duration::from_millis(400),
        jitter: 0.1,
        attempt_timeout: Duration::from_secs(1),
        deadline_margin: Duration::from_secs(1),
        log_retries: true,
    };
    set(&mut action, "retry", retry_settings(&retry));
    if dead_letter {
        let mut policy = toml::Table::new();
        policy.insert("mode".to_owned(), "dead_letter".into());
        set(&mut action, "on_failure", policy);
    }
    action_toml(&action)
}

impl Outcomes {
    pub async fn start(language: &str) -> Outcomes {
        let api = FinanceApi::start(11).await.unwrap();
        api.set_company(COMPANY, Company::new(50_000.0, 12_000.0));
        let temp = TempDir::new("b24act-it-outcomes").unwrap();
        let store_url = format!("sqlite:{}", temp.path().join("b24act.db").display());
        let app = AppIdentity::new("local.b24act.outcomes", "outcomes-secret");
        let actions = vec![
            example_action(&api, CHECK, Duration::from_secs(2), false),
            example_action(&api, PATIENT, Duration::from_secs(600), false),
            example_action(&api, DEAD_LETTER, Duration::from_secs(2), true),
        ];
        let config = |site: &Site| {
            HostConfig {
                workers: WorkersConfig { concurrency: 4, lease: Duration::from_secs(5) },
                actions,
                ..HostConfig::new(&app, site, &store_url)
            }
            .to_toml()
        };
        let portal = PortalSpec {
            unlimited: true,
            language_id: language.to_owned(),
            ..PortalSpec::default()
        };
        let codes = [CHECK, PATIENT, DEAD_LETTER];
        let registry = connectors::Registry::new();
        let deployment = Deployment::start(portal, &app, &codes, config, &registry).await.unwrap();
        Outcomes { deployment, api, _temp: temp }
    }

    /// Starts a workflow running `code` for the company and `amount`; returns its id.
    pub async fn start_workflow(&self, code: &str, amount: Value) -> String {
        let spec = WorkflowSpec {
            domain: self.deployment.domain().to_owned(),
            code: code.into(),
            properties: json!({ "company_id": COMPANY, "amount": amount }),
            finish_after: None,
            ..WorkflowSpec::default()
        };
        self.deployment.emulator().start_workflow(spec).await.unwrap().workflow_id
    }

    pub fn workflow(&self, id: &str) -> WorkflowState {
        self.deployment.emulator().workflow(self.deployment.domain(), id).unwrap()
    }

    /// Runs a workflow of `code` to its close by the host.
    pub async fn run(&self, code: &str, amount: Value) -> WorkflowState {
        let id = self.start_workflow(code, amount).await;
        self.wait_closed(&id).await
    }

    pub async fn wait_closed(&self, id: &str) -> WorkflowState {
        let deadline = Instant::now() + WITHIN;
        loop {
            let state = self.workflow(id);
            if state.status != WorkflowStatus::Waiting {
                assert!(!state.is_timeout, "closed by the host: {state:?}");
                return state;
            }
            assert!(Instant::now() < deadline, "still waiting after {WITHIN:?}: {state:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until workflow `id`'s job is in `state`; returns the job's id.
    pub async fn wait_job(&self, id: &str, state: JobState) -> JobId {
        let filter = JobFilter { workflow_id: Some(id.to_owned()), ..JobFilter::default() };
        let deadline = Instant::now() + WITHIN;
        loop {
            let jobs = self.deployment.store().list_jobs(&filter).await.unwrap();
            if let Some(job) = jobs.iter().find(|job| job.state == state) {
                return job.id;
            }
            assert!(Instant::now() < deadline, "no {state:?} job after {WITHIN:?}: {jobs:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The workflow's `error`, asserted a string.
fn error_of(state: &WorkflowState) -> &str {
    state.return_values["error"].as_str().unwrap_or_else(|| panic!("no error value: {state:?}"))
}

/// What the fallback answers besides `error`: manual approval, with the reason in `reason`
/// and in the log line.
fn assert_fallback(state: &WorkflowState) {
    let error = error_of(state);
    assert!(!error.is_empty(), "{state:?}");
    assert_eq!(state.return_values["approval_required"], json!("Y"), "{state:?}");
    assert_eq!(state.return_values["reason"], json!(format!("Manual approval: {error}")));
    let line = format!("Credit check failed, sent to manual approval: {error}");
    assert_eq!(state.log.last(), Some(&line), "{:?}", state.log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workflow_tells_each_outcome_by_its_error_value() {
    let outcomes = Outcomes::start("en").await;

    // Success: the finance system's answer, and `error` sent empty.
    let success = outcomes.run(CHECK, json!(15_000.0)).await;
    assert_eq!(success.status, WorkflowStatus::Closed);
    assert_eq!(number(&success.return_values["available_limit"]), 38_000.0, "{success:?}");
    assert_eq!(success.return_values["approval_required"], json!("N"));
    assert_eq!(success.return_values["reason"], json!("within the available limit 38000.00"));
    assert_eq!(error_of(&success), "", "empty on success");

    // Bad input: the fallback at once, naming the property.
    let invalid = outcomes.run(CHECK, json!("lots")).await;
    assert_fallback(&invalid);
    assert!(error_of(&invalid).starts_with("properties[amount]: "), "{invalid:?}");

    // The finance system down past the max wait: the fallback after retries.
    outcomes.api.update(|b| b.down = true);
    let gave_up = outcomes.run(CHECK, json!(15_000.0)).await;
    assert_fallback(&gave_up);
    let error = error_of(&gave_up);
    assert!(error.starts_with("gave up after ") && error.contains("503"), "{error}");

    // An operator cancels a job still retrying, with the fallback.
    let patient = outcomes.start_workflow(PATIENT, json!(15_000.0)).await;
    let job = outcomes.wait_job(&patient, JobState::RetryWait).await;
    let host = &outcomes.deployment.running.host;
    let now = host::clock::now_ms();
    host::operator::cancel_with_fallback(&host.store, &host.catalog, job, "cli:test", now)
        .await
        .unwrap();
    let cancelled = outcomes.wait_closed(&patient).await;
    assert_fallback(&cancelled);
    assert_eq!(error_of(&cancelled), CANCELLED_BY_OPERATOR);

    // A dead letter sends nothing: the workflow keeps waiting with no values, until an
    // operator completes the job by hand (the reason property then empty, as on success).
    let dead = outcomes.start_workflow(DEAD_LETTER, json!(15_000.0)).await;
    let job = outcomes.wait_job(&dead, JobState::Dead).await;
    let waiting = outcomes.workflow(&dead);
    assert_eq!(waiting.status, WorkflowStatus::Waiting, "{waiting:?}");
    assert!(waiting.return_values.as_object().is_none_or(serde_json::Map::is_empty), "{waiting:?}");
    let values = [("approval_required".to_owned(), "Y".to_owned())];
    let now = host::clock::now_ms();
    host::operator::complete_by_hand(&host.store, &host.catalog, job, &values, "cli:test", now)
        .await
        .unwrap();
    let completed = outcomes.wait_closed(&dead).await;
    assert_eq!(completed.return_values["approval_required"], json!("Y"), "{completed:?}");
    assert_eq!(completed.return_values.get("error"), None, "a dead letter has no reason property");
}

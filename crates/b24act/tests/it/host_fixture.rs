//! A host for stepping workers and the outbox by hand: an emulated portal with the app
//! installed and the actions registered, a real SQLite file in a temp dir, and a scripted
//! connector that succeeds, fails, panics or hangs on cue.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use b24_emulator::{
    AppSpec, Emulator, EmulatorConfig, Portal, PortalSpec, WorkflowSpec, WorkflowState,
};
use connectors::{BoxFuture, Connector, ConnectorError, ConnectorRequest, Outputs, Registry};
use host::Host;
use host::config::{Config, DeliveryConfig, RetryPolicy, WorkersConfig};
use host::loops::Wakeups;
use host::payload::{JobPayload, PAYLOAD_VERSION};
use host::worker::Workers;
use host::{clock, outbox};
use sandbox::{AppIdentity, HostConfig, Site, TempDir, retry_settings};
use serde_json::{Map, Value, json};
use store::{JobDetail, JobId, NewInstallation, NewJob};
use tokio::sync::Notify;

/// Falls back with `approval_required = Y` and the reason in the log line.
pub const CHECK: &str = "check_credit_limit";
/// Like [`CHECK`], but a failure leaves the job dead for an operator.
pub const CHECK_DEAD_LETTER: &str = "check_credit_limit_dl";
/// Like [`CHECK`], with a 300 ms attempt timeout.
pub const QUICK_CHECK: &str = "quick_check";

/// 30 minutes, the default `max_wait`.
pub const HALF_HOUR_MS: i64 = 30 * 60 * 1000;

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// One step of the scripted connector's behaviour, taken in call order.
pub enum Step {
    /// Returns `available_limit = 1000 + attempt`, `approval_required = false`.
    Succeed,
    /// Returns exactly these outputs.
    Return(Outputs),
    Retryable(&'static str),
    Fatal(&'static str),
    Panic(&'static str),
    /// Sleeps this long, then succeeds (if nobody gave up on it first).
    Sleep(Duration),
    /// Signals `entered`, waits for `release`, then succeeds.
    Gate {
        entered: Arc<Notify>,
        release: Arc<Notify>,
    },
}

/// A connector that follows a script; with the script used up, every call succeeds.
#[derive(Default)]
pub struct Scripted {
    steps: Mutex<VecDeque<Step>>,
    calls: Mutex<Vec<ConnectorRequest>>,
}

impl Scripted {
    pub fn then(&self, step: Step) -> &Self {
        self.steps.lock().unwrap().push_back(step);
        self
    }

    /// Every request the connector saw, in call order.
    pub fn calls(&self) -> Vec<ConnectorRequest> {
        self.calls.lock().unwrap().clone()
    }
}

impl Connector for Scripted {
    fn run<'a>(
        &'a self,
        request: &'a ConnectorRequest,
    ) -> BoxFuture<'a, Result<Outputs, ConnectorError>> {
        self.calls.lock().unwrap().push(request.clone());
        let step = self.steps.lock().unwrap().pop_front().unwrap_or(Step::Succeed);
        Box::pin(async move {
            match step {
                Step::Succeed => {}
                Step::Return(outputs) => return Ok(outputs),
                Step::Retryable(reason) => return Err(ConnectorError::retryable(reason)),
                Step::Fatal(reason) => return Err(ConnectorError::fatal(reason)),
                Step::Panic(message) => panic!("{message}"),
                Step::Sleep(pause) => tokio::time::sleep(pause).await,
                Step::Gate { entered, release } => {
                    entered.notify_one();
                    release.notified().await;
                }
            }
            Ok(Outputs::new()
                .with("available_limit", 1000.0 + f64::from(request.attempt))
                .with("approval_required", false)
                .with_log(format!("limit checked on attempt {}", request.attempt)))
        })
    }
}

/// The emulator, one portal with the app installed, and a host whose store knows it.
pub struct TestHost {
    pub emu: Emulator,
    pub portal: Portal,
    pub host: Arc<Host>,
    pub wakeups: Arc<Wakeups>,
    pub connector: Arc<Scripted>,
    /// The refresh token the install handed out.
    pub install_refresh_token: String,
    /// The tests' "now" at start (Unix ms); steps are taken at offsets from it.
    pub t0: i64,
    _dir: TempDir,
}

impl TestHost {
    /// A portal without a rate limit.
    pub async fn start() -> TestHost {
        TestHost::start_with(PortalSpec { unlimited: true, ..PortalSpec::default() }).await
    }

    pub async fn start_with(spec: PortalSpec) -> TestHost {
        let emu = Emulator::start(EmulatorConfig::default()).await.expect("emulator starts");
        let portal = emu.create_portal(spec).await.expect("portal starts");
        let app = emu.register_app(AppSpec { scope: "bizproc".into(), ..AppSpec::default() });
        let install = emu.install_app(&portal.domain, &app.client_id).await.expect("app installs");

        let dir = TempDir::new("b24act-jobs").expect("temp dir");
        let config = Config::from_toml(
            &config_toml(&app.client_id, &app.client_secret, &emu.control_url(), dir.path()),
            "test",
            std::iter::empty(),
        )
        .expect("the test configuration is valid");
        let connector = Arc::new(Scripted::default());
        let mut registry = Registry::new();
        registry.register_instance("scripted", connector.clone());
        let host = Arc::new(Host::open(config, &registry).await.expect("host opens"));

        let t0 = clock::now_ms();
        let expires_at = i64::try_from(install.expires).expect("expiry fits") * 1000;
        host.store
            .upsert_installation(
                &NewInstallation {
                    member_id: install.member_id.clone(),
                    domain: install.domain.clone(),
                    client_endpoint: install.client_endpoint.clone(),
                    server_endpoint: install.server_endpoint.clone(),
                    application_token: install.application_token.clone(),
                    access_token: install.access_token.clone(),
                    refresh_token: Some(install.refresh_token.clone()),
                    expires_at,
                },
                t0,
            )
            .await
            .expect("installation stored");
        let client =
            host.portals.client(&install.member_id).await.expect("a client for the portal");
        for action in host.catalog.iter() {
            let (kind, definition) = action.definition(&host.config.app.public_url);
            client.action_add(kind, &definition).await.expect("action registers");
        }
        TestHost {
            emu,
            portal,
            host,
            wakeups: Arc::new(Wakeups::default()),
            connector,
            install_refresh_token: install.refresh_token,
            t0,
            _dir: dir,
        }
    }

    pub fn domain(&self) -> &str {
        &self.portal.domain
    }

    pub fn workers(&self) -> Workers {
        Workers::new(self.host.clone(), self.wakeups.clone())
    }

    /// One worker step at `t0 + offset_ms`. A job's own times are its claim time plus the real
    /// time its attempt took, so the next step should come a little later (a second is plenty).
    pub async fn work_at(&self, offset_ms: i64) -> usize {
        self.workers().run_once(self.t0 + offset_ms).await.expect("workers step")
    }

    /// One outbox round at `t0 + offset_ms`.
    pub async fn deliver_at(&self, offset_ms: i64) -> usize {
        outbox::run_once(&self.host, self.t0 + offset_ms).await.expect("outbox round")
    }

    /// Starts a workflow running `code` and stores its call as a job, due now, with the
    /// deadline `deadline_in_ms` after `t0`.
    pub async fn call(&self, code: &str, deadline_in_ms: i64) -> Call {
        self.call_with(code, deadline_in_ms, None).await
    }

    /// Like [`TestHost::call`], with the call's input refused by the intake for `invalid`.
    pub async fn call_with(&self, code: &str, deadline_in_ms: i64, invalid: Option<&str>) -> Call {
        let calls = self.calls(code, 1, deadline_in_ms, invalid).await;
        calls.into_iter().next().expect("one call")
    }

    /// `count` workflows of `code`, their jobs stored in one batch.
    pub async fn calls(
        &self,
        code: &str,
        count: usize,
        deadline_in_ms: i64,
        invalid: Option<&str>,
    ) -> Vec<Call> {
        let mut started = Vec::with_capacity(count);
        let mut jobs = Vec::with_capacity(count);
        for _ in 0..count {
            let workflow = self
                .emu
                .start_workflow(WorkflowSpec {
                    domain: self.portal.domain.clone(),
                    code: code.to_owned(),
                    properties: json!({"company_id": 42, "amount": 1500.5}),
                    finish_after: None,
                    ..WorkflowSpec::default()
                })
                .await
                .expect("workflow starts");
            let properties: Map<String, Value> = json!({"company_id": 42, "amount": 1500.5})
                .as_object()
                .cloned()
                .unwrap_or_default();
            let payload = JobPayload {
                document_id: ["crm".into(), "CCrmDocumentDeal".into(), "DEAL_1".into()],
                properties: if invalid.is_some() { Map::new() } else { properties },
                invalid: invalid.map(str::to_owned),
            };
            jobs.push(NewJob {
                member_id: self.portal.member_id.clone(),
                action_code: code.to_owned(),
                event_token: workflow.event_token.clone(),
                workflow_id: workflow.workflow_id.clone(),
                document_id: Some("DEAL_1".into()),
                payload: serde_json::to_value(&payload).expect("payload encodes"),
                payload_version: PAYLOAD_VERSION,
                waits_for_result: true,
                deadline_at: self.t0 + deadline_in_ms,
            });
            started.push(workflow.workflow_id);
        }
        let ids = self.host.store.enqueue(&jobs, self.t0).await.expect("jobs stored");
        started
            .into_iter()
            .zip(ids)
            .map(|(workflow_id, enqueued)| Call { workflow_id, job: enqueued.id() })
            .collect()
    }

    pub fn workflow(&self, call: &Call) -> WorkflowState {
        self.emu.workflow(&self.portal.domain, &call.workflow_id).expect("workflow exists")
    }

    pub async fn job(&self, call: &Call) -> JobDetail {
        self.host.store.job(call.job).await.expect("store answers").expect("job exists")
    }

    /// `(method, error)` of every REST request the portal received, batch sub-calls included.
    pub fn rest_calls(&self, method: &str) -> Vec<b24_emulator::RecordedCall> {
        self.emu
            .rest_calls(&self.portal.domain)
            .into_iter()
            .filter(|call| call.method == method)
            .collect()
    }
}

/// A workflow and its job.
#[derive(Debug, Clone)]
pub struct Call {
    pub workflow_id: String,
    pub job: JobId,
}

fn config_toml(
    client_id: &str,
    client_secret: &str,
    auth_server: &str,
    dir: &std::path::Path,
) -> String {
    let retry = |attempt_timeout: Duration| RetryPolicy {
        jitter: 0.0,
        attempt_timeout,
        ..RetryPolicy::default()
    };
    let check = action(
        CHECK,
        &RetryPolicy { backoff_cap: Duration::from_secs(60), ..retry(Duration::from_secs(10)) },
        r#"
mode = "fallback"
log_message = "Finance system unavailable: {reason}"
values = { approval_required = true, reason = "finance system unavailable" }
"#,
    );
    let dead_letter =
        action(CHECK_DEAD_LETTER, &retry(Duration::from_secs(10)), r#"mode = "dead_letter""#);
    let quick = action(
        QUICK_CHECK,
        &retry(Duration::from_millis(300)),
        r#"
mode = "fallback"
log_message = "Quick check failed: {reason}"
values = { approval_required = true }
"#,
    );
    HostConfig {
        encryption_key: KEY.into(),
        workers: WorkersConfig { concurrency: 4, lease: Duration::from_secs(60) },
        delivery: DeliveryConfig {
            retry_cap: Duration::from_secs(10),
            ..DeliveryConfig::default()
        },
        actions: vec![check, dead_letter, quick],
        ..HostConfig::new(
            &AppIdentity::new(client_id, client_secret),
            &Site {
                listen: SocketAddr::from(([127, 0, 0, 1], 9)),
                auth_server: format!("{auth_server}/"),
            },
            format!("sqlite:{}", dir.join("b24act.db").display()),
        )
    }
    .to_toml()
}

/// The reference action of examples/b24act.toml as `code`, run by the scripted connector, with
/// `retry` and the `on_failure` table given as TOML.
fn action(code: &str, retry: &RetryPolicy, on_failure: &str) -> String {
    let mut action = sandbox::reference_action();
    sandbox::set(&mut action, "code", code);
    sandbox::set(
        &mut action,
        "connector",
        toml::Table::from_iter([("kind".into(), "scripted".into())]),
    );
    sandbox::set(&mut action, "retry", retry_settings(retry));
    sandbox::set(&mut action, "on_failure", toml::from_str::<toml::Table>(on_failure).unwrap());
    sandbox::action_toml(&action)
}

//! Trace export end to end, built only with the `otel` feature (`cargo test -p b24act --features
//! otel --test telemetry`): a real `b24act serve` child, `[telemetry]` turned on from the
//! environment, sends the spans of a real call — taken by the intake, run as a job, delivered to
//! the emulator's portal — as OTLP protobuf over HTTP to a fake collector on loopback; the last
//! ones when it stops on SIGTERM. None of them carries a token or a secret.
//!
//! A test binary of its own rather than a module of `tests/it`: with the feature on, the whole
//! workspace is compiled again (the exporter's protobuf derive widens `syn`'s features), and
//! this keeps that second build to the binary and one small test.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use b24_emulator::{PortalSpec, WorkflowSpec, WorkflowState, WorkflowStatus};
use fakes::finance::FinanceApi;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use sandbox::{AppIdentity, FinanceCreditCheck, HostConfig, REGISTRATION_WITHIN, Sandbox, TempDir};

const CLIENT_ID: &str = "local.b24act.otel";
const CLIENT_SECRET: &str = "otel-test-client-secret";
const CODE: &str = "check_credit";
const SERVICE_NAME: &str = "b24act-under-test";

/// An OTLP/HTTP collector that keeps every request to `/v1/traces`.
struct Collector {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Request>>>,
}

/// A request's content type and body.
type Request = (Option<String>, Bytes);

impl Collector {
    async fn start() -> Collector {
        let received = Arc::new(Mutex::new(Vec::new()));
        let kept = received.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| async move {
                let content_type = headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_owned);
                kept.lock().unwrap().push((content_type, body));
                // An empty ExportTraceServiceResponse: everything accepted.
                (StatusCode::OK, [(header::CONTENT_TYPE, "application/x-protobuf")], Bytes::new())
            }),
        );
        let (listener, addr) = sandbox::loopback_listener().await.unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Collector { addr, received }
    }

    fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    /// Every request's body, after checking that each was protobuf.
    fn bodies(&self) -> Vec<Bytes> {
        let received = self.received.lock().unwrap();
        for (content_type, _) in received.iter() {
            assert_eq!(content_type.as_deref(), Some("application/x-protobuf"));
        }
        received.iter().map(|(_, body)| body.clone()).collect()
    }
}

/// A span as the collector received it, with the `service.name` of its resource.
struct Exported {
    service: Option<String>,
    span: Span,
}

impl Exported {
    fn all(bodies: &[Bytes]) -> Vec<Exported> {
        let mut exported = Vec::new();
        for body in bodies {
            let request = ExportTraceServiceRequest::decode(body.as_ref()).expect("OTLP protobuf");
            for resource_spans in request.resource_spans {
                let attributes = resource_spans.resource.map(|r| r.attributes).unwrap_or_default();
                let service = text(&attributes, "service.name");
                for scope_spans in resource_spans.scope_spans {
                    exported.extend(
                        scope_spans
                            .spans
                            .into_iter()
                            .map(|span| Exported { service: service.clone(), span }),
                    );
                }
            }
        }
        exported
    }

    fn attribute(&self, key: &str) -> Option<String> {
        text(&self.span.attributes, key)
    }
}

/// An attribute's value as text (a string, or an integer written out).
fn text(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|a| a.key == key)?.value.as_ref()?;
    match value {
        AnyValue { value: Some(any_value::Value::StringValue(s)) } => Some(s.clone()),
        AnyValue { value: Some(any_value::Value::IntValue(i)) } => Some(i.to_string()),
        other => panic!("attribute {key} is {other:?}"),
    }
}

/// `b24act serve` with stderr kept in a file, shown when a check fails.
struct Server {
    child: Child,
    stderr: PathBuf,
}

impl Server {
    fn start(config: &Path, env: &[(&str, &str)]) -> Server {
        let stderr = config.with_extension("stderr");
        let file = std::fs::File::create(&stderr).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_b24act"))
            .args(["serve", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn b24act serve");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let server = Server { child, stderr };
        loop {
            let line = lines.next().unwrap_or_else(|| panic!("exited: {}", server.stderr()));
            if line.unwrap().starts_with("b24act serving on") {
                break;
            }
        }
        // Keep draining stdout so the process never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        server
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM, as a service manager stops it; waits for it to exit.
    fn stop(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "still running: {}", self.stderr());
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The tokens a call carried and its event token's signature.
fn call_secrets(state: &WorkflowState) -> Vec<String> {
    let form = phpform::decode(state.body.as_bytes(), &phpform::Limits::default()).unwrap();
    let Some(phpform::Value::Array(auth)) = form.get("auth") else { panic!("{}", state.body) };
    let mut secrets: Vec<String> = ["access_token", "refresh_token", "application_token"]
        .into_iter()
        .filter_map(|field| match auth.get(field) {
            Some(phpform::Value::Str(value)) => Some(value.clone()),
            _ => None,
        })
        .collect();
    let (_, signature) = state.event_token.rsplit_once('.').expect("a signed event token");
    secrets.push(signature.to_owned());
    secrets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spans_of_a_call_and_its_job_reach_the_collector_without_secrets() {
    let collector = Collector::start().await;
    let sandbox =
        Sandbox::start(PortalSpec { unlimited: true, ..PortalSpec::default() }).await.unwrap();
    let api = FinanceApi::start(3).await.unwrap();
    let dir = TempDir::new("b24act-otel").unwrap();
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let app = AppIdentity::new(CLIENT_ID, CLIENT_SECRET);
    let store_url = format!("sqlite:{}/b24act.db", dir.path().display());
    let check = FinanceCreditCheck {
        code: CODE,
        name: "Check credit",
        api: &api,
        retry: host::config::RetryPolicy::default(),
        flags_unavailable: false,
    };
    let host_config = HostConfig {
        actions: vec![check.to_toml()],
        ..HostConfig::new(&app, &sandbox.site(listen), &store_url)
    };
    let config = dir.path().join("b24act.toml");
    std::fs::write(&config, host_config.to_toml()).unwrap();
    sandbox.register_app(&app, listen);

    let endpoint = collector.endpoint();
    let mut server = Server::start(
        &config,
        &[
            ("B24ACT__TELEMETRY__ENABLED", "true"),
            ("B24ACT__TELEMETRY__ENDPOINT", &endpoint),
            ("B24ACT__TELEMETRY__SERVICE_NAME", SERVICE_NAME),
            ("B24ACT__SERVER__DRAIN_GRACE", "0s"),
        ],
    );
    let emulator = &sandbox.emulator;
    let installed = emulator.install_app(&sandbox.domain, CLIENT_ID).await.unwrap();
    assert_eq!(installed.event_status, Some(200), "{}", server.stderr());
    sandbox.wait_registered(&[CODE], REGISTRATION_WITHIN).await.unwrap();
    let spec = WorkflowSpec {
        domain: sandbox.domain.clone(),
        code: CODE.into(),
        properties: serde_json::json!({ "company_id": 7 }),
        finish_after: None,
        ..WorkflowSpec::default()
    };
    let workflow_id = emulator.start_workflow(spec).await.unwrap().workflow_id;
    let state = emulator
        .wait_for_workflow(&sandbox.domain, &workflow_id, Duration::from_secs(30), |s| {
            s.status != WorkflowStatus::Waiting
        })
        .await
        .unwrap();
    assert_eq!(state.status, WorkflowStatus::Closed, "{state:?}");
    // Stopped well before the batch processor's 5 s delay: what arrives was flushed at exit.
    let status = server.stop();
    assert!(status.success(), "{status}: {}", server.stderr());

    let bodies = collector.bodies();
    let spans = Exported::all(&bodies);
    let named = |name: &str| spans.iter().filter(|e| e.span.name == name).collect::<Vec<_>>();
    let member_id = installed.member_id.as_str();
    let calls = named("call");
    assert_eq!(calls.len(), 1, "one call taken; spans: {:?}", names(&spans));
    let call = calls[0];
    assert_eq!(call.attribute("portal").as_deref(), Some(member_id));
    assert_eq!(call.attribute("code").as_deref(), Some(CODE));
    assert_eq!(call.attribute("workflow").as_deref(), Some(workflow_id.as_str()));
    let jobs = named("job");
    assert_eq!(jobs.len(), 1, "one job run; spans: {:?}", names(&spans));
    let job = jobs[0];
    assert_eq!(job.attribute("portal").as_deref(), Some(member_id));
    assert_eq!(job.attribute("code").as_deref(), Some(CODE));
    assert!(job.attribute("job_id").is_some_and(|id| !id.is_empty()), "job_id");
    assert!(job.attribute("attempt").is_some(), "attempt");
    let delivery = named("delivery");
    assert!(
        delivery.iter().any(|d| d.attribute("portal").as_deref() == Some(member_id)),
        "the result's delivery; spans: {:?}",
        names(&spans)
    );
    assert!(!named("install_event").is_empty(), "the install; spans: {:?}", names(&spans));
    assert!(
        named("b24_call").iter().any(|c| c.attribute("method").as_deref() == Some("batch")),
        "the batch carrying event.send; spans: {:?}",
        names(&spans)
    );
    assert!(spans.iter().all(|e| e.service.as_deref() == Some(SERVICE_NAME)));
    for span in &spans {
        let (start, end) = (span.span.start_time_unix_nano, span.span.end_time_unix_nano);
        assert!(0 < start && start <= end, "{} has a start and an end", span.span.name);
    }

    let mut secrets = vec![
        CLIENT_SECRET.to_owned(),
        host_config.encryption_key.clone(),
        api.token(),
        installed.access_token.clone(),
        installed.refresh_token.clone(),
        installed.application_token.clone(),
    ];
    secrets.extend(call_secrets(&state));
    for body in &bodies {
        for secret in &secrets {
            let found = body.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!found, "a secret was exported ({} characters)", secret.len());
        }
    }
    drop(dir);
}

fn names(spans: &[Exported]) -> Vec<&str> {
    spans.iter().map(|e| e.span.name.as_str()).collect()
}

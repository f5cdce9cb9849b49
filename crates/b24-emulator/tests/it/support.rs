//! Test support: an emulator with one portal and one installed app, a capturing echo server
//! that plays the app's handler and install URL, and small REST helpers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use b24_emulator::{
    App, AppSpec, Emulator, EmulatorConfig, Faults, Installation, Portal, PortalSpec,
    StartedWorkflow, WorkflowSpec, WorkflowState, WorkflowStatus,
};
use serde_json::{Value, json};

/// One request the echo server received.
#[derive(Debug, Clone)]
pub struct Captured {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Captured {
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn form(&self) -> phpform::Array {
        phpform::decode(&self.body, &phpform::Limits::default()).unwrap()
    }

    pub fn json(&self) -> Value {
        phpform::Value::Array(self.form()).to_json()
    }
}

#[derive(Clone)]
struct EchoState {
    seen: Arc<Mutex<Vec<Captured>>>,
    status: Arc<Mutex<StatusCode>>,
}

/// A handler/install-URL stand-in that records every request and answers with a settable status.
pub struct Echo {
    pub url: String,
    seen: Arc<Mutex<Vec<Captured>>>,
    status: Arc<Mutex<StatusCode>>,
}

impl Echo {
    pub async fn start() -> Echo {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(Mutex::new(StatusCode::OK));
        let state = EchoState { seen: seen.clone(), status: status.clone() };
        let app = Router::new().fallback(echo).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Echo { url, seen, status }
    }

    pub fn set_status(&self, status: StatusCode) {
        *self.status.lock().unwrap() = status;
    }

    pub fn requests(&self) -> Vec<Captured> {
        self.seen.lock().unwrap().clone()
    }

    pub fn on(&self, path: &str) -> Vec<Captured> {
        self.requests().into_iter().filter(|c| c.path == path).collect()
    }

    /// Waits until at least `n` requests hit `path`.
    pub async fn wait_for(&self, path: &str, n: usize) -> Vec<Captured> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got = self.on(path);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} requests on {path}, got {}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn echo(
    State(state): State<EchoState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let captured = Captured { method, path: uri.path().to_owned(), headers, body };
    state.seen.lock().unwrap().push(captured);
    *state.status.lock().unwrap()
}

/// An emulator with one portal (bucket off unless the spec says otherwise) and one installed app.
pub struct World {
    pub emu: Emulator,
    pub portal: Portal,
    pub app: App,
    pub inst: Installation,
    pub echo: Echo,
    pub http: reqwest::Client,
}

pub const HANDLER_PATH: &str = "/handler";
pub const INSTALL_PATH: &str = "/install";

impl World {
    pub async fn new() -> World {
        World::with_spec(PortalSpec { unlimited: true, ..Default::default() }).await
    }

    pub async fn with_spec(spec: PortalSpec) -> World {
        World::with(spec, "bizproc,crm").await
    }

    /// A portal without a bucket and an app granted `scope`.
    pub async fn with_scope(scope: &str) -> World {
        World::with(PortalSpec { unlimited: true, ..Default::default() }, scope).await
    }

    async fn with(spec: PortalSpec, scope: &str) -> World {
        let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
        let echo = Echo::start().await;
        let portal = emu.create_portal(spec).await.unwrap();
        let app = emu.register_app(AppSpec {
            install_url: Some(format!("{}{INSTALL_PATH}", echo.url)),
            scope: scope.into(),
            ..Default::default()
        });
        let inst = emu.install_app(&portal.domain, &app.client_id).await.unwrap();
        let mut http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
        if let Some(ca_file) = &portal.ca_file {
            let pem = std::fs::read(ca_file).unwrap();
            http = http.tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()]);
        }
        let http = http.build().unwrap();
        World { emu, portal, app, inst, echo, http }
    }

    /// Replaces the portal's faults.
    pub fn set_faults(&self, faults: Faults) {
        self.emu.set_faults(&self.portal.domain, faults).unwrap();
    }

    pub fn handler_url(&self) -> String {
        format!("{}{HANDLER_PATH}", self.echo.url)
    }

    /// POSTs JSON to `/rest/<method>` with the install token as `auth`.
    pub async fn call(&self, method: &str, params: Value) -> (u16, Value) {
        self.call_with(&self.inst.access_token, method, params).await
    }

    pub async fn call_with(&self, token: &str, method: &str, mut params: Value) -> (u16, Value) {
        params.as_object_mut().unwrap().insert("auth".into(), json!(token));
        post_json(&self.http, &format!("{}{method}", self.portal.client_endpoint), &params).await
    }

    /// POSTs `body` as a form, untouched, to `/rest/<method>?auth=<install token>`.
    pub async fn call_raw(&self, method: &str, content_type: &str, body: &str) -> (u16, Value) {
        let url =
            format!("{}{method}?auth={}", self.portal.client_endpoint, self.inst.access_token);
        let resp = self
            .http
            .post(url)
            .header("content-type", content_type)
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    /// POSTs a PHP form to `/rest/<method>` with the install token as `auth`.
    pub async fn call_form(&self, method: &str, params: Value) -> (u16, Value) {
        let mut params = params;
        params.as_object_mut().unwrap().insert("auth".into(), json!(self.inst.access_token));
        let form = phpform::Value::from_json(&params).unwrap();
        let phpform::Value::Array(form) = form else { panic!("object expected") };
        let resp = self
            .http
            .post(format!("{}{method}", self.portal.client_endpoint))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(phpform::encode(&form))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    /// Registers an activity (or robot) with a handler on the echo server.
    pub async fn register(&self, method: &str, mut fields: Value) {
        let defaults = json!({"HANDLER": self.handler_url(), "NAME": "Test", "AUTH_USER_ID": 1});
        for (k, v) in defaults.as_object().unwrap() {
            fields.as_object_mut().unwrap().entry(k.clone()).or_insert(v.clone());
        }
        let (status, body) = self.call(method, fields).await;
        assert_eq!((status, &body["result"]), (200, &json!(true)), "{body}");
    }

    pub fn workflow(&self, code: &str, properties: Value) -> WorkflowSpec {
        WorkflowSpec {
            domain: self.portal.domain.clone(),
            code: code.into(),
            properties,
            ..Default::default()
        }
    }

    /// Starts `n` workflows of a subscribing robot `wait` (registered here), each completing as
    /// soon as its activity closes.
    pub async fn waiting_workflows(&self, n: usize) -> Vec<StartedWorkflow> {
        self.register("bizproc.robot.add", json!({"CODE": "wait", "USE_SUBSCRIPTION": "Y"})).await;
        let mut started = Vec::new();
        for _ in 0..n {
            let spec = WorkflowSpec {
                finish_after: Some(Duration::ZERO),
                ..self.workflow("wait", json!({}))
            };
            started.push(self.emu.start_workflow(spec).await.unwrap());
        }
        started
    }

    /// The REST log's `bizproc.event.send` entries for `event_token`, oldest first:
    /// `(in_batch, status, error)`.
    pub fn sends_of(&self, event_token: &str) -> Vec<(bool, u16, Option<String>)> {
        self.emu
            .rest_calls(&self.portal.domain)
            .into_iter()
            .filter(|c| {
                c.method == "bizproc.event.send" && c.event_token.as_deref() == Some(event_token)
            })
            .map(|c| (c.in_batch, c.status, c.error))
            .collect()
    }

    /// The REST log's outer `batch` requests, oldest first: `(status, error)`.
    pub fn batches(&self) -> Vec<(u16, Option<String>)> {
        self.emu
            .rest_calls(&self.portal.domain)
            .into_iter()
            .filter(|c| c.method == "batch" && !c.in_batch)
            .map(|c| (c.status, c.error))
            .collect()
    }
    /// The workflow's state once its call has been delivered (or dropped), within 2 s.
    pub async fn delivered(&self, workflow_id: &str) -> WorkflowState {
        self.wait_until(workflow_id, Duration::from_secs(2), |s| !s.deliveries.is_empty()).await
    }

    /// The workflow's state once its activity stopped waiting, within 5 s.
    pub async fn stopped_waiting(&self, workflow_id: &str) -> WorkflowState {
        self.wait_until(workflow_id, Duration::from_secs(5), |s| {
            s.status != WorkflowStatus::Waiting
        })
        .await
    }

    async fn wait_until(
        &self,
        workflow_id: &str,
        within: Duration,
        done: impl Fn(&WorkflowState) -> bool,
    ) -> WorkflowState {
        self.emu.wait_for_workflow(&self.portal.domain, workflow_id, within, done).await.unwrap()
    }
}

pub async fn post_json(http: &reqwest::Client, url: &str, body: &Value) -> (u16, Value) {
    let resp = http.post(url).json(body).send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

pub async fn get_json(http: &reqwest::Client, url: &str) -> (u16, Value) {
    let resp = http.get(url).send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// The `auth[...]` keys of an event that carries no tokens (run as user 0, the `omit_tokens`
/// fault, ONAPPUNINSTALL), sorted.
pub const TOKENLESS_AUTH_KEYS: [&str; 5] =
    ["application_token", "client_endpoint", "domain", "member_id", "server_endpoint"];

/// The keys of an event's `auth[...]`, sorted.
pub fn auth_keys(event: &Value) -> Vec<String> {
    let mut keys: Vec<_> = event["auth"].as_object().unwrap().keys().cloned().collect();
    keys.sort();
    keys
}

/// `batch` parameters sending each event token, as commands `e0`, `e1`, …
pub fn event_send_batch(event_tokens: &[&str]) -> Value {
    let cmd: serde_json::Map<String, Value> = event_tokens
        .iter()
        .enumerate()
        .map(|(i, token)| {
            let query = phpform::Value::from_json(&json!({"EVENT_TOKEN": token})).unwrap();
            let phpform::Value::Array(query) = query else { panic!("object expected") };
            (format!("e{i}"), json!(format!("bizproc.event.send?{}", phpform::encode(&query))))
        })
        .collect();
    json!({ "cmd": cmd })
}

/// The error pair of an error envelope.
pub fn err(body: &Value) -> (&str, &str) {
    (body["error"].as_str().unwrap_or("?"), body["error_description"].as_str().unwrap_or("?"))
}

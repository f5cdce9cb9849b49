//! `b24act emulator`: docs/emulator.md's newcomer flow, step by step, against the real process —
//! start it, create a portal, register and install an app, register an activity with the
//! install token, start a workflow, see the call arrive at a handler, answer it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use b24::incoming::{ActivityCall, AppEvent, AppEventKind, Limits, PropertyValue};
use b24::report::ErrorChain;
use b24::rest::{AppCredentials, Credentials, EventSend, OAuthTokens, RestClient};
use b24::secret::ClientSecret;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// The emulator process; killed when dropped so a failing test leaves nothing behind.
struct EmulatorProcess {
    child: Child,
    control: String,
}

impl EmulatorProcess {
    /// Starts `b24act emulator` on a free port and reads the control API URL it prints
    /// (`http://127.0.0.1:P/control`).
    fn start() -> EmulatorProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_b24act"))
            .args(["emulator", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn b24act emulator");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let control = loop {
            let line = lines
                .next()
                .expect("the emulator printed its URLs before exiting")
                .expect("utf-8 stdout");
            if let Some(url) = line.trim().strip_prefix("control API:") {
                break url.trim().trim_end_matches('/').to_owned();
            }
        };
        // Keep reading what it prints: a closed pipe would make its next line fail.
        std::thread::spawn(move || lines.for_each(drop));
        EmulatorProcess { child, control }
    }
}

impl Drop for EmulatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A handler endpoint like a newcomer's `nc -l`: every POST body goes into a channel.
async fn start_handler() -> (String, mpsc::UnboundedReceiver<(String, Bytes)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let install_tx = tx.clone();
    let app = Router::new()
        .route(
            "/install",
            post(move |body: Bytes| async move {
                let _ = install_tx.send(("install".to_owned(), body));
            }),
        )
        .route(
            "/handler",
            post(move |body: Bytes| async move {
                let _ = tx.send(("handler".to_owned(), body));
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

async fn next_post(rx: &mut mpsc::UnboundedReceiver<(String, Bytes)>, path: &str) -> Bytes {
    let (got, body) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no POST to /{path} within 10 s"))
        .expect("handler server alive");
    assert_eq!(got, path);
    body
}

async fn post_json(http: &reqwest::Client, url: &str, body: Value) -> Value {
    let response = http.post(url).json(&body).send().await.unwrap();
    let status = response.status();
    let json: Value = response.json().await.unwrap();
    assert!(status.is_success(), "POST {url} → {status}: {json}");
    json
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newcomer_flow_from_emulator_start_to_a_returned_result() {
    let emulator = EmulatorProcess::start();
    let control = emulator.control.clone();
    let (handler, mut posts) = start_handler().await;
    // reqwest is built without a default TLS provider (design.md §5); give it ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();

    let portal = post_json(&http, &format!("{control}/portals"), json!({})).await;
    let domain = portal["domain"].as_str().unwrap().to_owned();
    let app = post_json(
        &http,
        &format!("{control}/apps"),
        json!({"scope": "bizproc,crm", "install_url": format!("{handler}/install")}),
    )
    .await;
    let client_id = app["client_id"].as_str().unwrap().to_owned();
    let client_secret = app["client_secret"].as_str().unwrap().to_owned();
    let installed = post_json(
        &http,
        &format!("{control}/portals/{domain}/apps/{client_id}/install"),
        json!({}),
    )
    .await;

    // The install handler got ONAPPINSTALL, and our decoder reads it.
    let event =
        AppEvent::from_form(&next_post(&mut posts, "install").await, &Limits::default()).unwrap();
    assert_eq!(event.kind, AppEventKind::Install);
    assert_eq!(
        event.auth.application_token.expose(),
        installed["application_token"].as_str().unwrap()
    );
    let tokens = event.auth.tokens.clone().expect("install carries tokens");

    // Register an activity with curl's equivalent: the install token in `auth`.
    let client_endpoint = installed["client_endpoint"].as_str().unwrap();
    let added = post_json(
        &http,
        &format!("{client_endpoint}bizproc.activity.add"),
        json!({
            "auth": tokens.access_token.expose(),
            "CODE": "check_credit_limit",
            "HANDLER": format!("{handler}/handler"),
            "AUTH_USER_ID": 1,
            "USE_SUBSCRIPTION": "Y",
            "NAME": {"en": "Check credit limit"},
            "PROPERTIES": {"company_id": {"Name": "Company", "Type": "int", "Required": "Y"},
                           "approvers": {"Name": "Approvers", "Type": "user", "Multiple": "Y"}},
            "RETURN_PROPERTIES": {"approval_required": {"Name": "Approval required", "Type": "bool"}}
        }),
    )
    .await;
    assert_eq!(added["result"], json!(true));

    let started = post_json(
        &http,
        &format!("{control}/portals/{domain}/workflows"),
        json!({"code": "check_credit_limit", "properties": {"company_id": 42, "approvers": [1, 7]}, "timeout_duration": 3600}),
    )
    .await;
    let workflow_id = started["workflow_id"].as_str().unwrap().to_owned();

    // The call arrives PHP-encoded; the decoder turns it into a typed call.
    let call = ActivityCall::from_form(&next_post(&mut posts, "handler").await, &Limits::default())
        .unwrap();
    assert_eq!(call.workflow_id, workflow_id);
    assert_eq!(call.code, "check_credit_limit");
    let order: Vec<&str> = call.properties.keys().map(String::as_str).collect();
    assert_eq!(order, ["company_id", "approvers"], "properties come in registration order (§2.2)");
    assert_eq!(call.properties["company_id"], PropertyValue::Scalar("42".into()));
    assert_eq!(
        call.properties["approvers"],
        PropertyValue::List(vec!["user_1".into(), "user_7".into()])
    );
    assert_eq!(call.timeout, Some(Duration::from_secs(3600)));
    assert_eq!(call.auth.member_id.as_str(), event.auth.member_id.as_str());
    assert_eq!(call.auth.application_token, event.auth.application_token);

    // Our REST client returns the result; the workflow closes with it.
    let rest = RestClient::builder(Credentials::OAuth {
        tokens: OAuthTokens::from_auth(&call.auth).expect("run-as user 1 gets tokens"),
        app: AppCredentials {
            client_id,
            client_secret: ClientSecret::new(client_secret),
            auth_server: control.trim_end_matches("/control").parse().unwrap(),
        },
    })
    .build()
    .unwrap();
    let mut result = EventSend::new(call.event_token.as_str());
    result.return_values.insert("APPROVAL_REQUIRED".into(), json!("N"));
    result.log_message = Some("limit 10000, debt 2000".into());
    assert!(send_when_unlocked(&rest, &result).await);

    let state: Value = http
        .get(format!("{control}/portals/{domain}/workflows/{workflow_id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["status"], json!("Closed"), "{state}");
    assert_eq!(state["return_values"]["approval_required"], json!("N"), "{state}");
    assert!(state["log"].as_array().unwrap().contains(&json!("limit 10000, debt 2000")), "{state}");
}

/// `event.send` right after dispatch may meet the "423" lock window (§3.3): retry within a
/// deadline, as the host will.
async fn send_when_unlocked(rest: &RestClient, result: &EventSend) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match rest.event_send(result).await {
            Ok(response) => return response.result,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("event.send failed: {}", ErrorChain(&e)),
        }
    }
}

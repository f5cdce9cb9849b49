//! An app's activity handler for tests: it decodes the PHP-encoded call, answers 200, then
//! returns values with `bizproc.event.send` using the call's own token and endpoint; and the
//! credit check of the reference process, registered with it.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};

use crate::support::{World, post_json};

/// What the handler answers for `(code, properties)`: return values, or `None` to stay silent.
type Decide = dyn Fn(&str, &Value) -> Option<Value> + Send + Sync;

#[derive(Clone)]
struct HandlerState {
    calls: Arc<Mutex<Vec<Value>>>,
    decide: Arc<Decide>,
    http: reqwest::Client,
}

/// An app's handler: decodes the PHP-encoded call, answers 200, then returns values with
/// `bizproc.event.send` using the call's own token and endpoint.
pub struct Handler {
    url: String,
    calls: Arc<Mutex<Vec<Value>>>,
}

impl Handler {
    /// `http` sends `bizproc.event.send` (for a TLS portal: a client that trusts its authority).
    pub async fn start(
        http: reqwest::Client,
        decide: impl Fn(&str, &Value) -> Option<Value> + Send + Sync + 'static,
    ) -> Self {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let state = HandlerState { calls: calls.clone(), decide: Arc::new(decide), http };
        let app = Router::new().route("/activity", post(handle)).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/activity", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Handler { url, calls }
    }

    /// Registers activity `code` with this handler as its HANDLER.
    pub async fn register_activity(
        &self,
        w: &World,
        code: &str,
        use_subscription: &str,
        properties: Value,
        return_properties: Option<Value>,
    ) {
        let mut fields = json!({
            "CODE": code, "HANDLER": self.url, "USE_SUBSCRIPTION": use_subscription,
            "PROPERTIES": properties,
        });
        if let Some(return_properties) = return_properties {
            fields["RETURN_PROPERTIES"] = return_properties;
        }
        w.register("bizproc.activity.add", fields).await;
    }

    /// The decoded calls so far, as JSON.
    pub fn calls(&self) -> Vec<Value> {
        self.calls.lock().unwrap().clone()
    }
}

async fn handle(State(state): State<HandlerState>, body: Bytes) -> &'static str {
    let form = phpform::decode(&body, &phpform::Limits::default()).unwrap();
    let call = phpform::Value::Array(form).to_json();
    state.calls.lock().unwrap().push(call.clone());
    let code = call["code"].as_str().unwrap_or_default().to_owned();
    let properties = call.get("properties").cloned().unwrap_or(json!({}));
    if let Some(values) = (state.decide)(&code, &properties) {
        tokio::spawn(async move {
            let url =
                format!("{}bizproc.event.send", call["auth"]["client_endpoint"].as_str().unwrap());
            let body = json!({
                "auth": call["auth"]["access_token"],
                "EVENT_TOKEN": call["event_token"],
                "RETURN_VALUES": values,
            });
            let (status, answer) = post_json(&state.http, &url, &body).await;
            assert_eq!(status, 200, "{answer}");
        });
    }
    "OK"
}

/// The finance rule of the test: a limit of 5000 for every company.
pub fn credit_check(code: &str, properties: &Value) -> Option<Value> {
    if code != "check_credit" {
        return None;
    }
    let amount: f64 = properties["amount"].as_str()?.parse().ok()?;
    let required = amount > 5000.0;
    Some(json!({
        "available_limit": 5000,
        "approval_required": if required { "Y" } else { "N" },
        "reason": if required { "over the limit" } else { "" },
    }))
}

pub async fn register_credit_check(w: &World, handler: &Handler) {
    let properties = json!({
        "company_id": {"Name": "Company", "Type": "int"},
        "amount": {"Name": "Amount", "Type": "double"}
    });
    let return_properties = json!({
        "available_limit": {"Name": "Available", "Type": "double"},
        "approval_required": {"Name": "Approval required", "Type": "bool"},
        "reason": {"Name": "Reason", "Type": "string"}
    });
    handler.register_activity(w, "check_credit", "Y", properties, Some(return_properties)).await;
}

//! The control API: JSON over HTTP under `/control/...`, mirroring the Rust API of
//! [`crate::Emulator`] so tests in other languages and the CLI can drive the emulator
//! (documented route by route in the README's "Control API" section).

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::{
    AppSpec, DocumentSpec, Emulator, EmulatorError, Faults, PortalSpec, TaskCompletion,
    WorkflowSpec, WorkflowTemplate,
};

/// The control routes, relative to `/control`.
pub(crate) fn router(emu: Emulator) -> Router {
    Router::new()
        .route("/portals", post(create_portal).get(list_portals))
        .route("/portals/{domain}", get(get_portal))
        .route("/apps", post(register_app).get(list_apps))
        .route("/portals/{domain}/apps/{client_id}/install", post(install))
        .route("/portals/{domain}/apps/{client_id}/update", post(update))
        .route("/portals/{domain}/apps/{client_id}/uninstall", post(uninstall))
        .route("/portals/{domain}/apps/{client_id}/tokens", post(issue_token))
        .route("/portals/{domain}/apps/{client_id}/authorization-code", post(authorization_code))
        .route("/portals/{domain}/webhooks", post(create_webhook))
        .route("/portals/{domain}/faults", get(get_faults).put(set_faults))
        .route("/portals/{domain}/rate-limit", axum::routing::put(set_rate_limit))
        .route("/portals/{domain}/expire-tokens", post(expire_tokens))
        .route("/portals/{domain}/move", post(move_portal))
        .route("/portals/{domain}/workflows", post(start_workflow).get(list_workflows))
        .route("/portals/{domain}/workflows/{workflow_id}", get(get_workflow))
        .route("/portals/{domain}/workflows/{workflow_id}/finish", post(finish_workflow))
        .route("/portals/{domain}/documents", post(create_document).get(list_documents))
        .route(
            "/portals/{domain}/documents/{module}/{entity}/{id}",
            get(get_document).patch(update_document),
        )
        .route("/portals/{domain}/templates", post(create_template).get(list_templates))
        .route("/portals/{domain}/templates/{template_id}", get(get_template))
        .route("/portals/{domain}/templates/{template_id}/start", post(start_template))
        .route("/portals/{domain}/tasks", get(list_tasks))
        .route("/portals/{domain}/tasks/{task_id}", get(get_task))
        .route("/portals/{domain}/tasks/{task_id}/complete", post(complete_task))
        .route("/portals/{domain}/registrations", get(registrations))
        .route("/portals/{domain}/calls", get(calls))
        .with_state(emu)
}

/// A control error: `{"error": "<message>"}` with 404 for unknown things, 400 otherwise.
struct ControlError(StatusCode, String);

impl From<EmulatorError> for ControlError {
    fn from(e: EmulatorError) -> Self {
        let status = match e {
            EmulatorError::UnknownPortal(_)
            | EmulatorError::UnknownApp(_)
            | EmulatorError::UnknownCode { .. }
            | EmulatorError::UnknownWorkflow { .. }
            | EmulatorError::UnknownDocument { .. }
            | EmulatorError::UnknownTemplate { .. }
            | EmulatorError::UnknownTask { .. } => StatusCode::NOT_FOUND,
            EmulatorError::Bind { .. } | EmulatorError::HttpClient(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            _ => StatusCode::BAD_REQUEST,
        };
        ControlError(status, error_chain(&e))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

type Reply = Result<Response, ControlError>;

fn ok<T: serde::Serialize>(value: T) -> Reply {
    Ok(Json(value).into_response())
}

/// Parses an optional JSON body; an empty body is `T::default()`.
fn body<T: DeserializeOwned + Default>(bytes: &Bytes) -> Result<T, ControlError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ControlError(StatusCode::BAD_REQUEST, format!("bad JSON body: {e}")))
}

async fn create_portal(State(emu): State<Emulator>, bytes: Bytes) -> Reply {
    let spec: PortalSpec = body(&bytes)?;
    ok(emu.create_portal(spec).await?)
}

async fn list_portals(State(emu): State<Emulator>) -> Reply {
    ok(emu.portals())
}

async fn get_portal(State(emu): State<Emulator>, Path(domain): Path<String>) -> Reply {
    ok(emu.portal(&domain)?)
}

async fn register_app(State(emu): State<Emulator>, bytes: Bytes) -> Reply {
    let spec: AppSpec = body(&bytes)?;
    ok(emu.register_app(spec))
}

async fn list_apps(State(emu): State<Emulator>) -> Reply {
    ok(emu.apps())
}

async fn install(
    State(emu): State<Emulator>,
    Path((domain, client_id)): Path<(String, String)>,
) -> Reply {
    ok(emu.install_app(&domain, &client_id).await?)
}

async fn update(
    State(emu): State<Emulator>,
    Path((domain, client_id)): Path<(String, String)>,
) -> Reply {
    ok(emu.update_app(&domain, &client_id).await?)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct UninstallRequest {
    clean: bool,
}

async fn uninstall(
    State(emu): State<Emulator>,
    Path((domain, client_id)): Path<(String, String)>,
    bytes: Bytes,
) -> Reply {
    let req: UninstallRequest = body(&bytes)?;
    let status = if req.clean {
        emu.uninstall_app_clean(&domain, &client_id).await?
    } else {
        emu.uninstall_app(&domain, &client_id).await?;
        None
    };
    ok(json!({ "uninstalled": true, "event_status": status }))
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct UserRequest {
    user_id: u64,
}

impl Default for UserRequest {
    fn default() -> Self {
        Self { user_id: 1 }
    }
}

async fn issue_token(
    State(emu): State<Emulator>,
    Path((domain, client_id)): Path<(String, String)>,
    bytes: Bytes,
) -> Reply {
    let req: UserRequest = body(&bytes)?;
    ok(emu.issue_token(&domain, &client_id, req.user_id)?)
}

async fn authorization_code(
    State(emu): State<Emulator>,
    Path((domain, client_id)): Path<(String, String)>,
    bytes: Bytes,
) -> Reply {
    let req: UserRequest = body(&bytes)?;
    ok(json!({ "code": emu.authorization_code(&domain, &client_id, req.user_id)? }))
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct WebhookRequest {
    user_id: u64,
    scope: String,
}

impl Default for WebhookRequest {
    fn default() -> Self {
        Self { user_id: 1, scope: "bizproc".into() }
    }
}

async fn create_webhook(
    State(emu): State<Emulator>,
    Path(domain): Path<String>,
    bytes: Bytes,
) -> Reply {
    let req: WebhookRequest = body(&bytes)?;
    ok(json!({ "url": emu.create_webhook(&domain, req.user_id, &req.scope)? }))
}

async fn get_faults(State(emu): State<Emulator>, Path(domain): Path<String>) -> Reply {
    ok(emu.faults(&domain)?)
}

async fn set_faults(
    State(emu): State<Emulator>,
    Path(domain): Path<String>,
    bytes: Bytes,
) -> Reply {
    let faults: Faults = body(&bytes)?;
    emu.set_faults(&domain, faults.clone())?;
    ok(faults)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RateLimitRequest {
    rate: Option<(f64, u32)>,
}

async fn set_rate_limit(
    State(emu): State<Emulator>,
    Path(domain): Path<String>,
    bytes: Bytes,
) -> Reply {
    let req: RateLimitRequest = body(&bytes)?;
    emu.set_rate_limit(&domain, req.rate)?;
    ok(json!({ "rate": req.rate }))
}

async fn expire_tokens(State(emu): State<Emulator>, Path(domain): Path<String>) -> Reply {
    emu.expire_tokens(&domain)?;
    ok(json!({ "expired": true }))
}

async fn move_portal(State(emu): State<Emulator>, Path(domain): Path<String>) -> Reply {
    let new_domain = emu.move_portal(&domain).await?;
    ok(emu.portal(&new_domain)?)
}

async fn start_workflow(
    State(emu): State<Emulator>,
    Path(domain): Path<String>,
    bytes: Bytes,
) -> Reply {
    let mut spec: WorkflowSpec = body(&bytes)?;
    spec.domain = domain;
    ok(emu.start_workflow(spec).await?)
}

async fn list_workflows(State(emu): State<Emulator>, Path(domain): Path<String>) -> Reply {
    ok(emu.workflows(&domain)?)
}

async fn get_workflow(
    State(emu): State<Emulator>,
    Path((domain, workflow_id)): Path<(String, String)>,
) -> Reply {
    ok(emu.workflow(&domain, &workflow_id)?)
}

async fn finish_workflow(
    State(emu): State<Emulator>,
    Path((domain, workflow_id)): Path<(String, String)>,
) -> Reply {
    emu.finish_workflow(&domain, &workflow_id)?;
    ok(emu.workflow(&domain, &workflow_id)?)
}

async fn registrations(State(emu): State<Emulator>, Path(domain): Path<String>) -> Reply {
    ok(emu.registrations(&domain)?)
}

async fn calls(State(emu): State<Emulator>, Path(domain): Path<String>) -> Reply {
    emu.portal(&domain)?;
    ok(emu.rest_calls(&domain))
}

async fn create_document(
    State(emu): State<Emulator>,
    Path(domain): Path<String>,
    bytes: Bytes,
) -> Reply {
    let spec: DocumentSpec = body(&bytes)?;
    ok(emu.create_document(&domain, spec)?)
}

async fn list_documents(State(emu): State<Emulator>, Path(domain): Path<String>) -> Reply {
    ok(emu.documents(&domain)?)
}

async fn get_document(
    State(emu): State<Emulator>,
    Path((domain, module, entity, id)): Path<(String, String, String, String)>,
) -> Reply {
    ok(emu.document(&domain, &[module, entity, id])?)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FieldsRequest {
    fields: serde_json::Map<String, serde_json::Value>,
}

async fn update_document(
    State(emu): State<Emulator>,
    Path((domain, module, entity, id)): Path<(String, String, String, String)>,
    bytes: Bytes,
) -> Reply {
    let req: FieldsRequest = body(&bytes)?;
    ok(emu.update_document(&domain, &[module, entity, id], req.fields)?)
}

async fn create_template(
    State(emu): State<Emulator>,
    Path(domain): Path<String>,
    bytes: Bytes,
) -> Reply {
    let template: WorkflowTemplate = body(&bytes)?;
    ok(emu.create_template(&domain, template)?)
}

async fn list_templates(State(emu): State<Emulator>, Path(domain): Path<String>) -> Reply {
    ok(emu.templates(&domain)?)
}

async fn get_template(
    State(emu): State<Emulator>,
    Path((domain, template_id)): Path<(String, u64)>,
) -> Reply {
    ok(emu.template(&domain, template_id)?)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct StartRequest {
    document_id: Vec<String>,
}

async fn start_template(
    State(emu): State<Emulator>,
    Path((domain, template_id)): Path<(String, u64)>,
    bytes: Bytes,
) -> Reply {
    let req: StartRequest = body(&bytes)?;
    let workflow_id = emu.start_template(&domain, template_id, &req.document_id).await?;
    ok(json!({ "workflow_id": workflow_id }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct TaskQuery {
    /// `open` for the tasks still waiting; `all` or nothing for every task.
    status: Option<String>,
}

async fn list_tasks(
    State(emu): State<Emulator>,
    Path(domain): Path<String>,
    Query(query): Query<TaskQuery>,
) -> Reply {
    match query.status.as_deref() {
        None | Some("") | Some("all") => ok(emu.tasks(&domain)?),
        Some("open") => ok(emu.open_tasks(&domain)?),
        Some(other) => Err(ControlError(
            StatusCode::BAD_REQUEST,
            format!("status must be `open` or `all`, not `{other}`"),
        )),
    }
}

async fn get_task(
    State(emu): State<Emulator>,
    Path((domain, task_id)): Path<(String, u64)>,
) -> Reply {
    ok(emu.task(&domain, task_id)?)
}

async fn complete_task(
    State(emu): State<Emulator>,
    Path((domain, task_id)): Path<(String, u64)>,
    bytes: Bytes,
) -> Reply {
    let completion: TaskCompletion = serde_json::from_slice(&bytes)
        .map_err(|e| ControlError(StatusCode::BAD_REQUEST, format!("bad JSON body: {e}")))?;
    ok(emu.complete_task(&domain, task_id, completion)?)
}

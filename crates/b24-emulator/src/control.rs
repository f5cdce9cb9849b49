//! The control API: JSON over HTTP under `/control/...`, mirroring the Rust API of
//! [`crate::Emulator`] so tests in other languages and the CLI can drive the emulator
//! (documented route by route in docs/emulator.md, "Control API").

use std::future::{Future, Ready, ready};
use std::pin::Pin;

use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{MethodRouter, get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::designer::{self, PropertiesRequest};
use crate::error::error_chain;
use crate::{AppSpec, Emulator, EmulatorError, Faults, PortalSpec, TaskCompletion, WorkflowSpec};

/// The control routes, relative to `/control`. Most routes are one [`Emulator`] method applied
/// to the path's parameters (and the JSON body), written in place with [`call`],
/// [`call_with_body`], [`call_async`] or, for a portal's documents and templates, [`collection`].
pub(crate) fn router(emu: Emulator) -> Router {
    Router::new()
        .route("/portals", post(create_portal).get(list_portals))
        .route("/portals/{domain}", get(call(|emu, domain: String| emu.portal(&domain))))
        .route("/apps", post(register_app).get(list_apps))
        .route(
            "/portals/{domain}/apps/{client_id}/install",
            post(call_async(|emu, (domain, client_id): (String, String)| async move {
                emu.install_app(&domain, &client_id).await
            })),
        )
        .route(
            "/portals/{domain}/apps/{client_id}/update",
            post(call_async(|emu, (domain, client_id): (String, String)| async move {
                emu.update_app(&domain, &client_id).await
            })),
        )
        .route("/portals/{domain}/apps/{client_id}/uninstall", post(uninstall))
        .route(
            "/portals/{domain}/apps/{client_id}/tokens",
            post(call_with_body(|emu, (domain, client_id): (String, String), req: UserRequest| {
                emu.issue_token(&domain, &client_id, req.user_id)
            })),
        )
        .route(
            "/portals/{domain}/apps/{client_id}/authorization-code",
            post(call_with_body(|emu, (domain, client_id): (String, String), req: UserRequest| {
                Ok(json!({ "code": emu.authorization_code(&domain, &client_id, req.user_id)? }))
            })),
        )
        .route(
            "/portals/{domain}/webhooks",
            post(call_with_body(|emu, domain: String, req: WebhookRequest| {
                Ok(json!({ "url": emu.create_webhook(&domain, req.user_id, &req.scope)? }))
            })),
        )
        .route(
            "/portals/{domain}/faults",
            get(call(|emu, domain: String| emu.faults(&domain))).put(call_with_body(
                |emu, domain: String, faults: Faults| {
                    emu.set_faults(&domain, faults.clone())?;
                    Ok(faults)
                },
            )),
        )
        .route(
            "/portals/{domain}/rate-limit",
            put(call_with_body(|emu, domain: String, req: RateLimitRequest| {
                emu.set_rate_limit(&domain, req.rate)?;
                Ok(json!({ "rate": req.rate }))
            })),
        )
        .route(
            "/portals/{domain}/expire-tokens",
            post(call(|emu, domain: String| {
                emu.expire_tokens(&domain)?;
                Ok(json!({ "expired": true }))
            })),
        )
        .route(
            "/portals/{domain}/move",
            post(call_async(|emu, domain: String| async move {
                let new_domain = emu.move_portal(&domain).await?;
                emu.portal(&new_domain)
            })),
        )
        .route(
            "/portals/{domain}/workflows",
            post(start_workflow).get(call(|emu, domain: String| emu.workflows(&domain))),
        )
        .route(
            "/portals/{domain}/workflows/{workflow_id}",
            get(call(|emu, (domain, workflow_id): (String, String)| {
                emu.workflow(&domain, &workflow_id)
            })),
        )
        .route(
            "/portals/{domain}/workflows/{workflow_id}/finish",
            post(call(|emu, (domain, workflow_id): (String, String)| {
                emu.finish_workflow(&domain, &workflow_id)?;
                emu.workflow(&domain, &workflow_id)
            })),
        )
        .route(
            "/portals/{domain}/documents",
            collection(Emulator::create_document, Emulator::documents),
        )
        .route(
            "/portals/{domain}/documents/{module}/{entity}/{id}",
            get(call(|emu, (domain, module, entity, id): DocumentPath| {
                emu.document(&domain, &[module, entity, id])
            }))
            .patch(call_with_body(
                |emu, (domain, module, entity, id): DocumentPath, req: FieldsRequest| {
                    emu.update_document(&domain, &[module, entity, id], req.fields)
                },
            )),
        )
        .route(
            "/portals/{domain}/templates",
            collection(Emulator::create_template, Emulator::templates),
        )
        .route(
            "/portals/{domain}/templates/{template_id}",
            get(call(|emu, (domain, template_id): (String, u64)| {
                emu.template(&domain, template_id)
            })),
        )
        .route("/portals/{domain}/templates/{template_id}/start", post(start_template))
        .route(
            "/portals/{domain}/templates/{template_id}/designer/{step}",
            get(|State(emu): State<Emulator>, Path((domain, template_id, step)): StepPath| {
                ready(emu.designer_url(&domain, template_id, &step).map_or_else(
                    |e| ControlError::from(e).into_response(),
                    |url| Redirect::to(&url).into_response(),
                ))
            }),
        )
        .route(
            "/portals/{domain}/templates/{template_id}/steps/{step}/properties",
            put(
                |State(emu): State<Emulator>,
                 Path((domain, template_id, step)): StepPath,
                 Body(req): Body<PropertiesRequest>| {
                    ready(designer::save_answer(emu.set_step_properties(
                        &domain,
                        template_id,
                        &step,
                        &req.properties,
                    )))
                },
            ),
        )
        .route("/portals/{domain}/tasks", get(list_tasks))
        .route(
            "/portals/{domain}/tasks/{task_id}",
            get(call(|emu, (domain, task_id): (String, u64)| emu.task(&domain, task_id))),
        )
        .route("/portals/{domain}/tasks/{task_id}/complete", post(complete_task))
        .route(
            "/portals/{domain}/registrations",
            get(call(|emu, domain: String| emu.registrations(&domain))),
        )
        .route(
            "/portals/{domain}/calls",
            get(call(|emu, domain: String| {
                emu.portal(&domain)?;
                Ok(emu.rest_calls(&domain))
            })),
        )
        .with_state(emu)
}

/// `{domain}/{module}/{entity}/{id}`: a document's portal and `[module, entity, id]`.
type DocumentPath = (String, String, String, String);

/// `{domain}/…/{template_id}/…/{step}`: an activity step of a template.
type StepPath = Path<(String, u64, String)>;

/// A control error: `{"error": "<message>"}` with the error's status (404 for unknown things).
pub(crate) struct ControlError(StatusCode, String);

impl From<EmulatorError> for ControlError {
    fn from(e: EmulatorError) -> Self {
        let status =
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ControlError(status, error_chain(&e))
    }
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

type Reply = Result<Response, ControlError>;

fn ok<T: Serialize>(value: T) -> Reply {
    Ok(Json(value).into_response())
}

/// Parses a JSON body.
fn json_body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ControlError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ControlError(StatusCode::BAD_REQUEST, format!("bad JSON body: {e}")))
}

/// An optional JSON body; an empty body is `T::default()`.
struct Body<T>(T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let bytes = Bytes::from_request(req, state).await.map_err(IntoResponse::into_response)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Body(T::default()));
        }
        json_body(&bytes).map(Body).map_err(IntoResponse::into_response)
    }
}

/// A handler answering with what `call` makes of the path's parameters.
fn call<P, R>(
    call: impl Fn(&Emulator, P) -> Result<R, EmulatorError> + Clone + Send + Sync + 'static,
) -> impl Fn(State<Emulator>, Path<P>) -> Ready<Reply> + Clone + Send + Sync + 'static
where
    P: DeserializeOwned + Send,
    R: Serialize,
{
    move |State(emu), Path(params)| {
        ready(call(&emu, params).map_err(ControlError::from).and_then(ok))
    }
}

/// A handler answering with what `call` makes of the path's parameters and the [`Body`]; a body
/// that does not parse is refused before `call` runs.
fn call_with_body<P, B, R>(
    call: impl Fn(&Emulator, P, B) -> Result<R, EmulatorError> + Clone + Send + Sync + 'static,
) -> impl Fn(State<Emulator>, Path<P>, Body<B>) -> Ready<Reply> + Clone + Send + Sync + 'static
where
    P: DeserializeOwned + Send,
    B: DeserializeOwned + Default + Send,
    R: Serialize,
{
    move |State(emu), Path(params), Body(req)| {
        ready(call(&emu, params, req).map_err(ControlError::from).and_then(ok))
    }
}

/// A portal's collection: `POST` adds what the body describes with `create`, `GET` answers
/// with `list`.
fn collection<B, C, L>(
    create: fn(&Emulator, &str, B) -> Result<C, EmulatorError>,
    list: fn(&Emulator, &str) -> Result<L, EmulatorError>,
) -> MethodRouter<Emulator>
where
    B: DeserializeOwned + Default + Send + 'static,
    C: Serialize + 'static,
    L: Serialize + 'static,
{
    post(call_with_body(move |emu, domain: String, item| create(emu, &domain, item)))
        .get(call(move |emu, domain: String| list(emu, &domain)))
}

/// [`call`] for an async `call`, which gets its own handle on the emulator.
fn call_async<P, F, R>(
    call: impl Fn(Emulator, P) -> F + Clone + Send + Sync + 'static,
) -> impl Fn(State<Emulator>, Path<P>) -> Pin<Box<dyn Future<Output = Reply> + Send>>
+ Clone
+ Send
+ Sync
+ 'static
where
    P: DeserializeOwned + Send,
    F: Future<Output = Result<R, EmulatorError>> + Send + 'static,
    R: Serialize,
{
    move |State(emu), Path(params)| {
        let answer = call(emu, params);
        Box::pin(async move { ok(answer.await?) })
    }
}

async fn create_portal(State(emu): State<Emulator>, Body(spec): Body<PortalSpec>) -> Reply {
    ok(emu.create_portal(spec).await?)
}

async fn list_portals(State(emu): State<Emulator>) -> Reply {
    ok(emu.portals())
}

async fn register_app(State(emu): State<Emulator>, Body(spec): Body<AppSpec>) -> Reply {
    ok(emu.register_app(spec))
}

async fn list_apps(State(emu): State<Emulator>) -> Reply {
    ok(emu.apps())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct UninstallRequest {
    clean: bool,
}

async fn uninstall(
    State(emu): State<Emulator>,
    Path((domain, client_id)): Path<(String, String)>,
    Body(req): Body<UninstallRequest>,
) -> Reply {
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

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RateLimitRequest {
    rate: Option<(f64, u32)>,
}

async fn start_workflow(
    State(emu): State<Emulator>,
    Path(domain): Path<String>,
    Body(mut spec): Body<WorkflowSpec>,
) -> Reply {
    spec.domain = domain;
    ok(emu.start_workflow(spec).await?)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FieldsRequest {
    fields: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct StartRequest {
    document_id: Vec<String>,
    /// Values of the template's parameters, by ID.
    parameters: serde_json::Map<String, serde_json::Value>,
}

async fn start_template(
    State(emu): State<Emulator>,
    Path((domain, template_id)): Path<(String, u64)>,
    Body(req): Body<StartRequest>,
) -> Reply {
    let workflow_id =
        emu.start_template_with(&domain, template_id, &req.document_id, &req.parameters).await?;
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

/// Unlike the other bodies, a completion has no default: an empty body is refused.
async fn complete_task(
    State(emu): State<Emulator>,
    Path((domain, task_id)): Path<(String, u64)>,
    bytes: Bytes,
) -> Reply {
    let completion: TaskCompletion = json_body(&bytes)?;
    ok(emu.complete_task(&domain, task_id, completion)?)
}

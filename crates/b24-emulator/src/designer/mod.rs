//! The BP designer's settings dialog of a REST activity step (protocol §1.8), served on the
//! portal's own listener: the frame protocol checks origins, so the dialog must be on the
//! portal's origin. For an action registered with `USE_PLACEMENT=Y` the dialog opens the app's
//! `PLACEMENT_HANDLER` in a frame with the portal's real POST and `PLACEMENT_OPTIONS`, and
//! `designer.js` plays the parent side of the frame protocol; otherwise it shows a plain form of
//! the registered properties. Save stores the values in the template as
//! `getPropertiesDialogValues` does, so the next workflow run sends them.
//!
//! Routes, under the portal's origin: `GET /designer/{template_id}/{step}` (the page),
//! `POST /designer/{template_id}/{step}` (Save: `{"properties": {…}}`),
//! `POST /designer/{template_id}/{step}/auth` (a fresh token pair for `refreshAuth`) and the
//! page's script and style under `/designer/assets/`.

mod input;
mod options;
mod page;

use std::future::ready;
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};

pub use input::PropertyError;

use crate::control::ControlError;
use crate::dispatch;
use crate::error::EmulatorError;
use crate::expr;
use crate::oauth;
use crate::param::Array;
use crate::portal::PortalState;
use crate::registry;
use crate::rest;
use crate::state::{Shared, State};
use crate::template::{self, ActivityStep, Known, WorkflowTemplate};

/// The dialog's script: the parent side of the frame protocol, and Save.
const SCRIPT: &str = include_str!("designer.js");
const STYLE: &str = include_str!("designer.css");

/// A portal listener: the domain it was bound as.
#[derive(Clone)]
struct Site {
    shared: Arc<Shared>,
    domain: String,
}

/// The dialog's routes on the listener of `domain`.
pub(crate) fn router(shared: Arc<Shared>, domain: String) -> Router {
    Router::new()
        .route("/designer/assets/designer.js", get(|| ready(asset("text/javascript", SCRIPT))))
        .route("/designer/assets/designer.css", get(|| ready(asset("text/css", STYLE))))
        .route("/designer/{template_id}/{step}", get(show).post(save_route))
        .route("/designer/{template_id}/{step}/auth", post(refresh_auth))
        .with_state(Site { shared, domain })
}

/// What Save takes: property values by property ID.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct PropertiesRequest {
    pub(crate) properties: Map<String, Value>,
}

/// The dialog's address: `{scheme}://{domain}/designer/{template_id}/{step}`, once the template
/// has that activity step.
pub(crate) fn page_url(
    p: &PortalState,
    template_id: u64,
    step: &str,
) -> Result<String, EmulatorError> {
    find(p, template_id, step)?;
    Ok(format!("{}://{}/designer/{template_id}/{step}", p.scheme(), p.domain))
}

/// `getPropertiesDialogValues`: parses `given` by the registered properties' types and, when
/// every value passes, replaces the step's properties with them (the template is validated and
/// compiled again; running workflows keep the program they started with). Returns what was
/// stored.
pub(crate) fn save(
    p: &mut PortalState,
    template_id: u64,
    step: &str,
    given: &Map<String, Value>,
) -> Result<Map<String, Value>, EmulatorError> {
    let (stored, current) = find(p, template_id, step)?;
    let (registration, _) = dispatch::resolve(p, &current.code, current.client_id.as_deref())?;
    let known = Known::new(stored);
    let values = input::parse(&registration.properties, given, &known, &p.spec.language_id)
        .map_err(EmulatorError::InvalidProperties)?;
    let mut changed = stored.clone();
    if let Some(current) = changed.activity_step_mut(step) {
        current.properties = values.clone();
    }
    let (changed, program) = template::prepare(changed)?;
    if let Some(stored) = p.templates.get_mut(&template_id) {
        stored.template = changed;
        stored.program = Arc::new(program);
        stored.modified = SystemTime::now();
    }
    tracing::info!(template_id, step, "settings saved");
    Ok(values)
}

/// Save's answer: 200 `{"properties": {…}}` with what was stored, 400 with the dialog's errors
/// `[{code, parameter, message}]`, or the control API's `{"error"}` for anything else.
pub(crate) fn save_answer(result: Result<Map<String, Value>, EmulatorError>) -> Response {
    match result {
        Ok(properties) => Json(json!({ "properties": properties })).into_response(),
        Err(EmulatorError::InvalidProperties(errors)) => {
            (StatusCode::BAD_REQUEST, Json(errors)).into_response()
        }
        Err(e) => ControlError::from(e).into_response(),
    }
}

/// The template and its activity step `step`.
fn find<'p>(
    p: &'p PortalState,
    template_id: u64,
    step: &str,
) -> Result<(&'p WorkflowTemplate, &'p ActivityStep), EmulatorError> {
    let domain = || p.domain.clone();
    let stored = p
        .templates
        .get(&template_id)
        .ok_or_else(|| EmulatorError::UnknownTemplate { domain: domain(), template_id })?;
    let found = stored.template.activity_steps().into_iter().find(|a| a.name == step);
    let step = found.ok_or_else(|| EmulatorError::UnknownStep {
        domain: domain(),
        template_id,
        step: step.to_owned(),
    })?;
    Ok((&stored.template, step))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = body.into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp
}

fn html(status: u16, body: String, csp: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, body).into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    // The page carries an access token.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if let Ok(csp) = HeaderValue::from_str(csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    resp
}

/// A page saying what is wrong, with the error's status.
fn error_page(e: &EmulatorError) -> Response {
    html(e.http_status(), page::render_error(&e.to_string()), &page::content_security_policy(None))
}

async fn show(
    AxState(site): AxState<Site>,
    Path((template_id, step)): Path<(u64, String)>,
    uri: Uri,
) -> Response {
    let mut state = site.shared.lock();
    let portal = match state.portal_index(&site.domain) {
        Ok(portal) => portal,
        Err(e) => return error_page(&e),
    };
    if let Some(redirect) = rest::moved(&state.portals[portal], &site.domain, &uri) {
        return redirect;
    }
    dialog(&site.shared, &mut state, portal, template_id, &step).unwrap_or_else(|e| error_page(&e))
}

/// The dialog of one step: the app's form in a frame when the action has a placement handler,
/// else a plain form.
fn dialog(
    shared: &Shared,
    state: &mut State,
    portal: usize,
    template_id: u64,
    step: &str,
) -> Result<Response, EmulatorError> {
    let p = &state.portals[portal];
    let (template, current) = find(p, template_id, step)?;
    let (template, current) = (template.clone(), current.clone());
    let (registration, _) = dispatch::resolve(p, &current.code, current.client_id.as_deref())?;
    let admin = p.first_admin();
    let status = state.app(&registration.client_id)?.status.clone();
    let handler = registration.placement_handler.clone().filter(|_| registration.use_placement);
    // The form acts as the administrator who opened the dialog (no session is modelled).
    let tokens = match &handler {
        Some(_) => Some(oauth::issue(shared, state, portal, &registration.client_id, admin)?),
        None => None,
    };
    let p = &state.portals[portal];
    let cx = options::Context {
        portal: p,
        template: &template,
        step: &current,
        registration: &registration,
        status: &status,
    };
    let placement = handler.as_deref().zip(tokens.as_ref()).and_then(|(h, t)| cx.placement(h, t));
    let fields = match placement {
        Some(_) => Vec::new(),
        None => plain_fields(&registration.properties, &cx.current_values(), &p.spec.language_id),
    };
    let base = format!("/designer/{template_id}/{step}");
    let config = json!({
        "save": base,
        "auth": format!("{base}/auth"),
        "properties": registration.properties.keys().collect::<Vec<_>>(),
        "placement": placement.as_ref().map(|pl| json!({
            "origin": pl.origin, "sid": pl.sid, "init": pl.init,
        })),
    });
    let language = &p.spec.language_id;
    let title = registry::localized(&registration.name, language);
    let template_label = match template.name.as_str() {
        "" => format!("template {template_id}"),
        name => format!("template {template_id} “{name}”"),
    };
    let view = page::View {
        title: &title,
        step,
        code: &registration.code,
        template: &template_label,
        placement: placement.as_ref(),
        fields: &fields,
        config: &config,
    };
    let csp = page::content_security_policy(placement.as_ref());
    Ok(html(200, page::render(&view), &csp))
}

/// The plain form's fields: every registered property with its current values as text.
fn plain_fields(
    properties: &Array,
    current: &Map<String, Value>,
    language: &str,
) -> Vec<page::Field> {
    let empty = Array::new();
    properties
        .iter()
        .map(|(id, definition)| {
            let definition = definition.as_array().unwrap_or(&empty);
            let text = |key: &str| {
                definition.get(key).map(|v| registry::localized(v, language)).unwrap_or_default()
            };
            let values = match current.get(id) {
                Some(Value::Array(items)) => items.iter().map(expr::as_text).collect(),
                Some(value) if !expr::is_empty(value) => vec![expr::as_text(value)],
                _ => Vec::new(),
            };
            page::Field {
                control: input::control_name(id),
                label: text("NAME"),
                description: text("DESCRIPTION"),
                property_type: registry::property_type(definition),
                required: registry::property_flag(definition, "REQUIRED"),
                multiple: registry::property_flag(definition, "MULTIPLE"),
                values,
            }
        })
        .collect()
}

async fn save_route(
    AxState(site): AxState<Site>,
    Path((template_id, step)): Path<(u64, String)>,
    body: Bytes,
) -> Response {
    let req: PropertiesRequest = match serde_json::from_slice(&body) {
        Ok(req) => req,
        Err(e) => {
            let error = EmulatorError::InvalidSpec(format!("bad JSON body: {e}"));
            return ControlError::from(error).into_response();
        }
    };
    let mut state = site.shared.lock();
    let result =
        state.portal_mut(&site.domain).and_then(|p| save(p, template_id, &step, &req.properties));
    save_answer(result)
}

/// `refreshAuth`: a fresh token pair of the administrator, `{AUTH_ID, AUTH_EXPIRES, REFRESH_ID}`.
async fn refresh_auth(
    AxState(site): AxState<Site>,
    Path((template_id, step)): Path<(u64, String)>,
) -> Response {
    let mut state = site.shared.lock();
    let issued = (|| {
        let portal = state.portal_index(&site.domain)?;
        let p = &state.portals[portal];
        let (_, current) = find(p, template_id, &step)?;
        let (registration, _) = dispatch::resolve(p, &current.code, current.client_id.as_deref())?;
        let admin = p.first_admin();
        oauth::issue(&site.shared, &mut state, portal, &registration.client_id, admin)
    })();
    match issued {
        Ok(tokens) => Json(options::auth_fields(&tokens)).into_response(),
        Err(e) => ControlError::from(e).into_response(),
    }
}

//! The method table and one method call: authenticate, find the method, check its scope and the
//! operating limit, run it, charge its time.

use std::time::{Duration, Instant, SystemTime};

use crate::batch;
use crate::limits::OperatingStatus;
use crate::param::{Array, Param, upper_keys};
use crate::portal::RecordedCall;
use crate::registry;
use crate::rest::auth::{self, Caller, Credential, scope_list};
use crate::rest::envelope::{RestError, Success};
use crate::state::State;
use crate::workflow;

/// A method the portal serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Add { robot: bool },
    Update { robot: bool },
    Delete { robot: bool },
    List { robot: bool },
    EventSend,
    ActivityLog,
    AppInfo,
    Profile,
    Batch,
}

impl Method {
    fn lookup(name: &str) -> Option<Method> {
        Some(match name {
            "bizproc.activity.add" => Method::Add { robot: false },
            "bizproc.activity.update" => Method::Update { robot: false },
            "bizproc.activity.delete" => Method::Delete { robot: false },
            "bizproc.activity.list" => Method::List { robot: false },
            "bizproc.robot.add" => Method::Add { robot: true },
            "bizproc.robot.update" => Method::Update { robot: true },
            "bizproc.robot.delete" => Method::Delete { robot: true },
            "bizproc.robot.list" => Method::List { robot: true },
            "bizproc.event.send" => Method::EventSend,
            "bizproc.activity.log" => Method::ActivityLog,
            "app.info" => Method::AppInfo,
            "profile" => Method::Profile,
            "batch" => Method::Batch,
            _ => return None,
        })
    }

    fn scope(self) -> Option<&'static str> {
        match self {
            Method::AppInfo | Method::Profile | Method::Batch => None,
            _ => Some("bizproc"),
        }
    }
}

/// What one call produced, with what the envelope and the call log need.
pub(crate) struct Outcome {
    pub(crate) result: Result<Success, RestError>,
    pub(crate) caller: String,
    pub(crate) operating: Option<OperatingStatus>,
    pub(crate) processing: Duration,
    /// What the call log records as its `event_token`.
    pub(crate) event_token: Option<String>,
}

/// Runs `method` on `portal` for a credential. `in_batch` forbids nesting `batch` (§5.5).
pub(crate) fn call(
    state: &mut State,
    portal: usize,
    method: &str,
    params: Array,
    credential: &Credential,
    in_batch: bool,
) -> Outcome {
    let started = Instant::now();
    let mut outcome = Outcome {
        result: Err(RestError::method_not_found()),
        caller: "none".into(),
        operating: None,
        processing: Duration::ZERO,
        event_token: event_token(method, &params),
    };
    let caller = match auth::authenticate(state, portal, credential) {
        Ok(c) => c,
        Err(e) => {
            outcome.result = Err(e);
            return outcome;
        }
    };
    outcome.caller = caller.label.clone();
    let Some(m) = Method::lookup(method) else {
        return outcome;
    };
    if in_batch && m == Method::Batch {
        outcome.result = Err(RestError::bad_request(
            "ERROR_BATCH_METHOD_NOT_ALLOWED",
            "Method is not allowed for batch usage",
        ));
        return outcome;
    }
    if let Some(scope) = m.scope()
        && !caller.scopes.iter().any(|s| s == scope)
    {
        outcome.result = Err(auth::insufficient_scope(&caller));
        return outcome;
    }
    // The batch itself is not counted in `operating`; its sub-calls are (§5.5).
    let limit = if m == Method::Batch {
        None
    } else {
        state.portals.get(portal).and_then(|p| p.operating_limit())
    };
    if let Some(limit) = limit
        && let Some(p) = state.portals.get_mut(portal)
    {
        let status = p.operating.status(&caller.label, method);
        if status.operating > limit.as_secs_f64() {
            let mut e = RestError::new(
                429,
                "OPERATION_TIME_LIMIT",
                "Method is blocked due to operation time limit.",
            );
            e.extra.push((
                "operating_reset_at".into(),
                Param::Num(crate::clock::unix_secs(status.reset_at).into()),
            ));
            outcome.result = Err(e);
            return outcome;
        }
    }
    outcome.result = run(state, portal, m, &caller, params, credential);
    outcome.processing = started.elapsed();
    if let Some(p) = state.portals.get_mut(portal)
        && let Some(_limit) = limit
    {
        let cost = p.operating_cost().unwrap_or(outcome.processing);
        p.operating.charge(&caller.label, method, cost);
        outcome.operating = Some(p.operating.status(&caller.label, method));
    }
    outcome
}

fn run(
    state: &mut State,
    portal: usize,
    m: Method,
    caller: &Caller,
    params: Array,
    credential: &Credential,
) -> Result<Success, RestError> {
    if m == Method::Batch {
        return batch::run(state, portal, &params, credential);
    }
    if m == Method::AppInfo {
        return app_info(state, portal, caller).map(Success::from);
    }
    let Some(p) = state.portals.get_mut(portal) else {
        return Err(RestError::method_not_found());
    };
    let result = match m {
        Method::Add { robot } => registry::add(p, caller, &params, robot),
        Method::Update { robot } => registry::update(p, caller, &params, robot),
        Method::Delete { robot } => registry::delete(p, caller, &params, robot),
        Method::List { robot } => registry::list(p, caller, robot),
        Method::EventSend => workflow::external_event(p, &params, false),
        Method::ActivityLog => workflow::external_event(p, &params, true),
        Method::Profile => Ok(Param::map([
            ("ID", Param::str(caller.user_id.to_string())),
            ("ADMIN", Param::Bool(p.is_admin(caller.user_id))),
            ("NAME", Param::str("Emulated")),
            ("LAST_NAME", Param::str(format!("User {}", caller.user_id))),
            ("PERSONAL_GENDER", Param::str("")),
            ("TIME_ZONE", Param::str("")),
        ])),
        Method::AppInfo | Method::Batch => Err(RestError::method_not_found()),
    };
    result.map(Success::from)
}

/// `app.info` (§4.4): the calling app's installation, or the webhook's scopes.
pub(crate) fn app_info(state: &State, portal: usize, caller: &Caller) -> Result<Param, RestError> {
    let p = state.portals.get(portal).ok_or_else(RestError::method_not_found)?;
    let license = Param::str(&p.spec.license);
    let Some(client_id) = &caller.client_id else {
        return Ok(Param::map([("SCOPE", scope_list(&caller.scopes)), ("LICENSE", license)]));
    };
    let app = state
        .apps
        .get(client_id)
        .ok_or_else(|| RestError::new(401, "APPLICATION_NOT_FOUND", "Application not found"))?;
    let install = p.installs.get(client_id);
    Ok(Param::map([
        ("ID", Param::str(app.id.to_string())),
        ("CODE", Param::str(&app.client_id)),
        ("VERSION", Param::Num(install.map_or(app.version, |i| i.version).into())),
        ("STATUS", Param::str(&app.status)),
        ("INSTALLED", Param::Bool(install.is_some_and(|i| i.installed))),
        ("PAYMENT_EXPIRED", Param::str("N")),
        ("DAYS", Param::Null),
        ("LANGUAGE_ID", Param::str(&p.spec.language_id)),
        ("LICENSE", license),
        ("LICENSE_TYPE", Param::str("project")),
        ("LICENSE_FAMILY", Param::str("project")),
        ("SCOPE", scope_list(&caller.scopes)),
    ]))
}

/// The `EVENT_TOKEN` an event method reads (keys compared as the method compares them).
fn event_token(method: &str, params: &Array) -> Option<String> {
    matches!(Method::lookup(method), Some(Method::EventSend | Method::ActivityLog))
        .then(|| upper_keys(params).get("EVENT_TOKEN").and_then(Param::php_string))
        .flatten()
}

/// Appends a call that ran to the portal's log, with its real outcome.
pub(crate) fn record_outcome(
    state: &mut State,
    portal: usize,
    method: &str,
    outcome: &Outcome,
    in_batch: bool,
) {
    let result = outcome.result.as_ref().map(|_| 200);
    let event_token = outcome.event_token.clone();
    append(state, portal, method, &outcome.caller, result, in_batch, event_token);
}

/// Appends a request to the portal's log: its outcome, and the event token it carried (for
/// `bizproc.event.send` and `bizproc.activity.log`; `None` for a request refused before any
/// method ran).
pub(crate) fn append(
    state: &mut State,
    portal: usize,
    method: &str,
    caller: &str,
    result: Result<u16, &RestError>,
    in_batch: bool,
    event_token: Option<String>,
) {
    let Some(p) = state.portals.get_mut(portal) else {
        return;
    };
    let (status, error) = match result {
        Ok(status) => (status, None),
        Err(e) => (e.status, Some(e.code.clone())),
    };
    p.calls.push(RecordedCall {
        method: method.to_owned(),
        status,
        error,
        at: SystemTime::now(),
        in_batch,
        caller: caller.to_owned(),
        event_token,
    });
}

//! The method table and one method call: find the method (an unknown one is 404 before any
//! credential is looked at), authenticate, check its scope and the operating limit, run it,
//! charge its time. Also the methods about the portal itself: `user.current`, `profile`,
//! `server.time`, `scope`, `methods`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::batch;
use crate::clock;
use crate::limits::OperatingStatus;
use crate::param::{Array, Param, get_ci, upper_keys};
use crate::portal::{PortalState, RecordedCall};
use crate::registry;
use crate::rest::auth::{self, Caller, Credential, scope_list};
use crate::rest::crm::{self, Kind};
use crate::rest::envelope::{RestError, Success};
use crate::rest::{bindings, bizproc};
use crate::state::{Shared, State};
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
    UserCurrent,
    ServerTime,
    Scope,
    Methods,
    EventBind,
    EventGet,
    EventUnbind,
    PlacementBind,
    PlacementList,
    PlacementGet,
    PlacementUnbind,
    WorkflowStart,
    WorkflowInstances,
    WorkflowTerminate,
    WorkflowKill,
    TemplateList,
    TemplateAdd,
    TemplateUpdate,
    TemplateDelete,
    TaskList,
    TaskComplete,
    CrmGet(Kind),
    CrmList(Kind),
    CrmUpdate(Kind),
}

/// Every method by its lower-case name (aliases included).
const METHODS: &[(&str, Method)] = &[
    ("bizproc.activity.add", Method::Add { robot: false }),
    ("bizproc.activity.update", Method::Update { robot: false }),
    ("bizproc.activity.delete", Method::Delete { robot: false }),
    ("bizproc.activity.list", Method::List { robot: false }),
    ("bizproc.robot.add", Method::Add { robot: true }),
    ("bizproc.robot.update", Method::Update { robot: true }),
    ("bizproc.robot.delete", Method::Delete { robot: true }),
    ("bizproc.robot.list", Method::List { robot: true }),
    ("bizproc.event.send", Method::EventSend),
    ("bizproc.activity.log", Method::ActivityLog),
    ("app.info", Method::AppInfo),
    ("profile", Method::Profile),
    ("batch", Method::Batch),
    ("user.current", Method::UserCurrent),
    ("server.time", Method::ServerTime),
    ("scope", Method::Scope),
    ("methods", Method::Methods),
    ("event.bind", Method::EventBind),
    ("event.get", Method::EventGet),
    ("event.unbind", Method::EventUnbind),
    ("placement.bind", Method::PlacementBind),
    ("placement.list", Method::PlacementList),
    ("placement.get", Method::PlacementGet),
    ("placement.unbind", Method::PlacementUnbind),
    ("bizproc.workflow.start", Method::WorkflowStart),
    ("bizproc.workflow.instances", Method::WorkflowInstances),
    ("bizproc.workflow.instance.list", Method::WorkflowInstances),
    ("bizproc.workflow.terminate", Method::WorkflowTerminate),
    ("bizproc.workflow.kill", Method::WorkflowKill),
    ("bizproc.workflow.template.list", Method::TemplateList),
    ("bizproc.workflow.template.add", Method::TemplateAdd),
    ("bizproc.workflow.template.update", Method::TemplateUpdate),
    ("bizproc.workflow.template.delete", Method::TemplateDelete),
    ("bizproc.task.list", Method::TaskList),
    ("bizproc.task.complete", Method::TaskComplete),
    ("crm.deal.get", Method::CrmGet(Kind::Deal)),
    ("crm.deal.list", Method::CrmList(Kind::Deal)),
    ("crm.deal.update", Method::CrmUpdate(Kind::Deal)),
    ("crm.lead.get", Method::CrmGet(Kind::Lead)),
    ("crm.lead.list", Method::CrmList(Kind::Lead)),
    ("crm.lead.update", Method::CrmUpdate(Kind::Lead)),
    ("crm.contact.get", Method::CrmGet(Kind::Contact)),
    ("crm.contact.list", Method::CrmList(Kind::Contact)),
    ("crm.contact.update", Method::CrmUpdate(Kind::Contact)),
    ("crm.company.get", Method::CrmGet(Kind::Company)),
    ("crm.company.list", Method::CrmList(Kind::Company)),
    ("crm.company.update", Method::CrmUpdate(Kind::Company)),
];

impl Method {
    fn lookup(name: &str) -> Option<Method> {
        METHODS.iter().find(|(n, _)| *n == name).map(|(_, m)| *m)
    }

    /// The scope the method needs; `None` for the basic methods every app and webhook has.
    fn scope(self) -> Option<&'static str> {
        match self {
            Method::AppInfo
            | Method::Profile
            | Method::Batch
            | Method::ServerTime
            | Method::Scope
            | Method::Methods
            | Method::EventBind
            | Method::EventGet
            | Method::EventUnbind => None,
            Method::UserCurrent => Some("user"),
            Method::CrmGet(_) | Method::CrmList(_) | Method::CrmUpdate(_) => Some("crm"),
            Method::PlacementBind
            | Method::PlacementList
            | Method::PlacementGet
            | Method::PlacementUnbind => Some("placement"),
            Method::Add { .. }
            | Method::Update { .. }
            | Method::Delete { .. }
            | Method::List { .. }
            | Method::EventSend
            | Method::ActivityLog
            | Method::WorkflowStart
            | Method::WorkflowInstances
            | Method::WorkflowTerminate
            | Method::WorkflowKill
            | Method::TemplateList
            | Method::TemplateAdd
            | Method::TemplateUpdate
            | Method::TemplateDelete
            | Method::TaskList
            | Method::TaskComplete => Some("bizproc"),
        }
    }
}

/// What one call produced, with what the envelope and the call log need.
pub(crate) struct Outcome {
    pub(crate) result: Result<Success, RestError>,
    pub(crate) caller: String,
    /// The calling app's `client_id`, once authenticated (`X-Bitrix-Rest-Application`).
    pub(crate) application: Option<String>,
    pub(crate) operating: Option<OperatingStatus>,
    pub(crate) processing: Duration,
    /// What the call log records as its `event_token`.
    pub(crate) event_token: Option<String>,
}

/// Runs `method` on `portal` for a credential. `in_batch` forbids nesting `batch` (§5.5).
pub(crate) fn call(
    shared: &Arc<Shared>,
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
        application: None,
        operating: None,
        processing: Duration::ZERO,
        event_token: event_token(method, &params),
    };
    // The server finds the method before it checks the credential [S:restserver].
    let Some(m) = Method::lookup(method) else {
        return outcome;
    };
    let caller = match auth::authenticate(state, portal, credential) {
        Ok(c) => c,
        Err(e) => {
            outcome.result = Err(e);
            return outcome;
        }
    };
    outcome.caller = caller.label.clone();
    outcome.application = caller.client_id.clone();
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
    outcome.result = run(shared, state, portal, m, &caller, params, credential);
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
    shared: &Arc<Shared>,
    state: &mut State,
    portal: usize,
    m: Method,
    caller: &Caller,
    params: Array,
    credential: &Credential,
) -> Result<Success, RestError> {
    // These need more of the state than one portal.
    match m {
        Method::Batch => return batch::run(shared, state, portal, &params, credential),
        Method::AppInfo => return app_info(state, portal, caller).map(Success::from),
        Method::WorkflowStart => {
            return bizproc::workflow_start(shared, state, portal, caller, &params)
                .map(Success::from);
        }
        _ => {}
    }
    let app_id = caller.client_id.as_ref().and_then(|c| state.apps.get(c)).map_or(0, |a| a.id);
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
        Method::Profile => Ok(profile(p, caller.user_id)),
        Method::UserCurrent => Ok(user_current(p, caller.user_id)),
        Method::ServerTime => Ok(Param::str(clock::iso8601(SystemTime::now()))),
        Method::Scope => Ok(scope(caller, &params)),
        Method::Methods => Ok(methods(caller, &params)),
        Method::EventBind => bindings::event_bind(p, caller, &params),
        Method::EventGet => bindings::event_get(p, caller),
        Method::EventUnbind => bindings::event_unbind(p, caller, &params),
        Method::PlacementBind => bindings::placement_bind(p, caller, &params),
        Method::PlacementList => Ok(bindings::placement_list(caller)),
        Method::PlacementGet => bindings::placement_get(p, caller),
        Method::PlacementUnbind => bindings::placement_unbind(p, caller, &params),
        Method::WorkflowInstances => return bizproc::workflow_instances(p, caller, &params),
        Method::WorkflowTerminate => bizproc::workflow_terminate(p, caller, &params),
        Method::WorkflowKill => bizproc::workflow_kill(p, caller, &params),
        Method::TemplateList => return bizproc::template_list(p, caller, &params),
        Method::TemplateAdd => bizproc::template_add(p, caller, app_id, &params),
        Method::TemplateUpdate => bizproc::template_update(p, caller, &params),
        Method::TemplateDelete => bizproc::template_delete(p, caller, &params),
        Method::TaskList => return bizproc::task_list(p, caller, &params),
        Method::TaskComplete => bizproc::task_complete(p, caller, &params),
        Method::CrmGet(kind) => crm::get(p, kind, &params),
        Method::CrmList(kind) => return crm::list(p, kind, &params),
        Method::CrmUpdate(kind) => crm::update(p, kind, &params),
        Method::AppInfo | Method::Batch | Method::WorkflowStart => {
            Err(RestError::method_not_found())
        }
    };
    result.map(Success::from)
}

/// Every user of the emulator is called "Emulated User N".
fn names(user_id: u64) -> [(&'static str, Param); 2] {
    [("NAME", Param::str("Emulated")), ("LAST_NAME", Param::str(format!("User {user_id}")))]
}

/// `profile`: the caller's basic data and whether they administer the portal.
fn profile(p: &PortalState, user_id: u64) -> Param {
    let mut fields = vec![("ID", Param::str(user_id.to_string()))];
    fields.push(("ADMIN", Param::Bool(p.is_admin(user_id))));
    fields.extend(names(user_id));
    fields.push(("PERSONAL_GENDER", Param::str("")));
    fields.push(("TIME_ZONE", Param::str("")));
    Param::map(fields)
}

/// `user.current` (scope `user`): the caller's user record (§5.8).
fn user_current(p: &PortalState, user_id: u64) -> Param {
    let mut fields = vec![("ID", Param::str(user_id.to_string())), ("ACTIVE", Param::Bool(true))];
    fields.extend(names(user_id));
    fields.extend([
        ("SECOND_NAME", Param::str("")),
        ("EMAIL", Param::str(format!("user{user_id}@{}", p.domain))),
        ("PERSONAL_GENDER", Param::str("")),
        ("TIME_ZONE", Param::str("")),
        ("USER_TYPE", Param::str("employee")),
    ]);
    Param::map(fields)
}

/// The scopes the emulator's methods belong to, sorted, without the basic scope.
fn known_scopes() -> Vec<&'static str> {
    let mut scopes: Vec<&str> = METHODS.iter().filter_map(|(_, m)| m.scope()).collect();
    scopes.sort_unstable();
    scopes.dedup();
    scopes
}

/// `scope`: the caller's scopes, or every scope of the portal with `full` (read with PHP's
/// `(bool)`, so the form value `false` asks for the full list, §5.8).
fn scope(caller: &Caller, params: &Array) -> Param {
    if get_ci(params, "full").is_some_and(Param::truthy) {
        return Param::list(known_scopes().into_iter().map(Param::str));
    }
    scope_list(&caller.scopes)
}

/// `methods`: the names of the methods of `scope` when it is given (`""` = the basic methods,
/// an unknown scope = none), else of every scope with `full`, else of the caller's scopes plus
/// the basic methods (§5.8).
fn methods(caller: &Caller, params: &Array) -> Param {
    let wanted = |m: &Method| -> bool {
        if let Some(scope) = get_ci(params, "scope") {
            let scope = scope.php_string().unwrap_or_default();
            return m.scope().unwrap_or("") == scope;
        }
        if get_ci(params, "full").is_some_and(Param::truthy) {
            return true;
        }
        m.scope().is_none_or(|s| caller.scopes.iter().any(|c| c == s))
    };
    Param::list(METHODS.iter().filter(|(_, m)| wanted(m)).map(|(name, _)| Param::str(*name)))
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

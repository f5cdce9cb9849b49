//! The workflow, template and task methods of scope `bizproc` (§5.9), on the emulator's own
//! engine: `bizproc.workflow.start` runs a stored template, `bizproc.task.complete` moves the
//! workflow on, exactly as the control API's routes do.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use base64::Engine as _;
use indexmap::IndexMap;

use crate::clock;
use crate::engine::{self, Refusal};
use crate::param::{Array, Param, upper_keys};
use crate::portal::PortalState;
use crate::rest::listing::{Listing, OPERATIONS};
use crate::rest::request::{admin, positive_id, text};
use crate::rest::{Caller, RestError, Success};
use crate::state::{Shared, State};
use crate::task::TaskStatus;
use crate::template::{self, Step, StoredTemplate, TaskOutcome, TemplateField, WorkflowTemplate};

const WRONG_WORKFLOW: &str = "ERROR_WRONG_WORKFLOW_ID";
const TEMPLATE_INVALID: &str = "ERROR_TEMPLATE_VALIDATION_FAILURE";
const TEMPLATE_NOT_FOUND: &str = "ERROR_TEMPLATE_NOT_FOUND";
const TEMPLATE_NOT_OWNER: &str = "ERROR_TEMPLATE_NOT_OWNER";
const TASK_INVALID: &str = "ERROR_TASK_VALIDATION";

fn iso(t: SystemTime) -> Param {
    Param::str(clock::iso8601(t))
}

fn id(n: u64) -> Param {
    Param::str(n.to_string())
}

/// `bizproc.workflow.start`: `TEMPLATE_ID`*, `DOCUMENT_ID`* `[module, entity, id]`,
/// `PARAMETERS` (the template's parameters by ID). Answers the workflow ID.
pub(crate) fn workflow_start(
    shared: &Arc<Shared>,
    state: &mut State,
    portal: usize,
    caller: &Caller,
    params: &Array,
) -> Result<Param, RestError> {
    let params = upper_keys(params);
    let Some(template_id) = positive_id(&params, "TEMPLATE_ID") else {
        return Err(RestError::bad_request(WRONG_WORKFLOW, "Empty TEMPLATE_ID"));
    };
    if !state.portals[portal].templates.contains_key(&template_id) {
        return Err(RestError::bad_request(WRONG_WORKFLOW, "Template not found"));
    }
    let document_id: Vec<String> = match params.get("DOCUMENT_ID") {
        Some(Param::Array(parts)) => parts.values().filter_map(Param::php_string).collect(),
        _ => Vec::new(),
    };
    if document_id.len() != 3 || document_id.iter().any(String::is_empty) {
        return Err(RestError::bad_request("", "Wrong DOCUMENT_ID!"));
    }
    let parameters = match params.get("PARAMETERS") {
        Some(p @ Param::Array(_)) => p.to_json().as_object().cloned().unwrap_or_default(),
        _ => serde_json::Map::new(),
    };
    let start = engine::Start {
        template_id,
        document_id: &document_id,
        parameters: &parameters,
        started_by: caller.user_id,
    };
    engine::launch(shared, state, portal, &start).map(Param::Str).map_err(|refusal| match refusal {
        Refusal::UnknownTemplate => RestError::bad_request(WRONG_WORKFLOW, "Template not found"),
        Refusal::UnknownDocument => RestError::bad_request("", "Incorrect document type!"),
        Refusal::TypeMismatch => {
            RestError::bad_request("", "Template type and DOCUMENT_ID mismatch!")
        }
        // `startWorkflow` throws the core's first error message with no code (§5.9).
        Refusal::MissingParameter(message) => RestError::bad_request("", message),
    })
}

/// `bizproc.workflow.instances` (administrators): the workflows still running.
pub(crate) fn workflow_instances(
    p: &mut PortalState,
    caller: &Caller,
    params: &Array,
) -> Result<Success, RestError> {
    admin(p, caller)?;
    let now = Instant::now();
    engine::advance_all(p, now);
    let rows = p
        .workflows
        .values()
        .filter(|wf| !wf.finished(now))
        .map(|wf| {
            let modified =
                wf.steps.last().map_or(wf.started_at, |s| s.finished_at.unwrap_or(s.started_at));
            let part = |i: usize| Param::str(wf.document_id.get(i).cloned().unwrap_or_default());
            Array::from_iter([
                ("ID".to_owned(), Param::str(&wf.workflow_id)),
                ("MODIFIED".to_owned(), iso(modified)),
                ("OWNED_UNTIL".to_owned(), Param::Null),
                ("MODULE_ID".to_owned(), part(0)),
                ("ENTITY".to_owned(), part(1)),
                ("DOCUMENT_ID".to_owned(), part(2)),
                ("STARTED".to_owned(), iso(wf.started_at)),
                ("STARTED_BY".to_owned(), id(wf.started_by)),
                ("TEMPLATE_ID".to_owned(), id(wf.template_id.unwrap_or(0))),
            ])
        })
        .collect();
    let listing = Listing {
        select: &["ID", "MODIFIED", "OWNED_UNTIL"],
        order: ("MODIFIED", true),
        operations: OPERATIONS,
    };
    listing.page(rows, &upper_keys(params))
}

/// The workflow `ID` of terminate and kill, running on this portal (administrators only).
fn running(p: &mut PortalState, caller: &Caller, params: &Array) -> Result<String, RestError> {
    let params = upper_keys(params);
    let workflow_id = text(&params, "ID");
    if workflow_id.is_empty() {
        return Err(RestError::bad_request(WRONG_WORKFLOW, "Empty workflow instance ID"));
    }
    admin(p, caller)?;
    let now = Instant::now();
    engine::advance_all(p, now);
    match p.workflows.get(&workflow_id) {
        Some(wf) if !wf.finished(now) => Ok(workflow_id),
        _ => Err(RestError::bad_request("", "Workflow instance not found")),
    }
}

/// `bizproc.workflow.terminate`: `ID`*, `STATUS` (a text for the tracking log). The record is
/// kept.
pub(crate) fn workflow_terminate(
    p: &mut PortalState,
    caller: &Caller,
    params: &Array,
) -> Result<Param, RestError> {
    let workflow_id = running(p, caller, params)?;
    let status = text(&upper_keys(params), "STATUS");
    let domain = p.domain.clone();
    engine::terminate(p, &domain, &workflow_id, Instant::now())
        .map_err(|e| RestError::bad_request("", e.to_string()))?;
    if let Some(wf) = p.workflows.get_mut(&workflow_id).filter(|_| !status.is_empty()) {
        wf.log.push(status);
    }
    Ok(Param::Bool(true))
}

/// `bizproc.workflow.kill`: `ID`*. The workflow and its tasks are deleted.
pub(crate) fn workflow_kill(
    p: &mut PortalState,
    caller: &Caller,
    params: &Array,
) -> Result<Param, RestError> {
    let workflow_id = running(p, caller, params)?;
    engine::kill(p, &workflow_id);
    Ok(Param::Bool(true))
}

/// `bizproc.workflow.template.list` (administrators).
pub(crate) fn template_list(
    p: &PortalState,
    caller: &Caller,
    params: &Array,
) -> Result<Success, RestError> {
    admin(p, caller)?;
    let rows = p
        .templates
        .values()
        .map(|t| {
            let part =
                |i: usize| Param::str(t.template.document_type.get(i).cloned().unwrap_or_default());
            let steps = serde_json::to_value(&t.template.steps).unwrap_or_default();
            Array::from_iter([
                ("ID".to_owned(), Param::Num(t.template.id.into())),
                ("MODULE_ID".to_owned(), part(0)),
                ("ENTITY".to_owned(), part(1)),
                (
                    "DOCUMENT_TYPE".to_owned(),
                    Param::list(t.template.document_type.iter().map(Param::str)),
                ),
                ("AUTO_EXECUTE".to_owned(), Param::Num(t.auto_execute.into())),
                ("NAME".to_owned(), Param::str(&t.template.name)),
                ("DESCRIPTION".to_owned(), Param::str(&t.description)),
                ("TEMPLATE".to_owned(), Param::from_json(&steps)),
                ("PARAMETERS".to_owned(), declared(&t.template.parameters)),
                ("VARIABLES".to_owned(), declared(&t.template.variables)),
                ("CONSTANTS".to_owned(), declared(&t.template.constants)),
                ("MODIFIED".to_owned(), iso(t.modified)),
                ("USER_ID".to_owned(), id(t.user_id)),
                ("SYSTEM_CODE".to_owned(), Param::str(&t.system_code)),
            ])
        })
        .collect();
    let listing = Listing { select: &["ID"], order: ("ID", false), operations: OPERATIONS };
    listing.page(rows, &upper_keys(params))
}

/// A template's parameters, variables or constants as `template.list` shows them: by ID, each
/// `{Name, Type, Description, Required, Multiple, Options, Default}`; none is `[]` (§5.2).
fn declared(fields: &IndexMap<String, TemplateField>) -> Param {
    Param::from_json(&serde_json::to_value(fields).unwrap_or_default())
}

/// The caller's app, which adding, changing and deleting templates needs, and an admin.
fn template_author<'c>(p: &PortalState, caller: &'c Caller) -> Result<&'c str, RestError> {
    let client_id = caller
        .client_id
        .as_deref()
        .ok_or_else(|| RestError::access_denied(Some("Application context required")))?;
    admin(p, caller)?;
    Ok(client_id)
}

fn invalid(message: &str) -> RestError {
    RestError::bad_request(TEMPLATE_INVALID, message)
}

/// `TEMPLATE_DATA`: where a portal takes a `.bpt` file (`[name, base64]`), the emulator takes
/// the base64 of its own template steps as JSON (`[{"type": "activity", …}, …]`).
fn template_steps(data: &Param) -> Option<Vec<Step>> {
    let encoded = match data {
        Param::Array(file) => file.values().nth(1)?.php_string()?,
        other => other.php_string()?,
    };
    let json = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    serde_json::from_slice(&json).ok()
}

fn auto_execute(value: &Param) -> Result<i64, RestError> {
    let n = value.php_int();
    if (0..=3).contains(&n) { Ok(n) } else { Err(invalid("Incorrect field AUTO_EXECUTE!")) }
}

/// Validates and compiles steps for a template of `document_type` named `name`.
fn compile(
    name: String,
    document_type: Vec<String>,
    data: &Param,
) -> Result<(WorkflowTemplate, template::Program), RestError> {
    let steps = template_steps(data).ok_or_else(|| invalid("Incorrect field TEMPLATE_DATA!"))?;
    template::prepare(WorkflowTemplate {
        name,
        document_type,
        steps,
        ..WorkflowTemplate::default()
    })
    .map_err(|_| invalid("Incorrect field TEMPLATE_DATA!"))
}

/// `bizproc.workflow.template.add` (an app's admin): `DOCUMENT_TYPE`*, `NAME`*, `DESCRIPTION`,
/// `TEMPLATE_DATA`*, `AUTO_EXECUTE`. Answers the new template's ID.
pub(crate) fn template_add(
    p: &mut PortalState,
    caller: &Caller,
    app_id: u64,
    params: &Array,
) -> Result<Param, RestError> {
    let client_id = template_author(p, caller)?.to_owned();
    let params = upper_keys(params);
    let document_type: Vec<String> = match params.get("DOCUMENT_TYPE") {
        Some(Param::Array(parts)) => parts.values().filter_map(Param::php_string).collect(),
        _ => Vec::new(),
    };
    if document_type.len() != 3 || document_type.iter().any(String::is_empty) {
        return Err(invalid("Incorrect field DOCUMENT_TYPE!"));
    }
    let name = text(&params, "NAME");
    if name.is_empty() {
        return Err(invalid("Empty template name!"));
    }
    let auto_execute = auto_execute(params.get("AUTO_EXECUTE").unwrap_or(&Param::Null))?;
    let data = params.get("TEMPLATE_DATA").unwrap_or(&Param::Null);
    let (template, program) = compile(name, document_type, data)?;
    let mut stored = StoredTemplate::new(template, program);
    stored.owner = Some(client_id);
    stored.system_code = format!("rest_app_{app_id}");
    stored.description = text(&params, "DESCRIPTION");
    stored.auto_execute = auto_execute;
    stored.user_id = caller.user_id;
    Ok(Param::Num(p.add_template(stored).into()))
}

/// The template `ID` names, if the caller's app added it (`verb`: "update" or "delete").
fn own_template<'p>(
    p: &'p mut PortalState,
    client_id: &str,
    params: &Array,
    verb: &str,
) -> Result<&'p mut StoredTemplate, RestError> {
    let template_id = positive_id(params, "ID").unwrap_or(0);
    let stored = p.templates.get_mut(&template_id).ok_or_else(|| {
        RestError::bad_request(TEMPLATE_NOT_FOUND, "Workflow template not found.")
    })?;
    if stored.owner.as_deref() != Some(client_id) {
        return Err(RestError::bad_request(
            TEMPLATE_NOT_OWNER,
            format!("You can {verb} ONLY templates created by current application"),
        ));
    }
    Ok(stored)
}

/// `bizproc.workflow.template.update`: `ID`*, `FIELDS`* (`NAME`, `DESCRIPTION`,
/// `TEMPLATE_DATA`, `AUTO_EXECUTE`). Workflows already running keep the steps they started with.
pub(crate) fn template_update(
    p: &mut PortalState,
    caller: &Caller,
    params: &Array,
) -> Result<Param, RestError> {
    let client_id = template_author(p, caller)?.to_owned();
    let params = upper_keys(params);
    let fields = match params.get("FIELDS") {
        Some(Param::Array(fields)) => upper_keys(fields),
        _ => Array::new(),
    };
    let known = ["NAME", "DESCRIPTION", "TEMPLATE_DATA", "AUTO_EXECUTE"];
    if !fields.keys().any(|k| known.contains(&k.as_str())) {
        return Err(invalid("No fields to update."));
    }
    let stored = own_template(p, &client_id, &params, "update")?;
    let name = match fields.get("NAME") {
        Some(name) => name
            .php_string()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| invalid("Empty template name!"))?,
        None => stored.template.name.clone(),
    };
    let auto_execute = fields.get("AUTO_EXECUTE").map(auto_execute).transpose()?;
    if let Some(data) = fields.get("TEMPLATE_DATA") {
        let (template, program) =
            compile(name.clone(), stored.template.document_type.clone(), data)?;
        stored.template.steps = template.steps;
        stored.program = Arc::new(program);
    }
    stored.template.name = name;
    if let Some(description) = fields.get("DESCRIPTION") {
        stored.description = description.php_string().unwrap_or_default();
    }
    if let Some(auto_execute) = auto_execute {
        stored.auto_execute = auto_execute;
    }
    stored.user_id = caller.user_id;
    stored.modified = SystemTime::now();
    Ok(Param::Num(stored.template.id.into()))
}

/// `bizproc.workflow.template.delete`: `ID`*. Answers `null`.
pub(crate) fn template_delete(
    p: &mut PortalState,
    caller: &Caller,
    params: &Array,
) -> Result<Param, RestError> {
    let client_id = template_author(p, caller)?.to_owned();
    let params = upper_keys(params);
    let template_id = own_template(p, &client_id, &params, "delete")?.template.id;
    p.templates.shift_remove(&template_id);
    Ok(Param::Null)
}

/// A task's `STATUS` and `USER_STATUS`: 0 waiting, 1 yes, 2 no.
fn task_status(outcome: Option<TaskOutcome>) -> Param {
    Param::str(match outcome {
        None => "0",
        Some(TaskOutcome::Approved) => "1",
        Some(TaskOutcome::Rejected) => "2",
    })
}

/// `bizproc.task.list`: every task, or for a user who is not an admin their own (a filter on
/// another user's `USER_ID` is refused).
pub(crate) fn task_list(
    p: &mut PortalState,
    caller: &Caller,
    params: &Array,
) -> Result<Success, RestError> {
    let mut params = upper_keys(params);
    if !p.is_admin(caller.user_id) {
        let mut filter = match params.get("FILTER") {
            Some(Param::Array(f)) => upper_keys(f),
            _ => Array::new(),
        };
        let own = caller.user_id.to_string();
        match filter.get("USER_ID").and_then(Param::php_string) {
            Some(user) if user != own => return Err(RestError::access_denied(None)),
            _ => filter.insert("USER_ID".into(), Param::str(own)),
        };
        params.insert("FILTER".into(), Param::Array(filter));
    }
    engine::advance_all(p, Instant::now());
    let mut rows = Vec::new();
    for wf in p.workflows.values() {
        let template = wf.template_id.and_then(|t| p.templates.get(&t));
        let document = p.documents.get(&crate::document::key(&wf.document_id));
        let title = document.and_then(|d| d.fields.get("TITLE")).and_then(|v| v.as_str());
        let part = |i: usize| Param::str(wf.document_id.get(i).cloned().unwrap_or_default());
        for task in &wf.tasks {
            let t = &task.state;
            rows.push(Array::from_iter([
                ("ID".to_owned(), id(t.task_id)),
                ("WORKFLOW_ID".to_owned(), Param::str(&t.workflow_id)),
                ("DOCUMENT_NAME".to_owned(), Param::str(title.unwrap_or_default())),
                ("DESCRIPTION".to_owned(), Param::str(&t.description)),
                ("NAME".to_owned(), Param::str(&t.title)),
                ("MODIFIED".to_owned(), iso(t.completed_at.unwrap_or(t.created_at))),
                ("WORKFLOW_STARTED".to_owned(), iso(wf.started_at)),
                ("WORKFLOW_STARTED_BY".to_owned(), id(wf.started_by)),
                ("WORKFLOW_TEMPLATE_ID".to_owned(), id(wf.template_id.unwrap_or(0))),
                (
                    "WORKFLOW_TEMPLATE_NAME".to_owned(),
                    Param::str(template.map(|t| t.template.name.as_str()).unwrap_or_default()),
                ),
                ("STATUS".to_owned(), task_status(t.outcome)),
                ("USER_ID".to_owned(), id(t.user_id)),
                ("USER_STATUS".to_owned(), task_status(t.outcome)),
                ("MODULE_ID".to_owned(), part(0)),
                ("ENTITY".to_owned(), part(1)),
                ("DOCUMENT_ID".to_owned(), part(2)),
                ("ACTIVITY".to_owned(), Param::str("ApproveActivity")),
                ("ACTIVITY_NAME".to_owned(), Param::str(&t.step)),
                ("DOCUMENT_URL".to_owned(), Param::str("")),
            ]));
        }
    }
    let listing = Listing {
        select: &[
            "ENTITY",
            "DOCUMENT_ID",
            "ID",
            "WORKFLOW_ID",
            "DOCUMENT_NAME",
            "NAME",
            "DOCUMENT_URL",
        ],
        order: ("ID", true),
        operations: OPERATIONS,
    };
    listing.page(rows, &params)
}

/// `bizproc.task.complete`: `TASK_ID`*, `STATUS`* (`1`/`yes`, `2`/`no`, `3`/`ok`, `4`/`cancel`),
/// `COMMENT`. Only the task's user completes it; the workflow moves on at once.
pub(crate) fn task_complete(
    p: &mut PortalState,
    caller: &Caller,
    params: &Array,
) -> Result<Param, RestError> {
    let params = upper_keys(params);
    let Some(task_id) = positive_id(&params, "TASK_ID") else {
        return Err(RestError::bad_request(TASK_INVALID, "empty TASK_ID"));
    };
    let status = text(&params, "STATUS").to_lowercase();
    let outcome = match status.as_str() {
        "1" | "yes" => Some(TaskOutcome::Approved),
        "2" | "no" => Some(TaskOutcome::Rejected),
        "3" | "ok" | "4" | "cancel" => None,
        _ => return Err(RestError::bad_request(TASK_INVALID, "incorrect STATUS")),
    };
    let now = Instant::now();
    engine::advance_all(p, now);
    let not_found = || RestError::bad_request("ERROR_TASK_NOT_FOUND", "Task not found");
    let workflow_id = p.task_index.get(&task_id).ok_or_else(not_found)?;
    let wf = p.workflows.get(workflow_id).ok_or_else(not_found)?;
    let task = wf
        .tasks
        .iter()
        .find(|t| t.state.task_id == task_id && t.state.user_id == caller.user_id)
        .ok_or_else(not_found)?;
    if task.state.status == TaskStatus::Completed || wf.ended.is_some() || wf.terminated {
        return Err(RestError::bad_request("ERROR_TASK_COMPLETED", "Task already completed"));
    }
    // The emulator's tasks are approvals, which take yes or no (INFERRED wording).
    let outcome = outcome.ok_or_else(|| {
        RestError::bad_request("ERROR_TASK_EXECUTION", "This task takes yes or no")
    })?;
    engine::complete_task(p, task_id, outcome, text(&params, "COMMENT"))
        .map_err(|e| RestError::bad_request("ERROR_TASK_EXECUTION", e.to_string()))?;
    Ok(Param::Bool(true))
}

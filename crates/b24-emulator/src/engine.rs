//! The workflow engine: runs a compiled program (a template, or the one activity of
//! [`crate::Emulator::start_workflow`]) step by step on its document.
//!
//! [`advance`] is pure state: it runs every step it can as of `now` (branches, field updates,
//! log lines, creating and auto-completing tasks, noticing timeouts) and is called by whoever
//! looks at a workflow (a REST call, a test reading the state), so time-driven transitions
//! happen exactly on time, like the timeout in [`crate::workflow`]. A step that finishes at a
//! past moment (an activity closed by its timeout, a task completed by its timer) hands that
//! moment to the next steps, so the record does not depend on when somebody looked.
//!
//! Dispatching an activity needs the whole emulator (tokens, the HTTP client), so [`advance`]
//! stops in front of one and wakes the workflow's driver, a task that [`drive`]s the workflow
//! and sleeps until the next timer or wake-up. A single-activity workflow dispatches at start
//! and needs no driver.

use std::sync::Arc;
use std::time::Instant;

use indexmap::IndexMap;
use serde_json::Value;

use crate::dispatch::{self, CallContext, Plan};
use crate::document::{self, Document, key};
use crate::error::EmulatorError;
use crate::expr::{self, DOCUMENT, Scope};
use crate::ids;
use crate::portal::PortalState;
use crate::state::{Shared, State};
use crate::task::{CompletedBy, Task, TaskState, TaskStatus};
use crate::template::{ActivityStep, Op, Program, TemplateField};
use crate::workflow::{
    ProcessStatus, StartedWorkflow, StepKind, StepRecord, StepStatus, Wait, Workflow, WorkflowSpec,
    WorkflowStatus,
};

/// `BPRA_NOT_FOUND_ERROR`: what `Execute` throws when the activity's row is gone (§1.1).
pub const ACTIVITY_NOT_INSTALLED: &str = "Application activity is not installed.";
/// What `Execute` throws when the app is missing (§2.1).
pub const APP_NOT_FOUND: &str = "Rest application not found.";

/// What a driver does next.
enum Next {
    /// The workflow ended (or is gone).
    Done,
    /// Wake at this moment (a timeout or a task timer), or earlier when woken.
    At(Instant),
    /// Wait to be woken (an activity or a task without a timer).
    Idle,
}

/// Values for expressions: the document's fields, the template's parameters, variables and
/// constants, and earlier steps' values.
struct Values<'a> {
    workflow: &'a Workflow,
    document: Option<&'a Document>,
}

impl Scope for Values<'_> {
    fn lookup(&self, source: &str, name: &str) -> Value {
        let wf = self.workflow;
        let default_of = |fields: &IndexMap<String, TemplateField>| {
            fields.get(name).map_or(Value::Null, |field| field.default.clone())
        };
        match source {
            DOCUMENT => {
                let fields = self.document.map(|d| &d.fields);
                let exact = fields.and_then(|f| f.get(name));
                let any_case =
                    || fields?.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v);
                exact.or_else(any_case).cloned().unwrap_or(Value::Null)
            }
            expr::TEMPLATE => wf.parameters.get(name).cloned().unwrap_or(Value::Null),
            expr::VARIABLE => default_of(&wf.program.variables),
            expr::CONSTANT => default_of(&wf.program.constants),
            step => {
                if let Some(run) = wf.activities.iter().rev().find(|r| r.activity_name == step) {
                    return run.value(name);
                }
                wf.tasks
                    .iter()
                    .rev()
                    .find(|t| t.state.step == step)
                    .map_or(Value::Null, |task| task_value(&task.state, name))
            }
        }
    }
}

fn task_value(task: &TaskState, name: &str) -> Value {
    let done = task.status == TaskStatus::Completed;
    match name.to_ascii_lowercase().as_str() {
        "outcome" => task.outcome.map_or(Value::Null, |o| Value::from(o.as_str())),
        "approved" if done => {
            Value::from(if task.outcome == Some(crate::template::TaskOutcome::Approved) {
                "Y"
            } else {
                "N"
            })
        }
        "comment" if done => Value::from(task.comment.clone()),
        "user" => Value::from(format!("user_{}", task.user_id)),
        _ => Value::Null,
    }
}

/// Runs every workflow of the portal as far as it can go as of `now` (see [`advance`]).
pub(crate) fn advance_all(portal: &mut PortalState, now: Instant) {
    let ids: Vec<String> = portal.workflows.keys().cloned().collect();
    for id in &ids {
        advance(portal, id, now);
    }
}

/// Runs workflow `workflow_id` of the portal at `domain` as far as it can go as of `now` (see
/// [`advance`]) and returns it.
pub(crate) fn advanced<'p>(
    portal: &'p mut PortalState,
    domain: &str,
    workflow_id: &str,
    now: Instant,
) -> Result<&'p mut Workflow, EmulatorError> {
    advance(portal, workflow_id, now);
    portal
        .workflows
        .get_mut(workflow_id)
        .ok_or_else(|| EmulatorError::unknown_workflow(domain, workflow_id))
}

/// Runs the workflow as far as it can go as of `now` without dispatching (see the module docs).
pub(crate) fn advance(portal: &mut PortalState, workflow_id: &str, now: Instant) {
    let PortalState { workflows, documents, next_task_id, task_index, .. } = portal;
    let Some(wf) = workflows.get_mut(workflow_id) else {
        return;
    };
    // The moment the steps being run happen at.
    let mut t = now;
    loop {
        if wf.ended.is_some() || wf.terminated {
            return;
        }
        match wf.wait {
            Wait::Dispatch => {
                wf.process = ProcessStatus::Running;
                wf.wake.notify_one();
                return;
            }
            Wait::Activity(i) => {
                let Some(run) = wf.activities.get_mut(i) else {
                    return fail(wf, t, "the activity run is missing".into());
                };
                run.advance(now);
                let detail = match run.status {
                    WorkflowStatus::Waiting => {
                        wf.process = ProcessStatus::WaitingForActivity;
                        return;
                    }
                    WorkflowStatus::Closed if !run.use_subscription => {
                        "closed at dispatch (USE_SUBSCRIPTION = N)"
                    }
                    WorkflowStatus::Closed => "closed by event.send",
                    WorkflowStatus::TimedOut => "timed out (IsTimeout = 1)",
                };
                t = run.closed_at.unwrap_or(t);
                finish_record(wf, t, StepStatus::Done, detail.to_owned());
                wf.wait = Wait::Nothing;
                wf.pc += 1;
            }
            Wait::Task(i) => {
                let at_wall =
                    |at: Instant| wf.started_at + at.saturating_duration_since(wf.started);
                let Some(task) = wf.tasks.get_mut(i) else {
                    return fail(wf, t, "the task is missing".into());
                };
                if task.is_open()
                    && let Some(due) = task.auto_due.filter(|due| now >= *due)
                {
                    let outcome = auto_outcome(&wf.program, wf.pc);
                    task.complete(outcome, String::new(), CompletedBy::Timer, due, at_wall(due));
                }
                if task.is_open() {
                    wf.process = ProcessStatus::WaitingForTask;
                    return;
                }
                t = task.completed.unwrap_or(t);
                let detail = format!(
                    "task {} {} ({})",
                    task.state.task_id,
                    task.state.outcome.map_or("completed", |o| o.as_str()),
                    match task.state.completed_by {
                        Some(CompletedBy::Timer) => "automatically",
                        _ => "by the user",
                    }
                );
                finish_record(wf, t, StepStatus::Done, detail);
                wf.wait = Wait::Nothing;
                wf.pc += 1;
            }
            Wait::Nothing => {
                let program = wf.program.clone();
                let Some(op) = program.ops.get(wf.pc) else {
                    wf.process = ProcessStatus::Completed;
                    wf.ended = Some(t);
                    // Lets the driver see the end and stop.
                    wf.wake.notify_one();
                    tracing::info!(workflow_id, "workflow completed");
                    return;
                };
                let document = documents.get(&key(&wf.document_id));
                match op {
                    Op::Activity(_) => wf.wait = Wait::Dispatch,
                    Op::Jump(to) => wf.pc = *to,
                    Op::Branch { name, condition, operand, otherwise } => {
                        let values = Values { workflow: wf, document };
                        let left = values.lookup(&operand.source, &operand.name);
                        let holds = expr::compare(&left, condition.op, &condition.value);
                        let detail = format!(
                            "{} → {}",
                            expr::describe(
                                &condition.operand,
                                condition.op,
                                &condition.value,
                                &left
                            ),
                            if holds { "then" } else { "otherwise" }
                        );
                        record(wf, StepKind::IfElse, name, t, StepStatus::Done, detail);
                        wf.pc = if holds { wf.pc + 1 } else { *otherwise };
                    }
                    Op::Task(step) => {
                        let values = Values { workflow: wf, document };
                        let title = expr::interpolate(&step.title, &values);
                        let description = expr::interpolate(&step.description, &values);
                        *next_task_id += 1;
                        let task_id = *next_task_id;
                        task_index.insert(task_id, wf.workflow_id.clone());
                        let created_at = wf.wall(t);
                        wf.tasks.push(Task {
                            state: TaskState {
                                task_id,
                                workflow_id: wf.workflow_id.clone(),
                                step: step.name.clone(),
                                user_id: step.user_id,
                                title,
                                description,
                                status: TaskStatus::Open,
                                outcome: None,
                                comment: String::new(),
                                completed_by: None,
                                created_at,
                                completed_at: None,
                            },
                            auto_due: step.auto_complete_after.map(|after| t + after),
                            completed: None,
                        });
                        let detail = format!("task {task_id} for user_{}", step.user_id);
                        record(wf, StepKind::Task, &step.name, t, StepStatus::Running, detail);
                        wf.wait = Wait::Task(wf.tasks.len() - 1);
                        // A task timer may be earlier than what the driver sleeps for.
                        wf.wake.notify_one();
                    }
                    Op::SetField(step) => {
                        let value = expr::evaluate(&step.value, &Values { workflow: wf, document });
                        let Some(doc) = documents.get_mut(&key(&wf.document_id)) else {
                            record(
                                wf,
                                StepKind::SetField,
                                "",
                                t,
                                StepStatus::Running,
                                String::new(),
                            );
                            let text = format!("document {} not found", wf.document_id.join("/"));
                            return fail(wf, t, text);
                        };
                        let detail = format!("{} = {}", step.field, value);
                        doc.fields.insert(step.field.clone(), value);
                        record(wf, StepKind::SetField, "", t, StepStatus::Done, detail);
                        wf.pc += 1;
                    }
                    Op::Log(step) => {
                        let line =
                            expr::interpolate(&step.message, &Values { workflow: wf, document });
                        wf.log.push(line.clone());
                        record(wf, StepKind::Log, "", t, StepStatus::Done, line);
                        wf.pc += 1;
                    }
                }
            }
        }
    }
}

/// The auto-complete outcome of the task step at `pc`.
fn auto_outcome(program: &Program, pc: usize) -> crate::template::TaskOutcome {
    match program.ops.get(pc) {
        Some(Op::Task(step)) => step.auto_outcome,
        _ => crate::template::TaskOutcome::Approved,
    }
}

fn record(
    wf: &mut Workflow,
    kind: StepKind,
    name: &str,
    at: Instant,
    status: StepStatus,
    detail: String,
) {
    let started_at = wf.wall(at);
    let finished_at = (status != StepStatus::Running).then_some(started_at);
    wf.steps.push(StepRecord {
        kind,
        name: name.to_owned(),
        status,
        detail,
        started_at,
        finished_at,
    });
}

/// Closes the running step record (steps run one at a time, so it is the last one).
fn finish_record(wf: &mut Workflow, at: Instant, status: StepStatus, detail: String) {
    let finished_at = wf.wall(at);
    if let Some(last) = wf.steps.last_mut().filter(|r| r.status == StepStatus::Running) {
        last.status = status;
        last.finished_at = Some(finished_at);
        if !detail.is_empty() {
            last.detail =
                if last.detail.is_empty() { detail } else { format!("{}; {detail}", last.detail) };
        }
    }
}

/// Ends the workflow with an error, as the runtime does when a step throws.
fn fail(wf: &mut Workflow, at: Instant, error: String) {
    tracing::warn!(workflow_id = wf.workflow_id, error, "workflow failed");
    finish_record(wf, at, StepStatus::Failed, error.clone());
    wf.process = ProcessStatus::Failed;
    wf.error = Some(error);
    wf.ended = Some(at);
    wf.wake.notify_one();
}

/// The text a step failure shows for a dispatch error.
fn failure_text(e: &EmulatorError) -> String {
    match e {
        EmulatorError::UnknownCode { .. } => ACTIVITY_NOT_INSTALLED.to_owned(),
        EmulatorError::NotInstalled { .. } | EmulatorError::UnknownApp(_) => {
            APP_NOT_FOUND.to_owned()
        }
        other => other.to_string(),
    }
}

/// Advances the workflow and dispatches every activity it reaches; returns the calls to send
/// and when to look again.
fn drive(
    shared: &Shared,
    state: &mut State,
    portal: usize,
    workflow_id: &str,
    now: Instant,
) -> (Vec<Plan>, Next) {
    let mut plans = Vec::new();
    loop {
        let Some(p) = state.portals.get_mut(portal) else {
            return (plans, Next::Done);
        };
        advance(p, workflow_id, now);
        let Some(wf) = p.workflows.get(workflow_id) else {
            return (plans, Next::Done);
        };
        if wf.wait != Wait::Dispatch || wf.ended.is_some() || wf.terminated {
            return (plans, next(wf));
        }
        let Some(Op::Activity(step)) = wf.program.ops.get(wf.pc).cloned() else {
            return (plans, Next::Done);
        };
        let properties = {
            let document = p.documents.get(&key(&wf.document_id));
            let given = Value::Object(step.properties.clone());
            expr::evaluate(&given, &Values { workflow: wf, document })
        };
        let (document_id, document_type) = (wf.document_id.clone(), wf.document_type.clone());
        let cx = CallContext {
            workflow_id,
            activity: wf.activities.len(),
            document_id: &document_id,
            document_type: &document_type,
        };
        let built = dispatch::build(shared, state, portal, &step, &properties, &cx);
        let Some(wf) = state.portals.get_mut(portal).and_then(|p| p.workflows.get_mut(workflow_id))
        else {
            return (plans, Next::Done);
        };
        record(
            wf,
            StepKind::Activity,
            &step.name,
            now,
            StepStatus::Running,
            format!("code {}", step.code),
        );
        match built {
            Ok((run, plan)) => {
                wf.activities.push(run);
                wf.wait = Wait::Activity(wf.activities.len() - 1);
                wf.process = ProcessStatus::WaitingForActivity;
                plans.push(plan);
            }
            Err(e) => {
                wf.wait = Wait::Nothing;
                fail(wf, now, failure_text(&e));
            }
        }
    }
}

fn next(wf: &Workflow) -> Next {
    if wf.ended.is_some() || wf.terminated {
        return Next::Done;
    }
    let due = match wf.wait {
        Wait::Activity(i) => wf.activities.get(i).and_then(|run| run.timeout_due()),
        Wait::Task(i) => wf.tasks.get(i).filter(|t| t.is_open()).and_then(|t| t.auto_due),
        Wait::Nothing | Wait::Dispatch => Some(Instant::now()),
    };
    due.map_or(Next::Idle, Next::At)
}

/// Runs a template workflow in the background until it ends; holds the emulator weakly, so a
/// workflow that waits for ever does not keep a dropped emulator alive.
fn spawn_driver(
    shared: &Arc<Shared>,
    portal: usize,
    workflow_id: String,
    wake: Arc<tokio::sync::Notify>,
) {
    let weak = Arc::downgrade(shared);
    tokio::spawn(async move {
        loop {
            let Some(shared) = weak.upgrade() else {
                return;
            };
            let (plans, next) = {
                let mut state = shared.lock();
                drive(&shared, &mut state, portal, &workflow_id, Instant::now())
            };
            dispatch::spawn_deliveries(&shared, plans);
            drop(shared);
            match next {
                Next::Done => return,
                Next::At(due) => {
                    tokio::select! {
                        () = wake.notified() => {}
                        () = tokio::time::sleep_until(due.into()) => {}
                    }
                }
                Next::Idle => wake.notified().await,
            }
        }
    });
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Starts a single-activity workflow: the call is built now and sent in the background.
pub(crate) fn start_single(
    shared: &Arc<Shared>,
    spec: WorkflowSpec,
) -> Result<StartedWorkflow, EmulatorError> {
    let mut state = shared.lock();
    let portal = state.portal_index(&spec.domain)?;
    // A missing or ambiguous code is the caller's mistake here, reported at once.
    dispatch::resolve(&state.portals[portal], &spec.code, spec.client_id.as_deref())?;
    let step = ActivityStep {
        name: ids::activity_name(),
        code: spec.code.clone(),
        client_id: spec.client_id.clone(),
        properties: spec.properties.as_object().cloned().unwrap_or_default(),
        timeout_duration: spec.timeout_duration,
        use_subscription: spec.use_subscription,
        run_as_user: spec.run_as_user,
    };
    let document_id =
        spec.document_id.unwrap_or_else(|| strings(&["crm", "CCrmDocumentDeal", "DEAL_1"]));
    let document_type =
        spec.document_type.unwrap_or_else(|| strings(&["crm", "CCrmDocumentDeal", "DEAL"]));
    let wf = Workflow::new(
        Arc::new(Program::single(step)),
        None,
        document_id,
        document_type,
        spec.finish_after,
    );
    let workflow_id = wf.workflow_id.clone();
    state.portals[portal].workflows.insert(workflow_id.clone(), wf);
    let (plans, _) = drive(shared, &mut state, portal, &workflow_id, Instant::now());
    let wf = state.portals[portal]
        .workflows
        .get(&workflow_id)
        .ok_or_else(|| EmulatorError::unknown_workflow(&spec.domain, &workflow_id))?;
    let Some(run) = wf.activities.first() else {
        return Err(EmulatorError::InvalidSpec(wf.error.clone().unwrap_or_default()));
    };
    let started = StartedWorkflow {
        workflow_id: workflow_id.clone(),
        activity_name: run.activity_name.clone(),
        event_id: run.event_id.clone(),
        event_token: run.event_token.clone(),
        handler: run.handler.clone(),
        body: run.body.clone(),
        use_subscription: run.use_subscription,
    };
    drop(state);
    dispatch::spawn_deliveries(shared, plans);
    Ok(started)
}

/// Why a stored template cannot start on a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    UnknownTemplate,
    UnknownDocument,
    /// The document is not of the template's type.
    TypeMismatch,
    /// A required parameter has no value: the loader's message (§5.9).
    MissingParameter(String),
}

/// What a workflow starts on and with.
pub(crate) struct Start<'a> {
    pub(crate) template_id: u64,
    pub(crate) document_id: &'a [String],
    /// Parameter values by ID (`PARAMETERS`).
    pub(crate) parameters: &'a serde_json::Map<String, Value>,
    /// The user who starts it; 0 = the control API.
    pub(crate) started_by: u64,
}

/// Starts a stored template on a document; returns the workflow ID. The first steps run now.
pub(crate) fn start_template(
    shared: &Arc<Shared>,
    domain: &str,
    start: &Start<'_>,
) -> Result<String, EmulatorError> {
    let mut state = shared.lock();
    let portal = state.portal_index(domain)?;
    let (template_id, document_id) = (start.template_id, start.document_id);
    launch(shared, &mut state, portal, start).map_err(|refusal| match refusal {
        Refusal::UnknownTemplate => {
            EmulatorError::UnknownTemplate { domain: domain.to_owned(), template_id }
        }
        Refusal::UnknownDocument => document::unknown(domain, document_id),
        Refusal::TypeMismatch => {
            let p = &state.portals[portal];
            let of = |t: Option<&Vec<String>>| t.map(|t| t.join("/")).unwrap_or_default();
            EmulatorError::InvalidSpec(format!(
                "template {template_id} runs on {} documents, not on {}",
                of(p.templates.get(&template_id).map(|t| &t.template.document_type)),
                of(p.documents.get(&key(document_id)).map(|d| &d.document_type)),
            ))
        }
        Refusal::MissingParameter(message) => EmulatorError::InvalidSpec(message),
    })
}

/// Starts a template on a document: the first steps run now, the rest in the background.
/// Returns the workflow ID.
pub(crate) fn launch(
    shared: &Arc<Shared>,
    state: &mut State,
    portal: usize,
    start: &Start<'_>,
) -> Result<String, Refusal> {
    let template_id = start.template_id;
    let p = &mut state.portals[portal];
    let stored = p.templates.get(&template_id).ok_or(Refusal::UnknownTemplate)?;
    let document = p.documents.get(&key(start.document_id)).ok_or(Refusal::UnknownDocument)?;
    if document.document_type != stored.template.document_type {
        return Err(Refusal::TypeMismatch);
    }
    let parameters =
        stored.program.start_parameters(start.parameters).map_err(Refusal::MissingParameter)?;
    let mut wf = Workflow::new(
        stored.program.clone(),
        Some(template_id),
        document.document_id.clone(),
        document.document_type.clone(),
        // The instance is gone as soon as the template completes.
        Some(std::time::Duration::ZERO),
    );
    wf.started_by = start.started_by;
    wf.parameters = parameters;
    let (workflow_id, wake) = (wf.workflow_id.clone(), wf.wake.clone());
    p.workflows.insert(workflow_id.clone(), wf);
    tracing::info!(workflow_id, template_id, "template started");
    let (plans, next) = drive(shared, state, portal, &workflow_id, Instant::now());
    dispatch::spawn_deliveries(shared, plans);
    if !matches!(next, Next::Done) {
        spawn_driver(shared, portal, workflow_id.clone(), wake);
    }
    Ok(workflow_id)
}

/// Ends a workflow now, keeping its record (an admin's "stop"): later `event.send` calls
/// answer "404" and its open tasks can no longer be completed.
pub(crate) fn terminate(
    portal: &mut PortalState,
    domain: &str,
    workflow_id: &str,
    now: Instant,
) -> Result<(), EmulatorError> {
    let wf = advanced(portal, domain, workflow_id, now)?;
    if wf.ended.is_none() {
        wf.process = ProcessStatus::Terminated;
        wf.ended = Some(now);
    }
    wf.terminated = true;
    wf.wake.notify_one();
    Ok(())
}

/// Deletes a workflow with its tasks, as if it never ran.
pub(crate) fn kill(portal: &mut PortalState, workflow_id: &str) {
    if let Some(wf) = portal.workflows.shift_remove(workflow_id) {
        for task in &wf.tasks {
            portal.task_index.remove(&task.state.task_id);
        }
        wf.wake.notify_one();
    }
}

/// Completes an open task and lets its workflow continue.
pub(crate) fn complete_task(
    p: &mut PortalState,
    task_id: u64,
    outcome: crate::template::TaskOutcome,
    comment: String,
) -> Result<TaskState, EmulatorError> {
    let domain = p.domain.clone();
    let unknown = || EmulatorError::UnknownTask { domain: domain.clone(), task_id };
    let workflow_id = p.task_index.get(&task_id).cloned().ok_or_else(unknown)?;
    let now = Instant::now();
    // Its timer may have completed it already.
    advance(p, &workflow_id, now);
    let wf = p.workflows.get_mut(&workflow_id).ok_or_else(unknown)?;
    let at_wall = wf.wall(now);
    let ended = wf.ended.is_some() || wf.terminated;
    let task = wf.tasks.iter_mut().find(|t| t.state.task_id == task_id).ok_or_else(unknown)?;
    if !task.is_open() || ended {
        return Err(EmulatorError::TaskClosed { task_id });
    }
    task.complete(outcome, comment, CompletedBy::User, now, at_wall);
    let state = task.state.clone();
    wf.wake.notify_one();
    advance(p, &workflow_id, now);
    Ok(state)
}

//! Workflow instances: their activities (Waiting, Closed, TimedOut) with the timeout, their
//! tasks and step records, and `bizproc.event.send` / `bizproc.activity.log` (protocol doc
//! §2.7, §3). A single-activity workflow is a one-step program; [`crate::engine`] runs both.
//!
//! Time-driven transitions are evaluated when the workflow is looked at, against the clock, so
//! a timeout fires exactly at `started + timeout_duration` without a timer task: whoever asks
//! first (a REST call or a test reading the state) sees it already happened.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::clock;
use crate::engine;
use crate::event_token;
use crate::ids;
use crate::param::{Array, Param, get_ci, upper_keys};
use crate::portal::PortalState;
use crate::rest::RestError;
use crate::task::{Task, TaskState};
use crate::template::Program;

/// The tracking-log line `event.send` writes without a `LOG_MESSAGE` (§3.1, BPRA lang file).
pub const DEFAULT_LOG_MESSAGE: &str = "Received application response";

/// What to run: one registered activity or robot with the property values the designer holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkflowSpec {
    /// The portal (ignored on the control API, where the path names it).
    pub domain: String,
    /// The registered CODE.
    pub code: String,
    /// When several apps registered `code`, which one.
    pub client_id: Option<String>,
    /// Property values by property ID, as JSON: `true`/`false` for bool (sent as Y/N), numbers
    /// or `user_N` for users, arrays for multiple properties, `null` for nothing. A property left
    /// out gets its registered `DEFAULT`.
    pub properties: serde_json::Value,
    /// `[module, entity, id]`; default `["crm", "CCrmDocumentDeal", "DEAL_1"]`.
    pub document_id: Option<Vec<String>>,
    /// `[module, entity, type]`; default `["crm", "CCrmDocumentDeal", "DEAL"]`.
    pub document_type: Option<Vec<String>>,
    /// The "Run as" user; default the registration's AUTH_USER_ID. A user of 0 gets no tokens.
    pub run_as_user: Option<u64>,
    /// The designer's timeout in seconds; 0 = wait forever (§2.7).
    pub timeout_duration: u64,
    /// The admin's choice when the registration's USE_SUBSCRIPTION is empty (else ignored);
    /// default `false`, the constructor's `N`.
    pub use_subscription: Option<bool>,
    /// How long the workflow keeps running after the activity closes, before its instance is
    /// gone and `event.send` answers "404". `None` = until [`crate::Emulator::finish_workflow`].
    #[serde(with = "clock::opt_secs")]
    pub finish_after: Option<Duration>,
}

impl Default for WorkflowSpec {
    fn default() -> Self {
        Self {
            domain: String::new(),
            code: String::new(),
            client_id: None,
            properties: serde_json::Value::Object(serde_json::Map::new()),
            document_id: None,
            document_type: None,
            run_as_user: None,
            timeout_duration: 0,
            use_subscription: None,
            finish_after: Some(Duration::from_secs(1)),
        }
    }
}

/// What `start_workflow` hands back right after dispatch (the call itself is still on its way).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartedWorkflow {
    pub workflow_id: String,
    pub activity_name: String,
    pub event_id: String,
    pub event_token: String,
    /// The handler URL the call goes to.
    pub handler: String,
    /// The exact form body sent (`http_build_query`, §2.2).
    pub body: String,
    pub use_subscription: bool,
}

/// Where the activity stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkflowStatus {
    /// Subscribed, waiting for `event.send` or the timeout.
    Waiting,
    /// Closed by `event.send`, or right after dispatch with USE_SUBSCRIPTION=N.
    Closed,
    /// The timeout fired: `IsTimeout = 1`, return values keep their defaults.
    TimedOut,
}

/// Where the whole workflow stands (for a single-activity workflow: `WaitingForActivity`, then
/// `Completed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProcessStatus {
    /// Between steps (e.g. an activity about to be dispatched).
    Running,
    /// An activity waits for `event.send` or its timeout.
    WaitingForActivity,
    /// A task waits for its user or its timer.
    WaitingForTask,
    /// The last step is done.
    Completed,
    /// A step failed; `error` says why (e.g. "Application activity is not installed.").
    Failed,
    /// Ended by [`crate::Emulator::finish_workflow`] before it completed.
    Terminated,
}

/// What kind of step a [`StepRecord`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    Activity,
    IfElse,
    Task,
    SetField,
    Log,
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepStatus {
    Running,
    Done,
    Failed,
}

/// One executed step, in execution order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub kind: StepKind,
    /// The step's name (activities, tasks, labelled branches), else empty.
    pub name: String,
    pub status: StepStatus,
    /// What happened: "closed by event.send", "timed out (IsTimeout = 1)", the condition and
    /// the branch taken, the field set, the task's outcome, or the error.
    pub detail: String,
    #[serde(with = "clock::unix")]
    pub started_at: SystemTime,
    #[serde(with = "clock::opt_unix")]
    pub finished_at: Option<SystemTime>,
}

/// One attempt to deliver the activity call to its handler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    #[serde(with = "clock::unix")]
    pub at: SystemTime,
    /// The handler's HTTP status, if it answered.
    pub status: Option<u16>,
    /// Why there is no status (unreachable, timeout, dropped by a fault).
    pub error: Option<String>,
}

/// Declares a state struct with its own fields followed by the fields that describe one activity
/// execution, which [`ActivityState`] and [`WorkflowState`] (for its latest activity) share.
macro_rules! with_activity_fields {
    ($(#[$attr:meta])* pub struct $name:ident { $($own:tt)* }) => {
        $(#[$attr])*
        pub struct $name {
            $($own)*
            pub code: String,
            pub activity_name: String,
            pub event_id: String,
            pub event_token: String,
            pub status: WorkflowStatus,
            pub is_timeout: bool,
            /// Return values by their registered IDs (matched case-insensitively, §3.1).
            pub return_values: serde_json::Value,
            pub deliveries: Vec<Delivery>,
            pub use_subscription: bool,
            pub timeout_duration: u64,
            pub handler: String,
            pub body: String,
            #[serde(with = "clock::unix")]
            pub started_at: SystemTime,
            /// When the activity stopped waiting (`event.send`, the timeout, or dispatch with
            /// USE_SUBSCRIPTION=N); `None` while it waits.
            #[serde(with = "clock::opt_unix")]
            pub closed_at: Option<SystemTime>,
        }
    };
}

with_activity_fields! {
    /// One activity execution of a workflow.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct ActivityState {
        /// The step's name, which is also `activity_name`.
        pub name: String,
    }
}

with_activity_fields! {
    /// A workflow as tests inspect it. The activity fields (from `code` to `closed_at`) describe
    /// the latest activity (the only one of a single-activity workflow); before a template's
    /// first activity they are empty and `status` is `Closed`.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct WorkflowState {
        pub workflow_id: String,
        /// The instance is gone: `event.send` now answers "404".
        pub finished: bool,
        /// Tracking-log lines (`LOG_MESSAGE`, `activity.log`, log steps).
        pub log: Vec<String>,
        /// The template this workflow runs; `None` for a single-activity workflow.
        pub template_id: Option<u64>,
        pub document_id: Vec<String>,
        pub process_status: ProcessStatus,
        /// Why the workflow failed.
        pub error: Option<String>,
        /// When the last step finished or the workflow failed or was terminated.
        #[serde(with = "clock::opt_unix")]
        pub ended_at: Option<SystemTime>,
        pub steps: Vec<StepRecord>,
        /// Every activity execution, oldest first.
        pub activities: Vec<ActivityState>,
        pub tasks: Vec<TaskState>,
    }
}

/// One activity execution as the engine keeps it.
#[derive(Debug, Clone)]
pub(crate) struct ActivityRun {
    pub(crate) code: String,
    pub(crate) activity_name: String,
    pub(crate) event_id: String,
    pub(crate) event_token: String,
    pub(crate) use_subscription: bool,
    pub(crate) timeout_duration: u64,
    pub(crate) started: Instant,
    pub(crate) started_at: SystemTime,
    pub(crate) status: WorkflowStatus,
    pub(crate) closed_at: Option<Instant>,
    pub(crate) return_properties: Array,
    pub(crate) return_values: Array,
    pub(crate) deliveries: Vec<Delivery>,
    pub(crate) handler: String,
    pub(crate) body: String,
}

impl ActivityRun {
    /// Applies the timeout if its moment has passed (§2.7: IsTimeout = 1, close).
    pub(crate) fn advance(&mut self, now: Instant) {
        if let Some(due) = self.timeout_due()
            && now >= due
        {
            self.status = WorkflowStatus::TimedOut;
            self.closed_at = Some(due);
            tracing::info!(activity_name = self.activity_name, "activity timed out");
        }
    }

    /// When the timeout fires, while the activity waits and has one.
    pub(crate) fn timeout_due(&self) -> Option<Instant> {
        (self.status == WorkflowStatus::Waiting && self.timeout_duration > 0)
            .then(|| self.started + Duration::from_secs(self.timeout_duration))
    }

    /// A value for `{=name:value}`: a return value, or the built-in `IsTimeout`.
    pub(crate) fn value(&self, name: &str) -> serde_json::Value {
        if name.eq_ignore_ascii_case("IsTimeout") {
            return serde_json::Value::from(u8::from(self.status == WorkflowStatus::TimedOut));
        }
        get_ci(&self.return_values, name).map_or(serde_json::Value::Null, Param::to_json)
    }

    /// An instant of this run on the wall clock.
    fn wall(&self, at: Instant) -> SystemTime {
        self.started_at + at.saturating_duration_since(self.started)
    }

    fn state(&self) -> ActivityState {
        let return_values = if self.return_values.is_empty() {
            serde_json::Value::Object(serde_json::Map::new())
        } else {
            Param::Array(self.return_values.clone()).to_json()
        };
        ActivityState {
            name: self.activity_name.clone(),
            code: self.code.clone(),
            activity_name: self.activity_name.clone(),
            event_id: self.event_id.clone(),
            event_token: self.event_token.clone(),
            status: self.status,
            is_timeout: self.status == WorkflowStatus::TimedOut,
            return_values,
            deliveries: self.deliveries.clone(),
            use_subscription: self.use_subscription,
            timeout_duration: self.timeout_duration,
            handler: self.handler.clone(),
            body: self.body.clone(),
            started_at: self.started_at,
            // The monotonic moment of closing, placed on the wall clock relative to the start.
            closed_at: self.closed_at.map(|closed| self.wall(closed)),
        }
    }
}

/// What the workflow waits for at its program counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Nothing: the engine can run the instruction at `pc`.
    Nothing,
    /// The activity at `pc` must be dispatched, which needs the whole emulator (tokens, HTTP);
    /// the workflow's driver does it.
    Dispatch,
    /// `activities[i]` to close.
    Activity(usize),
    /// `tasks[i]` to be completed.
    Task(usize),
}

/// The portal's record of one workflow instance.
#[derive(Debug)]
pub(crate) struct Workflow {
    pub(crate) workflow_id: String,
    pub(crate) template_id: Option<u64>,
    /// The user who started it through REST; 0 when the control API did.
    pub(crate) started_by: u64,
    pub(crate) document_id: Vec<String>,
    pub(crate) document_type: Vec<String>,
    pub(crate) program: Arc<Program>,
    /// The template's parameters as the workflow was started with them (`{=Template:ID}`).
    pub(crate) parameters: serde_json::Map<String, serde_json::Value>,
    pub(crate) pc: usize,
    pub(crate) wait: Wait,
    pub(crate) process: ProcessStatus,
    pub(crate) error: Option<String>,
    pub(crate) started: Instant,
    pub(crate) started_at: SystemTime,
    pub(crate) ended: Option<Instant>,
    pub(crate) finish_after: Option<Duration>,
    pub(crate) terminated: bool,
    pub(crate) activities: Vec<ActivityRun>,
    pub(crate) tasks: Vec<Task>,
    pub(crate) steps: Vec<StepRecord>,
    pub(crate) log: Vec<String>,
    /// Wakes the driver task of a template workflow (a dispatch is due, or a timer changed).
    pub(crate) wake: Arc<Notify>,
}

impl Workflow {
    pub(crate) fn new(
        program: Arc<Program>,
        template_id: Option<u64>,
        document_id: Vec<String>,
        document_type: Vec<String>,
        finish_after: Option<Duration>,
    ) -> Workflow {
        Workflow {
            workflow_id: ids::workflow_id(),
            template_id,
            started_by: 0,
            document_id,
            document_type,
            program,
            parameters: serde_json::Map::new(),
            pc: 0,
            wait: Wait::Nothing,
            process: ProcessStatus::Running,
            error: None,
            started: Instant::now(),
            started_at: SystemTime::now(),
            ended: None,
            finish_after,
            terminated: false,
            activities: Vec::new(),
            tasks: Vec::new(),
            steps: Vec::new(),
            log: Vec::new(),
            wake: Arc::new(Notify::new()),
        }
    }

    /// Whether the instance row is gone: terminated, or ended `finish_after` ago.
    pub(crate) fn finished(&self, now: Instant) -> bool {
        self.terminated
            || match (self.ended, self.finish_after) {
                (Some(ended), Some(after)) => now >= ended + after,
                _ => false,
            }
    }

    /// An instant of this workflow on the wall clock.
    pub(crate) fn wall(&self, at: Instant) -> SystemTime {
        self.started_at + at.saturating_duration_since(self.started)
    }

    /// The state as of `now`; the caller has advanced the engine to `now` first.
    pub(crate) fn state(&self, now: Instant) -> WorkflowState {
        let latest = self.activities.last().map(ActivityRun::state);
        let latest = latest.as_ref();
        let text = |f: fn(&ActivityState) -> &String| latest.map(f).cloned().unwrap_or_default();
        WorkflowState {
            workflow_id: self.workflow_id.clone(),
            code: text(|a| &a.code),
            activity_name: text(|a| &a.activity_name),
            event_id: text(|a| &a.event_id),
            event_token: text(|a| &a.event_token),
            status: latest.map_or(WorkflowStatus::Closed, |a| a.status),
            finished: self.finished(now),
            is_timeout: latest.is_some_and(|a| a.is_timeout),
            return_values: latest.map_or_else(
                || serde_json::Value::Object(serde_json::Map::new()),
                |a| a.return_values.clone(),
            ),
            log: self.log.clone(),
            deliveries: latest.map(|a| a.deliveries.clone()).unwrap_or_default(),
            use_subscription: latest.is_some_and(|a| a.use_subscription),
            timeout_duration: latest.map_or(0, |a| a.timeout_duration),
            handler: text(|a| &a.handler),
            body: text(|a| &a.body),
            started_at: latest.map_or(self.started_at, |a| a.started_at),
            closed_at: latest.and_then(|a| a.closed_at),
            template_id: self.template_id,
            document_id: self.document_id.clone(),
            process_status: self.process,
            error: self.error.clone(),
            ended_at: self.ended.map(|at| self.wall(at)),
            steps: self.steps.clone(),
            activities: self.activities.iter().map(ActivityRun::state).collect(),
            tasks: self.tasks.iter().map(|t| t.state.clone()).collect(),
        }
    }
}

/// `bizproc.event.send` (`log_only = false`) and `bizproc.activity.log` (`log_only = true`).
pub(crate) fn external_event(
    portal: &mut PortalState,
    params: &Array,
    log_only: bool,
) -> Result<Param, RestError> {
    let params = upper_keys(params);
    let token = params.get("EVENT_TOKEN").and_then(Param::php_string).unwrap_or_default();
    let Some(parts) = event_token::verify(&portal.signer_key, &token) else {
        return Err(RestError::access_denied(None));
    };
    let log_line = if log_only {
        let message = params.get("LOG_MESSAGE").unwrap_or(&Param::Null);
        if message.is_empty() {
            return Err(RestError::bad_request("ERROR_EMPTY_LOG_MESSAGE", "Empty log message!"));
        }
        message.php_string().unwrap_or_else(|| "Array".to_owned())
    } else {
        // Empty or non-string → the default line (§3.1).
        match params.get("LOG_MESSAGE") {
            Some(Param::Str(s)) if !s.is_empty() => s.clone(),
            _ => DEFAULT_LOG_MESSAGE.to_owned(),
        }
    };
    let lock_window = portal.lock_window();
    let now = Instant::now();
    let workflow_id = parts.workflow_id.clone();
    if !portal.workflows.contains_key(&workflow_id) {
        return Err(not_found());
    }
    engine::advance(portal, &workflow_id, now);
    let Some(wf) = portal.workflows.get_mut(&workflow_id) else {
        return Err(not_found());
    };
    if wf.finished(now) {
        return Err(not_found());
    }
    if wf.activities.last().is_some_and(|run| now < run.started + lock_window) {
        // The persister still owns the instance right after dispatch (§2.9, §3.3).
        return Err(RestError::bad_request("423", "The workflow is hung or being executed"));
    }
    // Closed activity, another activity or a stale event ID: a silent no-op (§3.1 steps 1, 3).
    let Wait::Activity(current) = wf.wait else {
        return Ok(Param::Bool(true));
    };
    let Some(run) = wf.activities.get_mut(current).filter(|run| {
        run.status == WorkflowStatus::Waiting
            && run.activity_name == parts.activity_name
            && run.event_id == parts.event_id
    }) else {
        return Ok(Param::Bool(true));
    };
    if log_only {
        wf.log.push(log_line);
        return Ok(Param::Bool(true));
    }
    if let Some(Param::Array(values)) = params.get("RETURN_VALUES") {
        for (name, value) in values {
            let registered = run.return_properties.keys().find(|id| id.eq_ignore_ascii_case(name));
            if let Some(id) = registered.cloned() {
                run.return_values.insert(id, value.clone());
            }
        }
    }
    run.status = WorkflowStatus::Closed;
    run.closed_at = Some(now);
    wf.log.push(log_line);
    tracing::info!(workflow_id, "activity closed by event.send");
    // The workflow continues from here (§3.1 step 6).
    engine::advance(portal, &workflow_id, now);
    Ok(Param::Bool(true))
}

/// "The business process is not found." with the numeric-string code of the newest source (§3.3).
fn not_found() -> RestError {
    RestError::bad_request("404", "The business process is not found.")
}

//! Workflow instances waiting on one activity: their states (Waiting, Closed, TimedOut), the
//! timeout, and `bizproc.event.send` / `bizproc.activity.log` (protocol doc §2.7, §3).
//!
//! Time-driven transitions are evaluated when the workflow is looked at, against the clock, so
//! a timeout fires exactly at `started + timeout_duration` without a timer task: whoever asks
//! first (a REST call or a test reading the state) sees it already happened.

use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::clock;
use crate::event_token;
use crate::param::{Array, Param, upper_keys};
use crate::portal::PortalState;
use crate::rest::RestError;

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

/// A workflow as tests inspect it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowState {
    pub workflow_id: String,
    pub code: String,
    pub activity_name: String,
    pub event_id: String,
    pub event_token: String,
    pub status: WorkflowStatus,
    /// The instance is gone: `event.send` now answers "404".
    pub finished: bool,
    pub is_timeout: bool,
    /// Return values by their registered IDs (matched case-insensitively, §3.1).
    pub return_values: serde_json::Value,
    /// Tracking-log lines (`LOG_MESSAGE`, `activity.log`).
    pub log: Vec<String>,
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

/// The portal's record of one workflow instance.
#[derive(Debug, Clone)]
pub(crate) struct Workflow {
    pub(crate) workflow_id: String,
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
    pub(crate) finish_after: Option<Duration>,
    pub(crate) terminated: bool,
    pub(crate) return_properties: Array,
    pub(crate) return_values: Array,
    pub(crate) log: Vec<String>,
    pub(crate) deliveries: Vec<Delivery>,
    pub(crate) handler: String,
    pub(crate) body: String,
}

impl Workflow {
    /// Applies the timeout if its moment has passed (§2.7: IsTimeout = 1, close).
    pub(crate) fn advance(&mut self, now: Instant) {
        if self.status != WorkflowStatus::Waiting || self.timeout_duration == 0 {
            return;
        }
        let due = self.started + Duration::from_secs(self.timeout_duration);
        if now >= due {
            self.status = WorkflowStatus::TimedOut;
            self.closed_at = Some(due);
            tracing::info!(workflow_id = self.workflow_id, "activity timed out");
        }
    }

    /// Whether the instance row is gone (finished or terminated).
    pub(crate) fn finished(&self, now: Instant) -> bool {
        self.terminated
            || match (self.closed_at, self.finish_after) {
                (Some(closed), Some(after)) => now >= closed + after,
                _ => false,
            }
    }

    pub(crate) fn state(&mut self) -> WorkflowState {
        let now = Instant::now();
        self.advance(now);
        let mut return_values = Param::Array(self.return_values.clone()).to_json();
        if self.return_values.is_empty() {
            return_values = serde_json::Value::Object(serde_json::Map::new());
        }
        WorkflowState {
            workflow_id: self.workflow_id.clone(),
            code: self.code.clone(),
            activity_name: self.activity_name.clone(),
            event_id: self.event_id.clone(),
            event_token: self.event_token.clone(),
            status: self.status,
            finished: self.finished(now),
            is_timeout: self.status == WorkflowStatus::TimedOut,
            return_values,
            log: self.log.clone(),
            deliveries: self.deliveries.clone(),
            use_subscription: self.use_subscription,
            timeout_duration: self.timeout_duration,
            handler: self.handler.clone(),
            body: self.body.clone(),
            started_at: self.started_at,
            // The monotonic moment of closing, placed on the wall clock relative to the start.
            closed_at: self
                .closed_at
                .map(|closed| self.started_at + closed.saturating_duration_since(self.started)),
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
    let Some(wf) = portal.workflows.get_mut(&parts.workflow_id) else {
        return Err(not_found());
    };
    wf.advance(now);
    if wf.finished(now) {
        return Err(not_found());
    }
    if now < wf.started + lock_window {
        // The persister still owns the instance right after dispatch (§2.9, §3.3).
        return Err(RestError::bad_request("423", "The workflow is hung or being executed"));
    }
    // Closed activity, another activity or a stale event ID: a silent no-op (§3.1 steps 1, 3).
    if wf.status != WorkflowStatus::Waiting
        || wf.activity_name != parts.activity_name
        || wf.event_id != parts.event_id
    {
        return Ok(Param::Bool(true));
    }
    wf.log.push(log_line);
    if log_only {
        return Ok(Param::Bool(true));
    }
    if let Some(Param::Array(values)) = params.get("RETURN_VALUES") {
        for (name, value) in values {
            let registered = wf.return_properties.keys().find(|id| id.eq_ignore_ascii_case(name));
            if let Some(id) = registered.cloned() {
                wf.return_values.insert(id, value.clone());
            }
        }
    }
    wf.status = WorkflowStatus::Closed;
    wf.closed_at = Some(now);
    tracing::info!(workflow_id = wf.workflow_id, "activity closed by event.send");
    Ok(Param::Bool(true))
}

/// "The business process is not found." with the numeric-string code of the newest source (§3.3).
fn not_found() -> RestError {
    RestError::bad_request("404", "The business process is not found.")
}

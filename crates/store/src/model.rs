//! The store's vocabulary: ids, states, outcomes, leases and the records the store takes and
//! returns. Plain data only — no SQL; the files that hold the SQL read and write these types.

use std::fmt;

use serde_json::Value;

/// A closed set of values stored as text (a state, a kind, an outcome): every value, and the
/// text each is stored as. Reading one back goes through [`crate::sql::decode`].
pub(crate) trait Stored: Copy + 'static {
    /// What the value is, for the error when a stored text is none of them.
    const WHAT: &'static str;
    /// Every value.
    const EVERY: &'static [Self];
    /// The text it is stored as.
    fn stored(self) -> &'static str;
}

/// Writes a [`Stored`] vocabulary's `ALL`, `as_str` and `Stored` impl from the one list of its
/// values and the texts they are stored as. A macro because a function cannot write a `match`
/// over an enum's variants, and that `match` is what makes the compiler refuse a value added
/// without its text.
macro_rules! stored_as {
    ($vocabulary:ident, $what:literal, { $($value:ident => $text:literal),+ $(,)? }) => {
        impl $vocabulary {
            /// Every value, in the order they are declared.
            pub const ALL: [$vocabulary; [$($text),+].len()] = [$($vocabulary::$value),+];

            /// The text the value is stored and shown as.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($vocabulary::$value => $text,)+
                }
            }
        }

        impl Stored for $vocabulary {
            const WHAT: &'static str = $what;
            const EVERY: &'static [$vocabulary] = &$vocabulary::ALL;
            fn stored(self) -> &'static str {
                self.as_str()
            }
        }
    };
}

/// A job's id: assigned at enqueue, never reused — connectors get it as their idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub i64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobState {
    /// Stored, waiting for a worker.
    Queued,
    /// A worker holds it under a lease.
    Running,
    /// An attempt failed; it runs again at `next_run_at`.
    RetryWait,
    /// The result is stored; the outbox sends it with `bizproc.event.send`.
    Delivering,
    /// Finished: the result was delivered, or there was nothing to send.
    Done,
    /// Ended without a delivered result; `dead_reason` says why.
    Dead,
}

stored_as!(JobState, "job state", {
    Queued => "queued",
    Running => "running",
    RetryWait => "retry_wait",
    Delivering => "delivering",
    Done => "done",
    Dead => "dead",
});

impl JobState {
    /// The state named `text` (as written by [`JobState::as_str`]).
    pub fn parse(text: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|state| state.as_str() == text)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a stored result is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResultKind {
    /// The connector's values.
    Success,
    /// The action's declared fallback values (the deadline passed, the error was fatal, or an
    /// operator cancelled the job with its fallback).
    Fallback,
    /// Values an operator typed in (completed by hand).
    Manual,
}

stored_as!(ResultKind, "result kind", {
    Success => "success",
    Fallback => "fallback",
    Manual => "manual",
});

/// How a job came out, as operators read it: `ok`, `fallback`, `manual` or `dead`
/// ([`Job::outcome`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobOutcome {
    /// The connector's result.
    Ok,
    /// The action's fallback values.
    Fallback,
    /// Values an operator typed in.
    Manual,
    /// Dead: no result reached the workflow (`dead_reason` says why).
    Dead,
}

impl JobOutcome {
    /// The word operators read: `ok`, `fallback`, `manual`, `dead`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobOutcome::Ok => "ok",
            JobOutcome::Fallback => "fallback",
            JobOutcome::Manual => "manual",
            JobOutcome::Dead => "dead",
        }
    }
}

/// A call to store: what the intake decoded, in plain strings and JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub member_id: String,
    pub action_code: String,
    /// The dedupe key: a second job with the same token is not created.
    pub event_token: String,
    pub workflow_id: String,
    /// The id of the document the call is about (`DEAL_42`), so operators can find its jobs;
    /// `None` for jobs stored before it was kept.
    pub document_id: Option<String>,
    /// The call as the host serializes it; `payload_version` says which format.
    pub payload: Value,
    pub payload_version: i32,
    /// `false` when the action returns nothing (`use_subscription = N`): it ends `done`.
    pub waits_for_result: bool,
    /// When the failure policy takes over (Unix ms).
    pub deadline_at: i64,
}

/// What [`Store::enqueue`](crate::Store::enqueue) did with one [`NewJob`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    Created(JobId),
    /// A job with this `event_token` already existed (or came earlier in the same batch).
    Duplicate(JobId),
}

impl Enqueued {
    pub fn id(self) -> JobId {
        match self {
            Enqueued::Created(id) | Enqueued::Duplicate(id) => id,
        }
    }
}

/// What an attempt tried to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptKind {
    /// Run the connector.
    Execute,
    /// Send the result with `bizproc.event.send`.
    Deliver,
}

stored_as!(AttemptKind, "attempt kind", { Execute => "execute", Deliver => "deliver" });

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptOutcome {
    /// It worked (the connector returned values, or the portal accepted the result).
    Ok,
    /// A transient failure: try again later.
    Retryable,
    /// A permanent failure: the failure policy applies (or the delivery is dead).
    Fatal,
    /// The per-attempt timeout passed.
    Timeout,
    /// The connector panicked.
    Panic,
    /// The job's deadline passed.
    Deadline,
    /// The input was invalid (a property failed its declared type).
    Invalid,
    /// The worker's lease expired before it reported (it died or stalled); written by the store
    /// when another worker re-claims the job.
    LeaseExpired,
    /// An operator cancelled the job, or the portal uninstalled the app; written by the store.
    Cancelled,
    /// A delivery: the portal answered "not found" to a result whose earlier send may already
    /// have reached it (see [`Job::delivery_unconfirmed`]).
    Unconfirmed,
}

stored_as!(AttemptOutcome, "attempt outcome", {
    Ok => "ok",
    Retryable => "retryable",
    Fatal => "fatal",
    Timeout => "timeout",
    Panic => "panic",
    Deadline => "deadline",
    Invalid => "invalid",
    LeaseExpired => "lease_expired",
    Cancelled => "cancelled",
    Unconfirmed => "unconfirmed",
});

/// One recorded attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub job_id: JobId,
    pub kind: AttemptKind,
    /// 1, 2, … per kind: the job's `attempts` (or `delivery_attempts`) when it was claimed.
    pub number: u32,
    /// The worker that claimed it.
    pub worker: String,
    pub started_at: i64,
    /// `None` while it is under way.
    pub finished_at: Option<i64>,
    pub outcome: Option<AttemptOutcome>,
    pub error: Option<String>,
}

/// The right to finish one attempt: whoever holds the current lease of a job. Opaque so it
/// cannot be forged; a lease that is no longer current is refused with [`Fenced::LeaseLost`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub(crate) job_id: JobId,
    pub(crate) kind: AttemptKind,
    pub(crate) owner: String,
    pub(crate) number: i32,
    pub(crate) until: i64,
}

impl Lease {
    pub fn job_id(&self) -> JobId {
        self.job_id
    }
    pub fn kind(&self) -> AttemptKind {
        self.kind
    }
    pub fn owner(&self) -> &str {
        &self.owner
    }
    /// The attempt (or delivery attempt) number this lease was granted for: 1, 2, …
    pub fn number(&self) -> u32 {
        u32::try_from(self.number).unwrap_or(0)
    }
    /// When it expires (Unix ms); after that another worker may claim the job.
    pub fn until(&self) -> i64 {
        self.until
    }
}

/// Whether a fenced transition happened.
#[must_use = "a lost lease means another worker owns the job now: drop the outcome"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fenced {
    Applied,
    /// The lease is not current any more (expired and re-claimed, cancelled, or already
    /// finished): nothing was changed.
    LeaseLost,
}

impl Fenced {
    pub fn is_applied(self) -> bool {
        self == Fenced::Applied
    }
}

/// A job handed to a worker by [`Store::claim_due`](crate::Store::claim_due).
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedJob {
    pub id: JobId,
    /// The call, as it was enqueued.
    pub call: NewJob,
    /// This attempt's number: 1 on the first run.
    pub attempt: u32,
    pub created_at: i64,
    pub lease: Lease,
}

/// One stored result to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: JobId,
    pub action_code: String,
    pub event_token: String,
    pub workflow_id: String,
    /// The stored result: send exactly this (it is never recomputed).
    pub result: Value,
    pub result_kind: ResultKind,
    /// This delivery attempt's number: 1 on the first send.
    pub attempt: u32,
    /// An earlier send may have reached the portal (see [`Job::send_uncertain`]).
    pub send_uncertain: bool,
    pub deadline_at: i64,
    /// When the call was stored (Unix ms): the start of its call-to-result latency.
    pub created_at: i64,
    pub lease: Lease,
}

/// The results due for one portal, at most `max_per_portal` of them (one `batch` call).
#[derive(Debug, Clone, PartialEq)]
pub struct PortalBatch {
    pub member_id: String,
    /// Oldest-due first.
    pub jobs: Vec<Delivery>,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: JobId,
    /// The call, as it was enqueued.
    pub call: NewJob,
    pub state: JobState,
    /// Execution attempts so far.
    pub attempts: u32,
    /// queued / retry_wait: when it runs; running: when its lease expires.
    pub next_run_at: Option<i64>,
    pub lease_owner: Option<String>,
    pub lease_until: Option<i64>,
    pub result: Option<Value>,
    pub result_kind: Option<ResultKind>,
    pub delivery_attempts: u32,
    /// delivering: when it is sent; while a sender holds it, when its lease expires.
    pub next_delivery_at: Option<i64>,
    pub delivered_at: Option<i64>,
    /// An earlier send of the result may have reached the portal though nothing recorded its
    /// answer (the sender died, or the request failed after the portal may have run it): the
    /// workflow may have the result already, so it is not sent again without an operator's
    /// `--force`.
    pub send_uncertain: bool,
    /// `done` without the portal's word: a resend after an uncertain send was answered "not
    /// found", which is what a workflow that already took the result answers (protocol §3.3).
    pub delivery_unconfirmed: bool,
    pub dead_reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Job {
    /// How the job came out: `dead` when it is, else its result's kind; `None` while it has
    /// neither (and for a finished job that returns nothing).
    pub fn outcome(&self) -> Option<JobOutcome> {
        if self.state == JobState::Dead {
            return Some(JobOutcome::Dead);
        }
        self.result_kind.map(|kind| match kind {
            ResultKind::Success => JobOutcome::Ok,
            ResultKind::Fallback => JobOutcome::Fallback,
            ResultKind::Manual => JobOutcome::Manual,
        })
    }
}

/// A job with its whole history.
#[derive(Debug, Clone, PartialEq)]
pub struct JobDetail {
    pub job: Job,
    /// Execute attempts, then deliver attempts, each in number order.
    pub attempts: Vec<Attempt>,
    /// What operators did to it, oldest first.
    pub history: Vec<HistoryEntry>,
}

/// What an operator did to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperatorAction {
    /// Ran it again now, or sent its stored result again ([`Store::retry_job`](crate::Store::retry_job)).
    Retry,
    /// Stopped it; nothing was sent.
    Cancel,
    /// Stopped it and sent the action's fallback values.
    CancelWithFallback,
    /// Sent values typed in by hand.
    Complete,
    /// Sent its delivered result again, forced.
    Resend,
}

stored_as!(OperatorAction, "operator action", {
    Retry => "retry",
    Cancel => "cancel",
    CancelWithFallback => "cancel_with_fallback",
    Complete => "complete",
    Resend => "resend",
});

/// One line of a job's history: who did what, when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub at: i64,
    /// Who: `cli:<user>` from the command line, the console's user name from the console.
    pub actor: String,
    pub action: OperatorAction,
    /// What came of it, in words (`requeued`, `result sent again, forced`, …).
    pub detail: Option<String>,
}

/// Which jobs [`Store::list_jobs`](crate::Store::list_jobs) returns: newest first. Every
/// condition given must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub member_id: Option<String>,
    pub action_code: Option<String>,
    pub workflow_id: Option<String>,
    /// The document's id (`DEAL_42`).
    pub document_id: Option<String>,
    /// Only jobs created at or after this time (Unix ms).
    pub created_since: Option<i64>,
    /// Only jobs created before this time (Unix ms).
    pub created_until: Option<i64>,
    /// Only jobs older than this one (paging: pass the last id of the previous page).
    pub before: Option<JobId>,
    pub limit: u32,
}

impl Default for JobFilter {
    fn default() -> JobFilter {
        JobFilter {
            state: None,
            member_id: None,
            action_code: None,
            workflow_id: None,
            document_id: None,
            created_since: None,
            created_until: None,
            before: None,
            limit: 50,
        }
    }
}

/// How many jobs are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateCounts {
    pub queued: u64,
    pub running: u64,
    pub retry_wait: u64,
    pub delivering: u64,
    pub done: u64,
    pub dead: u64,
}

impl StateCounts {
    pub fn get(&self, state: JobState) -> u64 {
        match state {
            JobState::Queued => self.queued,
            JobState::Running => self.running,
            JobState::RetryWait => self.retry_wait,
            JobState::Delivering => self.delivering,
            JobState::Done => self.done,
            JobState::Dead => self.dead,
        }
    }

    pub(crate) fn slot(&mut self, state: JobState) -> &mut u64 {
        match state {
            JobState::Queued => &mut self.queued,
            JobState::Running => &mut self.running,
            JobState::RetryWait => &mut self.retry_wait,
            JobState::Delivering => &mut self.delivering,
            JobState::Done => &mut self.done,
            JobState::Dead => &mut self.dead,
        }
    }
}

/// How many jobs of one portal and action are in one state
/// ([`Store::job_counts`](crate::Store::job_counts)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCount {
    pub member_id: String,
    pub action_code: String,
    pub state: JobState,
    pub jobs: u64,
}

/// What an operator's retry did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retried {
    /// The job runs again now (it had no result).
    Requeued,
    /// Its stored result is sent again now; it is not recomputed.
    Redelivering,
}

/// The reason an operator's cancel leaves on a job, and the reason its fallback is sent with.
pub const CANCELLED_BY_OPERATOR: &str = "cancelled by operator";

/// What closes the attempt under way when an operator completes a job by hand.
pub const COMPLETED_BY_OPERATOR: &str = "completed by hand by an operator";

/// Whether the app is installed on a portal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallationStatus {
    Active,
    Uninstalled,
}

stored_as!(InstallationStatus, "installation status", {
    Active => "active",
    Uninstalled => "uninstalled",
});

/// What ONAPPINSTALL / ONAPPUPDATE tell us about a portal. `Debug` hides the secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct NewInstallation {
    pub member_id: String,
    pub domain: String,
    pub client_endpoint: String,
    pub server_endpoint: String,
    pub application_token: String,
    pub access_token: String,
    pub refresh_token: Option<String>,
    /// When the access token expires (Unix ms).
    pub expires_at: i64,
}

/// A stored installation, secrets decrypted. `Debug` hides the secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct Installation {
    /// What the last ONAPPINSTALL / ONAPPUPDATE (or token refresh) told us about the portal.
    pub portal: NewInstallation,
    pub status: InstallationStatus,
    /// The first install, or the reinstall after an uninstall.
    pub installed_at: i64,
    pub updated_at: i64,
}

impl fmt::Debug for NewInstallation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = [&self.member_id, &self.domain, &self.client_endpoint, &self.server_endpoint];
        debug_masked(f, "NewInstallation", shown, self.refresh_token.is_some(), self.expires_at)
            .finish()
    }
}

impl fmt::Debug for Installation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.portal;
        let shown = [&p.member_id, &p.domain, &p.client_endpoint, &p.server_endpoint];
        debug_masked(f, "Installation", shown, p.refresh_token.is_some(), p.expires_at)
            .field("status", &self.status)
            .field("installed_at", &self.installed_at)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

/// The fields both installation records show as they are, in order.
const SHOWN: [&str; 4] = ["member_id", "domain", "client_endpoint", "server_endpoint"];

/// How a secret shows in `Debug`.
const MASKED: &str = "***";

/// Starts the `Debug` both installation records share: the [`SHOWN`] fields, then the three
/// secrets masked, then the expiry. The caller adds its own fields and finishes.
fn debug_masked<'a, 'b: 'a>(
    f: &'a mut fmt::Formatter<'b>,
    name: &str,
    shown: [&String; 4],
    has_refresh_token: bool,
    expires_at: i64,
) -> fmt::DebugStruct<'a, 'b> {
    let mut out = f.debug_struct(name);
    for (field, value) in SHOWN.into_iter().zip(shown) {
        out.field(field, value);
    }
    out.field("application_token", &MASKED)
        .field("access_token", &MASKED)
        .field("refresh_token", &has_refresh_token.then_some(MASKED))
        .field("expires_at", &expires_at);
    out
}

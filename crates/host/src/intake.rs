//! Intake: the HTTP endpoint portals POST activity calls to. It authenticates the call, decodes
//! it, checks its properties, stores it durably and answers 200 — and never calls Bitrix24 or a
//! connector (design.md §3). Concurrent calls are committed together (group commit): one
//! transaction and one fsync acknowledge a whole batch.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use b24::incoming::{ActivityCall, Limits, quoted};
use b24::report::ErrorChain;
use store::{Enqueued, NewJob, Store};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::Host;
use crate::catalog::Action;
use crate::clock;
use crate::console::metrics::{self, CallAnswer};
use crate::loops::Wakeups;
use crate::payload::{self, JobPayload, PAYLOAD_VERSION};
use crate::portals::{self, Lookup};

/// The most calls one transaction commits.
const MAX_GROUP: usize = 512;

/// The intake's shared state.
pub struct Intake {
    host: Arc<Host>,
    committer: mpsc::Sender<Pending>,
    /// Large bodies decoded at once: at most half the cores, so that a flood of worst-case
    /// bodies (decoded before authentication, so anyone can send them) leaves the runtime
    /// threads the CPU they need to ack good calls.
    large_decodes: tokio::sync::Semaphore,
}

/// Route: `POST /bitrix/actions/{code}`.
pub fn router(intake: Arc<Intake>) -> Router {
    Router::new().route(crate::routes::ACTION, post(take_call)).with_state(intake)
}

impl Intake {
    /// Starts the committer task, which stores calls in groups and wakes the workers after
    /// each commit.
    pub fn start(host: Arc<Host>, wakeups: Arc<Wakeups>) -> Arc<Intake> {
        let (sender, receiver) = mpsc::channel(MAX_GROUP * 8);
        tokio::spawn(commit_groups(host.store.clone(), receiver, wakeups));
        Arc::new(Intake {
            host,
            committer: sender,
            large_decodes: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
            ),
        })
    }
}

/// What a call is answered with when it is refused; nothing is stored.
type Refusal = (StatusCode, String);

/// Bodies larger than this are decoded on a blocking thread, so that one big body does not
/// hold a runtime thread (and the acks of the calls queued behind it) while it is decoded.
const DECODE_INLINE_BYTES: usize = 16 * 1024;

/// Answers a call, and counts the answer with the time it took.
async fn take_call(
    State(intake): State<Arc<Intake>>,
    Path(code): Path<String>,
    body: Bytes,
) -> Result<&'static str, Refusal> {
    let arrived = Instant::now();
    let answer = answer_call(intake, code, body).await;
    let counted = match &answer {
        Ok(Enqueued::Created(_)) => CallAnswer::New,
        Ok(Enqueued::Duplicate(_)) => CallAnswer::Duplicate,
        Err((status, _)) => CallAnswer::Refused(*status),
    };
    metrics::call_answered(counted, arrived.elapsed());
    answer.map(|_| "OK")
}

/// What the answer and the log line say about a call for an action this host does not run.
pub const NOT_CONFIGURED: &str = "it was removed from the configuration (or never in it); \
    `b24act sync` deletes its registration from the portal, so workflows stop calling it";

/// Decodes, authenticates and stores a call, or says why not.
async fn answer_call(intake: Arc<Intake>, code: String, body: Bytes) -> Result<Enqueued, Refusal> {
    let received_at = clock::now_ms();
    // Checked before anything is decoded: a call for an action this host does not run is
    // refused, and nothing is stored (a portal still calling it has a stale registration, which
    // a sync deletes unless `app.keep_removed_actions`).
    let Some(action) = intake.host.catalog.get(&code).cloned() else {
        tracing::warn!(code = %quoted(&code), "refused a call for an action that is not configured: {NOT_CONFIGURED}");
        return Err((
            StatusCode::NOT_FOUND,
            format!("no action `{}` is configured on this host: {NOT_CONFIGURED}", quoted(&code)),
        ));
    };
    let limits =
        Limits { max_body_bytes: intake.host.config.server.max_body_bytes, ..Limits::default() };
    let decoded = if body.len() <= DECODE_INLINE_BYTES {
        ActivityCall::from_form(&body, &limits)
    } else {
        let unavailable =
            || (StatusCode::SERVICE_UNAVAILABLE, "the body could not be decoded".to_owned());
        let _turn = intake.large_decodes.acquire().await.map_err(|_| unavailable())?;
        tokio::task::spawn_blocking(move || ActivityCall::from_form(&body, &limits))
            .await
            .map_err(|_| unavailable())?
    };
    let call = decoded.map_err(|error| {
        tracing::warn!(error = %ErrorChain(&error), code = %quoted(&code), "refused a call that does not decode");
        (StatusCode::BAD_REQUEST, error.to_string())
    })?;
    let member_id = call.auth.member_id.as_str().to_owned();
    // Not yet authenticated: what the body says is shown bounded and escaped.
    let span = tracing::info_span!(
        "call",
        portal = %quoted(&member_id),
        code = %quoted(&call.code),
        workflow = %quoted(&call.workflow_id)
    );
    // Instrumented, not entered: a guard held across `.await` leaks the span into whatever else
    // runs on the thread (log lines grew without bound and tracing-subscriber panicked under load).
    store_call(intake, call, action, code, member_id, received_at).instrument(span).await
}

/// Authenticates a decoded call, commits it with its group and answers.
async fn store_call(
    intake: Arc<Intake>,
    call: ActivityCall,
    action: Arc<Action>,
    code: String,
    member_id: String,
    received_at: i64,
) -> Result<Enqueued, Refusal> {
    intake
        .host
        .portals
        .authenticate(&member_id, &call.auth.application_token, Lookup::Remembered)
        .await
        .map_err(|error| portals::refusal("a call", &member_id, &error))?;
    if call.code != code {
        tracing::warn!(path_code = %quoted(&code), "call's code differs from its handler URL");
        return Err((
            StatusCode::BAD_REQUEST,
            format!(
                "field `code`: `{}` was posted to the handler of `{}`",
                quoted(&call.code),
                quoted(&code)
            ),
        ));
    }
    let job = new_job(&action, &call, received_at);
    let (reply, answer) = oneshot::channel();
    let unavailable = || (StatusCode::SERVICE_UNAVAILABLE, "b24act is shutting down".to_owned());
    intake.committer.send(Pending { job, reply }).await.map_err(|_| unavailable())?;
    let enqueued = match answer.await.map_err(|_| unavailable())? {
        Ok(enqueued) => enqueued,
        Err(chain) => {
            // Bitrix24 does not resend a call (§2.6): this one is lost unless the store recovers
            // and the portal's admin restarts the workflow. Say so loudly.
            tracing::error!(error = %chain, "COULD NOT STORE A CALL: the workflow will wait for its timeout");
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "the call could not be stored".to_owned(),
            ));
        }
    };
    match enqueued {
        Enqueued::Created(id) => tracing::info!(job = id.0, "call stored"),
        Enqueued::Duplicate(id) => tracing::info!(job = id.0, "duplicate call: already stored"),
    }
    Ok(enqueued)
}

/// The job for a call to a configured action. A call whose properties do not fit the
/// declaration is still stored: the worker resolves it through the failure policy, so nothing
/// is lost and the workflow does not hang.
fn new_job(action: &Action, call: &ActivityCall, received_at: i64) -> NewJob {
    let typed = action.typed_properties(&call.properties);
    if let Err(problem) = &typed {
        tracing::warn!(%problem, "call's properties are invalid; the failure policy will answer");
    }
    let deadline_at = payload::deadline(received_at, call, &action.config.retry);
    NewJob {
        member_id: call.auth.member_id.as_str().to_owned(),
        action_code: call.code.clone(),
        event_token: call.event_token.as_str().to_owned(),
        workflow_id: call.workflow_id.clone(),
        document_id: Some(call.document_id.id.clone()),
        payload: serde_json::to_value(JobPayload::from_call(call, typed)).unwrap_or_default(),
        payload_version: PAYLOAD_VERSION,
        waits_for_result: call.waits_for_result,
        deadline_at,
    }
}

/// A call waiting for its group's commit; a failed commit answers with the store error's
/// whole chain (it is shared by every call of the group, so it travels as text).
struct Pending {
    job: NewJob,
    reply: oneshot::Sender<Result<Enqueued, String>>,
}

/// Takes every call waiting (up to [`MAX_GROUP`]), commits them in one transaction, answers
/// each. While a commit runs the next group gathers, so throughput grows with load.
async fn commit_groups(
    store: Arc<Store>,
    mut receiver: mpsc::Receiver<Pending>,
    wakeups: Arc<Wakeups>,
) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while receiver.recv_many(&mut group, MAX_GROUP).await > 0 {
        // Moved, not cloned: each call's payload is built once, on its way in.
        let (jobs, replies): (Vec<NewJob>, Vec<_>) =
            group.drain(..).map(|pending| (pending.job, pending.reply)).unzip();
        match store.enqueue(&jobs, clock::now_ms()).await {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
                wakeups.job_arrived();
            }
            Err(error) => {
                let message = ErrorChain(&error).to_string();
                for reply in replies {
                    let _ = reply.send(Err(message.clone()));
                }
            }
        }
    }
}

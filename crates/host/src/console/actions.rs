//! What an operator does from the console: on a job, retry now, cancel and send the fallback,
//! complete by hand, re-send a result; on a portal, remove its installation. Each is a `POST`
//! form with the form token ([`Operator::verify_csrf`], checked before anything else) and a
//! confirmation box; the actor recorded is the operator's name. The store refuses what is
//! unsafe and its message is shown next to the form (409); values typed in that do not fit the
//! action's return properties are shown with the form and what was typed (422). What succeeds
//! answers 303 to the job's (or the portals') page with a flash saying what was done.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::post;
use axum::{Extension, Form, Router};
use b24::report::ErrorChain;
use store::{JobId, Retried};

use super::Console;
use super::auth::{CSRF_FIELD, Operator, Refused};
use super::pages::{Notice, PageError, job_page, parse_job_id};
use super::view;
use crate::clock;
use crate::operator::{self, OperatorError};
use crate::routes;

/// The field a form's confirmation box sends, and its value when ticked.
pub const CONFIRM_FIELD: &str = "confirm";
/// The field that allows sending a result the workflow may already have.
pub const FORCE_FIELD: &str = "force";
/// The value of a ticked box.
const TICKED: &str = "yes";
/// The prefix of the complete-by-hand form's fields: `value.<return property>`.
pub const VALUE_PREFIX: &str = "value.";

/// Routes: `POST /jobs/{id}/{action}` and `POST /portals/{member_id}/remove`.
pub fn router() -> Router<Arc<Console>> {
    Router::new()
        .route(routes::CONSOLE_JOB_ACTION, post(act_on_job))
        .route(routes::CONSOLE_PORTAL_REMOVE, post(remove_portal))
}

/// What a flash after an action says, by the `done` the redirect names; `None` for anything
/// else, so nothing from the query is echoed.
pub fn flash(done: &str) -> Option<&'static str> {
    Some(match done {
        "requeued" => "Retried: the job runs again now.",
        "redelivering" => "Retried: its stored result is sent again now, not recomputed.",
        "cancelled" => "Cancelled: the action's fallback values are sent to the workflow now.",
        "completed" => "Completed by hand: the values are sent to the workflow now.",
        "resent" => {
            "Re-sent: the stored result is sent again now (\"not found\" means the workflow had it)."
        }
        "removed" => {
            "Portal removed: its calls are refused, its tokens forgotten, its unfinished jobs stopped."
        }
        _ => return None,
    })
}

/// A form as it was sent: every field, in order (the complete-by-hand form's are dynamic).
type Fields = Vec<(String, String)>;

fn field<'a>(fields: &'a Fields, name: &str) -> Option<&'a str> {
    fields.iter().find(|(field, _)| field == name).map(|(_, value)| value.as_str())
}

fn ticked(fields: &Fields, name: &str) -> bool {
    field(fields, name) == Some(TICKED)
}

/// The operator, and their form token checked; a read-only console has no operator, and its
/// guard refuses every `POST` before it gets here.
fn checked(operator: Option<Extension<Operator>>, fields: &Fields) -> Result<Operator, Refused> {
    let Some(Extension(operator)) = operator else {
        return Err(Refused::forbidden(
            "the console is read-only: set console.token to act on jobs",
        ));
    };
    operator.verify_csrf(field(fields, CSRF_FIELD).unwrap_or_default())?;
    Ok(operator)
}

/// One of the actions on a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobAction {
    Retry,
    Cancel,
    Complete,
    Resend,
}

impl JobAction {
    fn parse(text: &str) -> Option<JobAction> {
        Some(match text {
            "retry" => JobAction::Retry,
            "cancel" => JobAction::Cancel,
            "complete" => JobAction::Complete,
            "resend" => JobAction::Resend,
            _ => return None,
        })
    }

    /// The form's name on the job page.
    fn form(self) -> &'static str {
        match self {
            JobAction::Retry => "retry",
            JobAction::Cancel => "cancel",
            JobAction::Complete => "complete",
            JobAction::Resend => "resend",
        }
    }
}

/// `POST /jobs/{id}/{action}`.
async fn act_on_job(
    State(console): State<Arc<Console>>,
    operator: Option<Extension<Operator>>,
    Path((id, action)): Path<(String, String)>,
    Form(fields): Form<Fields>,
) -> Result<Response, PageError> {
    let operator = match checked(operator, &fields) {
        Ok(operator) => operator,
        Err(refused) => return Ok(refused.into_response()),
    };
    let id = parse_job_id(&id)?;
    let Some(action) = JobAction::parse(&action) else {
        return Err(PageError::NotFound(format!(
            "no action `{}` on a job",
            view::clip(&action, 40)
        )));
    };
    let refuse =
        |error: String, status| Refusal { error, status, action, typed: typed_values(&fields) };
    let refused = if !ticked(&fields, CONFIRM_FIELD) {
        refuse("Nothing was done: tick the box to confirm.".to_owned(), StatusCode::BAD_REQUEST)
    } else {
        match run(&console, &operator, id, action, &fields).await {
            Ok(done) => return Ok(Redirect::to(&format!("/jobs/{id}?done={done}")).into_response()),
            Err(OperatorError::Value(problem)) => refuse(problem, StatusCode::UNPROCESSABLE_ENTITY),
            Err(error) => match refusal(&error) {
                Some(message) => refuse(message, StatusCode::CONFLICT),
                None => {
                    tracing::error!(job_id = %id, error = %ErrorChain(&error), "a console action could not reach the store");
                    return Err(PageError::Unavailable);
                }
            },
        }
    };
    let notice = Notice {
        error: Some(refused.error),
        form: Some(refused.action.form()),
        typed: refused.typed,
        ..Notice::default()
    };
    job_page(&console, Some(&operator), id, notice, refused.status).await
}

/// Why an action on a job was not done, shown with its form on the job's page.
struct Refusal {
    error: String,
    status: StatusCode,
    action: JobAction,
    /// What was typed into the complete-by-hand form.
    typed: Vec<(String, String)>,
}

/// Does `action` to job `id` as `operator`; what was done, as the flash's key.
async fn run(
    console: &Console,
    operator: &Operator,
    id: JobId,
    action: JobAction,
    fields: &Fields,
) -> Result<&'static str, OperatorError> {
    let host = &console.host;
    let (store, catalog, actor, now) =
        (&host.store, &host.catalog, operator.name.as_str(), clock::now_ms());
    let force = ticked(fields, FORCE_FIELD);
    Ok(match action {
        JobAction::Retry => match store.retry_job(id, None, force, actor, now).await? {
            Retried::Requeued => "requeued",
            Retried::Redelivering => "redelivering",
        },
        JobAction::Cancel => {
            operator::cancel_with_fallback(store, catalog, id, actor, now).await?;
            "cancelled"
        }
        JobAction::Complete => {
            let values = submitted_values(fields);
            operator::complete_by_hand(store, catalog, id, &values, actor, now).await?;
            "completed"
        }
        JobAction::Resend => {
            store.resend_result(id, force, actor, now).await?;
            "resent"
        }
    })
}

/// The complete-by-hand form's inputs as typed, by return property (for showing them again).
fn typed_values(fields: &Fields) -> Vec<(String, String)> {
    fields
        .iter()
        .filter_map(|(name, value)| {
            Some((name.strip_prefix(VALUE_PREFIX)?.to_owned(), value.clone()))
        })
        .collect()
}

/// The values the form gives `complete_by_hand`: an empty input is no value, and an input of a
/// `multiple` property (a text area) gives one value per non-empty line.
fn submitted_values(fields: &Fields) -> Vec<(String, String)> {
    typed_values(fields)
        .into_iter()
        .flat_map(|(name, text)| {
            text.lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .map(|line| (name.clone(), line.to_owned()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The message of an action the store or the action's declaration refused; `None` for a store
/// that could not be reached.
fn refusal(error: &OperatorError) -> Option<String> {
    use store::Error as E;
    match error {
        OperatorError::Store(
            refused @ (E::JobNotFound(_)
            | E::NotAllowed { .. }
            | E::MayBeDelivered { .. }
            | E::NothingToSend { .. }
            | E::HasResult { .. }
            | E::NoResult { .. }
            | E::ResendNeedsForce { .. }),
        ) => Some(refused.to_string()),
        OperatorError::UnknownAction { .. }
        | OperatorError::NoFallback { .. }
        | OperatorError::Value(_) => Some(error.to_string()),
        OperatorError::Store(_) | OperatorError::Encode(_) => None,
    }
}

/// `POST /portals/{member_id}/remove`: stops the portal's work and forgets its tokens, as
/// `b24act portals remove` does; this node forgets what it remembered of the portal at once.
async fn remove_portal(
    State(console): State<Arc<Console>>,
    operator: Option<Extension<Operator>>,
    Path(member_id): Path<String>,
    Form(fields): Form<Fields>,
) -> Result<Response, PageError> {
    let operator = match checked(operator, &fields) {
        Ok(operator) => operator,
        Err(refused) => return Ok(refused.into_response()),
    };
    if !ticked(&fields, CONFIRM_FIELD) {
        let message = "Nothing was done: tick the box to confirm the removal.";
        return Ok((StatusCode::BAD_REQUEST, message).into_response());
    }
    let host = &console.host;
    let Some(stopped) = host.store.remove_installation(&member_id, clock::now_ms()).await? else {
        return Err(PageError::NotFound(format!(
            "no portal `{}` in the store",
            view::clip(&member_id, 80)
        )));
    };
    host.portals.forget(&member_id);
    host.health.clear_all(&member_id);
    tracing::warn!(portal = %member_id, operator = %operator.name, stopped, "portal removed from the console");
    Ok(Redirect::to(&format!("{}?done=removed", routes::CONSOLE_PORTALS)).into_response())
}

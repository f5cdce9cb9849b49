//! The console's pages, rendered on the server from the templates in `templates/console/`
//! (askama: checked when the crate compiles, HTML-escaped by default): the overview, the jobs
//! with their filters, one job with its timeline and the operator's forms, and the portals.
//! What they do to jobs and portals is in [`super::actions`]. Every query a page makes is
//! bounded: lists are paged, counts are one aggregate, the oldest waiting job three index
//! probes (see docs/console.md, "Pages").

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use b24::report::ErrorChain;
use serde::Deserialize;
use store::{Installation, InstallationStatus, Job, JobFilter, JobId, JobState};

use super::auth::{CSRF_FIELD, Operator};
use super::view::{self, Timeline};
use super::{Console, actions};
use crate::clock;
use crate::install::registrations_fingerprint;
use crate::routes;

/// Jobs on one page of the list.
pub const PAGE_SIZE: u32 = 50;

/// Progress lines shown on a job's page.
const MAX_PROGRESS_LINES: u32 = 100;

/// Routes: every page, the stylesheet and the script, and the actions' forms.
pub fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route(routes::CONSOLE_OVERVIEW, get(overview))
        .route(routes::CONSOLE_JOBS, get(jobs))
        .route(routes::CONSOLE_JOB, get(job))
        .route(routes::CONSOLE_PORTALS, get(portals))
        .route(routes::CONSOLE_STYLESHEET, get(stylesheet))
        .route(routes::CONSOLE_SCRIPT, get(script))
        .merge(actions::router())
        .with_state(console)
}

/// What every page's frame shows: its title, the section it belongs to, who is signed in.
pub struct Chrome {
    pub title: String,
    pub section: &'static str,
    /// `None` on a read-only console (no token): no forms are shown.
    pub operator: Option<String>,
}

impl Chrome {
    pub fn new(
        title: impl Into<String>,
        section: &'static str,
        operator: Option<&Operator>,
    ) -> Chrome {
        Chrome { title: title.into(), section, operator: operator.map(|o| o.name.clone()) }
    }
}

/// An answer when a page cannot be made: the store did not answer (503, logged with its
/// chain) or there is no such thing (404).
pub enum PageError {
    Unavailable,
    NotFound(String),
}

impl From<store::Error> for PageError {
    fn from(error: store::Error) -> PageError {
        tracing::error!(error = %ErrorChain(&error), "a console page could not read the store");
        PageError::Unavailable
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            PageError::Unavailable => {
                (StatusCode::SERVICE_UNAVAILABLE, "The store is unavailable; try again.".to_owned())
            }
            PageError::NotFound(message) => (StatusCode::NOT_FOUND, message),
        };
        let page = ErrorPage { chrome: Chrome::new("Error", "", None), message };
        (status, render(&page)).into_response()
    }
}

/// A template as an HTML answer; one that fails to render (it cannot: every value is plain
/// data) is a 500.
pub fn render(page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(error) => {
            tracing::error!(error = %ErrorChain(&error), "a console page failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page failed to render").into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage {
    chrome: Chrome,
    message: String,
}

async fn stylesheet() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("assets/console.css"))
}

async fn script() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], include_str!("assets/console.js"))
}

/// Jobs in each state of one portal or action: a row of the overview's tables.
pub struct CountRow {
    pub name: String,
    /// In the order of [`JobState::ALL`].
    pub counts: Vec<u64>,
    pub total: u64,
}

/// The oldest job whose workflow still waits on its run.
pub struct Oldest {
    pub id: i64,
    pub portal: String,
    pub action: String,
    pub state: String,
    pub arrived: String,
    pub waited: String,
    pub deadline: String,
    pub until: String,
    pub overdue: bool,
    /// How much of its time to the deadline is spent, in percent (0–100).
    pub spent: u32,
}

/// One portal's health on the overview.
pub struct PortalHealthRow {
    pub member_id: String,
    pub domain: String,
    pub status: &'static str,
    pub degraded: Vec<String>,
    pub rate_limited: usize,
    pub refresh_failed: usize,
    pub refreshed: String,
    pub budget_wait: String,
    pub delivering: u64,
}

#[derive(Template)]
#[template(path = "console/overview.html")]
struct OverviewPage {
    chrome: Chrome,
    states: Vec<&'static str>,
    totals: Vec<u64>,
    by_portal: Vec<CountRow>,
    by_action: Vec<CountRow>,
    oldest: Option<Oldest>,
    delivering: u64,
    dead: u64,
    health: Vec<PortalHealthRow>,
    now: String,
}

/// `GET /`: see docs/console.md.
async fn overview(
    State(console): State<Arc<Console>>,
    operator: Option<Extension<Operator>>,
) -> Result<Response, PageError> {
    let host = &console.host;
    let now = clock::now_ms();
    let counts = host.store.job_counts().await?;
    let oldest = host.store.oldest_waiting().await?;
    let installations = host.store.installations().await?;
    let position = |state: JobState| JobState::ALL.iter().position(|s| *s == state).unwrap_or(0);
    let mut by_portal: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let mut by_action: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let mut totals = vec![0; JobState::ALL.len()];
    for count in &counts {
        let slot = position(count.state);
        by_portal.entry(&count.member_id).or_insert_with(|| vec![0; JobState::ALL.len()])[slot] +=
            count.jobs;
        by_action.entry(&count.action_code).or_insert_with(|| vec![0; JobState::ALL.len()])
            [slot] += count.jobs;
        totals[slot] += count.jobs;
    }
    let rows = |map: BTreeMap<&str, Vec<u64>>| -> Vec<CountRow> {
        map.into_iter()
            .map(|(name, counts)| CountRow {
                name: view::clip(name, view::MAX_VALUE_CHARS),
                total: counts.iter().sum(),
                counts,
            })
            .collect()
    };
    let delivering_of =
        |member_id: &str| by_portal.get(member_id).map_or(0, |c| c[position(JobState::Delivering)]);
    let degraded = host.health.degraded();
    let health = installations
        .iter()
        .map(|installation| {
            let member_id = &installation.portal.member_id;
            let activity = host.portals.activity().summary(member_id, now);
            PortalHealthRow {
                member_id: view::clip(member_id, view::MAX_VALUE_CHARS),
                domain: view::clip(&installation.portal.domain, view::MAX_VALUE_CHARS),
                status: installation.status.as_str(),
                degraded: degraded
                    .iter()
                    .filter(|(portal, _)| portal == member_id)
                    .map(|(_, why)| {
                        format!(
                            "{}: {} (since {})",
                            why.cause.as_str(),
                            view::clip(&why.reason, view::MAX_VALUE_CHARS),
                            view::at(why.since)
                        )
                    })
                    .collect(),
                rate_limited: activity.rate_limited,
                refresh_failed: activity.refresh_failed,
                refreshed: view::maybe_at(activity.refreshed_at),
                budget_wait: activity.waited.map_or_else(
                    || "-".to_owned(),
                    |(waited, at)| {
                        format!("{} at {}", view::span(clock::millis(waited)), view::at(at))
                    },
                ),
                delivering: delivering_of(member_id),
            }
        })
        .collect();
    let oldest = oldest.map(|job| {
        let allowed = (job.call.deadline_at - job.created_at).max(1);
        let spent = ((now - job.created_at).max(0) * 100 / allowed).clamp(0, 100);
        Oldest {
            id: job.id.0,
            portal: view::clip(&job.call.member_id, view::MAX_VALUE_CHARS),
            action: view::clip(&job.call.action_code, view::MAX_VALUE_CHARS),
            state: job.state.as_str().to_owned(),
            arrived: view::at(job.created_at),
            waited: view::span(now - job.created_at),
            deadline: view::at(job.call.deadline_at),
            until: view::until(job.call.deadline_at, now),
            overdue: job.call.deadline_at < now,
            spent: u32::try_from(spent).unwrap_or(100),
        }
    });
    let page = OverviewPage {
        chrome: Chrome::new("Overview", "overview", operator.as_deref()),
        states: JobState::ALL.iter().map(|state| state.as_str()).collect(),
        delivering: totals[position(JobState::Delivering)],
        dead: totals[position(JobState::Dead)],
        totals,
        by_portal: rows(by_portal),
        by_action: rows(by_action),
        oldest,
        health,
        now: view::at(now),
    };
    Ok(render(&page))
}

/// The jobs page's query: its filters (empty fields are none) and the page's cursor.
#[derive(Debug, Default, Deserialize)]
pub struct JobsQuery {
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub portal: String,
    #[serde(default)]
    pub action: String,
    #[serde(default)]
    pub workflow: String,
    #[serde(default)]
    pub document: String,
    #[serde(default)]
    pub since: String,
    #[serde(default)]
    pub until: String,
    pub before: Option<i64>,
}

impl JobsQuery {
    /// The store's filter, or what is wrong with a field.
    fn filter(&self, now: i64) -> Result<JobFilter, String> {
        let given = |text: &str| {
            let text = text.trim();
            (!text.is_empty()).then(|| text.to_owned())
        };
        let state =
            match given(&self.state) {
                Some(name) => Some(JobState::parse(&name).ok_or_else(|| {
                    format!("state: `{}` is not a job state", view::clip(&name, 40))
                })?),
                None => None,
            };
        let moment = |field: &str, text: &str| -> Result<Option<i64>, String> {
            given(text)
                .map(|text| {
                    clock::Moment::parse(&text)
                        .map(|moment| moment.unix_ms(now))
                        .map_err(|problem| format!("{field}: {}", view::clip(&problem, 200)))
                })
                .transpose()
        };
        Ok(JobFilter {
            state,
            member_id: given(&self.portal),
            action_code: given(&self.action),
            workflow_id: given(&self.workflow),
            document_id: given(&self.document),
            created_since: moment("since", &self.since)?,
            created_until: moment("until", &self.until)?,
            before: self.before.map(JobId),
            limit: PAGE_SIZE,
        })
    }

    /// The query of the page after the one ending with job `last`: these filters, before it.
    fn next(&self, last: JobId) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("state", &self.state),
            ("portal", &self.portal),
            ("action", &self.action),
            ("workflow", &self.workflow),
            ("document", &self.document),
            ("since", &self.since),
            ("until", &self.until),
        ] {
            if !value.trim().is_empty() {
                query.append_pair(name, value.trim());
            }
        }
        query.append_pair("before", &last.0.to_string());
        query.finish()
    }
}

/// A job on the list.
pub struct JobRow {
    pub id: i64,
    pub state: &'static str,
    pub outcome: &'static str,
    pub portal: String,
    pub action: String,
    pub workflow: String,
    pub document: String,
    pub attempts: u32,
    pub created: String,
    pub deadline: String,
}

impl JobRow {
    fn of(job: &Job) -> JobRow {
        JobRow {
            id: job.id.0,
            state: job.state.as_str(),
            outcome: job.outcome().map_or("-", |outcome| outcome.as_str()),
            portal: view::clip(&job.call.member_id, 40),
            action: view::clip(&job.call.action_code, 60),
            workflow: view::clip(&job.call.workflow_id, 40),
            document: view::document(job),
            attempts: job.attempts,
            created: view::at(job.created_at),
            deadline: view::at(job.call.deadline_at),
        }
    }
}

#[derive(Template)]
#[template(path = "console/jobs.html")]
struct JobsPage {
    chrome: Chrome,
    query: JobsQuery,
    states: Vec<&'static str>,
    portals: Vec<String>,
    actions: Vec<String>,
    error: Option<String>,
    rows: Vec<JobRow>,
    next: Option<String>,
}

/// `GET /jobs`: see docs/console.md.
async fn jobs(
    State(console): State<Arc<Console>>,
    operator: Option<Extension<Operator>>,
    Query(query): Query<JobsQuery>,
) -> Result<Response, PageError> {
    let host = &console.host;
    let (rows, next, error) = match query.filter(clock::now_ms()) {
        Ok(filter) => {
            let jobs = host.store.list_jobs(&filter).await?;
            let full = jobs.len() >= PAGE_SIZE as usize;
            let next = if full { jobs.last().map(|job| query.next(job.id)) } else { None };
            (jobs.iter().map(JobRow::of).collect(), next, None)
        }
        Err(problem) => (Vec::new(), None, Some(problem)),
    };
    let portals =
        host.store.installations().await?.into_iter().map(|i| i.portal.member_id).collect();
    let page = JobsPage {
        chrome: Chrome::new("Jobs", "jobs", operator.as_deref()),
        states: JobState::ALL.iter().map(|state| state.as_str()).collect(),
        portals,
        actions: host.catalog.iter().map(|action| action.config.code.clone()).collect(),
        query: JobsQuery {
            state: view::clip(&query.state, 40),
            portal: view::clip(&query.portal, view::MAX_VALUE_CHARS),
            action: view::clip(&query.action, view::MAX_VALUE_CHARS),
            workflow: view::clip(&query.workflow, view::MAX_VALUE_CHARS),
            document: view::clip(&query.document, view::MAX_VALUE_CHARS),
            since: view::clip(&query.since, 40),
            until: view::clip(&query.until, 40),
            before: query.before,
        },
        error,
        rows,
        next,
    };
    Ok(render(&page))
}

/// What a job page says above its content after an action: done (a flash after the redirect)
/// or refused (the store's or the check's message), and for which form.
#[derive(Debug, Default)]
pub struct Notice {
    pub flash: Option<&'static str>,
    pub error: Option<String>,
    /// The form the error is about (`retry`, `cancel`, `complete`, `resend`), shown next to it.
    pub form: Option<&'static str>,
    /// What was typed into the complete-by-hand form, kept when it is refused.
    pub typed: Vec<(String, String)>,
}

/// One return property's input on the complete-by-hand form.
pub struct Field {
    pub name: String,
    pub label: String,
    pub kind: String,
    pub required: bool,
    pub multiple: bool,
    /// For `bool` (`Y`, `N`) and `select` (its options): `(value, label)`.
    pub choices: Vec<(String, String)>,
    /// What was typed, or empty.
    pub value: String,
}

/// An attempt on a job's page.
pub struct AttemptRow {
    pub kind: &'static str,
    pub number: u32,
    pub worker: String,
    pub started: String,
    pub finished: String,
    pub outcome: &'static str,
    pub error: String,
}

/// A line of the job's operator history.
pub struct HistoryRow {
    pub at: String,
    pub actor: String,
    pub action: &'static str,
    pub detail: String,
}

#[derive(Template)]
#[template(path = "console/job.html")]
struct JobPage {
    chrome: Chrome,
    csrf_field: &'static str,
    csrf: String,
    notice: Notice,
    row: JobRow,
    waits_for_result: bool,
    has_result: bool,
    deadline_until: String,
    dead_reason: Option<String>,
    invalid: Option<String>,
    properties: Vec<(String, String)>,
    result: Option<String>,
    delivery: String,
    attempts: Vec<AttemptRow>,
    progress: Vec<(String, String)>,
    history: Vec<HistoryRow>,
    timeline: Timeline,
    timeline_width: f64,
    fields: Option<Vec<Field>>,
}

/// `GET /jobs/{id}`: see docs/console.md. `?done=` names the action just done (a flash).
async fn job(
    State(console): State<Arc<Console>>,
    operator: Option<Extension<Operator>>,
    Path(id): Path<String>,
    Query(flash): Query<Flash>,
) -> Result<Response, PageError> {
    let id = parse_job_id(&id)?;
    let notice =
        Notice { flash: flash.done.as_deref().and_then(actions::flash), ..Notice::default() };
    job_page(&console, operator.as_deref(), id, notice, StatusCode::OK).await
}

/// A job page's query after an action.
#[derive(Debug, Deserialize)]
pub struct Flash {
    done: Option<String>,
}

/// A job id from a path, or 404.
pub fn parse_job_id(text: &str) -> Result<JobId, PageError> {
    text.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .map(JobId)
        .ok_or_else(|| PageError::NotFound(format!("`{}` is not a job id", view::clip(text, 40))))
}

/// Renders job `id`'s page with `notice`, answered with `status`.
pub async fn job_page(
    console: &Console,
    operator: Option<&Operator>,
    id: JobId,
    notice: Notice,
    status: StatusCode,
) -> Result<Response, PageError> {
    let host = &console.host;
    let detail = host
        .store
        .job(id)
        .await?
        .ok_or_else(|| PageError::NotFound(format!("job {id} does not exist")))?;
    let progress = host.store.pending_progress(id, MAX_PROGRESS_LINES).await?;
    let now = clock::now_ms();
    let job = &detail.job;
    let payload = &job.call.payload;
    let properties = payload
        .get("properties")
        .and_then(|p| p.as_object())
        .map(|properties| {
            properties
                .iter()
                .map(|(name, value)| (view::clip(name, 100), view::value(value)))
                .collect()
        })
        .unwrap_or_default();
    let invalid = payload
        .get("invalid")
        .and_then(|v| v.as_str())
        .map(|text| view::clip(text, view::MAX_VALUE_CHARS));
    let fields = host.catalog.get(&job.call.action_code).map(|action| {
        action
            .config
            .return_properties
            .iter()
            .map(|(name, property)| {
                let typed: Vec<&str> = notice
                    .typed
                    .iter()
                    .filter(|(field, _)| field == name)
                    .map(|(_, value)| value.as_str())
                    .collect();
                let choices = match property.kind {
                    b24::rest::PropertyType::Bool => {
                        vec![
                            ("Y".to_owned(), "Y (yes)".to_owned()),
                            ("N".to_owned(), "N (no)".to_owned()),
                        ]
                    }
                    _ => property
                        .options
                        .iter()
                        .map(|(key, text)| (key.clone(), view::label(text)))
                        .collect(),
                };
                Field {
                    name: name.clone(),
                    label: view::label(&property.name),
                    kind: property.kind.as_str().to_owned(),
                    required: property.required,
                    multiple: property.multiple,
                    choices,
                    value: view::clip(&typed.join("\n"), 2_000),
                }
            })
            .collect()
    });
    let delivery = match (job.delivered_at, job.delivery_unconfirmed, job.send_uncertain) {
        (Some(at), true, _) => format!(
            "unconfirmed ({}): a send's answer was lost, then the portal answered \"not found\"",
            view::at(at)
        ),
        (Some(at), false, _) => format!("delivered {}", view::at(at)),
        (None, _, true) => {
            "uncertain: a send's answer was lost, the workflow may have it".to_owned()
        }
        (None, _, false) if job.state == JobState::Delivering => {
            format!("to be sent {}", view::maybe_at(job.next_delivery_at))
        }
        (None, _, false) => "-".to_owned(),
    };
    let page = JobPage {
        chrome: Chrome::new(format!("Job {id}"), "jobs", operator),
        csrf_field: CSRF_FIELD,
        csrf: operator.map(|o| o.csrf_token().to_owned()).unwrap_or_default(),
        row: JobRow::of(job),
        waits_for_result: job.call.waits_for_result,
        has_result: job.result.is_some(),
        deadline_until: view::until(job.call.deadline_at, now),
        dead_reason: job.dead_reason.as_deref().map(|text| view::clip(text, view::MAX_VALUE_CHARS)),
        invalid,
        properties,
        result: job.result.as_ref().map(view::json),
        delivery,
        attempts: detail
            .attempts
            .iter()
            .map(|attempt| AttemptRow {
                kind: attempt.kind.as_str(),
                number: attempt.number,
                worker: view::clip(&attempt.worker, 80),
                started: view::at(attempt.started_at),
                finished: view::maybe_at(attempt.finished_at),
                outcome: attempt.outcome.map_or("under way", |outcome| outcome.as_str()),
                error: attempt
                    .error
                    .as_deref()
                    .map_or_else(String::new, |e| view::clip(e, view::MAX_VALUE_CHARS)),
            })
            .collect(),
        progress: progress
            .iter()
            .map(|(at, message)| (view::at(*at), view::clip(message, view::MAX_VALUE_CHARS)))
            .collect(),
        history: detail
            .history
            .iter()
            .map(|entry| HistoryRow {
                at: view::at(entry.at),
                actor: view::clip(&entry.actor, 80),
                action: entry.action.as_str(),
                detail: entry
                    .detail
                    .as_deref()
                    .map_or_else(String::new, |d| view::clip(d, view::MAX_VALUE_CHARS)),
            })
            .collect(),
        timeline: Timeline::of(job, &detail.attempts, now),
        timeline_width: view::TIMELINE_WIDTH,
        fields,
        notice,
    };
    let mut response = render(&page);
    *response.status_mut() = status;
    Ok(response)
}

/// An installation on the portals page.
pub struct PortalRow {
    pub member_id: String,
    pub domain: String,
    pub status: &'static str,
    pub active: bool,
    pub installed: String,
    pub updated: String,
    pub token_expires: String,
    pub refreshed: String,
    pub registrations: String,
    pub degraded: Vec<String>,
}

#[derive(Template)]
#[template(path = "console/portals.html")]
struct PortalsPage {
    chrome: Chrome,
    csrf_field: &'static str,
    csrf: String,
    flash: Option<&'static str>,
    rows: Vec<PortalRow>,
    actions: usize,
}

/// `GET /portals`: see docs/console.md. `?done=removed` after a removal.
async fn portals(
    State(console): State<Arc<Console>>,
    operator: Option<Extension<Operator>>,
    Query(flash): Query<Flash>,
) -> Result<Response, PageError> {
    let host = &console.host;
    let installations = host.store.installations().await?;
    let fingerprint = registrations_fingerprint(host);
    let degraded = host.health.degraded();
    let now = clock::now_ms();
    let mut rows = Vec::with_capacity(installations.len());
    for installation in &installations {
        rows.push(portal_row(&console, installation, &fingerprint, &degraded, now).await?);
    }
    let page = PortalsPage {
        chrome: Chrome::new("Portals", "portals", operator.as_deref()),
        csrf_field: CSRF_FIELD,
        csrf: operator.as_deref().map(|o| o.csrf_token().to_owned()).unwrap_or_default(),
        flash: flash.done.as_deref().and_then(actions::flash),
        rows,
        actions: host.catalog.iter().count(),
    };
    Ok(render(&page))
}

async fn portal_row(
    console: &Console,
    installation: &Installation,
    fingerprint: &str,
    degraded: &[(String, crate::health::Degraded)],
    now: i64,
) -> Result<PortalRow, store::Error> {
    let host = &console.host;
    let member_id = &installation.portal.member_id;
    let registered = host.store.registrations(member_id).await?;
    let registrations = match registered {
        Some(stored) if stored == fingerprint => {
            format!(
                "all {} actions of this configuration ({})",
                host.catalog.iter().count(),
                &stored[..12.min(stored.len())]
            )
        }
        Some(stored) => format!(
            "another configuration's ({}): registered again at the next start",
            view::clip(&stored, 12)
        ),
        None => "none recorded".to_owned(),
    };
    let activity = host.portals.activity().summary(member_id, now);
    Ok(PortalRow {
        member_id: view::clip(member_id, view::MAX_VALUE_CHARS),
        domain: view::clip(&installation.portal.domain, view::MAX_VALUE_CHARS),
        status: installation.status.as_str(),
        active: installation.status == InstallationStatus::Active,
        installed: view::at(installation.installed_at),
        updated: view::at(installation.updated_at),
        token_expires: view::at(installation.portal.expires_at),
        refreshed: view::maybe_at(activity.refreshed_at),
        registrations,
        degraded: degraded
            .iter()
            .filter(|(portal, _)| portal == member_id)
            .map(|(_, why)| {
                format!(
                    "{}: {}",
                    why.cause.as_str(),
                    view::clip(&why.reason, view::MAX_VALUE_CHARS)
                )
            })
            .collect(),
    })
}

//! Prometheus metrics: recorded through the `metrics` facade where things happen (intake,
//! workers, outbox, each portal's REST client), rendered by the Prometheus recorder at
//! `GET /metrics` on the console's listener, with `b24act_jobs` counted from the store at
//! scrape time. docs/console.md lists every metric with its labels.
//!
//! The recorder is the process's global one, installed once ([`recorder`]): hosts started in
//! one process (tests, an embedding application) share it, so their counters add up. A process
//! that installed another `metrics` recorder first keeps it; this one then renders only
//! `b24act_jobs`. Nothing is recorded until the recorder is installed, which `serve` does when
//! the console is enabled.
//!
//! Portal labels are `member_id`s of installed portals (bounded by installations), never a value
//! from a request that was not authenticated; action labels are configured codes.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use b24::report::ErrorChain;
use b24::rest::{ClientObserver, RefreshError};
use metrics::{Unit, counter, describe_counter, describe_histogram, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use store::{AttemptOutcome, JobCount, JobState};

use super::Console;
use super::activity::PortalActivity;

const CALL_ACK: &str = "b24act_call_ack_seconds";
const CALLS: &str = "b24act_calls_total";
const JOBS: &str = "b24act_jobs";
const ATTEMPTS: &str = "b24act_attempts_total";
const RESULT_LATENCY: &str = "b24act_result_latency_seconds";
const LIMITER_WAIT: &str = "b24act_limiter_wait_seconds";
const RATE_LIMIT_REJECTIONS: &str = "b24act_rate_limit_rejections_total";
const TOKEN_REFRESHES: &str = "b24act_token_refreshes_total";
const DEAD_LETTERS: &str = "b24act_dead_letters_total";

/// Acks take milliseconds (one group commit); past a second something is wrong.
const CALL_ACK_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
/// From a second (a result at once) to the hours a retried action may take before its result.
const RESULT_LATENCY_BUCKETS: &[f64] =
    &[0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0];
/// No wait while the bucket has room; at 2/s a request waits 0.5 s per request queued ahead.
const LIMITER_WAIT_BUCKETS: &[f64] =
    &[0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0];

/// How often histograms are folded into their buckets when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The process's Prometheus recorder, installed on first call (see the module's documentation).
pub fn recorder() -> &'static PrometheusHandle {
    static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();
    RECORDER.get_or_init(|| {
        let mut builder = PrometheusBuilder::new();
        for (name, buckets) in [
            (CALL_ACK, CALL_ACK_BUCKETS),
            (RESULT_LATENCY, RESULT_LATENCY_BUCKETS),
            (LIMITER_WAIT, LIMITER_WAIT_BUCKETS),
        ] {
            builder = builder
                .set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets)
                .unwrap_or_else(|_| unreachable!("the bucket lists are not empty"));
        }
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed in this process; /metrics shows b24act_jobs only");
        }
        describe();
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new().name("b24act-metrics".to_owned()).spawn(
            move || loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            },
        );
        if let Err(error) = spawned {
            tracing::warn!(error = %ErrorChain(&error), "no metrics upkeep thread; histograms are folded at each scrape only");
        }
        handle
    })
}

/// The `# HELP` lines.
fn describe() {
    describe_histogram!(
        CALL_ACK,
        Unit::Seconds,
        "From a call's arrival to its answer, for calls answered 200."
    );
    describe_counter!(
        CALLS,
        "Calls answered by the intake: outcome accepted (reason new or duplicate) or refused (reason invalid, unknown_portal, wrong_token, unknown_action, unavailable)."
    );
    describe_counter!(
        ATTEMPTS,
        "Connector attempts that ended, by action and outcome (ok, retryable, timeout, fatal, panic, deadline, invalid)."
    );
    describe_histogram!(
        RESULT_LATENCY,
        Unit::Seconds,
        "From a call's acceptance to the portal's acceptance of its result (bizproc.event.send)."
    );
    describe_histogram!(
        LIMITER_WAIT,
        Unit::Seconds,
        "Time REST requests waited for their place in the portal's request budget."
    );
    describe_counter!(
        RATE_LIMIT_REJECTIONS,
        "Requests the portal refused because its request budget was spent (QUERY_LIMIT_EXCEEDED, OPERATION_TIME_LIMIT)."
    );
    describe_counter!(
        TOKEN_REFRESHES,
        "Access-token refreshes at the auth server, by portal and outcome (ok, rejected: the auth server refused, failed: it could not be asked)."
    );
    describe_counter!(
        DEAD_LETTERS,
        "Jobs that ended dead (no result will reach the workflow without an operator), by action."
    );
}

/// How the intake answered a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallAnswer {
    /// Stored as a new job.
    New,
    /// A job with its event token was stored already.
    Duplicate,
    /// Refused with this status; nothing stored.
    Refused(StatusCode),
}

/// Counts a call the intake answered; `took` is from its arrival to its answer.
pub fn call_answered(answer: CallAnswer, took: Duration) {
    let (outcome, reason) = match answer {
        CallAnswer::New => ("accepted", "new"),
        CallAnswer::Duplicate => ("accepted", "duplicate"),
        CallAnswer::Refused(status) => ("refused", refusal_reason(status)),
    };
    if outcome == "accepted" {
        histogram!(CALL_ACK).record(took.as_secs_f64());
    }
    counter!(CALLS, "outcome" => outcome, "reason" => reason).increment(1);
}

/// The `reason` label of a refusal, by the status the intake answered with.
fn refusal_reason(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "invalid",
        StatusCode::UNAUTHORIZED => "unknown_portal",
        StatusCode::FORBIDDEN => "wrong_token",
        StatusCode::NOT_FOUND => "unknown_action",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        _ => "other",
    }
}

/// Counts a connector attempt of `action` that ended with `outcome` (and was recorded).
pub fn attempt_ended(action: &str, outcome: AttemptOutcome) {
    counter!(ATTEMPTS, "action" => action.to_owned(), "outcome" => outcome.as_str()).increment(1);
}

/// Counts a job of `action` that ended dead.
pub fn dead_letter(action: &str) {
    counter!(DEAD_LETTERS, "action" => action.to_owned()).increment(1);
}

/// Records a result the portal accepted, for a call stored at `created_at` (Unix ms), at `now`.
pub fn result_delivered(created_at: i64, now: i64) {
    histogram!(RESULT_LATENCY).record(now.saturating_sub(created_at).max(0) as f64 / 1000.0);
}

/// What one portal's REST client reports, as metrics labelled with its `member_id`, and to the
/// node's [`PortalActivity`] for the console's overview.
#[derive(Debug)]
pub struct PortalMetrics {
    member_id: String,
    activity: Arc<PortalActivity>,
}

impl PortalMetrics {
    pub fn new(member_id: &str, activity: Arc<PortalActivity>) -> Arc<PortalMetrics> {
        Arc::new(PortalMetrics { member_id: member_id.to_owned(), activity })
    }
}

impl ClientObserver for PortalMetrics {
    fn budget_waited(&self, waited: Duration) {
        histogram!(LIMITER_WAIT, "portal" => self.member_id.clone()).record(waited.as_secs_f64());
        self.activity.waited(&self.member_id, waited);
    }

    fn budget_refused(&self, _code: &str) {
        counter!(RATE_LIMIT_REJECTIONS, "portal" => self.member_id.clone()).increment(1);
        self.activity.rate_limited(&self.member_id);
    }

    fn token_refreshed(&self, outcome: Result<(), &RefreshError>) {
        let outcome = match outcome {
            Ok(()) => "ok",
            Err(error) if error.is_credentials_problem() => "rejected",
            Err(_) => "failed",
        };
        counter!(TOKEN_REFRESHES, "portal" => self.member_id.clone(), "outcome" => outcome)
            .increment(1);
        self.activity.refreshed(&self.member_id, outcome == "ok");
    }
}

/// Route: `GET /metrics`.
pub fn router(console: Arc<Console>) -> Router {
    Router::new().route(crate::routes::METRICS, get(scrape)).with_state(console)
}

/// `GET /metrics`: the recorder's metrics and the jobs counted now, in Prometheus' text format;
/// 503 while the store does not answer.
async fn scrape(State(console): State<Arc<Console>>) -> Response {
    let counts = match console.host.store.job_counts().await {
        Ok(counts) => counts,
        Err(error) => {
            tracing::error!(error = %ErrorChain(&error), "cannot count jobs for /metrics");
            return (StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable").into_response();
        }
    };
    let mut text = console.metrics.render();
    text.push_str(&jobs_exposition(&counts));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

/// `b24act_jobs` from the store's counts: every state of each portal and action that has jobs,
/// zeros included, so a series drops to 0 rather than vanishing when its last job moves on.
fn jobs_exposition(counts: &[JobCount]) -> String {
    let mut text = format!(
        "# HELP {JOBS} Jobs in the store by state, portal and action, counted at scrape time.\n# TYPE {JOBS} gauge\n"
    );
    let mut pairs: Vec<(&str, &str)> =
        counts.iter().map(|c| (c.member_id.as_str(), c.action_code.as_str())).collect();
    pairs.dedup();
    for (portal, action) in pairs {
        for state in JobState::ALL {
            let jobs = counts
                .iter()
                .find(|c| c.member_id == portal && c.action_code == action && c.state == state)
                .map_or(0, |c| c.jobs);
            text.push_str(&format!(
                "{JOBS}{{state=\"{}\",portal=\"{}\",action=\"{}\"}} {jobs}\n",
                state.as_str(),
                label_value(portal),
                label_value(action)
            ));
        }
    }
    text
}

/// A label value as the text format writes it: backslash, double quote and newline escaped.
fn label_value(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_are_a_gauge_with_every_state_of_each_portal_and_action() {
        let count = |member_id: &str, action_code: &str, state, jobs| JobCount {
            member_id: member_id.into(),
            action_code: action_code.into(),
            state,
            jobs,
        };
        let text = jobs_exposition(&[
            count("p1", "check", JobState::Dead, 2),
            count("p1", "check", JobState::Queued, 5),
            count("p\"2", "check", JobState::Done, 1),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "# TYPE b24act_jobs gauge");
        assert_eq!(lines.len(), 2 + 2 * JobState::ALL.len(), "{text}");
        assert!(lines.contains(&r#"b24act_jobs{state="queued",portal="p1",action="check"} 5"#));
        assert!(lines.contains(&r#"b24act_jobs{state="dead",portal="p1",action="check"} 2"#));
        assert!(lines.contains(&r#"b24act_jobs{state="running",portal="p1",action="check"} 0"#));
        assert!(lines.contains(&r#"b24act_jobs{state="done",portal="p\"2",action="check"} 1"#));
    }

    #[test]
    fn refusals_are_named_by_their_status() {
        assert_eq!(refusal_reason(StatusCode::FORBIDDEN), "wrong_token");
        assert_eq!(refusal_reason(StatusCode::UNAUTHORIZED), "unknown_portal");
        assert_eq!(refusal_reason(StatusCode::IM_A_TEAPOT), "other");
    }
}

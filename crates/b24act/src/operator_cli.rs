//! `b24act jobs list | show | retry | cancel | complete | resend`: the operator's view of the
//! job store (SQLite or PostgreSQL, whichever the configuration names), as aligned text or,
//! with `--json`, for scripts.
//!
//! The store enforces the rules (a stored result is never recomputed or replaced, finished jobs
//! cannot be cancelled) and records every change in the job's history with the actor
//! (`cli:<user>`); `host::operator` builds the fallback and checks values typed in against the
//! action's declaration. This module parses the arguments, calls them and says what happened.
//! Nothing secret is printed: the store URL is redacted, installation data is never read, and
//! an event token's signature (which alone lets anyone resume the workflow with any result,
//! §3.4) is shown only with `--reveal`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use serde_json::{Value, json};
use store::{
    Attempt, Backend, HistoryEntry, Job, JobDetail, JobFilter, JobId, JobState, Retried,
    StateCounts, Store, StoreKey, StoreOptions,
};

use host::catalog::Catalog;
pub use host::clock::timestamp;
use host::clock::{Moment, millis, now_ms};
use host::config::Config;

/// The version of the `--json` output; bumped when a field changes meaning or disappears.
/// 2: `event_token` hides its signature unless `--reveal` is given.
/// 3: `result_kind` may be `manual` (completed by hand); jobs gain `outcome` and
/// `document_id`, `show` gains `history`.
pub const JSON_FORMAT_VERSION: u32 = 3;

/// What stands for an event token's signature in output without `--reveal`.
pub const HIDDEN_SIGNATURE: &str = "<signature hidden; --reveal shows it>";

/// The most jobs one `list` page may hold.
pub const MAX_LIST_LIMIT: u32 = 1000;

/// `b24act jobs …`: what an operator asks of the store.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum JobsCommand {
    /// List jobs, newest first, with the number of jobs in each state underneath.
    ///
    /// A full page ends with the command that shows the next one (`--before` the last id).
    List {
        /// Only jobs in this state.
        #[arg(long, value_parser = state_parser())]
        state: Option<JobState>,
        /// Only jobs of this portal (its `member_id`).
        #[arg(long, value_name = "MEMBER_ID")]
        portal: Option<String>,
        /// Only jobs of this action (its code).
        #[arg(long, value_name = "CODE")]
        action: Option<String>,
        /// Only jobs of this workflow (its id, as the portal's workflow log shows it).
        #[arg(long, value_name = "ID")]
        workflow: Option<String>,
        /// Only jobs about this document (its id, such as DEAL_42).
        #[arg(long, value_name = "ID")]
        document: Option<String>,
        /// Only jobs created at or after this time: `2026-11-24 03:10:05Z` (UTC, as the list
        /// shows it), or a duration ago such as `2h`.
        #[arg(long, value_name = "TIME", value_parser = Moment::parse)]
        since: Option<Moment>,
        /// Only jobs created before this time (same forms as --since).
        #[arg(long, value_name = "TIME", value_parser = Moment::parse)]
        until: Option<Moment>,
        /// At most this many jobs.
        #[arg(long, default_value_t = 50, value_parser = limit_parser())]
        limit: u32,
        /// Only jobs older than this one (its id): the next page after a full one.
        #[arg(long, value_name = "ID", value_parser = job_id_parser())]
        before: Option<i64>,
        /// Print JSON for scripts instead of a table.
        #[arg(long)]
        json: bool,
        /// Show the event tokens whole, with their signatures (`--json` hides them otherwise).
        #[arg(long)]
        reveal: bool,
    },
    /// Show one job: every field, its payload and stored result, and every execution and
    /// delivery attempt with its outcome and error.
    Show {
        /// The job's id (the first column of `jobs list`).
        #[arg(value_parser = job_id_parser())]
        id: i64,
        /// Print JSON for scripts instead of text.
        #[arg(long)]
        json: bool,
        /// Show the event token whole, with its signature: with it anyone can resume the
        /// workflow with any result, so it is hidden otherwise.
        #[arg(long)]
        reveal: bool,
    },
    /// Run a job again now, or send its result again.
    ///
    /// A job with a stored result whose delivery died (the portal refused it) has that same
    /// result sent again; it is never recomputed. A dead job without a result, or one waiting to
    /// retry, runs again now. Jobs that are queued, running, delivering or done are refused.
    ///
    /// A result that may already have reached the workflow — an earlier send whose answer was
    /// lost, or a delivery recorded as unconfirmed — is refused unless --force: sending it
    /// again could deliver it twice.
    Retry {
        /// The job's id.
        #[arg(value_parser = job_id_parser())]
        id: i64,
        /// Send a result again even though it may already have been delivered (also resends
        /// a `done` job whose delivery is unconfirmed).
        #[arg(long)]
        force: bool,
        /// Give the job a new deadline this long from now (`30m`, `2h`, `1day`). Without it the
        /// old deadline stays, and a job past its deadline resolves through its failure policy
        /// at once instead of running.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        deadline_in: Option<Duration>,
    },
    /// Stop a job that has not finished: it becomes dead with the reason "cancelled by
    /// operator" and a worker or sender holding it loses its lease. Nothing is sent to the
    /// portal, so its workflow keeps waiting — unless --fallback. Done and dead jobs are
    /// refused.
    Cancel {
        /// The job's id.
        #[arg(value_parser = job_id_parser())]
        id: i64,
        /// Send the action's fallback values instead, as when its deadline passes (with the
        /// reason "cancelled by operator"), so the workflow moves on. Also for a dead job
        /// without a result (one cancelled before, or a dead letter). Refused for a job with a
        /// result already.
        #[arg(long)]
        fallback: bool,
    },
    /// Complete a job by hand: send the workflow the values given, typed per the action's
    /// return properties (checked as the portal's own values are: an int must be an integer, a
    /// bool Y or N, a select one of its options, …). For a job without a result that has not
    /// finished, or died without one. Refused for a job with a result already.
    Complete {
        /// The job's id.
        #[arg(value_parser = job_id_parser())]
        id: i64,
        /// A return value, `name=value`; repeat for each property, and for each value of a
        /// property declared multiple.
        #[arg(long = "value", value_name = "NAME=VALUE", value_parser = pair_parser)]
        values: Vec<(String, String)>,
    },
    /// Send a delivered job's stored result again (or a dead job's), never recomputed. The
    /// workflow may have it already: a finished one answers "not found" (the job then ends
    /// done, unconfirmed), a waiting one takes it. Only with --force.
    Resend {
        /// The job's id.
        #[arg(value_parser = job_id_parser())]
        id: i64,
        /// Send it although the workflow may have it already.
        #[arg(long)]
        force: bool,
    },
}

fn pair_parser(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("`{text}` is not NAME=VALUE")),
    }
}

fn state_parser() -> impl TypedValueParser<Value = JobState> {
    PossibleValuesParser::new(JobState::ALL.map(JobState::as_str)).try_map(|name: String| {
        JobState::parse(&name).ok_or_else(|| format!("unknown job state `{name}`"))
    })
}

fn limit_parser() -> clap::builder::RangedI64ValueParser<u32> {
    clap::value_parser!(u32).range(1..=i64::from(MAX_LIST_LIMIT))
}

fn job_id_parser() -> clap::builder::RangedI64ValueParser<i64> {
    clap::value_parser!(i64).range(1..)
}

/// Opens the store the configuration names, runs `command` as `actor` (`cli:<user>`, recorded
/// in the history of a job it changes) and writes its report to `out`.
///
/// Errors (an unknown job, a command the store refuses, values that do not fit, an unreachable
/// store) are returned for the caller to print once; their messages never contain the store's
/// password.
pub async fn run(
    config: &Config,
    command: JobsCommand,
    actor: &str,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    with_store(config, async |store| execute(config, store, command, actor, out).await).await
}

/// Opens the store `config` names, runs `work` on it, and closes it whatever `work` returned.
pub(crate) async fn with_store<T>(
    config: &Config,
    work: impl AsyncFnOnce(&Store) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let store = open_store(config).await?;
    let outcome = work(&store).await;
    store.close().await;
    outcome
}

async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let url = config.store.url.expose();
    if Backend::from_url(url)? == Backend::Sqlite
        && let Some(path) = sqlite_path(url)
        && !path.exists()
    {
        // Opening would create an empty store and list nothing: most likely a wrong path.
        anyhow::bail!(
            "no store at `{}` (store.url): start `b24act serve` with this configuration first, \
             or fix the path",
            path.display()
        );
    }
    connect_store(config).await
}

/// Opens the store `config` names with two connections, creating and migrating it if needed.
pub(crate) async fn connect_store(config: &Config) -> anyhow::Result<Store> {
    let key =
        StoreKey::from_hex(config.store.encryption_key.expose()).context("store.encryption_key")?;
    let options = StoreOptions { max_connections: 2, ..StoreOptions::new(key) };
    // The store's errors name the URL already, without its password.
    Ok(Store::open(config.store.url.expose(), options).await?)
}

/// The file a `sqlite:` URL names (`sqlite:/abs`, `sqlite:///abs`, `sqlite:rel.db`, with an
/// optional `?query`).
fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url.get("sqlite:".len()..)?;
    let rest = rest.split_once('?').map_or(rest, |(path, _)| path);
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    (!rest.is_empty()).then(|| PathBuf::from(rest))
}

async fn execute(
    config: &Config,
    store: &Store,
    command: JobsCommand,
    actor: &str,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    match command {
        JobsCommand::List {
            state,
            portal,
            action,
            workflow,
            document,
            since,
            until,
            limit,
            before,
            json,
            reveal,
        } => {
            let now = now_ms();
            let filter = JobFilter {
                state,
                member_id: portal,
                action_code: action,
                workflow_id: workflow,
                document_id: document,
                created_since: since.map(|moment| moment.unix_ms(now)),
                created_until: until.map(|moment| moment.unix_ms(now)),
                before: before.map(JobId),
                limit,
            };
            let jobs = store.list_jobs(&filter).await?;
            let counts = store.state_counts().await?;
            if json {
                write_json(out, &list_json(&jobs, &counts, &filter, Reveal(reveal)))
            } else {
                write_list(out, &jobs, &counts, &filter)
            }
        }
        JobsCommand::Show { id, json, reveal } => {
            let id = JobId(id);
            let detail = store.job(id).await?.ok_or(store::Error::JobNotFound(id))?;
            let reveal = Reveal(reveal);
            if json {
                write_json(out, &detail_json(&detail, reveal))
            } else {
                write_detail(out, &detail, reveal)
            }
        }
        JobsCommand::Retry { id, deadline_in, force } => {
            let id = JobId(id);
            let now = now_ms();
            let deadline_at = deadline_in.map(|wait| now.saturating_add(millis(wait)));
            let retried = store.retry_job(id, deadline_at, force, actor, now).await?;
            let job = store.job(id).await?.ok_or(store::Error::JobNotFound(id))?.job;
            match retried {
                Retried::Requeued => {
                    writeln!(
                        out,
                        "job {id} requeued: it runs again now (attempt {})",
                        job.attempts + 1
                    )?;
                }
                Retried::Redelivering => {
                    let kind =
                        job.result_kind.map_or(String::new(), |kind| format!("{} ", kind.as_str()));
                    writeln!(
                        out,
                        "job {id} will be redelivered: its stored {kind}result is sent again now, \
                         not recomputed"
                    )?;
                }
            }
            let deadline = timestamp(job.call.deadline_at);
            if deadline_at.is_some() {
                writeln!(out, "new deadline: {deadline}")?;
            } else if retried == Retried::Requeued && job.call.deadline_at <= now {
                writeln!(
                    out,
                    "note: its deadline passed ({deadline}), so it resolves through the failure \
                     policy at once; retry with --deadline-in to let it run"
                )?;
            } else if retried == Retried::Requeued {
                writeln!(out, "deadline: {deadline}")?;
            }
            Ok(())
        }
        JobsCommand::Cancel { id, fallback: false } => {
            let id = JobId(id);
            store.cancel_job(id, actor, now_ms()).await?;
            writeln!(
                out,
                "job {id} cancelled: it is dead with the reason \"{}\"; \
                 nothing was sent to the portal (--fallback sends the action's fallback values)",
                store::CANCELLED_BY_OPERATOR
            )?;
            Ok(())
        }
        JobsCommand::Cancel { id, fallback: true } => {
            let id = JobId(id);
            let catalog = catalog(config)?;
            host::operator::cancel_with_fallback(store, &catalog, id, actor, now_ms()).await?;
            writeln!(
                out,
                "job {id} cancelled: its fallback values are sent to the workflow now (reason \
                 \"{}\")",
                store::CANCELLED_BY_OPERATOR
            )?;
            Ok(())
        }
        JobsCommand::Complete { id, values } => {
            let id = JobId(id);
            let catalog = catalog(config)?;
            host::operator::complete_by_hand(store, &catalog, id, &values, actor, now_ms()).await?;
            writeln!(out, "job {id} completed by hand: its values are sent to the workflow now")?;
            Ok(())
        }
        JobsCommand::Resend { id, force } => {
            let id = JobId(id);
            store.resend_result(id, force, actor, now_ms()).await?;
            writeln!(
                out,
                "job {id}: its stored result is sent again now, not recomputed (\"not found\" \
                 means the workflow had it: the job ends done, unconfirmed)"
            )?;
            Ok(())
        }
    }
}

/// The configuration's actions, for what needs their declarations (the fallback, the return
/// properties).
fn catalog(config: &Config) -> anyhow::Result<Catalog> {
    Ok(Catalog::build(config, &connectors::Registry::new())?)
}

fn write_list(
    out: &mut impl Write,
    jobs: &[Job],
    counts: &StateCounts,
    filter: &JobFilter,
) -> anyhow::Result<()> {
    if jobs.is_empty() {
        writeln!(out, "no jobs match")?;
    } else {
        let mut table = Table::new([
            "ID",
            "STATE",
            "RESULT",
            "PORTAL",
            "CODE",
            "ATTEMPTS",
            "DELIVERIES",
            "CREATED",
            "UPDATED",
        ]);
        for job in jobs {
            table.row([
                job.id.to_string(),
                job.state.to_string(),
                optional(job.outcome().map(|outcome| outcome.as_str().to_owned())),
                job.call.member_id.clone(),
                job.call.action_code.clone(),
                job.attempts.to_string(),
                job.delivery_attempts.to_string(),
                timestamp(job.created_at),
                timestamp(job.updated_at),
            ]);
        }
        table.write(out)?;
    }
    if let Some(next) = next_page(jobs, filter) {
        let mut command = String::from("b24act jobs list");
        if let Some(state) = filter.state {
            command.push_str(&format!(" --state {state}"));
        }
        for (flag, value) in [
            ("--portal", &filter.member_id),
            ("--action", &filter.action_code),
            ("--workflow", &filter.workflow_id),
            ("--document", &filter.document_id),
        ] {
            if let Some(value) = value {
                command.push_str(&format!(" {flag} {}", shell_word(value)));
            }
        }
        for (flag, at) in [("--since", filter.created_since), ("--until", filter.created_until)] {
            if let Some(at) = at {
                command.push_str(&format!(" {flag} '{}'", timestamp(at)));
            }
        }
        if filter.limit != JobFilter::default().limit {
            command.push_str(&format!(" --limit {}", filter.limit));
        }
        writeln!(out, "more: {command} --before {next}")?;
    }
    let summary: Vec<String> =
        JobState::ALL.iter().map(|state| format!("{} {state}", counts.get(*state))).collect();
    writeln!(out, "all jobs: {}", summary.join(", "))?;
    Ok(())
}

/// `value` as one word for a shell: as it is when it is plain, else in single quotes.
fn shell_word(value: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "._-:/@".contains(c);
    if !value.is_empty() && value.chars().all(plain) {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

/// The `--before` of the next page: the last id of a full page.
fn next_page(jobs: &[Job], filter: &JobFilter) -> Option<JobId> {
    let full = u32::try_from(jobs.len()).is_ok_and(|shown| shown >= filter.limit);
    if full { jobs.last().map(|job| job.id) } else { None }
}

/// Whether event tokens are shown whole (`--reveal`).
#[derive(Debug, Clone, Copy)]
struct Reveal(bool);

impl Reveal {
    /// The token whole, or its readable part (`workflow|activity|event`) with the signature
    /// replaced by [`HIDDEN_SIGNATURE`]; a token without that shape is hidden entirely.
    fn event_token(self, token: &str) -> String {
        if self.0 {
            return token.to_owned();
        }
        match b24::incoming::EventToken::new(token).parts() {
            Ok(parts) => format!(
                "{}|{}|{}.{HIDDEN_SIGNATURE}",
                parts.workflow_id, parts.activity_name, parts.event_id
            ),
            Err(_) => "<malformed token hidden; --reveal shows it>".to_owned(),
        }
    }
}

/// What is known of a job's delivery: confirmed by the portal, unconfirmed (a "not found" after
/// a send whose answer was lost: most likely taken then), or possibly made by a send whose
/// answer was lost.
fn delivery_certainty(job: &store::Job) -> &'static str {
    match (job.delivered_at, job.delivery_unconfirmed, job.send_uncertain) {
        (Some(_), true, _) => {
            "unconfirmed: a send's answer was lost and the portal then answered \"not found\"; \
             the workflow most likely took that send (retry --force sends it again)"
        }
        (Some(_), false, _) => "confirmed by the portal",
        (None, _, true) => {
            "uncertain: a send's answer was lost, so the workflow may have it already \
             (retry needs --force)"
        }
        (None, _, false) => "-",
    }
}

fn write_detail(out: &mut impl Write, detail: &JobDetail, reveal: Reveal) -> anyhow::Result<()> {
    let job = &detail.job;
    let fields: [(&str, String); 22] = [
        ("state", job.state.to_string()),
        ("outcome", optional(job.outcome().map(|outcome| outcome.as_str().to_owned()))),
        ("delivery", delivery_certainty(job).to_owned()),
        ("dead reason", optional(job.dead_reason.clone())),
        ("portal", job.call.member_id.clone()),
        ("action", job.call.action_code.clone()),
        ("workflow", job.call.workflow_id.clone()),
        ("document", optional(job.call.document_id.clone())),
        ("event token", reveal.event_token(&job.call.event_token)),
        ("waits for result", if job.call.waits_for_result { "yes" } else { "no" }.to_owned()),
        ("deadline", timestamp(job.call.deadline_at)),
        ("attempts", job.attempts.to_string()),
        ("next run", optional(job.next_run_at.map(timestamp))),
        ("lease owner", optional(job.lease_owner.clone())),
        ("lease until", optional(job.lease_until.map(timestamp))),
        ("result kind", optional(job.result_kind.map(|kind| kind.as_str().to_owned()))),
        ("deliveries", job.delivery_attempts.to_string()),
        ("next delivery", optional(job.next_delivery_at.map(timestamp))),
        ("delivered", optional(job.delivered_at.map(timestamp))),
        ("created", timestamp(job.created_at)),
        ("updated", timestamp(job.updated_at)),
        ("payload version", job.call.payload_version.to_string()),
    ];
    let width = fields.iter().map(|(name, _)| name.len()).max().unwrap_or(0) + 1;
    writeln!(out, "job {}", job.id)?;
    for (name, value) in fields {
        writeln!(out, "  {:<width$} {value}", format!("{name}:"), width = width)?;
    }
    writeln!(out, "  payload:")?;
    write_indented_json(out, &job.call.payload)?;
    match &job.result {
        Some(result) => {
            writeln!(out, "  result:")?;
            write_indented_json(out, result)?;
        }
        None => writeln!(out, "  result: -")?,
    }
    writeln!(out)?;
    write_attempts(out, &detail.attempts)?;
    write_history(out, &detail.history)
}

fn write_attempts(out: &mut impl Write, attempts: &[Attempt]) -> anyhow::Result<()> {
    if attempts.is_empty() {
        writeln!(out, "no attempts yet")?;
        return Ok(());
    }
    writeln!(out, "attempts:")?;
    let mut table =
        Table::new(["KIND", "#", "WORKER", "STARTED", "FINISHED", "OUTCOME", "ERROR"]).indent(2);
    for attempt in attempts {
        table.row([
            attempt.kind.as_str().to_owned(),
            attempt.number.to_string(),
            attempt.worker.clone(),
            timestamp(attempt.started_at),
            optional(attempt.finished_at.map(timestamp)),
            attempt.outcome.map_or_else(|| "under way".to_owned(), |o| o.as_str().to_owned()),
            optional(attempt.error.clone()),
        ]);
    }
    table.write(out)?;
    Ok(())
}

/// What operators did to the job, oldest first.
fn write_history(out: &mut impl Write, history: &[HistoryEntry]) -> anyhow::Result<()> {
    if history.is_empty() {
        writeln!(out, "no operator actions")?;
        return Ok(());
    }
    writeln!(out, "history:")?;
    let mut table = Table::new(["AT", "ACTOR", "ACTION", "DETAIL"]).indent(2);
    for entry in history {
        table.row([
            timestamp(entry.at),
            entry.actor.clone(),
            entry.action.as_str().to_owned(),
            optional(entry.detail.clone()),
        ]);
    }
    table.write(out)?;
    Ok(())
}

fn write_indented_json(out: &mut impl Write, value: &Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    for line in text.lines() {
        writeln!(out, "    {line}")?;
    }
    Ok(())
}

pub(crate) fn write_json(out: &mut impl Write, value: &Value) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

fn list_json(jobs: &[Job], counts: &StateCounts, filter: &JobFilter, reveal: Reveal) -> Value {
    let counts: serde_json::Map<String, Value> = JobState::ALL
        .iter()
        .map(|state| (state.as_str().to_owned(), json!(counts.get(*state))))
        .collect();
    json!({
        "version": JSON_FORMAT_VERSION,
        "jobs": jobs.iter().map(|job| job_json(job, reveal)).collect::<Vec<_>>(),
        "next_before": next_page(jobs, filter).map(|id| id.0),
        "counts": counts,
    })
}

fn detail_json(detail: &JobDetail, reveal: Reveal) -> Value {
    json!({
        "version": JSON_FORMAT_VERSION,
        "job": job_json(&detail.job, reveal),
        "attempts": detail.attempts.iter().map(attempt_json).collect::<Vec<_>>(),
        "history": detail.history.iter().map(|entry| json!({
            "at": entry.at,
            "actor": entry.actor,
            "action": entry.action.as_str(),
            "detail": entry.detail,
        })).collect::<Vec<_>>(),
    })
}

/// A job with its times as Unix milliseconds, named as the store's columns.
fn job_json(job: &Job, reveal: Reveal) -> Value {
    json!({
        "id": job.id.0,
        "state": job.state.as_str(),
        "outcome": job.outcome().map(|outcome| outcome.as_str()),
        "member_id": job.call.member_id,
        "action_code": job.call.action_code,
        "event_token": reveal.event_token(&job.call.event_token),
        "workflow_id": job.call.workflow_id,
        "document_id": job.call.document_id,
        "payload": job.call.payload,
        "payload_version": job.call.payload_version,
        "waits_for_result": job.call.waits_for_result,
        "deadline_at": job.call.deadline_at,
        "attempts": job.attempts,
        "next_run_at": job.next_run_at,
        "lease_owner": job.lease_owner,
        "lease_until": job.lease_until,
        "result": job.result,
        "result_kind": job.result_kind.map(|kind| kind.as_str()),
        "delivery_attempts": job.delivery_attempts,
        "next_delivery_at": job.next_delivery_at,
        "delivered_at": job.delivered_at,
        "send_uncertain": job.send_uncertain,
        "delivery_unconfirmed": job.delivery_unconfirmed,
        "dead_reason": job.dead_reason,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
    })
}

fn attempt_json(attempt: &Attempt) -> Value {
    json!({
        "kind": attempt.kind.as_str(),
        "number": attempt.number,
        "worker": attempt.worker,
        "started_at": attempt.started_at,
        "finished_at": attempt.finished_at,
        "outcome": attempt.outcome.map(|outcome| outcome.as_str()),
        "error": attempt.error,
    })
}

fn optional(value: Option<String>) -> String {
    value.unwrap_or_else(|| "-".to_owned())
}

/// Left-aligned columns two spaces apart; the last column is not padded.
pub(crate) struct Table<const N: usize> {
    indent: usize,
    rows: Vec<[String; N]>,
}

impl<const N: usize> Table<N> {
    pub(crate) fn new(headers: [&str; N]) -> Table<N> {
        Table { indent: 0, rows: vec![headers.map(str::to_owned)] }
    }

    fn indent(self, indent: usize) -> Table<N> {
        Table { indent, ..self }
    }

    pub(crate) fn row(&mut self, cells: [String; N]) {
        self.rows.push(cells);
    }

    pub(crate) fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        let mut widths = [0usize; N];
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        for row in &self.rows {
            let mut line = " ".repeat(self.indent);
            for (column, (cell, width)) in row.iter().zip(widths).enumerate() {
                if column + 1 == N {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<width$}  "));
                }
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_name_their_file() {
        assert_eq!(sqlite_path("sqlite:/var/b.db"), Some(PathBuf::from("/var/b.db")));
        assert_eq!(sqlite_path("sqlite:///var/b.db"), Some(PathBuf::from("/var/b.db")));
        assert_eq!(sqlite_path("sqlite:b.db?mode=rwc"), Some(PathBuf::from("b.db")));
        assert_eq!(sqlite_path("sqlite:"), None);
    }

    #[test]
    fn tables_align_columns_without_trailing_spaces() {
        let mut table = Table::new(["ID", "STATE", "ERROR"]);
        table.row(["1234".to_owned(), "dead".to_owned(), String::new()]);
        table.row(["5".to_owned(), "queued".to_owned(), "HTTP 503".to_owned()]);
        let mut out = Vec::new();
        table.write(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "ID    STATE   ERROR\n1234  dead\n5     queued  HTTP 503\n"
        );
    }
}

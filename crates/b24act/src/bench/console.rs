//! The `console` scenario: the console's pages over HTTP with many jobs in the store. The jobs
//! go in through the store (`Store::enqueue`, in batches of 1,000, an hour of arrivals) for five
//! portals and four actions, and are then spread over every state with one `UPDATE` per state
//! on the SQLite file — what the workers and the outbox would have written, with runs and sends
//! due in a day, so the running server leaves them where they are (its API hangs, so its 8
//! workers hold 8 queued jobs and no more). Then each page is asked for `--console-requests`
//! times in a row on one keep-alive connection: p50 and p99 against issue 10's 100 ms.

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::Context;
use hyper::body::Bytes;
use hyper::{Method, StatusCode, Uri};
use serde_json::json;
use sqlx::ConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;
use store::{JobFilter, NewJob};

use super::BenchArgs;
use super::deployment::{CODE, Deployment};
use super::load::Conn;
use super::measure::Latencies;
use super::report::{Row, ScenarioReport, Target};
use super::scenarios::backlog_setup;

/// Issue 10: every page within 100 ms with 100,000 jobs in the store.
const PAGE_MS: f64 = 100.0;
const PORTALS: u64 = 5;
const ACTIONS: u64 = 4;
const BATCH: u64 = 1_000;

pub async fn console(args: &BenchArgs, server: &Path) -> anyhow::Result<ScenarioReport> {
    let deployment = Deployment::start(&backlog_setup(args), args, server).await?;
    let console = deployment.server().console.context("the server started no console")?;
    let store = deployment.open_store().await?;
    let installed = store.installations().await?;
    let member_id = installed.first().context("the portal is installed")?.portal.member_id.clone();
    let filled = Instant::now();
    fill(&store, &member_id, args.console_jobs).await?;
    let db = deployment.db_path();
    spread_states(&db).await?;
    let fill_seconds = filled.elapsed().as_secs_f64();
    let last = store.list_jobs(&JobFilter { limit: 1, ..JobFilter::default() }).await?;
    let middle = last.first().map_or(1, |job| job.id.0 / 2);
    store.close().await;

    let now = host::clock::now_ms();
    let half_an_hour_ago = host::clock::timestamp(now - 1_800_000).replace(' ', "T");
    let pages = [
        ("overview /".to_owned(), "/".to_owned()),
        ("jobs, no filter".to_owned(), "/jobs".to_owned()),
        ("jobs, state=dead".to_owned(), "/jobs?state=dead".to_owned()),
        ("jobs, state=queued".to_owned(), "/jobs?state=queued".to_owned()),
        ("jobs, portal".to_owned(), "/jobs?portal=bench-portal-3".to_owned()),
        ("jobs, action".to_owned(), "/jobs?action=bench_action_2".to_owned()),
        ("jobs, portal+state".to_owned(), "/jobs?portal=bench-portal-3&state=done".to_owned()),
        ("jobs, workflow".to_owned(), "/jobs?workflow=wf-77777".to_owned()),
        ("jobs, document".to_owned(), "/jobs?document=DEAL_4242".to_owned()),
        ("jobs, since=1h".to_owned(), "/jobs?since=1h".to_owned()),
        (
            "jobs, until".to_owned(),
            format!("/jobs?until={}", half_an_hour_ago.trim_end_matches('Z')),
        ),
        ("jobs, an older page".to_owned(), format!("/jobs?before={middle}")),
        ("a job".to_owned(), format!("/jobs/{middle}")),
        ("portals".to_owned(), "/portals".to_owned()),
    ];
    let mut report = ScenarioReport::new("console");
    let mut conn = Conn::open(console).await?;
    for (name, path) in pages {
        let uri: Uri = path.parse().with_context(|| format!("page path {path}"))?;
        let mut took = Vec::with_capacity(args.console_requests);
        for _ in 0..args.console_requests {
            let started = Instant::now();
            let (status, body) = conn.send(Method::GET, &uri, Bytes::new()).await?;
            took.push(started.elapsed());
            if status != StatusCode::OK {
                anyhow::bail!("GET {path} answered {status}: {}", String::from_utf8_lossy(&body));
            }
        }
        let latencies = Latencies::from_durations(took);
        let n = latencies.len();
        report.row(
            Row::new(format!("{name} p50"), latencies.quantile_ms(0.5), "ms")
                .target(Target::AtMost(PAGE_MS))
                .over(n),
        );
        report.row(
            Row::new(format!("{name} p99"), latencies.quantile_ms(0.99), "ms")
                .target(Target::AtMost(PAGE_MS))
                .over(n),
        );
    }
    report.note(format!(
        "{} jobs of {PORTALS} portals and {ACTIONS} actions, a sixth in each state, stored in {fill_seconds:.1} s; \
         each page asked {} times in a row on one connection to a read-only console (SQLite)",
        args.console_jobs, args.console_requests
    ));
    Ok(report)
}

/// `total` queued jobs through the store, an hour of arrivals: portal `member_id` and four made
/// up, four actions, a workflow each, 5,000 documents.
async fn fill(store: &store::Store, member_id: &str, total: u64) -> anyhow::Result<()> {
    let batches = total.div_ceil(BATCH);
    let start = host::clock::now_ms() - 3_600_000;
    let step = 3_600_000 / i64::try_from(batches.max(1))?;
    for batch in 0..batches {
        let jobs: Vec<NewJob> = (batch * BATCH..(total).min((batch + 1) * BATCH))
            .map(|i| {
                let portal = i % PORTALS;
                let action = i % ACTIONS;
                NewJob {
                    member_id: if portal == 0 {
                        member_id.to_owned()
                    } else {
                        format!("bench-portal-{}", portal + 1)
                    },
                    action_code: if action == 0 {
                        CODE.to_owned()
                    } else {
                        format!("bench_action_{}", action + 1)
                    },
                    event_token: format!("wf-{i}|A1|e{i}.bench"),
                    workflow_id: format!("wf-{i}"),
                    document_id: Some(format!("DEAL_{}", i % 5_000)),
                    payload: json!({
                        "document_id": ["crm", "CCrmDocumentDeal", format!("DEAL_{}", i % 5_000)],
                        "properties": {"company_id": i},
                    }),
                    payload_version: 1,
                    waits_for_result: true,
                    deadline_at: start + 7_200_000,
                }
            })
            .collect();
        store.enqueue(&jobs, start + step * i64::try_from(batch)?).await?;
    }
    Ok(())
}

/// Spreads the jobs over every state by their id, as the workers and the outbox would have:
/// nothing falls due for a day.
async fn spread_states(db: &Path) -> anyhow::Result<()> {
    let url = format!("sqlite:{}", db.display());
    let mut conn = SqliteConnectOptions::from_str(&url)?
        .busy_timeout(Duration::from_secs(60))
        .connect()
        .await?;
    let later = host::clock::now_ms() + 86_400_000;
    let result = r#"'{"return_values":{"limit":1000.0},"log_message":null}'"#;
    for statement in [
        format!("UPDATE jobs SET state = 'running', attempts = 1, lease_owner = 'bench', lease_until = {later}, next_run_at = {later} WHERE id % 6 = 1"),
        format!("UPDATE jobs SET state = 'retry_wait', attempts = 2, next_run_at = {later} WHERE id % 6 = 2"),
        format!("UPDATE jobs SET state = 'delivering', attempts = 1, next_run_at = NULL, result = {result}, result_kind = 'success', next_delivery_at = {later} WHERE id % 6 = 3"),
        format!("UPDATE jobs SET state = 'done', attempts = 1, next_run_at = NULL, result = {result}, result_kind = CASE WHEN id % 12 = 4 THEN 'success' ELSE 'fallback' END, delivery_attempts = 1, delivered_at = created_at + 1000 WHERE id % 6 = 4"),
        "UPDATE jobs SET state = 'dead', attempts = 3, next_run_at = NULL, dead_reason = 'bench: a dead letter' WHERE id % 6 = 5".to_owned(),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(statement)).execute(&mut conn).await?;
    }
    Ok(())
}

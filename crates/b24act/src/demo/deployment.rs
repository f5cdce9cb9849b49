//! What both demo scenarios share: the deployment with the fake finance API and the store's
//! file, the host's delivery pace, when the drive loop stops waiting, the tallies read back at
//! the end (jobs, the portal's REST calls, fallback reasons), the problems that fail a run and
//! the closing summary.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use b24_emulator::{PortalSpec, RecordedCall, WorkflowState};
use fakes::finance::FinanceApi;
use store::{JobFilter, JobState};

use super::{DemoArgs, kept_config_path};
use host::config::{DeliveryConfig, WorkersConfig};
use sandbox::{AppIdentity, Deployment, HostConfig, TempDir, tokens_sent_more_than_once};

/// The demo app's OAuth client id on the emulator, in every scenario.
pub(crate) const CLIENT_ID: &str = "local.b24act.demo";
const CLIENT_SECRET: &str = "demo-secret";

/// A scenario's portal and host, the fake finance API behind its action, and the store's file.
pub(crate) struct DemoDeployment {
    pub deployment: Deployment,
    pub api: FinanceApi,
    /// The SQLite store: in a temp dir, or at `--keep-db`.
    pub store_path: PathBuf,
    /// Holds the temp dir until the run ends.
    _temp: TempDir,
}

impl DemoDeployment {
    /// Starts the fake finance API (seeded with `--seed`), the portal (limited by `--rate` and
    /// `--burst`, unlimited at rate 0) and the host: the demo app, 16 workers holding a job for
    /// `lease`, delivery paced like the portal, and the one `[[actions]]` table `action` writes
    /// against the API. Installs the app until `code` is registered, and with `--keep-db`
    /// writes the configuration next to the store.
    pub async fn start(
        args: &DemoArgs,
        code: &str,
        lease: Duration,
        action: impl FnOnce(&FinanceApi) -> String,
    ) -> anyhow::Result<DemoDeployment> {
        let app = AppIdentity::new(CLIENT_ID, CLIENT_SECRET);
        let temp = TempDir::new("b24act-demo").context("creating a temp dir for the store")?;
        let store_path = match &args.keep_db {
            Some(path) => path.clone(),
            None => temp.path().join("b24act-demo.db"),
        };
        let api = FinanceApi::start(args.seed).await.context("starting the fake finance API")?;
        let portal = PortalSpec {
            rate: (args.rate, args.burst),
            unlimited: !portal_is_limited(args),
            ..PortalSpec::default()
        };
        let store_url = format!("sqlite:{}", store_path.display());
        let deployment = Deployment::start(
            portal,
            &app,
            &[code],
            |site| {
                HostConfig {
                    workers: WorkersConfig { concurrency: 16, lease },
                    delivery: delivery(args),
                    actions: vec![action(&api)],
                    ..HostConfig::new(&app, site, &store_url)
                }
                .to_toml()
            },
            &connectors::Registry::new(),
        )
        .await?;
        if let Some(path) = &args.keep_db {
            let config_path = kept_config_path(path);
            std::fs::write(&config_path, &deployment.config_text)
                .with_context(|| format!("writing {}", config_path.display()))?;
        }
        Ok(DemoDeployment { deployment, api, store_path, _temp: temp })
    }

    /// Shuts the deployment down, whether the run `collected` its summary or failed.
    pub async fn shut_down<S>(self, collected: anyhow::Result<S>) -> anyhow::Result<S> {
        self.deployment.running.shutdown().await;
        collected
    }
}

/// Prints the summary and, with `--keep-db`, how to look at the jobs.
pub(crate) fn print_summary(
    summary: &str,
    args: &DemoArgs,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    writeln!(out, "\nSummary")?;
    write!(out, "{summary}")?;
    if let Some(path) = &args.keep_db {
        writeln!(
            out,
            "\nThe store is kept: b24act jobs list --config {}",
            kept_config_path(path).display()
        )?;
    }
    out.flush()?;
    Ok(())
}

/// Whether the portal has a rate limit (`--rate` above 0).
fn portal_is_limited(args: &DemoArgs) -> bool {
    args.rate > 0.0
}

/// The portal's limit as the demo's header prints it: `2/s, burst 50` or `off`.
pub(crate) fn portal_limit(args: &DemoArgs) -> String {
    if portal_is_limited(args) {
        format!("{}/s, burst {}", args.rate, args.burst)
    } else {
        "off".to_owned()
    }
}

/// The host's `[delivery]`: paced like the portal (practically unpaced when the portal has no
/// limit), retrying a failed delivery quickly.
fn delivery(args: &DemoArgs) -> DeliveryConfig {
    let (rate_per_second, burst) =
        if portal_is_limited(args) { (args.rate, args.burst) } else { (1000.0, 1000) };
    DeliveryConfig {
        rate_per_second,
        burst,
        retry_base: Duration::from_millis(100),
        retry_cap: Duration::from_secs(1),
    }
}

/// Every job the host stored, newest first.
pub(crate) async fn all_jobs(store: &store::Store) -> anyhow::Result<Vec<store::Job>> {
    let mut jobs = Vec::new();
    let mut filter = JobFilter { limit: 500, ..JobFilter::default() };
    loop {
        let page = store.list_jobs(&filter).await?;
        let Some(last) = page.last() else { break };
        filter.before = Some(last.id);
        jobs.extend(page);
    }
    Ok(jobs)
}

/// The stored jobs' totals every summary shows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JobTotals {
    pub jobs: usize,
    /// Jobs that ended dead: nothing was sent for them.
    pub dead: usize,
    /// Jobs `done` without the portal's word: a resend after an uncertain send was answered
    /// "not found" (information, not a problem).
    pub unconfirmed_deliveries: usize,
    /// Execution attempts beyond the first, over all jobs.
    pub retries: u64,
}

impl JobTotals {
    pub fn of(jobs: &[store::Job]) -> JobTotals {
        JobTotals {
            jobs: jobs.len(),
            dead: jobs.iter().filter(|j| j.state == JobState::Dead).count(),
            unconfirmed_deliveries: jobs.iter().filter(|j| j.delivery_unconfirmed).count(),
            retries: jobs.iter().map(|j| u64::from(j.attempts.saturating_sub(1))).sum(),
        }
    }
}

/// The summary rows about the store every scenario prints: jobs and dead ones, unconfirmed
/// deliveries.
pub(crate) fn store_rows(text: &mut String, jobs: usize, dead: usize, unconfirmed: usize) {
    super::row(text, "jobs stored / dead", format!("{jobs} / {dead} (dead must be 0)"));
    super::row(
        text,
        "deliveries unconfirmed",
        format!("{unconfirmed} (done: a resend found the workflow already finished)"),
    );
}

/// No job has anything left to do: none queued, running, waiting to retry or delivering.
async fn jobs_settled(store: &store::Store) -> anyhow::Result<bool> {
    let counts = store.state_counts().await?;
    Ok(counts.queued + counts.running + counts.retry_wait + counts.delivering == 0)
}

/// When a scenario's drive loop stops waiting: once everything has started and nothing is left
/// to do, or at the hard cap.
pub(crate) struct Settling {
    hard_cap: Duration,
    next_check: Duration,
}

impl Settling {
    /// Gives up waiting at `hard_cap`, measured like the drive loop's elapsed time.
    pub fn until(hard_cap: Duration) -> Settling {
        Settling { hard_cap, next_check: Duration::ZERO }
    }

    /// Whether the drive loop is done at `elapsed`: when `ready` (everything started, nothing
    /// more to come), checked every 100 ms, no workflow `is_running` and no job has anything
    /// left to do (a late second send would show); at the hard cap in any case, saying so.
    pub async fn done(
        &mut self,
        deployment: &Deployment,
        elapsed: Duration,
        ready: bool,
        is_running: impl Fn(&WorkflowState) -> bool,
        out: &mut impl std::io::Write,
    ) -> anyhow::Result<bool> {
        if ready && elapsed >= self.next_check {
            self.next_check = elapsed + Duration::from_millis(100);
            let workflows = deployment.emulator().workflows(deployment.domain())?;
            if !workflows.iter().any(is_running) && jobs_settled(deployment.store()).await? {
                return Ok(true);
            }
        }
        if elapsed >= self.hard_cap {
            writeln!(out, "  giving up waiting after {:.1} s", elapsed.as_secs_f64())?;
            return Ok(true);
        }
        Ok(false)
    }
}

/// Why a run counts as failed: `"{count} {what}"` for each of `must_be_zero` that is not 0,
/// then the portal's `QUERY_LIMIT_EXCEEDED` answers, which every scenario counts.
pub(crate) fn problems(must_be_zero: &[(usize, &str)], query_limit_exceeded: usize) -> Vec<String> {
    let mut problems: Vec<String> = must_be_zero
        .iter()
        .filter(|(count, _)| *count > 0)
        .map(|(count, what)| format!("{count} {what}"))
        .collect();
    if query_limit_exceeded > 0 {
        problems.push(format!(
            "the portal answered QUERY_LIMIT_EXCEEDED {query_limit_exceeded} time(s)"
        ));
    }
    problems
}

/// What the portal received, as every summary counts it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PortalCalls {
    /// Every REST request, batch sub-commands not counted separately.
    pub rest_requests: usize,
    pub batches: usize,
    /// `bizproc.event.send` commands the portal accepted.
    pub event_sends: usize,
    /// Results sent more than once: see [`tokens_sent_more_than_once`].
    pub results_sent_more_than_once: usize,
    /// `bizproc.activity.log` commands the portal accepted.
    pub activity_log_lines: usize,
    pub query_limit_exceeded: usize,
}

impl PortalCalls {
    pub fn of(calls: &[RecordedCall]) -> PortalCalls {
        let accepted = |method: &str| {
            calls
                .iter()
                .filter(|c| c.method == method && c.status == 200 && c.error.is_none())
                .count()
        };
        PortalCalls {
            rest_requests: calls.iter().filter(|c| !c.in_batch).count(),
            batches: calls.iter().filter(|c| c.method == "batch").count(),
            event_sends: accepted("bizproc.event.send"),
            results_sent_more_than_once: tokens_sent_more_than_once(calls).len(),
            activity_log_lines: accepted("bizproc.activity.log"),
            query_limit_exceeded: calls
                .iter()
                .filter(|c| c.error.as_deref() == Some("QUERY_LIMIT_EXCEEDED"))
                .count(),
        }
    }
}

/// Reasons with their counts, the most frequent first (ties in the reasons' order).
pub(crate) fn most_frequent_first(reasons: BTreeMap<String, usize>) -> Vec<(String, usize)> {
    let mut reasons: Vec<(String, usize)> = reasons.into_iter().collect();
    reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    reasons
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    /// A `bizproc.event.send` the portal answered with `error` (`None`: accepted).
    fn send(token: &str, in_batch: bool, error: Option<&str>) -> RecordedCall {
        RecordedCall {
            method: "bizproc.event.send".into(),
            status: if error.is_some() { 400 } else { 200 },
            error: error.map(str::to_owned),
            at: SystemTime::now(),
            in_batch,
            caller: "app:local.b24act.demo".into(),
            event_token: Some(token.into()),
        }
    }

    #[test]
    fn a_resend_answered_404_after_the_workflow_finished_is_a_second_send() {
        let calls = [
            send("a", true, None),
            send("b", true, None),
            send("c", false, None),
            // `b`'s answer was lost; the resend finds the workflow finished.
            send("b", false, Some("404")),
        ];
        assert_eq!(tokens_sent_more_than_once(&calls), ["b"]);
        let counted = PortalCalls::of(&calls);
        assert_eq!((counted.event_sends, counted.results_sent_more_than_once), (3, 1));
    }

    #[test]
    fn other_methods_and_sends_without_a_token_are_not_sends_of_a_result() {
        let log = RecordedCall { method: "bizproc.activity.log".into(), ..send("a", false, None) };
        let refused =
            RecordedCall { event_token: None, ..send("", false, Some("QUERY_LIMIT_EXCEEDED")) };
        let calls = [send("a", false, None), log, refused.clone(), refused];
        assert!(tokens_sent_more_than_once(&calls).is_empty());
    }
}

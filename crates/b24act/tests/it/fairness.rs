//! Two portals on one `b24act serve`: a big one with hundreds of calls queued behind a slow API
//! and its own request budget, and a small one with ten. Workers and the outbox claim
//! round-robin across portals, so the small portal's workflows close while the big one is
//! still draining, instead of waiting their turn behind it.

use std::time::{Duration, Instant};

use b24_emulator::{PortalSpec, WorkflowSpec, WorkflowStatus};
use fakes::finance::Behaviour;

use crate::support::{CLIENT_ID, CODE, Options, ServeSite, Server};

/// The big portal's calls, queued before the small portal's.
const BIG: usize = 600;
const SMALL: usize = 10;
/// How long the small portal's workflows may take to close, from their start. Its calls wait
/// behind at most one claim of the big portal's at each stage (a worker slot's API call, one
/// batch); in arrival order they would wait for the big portal's whole backlog: 600 jobs at
/// 8 workers × 50 ms is 3.75 s of work alone, then 550 results at the big portal's 2/s × 50.
const SMALL_WITHIN: Duration = Duration::from_secs(3);

async fn start_workflows(site: &ServeSite, domain: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    for n in 0..count {
        let spec = WorkflowSpec {
            domain: domain.to_owned(),
            code: CODE.into(),
            properties: serde_json::json!({"company_id": 1 + n % 5}),
            timeout_duration: 600,
            ..WorkflowSpec::default()
        };
        ids.push(site.sandbox.emulator.start_workflow(spec).await.unwrap().workflow_id);
    }
    ids
}

/// How many of `ids` on `domain` are still waiting for their result.
fn waiting(site: &ServeSite, domain: &str, ids: &[String]) -> usize {
    let emulator = &site.sandbox.emulator;
    ids.iter()
        .filter(|id| emulator.workflow(domain, id).unwrap().status == WorkflowStatus::Waiting)
        .count()
}

/// Waits until the host has answered the portal's call of every workflow in `ids` (so they
/// are stored jobs, ahead of anything started later).
async fn wait_accepted(site: &ServeSite, domain: &str, ids: &[String], within: Duration) {
    let deadline = Instant::now() + within;
    let emulator = &site.sandbox.emulator;
    loop {
        let pending = ids
            .iter()
            .filter(|id| {
                let deliveries = emulator.workflow(domain, id).unwrap().deliveries;
                !deliveries.iter().any(|d| d.status == Some(200))
            })
            .count();
        if pending == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{pending} calls not accepted within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_portal_is_served_while_a_big_one_drains() {
    let limited = PortalSpec { unlimited: false, rate: (2.0, 50), ..PortalSpec::default() };
    let options = Options { portal: limited.clone(), max_wait: "120s", ..Options::default() };
    let site = ServeSite::new("b24act-fairness", 21, &options).await;
    site.api.set(Behaviour { latency: Duration::from_millis(50), ..Behaviour::healthy() });
    let _server = Server::start(&site.config);
    let big = site.sandbox.domain.clone();
    site.sandbox.install(CLIENT_ID, &[CODE], Duration::from_secs(20)).await.unwrap();
    let small = site.sandbox.emulator.create_portal(limited).await.unwrap().domain;
    let installed = site.sandbox.emulator.install_app(&small, CLIENT_ID).await.unwrap();
    assert_eq!(installed.event_status, Some(200), "the host refused the second portal's install");
    let registered_by = Instant::now() + Duration::from_secs(20);
    while !site.sandbox.emulator.registrations(&small).unwrap().iter().any(|r| r.code == CODE) {
        assert!(Instant::now() < registered_by, "the action was not registered on {small}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let big_ids = start_workflows(&site, &big, BIG).await;
    wait_accepted(&site, &big, &big_ids, Duration::from_secs(30)).await;
    let small_started = Instant::now();
    let small_ids = start_workflows(&site, &small, SMALL).await;
    loop {
        let small_waiting = waiting(&site, &small, &small_ids);
        if small_waiting == 0 {
            break;
        }
        assert!(
            small_started.elapsed() < SMALL_WITHIN,
            "{small_waiting} of the small portal's {SMALL} workflows still waiting after \
             {SMALL_WITHIN:?}; the big portal has {} of {BIG} waiting",
            waiting(&site, &big, &big_ids)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let small_took = small_started.elapsed();
    // The comparison only means something if the big portal was still draining.
    let big_waiting = waiting(&site, &big, &big_ids);
    assert!(
        big_waiting >= BIG / 4,
        "the big portal had only {big_waiting} workflows waiting when the small one finished \
         ({small_took:?}): the test no longer loads it enough to show fairness"
    );

    let drained_by = Instant::now() + Duration::from_secs(60);
    while waiting(&site, &big, &big_ids) > 0 {
        assert!(Instant::now() < drained_by, "the big portal did not drain within 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

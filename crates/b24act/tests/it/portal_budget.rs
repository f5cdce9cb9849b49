//! The portal's request budget seen from the host (docs/protocol.md §5.6): a bucket another
//! client filled, or one the host itself filled before a restart, costs at most one
//! `QUERY_LIMIT_EXCEEDED` — the host believes the portal and paces from a full bucket.

use std::time::{Duration, SystemTime};

use b24_emulator::{PortalSpec, WorkflowStatus};

use crate::support::{Options, TestApp};

/// A portal with the cloud's limits: 2 requests/s, burst 50.
fn limited() -> Options {
    Options {
        portal: PortalSpec { unlimited: false, ..PortalSpec::default() },
        ..Options::default()
    }
}

/// Spends the portal's whole budget from outside the host, as another app or node would.
async fn fill_the_portals_bucket(app: &TestApp) {
    let hook = app.emulator.create_webhook(&app.domain, 1, "bizproc").unwrap();
    let http = reqwest::Client::new();
    for _ in 0..60 {
        let _ = http.post(format!("{hook}profile")).json(&serde_json::json!({})).send().await;
    }
    // A refusal is recorded before the caller is known, so it names nobody (caller `none`).
    let refused = app
        .emulator
        .rest_calls(&app.domain)
        .iter()
        .any(|c| c.error.as_deref() == Some("QUERY_LIMIT_EXCEEDED"));
    assert!(refused, "the hog should have filled the bucket");
}

/// Waits until every workflow of `ids` closed with its result.
async fn all_close(app: &TestApp, ids: &[String], within: Duration) {
    for id in ids {
        assert_eq!(app.wait_closed(id, within).await.status, WorkflowStatus::Closed);
    }
}

/// `QUERY_LIMIT_EXCEEDED` answers since `since`, when the host is the portal's only client.
fn host_refusals(app: &TestApp, since: SystemTime) -> usize {
    app.emulator
        .rest_calls(&app.domain)
        .iter()
        .filter(|c| c.at >= since)
        .filter(|c| c.error.as_deref() == Some("QUERY_LIMIT_EXCEEDED"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_another_client_filled_costs_at_most_one_refusal() {
    let app = TestApp::start(limited()).await;
    // Long enough for the host's own bucket to believe itself empty again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    fill_the_portals_bucket(&app).await;
    let since = SystemTime::now();
    let mut ids = Vec::new();
    for company in 0..6 {
        ids.push(app.start_workflow(company, 0).await);
    }
    all_close(&app, &ids, Duration::from_secs(30)).await;
    let refusals = host_refusals(&app, since);
    assert!(refusals <= 1, "{refusals} QUERY_LIMIT_EXCEEDED for the host");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_under_load_costs_at_most_one_refusal() {
    let mut app = TestApp::start(limited()).await;
    let mut ids = Vec::new();
    for company in 0..4 {
        ids.push(app.start_workflow(company, 0).await);
    }
    fill_the_portals_bucket(&app).await;
    app.running.take().unwrap().shutdown().await;
    let since = SystemTime::now();
    let listener = tokio::net::TcpListener::bind(app.listen).await.unwrap();
    // The restarted host registers its actions again and delivers what is waiting.
    app.start_host(listener).await;
    for company in 4..8 {
        ids.push(app.start_workflow(company, 0).await);
    }
    all_close(&app, &ids, Duration::from_secs(40)).await;
    let refusals = host_refusals(&app, since);
    assert!(refusals <= 1, "{refusals} QUERY_LIMIT_EXCEEDED for the host after its restart");
}

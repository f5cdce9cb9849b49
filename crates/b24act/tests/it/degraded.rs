//! A portal that cannot be served. Its token the auth server will not renew (`invalid_grant`):
//! its deliveries pause instead of retrying every second, `GET /health` answers 503 naming it
//! with the reason, and a reinstall clears it (docs/protocol.md §4.1). Its actions cannot be
//! registered: the same. Meanwhile `GET /health/intake`, what a load balancer asks, stays 200:
//! the node still takes every call durably, and Bitrix24 never sends a refused call again.

use std::time::{Duration, Instant};

use b24::rest::{AppCredentials, HttpClient, redeem_refresh_token};
use b24::secret::{ClientSecret, RefreshToken};
use b24_emulator::WorkflowStatus;
use host::health::Cause;
use serde_json::Value;
use store::{JobFilter, JobState};

use crate::host_fixture::TestHost;
use crate::support::{CLIENT_ID, CLIENT_SECRET, Options, TestApp};

/// `GET /health`: 200 when the status is `ok`, 503 otherwise; the body.
async fn health(app: &TestApp) -> Value {
    let answer = reqwest::get(format!("http://{}/health", app.listen)).await.unwrap();
    let code = answer.status().as_u16();
    let body: Value = answer.json().await.unwrap();
    let expected = if body["status"] == "ok" { 200 } else { 503 };
    assert_eq!(code, expected, "a portal that cannot be served makes /health 503: {body}");
    body
}

/// `GET /health/intake` answers 200: the node takes calls.
async fn takes_calls(app: &TestApp) {
    let answer = reqwest::get(format!("http://{}/health/intake", app.listen)).await.unwrap();
    assert_eq!(answer.status(), 200, "a degraded portal does not take the node out of service");
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["status"], "ok");
}

async fn wait_for_health(app: &TestApp, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let shown = health(app).await;
        if shown["status"] == status {
            return shown;
        }
        assert!(Instant::now() < deadline, "health never became {status}: {shown}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_refresh_token_pauses_delivery_shows_in_health_and_a_reinstall_clears_it() {
    let app = TestApp::start(Options::default()).await;
    let member_id = app.emulator.portal(&app.domain).unwrap().member_id;
    assert_eq!(health(&app).await["status"], "ok");
    takes_calls(&app).await;

    // Someone else redeems the stored refresh token: the host's copy is dead from now on.
    let stored = app.store().installation(&member_id).await.unwrap().unwrap();
    let credentials = AppCredentials {
        client_id: CLIENT_ID.into(),
        client_secret: ClientSecret::new(CLIENT_SECRET),
        auth_server: format!("{}/", app.emulator.control_url()).parse().unwrap(),
    };
    let spent = RefreshToken::new(stored.portal.refresh_token.unwrap());
    redeem_refresh_token(&HttpClient::new().unwrap(), &credentials, &spent, Duration::from_secs(5))
        .await
        .unwrap();
    app.emulator.expire_tokens(&app.domain).unwrap();

    let id = app.start_workflow(4, 0).await;
    let shown = wait_for_health(&app, "degraded").await;
    let degraded = &shown["degraded"][0];
    assert_eq!(degraded["portal"], member_id.as_str());
    assert_eq!(degraded["cause"], "token");
    assert!(degraded["reason"].as_str().unwrap().contains("invalid_grant"), "{shown}");
    takes_calls(&app).await;

    // Paused: the result waits about a minute, not a retry_base, for its next try.
    // The portal is marked degraded before the send's outcome is recorded: wait for the record.
    let filter = JobFilter { member_id: Some(member_id.clone()), ..JobFilter::default() };
    let recorded = Instant::now() + Duration::from_secs(5);
    let job = loop {
        let job = app.store().list_jobs(&filter).await.unwrap().remove(0);
        let detail = app.store().job(job.id).await.unwrap().unwrap();
        if detail.attempts.iter().all(|attempt| attempt.finished_at.is_some())
            || Instant::now() > recorded
        {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(job.state, JobState::Delivering);
    let next = job.next_delivery_at.expect("a next delivery");
    assert!(
        next - host::clock::now_ms() > 45_000,
        "next try in {} ms",
        next - host::clock::now_ms()
    );
    assert_eq!(app.workflow(&id).status, WorkflowStatus::Waiting, "the result is kept, not lost");

    // Reinstalling gives the portal fresh tokens and clears it.
    app.emulator.update_app(&app.domain, CLIENT_ID).await.unwrap();
    let shown = wait_for_health(&app, "ok").await;
    assert_eq!(shown["degraded"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_whose_actions_cannot_be_registered_is_degraded_until_they_are() {
    let t = TestHost::start().await;
    let member_id = t.portal.member_id.clone();
    // Registration made at start when the installation cannot be read: not retryable.
    t.host.store.mark_uninstalled(&member_id, t.t0).await.unwrap();
    t.host.portals.forget(&member_id);
    host::install::register_with_retries(t.host.clone(), member_id.clone()).await;

    let degraded = t.host.health.degraded();
    assert_eq!(degraded.len(), 1, "{degraded:?}");
    let (portal, why) = &degraded[0];
    assert_eq!((portal.as_str(), why.cause), (member_id.as_str(), Cause::Registration));
    assert!(why.reason.starts_with("actions not registered: "), "{why:?}");
    assert!(
        why.reason.ends_with("restart b24act, run b24act sync or reinstall the app to try again"),
        "{why:?}"
    );

    // A delivery that gets through says nothing about registrations; a registration does.
    assert!(!t.host.health.clear(&member_id, Cause::Token));
    assert_eq!(t.host.health.degraded().len(), 1);
    let stored = t.host.store.installation(&member_id).await.unwrap().unwrap();
    t.host.store.upsert_installation(&stored.portal, t.t0).await.unwrap();
    t.host.portals.forget(&member_id);
    host::install::register_with_retries(t.host.clone(), member_id.clone()).await;
    assert_eq!(t.host.health.degraded(), [], "registered: no longer degraded");
}

//! End to end, emulator → intake → store → worker → `http` connector → fake API → outbox →
//! `bizproc.event.send`, each scenario on SQLite and again on PostgreSQL (`serve::postgres::*`,
//! ignored by name when `B24ACT_TEST_POSTGRES_URL` is not set: see `store::testing`).

use std::time::Duration;

use b24_emulator::{Faults, PortalSpec, WorkflowStatus};
use fakes::finance::Behaviour;
use serde_json::json;
use store::testing::ScratchStore;
use store::{JobFilter, JobState};

use crate::support::{Options, TestApp, number};

store::on_both_stores!(store::testing::with_scratch_store =>
    happy_path_returns_the_apis_answer_once,
    api_down_then_up_is_retried_with_log_lines_until_the_result,
    api_down_past_the_deadline_returns_the_fallback_with_the_reason,
    portal_timeout_shorter_than_max_wait_wins,
    a_duplicated_call_makes_one_job,
    a_wrong_application_token_is_refused_and_nothing_stored,
    invalid_properties_resolve_through_the_failure_policy,
    an_expired_token_is_refreshed_during_delivery,
    under_the_portal_rate_limit_results_are_batched_without_503s,
);

fn options(store: ScratchStore) -> Options {
    Options { store_url: Some(store.url), ..Options::default() }
}

async fn happy_path_returns_the_apis_answer_once(store: ScratchStore) {
    let app = TestApp::start(options(store)).await;
    let id = app.start_workflow(42, 0).await;
    let state = app.wait_closed(&id, Duration::from_secs(10)).await;
    let (limit, debt) = app.api.company(42).unwrap();
    assert_eq!(state.status, WorkflowStatus::Closed);
    assert_eq!(number(&state.return_values["limit"]), limit, "{state:?}");
    assert_eq!(number(&state.return_values["debt"]), debt, "{state:?}");
    app.wait_for_jobs(JobState::Done, 1, Duration::from_secs(5)).await;
    assert_eq!(app.store().list_jobs(&JobFilter::default()).await.unwrap().len(), 1);
    assert_eq!(app.calls_of("bizproc.event.send"), 1, "sent exactly once");
}

async fn api_down_then_up_is_retried_with_log_lines_until_the_result(store: ScratchStore) {
    let app = TestApp::start(options(store)).await;
    app.api.set(Behaviour { down: true, ..Behaviour::default() });
    let id = app.start_workflow(7, 0).await;
    app.wait_until("three failed attempts", Duration::from_secs(10), |app| {
        app.api.counts().failures() >= 3
    })
    .await;
    assert_eq!(
        app.workflow(&id).status,
        WorkflowStatus::Waiting,
        "still waiting while the API is down"
    );
    app.api.set(Behaviour::default());
    let state = app.wait_closed(&id, Duration::from_secs(10)).await;
    assert_eq!(number(&state.return_values["limit"]), app.api.company(7).unwrap().0);
    let progress = state.log.iter().filter(|line| line.contains("retrying")).count();
    assert!(progress >= 2, "progress lines in the workflow log: {:?}", state.log);
    assert_eq!(app.calls_of("bizproc.event.send"), 1);
}

async fn api_down_past_the_deadline_returns_the_fallback_with_the_reason(store: ScratchStore) {
    let app = TestApp::start(Options { max_wait: "2s", ..options(store) }).await;
    app.api.set(Behaviour { down: true, ..Behaviour::default() });
    let id = app.start_workflow(3, 0).await;
    let state = app.wait_closed(&id, Duration::from_secs(10)).await;
    assert_eq!(state.return_values["unavailable"], json!("Y"), "{state:?}");
    let reason = state.log.iter().find(|line| line.starts_with("Finance system unavailable:"));
    assert!(
        reason.is_some_and(|line| line.contains("503")),
        "the reason names the failure: {:?}",
        state.log
    );
}

async fn portal_timeout_shorter_than_max_wait_wins(store: ScratchStore) {
    let app = TestApp::start(Options { max_wait: "60s", ..options(store) }).await;
    app.api.set(Behaviour { down: true, ..Behaviour::default() });
    // The portal waits 4 s; with the 1 s margin the fallback must arrive within about 3 s,
    // before the portal's own timeout closes the activity.
    let id = app.start_workflow(5, 4).await;
    let state = app.wait_closed(&id, Duration::from_secs(10)).await;
    assert_eq!(
        state.status,
        WorkflowStatus::Closed,
        "closed by our fallback, not by the timeout: {state:?}"
    );
    assert!(!state.is_timeout);
    assert_eq!(state.return_values["unavailable"], json!("Y"));
}

async fn a_duplicated_call_makes_one_job(store: ScratchStore) {
    let app = TestApp::start(options(store)).await;
    app.emulator
        .set_faults(&app.domain, Faults { duplicate_calls: true, ..Faults::default() })
        .unwrap();
    let id = app.start_workflow(11, 0).await;
    app.wait_until("both copies delivered", Duration::from_secs(10), |app| {
        app.workflow(&id).deliveries.len() == 2
    })
    .await;
    let state = app.wait_closed(&id, Duration::from_secs(10)).await;
    assert!(
        state.deliveries.iter().all(|d| d.status == Some(200)),
        "both copies answered 200: {:?}",
        state.deliveries
    );
    assert_eq!(app.store().list_jobs(&JobFilter::default()).await.unwrap().len(), 1);
    assert_eq!(app.calls_of("bizproc.event.send"), 1);
}

async fn a_wrong_application_token_is_refused_and_nothing_stored(store: ScratchStore) {
    let app = TestApp::start(options(store)).await;
    // A real call body, captured by dropping the emulator's delivery, then tampered with.
    app.emulator.set_faults(&app.domain, Faults { drop_calls: true, ..Faults::default() }).unwrap();
    let id = app.start_workflow(1, 0).await;
    let body = app.workflow(&id).body;
    let mut form = phpform::decode(body.as_bytes(), &phpform::Limits::default()).unwrap();
    auth_of(&mut form).insert("application_token".into(), "forged".into());
    let forged = phpform::encode(&form);
    let http = reqwest::Client::new();
    let url = format!("http://{}/bitrix/actions/{}", app.listen, crate::support::CODE);
    let response = http
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(forged)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(response.text().await.unwrap().contains("auth[application_token]"));
    auth_of(&mut form).insert("member_id".into(), "0123456789abcdef0123456789abcdef".into());
    let response = http
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(phpform::encode(&form))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(
        app.store().list_jobs(&JobFilter::default()).await.unwrap().is_empty(),
        "nothing stored"
    );
}

fn auth_of(form: &mut phpform::Array) -> &mut phpform::Array {
    match form.get_mut("auth") {
        Some(phpform::Value::Array(auth)) => auth,
        _ => panic!("auth is an array"),
    }
}

async fn invalid_properties_resolve_through_the_failure_policy(store: ScratchStore) {
    let app = TestApp::start(options(store)).await;
    let spec = b24_emulator::WorkflowSpec {
        domain: app.domain.clone(),
        code: crate::support::CODE.into(),
        properties: json!({"company_id": "forty-two"}),
        finish_after: None,
        ..b24_emulator::WorkflowSpec::default()
    };
    let id = app.emulator.start_workflow(spec).await.unwrap().workflow_id;
    let state = app.wait_closed(&id, Duration::from_secs(10)).await;
    assert_eq!(state.return_values["unavailable"], json!("Y"));
    assert!(
        state.log.iter().any(|l| l.contains("properties[company_id]")),
        "the log names the field: {:?}",
        state.log
    );
    assert_eq!(app.api.counts().requests, 0, "the connector never ran");
}

async fn an_expired_token_is_refreshed_during_delivery(store: ScratchStore) {
    let app = TestApp::start(options(store)).await;
    let member_id = app.emulator.portal(&app.domain).unwrap().member_id;
    let before = app.store().installation(&member_id).await.unwrap().unwrap().portal.refresh_token;
    app.emulator.expire_tokens(&app.domain).unwrap();
    let id = app.start_workflow(9, 0).await;
    let state = app.wait_closed(&id, Duration::from_secs(10)).await;
    assert_eq!(number(&state.return_values["limit"]), app.api.company(9).unwrap().0);
    let after = app.store().installation(&member_id).await.unwrap().unwrap().portal.refresh_token;
    assert_ne!(before, after, "the new refresh token was stored");
}

async fn under_the_portal_rate_limit_results_are_batched_without_503s(store: ScratchStore) {
    let portal = PortalSpec { rate: (2.0, 50), ..PortalSpec::default() };
    let app = TestApp::start(Options { portal, ..options(store) }).await;
    let mut ids = Vec::new();
    for company in 0..120 {
        ids.push(app.start_workflow(company, 0).await);
    }
    for id in &ids {
        app.wait_closed(id, Duration::from_secs(30)).await;
    }
    let calls = app.emulator.rest_calls(&app.domain);
    assert!(
        calls.iter().all(|c| c.error.as_deref() != Some("QUERY_LIMIT_EXCEEDED")),
        "no 503 from the bucket"
    );
    let sends = calls.iter().filter(|c| c.method == "bizproc.event.send").count();
    assert_eq!(sends, 120, "every result sent exactly once");
    // Unbatched, 120 sends through a 2/s bucket with a burst of 50 need more than 35 s; they
    // all arrived within the 30 s waited above, so most went out several to a batch.
    let batches = calls.iter().filter(|c| c.method == "batch").count();
    assert!(batches <= 70, "120 results went out in {batches} batch requests");
    app.wait_for_jobs(JobState::Done, 120, Duration::from_secs(10)).await;
}

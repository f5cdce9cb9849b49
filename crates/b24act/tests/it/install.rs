//! The app's lifecycle on a portal: an update re-registers what it wiped, an uninstall stops
//! work, a forged install is refused; and an action whose workflow does not wait.

use std::time::Duration;

use b24_emulator::{WorkflowSpec, WorkflowStatus};
use serde_json::json;
use store::{InstallationStatus, JobState};

use crate::support::{CODE, NOTIFY_CODE, Options, TestApp};

fn registered(app: &TestApp) -> Vec<String> {
    app.emulator.registrations(&app.domain).unwrap().into_iter().map(|r| r.code).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_update_wipes_registrations_and_the_host_registers_again() {
    let app = TestApp::start(Options::default()).await;
    assert!(registered(&app).contains(&NOTIFY_CODE.to_owned()));
    let updated = app.emulator.update_app(&app.domain, crate::support::CLIENT_ID).await.unwrap();
    assert_eq!(updated.event_status, Some(200), "the host took ONAPPUPDATE");
    app.wait_until("both actions are registered again", Duration::from_secs(10), |app| {
        let codes = registered(app);
        codes.contains(&CODE.to_owned()) && codes.contains(&NOTIFY_CODE.to_owned())
    })
    .await;
    let id = app.start_workflow(4, 0).await;
    assert_eq!(app.wait_closed(&id, Duration::from_secs(10)).await.status, WorkflowStatus::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_uninstall_calls_are_refused_and_nothing_is_stored() {
    let app = TestApp::start(Options::default()).await;
    let member_id = app.emulator.portal(&app.domain).unwrap().member_id;
    app.emulator.uninstall_app(&app.domain, crate::support::CLIENT_ID).await.unwrap();
    let installation = app.store().installation(&member_id).await.unwrap().unwrap();
    assert_eq!(installation.status, InstallationStatus::Uninstalled);
    // The portal wiped its registrations, so it would not call any more: post a call as a
    // portal would, with the real member_id and application_token, to see the host refuse it.
    let http = reqwest::Client::new();
    let url = format!("http://{}/bitrix/actions/{CODE}", app.listen);
    let body = "workflow_id=w.1&code=check_credit&document_id[0]=crm&document_id[1]=CCrmDocumentDeal\
                &document_id[2]=DEAL_1&event_token=w.1|A1|E.sig&auth[domain]=d.example.com";
    let body = format!(
        "{body}&auth[member_id]={member_id}&auth[application_token]={}",
        installation.application_token
    );
    let response = http.post(&url).body(body).send().await.unwrap();
    assert_eq!(response.status(), 401, "{}", response.text().await.unwrap());
    assert_eq!(app.store().state_counts().await.unwrap().get(JobState::Queued), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_install_event_is_refused_by_app_info() {
    let app = TestApp::start(Options::default()).await;
    let portal = app.emulator.portal(&app.domain).unwrap();
    let forged_member = "f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0";
    let body = format!(
        "event=ONAPPINSTALL&data[VERSION]=1&ts=1&auth[access_token]=not-a-real-token\
         &auth[refresh_token]=nope&auth[expires]=1&auth[domain]=evil.example.com\
         &auth[server_endpoint]={server}&auth[client_endpoint]={client}\
         &auth[member_id]={forged_member}&auth[application_token]=chosen-by-attacker",
        server = app.emulator.oauth_server_endpoint(),
        client = portal.client_endpoint,
    );
    let http = reqwest::Client::new();
    let response =
        http.post(format!("http://{}/bitrix/install", app.listen)).body(body).send().await.unwrap();
    assert_eq!(response.status(), 403);
    assert!(app.store().installation(forged_member).await.unwrap().is_none(), "nothing stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_subscription_the_work_runs_and_nothing_is_returned() {
    let app = TestApp::start(Options::default()).await;
    let spec = WorkflowSpec {
        domain: app.domain.clone(),
        code: NOTIFY_CODE.into(),
        properties: json!({"company_id": 8}),
        finish_after: None,
        ..WorkflowSpec::default()
    };
    let id = app.emulator.start_workflow(spec).await.unwrap().workflow_id;
    assert_eq!(app.workflow(&id).status, WorkflowStatus::Closed, "the portal does not wait (§2.6)");
    app.wait_for_jobs(JobState::Done, 1, Duration::from_secs(10)).await;
    assert_eq!(app.api.counts().requests, 1, "the work ran");
    assert_eq!(app.calls_of("bizproc.event.send"), 0, "nothing was returned");
}

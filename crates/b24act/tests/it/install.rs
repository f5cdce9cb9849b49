//! The app's lifecycle on a portal: an update re-registers what it wiped, an uninstall stops
//! work; forged installs are refused without a request to the server they name (only the
//! configured auth server vouches, docs/protocol.md §4.4); and an action whose workflow does not
//! wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use b24_emulator::{AppSpec, Portal, PortalSpec, TokenSet, WorkflowSpec, WorkflowStatus};
use serde_json::json;
use store::{InstallationStatus, JobState};

use crate::support::{CLIENT_ID, CODE, NOTIFY_CODE, Options, TestApp};

fn registered(app: &TestApp) -> Vec<String> {
    app.emulator.registrations(&app.domain).unwrap().into_iter().map(|r| r.code).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_update_wipes_registrations_and_the_host_registers_again() {
    let app = TestApp::start(Options::default()).await;
    assert!(registered(&app).contains(&NOTIFY_CODE.to_owned()));
    let updated = app.emulator.update_app(&app.domain, CLIENT_ID).await.unwrap();
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
    app.emulator.uninstall_app(&app.domain, CLIENT_ID).await.unwrap();
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
        installation.portal.application_token
    );
    let form = "application/x-www-form-urlencoded";
    let response = http.post(&url).header("content-type", form).body(body).send().await.unwrap();
    assert_eq!(response.status(), 401, "{}", response.text().await.unwrap());
    assert_eq!(app.store().state_counts().await.unwrap().get(JobState::Queued), 0);
}

/// A listener on loopback that counts every connection made to it and answers none: the
/// attacker's server an install event names.
struct RecordingListener {
    url: String,
    connections: Arc<AtomicUsize>,
}

impl RecordingListener {
    async fn start() -> RecordingListener {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/rest/", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        RecordingListener { url, connections }
    }

    fn count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// An ONAPPINSTALL form as the portal would POST it.
struct InstallForm<'a> {
    member_id: &'a str,
    domain: &'a str,
    access_token: &'a str,
    refresh_token: &'a str,
    client_endpoint: &'a str,
    server_endpoint: &'a str,
    application_token: &'a str,
}

impl InstallForm<'_> {
    async fn post(&self, app: &TestApp) -> (u16, String) {
        let body = format!(
            "event=ONAPPINSTALL&data[VERSION]=1&ts=1&auth[access_token]={}&auth[refresh_token]={}\
             &auth[expires]=1&auth[domain]={}&auth[server_endpoint]={}&auth[client_endpoint]={}\
             &auth[member_id]={}&auth[application_token]={}",
            self.access_token,
            self.refresh_token,
            self.domain,
            self.server_endpoint,
            self.client_endpoint,
            self.member_id,
            self.application_token,
        );
        post_install(app, body).await
    }
}

/// POSTs an install-event body to the host, as a portal would; returns the status and answer.
async fn post_install(app: &TestApp, body: impl Into<reqwest::Body>) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("http://{}/bitrix/install", app.listen))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// What an install event could change of a stored installation.
fn identity(installation: &store::Installation) -> [String; 6] {
    [
        installation.portal.domain.clone(),
        installation.portal.client_endpoint.clone(),
        installation.portal.server_endpoint.clone(),
        installation.portal.application_token.clone(),
        installation.portal.access_token.clone(),
        installation.portal.refresh_token.clone().unwrap_or_default(),
    ]
}

/// An install event claiming `portal`, with these tokens, naming `endpoint` as both of its
/// endpoints and an `application_token` of the attacker's choosing.
fn forged<'a>(
    portal: &'a Portal,
    (access_token, refresh_token): (&'a str, &'a str),
    endpoint: &'a str,
) -> InstallForm<'a> {
    InstallForm {
        member_id: &portal.member_id,
        domain: &portal.domain,
        access_token,
        refresh_token,
        client_endpoint: endpoint,
        server_endpoint: endpoint,
        application_token: "chosen-by-attacker",
    }
}

/// Posts `form` and checks it changed nothing: 403 naming `field`, not one request to the
/// attacker's server, and the stored installation as it was.
async fn assert_refused(
    app: &TestApp,
    form: InstallForm<'_>,
    field: &str,
    attacker: &RecordingListener,
) {
    let stored = || async { app.store().installation(form.member_id).await.unwrap().unwrap() };
    let before = identity(&stored().await);
    let (status, answer) = form.post(app).await;
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains(field), "{answer}");
    // Give anything the host might have started in the background a moment to show itself.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(attacker.count(), 0, "nothing was sent to the server the event named");
    assert_eq!(identity(&stored().await), before, "the installation is unchanged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_install_naming_its_own_endpoints_reaches_nobody_and_changes_nothing() {
    let app = TestApp::start(Options::default()).await;
    let portal = app.emulator.portal(&app.domain).unwrap();
    let attacker = RecordingListener::start().await;
    let tokens = ("attacker-access", "attacker-refresh");
    let form = forged(&portal, tokens, &attacker.url);
    assert_refused(&app, form, "auth[refresh_token]", &attacker).await;
    // The real portal still works.
    let id = app.start_workflow(4, 0).await;
    assert_eq!(app.wait_closed(&id, Duration::from_secs(10)).await.status, WorkflowStatus::Closed);
}

/// A genuine `token` presented in an install event for the test's portal, with the attacker's
/// endpoints and `application_token`: refused, naming `field`, changing nothing.
async fn assert_token_refused(app: &TestApp, token: TokenSet, field: &str) {
    let victim = app.emulator.portal(&app.domain).unwrap();
    let attacker = RecordingListener::start().await;
    let tokens = (token.access_token.as_str(), token.refresh_token.as_str());
    assert_refused(app, forged(&victim, tokens, &attacker.url), field, &attacker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_genuine_token_of_this_app_from_another_portal_is_refused() {
    let app = TestApp::start(Options::default()).await;
    // The attacker installs the same app on a portal of their own and takes its tokens.
    let own = app.emulator.create_portal(PortalSpec::default()).await.unwrap();
    app.emulator.install_app(&own.domain, CLIENT_ID).await.unwrap();
    let genuine = app.emulator.issue_token(&own.domain, CLIENT_ID, 1).unwrap();
    assert_token_refused(&app, genuine, "auth[member_id]").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_of_another_app_on_the_same_portal_is_refused() {
    let app = TestApp::start(Options::default()).await;
    let other = app.emulator.register_app(AppSpec::default()).client_id;
    app.emulator.install_app(&app.domain, &other).await.unwrap();
    let foreign = app.emulator.issue_token(&app.domain, &other, 1).unwrap();
    assert_token_refused(&app, foreign, "auth[refresh_token]").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vouched_install_stores_the_auth_servers_identity_not_the_events() {
    let app = TestApp::start(Options::default()).await;
    let portal = app.emulator.portal(&app.domain).unwrap();
    let genuine = app.emulator.issue_token(&app.domain, CLIENT_ID, 1).unwrap();
    let stored = app.store().installation(&portal.member_id).await.unwrap().unwrap();
    let attacker = RecordingListener::start().await;
    // Genuine tokens of this very portal, but endpoints pointing elsewhere: the endpoints the
    // auth server names are stored, and the event's are never used.
    let tokens = (genuine.access_token.as_str(), genuine.refresh_token.as_str());
    let form = InstallForm {
        application_token: &stored.portal.application_token,
        ..forged(&portal, tokens, &attacker.url)
    };
    let (status, answer) = form.post(&app).await;
    assert_eq!(status, 200, "{answer}");
    let after = app.store().installation(&portal.member_id).await.unwrap().unwrap();
    assert_eq!(after.portal.client_endpoint, portal.client_endpoint);
    assert_eq!(after.portal.server_endpoint, app.emulator.oauth_server_endpoint());
    assert_ne!(
        after.portal.refresh_token.as_deref(),
        Some(genuine.refresh_token.as_str()),
        "rotated"
    );
    let id = app.start_workflow(4, 0).await;
    assert_eq!(app.wait_closed(&id, Duration::from_secs(10)).await.status, WorkflowStatus::Closed);
    assert_eq!(attacker.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_install_without_a_refresh_token_cannot_be_verified() {
    let app = TestApp::start(Options::default()).await;
    let body = "event=ONAPPINSTALL&data[VERSION]=1&ts=1&auth[access_token]=a&auth[domain]=d.example.com\
                &auth[member_id]=f0f0&auth[application_token]=t&auth[client_endpoint]=http://127.0.0.1:9/rest/";
    let (status, answer) = post_install(&app, body).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("auth[refresh_token]"), "{answer}");
    assert!(app.store().installation("f0f0").await.unwrap().is_none());
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

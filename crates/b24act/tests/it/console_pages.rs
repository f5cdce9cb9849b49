//! The console's pages as an operator meets them, against a real `b24act serve` and the
//! emulator: in a headless Chromium (chromedriver, driven with fantoccini) — the overview's
//! figures, the jobs page's filters, a job's page, and settling two stuck workflows through the
//! forms — and over plain HTTP: credentials, the form token, and escaping of what a portal sent.
//! The browser is [`Browser`]'s; `B24ACT_SCREENSHOTS=1` saves the overview and a job page as
//! `docs/console-overview.png` and `docs/console-job.png`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use b24_emulator::{WorkflowSpec, WorkflowStatus};
use fakes::finance::Behaviour;
use fantoccini::Locator;
use reqwest::StatusCode;
use serde_json::json;
use store::{Job, JobFilter, JobId, JobOutcome, JobState, NewJob, Store, StoreKey, StoreOptions};

use crate::browser::Browser;
use crate::console::{TOKEN, serve_with_console};
use crate::support::{CLIENT_ID, CODE, KEY, Options, ServeSite, number};

/// The operator the browser signs in as.
const OPERATOR: &str = "anna";

/// A deployment with its console: the portal installed, the finance API up.
struct Console {
    site: ServeSite,
    _server: crate::support::Server,
    addr: SocketAddr,
    store: Store,
}

impl Console {
    async fn start(prefix: &str) -> Console {
        let options = Options { max_wait: "10m", ..Options::default() };
        let site = ServeSite::new(prefix, 3, &options).await;
        let (server, addr) = serve_with_console(&site, Some(TOKEN));
        site.sandbox.install(CLIENT_ID, &[CODE], Duration::from_secs(10)).await.unwrap();
        let store =
            Store::open(&site.store_url, StoreOptions::new(StoreKey::from_hex(KEY).unwrap()))
                .await
                .unwrap();
        Console { site, _server: server, addr, store }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Starts a workflow for `company_id` (a portal timeout of `timeout` seconds, 0 for none).
    async fn start_workflow(&self, company_id: u64, timeout: u64) -> String {
        let spec = WorkflowSpec {
            domain: self.site.sandbox.domain.clone(),
            code: CODE.into(),
            properties: json!({ "company_id": company_id }),
            timeout_duration: timeout,
            finish_after: None,
            ..WorkflowSpec::default()
        };
        self.site.sandbox.emulator.start_workflow(spec).await.unwrap().workflow_id
    }

    /// Waits until the job of `workflow` is in a state `done` accepts, and returns it.
    async fn job_of(&self, workflow: &str, what: &str, done: impl Fn(&Job) -> bool) -> Job {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let filter =
                JobFilter { workflow_id: Some(workflow.to_owned()), ..JobFilter::default() };
            if let Some(job) = self.store.list_jobs(&filter).await.unwrap().pop()
                && done(&job)
            {
                return job;
            }
            assert!(Instant::now() < deadline, "workflow {workflow}'s job never {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The workflow once it no longer waits.
    async fn closed(&self, workflow: &str) -> b24_emulator::WorkflowState {
        let sandbox = &self.site.sandbox;
        sandbox
            .emulator
            .wait_for_workflow(&sandbox.domain, workflow, Duration::from_secs(30), |state| {
                state.status != WorkflowStatus::Waiting
            })
            .await
            .unwrap()
    }

    /// How many `bizproc.event.send` the portal took for the job's event token.
    fn sends_of(&self, job: &Job) -> usize {
        let calls = self.site.sandbox.emulator.rest_calls(&self.site.sandbox.domain);
        calls
            .iter()
            .filter(|call| {
                call.method == "bizproc.event.send"
                    && call.error.is_none()
                    && call.event_token.as_deref() == Some(job.call.event_token.as_str())
            })
            .count()
    }
}

#[tokio::test]
async fn an_operator_reads_the_pages_and_settles_stuck_workflows_in_a_browser() {
    let Some(browser) = Browser::start("console_pages browser test").await else { return };
    let console = Console::start("b24act-console-pages").await;
    let api = &console.site.api;

    // Done with the connector's result.
    let ok = console.start_workflow(1, 0).await;
    let ok_job = console.job_of(&ok, "done", |job| job.state == JobState::Done).await;
    // With the finance API down: one resolved by the fallback at the portal's 3 s timeout, one
    // retrying, one stopped dead (cancelled without a result, so its workflow still waits).
    api.set(Behaviour { down: true, ..Behaviour::default() });
    let fallback = console.start_workflow(2, 3).await;
    let retrying = console.start_workflow(3, 0).await;
    let dead = console.start_workflow(4, 0).await;
    let fallback_job = console.job_of(&fallback, "done", |job| job.state == JobState::Done).await;
    assert_eq!(fallback_job.outcome(), Some(JobOutcome::Fallback));
    let retrying_job =
        console.job_of(&retrying, "retried", |job| job.state == JobState::RetryWait).await;
    let dead_job = console.job_of(&dead, "retried", |job| job.attempts >= 1).await;
    console.store.cancel_job(dead_job.id, "test", host::clock::now_ms()).await.unwrap();

    // Signed in once through the URL's credentials; the browser keeps them for the origin.
    let signed_in = format!("http://{OPERATOR}:{TOKEN}@{}/", console.addr);
    let c = &browser.client;
    c.goto(&signed_in).await.unwrap();
    assert_eq!(browser.text("#card-dead .figure").await, "1");
    assert_eq!(browser.text("#card-delivering .figure").await, "0");
    let oldest = browser.text("#card-waiting").await;
    assert!(
        oldest.contains(&format!("job {}", retrying_job.id)),
        "the retrying job waits longest: {oldest}"
    );
    assert!(oldest.contains("deadline") && oldest.contains("in "), "{oldest}");
    // queued, running, retry_wait, delivering, done, dead, all. The retrying job runs again
    // every few hundred milliseconds and is `running` for the moment an attempt takes: a page
    // read in that moment counts it there, so the page is read again, a bounded number of times.
    let expected = ["0", "0", "1", "0", "2", "1", "4"];
    let mut by_portal = String::new();
    for _ in 0..10 {
        by_portal = browser.text("#by-portal tbody tr").await;
        if by_portal.split_whitespace().skip(1).eq(expected) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        c.refresh().await.unwrap();
    }
    let figures: Vec<&str> = by_portal.split_whitespace().skip(1).collect();
    assert_eq!(figures, expected, "{by_portal}");
    let health = browser.text("#health tbody tr").await;
    assert!(health.contains("active") && health.contains(&console.site.sandbox.domain), "{health}");
    assert!(browser.text("header .who").await.contains(OPERATOR));
    browser.screenshot("console-overview.png").await;

    // The jobs page: filters by state and by workflow, each row with its result kind.
    c.find(Locator::LinkText("Jobs")).await.unwrap().click().await.unwrap();
    browser.wait_for("#filters").await;
    let mut shown = Vec::new();
    for row in c.find_all(Locator::Css("#jobs tr.job")).await.unwrap() {
        let id: i64 = row.attr("data-id").await.unwrap().unwrap().parse().unwrap();
        let kind = row.find(Locator::Css("td.outcome")).await.unwrap().text().await.unwrap();
        shown.push((id, kind));
    }
    assert!(shown.is_sorted_by(|newer, older| newer.0 > older.0), "newest first: {shown:?}");
    let mut kinds: Vec<&str> = shown.iter().map(|(_, kind)| kind.as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["-", "dead", "fallback", "ok"], "each with its result kind");
    c.form(Locator::Css("#filters"))
        .await
        .unwrap()
        .set_by_name("state", "dead")
        .await
        .unwrap()
        .submit()
        .await
        .unwrap();
    browser.wait_for("#jobs").await;
    let rows = c.find_all(Locator::Css("#jobs tr.job")).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].attr("data-id").await.unwrap(), Some(dead_job.id.to_string()));
    c.goto(&console.url(&format!("/jobs?workflow={ok}"))).await.unwrap();
    assert_eq!(browser.text("#jobs tr.job td.outcome").await, "ok");

    // A job's page: the fallback's call, attempts with their errors, result and timeline.
    c.goto(&console.url(&format!("/jobs/{}", fallback_job.id))).await.unwrap();
    assert_eq!(browser.text("#outcome").await, "fallback");
    assert!(browser.text("#properties").await.contains("company_id 2"));
    assert!(browser.text("#attempts").await.contains("503"), "the API's refusals are shown");
    assert!(browser.text("#result").await.contains("\"unavailable\": \"Y\""));
    let bars = c.find_all(Locator::Css("#timeline rect.bar")).await.unwrap();
    assert!(bars.len() >= 2, "attempts and the send on the timeline");
    c.find(Locator::Css("#timeline line.deadline")).await.unwrap();

    // Complete the retrying job by hand: a bad value is refused next to the form, typed values
    // kept; then the right ones go to the workflow, once.
    c.goto(&console.url(&format!("/jobs/{}", retrying_job.id))).await.unwrap();
    browser.screenshot("console-job.png").await;
    c.find(Locator::Css("#value-limit")).await.unwrap().send_keys("lots").await.unwrap();
    c.find(Locator::Css("#value-debt")).await.unwrap().send_keys("1250.5").await.unwrap();
    confirm_and_submit(&browser, "#form-complete").await;
    let refused = browser.wait_for("#complete-error").await;
    assert_eq!(refused, "`limit`: `lots` is not a number");
    let kept = c.find(Locator::Css("#value-debt")).await.unwrap().prop("value").await.unwrap();
    assert_eq!(kept.as_deref(), Some("1250.5"), "typed values are kept");
    let limit = c.find(Locator::Css("#value-limit")).await.unwrap();
    limit.clear().await.unwrap();
    limit.send_keys("5000").await.unwrap();
    c.form(Locator::Css("#form-complete"))
        .await
        .unwrap()
        .set_by_name("value.unavailable", "N")
        .await
        .unwrap();
    confirm_and_submit(&browser, "#form-complete").await;
    assert_eq!(
        browser.wait_for("#flash").await,
        "Completed by hand: the values are sent to the workflow now."
    );
    let state = console.closed(&retrying).await;
    assert_eq!(state.status, WorkflowStatus::Closed);
    assert_eq!(number(&state.return_values["limit"]), 5000.0, "{state:?}");
    assert_eq!(number(&state.return_values["debt"]), 1250.5, "{state:?}");
    assert_eq!(state.return_values["unavailable"], json!("N"), "{state:?}");
    let completed = console.job_of(&retrying, "done", |job| job.state == JobState::Done).await;
    assert_eq!(completed.outcome(), Some(JobOutcome::Manual));
    assert_eq!(console.sends_of(&completed), 1, "sent once");
    c.refresh().await.unwrap();
    assert_eq!(browser.text("#outcome").await, "manual");
    assert!(browser.text("#history").await.contains(&format!("{OPERATOR} complete")));

    // Cancel the dead job with its fallback: the waiting workflow moves on with it.
    c.goto(&console.url(&format!("/jobs/{}", dead_job.id))).await.unwrap();
    assert_eq!(browser.text("#state").await, "dead");
    confirm_and_submit(&browser, "#form-cancel").await;
    assert_eq!(
        browser.wait_for("#flash").await,
        "Cancelled: the action's fallback values are sent to the workflow now."
    );
    let state = console.closed(&dead).await;
    assert_eq!(state.return_values["unavailable"], json!("Y"), "{state:?}");
    let cancelled = console.job_of(&dead, "done", |job| job.state == JobState::Done).await;
    assert_eq!(cancelled.outcome(), Some(JobOutcome::Fallback));
    assert_eq!(console.sends_of(&cancelled), 1, "sent once");
    let detail = console.store.job(cancelled.id).await.unwrap().unwrap();
    let by: Vec<&str> = detail.history.iter().map(|entry| entry.actor.as_str()).collect();
    assert_eq!(by, ["test", OPERATOR], "the console records its user");
    assert_eq!(console.sends_of(&ok_job), 1);

    browser.close().await;
}

/// A plain HTTP client that shows redirects instead of following them.
fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// POSTs `fields` as a form, signed in as the operator.
async fn post(http: &reqwest::Client, url: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
    http.post(url)
        .basic_auth(OPERATOR, Some(TOKEN))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// The page at `url`, read as the operator.
async fn read_page(http: &reqwest::Client, url: &str) -> String {
    http.get(url).basic_auth(OPERATOR, Some(TOKEN)).send().await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn pages_want_credentials_and_actions_their_form_token() {
    let console = Console::start("b24act-console-forms").await;
    let workflow = console.start_workflow(1, 0).await;
    let job = console.job_of(&workflow, "done", |job| job.state == JobState::Done).await;
    let http = client();
    for path in ["/", "/jobs", &format!("/jobs/{}", job.id), "/portals"] {
        let answer = http.get(console.url(path)).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED, "{path}");
        let page =
            http.get(console.url(path)).basic_auth(OPERATOR, Some(TOKEN)).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK, "{path}");
    }

    let resend = console.url(&format!("/jobs/{}/resend", job.id));
    let form = [("confirm", "yes"), ("force", "yes")];
    let forged = post(&http, &resend, &form).await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(forged.text().await.unwrap().contains("csrf field is missing or wrong"));
    let csrf = host::console::csrf_token(&host::config::Secret::new(TOKEN), OPERATOR);
    let zeros = "0".repeat(64);
    let wrong = [("csrf", zeros.as_str()), ("confirm", "yes"), ("force", "yes")];
    let forged = post(&http, &resend, &wrong).await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let unconfirmed = [("csrf", csrf.as_str()), ("force", "yes")];
    let answer = post(&http, &resend, &unconfirmed).await;
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
    assert!(answer.text().await.unwrap().contains("tick the box to confirm"));
    let after = console.store.job(job.id).await.unwrap().unwrap();
    assert!(after.history.is_empty(), "nothing was done: {:?}", after.history);
    assert_eq!(after.job.state, JobState::Done);

    // Unforced, the store refuses with its own words; with the token, the box and force it is
    // done and the answer sends the browser back to the job with a flash.
    let unforced = [("csrf", csrf.as_str()), ("confirm", "yes")];
    let refused = post(&http, &resend, &unforced).await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    assert!(refused.text().await.unwrap().contains("--force"));
    let forced = [("csrf", csrf.as_str()), ("confirm", "yes"), ("force", "yes")];
    let done = post(&http, &resend, &forced).await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert_eq!(done.headers()["location"], format!("/jobs/{}?done=resent", job.id).as_str());
    let history = console.store.job(job.id).await.unwrap().unwrap().history;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].actor, OPERATOR);

    // Removing the portal, as `b24act portals remove` does: confirmed, then its calls refused.
    let member_id = console.store.installations().await.unwrap().remove(0).portal.member_id;
    let remove = console.url(&format!("/portals/{member_id}/remove"));
    let unconfirmed = post(&http, &remove, &[("csrf", csrf.as_str())]).await;
    assert_eq!(unconfirmed.status(), StatusCode::BAD_REQUEST);
    let removed = post(&http, &remove, &[("csrf", csrf.as_str()), ("confirm", "yes")]).await;
    assert_eq!(removed.status(), StatusCode::SEE_OTHER);
    assert_eq!(removed.headers()["location"], "/portals?done=removed");
    let installation = console.store.installation(&member_id).await.unwrap().unwrap();
    assert_eq!(installation.status, store::InstallationStatus::Uninstalled);
    let page = read_page(&http, &console.url("/portals?done=removed")).await;
    assert!(page.contains("Portal removed") && page.contains("uninstalled"), "{page}");
    assert!(!page.contains(&format!("/portals/{member_id}/remove")), "no second removal form");
    let refused = console.start_workflow(2, 0).await;
    let state = console.closed(&refused).await;
    assert_ne!(state.status, WorkflowStatus::Closed, "the call was refused: {state:?}");
}

#[tokio::test]
async fn what_a_portal_sent_is_shown_as_text_and_bounded() {
    let console = Console::start("b24act-console-escaping").await;
    let member_id = console.store.installations().await.unwrap().remove(0).portal.member_id;
    let hostile = "<script>alert('x')</script>";
    let long = "y".repeat(5_000);
    let created = console
        .store
        .enqueue(
            &[NewJob {
                member_id,
                action_code: CODE.into(),
                event_token: "wf-hostile|A1|e1.signature".into(),
                workflow_id: "wf-hostile\"><b>".into(),
                document_id: Some("<img src=x onerror=alert(1)>".into()),
                payload: json!({
                    "document_id": ["crm", "CCrmDocumentDeal", "DEAL_1"],
                    "properties": { "note": hostile, "long": long },
                }),
                payload_version: 1,
                waits_for_result: true,
                deadline_at: host::clock::now_ms() + 600_000,
            }],
            host::clock::now_ms(),
        )
        .await
        .unwrap();
    let id: JobId = created[0].id();
    let page = read_page(&client(), &console.url(&format!("/jobs/{id}"))).await;
    // askama writes `<`, `>`, `"` and `'` as numeric character references.
    assert!(page.contains("&#60;script&#62;alert(&#39;x&#39;)&#60;/script&#62;"), "shown as text");
    assert!(page.contains("&#60;img src=x onerror=alert(1)&#62;"));
    assert!(page.contains("wf-hostile&#34;&#62;&#60;b&#62;"));
    for raw in [hostile, "<img src=x", "wf-hostile\">"] {
        assert!(!page.contains(raw), "{raw} must not reach the page as markup");
    }
    assert!(!page.contains(&long), "a long value is cut");
    assert!(page.contains(&format!("{}…", "y".repeat(300))));
    let list = read_page(
        &client(),
        &console.url("/jobs?document=%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E"),
    )
    .await;
    assert!(list.contains(&format!("href=\"/jobs/{id}\"")), "the filter finds it");
    assert!(!list.contains("<img src=x"));
}

/// Ticks the confirmation box of form `form` and submits it.
async fn confirm_and_submit(browser: &Browser, form: &str) {
    let c = &browser.client;
    c.find(Locator::Css(&format!("{form} input[name=confirm]")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.find(Locator::Css(&format!("{form} button[type=submit]")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

//! Each built-in connector end to end: emulator → host → connector → its fake → `event.send`,
//! the happy path and the failure modes (unavailable then back, unavailable past the max wait,
//! slow past the attempt timeout, rate-limited, bad credentials, a malformed answer). Every test
//! asserts the workflow closed (never hung), the job's state and result kind in the store, and
//! one `bizproc.event.send`. The `http` connector's happy path, outage and deadline are in
//! `serve.rs`.

use std::time::{Duration, Instant};

use b24_emulator::{WorkflowSpec, WorkflowState, WorkflowStatus};
use b24act::demo::examples::{
    ExampleAction, FALLBACK_VALUES, ONEC, SHAREPOINT, TELEGRAM, onec_connector,
    sharepoint_connector, telegram_connector,
};
use fakes::faults::{Behaviour, Down, Failure};
use fakes::finance::{self, Company, Credentials, FinanceApi, Malformed};
use fakes::graph::{GraphApi, LIBRARY_WEB_URL};
use fakes::onec::{Fault, OneC};
use fakes::telegram::{BotApi, DEFAULT_CHAT_ID};
use host::config::RetryPolicy;
use sandbox::{ActionTable, AppIdentity, Deployment, TempDir, connector_table, set};
use serde_json::{Value, json};
use store::{Job, JobFilter, JobState, ResultKind};

use crate::support::number;

const CODE: &str = "under_test";
/// No workflow may take longer than this to close.
const WITHIN: Duration = Duration::from_secs(15);
/// The fallback's log line starts with this, then the reason.
const FAILED: &str = "Connector failed:";

/// Short retries: 3 s max wait, 100 ms backoff, 500 ms per attempt.
fn retry() -> RetryPolicy {
    RetryPolicy {
        max_wait: Duration::from_secs(3),
        backoff_base: Duration::from_millis(100),
        backoff_cap: Duration::from_millis(400),
        jitter: 0.1,
        attempt_timeout: Duration::from_millis(500),
        deadline_margin: Duration::from_secs(1),
        log_retries: true,
    }
}

/// The emulator and the host on a temp SQLite file, running one action around a connector.
struct Harness {
    deployment: Deployment,
    _temp: TempDir,
}

impl Harness {
    /// Deploys the action `CODE` with `connector`'s table, the given inputs and return values,
    /// [`retry`], and a fallback logging `Connector failed: {reason}` with `fallback` values.
    async fn start(
        connector: &str,
        properties: &[(&str, &str)],
        returns: &[(&str, &str)],
        fallback: &str,
    ) -> Harness {
        let action = ActionTable {
            code: CODE,
            name: "Under test",
            properties,
            returns,
            connector,
            retry: retry(),
            fallback_log: &format!("{FAILED} {{reason}}"),
            fallback_values: fallback,
        }
        .to_toml();
        let app = AppIdentity::new("local.b24act.connectors", "connectors-secret");
        let lease = Duration::from_secs(5);
        let (deployment, temp) =
            Deployment::one_action("b24act-it-connectors", &app, CODE, action, lease)
                .await
                .unwrap();
        Harness { deployment, _temp: temp }
    }

    /// Deploys `connector` as the action of a connector's example: its inputs and return values,
    /// and the reason in `error`.
    async fn example(example: &ExampleAction, connector: &str) -> Harness {
        Harness::start(connector, example.properties, example.returns, FALLBACK_VALUES).await
    }

    /// Starts a workflow on `deal` with `properties`; returns its id.
    async fn start_workflow(&self, deal: &str, properties: Value) -> String {
        let spec = WorkflowSpec {
            domain: self.deployment.domain().to_owned(),
            code: CODE.into(),
            properties,
            document_id: Some(vec!["crm".into(), "CCrmDocumentDeal".into(), deal.into()]),
            finish_after: None,
            ..WorkflowSpec::default()
        };
        self.deployment.emulator().start_workflow(spec).await.unwrap().workflow_id
    }

    fn workflow(&self, id: &str) -> WorkflowState {
        self.deployment.emulator().workflow(self.deployment.domain(), id).unwrap()
    }

    /// Runs one workflow to its end and checks the host's side: closed by `event.send` (not
    /// hung, not timed out), sent once, and the one job done with `kind`.
    async fn run(&self, deal: &str, properties: Value, kind: ResultKind) -> (WorkflowState, Job) {
        let id = self.start_workflow(deal, properties).await;
        let state = self.wait_closed(&id).await;
        let job = self.finish(&state, kind).await;
        (state, job)
    }

    /// Runs one workflow like [`Harness::run`], but once its log has `retries` progress lines
    /// (failed attempts), awaits `recover` (the fake back to normal) before waiting for the close.
    async fn run_recovering(
        &self,
        deal: &str,
        properties: Value,
        retries: usize,
        recover: impl Future<Output = ()>,
        kind: ResultKind,
    ) -> (WorkflowState, Job) {
        let id = self.start_workflow(deal, properties).await;
        self.wait_log(&id, "retrying at", retries).await;
        recover.await;
        let state = self.wait_closed(&id).await;
        let job = self.finish(&state, kind).await;
        (state, job)
    }

    /// Waits until the workflow `id` is no longer waiting; fails the test past [`WITHIN`].
    async fn wait_closed(&self, id: &str) -> WorkflowState {
        let deadline = Instant::now() + WITHIN;
        loop {
            let state = self.workflow(id);
            if state.status != WorkflowStatus::Waiting {
                return state;
            }
            assert!(Instant::now() < deadline, "hung: still waiting after {WITHIN:?}: {state:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the workflow's log has `count` lines containing `text`.
    async fn wait_log(&self, id: &str, text: &str, count: usize) {
        let deadline = Instant::now() + WITHIN;
        loop {
            let state = self.workflow(id);
            if state.log.iter().filter(|line| line.contains(text)).count() >= count {
                return;
            }
            assert!(Instant::now() < deadline, "no {count} `{text}` lines: {:?}", state.log);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The host's side of a closed workflow: one `event.send`, one job, done with `kind`.
    async fn finish(&self, state: &WorkflowState, kind: ResultKind) -> Job {
        assert_eq!(state.status, WorkflowStatus::Closed, "{state:?}");
        assert!(!state.is_timeout, "closed by the host, not the portal's timeout: {state:?}");
        let deadline = Instant::now() + WITHIN;
        let job = loop {
            let jobs = self.deployment.store().list_jobs(&JobFilter::default()).await.unwrap();
            assert_eq!(jobs.len(), 1, "one job: {jobs:?}");
            if jobs[0].state == JobState::Done {
                break jobs[0].clone();
            }
            assert!(Instant::now() < deadline, "job not done: {:?}", jobs[0]);
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(job.result_kind, Some(kind), "{job:?}\n{state:?}");
        let calls = self.deployment.emulator().rest_calls(self.deployment.domain());
        let sends = calls.iter().filter(|c| c.method == "bizproc.event.send").count();
        assert_eq!(sends, 1, "sent exactly once");
        job
    }
}

/// The fallback's log line (the one naming the reason), asserted present.
fn fallback_line(state: &WorkflowState) -> &str {
    state
        .log
        .iter()
        .find(|line| line.starts_with(FAILED))
        .unwrap_or_else(|| panic!("no `{FAILED}` line: {:?}", state.log))
}

/// Some log line contains `text`.
fn assert_logged(state: &WorkflowState, text: &str) {
    assert!(state.log.iter().any(|l| l.contains(text)), "no `{text}` line: {:?}", state.log);
}

/// The fallback after more than two attempts, its line naming the give-up and `status`.
fn assert_gave_up(state: &WorkflowState, job: &Job, status: &str) {
    assert!(job.attempts > 2, "{job:?}");
    let line = fallback_line(state);
    assert!(line.contains("gave up after") && line.contains(status), "{line}");
}

/// Done in one attempt, with no progress line about a retry.
fn assert_no_retries(state: &WorkflowState, job: &Job) {
    assert_eq!(job.attempts, 1, "no retries: {job:?}");
    assert_eq!(retry_lines(state), 0, "{:?}", state.log);
}

/// How many progress lines say an attempt failed and is retried.
fn retry_lines(state: &WorkflowState) -> usize {
    state.log.iter().filter(|line| line.contains("retrying at")).count()
}

mod credit_limit {
    //! The reference case against the fake finance API.

    use super::*;

    const COMPANY: u64 = 42;
    const FALLBACK: &str = r#"{ approval_required = true, reason = "Manual approval: {reason}" }"#;

    fn connector(api: &FinanceApi) -> String {
        let mut settings = toml::Table::new();
        let url = format!("{}/api/v1/companies/{{{{properties.company_id}}}}/credit", api.url());
        set(&mut settings, "url", url);
        set(&mut settings, "auth.bearer", api.token());
        connector_table("credit_limit", settings)
    }

    async fn start() -> (Harness, FinanceApi) {
        let api = FinanceApi::start(7).await.unwrap();
        api.set_company(COMPANY, Company::new(50_000.0, 12_000.0));
        let harness = Harness::start(
            &connector(&api),
            &[("company_id", "int"), ("amount", "double")],
            &[("available_limit", "double"), ("approval_required", "bool"), ("reason", "string")],
            FALLBACK,
        )
        .await;
        (harness, api)
    }

    fn request(amount: f64) -> Value {
        json!({ "company_id": COMPANY, "amount": amount })
    }

    /// The check's own answer: limit 50 000 − debt 12 000.
    fn assert_within_limit(state: &WorkflowState) {
        assert_eq!(number(&state.return_values["available_limit"]), 38_000.0, "{state:?}");
        assert_eq!(state.return_values["approval_required"], json!("N"), "{state:?}");
        assert_eq!(
            state.return_values["reason"],
            json!("within the available limit 38000.00"),
            "{state:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn within_and_over_the_limit_reach_the_workflow() {
        let (harness, api) = start().await;
        let (state, job) = harness.run("DEAL_1", request(15_000.0), ResultKind::Success).await;
        assert_within_limit(&state);
        assert!(
            state
                .log
                .iter()
                .any(|l| l.starts_with("Company 42: credit limit 50000.00, debt 12000.00")),
            "{:?}",
            state.log
        );
        assert_eq!(job.attempts, 1);
        let received = api.received();
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].path, "/api/v1/companies/42/credit");
        assert_eq!(received[0].status, 200);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unavailable_then_back_is_retried_with_progress_lines() {
        let (harness, api) = start().await;
        api.update(|b| b.fail_next = 3);
        let (state, job) = harness.run("DEAL_1", request(15_000.0), ResultKind::Success).await;
        assert_within_limit(&state);
        assert_eq!(job.attempts, 4, "three 503s, then the answer");
        assert_eq!(retry_lines(&state), 3, "{:?}", state.log);
        assert_logged(&state, "503");
        assert_eq!(api.counts().unavailable, 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unavailable_past_the_max_wait_routes_to_manual_approval() {
        let (harness, api) = start().await;
        api.update(|b| b.down = true);
        let started = Instant::now();
        let (state, job) = harness.run("DEAL_1", request(15_000.0), ResultKind::Fallback).await;
        assert!(started.elapsed() >= Duration::from_secs(2), "waited: {:?}", started.elapsed());
        assert_eq!(state.return_values["approval_required"], json!("Y"), "{state:?}");
        let reason = state.return_values["reason"].as_str().unwrap();
        assert!(reason.starts_with("Manual approval: gave up after"), "{reason}");
        assert_gave_up(&state, &job, "503");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_past_the_attempt_timeout_is_retried() {
        let (harness, api) = start().await;
        api.update(|b| b.latency = Duration::from_secs(2));
        let recover = async { api.update(|b| b.latency = Duration::ZERO) };
        let (state, job) = harness
            .run_recovering("DEAL_1", request(15_000.0), 1, recover, ResultKind::Success)
            .await;
        assert_within_limit(&state);
        assert!(job.attempts >= 2, "{job:?}");
        assert_logged(&state, "no answer within 500ms");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rate_limited_waits_for_retry_after_then_answers() {
        let (harness, api) = start().await;
        api.update(|b| b.rate_limit = Some(1));
        // Someone else's request takes this second's only slot.
        let http = reqwest::Client::new();
        let taken = http.get(api.credit_url(1)).bearer_auth(api.token()).send().await.unwrap();
        assert_eq!(taken.status(), 200);
        let started = Instant::now();
        let (state, job) = harness.run("DEAL_1", request(15_000.0), ResultKind::Success).await;
        assert_within_limit(&state);
        assert_eq!(api.counts().rate_limited, 1);
        assert_eq!(job.attempts, 2);
        assert_logged(&state, "429");
        // Retry-After is whole seconds: the retry waited for the window to end, not 100 ms.
        let window_left = Duration::from_millis(500);
        assert!(started.elapsed() >= window_left, "retried after {:?}", started.elapsed());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_credentials_fall_back_at_once() {
        let (harness, api) = start().await;
        api.set_credentials(Credentials::Bearer("rotated".into()));
        let (state, job) = harness.run("DEAL_1", request(15_000.0), ResultKind::Fallback).await;
        assert_no_retries(&state, &job);
        assert_eq!(state.return_values["approval_required"], json!("Y"));
        let line = fallback_line(&state);
        assert!(line.contains("401"), "{line}");
        assert!(!line.contains(&api.token()), "the token stays out of the log: {line}");
        assert_eq!(api.counts().unauthorized, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_malformed_answer_falls_back_naming_the_field() {
        let (harness, api) = start().await;
        api.update(|b| b.malformed = Some(Malformed::NonNumeric("credit_limit".into())));
        let (state, job) = harness.run("DEAL_1", request(15_000.0), ResultKind::Fallback).await;
        assert_eq!(job.attempts, 1, "no retries: {job:?}");
        assert_eq!(state.return_values["approval_required"], json!("Y"));
        let line = fallback_line(&state);
        assert!(line.contains("\"n/a\"") && line.contains("credit_limit"), "{line}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unknown_company_falls_back_at_once() {
        let (harness, api) = start().await;
        api.remove_company(COMPANY);
        let (state, job) = harness.run("DEAL_1", request(15_000.0), ResultKind::Fallback).await;
        assert_eq!(job.attempts, 1, "no retries: {job:?}");
        assert!(fallback_line(&state).contains("404"), "{:?}", state.log);
        assert_eq!(finance::SEEDED_COMPANIES, 1_000);
    }
}

mod onec {
    //! Price and stock by SKU from the fake 1C over OData.

    use super::*;

    async fn start() -> (Harness, OneC) {
        let onec = OneC::start().await.unwrap();
        let harness = Harness::example(&ONEC, &onec_connector(&onec.base_url())).await;
        (harness, onec)
    }

    fn request() -> Value {
        json!({ "sku": "SKU-1" })
    }

    fn assert_sku_1(state: &WorkflowState) {
        let values = &state.return_values;
        assert_eq!(values["name"], json!("Стол письменный «Альфа»"), "{state:?}");
        assert_eq!(number(&values["price"]), 12_500.0, "{state:?}");
        assert_eq!(number(&values["available"]), 12.0, "{state:?}");
        assert_eq!(values["in_stock"], json!("Y"), "{state:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn price_and_stock_reach_the_workflow() {
        let (harness, onec) = start().await;
        let (state, job) = harness.run("DEAL_1", request(), ResultKind::Success).await;
        assert_sku_1(&state);
        assert!(state.log.iter().any(|l| l.starts_with("1C: Стол письменный «Альфа»")));
        assert_eq!(job.attempts, 1);
        let received = onec.received();
        assert_eq!(received.len(), 3, "item, price, stock: {received:?}");
        assert!(received.iter().all(|r| r.user.as_deref() == Some(fakes::onec::USER)));
        assert_eq!(
            received[0].param("$filter"),
            Some("Артикул eq 'SKU-1' and DeletionMark eq false")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unavailable_then_back_is_retried_with_progress_lines() {
        let (harness, onec) = start().await;
        onec.fail_next_n(2, Fault::Unavailable);
        let (state, job) = harness.run("DEAL_1", request(), ResultKind::Success).await;
        assert_sku_1(&state);
        assert_eq!(job.attempts, 3);
        assert_eq!(retry_lines(&state), 2, "{:?}", state.log);
        assert_logged(&state, "503");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unavailable_past_the_max_wait_falls_back_with_the_reason() {
        let (harness, onec) = start().await;
        onec.set_unavailable(true);
        let (state, job) = harness.run("DEAL_1", request(), ResultKind::Fallback).await;
        assert_gave_up(&state, &job, "503");
        let error = state.return_values["error"].as_str().unwrap();
        assert!(error.starts_with("gave up after"), "{error}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_past_the_attempt_timeout_is_retried() {
        let (harness, onec) = start().await;
        onec.fail_next([Fault::Slow(Duration::from_secs(2))]);
        let (state, job) = harness.run("DEAL_1", request(), ResultKind::Success).await;
        assert_sku_1(&state);
        assert_eq!(job.attempts, 2, "{job:?}");
        assert_logged(&state, "no answer within 500ms");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rate_limited_is_retried() {
        let (harness, onec) = start().await;
        onec.fail_next([Fault::Status(429)]);
        let (state, job) = harness.run("DEAL_1", request(), ResultKind::Success).await;
        assert_sku_1(&state);
        assert_eq!(job.attempts, 2, "{job:?}");
        assert_logged(&state, "429");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_credentials_fall_back_at_once() {
        let (harness, onec) = start().await;
        onec.set_credentials(fakes::onec::USER, "changed");
        let (state, job) = harness.run("DEAL_1", request(), ResultKind::Fallback).await;
        assert_no_retries(&state, &job);
        let line = fallback_line(&state);
        assert!(line.contains("1C refused the credentials"), "{line}");
        assert!(!line.contains(fakes::onec::PASSWORD), "{line}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_malformed_answer_falls_back_at_once() {
        let (harness, onec) = start().await;
        onec.fail_next([Fault::Malformed]);
        let (state, job) = harness.run("DEAL_1", request(), ResultKind::Fallback).await;
        assert_eq!(job.attempts, 1, "no retries: {job:?}");
        let line = fallback_line(&state);
        assert!(line.contains("JSON"), "{line}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_odata_error_falls_back_with_1cs_message() {
        let (harness, onec) = start().await;
        onec.fail_next([Fault::ODataError {
            status: 400,
            code: "6".into(),
            message: "Неизвестный сегмент пути".into(),
        }]);
        let (state, job) = harness.run("DEAL_1", request(), ResultKind::Fallback).await;
        assert_eq!(job.attempts, 1, "no retries: {job:?}");
        assert!(fallback_line(&state).contains("Неизвестный сегмент пути"), "{:?}", state.log);
    }
}

mod telegram {
    //! A message to the sales chat through the fake Bot API.

    use super::*;

    async fn start() -> (Harness, BotApi) {
        let bot = BotApi::start().await.unwrap();
        let harness = Harness::example(&TELEGRAM, &telegram_connector(&bot)).await;
        (harness, bot)
    }

    fn request() -> Value {
        json!({ "company_name": "ООО \"Ромашка\"", "amount": 1500.5 })
    }

    /// The chat got the templated message, escaped for MarkdownV2, and its id came back.
    fn assert_sent(bot: &BotApi, state: &WorkflowState) {
        let sent = bot.sent();
        let last = sent.last().expect("a message was sent");
        assert_eq!(last.chat_id, DEFAULT_CHAT_ID);
        assert_eq!(last.parse_mode.as_deref(), Some("MarkdownV2"));
        assert_eq!(
            last.raw_text,
            "*Shipment request DEAL\\_7*\nCompany: ООО \"Ромашка\"\nAmount: 1500\\.5 RUB"
        );
        assert_eq!(
            last.text,
            "Shipment request DEAL_7\nCompany: ООО \"Ромашка\"\nAmount: 1500.5 RUB"
        );
        assert_eq!(number(&state.return_values["message_id"]), last.message_id as f64, "{state:?}");
        assert!(
            state.log.iter().any(|l| l
                == &format!("Telegram message {} sent to chat {DEFAULT_CHAT_ID}", last.message_id)),
            "{:?}",
            state.log
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_message_is_posted_and_its_id_returned() {
        let (harness, bot) = start().await;
        let (state, job) = harness.run("DEAL_7", request(), ResultKind::Success).await;
        assert_sent(&bot, &state);
        assert_eq!(bot.sent().len(), 1);
        assert_eq!(job.attempts, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unavailable_then_back_is_retried_with_progress_lines() {
        let (harness, bot) = start().await;
        bot.set(Behaviour { down: Some(Down::Refuse), ..Behaviour::default() }).await;
        let recover = bot.set(Behaviour::default());
        let (state, job) =
            harness.run_recovering("DEAL_7", request(), 2, recover, ResultKind::Success).await;
        assert_sent(&bot, &state);
        assert_eq!(bot.sent().len(), 1, "posted once");
        assert!(job.attempts >= 3, "{job:?}");
        assert!(retry_lines(&state) >= 2, "{:?}", state.log);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unavailable_past_the_max_wait_falls_back_with_the_reason() {
        let (harness, bot) = start().await;
        bot.set(Behaviour { down: Some(Down::Status(502)), ..Behaviour::default() }).await;
        let (state, job) = harness.run("DEAL_7", request(), ResultKind::Fallback).await;
        assert_gave_up(&state, &job, "502");
        assert!(bot.sent().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_past_the_attempt_timeout_is_retried() {
        let (harness, bot) = start().await;
        bot.update(|b| b.fail_next.push_back(Failure::Slow(Duration::from_secs(2)))).await;
        let (state, job) = harness.run("DEAL_7", request(), ResultKind::Success).await;
        assert_sent(&bot, &state);
        assert!(job.attempts >= 2, "{job:?}");
        assert_logged(&state, "no answer within 500ms");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_429_waits_for_retry_after_then_posts() {
        let (harness, bot) = start().await;
        let after = Duration::from_secs(1);
        bot.update(|b| b.fail_next.push_back(Failure::RateLimited(after))).await;
        let started = Instant::now();
        let (state, job) = harness.run("DEAL_7", request(), ResultKind::Success).await;
        assert!(started.elapsed() >= after, "retry_after honoured: {:?}", started.elapsed());
        assert_sent(&bot, &state);
        assert_eq!(bot.sent().len(), 1);
        assert_eq!(job.attempts, 2, "{job:?}");
        assert_logged(&state, "429");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_revoked_token_falls_back_at_once_without_leaking_it() {
        let (harness, bot) = start().await;
        bot.set_token("7000000001:AAHreissued");
        let (state, job) = harness.run("DEAL_7", request(), ResultKind::Fallback).await;
        assert_no_retries(&state, &job);
        let line = fallback_line(&state);
        assert!(line.contains("401") && line.contains("Unauthorized"), "{line}");
        let secret = fakes::telegram::DEFAULT_TOKEN.split_once(':').unwrap().1;
        assert!(state.log.iter().all(|l| !l.contains(secret)), "{:?}", state.log);
        assert!(!state.return_values.to_string().contains(secret));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unknown_chat_falls_back_with_telegrams_description() {
        let bot = BotApi::start().await.unwrap();
        let connector = telegram_connector(&bot).replace(&DEFAULT_CHAT_ID.to_string(), "-100999");
        let harness = Harness::example(&TELEGRAM, &connector).await;
        let (state, job) = harness.run("DEAL_7", request(), ResultKind::Fallback).await;
        assert_eq!(job.attempts, 1, "no retries: {job:?}");
        assert!(fallback_line(&state).contains("chat not found"), "{:?}", state.log);
    }
}

mod sharepoint {
    //! A document in a SharePoint library through the fake identity platform and Graph.

    use super::*;

    const PATH: &str = "Approvals/DEAL_7/credit-check-DEAL_7.md";
    const CONTENT: &str =
        "# Credit check for Ромашка\n\nAmount: 1500.5 RUB, requested in DEAL\\_7.\n";

    async fn start() -> (Harness, GraphApi) {
        let graph = GraphApi::start().await.unwrap();
        let harness = Harness::example(&SHAREPOINT, &sharepoint_connector(&graph)).await;
        (harness, graph)
    }

    fn request() -> Value {
        json!({ "company_name": "Ромашка", "amount": 1500.5 })
    }

    /// The library holds the rendered file, and its id and URL came back.
    fn assert_created(graph: &GraphApi, state: &WorkflowState) {
        assert_eq!(graph.file(PATH).as_deref(), Some(CONTENT.as_bytes()));
        let uploads = graph.uploads();
        let last = uploads.last().expect("an upload");
        assert_eq!(last.path, PATH);
        assert_eq!(last.content_type.as_deref(), Some("text/markdown; charset=utf-8"));
        assert_eq!(state.return_values["document_id"], json!(last.item_id), "{state:?}");
        assert_eq!(state.return_values["document_url"], json!(format!("{LIBRARY_WEB_URL}/{PATH}")));
        assert!(
            state
                .log
                .iter()
                .any(|l| l.starts_with("SharePoint: ") && l.contains(&format!("`{PATH}`"))),
            "{:?}",
            state.log
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_document_is_created_and_its_id_and_url_returned() {
        let (harness, graph) = start().await;
        let (state, job) = harness.run("DEAL_7", request(), ResultKind::Success).await;
        assert_created(&graph, &state);
        assert_eq!(job.attempts, 1);
        assert_eq!(graph.token_requests(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unavailable_then_back_is_retried_with_progress_lines() {
        let (harness, graph) = start().await;
        graph.set(Behaviour { down: Some(Down::Refuse), ..Behaviour::default() }).await;
        let recover = graph.set(Behaviour::default());
        let (state, job) =
            harness.run_recovering("DEAL_7", request(), 2, recover, ResultKind::Success).await;
        assert_created(&graph, &state);
        assert!(job.attempts >= 3, "{job:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_token_endpoint_down_past_the_max_wait_falls_back_with_the_reason() {
        let (harness, graph) = start().await;
        graph
            .set_identity(Behaviour { down: Some(Down::Status(503)), ..Behaviour::default() })
            .await;
        let (state, job) = harness.run("DEAL_7", request(), ResultKind::Fallback).await;
        assert_gave_up(&state, &job, "503");
        assert!(graph.uploads().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_past_the_attempt_timeout_is_retried() {
        let (harness, graph) = start().await;
        graph.update(|b| b.fail_next.push_back(Failure::Slow(Duration::from_secs(2)))).await;
        let (state, job) = harness.run("DEAL_7", request(), ResultKind::Success).await;
        assert_created(&graph, &state);
        assert!(job.attempts >= 2, "{job:?}");
        assert_logged(&state, "no answer within 500ms");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_429_and_a_503_wait_for_retry_after_then_create() {
        let (harness, graph) = start().await;
        let after = Duration::from_secs(1);
        graph
            .update(|b| {
                b.fail_next.push_back(Failure::RateLimited(after));
                b.fail_next.push_back(Failure::RetryAfter(503, after));
            })
            .await;
        let started = Instant::now();
        let (state, job) = harness.run("DEAL_7", request(), ResultKind::Success).await;
        assert!(started.elapsed() >= 2 * after, "Retry-After honoured: {:?}", started.elapsed());
        assert_created(&graph, &state);
        assert_eq!(job.attempts, 3, "{job:?}");
        assert_logged(&state, "429");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wrong_client_secret_falls_back_at_once_without_leaking_it() {
        let (harness, graph) = start().await;
        graph.set_client_secret("rotated");
        let (state, job) = harness.run("DEAL_7", request(), ResultKind::Fallback).await;
        assert_no_retries(&state, &job);
        assert!(graph.uploads().is_empty());
        let line = fallback_line(&state);
        assert!(line.contains("invalid_client"), "{line}");
        let secret = fakes::graph::DEFAULT_CLIENT_SECRET;
        assert!(state.log.iter().all(|l| !l.contains(secret)), "{:?}", state.log);
    }

    /// The example's `[actions.connector]` table with `keys` (TOML lines) added at its end.
    fn connector_with(graph: &GraphApi, keys: &str) -> String {
        format!("{}{keys}\n", sharepoint_connector(graph))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_existing_file_with_conflict_fail_is_kept_and_the_workflow_falls_back_at_once() {
        let graph = GraphApi::start().await.unwrap();
        let connector = connector_with(&graph, "conflict = \"fail\"");
        let harness = Harness::example(&SHAREPOINT, &connector).await;
        graph.put_file(PATH, b"someone else's");
        let (state, job) = harness.run("DEAL_7", request(), ResultKind::Fallback).await;
        assert_no_retries(&state, &job);
        let reason = format!("`{PATH}` already exists in the library and conflict = \"fail\"");
        assert!(fallback_line(&state).contains(&reason), "{:?}", state.log);
        assert!(state.return_values["error"].as_str().is_some_and(|e| e.contains(&reason)));
        assert_eq!(graph.file(PATH).as_deref(), Some(&b"someone else's"[..]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_upload_session_whose_host_is_down_is_retried_until_it_is_back() {
        let graph = GraphApi::start().await.unwrap();
        let connector = connector_with(&graph, "simple_upload_max_bytes = 0");
        let harness = Harness::example(&SHAREPOINT, &connector).await;
        graph.update_upload_host(|b| b.down = Some(Down::Status(503))).await;
        let recover = graph.update_upload_host(|b| b.down = None);
        let (state, job) =
            harness.run_recovering("DEAL_7", request(), 2, recover, ResultKind::Success).await;
        assert!(job.attempts >= 3, "{job:?}");
        assert_logged(&state, "Graph answered 503");
        assert_eq!(graph.file(PATH).as_deref(), Some(CONTENT.as_bytes()));
        let upload = graph.uploads().pop().expect("stored");
        assert_eq!(upload.fragments, Some(1), "through an upload session");
        assert_eq!(state.return_values["document_id"], json!(upload.item_id), "{state:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_name_sharepoint_refuses_falls_back_at_once_naming_the_rule() {
        let (harness, graph) = start().await;
        // The example's folder is `Approvals/{{document.id}}`: a deal `CON` makes a device name.
        let (state, job) = harness.run("CON", request(), ResultKind::Fallback).await;
        assert_no_retries(&state, &job);
        let line = fallback_line(&state);
        assert!(
            line.contains("folder renders `CON`, which SharePoint refuses: CON, PRN, AUX, NUL"),
            "{line}"
        );
        assert_eq!(graph.token_requests() + graph.graph_requests(), 0, "nothing sent");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_expired_token_is_fetched_again_and_the_upload_succeeds() {
        let (harness, graph) = start().await;
        let (first, _) = harness.run("DEAL_7", request(), ResultKind::Success).await;
        assert_created(&graph, &first);
        graph.expire_tokens();
        let id = harness.start_workflow("DEAL_7", request()).await;
        let state = harness.wait_closed(&id).await;
        assert_eq!(state.status, WorkflowStatus::Closed);
        assert_created(&graph, &state);
        assert_eq!(graph.token_requests(), 2, "one new token");
    }
}

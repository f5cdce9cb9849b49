//! A fake Bitrix24 portal for tests and demos, written from `bitrix24-protocol.md`, not from the
//! `b24` client's types, so a shared misunderstanding cannot hide.
//!
//! [`Emulator::start`] binds one listener that is both the OAuth server (the `oauth.bitrix.info`
//! stand-in: `/oauth/token/`, `/rest/app.info`) and the JSON control API under `/control/...`
//! (see docs/emulator.md, "Control API"). Every portal gets its own listener, so its domain is
//! `127.0.0.1:PORT` and its REST endpoint `http://127.0.0.1:PORT/rest/`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), b24_emulator::EmulatorError> {
//! use b24_emulator::{AppSpec, Emulator, EmulatorConfig, PortalSpec, WorkflowSpec};
//! let emu = Emulator::start(EmulatorConfig::default()).await?;
//! let portal = emu.create_portal(PortalSpec::default()).await?;
//! let app = emu.register_app(AppSpec { scope: "bizproc".into(), ..Default::default() });
//! let inst = emu.install_app(&portal.domain, &app.client_id).await?;
//! // … register an activity with inst.access_token, then:
//! let wf = emu
//!     .start_workflow(WorkflowSpec { domain: portal.domain.clone(), code: "my_code".into(), ..Default::default() })
//!     .await?;
//! let state = emu.workflow(&portal.domain, &wf.workflow_id)?;
//! # let _ = state; Ok(()) }
//! ```
//!
//! Business processes run as templates on documents: a REST activity, If-Then-Else, a task for a
//! user, setting a document field, a log line ([`WorkflowTemplate`]; the reference case is
//! [`templates::credit_approval`]):
//!
//! ```no_run
//! # async fn demo(emu: b24_emulator::Emulator, domain: &str) -> Result<(), b24_emulator::EmulatorError> {
//! use b24_emulator::{DocumentSpec, TaskCompletion, TaskOutcome, templates};
//! let mut fields = serde_json::Map::new();
//! fields.insert("COMPANY_ID".into(), 1001.into());
//! fields.insert("OPPORTUNITY".into(), 9000.into());
//! let deal = emu.create_document(domain, DocumentSpec { fields, ..Default::default() })?;
//! let template = emu.create_template(domain, templates::credit_approval("check_credit"))?;
//! let workflow_id = emu.start_template(domain, template.id, &deal.document_id).await?;
//! // … the handler answers with approval_required = Y; the CFO (user 7) gets a task:
//! for task in emu.open_tasks(domain)? {
//!     let done = TaskCompletion { outcome: TaskOutcome::Approved, comment: String::new() };
//!     emu.complete_task(domain, task.task_id, done)?;
//! }
//! let state = emu.workflow(domain, &workflow_id)?; // process_status, steps, activities, tasks
//! # let _ = state; Ok(()) }
//! ```

mod app;
mod batch;
mod clock;
mod control;
mod designer;
mod dispatch;
mod document;
mod engine;
mod error;
mod event_token;
mod expr;
mod faults;
mod ids;
mod limits;
mod oauth;
mod param;
mod portal;
mod registry;
mod rest;
mod state;
mod task;
mod template;
pub mod templates;
mod tls;
mod workflow;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::any;
use serde::{Deserialize, Serialize};

pub use app::{App, AppSpec, Installation};
pub use designer::PropertyError;
pub use document::{Document, DocumentSpec};
pub use engine::{ACTIVITY_NOT_INSTALLED, APP_NOT_FOUND};
pub use error::EmulatorError;
pub use faults::{AnswerLoss, AnswerLost, Faults, ServerErrorBurst};
pub use oauth::{TokenRequest, TokenSet};
pub use portal::{Portal, PortalSpec, RecordedCall};
pub use registry::RegistrationInfo;
pub use task::{CompletedBy, TaskCompletion, TaskState, TaskStatus};
pub use template::{
    ActivityStep, CompareOp, Condition, IfElseStep, LogStep, SetFieldStep, Step, TaskOutcome,
    TaskStep, TemplateField, WorkflowTemplate,
};
pub use workflow::{
    ActivityState, DEFAULT_LOG_MESSAGE, Delivery, ProcessStatus, StartedWorkflow, StepKind,
    StepRecord, StepStatus, WorkflowSpec, WorkflowState, WorkflowStatus,
};

use state::Shared;

/// Where the emulator listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmulatorConfig {
    /// The OAuth server + control API listener (default `127.0.0.1:0`, a free port).
    pub listen: SocketAddr,
    /// The IP portal listeners bind on (each on a free port unless `PortalSpec::listen` is set).
    pub portal_host: IpAddr,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            portal_host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }
}

/// Aborts every listener when the last owning [`Emulator`] handle is dropped.
struct ShutdownGuard {
    shared: Arc<Shared>,
}

impl Drop for ShutdownGuard {
    fn drop(&mut self) {
        self.shared.abort_all();
    }
}

/// A running emulator. Cheap to clone; the listeners stop when the last clone is dropped.
#[derive(Clone)]
pub struct Emulator {
    shared: Arc<Shared>,
    /// `None` in the handle the control API uses, so the server does not keep itself alive.
    _guard: Option<Arc<ShutdownGuard>>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator").field("control_url", &self.shared.main_url).finish()
    }
}

impl Emulator {
    /// Binds the OAuth server + control API listener and starts serving.
    pub async fn start(config: EmulatorConfig) -> Result<Emulator, EmulatorError> {
        // reqwest with `rustls-no-provider` needs a process-wide provider even for plain HTTP
        // in some builds; installing twice is harmless and reports an error we can ignore.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| EmulatorError::Bind { addr: config.listen.to_string(), source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| EmulatorError::Bind { addr: config.listen.to_string(), source })?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(EmulatorError::HttpClient)?;
        let shared = Shared::new(http, format!("http://{addr}"), config.portal_host);
        let handle = Emulator { shared: shared.clone(), _guard: None };
        let router = Router::new()
            .route("/oauth/token/", any(oauth::token_endpoint))
            .route("/oauth/token", any(oauth::token_endpoint))
            .merge(rest::oauth_router())
            .with_state(shared.clone())
            .nest("/control", control::router(handle));
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "emulator listener stopped");
            }
        });
        shared.track(task.abort_handle());
        tracing::info!(url = shared.main_url, "Bitrix24 emulator listening");
        Ok(Emulator { shared: shared.clone(), _guard: Some(Arc::new(ShutdownGuard { shared })) })
    }

    /// `http://127.0.0.1:P`; the control API lives under `/control/...`.
    pub fn control_url(&self) -> String {
        self.shared.main_url.clone()
    }

    /// `http://127.0.0.1:P/rest/`, the `server_endpoint` in every token set; `/oauth/token/` is
    /// on the same host.
    pub fn oauth_server_endpoint(&self) -> String {
        self.shared.server_endpoint()
    }

    /// `http://127.0.0.1:P/oauth/token/`
    pub fn oauth_token_url(&self) -> String {
        format!("{}/oauth/token/", self.shared.main_url)
    }

    /// Runs until `shutdown` completes, then stops every listener of this emulator (for the
    /// `b24act emulator` foreground command).
    pub async fn serve_until(self, shutdown: impl Future<Output = ()>) {
        shutdown.await;
        tracing::info!("Bitrix24 emulator shutting down");
        self.shared.abort_all();
    }

    /// Starts a portal on its own listener.
    pub async fn create_portal(&self, spec: PortalSpec) -> Result<Portal, EmulatorError> {
        portal::create(&self.shared, self.shared.portal_host, spec).await
    }

    /// A portal by any of its domains (old domains of a moved portal lead to the current one).
    pub fn portal(&self, domain: &str) -> Result<Portal, EmulatorError> {
        Ok(self.shared.lock().portal(domain)?.handle())
    }

    /// Every portal, in creation order.
    pub fn portals(&self) -> Vec<Portal> {
        self.shared.lock().portals.iter().map(|p| p.handle()).collect()
    }

    /// Registers an OAuth app (replacing one with the same `client_id`).
    pub fn register_app(&self, spec: AppSpec) -> App {
        app::register(&self.shared, spec)
    }

    /// Every registered app.
    pub fn apps(&self) -> Vec<App> {
        self.shared.lock().apps.values().cloned().collect()
    }

    /// Installs an app on a portal: tokens for the first admin, ONAPPINSTALL to the install URL
    /// (awaited), and what the event carried.
    pub async fn install_app(
        &self,
        domain: &str,
        client_id: &str,
    ) -> Result<Installation, EmulatorError> {
        app::install(&self.shared, domain, client_id).await
    }

    /// Installs the next version: wipes the app's registrations (§1.1) and sends ONAPPUPDATE.
    pub async fn update_app(
        &self,
        domain: &str,
        client_id: &str,
    ) -> Result<Installation, EmulatorError> {
        app::update(&self.shared, domain, client_id).await
    }

    /// Uninstalls an app ("clear data" off): wipes registrations, revokes tokens, sends
    /// ONAPPUNINSTALL without tokens.
    pub async fn uninstall_app(&self, domain: &str, client_id: &str) -> Result<(), EmulatorError> {
        app::uninstall(&self.shared, domain, client_id, false).await.map(|_| ())
    }

    /// Uninstalls with the "clear data" option (`data[CLEAN]=1`); returns the install URL's status.
    pub async fn uninstall_app_clean(
        &self,
        domain: &str,
        client_id: &str,
    ) -> Result<Option<u16>, EmulatorError> {
        app::uninstall(&self.shared, domain, client_id, true).await
    }

    /// Issues a token pair for any user of an installed app (e.g. a non-admin).
    pub fn issue_token(
        &self,
        domain: &str,
        client_id: &str,
        user_id: u64,
    ) -> Result<TokenSet, EmulatorError> {
        oauth::issue_on(&self.shared, domain, client_id, user_id)
    }

    /// Issues an authorization code for `grant_type=authorization_code` (lives 30 s, §4.1).
    pub fn authorization_code(
        &self,
        domain: &str,
        client_id: &str,
        user_id: u64,
    ) -> Result<String, EmulatorError> {
        let mut state = self.shared.lock();
        let portal = state.portal_index(domain)?;
        state.app(client_id)?;
        Ok(oauth::issue_code(&mut state, portal, client_id, user_id))
    }

    /// Creates an incoming webhook; returns `http://127.0.0.1:Q/rest/<user_id>/<secret>/`.
    pub fn create_webhook(
        &self,
        domain: &str,
        user_id: u64,
        scope: &str,
    ) -> Result<String, EmulatorError> {
        let mut state = self.shared.lock();
        let p = state.portal_mut(domain)?;
        let secret = ids::secret(16).to_lowercase();
        p.webhooks.push(portal::Webhook {
            user_id,
            secret: secret.clone(),
            scope: scope.to_owned(),
        });
        Ok(format!("{}{user_id}/{secret}/", p.client_endpoint()))
    }

    /// Replaces the portal's faults (and restarts any server-error burst and lost-answer count).
    pub fn set_faults(&self, domain: &str, faults: Faults) -> Result<(), EmulatorError> {
        faults.check()?;
        self.shared.lock().portal_mut(domain)?.set_faults(faults);
        Ok(())
    }

    /// The portal's current faults.
    pub fn faults(&self, domain: &str) -> Result<Faults, EmulatorError> {
        Ok(self.shared.lock().portal(domain)?.faults.clone())
    }

    /// Sets the leaky bucket `(drain per second, burst)`, or switches it off with `None`; the
    /// bucket starts empty.
    pub fn set_rate_limit(
        &self,
        domain: &str,
        rate: Option<(f64, u32)>,
    ) -> Result<(), EmulatorError> {
        let mut state = self.shared.lock();
        let p = state.portal_mut(domain)?;
        match rate {
            Some(rate) => {
                p.spec.rate = rate;
                p.spec.unlimited = false;
            }
            None => p.spec.unlimited = true,
        }
        p.bucket.reset();
        Ok(())
    }

    /// Every access token issued so far on the portal now answers 401 `expired_token`.
    pub fn expire_tokens(&self, domain: &str) -> Result<(), EmulatorError> {
        let mut state = self.shared.lock();
        let portal = state.portal_index(domain)?;
        state.tokens.expire_portal(portal);
        Ok(())
    }

    /// Moves the portal to a new listener and returns the new domain; the old domain answers
    /// 302 with `Location` on the new host for every request (§5.1).
    pub async fn move_portal(&self, domain: &str) -> Result<String, EmulatorError> {
        portal::relocate(&self.shared, self.shared.portal_host, domain).await
    }

    /// Runs one registered activity or robot: the call is built now and sent in the background.
    pub async fn start_workflow(
        &self,
        spec: WorkflowSpec,
    ) -> Result<StartedWorkflow, EmulatorError> {
        engine::start_single(&self.shared, spec)
    }

    /// A workflow's current state.
    pub fn workflow(
        &self,
        domain: &str,
        workflow_id: &str,
    ) -> Result<WorkflowState, EmulatorError> {
        let mut state = self.shared.lock();
        let now = Instant::now();
        Ok(engine::advanced(state.portal_mut(domain)?, domain, workflow_id, now)?.state(now))
    }

    /// Every workflow started on the portal, oldest first.
    pub fn workflows(&self, domain: &str) -> Result<Vec<WorkflowState>, EmulatorError> {
        let mut state = self.shared.lock();
        let p = state.portal_mut(domain)?;
        let now = Instant::now();
        engine::advance_all(p, now);
        Ok(p.workflows.values().map(|w| w.state(now)).collect())
    }

    /// Creates a document (e.g. a deal with `COMPANY_ID`, `OPPORTUNITY`, `STAGE_ID`).
    pub fn create_document(
        &self,
        domain: &str,
        spec: DocumentSpec,
    ) -> Result<Document, EmulatorError> {
        document::create(self.shared.lock().portal_mut(domain)?, spec)
    }

    /// A document by its `[module, entity, id]`.
    pub fn document(
        &self,
        domain: &str,
        document_id: &[String],
    ) -> Result<Document, EmulatorError> {
        let state = self.shared.lock();
        let p = state.portal(domain)?;
        p.documents
            .get(&document::key(document_id))
            .cloned()
            .ok_or_else(|| document::unknown(domain, document_id))
    }

    /// Every document of the portal, in creation order.
    pub fn documents(&self, domain: &str) -> Result<Vec<Document>, EmulatorError> {
        Ok(self.shared.lock().portal(domain)?.documents.values().cloned().collect())
    }

    /// Sets the given fields of a document (others keep their values).
    pub fn update_document(
        &self,
        domain: &str,
        document_id: &[String],
        fields: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Document, EmulatorError> {
        let mut state = self.shared.lock();
        let p = state.portal_mut(domain)?;
        let doc = p
            .documents
            .get_mut(&document::key(document_id))
            .ok_or_else(|| document::unknown(domain, document_id))?;
        doc.fields.extend(fields);
        Ok(doc.clone())
    }

    /// Validates and stores a workflow template; returns it with its new `id` and every
    /// activity and task step named.
    pub fn create_template(
        &self,
        domain: &str,
        template: WorkflowTemplate,
    ) -> Result<WorkflowTemplate, EmulatorError> {
        let (mut template, program) = template::prepare(template)?;
        let mut state = self.shared.lock();
        let p = state.portal_mut(domain)?;
        template.id = p.add_template(template::StoredTemplate::new(template.clone(), program));
        Ok(template)
    }

    /// A stored template.
    pub fn template(
        &self,
        domain: &str,
        template_id: u64,
    ) -> Result<WorkflowTemplate, EmulatorError> {
        let state = self.shared.lock();
        let p = state.portal(domain)?;
        p.templates.get(&template_id).map(|t| t.template.clone()).ok_or_else(|| {
            EmulatorError::UnknownTemplate { domain: domain.to_owned(), template_id }
        })
    }

    /// Every stored template of the portal.
    pub fn templates(&self, domain: &str) -> Result<Vec<WorkflowTemplate>, EmulatorError> {
        let state = self.shared.lock();
        Ok(state.portal(domain)?.templates.values().map(|t| t.template.clone()).collect())
    }

    /// The BP designer's settings dialog of an activity step, an HTML page on the portal's own
    /// listener (`{scheme}://{domain}/designer/{template_id}/{step}`): the frame protocol
    /// checks origins, so the app's form can only talk to a page of the portal's origin.
    pub fn designer_url(
        &self,
        domain: &str,
        template_id: u64,
        step: &str,
    ) -> Result<String, EmulatorError> {
        designer::page_url(self.shared.lock().portal(domain)?, template_id, step)
    }

    /// The dialog's Save (`getPropertiesDialogValues`): parses `properties` (by property ID,
    /// strings or lists of strings as a form sends them) by the registered types and replaces
    /// the step's properties, so the next workflow run sends them. Returns what was stored;
    /// [`EmulatorError::InvalidProperties`] when a value does not pass, and then nothing is
    /// stored.
    pub fn set_step_properties(
        &self,
        domain: &str,
        template_id: u64,
        step: &str,
        properties: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<serde_json::Map<String, serde_json::Value>, EmulatorError> {
        designer::save(self.shared.lock().portal_mut(domain)?, template_id, step, properties)
    }

    /// Starts a stored template on a document of its type; returns the workflow ID. The first
    /// steps run before this returns; the rest in the background. The instance is finished
    /// (`event.send` answers "404") as soon as the last step is done.
    pub async fn start_template(
        &self,
        domain: &str,
        template_id: u64,
        document_id: &[String],
    ) -> Result<String, EmulatorError> {
        self.start_template_with(domain, template_id, document_id, &serde_json::Map::new()).await
    }

    /// [`Emulator::start_template`] with values for the template's parameters, by ID (what
    /// `PARAMETERS` of `bizproc.workflow.start` carries); a parameter not given takes its
    /// `Default`, and a required one left empty refuses the start.
    pub async fn start_template_with(
        &self,
        domain: &str,
        template_id: u64,
        document_id: &[String],
        parameters: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, EmulatorError> {
        let start = engine::Start { template_id, document_id, parameters, started_by: 0 };
        engine::start_template(&self.shared, domain, &start)
    }

    /// Every task of the portal's workflows, oldest first.
    pub fn tasks(&self, domain: &str) -> Result<Vec<TaskState>, EmulatorError> {
        let mut state = self.shared.lock();
        let p = state.portal_mut(domain)?;
        engine::advance_all(p, Instant::now());
        let mut tasks: Vec<TaskState> =
            p.workflows.values().flat_map(|w| w.tasks.iter().map(|t| t.state.clone())).collect();
        tasks.sort_by_key(|t| t.task_id);
        Ok(tasks)
    }

    /// The tasks still waiting for their users (a terminated workflow's tasks are not).
    pub fn open_tasks(&self, domain: &str) -> Result<Vec<TaskState>, EmulatorError> {
        let mut tasks = self.tasks(domain)?;
        let state = self.shared.lock();
        let p = state.portal(domain)?;
        tasks.retain(|t| {
            t.status == TaskStatus::Open
                && p.workflows.get(&t.workflow_id).is_some_and(|w| w.ended.is_none())
        });
        Ok(tasks)
    }

    /// One task.
    pub fn task(&self, domain: &str, task_id: u64) -> Result<TaskState, EmulatorError> {
        self.tasks(domain)?
            .into_iter()
            .find(|t| t.task_id == task_id)
            .ok_or_else(|| EmulatorError::UnknownTask { domain: domain.to_owned(), task_id })
    }

    /// Completes an open task as its user would; the workflow continues at once.
    pub fn complete_task(
        &self,
        domain: &str,
        task_id: u64,
        completion: TaskCompletion,
    ) -> Result<TaskState, EmulatorError> {
        let mut state = self.shared.lock();
        let p = state.portal_mut(domain)?;
        engine::complete_task(p, task_id, completion.outcome, completion.comment)
    }

    /// Polls a workflow until `done` holds or `timeout` passes; returns the last state seen.
    pub async fn wait_for_workflow(
        &self,
        domain: &str,
        workflow_id: &str,
        timeout: Duration,
        done: impl Fn(&WorkflowState) -> bool,
    ) -> Result<WorkflowState, EmulatorError> {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.workflow(domain, workflow_id)?;
            if done(&state) || Instant::now() >= deadline {
                return Ok(state);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Ends the workflow instance now (as if it completed or an admin terminated it): later
    /// `event.send` calls answer "404".
    pub fn finish_workflow(&self, domain: &str, workflow_id: &str) -> Result<(), EmulatorError> {
        let mut state = self.shared.lock();
        engine::terminate(state.portal_mut(domain)?, domain, workflow_id, Instant::now())
    }

    /// Every activity and robot registered on the portal.
    pub fn registrations(&self, domain: &str) -> Result<Vec<RegistrationInfo>, EmulatorError> {
        Ok(self.shared.lock().portal(domain)?.registry.all().map(|r| r.info()).collect())
    }

    /// Every request the OAuth server received, oldest first.
    pub fn oauth_requests(&self) -> Vec<TokenRequest> {
        self.shared.lock().tokens.requests.clone()
    }

    /// Every REST request the portal received, oldest first (empty for an unknown domain).
    pub fn rest_calls(&self, domain: &str) -> Vec<RecordedCall> {
        self.shared.lock().portal(domain).map(|p| p.calls.clone()).unwrap_or_default()
    }
}

/// Starts an emulator with `config`, logs its URL, and serves until `shutdown` completes.
/// `on_ready` receives the running emulator first (e.g. to print `control_url()` or set up a
/// demo portal).
pub async fn serve_until<F, R>(
    config: EmulatorConfig,
    on_ready: F,
    shutdown: impl Future<Output = ()>,
) -> Result<(), EmulatorError>
where
    F: FnOnce(&Emulator) -> R,
    R: Future<Output = Result<(), EmulatorError>>,
{
    let emu = Emulator::start(config).await?;
    on_ready(&emu).await?;
    emu.serve_until(shutdown).await;
    Ok(())
}

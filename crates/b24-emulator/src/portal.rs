//! Portals: their specification, their per-portal state, and their own HTTP listener whose
//! address is the portal's domain (`127.0.0.1:Q`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use tokio_rustls::TlsAcceptor;

use crate::app::{App, InstallState};
use crate::clock;
use crate::document::Document;
use crate::error::EmulatorError;
use crate::faults::{AnswerLoss, Faults};
use crate::ids;
use crate::limits::{LeakyBucket, OperatingLedger};
use crate::registry::Registry;
use crate::rest::{self, Bindings};
use crate::state::Shared;
use crate::template::StoredTemplate;
use crate::workflow::Workflow;

/// How a portal behaves. `PortalSpec::default()` is a non-Enterprise cloud portal: a leaky
/// bucket of 2 requests/s with a burst of 50, one-hour access tokens, no operating limit and no
/// "423" window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PortalSpec {
    /// Leaky bucket: (drain rate per second, burst threshold) (§5.6; Enterprise is (5.0, 250)).
    pub rate: (f64, u32),
    /// Switches the leaky bucket off.
    pub unlimited: bool,
    /// Summed method time per (app or webhook, method) over ten minutes above which calls get
    /// 429 `OPERATION_TIME_LIMIT` (§5.6). `None` = off (the self-hosted default).
    #[serde(with = "clock::opt_secs")]
    pub operating_limit: Option<Duration>,
    /// Method time charged per call against `operating_limit`; `None` = the real time.
    #[serde(with = "clock::opt_secs")]
    pub operating_cost: Option<Duration>,
    /// Lifetime of access tokens (§4.1: one hour).
    #[serde(with = "clock::secs")]
    pub access_token_lifetime: Duration,
    /// How long after dispatch `event.send` / `activity.log` answer "423" (§3.3).
    #[serde(with = "clock::secs")]
    pub lock_window: Duration,
    /// Users who are portal administrators (registration needs one, §1.1). The first one
    /// receives the install tokens.
    pub admins: Vec<u64>,
    /// A fixed listener address; `None` = 127.0.0.1 on a free port.
    pub listen: Option<SocketAddr>,
    /// A fixed member ID (32 hex); generated when absent.
    pub member_id: Option<String>,
    /// A fixed signer key (the portal secret behind `event_token`, §3.4); generated when absent.
    pub signer_key: Option<String>,
    /// The portal language sent in events as `LANGUAGE_ID`.
    pub language_id: String,
    /// `app.info`'s `LICENSE`.
    pub license: String,
    /// Serve HTTPS instead of HTTP, with a certificate from the emulator's own authority
    /// (`Portal::ca_file`), for clients that insist on `https://`.
    pub tls: bool,
}

impl Default for PortalSpec {
    fn default() -> Self {
        Self {
            rate: (2.0, 50),
            unlimited: false,
            operating_limit: None,
            operating_cost: None,
            access_token_lifetime: Duration::from_secs(3600),
            lock_window: Duration::ZERO,
            admins: vec![1],
            listen: None,
            member_id: None,
            signer_key: None,
            language_id: "en".into(),
            license: "en_project".into(),
            tls: false,
        }
    }
}

/// A started portal, as tests address it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Portal {
    /// `127.0.0.1:Q`
    pub domain: String,
    /// 32 hex digits.
    pub member_id: String,
    /// `http://127.0.0.1:Q/rest/`, or `https://…` for a TLS portal.
    pub client_endpoint: String,
    /// The portal secret that signs event tokens: HMAC-SHA256 key = `"bizproc" + signer_key`.
    pub signer_key: String,
    /// For a TLS portal, the PEM file of the authority its certificate comes from.
    pub ca_file: Option<String>,
}

/// An incoming webhook (§4.2).
#[derive(Debug, Clone)]
pub(crate) struct Webhook {
    pub(crate) user_id: u64,
    pub(crate) secret: String,
    pub(crate) scope: String,
}

/// One REST request the portal received (batch sub-calls are recorded too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedCall {
    /// The method, lower-cased (`batch` for the batch itself).
    pub method: String,
    /// The HTTP status (for a batch sub-call: the status the call would have had alone).
    pub status: u16,
    /// The `error` code, if it failed.
    pub error: Option<String>,
    #[serde(with = "clock::unix")]
    pub at: SystemTime,
    /// True for a sub-command of a `batch`.
    pub in_batch: bool,
    /// `app:<client_id>`, `webhook:<user_id>` or `none`.
    pub caller: String,
    /// The `EVENT_TOKEN` of a `bizproc.event.send` or `bizproc.activity.log`, whatever its
    /// outcome.
    pub event_token: Option<String>,
}

/// Everything one portal holds.
pub(crate) struct PortalState {
    pub(crate) domain: String,
    /// The authority's PEM file of a TLS portal.
    pub(crate) ca_file: Option<String>,
    pub(crate) member_id: String,
    pub(crate) signer_key: String,
    pub(crate) spec: PortalSpec,
    pub(crate) faults: Faults,
    /// Server errors still to answer from the last `Faults::server_errors`.
    pub(crate) server_errors_left: u32,
    /// Answers still to lose from the last `Faults::answer_lost`.
    answers_to_lose: u32,
    pub(crate) bucket: LeakyBucket,
    pub(crate) operating: OperatingLedger,
    pub(crate) installs: IndexMap<String, InstallState>,
    pub(crate) registry: Registry,
    /// Event handlers and placements apps bound.
    pub(crate) bindings: Bindings,
    pub(crate) webhooks: Vec<Webhook>,
    pub(crate) workflows: IndexMap<String, Workflow>,
    pub(crate) calls: Vec<RecordedCall>,
    /// Documents by `document::key` of their ID.
    pub(crate) documents: IndexMap<String, Document>,
    pub(crate) next_document: u64,
    /// Stored templates with their compiled programs, by ID.
    pub(crate) templates: IndexMap<u64, StoredTemplate>,
    pub(crate) next_template: u64,
    pub(crate) next_task_id: u64,
    /// Which workflow holds each task.
    pub(crate) task_index: HashMap<u64, String>,
}

impl PortalState {
    fn new(domain: String, spec: PortalSpec, ca_file: Option<String>) -> Self {
        Self {
            domain,
            ca_file,
            member_id: spec.member_id.clone().unwrap_or_else(ids::member_id),
            signer_key: spec.signer_key.clone().unwrap_or_else(|| ids::secret(64)),
            spec,
            faults: Faults::default(),
            server_errors_left: 0,
            answers_to_lose: 0,
            bucket: LeakyBucket::new(),
            operating: OperatingLedger::default(),
            installs: IndexMap::new(),
            registry: Registry::default(),
            bindings: Bindings::default(),
            webhooks: Vec::new(),
            workflows: IndexMap::new(),
            calls: Vec::new(),
            documents: IndexMap::new(),
            next_document: 0,
            templates: IndexMap::new(),
            next_template: 0,
            next_task_id: 0,
            task_index: HashMap::new(),
        }
    }

    /// `http` or `https`.
    pub(crate) fn scheme(&self) -> &'static str {
        if self.spec.tls { "https" } else { "http" }
    }

    pub(crate) fn client_endpoint(&self) -> String {
        format!("{}://{}/rest/", self.scheme(), self.domain)
    }

    pub(crate) fn handle(&self) -> Portal {
        Portal {
            domain: self.domain.clone(),
            member_id: self.member_id.clone(),
            client_endpoint: self.client_endpoint(),
            signer_key: self.signer_key.clone(),
            ca_file: self.ca_file.clone(),
        }
    }

    /// Stores a template under the next ID, which it returns.
    pub(crate) fn add_template(&mut self, mut stored: StoredTemplate) -> u64 {
        self.next_template += 1;
        stored.template.id = self.next_template;
        self.templates.insert(self.next_template, stored);
        self.next_template
    }

    /// What an app update or uninstall removes: its actions, event handlers and placements.
    pub(crate) fn wipe_app(&mut self, client_id: &str) {
        self.registry.wipe_app(client_id);
        self.bindings.wipe_app(client_id);
    }

    pub(crate) fn is_installed(&self, client_id: &str) -> bool {
        self.installs.get(client_id).is_some_and(|i| i.installed)
    }

    pub(crate) fn is_admin(&self, user_id: u64) -> bool {
        self.spec.admins.contains(&user_id)
    }

    pub(crate) fn first_admin(&self) -> u64 {
        self.spec.admins.first().copied().unwrap_or(1)
    }

    pub(crate) fn access_token_lifetime(&self) -> Duration {
        self.faults.access_token_lifetime.unwrap_or(self.spec.access_token_lifetime)
    }

    pub(crate) fn lock_window(&self) -> Duration {
        self.faults.lock_window.unwrap_or(self.spec.lock_window)
    }

    pub(crate) fn operating_limit(&self) -> Option<Duration> {
        self.faults.operating_limit.or(self.spec.operating_limit)
    }

    pub(crate) fn operating_cost(&self) -> Option<Duration> {
        self.faults.operating_cost.or(self.spec.operating_cost)
    }

    /// `application_token`: stable per (portal, app), like `md5(member_id|app.ID|secret|…)` (§4.4).
    pub(crate) fn application_token(&self, app: &App) -> String {
        if let Some(existing) = self.installs.get(&app.client_id) {
            return existing.application_token.clone();
        }
        ids::md5_hex(&format!(
            "{}|{}|{}|{}",
            self.member_id, app.id, self.signer_key, app.client_id
        ))
    }

    pub(crate) fn set_faults(&mut self, faults: Faults) {
        self.server_errors_left = faults.server_errors.map_or(0, |b| b.count);
        self.answers_to_lose = faults.answer_lost.as_ref().map_or(0, |l| l.count);
        self.faults = faults;
    }

    /// How the answer to this processed request to `method` is lost, if the `answer_lost`
    /// fault still covers it (and counts it).
    pub(crate) fn lose_answer(&mut self, method: &str) -> Option<AnswerLoss> {
        let lost = self.faults.answer_lost.as_ref().filter(|l| l.applies_to(method))?;
        if self.answers_to_lose == 0 {
            return None;
        }
        self.answers_to_lose -= 1;
        Some(lost.how)
    }
}

/// Binds a listener; its address becomes a portal domain.
pub(crate) async fn bind(
    addr: SocketAddr,
) -> Result<(tokio::net::TcpListener, String), EmulatorError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| EmulatorError::Bind { addr: addr.to_string(), source })?;
    let local = listener
        .local_addr()
        .map_err(|source| EmulatorError::Bind { addr: addr.to_string(), source })?;
    Ok((listener, local.to_string()))
}

/// Serves one domain's listener in the background, with TLS when `tls` is given.
pub(crate) fn serve(
    shared: &Arc<Shared>,
    listener: tokio::net::TcpListener,
    domain: String,
    tls: Option<TlsAcceptor>,
) {
    let app = rest::portal_router(shared.clone(), domain.clone())
        .into_make_service_with_connect_info::<rest::Connection>();
    let task = tokio::spawn(async move {
        let listener = rest::DroppableListener { tcp: listener, tls };
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(domain, error = %e, "portal listener stopped");
        }
    });
    shared.track(task.abort_handle());
}

/// Creates a portal with its own listener.
pub(crate) async fn create(
    shared: &Arc<Shared>,
    host: std::net::IpAddr,
    spec: PortalSpec,
) -> Result<Portal, EmulatorError> {
    if spec.rate.0 < 0.0 || !spec.rate.0.is_finite() {
        return Err(EmulatorError::InvalidSpec(format!(
            "rate {} is not a drain rate",
            spec.rate.0
        )));
    }
    if let Some(m) = &spec.member_id
        && (m.len() != 32 || !m.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(EmulatorError::InvalidSpec(format!("member_id `{m}` is not 32 hex digits")));
    }
    let tls = if spec.tls { Some(shared.tls()?) } else { None };
    let ca_file = tls.as_ref().map(|t| t.ca_file.display().to_string());
    let addr = spec.listen.unwrap_or(SocketAddr::new(host, 0));
    let (listener, domain) = bind(addr).await?;
    let handle = {
        let mut state = shared.lock();
        let portal = PortalState::new(domain.clone(), spec, ca_file);
        let handle = portal.handle();
        state.portals.push(portal);
        let index = state.portals.len() - 1;
        state.domains.insert(domain.clone(), index);
        handle
    };
    serve(shared, listener, domain.clone(), tls.map(|t| t.acceptor.clone()));
    tracing::info!(domain, "portal started");
    Ok(handle)
}

/// Moves a portal to a new listener; the old domain keeps answering 302 (§5.1).
pub(crate) async fn relocate(
    shared: &Arc<Shared>,
    host: std::net::IpAddr,
    domain: &str,
) -> Result<String, EmulatorError> {
    let tls = if shared.lock().portal(domain)?.spec.tls { Some(shared.tls()?) } else { None };
    let (listener, new_domain) = bind(SocketAddr::new(host, 0)).await?;
    {
        let mut state = shared.lock();
        let index = state.portal_index(domain)?;
        state.portals[index].domain = new_domain.clone();
        state.domains.insert(new_domain.clone(), index);
    }
    serve(shared, listener, new_domain.clone(), tls.map(|t| t.acceptor.clone()));
    tracing::info!(from = domain, to = new_domain, "portal moved");
    Ok(new_domain)
}

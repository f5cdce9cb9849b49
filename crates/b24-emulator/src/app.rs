//! OAuth apps and their life cycle on a portal: install, update and uninstall, each announced
//! to the app's install URL as ONAPPINSTALL / ONAPPUPDATE / ONAPPUNINSTALL (protocol doc §4.3).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::clock;
use crate::error::EmulatorError;
use crate::ids;
use crate::oauth::{self, TokenSet};
use crate::param::{Array, Param, to_form_array};
use crate::portal::PortalState;
use crate::state::{Shared, State};

/// The HTTP timeout for event POSTs, as the portal's own client uses (§2.1).
pub(crate) const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// The User-Agent of the Bitrix24 queue server (§2.2, third-party logs).
pub(crate) const USER_AGENT: &str = "Bitrix24 Webhook Engine";

/// What to register with the OAuth server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppSpec {
    /// Generated as `local.<13 hex>.<8 digits>` when absent.
    pub client_id: Option<String>,
    /// Generated when absent.
    pub client_secret: Option<String>,
    /// Where ONAPPINSTALL / ONAPPUPDATE / ONAPPUNINSTALL are POSTed; no events when absent.
    pub install_url: Option<String>,
    /// Comma-separated scopes, e.g. `bizproc,crm`.
    pub scope: String,
    /// The status letter in `auth[status]` (`L` local, `F` free, `P` paid, …).
    pub status: String,
    /// The app version installed first; every update adds one.
    pub version: u32,
}

impl Default for AppSpec {
    fn default() -> Self {
        Self {
            client_id: None,
            client_secret: None,
            install_url: None,
            scope: "bizproc".into(),
            status: "L".into(),
            version: 1,
        }
    }
}

/// An app known to the OAuth server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    /// The app's local ID (what `app.info` reports as `ID`).
    pub id: u64,
    pub client_id: String,
    pub client_secret: String,
    pub install_url: Option<String>,
    pub scope: String,
    pub status: String,
    pub version: u32,
}

impl App {
    pub(crate) fn scopes(&self) -> Vec<String> {
        self.scope.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect()
    }
}

/// An app's installation on one portal.
#[derive(Debug, Clone)]
pub(crate) struct InstallState {
    pub(crate) installed: bool,
    pub(crate) version: u32,
    pub(crate) application_token: String,
}

/// What ONAPPINSTALL (or ONAPPUPDATE) carried, plus how the install URL answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installation {
    pub access_token: String,
    pub refresh_token: String,
    pub expires: u64,
    pub expires_in: u64,
    pub scope: String,
    pub domain: String,
    pub server_endpoint: String,
    pub status: String,
    pub client_endpoint: String,
    pub member_id: String,
    pub user_id: u64,
    pub application_token: String,
    /// The installed version.
    pub version: u32,
    /// The install URL's HTTP status; `None` without an install URL or when it was unreachable.
    pub event_status: Option<u16>,
}

/// Registers (or replaces) an app.
pub(crate) fn register(shared: &Shared, spec: AppSpec) -> App {
    let mut state = shared.lock();
    let client_id = spec.client_id.unwrap_or_else(|| {
        let wf = ids::workflow_id();
        format!("local.{wf}")
    });
    let id = state.apps.get(&client_id).map_or(state.apps.len() as u64 + 1, |a| a.id);
    let app = App {
        id,
        client_secret: spec.client_secret.unwrap_or_else(|| ids::secret(50)),
        client_id: client_id.clone(),
        install_url: spec.install_url,
        scope: spec.scope,
        status: spec.status,
        version: spec.version.max(1),
    };
    state.apps.insert(client_id, app.clone());
    app
}

/// Which life-cycle event to announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    Install,
    Update { previous: u32 },
}

/// Installs the app: mints tokens for the portal's first admin and POSTs ONAPPINSTALL.
pub(crate) async fn install(
    shared: &Arc<Shared>,
    domain: &str,
    client_id: &str,
) -> Result<Installation, EmulatorError> {
    announce_lifecycle(shared, domain, client_id, |p, app| {
        let application_token = p.application_token(app);
        p.installs.insert(
            client_id.to_owned(),
            InstallState { installed: true, version: app.version, application_token },
        );
        Ok(Lifecycle::Install)
    })
    .await
}

/// Updates the app to its next version: wipes its registrations (§1.1), mints tokens and POSTs
/// ONAPPUPDATE.
pub(crate) async fn update(
    shared: &Arc<Shared>,
    domain: &str,
    client_id: &str,
) -> Result<Installation, EmulatorError> {
    announce_lifecycle(shared, domain, client_id, |p, _| {
        let install = installed_mut(p, domain, client_id)?;
        let previous = install.version;
        install.version += 1;
        // onRestAppUpdate calls onRestAppDelete: every activity and robot of the app is gone.
        p.wipe_app(client_id);
        Ok(Lifecycle::Update { previous })
    })
    .await
}

/// Changes the app's installation on the portal with `change`, which says what that is; then
/// mints tokens for the first admin and POSTs the life-cycle event with them.
async fn announce_lifecycle(
    shared: &Arc<Shared>,
    domain: &str,
    client_id: &str,
    change: impl FnOnce(&mut PortalState, &App) -> Result<Lifecycle, EmulatorError>,
) -> Result<Installation, EmulatorError> {
    let (url, body, mut inst, kind) = {
        let mut state = shared.lock();
        let portal = state.portal_index(domain)?;
        let app = state.app(client_id)?.clone();
        let kind = change(&mut state.portals[portal], &app)?;
        let (inst, body) = announce(shared, &mut state, portal, &app, kind)?;
        (app.install_url, body, inst, kind)
    };
    match kind {
        Lifecycle::Install => tracing::info!(domain, client_id, "app installed"),
        Lifecycle::Update { .. } => {
            tracing::info!(domain, client_id, version = inst.version, "app updated")
        }
    }
    inst.event_status = post_event(shared, url.as_deref(), body).await;
    Ok(inst)
}

/// Uninstalls the app: wipes its registrations, revokes its tokens and POSTs ONAPPUNINSTALL,
/// which carries no tokens (§4.3). Returns the install URL's HTTP status.
pub(crate) async fn uninstall(
    shared: &Arc<Shared>,
    domain: &str,
    client_id: &str,
    clean: bool,
) -> Result<Option<u16>, EmulatorError> {
    let (url, body) = {
        let mut state = shared.lock();
        let portal = state.portal_index(domain)?;
        let app = state.app(client_id)?.clone();
        let p = &mut state.portals[portal];
        let install = installed_mut(p, domain, client_id)?;
        install.installed = false;
        let application_token = install.application_token.clone();
        p.wipe_app(client_id);
        let mut form = Array::new();
        form.insert("event".into(), Param::str("ONAPPUNINSTALL"));
        form.insert(
            "data".into(),
            Param::map([
                ("LANGUAGE_ID", Param::str(&p.spec.language_id)),
                ("CLEAN", Param::str(if clean { "1" } else { "0" })),
            ]),
        );
        form.insert("ts".into(), Param::str(clock::unix_secs(SystemTime::now()).to_string()));
        form.insert("auth".into(), Param::Array(event_auth(shared, p, None, &application_token)));
        state.tokens.revoke(portal, client_id);
        (app.install_url, phpform::encode(&to_form_array(&form)))
    };
    tracing::info!(domain, client_id, "app uninstalled");
    Ok(post_event(shared, url.as_deref(), body).await)
}

/// The app's installation on the portal, if it is installed.
fn installed_mut<'p>(
    portal: &'p mut PortalState,
    domain: &str,
    client_id: &str,
) -> Result<&'p mut InstallState, EmulatorError> {
    portal
        .installs
        .get_mut(client_id)
        .filter(|i| i.installed)
        .ok_or_else(|| EmulatorError::not_installed(domain, client_id))
}

/// Mints tokens for the portal's first admin; the installation they make and the life-cycle
/// event's form body.
fn announce(
    shared: &Shared,
    state: &mut State,
    portal: usize,
    app: &App,
    kind: Lifecycle,
) -> Result<(Installation, String), EmulatorError> {
    let user = state.portals[portal].first_admin();
    let tokens = oauth::issue(shared, state, portal, &app.client_id, user)?;
    let p = &state.portals[portal];
    let inst = installation(p, app, tokens.clone())?;
    let auth = event_auth(shared, p, Some(&tokens), &inst.application_token);
    let body = lifecycle_body(kind, inst.version, auth, &p.spec.language_id);
    Ok((inst, body))
}

fn installation(
    portal: &PortalState,
    app: &App,
    tokens: TokenSet,
) -> Result<Installation, EmulatorError> {
    let install = portal
        .installs
        .get(&app.client_id)
        .ok_or_else(|| EmulatorError::not_installed(&portal.domain, &app.client_id))?;
    Ok(Installation {
        access_token: tokens.access_token,
        refresh_token: tokens.refresh_token,
        expires: tokens.expires,
        expires_in: tokens.expires_in,
        scope: tokens.scope,
        domain: tokens.domain,
        server_endpoint: tokens.server_endpoint,
        status: tokens.status,
        client_endpoint: tokens.client_endpoint,
        member_id: tokens.member_id,
        user_id: tokens.user_id,
        application_token: install.application_token.clone(),
        version: install.version,
        event_status: None,
    })
}

/// The ONAPPINSTALL / ONAPPUPDATE form body of the installed `version`, with `auth`.
fn lifecycle_body(kind: Lifecycle, version: u32, auth: Array, language_id: &str) -> String {
    let mut form = Array::new();
    let (event, data) = match kind {
        Lifecycle::Install => (
            "ONAPPINSTALL",
            Param::map([
                ("VERSION", Param::str(version.to_string())),
                ("ACTIVE", Param::str("Y")),
                ("INSTALLED", Param::str("Y")),
                ("LANGUAGE_ID", Param::str(language_id)),
            ]),
        ),
        Lifecycle::Update { previous } => (
            "ONAPPUPDATE",
            Param::map([
                ("VERSION", Param::str(version.to_string())),
                ("PREVIOUS_VERSION", Param::str(previous.to_string())),
                ("LANGUAGE_ID", Param::str(language_id)),
            ]),
        ),
    };
    form.insert("event".into(), Param::str(event));
    form.insert("data".into(), data);
    form.insert("ts".into(), Param::str(clock::unix_secs(SystemTime::now()).to_string()));
    form.insert("auth".into(), Param::Array(auth));
    phpform::encode(&to_form_array(&form))
}

/// An event's `auth[...]` in the order of §2.2: the token set's fields interleaved with the
/// portal's and the app's. Without `tokens` (an event without sendAuth: no "Run as" user, the
/// `omit_tokens` fault, ONAPPUNINSTALL) only the portal's and the app's are left.
pub(crate) fn event_auth(
    shared: &Shared,
    portal: &PortalState,
    tokens: Option<&TokenSet>,
    application_token: &str,
) -> Array {
    let mut auth = Array::new();
    let mut put = |k: &str, v: String| {
        auth.insert(k.to_owned(), Param::Str(v));
    };
    if let Some(t) = tokens {
        put("access_token", t.access_token.clone());
        put("expires", t.expires.to_string());
        put("expires_in", t.expires_in.to_string());
        put("scope", t.scope.clone());
    }
    put("domain", portal.domain.clone());
    put("server_endpoint", shared.server_endpoint());
    if let Some(t) = tokens {
        put("status", t.status.clone());
    }
    put("client_endpoint", portal.client_endpoint());
    put("member_id", portal.member_id.clone());
    if let Some(t) = tokens {
        put("user_id", t.user_id.to_string());
        put("refresh_token", t.refresh_token.clone());
    }
    put("application_token", application_token.to_owned());
    auth
}

/// POSTs an event form and returns the HTTP status, or `None` when there is no URL or the
/// request failed (logged; the portal ignores failures, §2.6).
async fn post_event(shared: &Shared, url: Option<&str>, body: String) -> Option<u16> {
    let url = url?;
    let sent = shared
        .http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(reqwest::header::USER_AGENT, USER_AGENT)
        .timeout(EVENT_TIMEOUT)
        .body(body)
        .send()
        .await;
    match sent {
        Ok(resp) => Some(resp.status().as_u16()),
        Err(e) => {
            tracing::warn!(url, error = %e, "event POST failed");
            None
        }
    }
}

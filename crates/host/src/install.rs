//! The install handler and action registration. ONAPPINSTALL / ONAPPUPDATE: the event's refresh
//! token is redeemed at the configured auth server, which names the portal (docs/protocol.md
//! §4.4); the portal that server names and its rotated tokens are stored (encrypted), and the
//! portal's registrations are synced with the configuration ([`crate::registrations`]) — an
//! update wipes them (§1.1).
//! ONAPPUNINSTALL, checked by `application_token` (the only check possible, §4.4), stops work
//! for that portal.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use b24::incoming::{AppEvent, AppEventKind, Limits};
use b24::report::ErrorChain;
use b24::rest::Grant;
use store::{InstallationStatus, NewInstallation};
use subtle::ConstantTimeEq;
use tracing::Instrument;

use crate::Host;
use crate::clock;
use crate::health::Cause;
use crate::portals::{self, Lookup};
use crate::registrations::{self, RegistrationError};

/// How often registration is tried when the portal answers with a retryable error.
const REGISTRATION_ATTEMPTS: u32 = 8;

/// The install handler's state.
pub struct Installer {
    pub host: Arc<Host>,
}

/// Route: `POST /bitrix/install`.
pub fn router(installer: Arc<Installer>) -> Router {
    Router::new().route(crate::routes::INSTALL, post(take_event)).with_state(installer)
}

type Refusal = (StatusCode, String);

async fn take_event(
    State(installer): State<Arc<Installer>>,
    body: Bytes,
) -> Result<&'static str, Refusal> {
    let host = &installer.host;
    let limits = Limits { max_body_bytes: host.config.server.max_body_bytes, ..Limits::default() };
    let event = AppEvent::from_form(&body, &limits).map_err(|error| {
        tracing::warn!(error = %ErrorChain(&error), "refused an install event that does not decode");
        (StatusCode::BAD_REQUEST, error.to_string())
    })?;
    let span =
        tracing::info_span!("install_event", portal = %event.auth.member_id, kind = ?event.kind);
    // Instrumented, not entered: a span guard held across `.await` leaks into other tasks'
    // events (the intake met exactly that under load).
    handle_event(&installer, event).instrument(span).await
}

async fn handle_event(installer: &Installer, event: AppEvent) -> Result<&'static str, Refusal> {
    let host = &installer.host;
    let member_id = event.auth.member_id.as_str().to_owned();
    match event.kind {
        AppEventKind::Install | AppEventKind::Update => {
            let grant = verify(host, &event).await?;
            let presented = event.auth.application_token.expose();
            let stored = host.store.installation(&member_id).await.map_err(store_down)?;
            if let Some(stored) = stored.filter(|i| i.status == InstallationStatus::Active)
                && !bool::from(
                    stored.portal.application_token.as_bytes().ct_eq(presented.as_bytes()),
                )
            {
                // The auth server vouched for this portal and app, so this is the portal itself
                // presenting a new token (a reinstall): take it, but loudly (§4.4).
                tracing::warn!(
                    domain = %grant.domain,
                    "APPLICATION_TOKEN CHANGED for an installed portal; the auth server vouched for \
                     the event, so the new one replaces the old. If nobody reinstalled the app \
                     there, investigate"
                );
            }
            let installation = NewInstallation {
                member_id: grant.member_id.clone(),
                domain: grant.domain.clone(),
                client_endpoint: grant.client_endpoint.to_string(),
                server_endpoint: grant
                    .server_endpoint
                    .as_ref()
                    .map_or_else(String::new, ToString::to_string),
                application_token: presented.to_owned(),
                access_token: grant.access_token.expose().to_owned(),
                refresh_token: grant.refresh_token.as_ref().map(|t| t.expose().to_owned()),
                expires_at: grant
                    .expires
                    .map_or(clock::now_ms() + 3_600_000, |s| s.saturating_mul(1000)),
            };
            host.store
                .upsert_installation(&installation, clock::now_ms())
                .await
                .map_err(store_down)?;
            if let Some(language) = &event.language_id {
                // The language of the log lines b24act writes; a failure costs only that.
                let bounded: String = language.chars().take(8).collect();
                if let Err(error) = host.store.set_installation_language(&member_id, &bounded).await
                {
                    tracing::warn!(error = %ErrorChain(&error), "the portal's language not stored");
                }
            }
            host.portals.forget(&member_id);
            if host.health.clear_all(&member_id) {
                tracing::info!("the portal installed again: it is no longer degraded");
            }
            tracing::info!(domain = %grant.domain, "portal installed the app; registering actions");
            tokio::spawn(register_with_retries(host.clone(), member_id));
        }
        AppEventKind::Uninstall => {
            // Checked against the store, not what this node remembers: the app may have been
            // installed again through another node, with a new token, moments ago.
            host.portals
                .authenticate(&member_id, &event.auth.application_token, Lookup::Stored)
                .await
                .map_err(|error| portals::refusal("ONAPPUNINSTALL", &member_id, &error))?;
            host.store.mark_uninstalled(&member_id, clock::now_ms()).await.map_err(store_down)?;
            host.portals.forget(&member_id);
            tracing::warn!(
                "portal uninstalled the app: its calls are refused and its results not sent"
            );
        }
    }
    Ok("OK")
}

fn store_down(error: store::Error) -> Refusal {
    tracing::error!(error = %ErrorChain(&error), "store unavailable during an install event");
    (StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable".to_owned())
}

/// The trusted check of an install or update event (docs/protocol.md §4.4): its refresh token
/// is redeemed at the configured auth server — never at the `server_endpoint` the event names —
/// and the portal that server names must be the one the event claims. A token of another app is
/// refused there; a genuine token of another portal names that portal. Either way: 403, and
/// nothing is stored. The answer's endpoints and rotated tokens are what gets stored.
async fn verify(host: &Host, event: &AppEvent) -> Result<Grant, Refusal> {
    let forbidden = |message: &str| (StatusCode::FORBIDDEN, message.to_owned());
    let refresh_token =
        event.auth.tokens.as_ref().and_then(|t| t.refresh_token.as_ref()).ok_or_else(|| {
            (
                StatusCode::BAD_REQUEST,
                "auth[refresh_token]: required; the install is verified by redeeming it at the \
                 auth server"
                    .to_owned(),
            )
        })?;
    let grant = match host.portals.verify(refresh_token).await {
        Ok(grant) => grant,
        Err(error) if error.is_credentials_problem() => {
            tracing::warn!(error = %ErrorChain(&error), "refused an install event: the auth server does not vouch for its refresh token");
            return Err(forbidden(
                "auth[refresh_token]: the auth server does not vouch for it for this app",
            ));
        }
        Err(error) => {
            tracing::warn!(error = %ErrorChain(&error), auth_server = %host.config.app.auth_server, "could not verify an install event yet: the auth server did not answer");
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "the auth server could not be reached to verify the install".to_owned(),
            ));
        }
    };
    if grant.member_id != event.auth.member_id.as_str() {
        tracing::warn!(
            vouched_for = %grant.member_id,
            "refused an install event whose token belongs to another portal"
        );
        return Err(forbidden("auth[member_id]: the token belongs to another portal"));
    }
    if !grant.domain.eq_ignore_ascii_case(&event.auth.domain) {
        tracing::warn!(
            vouched_for = %grant.domain,
            "refused an install event whose domain is not the portal's"
        );
        return Err(forbidden("auth[domain]: not the domain of the token's portal"));
    }
    Ok(grant)
}

/// What the registrations of this configuration say to a portal, as a hash: every action's
/// [`registrations::fingerprint`] in order, and whether removed actions are kept. Stored with
/// the installation once a sync made the portal match, so a start with the same configuration
/// knows the portal has them.
pub fn registrations_fingerprint(host: &Host) -> String {
    let mut hasher = Sha256::new();
    for wanted in registrations::wanted(host) {
        hasher.update(format!("{}\n", wanted.fingerprint).as_bytes());
    }
    let removed = if host.config.app.keep_removed_actions { "keep" } else { "delete" };
    hasher.update(format!("removed: {removed}\n").as_bytes());
    registrations::hex(hasher.finalize().as_slice())
}

/// Plans and applies a portal's registrations ([`registrations::plan`]): adds, updates and,
/// unless `app.keep_removed_actions`, deletes what is no longer configured. Returns how many
/// changes were made; the error is the planning's, or the first step's that failed (each failed
/// step is logged).
async fn sync(host: &Host, member_id: &str) -> Result<usize, RegistrationError> {
    let planned = registrations::plan(host, member_id).await?;
    let changes = planned.plan.changes();
    match planned.apply(host).await.into_iter().find_map(|applied| applied.outcome.err()) {
        Some(error) => Err(error),
        None => Ok(changes),
    }
}

/// A sync of the portal's registrations ([`registrations::plan`] and its `apply`), tried again
/// with growing pauses while the portal answers with a retryable error (rate limit, 5xx,
/// unreachable). When they cannot be made to match the configuration the portal is degraded
/// (`/health` says why) until a sync succeeds or the app is installed again.
pub async fn register_with_retries(host: Arc<Host>, member_id: String) {
    let mut pause = Duration::from_secs(1);
    for attempt in 1..=REGISTRATION_ATTEMPTS {
        match sync(&host, &member_id).await {
            Ok(changes) => {
                tracing::info!(portal = %member_id, changes, "registrations match the configuration");
                if host.health.clear(&member_id, Cause::Registration) {
                    tracing::info!(portal = %member_id, "registrations made: the portal is no longer degraded");
                }
                return;
            }
            Err(error) if error.is_retryable() && attempt < REGISTRATION_ATTEMPTS => {
                tracing::warn!(portal = %member_id, attempt, error = %ErrorChain(&error), "registration failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(60));
            }
            Err(error) => {
                tracing::error!(portal = %member_id, error = %ErrorChain(&error), "ACTIONS NOT REGISTERED on this portal; restart b24act, run b24act sync or reinstall the app to try again");
                let reason = format!(
                    "actions not registered: {}; restart b24act, run b24act sync or \
                     reinstall the app to try again",
                    ErrorChain(&error)
                );
                host.health.degrade(&member_id, Cause::Registration, reason);
                return;
            }
        }
    }
}

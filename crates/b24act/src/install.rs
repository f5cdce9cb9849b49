//! The install handler and action registration. ONAPPINSTALL / ONAPPUPDATE: the token is checked
//! with `app.info` before it is trusted, the portal and its tokens are stored (encrypted), and
//! every configured action is registered again — an update wipes registrations (protocol §1.1).
//! ONAPPUNINSTALL, checked by `application_token` (the only check possible, §4.4), stops work
//! for that portal.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use b24::incoming::{AppEvent, AppEventKind, Limits};
use b24::rest::{ActivityChanges, ErrorClass, OAuthTokens};
use store::{InstallationStatus, NewInstallation};
use subtle::ConstantTimeEq;
use tracing::Instrument;

use crate::clock;
use crate::host::Host;
use crate::intake::Intake;

/// How often registration is tried when the portal answers with a retryable error.
const REGISTRATION_ATTEMPTS: u32 = 8;

/// The install handler's state.
pub struct Installer {
    pub host: Arc<Host>,
    pub intake: Arc<Intake>,
}

/// Route: `POST /bitrix/install`.
pub fn router(installer: Arc<Installer>) -> Router {
    Router::new().route("/bitrix/install", post(take_event)).with_state(installer)
}

type Refusal = (StatusCode, String);

async fn take_event(
    State(installer): State<Arc<Installer>>,
    body: Bytes,
) -> Result<&'static str, Refusal> {
    let host = &installer.host;
    let limits = Limits { max_body_bytes: host.config.server.max_body_bytes, ..Limits::default() };
    let event = AppEvent::from_form(&body, &limits).map_err(|e| {
        tracing::warn!(error = %e, "refused an install event that does not decode");
        (StatusCode::BAD_REQUEST, e.to_string())
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
            let tokens = OAuthTokens::from_auth(&event.auth).ok_or_else(|| {
                (
                    StatusCode::BAD_REQUEST,
                    "auth[client_endpoint] and auth[server_endpoint] are required".to_owned(),
                )
            })?;
            verify(host, &tokens).await?;
            let installation = NewInstallation {
                member_id: member_id.clone(),
                domain: event.auth.domain.clone(),
                client_endpoint: tokens.client_endpoint.to_string(),
                server_endpoint: tokens.server_endpoint.to_string(),
                application_token: event.auth.application_token.expose().to_owned(),
                access_token: tokens.access_token.expose().to_owned(),
                refresh_token: tokens.refresh_token.as_ref().map(|t| t.expose().to_owned()),
                expires_at: tokens
                    .expires
                    .map_or(clock::now_ms() + 3_600_000, |s| s.saturating_mul(1000)),
            };
            host.store
                .upsert_installation(&installation, clock::now_ms())
                .await
                .map_err(store_down)?;
            host.portals.forget(&member_id);
            installer.intake.forget_portal(&member_id);
            tracing::info!(domain = %event.auth.domain, "portal installed the app; registering actions");
            tokio::spawn(register_with_retries(host.clone(), member_id));
        }
        AppEventKind::Uninstall => {
            let stored = host.store.installation(&member_id).await.map_err(store_down)?;
            let Some(stored) = stored.filter(|i| i.status == InstallationStatus::Active) else {
                return Err((
                    StatusCode::UNAUTHORIZED,
                    format!("auth[member_id]: portal `{member_id}` is not installed"),
                ));
            };
            let presented = event.auth.application_token.expose().as_bytes();
            if !bool::from(stored.application_token.as_bytes().ct_eq(presented)) {
                tracing::warn!("refused ONAPPUNINSTALL with a wrong application_token");
                return Err((
                    StatusCode::FORBIDDEN,
                    "auth[application_token]: does not match the installation".to_owned(),
                ));
            }
            host.store.mark_uninstalled(&member_id, clock::now_ms()).await.map_err(store_down)?;
            host.portals.forget(&member_id);
            installer.intake.forget_portal(&member_id);
            tracing::warn!(
                "portal uninstalled the app: its calls are refused and its results not sent"
            );
        }
    }
    Ok("OK")
}

fn store_down(error: store::Error) -> Refusal {
    tracing::error!(error = %format!("{error:#}"), "store unavailable during an install event");
    (StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable".to_owned())
}

/// Checks the event's access token with `app.info` at the auth server (`server_endpoint`), the
/// trusted check of protocol §4.4: a forged ONAPPINSTALL carries a token the server rejects.
async fn verify(host: &Host, tokens: &OAuthTokens) -> Result<(), Refusal> {
    let mut at_auth_server = tokens.clone();
    at_auth_server.client_endpoint = tokens.server_endpoint.clone();
    let client = host
        .portals
        .unstored_client(at_auth_server)
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?;
    match client.app_info().await {
        Ok(_) => Ok(()),
        Err(error) if error.class() == ErrorClass::Retryable => {
            tracing::warn!(error = %format!("{error:#}"), "could not verify the install token yet");
            Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "the auth server could not be reached to verify the token".to_owned(),
            ))
        }
        Err(error) => {
            tracing::warn!(error = %format!("{error:#}"), "refused an install event whose token app.info rejects");
            Err((StatusCode::FORBIDDEN, "auth[access_token]: rejected by app.info".to_owned()))
        }
    }
}

/// Why registration on a portal failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("no client for the portal")]
    Portal(#[from] crate::portals::PortalError),
    #[error("registering `{code}`")]
    Rest {
        code: String,
        #[source]
        source: b24::rest::Error,
    },
}

impl RegistrationError {
    fn is_retryable(&self) -> bool {
        matches!(self, RegistrationError::Rest { source, .. } if source.class() == ErrorClass::Retryable)
    }
}

/// Registers every configured action on one portal: `add`, or `update` when it already exists
/// (activities and robots share one namespace per app, §1.1). Returns how many.
pub async fn register_actions(host: &Host, member_id: &str) -> Result<usize, RegistrationError> {
    let client = host.portals.client(member_id).await?;
    let mut registered = 0;
    for action in host.catalog.iter() {
        let (kind, definition) = action.definition(&host.config.app.public_url);
        let code = definition.code.clone();
        let rest = |source| RegistrationError::Rest { code: code.clone(), source };
        match client.action_add(kind, &definition).await {
            Ok(_) => {}
            Err(e) if e.code() == Some("ERROR_ACTIVITY_ALREADY_INSTALLED") => {
                let changes = ActivityChanges {
                    handler: Some(definition.handler.clone()),
                    auth_user_id: definition.auth_user_id,
                    use_subscription: definition.use_subscription,
                    name: Some(definition.name.clone()),
                    description: definition.description.clone(),
                    properties: definition.properties.clone(),
                    return_properties: definition.return_properties.clone(),
                    ..ActivityChanges::default()
                };
                client.action_update(kind, &code, &changes).await.map_err(rest)?;
            }
            Err(e) => return Err(rest(e)),
        }
        tracing::info!(portal = %member_id, %code, ?kind, "action registered");
        registered += 1;
    }
    Ok(registered)
}

/// [`register_actions`], tried again with growing pauses while the portal answers with a
/// retryable error (rate limit, 5xx, unreachable).
pub async fn register_with_retries(host: Arc<Host>, member_id: String) {
    let mut pause = Duration::from_secs(1);
    for attempt in 1..=REGISTRATION_ATTEMPTS {
        match register_actions(&host, &member_id).await {
            Ok(count) => {
                tracing::info!(portal = %member_id, count, "all actions registered");
                return;
            }
            Err(error) if error.is_retryable() && attempt < REGISTRATION_ATTEMPTS => {
                tracing::warn!(portal = %member_id, attempt, error = %format!("{error:#}"), "registration failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(60));
            }
            Err(error) => {
                tracing::error!(portal = %member_id, error = %format!("{error:#}"), "ACTIONS NOT REGISTERED on this portal; restart b24act or reinstall the app to try again");
                return;
            }
        }
    }
}

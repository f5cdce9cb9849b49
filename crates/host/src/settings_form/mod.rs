//! The settings form an action declared with `settings_form = true` gets in the BP designer
//! (placement `BIZPROC_ACTIVITY_PROPERTIES_DIALOG`, docs/protocol.md §1.8; the user's guide is
//! docs/settings-form.md). The designer POSTs to `<public_url>bitrix/settings/<code>` inside a
//! frame; this module checks that the POST is real before showing anything, then serves a typed
//! form ([`page`]) whose script sends values back with the frame command `setPropertyValue`.
//!
//! Nothing signs that POST (§4.4), so it is taken as real only when its `member_id` is an
//! installed portal and that portal's REST, at the stored address, accepts its `AUTH_ID` as this
//! app's token ([`crate::portals::Portals::check_user_token`]). The page may be framed by that
//! portal only (`frame-ancestors`), and the script talks to that origin only, whatever the
//! request's `DOMAIN` says.

pub mod page;

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use b24::incoming::quoted;
use b24::report::ErrorChain;
use b24::secret::AccessToken;
use url::Url;

use crate::Host;
use crate::edge;
use crate::portals::{PortalError, UserTokenError};
use crate::routes;
use page::{ExpressionGroup, Field, Form, FormError, Lang, MAX_VALUES_PER_FIELD, Widget, Words};

/// The placement a settings-form POST names (§1.8).
const PLACEMENT: &str = "BIZPROC_ACTIVITY_PROPERTIES_DIALOG";
/// The frame's `APP_SID`: the parent's id for this frame, echoed in every message (§1.8).
const MAX_APP_SID_CHARS: usize = 64;

/// The form's routes: the POST (forms only) and its two static files.
pub fn router(host: Arc<Host>) -> Router {
    let form = Router::new()
        .route(routes::SETTINGS, post(open_form))
        .layer(middleware::from_fn(edge::require_form))
        .with_state(host);
    form.route(routes::SETTINGS_SCRIPT, get(script))
        .route(routes::SETTINGS_STYLESHEET, get(stylesheet))
}

#[derive(Template)]
#[template(path = "settings/form.html")]
struct FormPage<'a> {
    lang: &'static str,
    words: &'static Words,
    action_name: String,
    fields: Vec<Field>,
    expressions: Vec<ExpressionGroup>,
    /// The portal's origin: where the script posts its messages.
    origin: String,
    app_sid: String,
    /// [`Form::script_data`] as JSON, for the script (HTML-escaped into an attribute).
    script_data: String,
    script_url: &'a str,
    stylesheet_url: &'a str,
}

#[derive(Template)]
#[template(path = "settings/refused.html")]
struct RefusedPage<'a> {
    lang: &'static str,
    title: &'static str,
    message: &'a str,
    stylesheet_url: &'a str,
}

/// A refusal: the status and what the page says, in the portal's language.
struct Refusal {
    status: StatusCode,
    en: String,
    ru: String,
}

impl Refusal {
    fn new(status: StatusCode, en: impl Into<String>, ru: impl Into<String>) -> Refusal {
        Refusal { status, en: en.into(), ru: ru.into() }
    }

    fn forbidden(en: impl Into<String>, ru: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::FORBIDDEN, en, ru)
    }

    fn bad_request(en: impl Into<String>, ru: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::BAD_REQUEST, en, ru)
    }
}

/// The POST from the designer's frame: checked, then the form.
async fn open_form(
    State(host): State<Arc<Host>>,
    Path(code): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let query = pairs(query.as_deref().unwrap_or_default().as_bytes());
    let lang = Lang::from_portal(query.get("LANG").map(String::as_str));
    let stylesheet_url = asset_path(&host, routes::SETTINGS_STYLESHEET);
    match form(&host, &code, &query, &pairs(&body), lang).await {
        Ok(page) => page,
        Err(refusal) => {
            let message = match lang {
                Lang::En => &refusal.en,
                Lang::Ru => &refusal.ru,
            };
            tracing::warn!(action = %quoted(&code), status = refusal.status.as_u16(), reason = %refusal.en, "refused a settings-form request");
            let title = match lang {
                Lang::En => "The settings form cannot be shown",
                Lang::Ru => "Форму настроек нельзя показать",
            };
            let page =
                RefusedPage { lang: lang.code(), title, message, stylesheet_url: &stylesheet_url };
            // No frame-ancestors here: the page has nothing to click, and the portal's admin
            // should read why in the designer.
            html(refusal.status, page.render(), None)
        }
    }
}

async fn form(
    host: &Host,
    code: &str,
    query: &HashMap<String, String>,
    body: &HashMap<String, String>,
    lang: Lang,
) -> Result<Response, Refusal> {
    let action =
        host.catalog.get(code).filter(|action| action.config.settings_form).ok_or_else(|| {
            Refusal::new(
                StatusCode::NOT_FOUND,
                format!("No action `{}` with a settings form is configured here.", quoted(code)),
                format!("Здесь не настроено действие `{}` с формой настроек.", quoted(code)),
            )
        })?;
    let field = |name: &str| body.get(name).map(String::as_str).filter(|v| !v.is_empty());
    if field("PLACEMENT") != Some(PLACEMENT) {
        return Err(Refusal::bad_request(
            format!("PLACEMENT must be {PLACEMENT}: this page is an action's settings form."),
            format!("PLACEMENT должно быть {PLACEMENT}: это форма настроек действия."),
        ));
    }
    let (Some(member_id), Some(auth_id)) = (field("member_id"), field("AUTH_ID")) else {
        return Err(Refusal::bad_request(
            "member_id and AUTH_ID are required: open the form from the business-process designer.",
            "Нужны member_id и AUTH_ID: откройте форму из дизайнера бизнес-процессов.",
        ));
    };
    let sid = query.get("APP_SID").map(String::as_str).unwrap_or_default();
    if sid.is_empty()
        || sid.len() > MAX_APP_SID_CHARS
        || !sid.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(Refusal::bad_request(
            "APP_SID is missing or not the designer's: open the form from the business-process designer.",
            "APP_SID отсутствует или неверен: откройте форму из дизайнера бизнес-процессов.",
        ));
    }
    let options = match field("PLACEMENT_OPTIONS") {
        None => serde_json::Value::Null,
        Some(text) => serde_json::from_str(text).map_err(|_| {
            Refusal::bad_request("PLACEMENT_OPTIONS is not JSON.", "PLACEMENT_OPTIONS — не JSON.")
        })?,
    };
    if let Some(named) = options.get("code").and_then(|c| c.as_str())
        && named != code
    {
        return Err(Refusal::bad_request(
            format!("PLACEMENT_OPTIONS names action `{}`, not this one.", quoted(named)),
            format!("PLACEMENT_OPTIONS называет действие `{}`, а не это.", quoted(named)),
        ));
    }

    // Built before the portal is asked anything: what cannot be shown costs it no request.
    let form = Form::build(&action.config, &options, lang).map_err(|error| {
        let en = format!("{error}.");
        match error {
            FormError::TooManyValues { property, count } => Refusal::bad_request(
                en,
                format!(
                    "Свойство `{property}` содержит значений: {count}; форма показывает не больше \
                     {MAX_VALUES_PER_FIELD}."
                ),
            ),
        }
    })?;

    let installation = host
        .portals
        .check_user_token(member_id, AccessToken::new(auth_id.to_owned()))
        .await
        .map_err(|error| token_refusal(member_id, &error))?;
    let origin = portal_origin(&installation.client_endpoint).ok_or_else(|| {
        tracing::error!(portal = %member_id, "the stored client_endpoint is not a URL");
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The portal's stored address is broken; reinstall the app.",
            "Сохранённый адрес портала повреждён; переустановите приложение.",
        )
    })?;
    if let Some(domain) = query.get("DOMAIN")
        && !same_host(domain, &installation.domain)
    {
        return Err(Refusal::forbidden(
            format!("DOMAIN `{}` is not the portal that signed in.", quoted(domain)),
            format!("DOMAIN `{}` — не тот портал, с которого выполнен вход.", quoted(domain)),
        ));
    }

    let script_url = asset_path(host, routes::SETTINGS_SCRIPT);
    let stylesheet_url = asset_path(host, routes::SETTINGS_STYLESHEET);
    let page = FormPage {
        lang: lang.code(),
        words: page::words(lang),
        action_name: action.config.name.in_language(lang.code()).to_owned(),
        script_data: form.script_data(lang).to_string(),
        fields: form.fields,
        expressions: form.expressions,
        origin: origin.clone(),
        app_sid: sid.to_owned(),
        script_url: &script_url,
        stylesheet_url: &stylesheet_url,
    };
    Ok(html(StatusCode::OK, page.render(), Some(&origin)))
}

/// Why a POST's token was not taken, as the page says it; the cause is logged.
fn token_refusal(member_id: &str, error: &UserTokenError) -> Refusal {
    match error {
        UserTokenError::Portal(PortalError::Unknown(_) | PortalError::Uninstalled(_)) => {
            Refusal::forbidden(
                format!("Portal `{}` has not installed this app.", quoted(member_id)),
                format!("Портал `{}` не установил это приложение.", quoted(member_id)),
            )
        }
        UserTokenError::Refused(_) | UserTokenError::OtherApp(_) => {
            tracing::warn!(portal = %quoted(member_id), error = %ErrorChain(error), "a settings-form POST's AUTH_ID was not this app's on the portal");
            Refusal::forbidden(
                "The portal did not confirm this sign-in (AUTH_ID). Reopen the action's settings.",
                "Портал не подтвердил вход (AUTH_ID). Откройте настройки действия заново.",
            )
        }
        UserTokenError::TooMany { retry_in } => {
            tracing::warn!(portal = %quoted(member_id), "settings-form sign-ins arrive faster than the portal's allowance of checks; refused without asking it");
            let seconds = retry_in.as_secs().max(1);
            Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "Too many settings forms were opened on this portal just now; try again in {seconds} s."
                ),
                format!(
                    "На этом портале только что открыли слишком много форм настроек; попробуйте через {seconds} с."
                ),
            )
        }
        UserTokenError::Unreachable(_) | UserTokenError::Portal(_) => {
            tracing::warn!(portal = %quoted(member_id), error = %ErrorChain(error), "could not check a settings-form POST");
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "The portal could not be asked to confirm this sign-in; try again shortly.",
                "Не удалось проверить вход на портале; попробуйте чуть позже.",
            )
        }
    }
}

/// `scheme://host[:port]` of the portal's REST address: the only origin the page talks to.
fn portal_origin(client_endpoint: &str) -> Option<String> {
    let url = Url::parse(client_endpoint).ok()?;
    let origin = url.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

/// Whether `sent` (the frame's `DOMAIN`, maybe with `:443`/`:80`) names `stored`.
fn same_host(sent: &str, stored: &str) -> bool {
    let bare = |host: &str| {
        let host = host.trim().to_ascii_lowercase();
        host.strip_suffix(":443").or_else(|| host.strip_suffix(":80")).unwrap_or(&host).to_owned()
    };
    bare(sent) == bare(stored)
}

/// A form body or query as a map (the first of repeated names wins).
fn pairs(bytes: &[u8]) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for (name, value) in url::form_urlencoded::parse(bytes) {
        map.entry(name.into_owned()).or_insert_with(|| value.into_owned());
    }
    map
}

/// An asset's path as the browser sees it, under `[app] public_url`'s own path.
fn asset_path(host: &Host, path: &str) -> String {
    routes::public_path(&host.config.app.public_url, path)
}

/// A rendered page with the form's headers: framed only by `frame_origin` when one is given,
/// scripts and styles from this host only, nothing cached.
fn html(
    status: StatusCode,
    rendered: askama::Result<String>,
    frame_origin: Option<&str>,
) -> Response {
    let body = match rendered {
        Ok(body) => body,
        Err(error) => {
            tracing::error!(error = %ErrorChain(&error), "rendering the settings form");
            return (StatusCode::INTERNAL_SERVER_ERROR, "the page could not be rendered")
                .into_response();
        }
    };
    let ancestors =
        frame_origin.map_or(String::new(), |origin| format!("; frame-ancestors {origin}"));
    let policy = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         base-uri 'none'; form-action 'none'{ancestors}"
    );
    // A page without its policy would be framable by anyone: none is served then.
    let Ok(policy) = HeaderValue::from_str(&policy) else {
        tracing::error!(policy = %quoted(&policy), "the settings form's policy is not a header value");
        return (StatusCode::INTERNAL_SERVER_ERROR, "the page could not be served").into_response();
    };
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

async fn script() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", include_str!("assets/form.js"))
}

async fn stylesheet() -> impl IntoResponse {
    asset("text/css; charset=utf-8", include_str!("assets/form.css"))
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, content_type), (header::X_CONTENT_TYPE_OPTIONS, "nosniff")], body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_portal_origin_is_the_stored_endpoints() {
        assert_eq!(
            portal_origin("https://acme.bitrix24.com/rest/").as_deref(),
            Some("https://acme.bitrix24.com")
        );
        assert_eq!(
            portal_origin("http://127.0.0.1:8080/rest/").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(portal_origin("not a url"), None);
    }

    #[test]
    fn domains_compare_without_default_ports_and_case() {
        assert!(same_host("Acme.bitrix24.com:443", "acme.bitrix24.com"));
        assert!(same_host("127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(!same_host("evil.example.com", "acme.bitrix24.com"));
        assert!(!same_host("127.0.0.1:8081", "127.0.0.1:8080"));
    }
}

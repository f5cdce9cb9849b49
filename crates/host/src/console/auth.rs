//! Who may use the console, what a request may change, and the headers every answer carries.
//!
//! - **Credentials.** With `console.token` set, every request presents it, as
//!   `Authorization: Bearer <token>` (Prometheus, scripts) or as the password of HTTP basic auth
//!   (a browser, which prompts for it on the 401's `WWW-Authenticate: Basic`; any user name). It
//!   is compared in constant time. Handlers behind [`guard`] find an [`Operator`] in the
//!   request's extensions: its `name` is the basic user name (`bearer` for a bearer token), the
//!   actor recorded with what they do.
//! - **Read-only without a token.** The console then listens on loopback only (the configuration
//!   refuses anything else), answers only requests addressed to a loopback `Host` (so a web page
//!   whose domain rebinds to 127.0.0.1 cannot read it), and refuses every request but `GET` and
//!   `HEAD` with 403 saying to set `console.token`. No [`Operator`] is inserted: a page that finds
//!   none shows no forms.
//! - **Cross-site requests.** A state-changing request (any method but `GET` and `HEAD`) is
//!   refused when its `Sec-Fetch-Site` is present and not `same-origin`, or its `Origin` is
//!   present and not the `Host` it was sent to. Forms carry a token too, for browsers that send
//!   neither header: a page embeds [`Operator::csrf_token`] as the hidden field [`CSRF_FIELD`]
//!   (`<input type="hidden" name="csrf" value="…">`), and the POST handler, before anything
//!   else, calls [`Operator::verify_csrf`] with the field's value and returns its refusal (403).
//!   The token is [`csrf_token`]: HMAC-SHA256 of the operator's name keyed by the console token,
//!   so it needs no session, and only who knows the console token can make one.
//! - **Headers.** [`security_headers`] puts a Content-Security-Policy (`default-src 'self'`,
//!   scripts and styles from the console itself only, nothing inline, no framing), `X-Frame-Options: DENY`, `X-Content-Type-Options: nosniff`,
//!   `Referrer-Policy: same-origin` (not `no-referrer`: under it a browser sends `Origin: null`
//!   with its own forms, which the cross-site check must refuse) and `Cache-Control: no-store`
//!   on every answer.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use b24::incoming::quoted;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Secret;

/// The form field that carries [`Operator::csrf_token`].
pub const CSRF_FIELD: &str = "csrf";

/// What the 401 asks a browser for.
const CHALLENGE: &str = "Basic realm=\"b24act console\", charset=\"UTF-8\"";

/// The operator's name when a bearer token was presented.
const BEARER_NAME: &str = "bearer";

/// The operator's name when basic credentials named no user.
const NO_USER_NAME: &str = "operator";

/// What [`guard`] checks requests against: the configured token, if any.
#[derive(Clone)]
pub struct Access {
    token: Option<Secret>,
}

impl Access {
    pub fn new(token: Option<Secret>) -> Access {
        Access { token }
    }
}

/// Who sent an authenticated request; a request extension for handlers behind [`guard`]
/// (`Extension<Operator>` in a POST handler, `Option<Extension<Operator>>` in a page that
/// shows forms only to someone who may use them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    /// The basic auth user name (bounded and escaped), `bearer` for a bearer token, `operator`
    /// for basic credentials without a user name: the actor recorded with an operator action.
    pub name: String,
    csrf: String,
}

impl Operator {
    /// The value a form embeds as the hidden field [`CSRF_FIELD`].
    pub fn csrf_token(&self) -> &str {
        &self.csrf
    }

    /// Checks the [`CSRF_FIELD`] a form sent (in constant time); a POST handler calls it before
    /// anything else and answers its refusal as is.
    pub fn verify_csrf(&self, submitted: &str) -> Result<(), Refused> {
        if bool::from(submitted.as_bytes().ct_eq(self.csrf.as_bytes())) {
            Ok(())
        } else {
            Err(Refused::forbidden(
                "the form's csrf field is missing or wrong: reload the page and submit it again",
            ))
        }
    }
}

/// The form token of `operator`: HMAC-SHA256 of the name, keyed by the console token, in hex.
pub fn csrf_token(token: &Secret, operator: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(token.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(b"b24act console form\0");
    mac.update(operator.as_bytes());
    mac.finalize().into_bytes().iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A request the console refuses, with a message saying why and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    status: StatusCode,
    message: String,
}

impl Refused {
    pub(crate) fn forbidden(message: impl Into<String>) -> Refused {
        Refused { status: StatusCode::FORBIDDEN, message: message.into() }
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.message).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(CHALLENGE));
        }
        response
    }
}

/// Middleware in front of every console route: see the module's documentation.
pub async fn guard(
    State(access): State<Arc<Access>>,
    mut request: Request,
    next: Next,
) -> Response {
    let changes_state = !matches!(*request.method(), Method::GET | Method::HEAD);
    let headers = request.headers();
    let Some(token) = &access.token else {
        if !addressed_to_loopback(headers) {
            return Refused::forbidden(
                "this console has no console.token, so it answers only requests addressed to 127.0.0.1, [::1] or localhost",
            )
            .into_response();
        }
        if changes_state {
            return Refused::forbidden(
                "the console is read-only: no console.token is configured. Set console.token (or B24ACT__CONSOLE__TOKEN) to a secret to act on jobs from here",
            )
            .into_response();
        }
        return next.run(request).await;
    };
    let Some(name) = authenticate(headers, token) else {
        let message = "the console needs credentials: console.token as a bearer token, or as the password of basic auth";
        return Refused { status: StatusCode::UNAUTHORIZED, message: message.to_owned() }
            .into_response();
    };
    if changes_state && let Err(refused) = same_origin(headers) {
        tracing::warn!(operator = %name, reason = %refused.message, "refused a cross-site request to the console");
        return refused.into_response();
    }
    let csrf = csrf_token(token, &name);
    request.extensions_mut().insert(Operator { name, csrf });
    next.run(request).await
}

/// The operator's name if the request presents `token`, as a bearer token or a basic password.
fn authenticate(headers: &HeaderMap, token: &Secret) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credentials) = value.split_once(' ')?;
    let credentials = credentials.trim();
    let (name, presented) = if scheme.eq_ignore_ascii_case("bearer") {
        (BEARER_NAME.to_owned(), credentials.to_owned())
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(credentials).ok()?;
        let (user, password) = String::from_utf8(decoded)
            .ok()?
            .split_once(':')
            .map(|(user, password)| (user.to_owned(), password.to_owned()))?;
        let name =
            if user.is_empty() { NO_USER_NAME.to_owned() } else { quoted(&user).to_string() };
        (name, password)
    } else {
        return None;
    };
    // Digests first: `ct_eq` on slices of different lengths answers at once, telling the length.
    let digest = |text: &str| Sha256::digest(text.as_bytes());
    bool::from(digest(&presented).ct_eq(&digest(token.expose()))).then_some(name)
}

/// Refuses a request another site made the browser send (see the module's documentation).
fn same_origin(headers: &HeaderMap) -> Result<(), Refused> {
    let text = |name| headers.get(name).map(|value| String::from_utf8_lossy(value.as_bytes()));
    if let Some(site) = text("sec-fetch-site")
        && site != "same-origin"
    {
        return Err(Refused::forbidden(format!(
            "Sec-Fetch-Site is `{}`: the console takes changes only from its own pages",
            quoted(&site)
        )));
    }
    if let Some(origin) = text("origin") {
        let host = text("host").unwrap_or_default();
        let authority = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
        if !authority.is_some_and(|authority| authority.eq_ignore_ascii_case(&host)) {
            return Err(Refused::forbidden(format!(
                "Origin `{}` is not this console (`{}`): the console takes changes only from its own pages",
                quoted(&origin),
                quoted(&host)
            )));
        }
    }
    Ok(())
}

/// Whether the request's `Host` names a loopback address (a request without one is refused: a
/// browser always sends it).
fn addressed_to_loopback(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST) else { return false };
    let Ok(host) = host.to_str() else { return false };
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The console's Content-Security-Policy: its own stylesheet and script only, nothing inline.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// Middleware: the security headers of every console answer (see the module's documentation).
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn basic(user_and_password: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(user_and_password))
    }

    #[test]
    fn the_token_is_taken_as_bearer_or_basic_password_and_nothing_else() {
        let token = Secret::new("0123456789abcdef");
        let with = |value: &str| authenticate(&headers(&[("authorization", value)]), &token);
        assert_eq!(with("Bearer 0123456789abcdef").as_deref(), Some("bearer"));
        assert_eq!(with("bearer  0123456789abcdef ").as_deref(), Some("bearer"));
        assert_eq!(with(&basic("anna:0123456789abcdef")).as_deref(), Some("anna"));
        assert_eq!(with(&basic(":0123456789abcdef")).as_deref(), Some("operator"));
        assert_eq!(with(&basic("a\nb:0123456789abcdef")).as_deref(), Some("a\\nb"), "escaped");
        for wrong in [
            "Bearer 0123456789abcde",
            "Bearer 0123456789abcdef0",
            "0123456789abcdef",
            "Token 0123456789abcdef",
            &basic("0123456789abcdef:"),
            &basic("anna:wrong"),
            "Basic !!!",
        ] {
            assert_eq!(with(wrong), None, "{wrong}");
        }
        assert_eq!(authenticate(&HeaderMap::new(), &token), None);
    }

    #[test]
    fn form_tokens_depend_on_the_console_token_and_the_operator() {
        let token = Secret::new("0123456789abcdef");
        let anna = csrf_token(&token, "anna");
        assert_eq!(anna.len(), 64);
        assert_eq!(anna, csrf_token(&token, "anna"), "no session: the same every time");
        assert_ne!(anna, csrf_token(&token, "boris"));
        assert_ne!(anna, csrf_token(&Secret::new("fedcba9876543210"), "anna"));
        let operator = Operator { name: "anna".into(), csrf: anna.clone() };
        assert_eq!(operator.verify_csrf(&anna), Ok(()));
        assert!(operator.verify_csrf("").is_err());
        assert!(operator.verify_csrf(&anna[1..]).is_err());
    }

    #[test]
    fn cross_site_changes_are_refused() {
        let host = ("host", "127.0.0.1:8081");
        assert!(same_origin(&headers(&[host])).is_ok(), "a client that sends neither header");
        assert!(same_origin(&headers(&[host, ("sec-fetch-site", "same-origin")])).is_ok());
        assert!(same_origin(&headers(&[host, ("origin", "http://127.0.0.1:8081")])).is_ok());
        for refused in [
            [host, ("sec-fetch-site", "cross-site")],
            [host, ("sec-fetch-site", "same-site")],
            [host, ("origin", "http://evil.example.com")],
            [host, ("origin", "http://127.0.0.1:8082")],
            [host, ("origin", "null")],
        ] {
            assert!(same_origin(&headers(&refused)).is_err(), "{refused:?}");
        }
    }

    #[test]
    fn only_loopback_hosts_reach_a_console_without_a_token() {
        for host in ["127.0.0.1:8081", "localhost:8081", "LOCALHOST", "[::1]:8081", "127.0.0.2"] {
            assert!(addressed_to_loopback(&headers(&[("host", host)])), "{host}");
        }
        for host in ["evil.example.com:8081", "10.0.0.1:8081", "localhost.evil.example.com"] {
            assert!(!addressed_to_loopback(&headers(&[("host", host)])), "{host}");
        }
        assert!(!addressed_to_loopback(&HeaderMap::new()), "a request without a Host");
    }
}

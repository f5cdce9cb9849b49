//! How the client proves who it is: an app's OAuth tokens (protocol doc §4.1) or an inbound
//! webhook URL (§4.2).

use url::Url;

use super::error::Error;
use crate::incoming::Auth;
use crate::secret::{AccessToken, ClientSecret, RefreshToken};

/// Credentials for one portal.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant, reason = "built once per portal")]
pub enum Credentials {
    /// An installed app: tokens from ONAPPINSTALL or an activity call's `auth[...]`, plus the
    /// app's own id and secret for refreshing them.
    OAuth { tokens: OAuthTokens, app: AppCredentials },
    /// An inbound webhook, `https://<portal>/rest/<uid>/<secret>/`. Cannot register activities or
    /// robots (§1.1), but can call `bizproc.event.send` and `bizproc.activity.log` (§4.2).
    Webhook(WebhookUrl),
}

/// The OAuth token set of one installation, with the endpoints it is used at; named as in
/// `auth[...]` (§2.3, §4.3). Build it from an incoming call or event with [`Self::from_auth`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthTokens {
    /// `https://<portal>/rest/`: where REST methods are called, and so where the access token
    /// goes. Trust it only once verified (docs/protocol.md §4.4): a host stores the one the auth
    /// server named, never one an event named.
    pub client_endpoint: Url,
    pub access_token: AccessToken,
    /// Absent on older portals (§2.3); then an expired token cannot be renewed.
    pub refresh_token: Option<RefreshToken>,
    /// Unix time the access token expires. Informative only: the client refreshes on
    /// `expired_token`, never ahead of time (§4.1).
    pub expires: Option<i64>,
    pub member_id: String,
    /// The portal host, e.g. `example.bitrix24.com`.
    pub domain: String,
}

impl OAuthTokens {
    /// The token set an activity call or app event carried in `auth[...]`, or `None` if it lacks
    /// one of the two things a client cannot do without:
    ///
    /// - the access token: it is what every call is made with. It is missing when "Run as"
    ///   resolves to nobody and always on ONAPPUNINSTALL (§2.3);
    /// - `client_endpoint`: the only reliable address of the portal's REST API; guessing
    ///   `https://<domain>/rest/` from the domain would be wrong for portals served elsewhere.
    ///
    /// Everything here is what the sender claims: use it only for a call that was itself
    /// authenticated. An install event is verified at the configured auth server instead
    /// ([`crate::rest::redeem_refresh_token`], §4.4), and `auth[server_endpoint]` is never used:
    /// tokens are refreshed at [`AppCredentials::auth_server`]. The refresh token stays optional:
    /// older portals never send it (§2.1).
    pub fn from_auth(auth: &Auth) -> Option<OAuthTokens> {
        let tokens = auth.tokens.as_ref()?;
        Some(OAuthTokens {
            client_endpoint: auth.client_endpoint.clone()?,
            access_token: tokens.access_token.clone(),
            refresh_token: tokens.refresh_token.clone(),
            expires: tokens.expires,
            member_id: auth.member_id.as_str().to_owned(),
            domain: auth.domain.clone(),
        })
    }
}

/// The app's OAuth registration: needed only to refresh tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppCredentials {
    pub client_id: String,
    pub client_secret: ClientSecret,
    /// The auth server the host is configured with ([`BITRIX_AUTH_SERVER`] on the cloud): the
    /// only place `client_secret` and refresh tokens are sent, at `<auth_server>oauth/token/`.
    /// Never taken from an event: `auth[server_endpoint]` is attacker-supplied until proven
    /// (docs/protocol.md §4.4).
    pub auth_server: Url,
}

/// The cloud's auth server (§4.1).
pub const BITRIX_AUTH_SERVER: &str = "https://oauth.bitrix.info/";

/// Where the access token travels (§4.1: the portal takes the first of `Authorization: Bearer`,
/// `auth`, `access_token`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TokenPlacement {
    /// `Authorization: Bearer <token>`.
    #[default]
    Bearer,
    /// An `auth` key in the JSON body.
    AuthParam,
}

/// An inbound webhook base URL, `https://<portal>/rest/<uid>/<secret>/`; methods are appended.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl(Url);

impl WebhookUrl {
    /// Parses a webhook URL, adding the trailing `/` if it is missing.
    pub fn parse(url: &str) -> Result<WebhookUrl, Error> {
        let with_slash = if url.ends_with('/') { url.to_owned() } else { format!("{url}/") };
        let parsed = Url::parse(&with_slash)
            .map_err(|source| Error::InvalidUrl { url: redact(url), source })?;
        Ok(WebhookUrl(parsed))
    }

    /// The base URL (contains the secret: do not log it).
    pub fn url(&self) -> &Url {
        &self.0
    }
}

impl std::fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookUrl({})", host_of(&self.0))
    }
}

/// `host[:port]` of a URL: what the portal calls its domain.
pub(crate) fn host_of(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => String::new(),
    }
}

/// A URL for error messages: the path of a webhook holds its secret, so only the origin is kept.
pub(crate) fn redact(url: &str) -> String {
    match Url::parse(url) {
        Ok(parsed) => format!("{}://{}/…", parsed.scheme(), host_of(&parsed)),
        Err(_) => "<unparsable>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::incoming::{ActivityCall, Limits};

    fn call(name: &str) -> ActivityCall {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../testdata/php-encoded")
            .join(format!("{name}.body"));
        let body =
            std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()));
        ActivityCall::from_form(body.trim_ascii_end(), &Limits::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    #[test]
    fn from_auth_takes_the_tokens_and_endpoints_of_a_call() {
        let call = call("call-basic");
        let tokens = OAuthTokens::from_auth(&call.auth).expect("call-basic carries tokens");
        assert_eq!(tokens.client_endpoint.as_str(), "https://example.bitrix24.com/rest/");
        assert!(tokens.access_token.expose().starts_with("5d971c68"));
        assert!(tokens.refresh_token.as_ref().unwrap().expose().starts_with("4d164468"));
        assert_eq!(tokens.expires, Some(1746704221));
        assert_eq!(tokens.member_id, "3d906b2a32030386ccc7274d2313a01b");
        assert_eq!(tokens.domain, "example.bitrix24.com");
        let shown = format!("{tokens:?}");
        assert!(!shown.contains("5d971c68") && !shown.contains("4d164468"), "{shown}");
    }

    #[test]
    fn from_auth_needs_a_token_and_the_client_endpoint_but_never_the_server_endpoint() {
        assert_eq!(OAuthTokens::from_auth(&call("call-no-tokens").auth), None);
        let mut auth = call("call-basic").auth;
        auth.client_endpoint = None;
        assert_eq!(OAuthTokens::from_auth(&auth), None);
        let mut auth = call("call-basic").auth;
        auth.server_endpoint = None;
        assert!(OAuthTokens::from_auth(&auth).is_some(), "tokens are refreshed at auth_server");
    }

    #[test]
    fn app_credentials_debug_hides_the_secret() {
        let app = AppCredentials {
            client_id: "app.1".into(),
            client_secret: ClientSecret::new("s3cret"),
            auth_server: Url::parse(BITRIX_AUTH_SERVER).unwrap(),
        };
        let shown = format!("{app:?}");
        assert!(shown.contains("app.1") && !shown.contains("s3cret"), "{shown}");
    }
}

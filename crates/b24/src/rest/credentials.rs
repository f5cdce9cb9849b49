//! How the client proves who it is: an app's OAuth tokens (protocol doc §4.1) or an inbound
//! webhook URL (§4.2).

use url::Url;

use super::error::Error;

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

/// The OAuth token set of one installation, named as in `auth[...]` (§2.3, §4.3).
#[derive(Clone, PartialEq, Eq)]
pub struct OAuthTokens {
    /// `https://<portal>/rest/`: where REST methods are called.
    pub client_endpoint: Url,
    /// `https://oauth.bitrix.info/rest/`: its host serves `/oauth/token/` for refreshing.
    pub server_endpoint: Url,
    pub access_token: String,
    /// Absent on older portals (§2.3); then an expired token cannot be renewed.
    pub refresh_token: Option<String>,
    /// Unix time the access token expires. Informative only: the client refreshes on
    /// `expired_token`, never ahead of time (§4.1).
    pub expires: Option<i64>,
    pub member_id: String,
    /// The portal host, e.g. `example.bitrix24.com`.
    pub domain: String,
}

impl std::fmt::Debug for OAuthTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthTokens")
            .field("client_endpoint", &self.client_endpoint.as_str())
            .field("server_endpoint", &self.server_endpoint.as_str())
            .field("access_token", &"<redacted>")
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "<redacted>"))
            .field("expires", &self.expires)
            .field("member_id", &self.member_id)
            .field("domain", &self.domain)
            .finish()
    }
}

/// The app's OAuth registration: needed only to refresh tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct AppCredentials {
    pub client_id: String,
    pub client_secret: String,
}

impl std::fmt::Debug for AppCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppCredentials")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .finish()
    }
}

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

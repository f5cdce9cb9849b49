//! The `auth[...]` block of calls and events: who sent it, and the tokens that came with it.

use std::fmt;

use url::Url;

use super::IncomingError;
use super::fields::Form;
use crate::secret::{AccessToken, ApplicationToken, RefreshToken};

/// The portal's id (`auth[member_id]`, 32 hex characters on real portals).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId(String);

impl MemberId {
    pub fn new(value: impl Into<String>) -> Self {
        MemberId(value.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The tokens that came in `auth[...]`: minted for the "Run as" user (calls) or the installing
/// admin (events). Without the endpoints and the portal's identity; for the token set a REST
/// client is built from, see [`crate::rest::OAuthTokens::from_auth`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthTokens {
    pub access_token: AccessToken,
    /// Absent on older portals, which sent `sendRefreshToken:false` (§2.1).
    pub refresh_token: Option<RefreshToken>,
    /// Unix time the access token expires.
    pub expires: Option<i64>,
    pub expires_in: Option<u64>,
}

/// `auth[...]`. Only the portal's identity is required: the tokens are missing when "Run as"
/// resolves to nobody and always on ONAPPUNINSTALL, and the endpoints may be too (§2.3, §8 q.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    pub domain: String,
    pub member_id: MemberId,
    pub application_token: ApplicationToken,
    pub client_endpoint: Option<Url>,
    pub server_endpoint: Option<Url>,
    pub tokens: Option<AuthTokens>,
    pub scope: Option<String>,
    pub user_id: Option<u64>,
    /// `L`/`F`/`D`/`T`/`P`/`S`; never to be trusted for licensing (§6.9).
    pub status: Option<String>,
}

impl Auth {
    pub(crate) fn from_form(form: &Form) -> Result<Auth, IncomingError> {
        let field = |key| ["auth", key];
        let tokens = match form.non_empty_str(&field("access_token"))? {
            None => None,
            Some(access) => Some(AuthTokens {
                access_token: AccessToken::new(access),
                refresh_token: form.non_empty_str(&field("refresh_token"))?.map(RefreshToken::new),
                expires: form.optional_int(&field("expires"))?,
                expires_in: form.optional_int(&field("expires_in"))?,
            }),
        };
        Ok(Auth {
            domain: form.required_str(&field("domain"))?.to_owned(),
            member_id: MemberId::new(form.required_str(&field("member_id"))?),
            application_token: ApplicationToken::new(
                form.required_str(&field("application_token"))?,
            ),
            client_endpoint: form.optional_url(&field("client_endpoint"))?,
            server_endpoint: form.optional_url(&field("server_endpoint"))?,
            tokens,
            scope: form.non_empty_str(&field("scope"))?.map(str::to_owned),
            user_id: form.optional_int(&field("user_id"))?,
            status: form.non_empty_str(&field("status"))?.map(str::to_owned),
        })
    }
}

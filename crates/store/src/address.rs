//! Store URLs: which backend a URL selects, and how to show a URL without its password.

use crate::error::{Error, Result};

/// The database behind a [`Store`](crate::Store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One SQLite file (the default).
    Sqlite,
    /// A PostgreSQL database, possibly shared by several nodes.
    Postgres,
}

impl Backend {
    /// Picks the backend from the URL's scheme: `sqlite:` or `postgres:`/`postgresql:`.
    pub fn from_url(url: &str) -> Result<Backend> {
        let scheme = url.split_once(':').map(|(scheme, _)| scheme).unwrap_or("");
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            _ => Err(Error::UnsupportedScheme {
                scheme: if scheme.is_empty() || scheme.contains('/') {
                    "(none)".to_owned()
                } else {
                    scheme.to_owned()
                },
                url: redact_url(url),
            }),
        }
    }
}

/// Returns `url` with the password of its userinfo replaced by `***`, for logs and errors:
/// `postgres://app:secret@db/b24act` → `postgres://app:***@db/b24act`. A `password=` query
/// parameter is masked too.
pub fn redact_url(url: &str) -> String {
    let mut out = match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let (authority, tail) = rest.split_at(authority_end);
            match authority.rsplit_once('@') {
                Some((userinfo, host)) => {
                    let user = match userinfo.split_once(':') {
                        Some((user, _password)) => format!("{user}:***"),
                        None => userinfo.to_owned(),
                    };
                    format!("{scheme}://{user}@{host}{tail}")
                }
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    };
    if let Some(query_start) = out.find('?') {
        let (head, query) = out.split_at(query_start + 1);
        let masked: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out = format!("{head}{}", masked.join("&"));
    }
    out
}

//! Connector configuration errors that name the key, and the deserialization helpers behind them.

use std::fmt;
use std::time::Duration;

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde_json::Value;

use crate::connector::BoxError;

/// A connector's settings are wrong. `key` is the dotted path inside the connector's table
/// (`url`, `headers.Authorization`, `body.items[0]`), empty for the table itself; the message
/// never repeats a configured value, since values may be secrets.
///
/// Displayed as `connector.url: relative URL without a base`; the host puts the action in front.
#[derive(Debug, thiserror::Error)]
#[error("connector{}{key}: {message}", if key.is_empty() { "" } else { "." })]
pub struct ConfigError {
    key: String,
    message: String,
    #[source]
    source: Option<BoxError>,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError { key: key.into(), message: message.into(), source: None }
    }

    /// Keeps the typed cause.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The dotted path of the offending key inside the connector's table; empty for the table.
    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Deserializes a connector's settings into its own config type, naming the key on error.
///
/// Give the type `#[serde(deny_unknown_fields)]` so that a misspelt key is an error too.
pub fn from_value<T: DeserializeOwned>(settings: Value) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(settings).map_err(|error| {
        let path = error.path();
        let key = if path.iter().next().is_none() { String::new() } else { path.to_string() };
        let inner = error.into_inner();
        ConfigError::new(key, inner.to_string()).with_source(inner)
    })
}

/// Parses an absolute URL from a connector's settings at `key`; one written without a scheme
/// (`1c.example.com/trade`) is refused saying so ([`missing_scheme`]).
pub fn absolute_url(key: &str, text: &str) -> Result<url::Url, ConfigError> {
    if let Some(problem) = missing_scheme(text) {
        return Err(ConfigError::new(key, problem));
    }
    url::Url::parse(text).map_err(|e| ConfigError::new(key, e.to_string()).with_source(e))
}

/// Why `text` is no absolute URL when it was written without a scheme — `1c.example.com/trade`,
/// `localhost:8080` (which would read as the scheme `localhost`) —, with the URL to write:
/// "`1c.example.com/trade` has no scheme: write https://1c.example.com/trade". `None` for
/// anything else, which the URL parser judges. Since a URL may hold a secret, only what comes
/// before a query or fragment and after any `user:password@` is repeated, at most 100
/// characters of it.
pub fn missing_scheme(text: &str) -> Option<String> {
    let text = text.trim();
    if text.is_empty() {
        return Some("is empty: write an absolute URL, https://…".to_owned());
    }
    let missing = match url::Url::parse(text) {
        Err(url::ParseError::RelativeUrlWithoutBase) => true,
        Ok(url) => !text.contains("://") && url.path().starts_with(|c: char| c.is_ascii_digit()),
        Err(_) => false,
    };
    if !missing {
        return None;
    }
    let before_query = text.split(['?', '#']).next().unwrap_or_default();
    let address = before_query.rsplit_once('@').map_or(before_query, |(_, address)| address);
    let shown: String = address.chars().take(100).collect();
    if shown.starts_with('/') {
        return Some(format!("`{shown}` has no scheme or host: write https://<host>{shown}"));
    }
    Some(format!("`{shown}` has no scheme: write https://{shown}"))
}

/// Parses a duration as written in config: `"500ms"`, `"10s"`, `"2m"`, `"1h 30m"`, or a bare number of
/// seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    // A bare number is seconds; anything else reads as in the host's own settings (`500ms`,
    // `10s`, `2m`, `1h 30m`), so every duration in a configuration reads the same.
    match text.parse::<f64>() {
        Ok(seconds) => Duration::try_from_secs_f64(seconds).ok(),
        Err(_) => humantime::parse_duration(text).ok(),
    }
}

/// `#[serde(deserialize_with = "…")]` for an optional [`parse_duration`] value.
pub fn optional_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Option<Duration>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a duration such as \"10s\", \"500ms\" or \"2m\", or a number of seconds")
        }

        fn visit_u64<E: de::Error>(self, seconds: u64) -> Result<Self::Value, E> {
            Ok(Some(Duration::from_secs(seconds)))
        }

        fn visit_i64<E: de::Error>(self, seconds: i64) -> Result<Self::Value, E> {
            u64::try_from(seconds)
                .map(|s| Some(Duration::from_secs(s)))
                .map_err(|_| E::invalid_value(de::Unexpected::Signed(seconds), &self))
        }

        fn visit_f64<E: de::Error>(self, seconds: f64) -> Result<Self::Value, E> {
            Duration::try_from_secs_f64(seconds)
                .map(Some)
                .map_err(|_| E::invalid_value(de::Unexpected::Float(seconds), &self))
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
            parse_duration(text)
                .map(Some)
                .ok_or_else(|| E::invalid_value(de::Unexpected::Str(text), &self))
        }
    }

    deserializer.deserialize_any(DurationVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_without_a_scheme_says_so_and_what_to_write() {
        let missing = |text| missing_scheme(text).unwrap_or_default();
        assert_eq!(
            missing("1c.example.com/trade"),
            "`1c.example.com/trade` has no scheme: write https://1c.example.com/trade"
        );
        assert_eq!(
            missing("localhost:8080/x"),
            "`localhost:8080/x` has no scheme: write https://localhost:8080/x",
            "read by the parser as the scheme `localhost`"
        );
        assert_eq!(
            missing("finance.example.com:8443"),
            "`finance.example.com:8443` has no scheme: write https://finance.example.com:8443"
        );
        assert_eq!(
            missing("/api/v1/x"),
            "`/api/v1/x` has no scheme or host: write https://<host>/api/v1/x"
        );
        assert_eq!(missing(" "), "is empty: write an absolute URL, https://…");
        let secret = missing("b24act@api.example.com/x?token=s3cret");
        assert_eq!(secret, "`api.example.com/x` has no scheme: write https://api.example.com/x");
        for fine in ["https://1c.example.com/trade", "http://127.0.0.1:8080", "mailto:x@y.z"] {
            assert_eq!(missing_scheme(fine), None, "{fine}");
        }
        let error = absolute_url("base_url", "api.telegram.org").unwrap_err();
        assert_eq!(
            error.to_string(),
            "connector.base_url: `api.telegram.org` has no scheme: write https://api.telegram.org"
        );
    }
}

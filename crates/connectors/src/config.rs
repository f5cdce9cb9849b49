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

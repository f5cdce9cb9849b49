//! Connector kinds by name: the built-ins and those registered from Rust, built from config.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::{ConfigError, from_value};
use crate::connector::Connector;
use crate::http::{HttpConfig, HttpConnector, WithClient};

type Build = dyn Fn(Value) -> Result<Arc<dyn Connector>, ConfigError> + Send + Sync;

/// Connector kinds by name. [`Registry::new`] has the built-ins (`http`); add your own with
/// [`register`](Registry::register) or [`register_instance`](Registry::register_instance). A
/// later registration under a name replaces the earlier one, so a host can swap a built-in.
#[derive(Clone)]
pub struct Registry {
    kinds: BTreeMap<String, Arc<Build>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("kinds", &self.kinds.keys().collect::<Vec<_>>()).finish()
    }
}

impl Registry {
    /// The built-in kinds: `http`, `onec`, `credit_limit`, `telegram` and `sharepoint`.
    pub fn new() -> Registry {
        let mut registry = Registry::empty();
        registry.register("http", |config: HttpConfig| HttpConnector::new(config));
        registry.register("onec", crate::onec::OneCConnector::new);
        registry.register("credit_limit", crate::credit_limit::CreditLimitConnector::new);
        registry.register("telegram", crate::telegram::TelegramConnector::new);
        registry.register("sharepoint", crate::sharepoint::SharePointConnector::new);
        registry
    }

    /// No kinds at all.
    pub fn empty() -> Registry {
        Registry { kinds: BTreeMap::new() }
    }

    /// Registers a kind built from its own config type `C`. The settings are deserialized into
    /// `C` (give it `#[serde(deny_unknown_fields)]`), errors naming the key; then `build` may
    /// check them further and return a [`ConfigError`] naming the key itself.
    pub fn register<C, K, F>(&mut self, kind: impl Into<String>, build: F) -> &mut Self
    where
        C: DeserializeOwned,
        K: Connector + 'static,
        F: Fn(C) -> Result<K, ConfigError> + Send + Sync + 'static,
    {
        let build = move |settings: Value| -> Result<Arc<dyn Connector>, ConfigError> {
            let config: C = from_value(settings)?;
            Ok(Arc::new(build(config)?))
        };
        self.kinds.insert(kind.into(), Arc::new(build));
        self
    }

    /// Registers a ready connector that takes no settings: the config must hold `kind` only.
    pub fn register_instance(
        &mut self,
        kind: impl Into<String>,
        connector: Arc<dyn Connector>,
    ) -> &mut Self {
        let build = move |settings: Value| -> Result<Arc<dyn Connector>, ConfigError> {
            match settings {
                Value::Null => Ok(connector.clone()),
                Value::Object(map) if map.is_empty() => Ok(connector.clone()),
                Value::Object(map) => Err(ConfigError::new(
                    map.keys().next().map(String::as_str).unwrap_or_default(),
                    "this connector takes no settings",
                )),
                _ => Err(ConfigError::new("", "expected a table")),
            }
        };
        self.kinds.insert(kind.into(), Arc::new(build));
        self
    }

    /// The registered kinds, sorted.
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.kinds.keys().map(String::as_str)
    }

    /// Builds a connector from an action's connector table: `kind` picks the kind, the other keys
    /// are its settings.
    pub fn build(&self, table: &Value) -> Result<Arc<dyn Connector>, ConfigError> {
        let Value::Object(map) = table else {
            return Err(ConfigError::new("", "expected a table with `kind` and the settings"));
        };
        let mut settings = map.clone();
        let kind = match settings.remove("kind") {
            Some(Value::String(kind)) => kind,
            Some(_) => return Err(ConfigError::new("kind", "expected a string")),
            None => {
                return Err(ConfigError::new(
                    "kind",
                    "missing; say which connector runs the action",
                ));
            }
        };
        self.build_kind(&kind, Value::Object(settings))
    }

    /// Builds a connector of a named kind from its settings (without `kind`).
    pub fn build_kind(
        &self,
        kind: &str,
        settings: Value,
    ) -> Result<Arc<dyn Connector>, ConfigError> {
        match self.kinds.get(kind) {
            Some(build) => build(settings),
            None => Err(ConfigError::new(
                "kind",
                format!(
                    "unknown connector `{kind}`; known: {}",
                    self.kinds().collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }
}

//! Configuration: one TOML file plus environment overrides, read into one typed tree and
//! validated once at start, with errors that name the key (`actions[0].retry.max_wait: …`).
//!
//! This is the only module that reads the environment. An override is
//! `B24ACT__<SECTION>__<KEY>=value`, path segments joined by `__`, array elements by index:
//! `B24ACT__APP__CLIENT_SECRET=…`, `B24ACT__ACTIONS__0__CONNECTOR__URL=…`. A value keeps the type
//! of the file's value at that path; a new value is a boolean, integer or float when it reads as
//! one, and a string otherwise (write `'"123"'` for a string of digits). A variable whose key
//! is not known is refused by name, with the variable probably meant; a misspelt key in the
//! file gets the closest known one ([`suggest`]).
//!
//! Built on `toml` and `serde_path_to_error` rather than the `config` crate: the latter folds
//! key case, and Bitrix24 property ids keep theirs (§1.2); and this way every deserialization
//! error carries its exact path.

mod model;
pub mod suggest;
mod validate;

use std::fmt;
use std::path::Path;

pub use model::*;
use serde::Deserialize;

/// A key's segments as errors name the key: `["actions", "0", "url"]` is `actions[0].url`.
fn key_of(segments: &[String]) -> String {
    let mut key = String::new();
    for segment in segments {
        if segment.bytes().all(|b| b.is_ascii_digit()) {
            key.push_str(&format!("[{segment}]"));
        } else {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(segment);
        }
    }
    key
}

/// A key still holding one of the example's `<…>` placeholders, and the variable that sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfilled {
    /// As errors name keys: `actions[0].connector.password`.
    pub key: String,
    /// `B24ACT__ACTIONS__0__CONNECTOR__PASSWORD`.
    pub variable: String,
}

/// Collects into `found` the keys under `node` (reached by `path`) whose value is a placeholder
/// of the example: a whole string between `<` and `>`, such as `<the 1C user's password>`.
fn placeholders(node: &toml::Value, path: &mut Vec<String>, found: &mut Vec<Unfilled>) {
    let mut descend = |segment: String, value: &toml::Value, path: &mut Vec<String>| {
        path.push(segment);
        placeholders(value, path, found);
        path.pop();
    };
    match node {
        toml::Value::String(text)
            if text.len() > 2 && text.starts_with('<') && text.ends_with('>') =>
        {
            let key = key_of(path);
            let variable = format!("{ENV_PREFIX}{}", path.join("__").to_ascii_uppercase());
            found.push(Unfilled { key, variable });
        }
        toml::Value::Table(table) => {
            for (name, value) in table {
                descend(name.clone(), value, path);
            }
        }
        toml::Value::Array(items) => {
            for (index, value) in items.iter().enumerate() {
                descend(index.to_string(), value, path);
            }
        }
        _ => {}
    }
}

/// The prefix of environment overrides.
pub const ENV_PREFIX: &str = "B24ACT__";

/// A configured secret: never shown by `Debug` (the config is logged at start).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} is not valid TOML")]
    Syntax { path: String, source: Box<toml::de::Error> },
    #[error("environment variable {variable}: {problem}")]
    Environment { variable: String, problem: String },
    #[error("{key}: {message}")]
    Value { key: String, message: String },
    #[error("{} problem(s) in the configuration:\n{}", .0.len(), .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

/// One broken rule, with the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl Config {
    /// Reads `path`, applies the process environment's overrides, and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with_env(path, std::env::vars())
    }

    /// [`Config::load`] with the environment given explicitly (tests pass their own).
    pub fn load_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
        Config::from_toml(&text, &shown, env)
    }

    /// Parses TOML text (`origin` names it in errors), applies overrides, validates.
    pub fn from_toml(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut tree: toml::Table = toml::from_str(text).map_err(|source| ConfigError::Syntax {
            path: origin.to_owned(),
            source: Box::new(source),
        })?;
        let mut variables: Vec<(String, String)> =
            env.into_iter().filter(|(name, _)| name.starts_with(ENV_PREFIX)).collect();
        variables.sort();
        let mut overrides = Vec::with_capacity(variables.len());
        for (variable, value) in variables {
            let path = apply_override(&mut tree, &variable, &value).map_err(|problem| {
                ConfigError::Environment { variable: variable.clone(), problem }
            })?;
            overrides.push(EnvOverride { variable, path });
        }
        let tree = toml::Value::Table(tree);
        let mut unfilled = Vec::new();
        placeholders(&tree, &mut Vec::new(), &mut unfilled);
        let mut config: Config = serde_path_to_error::deserialize(tree).map_err(|e| {
            let (key, message) = (e.path().to_string(), e.inner().message().to_owned());
            match overriding(&overrides, &key, &message) {
                Some(set) => ConfigError::Environment {
                    variable: set.variable.clone(),
                    problem: set.problem(&key, &message),
                },
                None => ConfigError::Value { message: suggest::with_suggestion(&message), key },
            }
        })?;
        config.overrides = overrides;
        config.unfilled = unfilled;
        let problems = validate::problems(&config);
        if problems.is_empty() { Ok(config) } else { Err(ConfigError::Invalid(problems)) }
    }

    /// What to say about a connector's refusal of its settings at `key`
    /// (`actions[0].connector.url`): `message` with the closest expected name suggested, or,
    /// when an environment variable set that key, naming the variable (and the one probably
    /// meant).
    pub fn explain(&self, key: &str, message: &str) -> String {
        match overriding(&self.overrides, key, message) {
            Some(set) => {
                format!("{message} (set by {}{})", set.variable, set.did_you_mean(key, message))
            }
            None => suggest::with_suggestion(message),
        }
    }
}

impl LogConfig {
    /// The `[log]` table as the environment alone sets it (`B24ACT__LOG__FORMAT=json`), for
    /// commands that read no configuration file.
    pub fn from_env() -> Result<LogConfig, ConfigError> {
        LogConfig::from_env_vars(std::env::vars())
    }

    fn from_env_vars(
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<LogConfig, ConfigError> {
        let prefix = format!("{ENV_PREFIX}LOG__");
        let mut tree = toml::Table::new();
        for (variable, value) in env.into_iter().filter(|(name, _)| name.starts_with(&prefix)) {
            apply_override(&mut tree, &variable, &value)
                .map_err(|problem| ConfigError::Environment { variable, problem })?;
        }
        let log = tree.remove("log").unwrap_or_else(|| toml::Value::Table(toml::Table::new()));
        serde_path_to_error::deserialize(log).map_err(|e| ConfigError::Value {
            key: format!("log.{}", e.path()),
            message: suggest::with_suggestion(e.inner().message()),
        })
    }
}

/// One `B24ACT__…` variable applied to the file, by name and the key path it set (its value is
/// not kept: it may be a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvOverride {
    pub variable: String,
    /// The key's segments, lower-cased as applied: `["actions", "0", "retry", "max_wait"]`.
    pub path: Vec<String>,
}

impl EnvOverride {
    /// The key as errors name it: `actions[0].retry.max_wait`.
    fn key(&self, depth: usize) -> String {
        key_of(&self.path[..depth.min(self.path.len())])
    }

    /// How many of its segments make `key`, if `key` is this variable's key or one above it.
    fn depth_of(&self, key: &str) -> Option<usize> {
        (1..=self.path.len()).find(|&depth| self.key(depth) == key)
    }

    /// `"; did you mean B24ACT__…?"` when `message` refuses an unknown name at `key` and a
    /// known one is close: this variable with the misspelt segment replaced.
    fn did_you_mean(&self, key: &str, message: &str) -> String {
        let meant = suggest::unknown_name(message).and_then(|(wrong, expected)| {
            let depth = self.depth_of(&unknown_key(key, message))?;
            let name = suggest::closest(wrong, expected)?;
            let mut path = self.path.clone();
            path[depth - 1] = name.to_owned();
            let segments: Vec<String> = path.iter().map(|s| s.to_ascii_uppercase()).collect();
            Some(format!("{ENV_PREFIX}{}", segments.join("__")))
        });
        meant.map(|variable| format!("; did you mean {variable}?")).unwrap_or_default()
    }

    /// A deserialization error at `key` as this variable's problem.
    fn problem(&self, key: &str, message: &str) -> String {
        let shown = unknown_key(key, message);
        let meant = self.did_you_mean(key, message);
        match suggest::unknown_name(message) {
            Some(_) => format!("sets `{shown}`, which is not a known key: {message}{meant}"),
            None => format!("`{shown}`: {message}"),
        }
    }
}

/// The key a deserialization error is about: for an unknown field, the field itself below `key`
/// (serde names the table that holds it, or the field, depending on the format).
fn unknown_key(key: &str, message: &str) -> String {
    match suggest::unknown_name(message) {
        Some((field, _)) if !key.ends_with(&format!(".{field}")) && key != field => {
            if key.is_empty() || key == "." { field.to_owned() } else { format!("{key}.{field}") }
        }
        _ => key.to_owned(),
    }
}

/// The override an error at `key` is about: the one that set that key, or for an unknown name,
/// the one that set a key at or below it.
fn overriding<'a>(
    overrides: &'a [EnvOverride],
    key: &str,
    message: &str,
) -> Option<&'a EnvOverride> {
    let key = unknown_key(key, message);
    let unknown = suggest::unknown_name(message).is_some();
    overrides.iter().find(|o| match o.depth_of(&key) {
        Some(depth) => unknown || depth == o.path.len(),
        None => false,
    })
}

/// Sets `B24ACT__A__B__0__C=value` at `a.b[0].c`, creating tables on the way; returns the path.
fn apply_override(
    tree: &mut toml::Table,
    variable: &str,
    raw: &str,
) -> Result<Vec<String>, String> {
    let path: Vec<String> =
        variable[ENV_PREFIX.len()..].split("__").map(str::to_ascii_lowercase).collect();
    if path.iter().any(String::is_empty) {
        return Err("empty path segment (use `__` only between keys)".to_owned());
    }
    let mut root = toml::Value::Table(std::mem::take(tree));
    let outcome = set_path(&mut root, &path, raw);
    if let toml::Value::Table(table) = root {
        *tree = table;
    }
    outcome.map(|()| path)
}

fn set_path(node: &mut toml::Value, path: &[String], raw: &str) -> Result<(), String> {
    let Some((segment, rest)) = path.split_first() else { return Ok(()) };
    let child = match node {
        toml::Value::Table(table) => {
            if rest.is_empty() {
                let value = typed_like(table.get(segment.as_str()), raw);
                table.insert(segment.clone(), value);
                return Ok(());
            }
            table.entry(segment.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()))
        }
        toml::Value::Array(items) => {
            let count = items.len();
            let index: usize =
                segment.parse().map_err(|_| format!("`{segment}` is not an index into a list"))?;
            let item = items
                .get_mut(index)
                .ok_or_else(|| format!("index {index} is past the {count} configured elements"))?;
            if rest.is_empty() {
                *item = typed_like(Some(item), raw);
                return Ok(());
            }
            item
        }
        other => return Err(format!("cannot set `{segment}` inside a {}", other.type_str())),
    };
    set_path(child, rest, raw)
}

/// Reads an override as the type already configured at its key, else by its looks.
fn typed_like(existing: Option<&toml::Value>, raw: &str) -> toml::Value {
    use toml::Value;
    if let Some(quoted) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        return Value::String(quoted.to_owned());
    }
    let parsed = match existing {
        Some(Value::String(_)) => None,
        Some(Value::Integer(_)) => raw.parse().ok().map(Value::Integer),
        Some(Value::Float(_)) => raw.parse().ok().map(Value::Float),
        Some(Value::Boolean(_)) => raw.parse().ok().map(Value::Boolean),
        _ => raw
            .parse()
            .map(Value::Boolean)
            .or_else(|_| raw.parse().map(Value::Integer))
            .or_else(|_| raw.parse().map(Value::Float))
            .ok(),
    };
    parsed.unwrap_or_else(|| Value::String(raw.to_owned()))
}

#[cfg(test)]
mod tests;

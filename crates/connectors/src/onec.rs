//! The `onec` connector: reads 1C:Enterprise data through its standard OData interface — an item
//! found in a catalog by the call's values, then register rows by the item's `Ref_Key` — and maps
//! them to return values.
//!
//! # Config
//!
//! ```toml
//! [actions.connector]
//! kind = "onec"
//! url = "https://1c.example.com/trade"  # the publication; /odata/standard.odata is appended
//! username = "Интеграция"                # basic auth; the host resolves secrets before us
//! password = "…"
//! timeout = "10s"                       # per request; the host's attempt timeout applies too
//! not_found = "fail"                    # or "empty": see below
//!
//! [actions.connector.item]              # 1. the catalog item
//! entity = "Catalog_Номенклатура"
//! filter = { "Артикул" = "sku" }        # field = input property; several are joined by `and`
//! condition = "IsFolder eq false"       # optional, OData, added with `and`
//! select = ["Ref_Key", "Description", "Артикул"]   # optional; Ref_Key is always asked for
//! # skip_deleted = true                 # default: adds `DeletionMark eq false`
//!
//! [actions.connector.registers.price]   # 2. rows keyed by the item, under a name of your own
//! entity = "InformationRegister_ЦеныНоменклатуры/SliceLast"
//! key = "Номенклатура_Key"              # the field that holds the item's Ref_Key
//! condition = "ВидЦены_Key eq guid'b1d2e3f4-0a0b-11ee-9c1d-00155d0a1c10'"
//!
//! [actions.connector.registers.stock]
//! entity = "AccumulationRegister_ТоварыНаСкладах/Balance"
//! key = "Номенклатура_Key"
//! dimensions = "Номенклатура"           # virtual tables only: sum over the other dimensions
//!
//! [actions.connector.response]          # return id → JSON pointer into {item, price, stock}
//! name = "/item/Description"
//! price = { pointer = "/price/0/Цена", default = 0 }
//! available = { pointer = "/stock/0/ВНаличииBalance", default = 0 }
//!
//! [actions.connector.flags]             # return id → bool: the number there is above `above`
//! in_stock = { pointer = "/stock/0/ВНаличииBalance", above = 0 }
//! ```
//!
//! Entity and field names are 1C's own, Cyrillic included; they are percent-encoded as UTF-8.
//! A register `entity` is an entity set (`InformationRegister_X`, `AccumulationRegister_X_RecordType`),
//! queried with `$filter=key eq guid'…' and (condition)`, or a virtual table
//! (`…/SliceLast`, `…/SliceFirst`, `…/Balance`, `…/Turnovers`, `…/BalanceAndTurnovers`), called
//! as `…/Balance(Condition='key eq guid''…'' and (condition)',Dimensions='…')` so that 1C applies
//! the condition before it aggregates. Either way `select`, `order_by` (`"Period desc"`) and
//! `top` may be added.
//!
//! The mapping reads a document `{"item": {the item's fields}, "<register>": [rows…]}`; see
//! [`mapping`](crate::mapping) for the pointer syntax, `default` and `optional`.
//!
//! # Errors
//!
//! Config errors name the key. At run time ([`OneCError`], classified in one place):
//! timeouts, connection failures and 5xx/408/429 (with `Retry-After`) are retryable, as in the
//! `http` connector. A 5xx carrying 1C's `odata.error` is retryable when its message names
//! something that passes (a lock, a timeout, licences, a restart, [`is_passing`]); any other
//! (1C answers 500 with code `-1` for a broken query or event handler as for a passing fault) is
//! retried until `internal_error_attempts` attempts (default 3) have ended so, then fatal.
//! 401 is fatal ("1C refused the credentials"); another 4xx `odata.error` (an unknown entity or
//! field, a bad condition) is fatal with 1C's message, and an unknown or unpublished entity set
//! (code 9) says to publish it in the standard OData interface's settings; no item is fatal unless
//! `not_found = "empty"`, which skips the registers and lets the mapping's defaults answer; two
//! items matching is fatal; a body that is not JSON, or without the `value` array or a GUID
//! `Ref_Key`, is fatal naming what is missing. The password is never logged or put in a reason.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value};
use tracing::Instrument;

use crate::config::ConfigError;
use crate::connector::{ConnectorError, ConnectorRequest, Contract, Outputs};
use crate::http::error::StatusPolicy;
use crate::http::{Answer, HttpError, WithClient};
use crate::mapping::{Field, MappingError, ResponseMapping};

/// Virtual tables 1C's OData interface offers on registers.
const VIRTUAL_TABLES: [&str; 5] =
    ["SliceLast", "SliceFirst", "Balance", "Turnovers", "BalanceAndTurnovers"];

/// Characters escaped in a path segment besides non-ASCII: what a segment cannot hold. `'`, `(`,
/// `)`, `=` and `,` stay as they are, as in 1C's own examples of virtual-table calls.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'/')
    .add(b'\\')
    .add(b'^')
    .add(b'|')
    .add(b'[')
    .add(b']')
    .add(b'&')
    .add(b'+');

/// Characters escaped in a query value: a segment's, and `=`, `'` and `,` too. Spaces become
/// `%20`, never `+`, which 1C may take literally.
const QUERY_VALUE: &AsciiSet = &SEGMENT.add(b'=').add(b'\'').add(b',').add(b';');

/// Settings of the `onec` connector. See the [module docs](crate::onec) for a complete example.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OneCConfig {
    /// The infobase's publication, e.g. `https://1c.example.com/trade`; `/odata/standard.odata`
    /// is appended.
    pub url: String,
    /// The 1C user for basic auth.
    pub username: String,
    #[serde(default)]
    pub password: String,
    /// Per request; the host's per-attempt timeout applies too, whichever is shorter.
    #[serde(default, deserialize_with = "crate::config::optional_duration")]
    pub timeout: Option<Duration>,
    /// The catalog item to find.
    pub item: ItemQuery,
    /// Name → rows to read by the item's `Ref_Key`. A name is the item's key in the mapped
    /// document; `item` is taken.
    #[serde(default)]
    pub registers: BTreeMap<String, RegisterQuery>,
    /// Return id → JSON pointer into `{"item": …, "<register>": […]}`.
    #[serde(default)]
    pub response: ResponseMapping,
    /// Return id → a yes/no: the number at `pointer` is above `above`.
    #[serde(default)]
    pub flags: BTreeMap<String, Flag>,
    /// What happens when no item matches.
    #[serde(default)]
    pub not_found: NotFound,
    /// Larger answers are refused (fatal). Default 1 MiB.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    /// How many attempts may end in a 5xx `odata.error` that is not a lock or a timeout
    /// before the job fails for good (default 3). 1C answers 500 with code `-1` for errors in
    /// a query or an event handler that never go away as well as for passing ones.
    #[serde(default = "default_internal_error_attempts")]
    pub internal_error_attempts: u32,
}

fn default_internal_error_attempts() -> u32 {
    3
}

fn default_max_response_bytes() -> usize {
    1 << 20
}

impl fmt::Debug for OneCConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OneCConfig")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("item", &self.item)
            .field("registers", &self.registers)
            .field("response", &self.response)
            .field("flags", &self.flags)
            .field("not_found", &self.not_found)
            .field("max_response_bytes", &self.max_response_bytes)
            .finish()
    }
}

/// The catalog lookup: `entity?$filter=field eq value and … and DeletionMark eq false`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemQuery {
    /// The entity set, e.g. `Catalog_Номенклатура`.
    pub entity: String,
    /// Field → input property whose value the field must equal (a string, number or bool).
    pub filter: BTreeMap<String, String>,
    /// More of the filter, in OData, added with `and`.
    #[serde(default)]
    pub condition: Option<String>,
    /// Leave out items marked for deletion. Default true.
    #[serde(default = "yes")]
    pub skip_deleted: bool,
    /// The fields to ask for (`Ref_Key` is added); empty asks for all.
    #[serde(default)]
    pub select: Vec<String>,
}

fn yes() -> bool {
    true
}

/// Rows read by the item's `Ref_Key`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterQuery {
    /// An entity set, or a register's virtual table (`AccumulationRegister_X/Balance`).
    pub entity: String,
    /// The field that holds the item's reference, e.g. `Номенклатура_Key`.
    pub key: String,
    /// More of the condition, in OData, added with `and`.
    #[serde(default)]
    pub condition: Option<String>,
    /// Virtual tables: the `Dimensions` parameter (`"Номенклатура"`), to aggregate over the rest.
    #[serde(default)]
    pub dimensions: Option<String>,
    #[serde(default)]
    pub select: Vec<String>,
    /// `$orderby`, e.g. `"Period desc"`.
    #[serde(default)]
    pub order_by: Option<String>,
    /// `$top`.
    #[serde(default)]
    pub top: Option<u32>,
}

/// A yes/no return value: true when the number at `pointer` is above `above` (default 0); false
/// when the pointer does not resolve (no rows).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flag {
    pub pointer: String,
    #[serde(default)]
    pub above: f64,
}

/// What happens when no catalog item matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotFound {
    /// A fatal error naming the entity and the filter.
    #[default]
    Fail,
    /// Success with `item` = `{}` and every register `[]`: the mapping's `default`s answer (give
    /// every required return value one) and flags are false.
    Empty,
}

/// The `onec` connector's own error. Messages never contain the password.
#[derive(Debug, thiserror::Error)]
pub enum OneCError {
    /// The call lacks a property the item filter needs.
    #[error("the call has no `{property}` for {field}")]
    MissingProperty { property: String, field: String },
    /// The property's value cannot be an OData literal.
    #[error("property `{property}` for {field} {problem}")]
    BadProperty { property: String, field: String, problem: &'static str },
    /// The exchange failed below 1C: timeout, connection, a status without 1C's error body.
    #[error(transparent)]
    Http(HttpError),
    /// 401.
    #[error("1C refused the credentials (401){}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Unauthorized { message: Option<String> },
    /// 1C's `odata.error` answer.
    #[error("1C answered {status}: {message} (code {code})")]
    OData { status: StatusCode, code: String, message: String },
    /// No catalog item matches.
    #[error("no item where {filter}")]
    NotFound { filter: String },
    /// More than one catalog item matches.
    #[error("more than one item where {filter}")]
    Ambiguous { filter: String },
    /// A 2xx whose body is not JSON.
    #[error("the answer is not JSON: {source}")]
    InvalidJson {
        #[source]
        source: serde_json::Error,
    },
    /// A 2xx JSON answer without what an OData answer holds.
    #[error("the answer's {field} {problem}")]
    Malformed { field: String, problem: &'static str },
    /// A required return value is not in the document.
    #[error(transparent)]
    Mapping(#[from] MappingError),
    /// A flag's pointer found something other than a number.
    #[error("flags.{flag}: the value at `{pointer}` is not a number")]
    FlagNotNumber { flag: String, pointer: String },
}

impl OneCError {
    /// The one place a 1C failure becomes retryable or fatal; `1C {entity}: ` goes in front of
    /// the reason. Failures below 1C (timeouts, connections, statuses without 1C's error body)
    /// are classified by the `http` connector's rule and keep its [`HttpError`] as the source;
    /// the others keep this error.
    pub fn classify(self, entity: &str, attempt: Attempt) -> ConnectorError {
        let endpoint = format!("1C {entity}");
        let error = match self {
            // Below 1C, the `http` connector's rule decides, and its error stays the source.
            OneCError::Http(error) => return StatusPolicy::default().classify(&endpoint, error),
            other => other,
        };
        let mut note = String::new();
        let retryable = match &error {
            OneCError::OData { status, message, .. } if status.is_server_error() => {
                if is_passing(message) {
                    true
                } else if attempt.number < attempt.internal_error_attempts {
                    note = format!(
                        " (attempt {} of {} that may end in an internal error)",
                        attempt.number, attempt.internal_error_attempts
                    );
                    true
                } else {
                    note = format!(
                        "; {} attempts ended in 1C's internal errors, so it is taken as permanent",
                        attempt.number
                    );
                    false
                }
            }
            OneCError::OData { code, .. } if code == SEGMENT_NOT_FOUND => {
                note = format!(
                    "; check that `{entity}` is among the published objects of 1C's standard OData \
                     interface (Администрирование → Настройка стандартного интерфейса OData), and \
                     that a register subordinate to a recorder is read as `…_RecordType`"
                );
                false
            }
            OneCError::OData { .. } => false,
            OneCError::MissingProperty { .. }
            | OneCError::BadProperty { .. }
            | OneCError::Unauthorized { .. }
            | OneCError::NotFound { .. }
            | OneCError::Ambiguous { .. }
            | OneCError::InvalidJson { .. }
            | OneCError::Malformed { .. }
            | OneCError::Mapping(_)
            | OneCError::FlagNotNumber { .. }
            // Classified above.
            | OneCError::Http(_) => false,
        };
        let reason = format!("{endpoint}: {error}{note}");
        let decided = if retryable {
            ConnectorError::retryable(reason)
        } else {
            ConnectorError::fatal(reason)
        };
        decided.with_source(error)
    }
}

/// The code of 1C's answer for a path segment it does not publish: an unknown or unpublished
/// entity set or virtual table.
const SEGMENT_NOT_FOUND: &str = "9";

/// Which attempt this is, and how many may end in 1C's internal errors.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    /// 1 for the first.
    pub number: u32,
    pub internal_error_attempts: u32,
}

/// Whether a 5xx `odata.error` message names something that passes: a lock conflict or wait,
/// a timeout, a shortage of licences, a server that is starting or stopping (1C's Russian and
/// English wordings). Anything else may be permanent (INFERRED from 1C's messages; the
/// bounded retries cover a passing error this list misses).
fn is_passing(message: &str) -> bool {
    let message = message.to_lowercase();
    [
        "блокиров",
        "lock",
        "тайм-аут",
        "таймаут",
        "timeout",
        "превышено время ожидания",
        "лицензи",
        "licen",
        "недоступен",
        "unavailable",
        "перезапуск",
        "restart",
    ]
    .iter()
    .any(|word| message.contains(word))
}

/// One prepared read.
#[derive(Debug, Clone)]
struct Register {
    name: String,
    /// The entity set, or `Register` of `Register/Function`.
    entity: String,
    function: Option<String>,
    key: String,
    condition: Option<String>,
    dimensions: Option<String>,
    select: Vec<String>,
    order_by: Option<String>,
    top: Option<u32>,
}

/// The `onec` connector, built from a checked [`OneCConfig`]. `Debug` shows the service only.
pub struct OneCConnector {
    client: reqwest::Client,
    /// `…/odata/standard.odata/`, ending in a slash.
    service: String,
    username: String,
    password: String,
    timeout: Option<Duration>,
    item: ItemQuery,
    registers: Vec<Register>,
    response: ResponseMapping,
    flags: Vec<(String, Flag)>,
    not_found: NotFound,
    max_response_bytes: usize,
    internal_error_attempts: u32,
}

impl fmt::Debug for OneCConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OneCConnector").field("service", &self.service).finish_non_exhaustive()
    }
}

/// A 1C name: letters of any script, digits and `_`, not starting with a digit.
fn check_name(key: &str, name: &str) -> Result<(), ConfigError> {
    let valid = name.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(ConfigError::new(key, "not a 1C name (letters, digits and `_`)"))
    }
}

fn check_names(key: &str, names: &[String]) -> Result<(), ConfigError> {
    for (i, name) in names.iter().enumerate() {
        check_name(&format!("{key}[{i}]"), name)?;
    }
    Ok(())
}

impl WithClient for OneCConnector {
    type Config = OneCConfig;

    fn with_client(config: Self::Config, client: reqwest::Client) -> Result<Self, ConfigError> {
        let url = crate::config::absolute_url("url", &config.url)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ConfigError::new(
                "url",
                format!("`{}` is not http or https", url.scheme()),
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ConfigError::new(
                "url",
                "credentials belong in `username` and `password`, not in the URL",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(ConfigError::new("url", "give the publication's URL, without a query"));
        }
        let service = format!("{}/odata/standard.odata/", url.as_str().trim_end_matches('/'));

        if config.username.is_empty() {
            return Err(ConfigError::new("username", "must not be empty"));
        }
        if config.username.contains(':') {
            return Err(ConfigError::new("username", "basic auth cannot carry a `:` in the user"));
        }
        crate::http::check_timeout(config.timeout)?;
        if config.internal_error_attempts == 0 {
            return Err(ConfigError::new("internal_error_attempts", "must be at least 1"));
        }
        if config.max_response_bytes == 0 {
            return Err(ConfigError::new("max_response_bytes", "must be at least 1"));
        }

        let item = config.item;
        check_name("item.entity", &item.entity)?;
        if item.filter.is_empty() {
            return Err(ConfigError::new(
                "item.filter",
                "give at least one field = input property, e.g. { \"Артикул\" = \"sku\" }",
            ));
        }
        for (field, property) in &item.filter {
            check_name(&format!("item.filter.{field}"), field)?;
            if property.is_empty() {
                return Err(ConfigError::new(
                    format!("item.filter.{field}"),
                    "name the input property",
                ));
            }
        }
        check_names("item.select", &item.select)?;
        if item.condition.as_deref().is_some_and(|c| c.trim().is_empty()) {
            return Err(ConfigError::new("item.condition", "must not be empty"));
        }

        let mut registers = Vec::with_capacity(config.registers.len());
        for (name, query) in config.registers {
            let at = |key: &str| format!("registers.{name}.{key}");
            if name == "item" {
                return Err(ConfigError::new(
                    "registers.item",
                    "`item` is the catalog item's name in the mapped document; choose another",
                ));
            }
            let (entity, function) = match query.entity.split_once('/') {
                None => (query.entity.clone(), None),
                Some((entity, function)) => {
                    let function = function.strip_suffix("()").unwrap_or(function);
                    if !VIRTUAL_TABLES.contains(&function) {
                        return Err(ConfigError::new(
                            at("entity"),
                            format!(
                                "`{function}` is not a virtual table; known: {}",
                                VIRTUAL_TABLES.join(", ")
                            ),
                        ));
                    }
                    (entity.to_owned(), Some(function.to_owned()))
                }
            };
            check_name(&at("entity"), &entity)?;
            check_name(&at("key"), &query.key)?;
            check_names(&at("select"), &query.select)?;
            if query.dimensions.is_some() && function.is_none() {
                return Err(ConfigError::new(
                    at("dimensions"),
                    "only a virtual table (…/Balance, …/Turnovers) takes dimensions",
                ));
            }
            if query.top == Some(0) {
                return Err(ConfigError::new(at("top"), "must be at least 1"));
            }
            registers.push(Register {
                name,
                entity,
                function,
                key: query.key,
                condition: query.condition.filter(|c| !c.trim().is_empty()),
                dimensions: query.dimensions,
                select: query.select,
                order_by: query.order_by,
                top: query.top,
            });
        }

        let mut flags = Vec::with_capacity(config.flags.len());
        for (id, flag) in config.flags {
            ResponseMapping::new([(id.clone(), Field::required(flag.pointer.clone()))])
                .map_err(|e| ConfigError::new(format!("flags.{id}.pointer"), e.to_string()))?;
            if config.response.properties().any(|p| p == id) {
                return Err(ConfigError::new(
                    format!("flags.{id}"),
                    "is in `response` too; a return value comes from one of them",
                ));
            }
            flags.push((id, flag));
        }

        Ok(OneCConnector {
            client,
            service,
            username: config.username,
            password: config.password,
            timeout: config.timeout,
            item,
            registers,
            response: config.response,
            flags,
            not_found: config.not_found,
            max_response_bytes: config.max_response_bytes,
            internal_error_attempts: config.internal_error_attempts,
        })
    }
}

impl OneCConnector {
    /// `field eq literal and …` from the call's properties, plus the fixed parts.
    fn item_filter(&self, request: &ConnectorRequest) -> Result<String, OneCError> {
        let mut parts = Vec::new();
        for (field, property) in &self.item.filter {
            let literal = match request.properties.get(property) {
                None | Some(Value::Null) => {
                    return Err(OneCError::MissingProperty {
                        property: property.clone(),
                        field: field.clone(),
                    });
                }
                Some(Value::String(text)) if text.trim().is_empty() => {
                    return Err(OneCError::BadProperty {
                        property: property.clone(),
                        field: field.clone(),
                        problem: "is empty",
                    });
                }
                Some(Value::String(text)) => format!("'{}'", text.replace('\'', "''")),
                Some(Value::Number(number)) => number.to_string(),
                Some(Value::Bool(flag)) => flag.to_string(),
                Some(Value::Array(_) | Value::Object(_)) => {
                    return Err(OneCError::BadProperty {
                        property: property.clone(),
                        field: field.clone(),
                        problem: "is a list or an object, not one value",
                    });
                }
            };
            parts.push(format!("{field} eq {literal}"));
        }
        if self.item.skip_deleted {
            parts.push("DeletionMark eq false".to_owned());
        }
        if let Some(condition) = &self.item.condition {
            parts.push(format!("({condition})"));
        }
        Ok(parts.join(" and "))
    }

    /// The URL of one read: the service, the encoded resource path, and the query.
    fn url(&self, path: &str, query: &[(&str, String)]) -> String {
        let mut url = format!("{}{path}?$format=json", self.service);
        for (name, value) in query {
            url.push('&');
            url.push_str(name);
            url.push('=');
            url.extend(utf8_percent_encode(value, QUERY_VALUE));
        }
        url
    }

    fn register_url(&self, register: &Register, reference: &str) -> String {
        let mut condition = format!("{} eq guid'{reference}'", register.key);
        if let Some(extra) = &register.condition {
            condition.push_str(&format!(" and ({extra})"));
        }
        let entity = utf8_percent_encode(&register.entity, SEGMENT).to_string();
        let mut query = Vec::new();
        let path = match &register.function {
            None => {
                query.push(("$filter", condition));
                entity
            }
            Some(function) => {
                let mut arguments = format!("Condition='{}'", condition.replace('\'', "''"));
                if let Some(dimensions) = &register.dimensions {
                    arguments
                        .push_str(&format!(",Dimensions='{}'", dimensions.replace('\'', "''")));
                }
                format!("{entity}/{function}({})", utf8_percent_encode(&arguments, SEGMENT))
            }
        };
        if !register.select.is_empty() {
            query.push(("$select", register.select.join(",")));
        }
        if let Some(order) = &register.order_by {
            query.push(("$orderby", order.clone()));
        }
        if let Some(top) = register.top {
            query.push(("$top", top.to_string()));
        }
        self.url(&path, &query)
    }

    /// GETs one OData resource and returns its `value` rows.
    async fn read(&self, url: &str, timeout: Duration) -> Result<Vec<Value>, OneCError> {
        let request = self
            .client
            .get(url)
            .basic_auth(&self.username, Some(&self.password))
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(timeout);
        let answer = Answer::fetch(request, "1C", self.max_response_bytes, timeout)
            .await
            .map_err(OneCError::Http)?;
        if !answer.status.is_success() {
            return Err(match (answer.status, odata_error(&answer.bytes)) {
                (StatusCode::UNAUTHORIZED, error) => {
                    OneCError::Unauthorized { message: error.map(|(_, message)| message) }
                }
                (status, Some((code, message))) => OneCError::OData { status, code, message },
                (_, None) => {
                    OneCError::Http(answer.status_error(crate::http::excerpt_of(&answer.bytes)))
                }
            });
        }
        let body: Value = serde_json::from_slice(&answer.bytes)
            .map_err(|source| OneCError::InvalidJson { source })?;
        match body {
            Value::Object(mut object) => match object.remove("value") {
                Some(Value::Array(rows)) => Ok(rows),
                Some(_) => Err(OneCError::Malformed {
                    field: "`value`".to_owned(),
                    problem: "is not an array",
                }),
                None => {
                    Err(OneCError::Malformed { field: "`value`".to_owned(), problem: "is missing" })
                }
            },
            _ => Err(OneCError::Malformed {
                field: "body".to_owned(),
                problem: "is not a JSON object",
            }),
        }
    }

    /// One attempt: finds the item, reads its registers and maps the answer.
    async fn attempt(
        &self,
        request: &ConnectorRequest,
        timeout: Duration,
    ) -> Result<Outputs, ConnectorError> {
        let entity = &self.item.entity;
        tracing::Span::current().record("entity", tracing::field::display(entity));
        let attempt = Attempt {
            number: request.attempt,
            internal_error_attempts: self.internal_error_attempts,
        };
        let filter = self.item_filter(request).map_err(|e| e.classify(entity, attempt))?;
        let mut query = vec![("$filter", filter.clone())];
        if !self.item.select.is_empty() {
            let mut select = self.item.select.clone();
            if !select.iter().any(|f| f == "Ref_Key") {
                select.insert(0, "Ref_Key".to_owned());
            }
            query.push(("$select", select.join(",")));
        }
        // Two, to tell "one item" from "several".
        query.push(("$top", "2".to_owned()));
        let url = self.url(&utf8_percent_encode(entity, SEGMENT).to_string(), &query);
        let mut items = self.read(&url, timeout).await.map_err(|e| e.classify(entity, attempt))?;

        let mut document = Map::new();
        let log;
        match items.len() {
            0 if self.not_found == NotFound::Empty => {
                document.insert("item".to_owned(), Value::Object(Map::new()));
                for register in &self.registers {
                    document.insert(register.name.clone(), Value::Array(Vec::new()));
                }
                log = format!("1C: no item where {filter}");
            }
            0 => return Err(OneCError::NotFound { filter }.classify(entity, attempt)),
            1 => {
                let item = items.remove(0);
                let reference = item
                    .get("Ref_Key")
                    .and_then(Value::as_str)
                    .filter(|r| is_guid(r))
                    .ok_or_else(|| {
                        OneCError::Malformed {
                            field: "item's `Ref_Key`".to_owned(),
                            problem: "is missing or not a GUID",
                        }
                        .classify(entity, attempt)
                    })?
                    .to_owned();
                log = match item.get("Description").and_then(Value::as_str) {
                    Some(name) => format!("1C: {name} ({reference})"),
                    None => format!("1C: item {reference}"),
                };
                for register in &self.registers {
                    let url = self.register_url(register, &reference);
                    let span = tracing::debug_span!("register", name = %register.name);
                    let rows = self
                        .read(&url, timeout)
                        .instrument(span)
                        .await
                        .map_err(|e| e.classify(&register.entity, attempt))?;
                    document.insert(register.name.clone(), Value::Array(rows));
                }
                document.insert("item".to_owned(), item);
            }
            _ => return Err(OneCError::Ambiguous { filter }.classify(entity, attempt)),
        }

        let document = Value::Object(document);
        let mut values = self
            .response
            .apply(&document)
            .map_err(|e| OneCError::from(e).classify(entity, attempt))?;
        for (id, flag) in &self.flags {
            let set = match document.pointer(&flag.pointer) {
                None | Some(Value::Null) => false,
                Some(Value::Number(number)) => number.as_f64().is_some_and(|n| n > flag.above),
                Some(_) => {
                    return Err(OneCError::FlagNotNumber {
                        flag: id.clone(),
                        pointer: flag.pointer.clone(),
                    }
                    .classify(entity, attempt));
                }
            };
            values.insert(id.clone(), Value::Bool(set));
        }
        Ok(Outputs { values, log: Some(log) })
    }
}

/// 1C's `{"odata.error": {"code": "…", "message": {"value": "…"}}}`, as (code, message).
fn odata_error(bytes: &[u8]) -> Option<(String, String)> {
    let body: Value = serde_json::from_slice(bytes).ok()?;
    let error = body.get("odata.error")?;
    let code = match error.get("code")? {
        Value::String(code) => code.clone(),
        other => other.to_string(),
    };
    let message = error.pointer("/message/value").and_then(Value::as_str).unwrap_or_default();
    Some((code, message.to_owned()))
}

fn is_guid(text: &str) -> bool {
    text.len() == 36
        && text.char_indices().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) { c == '-' } else { c.is_ascii_hexdigit() }
        })
}

impl OneCConnector {
    fn known_contract(&self) -> Contract {
        let inputs = self.item.filter.values().cloned().collect();
        let mut outputs: std::collections::BTreeSet<String> =
            self.response.properties().map(str::to_owned).collect();
        outputs.extend(self.flags.iter().map(|(id, _)| id.clone()));
        Contract { inputs, outputs }
    }
}

crate::http::impl_http_connector!(OneCConnector, "onec", entity = tracing::field::Empty);

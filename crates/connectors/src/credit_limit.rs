//! The `credit_limit` connector: asks a finance system for a company's credit limit and current
//! debt and decides whether a request for an amount needs manual approval.
//!
//! # Config
//!
//! ```toml
//! [actions.connector]
//! kind = "credit_limit"
//! # Absolute http(s) URL, fetched with GET. It must name the company input; placeholders only
//! # after the host, their values percent-encoded (see `template`).
//! url = "https://finance.example.com/api/v1/companies/{{properties.company_id}}/credit"
//! timeout = "10s"                         # optional; the action's attempt_timeout applies too
//! idempotency_header = "Idempotency-Key"  # default; carries the job id; "" sends none
//!
//! [actions.connector.auth]                # optional; exactly one of:
//! bearer = "…"                            # Authorization: Bearer …
//! # basic = { username = "b24act", password = "…" }
//! # header = { name = "X-Api-Key", value = "…" }
//!
//! [actions.connector.inputs]              # input property ids (defaults shown)
//! company_id = "company_id"
//! amount = "amount"
//!
//! [actions.connector.fields]              # JSON pointers into the answer (defaults shown)
//! credit_limit = "/credit_limit"
//! current_debt = "/current_debt"
//!
//! [actions.connector.rule]                # the decision (defaults shown)
//! share_of_available = 1.0                # approval above this share of the available limit
//! # always_above = 1000000.0              # and always above this amount (default: no such bound)
//!
//! [actions.connector.outputs]             # return property ids (defaults shown)
//! available_limit = "available_limit"
//! approval_required = "approval_required"
//! reason = "reason"
//! ```
//!
//! # What it returns
//!
//! - `available_limit` (double): credit limit − current debt; negative when the debt is over the
//!   limit.
//! - `approval_required` (bool): see [`Rule`].
//! - `reason` (string): why, e.g. `amount 15000.00 exceeds the available limit 8000.00` or
//!   `within the available limit 38000.00`.
//!
//! The limit and the debt may be JSON numbers or numeric strings (`"50000.00"`).
//!
//! # Errors
//!
//! Classified once, in [`CreditLimitError::classify`]:
//!
//! - retryable: no connection, no answer within the timeout, a broken connection, 408, 429 and
//!   5xx (`Retry-After` passed on). The host retries until the action's `retry.max_wait`, then
//!   applies its `on_failure` policy — for this action typically a fallback of
//!   `approval_required = true`, so the request goes to a person instead of hanging;
//! - fatal: 401/403 (`finance API refused the credentials (401)`), 404 (`company 42 is unknown to
//!   the finance system`), another 4xx or 3xx, a 2xx that is not JSON or lacks a number at a
//!   configured pointer (the reason names the field), a call without the company or a number
//!   for the amount.
//!
//! Credentials are never logged or put in reasons; reasons name the endpoint without its query.

use std::fmt;
use std::time::Duration;

use reqwest::header::{ACCEPT, HeaderName, HeaderValue};
use reqwest::{Response, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use url::{Position, Url};

use crate::config::ConfigError;
use crate::connector::{ConnectorError, ConnectorRequest, Contract, Outputs};
use crate::http::error::{StatusPolicy, body_excerpt, decided, retry_after};
use crate::http::{HttpError, WithClient};
use crate::template::{Escape, Placeholder, Template};

/// A credit answer is a few hundred bytes; anything near this is not one.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// How much of an error answer is read for its excerpt.
const MAX_ERROR_BODY_BYTES: usize = 16 << 10;

/// Settings of the `credit_limit` connector; see the [module docs](self). `Debug` redacts the
/// credentials.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreditLimitConfig {
    /// The credit endpoint, fetched with GET; must contain `{{properties.<inputs.company_id>}}`.
    pub url: String,
    /// Per-request timeout; the host's per-attempt timeout applies too, whichever is shorter.
    #[serde(default, deserialize_with = "crate::config::optional_duration")]
    pub timeout: Option<Duration>,
    /// How to authenticate; none by default.
    #[serde(default)]
    pub auth: Option<Auth>,
    /// The header that carries the job id as idempotency key; `""` sends none.
    #[serde(default = "default_idempotency_header")]
    pub idempotency_header: String,
    #[serde(default)]
    pub inputs: Inputs,
    #[serde(default)]
    pub fields: Fields,
    #[serde(default)]
    pub rule: Rule,
    #[serde(default)]
    pub outputs: OutputIds,
}

fn default_idempotency_header() -> String {
    "Idempotency-Key".to_owned()
}

impl CreditLimitConfig {
    /// No auth and the defaults for everything else.
    pub fn new(url: impl Into<String>) -> CreditLimitConfig {
        CreditLimitConfig {
            url: url.into(),
            timeout: None,
            auth: None,
            idempotency_header: default_idempotency_header(),
            inputs: Inputs::default(),
            fields: Fields::default(),
            rule: Rule::default(),
            outputs: OutputIds::default(),
        }
    }
}

impl fmt::Debug for CreditLimitConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreditLimitConfig")
            .field("url", &crate::http::without_query(&self.url))
            .field("timeout", &self.timeout)
            .field("auth", &self.auth)
            .field("idempotency_header", &self.idempotency_header)
            .field("inputs", &self.inputs)
            .field("fields", &self.fields)
            .field("rule", &self.rule)
            .field("outputs", &self.outputs)
            .finish()
    }
}

/// How the connector authenticates to the finance API: `auth = { bearer = "…" }`,
/// `{ basic = { username, password } }` or `{ header = { name, value } }`. `Debug` shows the
/// kind only.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Auth {
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// `Authorization: Basic …`.
    Basic { username: String, password: String },
    /// One header of your choice, e.g. `X-Api-Key`.
    Header { name: String, value: String },
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Auth::Basic { .. } => f.write_str("Basic(<redacted>)"),
            Auth::Header { name, .. } => write!(f, "Header({name}: <redacted>)"),
        }
    }
}

/// The input property ids the connector reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Inputs {
    /// The CRM company id (an integer or a string). Default `company_id`.
    pub company_id: String,
    /// The requested amount (a number). Default `amount`.
    pub amount: String,
}

impl Default for Inputs {
    fn default() -> Self {
        Inputs { company_id: "company_id".to_owned(), amount: "amount".to_owned() }
    }
}

/// Where the limit and the debt are in the answer: JSON pointers (RFC 6901).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Fields {
    /// Default `/credit_limit`.
    pub credit_limit: String,
    /// Default `/current_debt`.
    pub current_debt: String,
}

impl Default for Fields {
    fn default() -> Self {
        Fields {
            credit_limit: "/credit_limit".to_owned(),
            current_debt: "/current_debt".to_owned(),
        }
    }
}

/// The return property ids the connector writes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputIds {
    pub available_limit: String,
    pub approval_required: String,
    pub reason: String,
}

impl Default for OutputIds {
    fn default() -> Self {
        OutputIds {
            available_limit: "available_limit".to_owned(),
            approval_required: "approval_required".to_owned(),
            reason: "reason".to_owned(),
        }
    }
}

/// The decision rule. With `available = credit_limit − current_debt`, approval is required when
///
/// - `amount > share_of_available × available` (while `available > 0`; once the debt reaches the
///   limit, when `amount > available`), or
/// - `amount > always_above`, if set.
///
/// The defaults (`share_of_available = 1`, no `always_above`) give "approval required when the
/// amount exceeds the limit minus the debt". An amount equal to the bound needs no approval.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rule {
    /// Above `0`, at most `1`: `0.8` asks for approval above 80% of the available limit.
    pub share_of_available: f64,
    /// Amounts above this always need approval, whatever the limit.
    pub always_above: Option<f64>,
}

impl Default for Rule {
    fn default() -> Self {
        Rule { share_of_available: 1.0, always_above: None }
    }
}

/// What [`Rule::decide`] concluded.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// `credit_limit − current_debt`.
    pub available_limit: f64,
    pub approval_required: bool,
    /// Human-readable, e.g. `amount 15000.00 exceeds the available limit 8000.00`.
    pub reason: String,
}

impl Rule {
    fn check(&self) -> Result<(), ConfigError> {
        let share = self.share_of_available;
        if !(share > 0.0 && share <= 1.0) {
            return Err(ConfigError::new(
                "rule.share_of_available",
                "must be above 0 and at most 1 (a share of the available limit)",
            ));
        }
        if let Some(bound) = self.always_above
            && !(bound.is_finite() && bound >= 0.0)
        {
            return Err(ConfigError::new("rule.always_above", "must be a number of at least 0"));
        }
        Ok(())
    }

    /// Applies the rule to a requested amount, a credit limit and a current debt.
    pub fn decide(&self, amount: f64, credit_limit: f64, current_debt: f64) -> Decision {
        let available = credit_limit - current_debt;
        let partial = self.share_of_available < 1.0 && available > 0.0;
        let allowed = if partial { available * self.share_of_available } else { available };
        let of_the_limit = if partial {
            format!(
                "{} of the available limit {} ({})",
                percent(self.share_of_available),
                money(available),
                money(allowed)
            )
        } else {
            format!("the available limit {}", money(available))
        };

        let mut over = Vec::new();
        if amount > allowed {
            over.push(format!("amount {} exceeds {of_the_limit}", money(amount)));
        }
        if let Some(bound) = self.always_above
            && amount > bound
        {
            over.push(format!(
                "amount {} is above {}, above which approval is always required",
                money(amount),
                money(bound)
            ));
        }
        let approval_required = !over.is_empty();
        let reason =
            if approval_required { over.join("; ") } else { format!("within {of_the_limit}") };
        Decision { available_limit: available, approval_required, reason }
    }
}

fn money(value: f64) -> String {
    format!("{value:.2}")
}

/// `0.8` → `80%`, `0.125` → `12.5%`.
fn percent(share: f64) -> String {
    let text = format!("{:.2}", share * 100.0);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

/// What goes wrong in one credit check. Messages never contain credentials.
#[derive(Debug, thiserror::Error)]
pub enum CreditLimitError {
    /// The call lacks an input, or it has the wrong type.
    #[error("input `{property}`: {problem}")]
    Input { property: String, problem: String },
    /// Transport, statuses other than those below, a body that is not JSON or too large.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// 401 or 403.
    #[error("finance API refused the credentials ({})", .status.as_u16())]
    Credentials { status: StatusCode },
    /// 404 for the company's URL.
    #[error("company {company} is unknown to the finance system (404{})", body_excerpt(.body))]
    UnknownCompany { company: String, body: String },
    /// A 2xx JSON answer without a number where the config points.
    #[error(
        "the finance API's answer has {found} instead of a number for `{field}` (at `{pointer}`)"
    )]
    Field {
        /// `credit_limit` or `current_debt`.
        field: &'static str,
        pointer: String,
        /// `nothing`, `null`, `the text "n/a"`, `an object`, …
        found: String,
    },
}

impl CreditLimitError {
    /// The one place a credit-check error becomes retryable or fatal (see the
    /// [module docs](self)). Transport and status errors go by the `http` connector's default
    /// rule, with the endpoint in front of the reason; the others read on their own.
    pub fn classify(self, endpoint: &str) -> ConnectorError {
        match &self {
            CreditLimitError::Http(error) => {
                let reason = format!("finance API {endpoint}: {error}");
                decided(reason, StatusPolicy::default().retry_delay(error))
            }
            CreditLimitError::Input { .. }
            | CreditLimitError::Credentials { .. }
            | CreditLimitError::UnknownCompany { .. }
            | CreditLimitError::Field { .. } => ConnectorError::fatal(self.to_string()),
        }
        .with_source(self)
    }
}

/// The `credit_limit` connector, built from a checked [`CreditLimitConfig`]. `Debug` shows the
/// endpoint only.
pub struct CreditLimitConnector {
    client: reqwest::Client,
    url: Template,
    /// `GET url-template-without-query`, for errors before the URL is rendered.
    endpoint_template: String,
    timeout: Option<Duration>,
    auth: Option<Auth>,
    /// Parsed from `auth.header.name`.
    auth_header: Option<HeaderName>,
    idempotency_header: Option<HeaderName>,
    inputs: Inputs,
    fields: Fields,
    rule: Rule,
    outputs: OutputIds,
}

impl fmt::Debug for CreditLimitConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::http::debug_endpoint_only(f, "CreditLimitConnector", &self.endpoint_template)
    }
}

impl WithClient for CreditLimitConnector {
    type Config = CreditLimitConfig;

    fn with_client(config: Self::Config, client: reqwest::Client) -> Result<Self, ConfigError> {
        for (key, id) in [
            ("inputs.company_id", &config.inputs.company_id),
            ("inputs.amount", &config.inputs.amount),
            ("outputs.available_limit", &config.outputs.available_limit),
            ("outputs.approval_required", &config.outputs.approval_required),
            ("outputs.reason", &config.outputs.reason),
        ] {
            if !crate::template::is_property_id(id) {
                return Err(ConfigError::new(
                    key,
                    format!("`{id}` is not a property id (letters, digits and `_`, from a letter)"),
                ));
            }
        }
        if config.inputs.company_id == config.inputs.amount {
            return Err(ConfigError::new("inputs.amount", "is the same property as company_id"));
        }
        let outputs = &config.outputs;
        if outputs.approval_required == outputs.available_limit {
            return Err(ConfigError::new("outputs.approval_required", "is available_limit too"));
        }
        if outputs.reason == outputs.available_limit || outputs.reason == outputs.approval_required
        {
            return Err(ConfigError::new("outputs.reason", "is another output's property too"));
        }

        let url = crate::http::parse_url(&config.url)?;
        let names_company = url.placeholders().any(|p| {
            matches!(p, Placeholder::Property { id, optional: false } if *id == config.inputs.company_id)
        });
        if !names_company {
            return Err(ConfigError::new(
                "url",
                format!(
                    "must contain {{{{properties.{}}}}} (inputs.company_id), so that the finance \
                     system knows which company",
                    config.inputs.company_id
                ),
            ));
        }
        let endpoint_template = format!("GET {}", crate::http::without_query(&config.url));

        for (key, pointer) in [
            ("fields.credit_limit", &config.fields.credit_limit),
            ("fields.current_debt", &config.fields.current_debt),
        ] {
            crate::mapping::check_pointer(pointer).map_err(|problem| {
                ConfigError::new(key, format!("`{pointer}` is not a JSON pointer: {problem}"))
            })?;
        }
        config.rule.check()?;
        crate::http::check_timeout(config.timeout)?;

        let auth_header = match &config.auth {
            Some(Auth::Bearer(token)) => {
                check_secret("auth.bearer", token)?;
                None
            }
            Some(Auth::Basic { username, password }) => {
                check_secret("auth.basic.username", username)?;
                check_secret("auth.basic.password", password)?;
                if username.contains(':') {
                    return Err(ConfigError::new("auth.basic.username", "must not contain `:`"));
                }
                None
            }
            Some(Auth::Header { name, value }) => {
                check_secret("auth.header.value", value)?;
                Some(
                    HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                        ConfigError::new("auth.header.name", "not a valid header name")
                    })?,
                )
            }
            None => None,
        };
        let idempotency_header = crate::http::idempotency_header(&config.idempotency_header)?;

        Ok(CreditLimitConnector {
            client,
            url,
            endpoint_template,
            timeout: config.timeout,
            auth: config.auth,
            auth_header,
            idempotency_header,
            inputs: config.inputs,
            fields: config.fields,
            rule: config.rule,
            outputs: config.outputs,
        })
    }
}

impl CreditLimitConnector {
    /// The company id as text (for reasons) and the amount, from the call.
    fn read_inputs(&self, request: &ConnectorRequest) -> Result<(String, f64), CreditLimitError> {
        let input_error = |property: &str, problem: &str| CreditLimitError::Input {
            property: property.to_owned(),
            problem: problem.to_owned(),
        };
        let company_key = &self.inputs.company_id;
        let company = match request.properties.get(company_key) {
            None | Some(Value::Null) => return Err(input_error(company_key, "the call has none")),
            Some(Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
            Some(_) => {
                return Err(input_error(
                    company_key,
                    "expected one company id (an integer or text)",
                ));
            }
        };
        let amount_key = &self.inputs.amount;
        let amount = match request.properties.get(amount_key) {
            None | Some(Value::Null) => return Err(input_error(amount_key, "the call has none")),
            Some(value) => {
                number(value).ok_or_else(|| input_error(amount_key, "expected a number"))?
            }
        };
        if amount < 0.0 {
            return Err(input_error(amount_key, "must not be negative"));
        }
        Ok((company, amount))
    }

    fn render_url(&self, request: &ConnectorRequest) -> Result<Url, HttpError> {
        let text = self
            .url
            .render(request, Escape::UrlComponent)
            .map_err(|source| HttpError::Render { template: "url".to_owned(), source })?;
        Url::parse(&text).map_err(|source| HttpError::Url { source })
    }

    /// Fetches the limit and the debt.
    async fn fetch(
        &self,
        url: Url,
        company: &str,
        request: &ConnectorRequest,
        timeout: Duration,
    ) -> Result<(f64, f64), CreditLimitError> {
        let mut builder = self
            .client
            .get(url)
            .timeout(timeout)
            .header(ACCEPT, HeaderValue::from_static("application/json"));
        builder = match (&self.auth, &self.auth_header) {
            (Some(Auth::Bearer(token)), _) => builder.bearer_auth(token),
            (Some(Auth::Basic { username, password }), _) => {
                builder.basic_auth(username, Some(password))
            }
            (Some(Auth::Header { value, .. }), Some(name)) => {
                let mut value = HeaderValue::from_str(value)
                    .map_err(|_| HttpError::HeaderValue { name: name.to_string() })?;
                value.set_sensitive(true);
                builder.header(name, value)
            }
            _ => builder,
        };
        if let Some(name) = &self.idempotency_header {
            let value = HeaderValue::from_str(&request.job_id)
                .map_err(|_| HttpError::HeaderValue { name: name.to_string() })?;
            builder = builder.header(name, value);
        }

        let response =
            builder.send().await.map_err(|error| HttpError::from_reqwest(error, timeout))?;
        let status = response.status();
        tracing::debug!(status = status.as_u16(), "answered");
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(CreditLimitError::Credentials { status });
            }
            StatusCode::NOT_FOUND => {
                let body = error_body(response, timeout).await;
                return Err(CreditLimitError::UnknownCompany { company: company.to_owned(), body });
            }
            status if !status.is_success() => {
                let retry_after = retry_after(response.headers());
                let body = error_body(response, timeout).await;
                return Err(HttpError::Status { status, retry_after, body }.into());
            }
            _ => {}
        }
        let content_type = crate::http::content_type(&response);
        let bytes = crate::http::read_limited(response, MAX_RESPONSE_BYTES, timeout).await?;
        let body: Value = serde_json::from_slice(&bytes)
            .map_err(|source| HttpError::InvalidBody { status, content_type, source })?;
        let limit = field(&body, "credit_limit", &self.fields.credit_limit)?;
        let debt = field(&body, "current_debt", &self.fields.current_debt)?;
        Ok((limit, debt))
    }
}

/// The start of an error answer's body, on one line, for the reason. Best effort.
async fn error_body(response: Response, timeout: Duration) -> String {
    match crate::http::read_limited(response, MAX_ERROR_BODY_BYTES, timeout).await {
        Ok(bytes) => crate::http::excerpt_of(&bytes),
        Err(_) => String::new(),
    }
}

fn check_secret(key: &str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() {
        return Err(ConfigError::new(key, "is empty"));
    }
    if value.chars().any(char::is_control) {
        return Err(ConfigError::new(key, "contains a control character"));
    }
    Ok(())
}

/// A finite number, or a string holding one (`"50000.00"`).
fn number(value: &Value) -> Option<f64> {
    let number = match value {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    number.is_finite().then_some(number)
}

/// The number at `pointer`, or an error naming the field and what was there instead.
fn field(body: &Value, name: &'static str, pointer: &str) -> Result<f64, CreditLimitError> {
    let found = body.pointer(pointer);
    if let Some(number) = found.and_then(number) {
        return Ok(number);
    }
    let found = match found {
        None => "nothing".to_owned(),
        Some(Value::Null) => "null".to_owned(),
        Some(Value::Bool(b)) => format!("the boolean {b}"),
        Some(Value::Number(n)) => format!("the number {n}"),
        Some(Value::String(s)) => {
            let mut text: String = s.chars().take(40).collect();
            if s.chars().count() > 40 {
                text.push('…');
            }
            format!("the text {text:?}")
        }
        Some(Value::Array(_)) => "a list".to_owned(),
        Some(Value::Object(_)) => "an object".to_owned(),
    };
    Err(CreditLimitError::Field { field: name, pointer: pointer.to_owned(), found })
}

impl CreditLimitConnector {
    /// One attempt: reads the inputs, asks the finance API and applies the rule.
    async fn attempt(
        &self,
        request: &ConnectorRequest,
        timeout: Duration,
    ) -> Result<Outputs, ConnectorError> {
        let (company, amount) =
            self.read_inputs(request).map_err(|e| e.classify(&self.endpoint_template))?;
        tracing::Span::current().record("company", company.as_str());
        let url = self
            .render_url(request)
            .map_err(|e| CreditLimitError::from(e).classify(&self.endpoint_template))?;
        let endpoint = format!("GET {}", &url[..Position::AfterPath]);
        let (limit, debt) =
            self.fetch(url, &company, request, timeout).await.map_err(|e| e.classify(&endpoint))?;
        let decision = self.rule.decide(amount, limit, debt);
        tracing::debug!(
            limit,
            debt,
            amount,
            approval_required = decision.approval_required,
            "decided"
        );
        let log = format!(
            "Company {company}: credit limit {}, debt {}, amount {}: {}",
            money(limit),
            money(debt),
            money(amount),
            decision.reason
        );
        Ok(Outputs::new()
            .with(&self.outputs.available_limit, decision.available_limit)
            .with(&self.outputs.approval_required, decision.approval_required)
            .with(&self.outputs.reason, decision.reason)
            .with_log(log))
    }

    fn known_contract(&self) -> Contract {
        let mut inputs = crate::http::required_properties(self.url.placeholders());
        inputs.insert(self.inputs.company_id.clone());
        inputs.insert(self.inputs.amount.clone());
        let outputs =
            [&self.outputs.available_limit, &self.outputs.approval_required, &self.outputs.reason]
                .into_iter()
                .cloned()
                .collect();
        Contract { inputs, outputs }
    }
}

crate::http::impl_http_connector!(
    CreditLimitConnector,
    "credit_limit",
    company = tracing::field::Empty,
);

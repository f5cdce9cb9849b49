//! The `telegram` connector: posts a message to a chat through a bot's `sendMessage` (Telegram
//! Bot API), with the text and the chat templated from the call, and returns the message id.
//!
//! # Config
//!
//! ```toml
//! [actions.connector]
//! kind = "telegram"
//! bot_token = "7000000001:AAH…"        # from @BotFather; the host resolves secrets before us
//! chat_id = "-1001234567890"           # an id, "@channel_username", or a template
//! parse_mode = "MarkdownV2"            # or "HTML"; none: plain text
//! text = """
//! *Shipment request {{document.id}}*
//! Company: {{properties.company_name}}
//! Amount: {{properties.amount}} RUB
//! """
//! disable_notification = false          # true: delivered silently
//! disable_link_preview = true
//! timeout = "10s"                       # per request; the host's attempt timeout applies too
//! base_url = "https://api.telegram.org" # the default; a fake or a local Bot API server in tests
//! message_id_property = "message_id"    # the return property that gets the message id
//! too_long = "fail"                     # or "truncate" (plain text only): over 4,096 characters
//! ```
//!
//! # Length
//!
//! Telegram takes at most 4,096 characters of text after its markup is taken out. The rendered
//! message is measured before it is sent ([`visible_length`]): over the limit, the job fails
//! for good with a reason that says by how much (`too_long = "fail"`, the default), or, for
//! plain text, the text is cut to the limit and ends with `…` (`too_long = "truncate"`; cutting
//! marked-up text could break its formatting, so a parse mode refuses it).
//!
//! # A group that became a supergroup
//!
//! Telegram refuses messages to a group upgraded to a supergroup, naming the new chat
//! (`migrate_to_chat_id`). The connector sends the message there once, logs an error that says
//! to change `chat_id`, and says so in the workflow's log line; it does not remember the new id.
//!
//! # Escaping
//!
//! The template's own text is sent as written: its markup is the message's formatting, and it
//! must be valid for the parse mode (in MarkdownV2, literal `.`, `-`, `!`, `(`… are written
//! `\.`, `\-`, `\!`, `\(`; TOML's basic strings need `\\.` for that, or use a literal string
//! `'''…'''`). Values put in by placeholders are escaped for the parse mode
//! ([`Escape::TelegramMarkdownV2`], [`Escape::Html`]), so a user's `snake_case`, `<b>` or
//! `1.5` shows as typed and cannot break the message. Values go in as plain text: do not put a
//! placeholder inside a MarkdownV2 `code` or `pre` block, whose escaping differs.
//!
//! # Errors
//!
//! [`TelegramError`], classified in one place: timeouts, connection failures and 5xx are
//! retryable; 429 is retryable after Telegram's `retry_after`; 401 (the token was refused), 400
//! (`chat not found`, `can't parse entities: …`, `message is too long`), 403 (the bot was removed
//! or blocked) and a chat moved to a supergroup are fatal, with Telegram's description in the
//! reason.
//!
//! The bot token is part of every request's URL, so it is never logged, never put in a reason
//! (transport errors are taken without their URL), and `Debug` shows `<redacted>`.
//!
//! Telegram has no idempotency key: a job that runs again after a crash between Telegram's
//! answer and the host's record can post the message twice.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use url::Url;

use crate::config::ConfigError;
use crate::connector::{ConnectorError, ConnectorRequest, Contract, Outputs};
use crate::http::error::StatusPolicy;
use crate::http::{self, HttpError, WithClient, excerpt_of, required_properties, template_error};
use crate::secret::Secret;
use crate::template::{Escape, RenderError, Template, is_property_id};

/// Bot API answers are small; anything bigger is not one.
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// How Telegram reads the text's markup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ParseMode {
    #[serde(rename = "MarkdownV2")]
    MarkdownV2,
    #[serde(rename = "HTML")]
    Html,
}

impl ParseMode {
    fn as_str(self) -> &'static str {
        match self {
            ParseMode::MarkdownV2 => "MarkdownV2",
            ParseMode::Html => "HTML",
        }
    }

    fn escape(self) -> Escape {
        match self {
            ParseMode::MarkdownV2 => Escape::TelegramMarkdownV2,
            ParseMode::Html => Escape::Html,
        }
    }
}

/// What to do with a message over Telegram's length limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TooLong {
    /// Fail the job for good, naming the length.
    #[default]
    Fail,
    /// Cut plain text to the limit, ending it with `…`.
    Truncate,
}

/// Telegram's limit on a message's text after its markup is taken out.
const MAX_TEXT_LENGTH: usize = 4096;

/// A chat id as written in config: a number, or text (`@username`, or a template).
#[derive(Clone, Deserialize)]
#[serde(untagged)]
pub enum ChatIdSetting {
    Id(i64),
    Text(String),
}

/// Settings of the `telegram` connector; see the [module docs](self). `Debug` redacts the token.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramConfig {
    /// The bot's token, `<bot id>:<secret>`.
    pub bot_token: Secret,
    /// The chat: an id (`-1001234567890`), `@channel_username`, or a template that renders to
    /// either.
    pub chat_id: ChatIdSetting,
    /// The message, a template; values are escaped for `parse_mode`.
    pub text: String,
    /// None: plain text.
    #[serde(default)]
    pub parse_mode: Option<ParseMode>,
    #[serde(default)]
    pub disable_notification: bool,
    #[serde(default)]
    pub disable_link_preview: bool,
    /// A forum topic in a supergroup.
    #[serde(default)]
    pub message_thread_id: Option<i64>,
    /// Default `https://api.telegram.org`.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// Per request; the host's attempt timeout applies too, whichever is shorter.
    #[serde(default, deserialize_with = "crate::config::optional_duration")]
    pub timeout: Option<Duration>,
    /// The return property that gets the message id. Default `message_id`.
    #[serde(default = "default_message_id_property")]
    pub message_id_property: String,
    /// Over 4,096 characters: fail (the default) or, for plain text, truncate.
    #[serde(default)]
    pub too_long: TooLong,
}

fn default_base_url() -> String {
    "https://api.telegram.org".to_owned()
}

fn default_message_id_property() -> String {
    "message_id".to_owned()
}

impl std::fmt::Debug for TelegramConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let chat_id = match &self.chat_id {
            ChatIdSetting::Id(id) => id.to_string(),
            ChatIdSetting::Text(text) => text.clone(),
        };
        f.debug_struct("TelegramConfig")
            .field("bot_token", &self.bot_token)
            .field("chat_id", &chat_id)
            .field("text", &self.text)
            .field("parse_mode", &self.parse_mode)
            .field("disable_notification", &self.disable_notification)
            .field("disable_link_preview", &self.disable_link_preview)
            .field("message_thread_id", &self.message_thread_id)
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .field("message_id_property", &self.message_id_property)
            .field("too_long", &self.too_long)
            .finish()
    }
}

/// The `telegram` connector's own error. Messages never contain the bot token.
#[derive(Debug, thiserror::Error)]
pub enum TelegramError {
    /// The call's values do not fit a template (a property is missing).
    #[error("{template}: {source}")]
    Render {
        /// `text` or `chat_id`.
        template: &'static str,
        #[source]
        source: RenderError,
    },
    /// `chat_id` rendered to nothing.
    #[error("chat_id rendered empty")]
    EmptyChatId,
    /// The rendered text is over Telegram's limit (`too_long = "fail"`).
    #[error(
        "the message is {length} characters after formatting, over Telegram's {MAX_TEXT_LENGTH}: \
         shorten the template or its values{}",
        if *.plain { ", or set too_long = \"truncate\"" } else { "" }
    )]
    TooLong { length: usize, plain: bool },
    /// The exchange failed below the Bot API: timeout, connection, a status without Telegram's
    /// JSON (the front end's HTML error page).
    #[error(transparent)]
    Http(HttpError),
    /// Telegram's own error answer, `{"ok": false, "error_code", "description"}`.
    #[error("Telegram answered {status}: {description}{}", hint(*.migrate_to_chat_id))]
    Api {
        status: StatusCode,
        description: String,
        /// `parameters.retry_after` (or `Retry-After`), on a 429.
        retry_after: Option<Duration>,
        /// `parameters.migrate_to_chat_id`: the group became this supergroup.
        migrate_to_chat_id: Option<i64>,
    },
    /// A 2xx that is not a sent message.
    #[error("the answer is not a sent message: {problem}")]
    Malformed { problem: String },
}

fn hint(migrate_to: Option<i64>) -> String {
    match migrate_to {
        Some(id) => format!(" (the chat is now {id}: set chat_id to it)"),
        None => String::new(),
    }
}

impl From<TelegramError> for ConnectorError {
    fn from(error: TelegramError) -> ConnectorError {
        error.classify()
    }
}

impl TelegramError {
    /// The one place a Telegram failure becomes retryable or fatal; `Telegram sendMessage: `
    /// goes in front of the reason. Failures below the Bot API are classified by the `http`
    /// connector's rule and keep its [`HttpError`] as the source.
    pub fn classify(self) -> ConnectorError {
        const ENDPOINT: &str = "Telegram sendMessage";
        let error = match self {
            // Below the Bot API, the `http` connector's rule decides, and its error stays the source.
            TelegramError::Http(error) => return StatusPolicy::default().classify(ENDPOINT, error),
            other => other,
        };
        let retry = match &error {
            TelegramError::Api { status, retry_after, .. }
                if *status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() =>
            {
                Some(*retry_after)
            }
            _ => None,
        };
        let reason = match &error {
            TelegramError::Api { status, .. } if *status == StatusCode::UNAUTHORIZED => {
                format!("{ENDPOINT}: Telegram refused the bot token ({error})")
            }
            _ => format!("{ENDPOINT}: {error}"),
        };
        crate::http::error::decided(reason, retry).with_source(error)
    }
}

/// The `telegram` connector, built from a checked [`TelegramConfig`]. `Debug` shows the chat
/// template only.
pub struct TelegramConnector {
    client: reqwest::Client,
    /// `…/bot<token>/sendMessage`: holds the token, so never printed.
    send_url: Url,
    token: Secret,
    chat_id: Template,
    text: Template,
    parse_mode: Option<ParseMode>,
    disable_notification: bool,
    disable_link_preview: bool,
    message_thread_id: Option<i64>,
    timeout: Option<Duration>,
    message_id_property: String,
    too_long: TooLong,
}

impl std::fmt::Debug for TelegramConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelegramConnector")
            .field("chat_id", &self.chat_id.render_with("…"))
            .field("parse_mode", &self.parse_mode)
            .finish_non_exhaustive()
    }
}

impl WithClient for TelegramConnector {
    type Config = TelegramConfig;

    fn with_client(config: Self::Config, client: reqwest::Client) -> Result<Self, ConfigError> {
        if !is_bot_token(config.bot_token.expose()) {
            return Err(ConfigError::new(
                "bot_token",
                "not a bot token: expected `<bot id>:<secret>` as @BotFather gives it",
            ));
        }
        let base = crate::config::absolute_url("base_url", config.base_url.trim_end_matches('/'))?;
        if !matches!(base.scheme(), "http" | "https") || base.query().is_some() {
            return Err(ConfigError::new("base_url", "expected an http(s) URL without a query"));
        }
        let send_url = Url::parse(&format!(
            "{}/bot{}/sendMessage",
            base.as_str().trim_end_matches('/'),
            config.bot_token.expose()
        ))
        .map_err(|_| ConfigError::new("base_url", "cannot make the sendMessage URL from it"))?;

        let chat_source = match &config.chat_id {
            ChatIdSetting::Id(id) => id.to_string(),
            ChatIdSetting::Text(text) => text.trim().to_owned(),
        };
        let chat_id = Template::parse(&chat_source).map_err(|e| template_error("chat_id", e))?;
        if chat_source.is_empty() {
            return Err(ConfigError::new("chat_id", "empty"));
        }
        if chat_id.placeholders().next().is_none()
            && chat_source.parse::<i64>().is_err()
            && !chat_source.starts_with('@')
        {
            return Err(ConfigError::new(
                "chat_id",
                "expected a numeric chat id or `@channel_username`",
            ));
        }
        let text = Template::parse(&config.text).map_err(|e| template_error("text", e))?;
        if config.text.trim().is_empty() {
            return Err(ConfigError::new("text", "empty: Telegram refuses empty messages"));
        }
        crate::http::check_timeout(config.timeout)?;
        if config.too_long == TooLong::Truncate && config.parse_mode.is_some() {
            return Err(ConfigError::new(
                "too_long",
                "\"truncate\" works on plain text only (parse_mode unset): cutting marked-up text \
                 could break its formatting",
            ));
        }
        if !is_property_id(&config.message_id_property) {
            return Err(ConfigError::new(
                "message_id_property",
                "not a property id (letters, digits and `_`, starting with a letter)",
            ));
        }
        Ok(TelegramConnector {
            client,
            send_url,
            token: config.bot_token,
            chat_id,
            text,
            parse_mode: config.parse_mode,
            disable_notification: config.disable_notification,
            disable_link_preview: config.disable_link_preview,
            message_thread_id: config.message_thread_id,
            timeout: config.timeout,
            message_id_property: config.message_id_property,
            too_long: config.too_long,
        })
    }
}

impl TelegramConnector {
    /// The `sendMessage` parameters for one call.
    fn message(&self, request: &ConnectorRequest) -> Result<(Value, String), TelegramError> {
        let escape = self.parse_mode.map_or(Escape::Text, ParseMode::escape);
        let text = self
            .text
            .render(request, escape)
            .map_err(|source| TelegramError::Render { template: "text", source })?;
        let length = visible_length(&text, self.parse_mode);
        let text = match (length > MAX_TEXT_LENGTH, self.too_long) {
            (false, _) => text,
            (true, TooLong::Truncate) => truncated(&text),
            (true, TooLong::Fail) => {
                return Err(TelegramError::TooLong { length, plain: self.parse_mode.is_none() });
            }
        };
        let chat = self
            .chat_id
            .render(request, Escape::Text)
            .map_err(|source| TelegramError::Render { template: "chat_id", source })?
            .trim()
            .to_owned();
        if chat.is_empty() {
            return Err(TelegramError::EmptyChatId);
        }
        let mut body = Map::new();
        body.insert(
            "chat_id".into(),
            chat.parse::<i64>().map_or_else(|_| Value::String(chat.clone()), Value::from),
        );
        body.insert("text".into(), text.into());
        if let Some(mode) = self.parse_mode {
            body.insert("parse_mode".into(), mode.as_str().into());
        }
        if self.disable_notification {
            body.insert("disable_notification".into(), true.into());
        }
        if self.disable_link_preview {
            body.insert("link_preview_options".into(), json!({ "is_disabled": true }));
        }
        if let Some(thread) = self.message_thread_id {
            body.insert("message_thread_id".into(), thread.into());
        }
        Ok((Value::Object(body), chat))
    }

    /// One attempt: renders the message and sends it; to the new supergroup, once, when the
    /// chat was a group that has been upgraded.
    async fn attempt(
        &self,
        request: &ConnectorRequest,
        timeout: Duration,
    ) -> Result<Outputs, TelegramError> {
        let (mut body, chat) = self.message(request)?;
        match self.send(&body, timeout).await {
            Err(TelegramError::Api { migrate_to_chat_id: Some(supergroup), .. }) => {
                tracing::error!(
                    chat = %chat,
                    supergroup,
                    "the Telegram group was upgraded to a supergroup: sending there; set the connector's chat_id to {supergroup}"
                );
                body["chat_id"] = supergroup.into();
                let message_id = self.send(&body, timeout).await?;
                Ok(self.sent(message_id, &supergroup.to_string()).with_log(format!(
                    "Telegram message {message_id} sent to chat {supergroup}: chat {chat} became that supergroup; set chat_id to {supergroup}"
                )))
            }
            Err(error) => Err(error),
            Ok(message_id) => Ok(self.sent(message_id, &chat)),
        }
    }

    fn sent(&self, message_id: i64, chat: &str) -> Outputs {
        Outputs::new()
            .with(self.message_id_property.clone(), message_id)
            .with_log(format!("Telegram message {message_id} sent to chat {chat}"))
    }

    /// One `sendMessage`: the sent message's id.
    async fn send(&self, body: &Value, timeout: Duration) -> Result<i64, TelegramError> {
        let request = self.client.post(self.send_url.clone()).json(body).timeout(timeout);
        let http_answer = http::Answer::fetch(request, "Telegram", MAX_ANSWER_BYTES, timeout)
            .await
            .map_err(TelegramError::Http)?;
        let bytes = &http_answer.bytes;
        let answer: Option<Answer> = serde_json::from_slice(bytes).ok();
        if !http_answer.status.is_success() {
            return Err(match answer {
                Some(Answer { ok: false, description, parameters, .. }) => TelegramError::Api {
                    status: http_answer.status,
                    description: self
                        .token
                        .scrub(description.as_deref().unwrap_or("no description"))
                        .into_owned(),
                    retry_after: parameters
                        .as_ref()
                        .and_then(|p| p.retry_after)
                        .map(Duration::from_secs)
                        .or(http_answer.retry_after),
                    migrate_to_chat_id: parameters.and_then(|p| p.migrate_to_chat_id),
                },
                _ => TelegramError::Http(
                    http_answer.status_error(self.token.scrub(&excerpt_of(bytes)).into_owned()),
                ),
            });
        }
        let message_id = match answer {
            Some(Answer { ok: true, result: Some(result), .. }) => result
                .get("message_id")
                .and_then(Value::as_i64)
                .ok_or_else(|| TelegramError::Malformed {
                    problem: "`result.message_id` is missing or not an integer".to_owned(),
                })?,
            Some(_) => {
                return Err(TelegramError::Malformed {
                    problem: "`ok` is not true or `result` is missing".to_owned(),
                });
            }
            None => {
                return Err(TelegramError::Malformed {
                    problem: format!("not JSON: {}", self.token.scrub(&excerpt_of(bytes))),
                });
            }
        };
        Ok(message_id)
    }
}

/// The parts of a Bot API answer the connector reads.
#[derive(Deserialize)]
struct Answer {
    ok: bool,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Parameters>,
}

#[derive(Deserialize)]
struct Parameters {
    #[serde(default)]
    retry_after: Option<u64>,
    #[serde(default)]
    migrate_to_chat_id: Option<i64>,
}

impl TelegramConnector {
    fn known_contract(&self) -> Contract {
        let inputs =
            required_properties(self.text.placeholders().chain(self.chat_id.placeholders()));
        let outputs = BTreeSet::from([self.message_id_property.clone()]);
        Contract { inputs, outputs }
    }
}

crate::http::impl_http_connector!(TelegramConnector, "telegram");

/// The text's length as Telegram counts it for its limit: after the markup is taken out, in
/// UTF-16 code units (INFERRED: the Bot API says "1-4096 characters after entities parsing",
/// and counts entity offsets in UTF-16). HTML tags count nothing and an entity (`&lt;`) one;
/// in MarkdownV2 an escaped character counts one, the markup characters and a link's
/// `(address)` nothing. Telegram's own parser decides; a message it still finds too long is
/// refused with "message is too long", which is fatal too.
fn visible_length(text: &str, mode: Option<ParseMode>) -> usize {
    let mut length = 0;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (mode, c) {
            (None, _) => length += c.len_utf16(),
            (Some(ParseMode::Html), '<') => {
                chars.by_ref().find(|&c| c == '>');
            }
            (Some(ParseMode::Html), '&') => {
                // An entity is `&name;` or `&#digits;`, short; a lone `&` is a character.
                let entity: String = chars.clone().take(10).take_while(|&c| c != ';').collect();
                let closed = chars.clone().nth(entity.chars().count()) == Some(';');
                if closed
                    && !entity.is_empty()
                    && entity.chars().all(|c| c.is_ascii_alphanumeric() || c == '#')
                {
                    chars.nth(entity.chars().count());
                }
                length += 1;
            }
            (Some(ParseMode::MarkdownV2), '\\') => {
                length += chars.next().map_or(0, char::len_utf16);
            }
            (Some(ParseMode::MarkdownV2), '*' | '_' | '~' | '|' | '`' | '[') => {}
            (Some(ParseMode::MarkdownV2), ']') => {
                if chars.peek() == Some(&'(') {
                    chars.by_ref().find(|&c| c == ')');
                }
            }
            _ => length += c.len_utf16(),
        }
    }
    length
}

/// Plain text cut to [`MAX_TEXT_LENGTH`] UTF-16 code units, the last of them `…`.
fn truncated(text: &str) -> String {
    let mut out = String::new();
    let mut length = 0;
    for c in text.chars() {
        if length + c.len_utf16() > MAX_TEXT_LENGTH - 1 {
            break;
        }
        length += c.len_utf16();
        out.push(c);
    }
    out.push('…');
    out
}

/// `<digits>:<letters, digits, _ and ->`, as @BotFather issues them. Checked so that a token
/// cannot change the URL's path or query.
fn is_bot_token(token: &str) -> bool {
    match token.split_once(':') {
        Some((id, secret)) => {
            !id.is_empty()
                && id.bytes().all(|b| b.is_ascii_digit())
                && !secret.is_empty()
                && secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        }
        None => false,
    }
}

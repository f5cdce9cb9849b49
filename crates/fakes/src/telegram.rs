//! A fake of the Telegram Bot API (`https://api.telegram.org`): `sendMessage` and `getMe` for one
//! bot, with MarkdownV2 and HTML parsed as Telegram parses them, its error shapes, and fault
//! injection set at run time.
//!
//! # The API
//!
//! `POST /bot<token>/sendMessage` (also `GET`; parameters in the query string, a JSON body or a
//! form body, method names case-insensitive as on the real API), with `chat_id` (an integer id
//! or `@username`), `text`, optional `parse_mode` (`MarkdownV2`, `HTML`, or the legacy
//! `Markdown`, which this fake treats as plain text), `disable_notification`,
//! `link_preview_options` (an object, or its JSON as a string in a form) and
//! `message_thread_id` (a forum topic of a supergroup: [`Chat::with_topics`]).
//!
//! | case | status | body |
//! |---|---|---|
//! | sent | 200 | `{"ok":true,"result":{"message_id":1,"from":{…},"chat":{"id":…,"type":…},"date":…,"text":"…","entities":[…]}}` |
//! | wrong token | 401 | `{"ok":false,"error_code":401,"description":"Unauthorized"}` |
//! | no such path or method | 404 | `{"ok":false,"error_code":404,"description":"Not Found"}` |
//! | unknown chat | 400 | `{"ok":false,"error_code":400,"description":"Bad Request: chat not found"}` |
//! | a group that became a supergroup ([`Chat::migrated_to`]) | 400 | `… "description":"Bad Request: group chat was upgraded to a supergroup chat","parameters":{"migrate_to_chat_id":-100…}}` |
//! | a topic the chat does not have | 400 | `Bad Request: message thread not found` |
//! | `link_preview_options` not an object | 400 | `Bad Request: can't parse link preview options JSON object` |
//! | broken markup | 400 | `… "description":"Bad Request: can't parse entities: Can't find end of Bold entity at byte offset 6"}` |
//! | empty text / over 4096 characters | 400 | `Bad Request: message text is empty` / `Bad Request: message is too long` |
//! | rate limited | 429 | `{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 3","parameters":{"retry_after":3}}` |
//! | unavailable (502, 503, 504) | that status | nginx's HTML error page, as Telegram's front end sends it |
//!
//! `result.text` is the text with the markup taken out and `entities` say where it was, offsets
//! and lengths in UTF-16 code units, as Telegram reports them. Every accepted message is kept:
//! [`BotApi::sent`] gives the text as sent and as rendered.
//!
//! Faults come from [`Behaviour`]: latency first, then unavailability,
//! the queued failures, the rate limit, and only then the token and the request itself.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::faults::{self, Behaviour, Faults, Served, listen, lock};
use axum::Router;
use axum::extract::{FromRequest, Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// The id of the fake's bot (the token's part before the colon).
pub const BOT_ID: i64 = 7_000_000_001;

/// The token the fake accepts unless [`BotApi::set_token`] says otherwise.
pub const DEFAULT_TOKEN: &str = "7000000001:AAHfakeTokenForB24actTests_0123456789";

/// The chat that exists from the start: a supergroup `@b24act_approvals`.
pub const DEFAULT_CHAT_ID: i64 = -1_001_000_000_001;

/// Telegram's limit on a message's text, after the markup is taken out (UTF-16 code units).
pub const MAX_TEXT_UTF16: usize = 4096;

/// What kind of chat it is, as Telegram's `Chat.type` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatKind {
    Private,
    Group,
    Supergroup,
    Channel,
}

impl ChatKind {
    fn as_str(self) -> &'static str {
        match self {
            ChatKind::Private => "private",
            ChatKind::Group => "group",
            ChatKind::Supergroup => "supergroup",
            ChatKind::Channel => "channel",
        }
    }
}

/// A chat the bot can post to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chat {
    pub id: i64,
    pub kind: ChatKind,
    /// The title of a group or channel, the first name of a user.
    pub title: String,
    /// Without `@`; a chat with one can be addressed as `@username`.
    pub username: Option<String>,
    /// The supergroup this group was upgraded to: messages to the old id are refused with
    /// `migrate_to_chat_id`.
    pub migrated_to: Option<i64>,
    /// The forum topics of a supergroup (`message_thread_id`s).
    pub topics: Vec<i64>,
}

impl Chat {
    pub fn new(id: i64, kind: ChatKind, title: impl Into<String>) -> Chat {
        Chat {
            id,
            kind,
            title: title.into(),
            username: None,
            migrated_to: None,
            topics: Vec::new(),
        }
    }

    /// A group that was upgraded to the supergroup `id` (which must exist too to be written to).
    pub fn migrated_to(mut self, id: i64) -> Chat {
        self.migrated_to = Some(id);
        self
    }

    /// A forum supergroup with these topics.
    pub fn with_topics(mut self, topics: impl IntoIterator<Item = i64>) -> Chat {
        self.topics = topics.into_iter().collect();
        self
    }

    pub fn with_username(mut self, username: impl Into<String>) -> Chat {
        self.username = Some(username.into());
        self
    }

    fn to_json(&self) -> Value {
        let mut chat = Map::new();
        chat.insert("id".into(), self.id.into());
        match self.kind {
            ChatKind::Private => chat.insert("first_name".into(), self.title.clone().into()),
            _ => chat.insert("title".into(), self.title.clone().into()),
        };
        if let Some(username) = &self.username {
            chat.insert("username".into(), username.clone().into());
        }
        chat.insert("type".into(), self.kind.as_str().into());
        Value::Object(chat)
    }
}

/// One entity of a sent message, as Telegram reports it (offsets in UTF-16 code units).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entity {
    /// `bold`, `italic`, `underline`, `strikethrough`, `spoiler`, `code`, `pre`, `text_link`,
    /// `blockquote`.
    pub kind: &'static str,
    pub offset: usize,
    pub length: usize,
    /// The link of a `text_link`.
    pub url: Option<String>,
}

/// A message the fake accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    pub chat_id: i64,
    pub message_id: i64,
    /// `text` exactly as sent, markup and escapes included.
    pub raw_text: String,
    /// The text as the chat shows it: markup taken out, escapes resolved.
    pub text: String,
    pub parse_mode: Option<String>,
    pub entities: Vec<Entity>,
    pub disable_notification: bool,
    /// `link_preview_options.is_disabled`.
    pub link_preview_disabled: bool,
    pub message_thread_id: Option<i64>,
}

/// A running fake Bot API (on 127.0.0.1 unless started elsewhere); stops when dropped.
#[derive(Debug)]
pub struct BotApi {
    server: Served<BotState>,
}

struct BotState {
    faults: Arc<Faults>,
    token: Mutex<String>,
    chats: Mutex<BTreeMap<i64, Chat>>,
    /// Message ids count per chat, as on Telegram.
    next_message_id: Mutex<BTreeMap<i64, i64>>,
    sent: Mutex<Vec<SentMessage>>,
}

impl BotApi {
    /// Starts on 127.0.0.1 on a free port, accepting [`DEFAULT_TOKEN`], with one chat
    /// ([`DEFAULT_CHAT_ID`], `@b24act_approvals`).
    pub async fn start() -> std::io::Result<BotApi> {
        BotApi::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// As [`start`](BotApi::start), on this address (`b24act fake telegram --listen`).
    pub async fn start_on(address: SocketAddr) -> std::io::Result<BotApi> {
        let (listener, addr) = listen(address).await?;
        let chat = Chat::new(DEFAULT_CHAT_ID, ChatKind::Supergroup, "Approvals")
            .with_username("b24act_approvals");
        let state = Arc::new(BotState {
            faults: Arc::new(Faults::new()),
            token: Mutex::new(DEFAULT_TOKEN.to_owned()),
            chats: Mutex::new(BTreeMap::from([(chat.id, chat)])),
            next_message_id: Mutex::new(BTreeMap::new()),
            sent: Mutex::new(Vec::new()),
        });
        let router = Router::new().fallback(handle).with_state(state.clone());
        let server = Served::new(addr, state);
        server.spawn_with_faults("telegram", listener, addr, router, server.state.faults.clone());
        tracing::debug!(%addr, "fake Telegram Bot API started");
        Ok(BotApi { server })
    }

    /// `http://127.0.0.1:PORT`, the connector's `base_url` (the real one is
    /// `https://api.telegram.org`).
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// The token the fake accepts now.
    pub fn token(&self) -> String {
        lock(&self.server.state.token).clone()
    }

    /// Accepts this token from now on (as if the bot's token had been revoked and reissued).
    pub fn set_token(&self, token: impl Into<String>) {
        *lock(&self.server.state.token) = token.into();
    }

    /// Adds or replaces a chat.
    pub fn add_chat(&self, chat: Chat) {
        lock(&self.server.state.chats).insert(chat.id, chat);
    }

    /// Replaces the behaviour; returns once the port matches it (closed while refusing).
    pub async fn set(&self, behaviour: Behaviour) {
        self.server.state.faults.update(|b| *b = behaviour).await;
    }

    /// Changes the behaviour in place, e.g. `bot.update(|b| b.down = None).await`.
    pub async fn update(&self, change: impl FnOnce(&mut Behaviour)) {
        self.server.state.faults.update(change).await;
    }

    /// The behaviour now (`fail_next` shrinks as requests arrive).
    pub fn behaviour(&self) -> Behaviour {
        self.server.state.faults.behaviour()
    }

    /// Every message accepted so far, oldest first.
    pub fn sent(&self) -> Vec<SentMessage> {
        lock(&self.server.state.sent).clone()
    }

    /// Requests received so far, whatever their answer (refused connections do not count).
    pub fn requests(&self) -> u64 {
        self.server.state.faults.requests()
    }
}

/// A Bot API error: the status, and the description Telegram gives.
struct ApiError {
    code: u16,
    description: String,
    /// `parameters`: `retry_after` on a 429, `migrate_to_chat_id` for an upgraded group.
    parameters: Option<Value>,
}

impl ApiError {
    fn new(code: u16, description: impl Into<String>) -> ApiError {
        ApiError { code, description: description.into(), parameters: None }
    }

    fn bad_request(what: impl std::fmt::Display) -> ApiError {
        ApiError::new(400, format!("Bad Request: {what}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({
            "ok": false, "error_code": self.code, "description": self.description,
        });
        if let Some(parameters) = self.parameters {
            body["parameters"] = parameters;
        }
        let status = StatusCode::from_u16(self.code).unwrap_or(StatusCode::BAD_REQUEST);
        (status, axum::Json(body)).into_response()
    }
}

fn failure(status: u16, retry_after: Option<std::time::Duration>) -> Response {
    match status {
        429 => rate_limited(retry_after.unwrap_or(std::time::Duration::from_secs(1))),
        500..=599 => {
            let mut page = nginx_page(status);
            faults::set_retry_after(&mut page, retry_after);
            page
        }
        401 => ApiError::new(401, "Unauthorized").into_response(),
        403 => ApiError::new(403, "Forbidden: bot was blocked by the user").into_response(),
        404 => ApiError::new(404, "Not Found").into_response(),
        409 => {
            ApiError::new(409, "Conflict: terminated by other getUpdates request").into_response()
        }
        other => ApiError::new(other, "Bad Request").into_response(),
    }
}

fn rate_limited(after: std::time::Duration) -> Response {
    let seconds = faults::whole_seconds(after);
    ApiError {
        code: 429,
        description: format!("Too Many Requests: retry after {seconds}"),
        parameters: Some(json!({ "retry_after": seconds })),
    }
    .into_response()
}

/// What Telegram's nginx front end answers while the Bot API behind it is down.
fn nginx_page(status: u16) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let title = format!("{} {}", code.as_str(), code.canonical_reason().unwrap_or("Error"));
    let page = format!(
        "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n<hr><center>nginx/1.18.0</center>\r\n</body>\r\n</html>\r\n"
    );
    (code, [(header::CONTENT_TYPE, "text/html")], page).into_response()
}

async fn handle(State(state): State<Arc<BotState>>, request: Request) -> Response {
    if let Err(answer) = state.faults.admit(failure).await {
        return answer;
    }
    let path = request.uri().path().to_owned();
    let Some((token, method)) = path.strip_prefix("/bot").and_then(|rest| rest.split_once('/'))
    else {
        return ApiError::new(404, "Not Found").into_response();
    };
    if token != *lock(&state.token) {
        return ApiError::new(401, "Unauthorized").into_response();
    }
    let method = method.to_ascii_lowercase();
    if !matches!(request.method(), &Method::GET | &Method::POST) {
        return ApiError::new(404, "Not Found").into_response();
    }
    let params = match parameters(request).await {
        Ok(params) => params,
        Err(error) => return error.into_response(),
    };
    let answer = match method.as_str() {
        "getme" => Ok(json!({
            "id": BOT_ID, "is_bot": true, "first_name": "b24act", "username": "b24act_bot",
            "can_join_groups": true, "can_read_all_group_messages": false,
            "supports_inline_queries": false,
        })),
        "sendmessage" => send_message(&state, &params),
        _ => Err(ApiError::new(404, "Not Found")),
    };
    match answer {
        Ok(result) => axum::Json(json!({ "ok": true, "result": result })).into_response(),
        Err(error) => error.into_response(),
    }
}

/// The query string merged with a JSON or form body, values as JSON.
async fn parameters(request: Request) -> Result<Map<String, Value>, ApiError> {
    let mut params = Map::new();
    if let Ok(Query(query)) = Query::<BTreeMap<String, String>>::try_from_uri(request.uri()) {
        params.extend(query.into_iter().map(|(k, v)| (k, Value::String(v))));
    }
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("application/json") {
        let axum::Json(body) = axum::Json::<Value>::from_request(request, &())
            .await
            .map_err(|_| ApiError::bad_request("can't parse JSON object"))?;
        match body {
            Value::Object(body) => params.extend(body),
            _ => return Err(ApiError::bad_request("can't parse JSON object")),
        }
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        let axum::Form(body) = axum::Form::<BTreeMap<String, String>>::from_request(request, &())
            .await
            .map_err(|_| ApiError::bad_request("can't parse request body"))?;
        params.extend(body.into_iter().map(|(k, v)| (k, Value::String(v))));
    }
    Ok(params)
}

fn send_message(state: &BotState, params: &Map<String, Value>) -> Result<Value, ApiError> {
    let chat = match params.get("chat_id") {
        None | Some(Value::Null) => return Err(ApiError::bad_request("chat_id is empty")),
        Some(Value::String(s)) if s.is_empty() => {
            return Err(ApiError::bad_request("chat_id is empty"));
        }
        Some(id) => find_chat(state, id).ok_or_else(|| ApiError::bad_request("chat not found"))?,
    };
    if let Some(supergroup) = chat.migrated_to {
        let mut error = ApiError::bad_request("group chat was upgraded to a supergroup chat");
        error.parameters = Some(json!({ "migrate_to_chat_id": supergroup }));
        return Err(error);
    }
    let message_thread_id = match params.get("message_thread_id") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
        Some(_) => None,
    };
    if let Some(thread) = message_thread_id
        && !chat.topics.contains(&thread)
    {
        return Err(ApiError::bad_request("message thread not found"));
    }
    let link_preview_disabled = match params.get("link_preview_options") {
        None | Some(Value::Null) => false,
        Some(options) => {
            let options = match options {
                // A form or query carries the object as JSON text.
                Value::String(text) => serde_json::from_str::<Value>(text).ok(),
                other => Some(other.clone()),
            };
            match options {
                Some(Value::Object(options)) => match options.get("is_disabled") {
                    Some(Value::Bool(disabled)) => *disabled,
                    _ => false,
                },
                _ => {
                    return Err(ApiError::bad_request(
                        "can't parse link preview options JSON object",
                    ));
                }
            }
        }
    };
    let raw_text = match params.get("text") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(ApiError::bad_request("message text is empty")),
    };
    let parse_mode = match params.get("parse_mode") {
        None | Some(Value::Null) => None,
        Some(Value::String(mode)) if mode.is_empty() => None,
        Some(Value::String(mode)) => Some(mode.clone()),
        Some(_) => return Err(ApiError::bad_request("unsupported parse_mode")),
    };
    let parsed = match parse_mode.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("markdown") => Ok(Parsed::plain(&raw_text)),
        Some("markdownv2") => parse_markdown_v2(&raw_text),
        Some("html") => parse_html(&raw_text),
        Some(_) => return Err(ApiError::bad_request("unsupported parse_mode")),
    }
    .map_err(|problem| ApiError::bad_request(format!("can't parse entities: {problem}")))?;
    if parsed.text.trim().is_empty() {
        return Err(ApiError::bad_request("message text is empty"));
    }
    if parsed.text.encode_utf16().count() > MAX_TEXT_UTF16 {
        return Err(ApiError::bad_request("message is too long"));
    }
    let disable_notification = match params.get("disable_notification") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true" || s == "1",
        _ => false,
    };

    let message_id = {
        let mut ids = lock(&state.next_message_id);
        let next = ids.entry(chat.id).or_insert(1);
        let id = *next;
        *next += 1;
        id
    };
    let date = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut result = Map::new();
    result.insert("message_id".into(), message_id.into());
    if chat.kind == ChatKind::Channel {
        result.insert("sender_chat".into(), chat.to_json());
    } else {
        result.insert(
            "from".into(),
            json!({ "id": BOT_ID, "is_bot": true, "first_name": "b24act", "username": "b24act_bot" }),
        );
    }
    result.insert("chat".into(), chat.to_json());
    result.insert("date".into(), date.into());
    if let Some(thread) = message_thread_id {
        result.insert("message_thread_id".into(), thread.into());
        result.insert("is_topic_message".into(), true.into());
    }
    result.insert("text".into(), parsed.text.clone().into());
    if !parsed.entities.is_empty() {
        let entities = parsed
            .entities
            .iter()
            .map(|e| {
                let mut entity = json!({ "offset": e.offset, "length": e.length, "type": e.kind });
                if let Some(url) = &e.url {
                    entity["url"] = url.clone().into();
                }
                entity
            })
            .collect::<Vec<_>>();
        result.insert("entities".into(), entities.into());
    }
    lock(&state.sent).push(SentMessage {
        chat_id: chat.id,
        message_id,
        raw_text,
        text: parsed.text,
        parse_mode,
        entities: parsed.entities,
        disable_notification,
        link_preview_disabled,
        message_thread_id,
    });
    Ok(Value::Object(result))
}

fn find_chat(state: &BotState, id: &Value) -> Option<Chat> {
    let chats = lock(&state.chats);
    let numeric = match id {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    match (numeric, id) {
        (Some(numeric), _) => chats.get(&numeric).cloned(),
        (None, Value::String(s)) => {
            let name = s.strip_prefix('@')?;
            chats.values().find(|c| c.username.as_deref() == Some(name)).cloned()
        }
        _ => None,
    }
}

/// A text with its markup taken out.
#[derive(Debug, Default)]
struct Parsed {
    text: String,
    /// The text's length so far in UTF-16 code units.
    utf16: usize,
    entities: Vec<Entity>,
}

impl Parsed {
    fn plain(text: &str) -> Parsed {
        let mut parsed = Parsed::default();
        parsed.push_str(text);
        parsed
    }

    fn push(&mut self, c: char) {
        self.text.push(c);
        self.utf16 += c.len_utf16();
    }

    fn push_str(&mut self, s: &str) {
        s.chars().for_each(|c| self.push(c));
    }

    fn close(&mut self, kind: &'static str, start: usize, url: Option<String>) {
        if self.utf16 > start {
            self.entities.push(Entity { kind, offset: start, length: self.utf16 - start, url });
        }
    }

    fn finish(mut self) -> Parsed {
        self.entities.sort_by_key(|e| (e.offset, std::cmp::Reverse(e.length)));
        self
    }
}

/// An entity opened and not yet closed: its kind, where its text starts, where its markup was.
struct Open {
    kind: Markup,
    start: usize,
    at: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Markup {
    Bold,
    Italic,
    Underline,
    Strikethrough,
    Spoiler,
    Code,
    Pre,
    TextUrl,
}

impl Markup {
    /// The name in Telegram's error messages.
    fn name(self) -> &'static str {
        match self {
            Markup::Bold => "Bold",
            Markup::Italic => "Italic",
            Markup::Underline => "Underline",
            Markup::Strikethrough => "Strikethrough",
            Markup::Spoiler => "Spoiler",
            Markup::Code => "Code",
            Markup::Pre => "Pre",
            Markup::TextUrl => "TextUrl",
        }
    }

    /// The `type` in the message's entities.
    fn kind(self) -> &'static str {
        match self {
            Markup::Bold => "bold",
            Markup::Italic => "italic",
            Markup::Underline => "underline",
            Markup::Strikethrough => "strikethrough",
            Markup::Spoiler => "spoiler",
            Markup::Code => "code",
            Markup::Pre => "pre",
            Markup::TextUrl => "text_link",
        }
    }
}

/// Characters MarkdownV2 reserves: outside an entity's markup each must be escaped with `\`.
const MARKDOWN_V2_RESERVED: &str = "_*[]()~`>#+-=|{}.!";

fn reserved(c: char) -> String {
    format!("Character '{c}' is reserved and must be escaped with the preceding '\\'")
}

/// Parses MarkdownV2 as the Bot API does (the subset connectors produce, strictly): reserved
/// characters must be escaped, entities must be closed and nested properly.
fn parse_markdown_v2(source: &str) -> Result<Parsed, String> {
    let mut out = Parsed::default();
    let mut stack: Vec<Open> = Vec::new();
    let mut chars = source.char_indices().peekable();
    let mut line_start = true;
    let mut quote: Option<usize> = None;
    while let Some((at, c)) = chars.next() {
        let in_code = matches!(stack.last(), Some(Open { kind: Markup::Code | Markup::Pre, .. }));
        let starts_line = line_start;
        line_start = c == '\n';
        if c == '\\' {
            match chars.next() {
                Some((_, escaped)) if (1..=126).contains(&u32::from(escaped)) => out.push(escaped),
                _ => return Err(reserved('\\')),
            }
            continue;
        }
        if in_code {
            let closes = match stack.last().map(|o| o.kind) {
                Some(Markup::Pre) => c == '`' && source[at..].starts_with("```"),
                _ => c == '`',
            };
            if closes {
                let open = stack.pop().ok_or_else(|| reserved(c))?;
                if open.kind == Markup::Pre {
                    chars.next();
                    chars.next();
                }
                out.close(open.kind.kind(), open.start, None);
            } else {
                out.push(c);
            }
            continue;
        }
        if c == '\n' {
            if let Some(start) = quote.take() {
                out.close("blockquote", start, None);
            }
            out.push(c);
            continue;
        }
        let toggle = match c {
            '*' => Some(Markup::Bold),
            '_' if chars.peek().is_some_and(|(_, next)| *next == '_') => {
                chars.next();
                Some(Markup::Underline)
            }
            '_' => Some(Markup::Italic),
            '~' => Some(Markup::Strikethrough),
            '|' if chars.peek().is_some_and(|(_, next)| *next == '|') => {
                chars.next();
                Some(Markup::Spoiler)
            }
            '`' if source[at..].starts_with("```") => {
                chars.next();
                chars.next();
                // The rest of the opening line names the language.
                while chars.peek().is_some_and(|(_, next)| *next != '\n') {
                    chars.next();
                }
                chars.next();
                stack.push(Open { kind: Markup::Pre, start: out.utf16, at });
                continue;
            }
            '`' => {
                stack.push(Open { kind: Markup::Code, start: out.utf16, at });
                continue;
            }
            '[' => {
                stack.push(Open { kind: Markup::TextUrl, start: out.utf16, at });
                continue;
            }
            ']' => {
                if !matches!(stack.last(), Some(Open { kind: Markup::TextUrl, .. })) {
                    return Err(reserved(c));
                }
                let open = stack.pop().ok_or_else(|| reserved(c))?;
                if chars.next().map(|(_, next)| next) != Some('(') {
                    return Err(format!(
                        "Can't find end of a URL for TextUrl entity at byte offset {}",
                        open.at
                    ));
                }
                let mut url = String::new();
                loop {
                    match chars.next() {
                        Some((_, ')')) => break,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, escaped)) => url.push(escaped),
                            None => return Err(reserved('\\')),
                        },
                        Some((_, other)) => url.push(other),
                        None => {
                            return Err(format!(
                                "Can't find end of a URL for TextUrl entity at byte offset {}",
                                open.at
                            ));
                        }
                    }
                }
                out.close(Markup::TextUrl.kind(), open.start, Some(url));
                continue;
            }
            '>' if starts_line => {
                quote = Some(out.utf16);
                continue;
            }
            c if MARKDOWN_V2_RESERVED.contains(c) => return Err(reserved(c)),
            _ => None,
        };
        match toggle {
            Some(kind) => match stack.iter().rposition(|o| o.kind == kind) {
                Some(index) if index + 1 == stack.len() => {
                    let open = stack.pop().ok_or_else(|| reserved(c))?;
                    out.close(kind.kind(), open.start, None);
                }
                Some(_) => {
                    let top = stack.last().ok_or_else(|| reserved(c))?;
                    return Err(format!(
                        "Can't find end of {} entity at byte offset {}",
                        top.kind.name(),
                        top.at
                    ));
                }
                None => stack.push(Open { kind, start: out.utf16, at }),
            },
            None => out.push(c),
        }
    }
    if let Some(open) = stack.last() {
        return Err(format!(
            "Can't find end of {} entity at byte offset {}",
            open.kind.name(),
            open.at
        ));
    }
    if let Some(start) = quote {
        out.close("blockquote", start, None);
    }
    Ok(out.finish())
}

/// Parses Telegram's HTML: the supported tags only, properly nested; `&lt;`, `&gt;`, `&amp;`,
/// `&quot;` and numeric character references; an `&` that starts none of those is kept as is.
fn parse_html(source: &str) -> Result<Parsed, String> {
    let mut out = Parsed::default();
    // Tag name, the entity's kind, where its text starts, its URL.
    let mut stack: Vec<(String, &'static str, usize, Option<String>)> = Vec::new();
    let mut rest = source;
    let mut at = 0;
    while let Some(c) = rest.chars().next() {
        match c {
            '<' => {
                let end = rest
                    .find('>')
                    .ok_or_else(|| format!("Unclosed start tag at byte offset {at}"))?;
                let tag = &rest[1..end];
                if let Some(name) = tag.strip_prefix('/') {
                    let name = name.trim().to_ascii_lowercase();
                    match stack.pop() {
                        Some((open, kind, start, url)) if open == name => {
                            out.close(kind, start, url);
                        }
                        Some((open, ..)) => {
                            return Err(format!(
                                "Unmatched end tag at byte offset {at}, expected \"</{open}>\", found \"</{name}>\""
                            ));
                        }
                        None => return Err(format!("Unexpected end tag at byte offset {at}")),
                    }
                } else {
                    let name = tag
                        .split(|c: char| c.is_whitespace())
                        .next()
                        .unwrap_or("")
                        .to_ascii_lowercase();
                    let attributes = tag[name.len()..].trim();
                    let (kind, url) = match name.as_str() {
                        "b" | "strong" => ("bold", None),
                        "i" | "em" => ("italic", None),
                        "u" | "ins" => ("underline", None),
                        "s" | "strike" | "del" => ("strikethrough", None),
                        "tg-spoiler" => ("spoiler", None),
                        "span" if attributes.contains("tg-spoiler") => ("spoiler", None),
                        "code" => ("code", None),
                        "pre" => ("pre", None),
                        "blockquote" => ("blockquote", None),
                        "a" => {
                            ("text_link", Some(attribute(attributes, "href").unwrap_or_default()))
                        }
                        _ => {
                            return Err(format!(
                                "Unsupported start tag \"{name}\" at byte offset {at}"
                            ));
                        }
                    };
                    stack.push((name, kind, out.utf16, url));
                }
                at += end + 1;
                rest = &rest[end + 1..];
            }
            '&' => {
                let (decoded, used) = html_entity(rest).unwrap_or(('&', 1));
                out.push(decoded);
                at += used;
                rest = &rest[used..];
            }
            c => {
                out.push(c);
                at += c.len_utf8();
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    if let Some((name, ..)) = stack.last() {
        return Err(format!("Can't find end tag corresponding to start tag \"{name}\""));
    }
    Ok(out.finish())
}

/// `name="value"` (or single quotes) in a tag's attributes, entities decoded.
fn attribute(attributes: &str, name: &str) -> Option<String> {
    let start = attributes.find(&format!("{name}="))? + name.len() + 1;
    let rest = &attributes[start..];
    let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let value = &rest[1..];
    let end = value.find(quote)?;
    let mut decoded = String::new();
    let mut raw = &value[..end];
    while let Some(c) = raw.chars().next() {
        let (c, used) =
            if c == '&' { html_entity(raw).unwrap_or(('&', 1)) } else { (c, c.len_utf8()) };
        decoded.push(c);
        raw = &raw[used..];
    }
    Some(decoded)
}

/// The character an HTML entity at the start of `text` stands for, and its length in bytes.
fn html_entity(text: &str) -> Option<(char, usize)> {
    let end = text.get(..12).unwrap_or(text).find(';')?;
    let name = &text[1..end];
    let decoded = match name {
        "lt" => '<',
        "gt" => '>',
        "amp" => '&',
        "quot" => '"',
        _ => {
            let number = name.strip_prefix('#')?;
            let code = match number.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => number.parse().ok()?,
            };
            char::from_u32(code)?
        }
    };
    Some((decoded, end + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_v2_escapes_resolve_and_entities_count_utf16() {
        let parsed = parse_markdown_v2("*Сделка* 😀 \\_x\\_ _it_").unwrap();
        assert_eq!(parsed.text, "Сделка 😀 _x_ it");
        assert_eq!(parsed.entities[0], Entity { kind: "bold", offset: 0, length: 6, url: None });
        // The emoji is two UTF-16 units.
        assert_eq!(parsed.entities[1].offset, 14);
    }

    #[test]
    fn markup_errors_say_what_telegram_says() {
        let markdown_v2: fn(&str) -> _ = parse_markdown_v2;
        let html: fn(&str) -> _ = parse_html;
        for (parse, text, error) in [
            (
                markdown_v2,
                "total 1.5",
                "Character '.' is reserved and must be escaped with the preceding '\\'",
            ),
            (markdown_v2, "Deal *snake_case", "Can't find end of Italic entity at byte offset 11"),
            (html, "x <foo> y", "Unsupported start tag \"foo\" at byte offset 2"),
            (html, "<b>x", "Can't find end tag corresponding to start tag \"b\""),
        ] {
            assert_eq!(parse(text).unwrap_err(), error, "{text}");
        }
    }

    #[test]
    fn markdown_v2_links_and_code() {
        let parsed = parse_markdown_v2("[deal](https://b24.example/crm/deal/7/) `a_b*c`").unwrap();
        assert_eq!(parsed.text, "deal a_b*c");
        assert_eq!(parsed.entities[0].url.as_deref(), Some("https://b24.example/crm/deal/7/"));
        assert_eq!(parsed.entities[1].kind, "code");
    }

    #[test]
    fn html_tags_and_entities() {
        let parsed =
            parse_html("<b>A &lt;b&gt; &amp; B</b> <a href=\"https://x/?a=1&amp;b=2\">l</a>")
                .unwrap();
        assert_eq!(parsed.text, "A <b> & B l");
        assert_eq!(parsed.entities[1].url.as_deref(), Some("https://x/?a=1&b=2"));
    }
}

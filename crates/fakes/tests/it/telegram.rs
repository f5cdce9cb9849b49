//! The fake Telegram Bot API: `sendMessage` in Telegram's shapes, its errors, markup parsing, and
//! each fault as documented.

use std::time::{Duration, Instant};

use fakes::faults::{Behaviour, Down, Failure, RateLimit};
use fakes::telegram::{BotApi, Chat, ChatKind, DEFAULT_CHAT_ID, DEFAULT_TOKEN};
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};

use crate::support::{answer, assert_refused, client, json_body};

async fn start() -> BotApi {
    BotApi::start().await.expect("the fake starts")
}

/// `POST /bot<token>/<method>`, to be sent.
fn bot_method(bot: &BotApi, token: &str, method: &str) -> reqwest::RequestBuilder {
    client().post(format!("{}/bot{token}/{method}", bot.url()))
}

/// `POST /bot<token>/sendMessage` with a JSON body; the status and the JSON answer.
async fn send(bot: &BotApi, token: &str, body: Value) -> (StatusCode, Value) {
    let response = answer(bot_method(bot, token, "sendMessage").json(&body)).await;
    let status = response.status();
    let text = response.text().await.expect("a body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[tokio::test]
async fn send_message_answers_the_message_with_markup_taken_out() {
    let bot = start().await;
    let (status, body) = send(
        &bot,
        DEFAULT_TOKEN,
        json!({ "chat_id": DEFAULT_CHAT_ID, "text": "*Deal* DEAL\\_7 approved", "parse_mode": "MarkdownV2" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ok"], true);
    let result = &body["result"];
    assert_eq!(result["message_id"], 1);
    assert_eq!(result["chat"]["id"], DEFAULT_CHAT_ID);
    assert_eq!(result["chat"]["type"], "supergroup");
    assert_eq!(result["text"], "Deal DEAL_7 approved");
    assert_eq!(result["entities"], json!([{ "offset": 0, "length": 4, "type": "bold" }]));
    assert!(result["date"].as_u64().is_some_and(|d| d > 1_600_000_000));
    assert_eq!(result["from"]["is_bot"], true);

    let sent = bot.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].raw_text, "*Deal* DEAL\\_7 approved");
    assert_eq!(sent[0].text, "Deal DEAL_7 approved");
    assert_eq!(sent[0].parse_mode.as_deref(), Some("MarkdownV2"));

    let (_, second) =
        send(&bot, DEFAULT_TOKEN, json!({ "chat_id": DEFAULT_CHAT_ID, "text": "again" })).await;
    assert_eq!(second["result"]["message_id"], 2, "message ids count up per chat");
}

#[tokio::test]
async fn a_form_body_and_a_username_work_too() {
    let bot = start().await;
    let request = bot_method(&bot, DEFAULT_TOKEN, "SENDMESSAGE")
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body("chat_id=%40b24act_approvals&text=%3Cb%3EA%20%26amp%3B%20B%3C%2Fb%3E&parse_mode=HTML&disable_notification=true");
    let response = answer(request).await;
    let body = json_body(response, StatusCode::OK).await;
    assert_eq!(body["result"]["text"], "A & B");
    let sent = bot.sent();
    assert!(sent[0].disable_notification);
    assert_eq!(sent[0].chat_id, DEFAULT_CHAT_ID);
}

#[tokio::test]
async fn channels_and_private_chats_are_shaped_as_on_telegram() {
    let bot = start().await;
    bot.add_chat(Chat::new(-1_002_000_000_002, ChatKind::Channel, "News").with_username("news"));
    bot.add_chat(Chat::new(42, ChatKind::Private, "Olga"));
    let (_, channel) = send(&bot, DEFAULT_TOKEN, json!({ "chat_id": "@news", "text": "x" })).await;
    assert_eq!(channel["result"]["sender_chat"]["title"], "News");
    assert!(channel["result"].get("from").is_none());
    let (_, private) = send(&bot, DEFAULT_TOKEN, json!({ "chat_id": "42", "text": "x" })).await;
    assert_eq!(
        private["result"]["chat"],
        json!({ "id": 42, "first_name": "Olga", "type": "private" })
    );
}

#[tokio::test]
async fn errors_have_telegrams_shape() {
    let bot = start().await;
    let (status, body) =
        send(&bot, "1:wrong", json!({ "chat_id": DEFAULT_CHAT_ID, "text": "x" })).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, json!({ "ok": false, "error_code": 401, "description": "Unauthorized" }));

    let (status, body) = send(&bot, DEFAULT_TOKEN, json!({ "chat_id": 5, "text": "x" })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["description"], "Bad Request: chat not found");

    let (_, body) = send(&bot, DEFAULT_TOKEN, json!({ "chat_id": DEFAULT_CHAT_ID })).await;
    assert_eq!(body["description"], "Bad Request: message text is empty");

    let long = "x".repeat(4097);
    let (_, body) =
        send(&bot, DEFAULT_TOKEN, json!({ "chat_id": DEFAULT_CHAT_ID, "text": long })).await;
    assert_eq!(body["description"], "Bad Request: message is too long");

    let response = answer(bot_method(&bot, DEFAULT_TOKEN, "noSuchMethod")).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(bot.sent().is_empty());
}

#[tokio::test]
async fn broken_markup_cannot_be_parsed() {
    let bot = start().await;
    for (mode, text, description) in [
        (
            "MarkdownV2",
            "Total: 1.5",
            "Bad Request: can't parse entities: Character '.' is reserved and must be escaped with the preceding '\\'",
        ),
        (
            "MarkdownV2",
            "*bold snake_case*",
            "Bad Request: can't parse entities: Can't find end of Italic entity at byte offset 11",
        ),
        (
            "HTML",
            "a <tag> b",
            "Bad Request: can't parse entities: Unsupported start tag \"tag\" at byte offset 2",
        ),
    ] {
        let (status, body) = send(
            &bot,
            DEFAULT_TOKEN,
            json!({ "chat_id": DEFAULT_CHAT_ID, "text": text, "parse_mode": mode }),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
        assert_eq!(body["description"], description);
    }
    assert!(bot.sent().is_empty());
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let bot = start().await;
    bot.update(|b| b.fail_next.push_back(Failure::RateLimited(Duration::from_secs(3)))).await;
    let message = json!({ "chat_id": DEFAULT_CHAT_ID, "text": "x" });
    let (status, body) = send(&bot, DEFAULT_TOKEN, message.clone()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        body,
        json!({
            "ok": false, "error_code": 429, "description": "Too Many Requests: retry after 3",
            "parameters": { "retry_after": 3 },
        })
    );

    bot.set(Behaviour {
        rate_limit: Some(RateLimit { requests: 2, per: Duration::from_secs(60) }),
        ..Behaviour::healthy()
    })
    .await;
    assert_eq!(send(&bot, DEFAULT_TOKEN, message.clone()).await.0, StatusCode::OK);
    assert_eq!(send(&bot, DEFAULT_TOKEN, message.clone()).await.0, StatusCode::OK);
    let (status, body) = send(&bot, DEFAULT_TOKEN, message).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(body["parameters"]["retry_after"].as_u64().is_some_and(|s| (59..=60).contains(&s)));
}

#[tokio::test]
async fn down_answers_nginx_pages_then_recovers() {
    let bot = start().await;
    bot.update(|b| b.down = Some(Down::Status(502))).await;
    let request = bot_method(&bot, DEFAULT_TOKEN, "sendMessage")
        .json(&json!({ "chat_id": DEFAULT_CHAT_ID, "text": "x" }));
    let response = answer(request).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(response.headers()[CONTENT_TYPE], "text/html");
    assert!(response.text().await.expect("body").contains("<title>502 Bad Gateway</title>"));

    bot.update(|b| b.down = None).await;
    let (status, _) =
        send(&bot, DEFAULT_TOKEN, json!({ "chat_id": DEFAULT_CHAT_ID, "text": "x" })).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn refusing_closes_the_port_and_reopens_it() {
    let bot = start().await;
    bot.update(|b| b.down = Some(Down::Refuse)).await;
    assert_refused(bot_method(&bot, DEFAULT_TOKEN, "getMe")).await;

    bot.update(|b| b.down = None).await;
    let response = bot_method(&bot, DEFAULT_TOKEN, "getMe").send().await.expect("listening again");
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn latency_and_slow_answers_delay_the_answer() {
    let bot = start().await;
    bot.update(|b| {
        b.latency = Duration::from_millis(100);
        b.fail_next.push_back(Failure::Slow(Duration::from_millis(200)));
    })
    .await;
    let started = Instant::now();
    let (status, _) =
        send(&bot, DEFAULT_TOKEN, json!({ "chat_id": DEFAULT_CHAT_ID, "text": "x" })).await;
    assert_eq!(status, StatusCode::OK, "a slow answer is still the answer");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(bot.behaviour().fail_next.is_empty());
    assert_eq!(bot.requests(), 1);
}

#[tokio::test]
async fn a_queued_server_error_can_carry_retry_after() {
    let bot = start().await;
    bot.update(|b| b.fail_next.push_back(Failure::RetryAfter(503, Duration::from_secs(7)))).await;
    let response = answer(bot_method(&bot, DEFAULT_TOKEN, "getMe")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "7");
}

#[tokio::test]
async fn a_new_token_replaces_the_old_one() {
    let bot = start().await;
    bot.set_token("7000000001:AAnotherTokenAfterRevoke_012345678901");
    let message = json!({ "chat_id": DEFAULT_CHAT_ID, "text": "x" });
    assert_eq!(send(&bot, DEFAULT_TOKEN, message.clone()).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(send(&bot, &bot.token(), message).await.0, StatusCode::OK);
}

//! The `telegram` connector against the fake Bot API: the message Telegram receives and shows,
//! escaping for MarkdownV2 and HTML, every error class, config errors, and that the bot token
//! appears nowhere: not in reasons, not in `Debug`.

use std::time::Duration;

use connectors::http::WithClient;
use connectors::telegram::{TelegramConfig, TelegramConnector, TelegramError};
use connectors::{ConnectorRequest, DocumentId};
use fakes::faults::{Down, Failure};
use fakes::telegram::{BotApi, Chat, ChatKind, DEFAULT_CHAT_ID, DEFAULT_TOKEN};
use serde_json::{Value, json};

use crate::{
    assert_hides, assert_reason_contains, connector, deal_call, fatal_error, fatal_with, own_error,
    rejected_with, retryable_error, with_setting, with_settings,
};

async fn start() -> BotApi {
    BotApi::start().await.expect("the fake Bot API starts")
}

/// The example of docs/connectors.md, pointed at the fake.
fn settings(bot: &BotApi) -> Value {
    json!({
        "kind": "telegram",
        "bot_token": DEFAULT_TOKEN,
        "base_url": bot.url(),
        "chat_id": DEFAULT_CHAT_ID,
        "parse_mode": "MarkdownV2",
        "text": "*Shipment request {{document.id}}*\nCompany: {{properties.company_name}}\nAmount: {{properties.amount}} RUB",
        "timeout": "5s",
    })
}

fn call() -> ConnectorRequest {
    deal_call("notify_sales")
        .with_property("company_name", "ООО \"Ромашка\"")
        .with_property("amount", 1500.5)
}

/// The bot token's secret part, which must appear nowhere.
fn token_secret() -> &'static str {
    DEFAULT_TOKEN.split_once(':').map(|(_, s)| s).unwrap_or(DEFAULT_TOKEN)
}

#[tokio::test]
async fn sends_the_templated_message_and_returns_its_id() {
    let bot = start().await;
    let outputs = connector(&settings(&bot)).run(&call()).await.expect("sent");
    assert_eq!(outputs.values["message_id"], 1);
    assert_eq!(
        outputs.log.as_deref(),
        Some(format!("Telegram message 1 sent to chat {DEFAULT_CHAT_ID}").as_str())
    );
    let sent = bot.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].chat_id, DEFAULT_CHAT_ID);
    assert_eq!(sent[0].parse_mode.as_deref(), Some("MarkdownV2"));
    assert_eq!(
        sent[0].raw_text,
        "*Shipment request DEAL\\_7*\nCompany: ООО \"Ромашка\"\nAmount: 1500\\.5 RUB"
    );
    assert_eq!(
        sent[0].text,
        "Shipment request DEAL_7\nCompany: ООО \"Ромашка\"\nAmount: 1500.5 RUB"
    );
    assert_eq!(sent[0].entities[0].kind, "bold");

    let second = connector(&settings(&bot)).run(&call()).await.expect("sent");
    assert_eq!(second.values["message_id"], 2);
}

#[tokio::test]
async fn markdown_v2_values_cannot_break_the_message() {
    let bot = start().await;
    let hostile = "snake_case *bold* [link](http://x) `code` 1.5 - ! > # {x} \\ ~|";
    let request = call().with_property("company_name", hostile);
    connector(&settings(&bot)).run(&request).await.expect("sent");
    let sent = bot.sent();
    assert!(sent[0].text.contains(&format!("Company: {hostile}\n")), "{}", sent[0].text);
    assert_eq!(sent[0].entities.len(), 1, "only the template's own bold: {:?}", sent[0].entities);
}

#[tokio::test]
async fn html_values_cannot_break_the_message() {
    let bot = start().await;
    let html = json!({
        "parse_mode": "HTML",
        "text": "<b>{{document.id}}</b>: {{properties.company_name}}",
    });
    let settings = with_settings(&settings(&bot), html);
    let request = call().with_property("company_name", "<i>A & B</i> \"q\" 'a'");
    connector(&settings).run(&request).await.expect("sent");
    let sent = bot.sent();
    assert_eq!(
        sent[0].raw_text,
        "<b>DEAL_7</b>: &lt;i&gt;A &amp; B&lt;/i&gt; &quot;q&quot; &#39;a&#39;"
    );
    assert_eq!(sent[0].text, "DEAL_7: <i>A & B</i> \"q\" 'a'");
    assert_eq!(sent[0].entities.len(), 1);
}

#[tokio::test]
async fn plain_text_goes_as_is_with_options() {
    let bot = start().await;
    bot.add_chat(Chat::new(-1_002_000_000_002, ChatKind::Channel, "News").with_username("news"));
    let settings = json!({
        "kind": "telegram",
        "bot_token": DEFAULT_TOKEN,
        "base_url": format!("{}/", bot.url()),
        "chat_id": "{{properties.chat}}",
        "text": "Deal {{document.id}}: *{{properties.amount}}*",
        "disable_notification": true,
        "disable_link_preview": true,
        "message_id_property": "tg_message",
    });
    let request = call().with_property("chat", "@news");
    let outputs = connector(&settings).run(&request).await.expect("sent");
    assert_eq!(outputs.values["tg_message"], 1);
    let sent = bot.sent();
    assert_eq!(sent[0].chat_id, -1_002_000_000_002);
    assert_eq!(sent[0].text, "Deal DEAL_7: *1500.5*");
    assert!(sent[0].disable_notification);
    assert!(sent[0].link_preview_disabled, "link_preview_options reached Telegram");
}

#[tokio::test]
async fn a_forum_topic_gets_the_message_and_a_missing_one_is_fatal() {
    let bot = start().await;
    bot.add_chat(Chat::new(-1_003_000_000_003, ChatKind::Supergroup, "Forum").with_topics([5]));
    let to_topic = |thread: i64| {
        with_settings(
            &settings(&bot),
            json!({ "chat_id": -1_003_000_000_003_i64, "message_thread_id": thread }),
        )
    };
    connector(&to_topic(5)).run(&call()).await.expect("sent to the topic");
    assert_eq!(bot.sent()[0].message_thread_id, Some(5));
    let error = fatal_error(&connector(&to_topic(6)), &call()).await;
    assert!(error.reason().ends_with("Bad Request: message thread not found"), "{error}");
}

#[tokio::test]
async fn a_group_upgraded_to_a_supergroup_gets_the_message_there_once_and_says_so() {
    let bot = start().await;
    let (group, supergroup) = (-4_000_000_004_i64, -1_004_000_000_004_i64);
    bot.add_chat(Chat::new(group, ChatKind::Group, "Sales").migrated_to(supergroup));
    bot.add_chat(Chat::new(supergroup, ChatKind::Supergroup, "Sales"));
    let to_group = with_setting(&settings(&bot), "chat_id", json!(group));
    let outputs = connector(&to_group).run(&call()).await.expect("sent to the supergroup");
    let sent = bot.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].chat_id, supergroup);
    let log = outputs.log.unwrap_or_default();
    assert!(log.contains(&format!("set chat_id to {supergroup}")), "{log}");
    assert_eq!(bot.requests(), 2, "one refused send, one to the supergroup");

    // A supergroup that moved again is not chased further.
    bot.add_chat(Chat::new(-5, ChatKind::Group, "Old").migrated_to(-6));
    bot.add_chat(Chat::new(-6, ChatKind::Group, "Older").migrated_to(-7));
    let error = fatal_with(&settings(&bot), "chat_id", json!(-5), &call()).await;
    assert!(error.reason().contains("the chat is now -7"), "{error}");
}

#[tokio::test]
async fn a_message_over_the_limit_fails_naming_its_length_or_is_cut_when_configured() {
    let bot = start().await;
    // Markup does not count: 4,096 characters of text in bold pass.
    let bold = with_setting(&settings(&bot), "text", json!("*{{properties.company_name}}*"));
    let exactly = call().with_property("company_name", "я".repeat(4096));
    connector(&bold).run(&exactly).await.expect("4,096 characters after formatting pass");
    let over = call().with_property("company_name", "я".repeat(4097));
    let error = fatal_error(&connector(&bold), &over).await;
    assert_reason_contains(
        &error,
        "the message is 4097 characters after formatting, over Telegram's 4096",
    );
    assert_eq!(bot.sent().len(), 1, "the long one was never sent");

    // Plain text can be cut instead; a parse mode cannot.
    let mut plain = with_settings(
        &settings(&bot),
        json!({ "text": "{{properties.company_name}}", "too_long": "truncate" }),
    );
    plain.as_object_mut().unwrap().remove("parse_mode");
    let long = call().with_property("company_name", "😀".repeat(3000));
    connector(&plain).run(&long).await.expect("cut and sent");
    let cut = &bot.sent()[1].text;
    // 2,047 emoji of two UTF-16 units each and the ellipsis: an emoji is never split.
    assert_eq!(cut.encode_utf16().count(), 4095, "cut to the limit in UTF-16 units");
    assert!(cut.ends_with('…'));
}

#[tokio::test]
async fn the_contract_names_the_properties() {
    let bot = start().await;
    let settings = with_setting(&settings(&bot), "chat_id", json!("{{properties.chat}}"));
    let contract = connector(&settings).contract().expect("a contract");
    assert_eq!(contract.inputs.into_iter().collect::<Vec<_>>(), ["amount", "chat", "company_name"]);
    assert_eq!(contract.outputs.into_iter().collect::<Vec<_>>(), ["message_id"]);
}

#[tokio::test]
async fn rate_limited_is_retryable_after_telegrams_retry_after() {
    let bot = start().await;
    bot.update(|b| b.fail_next.push_back(Failure::RateLimited(Duration::from_secs(3)))).await;
    let error = retryable_error(&connector(&settings(&bot)), &call()).await;
    assert_eq!(error.retry_after(), Some(Duration::from_secs(3)));
    assert_eq!(
        error.reason(),
        "Telegram sendMessage: Telegram answered 429 Too Many Requests: Too Many Requests: retry after 3"
    );
    assert_hides(&error, &[token_secret()]);
    assert!(bot.sent().is_empty());
}

#[tokio::test]
async fn unavailable_is_retryable() {
    let bot = start().await;
    let connector = connector(&settings(&bot));
    bot.update(|b| b.down = Some(Down::Status(502))).await;
    let error = retryable_error(&connector, &call()).await;
    assert!(
        error.reason().starts_with("Telegram sendMessage: answered 502 Bad Gateway"),
        "{error}"
    );
    assert_hides(&error, &[token_secret()]);

    bot.update(|b| {
        b.down = None;
        b.fail_next.push_back(Failure::RetryAfter(503, Duration::from_secs(9)));
    })
    .await;
    let error = connector.run(&call()).await.unwrap_err();
    assert_eq!(error.retry_after(), Some(Duration::from_secs(9)));

    bot.update(|b| b.down = Some(Down::Refuse)).await;
    let error = retryable_error(&connector, &call()).await;
    assert_reason_contains(&error, "could not connect");
    assert_hides(&error, &[token_secret()]);

    bot.update(|b| b.down = None).await;
    connector.run(&call()).await.expect("back up");
}

#[tokio::test]
async fn a_slow_answer_times_out_and_is_retryable() {
    let bot = start().await;
    bot.update(|b| b.latency = Duration::from_secs(10)).await;
    let mut request = call();
    request.attempt_timeout = Some(Duration::from_millis(200));
    let error = retryable_error(&connector(&settings(&bot)), &request).await;
    assert_eq!(error.reason(), "Telegram sendMessage: no answer within 200ms");
    assert_hides(&error, &[token_secret()]);
}

#[tokio::test]
async fn a_wrong_token_is_fatal_and_not_repeated() {
    let bot = start().await;
    bot.set_token("7000000001:AAnotherTokenAfterRevoke_012345678901");
    let error = fatal_error(&connector(&settings(&bot)), &call()).await;
    assert_eq!(
        error.reason(),
        "Telegram sendMessage: Telegram refused the bot token (Telegram answered 401 Unauthorized: Unauthorized)"
    );
    assert_hides(&error, &[token_secret()]);
}

#[tokio::test]
async fn an_unknown_chat_is_fatal_with_telegrams_description() {
    let bot = start().await;
    let error = fatal_with(&settings(&bot), "chat_id", json!("-100999"), &call()).await;
    assert!(error.reason().ends_with("Bad Request: chat not found"), "{error}");
    assert!(matches!(own_error::<TelegramError>(&error), TelegramError::Api { .. }));
    assert_hides(&error, &[token_secret()]);
}

#[tokio::test]
async fn broken_template_markup_is_fatal_with_telegrams_description() {
    let bot = start().await;
    let text = json!("Total: {{properties.amount}}.");
    let error = fatal_with(&settings(&bot), "text", text, &call()).await;
    assert!(
        error.reason().ends_with(
            "Bad Request: can't parse entities: Character '.' is reserved and must be escaped with the preceding '\\'"
        ),
        "{error}"
    );
}

#[tokio::test]
async fn a_missing_property_is_fatal_before_anything_is_sent() {
    let bot = start().await;
    let request =
        ConnectorRequest::new("job-2", "notify", DocumentId::new("crm", "CCrmDocumentDeal", "D"));
    let error = fatal_error(&connector(&settings(&bot)), &request).await;
    assert_reason_contains(&error, "the call has no property `company_name`");
    assert_eq!(bot.requests(), 0);
}

#[tokio::test]
async fn debug_output_hides_the_token() {
    let bot = start().await;
    let secret = token_secret();
    let mut settings = settings(&bot);
    settings.as_object_mut().map(|m| m.remove("kind"));
    let config: TelegramConfig = serde_json::from_value(settings).expect("parses");
    let debug = format!("{config:?}");
    assert!(!debug.contains(secret) && debug.contains("<redacted>"), "{debug}");
    let connector = TelegramConnector::new(config).expect("valid");
    assert!(!format!("{connector:?}").contains(secret));
}

#[test]
fn config_errors_name_the_key_and_not_the_token() {
    let base = json!({ "kind": "telegram", "bot_token": DEFAULT_TOKEN, "chat_id": 1, "text": "x" });
    let with = |key: &str, value: Value| rejected_with(&base, key, value);
    let error = with("bot_token", json!("not/a token?"));
    assert!(error.starts_with("connector.bot_token: not a bot token"), "{error}");
    assert!(!error.contains("not/a"));
    assert!(with("chat_id", json!("general")).starts_with("connector.chat_id: expected a numeric"));
    assert!(with("text", json!("  ")).starts_with("connector.text: empty"));
    assert!(with("text", json!("{{secret.x}}")).starts_with("connector.text: unknown namespace"));
    assert!(
        with("parse_mode", json!("Markdown")).starts_with("connector.parse_mode: unknown variant")
    );
    assert!(with("base_url", json!("ftp://x")).starts_with("connector.base_url: expected an http"));
    assert!(with("timeout", json!("0s")).starts_with("connector.timeout: must be longer"));
    assert!(with("message_id_property", json!("1x")).starts_with("connector.message_id_property"));
    let marked_up = with_setting(&base, "parse_mode", json!("HTML"));
    let error = rejected_with(&marked_up, "too_long", json!("truncate"));
    assert!(
        error.starts_with("connector.too_long: \"truncate\" works on plain text only"),
        "{error}"
    );
    assert!(
        with("chat", json!(1)).starts_with("connector.chat: unknown field `chat`"),
        "{}",
        with("chat", json!(1))
    );
}

//! The handler call: exact body bytes and field order (§2.2), value serialization (§2.4), the
//! signed event token (§3.4), the call's tokens (§2.3), and asynchronous delivery.

use std::time::{Duration, Instant};

use b24_emulator::{Faults, WorkflowSpec};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::support::{HANDLER_PATH, TOKENLESS_AUTH_KEYS, World, auth_keys};

/// Registers the §2.5 example. The JSON is sent as text because `json!` would sort the keys, and
/// the property order is what the call order is checked against.
async fn register_example(w: &World) {
    let body = format!(
        r#"{{"auth": "{}", "CODE": "md5_action", "HANDLER": "{}", "NAME": "Example", "AUTH_USER_ID": 1,
            "USE_SUBSCRIPTION": "Y",
            "PROPERTIES": {{
                "inputString": {{"Name": "Input", "Type": "string"}},
                "sendCopy": {{"Name": "Copy", "Type": "bool"}},
                "approvers": {{"Name": "Approvers", "Type": "user", "Multiple": "Y"}},
                "dueDate": {{"Name": "Due", "Type": "date"}},
                "amount": {{"Name": "Amount", "Type": "double"}},
                "comment": {{"Name": "Comment", "Type": "text"}},
                "watchers": {{"Name": "Watchers", "Type": "user", "Multiple": "Y"}},
                "count": {{"Name": "Count", "Type": "int", "Default": 3}}
            }},
            "RETURN_PROPERTIES": {{"outcome": {{"Name": "Outcome"}}}}}}"#,
        w.inst.access_token,
        w.handler_url()
    );
    let resp = w
        .http
        .post(format!("{}bizproc.activity.add", w.portal.client_endpoint))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{}", resp.text().await.unwrap());
}

fn decoded_keys(body: &str) -> Vec<String> {
    body.split('&')
        .map(|pair| {
            let key = pair.split('=').next().unwrap();
            key.replace("%5B", "[").replace("%5D", "]")
        })
        .collect()
}

#[tokio::test]
async fn the_call_body_has_the_exact_field_order_and_php_encoding() {
    let w = World::new().await;
    register_example(&w).await;
    let spec = WorkflowSpec {
        timeout_duration: 3600,
        ..w.workflow(
            "md5_action",
            json!({
                "inputString": "Deal #1188: Müller & Co", "sendCopy": true, "approvers": [1, "user_7"],
                "dueDate": "21.08.2026", "amount": 1500.5, "comment": null, "watchers": []
            }),
        )
    };
    let started = w.emu.start_workflow(spec).await.unwrap();
    let call = &w.echo.wait_for(HANDLER_PATH, 1).await[0];
    assert_eq!(call.method, "POST");
    assert_eq!(call.headers["content-type"], "application/x-www-form-urlencoded");
    assert_eq!(call.headers["user-agent"], "Bitrix24 Webhook Engine");
    let body = call.body_str();
    assert_eq!(body, started.body);

    let expected = [
        "workflow_id",
        "code",
        "document_id[0]",
        "document_id[1]",
        "document_id[2]",
        "document_type[0]",
        "document_type[1]",
        "document_type[2]",
        "event_token",
        "properties[inputString]",
        "properties[sendCopy]",
        "properties[approvers][0]",
        "properties[approvers][1]",
        "properties[dueDate]",
        "properties[amount]",
        "properties[comment]",
        "properties[count]",
        "use_subscription",
        "timeout_duration",
        "ts",
        "auth[access_token]",
        "auth[expires]",
        "auth[expires_in]",
        "auth[scope]",
        "auth[domain]",
        "auth[server_endpoint]",
        "auth[status]",
        "auth[client_endpoint]",
        "auth[member_id]",
        "auth[user_id]",
        "auth[refresh_token]",
        "auth[application_token]",
    ];
    assert_eq!(decoded_keys(&body), expected);
    for fragment in [
        "&code=md5_action&document_id%5B0%5D=crm&document_id%5B1%5D=CCrmDocumentDeal&document_id%5B2%5D=DEAL_1&",
        "&properties%5BinputString%5D=Deal+%231188%3A+M%C3%BCller+%26+Co&properties%5BsendCopy%5D=Y&",
        "&properties%5Bapprovers%5D%5B0%5D=user_1&properties%5Bapprovers%5D%5B1%5D=user_7&",
        "&properties%5BdueDate%5D=21.08.2026&properties%5Bamount%5D=1500.5&properties%5Bcomment%5D=&",
        "&properties%5Bcount%5D=3&use_subscription=Y&timeout_duration=3600&ts=",
    ] {
        assert!(body.contains(fragment), "missing {fragment} in {body}");
    }
    assert!(!body.contains("watchers"), "an empty list must vanish: {body}");

    let form = call.json();
    assert_eq!(form["workflow_id"], json!(started.workflow_id));
    assert_eq!(form["auth"]["user_id"], "1");
    assert_eq!(form["auth"]["domain"], json!(w.portal.domain));
    assert_eq!(form["auth"]["member_id"], json!(w.portal.member_id));
    assert_eq!(form["auth"]["application_token"], json!(w.inst.application_token));
    assert_eq!(form["auth"]["expires_in"], "3600");
    // The call's token is a fresh, working token of the run-as user.
    let token = form["auth"]["access_token"].as_str().unwrap();
    assert_ne!(token, w.inst.access_token);
    let (status, _) = w.call_with(token, "bizproc.activity.list", json!({})).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_event_token_is_signed_with_bizproc_plus_the_portal_secret() {
    let w = World::new().await;
    register_example(&w).await;
    let started = w.emu.start_workflow(w.workflow("md5_action", json!({}))).await.unwrap();
    let token = started.event_token.as_str();
    let (payload, signature) = token.rsplit_once('.').unwrap();
    let mut mac =
        Hmac::<Sha256>::new_from_slice(format!("bizproc{}", w.portal.signer_key).as_bytes())
            .unwrap();
    mac.update(payload.as_bytes());
    assert_eq!(signature, hex::encode(mac.finalize().into_bytes()));

    let parts: Vec<&str> = payload.split('|').collect();
    assert_eq!(
        parts,
        [started.workflow_id.as_str(), started.activity_name.as_str(), started.event_id.as_str()]
    );
    let (head, tail) = started.workflow_id.split_once('.').unwrap();
    assert_eq!(head.len(), 14);
    assert!(
        head[..13].bytes().all(|b| b.is_ascii_hexdigit()) && head.as_bytes()[13].is_ascii_digit()
    );
    assert!(tail.len() == 8 && tail.bytes().all(|b| b.is_ascii_digit()));
    let groups: Vec<&str> = started.activity_name.trim_start_matches('A').split('_').collect();
    assert_eq!(groups.iter().map(|g| g.len()).collect::<Vec<_>>(), [5, 4, 5, 5]);
    assert!(
        started.event_id.len() == 32 && started.event_id.bytes().all(|b| b.is_ascii_alphanumeric())
    );
}

#[tokio::test]
async fn start_workflow_returns_before_the_handler_is_called() {
    let w = World::new().await;
    register_example(&w).await;
    let faults = Faults { call_delay: Duration::from_millis(800), ..Default::default() };
    w.set_faults(faults);
    let begun = Instant::now();
    let started = w.emu.start_workflow(w.workflow("md5_action", json!({}))).await.unwrap();
    assert!(begun.elapsed() < Duration::from_millis(500));
    assert!(w.echo.on(HANDLER_PATH).is_empty());
    w.echo.wait_for(HANDLER_PATH, 1).await;
    let state = w.delivered(&started.workflow_id).await;
    assert_eq!(state.deliveries[0].status, Some(200));
}

#[tokio::test]
async fn run_as_user_zero_gets_no_tokens_and_non_2xx_is_not_retried() {
    let w = World::new().await;
    w.register(
        "bizproc.robot.add",
        json!({"CODE": "nobody", "AUTH_USER_ID": 0, "USE_SUBSCRIPTION": "N"}),
    )
    .await;
    w.echo.set_status(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    let started = w.emu.start_workflow(w.workflow("nobody", json!({}))).await.unwrap();
    let call = w.echo.wait_for(HANDLER_PATH, 1).await[0].json();
    assert_eq!(auth_keys(&call), TOKENLESS_AUTH_KEYS);
    assert!(call.get("properties").is_none());
    assert_eq!(call["use_subscription"], "N");
    let state = w.delivered(&started.workflow_id).await;
    assert_eq!(state.deliveries.len(), 1);
    assert_eq!(state.deliveries[0].status, Some(500));
}

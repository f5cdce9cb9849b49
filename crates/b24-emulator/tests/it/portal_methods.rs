//! The methods about the portal and the app's bindings: `user.current`, `server.time`, `scope`,
//! `methods`, `event.bind/get/unbind` and `placement.bind/list/get/unbind`, with their
//! parameters, error strings and auth checks.

use serde_json::{Value, json};

use crate::support::{World, err, post_json};

#[tokio::test]
async fn server_time_is_iso_8601_with_its_offset() {
    let w = World::new().await;
    let (status, body) = w.call("server.time", json!({})).await;
    let time = body["result"].as_str().unwrap();
    assert_eq!(status, 200);
    assert_eq!(time.len(), "2024-08-05T09:02:13+00:00".len(), "{time}");
    assert_eq!((&time[4..5], &time[10..11], &time[19..]), ("-", "T", "+00:00"));
}

#[tokio::test]
async fn scope_lists_the_apps_scopes_or_with_full_every_scope_read_as_php_reads_a_bool() {
    let w = World::new().await;
    let every = json!(["bizproc", "crm", "placement", "user"]);
    let (_, body) = w.call("scope", json!({})).await;
    assert_eq!(body["result"], json!(["bizproc", "crm"]));
    let (_, body) = w.call("scope", json!({"full": false})).await;
    assert_eq!(body["result"], json!(["bizproc", "crm"]));
    let (_, body) = w.call("scope", json!({"full": true})).await;
    assert_eq!(body["result"], every);
    // In a form the string "false" is true; "0" is false.
    let (_, body) = w.call_form("scope", json!({"full": "false"})).await;
    assert_eq!(body["result"], every);
    let (_, body) = w.call_form("scope", json!({"full": "0"})).await;
    assert_eq!(body["result"], json!(["bizproc", "crm"]));
}

fn names(body: &Value) -> Vec<&str> {
    body["result"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect()
}

#[tokio::test]
async fn methods_lists_a_scopes_methods_the_basic_ones_or_the_apps() {
    let w = World::new().await;
    let (_, body) = w.call("methods", json!({"scope": "placement"})).await;
    assert_eq!(
        names(&body),
        ["placement.bind", "placement.list", "placement.get", "placement.unbind"]
    );
    let (_, body) = w.call("methods", json!({"scope": ""})).await;
    let basic = names(&body);
    assert!(basic.contains(&"batch") && basic.contains(&"server.time"), "{basic:?}");
    assert!(!basic.contains(&"bizproc.event.send"));
    let (_, body) = w.call("methods", json!({"scope": "nonexistent"})).await;
    assert_eq!(body["result"], json!([]));
    let (_, body) = w.call("methods", json!({})).await;
    let own = names(&body);
    assert!(own.contains(&"bizproc.event.send") && own.contains(&"scope"));
    assert!(!own.contains(&"user.current") && !own.contains(&"placement.bind"));
    let (_, body) = w.call("methods", json!({"full": true})).await;
    assert!(names(&body).contains(&"user.current"));
}

#[tokio::test]
async fn user_current_needs_the_user_scope_and_answers_the_tokens_user() {
    let w = World::new().await;
    let (status, body) = w.call("user.current", json!({})).await;
    assert_eq!((status, err(&body).0), (401, "insufficient_scope"));
    let w = World::with_scope("bizproc,user").await;
    let token = w.emu.issue_token(&w.portal.domain, &w.app.client_id, 7).unwrap();
    let (status, body) = w.call_with(&token.access_token, "user.current", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(body["result"]["ID"], json!("7"));
    assert_eq!(body["result"]["LAST_NAME"], json!("User 7"));
    assert_eq!(body["result"]["ACTIVE"], json!(true));
}

#[tokio::test]
async fn event_bind_get_and_unbind_with_their_errors() {
    let w = World::new().await;
    let handler = "https://app.example/events";
    let (status, body) =
        w.call("event.bind", json!({"event": "OnCrmDealUpdate", "handler": handler})).await;
    assert_eq!((status, &body["result"]), (200, &json!(true)));
    let (_, body) = w
        .call("event.bind", json!({"EVENT": "ONCRMDEALADD", "HANDLER": handler, "AUTH_TYPE": 1}))
        .await;
    assert_eq!(body["result"], json!(true));
    let (_, body) = w.call("event.get", json!({})).await;
    assert_eq!(
        body["result"],
        json!([
            {"event": "ONCRMDEALUPDATE", "handler": handler, "auth_type": "0", "offline": 0},
            {"event": "ONCRMDEALADD", "handler": handler, "auth_type": "1", "offline": 0},
        ])
    );
    let (status, body) =
        w.call("event.bind", json!({"event": "ONNOTHING", "handler": handler})).await;
    assert_eq!((status, err(&body)), (400, ("ERROR_EVENT_NOT_FOUND", "Event not found")));
    let (status, body) = w.call("event.bind", json!({"event": "ONCRMDEALADD"})).await;
    assert_eq!(
        (status, err(&body), &body["argument"]),
        (400, ("ERROR_ARGUMENT", "Argument 'HANDLER' is null or empty"), &json!("HANDLER"))
    );
    // A user who is not an admin binds for themselves only, and cannot unbind.
    let user = w.emu.issue_token(&w.portal.domain, &w.app.client_id, 5).unwrap();
    let (status, body) = w
        .call_with(
            &user.access_token,
            "event.bind",
            json!({"event": "ONCRMDEALADD", "handler": handler, "auth_type": 1}),
        )
        .await;
    assert_eq!((status, err(&body).0), (403, "ACCESS_DENIED"));
    let (status, body) =
        w.call_with(&user.access_token, "event.unbind", json!({"event": "ONCRMDEALADD"})).await;
    assert_eq!((status, err(&body)), (403, ("ACCESS_DENIED", "Access denied!")));
    let hook = w.emu.create_webhook(&w.portal.domain, 1, "bizproc").unwrap();
    let (status, body) = post_json(&w.http, &format!("{hook}event.get"), &json!({})).await;
    assert_eq!((status, err(&body).0), (403, "WRONG_AUTH_TYPE"));
    let (_, body) = w.call("event.unbind", json!({"event": "ONCRMDEALADD", "auth_type": 0})).await;
    assert_eq!(body["result"], json!({"count": 0}));
    let (_, body) =
        w.call("event.unbind", json!({"event": "ONCRMDEALADD", "handler": handler})).await;
    assert_eq!(body["result"], json!({"count": 1}));
    // An app update removes what the app bound.
    w.emu.update_app(&w.portal.domain, &w.app.client_id).await.unwrap();
    let token = w.emu.issue_token(&w.portal.domain, &w.app.client_id, 1).unwrap();
    let (_, body) = w.call_with(&token.access_token, "event.get", json!({})).await;
    assert_eq!(body["result"], json!([]));
}

#[tokio::test]
async fn placement_bind_list_get_and_unbind_with_their_errors() {
    let w = World::with_scope("crm,placement").await;
    let (status, body) = w.call("placement.list", json!({})).await;
    assert_eq!(status, 200);
    assert!(names(&body).contains(&"CRM_DEAL_DETAIL_TAB") && names(&body).contains(&"LEFT_MENU"));
    let tab = json!({"PLACEMENT": "CRM_DEAL_DETAIL_TAB", "HANDLER": "https://app.example/tab", "TITLE": "Credit", "OPTIONS": {"x": "1"}});
    let (status, body) = w.call("placement.bind", tab.clone()).await;
    assert_eq!((status, &body["result"]), (200, &json!(true)));
    let (_, body) = w
        .call(
            "placement.bind",
            json!({"placement": "CRM_DEAL_DETAIL_TAB", "handler": "https://app.example/other"}),
        )
        .await;
    assert_eq!(body["result"], json!(true));
    let (_, body) = w.call("placement.get", json!({})).await;
    assert_eq!(
        body["result"][0],
        json!({"placement": "CRM_DEAL_DETAIL_TAB", "userId": 0, "handler": "https://app.example/tab",
               "options": {"x": "1"}, "title": "Credit", "description": "", "langAll": []})
    );
    let (status, body) =
        w.call("placement.bind", json!({"HANDLER": "https://app.example/tab"})).await;
    assert_eq!(
        (status, err(&body), &body["argument"]),
        (400, ("ERROR_ARGUMENT", "Argument 'PLACEMENT' is null or empty"), &json!("PLACEMENT"))
    );
    let (status, body) = w
        .call(
            "placement.bind",
            json!({"PLACEMENT": "LEFT_MENU", "HANDLER": "https://app.example/m", "USER_ID": 3}),
        )
        .await;
    assert_eq!(
        (status, err(&body)),
        (400, ("ERROR_PLACEMENT_USER_MODE", "User mode is not available"))
    );
    let (status, body) = w
        .call("placement.bind", json!({"PLACEMENT": "PAGE_BACKGROUND_WORKER", "HANDLER": "https://app.example/w", "USER_ID": 3}))
        .await;
    assert_eq!((status, &body["result"]), (200, &json!(true)));
    let user = w.emu.issue_token(&w.portal.domain, &w.app.client_id, 5).unwrap();
    let (status, body) = w.call_with(&user.access_token, "placement.bind", tab).await;
    assert_eq!((status, err(&body)), (403, ("ACCESS_DENIED", "Access denied!")));
    // Two handlers found and removed: the documented count is 4.
    let (_, body) = w.call("placement.unbind", json!({"PLACEMENT": "CRM_DEAL_DETAIL_TAB"})).await;
    assert_eq!(body["result"], json!({"count": 4}));
    let (_, body) = w.call("placement.get", json!({})).await;
    assert_eq!(body["result"].as_array().unwrap().len(), 1);
    let bizproc_only = World::new().await;
    let (status, body) = bizproc_only.call("placement.list", json!({})).await;
    assert_eq!((status, err(&body).0), (401, "insufficient_scope"));
}

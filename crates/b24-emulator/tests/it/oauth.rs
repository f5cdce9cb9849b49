//! The OAuth server: refresh rotation, error codes, ONAPPINSTALL / ONAPPUNINSTALL bodies.

use std::time::Duration;

use b24_emulator::PortalSpec;
use serde_json::json;

use crate::support::{INSTALL_PATH, TOKENLESS_AUTH_KEYS, World, auth_keys, err, get_json};

fn refresh_url(w: &World, refresh_token: &str, secret: &str) -> String {
    format!(
        "{}?grant_type=refresh_token&client_id={}&client_secret={secret}&refresh_token={refresh_token}",
        w.emu.oauth_token_url(),
        w.app.client_id
    )
}

#[tokio::test]
async fn refresh_issues_a_new_pair_and_kills_the_old_refresh_token() {
    let w = World::new().await;
    let (status, body) =
        get_json(&w.http, &refresh_url(&w, &w.inst.refresh_token, &w.app.client_secret)).await;
    assert_eq!(status, 200, "{body}");
    for key in [
        "access_token",
        "client_endpoint",
        "domain",
        "expires",
        "expires_in",
        "member_id",
        "refresh_token",
        "scope",
        "server_endpoint",
        "status",
        "user_id",
    ] {
        assert!(body.get(key).is_some(), "{key} missing in {body}");
    }
    assert_eq!(body["client_endpoint"], json!(w.portal.client_endpoint));
    assert_eq!(body["member_id"], json!(w.portal.member_id));
    assert_eq!(body["expires_in"], json!(3600));
    assert_eq!(body["user_id"], json!(1));
    assert_ne!(body["refresh_token"], json!(w.inst.refresh_token));
    let new_access = body["access_token"].as_str().unwrap().to_owned();
    let (status, _) = w.call_with(&new_access, "bizproc.activity.list", json!({})).await;
    assert_eq!(status, 200);

    let (status, again) =
        get_json(&w.http, &refresh_url(&w, &w.inst.refresh_token, &w.app.client_secret)).await;
    assert_eq!((status, again["error"].as_str()), (400, Some("invalid_grant")));
    let (status, bad) =
        get_json(&w.http, &refresh_url(&w, body["refresh_token"].as_str().unwrap(), "wrong")).await;
    assert_eq!((status, bad["error"].as_str()), (401, Some("invalid_client")));

    // Every request is on record with its grant type and outcome, for tests that count them.
    let log: Vec<_> = w
        .emu
        .oauth_requests()
        .into_iter()
        .filter(|request| request.grant_type == "refresh_token")
        .map(|request| request.error)
        .collect();
    let tail = &log[log.len() - 3..];
    assert_eq!(tail, [None, Some("invalid_grant".into()), Some("invalid_client".into())]);
}

#[tokio::test]
async fn access_tokens_expire_after_the_configured_lifetime() {
    let w = World::with_spec(PortalSpec {
        unlimited: true,
        access_token_lifetime: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    assert_eq!(w.inst.expires_in, 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = w.call("bizproc.activity.list", json!({})).await;
        if status == 401 {
            assert_eq!(err(&body).0, "expired_token");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "token never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn authorization_code_grant_gives_a_token_pair_once() {
    let w = World::new().await;
    let code = w.emu.authorization_code(&w.portal.domain, &w.app.client_id, 1).unwrap();
    let url = format!(
        "{}?grant_type=authorization_code&client_id={}&client_secret={}&code={code}",
        w.emu.oauth_token_url(),
        w.app.client_id,
        w.app.client_secret
    );
    let (status, body) = get_json(&w.http, &url).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = get_json(&w.http, &url).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
}

#[tokio::test]
async fn onappinstall_is_a_php_form_with_tokens_and_uninstall_carries_none() {
    let w = World::new().await;
    let install = &w.echo.wait_for(INSTALL_PATH, 1).await[0];
    assert_eq!(install.headers["content-type"], "application/x-www-form-urlencoded");
    let body = install.json();
    assert_eq!(body["event"], "ONAPPINSTALL");
    assert_eq!(body["data"]["INSTALLED"], "Y");
    let auth = &body["auth"];
    assert_eq!(auth["access_token"], json!(w.inst.access_token));
    assert_eq!(auth["refresh_token"], json!(w.inst.refresh_token));
    assert_eq!(auth["application_token"], json!(w.inst.application_token));
    assert_eq!(auth["member_id"], json!(w.portal.member_id));
    assert_eq!(auth["domain"], json!(w.portal.domain));
    assert_eq!(auth["client_endpoint"], json!(w.portal.client_endpoint));
    assert_eq!(auth["server_endpoint"], json!(w.emu.oauth_server_endpoint()));
    let member_id = w.portal.member_id.as_str();
    assert!(member_id.len() == 32 && member_id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(w.inst.event_status, Some(200));

    w.emu.uninstall_app(&w.portal.domain, &w.app.client_id).await.unwrap();
    let uninstall = w.echo.wait_for(INSTALL_PATH, 2).await[1].json();
    assert_eq!(uninstall["event"], "ONAPPUNINSTALL");
    assert_eq!(auth_keys(&uninstall), TOKENLESS_AUTH_KEYS);
    assert_eq!(uninstall["auth"]["application_token"], json!(w.inst.application_token));
    // Uninstall revokes API access.
    let (status, _) = w.call("bizproc.activity.list", json!({})).await;
    assert_eq!(status, 401);
}

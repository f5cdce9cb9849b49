//! OAuth refresh: once on `expired_token`, single flight across concurrent calls, new tokens
//! handed to the sink, failures classified; a refresh token redeemed at the configured auth
//! server as proof of its portal and app.

use std::sync::Arc;
use std::time::Duration;

use b24::rest::{
    AppCredentials, Error, ErrorClass, HttpClient, RefreshError, redeem_refresh_token,
};
use b24::secret::{AccessToken, RefreshToken};
use b24_emulator::{AppSpec, Faults};

use crate::support::{CountingAuthServer, RecordingSink, TestPortal, concurrently};

#[tokio::test]
async fn expired_token_is_refreshed_once_and_the_call_repeated() {
    let t = TestPortal::start().await;
    let sink = Arc::new(RecordingSink::default());
    let client = t.oauth().token_sink(sink.clone()).build().unwrap();
    client.app_info().await.unwrap();

    t.emu.expire_tokens(&t.portal.domain).unwrap();
    let info = client.app_info().await.unwrap();
    assert!(info.result.status.is_some());

    let stored = sink.all();
    assert_eq!(stored.len(), 1, "exactly one refresh");
    let fresh = &stored[0];
    assert_ne!(fresh.access_token.expose(), t.install.access_token);
    let new_refresh = fresh.refresh_token.clone().expect("a new refresh token");
    assert_ne!(
        new_refresh.expose(),
        t.install.refresh_token,
        "every refresh issues a new refresh token"
    );
    assert_eq!(fresh.member_id, t.portal.member_id);
    assert_eq!(fresh.domain, t.portal.domain);

    // The portal saw: ok, expired, ok (the repeat).
    let errors = t.recorded_errors(&t.portal.domain);
    assert_eq!(errors, vec![None, Some("expired_token".to_owned()), None]);

    // The new refresh token is the live one: a second expiry refreshes again with it.
    t.emu.expire_tokens(&t.portal.domain).unwrap();
    client.app_info().await.unwrap();
    let stored = sink.all();
    assert_eq!(stored.len(), 2);
    assert_ne!(stored[1].refresh_token.as_ref(), Some(&new_refresh));
}

#[tokio::test]
async fn concurrent_calls_with_an_expired_token_share_one_refresh() {
    let t = TestPortal::start().await;
    let auth = CountingAuthServer::start(t.emu.oauth_token_url()).await;
    let sink = Arc::new(RecordingSink::default());
    let client = t.oauth_via(t.tokens(), &auth.url).token_sink(sink.clone()).build().unwrap();
    t.emu.expire_tokens(&t.portal.domain).unwrap();

    let calls = concurrently(&client, 12, |client| async move { client.app_info().await }).await;
    for result in calls {
        result.unwrap();
    }

    // One refresh went out, the sink saw one token set (a second refresh with the spent token
    // would also have been `invalid_grant` and failed a call above).
    assert_eq!(auth.count(), 1, "exactly one /oauth/token/ request");
    assert_eq!(sink.all().len(), 1);
    let expired = t.recorded_error_count("expired_token");
    assert!((1..=12).contains(&expired), "{expired}");
}

#[tokio::test]
async fn token_expired_again_after_refresh_is_a_token_error_not_a_loop() {
    let t = TestPortal::start().await;
    let sink = Arc::new(RecordingSink::default());
    let client = t.oauth().token_sink(sink.clone()).build().unwrap();
    // Tokens issued from now on are born expired.
    t.set_faults(Faults { access_token_lifetime: Some(Duration::ZERO), ..Faults::default() });
    t.emu.expire_tokens(&t.portal.domain).unwrap();

    let error = client.app_info().await.unwrap_err();
    assert_eq!(error.code(), Some("expired_token"), "{error:?}");
    assert_eq!(error.class(), ErrorClass::Token);
    assert_eq!(sink.all().len(), 1, "refreshed exactly once");
    let expired = t.recorded_error_count("expired_token");
    assert_eq!(expired, 2, "the call and its single repeat");
}

#[tokio::test]
async fn invalid_refresh_token_is_permanent() {
    let t = TestPortal::start().await;
    let mut tokens = t.tokens();
    tokens.refresh_token = Some(RefreshToken::new("not-a-refresh-token"));
    let sink = Arc::new(RecordingSink::default());
    let client = t.oauth_with(tokens).token_sink(sink.clone()).build().unwrap();
    t.emu.expire_tokens(&t.portal.domain).unwrap();

    let error = client.app_info().await.unwrap_err();
    assert!(matches!(error, Error::Refresh { .. }), "{error:?}");
    assert_eq!(error.code(), Some("invalid_grant"));
    assert_eq!(error.class(), ErrorClass::Permanent);
    assert!(sink.all().is_empty());
}

#[tokio::test]
async fn concurrent_callers_share_a_failed_refresh_too() {
    let t = TestPortal::start().await;
    let auth = CountingAuthServer::start(t.emu.oauth_token_url()).await;
    let mut tokens = t.tokens();
    tokens.refresh_token = Some(RefreshToken::new("not-a-refresh-token"));
    let client = t.oauth_via(tokens, &auth.url).build().unwrap();
    t.emu.expire_tokens(&t.portal.domain).unwrap();

    let calls = concurrently(&client, 6, |client| async move { client.app_info().await }).await;
    for result in calls {
        let error = result.unwrap_err();
        assert_eq!(error.class(), ErrorClass::Permanent, "{error:?}");
    }
    assert_eq!(auth.count(), 1, "callers that waited reuse the failure instead of retrying it");
}

#[tokio::test]
async fn without_a_refresh_token_an_expired_token_is_a_token_error() {
    let t = TestPortal::start().await;
    let mut tokens = t.tokens();
    tokens.refresh_token = None;
    let client = t.oauth_with(tokens).build().unwrap();
    t.emu.expire_tokens(&t.portal.domain).unwrap();

    let error = client.app_info().await.unwrap_err();
    assert!(matches!(error, Error::NoRefreshToken { .. }), "{error:?}");
    assert_eq!(error.class(), ErrorClass::Token);
}

#[tokio::test]
async fn replaced_tokens_are_used_for_later_calls() {
    let t = TestPortal::start().await;
    let mut tokens = t.tokens();
    tokens.access_token = AccessToken::new("stale");
    let client = t.oauth_with(tokens).build().unwrap();
    assert!(client.app_info().await.is_err());

    client.replace_tokens(AccessToken::new(t.install.access_token.clone()), None, None);
    client.app_info().await.unwrap();
}

#[tokio::test]
async fn a_redeemed_refresh_token_names_its_portal_and_is_spent() {
    let t = TestPortal::start().await;
    let http = HttpClient::new().unwrap();
    let refresh = RefreshToken::new(t.install.refresh_token.clone());
    let grant =
        redeem_refresh_token(&http, &t.app, &refresh, Duration::from_secs(5)).await.unwrap();
    assert_eq!(grant.member_id, t.portal.member_id);
    assert_eq!(grant.domain, t.portal.domain, "the portal's host, not the auth server's domain");
    assert_eq!(grant.client_endpoint.as_str(), t.install.client_endpoint);
    assert_ne!(grant.refresh_token.as_ref().map(|r| r.expose()), Some(refresh.expose()));

    let again = redeem_refresh_token(&http, &t.app, &refresh, Duration::from_secs(5)).await;
    let error = again.unwrap_err();
    assert!(error.is_credentials_problem(), "a spent refresh token: {error}");
}

#[tokio::test]
async fn another_apps_refresh_token_is_refused_by_the_auth_server() {
    let t = TestPortal::start().await;
    let other =
        t.emu.register_app(AppSpec { scope: "bizproc".into(), ..AppSpec::default() }).client_id;
    t.emu.install_app(&t.portal.domain, &other).await.unwrap();
    let foreign = t.emu.issue_token(&t.portal.domain, &other, 1).unwrap();
    let http = HttpClient::new().unwrap();
    let refresh = RefreshToken::new(foreign.refresh_token);
    let error =
        redeem_refresh_token(&http, &t.app, &refresh, Duration::from_secs(5)).await.unwrap_err();
    assert!(
        matches!(&error, RefreshError::Rejected { error, .. } if error.code == "invalid_grant")
    );
    assert!(error.is_credentials_problem());
}

#[tokio::test]
async fn an_unreachable_auth_server_is_not_a_credentials_problem() {
    let t = TestPortal::start().await;
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", closed.local_addr().unwrap());
    drop(closed);
    let app = AppCredentials { auth_server: url.parse().unwrap(), ..t.app.clone() };
    let http = HttpClient::new().unwrap();
    let refresh = RefreshToken::new(t.install.refresh_token.clone());
    let error =
        redeem_refresh_token(&http, &app, &refresh, Duration::from_secs(5)).await.unwrap_err();
    assert!(matches!(error, RefreshError::Transport(_)), "{error:?}");
    assert!(!error.is_credentials_problem());
}

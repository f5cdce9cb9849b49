//! The fake identity platform and Graph: client-credentials tokens, simple uploads with each
//! conflict behaviour, their error shapes, token expiry and fault injection.

use std::time::Duration;

use fakes::faults::{Down, Failure};
use fakes::graph::{
    CLIENT_ID, DEFAULT_CLIENT_SECRET, DRIVE_ID, GRAPH_SCOPE, GraphApi, LIBRARY_WEB_URL, SITE_ID,
    TENANT, TENANT_ID,
};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use serde_json::Value;

use crate::support::{answer, assert_refused, client, json_body, percent_encode};

async fn start() -> GraphApi {
    GraphApi::start().await.expect("the fake starts")
}

/// Asks the token endpoint with this form body.
async fn token_request(api: &GraphApi, tenant: &str, form: &str) -> (StatusCode, Value) {
    let request = client()
        .post(format!("{}/{tenant}/oauth2/v2.0/token", api.identity_url()))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form.to_owned());
    let response = answer(request).await;
    (response.status(), response.json().await.expect("JSON"))
}

fn credentials(secret: &str) -> String {
    format!(
        "grant_type=client_credentials&client_id={CLIENT_ID}&client_secret={}&scope={}",
        encode(secret),
        encode(GRAPH_SCOPE)
    )
}

fn encode(text: &str) -> String {
    percent_encode(text, b"-._")
}

async fn access_token(api: &GraphApi) -> String {
    let (status, body) = token_request(api, TENANT, &credentials(DEFAULT_CLIENT_SECRET)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["access_token"].as_str().expect("a token").to_owned()
}

/// Uploads `bytes` to `path` (already percent-encoded) in the default library.
async fn upload(
    api: &GraphApi,
    token: &str,
    path: &str,
    conflict: Option<&str>,
    bytes: &[u8],
) -> reqwest::Response {
    let mut url =
        format!("{}/v1.0/sites/{SITE_ID}/drives/{DRIVE_ID}/root:/{path}:/content", api.graph_url());
    if let Some(conflict) = conflict {
        url.push_str(&format!("?@microsoft.graph.conflictBehavior={conflict}"));
    }
    let request = client()
        .put(url)
        .bearer_auth(token)
        .header(CONTENT_TYPE, "text/markdown; charset=utf-8")
        .body(bytes.to_vec());
    answer(request).await
}

#[tokio::test]
async fn client_credentials_give_a_bearer_token() {
    let api = start().await;
    for tenant in [TENANT, TENANT_ID] {
        let (status, body) = token_request(&api, tenant, &credentials(DEFAULT_CLIENT_SECRET)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 3599);
        assert!(body["access_token"].as_str().is_some_and(|t| t.starts_with("eyJ")));
    }
    assert_eq!(api.token_requests(), 2);
}

#[tokio::test]
async fn token_errors_have_the_identity_platforms_shape() {
    let api = start().await;
    let (status, body) = token_request(&api, TENANT, &credentials("wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_client");
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| d.starts_with("AADSTS7000215: Invalid client secret provided.")
                && !d.contains("wrong"))
    );
    assert_eq!(body["error_codes"][0], 7_000_215);

    let (status, body) =
        token_request(&api, "nowhere.onmicrosoft.com", &credentials(DEFAULT_CLIENT_SECRET)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error_description"].as_str().is_some_and(|d| d.starts_with("AADSTS90002")));

    let other_client = credentials(DEFAULT_CLIENT_SECRET)
        .replace(CLIENT_ID, "00000000-0000-0000-0000-000000000001");
    let (_, body) = token_request(&api, TENANT, &other_client).await;
    assert_eq!(body["error"], "unauthorized_client");

    let bad_scope = credentials(DEFAULT_CLIENT_SECRET).replace("%2F.default", "%2FUser.Read");
    let (_, body) = token_request(&api, TENANT, &bad_scope).await;
    assert_eq!(body["error"], "invalid_scope");

    let (_, body) = token_request(&api, TENANT, "grant_type=password").await;
    assert_eq!(body["error"], "unsupported_grant_type");
}

#[tokio::test]
async fn an_upload_creates_a_drive_item_and_keeps_the_bytes() {
    let api = start().await;
    let token = access_token(&api).await;
    let response = upload(
        &api,
        &token,
        "Approvals/%D0%A1%D0%B4%D0%B5%D0%BB%D0%BA%D0%B0%207.md",
        None,
        "# Deal 7\n".as_bytes(),
    )
    .await;
    let item = json_body(response, StatusCode::CREATED).await;
    assert_eq!(item["name"], "Сделка 7.md");
    assert_eq!(item["size"], 9);
    assert_eq!(item["file"]["mimeType"], "text/markdown");
    assert_eq!(
        item["webUrl"],
        format!("{LIBRARY_WEB_URL}/Approvals/%D0%A1%D0%B4%D0%B5%D0%BB%D0%BA%D0%B0%207.md")
    );
    assert_eq!(item["parentReference"]["path"], format!("/drives/{DRIVE_ID}/root:/Approvals"));
    assert_eq!(item["parentReference"]["siteId"], SITE_ID);
    assert!(item["id"].as_str().is_some_and(|id| id.len() == 34 && id.starts_with("01")));
    assert!(item["createdDateTime"].as_str().is_some_and(|d| d.ends_with('Z')));

    assert_eq!(api.file("approvals/сделка 7.md").as_deref(), Some("# Deal 7\n".as_bytes()));
    let uploads = api.uploads();
    assert_eq!(uploads[0].path, "Approvals/Сделка 7.md");
    assert_eq!(uploads[0].content_type.as_deref(), Some("text/markdown; charset=utf-8"));
}

#[tokio::test]
async fn conflict_behaviour_fail_replace_rename() {
    let api = start().await;
    let token = access_token(&api).await;
    let first: Value =
        upload(&api, &token, "r/report.md", None, b"one").await.json().await.expect("JSON");

    let response = upload(&api, &token, "r/report.md", Some("fail"), b"two").await;
    let body = json_body(response, StatusCode::CONFLICT).await;
    assert_eq!(body["error"]["code"], "nameAlreadyExists");
    assert_eq!(body["error"]["message"], "The specified item name already exists. Name: report.md");
    assert_eq!(api.file("r/report.md").as_deref(), Some(&b"one"[..]));

    let response = upload(&api, &token, "r/REPORT.md", Some("replace"), b"three").await;
    let replaced = json_body(response, StatusCode::OK).await;
    assert_eq!(replaced["id"], first["id"]);
    assert_eq!(api.file("r/report.md").as_deref(), Some(&b"three"[..]));

    let response = upload(&api, &token, "r/report.md", Some("rename"), b"four").await;
    let renamed = json_body(response, StatusCode::CREATED).await;
    assert_eq!(renamed["name"], "report 1.md");
    assert_ne!(renamed["id"], first["id"]);
    assert_eq!(api.file("r/report 1.md").as_deref(), Some(&b"four"[..]));
}

#[tokio::test]
async fn unknown_and_expired_tokens_are_invalid_authentication_tokens() {
    let api = start().await;
    let response = upload(&api, "eyJnot-issued", "x.md", None, b"x").await;
    assert!(response.headers().contains_key(WWW_AUTHENTICATE));
    let body = json_body(response, StatusCode::UNAUTHORIZED).await;
    assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");

    let token = access_token(&api).await;
    api.expire_tokens();
    let body: Value = upload(&api, &token, "x.md", None, b"x").await.json().await.expect("JSON");
    assert_eq!(body["error"]["message"], "Lifetime validation failed, the token is expired.");

    api.set_token_lifetime(Duration::from_millis(300));
    let (_, answer) = token_request(&api, TENANT, &credentials(DEFAULT_CLIENT_SECRET)).await;
    assert_eq!(answer["expires_in"], 0, "whole seconds, rounded down");
    let short = answer["access_token"].as_str().expect("a token").to_owned();
    assert_eq!(upload(&api, &short, "x.md", None, b"x").await.status(), StatusCode::CREATED);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(upload(&api, &short, "x.md", None, b"x").await.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn unknown_libraries_and_big_bodies_are_refused() {
    let api = start().await;
    let token = access_token(&api).await;
    let request = client()
        .put(format!("{}/v1.0/sites/nope/drives/{DRIVE_ID}/root:/x.md:/content", api.graph_url()))
        .bearer_auth(&token)
        .body("x");
    let response = answer(request).await;
    let body = json_body(response, StatusCode::NOT_FOUND).await;
    assert_eq!(body["error"]["code"], "itemNotFound");

    let big = vec![b'x'; 4 * 1024 * 1024 + 1];
    assert_eq!(
        upload(&api, &token, "big.txt", None, &big).await.status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert!(api.uploads().is_empty());
}

#[tokio::test]
async fn graph_faults_leave_the_token_endpoint_alone() {
    let api = start().await;
    api.update(|b| {
        b.fail_next.push_back(Failure::RateLimited(Duration::from_secs(4)));
        b.fail_next.push_back(Failure::RetryAfter(503, Duration::from_secs(2)));
    })
    .await;
    let token = access_token(&api).await;
    let response = upload(&api, &token, "x.md", None, b"x").await;
    assert_eq!(response.headers()[RETRY_AFTER], "4");
    let body = json_body(response, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(body["error"]["code"], "activityLimitReached");

    let response = upload(&api, &token, "x.md", None, b"x").await;
    assert_eq!(response.headers()[RETRY_AFTER], "2");
    let body = json_body(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body["error"]["code"], "serviceNotAvailable");

    assert_eq!(upload(&api, &token, "x.md", None, b"x").await.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn the_token_endpoint_can_be_down_on_its_own() {
    let api = start().await;
    api.update_identity(|b| b.down = Some(Down::Refuse)).await;
    assert_refused(client().post(format!("{}/{TENANT}/oauth2/v2.0/token", api.identity_url())))
        .await;
    api.update_identity(|b| b.down = Some(Down::Status(503))).await;
    let (status, body) = token_request(&api, TENANT, &credentials(DEFAULT_CLIENT_SECRET)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "temporarily_unavailable");
    api.update_identity(|b| b.down = None).await;
    access_token(&api).await;
}

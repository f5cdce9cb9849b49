//! The fake identity platform and Graph: client-credentials tokens, simple uploads with each
//! conflict behaviour, upload sessions on their own host, their error shapes, token expiry and
//! fault injection.

use std::time::Duration;

use fakes::faults::{Down, Failure};
use fakes::graph::{
    CLIENT_ID, DEFAULT_CLIENT_SECRET, DRIVE_ID, FRAGMENT_MULTIPLE, GRAPH_SCOPE, GraphApi,
    LIBRARY_WEB_URL, MAX_SIMPLE_UPLOAD, SITE_ID, TENANT, TENANT_ID,
};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, CONTENT_TYPE, IF_NONE_MATCH, RETRY_AFTER, WWW_AUTHENTICATE};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
async fn a_simple_upload_replaces_whatever_the_conflict_behaviour_unless_if_none_match() {
    let api = start().await;
    let token = access_token(&api).await;
    let first: Value =
        upload(&api, &token, "r/report.md", None, b"one").await.json().await.expect("JSON");
    for (conflict, bytes) in [("fail", &b"two"[..]), ("rename", b"three"), ("replace", b"four")] {
        let response = upload(&api, &token, "r/REPORT.md", Some(conflict), bytes).await;
        let replaced = json_body(response, StatusCode::OK).await;
        assert_eq!(replaced["id"], first["id"], "{conflict}");
        assert_eq!(api.file("r/report.md").as_deref(), Some(bytes), "{conflict}");
    }
    assert_eq!(api.paths(), ["r/report.md"]);

    let guarded = |path: &str, bytes: &'static [u8]| {
        let url = format!(
            "{}/v1.0/sites/{SITE_ID}/drives/{DRIVE_ID}/root:/{path}:/content",
            api.graph_url()
        );
        client().put(url).bearer_auth(&token).header(IF_NONE_MATCH, "*").body(bytes)
    };
    let refused =
        json_body(answer(guarded("r/report.md", b"five")).await, StatusCode::PRECONDITION_FAILED)
            .await;
    assert_eq!(refused["error"]["code"], "resourceModified");
    assert_eq!(api.file("r/report.md").as_deref(), Some(&b"four"[..]));
    assert_eq!(answer(guarded("r/new.md", b"six")).await.status(), StatusCode::CREATED);
    assert_eq!(api.uploads().last().and_then(|u| u.if_none_match.clone()).as_deref(), Some("*"));

    let url = format!(
        "{}/v1.0/sites/{SITE_ID}/drives/{DRIVE_ID}/root:/r/report.md:/createUploadSession",
        api.graph_url()
    );
    let body = json!({ "item": { "@microsoft.graph.conflictBehavior": "replace" } });
    let request = client().post(url).bearer_auth(&token).header(IF_NONE_MATCH, "*").json(&body);
    assert_eq!(answer(request).await.status(), StatusCode::PRECONDITION_FAILED);
}

#[tokio::test]
async fn names_sharepoint_refuses_are_invalid_requests_and_a_plus_must_be_encoded() {
    let api = start().await;
    let token = access_token(&api).await;
    for path in [
        "CON.md",
        "r/lpt9",
        "r/Com0.tar.gz",
        "~%24draft.docx",
        "r/a_VTI_b.md",
        "desktop.ini",
        "r/.lock",
        "Forms/x.md",
        "r/x%3Ay.md",
        "r/x.",
        "r/%20x.md",
    ] {
        let response = upload(&api, &token, path, None, b"x").await;
        let body = json_body(response, StatusCode::BAD_REQUEST).await;
        assert_eq!(body["error"]["code"], "invalidRequest", "{path}");
    }
    for path in ["CONSOLE.md", "r/com10.md", "r/Forms/x.md", "r/forms.md", "r/~draft.md"] {
        assert_eq!(
            upload(&api, &token, path, None, b"x").await.status(),
            StatusCode::CREATED,
            "{path}"
        );
    }

    // `/sites/approvals/Shared Documents/` is 34 characters of the 400.
    let longest = "x".repeat(400 - 34);
    assert_eq!(upload(&api, &token, &longest, None, b"x").await.status(), StatusCode::CREATED);
    let over = format!("{longest}y");
    let body =
        json_body(upload(&api, &token, &over, None, b"x").await, StatusCode::BAD_REQUEST).await;
    assert!(
        body["error"]["message"].as_str().is_some_and(|m| m.contains("401 characters")),
        "{body}"
    );
    let body = json!({ "item": { "@microsoft.graph.conflictBehavior": "replace" } });
    let refused = create_session(&api, &token, &over, body).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);

    let plain =
        json_body(upload(&api, &token, "2+2.md", None, b"x").await, StatusCode::CREATED).await;
    assert_eq!(plain["name"], "2 2.md", "a literal + is read as a space");
    let encoded =
        json_body(upload(&api, &token, "2%2B2.md", None, b"x").await, StatusCode::CREATED).await;
    assert_eq!(encoded["name"], "2+2.md");
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
async fn unknown_libraries_and_bodies_over_250_mib_are_refused() {
    let api = start().await;
    let token = access_token(&api).await;
    let request = client()
        .put(format!("{}/v1.0/sites/nope/drives/{DRIVE_ID}/root:/x.md:/content", api.graph_url()))
        .bearer_auth(&token)
        .body("x");
    let response = answer(request).await;
    let body = json_body(response, StatusCode::NOT_FOUND).await;
    assert_eq!(body["error"]["code"], "itemNotFound");

    // The declared length is refused before a byte of the body is read.
    let address = api.graph_url().replace("http://", "");
    let mut stream = tokio::net::TcpStream::connect(&address).await.expect("connects");
    let head = format!(
        "PUT /v1.0/sites/{SITE_ID}/drives/{DRIVE_ID}/root:/big.txt:/content HTTP/1.1\r\n\
         Host: {address}\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n",
        MAX_SIMPLE_UPLOAD + 1
    );
    stream.write_all(head.as_bytes()).await.expect("sent");
    let mut answer = vec![0; 4096];
    let read = stream.read(&mut answer).await.expect("answered");
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("invalidRequest"), "{answer}");
    assert!(api.uploads().is_empty());
}

/// `POST …:/createUploadSession` for `path` with this request body; the answer.
async fn create_session(api: &GraphApi, token: &str, path: &str, body: Value) -> reqwest::Response {
    let url = format!(
        "{}/v1.0/sites/{SITE_ID}/drives/{DRIVE_ID}/root:/{path}:/createUploadSession",
        api.graph_url()
    );
    answer(client().post(url).bearer_auth(token).json(&body)).await
}

/// The `uploadUrl` of a new session for `path` with this conflict behaviour.
async fn session(api: &GraphApi, token: &str, path: &str, conflict: &str) -> String {
    let body = json!({ "item": { "@microsoft.graph.conflictBehavior": conflict } });
    let session = json_body(create_session(api, token, path, body).await, StatusCode::OK).await;
    session["uploadUrl"].as_str().expect("an upload URL").to_owned()
}

/// `PUT`s `bytes[start..end]` of `bytes` to the session, without a token.
async fn fragment(url: &str, bytes: &[u8], start: usize, end: usize) -> reqwest::Response {
    let range = format!("bytes {start}-{}/{}", end - 1, bytes.len());
    let request = client().put(url).header(CONTENT_RANGE, range).body(bytes[start..end].to_vec());
    answer(request).await
}

async fn next_expected(response: reqwest::Response, status: StatusCode) -> Value {
    json_body(response, status).await["nextExpectedRanges"].clone()
}

#[tokio::test]
async fn an_upload_session_takes_fragments_in_order_on_the_upload_host() {
    let api = start().await;
    let token = access_token(&api).await;
    let body = json!({ "item": { "@microsoft.graph.conflictBehavior": "replace" } });
    let created =
        json_body(create_session(&api, &token, "Big/blob.bin", body).await, StatusCode::OK).await;
    assert_eq!(created["nextExpectedRanges"], json!(["0-"]));
    assert!(created["expirationDateTime"].as_str().is_some_and(|d| d.ends_with('Z')));
    let url = created["uploadUrl"].as_str().expect("an upload URL");
    assert!(
        url.starts_with(&format!("{}/_api/v2.0/uploadSession?", api.upload_host_url())),
        "{url}"
    );
    assert!(url.contains("tempauth="), "pre-authenticated: {url}");

    let blob: Vec<u8> = (0..700_000u32).map(|n| (n % 251) as u8).collect();
    let first = fragment(url, &blob, 0, FRAGMENT_MULTIPLE).await;
    assert_eq!(next_expected(first, StatusCode::ACCEPTED).await, json!(["327680-"]));
    let state = answer(client().get(url)).await;
    assert_eq!(next_expected(state, StatusCode::OK).await, json!(["327680-699999"]));
    let second = fragment(url, &blob, FRAGMENT_MULTIPLE, 2 * FRAGMENT_MULTIPLE).await;
    assert_eq!(second.status(), StatusCode::ACCEPTED);
    assert!(api.file("Big/blob.bin").is_none(), "nothing stored before the last byte");
    let last = fragment(url, &blob, 2 * FRAGMENT_MULTIPLE, blob.len()).await;
    let item = json_body(last, StatusCode::CREATED).await;
    assert_eq!(item["name"], "blob.bin");
    assert_eq!(item["size"], 700_000);
    assert_eq!(api.file("Big/blob.bin").as_deref(), Some(&blob[..]));
    let upload = &api.uploads()[0];
    assert_eq!((upload.fragments, upload.conflict_behavior.as_deref()), (Some(3), Some("replace")));
    assert_eq!(upload.content_type, None);
    let finished = answer(client().get(url)).await;
    assert_eq!(json_body(finished, StatusCode::NOT_FOUND).await["error"]["code"], "itemNotFound");
    assert_eq!(api.upload_host_requests(), 5);
}

#[tokio::test]
async fn fragments_out_of_place_misshapen_or_with_a_token_are_refused() {
    let api = start().await;
    let token = access_token(&api).await;
    let url = session(&api, &token, "blob.bin", "replace").await;
    let blob = vec![7u8; 2 * FRAGMENT_MULTIPLE];

    let ahead = fragment(&url, &blob, FRAGMENT_MULTIPLE, blob.len()).await;
    let refused = json_body(ahead, StatusCode::RANGE_NOT_SATISFIABLE).await;
    assert_eq!(refused["error"]["code"], "invalidRange");
    let odd = fragment(&url, &blob, 0, 1000).await;
    assert_eq!(json_body(odd, StatusCode::BAD_REQUEST).await["error"]["code"], "invalidRequest");
    let short = client()
        .put(&url)
        .header(CONTENT_RANGE, format!("bytes 0-{}/{}", FRAGMENT_MULTIPLE - 1, blob.len()))
        .body(vec![7u8; 10]);
    assert_eq!(answer(short).await.status(), StatusCode::BAD_REQUEST);
    let no_range = client().put(&url).body(vec![7u8; 10]);
    assert_eq!(answer(no_range).await.status(), StatusCode::BAD_REQUEST);
    let with_token =
        client().put(&url).bearer_auth(&token).header(CONTENT_RANGE, "bytes 0-0/1").body("x");
    let refused = json_body(answer(with_token).await, StatusCode::UNAUTHORIZED).await;
    assert_eq!(refused["error"]["code"], "unauthenticated");
    let forged = url.replace("tempauth=", "tempauth=x");
    assert_eq!(answer(client().get(forged)).await.status(), StatusCode::NOT_FOUND);

    let state = answer(client().get(&url)).await;
    assert_eq!(next_expected(state, StatusCode::OK).await, json!(["0-"]), "nothing taken");
    let first = fragment(&url, &blob, 0, FRAGMENT_MULTIPLE).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let again = fragment(&url, &blob, 0, FRAGMENT_MULTIPLE).await;
    assert_eq!(again.status(), StatusCode::RANGE_NOT_SATISFIABLE, "a fragment taken twice");
    let other_total = client()
        .put(&url)
        .header(CONTENT_RANGE, format!("bytes {FRAGMENT_MULTIPLE}-{FRAGMENT_MULTIPLE}/999999"))
        .body("x");
    assert_eq!(answer(other_total).await.status(), StatusCode::BAD_REQUEST);
    assert!(api.uploads().is_empty());
}

#[tokio::test]
async fn a_session_applies_its_conflict_behaviour_when_created_and_at_the_last_byte() {
    let api = start().await;
    let token = access_token(&api).await;
    api.put_file("r/report.md", b"one");
    let body = json!({ "item": { "@microsoft.graph.conflictBehavior": "fail" } });
    let refused =
        json_body(create_session(&api, &token, "r/report.md", body).await, StatusCode::CONFLICT)
            .await;
    assert_eq!(refused["error"]["code"], "nameAlreadyExists");

    let url = session(&api, &token, "r/late.md", "fail").await;
    api.put_file("r/late.md", b"someone else's");
    let late = json_body(fragment(&url, b"mine", 0, 4).await, StatusCode::CONFLICT).await;
    assert_eq!(late["error"]["message"], "The specified item name already exists. Name: late.md");
    assert_eq!(api.file("r/late.md").as_deref(), Some(&b"someone else's"[..]));

    let url = session(&api, &token, "r/report.md", "rename").await;
    let renamed = json_body(fragment(&url, b"two", 0, 3).await, StatusCode::CREATED).await;
    assert_eq!(renamed["name"], "report 1.md");

    // Outside `item` the annotation is ignored: the file is replaced.
    let top_level = json!({ "@microsoft.graph.conflictBehavior": "fail" });
    let created =
        json_body(create_session(&api, &token, "r/report.md", top_level).await, StatusCode::OK)
            .await;
    let url = created["uploadUrl"].as_str().expect("an upload URL");
    assert_eq!(fragment(url, b"three", 0, 5).await.status(), StatusCode::OK);
    assert_eq!(api.file("r/report.md").as_deref(), Some(&b"three"[..]));
}

#[tokio::test]
async fn a_lost_fragment_answer_leaves_the_fragment_taken() {
    let api = start().await;
    let token = access_token(&api).await;
    let url = session(&api, &token, "blob.bin", "replace").await;
    let blob = vec![1u8; FRAGMENT_MULTIPLE + 10];
    api.lose_next_fragment_answers(1);
    let lost = fragment(&url, &blob, 0, FRAGMENT_MULTIPLE).await;
    assert_eq!(
        json_body(lost, StatusCode::GATEWAY_TIMEOUT).await["error"]["code"],
        "serviceNotAvailable"
    );
    let state = answer(client().get(&url)).await;
    assert_eq!(next_expected(state, StatusCode::OK).await, json!(["327680-327689"]));
    let last = fragment(&url, &blob, FRAGMENT_MULTIPLE, blob.len()).await;
    assert_eq!(last.status(), StatusCode::CREATED);
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

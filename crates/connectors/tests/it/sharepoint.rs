//! The `sharepoint` connector against the fake identity platform and Graph: the file and bytes
//! the library gets, escaping for each format, names made safe, conflict behaviour, token caching
//! and the one refresh on a refused token, every error class, and no secret in reasons or `Debug`.

use std::sync::Arc;
use std::time::Duration;

use connectors::http::WithClient;
use connectors::sharepoint::{SharePointConfig, SharePointConnector, SharePointError};
use connectors::template::{Escape, Template};
use connectors::{Connector, ConnectorError, ConnectorRequest};
use fakes::faults::{Down, Failure};
use fakes::graph::{
    CLIENT_ID, DEFAULT_CLIENT_SECRET, DRIVE_ID, GraphApi, LIBRARY_WEB_URL, SITE_ID, TENANT,
};
use serde_json::{Value, json};

use crate::{
    assert_hides, assert_reason_contains, connector, deal_call, fatal_error, fatal_with, own_error,
    rejected, rejected_with, retryable_error, with_setting, with_settings,
};

async fn start() -> GraphApi {
    GraphApi::start().await.expect("the fake Graph starts")
}

/// The example of docs/connectors.md, pointed at the fake.
fn settings(graph: &GraphApi) -> Value {
    json!({
        "kind": "sharepoint",
        "tenant": TENANT,
        "client_id": CLIENT_ID,
        "client_secret": DEFAULT_CLIENT_SECRET,
        "authority": graph.identity_url(),
        "graph_url": graph.graph_url(),
        "site_id": SITE_ID,
        "drive_id": DRIVE_ID,
        "folder": "Approvals/{{document.id}}",
        "file_name": "credit-check-{{document.id}}.md",
        "format": "markdown",
        "content": "# Credit check for {{properties.company_name}}\n\nAmount: {{properties.amount}} RUB, requested in {{document.id}}.\n",
        "timeout": "5s",
    })
}

fn call() -> ConnectorRequest {
    deal_call("archive_check")
        .with_property("company_name", "Ромашка")
        .with_property("amount", 1500.5)
}

/// What must appear in no error: the client secret and any token (a JWT's start).
const SECRETS: &[&str] = &[DEFAULT_CLIENT_SECRET, "eyJ0eXAi"];

#[tokio::test]
async fn creates_the_document_and_returns_its_id_and_url() {
    let graph = start().await;
    let outputs = connector(&settings(&graph)).run(&call()).await.expect("created");
    let uploads = graph.uploads();
    assert_eq!(uploads.len(), 1);
    let upload = &uploads[0];
    assert_eq!(upload.path, "Approvals/DEAL_7/credit-check-DEAL_7.md");
    assert_eq!(upload.status, 201);
    assert_eq!(upload.conflict_behavior.as_deref(), Some("replace"));
    assert_eq!(upload.content_type.as_deref(), Some("text/markdown; charset=utf-8"));
    assert_eq!(
        String::from_utf8(upload.bytes.clone()).expect("UTF-8"),
        "# Credit check for Ромашка\n\nAmount: 1500.5 RUB, requested in DEAL\\_7.\n"
    );
    assert_eq!(outputs.values["document_id"], upload.item_id.as_str());
    assert_eq!(
        outputs.values["document_url"],
        format!("{LIBRARY_WEB_URL}/Approvals/DEAL_7/credit-check-DEAL_7.md")
    );
    assert!(
        outputs.log.as_deref().is_some_and(|l| l.starts_with(
            "SharePoint: created `Approvals/DEAL_7/credit-check-DEAL_7.md` (77 bytes): https://"
        )),
        "{:?}",
        outputs.log
    );
}

#[tokio::test]
async fn the_token_is_cached_across_calls() {
    let graph = start().await;
    let connector = connector(&settings(&graph));
    for _ in 0..3 {
        connector.run(&call()).await.expect("uploaded");
    }
    assert_eq!(graph.token_requests(), 1);
    assert_eq!(graph.graph_requests(), 3);
}

#[tokio::test]
async fn concurrent_calls_fetch_one_token() {
    let graph = start().await;
    graph.update_identity(|b| b.latency = Duration::from_millis(200)).await;
    let connector = connector(&settings(&graph));
    let calls: Vec<ConnectorRequest> = (0..5)
        .map(|n| {
            let mut request = call();
            request.document.id = format!("DEAL_{n}");
            request
        })
        .collect();
    let results = futures_join(connector.clone(), calls).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(graph.token_requests(), 1, "single flight");
    assert_eq!(graph.uploads().len(), 5);
}

async fn futures_join(
    connector: Arc<dyn Connector>,
    calls: Vec<ConnectorRequest>,
) -> Vec<Result<connectors::Outputs, ConnectorError>> {
    let tasks: Vec<_> = calls
        .into_iter()
        .map(|request| {
            let connector = connector.clone();
            tokio::spawn(async move { connector.run(&request).await })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("the task ran"));
    }
    results
}

#[tokio::test]
async fn an_expired_token_is_refreshed_once_and_the_upload_succeeds() {
    let graph = start().await;
    let connector = connector(&settings(&graph));
    connector.run(&call()).await.expect("first upload");
    graph.expire_tokens();
    let outputs = connector.run(&call()).await.expect("refreshed and uploaded");
    assert!(outputs.values.contains_key("document_id"));
    assert_eq!(graph.token_requests(), 2);
    assert_eq!(graph.graph_requests(), 3, "one refused, one retried");
}

#[tokio::test]
async fn a_short_lived_token_is_renewed_before_it_expires() {
    let graph = start().await;
    graph.set_token_lifetime(Duration::from_secs(1));
    let connector = connector(&settings(&graph));
    connector.run(&call()).await.expect("first upload");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    connector.run(&call()).await.expect("second upload");
    assert_eq!(graph.token_requests(), 2);
    assert_eq!(graph.graph_requests(), 2, "no request with an expired token");
}

#[tokio::test]
async fn a_token_refused_twice_is_fatal_without_a_loop() {
    let graph = start().await;
    graph
        .update(|b| {
            b.fail_next.extend([Failure::Status(401), Failure::Status(401), Failure::Status(401)])
        })
        .await;
    let error = fatal_error(&connector(&settings(&graph)), &call()).await;
    assert!(
        error
            .reason()
            .starts_with("SharePoint: Graph answered 401 Unauthorized InvalidAuthenticationToken"),
        "{error}"
    );
    assert_eq!(graph.token_requests(), 2);
    assert_eq!(graph.graph_requests(), 2);
    assert_hides(&error, SECRETS);
}

#[tokio::test]
async fn a_wrong_secret_is_fatal_and_not_echoed() {
    let graph = start().await;
    graph.set_client_secret("rotated~secret");
    let error = fatal_error(&connector(&settings(&graph)), &call()).await;
    assert_eq!(
        error.reason(),
        "SharePoint: the identity platform answered 401 Unauthorized: invalid_client: AADSTS7000215: \
         Invalid client secret provided. Ensure the secret being sent in the request is the client \
         secret value, not the client secret ID, for a secret added to app \
         '6731de76-14a6-49ae-97bc-6eba6914391e'."
    );
    assert!(matches!(own_error::<SharePointError>(&error), SharePointError::Token { .. }));
    assert_hides(&error, SECRETS);
    assert_eq!(graph.graph_requests(), 0);
}

#[tokio::test]
async fn an_unknown_tenant_is_fatal() {
    let graph = start().await;
    let tenant = json!("fabrikam.onmicrosoft.com");
    let error = fatal_with(&settings(&graph), "tenant", tenant, &call()).await;
    assert_reason_contains(&error, "AADSTS90002: Tenant 'fabrikam.onmicrosoft.com' not found");
}

const PATH: &str = "Approvals/DEAL_7/credit-check-DEAL_7.md";

#[tokio::test]
async fn conflict_fail_keeps_an_existing_file_where_a_simple_upload_would_replace_it() {
    let graph = start().await;
    let fail = connector(&with_setting(&settings(&graph), "conflict", json!("fail")));
    fail.run(&call()).await.expect("created, as there was no such file");
    let created = &graph.uploads()[0];
    assert_eq!(created.if_none_match.as_deref(), Some("*"));
    assert_eq!(created.conflict_behavior.as_deref(), Some("fail"));

    // Graph's simple upload replaces whatever conflictBehavior says; If-None-Match: * is 412.
    graph.put_file(PATH, b"someone else's");
    let error = fatal_error(&fail, &call()).await;
    assert_eq!(
        error.reason(),
        "SharePoint: `Approvals/DEAL_7/credit-check-DEAL_7.md` already exists in the library and \
         conflict = \"fail\"; set conflict to \"replace\" or \"rename\", or make file_name unique"
    );
    assert_eq!(graph.file(PATH).as_deref(), Some(&b"someone else's"[..]));
    assert_eq!(graph.uploads().len(), 1);
}

#[tokio::test]
async fn conflict_fail_through_an_upload_session_is_checked_when_created_and_at_the_last_byte() {
    let graph = start().await;
    let settings = blob_settings(
        &graph,
        json!({ "conflict": "fail", "simple_upload_max_bytes": 0, "chunk_bytes": 327_680 }),
    );
    let fail = connector(&settings);
    graph.put_file(BLOB_PATH, b"someone else's");
    let error = fatal_error(&fail, &call().with_property("blob", blob(1000))).await;
    assert_reason_contains(&error, "`Approvals/DEAL_7/blob.txt` already exists");
    assert_eq!(graph.upload_host_requests(), 0, "refused when the session was asked for");

    // The file appears while the session runs (its first fragment held back): the last
    // fragment is refused.
    let mut request = call().with_property("blob", blob(700_000));
    request.document.id = "DEAL_8".to_owned();
    let slow = Failure::Slow(Duration::from_millis(300));
    graph.update_upload_host(|b| b.fail_next.push_back(slow)).await;
    let racing = {
        let fail = fail.clone();
        tokio::spawn(async move { fail.run(&request).await })
    };
    for _ in 0..200 {
        if graph.upload_host_requests() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    graph.put_file("Approvals/DEAL_8/blob.txt", b"faster");
    let error = racing.await.expect("ran").expect_err("refused at the last byte");
    assert!(!error.is_retryable());
    assert_reason_contains(&error, "`Approvals/DEAL_8/blob.txt` already exists");
    assert_eq!(graph.upload_host_requests(), 3, "every fragment sent");
    assert_eq!(graph.file("Approvals/DEAL_8/blob.txt").as_deref(), Some(&b"faster"[..]));
}

#[tokio::test]
async fn conflict_replace_keeps_the_id_and_rename_makes_a_second_file_through_a_session() {
    let graph = start().await;
    let replace = connector(&settings(&graph));
    let first = replace.run(&call()).await.expect("created");
    let again = replace.run(&call()).await.expect("replaced");
    assert_eq!(first.values["document_id"], again.values["document_id"]);
    assert!(again.log.as_deref().is_some_and(|l| l.starts_with("SharePoint: replaced")));
    assert!(graph.uploads().iter().all(|u| u.if_none_match.is_none() && u.fragments.is_none()));

    let settings = with_setting(&settings(&graph), "conflict", json!("rename"));
    let renamed = connector(&settings).run(&call()).await.expect("renamed");
    assert_ne!(renamed.values["document_id"], first.values["document_id"]);
    assert!(
        renamed.values["document_url"]
            .as_str()
            .is_some_and(|u| u.ends_with("credit-check-DEAL_7%201.md"))
    );
    assert!(
        renamed.log.as_deref().is_some_and(|l| l.contains("as `credit-check-DEAL_7 1.md`")),
        "{:?}",
        renamed.log
    );
    assert_eq!(graph.paths().len(), 2);
    let upload = graph.uploads().pop().expect("the renamed upload");
    assert_eq!((upload.fragments, upload.conflict_behavior.as_deref()), (Some(1), Some("rename")));

    let empty = with_settings(&settings, json!({ "content": "{{properties.note?}}" }));
    let error = fatal_error(&connector(&empty), &call()).await;
    assert_reason_contains(&error, "conflict = \"rename\" needs an upload session");
}

#[tokio::test]
async fn names_are_made_safe_and_folders_cannot_be_added_by_values() {
    let graph = start().await;
    let settings = with_settings(
        &settings(&graph),
        json!({
            "folder": "Deals/{{properties.company_name}}",
            "file_name": "{{properties.title}}.txt",
            "format": "text",
            "content": "{{properties.title}}",
        }),
    );
    let request = call()
        .with_property("company_name", "../A/B: \"C\"?")
        .with_property("title", "Q1 * report | <draft> ");
    connector(&settings).run(&request).await.expect("uploaded");
    let upload = &graph.uploads()[0];
    assert_eq!(upload.path, "Deals/.._A_B_ _C__/Q1 _ report _ _draft_ .txt");
    assert_eq!(upload.bytes, b"Q1 * report | <draft> ");
    assert_eq!(upload.content_type.as_deref(), Some("text/plain; charset=utf-8"));
}

#[tokio::test]
async fn a_plus_in_a_name_is_stored_as_a_plus() {
    let graph = start().await;
    let names = json!({ "folder": "Deals/{{properties.company_name}}", "file_name": "Q1+Q2 {{document.id}}.md" });
    let settings = with_settings(&settings(&graph), names);
    let request = call().with_property("company_name", "A+B");
    connector(&settings).run(&request).await.expect("uploaded");
    assert_eq!(graph.uploads()[0].path, "Deals/A+B/Q1+Q2 DEAL_7.md");
}

#[tokio::test]
async fn names_sharepoint_refuses_are_fatal_before_any_request_naming_the_rule() {
    let graph = start().await;
    let names = json!({ "folder": "{{properties.area?}}", "file_name": "{{properties.title}}" });
    let settings = with_settings(&settings(&graph), names);
    let connector = connector(&settings);
    for (area, title, shown, rule) in [
        ("", "CON.md", "file_name renders `CON.md`", "are device names"),
        ("", "lpt1", "file_name renders `lpt1`", "are device names"),
        ("", "desktop.ini", "file_name renders `desktop.ini`", "reserved names"),
        ("", "~$offer.docx", "file_name renders `~$offer.docx`", "start with `~$`"),
        ("x", "a_vti_b.md", "file_name renders `a_vti_b.md`", "`_vti_` may not appear"),
        ("Forms", "a.md", "folder renders `Forms`", "the library's own"),
        ("Aux ", "a.md", "folder renders `Aux`", "are device names"),
    ] {
        let request = call().with_property("area", area).with_property("title", title);
        let error = fatal_error(&connector, &request).await;
        let reason = error.reason();
        assert!(
            reason.starts_with(&format!("SharePoint: {shown}, which SharePoint refuses: ")),
            "{reason}"
        );
        assert!(reason.contains(rule), "{reason}");
    }
    assert_eq!(graph.token_requests() + graph.graph_requests(), 0);
}

#[tokio::test]
async fn a_path_over_400_characters_is_fatal_and_graph_counts_the_library_in() {
    let graph = start().await;
    let settings = with_setting(&settings(&graph), "file_name", json!("{{properties.title}}"));
    let connector = connector(&settings);
    // `Approvals/DEAL_7/` is 17 characters.
    let error = fatal_error(&connector, &call().with_property("title", "я".repeat(384))).await;
    assert!(
        error.reason().starts_with("SharePoint: the path `Approvals/DEAL_7/яяя")
            && error.reason().ends_with(
                "…` is 401 characters; SharePoint takes at most 400, the library's own path included"
            ),
        "{error}"
    );
    assert_eq!(graph.graph_requests(), 0);

    // Under 400 here, over it with `/sites/approvals/Shared Documents/`: Graph refuses.
    let error = fatal_error(&connector, &call().with_property("title", "я".repeat(383))).await;
    assert_reason_contains(&error, "Graph answered 400 Bad Request invalidRequest");
    assert_reason_contains(&error, "with the library's");
    connector.run(&call().with_property("title", "я".repeat(400 - 34 - 17))).await.expect("fits");
}

#[tokio::test]
async fn html_and_csv_values_are_escaped() {
    let graph = start().await;
    let html = json!({
        "format": "html",
        "file_name": "{{document.id}}.html",
        "content": "<p>{{properties.company_name}}</p>",
    });
    let settings = with_settings(&settings(&graph), html);
    let request = call().with_property("company_name", "<script>alert('x')</script> & Co");
    connector(&settings).run(&request).await.expect("uploaded");
    assert_eq!(
        graph.file("Approvals/DEAL_7/DEAL_7.html").as_deref(),
        Some("<p>&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; Co</p>".as_bytes())
    );

    let csv = json!({
        "format": "csv",
        "file_name": "{{document.id}}.csv",
        "content": "company,amount\n{{properties.company_name}},{{properties.amount}}\n",
    });
    let settings = with_settings(&settings, csv);
    let request = call().with_property("company_name", "=HYPERLINK(\"x\"), Inc");
    connector(&settings).run(&request).await.expect("uploaded");
    assert_eq!(
        String::from_utf8(graph.file("Approvals/DEAL_7/DEAL_7.csv").expect("stored"))
            .expect("UTF-8"),
        "company,amount\n\"'=HYPERLINK(\"\"x\"\"), Inc\",1500.5\n"
    );
}

#[tokio::test]
async fn throttling_and_unavailability_are_retryable_with_retry_after() {
    let graph = start().await;
    let connector = connector(&settings(&graph));
    graph.update(|b| b.fail_next.push_back(Failure::RateLimited(Duration::from_secs(7)))).await;
    let error = retryable_error(&connector, &call()).await;
    assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
    assert!(
        error
            .reason()
            .starts_with("SharePoint: Graph answered 429 Too Many Requests activityLimitReached"),
        "{error}"
    );
    assert_hides(&error, SECRETS);

    graph.update(|b| b.fail_next.push_back(Failure::RetryAfter(503, Duration::from_secs(2)))).await;
    let error = retryable_error(&connector, &call()).await;
    assert_eq!(error.retry_after(), Some(Duration::from_secs(2)));
    assert_reason_contains(&error, "serviceNotAvailable");

    graph.update(|b| b.fail_next.push_back(Failure::Status(423))).await;
    assert!(connector.run(&call()).await.unwrap_err().is_retryable(), "a locked file");

    graph
        .update_identity(|b| {
            b.fail_next.push_back(Failure::RetryAfter(503, Duration::from_secs(5)))
        })
        .await;
    graph.expire_tokens();
    let error = retryable_error(&connector, &call()).await;
    assert_eq!(error.retry_after(), Some(Duration::from_secs(5)));
    assert!(
        error.reason().starts_with("SharePoint: the identity platform answered 503"),
        "{error}"
    );

    connector.run(&call()).await.expect("recovered");
}

#[tokio::test]
async fn unreachable_and_slow_services_are_retryable() {
    let graph = start().await;
    let connector = connector(&settings(&graph));
    graph.update_identity(|b| b.down = Some(Down::Refuse)).await;
    let error = retryable_error(&connector, &call()).await;
    assert!(error.reason().starts_with("SharePoint token endpoint: could not connect"), "{error}");
    graph.update_identity(|b| b.down = None).await;

    graph.update(|b| b.latency = Duration::from_secs(10)).await;
    let mut request = call();
    request.attempt_timeout = Some(Duration::from_millis(300));
    let error = retryable_error(&connector, &request).await;
    assert_eq!(error.reason(), "SharePoint Graph: no answer within 300ms");
    assert_hides(&error, SECRETS);
}

#[tokio::test]
async fn a_wrong_library_and_denied_access_are_fatal() {
    let graph = start().await;
    let error = fatal_with(&settings(&graph), "drive_id", json!("b!nope"), &call()).await;
    assert!(
        error.reason().contains("404 Not Found itemNotFound")
            && error.reason().ends_with("(check site_id and drive_id)"),
        "{error}"
    );

    let graph = start().await;
    graph.update(|b| b.fail_next.push_back(Failure::Status(403))).await;
    let error = fatal_error(&connector(&settings(&graph)), &call()).await;
    assert_reason_contains(&error, "Sites.ReadWrite.All");
    assert_reason_contains(&error, "Sites.Selected and a write grant on this site");
}

/// Settings whose content is the property `blob` as is, with `changes` on top.
fn blob_settings(graph: &GraphApi, changes: Value) -> Value {
    let blob =
        json!({ "format": "text", "file_name": "blob.txt", "content": "{{properties.blob}}" });
    with_settings(&with_settings(&settings(graph), blob), changes)
}

/// `len` bytes of text that differ along the way, so a fragment in the wrong place shows.
fn blob(len: usize) -> String {
    (0..len).map(|n| char::from(b'a' + (n % 26) as u8)).collect()
}

const BLOB_PATH: &str = "Approvals/DEAL_7/blob.txt";

#[tokio::test]
async fn content_over_four_mebibytes_goes_through_an_upload_session_without_the_token() {
    let graph = start().await;
    let connector = connector(&blob_settings(&graph, json!({ "chunk_bytes": 2 * 327_680 })));
    let at_the_limit = blob(4 * 1024 * 1024);
    connector.run(&call().with_property("blob", at_the_limit.as_str())).await.expect("stored");
    assert_eq!(graph.uploads()[0].fragments, None, "4 MiB goes in one request");

    let over = blob(4 * 1024 * 1024 + 1);
    let outputs =
        connector.run(&call().with_property("blob", over.as_str())).await.expect("stored");
    let upload = &graph.uploads()[1];
    assert_eq!(upload.fragments, Some(7), "4 MiB + 1 in fragments of 640 KiB");
    assert_eq!(graph.file(BLOB_PATH).as_deref(), Some(over.as_bytes()));
    assert_eq!(outputs.values["document_id"], upload.item_id.as_str());
    assert!(
        outputs.log.as_deref().is_some_and(|l| l.starts_with(
            "SharePoint: replaced `Approvals/DEAL_7/blob.txt` (4194305 bytes, through an upload session in 7 fragments): https://"
        )),
        "{:?}",
        outputs.log
    );
    // The simple upload, then createUploadSession; the fragments went to the upload host, which
    // refuses any request that carries the bearer token.
    assert_eq!((graph.graph_requests(), graph.upload_host_requests()), (2, 7));
    assert_eq!(graph.token_requests(), 1);
}

#[tokio::test]
async fn a_failed_fragment_goes_on_where_the_session_says() {
    let graph = start().await;
    let settings = json!({ "simple_upload_max_bytes": 0, "chunk_bytes": 327_680 });
    let connector = connector(&blob_settings(&graph, settings));
    let content = blob(700_000);
    let request = call().with_property("blob", content.as_str());

    // The second fragment is refused before it is taken: asked, the session says to send it again.
    graph
        .update_upload_host(|b| {
            b.fail_next.extend([Failure::Slow(Duration::ZERO), Failure::Status(503)])
        })
        .await;
    connector.run(&request).await.expect("stored");
    assert_eq!(graph.file(BLOB_PATH).as_deref(), Some(content.as_bytes()));
    assert_eq!(graph.uploads()[0].fragments, Some(3));
    assert_eq!(graph.upload_host_requests(), 5, "3 fragments, 1 refused, 1 question");

    // The first fragment is taken but its answer lost: asked, the session says to go on after it,
    // so nothing is sent twice (sent again, it would be answered 416).
    graph.lose_next_fragment_answers(1);
    connector.run(&request).await.expect("stored");
    assert_eq!(graph.uploads()[1].fragments, Some(3));
    assert_eq!(graph.upload_host_requests(), 5 + 4, "3 fragments and 1 question");
}

#[tokio::test]
async fn a_session_that_keeps_failing_or_is_gone_leaves_it_to_the_next_attempt() {
    let graph = start().await;
    let settings = json!({ "simple_upload_max_bytes": 0, "chunk_bytes": 327_680 });
    let connector = connector(&blob_settings(&graph, settings));
    let request = call().with_property("blob", blob(1000));
    let answered = Failure::Slow(Duration::ZERO);
    graph
        .update_upload_host(|b| {
            b.fail_next.extend([Failure::Status(503), answered, Failure::Status(503), answered]);
            b.fail_next.extend([Failure::Status(503), answered, Failure::Status(503)]);
        })
        .await;
    let error = retryable_error(&connector, &request).await;
    assert!(error.reason().starts_with("SharePoint: Graph answered 503"), "{error}");
    assert_eq!(graph.upload_host_requests(), 7, "the fragment 4 times, 3 questions in between");

    graph.update_upload_host(|b| b.fail_next.push_back(Failure::Status(404))).await;
    let error = retryable_error(&connector, &request).await;
    assert_eq!(
        error.reason(),
        "SharePoint: the upload session is gone (its URL answered 404); the next attempt starts a new one"
    );
    connector.run(&request).await.expect("a new session");
    assert!(graph.uploads().iter().all(|u| u.fragments == Some(1)));
}

#[tokio::test]
async fn content_over_max_content_bytes_is_fatal_before_any_request() {
    let graph = start().await;
    let settings = blob_settings(&graph, json!({ "max_content_bytes": 1000 }));
    let error = fatal_error(&connector(&settings), &call().with_property("blob", blob(1001))).await;
    assert_eq!(
        error.reason(),
        "SharePoint: the content is 1001 bytes; max_content_bytes allows 1000 (raise it, or make the content smaller)"
    );
    assert_eq!(graph.token_requests() + graph.graph_requests(), 0);
}

#[tokio::test]
async fn a_name_that_renders_empty_is_fatal() {
    let graph = start().await;
    let file_name = json!("{{properties.title}}");
    let request = call().with_property("title", " .. ");
    let error = fatal_with(&settings(&graph), "file_name", file_name, &request).await;
    assert_eq!(error.reason(), "SharePoint: file_name renders an empty name in `Approvals/DEAL_7`");
}

#[tokio::test]
async fn the_contract_and_debug() {
    let graph = start().await;
    let mut settings = settings(&graph);
    settings["document_id_property"] = json!("sp_id");
    let connector = connector(&settings);
    let contract = connector.contract().expect("a contract");
    assert_eq!(contract.inputs.into_iter().collect::<Vec<_>>(), ["amount", "company_name"]);
    assert_eq!(contract.outputs.into_iter().collect::<Vec<_>>(), ["document_url", "sp_id"]);
    settings.as_object_mut().map(|m| m.remove("kind"));
    let config: SharePointConfig = serde_json::from_value(settings).expect("parses");
    assert!(!format!("{config:?}").contains(DEFAULT_CLIENT_SECRET));
    let connector = SharePointConnector::new(config).expect("valid");
    let debug = format!("{connector:?}");
    assert!(!debug.contains(DEFAULT_CLIENT_SECRET) && debug.contains("<redacted>"), "{debug}");
}

#[test]
fn config_errors_name_the_key() {
    let base = json!({
        "kind": "sharepoint", "tenant": TENANT, "client_id": CLIENT_ID,
        "client_secret": DEFAULT_CLIENT_SECRET, "site_id": SITE_ID, "drive_id": DRIVE_ID,
        "file_name": "x.md", "content": "x",
    });
    let with = |key: &str, value: Value| rejected_with(&base, key, value);
    assert!(with("tenant", json!("a/b")).starts_with("connector.tenant: expected"));
    assert!(with("client_secret", json!("")).starts_with("connector.client_secret: empty"));
    assert!(with("drive_id", json!("a/b")).starts_with("connector.drive_id: expected a Graph id"));
    assert!(
        with("file_name", json!("a/b.md")).starts_with("connector.file_name: `/` is not allowed")
    );
    assert!(with("folder", json!("a:b")).starts_with("connector.folder: `:` is not allowed"));
    assert!(
        with("folder", json!("Approvals/CON/{{document.id}}"))
            .starts_with("connector.folder: SharePoint refuses `CON`: CON, PRN, AUX, NUL")
    );
    assert!(with("file_name", json!("~$check-{{document.id}}.md")).starts_with(
        "connector.file_name: SharePoint refuses `~$check-{{…}}.md`: a name may not start with `~$`"
    ));
    assert!(with("file_name", json!("Desktop.ini")).contains("reserved names"));
    assert!(with("folder", json!("Forms")).contains("the library's own"));
    assert!(with("file_name", json!("x".repeat(401))).starts_with(
        "connector.file_name: with folder, the path's fixed text alone is 401 characters"
    ));
    assert!(
        with("conflict", json!("overwrite")).starts_with("connector.conflict: unknown variant")
    );
    assert!(with("format", json!("pdf")).starts_with("connector.format: unknown variant"));
    assert!(with("authority", json!("not a url")).starts_with("connector.authority:"));
    assert!(
        with("simple_upload_max_bytes", json!(250 * 1024 * 1024 + 1))
            .starts_with("connector.simple_upload_max_bytes: Graph's simple upload takes at most")
    );
    assert!(with("max_content_bytes", json!(0)).starts_with("connector.max_content_bytes:"));
    for chunk in [0, 327_681, 192 * 327_680] {
        assert!(
            with("chunk_bytes", json!(chunk))
                .starts_with("connector.chunk_bytes: must be a multiple of 327680"),
            "{chunk}"
        );
    }
    assert!(
        with("document_url_property", json!("document_id"))
            .starts_with("connector.document_url_property: same")
    );
    let missing = {
        let mut settings = base.clone();
        settings.as_object_mut().map(|m| m.remove("content"));
        rejected(&settings)
    };
    assert!(missing.starts_with("connector: missing field `content`"), "{missing}");
    assert!(!with("tenant", json!("a/b")).contains(DEFAULT_CLIENT_SECRET));
}

#[test]
fn markdown_escaping_defuses_markup_and_keeps_plain_values_readable() {
    let template = Template::parse("{{properties.v}}").expect("parses");
    for (value, expected) in [
        ("2024-05-01", "2024-05-01"),
        ("-5", "-5"),
        ("1.5", "1.5"),
        ("#tag", "#tag"),
        ("- item", "\\- item"),
        ("# head", "\\# head"),
        ("1. one", "1\\. one"),
        ("a\n---", "a\n\\---"),
        (
            "*x* _y_ <b> [l](u) `c` a|b ~s~ AT&T",
            "\\*x\\* \\_y\\_ \\<b\\> \\[l\\](u) \\`c\\` a\\|b \\~s\\~ AT\\&T",
        ),
    ] {
        let request = call().with_property("v", value);
        assert_eq!(template.render(&request, Escape::Markdown).expect("renders"), expected);
    }
}

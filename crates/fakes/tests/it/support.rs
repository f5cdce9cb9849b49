//! What the fakes' tests share: an HTTP client, percent-encoding, an answer, a JSON answer of a
//! given status, and a refused connection.

use serde_json::Value;

/// A plain client, with rustls's crypto provider installed first.
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// `text` with every byte but ASCII letters, digits and those in `keep` as `%XX`.
pub fn percent_encode(text: &str, keep: &[u8]) -> String {
    text.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || keep.contains(&byte) {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

/// Sends `request`, which the fake must answer.
pub async fn answer(request: reqwest::RequestBuilder) -> reqwest::Response {
    request.send().await.expect("the fake answers")
}

/// Asserts the answer's status and returns its body, which must be JSON.
pub async fn json_body(response: reqwest::Response, status: reqwest::StatusCode) -> Value {
    assert_eq!(response.status(), status);
    response.json().await.expect("JSON")
}

/// Sends `request` and asserts that the connection was refused.
pub async fn assert_refused(request: reqwest::RequestBuilder) {
    let error = request.send().await.expect_err("nothing listens");
    assert!(error.is_connect(), "{error:?}");
}

//! The workflow-log lines b24act writes itself follow the portal's language, which its install
//! event gives (`data[LANGUAGE_ID]`): Russian on a Russian portal, English on the others.

use std::time::Duration;

use b24_emulator::{PortalSpec, WorkflowStatus};
use fakes::finance::Behaviour;

use crate::support::{Options, TestApp};

/// A portal in `language` whose finance API fails once: the workflow's log after it closes.
async fn log_after_one_failed_attempt(language: &str) -> Vec<String> {
    let portal =
        PortalSpec { unlimited: true, language_id: language.into(), ..PortalSpec::default() };
    let app = TestApp::start(Options { portal, ..Options::default() }).await;
    app.api.set(Behaviour { fail_next: 1, ..Behaviour::default() });
    let id = app.start_workflow(42, 0).await;
    let state = app.wait_closed(&id, Duration::from_secs(20)).await;
    assert_eq!(state.status, WorkflowStatus::Closed, "{state:?}");
    state.log
}

#[tokio::test]
async fn a_russian_portal_reads_russian_lines_and_an_english_one_english() {
    let russian = log_after_one_failed_attempt("ru").await;
    assert!(
        russian
            .iter()
            .any(|line| line.starts_with("Попытка 1 не удалась: ") && line.contains("; повтор в ")),
        "{russian:#?}"
    );
    let english = log_after_one_failed_attempt("en").await;
    assert!(
        english
            .iter()
            .any(|line| line.starts_with("Attempt 1 failed: ") && line.contains("; retrying at ")),
        "{english:#?}"
    );
}

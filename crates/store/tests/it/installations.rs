//! Installations: install, update, token refresh, uninstall, and secrets encrypted at rest.

use serde_json::json;
use store::{AttemptOutcome, Error, Fenced, InstallationStatus, JobState, StoreKey};

use crate::support::{LEASE, T0, TestDb, call, enqueue_new, first_delivery, install};

store::on_both_stores!(crate::support::run =>

    an_install_is_stored_and_read_back,
    an_app_update_replaces_endpoints_and_tokens_but_keeps_the_install_time,
    refreshed_tokens_replace_the_old_ones,
    tokens_are_encrypted_at_rest,
    a_wrong_key_fails_clearly_instead_of_returning_garbage,
    an_uninstall_stops_the_portals_work,
    a_removed_portal_stops_its_work_forgets_its_tokens_and_keeps_its_jobs,
);

async fn an_install_is_stored_and_read_back(db: TestDb) {
    let store = db.open().await;
    store.upsert_installation(&install("p2"), T0).await.unwrap();
    let mut without_refresh = install("p1");
    without_refresh.refresh_token = None;
    store.upsert_installation(&without_refresh, T0 + 1).await.unwrap();

    let p2 = store.installation("p2").await.unwrap().unwrap();
    let want = install("p2");
    assert_eq!(
        (
            p2.portal.domain.as_str(),
            p2.portal.client_endpoint.as_str(),
            p2.portal.server_endpoint.as_str()
        ),
        (want.domain.as_str(), want.client_endpoint.as_str(), want.server_endpoint.as_str())
    );
    assert_eq!(
        (
            p2.portal.application_token.as_str(),
            p2.portal.access_token.as_str(),
            p2.portal.refresh_token.as_deref()
        ),
        (
            want.application_token.as_str(),
            want.access_token.as_str(),
            want.refresh_token.as_deref()
        )
    );
    assert_eq!(
        (p2.portal.expires_at, p2.status, p2.installed_at, p2.updated_at),
        (want.expires_at, InstallationStatus::Active, T0, T0)
    );
    assert_eq!(store.installation("p1").await.unwrap().unwrap().portal.refresh_token, None);
    assert_eq!(store.installation("nobody").await.unwrap(), None);
    let all: Vec<_> =
        store.installations().await.unwrap().into_iter().map(|i| i.portal.member_id).collect();
    assert_eq!(all, ["p1", "p2"]);

    let shown = format!("{p2:?}");
    assert!(
        !shown.contains("access-token")
            && !shown.contains("app-token")
            && !shown.contains("refresh-token"),
        "{shown}"
    );
}

async fn an_app_update_replaces_endpoints_and_tokens_but_keeps_the_install_time(db: TestDb) {
    let store = db.open().await;
    store.upsert_installation(&install("p1"), T0).await.unwrap();
    let mut update = install("p1");
    update.domain = "moved.bitrix24.example".into();
    update.client_endpoint = "https://moved.bitrix24.example/rest/".into();
    update.access_token = "access-2".into();
    update.application_token = "app-2".into();
    store.upsert_installation(&update, T0 + 500).await.unwrap();

    let stored = store.installation("p1").await.unwrap().unwrap();
    assert_eq!(
        (stored.portal.domain.as_str(), stored.portal.access_token.as_str()),
        ("moved.bitrix24.example", "access-2")
    );
    assert_eq!(stored.portal.application_token, "app-2");
    assert_eq!((stored.installed_at, stored.updated_at), (T0, T0 + 500));
}

async fn refreshed_tokens_replace_the_old_ones(db: TestDb) {
    let store = db.open().await;
    store.upsert_installation(&install("p1"), T0).await.unwrap();
    assert!(
        store
            .update_tokens("p1", "access-new", "refresh-new", T0 + 7_200_000, T0 + 10)
            .await
            .unwrap()
    );
    assert!(!store.update_tokens("ghost", "a", "r", 0, T0).await.unwrap());

    let stored = store.installation("p1").await.unwrap().unwrap();
    assert_eq!(
        (stored.portal.access_token.as_str(), stored.portal.refresh_token.as_deref()),
        ("access-new", Some("refresh-new"))
    );
    assert_eq!((stored.portal.expires_at, stored.updated_at), (T0 + 7_200_000, T0 + 10));
    assert_eq!(
        stored.portal.application_token,
        install("p1").application_token,
        "untouched by a refresh"
    );
}

async fn tokens_are_encrypted_at_rest(db: TestDb) {
    let store = db.open().await;
    let secret = install("p1");
    store.upsert_installation(&secret, T0).await.unwrap();
    store.close().await;

    let columns = db.raw_bytes("SELECT application_token FROM installations").await;
    let columns = [columns, db.raw_bytes("SELECT access_token FROM installations").await].concat();
    let columns = [columns, db.raw_bytes("SELECT refresh_token FROM installations").await].concat();
    assert_eq!(columns.len(), 3);
    for plaintext in
        [&secret.application_token, &secret.access_token, secret.refresh_token.as_ref().unwrap()]
    {
        for column in &columns {
            let found = column.windows(plaintext.len()).any(|w| w == plaintext.as_bytes());
            assert!(!found, "{plaintext} is stored in the clear");
            assert!(column.len() > plaintext.len() + 24, "nonce and tag are stored");
        }
    }
    // Two encryptions of the same value differ (random nonce).
    let again = db.open().await;
    again.upsert_installation(&secret, T0 + 1).await.unwrap();
    let after = db.raw_bytes("SELECT access_token FROM installations").await;
    assert_ne!(after[0], columns[1]);
}

async fn a_wrong_key_fails_clearly_instead_of_returning_garbage(db: TestDb) {
    let store = db.open().await;
    store.upsert_installation(&install("p1"), T0).await.unwrap();
    store.close().await;

    let wrong = db.open_with(StoreKey::from_bytes([8; 32])).await.unwrap();
    let error = wrong.installation("p1").await.unwrap_err();
    assert!(
        matches!(error, Error::Decrypt { ref member_id, .. } if member_id == "p1"),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("installation `p1`") && message.contains("store key"), "{message}");
    assert!(wrong.installations().await.is_err());
    // Jobs do not depend on the key.
    enqueue_new(&wrong, &[call("p1", "a")], T0).await;
}

async fn an_uninstall_stops_the_portals_work(db: TestDb) {
    let store = db.open().await;
    store.upsert_installation(&install("p1"), T0).await.unwrap();
    store.upsert_installation(&install("p2"), T0).await.unwrap();
    let p1 = enqueue_new(&store, &[call("p1", "a"), call("p1", "b"), call("p1", "c")], T0).await;
    let mut claimed = store.claim_due("w", T0, LEASE, 2).await.unwrap();
    // Queued after the claim, which would otherwise take one job of each portal.
    let p2 = enqueue_new(&store, &[call("p2", "d")], T0).await;
    let done = claimed.remove(0);
    let running = claimed.remove(0);
    assert!(store.complete(&done.lease, &json!(1), T0).await.unwrap().is_applied());
    let sent = first_delivery(&store, "s", T0).await;
    assert_eq!(store.delivered(&[sent.id], T0).await.unwrap(), 1);

    assert_eq!(store.mark_uninstalled("p1", T0 + 5).await.unwrap(), Some(2));
    assert_eq!(store.mark_uninstalled("ghost", T0 + 5).await.unwrap(), None);

    assert_eq!(
        store.installation("p1").await.unwrap().unwrap().status,
        InstallationStatus::Uninstalled
    );
    assert_eq!(store.complete(&running.lease, &json!(1), T0 + 6).await.unwrap(), Fenced::LeaseLost);
    let states: Vec<_> = states_of(&store, &p1).await;
    assert_eq!(states, [JobState::Done, JobState::Dead, JobState::Dead]);
    let attempt = store.job(running.id).await.unwrap().unwrap().attempts.remove(0);
    assert_eq!(
        (attempt.outcome, attempt.finished_at),
        (Some(AttemptOutcome::Cancelled), Some(T0 + 5))
    );
    assert_eq!(
        store.job(p2[0]).await.unwrap().unwrap().job.state,
        JobState::Queued,
        "other portals go on"
    );

    // A reinstall makes it active again, with a new install time.
    store.upsert_installation(&install("p1"), T0 + 100).await.unwrap();
    let back = store.installation("p1").await.unwrap().unwrap();
    assert_eq!((back.status, back.installed_at), (InstallationStatus::Active, T0 + 100));
}

async fn a_removed_portal_stops_its_work_forgets_its_tokens_and_keeps_its_jobs(db: TestDb) {
    let store = db.open().await;
    store.upsert_installation(&install("p1"), T0).await.unwrap();
    let jobs = enqueue_new(&store, &[call("p1", "a"), call("p1", "b")], T0).await;

    assert_eq!(store.remove_installation("p1", T0 + 5).await.unwrap(), Some(2));
    assert_eq!(store.remove_installation("ghost", T0 + 5).await.unwrap(), None);

    let removed = store.installation("p1").await.unwrap().unwrap();
    assert_eq!(removed.status, InstallationStatus::Uninstalled);
    assert_eq!((removed.portal.access_token.as_str(), removed.portal.refresh_token), ("", None));
    assert_eq!(removed.portal.domain, install("p1").domain, "what it was stays visible");
    for id in &jobs {
        let job = store.job(*id).await.unwrap().unwrap().job;
        assert_eq!(job.state, JobState::Dead);
        assert_eq!(job.dead_reason.as_deref(), Some("an operator removed the portal"));
    }
}

async fn states_of(store: &store::Store, ids: &[store::JobId]) -> Vec<JobState> {
    let mut states = Vec::new();
    for id in ids {
        states.push(store.job(*id).await.unwrap().unwrap().job.state);
    }
    states
}

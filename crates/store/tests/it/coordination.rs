//! What several nodes share through the store: the token lock, each portal's request budget,
//! round-robin claims, stored progress lines, deliveries whose answer was lost, and the
//! registrations' fingerprints (a portal's and each action's there).

use std::time::Duration;

use serde_json::json;
use store::{AttemptOutcome, Error, Fenced, JobState, Retried};

use crate::support::{LEASE, T0, TestDb, call, enqueue_new, first_delivery, install};

store::on_both_stores!(crate::support::run =>
    a_token_lock_keeps_a_second_refresher_out_until_the_first_saved,
    the_shared_budget_starts_full_and_spaces_requests_at_the_drain_rate,
    a_filled_budget_makes_the_next_request_wait_a_whole_bucket,
    claims_take_the_oldest_of_every_portal_before_the_second_of_any,
    a_claim_of_one_goes_to_the_portal_with_the_fewest_jobs_running,
    progress_lines_go_oldest_first_one_sender_at_a_time_and_once,
    a_send_left_unrecorded_is_uncertain_and_not_found_then_is_an_unconfirmed_delivery,
    an_uncertain_result_is_resent_only_with_force,
    the_registrations_fingerprint_is_kept_per_portal,
    a_portals_language_is_kept_apart_from_its_registrations,
    each_actions_registration_is_kept_per_portal_until_deleted,
);

async fn a_token_lock_keeps_a_second_refresher_out_until_the_first_saved(db: TestDb) {
    let store = std::sync::Arc::new(db.open().await);
    store.upsert_installation(&install("p1"), T0).await.unwrap();
    let first = store.lock_tokens("p1").await.unwrap();
    let stale = first.tokens().expect("installed").clone();

    let second = tokio::spawn({
        let store = store.clone();
        async move {
            let lock = store.lock_tokens("p1").await.unwrap();
            lock.tokens().cloned()
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "the second refresher waits for the first");
    first.save("access-2", "refresh-2", T0 + 3_600_000, T0 + 1).await.unwrap();

    let seen = second.await.unwrap().expect("installed");
    assert_ne!(seen, stale, "the second sees what the first stored");
    assert_eq!(seen.access_token, "access-2");
    assert_eq!(seen.refresh_token.as_deref(), Some("refresh-2"));
    let stored = store.installation("p1").await.unwrap().unwrap().portal;
    assert_eq!((stored.access_token.as_str(), stored.expires_at), ("access-2", T0 + 3_600_000));

    let absent = store.lock_tokens("ghost").await.unwrap();
    assert!(absent.tokens().is_none(), "no installation, no tokens");
}

/// Waits as [`store::Store::reserve_request`] answers, in ms.
async fn reservations(db: &TestDb, portal: &str, count: usize, interval: f64) -> Vec<f64> {
    let store = db.open().await;
    let mut waits = Vec::new();
    for _ in 0..count {
        waits.push(store.reserve_request(portal, interval, 3.0).await.unwrap());
    }
    waits
}

async fn the_shared_budget_starts_full_and_spaces_requests_at_the_drain_rate(db: TestDb) {
    // Drains one request per 200 ms, holds 3: a new bucket is taken as full.
    let waits = reservations(&db, "example.bitrix24.com", 4, 200.0).await;
    for (index, wait) in waits.iter().enumerate() {
        let expected = 200.0 * (index as f64 + 1.0);
        assert!(
            (wait - expected).abs() < 60.0,
            "request {index}: waits {wait} ms, not ~{expected}"
        );
    }
    // Another node (another store handle) takes its place after them, not beside them.
    let other = reservations(&db, "example.bitrix24.com", 1, 200.0).await;
    assert!(other[0] > 800.0, "a second node's request waits behind the first's: {other:?}");
    // Another portal has a bucket of its own.
    let elsewhere = reservations(&db, "other.bitrix24.com", 1, 200.0).await;
    assert!(elsewhere[0] < 260.0, "{elsewhere:?}");
}

async fn a_filled_budget_makes_the_next_request_wait_a_whole_bucket(db: TestDb) {
    let store = db.open().await;
    store.reserve_request("p", 100.0, 3.0).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let drained = store.reserve_request("p", 100.0, 3.0).await.unwrap();
    assert!(drained < 1.0, "an empty bucket lets a request through at once: {drained}");
    store.fill_budget("p", 100.0, 3.0).await.unwrap();
    let after = store.reserve_request("p", 100.0, 3.0).await.unwrap();
    assert!((after - 100.0).abs() < 40.0, "full as of now: one interval's wait, got {after}");
}

async fn claims_take_the_oldest_of_every_portal_before_the_second_of_any(db: TestDb) {
    let store = db.open().await;
    let big: Vec<_> = (0..200).map(|i| call("big", &format!("big-{i}"))).collect();
    let big = enqueue_new(&store, &big, T0).await;
    let small = enqueue_new(&store, &[call("small", "s-0"), call("small", "s-1")], T0 + 5).await;
    let tiny = enqueue_new(&store, &[call("tiny", "t-0")], T0 + 9).await;

    let claimed = store.claim_due("w", T0 + 10, LEASE, 5).await.unwrap();
    let mut ids: Vec<_> = claimed.iter().map(|job| job.id).collect();
    ids.sort();
    let mut expected = vec![big[0], big[1], small[0], small[1], tiny[0]];
    expected.sort();
    assert_eq!(ids, expected, "two rounds: one of each portal, then the next of those left");

    let rest = store.claim_due("w", T0 + 10, LEASE, 1000).await.unwrap();
    assert_eq!(rest.len(), 198, "the big portal's backlog follows");
}

async fn a_claim_of_one_goes_to_the_portal_with_the_fewest_jobs_running(db: TestDb) {
    let store = db.open().await;
    let big: Vec<_> = (0..20).map(|i| call("big", &format!("big-{i}"))).collect();
    enqueue_new(&store, &big, T0).await;
    // Workers busy with the big portal's oldest, as when its backlog came first.
    let running = store.claim_due("w", T0 + 1, LEASE, 3).await.unwrap();
    assert!(running.iter().all(|job| job.call.member_id == "big"));
    let small = enqueue_new(&store, &[call("small", "s-0"), call("small", "s-1")], T0 + 5).await;

    // A slot frees: by age the big portal's next job would take it; the small portal has
    // nothing running, so its oldest goes first, and the next single slot as well (one running
    // against three).
    let first = store.claim_due("w", T0 + 10, LEASE, 1).await.unwrap();
    assert_eq!(first.iter().map(|job| job.id).collect::<Vec<_>>(), [small[0]]);
    let second = store.claim_due("w", T0 + 10, LEASE, 1).await.unwrap();
    assert_eq!(second.iter().map(|job| job.id).collect::<Vec<_>>(), [small[1]]);
    let third = store.claim_due("w", T0 + 10, LEASE, 1).await.unwrap();
    assert_eq!(third[0].call.member_id, "big", "then the big portal's backlog");
}

async fn progress_lines_go_oldest_first_one_sender_at_a_time_and_once(db: TestDb) {
    let store = db.open().await;
    let ids = enqueue_new(&store, &[call("p1", "tok-a"), call("p2", "tok-b")], T0).await;
    for n in 0..5 {
        store.add_progress_line(ids[0], "p1", &format!("line {n}"), T0).await.unwrap();
    }
    store.add_progress_line(ids[1], "p2", "other portal", T0).await.unwrap();
    assert_eq!(store.portals_with_progress(T0).await.unwrap(), ["p1", "p2"]);

    let first = store.claim_progress("p1", 3, T0, LEASE).await.unwrap();
    let texts: Vec<_> = first.iter().map(|line| line.message.as_str()).collect();
    assert_eq!(texts, ["line 0", "line 1", "line 2"]);
    assert!(first.iter().all(|line| line.event_token == "tok-a"), "{first:?}");
    assert!(
        store.claim_progress("p1", 3, T0 + 1, LEASE).await.unwrap().is_empty(),
        "while a sender holds the portal's first lines, the next ones wait: the order holds"
    );
    store.progress_sent(&first.iter().map(|line| line.id).collect::<Vec<_>>()).await.unwrap();
    let next = store.claim_progress("p1", 50, T0 + 2, LEASE).await.unwrap();
    let texts: Vec<_> = next.iter().map(|line| line.message.as_str()).collect();
    assert_eq!(texts, ["line 3", "line 4"], "sent lines are gone, never sent again");

    // A sender that died: its lines are claimable again once its claim expires.
    let after_lease = T0 + 2 + LEASE.as_millis() as i64 + 1;
    let again = store.claim_progress("p1", 50, after_lease, LEASE).await.unwrap();
    assert_eq!(again.len(), 2);
    // A restart loses nothing: the lines are in the store.
    let reopened = db.open().await;
    assert_eq!(reopened.claim_progress("p2", 50, T0, LEASE).await.unwrap().len(), 1);
}

async fn a_send_left_unrecorded_is_uncertain_and_not_found_then_is_an_unconfirmed_delivery(
    db: TestDb,
) {
    let store = db.open().await;
    let id = enqueue_new(&store, &[call("p1", "tok")], T0).await[0];
    let job = store.claim_due("w", T0, LEASE, 1).await.unwrap().remove(0);
    assert!(store.complete(&job.lease, &json!({"ok": true}), T0).await.unwrap().is_applied());

    let first = first_delivery(&store, "sender-a", T0).await;
    assert!(!first.send_uncertain, "a first send is certain");
    // sender-a sends and dies before recording the answer; after its lease another takes it.
    let after_lease = T0 + LEASE.as_millis() as i64 + 1;
    let second = first_delivery(&store, "sender-b", after_lease).await;
    assert!(second.send_uncertain, "the first send may have reached the portal");
    let recorded =
        store.delivery_unconfirmed(&second.lease, "bizproc.event.send: 404", after_lease);
    assert_eq!(recorded.await.unwrap(), Fenced::Applied);

    let detail = store.job(id).await.unwrap().unwrap();
    assert_eq!(detail.job.state, JobState::Done, "delivered, not dead");
    assert!(detail.job.delivery_unconfirmed && detail.job.send_uncertain);
    assert_eq!(detail.job.delivered_at, Some(after_lease));
    let last = detail.attempts.last().unwrap();
    assert_eq!(last.outcome, Some(AttemptOutcome::Unconfirmed));
    assert!(
        store.claim_deliveries("s", after_lease + 1, LEASE, 50).await.unwrap().is_empty(),
        "never sent again"
    );
}

async fn an_uncertain_result_is_resent_only_with_force(db: TestDb) {
    let store = db.open().await;
    let id = enqueue_new(&store, &[call("p1", "tok")], T0).await[0];
    let job = store.claim_due("w", T0, LEASE, 1).await.unwrap().remove(0);
    assert!(store.complete(&job.lease, &json!({"ok": true}), T0).await.unwrap().is_applied());
    let sent = first_delivery(&store, "s", T0).await;
    // The request failed in a way the portal may have run it, then the job died.
    let retry =
        store.delivery_retry(&sent.lease, T0 + 1, true, AttemptOutcome::Retryable, "502", T0);
    assert_eq!(retry.await.unwrap(), Fenced::Applied);
    let again = first_delivery(&store, "s", T0 + 1).await;
    assert!(again.send_uncertain);
    let dead = store.delivery_dead(&again.lease, "ACCESS_DENIED", T0 + 2).await.unwrap();
    assert_eq!(dead, Fenced::Applied);

    let refused = store.retry_job(id, None, false, "op", T0 + 3).await.unwrap_err();
    assert!(matches!(refused, Error::MayBeDelivered { job_id } if job_id == id), "{refused:?}");
    assert!(refused.to_string().contains("--force"), "{refused}");
    assert_eq!(store.job(id).await.unwrap().unwrap().job.state, JobState::Dead, "unchanged");
    assert_eq!(store.retry_job(id, None, true, "op", T0 + 3).await.unwrap(), Retried::Redelivering);

    // An unconfirmed delivery is done; --force sends it again.
    let resent = first_delivery(&store, "s", T0 + 4).await;
    let unconfirmed = store.delivery_unconfirmed(&resent.lease, "404", T0 + 5).await.unwrap();
    assert_eq!(unconfirmed, Fenced::Applied);
    let refused = store.retry_job(id, None, false, "op", T0 + 6).await.unwrap_err();
    assert!(matches!(refused, Error::MayBeDelivered { .. }), "{refused:?}");
    assert_eq!(store.retry_job(id, None, true, "op", T0 + 6).await.unwrap(), Retried::Redelivering);
    let job = store.job(id).await.unwrap().unwrap().job;
    assert_eq!(
        (job.state, job.delivery_unconfirmed, job.delivered_at),
        (JobState::Delivering, false, None)
    );
}

async fn the_registrations_fingerprint_is_kept_per_portal(db: TestDb) {
    let store = db.open().await;
    store.upsert_installation(&install("p1"), T0).await.unwrap();
    assert_eq!(store.registrations("p1").await.unwrap(), None);
    store.set_registrations("p1", "abc").await.unwrap();
    assert_eq!(store.registrations("p1").await.unwrap().as_deref(), Some("abc"));
    assert_eq!(store.registrations("ghost").await.unwrap(), None);
    store.upsert_installation(&install("p1"), T0 + 1).await.unwrap();
    assert_eq!(
        store.registrations("p1").await.unwrap().as_deref(),
        Some("abc"),
        "an install event's registrations are made (and recorded) by the host again"
    );
}

async fn a_portals_language_is_kept_apart_from_its_registrations(db: TestDb) {
    let store = db.open().await;
    store.upsert_installation(&install("p1"), T0).await.unwrap();
    assert_eq!(store.installation_language("p1").await.unwrap(), None);
    store.set_installation_language("p1", "ru").await.unwrap();
    store.set_registrations("p1", "abc").await.unwrap();
    assert_eq!(store.installation_language("p1").await.unwrap().as_deref(), Some("ru"));
    assert_eq!(store.registrations("p1").await.unwrap().as_deref(), Some("abc"));
    store.upsert_installation(&install("p1"), T0 + 1).await.unwrap();
    assert_eq!(
        store.installation_language("p1").await.unwrap().as_deref(),
        Some("ru"),
        "an install event replaces the identity, not the notes"
    );
    assert_eq!(store.installation_language("ghost").await.unwrap(), None);
}

async fn each_actions_registration_is_kept_per_portal_until_deleted(db: TestDb) {
    let store = db.open().await;
    assert!(store.action_registrations("p1").await.unwrap().is_empty());
    store.set_action_registration("p1", "a", Some("f1")).await.unwrap();
    store.set_action_registration("p1", "b", Some("f2")).await.unwrap();
    store.set_action_registration("p2", "a", Some("other")).await.unwrap();
    store.set_action_registration("p1", "a", Some("f3")).await.unwrap();
    let kept = store.action_registrations("p1").await.unwrap();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert_eq!((kept["a"].as_str(), kept["b"].as_str()), ("f3", "f2"), "the latest one wins");
    store.set_action_registration("p1", "b", None).await.unwrap();
    store.set_action_registration("p1", "gone", None).await.unwrap();
    let kept = store.action_registrations("p1").await.unwrap();
    assert_eq!(kept.keys().collect::<Vec<_>>(), ["a"]);
    assert_eq!(store.action_registrations("p2").await.unwrap()["a"], "other");
}

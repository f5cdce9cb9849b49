//! A renamed portal: the 302 is not followed blindly, the POST is re-sent to the new host and
//! the move reported (protocol doc §5.1).

use std::sync::Arc;

use b24::rest::{DomainMove, RestClient};

use crate::support::{RecordingMoves, TestPortal, concurrently, credit_check};

/// A portal, a client of it that records the moves it sees, and the portal's old and new
/// domain once it has been moved.
struct MovedPortal {
    t: TestPortal,
    moves: Arc<RecordingMoves>,
    client: RestClient,
    old: String,
    new: String,
}

impl MovedPortal {
    async fn start() -> MovedPortal {
        let t = TestPortal::start().await;
        let moves = Arc::new(RecordingMoves::default());
        let client = t.oauth().move_sink(moves.clone()).build().unwrap();
        let old = t.portal.domain.clone();
        let new = t.emu.move_portal(&old).await.unwrap();
        MovedPortal { t, moves, client, old, new }
    }
}

#[tokio::test]
async fn moved_portal_gets_the_post_resent_and_the_move_reported() {
    let MovedPortal { t, moves, client, old, new } = MovedPortal::start().await;
    // A POST with a body: had it turned into a GET, the registration would be missing.
    let added = client.activity_add(&credit_check("after_move", &t.handler)).await.unwrap();
    assert!(added.result);
    let expected = DomainMove {
        member_id: Some(t.portal.member_id.clone()),
        old_domain: old.clone(),
        new_domain: new.clone(),
    };
    assert_eq!(added.moved.as_ref(), Some(&expected));
    assert_eq!(*moves.moves.lock().unwrap(), vec![expected.clone()]);
    assert_eq!(client.domain(), new);
    assert_eq!(client.last_move(), Some(expected));
    assert_eq!(client.client_endpoint().unwrap().as_str(), format!("http://{new}/rest/"));

    // Later calls go straight to the new host.
    let listed = client.activity_list().await.unwrap();
    assert_eq!(listed.result, vec!["after_move".to_owned()]);
    assert!(listed.moved.is_none());
    assert_eq!(moves.moves.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn moved_portal_webhook_keeps_its_path_on_the_new_host() {
    let t = TestPortal::start().await;
    let wf = t.waiting_credit_check().await;
    let hook = t.webhook();

    let new = t.emu.move_portal(&t.portal.domain).await.unwrap();
    let sent = hook.event_send(&b24::rest::EventSend::new(&wf.event_token)).await.unwrap();
    assert!(sent.result);
    assert_eq!(sent.moved.map(|m| m.new_domain), Some(new.clone()));
    let url = hook.webhook_url().unwrap();
    assert_eq!(
        url.url().host_str().map(|h| format!("{h}:{}", url.url().port().unwrap())),
        Some(new)
    );
    assert!(url.url().path().starts_with("/rest/1/"), "the webhook's path survives");
    assert!(t.is_closed(&wf.workflow_id));
}

#[tokio::test]
async fn batch_to_a_moved_portal_reports_the_move() {
    let t = TestPortal::start().await;
    let client = t.client();
    let new = t.emu.move_portal(&t.portal.domain).await.unwrap();
    let commands = vec![b24::rest::BatchCommand::new("a", "bizproc.activity.list", &()).unwrap()];
    let results = client.batch(&commands, false).await.unwrap();
    assert!(results.all_ok(), "{results:?}");
    assert_eq!(results.moved.map(|m| m.new_domain), Some(new));
}

#[tokio::test]
async fn concurrent_calls_to_a_moved_portal_report_the_move_once() {
    // `t` bound too: the emulator lives as long as it.
    let MovedPortal { t: _t, moves, client, old, new } = MovedPortal::start().await;

    let calls =
        concurrently(&client, 8, |client| async move { client.activity_list().await }).await;
    for result in calls {
        let response = result.unwrap();
        if let Some(change) = response.moved {
            assert_eq!(
                (change.old_domain.as_str(), change.new_domain.as_str()),
                (old.as_str(), new.as_str())
            );
        }
    }
    let seen = moves.moves.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].old_domain, old);
    assert_eq!(client.domain(), new);
}

#[tokio::test]
async fn a_client_that_does_not_follow_moves_refuses_the_redirect_and_stays() {
    let t = TestPortal::start().await;
    let client = t.oauth().follow_moves(false).build().unwrap();
    let new = t.emu.move_portal(&t.portal.domain).await.unwrap();
    let error = client.activity_list().await.unwrap_err();
    assert!(matches!(error, b24::rest::Error::BadRedirect { .. }), "{error:?}");
    assert_eq!(error.class(), b24::rest::ErrorClass::Permanent);
    assert_eq!(client.domain(), t.portal.domain, "the client stays where it was");
    assert!(client.last_move().is_none(), "and reports no move to {new}");
}

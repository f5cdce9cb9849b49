//! Reading the portal's own REST log (the emulator's record of every request): which results
//! reached a workflow more than once. The demo's "sent more than once" and the end-to-end tests
//! of several nodes count the same way.

use std::collections::HashMap;

use b24_emulator::RecordedCall;

/// Errors the portal answers before reading a command: the caller's credentials. A send refused
/// this way never reached the workflow, so it is not a send of the result.
const REFUSED_UNREAD: &[&str] = &["expired_token", "invalid_token", "NO_AUTH_FOUND"];

/// The event tokens that two or more `bizproc.event.send` records carry, each once, in the
/// order of their first send. Every send the portal read counts, inside a `batch` or not,
/// whatever it answered: a second send to a workflow that already took the result answers
/// "404" and is a second send all the same. A request the portal refused before reading it —
/// its rate limit, an injected server error, an expired access token — does not count.
pub fn tokens_sent_more_than_once(calls: &[RecordedCall]) -> Vec<String> {
    let mut sends: HashMap<&str, usize> = HashMap::new();
    let mut in_first_send_order = Vec::new();
    let read = |call: &&RecordedCall| {
        call.method == "bizproc.event.send"
            && !call.error.as_deref().is_some_and(|error| REFUSED_UNREAD.contains(&error))
    };
    for call in calls.iter().filter(read) {
        let Some(token) = call.event_token.as_deref() else { continue };
        let count = sends.entry(token).or_default();
        *count += 1;
        if *count == 1 {
            in_first_send_order.push(token);
        }
    }
    in_first_send_order.into_iter().filter(|token| sends[token] > 1).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn send(token: &str, error: Option<&str>) -> RecordedCall {
        RecordedCall {
            method: "bizproc.event.send".into(),
            status: if error.is_some() { 400 } else { 200 },
            error: error.map(str::to_owned),
            at: SystemTime::now(),
            in_batch: true,
            caller: "app:local.b24act.test".into(),
            event_token: Some(token.into()),
        }
    }

    #[test]
    fn a_send_refused_for_an_expired_token_never_reached_the_workflow() {
        let calls = [send("a", Some("expired_token")), send("a", None), send("b", None)];
        assert!(tokens_sent_more_than_once(&calls).is_empty());
        let twice = [send("a", None), send("a", Some("404"))];
        assert_eq!(tokens_sent_more_than_once(&twice), ["a"]);
    }
}

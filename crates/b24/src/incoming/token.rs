//! `event_token`: opaque on the way back, readable for logs and idempotency keys (§3.4).

use std::fmt;

/// The token a waiting activity is resumed with. It is sent back to `bizproc.event.send` exactly
/// as received; [`EventToken::parts`] reads it without changing it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EventToken(String);

/// The pieces of `"{workflow_id}|{activity_name}|{event_id}.{signature}"` (docs/protocol.md §3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTokenParts<'a> {
    pub workflow_id: &'a str,
    pub activity_name: &'a str,
    pub event_id: &'a str,
    pub signature: &'a str,
}

/// The token does not have the `wf|activity|event.signature` shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event_token is not `workflow_id|activity_name|event_id.signature`")]
pub struct MalformedEventToken;

impl EventToken {
    /// Keeps the token as received, or as stored from an earlier call; unchecked, because a
    /// handler treats it as opaque (§3.4). See [`EventToken::parts`] for its shape.
    pub fn new(token: impl Into<String>) -> Self {
        EventToken(token.into())
    }

    /// The token exactly as received, for `bizproc.event.send` and for storage.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Splits the token. The signature follows the **last** `.`, because the workflow id itself
    /// contains one (`681c894d3f0ec8.54818143`); the Signer unsigns the same way (§3.4).
    pub fn parts(&self) -> Result<EventTokenParts<'_>, MalformedEventToken> {
        parts_of(&self.0)
    }
}

/// The token as a string, for the store and for [`crate::rest::EventSend::new`], which takes
/// anything that becomes a `String`.
impl From<EventToken> for String {
    fn from(token: EventToken) -> String {
        token.0
    }
}

/// [`EventToken::parts`] of a token held as a plain string.
fn parts_of(token: &str) -> Result<EventTokenParts<'_>, MalformedEventToken> {
    let (payload, signature) = token.rsplit_once('.').ok_or(MalformedEventToken)?;
    let mut pieces = payload.split('|');
    let (Some(workflow_id), Some(activity_name), Some(event_id), None) =
        (pieces.next(), pieces.next(), pieces.next(), pieces.next())
    else {
        return Err(MalformedEventToken);
    };
    let all_present =
        [workflow_id, activity_name, event_id, signature].iter().all(|p| !p.is_empty());
    all_present
        .then_some(EventTokenParts { workflow_id, activity_name, event_id, signature })
        .ok_or(MalformedEventToken)
}

/// The token resumes a workflow on its own (`event.send` checks nothing else, §3.1), so logs show
/// only the readable part, never the signature.
impl fmt::Debug for EventToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&RedactedEventToken(&self.0), f)
    }
}

/// A token held as a plain string (as [`crate::rest::EventSend`] holds it), shown as
/// [`EventToken`]'s `Debug` shows it: without the signature.
pub(crate) struct RedactedEventToken<'a>(pub(crate) &'a str);

impl fmt::Debug for RedactedEventToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match parts_of(self.0) {
            Ok(p) => write!(
                f,
                "EventToken({}|{}|{}.<signature>)",
                p.workflow_id, p.activity_name, p.event_id
            ),
            Err(_) => f.write_str("EventToken(<malformed>)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "681c894d3f0ec8.54818143|A36717_5720_22885_29158|X3QpQY6RKFD8ULUtOiKllFEZLUaVuDYn.4a9eda30cc";

    #[test]
    fn splits_at_the_last_dot_because_the_workflow_id_has_one() {
        let token = EventToken::new(TOKEN);
        let parts = token.parts().unwrap();
        assert_eq!(parts.workflow_id, "681c894d3f0ec8.54818143");
        assert_eq!(parts.activity_name, "A36717_5720_22885_29158");
        assert_eq!(parts.event_id, "X3QpQY6RKFD8ULUtOiKllFEZLUaVuDYn");
        assert_eq!(parts.signature, "4a9eda30cc");
        assert_eq!(token.as_str(), TOKEN);
    }

    #[test]
    fn debug_hides_the_signature() {
        let shown = format!("{:?}", EventToken::new(TOKEN));
        assert!(!shown.contains("4a9eda30cc"), "{shown}");
        assert!(shown.contains("A36717_5720_22885_29158"), "{shown}");
    }

    #[test]
    fn rejects_tokens_without_three_pieces_and_a_signature() {
        for bad in ["", "abc", "a|b|c", "a|b.sig", "a|b|c|d.sig", "a||c.sig", "a|b|c."] {
            assert_eq!(EventToken::new(bad).parts(), Err(MalformedEventToken), "{bad:?}");
        }
    }
}

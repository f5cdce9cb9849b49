//! `event_token`: `workflow_id|activity_name|event_id` signed with HMAC-SHA256 under the key
//! `"bizproc" + portal secret`, hex after the last `.` (protocol doc §3.4).

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The Signer's salt, prepended to the portal key.
const SALT: &str = "bizproc";

/// The three parts a valid token carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenParts {
    pub(crate) workflow_id: String,
    pub(crate) activity_name: String,
    pub(crate) event_id: String,
}

fn mac(signer_key: &str) -> HmacSha256 {
    let key = format!("{SALT}{signer_key}");
    match HmacSha256::new_from_slice(key.as_bytes()) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length (RFC 2104)"),
    }
}

/// Signs `workflow_id|activity_name|event_id`.
pub(crate) fn sign(signer_key: &str, parts: &TokenParts) -> String {
    let payload = format!("{}|{}|{}", parts.workflow_id, parts.activity_name, parts.event_id);
    let mut m = mac(signer_key);
    m.update(payload.as_bytes());
    let signature = hex::encode(m.finalize().into_bytes());
    format!("{payload}.{signature}")
}

/// Verifies a token (split at the **last** `.`, since the workflow ID has a dot) and returns
/// its parts; `None` for anything malformed, forged or signed by another portal.
pub(crate) fn verify(signer_key: &str, token: &str) -> Option<TokenParts> {
    let (payload, signature) = token.rsplit_once('.')?;
    let signature = hex::decode(signature).ok()?;
    let mut m = mac(signer_key);
    m.update(payload.as_bytes());
    m.verify_slice(&signature).ok()?;
    let mut it = payload.split('|');
    let (workflow_id, activity_name, event_id) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() {
        return None;
    }
    Some(TokenParts {
        workflow_id: workflow_id.to_owned(),
        activity_name: activity_name.to_owned(),
        event_id: event_id.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_other_keys() {
        let parts = TokenParts {
            workflow_id: "681c894d3f0ec8.54818143".into(),
            activity_name: "A1_2_3_4".into(),
            event_id: "abc".into(),
        };
        let token = sign("k", &parts);
        assert_eq!(verify("k", &token), Some(parts));
        assert_eq!(verify("other", &token), None);
        assert_eq!(verify("k", "garbage"), None);
    }
}

//! A REST request's parameters as the portal reads them (§5.1): the query string, then the body
//! (JSON when the Content-Type says so, else `parse_str`), merged with the body winning, and as
//! lenient as PHP: a body that is not valid JSON is an empty body, and a form field PHP would
//! repair or drop is repaired or dropped instead of refusing the request.

use axum::http::{HeaderMap, Uri, header};

use crate::param::{Array, Param, from_form_array};
use crate::portal::PortalState;
use crate::rest::{Caller, RestError};

/// The most bytes and fields the portal reads; what is past them is dropped, as PHP drops a
/// body over `post_max_size` and fields past `max_input_vars`.
const LIMITS: phpform::Limits =
    phpform::Limits { max_body_bytes: 8 * 1024 * 1024, max_depth: 64, max_fields: 100_000 };

/// A string parameter; empty when missing.
pub(super) fn text(params: &Array, key: &str) -> String {
    params.get(key).and_then(Param::php_string).unwrap_or_default()
}

/// An ID parameter: a positive integer as PHP's `(int)` reads it; `None` when it is missing,
/// zero, negative or not a number.
pub(super) fn positive_id(params: &Array, key: &str) -> Option<u64> {
    u64::try_from(params.get(key).map_or(0, Param::php_int)).ok().filter(|id| *id > 0)
}

/// The methods only administrators may call refuse anyone else with `ACCESS_DENIED`.
pub(super) fn admin(p: &PortalState, caller: &Caller) -> Result<(), RestError> {
    if p.is_admin(caller.user_id) { Ok(()) } else { Err(RestError::access_denied(None)) }
}

/// `array_merge($_GET, $body)`.
pub(crate) fn params(uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Array {
    let mut params = parse_str(uri.query().unwrap_or("").as_bytes());
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().to_ascii_lowercase().starts_with("application/json"));
    let decoded = if is_json {
        // `json_decode` gives null for a bad document, which reads as no parameters.
        match serde_json::from_slice::<Param>(body) {
            Ok(Param::Array(a)) => a,
            _ => Array::new(),
        }
    } else {
        parse_str(body)
    };
    params.extend(decoded);
    params
}

/// PHP's `parse_str` with its repairs: a `%` not followed by two hex digits stays a literal `%`,
/// bytes that are not UTF-8 are replaced, names are mended as [`php_name`] says, a field with no
/// name or nested too deep is skipped, and a body over the limits is cut (fields past the limit
/// dropped; a body over the byte limit read as empty).
pub(crate) fn parse_str(body: &[u8]) -> Array {
    if body.len() > LIMITS.max_body_bytes {
        return Array::new();
    }
    let kept: Vec<String> = body
        .split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .take(LIMITS.max_fields)
        .map(repair)
        .filter(|pair| phpform::decode(pair.as_bytes(), &LIMITS).is_ok())
        .collect();
    phpform::decode(kept.join("&").as_bytes(), &LIMITS)
        .map(|form| from_form_array(&form))
        .unwrap_or_default()
}

/// One `name=value` pair rewritten so that the strict decoder reads it as PHP would.
fn repair(pair: &[u8]) -> String {
    let (name, value) = match pair.iter().position(|&b| b == b'=') {
        Some(eq) => (&pair[..eq], Some(&pair[eq + 1..])),
        None => (pair, None),
    };
    let name = String::from_utf8_lossy(&lenient_decode(name)).into_owned();
    let name = php_name(&name);
    let mut out = encode_component(&name);
    if let Some(value) = value {
        out.push('=');
        out.push_str(&encode_component(&String::from_utf8_lossy(&lenient_decode(value))));
    }
    out
}

/// `urldecode`: `+` is a space, `%XX` a byte, and any other `%` itself.
fn lenient_decode(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < raw.len() => match (hex(raw[i + 1]), hex(raw[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// The name PHP registers: leading spaces dropped, a space or `.` before the first `[` turned
/// into `_` (`a.b` is `a_b`), and that `[` turned into `_` too when no `]` follows it (`a[b` is
/// `a_b`). A later bracket left open makes the field unreadable; the strict decoder refuses it
/// and [`parse_str`] skips it.
fn php_name(name: &str) -> String {
    let name = name.trim_start_matches(' ');
    let open = name.find('[').unwrap_or(name.len());
    let base: String =
        name[..open].chars().map(|c| if c == ' ' || c == '.' { '_' } else { c }).collect();
    let rest = &name[open..];
    match rest.strip_prefix('[') {
        Some(after) if !after.contains(']') => format!("{base}_{after}"),
        _ => format!("{base}{rest}"),
    }
}

/// Percent-encodes everything but unreserved characters and the brackets of a key.
fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'[' | b']') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

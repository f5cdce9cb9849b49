//! Bounds on what one call or event may hold, past the form codec's own: the lengths of the
//! fields that travel further (into the store, the logs, the answer to `bizproc.event.send`).

/// Bounds on one incoming body; anything past them is refused with an error naming the field,
/// never truncated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest body accepted, in bytes (default 1 MiB).
    pub max_body_bytes: usize,
    /// The deepest bracket nesting accepted (default 64, PHP's `max_input_nesting_level`).
    pub max_depth: usize,
    /// The most `name=value` pairs accepted (default 10,000).
    pub max_fields: usize,
    /// The longest `event_token` (default 1 KiB; real ones are about 100 bytes, §3.4).
    pub max_event_token_bytes: usize,
    /// The longest `code` (default 128, Bitrix24's own limit on a registered code, §1.2).
    pub max_code_bytes: usize,
    /// The longest property value, each element of a list alone (default 64 KiB).
    pub max_property_value_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        let form = phpform::Limits::default();
        Limits {
            max_body_bytes: form.max_body_bytes,
            max_depth: form.max_depth,
            max_fields: form.max_fields,
            max_event_token_bytes: 1024,
            max_code_bytes: 128,
            max_property_value_bytes: 64 * 1024,
        }
    }
}

impl Limits {
    /// The form codec's share of the bounds.
    pub fn form(&self) -> phpform::Limits {
        phpform::Limits {
            max_body_bytes: self.max_body_bytes,
            max_depth: self.max_depth,
            max_fields: self.max_fields,
        }
    }
}

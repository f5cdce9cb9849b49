//! PHP's form encoding with bracket keys: `http_build_query` to write, `parse_str` to read.
//!
//! Bitrix24 sends activity calls and events as `application/x-www-form-urlencoded` bodies built by
//! PHP's `http_build_query` (docs/protocol.md §2.2, §4.3), and reads REST calls and `batch` commands
//! with `parse_str` (§5.1, §5.5). This crate speaks exactly that, so both sides of the wire (the
//! `b24` crate and the emulator) share one codec that is checked against PHP's own output
//! (`testdata/php-encoded`) and against itself by a property test.
//!
//! Why not `serde_qs`: in query mode it drops `%5B..%5D`, it ignores lower-case `%5b` even in form
//! mode, and it rejects a whole non-UTF-8 body without naming the field (design.md §5). Bitrix24
//! payloads also have dynamic keys (`properties[<id>]`, scalar or list), which want a value tree,
//! not a fixed struct.
//!
//! Deliberate differences from PHP, all of them stricter or more faithful round-trips:
//! - PHP mangles top-level names (`a.b` and `a b` become `a_b`, leading spaces are dropped); this
//!   decoder keeps names as sent. No Bitrix24 field name contains those characters.
//! - PHP keeps a malformed `%zz` literally and truncates past `max_input_vars`; this decoder
//!   returns a [`DecodeError`] naming the field instead.

mod decode;
mod encode;
mod quote;
mod value;

pub use decode::{DecodeError, Limits, decode};
pub use encode::encode;
pub use quote::{QUOTE_LIMIT, Quoted, one_line, quoted};
pub use value::{Array, Value};

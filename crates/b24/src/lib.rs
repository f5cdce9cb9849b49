//! The Bitrix24 protocol as b24act speaks it: what the portal sends us, and the REST client.
//!
//! - [`incoming`]: activity calls and app lifecycle events, decoded from PHP-encoded forms into
//!   typed values (protocol doc §2.2–2.5, §4.3).
//! - [`rest`]: the REST client — OAuth and webhook credentials, envelopes, error classes, token
//!   refresh, `batch`, the per-portal rate limiter, domain moves, typed methods (§3–5).

pub mod incoming;
pub mod rest;

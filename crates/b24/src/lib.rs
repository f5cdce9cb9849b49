//! The Bitrix24 protocol as b24act speaks it: what the portal sends us, and the REST client.
//!
//! - [`incoming`]: activity calls and app lifecycle events, decoded from PHP-encoded forms into
//!   typed values (docs/protocol.md §2.2–2.5, §4.3).
//! - [`rest`]: the REST client — OAuth and webhook credentials, envelopes, error classes, token
//!   refresh, `batch`, the per-portal rate limiter, domain moves, typed methods (§3–5).
//! - [`report`]: [`report::ErrorChain`], an error and all its sources as one log line.
//! - [`secret`]: tokens and the app's client secret as types whose `Debug` redacts them.

#![allow(
    clippy::result_large_err,
    reason = "rest::Error is ~150 bytes since serde_json's preserve_order made ApiError's \
              `extra` an IndexMap; it comes back once per network round trip, which dwarfs \
              the cost of moving it"
)]

pub mod incoming;
pub mod report;
pub mod rest;
pub mod secret;

//! What the portal sends us: activity calls and app lifecycle events, parsed at the edge.
//!
//! Both arrive as `application/x-www-form-urlencoded` bodies written by PHP's `http_build_query`
//! (protocol doc §2.2, §4.3). They are decoded with [`phpform`] and turned into typed values here,
//! so no raw form string travels further into b24act. Every problem becomes an [`IncomingError`]
//! that names the field; nothing here panics on input.

mod auth;
mod call;
mod event;
mod fields;
mod limits;
mod token;

pub use crate::secret::{AccessToken, ApplicationToken, RefreshToken};
pub use auth::{Auth, AuthTokens, MemberId};
pub use call::{ActivityCall, DocumentId, DocumentType, PropertyValue};
pub use event::{AppEvent, AppEventKind};
pub use fields::IncomingError;
pub use limits::Limits;
/// Input echoed into an answer or a log line goes through this: cut short and escaped.
pub use phpform::{QUOTE_LIMIT, Quoted, quoted};
pub(crate) use token::RedactedEventToken;
pub use token::{EventToken, EventTokenParts, MalformedEventToken};

#[cfg(test)]
mod tests;

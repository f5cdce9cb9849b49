//! What a REST client reports as it works — how long requests waited for the portal's request
//! budget, the portal's refusals for a spent budget, the outcome of each token refresh — so a
//! host can keep metrics without this crate choosing a metrics library for it.

use std::time::Duration;

use super::error::RefreshError;

/// Told by one portal's client (see [`crate::rest::RestClientBuilder::observer`]) what happened,
/// as it happens. Called on the request's task: keep it cheap and never block.
pub trait ClientObserver: Send + Sync {
    /// A request waited `waited` for its place in the portal's bucket (zero when there was room).
    fn budget_waited(&self, waited: Duration);

    /// The portal refused a request because its bucket was full: `code` is
    /// `QUERY_LIMIT_EXCEEDED` or `OPERATION_TIME_LIMIT` (protocol §5.6).
    fn budget_refused(&self, code: &str);

    /// A refresh request went to the auth server and ended so. Refreshes another caller or
    /// process made, and whose tokens this client took, are not reported.
    fn token_refreshed(&self, outcome: Result<(), &RefreshError>);
}

//! Errors as log lines: an error with every source behind it, `outer: inner: …`.
//!
//! `tracing`'s text format prints an error's sources only when the error is recorded as a
//! `dyn Error`, and its JSON format never does; `error = %ErrorChain(&error)` puts the whole
//! chain in both. Every crate of b24act that logs an error uses this one type.

use std::error::Error;
use std::fmt;

/// Displays `0` followed by each of its sources, separated by `: `.
pub struct ErrorChain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("registering `check`")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("bizproc.activity.add failed")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn every_source_follows_the_top_line() {
        let error = Outer(Middle(std::io::Error::other("connection refused")));
        assert_eq!(
            ErrorChain(&error).to_string(),
            "registering `check`: bizproc.activity.add failed: connection refused"
        );
    }

    #[test]
    fn an_error_without_sources_is_its_own_line() {
        let error = std::io::Error::other("disk full");
        assert_eq!(ErrorChain(&error).to_string(), "disk full");
    }
}

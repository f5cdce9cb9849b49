//! Secrets as their own types: tokens and the app's client secret. Their `Debug` shows only that
//! they are there, so a struct holding one can derive `Debug` and be logged without leaking
//! portal access; the secret itself comes out only through `expose()`, where it is sent.

use std::fmt;

/// Declares a string newtype for a secret: `Debug` shows only that it is there, so a logged
/// struct never leaks portal access.
macro_rules! secret {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq)]
        pub struct $name(String);

        impl $name {
            pub fn new(value: impl Into<String>) -> Self {
                $name(value.into())
            }

            /// The secret itself, for the one place that must send or store it.
            pub fn expose(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(<redacted>)"))
            }
        }
    };
}

secret!(
    /// The per-(portal, app) secret in every call and event; compare it in constant time (§4.4).
    ApplicationToken
);
secret!(
    /// An OAuth access token: lives one hour (§4.1).
    AccessToken
);
secret!(
    /// An OAuth refresh token: lives 180 days, replaced by every refresh (§4.1).
    RefreshToken
);
secret!(
    /// The app's `client_secret` from its registration: sent only to the auth server, to
    /// refresh tokens (§4.1).
    ClientSecret
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let shown = format!(
            "{:?} {:?} {:?} {:?}",
            ApplicationToken::new("app-s3cret"),
            AccessToken::new("acc-s3cret"),
            RefreshToken::new("ref-s3cret"),
            ClientSecret::new("cli-s3cret"),
        );
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("AccessToken(<redacted>)"), "{shown}");
        assert_eq!(ClientSecret::new("cli-s3cret").expose(), "cli-s3cret");
    }
}

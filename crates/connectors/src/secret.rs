//! A secret in a connector's settings (a bot token, a client secret, an access token): readable
//! only through [`Secret::expose`], shown as `<redacted>` by `Debug`, and able to scrub itself
//! out of text that came from elsewhere before that text goes into a reason or a log line.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;

/// A secret string. `Debug` prints `<redacted>`; there is no `Display` and no `Serialize`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `text` with every occurrence of the secret replaced by `<redacted>`: for text another
    /// system wrote (an error description, a transport error) that might echo it back.
    pub fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if self.0.is_empty() || !text.contains(&self.0) {
            Cow::Borrowed(text)
        } else {
            Cow::Owned(text.replace(&self.0, "<redacted>"))
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

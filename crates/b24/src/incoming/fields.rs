//! Reading typed fields out of a decoded form, with errors that name the field.

use phpform::{Array, DecodeError, Value, quoted};

/// Why an incoming call or event was rejected.
#[derive(Debug, thiserror::Error)]
pub enum IncomingError {
    #[error("malformed form body: {0}")]
    Form(#[from] DecodeError),
    #[error("required field `{0}` is missing")]
    Missing(String),
    /// `problem` quotes input only through [`quoted`]; `field` is shown through it here.
    #[error("field `{}` is invalid: {problem}", quoted(field))]
    Invalid { field: String, problem: String },
}

impl IncomingError {
    pub(crate) fn invalid(field: &str, problem: impl Into<String>) -> Self {
        IncomingError::Invalid { field: field.to_owned(), problem: problem.into() }
    }
}

/// A decoded form and the accessors the call and event parsers share.
pub(crate) struct Form(pub Array);

impl Form {
    /// The value at a bracket path such as `auth[member_id]`, given as `["auth", "member_id"]`.
    pub fn get(&self, path: &[&str]) -> Option<&Value> {
        let (first, rest) = path.split_first()?;
        let mut value = self.0.get(*first)?;
        for key in rest {
            value = value.as_array()?.get(*key)?;
        }
        Some(value)
    }

    /// A scalar that may be absent; an array in its place is an error.
    pub fn optional_str(&self, path: &[&str]) -> Result<Option<&str>, IncomingError> {
        match self.get(path) {
            None => Ok(None),
            Some(Value::Str(s)) => Ok(Some(s)),
            Some(Value::Array(_)) => {
                Err(IncomingError::invalid(&name(path), "expected a string, got an array"))
            }
        }
    }

    /// A scalar that must be present and not empty.
    pub fn required_str(&self, path: &[&str]) -> Result<&str, IncomingError> {
        match self.optional_str(path)? {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(IncomingError::Missing(name(path))),
        }
    }

    /// A scalar that may be absent or empty: both mean "not given".
    pub fn non_empty_str(&self, path: &[&str]) -> Result<Option<&str>, IncomingError> {
        Ok(self.optional_str(path)?.filter(|s| !s.is_empty()))
    }

    /// An optional integer field (`ts`, `auth[expires]`, …).
    pub fn optional_int<T: std::str::FromStr>(
        &self,
        path: &[&str],
    ) -> Result<Option<T>, IncomingError> {
        self.non_empty_str(path)?
            .map(|s| {
                s.parse().map_err(|_| {
                    IncomingError::invalid(
                        &name(path),
                        format!("`{}` is not an integer", quoted(s)),
                    )
                })
            })
            .transpose()
    }

    /// An optional URL field (`auth[client_endpoint]`, …).
    pub fn optional_url(&self, path: &[&str]) -> Result<Option<url::Url>, IncomingError> {
        self.non_empty_str(path)?
            .map(|s| {
                url::Url::parse(s).map_err(|e| {
                    IncomingError::invalid(
                        &name(path),
                        format!("`{}` is not a URL: {e}", quoted(s)),
                    )
                })
            })
            .transpose()
    }

    /// A string of at most `max` bytes, present and not empty.
    pub fn bounded_str(&self, path: &[&str], max: usize) -> Result<&str, IncomingError> {
        let value = self.required_str(path)?;
        check_length(&name(path), value, max)?;
        Ok(value)
    }

    /// A fixed-length list such as `document_id[0..2]`.
    pub fn triple(&self, field: &str) -> Result<Option<[String; 3]>, IncomingError> {
        let Some(value) = self.get(&[field]) else { return Ok(None) };
        let items = value
            .as_list()
            .ok_or_else(|| IncomingError::invalid(field, "expected a list `[0]`, `[1]`, `[2]`"))?;
        let strings: Option<Vec<String>> =
            items.iter().map(|v| v.as_str().map(str::to_owned)).collect();
        let strings = strings.ok_or_else(|| {
            IncomingError::invalid(field, "expected strings, found a nested array")
        })?;
        let count = strings.len();
        <[String; 3]>::try_from(strings).map(Some).map_err(|_| {
            IncomingError::invalid(field, format!("expected 3 elements, found {count}"))
        })
    }
}

/// The PHP spelling of a path: `auth[member_id]`.
pub(crate) fn name(path: &[&str]) -> String {
    let mut out = path.first().copied().unwrap_or_default().to_owned();
    for key in path.iter().skip(1) {
        out.push('[');
        out.push_str(key);
        out.push(']');
    }
    out
}

/// Refuses a value longer than `max` bytes, naming the field.
pub(crate) fn check_length(field: &str, value: &str, max: usize) -> Result<(), IncomingError> {
    if value.len() > max {
        return Err(IncomingError::invalid(
            field,
            format!("is {} bytes, over the limit of {max}", value.len()),
        ));
    }
    Ok(())
}

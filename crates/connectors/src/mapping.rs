//! Response mapping: return-property id → JSON pointer (RFC 6901) into a response body.
//!
//! In config, each entry is either a pointer or a table:
//!
//! ```toml
//! [actions.connector.response]
//! available_limit = "/data/available"                        # required
//! currency = { pointer = "/data/currency", default = "RUB" } # missing → "RUB"
//! comment = { pointer = "/data/comment", optional = true }   # missing → no value returned
//! ```
//!
//! "Missing" means the pointer does not resolve; a JSON `null` found there is a value. A required
//! value that is missing is a [`MappingError`], which connectors treat as fatal: the other side
//! answered, but not in the shape the action was configured for, and asking again will not change
//! that.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

/// How one return value is found in a response.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// RFC 6901: `""` is the whole body, `/a/0/b` walks keys and indexes; `~1` is `/`, `~0` is `~`.
    pub pointer: String,
    /// When the pointer does not resolve: produce no value instead of failing.
    pub optional: bool,
    /// When the pointer does not resolve: use this value instead of failing.
    pub default: Option<Value>,
}

impl Field {
    pub fn required(pointer: impl Into<String>) -> Field {
        Field { pointer: pointer.into(), optional: false, default: None }
    }
}

/// Return-property id → [`Field`]. Empty means "the response body is not needed".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResponseMapping {
    fields: BTreeMap<String, Field>,
}

/// A required value is not in the response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("nothing at `{pointer}` in the response for return value `{property}`")]
pub struct MappingError {
    pub property: String,
    pub pointer: String,
}

/// A mapping entry that cannot work, found at config time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{pointer}` is not a JSON pointer: {problem}")]
pub struct PointerError {
    /// The return-property id.
    pub property: String,
    pub pointer: String,
    pub problem: &'static str,
}

impl ResponseMapping {
    /// Builds a mapping, checking every pointer.
    pub fn new(
        fields: impl IntoIterator<Item = (String, Field)>,
    ) -> Result<ResponseMapping, PointerError> {
        let fields: BTreeMap<String, Field> = fields.into_iter().collect();
        for (property, field) in &fields {
            if let Err(problem) = check_pointer(&field.pointer) {
                return Err(PointerError {
                    property: property.clone(),
                    pointer: field.pointer.clone(),
                    problem,
                });
            }
        }
        Ok(ResponseMapping { fields })
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The return-property ids this mapping can produce.
    pub fn properties(&self) -> impl Iterator<Item = &str> {
        self.fields.keys().map(String::as_str)
    }

    /// Picks the return values out of a response body.
    pub fn apply(&self, body: &Value) -> Result<Map<String, Value>, MappingError> {
        let mut values = Map::new();
        for (property, field) in &self.fields {
            match (body.pointer(&field.pointer), &field.default) {
                (Some(value), _) | (None, Some(value)) => {
                    values.insert(property.clone(), value.clone());
                }
                (None, None) if field.optional => {}
                (None, None) => {
                    return Err(MappingError {
                        property: property.clone(),
                        pointer: field.pointer.clone(),
                    });
                }
            }
        }
        Ok(values)
    }
}

/// RFC 6901 syntax: empty, or `/`-prefixed reference tokens where `~` is followed by `0` or `1`.
pub(crate) fn check_pointer(pointer: &str) -> Result<(), &'static str> {
    if !pointer.is_empty() && !pointer.starts_with('/') {
        return Err("it must be empty (the whole body) or start with `/`");
    }
    let mut chars = pointer.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err("`~` must be followed by 0 or 1 (`~0` is `~`, `~1` is `/`)");
        }
    }
    Ok(())
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Field, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Detailed {
            pointer: String,
            #[serde(default)]
            optional: bool,
            default: Option<Value>,
        }

        struct FieldVisitor;

        impl<'de> Visitor<'de> for FieldVisitor {
            type Value = Field;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a JSON pointer such as \"/data/limit\", or { pointer, optional, default }",
                )
            }

            fn visit_str<E: de::Error>(self, pointer: &str) -> Result<Field, E> {
                checked(Field::required(pointer))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Field, A::Error> {
                let detailed = Detailed::deserialize(de::value::MapAccessDeserializer::new(map))?;
                if detailed.optional && detailed.default.is_some() {
                    return Err(de::Error::custom("give `optional` or `default`, not both"));
                }
                checked(Field {
                    pointer: detailed.pointer,
                    optional: detailed.optional,
                    default: detailed.default,
                })
            }
        }

        fn checked<E: de::Error>(field: Field) -> Result<Field, E> {
            match check_pointer(&field.pointer) {
                Ok(()) => Ok(field),
                Err(problem) => Err(E::custom(format_args!(
                    "`{}` is not a JSON pointer: {problem}",
                    field.pointer
                ))),
            }
        }

        deserializer.deserialize_any(FieldVisitor)
    }
}

impl<'de> Deserialize<'de> for ResponseMapping {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ResponseMapping, D::Error> {
        // Each field checked its pointer already, so that the error's path names the property.
        let fields = BTreeMap::<String, Field>::deserialize(deserializer)?;
        Ok(ResponseMapping { fields })
    }
}

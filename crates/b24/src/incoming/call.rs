//! The POST a portal sends to an activity's HANDLER when a workflow reaches it (§2.2–2.5).

use std::time::Duration;

use indexmap::IndexMap;
use phpform::{Value, quoted};

use super::fields::{Form, check_length, name};
use super::{Auth, EventToken, IncomingError, Limits};

/// `document_id[0..2]`: `[module, entity, id]`, e.g. `crm`, `CCrmDocumentDeal`, `DEAL_1188`.
/// The id's shape depends on the document: `DEAL_1188`, a bare `123` for lists, or
/// `DYNAMIC_147_1` for smart processes (§6.10), so it stays a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DocumentId {
    pub module: String,
    pub entity: String,
    pub id: String,
}

/// `document_type[0..2]`: `[module, entity, type]`, e.g. `crm`, `CCrmDocumentDeal`, `DEAL`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DocumentType {
    pub module: String,
    pub entity: String,
    pub kind: String,
}

/// One input property as sent: a scalar, or a list for a `Multiple` property (§2.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropertyValue {
    Scalar(String),
    List(Vec<String>),
}

/// One activity call, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityCall {
    pub workflow_id: String,
    /// The registered `CODE` of the activity or robot.
    pub code: String,
    pub document_id: DocumentId,
    /// Not sent by some very old portals (§2.3).
    pub document_type: Option<DocumentType>,
    pub event_token: EventToken,
    /// In the order sent. The whole `properties` key is absent when no value survives encoding,
    /// and an empty multiple value is dropped (§2.4), so a declared property may be missing.
    pub properties: IndexMap<String, PropertyValue>,
    /// `use_subscription`: `Y` means the workflow waits for `bizproc.event.send`. A missing or
    /// empty value is read as waiting: sending a result to an activity that does not wait is a
    /// harmless no-op (§3.3), while withholding one from a waiting activity hangs the workflow.
    pub waits_for_result: bool,
    /// `timeout_duration`; `0` or absent means the portal waits forever (§2.7).
    pub timeout: Option<Duration>,
    /// `ts`: the portal's clock at dispatch, Unix seconds.
    pub dispatched_at: Option<i64>,
    pub auth: Auth,
}

impl ActivityCall {
    /// Decodes and checks a call body. Fields the protocol may omit are `Option`s; a missing
    /// required field or a value of the wrong shape is an error naming that field.
    pub fn from_form(body: &[u8], limits: &Limits) -> Result<ActivityCall, IncomingError> {
        let form = Form(phpform::decode(body, &limits.form())?);
        let document_id = form
            .triple("document_id")?
            .ok_or_else(|| IncomingError::Missing("document_id".into()))?;
        let [module, entity, id] = document_id;
        let document_type = form
            .triple("document_type")?
            .map(|[module, entity, kind]| DocumentType { module, entity, kind });
        let waits_for_result = match form.optional_str(&["use_subscription"])? {
            None | Some("") | Some("Y") => true,
            Some("N") => false,
            Some(other) => {
                return Err(IncomingError::invalid(
                    "use_subscription",
                    format!("`{}` is neither Y nor N", quoted(other)),
                ));
            }
        };
        let timeout_seconds: Option<u64> = form.optional_int(&["timeout_duration"])?;
        Ok(ActivityCall {
            workflow_id: form.required_str(&["workflow_id"])?.to_owned(),
            code: form.bounded_str(&["code"], limits.max_code_bytes)?.to_owned(),
            document_id: DocumentId { module, entity, id },
            document_type,
            event_token: EventToken::new(
                form.bounded_str(&["event_token"], limits.max_event_token_bytes)?,
            ),
            properties: properties(&form, limits.max_property_value_bytes)?,
            waits_for_result,
            timeout: timeout_seconds.filter(|&s| s > 0).map(Duration::from_secs),
            dispatched_at: form.optional_int(&["ts"])?,
            auth: Auth::from_form(&form)?,
        })
    }
}

fn properties(
    form: &Form,
    max_value_bytes: usize,
) -> Result<IndexMap<String, PropertyValue>, IncomingError> {
    let Some(value) = form.get(&["properties"]) else { return Ok(IndexMap::new()) };
    let array = value.as_array().ok_or_else(|| {
        IncomingError::invalid("properties", "expected `properties[<id>]` keys, got a plain value")
    })?;
    array
        .iter()
        .map(|(key, value)| {
            let field = || name(&["properties", key]);
            let parsed = match value {
                Value::Str(s) => {
                    check_length(&field(), s, max_value_bytes)?;
                    PropertyValue::Scalar(s.clone())
                }
                Value::Array(_) => {
                    let items = value.as_list().ok_or_else(|| {
                        IncomingError::invalid(
                            &field(),
                            "expected a string or a list `[0]`, `[1]`, …",
                        )
                    })?;
                    let strings: Option<Vec<String>> =
                        items.iter().map(|v| v.as_str().map(str::to_owned)).collect();
                    let strings = strings.ok_or_else(|| {
                        IncomingError::invalid(&field(), "a list element is itself an array")
                    })?;
                    for s in &strings {
                        check_length(&field(), s, max_value_bytes)?;
                    }
                    PropertyValue::List(strings)
                }
            };
            Ok((key.clone(), parsed))
        })
        .collect()
}

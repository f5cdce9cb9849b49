//! What an operator does to a job that needs its action's declaration: cancel it with the
//! fallback the action declares, so the workflow moves on, or complete it by hand with values
//! checked against the action's return properties. The command line (`b24act jobs cancel
//! --fallback`, `b24act jobs complete`) and the console call these with the configuration's
//! [`Catalog`]; the store refuses what is unsafe (a result already stored, a workflow that
//! waits for none) and records who did it. The result goes out through the outbox with
//! `bizproc.event.send`, like any other.

use b24::incoming::PropertyValue;
use indexmap::IndexMap;
use serde_json::{Map, Value};
use store::{CANCELLED_BY_OPERATOR, COMPLETED_BY_OPERATOR, JobId, Store};

use crate::catalog::{Action, Catalog};
use crate::payload::JobResult;
use crate::values::{self, Shape};

/// Why an operator's command was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// The store refused it (see [`store::Error`]: no such job, a result already stored, …) or
    /// could not be reached.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The job's action is not in this configuration, so neither its fallback nor its return
    /// properties are known.
    #[error(
        "job {job_id}: its action `{code}` is not configured here, so its fallback and return \
         properties are unknown"
    )]
    UnknownAction { job_id: JobId, code: String },
    /// The action's failure policy is dead-letter: it declares no fallback values.
    #[error(
        "job {job_id}: action `{code}` declares no fallback values (its on_failure is \
         dead_letter); complete it by hand instead"
    )]
    NoFallback { job_id: JobId, code: String },
    /// A value typed in does not fit the action's return properties; the message names the
    /// property and what is wrong.
    #[error("{0}")]
    Value(String),
    /// The result could not be encoded (it is plain JSON, so this does not happen).
    #[error("encoding the result")]
    Encode(#[from] serde_json::Error),
}

/// Cancels job `id` and sends its action's fallback values, exactly as a worker sends them when
/// the deadline passes, with the reason "cancelled by operator": the waiting workflow moves on.
/// Recorded as done by `actor`.
pub async fn cancel_with_fallback(
    store: &Store,
    catalog: &Catalog,
    id: JobId,
    actor: &str,
    now: i64,
) -> Result<(), OperatorError> {
    let action = action_of(store, catalog, id).await?;
    let result = action.fallback(CANCELLED_BY_OPERATOR).ok_or_else(|| {
        OperatorError::NoFallback { job_id: id, code: action.config.code.clone() }
    })?;
    store.cancel_with_fallback(id, &serde_json::to_value(&result)?, actor, now).await?;
    Ok(())
}

/// Completes job `id` by hand with `values` ([`manual_result`]), sent to the waiting workflow as
/// result kind `manual`. Recorded as done by `actor`.
pub async fn complete_by_hand(
    store: &Store,
    catalog: &Catalog,
    id: JobId,
    values: &[(String, String)],
    actor: &str,
    now: i64,
) -> Result<(), OperatorError> {
    let action = action_of(store, catalog, id).await?;
    let result = manual_result(&action, values)?;
    store.complete_by_hand(id, &serde_json::to_value(&result)?, actor, now).await?;
    Ok(())
}

/// The result `values` make for `action`: `(return property, value)` pairs as an operator types
/// them (a property declared `multiple` may come several times; an empty value is none). Each
/// is read as the portal's own strings are read ([`values::from_call`]: an `int` must be an
/// integer, a `bool` `Y`/`N`, a `date` a date, a `select` one of its options, …) and then
/// converted as a connector's outputs are ([`Action::return_values`]: `Y`/`N`, `user_N`, lists
/// for `multiple`). An unknown property, a value that does not fit, a required property left
/// out, or no values at all for an action that returns some, is refused naming the property.
pub fn manual_result(
    action: &Action,
    values: &[(String, String)],
) -> Result<JobResult, OperatorError> {
    let declared = &action.config.return_properties;
    let code = &action.config.code;
    let names = || declared.keys().map(String::as_str).collect::<Vec<_>>().join(", ");
    if values.is_empty() && !declared.is_empty() {
        return Err(OperatorError::Value(format!("no values given; `{code}` returns {}", names())));
    }
    let mut given: IndexMap<&str, Vec<String>> = IndexMap::new();
    for (name, value) in values {
        if !declared.contains_key(name) {
            let returns = if declared.is_empty() { "nothing".to_owned() } else { names() };
            return Err(OperatorError::Value(format!(
                "`{}` is not a return property of `{code}` (it returns {returns})",
                b24::incoming::quoted(name)
            )));
        }
        given.entry(name).or_default().push(value.clone());
    }
    let mut typed = Map::new();
    for (name, property) in declared {
        let value = match given.swap_remove(name.as_str()) {
            Some(mut texts) => {
                let sent = if texts.len() == 1 {
                    PropertyValue::Scalar(texts.remove(0))
                } else {
                    PropertyValue::List(texts)
                };
                values::from_call(Shape::of(property), &sent)
                    .map_err(|problem| OperatorError::Value(format!("`{name}`: {problem}")))?
            }
            None => Value::Null,
        };
        let missing = value.is_null() || value.as_array().is_some_and(Vec::is_empty);
        if missing && property.required {
            return Err(OperatorError::Value(format!(
                "`{name}`: required by `{code}`, but no value was given"
            )));
        }
        if !missing {
            typed.insert(name.clone(), value);
        }
    }
    let return_values = action.return_values(&typed).map_err(OperatorError::Value)?;
    let log_message = Some(format!("b24act: {code} {COMPLETED_BY_OPERATOR}"));
    Ok(JobResult { return_values, log_message })
}

/// The configured action job `id` was called for.
async fn action_of(
    store: &Store,
    catalog: &Catalog,
    id: JobId,
) -> Result<std::sync::Arc<Action>, OperatorError> {
    let detail = store.job(id).await?.ok_or(store::Error::JobNotFound(id))?;
    let code = detail.job.call.action_code;
    catalog.get(&code).cloned().ok_or(OperatorError::UnknownAction { job_id: id, code })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const CONFIG: &str = concat!(
        crate::one_http_action_config!(),
        r#"url = "https://finance.example.com/"
[actions.return_properties.limit]
name = "Limit"
type = "double"
required = true
[actions.return_properties.approved]
name = "Approved"
type = "bool"
[actions.return_properties.approvers]
name = "Approvers"
type = "user"
multiple = true
[actions.return_properties.due]
name = "Due"
type = "date"
[actions.return_properties.level]
name = "Level"
type = "select"
options = { low = "Low", high = "High" }
"#
    );

    fn action() -> std::sync::Arc<Action> {
        let config = Config::from_toml(CONFIG, "test", std::iter::empty()).unwrap();
        let catalog = Catalog::build(&config, &connectors::Registry::new()).unwrap();
        catalog.get("check").unwrap().clone()
    }

    fn typed(pairs: &[(&str, &str)]) -> Result<JobResult, String> {
        let pairs: Vec<(String, String)> =
            pairs.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect();
        manual_result(&action(), &pairs).map_err(|error| error.to_string())
    }

    #[test]
    fn values_typed_in_take_the_portals_spellings() {
        let result = typed(&[
            ("limit", "8000.5"),
            ("approved", "Y"),
            ("approvers", "user_1"),
            ("approvers", "7"),
            ("due", "05.12.2026"),
            ("level", "high"),
        ])
        .unwrap();
        assert_eq!(
            Value::Object(result.return_values),
            serde_json::json!({
                "limit": 8000.5,
                "approved": "Y",
                "approvers": ["user_1", "user_7"],
                "due": "05.12.2026",
                "level": "high",
            })
        );
        assert_eq!(
            result.log_message.as_deref(),
            Some("b24act: check completed by hand by an operator")
        );
        let one = typed(&[("limit", "1"), ("approvers", "user_2")]).unwrap();
        assert_eq!(one.return_values["approvers"], serde_json::json!(["user_2"]));
    }

    #[test]
    fn values_that_do_not_fit_are_refused_naming_the_property() {
        let refused = |pairs: &[(&str, &str)]| typed(pairs).unwrap_err();
        assert_eq!(refused(&[("limit", "lots")]), "`limit`: `lots` is not a number");
        assert_eq!(
            refused(&[("limit", "1"), ("approved", "yes")]),
            "`approved`: `yes` is not Y or N"
        );
        assert_eq!(
            refused(&[("limit", "1"), ("limit", "2")]),
            "`limit`: expected one value, got a list of 2"
        );
        assert_eq!(
            refused(&[("limit", "1"), ("level", "medium")]),
            "`level`: `medium` is not one of the options low, high"
        );
        assert!(
            refused(&[("limit", "1"), ("due", "tomorrow")])
                .starts_with("`due`: `tomorrow` is not a date")
        );
        assert_eq!(
            refused(&[("limit", "1"), ("approvers", "user_1"), ("approvers", "bob")]),
            "`approvers`: element 1: `bob` is not a user (expected user_N, a user id, author, or a group_… code)"
        );
        assert_eq!(
            refused(&[("limits", "1")]),
            "`limits` is not a return property of `check` (it returns limit, approved, approvers, due, level)"
        );
        assert_eq!(
            refused(&[("approved", "N")]),
            "`limit`: required by `check`, but no value was given"
        );
        assert_eq!(
            refused(&[("limit", "")]),
            "`limit`: required by `check`, but no value was given"
        );
        assert_eq!(
            refused(&[]),
            "no values given; `check` returns limit, approved, approvers, due, level"
        );
    }
}

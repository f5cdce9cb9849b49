//! The actions this host runs, compiled once from the configuration: each declared action with
//! its connector built, and the conversions its declared properties imply.

use std::sync::Arc;

use b24::incoming::PropertyValue;
use b24::rest::{
    ActionKind as RestActionKind, ActivityDefinition, ActivityFilter, FilterRule, OrderedMap,
    PropertyDefinition, YesNo,
};
use connectors::{Connector, Contract, Registry};
use indexmap::IndexMap;
use serde_json::{Map, Value};
use url::Url;

use crate::config::{
    ActionConfig, ActionKind, Config, FailurePolicy, FilterRuleConfig, Problem, PropertyConfig,
    suggest,
};
use crate::payload::JobResult;
use crate::routes;
use crate::values::{self, Shape};

/// Every configured action, by code.
pub struct Catalog {
    actions: IndexMap<String, Arc<Action>>,
}

/// One action and its connector.
pub struct Action {
    pub config: ActionConfig,
    pub connector: Arc<dyn Connector>,
}

/// Connectors' settings were refused, or do not fit their actions' declared properties: every
/// problem, each naming the full key (`actions[0].connector.url`).
#[derive(Debug, thiserror::Error)]
#[error("{}", describe(.0))]
pub struct CatalogError(pub Vec<Problem>);

fn describe(problems: &[Problem]) -> String {
    match problems {
        [one] => one.to_string(),
        many => format!(
            "{} problem(s) in the actions' connectors:\n{}",
            many.len(),
            many.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n")
        ),
    }
}

impl Catalog {
    /// Builds every action's connector from its `[actions.connector]` table, and checks what
    /// the connector says it reads and fills ([`connectors::Contract`]) against the action's
    /// declared properties, so a misspelt id fails here rather than in every job.
    pub fn build(config: &Config, registry: &Registry) -> Result<Catalog, CatalogError> {
        let mut actions = IndexMap::new();
        let mut problems = Vec::new();
        for (index, action) in config.actions.iter().enumerate() {
            let mut table = action.connector.settings.clone();
            table.insert("kind".to_owned(), Value::String(action.connector.kind.clone()));
            // The connector names keys inside its own table; the full path starts at the action.
            let connector = match registry.build(&Value::Object(table)) {
                Ok(connector) => connector,
                Err(e) => {
                    let key = match e.key() {
                        "" => format!("actions[{index}].connector"),
                        key => format!("actions[{index}].connector.{key}"),
                    };
                    let message = config.explain(&key, e.message());
                    problems.push(Problem { key, message });
                    continue;
                }
            };
            if let Some(contract) = connector.contract() {
                check_contract(
                    action,
                    &contract,
                    &format!("actions[{index}].connector"),
                    &mut problems,
                );
            }
            actions.insert(
                action.code.clone(),
                Arc::new(Action { config: action.clone(), connector }),
            );
        }
        if problems.is_empty() { Ok(Catalog { actions }) } else { Err(CatalogError(problems)) }
    }

    pub fn get(&self, code: &str) -> Option<&Arc<Action>> {
        self.actions.get(code)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Action>> {
        self.actions.values()
    }
}

impl Action {
    /// The registration this action sends to `bizproc.activity.add` / `bizproc.robot.add`.
    pub fn definition(&self, public_url: &Url) -> (RestActionKind, ActivityDefinition) {
        let c = &self.config;
        let mut definition = ActivityDefinition::new(
            c.code.clone(),
            routes::handler_url(public_url, &c.code).to_string(),
            c.name.clone(),
        );
        definition.description = c.description.clone();
        definition.auth_user_id = Some(c.auth_user_id);
        // Always explicit: an empty value behaves differently for robots and activities (§2.7).
        definition.use_subscription = Some(YesNo::from(c.use_subscription));
        definition.properties = Some(property_definitions(&c.properties));
        definition.return_properties = Some(property_definitions(&c.return_properties));
        definition.document_type = c.document_type.clone();
        definition.filter = c.filter.as_ref().map(|filter| {
            let rules = |rules: &[FilterRuleConfig]| {
                rules
                    .iter()
                    .map(|rule| match rule {
                        FilterRuleConfig::Distribution(name) => {
                            FilterRule::Distribution(name.clone())
                        }
                        FilterRuleConfig::DocumentType(prefix) => {
                            FilterRule::DocumentType(prefix.clone())
                        }
                    })
                    .collect()
            };
            ActivityFilter { include: rules(&filter.include), exclude: rules(&filter.exclude) }
        });
        if c.settings_form {
            // The designer opens this page in a frame for the action's settings (§1.8).
            definition.use_placement = Some(YesNo::Yes);
            definition.placement_handler =
                Some(routes::settings_url(public_url, &c.code).to_string());
        }
        let kind = match c.kind {
            ActionKind::Activity => RestActionKind::Activity,
            ActionKind::Robot => RestActionKind::Robot,
        };
        (kind, definition)
    }

    /// The call's properties as typed JSON, checked against the declaration. An error names the
    /// property (`properties[amount]: …`) and means the job resolves through the failure policy.
    pub fn typed_properties(
        &self,
        sent: &IndexMap<String, PropertyValue>,
    ) -> Result<Map<String, Value>, String> {
        let mut typed = Map::new();
        for (id, property) in &self.config.properties {
            let value = match sent.get(id) {
                Some(value) => values::from_call(Shape::of(property), value)
                    .map_err(|problem| format!("properties[{id}]: {problem}"))?,
                None => Value::Null,
            };
            let missing = value.is_null() || value.as_array().is_some_and(Vec::is_empty);
            if missing && property.required {
                return Err(format!("properties[{id}]: required, but the call carried no value"));
            }
            if !value.is_null() {
                typed.insert(id.clone(), value);
            }
        }
        Ok(typed)
    }

    /// The connector's outputs as the portal should store them, by declared return property.
    /// Outputs that are not declared are dropped: the portal would ignore them anyway (§3.1).
    /// The failure's reason property, when the action has one, is sent empty unless given,
    /// so a workflow reads an empty reason as "not a fallback" (even in a loop that ran the
    /// action before).
    pub fn return_values(
        &self,
        outputs: &Map<String, Value>,
    ) -> Result<Map<String, Value>, String> {
        let mut values = Map::new();
        for (id, property) in &self.config.return_properties {
            let Some(output) = outputs.get(id) else { continue };
            let converted = values::to_return_value(Shape::of(property), output)
                .map_err(|problem| format!("return value `{id}`: {problem}"))?;
            values.insert(id.clone(), converted);
        }
        if let Some(id) = self.config.on_failure.reason_property() {
            values.entry(id).or_insert_with(|| Value::String(String::new()));
        }
        Ok(values)
    }

    /// The result the failure policy returns: its values with `{reason}` filled in string
    /// values, the reason itself in the `reason_property` when there is one, and the log
    /// message with `{reason}` filled; `None` for dead-letter. What a worker stores when a job
    /// fails for good, and what an operator's cancel with the fallback sends.
    pub fn fallback(&self, reason: &str) -> Option<JobResult> {
        match &self.config.on_failure {
            FailurePolicy::Fallback { values, log_message, reason_property } => {
                let fill = |value: &Value| match value {
                    Value::String(text) => Value::String(text.replace("{reason}", reason)),
                    other => other.clone(),
                };
                let mut outputs: Map<String, Value> =
                    values.iter().map(|(k, v)| (k.clone(), fill(v))).collect();
                if let Some(id) = reason_property {
                    outputs.insert(id.clone(), Value::String(reason.to_owned()));
                }
                // Validated at start (config::validate), so conversion cannot fail here; an
                // empty map is the safe answer if it ever did.
                let return_values = self.return_values(&outputs).unwrap_or_default();
                let log_message = Some(log_message.replace("{reason}", reason));
                Some(JobResult { return_values, log_message })
            }
            FailurePolicy::DeadLetter {} => None,
        }
    }
}

/// What a connector reads and fills against what `action` declares: every input it reads must
/// be a declared property, and every value it fills a declared return property when the
/// workflow waits for them (else the portal drops it, and the workflow never sees it).
fn check_contract(action: &ActionConfig, contract: &Contract, key: &str, found: &mut Vec<Problem>) {
    let mut undeclared = |id: &str, declared: &IndexMap<String, PropertyConfig>, what: &str| {
        if declared.contains_key(id) {
            return;
        }
        let ids = declared.keys().map(String::as_str);
        let listed = if declared.is_empty() {
            "it declares none".to_owned()
        } else {
            format!("it declares {}", ids.clone().collect::<Vec<_>>().join(", "))
        };
        found.push(Problem {
            key: key.to_owned(),
            message: format!(
                "{what} `{id}`, which the action does not declare ({listed}){}",
                suggest::did_you_mean(id, ids)
            ),
        });
    };
    for id in &contract.inputs {
        undeclared(id, &action.properties, "reads the input property");
    }
    if action.use_subscription {
        for id in &contract.outputs {
            undeclared(id, &action.return_properties, "fills the return property");
        }
    }
    if let Some(id) = action.on_failure.reason_property()
        && contract.outputs.contains(id)
    {
        found.push(Problem {
            key: key.to_owned(),
            message: format!(
                "fills the return property `{id}`, which on_failure.reason_property keeps for \
                 the reason of a failure (empty on success); give the reason another property"
            ),
        });
    }
}

fn property_definitions(
    properties: &IndexMap<String, PropertyConfig>,
) -> OrderedMap<PropertyDefinition> {
    properties
        .iter()
        .map(|(id, p)| {
            let mut definition = PropertyDefinition::new(p.name.clone(), p.kind.clone())
                .required(p.required)
                .multiple(p.multiple);
            if let Some(description) = &p.description {
                definition = definition.description(description.clone());
            }
            if let Some(default) = &p.default {
                definition = definition.default_value(default.clone());
            }
            if !p.options.is_empty() {
                definition =
                    definition.options(p.options.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            (id.clone(), definition)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = concat!(
        crate::one_http_action_config!(),
        r#"url = "URL"
"#
    );

    fn build(url: &str) -> Result<Catalog, CatalogError> {
        let config =
            Config::from_toml(&CONFIG.replace("URL", url), "test", std::iter::empty()).unwrap();
        Catalog::build(&config, &Registry::new())
    }

    #[test]
    fn fallback_fills_the_reason_into_the_log_and_string_values() {
        let text = CONFIG.replace("URL", "https://finance.example.com/")
            + "[actions.return_properties.why]\nname = \"Why\"\n\
               [actions.return_properties.manual]\nname = \"Manual\"\ntype = \"bool\"\n\
               [actions.on_failure]\nmode = \"fallback\"\nlog_message = \"failed: {reason}\"\n\
               values = { why = \"Sent to a person: {reason}\", manual = true }\n";
        let config = Config::from_toml(&text, "test", std::iter::empty()).unwrap();
        let catalog = Catalog::build(&config, &Registry::new()).unwrap();
        let result = catalog.get("check").unwrap().fallback("finance API down").unwrap();
        assert_eq!(result.log_message.as_deref(), Some("failed: finance API down"));
        assert_eq!(result.return_values["why"], "Sent to a person: finance API down");
        assert_eq!(result.return_values["manual"], "Y");
    }

    #[test]
    fn the_reason_property_gets_the_reason_in_a_fallback_and_is_empty_otherwise() {
        let text = CONFIG.replace("URL", "https://finance.example.com/")
            + "[actions.return_properties.limit]\nname = \"Limit\"\ntype = \"double\"\n\
               [actions.return_properties.error]\nname = \"Error\"\n\
               [actions.on_failure]\nmode = \"fallback\"\nreason_property = \"error\"\n\
               values = { limit = 0 }\n";
        let config = Config::from_toml(&text, "test", std::iter::empty()).unwrap();
        let catalog = Catalog::build(&config, &Registry::new()).unwrap();
        let action = catalog.get("check").unwrap();
        let fallback = action.fallback("finance API down").unwrap();
        assert_eq!(fallback.return_values["error"], "finance API down");
        assert_eq!(fallback.return_values["limit"], 0);
        let success = action
            .return_values(&serde_json::json!({"limit": 5}).as_object().cloned().unwrap())
            .unwrap();
        assert_eq!(success, *serde_json::json!({"limit": 5, "error": ""}).as_object().unwrap());
    }

    #[test]
    fn connector_errors_name_the_full_key() {
        let error = build("/relative").err().unwrap();
        assert_eq!(
            error.to_string(),
            "actions[0].connector.url: `/relative` has no scheme or host: write https://<host>/relative"
        );
        assert!(build("https://finance.example.com/{{document.id}}").is_ok());
    }
}

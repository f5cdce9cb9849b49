//! What `b24act dev` prints to start a workflow for an action: an example value for each input
//! property — its declared default, else one of its declared type — in a ready `curl` line to
//! the emulator's control API.

use std::time::SystemTime;

use b24::rest::PropertyType;
use host::config::{ActionConfig, PropertyConfig};
use serde_json::{Map, Value, json};

/// The designer's timeout of the workflows the printed lines start, in seconds.
pub const TIMEOUT_SECONDS: u64 = 600;

/// An example value of `property` as the control API takes it (`"Y"` for a bool, a list for a
/// `multiple` property): its declared default, else 42, 1500.5, `"example"`, the first option,
/// today (`2026-05-04`), now (`2026-05-04T09:30:00Z`), user 1, file 1.
pub fn example_value(property: &PropertyConfig, now: SystemTime) -> Value {
    if let Some(default) = &property.default {
        return default.clone();
    }
    let now = fakes::dates::rfc3339(now);
    let one = match &property.kind {
        PropertyType::Int => json!(42),
        PropertyType::Double => json!(1500.5),
        PropertyType::Bool => json!("Y"),
        PropertyType::Date => json!(now[..10]),
        PropertyType::Datetime => json!(now),
        PropertyType::Select => json!(property.options.keys().next()),
        PropertyType::User => json!("user_1"),
        PropertyType::File => json!("1"),
        PropertyType::String | PropertyType::Text | PropertyType::Other(_) => json!("example"),
    };
    if property.multiple { json!([one]) } else { one }
}

/// The control API's body that starts a workflow running `action` with example values.
pub fn start_body(action: &ActionConfig, now: SystemTime) -> Value {
    let properties: Map<String, Value> = action
        .properties
        .iter()
        .map(|(id, property)| (id.clone(), example_value(property, now)))
        .collect();
    json!({
        "code": action.code,
        "properties": properties,
        "timeout_duration": TIMEOUT_SECONDS,
    })
}

/// `curl -s -XPOST <workflows_url> -d '<body>'`, the body quoted for a POSIX shell.
pub fn curl_line(workflows_url: &str, body: &Value) -> String {
    format!("curl -s -XPOST {workflows_url} -d {}", shell_quote(&body.to_string()))
}

/// `text` as one single-quoted word of a POSIX shell.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn property(toml: &str) -> PropertyConfig {
        toml::from_str(&format!("name = \"P\"\n{toml}")).unwrap()
    }

    #[test]
    fn each_type_gets_a_value_the_portal_would_send() {
        // 2026-05-04T09:30:00Z
        let now = UNIX_EPOCH + Duration::from_secs(1_777_887_000);
        let value = |toml: &str| example_value(&property(toml), now);
        assert_eq!(value("type = \"int\""), json!(42));
        assert_eq!(value("type = \"double\""), json!(1500.5));
        assert_eq!(value("type = \"bool\""), json!("Y"));
        assert_eq!(value("type = \"date\""), json!("2026-05-04"));
        assert_eq!(value("type = \"datetime\""), json!("2026-05-04T09:30:00Z"));
        assert_eq!(value("type = \"string\""), json!("example"));
        assert_eq!(value("type = \"text\"\nmultiple = true"), json!(["example"]));
        assert_eq!(value("type = \"user\""), json!("user_1"));
        let select = "type = \"select\"\noptions = { b = \"B\", a = \"A\" }";
        assert_eq!(value(select), json!("b"));
        assert_eq!(value("type = \"string\"\ndefault = \"SKU-1\""), json!("SKU-1"));
    }

    #[test]
    fn the_body_survives_the_shell() {
        let body = json!({"code": "x", "properties": {"name": "O'Brien"}});
        let line = curl_line("http://127.0.0.1:1/control/portals/127.0.0.1:2/workflows", &body);
        assert_eq!(
            line,
            r#"curl -s -XPOST http://127.0.0.1:1/control/portals/127.0.0.1:2/workflows -d '{"code":"x","properties":{"name":"O'\''Brien"}}'"#
        );
    }
}

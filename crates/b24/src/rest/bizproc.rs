//! Typed business-process methods: activity and robot registration (protocol doc §1),
//! `bizproc.event.send` and `bizproc.activity.log` (§3), and `app.info`.
//!
//! Parameter names are sent upper-case as the docs write them (the portal upper-cases keys
//! anyway, §1.2); the keys inside a property definition use the docs' `Name`/`Type`/… casing.
//! Maps whose order the portal keeps (PROPERTIES, RETURN_PROPERTIES, OPTIONS) are
//! [`OrderedMap`]s, so the designer shows properties in the order they were declared.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::batch::BatchCommand;
use super::client::RestClient;
use super::envelope::Response;
use super::error::Error;
use crate::incoming::{EventToken, RedactedEventToken};

/// Text in one language, or per language: `{"en": "…", "de": "…"}` (§1.2: a plain string is
/// stored for every language; lookup is exact language → EN → `*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LocalizedText {
    Text(String),
    ByLanguage(BTreeMap<String, String>),
}

impl LocalizedText {
    /// The text for `language` as the portal looks it up: that language, else `en`, else the
    /// first one given; a plain string in every language.
    pub fn in_language(&self, language: &str) -> &str {
        match self {
            LocalizedText::Text(text) => text,
            LocalizedText::ByLanguage(by) => by
                .get(language)
                .or_else(|| by.get("en"))
                .or_else(|| by.values().next())
                .map_or("", String::as_str),
        }
    }
}

impl From<&str> for LocalizedText {
    fn from(text: &str) -> Self {
        LocalizedText::Text(text.to_owned())
    }
}

impl From<String> for LocalizedText {
    fn from(text: String) -> Self {
        LocalizedText::Text(text)
    }
}

/// Bitrix24's `Y`/`N` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum YesNo {
    #[serde(rename = "Y")]
    Yes,
    #[serde(rename = "N")]
    No,
}

impl From<bool> for YesNo {
    fn from(flag: bool) -> Self {
        if flag { YesNo::Yes } else { YesNo::No }
    }
}

/// A map serialized as a JSON object in insertion order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OrderedMap<V>(pub Vec<(String, V)>);

impl<V> OrderedMap<V> {
    pub fn new() -> Self {
        OrderedMap(Vec::new())
    }

    /// Appends an entry (a later entry with the same key wins on the portal, as in PHP).
    pub fn insert(&mut self, key: impl Into<String>, value: V) -> &mut Self {
        self.0.push((key.into(), value));
        self
    }
}

impl<K: Into<String>, V> FromIterator<(K, V)> for OrderedMap<V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        OrderedMap(iter.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
}

impl<V: Serialize> Serialize for OrderedMap<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// A property's type (§1.5). The portal does not validate it on new versions; `Other` carries
/// document-specific types such as `UF:crm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropertyType {
    Bool,
    Date,
    Datetime,
    Double,
    File,
    Int,
    Select,
    String,
    Text,
    User,
    Other(std::string::String),
}

impl PropertyType {
    pub fn as_str(&self) -> &str {
        match self {
            PropertyType::Bool => "bool",
            PropertyType::Date => "date",
            PropertyType::Datetime => "datetime",
            PropertyType::Double => "double",
            PropertyType::File => "file",
            PropertyType::Int => "int",
            PropertyType::Select => "select",
            PropertyType::String => "string",
            PropertyType::Text => "text",
            PropertyType::User => "user",
            PropertyType::Other(other) => other,
        }
    }
}

impl Serialize for PropertyType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Reads the ten documented names in any case (`Int` and `int` alike); anything else is kept
/// as written in [`PropertyType::Other`]. Never fails.
impl FromStr for PropertyType {
    type Err = Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const KNOWN: [(&str, PropertyType); 10] = [
            ("bool", PropertyType::Bool),
            ("date", PropertyType::Date),
            ("datetime", PropertyType::Datetime),
            ("double", PropertyType::Double),
            ("file", PropertyType::File),
            ("int", PropertyType::Int),
            ("select", PropertyType::Select),
            ("string", PropertyType::String),
            ("text", PropertyType::Text),
            ("user", PropertyType::User),
        ];
        Ok(KNOWN
            .into_iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(s))
            .map_or_else(|| PropertyType::Other(s.to_owned()), |(_, kind)| kind))
    }
}

impl<'de> Deserialize<'de> for PropertyType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Ok(name.parse().unwrap_or_else(|never: Infallible| match never {}))
    }
}

/// One input or output property of an activity (§1.5).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PropertyDefinition {
    pub name: LocalizedText,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<LocalizedText>,
    #[serde(rename = "Type")]
    pub kind: PropertyType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required: Option<YesNo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multiple: Option<YesNo>,
    /// A value or an expression such as `{=Document:NAME}`; for `select`, an option key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// For `select`: option key → label. Keys keep their case (§1.2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<OrderedMap<LocalizedText>>,
}

impl PropertyDefinition {
    /// A property with a name and a type; the rest unset.
    pub fn new(name: impl Into<LocalizedText>, kind: PropertyType) -> Self {
        PropertyDefinition {
            name: name.into(),
            description: None,
            kind,
            required: None,
            multiple: None,
            default: None,
            options: None,
        }
    }

    pub fn description(mut self, description: impl Into<LocalizedText>) -> Self {
        self.description = Some(description.into());
        self
    }

    pub fn required(mut self, required: bool) -> Self {
        self.required = Some(required.into());
        self
    }

    pub fn multiple(mut self, multiple: bool) -> Self {
        self.multiple = Some(multiple.into());
        self
    }

    pub fn default_value(mut self, default: impl Into<Value>) -> Self {
        self.default = Some(default.into());
        self
    }

    pub fn options<K: Into<String>, L: Into<LocalizedText>>(
        mut self,
        options: impl IntoIterator<Item = (K, L)>,
    ) -> Self {
        self.options = Some(options.into_iter().map(|(k, l)| (k, l.into())).collect());
        self
    }
}

/// One FILTER rule (§1.6): a distribution name (`b24`, `box`) or a document-type prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum FilterRule {
    Distribution(String),
    DocumentType(Vec<String>),
}

/// Where an activity is offered (§1.6). Hides it from designer lists only; not a permission.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct ActivityFilter {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<FilterRule>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<FilterRule>,
}

/// The optional fields a registration and its update share (§1.2, §1.3), written once: appended
/// to the struct given, each an `Option` left out of the JSON while unset. A macro because a
/// function cannot declare fields, and the public structs keep their flat fields.
macro_rules! with_shared_activity_fields {
    ($(#[$attr:meta])* pub struct $name:ident { $($own:tt)* }) => {
        $(#[$attr])*
        pub struct $name {
            $($own)*
            #[serde(skip_serializing_if = "Option::is_none")]
            pub description: Option<LocalizedText>,
            /// Input properties: id (`[A-Za-z][A-Za-z0-9_]*`) → definition.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub properties: Option<OrderedMap<PropertyDefinition>>,
            /// Output properties, set by `bizproc.event.send`'s RETURN_VALUES.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub return_properties: Option<OrderedMap<PropertyDefinition>>,
            /// `[module, entity, type]`, e.g. `["crm", "CCrmDocumentDeal", "DEAL"]`.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub document_type: Option<[String; 3]>,
            #[serde(skip_serializing_if = "Option::is_none")]
            pub filter: Option<ActivityFilter>,
            #[serde(skip_serializing_if = "Option::is_none")]
            pub use_placement: Option<YesNo>,
            #[serde(skip_serializing_if = "Option::is_none")]
            pub placement_handler: Option<String>,
        }
    };
}

with_shared_activity_fields! {
    /// An activity or robot as `bizproc.activity.add` / `bizproc.robot.add` take it (§1.2).
    #[derive(Debug, Clone, PartialEq, Serialize)]
    #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
    pub struct ActivityDefinition {
        /// `[A-Za-z0-9._-]+`, at most 128 characters, unique per app across activities and robots.
        pub code: String,
        /// The public HTTPS URL the portal calls.
        pub handler: String,
        /// The default "Run as" user, whose token the handler receives. Always set it (§6.5).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub auth_user_id: Option<u64>,
        /// Whether the workflow waits for `bizproc.event.send`. Always send it explicitly (§2.7).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub use_subscription: Option<YesNo>,
        pub name: LocalizedText,
    }
}

impl ActivityDefinition {
    /// A definition with the required fields; the rest unset.
    pub fn new(
        code: impl Into<String>,
        handler: impl Into<String>,
        name: impl Into<LocalizedText>,
    ) -> Self {
        ActivityDefinition {
            code: code.into(),
            handler: handler.into(),
            auth_user_id: None,
            use_subscription: None,
            name: name.into(),
            description: None,
            properties: None,
            return_properties: None,
            document_type: None,
            filter: None,
            use_placement: None,
            placement_handler: None,
        }
    }
}

with_shared_activity_fields! {
    /// The FIELDS of `bizproc.activity.update` / `bizproc.robot.update` (§1.3): only the fields
    /// that are set change; PROPERTIES and RETURN_PROPERTIES replace the whole map.
    #[derive(Debug, Clone, Default, PartialEq, Serialize)]
    #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
    pub struct ActivityChanges {
        #[serde(skip_serializing_if = "Option::is_none")]
        pub handler: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub auth_user_id: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub use_subscription: Option<YesNo>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub name: Option<LocalizedText>,
    }
}

impl From<&ActivityDefinition> for ActivityChanges {
    /// Every field of a definition as an update, e.g. to bring an existing registration in line.
    fn from(d: &ActivityDefinition) -> Self {
        ActivityChanges {
            handler: Some(d.handler.clone()),
            auth_user_id: d.auth_user_id,
            use_subscription: d.use_subscription,
            name: Some(d.name.clone()),
            description: d.description.clone(),
            properties: d.properties.clone(),
            return_properties: d.return_properties.clone(),
            document_type: d.document_type.clone(),
            filter: d.filter.clone(),
            use_placement: d.use_placement,
            placement_handler: d.placement_handler.clone(),
        }
    }
}

/// Which registration table row kind a method works on (§1.1: one table, an `IS_ROBOT` flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    /// A BP designer action, `bizproc.activity.*`.
    Activity,
    /// A CRM automation rule, `bizproc.robot.*`.
    Robot,
}

impl ActionKind {
    fn method(self, verb: &str) -> String {
        match self {
            ActionKind::Activity => format!("bizproc.activity.{verb}"),
            ActionKind::Robot => format!("bizproc.robot.{verb}"),
        }
    }
}

/// The method that returns an activity's result (§3.1); [`EventSend`] holds its parameters.
pub const EVENT_SEND_METHOD: &str = "bizproc.event.send";

/// The method that writes a line to the workflow log and leaves the activity waiting (§3.2).
pub const ACTIVITY_LOG_METHOD: &str = "bizproc.activity.log";

/// `bizproc.event.send` (§3.1): returns an activity's result and lets the workflow continue.
/// Its `Debug` hides the token's signature, as [`EventToken`](crate::incoming::EventToken)'s does.
#[derive(Clone, PartialEq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct EventSend {
    /// The `event_token` exactly as the activity call carried it.
    pub event_token: String,
    /// Output property id → value. Matched case-insensitively; unknown ids are ignored.
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub return_values: Map<String, Value>,
    /// A line for the workflow log (shown only if the template logs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_message: Option<String>,
}

impl fmt::Debug for EventSend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventSend")
            .field("event_token", &RedactedEventToken(&self.event_token))
            .field("return_values", &self.return_values)
            .field("log_message", &self.log_message)
            .finish()
    }
}

/// `bizproc.activity.log`'s parameters (§3.2), for the single call and the batch command alike.
fn activity_log_params(event_token: &str, log_message: &str) -> Value {
    serde_json::json!({"EVENT_TOKEN": event_token, "LOG_MESSAGE": log_message})
}

#[derive(Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
struct ByCode<'a> {
    code: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
struct Update<'a> {
    code: &'a str,
    fields: &'a ActivityChanges,
}

/// `app.info`'s result. Field types vary between portal versions, so the uncertain ones stay
/// JSON values; everything else lands in `other`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct AppInfo {
    #[serde(rename = "ID", default)]
    pub id: Option<Value>,
    #[serde(rename = "CODE", default)]
    pub code: Option<String>,
    #[serde(rename = "VERSION", default)]
    pub version: Option<Value>,
    /// `L`/`F`/`D`/`T`/`P`/`S` (§2.3). Not for licensing decisions (§4.4).
    #[serde(rename = "STATUS", default)]
    pub status: Option<String>,
    #[serde(rename = "INSTALLED", default)]
    pub installed: Option<Value>,
    #[serde(rename = "PAYMENT_EXPIRED", default)]
    pub payment_expired: Option<Value>,
    #[serde(rename = "DAYS", default)]
    pub days: Option<Value>,
    #[serde(rename = "LICENSE", default)]
    pub license: Option<String>,
    #[serde(rename = "LANGUAGE_ID", default)]
    pub language_id: Option<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl RestClient {
    /// `bizproc.activity.add` or `bizproc.robot.add` (§1.2). Needs an app's OAuth token of an
    /// administrator; a webhook gets 403 `ACCESS_DENIED` (§1.1).
    pub async fn action_add(
        &self,
        kind: ActionKind,
        definition: &ActivityDefinition,
    ) -> Result<Response<bool>, Error> {
        self.call_as(&kind.method("add"), definition).await
    }

    /// `bizproc.activity.update` or `bizproc.robot.update` (§1.3).
    pub async fn action_update(
        &self,
        kind: ActionKind,
        code: &str,
        changes: &ActivityChanges,
    ) -> Result<Response<bool>, Error> {
        self.call_as(&kind.method("update"), &Update { code, fields: changes }).await
    }

    /// `bizproc.activity.delete` or `bizproc.robot.delete` (§1.4).
    pub async fn action_delete(
        &self,
        kind: ActionKind,
        code: &str,
    ) -> Result<Response<bool>, Error> {
        self.call_as(&kind.method("delete"), &ByCode { code }).await
    }

    /// `bizproc.activity.list` or `bizproc.robot.list` (§1.4): this app's CODEs of that kind.
    pub async fn action_list(&self, kind: ActionKind) -> Result<Response<Vec<String>>, Error> {
        self.call_as(&kind.method("list"), &()).await
    }

    /// `bizproc.event.send` (§3.1). `true` also when the portal ignored it (activity already
    /// closed, stale token); errors per §3.3: `ACCESS_DENIED` and `"404"` are permanent,
    /// `"423"` retryable.
    pub async fn event_send(&self, event: &EventSend) -> Result<Response<bool>, Error> {
        self.call_as(EVENT_SEND_METHOD, event).await
    }

    /// `bizproc.activity.log` (§3.2): a line in the workflow log; the activity stays open.
    /// An empty `log_message` is refused with `ERROR_EMPTY_LOG_MESSAGE`.
    pub async fn activity_log(
        &self,
        event_token: &str,
        log_message: &str,
    ) -> Result<Response<bool>, Error> {
        self.call_as(ACTIVITY_LOG_METHOD, &activity_log_params(event_token, log_message)).await
    }

    /// `app.info`: the app's status on this portal; also a cheap check that a token works.
    pub async fn app_info(&self) -> Result<Response<AppInfo>, Error> {
        self.call_as("app.info", &()).await
    }
}

/// The four registration methods of one [`ActionKind`] under their own names
/// (`activity_add`, `robot_list`, …), each a call of the kind-generic `action_*` method. A macro
/// because a function cannot give methods names.
macro_rules! kind_methods {
    ($($kind:expr, $prefix:literal: $add:ident, $update:ident, $delete:ident, $list:ident;)*) => {
        $(impl RestClient {
            #[doc = concat!("`", $prefix, ".add`.")]
            pub async fn $add(
                &self,
                definition: &ActivityDefinition,
            ) -> Result<Response<bool>, Error> {
                self.action_add($kind, definition).await
            }

            #[doc = concat!("`", $prefix, ".update`.")]
            pub async fn $update(
                &self,
                code: &str,
                changes: &ActivityChanges,
            ) -> Result<Response<bool>, Error> {
                self.action_update($kind, code, changes).await
            }

            #[doc = concat!("`", $prefix, ".delete`.")]
            pub async fn $delete(&self, code: &str) -> Result<Response<bool>, Error> {
                self.action_delete($kind, code).await
            }

            #[doc = concat!("`", $prefix, ".list`.")]
            pub async fn $list(&self) -> Result<Response<Vec<String>>, Error> {
                self.action_list($kind).await
            }
        })*
    };
}

kind_methods! {
    ActionKind::Activity, "bizproc.activity": activity_add, activity_update, activity_delete, activity_list;
    ActionKind::Robot, "bizproc.robot": robot_add, robot_update, robot_delete, robot_list;
}

impl EventSend {
    /// A result with no return values and no log line.
    pub fn new(event_token: impl Into<String>) -> Self {
        EventSend { event_token: event_token.into(), return_values: Map::new(), log_message: None }
    }

    /// Adds one return value.
    pub fn value(mut self, property: impl Into<String>, value: impl Into<Value>) -> Self {
        self.return_values.insert(property.into(), value.into());
        self
    }

    /// Sets the log line.
    pub fn log(mut self, message: impl Into<String>) -> Self {
        self.log_message = Some(message.into());
        self
    }
}

/// Results and log lines as commands of one [`RestClient::batch`] (§5.5), keyed so their
/// outcomes can be found with [`super::BatchResults::get`].
impl BatchCommand {
    /// `bizproc.event.send` with `event`'s parameters, under `key`. Fails only if `event`'s
    /// values cannot be encoded ([`Error::Encode`]).
    pub fn event_send(key: impl Into<String>, event: &EventSend) -> Result<BatchCommand, Error> {
        BatchCommand::new(key, EVENT_SEND_METHOD, event)
    }

    /// `bizproc.activity.log` of `log_message` for the activity behind `event_token`, under
    /// `key`. The portal refuses an empty message with `ERROR_EMPTY_LOG_MESSAGE` (§3.2).
    pub fn activity_log(
        key: impl Into<String>,
        event_token: &EventToken,
        log_message: &str,
    ) -> BatchCommand {
        BatchCommand {
            key: key.into(),
            method: ACTIVITY_LOG_METHOD.to_owned(),
            params: activity_log_params(event_token.as_str(), log_message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn property_type_round_trips_and_reads_any_case() {
        let all = [
            PropertyType::Bool,
            PropertyType::Date,
            PropertyType::Datetime,
            PropertyType::Double,
            PropertyType::File,
            PropertyType::Int,
            PropertyType::Select,
            PropertyType::String,
            PropertyType::Text,
            PropertyType::User,
            PropertyType::Other("UF:crm".into()),
        ];
        for kind in all {
            let text = serde_json::to_string(&kind).unwrap();
            assert_eq!(serde_json::from_str::<PropertyType>(&text).unwrap(), kind, "{text}");
            assert_eq!(kind.as_str().parse::<PropertyType>(), Ok(kind.clone()));
        }
        assert_eq!(
            serde_json::from_value::<PropertyType>(json!("DateTime")).unwrap(),
            PropertyType::Datetime
        );
        assert_eq!("INT".parse::<PropertyType>(), Ok(PropertyType::Int));
        assert_eq!("Bool".parse::<PropertyType>(), Ok(PropertyType::Bool));
        assert_eq!("UF:Crm".parse::<PropertyType>(), Ok(PropertyType::Other("UF:Crm".into())));
        assert_eq!("".parse::<PropertyType>(), Ok(PropertyType::Other(String::new())));
        assert!(serde_json::from_value::<PropertyType>(json!(5)).is_err());
    }

    #[test]
    fn definition_serializes_with_the_docs_names_in_declared_order() {
        let mut definition = ActivityDefinition::new(
            "check_credit_limit",
            "https://act.example.com/h",
            LocalizedText::ByLanguage([("en".into(), "Check".into())].into()),
        );
        definition.auth_user_id = Some(1);
        definition.use_subscription = Some(YesNo::Yes);
        definition.properties = Some(
            [
                ("zeta", PropertyDefinition::new("Zeta", PropertyType::Int).required(true)),
                (
                    "alpha",
                    PropertyDefinition::new("Alpha", PropertyType::Select)
                        .options([("b", "B"), ("a", "A")])
                        .default_value("a"),
                ),
            ]
            .into_iter()
            .collect(),
        );
        definition.document_type = Some(["crm".into(), "CCrmDocumentDeal".into(), "DEAL".into()]);
        let text = serde_json::to_string(&definition).unwrap();
        assert!(text.starts_with(r#"{"CODE":"check_credit_limit","HANDLER":"https://act.example.com/h","AUTH_USER_ID":1,"USE_SUBSCRIPTION":"Y","NAME":{"en":"Check"}"#), "{text}");
        assert!(text.contains(r#""PROPERTIES":{"zeta":{"Name":"Zeta","Type":"int","Required":"Y"},"alpha":{"Name":"Alpha","Type":"select","Default":"a","Options":{"b":"B","a":"A"}}}"#), "{text}");
        assert!(text.contains(r#""DOCUMENT_TYPE":["crm","CCrmDocumentDeal","DEAL"]"#));
        assert!(!text.contains("RETURN_PROPERTIES"));
    }

    #[test]
    fn event_send_omits_empty_parts() {
        let bare = serde_json::to_value(EventSend::new("t")).unwrap();
        assert_eq!(bare, json!({"EVENT_TOKEN": "t"}));
        let full = serde_json::to_value(EventSend::new("t").value("ok", "Y").log("done")).unwrap();
        assert_eq!(
            full,
            json!({"EVENT_TOKEN": "t", "RETURN_VALUES": {"ok": "Y"}, "LOG_MESSAGE": "done"})
        );
    }

    /// A real token's shape: the workflow id has a `.`, the pieces are joined by `|` (§3.4).
    const TOKEN: &str = "681c894d3f0ec8.54818143|A36717_5720_22885_29158|X3QpQY6RKFD8ULUtOiKllFEZLUaVuDYn.4a9eda30cc";
    /// [`TOKEN`] as `http_build_query` writes it inside a command.
    const TOKEN_ENCODED: &str = "681c894d3f0ec8.54818143%7CA36717_5720_22885_29158%7CX3QpQY6RKFD8ULUtOiKllFEZLUaVuDYn.4a9eda30cc";

    /// A command's method and parameters as the portal reads them, and the emulator after it
    /// (`crates/b24-emulator/src/batch.rs`): split at the first `?`, the query through
    /// `parse_str`.
    fn read_as_the_portal_does(command: &BatchCommand) -> (String, phpform::Array) {
        let text = command.to_command_string();
        let (method, query) = text.split_once('?').expect("a command with parameters");
        let params = phpform::decode(query.as_bytes(), &phpform::Limits::default()).unwrap();
        (method.to_owned(), params)
    }

    /// The string at `path` (`["RETURN_VALUES", "ok"]` is `RETURN_VALUES[ok]`) in parsed params.
    fn param<'a>(params: &'a phpform::Array, path: &[&str]) -> Option<&'a str> {
        let (last, parents) = path.split_last()?;
        let mut array = params;
        for key in parents {
            array = array.get(*key)?.as_array()?;
        }
        array.get(*last)?.as_str()
    }

    #[test]
    fn event_send_command_carries_the_token_the_values_and_the_log_line() {
        let event = EventSend::new(EventToken::new(TOKEN))
            .value("approval_required", "N")
            .value("available_limit", 1500.5)
            .log("limit checked: 1500.5 & more");
        let command = BatchCommand::event_send("job7", &event).unwrap();
        assert_eq!(command.key, "job7");
        assert_eq!(
            command.to_command_string(),
            format!(
                "bizproc.event.send?EVENT_TOKEN={TOKEN_ENCODED}\
                 &RETURN_VALUES%5Bapproval_required%5D=N&RETURN_VALUES%5Bavailable_limit%5D=1500.5\
                 &LOG_MESSAGE=limit+checked%3A+1500.5+%26+more"
            )
        );
        let (method, params) = read_as_the_portal_does(&command);
        assert_eq!(method, "bizproc.event.send");
        assert_eq!(param(&params, &["EVENT_TOKEN"]), Some(TOKEN));
        assert_eq!(param(&params, &["RETURN_VALUES", "available_limit"]), Some("1500.5"));
        assert_eq!(param(&params, &["LOG_MESSAGE"]), Some("limit checked: 1500.5 & more"));
    }

    #[test]
    fn activity_log_command_carries_the_token_and_the_line() {
        let command =
            BatchCommand::activity_log("log0", &EventToken::new(TOKEN), "asking 1C, try 2/3");
        assert_eq!(command.key, "log0");
        assert_eq!(
            command.to_command_string(),
            format!(
                "bizproc.activity.log?EVENT_TOKEN={TOKEN_ENCODED}\
                 &LOG_MESSAGE=asking+1C%2C+try+2%2F3"
            )
        );
        let (method, params) = read_as_the_portal_does(&command);
        assert_eq!(method, "bizproc.activity.log");
        assert_eq!(param(&params, &["EVENT_TOKEN"]), Some(TOKEN));
        assert_eq!(param(&params, &["LOG_MESSAGE"]), Some("asking 1C, try 2/3"));
    }

    #[test]
    fn event_send_debug_hides_the_tokens_signature() {
        let event = EventSend::new(TOKEN).value("ok", "Y").log("done");
        let shown = format!("{event:?}");
        assert!(!shown.contains("4a9eda30cc"), "{shown}");
        assert!(shown.contains("X3QpQY6RKFD8ULUtOiKllFEZLUaVuDYn.<signature>"), "{shown}");
        assert!(shown.contains(r#""ok": String("Y")"#) && shown.contains("done"), "{shown}");
    }

    #[test]
    fn filter_rules_are_strings_or_prefixes() {
        let filter = ActivityFilter {
            include: vec![FilterRule::DocumentType(vec!["crm".into()])],
            exclude: vec![FilterRule::Distribution("box".into())],
        };
        assert_eq!(
            serde_json::to_value(filter).unwrap(),
            json!({"INCLUDE": [["crm"]], "EXCLUDE": ["box"]})
        );
    }

    #[test]
    fn app_info_keeps_unknown_fields() {
        let info: AppInfo = serde_json::from_value(json!({
            "ID": 7, "CODE": "local.x", "VERSION": 1, "STATUS": "L", "INSTALLED": true, "LICENSE": "de_project",
            "LICENSE_FAMILY": "project"
        }))
        .unwrap();
        assert_eq!(info.status.as_deref(), Some("L"));
        assert_eq!(info.other.get("LICENSE_FAMILY"), Some(&json!("project")));
    }
}

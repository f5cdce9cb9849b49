//! Activity and robot registrations: `bizproc.activity.*` / `bizproc.robot.*` with the
//! validation order and error strings of the protocol doc §1.2–§1.7.
//!
//! Both kinds live in one store keyed by `INTERNAL_CODE = md5(client_id@CODE)` with an
//! `is_robot` flag, so `add` conflicts across kinds while `update`/`delete`/`list` filter on the
//! kind (§1.1).

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::ids;
use crate::param::{Array, Param, upper_keys};
use crate::portal::PortalState;
use crate::rest::{Caller, RestError};

const VALIDATION: &str = "ERROR_ACTIVITY_VALIDATION_FAILURE";
/// DB validators of `b_bp_rest_activity` (§1.2): longer values fail the insert.
const MAX_CODE_LEN: usize = 128;
const MAX_HANDLER_LEN: usize = 1000;
const MAX_PROPERTIES_LEN: usize = 65_535;

/// One registered activity or robot, stored with upper-cased keys as `prepareActivityData`
/// leaves them.
#[derive(Debug, Clone)]
pub(crate) struct Registration {
    pub(crate) internal_code: String,
    pub(crate) client_id: String,
    pub(crate) code: String,
    pub(crate) is_robot: bool,
    pub(crate) handler: String,
    pub(crate) auth_user_id: i64,
    pub(crate) use_subscription: String,
    pub(crate) name: Param,
    pub(crate) description: Option<Param>,
    pub(crate) properties: Array,
    pub(crate) return_properties: Array,
    pub(crate) document_type: Option<Param>,
    pub(crate) filter: Option<Param>,
    pub(crate) use_placement: bool,
    pub(crate) placement_handler: Option<String>,
}

/// A registration as the control API and [`crate::Emulator::registrations`] show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistrationInfo {
    pub code: String,
    pub client_id: String,
    /// `md5(client_id@CODE)`; the designer's class is `rest_<internal_code>`.
    pub internal_code: String,
    pub is_robot: bool,
    pub handler: String,
    pub auth_user_id: i64,
    pub use_subscription: String,
    /// As stored: keys upper-cased except directly under PROPERTIES, RETURN_PROPERTIES, OPTIONS.
    pub name: serde_json::Value,
    pub description: Option<serde_json::Value>,
    pub properties: serde_json::Value,
    pub return_properties: serde_json::Value,
    pub document_type: Option<serde_json::Value>,
    pub filter: Option<serde_json::Value>,
    pub use_placement: bool,
    pub placement_handler: Option<String>,
}

impl Registration {
    pub(crate) fn info(&self) -> RegistrationInfo {
        RegistrationInfo {
            code: self.code.clone(),
            client_id: self.client_id.clone(),
            internal_code: self.internal_code.clone(),
            is_robot: self.is_robot,
            handler: self.handler.clone(),
            auth_user_id: self.auth_user_id,
            use_subscription: self.use_subscription.clone(),
            name: self.name.to_json(),
            description: self.description.as_ref().map(Param::to_json),
            properties: Param::Array(self.properties.clone()).to_json(),
            return_properties: Param::Array(self.return_properties.clone()).to_json(),
            document_type: self.document_type.as_ref().map(Param::to_json),
            filter: self.filter.as_ref().map(Param::to_json),
            use_placement: self.use_placement,
            placement_handler: self.placement_handler.clone(),
        }
    }
}

/// A PROPERTY's `TYPE`, lower-cased; `string` when it has none (§1.5).
pub(crate) fn property_type(definition: &Array) -> String {
    definition
        .get("TYPE")
        .and_then(Param::php_string)
        .filter(|t| !t.is_empty())
        .map_or_else(|| "string".to_owned(), |t| t.to_lowercase())
}

/// A PROPERTY's `REQUIRED` or `MULTIPLE`, read as `CBPHelper::getBool` reads them (§1.5).
pub(crate) fn property_flag(definition: &Array, key: &str) -> bool {
    match definition.get(key) {
        Some(Param::Str(s)) => matches!(s.as_str(), "Y" | "y" | "1" | "true"),
        Some(Param::Bool(b)) => *b,
        Some(Param::Num(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        _ => false,
    }
}

/// A NAME or DESCRIPTION in the portal's language: a plain string as it is, a language map by
/// the exact language, then `RU` for `UA`, then `EN`, then `*` (§1.2, `getLocalization`).
pub(crate) fn localized(text: &Param, language: &str) -> String {
    let Param::Array(map) = text else {
        return text.php_string().unwrap_or_default();
    };
    let language = language.to_uppercase();
    let fallback = (language == "UA").then_some("RU");
    [Some(language.as_str()), fallback, Some("EN"), Some("*")]
        .into_iter()
        .flatten()
        .find_map(|key| map.get(key))
        .and_then(Param::php_string)
        .unwrap_or_default()
}

/// Every registration on a portal, in insertion order.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    items: IndexMap<String, Registration>,
}

impl Registry {
    /// Deletes every activity and robot of an app (app update or uninstall, §1.1).
    pub(crate) fn wipe_app(&mut self, client_id: &str) {
        self.items.retain(|_, r| r.client_id != client_id);
    }

    pub(crate) fn all(&self) -> impl Iterator<Item = &Registration> {
        self.items.values()
    }
}

/// `md5(APP_ID . '@' . CODE)` (§1.1).
pub(crate) fn internal_code(client_id: &str, code: &str) -> String {
    ids::md5_hex(&format!("{client_id}@{code}"))
}

fn invalid(description: impl Into<String>) -> RestError {
    RestError::bad_request(VALIDATION, description)
}

/// Checks 1 and 2 of every registration method: an app context and an admin (§1.2).
fn app_admin(portal: &PortalState, caller: &Caller) -> Result<String, RestError> {
    let Some(client_id) = caller.client_id.clone() else {
        return Err(RestError::access_denied(Some("Application context required")));
    };
    if !portal.is_admin(caller.user_id) {
        return Err(RestError::access_denied(None));
    }
    Ok(client_id)
}

/// `prepareActivityData`: upper-cases keys recursively, except the keys directly under
/// PROPERTIES, RETURN_PROPERTIES and OPTIONS (§1.2 step 3).
pub(crate) fn prepare(data: &Array, keep_case: bool) -> Array {
    let mut out = Array::with_capacity(data.len());
    for (key, value) in data {
        let key = if keep_case { key.clone() } else { key.to_uppercase() };
        let value = match value {
            Param::Array(inner) => {
                let keep = matches!(key.as_str(), "PROPERTIES" | "RETURN_PROPERTIES" | "OPTIONS");
                Param::Array(prepare(inner, keep))
            }
            other => other.clone(),
        };
        // A later key that collides after upper-casing overwrites in place, as in PHP.
        out.insert(key, value);
    }
    out
}

/// PCRE's `$` also matches before a final newline, so `"code\n"` passes `^…$`.
fn strip_final_newline(s: &str) -> &str {
    s.strip_suffix('\n').unwrap_or(s)
}

/// `validateActivityCode` (§1.2).
fn validate_code(code: Option<&Param>) -> Result<String, RestError> {
    let code = code.unwrap_or(&Param::Null);
    if code.is_empty() {
        return Err(invalid("Empty activity code!"));
    }
    let Some(text) = code.php_string() else {
        return Err(invalid("Wrong activity code!"));
    };
    let body = strip_final_newline(&text);
    let ok = !body.is_empty()
        && body.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if !ok {
        return Err(invalid("Wrong activity code!"));
    }
    Ok(text)
}

/// The scheme and host PHP's `parse_url` finds in a URL, as far as `checkCallback` needs them.
fn parse_url(url: &str) -> (Option<String>, Option<String>) {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, rest))
            if s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) =>
        {
            (Some(s.to_owned()), rest)
        }
        _ => match url.strip_prefix("//") {
            Some(rest) => (None, rest),
            None => return (None, None),
        },
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host_port,
    };
    (scheme, (!host.is_empty()).then(|| host.to_owned()))
}

/// `HandlerHelper::checkCallback` (§1.2): a host whose first `.` is past position 0, then an
/// `http`/`https` scheme. `localhost` has no dot and is rejected; `127.0.0.1` passes.
pub(crate) fn validate_handler(url: Option<&Param>) -> Result<String, RestError> {
    let text = url.and_then(Param::php_string).unwrap_or_default();
    let (scheme, host) = parse_url(&text);
    let host_ok = host.is_some_and(|h| h.find('.').is_some_and(|dot| dot > 0));
    if !host_ok {
        return Err(RestError::bad_request("ERROR_WRONG_HANDLER_URL", "Wrong handler URL"));
    }
    if !matches!(scheme.as_deref(), Some("http" | "https")) {
        return Err(RestError::bad_request(
            "ERROR_UNSUPPORTED_PROTOCOL",
            "Unsupported handler protocol",
        ));
    }
    Ok(text)
}

/// `validateActivityProperties` (§1.2): an array of `{propId: {NAME: …}}`.
fn validate_properties(props: &Param) -> Result<Array, RestError> {
    let Param::Array(props) = props else {
        return Err(invalid("Wrong properties array!"));
    };
    for (key, property) in props {
        let k = strip_final_newline(key);
        let ok = k.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ok {
            return Err(invalid(format!("Wrong property key ({key})!")));
        }
        let name_empty =
            property.as_array().and_then(|p| p.get("NAME")).is_none_or(Param::is_empty);
        if name_empty {
            return Err(invalid(format!("Empty property NAME ({key})!")));
        }
    }
    Ok(props.clone())
}

/// Document types this portal knows (`DocumentService::getDocumentFieldTypes` succeeds).
const KNOWN_DOCUMENTS: &[(&str, &str)] = &[
    ("crm", "CCrmDocumentDeal"),
    ("crm", "CCrmDocumentLead"),
    ("crm", "CCrmDocumentContact"),
    ("crm", "CCrmDocumentCompany"),
    ("crm", "Bitrix\\Crm\\Integration\\BizProc\\Document\\Dynamic"),
    ("crm", "Bitrix\\Crm\\Integration\\BizProc\\Document\\Quote"),
    ("crm", "Bitrix\\Crm\\Integration\\BizProc\\Document\\SmartInvoice"),
    ("crm", "Bitrix\\Crm\\Integration\\BizProc\\Document\\SmartDocument"),
    ("lists", "BizprocDocument"),
    ("lists", "Bitrix\\Lists\\BizprocDocumentLists"),
    ("disk", "Bitrix\\Disk\\BizProcDocument"),
    ("iblock", "CIBlockDocument"),
];

/// `validateActivityDocumentType`: `[module, entity, type]` of a known document.
fn validate_document_type(value: &Param) -> Result<Param, RestError> {
    let wrong = || invalid("Wrong activity DOCUMENT_TYPE!");
    let parts: Vec<String> = value
        .as_array()
        .ok_or_else(wrong)?
        .values()
        .map(|v| v.php_string().unwrap_or_default())
        .collect();
    let [module, entity, kind] = parts.as_slice() else {
        return Err(wrong());
    };
    let known = KNOWN_DOCUMENTS.iter().any(|(m, e)| m == module && e == entity);
    if !known || kind.is_empty() {
        return Err(wrong());
    }
    Ok(value.clone())
}

fn serialized_len(props: &Array) -> usize {
    serde_json::to_string(&Param::Array(props.clone())).map_or(0, |s| s.len())
}

/// `bizproc.activity.add` / `bizproc.robot.add`.
pub(crate) fn add(
    portal: &mut PortalState,
    caller: &Caller,
    params: &Array,
    is_robot: bool,
) -> Result<Param, RestError> {
    let client_id = app_admin(portal, caller)?;
    let data = prepare(params, false);
    if data.is_empty() {
        return Err(invalid("Empty data!"));
    }
    let code = validate_code(data.get("CODE"))?;
    let handler = validate_handler(data.get("HANDLER"))?;
    let name = data.get("NAME").cloned().unwrap_or(Param::Null);
    if name.is_empty() {
        return Err(invalid("Empty activity NAME!"));
    }
    let present = |k: &str| data.get(k).filter(|v| **v != Param::Null);
    let properties = present("PROPERTIES").map(validate_properties).transpose()?;
    let return_properties = present("RETURN_PROPERTIES").map(validate_properties).transpose()?;
    // Robot add does not check DOCUMENT_TYPE (validateRobot has no such call, §1.2).
    let document_type = match present("DOCUMENT_TYPE") {
        Some(dt) if !is_robot => Some(validate_document_type(dt)?),
        other => other.cloned(),
    };
    let filter = present("FILTER").cloned();
    if filter.as_ref().is_some_and(|f| f.as_array().is_none()) {
        return Err(invalid("Wrong activity FILTER!"));
    }
    let internal = internal_code(&client_id, &code);
    // The duplicate check ignores IS_ROBOT: activities and robots share one CODE namespace.
    if portal.registry.items.contains_key(&internal) {
        return Err(RestError::bad_request(
            "ERROR_ACTIVITY_ALREADY_INSTALLED",
            "Activity or Robot already installed!",
        ));
    }
    let use_placement =
        data.get("USE_PLACEMENT").and_then(Param::php_string).as_deref() == Some("Y");
    let placement_handler =
        if use_placement { Some(validate_handler(data.get("PLACEMENT_HANDLER"))?) } else { None };
    let properties = properties.unwrap_or_default();
    let return_properties = return_properties.unwrap_or_default();
    let too_long = code.len() > MAX_CODE_LEN
        || handler.len() > MAX_HANDLER_LEN
        || serialized_len(&properties) >= MAX_PROPERTIES_LEN
        || serialized_len(&return_properties) >= MAX_PROPERTIES_LEN;
    if too_long {
        return Err(RestError::bad_request("ERROR_ACTIVITY_ADD_FAILURE", "Activity save error!"));
    }
    let registration = Registration {
        internal_code: internal.clone(),
        client_id,
        code,
        is_robot,
        handler,
        auth_user_id: data.get("AUTH_USER_ID").map_or(0, Param::php_int),
        use_subscription: data
            .get("USE_SUBSCRIPTION")
            .and_then(Param::php_string)
            .unwrap_or_default(),
        name,
        description: data.get("DESCRIPTION").cloned(),
        properties,
        return_properties,
        document_type,
        filter,
        use_placement,
        placement_handler,
    };
    tracing::info!(code = registration.code, is_robot, "registered");
    portal.registry.items.insert(internal, registration);
    Ok(Param::Bool(true))
}

/// The calling app's registration of the given kind named by `params[CODE]`: its key and the
/// params with upper-case keys; the caller must be an admin of an installed app (§1.3, §1.4).
fn find_own(
    portal: &PortalState,
    caller: &Caller,
    params: &Array,
    is_robot: bool,
) -> Result<(String, Array), RestError> {
    let client_id = app_admin(portal, caller)?;
    let params = upper_keys(params);
    let code = params.get("CODE").and_then(Param::php_string).unwrap_or_default();
    let key = internal_code(&client_id, &code);
    match portal.registry.items.get(&key) {
        Some(r) if r.is_robot == is_robot => Ok((key, params)),
        _ => Err(not_found()),
    }
}

fn not_found() -> RestError {
    RestError::bad_request("ERROR_ACTIVITY_NOT_FOUND", "Activity or Robot not found!")
}

/// `bizproc.activity.update` / `bizproc.robot.update` (§1.3).
pub(crate) fn update(
    portal: &mut PortalState,
    caller: &Caller,
    params: &Array,
    is_robot: bool,
) -> Result<Param, RestError> {
    let (key, params) = find_own(portal, caller, params, is_robot)?;
    let no_fields = || invalid("No fields to update");
    let fields = match params.get("FIELDS") {
        Some(Param::Array(f)) if !f.is_empty() => prepare(f, false),
        _ => return Err(no_fields()),
    };
    let mut next = portal.registry.items.get(&key).ok_or_else(not_found)?.clone();
    let mut changed = false;
    if fields.contains_key("HANDLER") {
        next.handler = validate_handler(fields.get("HANDLER"))?;
        changed = true;
    }
    if let Some(v) = fields.get("AUTH_USER_ID") {
        next.auth_user_id = v.php_int();
        changed = true;
    }
    if let Some(v) = fields.get("USE_SUBSCRIPTION") {
        next.use_subscription = v.php_string().unwrap_or_default();
        changed = true;
    }
    if let Some(v) = fields.get("USE_PLACEMENT") {
        next.use_placement = v.php_string().as_deref() == Some("Y");
        if !next.use_placement {
            next.placement_handler = None;
        }
        changed = true;
    }
    if let Some(v) = fields.get("NAME").filter(|v| !v.is_empty()) {
        next.name = v.clone();
        changed = true;
    }
    if let Some(v) = fields.get("DESCRIPTION") {
        next.description = Some(v.clone());
        changed = true;
    }
    if let Some(v) = fields.get("PROPERTIES") {
        next.properties = validate_properties(v)?;
        changed = true;
    }
    if let Some(v) = fields.get("RETURN_PROPERTIES") {
        next.return_properties = validate_properties(v)?;
        changed = true;
    }
    if let Some(v) = fields.get("DOCUMENT_TYPE") {
        // update checks DOCUMENT_TYPE for both kinds; an empty value clears it (§1.3).
        next.document_type = if v.is_empty() { None } else { Some(validate_document_type(v)?) };
        changed = true;
    }
    if let Some(v) = fields.get("FILTER") {
        next.filter = if v.is_empty() {
            None
        } else if v.as_array().is_some() {
            Some(v.clone())
        } else {
            return Err(invalid("Wrong activity FILTER!"));
        };
        changed = true;
    }
    if fields.contains_key("PLACEMENT_HANDLER") {
        next.placement_handler = Some(validate_handler(fields.get("PLACEMENT_HANDLER"))?);
        changed = true;
    }
    if !changed {
        return Err(no_fields());
    }
    let mut orm_errors = Vec::new();
    if next.handler.len() > MAX_HANDLER_LEN {
        orm_errors.push("HANDLER is too long");
    }
    if serialized_len(&next.properties) >= MAX_PROPERTIES_LEN
        || serialized_len(&next.return_properties) >= MAX_PROPERTIES_LEN
    {
        orm_errors.push("Properties are too long");
    }
    if !orm_errors.is_empty() {
        return Err(invalid(orm_errors.join("; ")));
    }
    portal.registry.items.insert(key, next);
    Ok(Param::Bool(true))
}

/// `bizproc.activity.delete` / `bizproc.robot.delete` (§1.4).
pub(crate) fn delete(
    portal: &mut PortalState,
    caller: &Caller,
    params: &Array,
    is_robot: bool,
) -> Result<Param, RestError> {
    let (key, _) = find_own(portal, caller, params, is_robot)?;
    portal.registry.items.shift_remove(&key);
    Ok(Param::Bool(true))
}

/// `bizproc.activity.list` / `bizproc.robot.list`: the caller app's CODEs of that kind (§1.4).
pub(crate) fn list(
    portal: &PortalState,
    caller: &Caller,
    is_robot: bool,
) -> Result<Param, RestError> {
    let client_id = app_admin(portal, caller)?;
    Ok(Param::list(
        portal
            .registry
            .items
            .values()
            .filter(|r| r.client_id == client_id && r.is_robot == is_robot)
            .map(|r| Param::str(&r.code)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_url_finds_scheme_and_host() {
        assert_eq!(
            parse_url("http://127.0.0.1:8080/h"),
            (Some("http".into()), Some("127.0.0.1".into()))
        );
        assert_eq!(parse_url("https://u:p@a.b/x?y"), (Some("https".into()), Some("a.b".into())));
        assert_eq!(parse_url("//a.b/x"), (None, Some("a.b".into())));
        assert_eq!(parse_url("a.b/x"), (None, None));
    }

    #[test]
    fn prepare_keeps_property_ids_and_option_keys() {
        let input: Param = serde_json::from_str(
            r#"{"code":"x","properties":{"myProp":{"Name":"n","options":{"a":"A"}}}}"#,
        )
        .unwrap();
        let out = prepare(input.as_array().unwrap(), false);
        let json = Param::Array(out).to_json();
        assert_eq!(
            json,
            serde_json::json!({"CODE":"x","PROPERTIES":{"myProp":{"NAME":"n","OPTIONS":{"a":"A"}}}})
        );
    }
}

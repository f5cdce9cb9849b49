//! What an app binds on a portal besides actions: event handlers (`event.bind`, `event.get`,
//! `event.unbind`) and widget placements (`placement.bind`, `placement.list`, `placement.get`,
//! `placement.unbind`), with the parameters and error strings of §5.8. The emulator keeps and
//! lists them; of the events, it sends only the app's own life-cycle events, to its install URL.

use crate::param::{Array, Param, upper_keys};
use crate::portal::PortalState;
use crate::rest::request::{admin, text};
use crate::rest::{Caller, RestError};

/// The events `event.bind` accepts: the app's life cycle and the CRM document kinds'.
const EVENTS: &[&str] = &[
    "ONAPPINSTALL",
    "ONAPPUPDATE",
    "ONAPPUNINSTALL",
    "ONCRMDEALADD",
    "ONCRMDEALUPDATE",
    "ONCRMDEALDELETE",
    "ONCRMLEADADD",
    "ONCRMLEADUPDATE",
    "ONCRMLEADDELETE",
    "ONCRMCONTACTADD",
    "ONCRMCONTACTUPDATE",
    "ONCRMCONTACTDELETE",
    "ONCRMCOMPANYADD",
    "ONCRMCOMPANYUPDATE",
    "ONCRMCOMPANYDELETE",
];

/// The placements `placement.bind` accepts, each with the scope `placement.list` shows it for.
const PLACEMENTS: &[(&str, &str)] = &[
    ("CRM_DEAL_DETAIL_TAB", "crm"),
    ("CRM_DEAL_DETAIL_TOOLBAR", "crm"),
    ("CRM_DEAL_LIST_TOOLBAR", "crm"),
    ("CRM_LEAD_DETAIL_TAB", "crm"),
    ("CRM_CONTACT_DETAIL_TAB", "crm"),
    ("CRM_COMPANY_DETAIL_TAB", "crm"),
    ("LEFT_MENU", "placement"),
    ("PAGE_BACKGROUND_WORKER", "placement"),
];

/// The one placement that may be bound for a single user (`USER_ID`).
const USER_MODE_PLACEMENT: &str = "PAGE_BACKGROUND_WORKER";

/// Every binding of a portal.
#[derive(Debug, Default)]
pub(crate) struct Bindings {
    events: Vec<EventBinding>,
    placements: Vec<PlacementBinding>,
}

#[derive(Debug, Clone, PartialEq)]
struct EventBinding {
    client_id: String,
    event: String,
    handler: String,
    auth_type: i64,
    offline: bool,
}

#[derive(Debug, Clone)]
struct PlacementBinding {
    client_id: String,
    placement: String,
    handler: String,
    user_id: i64,
    title: String,
    description: String,
    options: Param,
    lang_all: Param,
}

impl Bindings {
    /// An app update or uninstall removes everything the app bound (§5.8).
    pub(crate) fn wipe_app(&mut self, client_id: &str) {
        self.events.retain(|b| b.client_id != client_id);
        self.placements.retain(|b| b.client_id != client_id);
    }
}

/// The caller's app; a webhook has none.
fn app(caller: &Caller) -> Result<&str, RestError> {
    caller.client_id.as_deref().ok_or_else(RestError::wrong_auth_type)
}

fn required(params: &Array, key: &str) -> Result<String, RestError> {
    let value = text(params, key);
    if value.is_empty() { Err(RestError::argument_null(key)) } else { Ok(value) }
}

/// What every administrators' method starts with: the calling app (an app's token, not a
/// webhook), the caller an administrator, and the parameters with upper-cased keys.
fn admin_call(
    p: &PortalState,
    caller: &Caller,
    params: &Array,
) -> Result<(String, Array), RestError> {
    let client_id = app(caller)?.to_owned();
    admin(p, caller)?;
    Ok((client_id, upper_keys(params)))
}

/// `event.bind`: `EVENT`*, `HANDLER`*, `AUTH_TYPE` (a user ID; 0 = whoever caused the event),
/// `EVENT_TYPE` (`online`|`offline`). A non-admin binds only online events for themselves.
pub(crate) fn event_bind(
    p: &mut PortalState,
    caller: &Caller,
    params: &Array,
) -> Result<Param, RestError> {
    let client_id = app(caller)?.to_owned();
    let params = upper_keys(params);
    let event = required(&params, "EVENT")?.to_uppercase();
    let offline = text(&params, "EVENT_TYPE").eq_ignore_ascii_case("offline");
    let handler = if offline { text(&params, "HANDLER") } else { required(&params, "HANDLER")? };
    if !EVENTS.contains(&event.as_str()) {
        return Err(RestError::bad_request("ERROR_EVENT_NOT_FOUND", "Event not found"));
    }
    let auth_type = params.get("AUTH_TYPE").map_or(0, Param::php_int);
    let own = auth_type == 0 || auth_type == caller.user_id as i64;
    if !p.is_admin(caller.user_id) && (offline || !own) {
        return Err(RestError::access_denied(None));
    }
    let binding = EventBinding { client_id, event, handler, auth_type, offline };
    if !p.bindings.events.contains(&binding) {
        p.bindings.events.push(binding);
    }
    Ok(Param::Bool(true))
}

/// `event.get`: the calling app's handlers.
pub(crate) fn event_get(p: &PortalState, caller: &Caller) -> Result<Param, RestError> {
    let client_id = app(caller)?;
    Ok(Param::list(p.bindings.events.iter().filter(|b| b.client_id == client_id).map(|b| {
        Param::map([
            ("event", Param::str(&b.event)),
            ("handler", Param::str(&b.handler)),
            ("auth_type", Param::str(b.auth_type.to_string())),
            ("offline", Param::Num(u8::from(b.offline).into())),
        ])
    })))
}

/// `event.unbind` (administrators): removes the app's handlers of `EVENT` that match the
/// `HANDLER` and `AUTH_TYPE` given; answers `{count}`.
pub(crate) fn event_unbind(
    p: &mut PortalState,
    caller: &Caller,
    params: &Array,
) -> Result<Param, RestError> {
    let (client_id, params) = admin_call(p, caller, params)?;
    let event = required(&params, "EVENT")?.to_uppercase();
    let handler = text(&params, "HANDLER");
    let auth_type = params.get("AUTH_TYPE").map(Param::php_int);
    let offline = text(&params, "EVENT_TYPE").eq_ignore_ascii_case("offline");
    let before = p.bindings.events.len();
    p.bindings.events.retain(|b| {
        let matches = b.client_id == client_id
            && b.event == event
            && b.offline == offline
            && (handler.is_empty() || b.handler == handler)
            && auth_type.is_none_or(|a| b.auth_type == a);
        !matches
    });
    let count = before - p.bindings.events.len();
    Ok(Param::map([("count", Param::Num(count.into()))]))
}

/// `placement.bind` (administrators): `PLACEMENT`*, `HANDLER`*, `TITLE`, `DESCRIPTION`,
/// `GROUP_NAME`, `OPTIONS`, `LANG_ALL`, and `USER_ID` for `PAGE_BACKGROUND_WORKER` only.
pub(crate) fn placement_bind(
    p: &mut PortalState,
    caller: &Caller,
    params: &Array,
) -> Result<Param, RestError> {
    let (client_id, params) = admin_call(p, caller, params)?;
    let placement = required(&params, "PLACEMENT")?.to_uppercase();
    let handler = required(&params, "HANDLER")?;
    if !PLACEMENTS.iter().any(|(code, _)| *code == placement) {
        return Err(RestError::bad_request("ERROR_PLACEMENT_NOT_FOUND", "Placement not found"));
    }
    let user_id = params.get("USER_ID").map_or(0, Param::php_int);
    if user_id != 0 && placement != USER_MODE_PLACEMENT {
        return Err(RestError::bad_request(
            "ERROR_PLACEMENT_USER_MODE",
            "User mode is not available",
        ));
    }
    let object = |key: &str| match params.get(key) {
        Some(v @ Param::Array(_)) => v.clone(),
        _ => Param::Array(Array::new()),
    };
    p.bindings.placements.push(PlacementBinding {
        client_id,
        placement,
        handler,
        user_id,
        title: text(&params, "TITLE"),
        description: text(&params, "DESCRIPTION"),
        options: object("OPTIONS"),
        lang_all: object("LANG_ALL"),
    });
    Ok(Param::Bool(true))
}

/// `placement.list`: the placement codes the caller's scopes open.
pub(crate) fn placement_list(caller: &Caller) -> Param {
    Param::list(
        PLACEMENTS
            .iter()
            .filter(|(_, scope)| caller.scopes.iter().any(|s| s == scope))
            .map(|(code, _)| Param::str(*code)),
    )
}

/// `placement.get` (administrators): the calling app's placement handlers.
pub(crate) fn placement_get(p: &PortalState, caller: &Caller) -> Result<Param, RestError> {
    let client_id = app(caller)?;
    admin(p, caller)?;
    Ok(Param::list(p.bindings.placements.iter().filter(|b| b.client_id == client_id).map(|b| {
        Param::map([
            ("placement", Param::str(&b.placement)),
            ("userId", Param::Num(b.user_id.into())),
            ("handler", Param::str(&b.handler)),
            ("options", b.options.clone()),
            ("title", Param::str(&b.title)),
            ("description", Param::str(&b.description)),
            ("langAll", b.lang_all.clone()),
        ])
    })))
}

/// `placement.unbind` (administrators): removes the app's handlers of `PLACEMENT`, only those
/// of `HANDLER` and `USER_ID` when given. `count` goes up by one for each handler found and by
/// one more for each removed, as the documentation describes.
pub(crate) fn placement_unbind(
    p: &mut PortalState,
    caller: &Caller,
    params: &Array,
) -> Result<Param, RestError> {
    let (client_id, params) = admin_call(p, caller, params)?;
    let placement = required(&params, "PLACEMENT")?.to_uppercase();
    let handler = text(&params, "HANDLER");
    let user_id = params.get("USER_ID").map(Param::php_int);
    let before = p.bindings.placements.len();
    p.bindings.placements.retain(|b| {
        let matches = b.client_id == client_id
            && b.placement == placement
            && (handler.is_empty() || b.handler == handler)
            && user_id.is_none_or(|u| b.user_id == u);
        !matches
    });
    let removed = before - p.bindings.placements.len();
    Ok(Param::map([("count", Param::Num((2 * removed).into()))]))
}

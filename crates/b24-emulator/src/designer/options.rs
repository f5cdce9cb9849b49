//! What the settings dialog hands the app's form (protocol §1.8): the placement POST with its
//! `PLACEMENT_OPTIONS` (the action's properties and current values, the document's fields, the
//! template's parameters, variables, constants and earlier actions' return values), and the
//! answers to the frame's `getInitData` and `refreshAuth`.

use indexmap::IndexMap;
use serde_json::{Map, Value, json};

use crate::dispatch;
use crate::oauth::TokenSet;
use crate::param::{Array, Param};
use crate::portal::PortalState;
use crate::registry::{self, Registration};
use crate::template::{ActivityStep, TemplateField, WorkflowTemplate, deal_type};

/// The placement code of an action's settings form.
pub(crate) const PLACEMENT: &str = "BIZPROC_ACTIVITY_PROPERTIES_DIALOG";

/// How the dialog opens the app's form in its frame.
pub(crate) struct Placement {
    /// `host|0or1|APP_SID`: the frame's name and the form's target.
    pub(crate) frame: String,
    /// `APP_SID`, which the frame's messages end with.
    pub(crate) sid: String,
    /// `PLACEMENT_HANDLER` with `DOMAIN`, `PROTOCOL`, `LANG` and `APP_SID` in its query.
    pub(crate) action: String,
    /// The handler's origin: frame messages must come from it, answers go only to it.
    pub(crate) origin: String,
    /// The POST fields, in the portal's order.
    pub(crate) fields: Vec<(&'static str, String)>,
    /// `getInitData`'s answer.
    pub(crate) init: Value,
}

/// What the dialog shows of one activity step, besides the page's own text.
pub(crate) struct Context<'a> {
    pub(crate) portal: &'a PortalState,
    pub(crate) template: &'a WorkflowTemplate,
    pub(crate) step: &'a ActivityStep,
    pub(crate) registration: &'a Registration,
    /// The app's status letter (`status` of the POST).
    pub(crate) status: &'a str,
}

impl Context<'_> {
    /// `{propId: value | [values]}`: the step's value of every registered property, else its
    /// `DEFAULT`, else nothing (`""`, or `[]` for a multiple property).
    pub(crate) fn current_values(&self) -> Map<String, Value> {
        let empty = Array::new();
        self.registration
            .properties
            .iter()
            .map(|(id, definition)| {
                let definition = definition.as_array().unwrap_or(&empty);
                let value = match self.step.properties.get(id) {
                    Some(v) if !v.is_null() => v.clone(),
                    _ => match definition.get("DEFAULT") {
                        Some(default) => default.to_json(),
                        None if registry::property_flag(definition, "MULTIPLE") => json!([]),
                        None => json!(""),
                    },
                };
                (id.clone(), value)
            })
            .collect()
    }

    /// `PLACEMENT_OPTIONS`: `code`, `activity_name`, `properties` (as registered, keys
    /// upper-cased), `current_values`, `document_type`, `document_fields` and `template`.
    pub(crate) fn placement_options(&self) -> Value {
        let template = self.template;
        json!({
            "code": self.registration.code,
            "activity_name": self.step.name,
            "properties": Param::Array(self.registration.properties.clone()).to_json(),
            "current_values": self.current_values(),
            "document_type": template.document_type,
            "document_fields": document_fields(self.portal, &template.document_type),
            "template": {
                "parameters": items(&template.parameters),
                "variables": items(&template.variables),
                "constants": items(&template.constants),
                "global_variables": [],
                "global_constants": [],
                "return_activities": self.return_activities(),
            },
        })
    }

    /// The activity steps before this one with their return values: `{Id, Type, Title,
    /// Return: [{Id, Name, Type}]}`, `Type` being the designer's class `rest_<internal code>`.
    /// A waiting action also returns `IsTimeout` (§2.7, the runtime's `BPRA_IS_TIMEOUT`).
    fn return_activities(&self) -> Vec<Value> {
        let p = self.portal;
        let language = &p.spec.language_id;
        let earlier = self.template.activity_steps().into_iter();
        let earlier = earlier.take_while(|a| a.name != self.step.name);
        earlier
            .filter_map(|a| {
                Some((a, dispatch::resolve(p, &a.code, a.client_id.as_deref()).ok()?.0))
            })
            .map(|(a, reg)| {
                let empty = Array::new();
                let mut returns: Vec<Value> = reg
                    .return_properties
                    .iter()
                    .map(|(id, definition)| {
                        let definition = definition.as_array().unwrap_or(&empty);
                        let name = definition.get("NAME").unwrap_or(&Param::Null);
                        json!({
                            "Id": id,
                            "Name": registry::localized(name, language),
                            "Type": registry::property_type(definition),
                        })
                    })
                    .collect();
                if reg.use_subscription != "N" {
                    returns.push(
                        json!({"Id": "IsTimeout", "Name": "Operation timeout", "Type": "int"}),
                    );
                }
                json!({
                    "Id": a.name,
                    "Type": format!("rest_{}", reg.internal_code),
                    "Title": registry::localized(&reg.name, language),
                    "Return": returns,
                })
            })
            .collect()
    }

    /// The placement POST and the frame's init data, with a fresh token pair of the admin.
    pub(crate) fn placement(&self, handler: &str, tokens: &TokenSet) -> Option<Placement> {
        let p = self.portal;
        let url = url::Url::parse(handler).ok()?;
        let origin = url.origin().ascii_serialization();
        let protocol = if p.spec.tls { "1" } else { "0" };
        let sid = crate::ids::hex(32);
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("DOMAIN", &p.domain)
            .append_pair("PROTOCOL", protocol)
            .append_pair("LANG", &p.spec.language_id)
            .append_pair("APP_SID", &sid)
            .finish();
        let separator = if handler.contains('?') { '&' } else { '?' };
        let options = self.placement_options();
        let fields = vec![
            ("AUTH_ID", tokens.access_token.clone()),
            ("AUTH_EXPIRES", tokens.expires_in.to_string()),
            ("REFRESH_ID", tokens.refresh_token.clone()),
            ("member_id", p.member_id.clone()),
            ("status", self.status.to_owned()),
            ("PLACEMENT", PLACEMENT.to_owned()),
            ("PLACEMENT_OPTIONS", options.to_string()),
        ];
        let mut init = auth_fields(tokens);
        let extra = json!({
            "DOMAIN": p.domain,
            "PROTOCOL": if p.spec.tls { 1 } else { 0 },
            "PATH": url.path(),
            "LANG": p.spec.language_id,
            "MEMBER_ID": p.member_id,
            "IS_ADMIN": true,
            "APP_OPTIONS": {},
            "USER_OPTIONS": {},
            "PLACEMENT": PLACEMENT,
            "PLACEMENT_OPTIONS": options,
            "INSTALL": false,
            "FIRST_RUN": false,
        });
        if let (Value::Object(init), Value::Object(extra)) = (&mut init, extra) {
            init.extend(extra);
        }
        Some(Placement {
            frame: format!("{}|{protocol}|{sid}", p.domain),
            sid,
            action: format!("{handler}{separator}{query}"),
            origin,
            fields,
            init,
        })
    }
}

/// The token fields of `getInitData` and `refreshAuth`: `AUTH_ID`, `AUTH_EXPIRES` (seconds),
/// `REFRESH_ID`.
pub(crate) fn auth_fields(tokens: &TokenSet) -> Value {
    json!({
        "AUTH_ID": tokens.access_token,
        "AUTH_EXPIRES": tokens.expires_in,
        "REFRESH_ID": tokens.refresh_token,
    })
}

/// Template parameters, variables or constants as the form gets them: `{Id, Type, Name,
/// Description, Multiple, Required, Options, Settings, Default}`, nothing being `""`.
fn items(fields: &IndexMap<String, TemplateField>) -> Vec<Value> {
    let or_blank = |v: &Value| if v.is_null() { json!("") } else { v.clone() };
    fields
        .iter()
        .map(|(id, f)| {
            json!({
                "Id": id,
                "Type": f.field_type,
                "Name": f.name,
                "Description": f.description,
                "Multiple": f.multiple,
                "Required": f.required,
                "Options": or_blank(&f.options),
                "Settings": "",
                "Default": or_blank(&f.default),
            })
        })
        .collect()
}

/// A deal's standard fields: `(ID, name, type, editable, required)`.
const DEAL_FIELDS: &[(&str, &str, &str, bool, bool)] = &[
    ("ID", "ID", "int", false, false),
    ("TITLE", "Title", "string", true, true),
    ("STAGE_ID", "Stage", "string", true, false),
    ("OPPORTUNITY", "Amount", "double", true, false),
    ("CURRENCY_ID", "Currency", "string", true, false),
    ("COMPANY_ID", "Company", "int", true, false),
    ("CONTACT_ID", "Contact", "int", true, false),
    ("ASSIGNED_BY_ID", "Responsible person", "user", true, false),
    ("PROBABILITY", "Probability", "int", true, false),
    ("COMMENTS", "Comment", "text", true, false),
    ("BEGINDATE", "Start date", "date", true, false),
    ("CLOSEDATE", "End date", "date", true, false),
    ("DATE_CREATE", "Created on", "datetime", false, false),
    ("CREATED_BY_ID", "Created by", "user", false, false),
];

/// `{FIELD: {Name, Type, Filterable, Editable, Required, BaseType}}` of a document type: for
/// deals their standard fields, and for every type each other field found on the portal's
/// documents of that type, as a string.
fn document_fields(p: &PortalState, document_type: &[String]) -> Map<String, Value> {
    let field = |name: &str, ty: &str, editable: bool, required: bool| {
        json!({"Name": name, "Type": ty, "Filterable": true, "Editable": editable,
               "Required": required, "BaseType": ty})
    };
    let mut fields = Map::new();
    if document_type == deal_type() {
        for (id, name, ty, editable, required) in DEAL_FIELDS {
            fields.insert((*id).to_owned(), field(name, ty, *editable, *required));
        }
    }
    let found = p.documents.values().filter(|d| d.document_type == document_type);
    for key in found.flat_map(|d| d.fields.keys()) {
        if !fields.contains_key(key) {
            fields.insert(key.clone(), field(key, "string", true, false));
        }
    }
    fields
}

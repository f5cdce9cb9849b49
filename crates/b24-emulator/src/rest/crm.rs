//! `crm.<kind>.get`, `crm.<kind>.list` and `crm.<kind>.update` for the CRM document kinds the
//! emulator's workflows run on — deals, leads, contacts and companies (§5.10). A CRM item `n`
//! is the document `["crm", "CCrmDocument<Kind>", "<KIND>_n"]`, so a field a workflow sets is
//! the field `crm.deal.get` reads, and the reverse.

use crate::document::key;
use crate::param::{Array, Param, upper_keys};
use crate::portal::PortalState;
use crate::rest::listing::{Listing, OPERATIONS};
use crate::rest::{RestError, Success};

/// A CRM document kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Deal,
    Lead,
    Contact,
    Company,
}

impl Kind {
    /// The entity class and the type of its documents: `("CCrmDocumentDeal", "DEAL")`.
    fn entity(self) -> (&'static str, &'static str) {
        match self {
            Kind::Deal => ("CCrmDocumentDeal", "DEAL"),
            Kind::Lead => ("CCrmDocumentLead", "LEAD"),
            Kind::Contact => ("CCrmDocumentContact", "CONTACT"),
            Kind::Company => ("CCrmDocumentCompany", "COMPANY"),
        }
    }

    fn document_id(self, id: i64) -> Vec<String> {
        let (entity, ty) = self.entity();
        vec!["crm".to_owned(), entity.to_owned(), format!("{ty}_{id}")]
    }

    /// Every item of this kind as a row: `ID` (a string, as the portal writes it) first, then
    /// the fields.
    fn rows(self, p: &PortalState) -> Vec<Array> {
        let (entity, ty) = self.entity();
        let prefix = format!("{ty}_");
        p.documents
            .values()
            .filter(|d| d.document_id[..2] == ["crm", entity])
            .filter_map(|d| {
                let id: u64 = d.document_id[2].strip_prefix(&prefix)?.parse().ok()?;
                let mut row = Array::new();
                row.insert("ID".into(), Param::str(id.to_string()));
                for (field, value) in &d.fields {
                    row.insert(field.to_uppercase(), Param::from_json(value));
                }
                Some(row)
            })
            .collect()
    }
}

/// The item's `ID` (`id` in any case), which must be a positive number.
fn item_id(params: &Array) -> Result<i64, RestError> {
    match params.get("ID").map(Param::php_int) {
        Some(id) if id > 0 => Ok(id),
        _ => Err(RestError::bad_request("", "ID is not defined or invalid.")),
    }
}

fn not_found() -> RestError {
    RestError::bad_request("", "Not found")
}

/// `crm.<kind>.get`: `id`*.
pub(crate) fn get(p: &PortalState, kind: Kind, params: &Array) -> Result<Param, RestError> {
    let id = item_id(&upper_keys(params))?;
    let wanted = id.to_string();
    kind.rows(p)
        .into_iter()
        .find(|row| row.get("ID").and_then(Param::php_string).as_deref() == Some(&wanted))
        .map(Param::Array)
        .ok_or_else(not_found)
}

/// `crm.<kind>.list`: `select` (default every field; `*` too), `filter` (the prefixes of the
/// other list methods, and `%` contains, `@` one of), `order` (default `ID` ascending), `start`.
pub(crate) fn list(p: &PortalState, kind: Kind, params: &Array) -> Result<Success, RestError> {
    let mut operations = OPERATIONS.to_vec();
    operations.extend(["%", "@"]);
    let listing = Listing { select: &[], order: ("ID", false), operations: &operations };
    listing.page(kind.rows(p), &upper_keys(params))
}

/// `crm.<kind>.update`: `id`*, `fields`* (only those given change), `params`. Answers `true`.
pub(crate) fn update(p: &mut PortalState, kind: Kind, params: &Array) -> Result<Param, RestError> {
    let params = upper_keys(params);
    let id = item_id(&params)?;
    let fields = match params.get("FIELDS") {
        Some(Param::Array(fields)) if !fields.is_empty() => fields,
        _ => return Err(RestError::bad_request("", "The parameter 'fields' must be array.")),
    };
    let document = p.documents.get_mut(&key(&kind.document_id(id))).ok_or_else(not_found)?;
    for (field, value) in upper_keys(fields) {
        document.fields.insert(field, value.to_json());
    }
    Ok(Param::Bool(true))
}

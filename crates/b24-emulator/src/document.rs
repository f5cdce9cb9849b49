//! Documents the portal's workflows run on (CRM deals and the like): an ID of
//! `[module, entity, id]` (§2.3), a type of `[module, entity, type]`, and fields as JSON.

use serde::{Deserialize, Serialize};

use crate::error::EmulatorError;
use crate::portal::PortalState;
use crate::template::deal_type;

/// A document and its fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// `[module, entity, id]`, e.g. `["crm", "CCrmDocumentDeal", "DEAL_3"]`.
    pub document_id: Vec<String>,
    /// `[module, entity, type]`, e.g. `["crm", "CCrmDocumentDeal", "DEAL"]`.
    pub document_type: Vec<String>,
    /// Field values by field ID (`TITLE`, `COMPANY_ID`, `OPPORTUNITY`, `STAGE_ID`, …).
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// What [`crate::Emulator::create_document`] creates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DocumentSpec {
    /// Default `["crm", "CCrmDocumentDeal", "DEAL"]`.
    pub document_type: Vec<String>,
    /// The third part of the ID; default `<TYPE>_<n>` with a portal-wide counter (`DEAL_1`, …).
    pub id: Option<String>,
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl Default for DocumentSpec {
    fn default() -> Self {
        Self { document_type: deal_type(), id: None, fields: serde_json::Map::new() }
    }
}

/// The store key of a document ID.
pub(crate) fn key(document_id: &[String]) -> String {
    document_id.join("|")
}

pub(crate) fn unknown(domain: &str, document_id: &[String]) -> EmulatorError {
    EmulatorError::UnknownDocument { domain: domain.to_owned(), document_id: document_id.join("/") }
}

pub(crate) fn create(p: &mut PortalState, spec: DocumentSpec) -> Result<Document, EmulatorError> {
    let [module, entity, ty] = spec.document_type.as_slice() else {
        return Err(EmulatorError::InvalidSpec(
            "document_type must be [module, entity, type]".into(),
        ));
    };
    let id = match spec.id {
        Some(id) if !id.is_empty() => id,
        _ => {
            p.next_document += 1;
            format!("{ty}_{}", p.next_document)
        }
    };
    let document = Document {
        document_id: vec![module.clone(), entity.clone(), id],
        document_type: spec.document_type.clone(),
        fields: spec.fields,
    };
    let key = key(&document.document_id);
    if p.documents.contains_key(&key) {
        return Err(EmulatorError::InvalidSpec(format!(
            "document {} already exists",
            document.document_id.join("/")
        )));
    }
    p.documents.insert(key, document.clone());
    Ok(document)
}

//! ONAPPINSTALL / ONAPPUPDATE / ONAPPUNINSTALL, as sent to the app's install handler (§4.3).

use phpform::quoted;

use super::fields::Form;
use super::{Auth, IncomingError, Limits};

/// Which lifecycle event arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEventKind {
    Install,
    Update,
    Uninstall,
}

/// One app lifecycle event, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppEvent {
    pub kind: AppEventKind,
    /// `data[VERSION]`: the app version installed.
    pub version: Option<String>,
    /// `data[LANGUAGE_ID]`: the portal's language.
    pub language_id: Option<String>,
    /// `data[CLEAN]` on uninstall: the admin asked to clear the app's data.
    pub clean: bool,
    /// `ts`, Unix seconds.
    pub sent_at: Option<i64>,
    /// Install and update carry tokens (`sendAuth`), uninstall does not (§4.3): [`AppEvent::from_form`]
    /// checks that `auth.tokens` is present for the first two.
    pub auth: Auth,
}

impl AppEvent {
    /// Decodes and checks an event body.
    pub fn from_form(body: &[u8], limits: &Limits) -> Result<AppEvent, IncomingError> {
        let form = Form(phpform::decode(body, &limits.form())?);
        let event = form.required_str(&["event"])?;
        let kind = match event.to_ascii_uppercase().as_str() {
            "ONAPPINSTALL" => AppEventKind::Install,
            "ONAPPUPDATE" => AppEventKind::Update,
            "ONAPPUNINSTALL" => AppEventKind::Uninstall,
            _ => {
                return Err(IncomingError::invalid(
                    "event",
                    format!(
                        "`{}` is not ONAPPINSTALL, ONAPPUPDATE or ONAPPUNINSTALL",
                        quoted(event)
                    ),
                ));
            }
        };
        let auth = Auth::from_form(&form)?;
        if kind != AppEventKind::Uninstall && auth.tokens.is_none() {
            return Err(IncomingError::Missing("auth[access_token]".into()));
        }
        Ok(AppEvent {
            kind,
            version: form.non_empty_str(&["data", "VERSION"])?.map(str::to_owned),
            language_id: form.non_empty_str(&["data", "LANGUAGE_ID"])?.map(str::to_owned),
            clean: form.optional_str(&["data", "CLEAN"])? == Some("1"),
            sent_at: form.optional_int(&["ts"])?,
            auth,
        })
    }
}

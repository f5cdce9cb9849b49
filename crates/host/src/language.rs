//! The languages b24act speaks to a portal's people — in the settings form and in the
//! workflow-log lines it writes itself — chosen from the portal's language id (`LANG` of the
//! settings form's frame, `LANGUAGE_ID` of the install event): Russian for `ru`, English for
//! anything else.

use serde::Serialize;

/// A language b24act speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    En,
    Ru,
}

impl Lang {
    /// The portal's language id (`en`, `ru`, `de`, …): Russian for `ru`, English otherwise.
    pub fn from_portal(language_id: Option<&str>) -> Lang {
        match language_id.map(str::to_ascii_lowercase).as_deref() {
            Some("ru") => Lang::Ru,
            _ => Lang::En,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Ru => "ru",
        }
    }

    /// The line a failed attempt leaves in the workflow's log when another follows at `at`.
    pub fn retrying(self, attempt: u32, reason: &str, at: &str) -> String {
        match self {
            Lang::En => format!("Attempt {attempt} failed: {reason}; retrying at {at}"),
            Lang::Ru => format!("Попытка {attempt} не удалась: {reason}; повтор в {at}"),
        }
    }

    /// The line a result leaves when the connector gave none of its own.
    pub fn done(self, action_code: &str) -> String {
        match self {
            Lang::En => format!("b24act: {action_code} done"),
            Lang::Ru => format!("b24act: {action_code} выполнено"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn russian_for_ru_and_english_for_the_rest() {
        assert_eq!(Lang::from_portal(Some("RU")), Lang::Ru);
        for other in [None, Some("en"), Some("de"), Some("")] {
            assert_eq!(Lang::from_portal(other), Lang::En);
        }
        assert_eq!(
            Lang::Ru.retrying(2, "1C не отвечает", "10:00:05 UTC"),
            "Попытка 2 не удалась: 1C не отвечает; повтор в 10:00:05 UTC"
        );
        assert_eq!(Lang::En.done("check"), "b24act: check done");
    }
}

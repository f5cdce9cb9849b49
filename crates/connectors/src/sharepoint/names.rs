//! SharePoint's rules for file and folder names, checked on the configured templates' fixed text
//! (a config error naming the key) and on every rendered name (a fatal job error naming the
//! rule), and how the names go into a Graph URL.
//!
//! From Microsoft's "Restrictions and limitations in OneDrive and SharePoint": `" * : < > ? / \ |`
//! are not allowed anywhere in a name, nor leading or trailing spaces or a trailing dot (those
//! three are dropped here, not refused); `.lock`, `desktop.ini`, the device names `CON`, `PRN`,
//! `AUX`, `NUL`, `COM0`–`COM9`, `LPT0`–`LPT9` (with or without an extension), a name starting
//! with `~$` and one containing `_vti_` are refused, and so is a folder `forms` at the library's
//! root; the whole decoded path may have at most 400 characters, the library's own path (such
//! as `sites/approvals/Shared Documents/`) included — which only Graph knows, so a path close to
//! the limit can still be refused by Graph (`400 invalidRequest`, fatal).
//!
//! A `+` in a path segment can arrive as a space (onedrive-api-docs#555, #1432: some of Graph's
//! front ends decode the path like a form), so every name goes percent-encoded, `+` as `%2B`.

use percent_encoding::utf8_percent_encode;

use crate::config::ConfigError;
use crate::template::{Template, URL_COMPONENT};

/// The most characters a decoded path may have, the library's own path included.
pub const MAX_PATH_CHARS: usize = 400;

/// Characters SharePoint does not allow in a name (`/` separates folders in `folder`).
const NOT_IN_NAMES: &[char] = &['"', '*', ':', '<', '>', '?', '/', '\\', '|'];

/// What a message shows of a name or path: at most this many characters.
const SHOWN_CHARS: usize = 80;

/// A name as SharePoint takes it: no surrounding spaces, no trailing dots; `None` if nothing is
/// left (`.`, `..`, blanks).
pub fn clean(raw: &str) -> Option<String> {
    let name = raw.trim_start().trim_end_matches(|c: char| c == '.' || c.is_whitespace());
    (!name.is_empty()).then(|| name.to_owned())
}

/// Why SharePoint refuses the (clean) `name`, if it does; `root_folder` when it is a folder at
/// the library's root.
pub fn refusal(name: &str, root_folder: bool) -> Option<&'static str> {
    let lower = name.to_lowercase();
    let stem = lower.split('.').next().unwrap_or_default();
    let numbered = |prefix: &str| {
        stem.strip_prefix(prefix).is_some_and(|n| n.len() == 1 && n.as_bytes()[0].is_ascii_digit())
    };
    let device =
        matches!(stem, "con" | "prn" | "aux" | "nul") || numbered("com") || numbered("lpt");
    if device {
        Some(
            "CON, PRN, AUX, NUL, COM0–COM9 and LPT0–LPT9 are device names, with or without an extension",
        )
    } else if lower == ".lock" || lower == "desktop.ini" {
        Some("`.lock` and `desktop.ini` are reserved names")
    } else if name.starts_with("~$") {
        Some("a name may not start with `~$` (Office's lock files)")
    } else if lower.contains("_vti_") {
        Some("`_vti_` may not appear in a name")
    } else if root_folder && lower == "forms" {
        Some("a folder `forms` at the library's root is the library's own")
    } else {
        None
    }
}

/// The decoded path's length in characters, if it is over [`MAX_PATH_CHARS`].
pub fn too_long(names: &[String]) -> Option<usize> {
    let separators = names.len().saturating_sub(1);
    let chars = names.iter().map(|name| name.chars().count()).sum::<usize>() + separators;
    (chars > MAX_PATH_CHARS).then_some(chars)
}

/// `/{name}/{name}…`, each name percent-encoded but for `A–Z a–z 0–9 - . _ ~`.
pub fn url_path(names: &[String]) -> String {
    names.iter().map(|name| format!("/{}", utf8_percent_encode(name, URL_COMPONENT))).collect()
}

/// `text` for a message: at most [`SHOWN_CHARS`] characters, `…` when cut.
pub fn shown(text: &str) -> String {
    let mut shown: String = text.chars().take(SHOWN_CHARS).collect();
    if text.chars().nth(SHOWN_CHARS).is_some() {
        shown.push('…');
    }
    shown
}

/// Checks what the template `key` fixes whatever the values: no character SharePoint refuses in
/// its own text (`/` separates folders when `folders`), and no fixed name, start or part a rule
/// refuses.
pub fn check_template(key: &str, template: &Template, folders: bool) -> Result<(), ConfigError> {
    let refused = |c: &char| (*c != '/' || !folders) && NOT_IN_NAMES.contains(c);
    if let Some(c) = template.literal_text().chars().find(|c| refused(c) || c.is_control()) {
        return Err(ConfigError::new(
            key,
            format!("`{}` is not allowed in a SharePoint name", c.escape_default()),
        ));
    }
    // A NUL stands for each value: a segment without one is fixed text.
    let sample = template.render_with("\0");
    let segments = if folders { sample.split('/').collect() } else { vec![sample.as_str()] };
    for (index, segment) in segments.into_iter().filter(|s| !s.trim().is_empty()).enumerate() {
        let name = segment.replace('\0', "{{…}}");
        let rule = if segment.contains('\0') {
            // Only what holds whatever the values: `_vti_` in the fixed text, a fixed `~$` start.
            let fixed = segment
                .split('\0')
                .find(|part| part.to_lowercase().contains("_vti_"))
                .or_else(|| segment.trim_start().starts_with("~$").then_some("~$"));
            fixed.and_then(|part| refusal(part, false))
        } else {
            clean(segment).and_then(|name| refusal(&name, folders && index == 0))
        };
        if let Some(rule) = rule {
            let shown = shown(name.trim());
            return Err(ConfigError::new(key, format!("SharePoint refuses `{shown}`: {rule}")));
        }
    }
    Ok(())
}

/// The fixed text of `folder` and `file_name` alone may not make a path over [`MAX_PATH_CHARS`].
pub fn check_fixed_length(folder: &Template, file_name: &Template) -> Result<(), ConfigError> {
    let fixed = format!("{}/{}", folder.render_with(""), file_name.render_with(""));
    let names: Vec<String> = fixed.split('/').filter_map(clean).collect();
    match too_long(&names) {
        Some(chars) => Err(ConfigError::new(
            "file_name",
            format!(
                "with folder, the path's fixed text alone is {chars} characters; SharePoint takes at most {MAX_PATH_CHARS}"
            ),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cleaned_of_what_sharepoint_would_refuse_at_their_ends() {
        assert_eq!(clean("  report. . ").as_deref(), Some("report"));
        assert_eq!(clean("a.b").as_deref(), Some("a.b"));
        assert_eq!(clean(" .. "), None);
    }

    #[test]
    fn reserved_names_are_refused_with_their_rule() {
        for name in ["CON", "con.txt", "Nul.tar.gz", "COM0", "com9.md", "LPT1", "lpt0.csv"] {
            assert!(refusal(name, false).is_some_and(|r| r.contains("device names")), "{name}");
        }
        for name in ["CONSOLE", "com10", "COMa", "LPT", "pcon", "report-con.md"] {
            assert_eq!(refusal(name, false), None, "{name}");
        }
        assert!(refusal(".LOCK", false).is_some());
        assert!(refusal("Desktop.ini", false).is_some());
        assert!(refusal("~$draft.docx", false).is_some());
        assert_eq!(refusal("~draft.docx", false), None);
        assert!(refusal("a_VTI_b", false).is_some());
        assert!(refusal("Forms", true).is_some());
        assert_eq!(refusal("Forms", false), None);
    }

    #[test]
    fn paths_count_characters_not_bytes() {
        let names = |parts: &[&str]| parts.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>();
        assert_eq!(too_long(&names(&["я".repeat(200).as_str(), "я".repeat(199).as_str()])), None);
        assert_eq!(
            too_long(&names(&["я".repeat(200).as_str(), "я".repeat(200).as_str()])),
            Some(401)
        );
    }

    #[test]
    fn a_plus_goes_percent_encoded() {
        let names = vec!["Q1+Q2".to_owned(), "Сделка 7 & co.md".to_owned()];
        assert_eq!(
            url_path(&names),
            "/Q1%2BQ2/%D0%A1%D0%B4%D0%B5%D0%BB%D0%BA%D0%B0%207%20%26%20co.md"
        );
    }

    #[test]
    fn fixed_text_is_checked_and_values_are_left_to_the_call() {
        let check = |source: &str, folders: bool| {
            check_template("k", &Template::parse(source).expect("parses"), folders)
                .map_err(|e| e.to_string())
        };
        assert!(check("Approvals/{{document.id}}", true).is_ok());
        assert!(check("{{document.id}}.lock", false).is_ok(), "depends on the value");
        assert!(check("CON{{document.id}}", false).is_ok(), "depends on the value");
        let refused = check("Approvals/ CON.txt /{{document.id}}", true).unwrap_err();
        assert!(
            refused.starts_with("connector.k: SharePoint refuses `CON.txt`: CON, PRN"),
            "{refused}"
        );
        let refused = check("Forms/{{document.id}}", true).unwrap_err();
        assert!(refused.contains("the library's own"), "{refused}");
        assert!(check("Archive/Forms", true).is_ok(), "not at the root");
        let refused = check("~$draft-{{document.id}}.md", false).unwrap_err();
        assert_eq!(
            refused,
            "connector.k: SharePoint refuses `~$draft-{{…}}.md`: a name may not start with `~$` (Office's lock files)"
        );
        assert!(check("{{document.id}}_vti_{{job.id}}", false).unwrap_err().contains("_vti_"));
        assert!(check("a/b.md", false).unwrap_err().starts_with("connector.k: `/` is not allowed"));
        assert!(check("a:b", true).unwrap_err().starts_with("connector.k: `:` is not allowed"));
    }
}

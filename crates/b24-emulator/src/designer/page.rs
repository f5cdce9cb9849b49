//! The settings dialog's HTML: the app's form in a frame (or, without a placement, a plain form
//! of the registered properties), the hidden properties form, and the dialog's own Save and
//! Cancel. Everything rendered is escaped; the page has no inline script or style, so the strict
//! policy of [`content_security_policy`] holds.

use std::fmt::Write as _;

use serde_json::Value;

use super::options::Placement;

/// A property of the plain form.
pub(crate) struct Field {
    /// `property_<id lower-cased>`
    pub(crate) control: String,
    pub(crate) label: String,
    pub(crate) description: String,
    pub(crate) property_type: String,
    pub(crate) required: bool,
    pub(crate) multiple: bool,
    /// The current values as text (one for a single property).
    pub(crate) values: Vec<String>,
}

/// One dialog.
pub(crate) struct View<'a> {
    /// The action's name, which is the step's title in the designer.
    pub(crate) title: &'a str,
    pub(crate) step: &'a str,
    pub(crate) code: &'a str,
    /// `template 3 “Credit approval”`.
    pub(crate) template: &'a str,
    pub(crate) placement: Option<&'a Placement>,
    /// The plain form's fields (none when the app's form is shown).
    pub(crate) fields: &'a [Field],
    /// What `designer.js` reads (`data-config`).
    pub(crate) config: &'a Value,
}

/// `& < > " '` as entities: safe in text and in quoted attributes.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Scripts, styles and requests only from the portal itself; frames and form posts only to the
/// app's handler (none without a placement); no one else may frame the dialog.
pub(crate) fn content_security_policy(placement: Option<&Placement>) -> String {
    let app = placement.map_or("'none'", |p| p.origin.as_str());
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
         frame-src {app}; form-action {app}; base-uri 'none'; frame-ancestors 'self'"
    )
}

/// The whole page.
pub(crate) fn render(view: &View<'_>) -> String {
    let mut html = head(view.title);
    let _ = write!(
        html,
        "<main id=\"designer\" data-config=\"{config}\">\n<h1>{title}</h1>\n\
         <p class=\"step\">Step <code>{step}</code> of {template}, action \
         <code>{code}</code></p>\n",
        config = escape(&view.config.to_string()),
        title = escape(view.title),
        step = escape(view.step),
        template = escape(view.template),
        code = escape(view.code),
    );
    match view.placement {
        Some(p) => placement(&mut html, view.title, p),
        None => plain_form(&mut html, view.fields),
    }
    html.push_str(
        "<div class=\"controls\"><button type=\"button\" id=\"save\">Save</button> \
         <button type=\"button\" id=\"cancel\">Cancel</button> \
         <span id=\"status\" role=\"status\"></span></div>\n\
         <ul id=\"errors\" role=\"alert\"></ul>\n</main>\n</body>\n</html>\n",
    );
    html
}

/// A page that says what is wrong (an unknown template or step, an action not installed).
pub(crate) fn render_error(message: &str) -> String {
    let mut html = head("Settings unavailable");
    let _ =
        write!(html, "<main><h1>Settings unavailable</h1>\n<p>{}</p></main>\n", escape(message));
    html.push_str("</body>\n</html>\n");
    html
}

fn head(title: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{} · settings</title>\n\
         <link rel=\"stylesheet\" href=\"/designer/assets/designer.css\">\n\
         <script src=\"/designer/assets/designer.js\" defer></script>\n</head>\n<body>\n",
        escape(title)
    )
}

/// The frame, the hidden POST that opens the app's form in it, and the empty properties form
/// `designer.js` fills with hidden inputs.
fn placement(html: &mut String, title: &str, p: &Placement) {
    let frame = escape(&p.frame);
    let _ = writeln!(
        html,
        "<iframe id=\"placement-frame\" name=\"{frame}\" title=\"{} settings\"></iframe>",
        escape(title)
    );
    let _ = writeln!(
        html,
        "<form id=\"placement-form\" class=\"hidden\" method=\"POST\" action=\"{}\" target=\"{frame}\">",
        escape(&p.action)
    );
    for (name, value) in &p.fields {
        let _ = writeln!(
            html,
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            escape(name),
            escape(value)
        );
    }
    html.push_str("</form>\n<form id=\"properties\" class=\"hidden\"></form>\n");
}

/// One text input per property (per value, plus an empty one, for a multiple property).
fn plain_form(html: &mut String, fields: &[Field]) {
    html.push_str("<form id=\"properties\">\n");
    for f in fields {
        let control = escape(&f.control);
        let _ = write!(
            html,
            "<div class=\"field\"><label for=\"{control}\">{}{}</label> ",
            escape(&f.label),
            if f.required { " <span class=\"required\">*</span>" } else { "" }
        );
        let name = if f.multiple { format!("{control}[]") } else { control.clone() };
        let mut values: Vec<&str> = f.values.iter().map(String::as_str).collect();
        if f.multiple || values.is_empty() {
            values.push("");
        }
        for (i, value) in values.iter().enumerate() {
            let id = if i == 0 { format!(" id=\"{control}\"") } else { String::new() };
            let _ = write!(
                html,
                "<input type=\"text\"{id} name=\"{name}\" value=\"{}\"> ",
                escape(value)
            );
        }
        let multiple = if f.multiple { ", multiple" } else { "" };
        let _ = write!(html, "<span class=\"hint\">{}{multiple}</span>", escape(&f.property_type));
        if !f.description.is_empty() {
            let _ = write!(html, "<p class=\"description\">{}</p>", escape(&f.description));
        }
        html.push_str("</div>\n");
    }
    html.push_str("</form>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_text_and_attributes() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}

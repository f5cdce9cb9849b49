//! Templates over a call: `{{properties.company_id}}`, `{{document.id}}`, `{{job.id}}`, rendered
//! as text with escaping for where the text goes, or as typed JSON.
//!
//! # Syntax
//!
//! A placeholder is `{{namespace.field}}`, spaces inside the braces allowed. `{{` always opens
//! one (there is no escape); a `}}` outside a placeholder is plain text.
//!
//! | placeholder | value |
//! |---|---|
//! | `{{properties.ID}}` | the input property `ID`, typed as the host converted it |
//! | `{{properties.ID?}}` | the same, or null (empty text) when the call does not carry it |
//! | `{{properties}}` | all input properties, as a JSON object |
//! | `{{document.module}}`, `{{document.entity}}`, `{{document.id}}` | the document's parts |
//! | `{{job.id}}` | the job id (the idempotency key) |
//! | `{{job.attempt}}` | the attempt number, from 1 |
//! | `{{action.code}}` | the action's code |
//!
//! # When errors happen
//!
//! Parsing ([`Template::parse`], at config time) rejects an unknown namespace or field, a
//! property id that Bitrix24 would not accept, and an unclosed `{{`. Rendering (at run time)
//! fails only when a required property is absent from the call, or when a value is unsafe where
//! it goes ([`Escape`]); the connector reports those as fatal, since another attempt with the same
//! input would fail the same way.
//!
//! # Values as text
//!
//! A string is itself; a number is its JSON spelling (`1500.5`); a bool is `true`/`false`; null
//! is empty; an array of scalars is its items joined with `,` (`user_1,user_7`); anything else is
//! compact JSON.

use std::borrow::Cow;
use std::fmt;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value};

use crate::connector::ConnectorRequest;

/// One parsed template string.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Literal(String),
    Value { placeholder: Placeholder, at: usize },
}

/// What a placeholder names.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Placeholder {
    /// `{{properties.ID}}`, or `{{properties.ID?}}` when `optional`.
    Property {
        id: String,
        optional: bool,
    },
    /// `{{properties}}`
    AllProperties,
    DocumentModule,
    DocumentEntity,
    DocumentId,
    JobId,
    JobAttempt,
    ActionCode,
}

impl fmt::Display for Placeholder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Placeholder::Property { id, optional } => {
                write!(f, "properties.{id}{}", if *optional { "?" } else { "" })
            }
            Placeholder::AllProperties => f.write_str("properties"),
            Placeholder::DocumentModule => f.write_str("document.module"),
            Placeholder::DocumentEntity => f.write_str("document.entity"),
            Placeholder::DocumentId => f.write_str("document.id"),
            Placeholder::JobId => f.write_str("job.id"),
            Placeholder::JobAttempt => f.write_str("job.attempt"),
            Placeholder::ActionCode => f.write_str("action.code"),
        }
    }
}

/// A template that cannot be parsed (a config-time error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("`{{{{` at byte {at} is not closed by `}}}}`")]
    Unclosed { at: usize },
    #[error("empty placeholder at byte {at}")]
    Empty { at: usize },
    #[error(
        "unknown namespace `{namespace}` in `{{{{{text}}}}}`; use properties, document, job or action \
         (secrets come resolved in the config, not from templates)"
    )]
    UnknownNamespace { namespace: String, text: String },
    #[error("unknown placeholder `{{{{{text}}}}}`; {namespace} has {fields}")]
    UnknownField { namespace: &'static str, text: String, fields: &'static str },
    #[error(
        "`{id}` in `{{{{{text}}}}}` is not a property id (letters, digits and `_`, starting with a letter)"
    )]
    BadPropertyId { id: String, text: String },
}

/// A template that cannot be rendered for one call (a run-time error, fatal for the job).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("the call has no property `{id}` (used as `{{{{properties.{id}}}}}`)")]
    MissingProperty { id: String },
    #[error("`{{{{{placeholder}}}}}` is `.` or `..`, which a URL would read as a path step")]
    DotSegment { placeholder: Placeholder },
    #[error(
        "`{{{{{placeholder}}}}}` contains a control character (CR, LF, …), not allowed in a header"
    )]
    ControlCharacter { placeholder: Placeholder },
}

/// How placeholder values are escaped in text. Literal text from the template is never touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// As is: JSON string values, message texts.
    Text,
    /// Percent-encoded as one URL component (path segment, query value or fragment): every byte
    /// except `A–Z a–z 0–9 - . _ ~` is `%XX` (UTF-8), so `/`, `?`, `&`, `#` and spaces in a value
    /// cannot change the URL's structure. A whole value of `.` or `..` is refused.
    UrlComponent,
    /// For a header value: refuses control characters (CR and LF above all, which would let a
    /// value add headers), keeps the rest as UTF-8 bytes.
    Header,
    /// For HTML text and attribute values (Telegram's `HTML` parse mode, HTML documents): `&`,
    /// `<`, `>`, `"` and `'` become `&amp;`, `&lt;`, `&gt;`, `&quot;` and `&#39;`, so a value
    /// cannot open or close a tag.
    Html,
    /// For Telegram's `MarkdownV2` text outside `code`/`pre` entities: each of
    /// ``_ * [ ] ( ) ~ ` > # + - = | { } . ! \`` gets a `\` in front, so a value shows as typed
    /// and cannot open or close an entity.
    TelegramMarkdownV2,
    /// For CommonMark text: ``\ ` * _ [ ] < > | ~ &`` always get a `\`, and so do the characters
    /// that start a block where the value or one of its lines starts (`# `, `- `, `+ `, `1. `,
    /// `1) `, `---`, `===`). `2024-05-01`, `-5` and `1.5` stay as they are.
    Markdown,
    /// For one CSV field (RFC 4180): a value with `,`, `;`, `"`, CR or LF is quoted with `"`
    /// doubled; a value that a spreadsheet would run as a formula (starting with `=`, `+`, `-`,
    /// `@`, tab or CR, and not a number) gets a `'` in front. Put the placeholder as a whole
    /// field, without quotes around it.
    CsvField,
    /// For a SharePoint/OneDrive file or folder name: `" * : < > ? / \ |` and control
    /// characters become `_`, so a value cannot add a folder or break the name.
    FileName,
}

/// RFC 3986 unreserved characters stay; everything else is encoded.
pub(crate) const URL_COMPONENT: &AsciiSet =
    &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

impl Template {
    /// Parses a template string.
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = source;
        let mut offset = 0;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_owned()));
            }
            let at = offset + open;
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or(TemplateError::Unclosed { at })?;
            let placeholder = parse_placeholder(after[..close].trim(), at)?;
            parts.push(Part::Value { placeholder, at });
            let consumed = open + 2 + close + 2;
            rest = &rest[consumed..];
            offset += consumed;
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    /// The placeholders, in order.
    pub fn placeholders(&self) -> impl Iterator<Item = &Placeholder> {
        self.parts.iter().filter_map(|part| match part {
            Part::Value { placeholder, .. } => Some(placeholder),
            Part::Literal(_) => None,
        })
    }

    /// The byte offset in the source of the first placeholder, if any.
    pub fn first_placeholder_at(&self) -> Option<usize> {
        self.parts.iter().find_map(|part| match part {
            Part::Value { at, .. } => Some(*at),
            Part::Literal(_) => None,
        })
    }

    /// The template's literal text (everything but the placeholders), concatenated.
    pub fn literal_text(&self) -> String {
        self.parts
            .iter()
            .filter_map(|part| match part {
                Part::Literal(text) => Some(text.as_str()),
                Part::Value { .. } => None,
            })
            .collect()
    }

    /// The placeholder, if the template is exactly one placeholder and nothing else.
    pub fn as_single_placeholder(&self) -> Option<&Placeholder> {
        match self.parts.as_slice() {
            [Part::Value { placeholder, .. }] => Some(placeholder),
            _ => None,
        }
    }

    /// Renders the template with a fixed stand-in for every placeholder (config-time checks, e.g.
    /// that a URL parses whatever the values).
    pub fn render_with(&self, stand_in: &str) -> String {
        self.parts
            .iter()
            .map(|part| match part {
                Part::Literal(text) => text.as_str(),
                Part::Value { .. } => stand_in,
            })
            .collect()
    }

    /// Renders the template as text for one call.
    pub fn render(
        &self,
        request: &ConnectorRequest,
        escape: Escape,
    ) -> Result<String, RenderError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Value { placeholder, .. } => {
                    let value = resolve(placeholder, request)?;
                    let text = value_as_text(&value);
                    push_escaped(&mut out, &text, placeholder, escape)?;
                }
            }
        }
        Ok(out)
    }

    /// Renders the template as JSON: a template that is exactly one placeholder gives the typed
    /// value (a number stays a number); any other gives a string rendered as [`Escape::Text`].
    pub fn render_value(&self, request: &ConnectorRequest) -> Result<Value, RenderError> {
        match self.as_single_placeholder() {
            Some(placeholder) => resolve(placeholder, request).map(Cow::into_owned),
            None => self.render(request, Escape::Text).map(Value::String),
        }
    }
}

fn parse_placeholder(text: &str, at: usize) -> Result<Placeholder, TemplateError> {
    if text.is_empty() {
        return Err(TemplateError::Empty { at });
    }
    let (namespace, field) = match text.split_once('.') {
        Some((namespace, field)) => (namespace.trim(), Some(field.trim())),
        None => (text, None),
    };
    let unknown = |namespace: &'static str, fields: &'static str| TemplateError::UnknownField {
        namespace,
        text: text.to_owned(),
        fields,
    };
    match namespace {
        "properties" => match field {
            None => Ok(Placeholder::AllProperties),
            Some(field) => {
                let (id, optional) = match field.strip_suffix('?') {
                    Some(id) => (id, true),
                    None => (field, false),
                };
                if is_property_id(id) {
                    Ok(Placeholder::Property { id: id.to_owned(), optional })
                } else {
                    Err(TemplateError::BadPropertyId { id: id.to_owned(), text: text.to_owned() })
                }
            }
        },
        "document" => match field {
            Some("module") => Ok(Placeholder::DocumentModule),
            Some("entity") => Ok(Placeholder::DocumentEntity),
            Some("id") => Ok(Placeholder::DocumentId),
            _ => Err(unknown("document", "module, entity and id")),
        },
        "job" => match field {
            Some("id") => Ok(Placeholder::JobId),
            Some("attempt") => Ok(Placeholder::JobAttempt),
            _ => Err(unknown("job", "id and attempt")),
        },
        "action" => match field {
            Some("code") => Ok(Placeholder::ActionCode),
            _ => Err(unknown("action", "code")),
        },
        other => Err(TemplateError::UnknownNamespace {
            namespace: other.to_owned(),
            text: text.to_owned(),
        }),
    }
}

/// Bitrix24 property ids: a letter, then letters, digits and `_` (protocol §1.2).
pub(crate) fn is_property_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The value a placeholder names in one call.
pub fn resolve<'a>(
    placeholder: &Placeholder,
    request: &'a ConnectorRequest,
) -> Result<Cow<'a, Value>, RenderError> {
    let text = |s: &str| Ok(Cow::Owned(Value::String(s.to_owned())));
    match placeholder {
        Placeholder::Property { id, optional } => match request.properties.get(id) {
            Some(value) => Ok(Cow::Borrowed(value)),
            None if *optional => Ok(Cow::Owned(Value::Null)),
            None => Err(RenderError::MissingProperty { id: id.clone() }),
        },
        Placeholder::AllProperties => Ok(Cow::Owned(Value::Object(request.properties.clone()))),
        Placeholder::DocumentModule => text(&request.document.module),
        Placeholder::DocumentEntity => text(&request.document.entity),
        Placeholder::DocumentId => text(&request.document.id),
        Placeholder::JobId => text(&request.job_id),
        Placeholder::JobAttempt => Ok(Cow::Owned(Value::from(request.attempt))),
        Placeholder::ActionCode => text(&request.action_code),
    }
}

/// A JSON value as template text (see the module docs).
pub fn value_as_text(value: &Value) -> Cow<'_, str> {
    match value {
        Value::String(s) => Cow::Borrowed(s),
        Value::Null => Cow::Borrowed(""),
        Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        Value::Number(n) => Cow::Owned(n.to_string()),
        Value::Array(items) if items.iter().all(is_scalar) => {
            Cow::Owned(items.iter().map(value_as_text).collect::<Vec<_>>().join(","))
        }
        Value::Array(_) | Value::Object(_) => Cow::Owned(value.to_string()),
    }
}

fn is_scalar(value: &Value) -> bool {
    !matches!(value, Value::Array(_) | Value::Object(_))
}

fn push_escaped(
    out: &mut String,
    text: &str,
    placeholder: &Placeholder,
    escape: Escape,
) -> Result<(), RenderError> {
    match escape {
        Escape::Text => out.push_str(text),
        Escape::UrlComponent => {
            if text == "." || text == ".." {
                return Err(RenderError::DotSegment { placeholder: placeholder.clone() });
            }
            out.extend(utf8_percent_encode(text, URL_COMPONENT));
        }
        Escape::Header => {
            if text.chars().any(|c| c.is_control() && c != '\t') {
                return Err(RenderError::ControlCharacter { placeholder: placeholder.clone() });
            }
            out.push_str(text);
        }
        Escape::Html => {
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
        }
        Escape::TelegramMarkdownV2 => {
            for c in text.chars() {
                if "_*[]()~`>#+-=|{}.!\\".contains(c) {
                    out.push('\\');
                }
                out.push(c);
            }
        }
        Escape::Markdown => push_markdown(out, text),
        Escape::CsvField => push_csv_field(out, text),
        Escape::FileName => out.extend(
            text.chars().map(|c| if c.is_control() || "\"*:<>?/\\|".contains(c) { '_' } else { c }),
        ),
    }
    Ok(())
}

/// See [`Escape::Markdown`].
fn push_markdown(out: &mut String, text: &str) {
    for (index, line) in text.split('\n').enumerate() {
        if index > 0 {
            out.push('\n');
        }
        let indent = line.len() - line.trim_start_matches([' ', '\t']).len();
        out.push_str(&line[..indent]);
        let body = &line[indent..];
        let digits = body.len() - body.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let mut chars = body.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            // A block marker needs a space (or the line's end) after it: `- x`, `# x`, `1. x`;
            // `-5`, `#tag` and `1.5` are plain text. `---` and `===` are rules and headings.
            let next = chars.peek().map(|&(_, next)| next);
            let ends_marker = next.is_none_or(|n| n == ' ' || n == '\t');
            let block_marker = at == 0 && "#-+=".contains(c) && (ends_marker || next == Some(c));
            let list_number =
                (1..=9).contains(&digits) && at == digits && (c == '.' || c == ')') && ends_marker;
            if block_marker || list_number || "\\`*_[]<>|~&".contains(c) {
                out.push('\\');
            }
            out.push(c);
        }
    }
}

/// See [`Escape::CsvField`].
fn push_csv_field(out: &mut String, text: &str) {
    let formula =
        text.starts_with(['=', '+', '-', '@', '\t', '\r']) && text.parse::<f64>().is_err();
    let quoted = text.contains([',', ';', '"', '\r', '\n']);
    if quoted {
        out.push('"');
    }
    if formula {
        out.push('\'');
    }
    for c in text.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    if quoted {
        out.push('"');
    }
}

/// A JSON document whose strings are templates, for request bodies.
///
/// A string that is exactly one placeholder becomes the typed value (`"{{properties.amount}}"`
/// → `1500.5`, an array for a multiple property); a string with placeholders among other text is
/// interpolated as [`Escape::Text`]; object keys and non-string values are kept as they are.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonTemplate(Node);

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Literal(Value),
    Template(Template),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

/// Where in a JSON template a string failed to parse: `at` is a path such as `.items[0].amount`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {source}")]
pub struct JsonTemplateError {
    pub at: String,
    #[source]
    pub source: TemplateError,
}

impl JsonTemplate {
    pub fn parse(document: &Value) -> Result<JsonTemplate, JsonTemplateError> {
        parse_node(document, &mut String::new()).map(JsonTemplate)
    }

    /// Every placeholder in the document.
    pub fn placeholders(&self) -> Vec<&Placeholder> {
        let mut out = Vec::new();
        collect_placeholders(&self.0, &mut out);
        out
    }

    pub fn render(&self, request: &ConnectorRequest) -> Result<Value, RenderError> {
        render_node(&self.0, request)
    }
}

fn parse_node(value: &Value, path: &mut String) -> Result<Node, JsonTemplateError> {
    match value {
        Value::String(text) => {
            let template = Template::parse(text)
                .map_err(|source| JsonTemplateError { at: path.clone(), source })?;
            if template.placeholders().next().is_none() {
                Ok(Node::Literal(value.clone()))
            } else {
                Ok(Node::Template(template))
            }
        }
        Value::Array(items) => {
            let mut nodes = Vec::with_capacity(items.len());
            for (index, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{index}]"));
                nodes.push(parse_node(item, path)?);
                path.truncate(len);
            }
            Ok(Node::Array(nodes))
        }
        Value::Object(map) => {
            let mut nodes = Vec::with_capacity(map.len());
            for (key, item) in map {
                let len = path.len();
                path.push('.');
                path.push_str(key);
                nodes.push((key.clone(), parse_node(item, path)?));
                path.truncate(len);
            }
            Ok(Node::Object(nodes))
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(Node::Literal(value.clone())),
    }
}

fn collect_placeholders<'a>(node: &'a Node, out: &mut Vec<&'a Placeholder>) {
    match node {
        Node::Literal(_) => {}
        Node::Template(template) => out.extend(template.placeholders()),
        Node::Array(items) => items.iter().for_each(|item| collect_placeholders(item, out)),
        Node::Object(entries) => {
            entries.iter().for_each(|(_, item)| collect_placeholders(item, out));
        }
    }
}

fn render_node(node: &Node, request: &ConnectorRequest) -> Result<Value, RenderError> {
    match node {
        Node::Literal(value) => Ok(value.clone()),
        Node::Template(template) => template.render_value(request),
        Node::Array(items) => items
            .iter()
            .map(|item| render_node(item, request))
            .collect::<Result<_, _>>()
            .map(Value::Array),
        Node::Object(entries) => {
            let mut map = Map::with_capacity(entries.len());
            for (key, item) in entries {
                map.insert(key.clone(), render_node(item, request)?);
            }
            Ok(Value::Object(map))
        }
    }
}

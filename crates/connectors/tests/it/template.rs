//! The template renderer: parsing, text rendering, escaping per context, typed JSON rendering.

use connectors::template::{
    Escape, JsonTemplate, Placeholder, RenderError, Template, TemplateError,
};
use proptest::prelude::*;
use serde_json::json;

use crate::call;

fn render(source: &str, escape: Escape) -> Result<String, RenderError> {
    Template::parse(source).expect("parses").render(&call(), escape)
}

#[test]
fn every_namespace_renders_as_text() {
    let text = render(
        "{{document.module}}/{{document.entity}}/{{document.id}} {{job.id}}#{{job.attempt}} {{action.code}}",
        Escape::Text,
    );
    assert_eq!(text.unwrap(), "crm/CCrmDocumentDeal/DEAL_7 job-1#1 check_credit_limit");
}

#[test]
fn values_become_text_by_type() {
    let request = call()
        .with_property("null", serde_json::Value::Null)
        .with_property("object", json!({ "a": [1, 2] }))
        .with_property("nested", json!([[1], 2]));
    let render =
        |source: &str| Template::parse(source).unwrap().render(&request, Escape::Text).unwrap();
    assert_eq!(render("{{properties.amount}}"), "1500.5");
    assert_eq!(render("{{properties.company_id}}"), "42");
    assert_eq!(render("{{properties.urgent}}"), "true");
    assert_eq!(render("[{{properties.null}}]"), "[]");
    assert_eq!(render("{{properties.managers}}"), "user_1,user_7");
    assert_eq!(render("{{properties.object}}"), r#"{"a":[1,2]}"#);
    assert_eq!(render("{{properties.nested}}"), "[[1],2]");
    assert_eq!(render("{{properties.absent?}}-"), "-");
}

#[test]
fn spaces_inside_braces_and_stray_closing_braces_are_fine() {
    assert_eq!(render("{{  job.id  }}", Escape::Text).unwrap(), "job-1");
    assert_eq!(render("}} {a} {{job.id}}}}", Escape::Text).unwrap(), "}} {a} job-1}}");
    assert_eq!(render("no placeholders", Escape::Text).unwrap(), "no placeholders");
    assert_eq!(render("", Escape::Text).unwrap(), "");
}

#[test]
fn parse_errors_say_what_is_wrong() {
    let error = |source: &str| Template::parse(source).unwrap_err();
    assert_eq!(error("a {{job.id"), TemplateError::Unclosed { at: 2 });
    assert_eq!(error("{{}}"), TemplateError::Empty { at: 0 });
    assert_eq!(
        error("{{env.FINANCE_TOKEN}}").to_string(),
        "unknown namespace `env` in `{{env.FINANCE_TOKEN}}`; use properties, document, job or action \
         (secrets come resolved in the config, not from templates)"
    );
    assert_eq!(
        error("{{document}}").to_string(),
        "unknown placeholder `{{document}}`; document has module, entity and id"
    );
    assert_eq!(
        error("{{action.name}}").to_string(),
        "unknown placeholder `{{action.name}}`; action has code"
    );
    assert_eq!(
        error("{{properties.1st}}").to_string(),
        "`1st` in `{{properties.1st}}` is not a property id (letters, digits and `_`, starting with a letter)"
    );
    assert!(matches!(error("{{properties.a.b}}"), TemplateError::BadPropertyId { .. }));
}

#[test]
fn a_missing_property_is_a_render_error_unless_optional() {
    assert_eq!(
        render("{{properties.inn}}", Escape::Text),
        Err(RenderError::MissingProperty { id: "inn".into() })
    );
    assert_eq!(render("{{properties.inn?}}", Escape::Text).unwrap(), "");
}

#[test]
fn url_components_are_percent_encoded() {
    let request = call().with_property("name", "a&b/c d?e#f=g+h%i;j~k.l_m-n Ж");
    let text =
        Template::parse("{{properties.name}}").unwrap().render(&request, Escape::UrlComponent);
    assert_eq!(text.unwrap(), "a%26b%2Fc%20d%3Fe%23f%3Dg%2Bh%25i%3Bj~k.l_m-n%20%D0%96");
    let literal =
        Template::parse("/a b/{{job.id}}").unwrap().render(&request, Escape::UrlComponent);
    assert_eq!(literal.unwrap(), "/a b/job-1", "literal text is the config's business");
}

#[test]
fn dot_segments_are_refused_in_urls_only() {
    for dots in [".", ".."] {
        let request = call().with_property("id", dots);
        let template = Template::parse("/x/{{properties.id}}").unwrap();
        assert!(matches!(
            template.render(&request, Escape::UrlComponent),
            Err(RenderError::DotSegment { .. })
        ));
        assert!(template.render(&request, Escape::Text).is_ok());
    }
    let request = call().with_property("id", "...");
    assert_eq!(
        Template::parse("{{properties.id}}")
            .unwrap()
            .render(&request, Escape::UrlComponent)
            .unwrap(),
        "..."
    );
}

#[test]
fn header_values_refuse_control_characters_but_keep_tabs() {
    let template = Template::parse("Bearer {{properties.token}}").unwrap();
    for bad in ["a\r\nX-Admin: 1", "a\n", "a\r", "a\u{0}", "a\u{7f}", "a\u{85}"] {
        let result = template.render(&call().with_property("token", bad), Escape::Header);
        assert_eq!(
            result,
            Err(RenderError::ControlCharacter {
                placeholder: Placeholder::Property { id: "token".into(), optional: false }
            }),
            "{bad:?}"
        );
    }
    let ok = template.render(&call().with_property("token", "a\tб"), Escape::Header);
    assert_eq!(ok.unwrap(), "Bearer a\tб");
}

#[test]
fn a_single_placeholder_keeps_its_type_in_json() {
    let template = JsonTemplate::parse(&json!({
        "amount": "{{properties.amount}}",
        "padded": " {{properties.amount}}",
        "managers": "{{properties.managers}}",
        "attempt": "{{ job.attempt }}",
        "absent": "{{properties.absent?}}",
        "list": ["{{properties.company_id}}", "id {{properties.company_id}}", 3, false],
        "{{properties.amount}}": "keys are literal",
    }))
    .unwrap();
    assert_eq!(
        template.render(&call()).unwrap(),
        json!({
            "amount": 1500.5,
            "padded": " 1500.5",
            "managers": ["user_1", "user_7"],
            "attempt": 1,
            "absent": null,
            "list": [42, "id 42", 3, false],
            "{{properties.amount}}": "keys are literal",
        })
    );
}

#[test]
fn json_template_errors_point_into_the_document() {
    let error = JsonTemplate::parse(&json!({ "a": [1, { "b": "{{x.y}}" }] })).unwrap_err();
    assert_eq!(error.at, ".a[1].b");
    assert!(matches!(error.source, TemplateError::UnknownNamespace { .. }));
}

#[test]
fn placeholders_are_listed() {
    let template =
        Template::parse("{{properties.a}}-{{properties.b?}}-{{properties}}-{{job.id}}").unwrap();
    let listed: Vec<String> = template.placeholders().map(ToString::to_string).collect();
    assert_eq!(listed, ["properties.a", "properties.b?", "properties", "job.id"]);
}

proptest! {
    #[test]
    fn url_encoding_leaves_only_unreserved_bytes_and_decodes_back(value in "\\PC*") {
        prop_assume!(value != "." && value != "..");
        let request = call().with_property("v", value.clone());
        let encoded = Template::parse("{{properties.v}}").unwrap().render(&request, Escape::UrlComponent).unwrap();
        prop_assert!(encoded.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)), "{}", encoded);
        let decoded = percent_decode(&encoded);
        prop_assert_eq!(decoded, value);
    }

    #[test]
    fn header_rendering_never_lets_cr_or_lf_through(value in ".*") {
        let request = call().with_property("v", value);
        if let Ok(text) = Template::parse("{{properties.v}}").unwrap().render(&request, Escape::Header) {
            prop_assert!(!text.contains(['\r', '\n']));
        }
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

//! Loading and validating configurations: examples/b24act.toml, overrides, each rule's message.

use std::time::Duration;

use b24::rest::PropertyType;
use serde_json::json;

use super::*;

/// A random-looking key for `store.encryption_key`, which the example leaves to be generated.
const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const KEY_VARIABLE: &str = "B24ACT__STORE__ENCRYPTION_KEY";

/// examples/b24act.toml: the complete configuration of the reference case (design.md §2).
const EXAMPLE: &str = include_str!("../../../../examples/b24act.toml");

/// Loads `text` with `env`'s overrides, and [`KEY`] as the encryption key unless `env` sets one.
fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let key = (!env.iter().any(|(name, _)| *name == KEY_VARIABLE)).then_some((KEY_VARIABLE, KEY));
    let env = env.iter().copied().chain(key).map(|(k, v)| (k.to_owned(), v.to_owned()));
    Config::from_toml(text, "b24act.toml", env)
}

fn problems_of(text: &str) -> Vec<String> {
    problems_with(text, &[])
}

fn problems_with(text: &str, env: &[(&str, &str)]) -> Vec<String> {
    match load(text, env) {
        Err(ConfigError::Invalid(problems)) => problems.iter().map(ToString::to_string).collect(),
        other => panic!("expected validation problems, got {other:?}"),
    }
}

#[test]
fn the_complete_example_loads_with_defaults_filled_in() {
    let config = load(EXAMPLE, &[]).unwrap();
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.workers.concurrency, 4);
    assert_eq!(config.delivery.burst, 50);
    assert_eq!(config.app.auth_server.as_str(), "https://oauth.bitrix.info/", "the cloud's");
    let action = &config.actions[0];
    assert_eq!(action.code, "check_credit_limit");
    assert!(action.use_subscription);
    assert_eq!(action.auth_user_id, 1);
    let ids: Vec<&str> = action.return_properties.keys().map(String::as_str).collect();
    assert_eq!(
        ids,
        ["available_limit", "approval_required", "reason", "error"],
        "declared order is kept"
    );
    assert_eq!(action.properties["company_id"].kind, PropertyType::Int);
    assert_eq!(action.return_properties["reason"].kind, PropertyType::String);
    assert_eq!(action.retry.max_wait, Duration::from_secs(1800));
    assert_eq!(action.retry.backoff_cap, Duration::from_secs(300), "default");
    assert_eq!(action.connector.kind, "credit_limit");
    assert_eq!(
        action.connector.settings["url"],
        json!("https://finance.example.com/api/v1/companies/{{properties.company_id}}/credit")
    );
    let FailurePolicy::Fallback { values, log_message, reason_property } = &action.on_failure
    else {
        panic!("fallback")
    };
    assert_eq!(reason_property.as_deref(), Some("error"));
    assert_eq!(values["approval_required"], json!(true));
    assert_eq!(log_message, "Credit check failed, sent to manual approval: {reason}");
}

#[test]
fn the_example_passes_what_check_config_checks() {
    let config = load(EXAMPLE, &[]).unwrap();
    let catalog = crate::catalog::Catalog::build(&config, &connectors::Registry::new());
    assert!(catalog.is_ok(), "{:?}", catalog.err());
}

#[test]
fn the_example_needs_a_generated_encryption_key() {
    let refused = Config::from_toml(EXAMPLE, "b24act.toml", std::iter::empty()).unwrap_err();
    let ConfigError::Invalid(problems) = refused else { panic!("{refused:?}") };
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].key, "store.encryption_key");
    assert!(problems[0].message.contains("openssl rand -hex 32"), "{}", problems[0]);
}

#[test]
fn secrets_are_not_in_debug_output() {
    let config = load(EXAMPLE, &[]).unwrap();
    let shown = format!("{config:?}");
    let secret = config.app.client_secret.expose();
    assert!(!shown.contains(secret) && !shown.contains(KEY), "{shown}");
}

#[test]
fn environment_overrides_keep_types_and_reach_into_lists() {
    let config = load(
        EXAMPLE,
        &[
            ("B24ACT__APP__CLIENT_SECRET", "from-env"),
            ("B24ACT__WORKERS__CONCURRENCY", "16"),
            ("B24ACT__SERVER__LISTEN", "0.0.0.0:9000"),
            ("B24ACT__ACTIONS__0__CONNECTOR__URL", "https://other.example.com/"),
            ("B24ACT__ACTIONS__0__RETRY__MAX_WAIT", "5m"),
            ("UNRELATED", "ignored"),
        ],
    )
    .unwrap();
    assert_eq!(config.app.client_secret.expose(), "from-env");
    assert_eq!(config.workers.concurrency, 16);
    assert_eq!(config.server.listen.to_string(), "0.0.0.0:9000");
    assert_eq!(config.actions[0].connector.settings["url"], json!("https://other.example.com/"));
    assert_eq!(config.actions[0].retry.max_wait, Duration::from_secs(300));
}

#[test]
fn keys_still_holding_the_examples_placeholders_are_named_with_their_variables() {
    let keys = |config: &Config| -> Vec<(String, String)> {
        config.unfilled.iter().map(|u| (u.key.clone(), u.variable.clone())).collect()
    };
    let config = load(EXAMPLE, &[]).unwrap();
    assert_eq!(
        keys(&config),
        [
            ("app.client_secret".to_owned(), "B24ACT__APP__CLIENT_SECRET".to_owned()),
            (
                "actions[0].connector.auth.bearer".to_owned(),
                "B24ACT__ACTIONS__0__CONNECTOR__AUTH__BEARER".to_owned()
            ),
        ],
        "the encryption key is set by the test, commented keys are not read"
    );
    let filled = load(
        EXAMPLE,
        &[
            ("B24ACT__APP__CLIENT_SECRET", "a-real-secret"),
            ("B24ACT__ACTIONS__0__CONNECTOR__AUTH__BEARER", "a-real-token"),
        ],
    )
    .unwrap();
    assert!(filled.unfilled.is_empty(), "{:?}", filled.unfilled);
}

#[test]
fn a_digit_only_secret_from_the_environment_stays_a_string() {
    let config = load(EXAMPLE, &[("B24ACT__APP__CLIENT_SECRET", "123456")]).unwrap();
    assert_eq!(config.app.client_secret.expose(), "123456");
}

#[test]
fn bad_overrides_name_the_variable() {
    let err = load(EXAMPLE, &[("B24ACT__ACTIONS__3__CODE", "x")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "environment variable B24ACT__ACTIONS__3__CODE: index 3 is past the 1 configured elements"
    );
    let err = load(EXAMPLE, &[("B24ACT__APP__CLIENT_ID__X", "x")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "environment variable B24ACT__APP__CLIENT_ID__X: cannot set `x` inside a string"
    );
}

#[test]
fn type_errors_name_the_key() {
    let text = EXAMPLE.replace("attempt_timeout = \"10s\"", "attempt_timeout = \"ten seconds\"");
    let err = load(&text, &[]).unwrap_err().to_string();
    assert!(err.starts_with("actions[0].retry.attempt_timeout: "), "{err}");
    let text = EXAMPLE.replace("concurrency = 4", "concurrency = \"many\"");
    let err = load(&text, &[]).unwrap_err().to_string();
    assert!(err.starts_with("workers.concurrency: invalid type: string \"many\""), "{err}");
    let text = EXAMPLE.replace("[workers]", "[workers]\nthreads = 2");
    let err = load(&text, &[]).unwrap_err().to_string();
    assert!(
        err.starts_with("workers.threads: unknown field `threads`")
            || err.starts_with("workers: unknown field `threads`"),
        "{err}"
    );
}

#[test]
fn syntax_errors_name_the_file() {
    let err = load("[app\nclient_id = 1", &[]).unwrap_err();
    assert_eq!(err.to_string(), "b24act.toml is not valid TOML");
    let cause = std::error::Error::source(&err).expect("the parser's error is kept").to_string();
    assert!(cause.contains("line 1"), "{cause}");
}

#[test]
fn portal_registration_rules_are_checked_locally() {
    let text = EXAMPLE
        .replace("code = \"check_credit_limit\"", "code = \"check credit limit!\"")
        .replace("[actions.properties.amount]", "[actions.properties.2amount]")
        .replace("[actions.return_properties.reason]", "[actions.return_properties.Title]");
    let problems = problems_of(&text);
    assert!(problems.contains(&"actions[0].code: `check credit limit!` has characters outside [A-Za-z0-9._-] (\"Wrong activity code!\", §1.2)".to_owned()), "{problems:#?}");
    assert!(problems.contains(&"actions[0].properties.2amount: `2amount` is not a valid property id [A-Za-z][A-Za-z0-9_]* (\"Wrong property key\", §1.2)".to_owned()), "{problems:#?}");
    assert!(problems.contains(&"actions[0].return_properties.Title: `Title` is reserved by the activity itself; the portal would skip it (§1.5)".to_owned()), "{problems:#?}");
    // The fallback names `reason`, which is now gone.
    assert!(
        problems.contains(
            &"actions[0].on_failure.values.reason: is not a declared return property".to_owned()
        ),
        "{problems:#?}"
    );
}

#[test]
fn codes_take_letters_of_either_case_digits_dots_underscores_and_dashes() {
    let text =
        EXAMPLE.replace("code = \"check_credit_limit\"", "code = \"Finance.Check_Credit-2\"");
    assert_eq!(load(&text, &[]).unwrap().actions[0].code, "Finance.Check_Credit-2");
    let text = EXAMPLE.replace("code = \"check_credit_limit\"", "code = \"check/credit\"");
    assert_eq!(
        problems_of(&text),
        [
            "actions[0].code: `check/credit` has characters outside [A-Za-z0-9._-] (\"Wrong activity code!\", §1.2)"
        ]
    );
}

#[test]
fn a_key_in_both_maps_and_a_long_code_are_refused() {
    let long = "a".repeat(129);
    let text = EXAMPLE
        .replace("code = \"check_credit_limit\"", &format!("code = \"{long}\""))
        .replace("[actions.return_properties.reason]", "[actions.return_properties.Amount]");
    let problems = problems_of(&text);
    assert!(
        problems
            .contains(&"actions[0].code: is 129 characters, over Bitrix24's 128 (§1.2)".to_owned()),
        "{problems:#?}"
    );
    assert!(problems.contains(&"actions[0].return_properties.Amount: is also an input property; the portal would skip it (§1.5)".to_owned()), "{problems:#?}");
}

#[test]
fn a_settings_form_needs_properties_and_where_it_is_offered_must_be_named_fully() {
    let config = load(EXAMPLE, &[]).unwrap();
    assert!(config.actions[0].settings_form, "the example's action has the form");
    let text = EXAMPLE
        .replace(
            "# document_type = [\"crm\", \"CCrmDocumentDeal\", \"DEAL\"]",
            "document_type = [\"crm\", \"\", \"DEAL\"]",
        )
        .replace("# filter = { include = [[\"crm\"]] }", "filter = { include = [\"b24\", []] }");
    assert_eq!(
        problems_of(&text),
        [
            "actions[0].document_type: must be [module, entity, type] with none empty, e.g. [\"crm\", \"CCrmDocumentDeal\", \"DEAL\"]",
            "actions[0].filter.include[1]: must be a distribution name (\"b24\" or \"box\") or a document-type prefix such as [\"crm\", \"CCrmDocumentDeal\"], not empty (§1.6)",
        ]
    );
    let bare = concat!(crate::one_http_action_config!(), "url = \"https://x.example.com/\"\n")
        .replace("name = \"Check\"\n", "name = \"Check\"\nsettings_form = true\n");
    assert_eq!(
        problems_of(&bare),
        [
            "actions[0].settings_form: the settings form shows the action's properties, and it declares none"
        ]
    );
}

#[test]
fn a_fallback_value_for_an_undeclared_return_property_names_the_one_probably_meant() {
    let text = EXAMPLE.replace("approval_required = true", "aproval_required = true");
    assert_eq!(
        problems_of(&text),
        [
            "actions[0].on_failure.values.aproval_required: is not a declared return property; did you mean `approval_required`?"
        ]
    );
}

#[test]
fn fallback_values_must_fit_their_declared_types() {
    let text = EXAMPLE.replace("approval_required = true", "approval_required = \"perhaps\"");
    assert_eq!(
        problems_of(&text),
        [
            "actions[0].on_failure.values.approval_required: expected true/false or \"Y\"/\"N\", got \"perhaps\""
        ]
    );
}

#[test]
fn runtime_settings_are_checked() {
    let text = EXAMPLE
        .replace("sqlite:/var/lib/b24act/b24act.db", "mysql://db/b24act")
        .replace("https://b24act.example.com/", "http://localhost:8080/")
        .replace("attempt_timeout = \"10s\"", "attempt_timeout = \"10m\"");
    let problems = problems_with(&text, &[(KEY_VARIABLE, "short")]);
    let keys: Vec<&str> = problems.iter().map(|p| p.split(':').next().unwrap()).collect();
    assert_eq!(
        keys,
        ["app.public_url", "store.url", "store.encryption_key", "actions[0].retry.attempt_timeout"],
        "{problems:#?}"
    );
}

#[test]
fn a_url_without_a_scheme_says_so_and_what_to_write() {
    let text = EXAMPLE.replace(
        "public_url = \"https://b24act.example.com/\"",
        "public_url = \"b24act.example.com/\"",
    );
    assert_eq!(
        load(&text, &[]).unwrap_err().to_string(),
        "app.public_url: `b24act.example.com/` has no scheme: write https://b24act.example.com/"
    );
    let err = load(EXAMPLE, &[("B24ACT__TELEMETRY__ENDPOINT", "127.0.0.1:4318/v1/traces")])
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "environment variable B24ACT__TELEMETRY__ENDPOINT: `telemetry.endpoint`: `127.0.0.1:4318/v1/traces` has no scheme: write https://127.0.0.1:4318/v1/traces"
    );
    let text = EXAMPLE.replace(
        "[actions.connector]\n",
        "[actions.connector]\nurl = \"finance.example.com/api/{{properties.company_id}}\"\n",
    );
    let text = text.replacen(
        "url = \"https://finance.example.com/api/v1/companies/{{properties.company_id}}/credit\"\n",
        "",
        1,
    );
    let config = load(&text, &[]).unwrap();
    let refused = crate::catalog::Catalog::build(&config, &connectors::Registry::new()).err();
    assert_eq!(
        refused.map(|e| e.to_string()).as_deref(),
        Some(
            "actions[0].connector.url: `finance.example.com/api/{{properties.company_id}}` has no scheme: write https://finance.example.com/api/{{properties.company_id}}"
        )
    );
}

#[test]
fn the_auth_server_is_https_or_loopback_only() {
    let with = |url: &str| {
        EXAMPLE.replace(
            "public_url = \"https://b24act.example.com/\"",
            &format!("public_url = \"https://b24act.example.com/\"\nauth_server = \"{url}\""),
        )
    };
    let cloud = load(&with("https://oauth.example.com/"), &[]).unwrap();
    assert_eq!(cloud.app.auth_server.as_str(), "https://oauth.example.com/");
    assert!(load(&with("http://127.0.0.1:8040/"), &[]).is_ok(), "the emulator");
    let problems = problems_of(&with("http://oauth.example.com/"));
    assert!(problems.len() == 1 && problems[0].starts_with("app.auth_server"), "{problems:?}");
}

#[test]
fn duplicate_codes_and_no_subscription_with_return_values_are_refused() {
    let action = &EXAMPLE[EXAMPLE.find("[[actions]]").unwrap()..];
    let twice = format!("{EXAMPLE}\n{action}");
    assert!(
        problems_of(&twice)
            .iter()
            .any(|p| p.starts_with("actions[1].code: `check_credit_limit` is declared twice"))
    );
    let text =
        EXAMPLE.replace("description = \"Asks", "use_subscription = false\ndescription = \"Asks");
    assert!(problems_of(&text).iter().any(|p| {
        p.starts_with("actions[0].return_properties: return values need use_subscription = true")
    }));
}

#[test]
fn select_properties_need_options_and_a_default_among_them() {
    let text = EXAMPLE.replace(
        "[actions.properties.amount]",
        "[actions.properties.priority]\nname = \"Priority\"\ntype = \"select\"\ndefault = \"urgent\"\noptions = { low = \"Low\", high = \"High\" }\n\n[actions.properties.amount]",
    );
    assert_eq!(
        problems_of(&text),
        ["actions[0].properties.priority.default: `urgent` is not one of the options low, high"]
    );
}

#[test]
fn log_format_comes_from_the_file_or_the_environment() {
    let env = |format: &str| [("B24ACT__LOG__FORMAT".to_owned(), format.to_owned())];
    let plain = load(EXAMPLE, &[]).unwrap();
    assert_eq!(plain.log.format, LogFormat::Text, "text by default");
    let in_file = EXAMPLE.replace("# format = \"text\"", "format = \"json\"");
    assert_eq!(load(&in_file, &[]).unwrap().log.format, LogFormat::Json);
    let from_env = load(EXAMPLE, &[("B24ACT__LOG__FORMAT", "json")]).unwrap();
    assert_eq!(from_env.log.format, LogFormat::Json);
    assert_eq!(LogConfig::from_env_vars(env("json")).unwrap().format, LogFormat::Json);
    assert_eq!(LogConfig::from_env_vars(std::iter::empty()).unwrap().format, LogFormat::Text);
    let wrong = LogConfig::from_env_vars(env("xml")).unwrap_err().to_string();
    assert!(wrong.starts_with("log.format: unknown variant `xml`"), "{wrong}");
}

#[test]
fn a_hand_made_encryption_key_is_refused() {
    for key in ["0".repeat(64), "ab".repeat(32), "0123456789a".repeat(6)[..64].to_owned()] {
        let problems = problems_with(EXAMPLE, &[(KEY_VARIABLE, &key)]);
        assert_eq!(problems.len(), 1, "{key}: {problems:#?}");
        assert!(
            problems[0].starts_with("store.encryption_key: has ")
                && problems[0].contains("distinct byte values, fewer than the 12"),
            "{problems:#?}"
        );
    }
    // Twelve distinct values pass; so does the test key (16) and the same key in upper case.
    let twelve: String = (0..32).map(|i| format!("{:02x}", (i % 12) * 17)).collect();
    assert!(load(EXAMPLE, &[(KEY_VARIABLE, &twelve)]).is_ok());
    assert!(load(EXAMPLE, &[(KEY_VARIABLE, &KEY.to_uppercase())]).is_ok());
}

#[test]
fn the_server_section_has_timeouts_a_connection_cap_and_a_body_cap() {
    let defaults = load(EXAMPLE, &[]).unwrap().server;
    assert_eq!(defaults.header_timeout, Duration::from_secs(10));
    assert_eq!(defaults.body_timeout, Duration::from_secs(30));
    assert_eq!(defaults.idle_timeout, Duration::from_secs(60));
    assert_eq!(defaults.max_connections, 1024);
    let tuned = EXAMPLE.replace(
        "[server]\n",
        "[server]\nheader_timeout = \"2s\"\nbody_timeout = \"5s\"\nidle_timeout = \"15s\"\nmax_connections = 100\nmax_body_bytes = 16777216\n",
    );
    let server = load(&tuned, &[("B24ACT__SERVER__IDLE_TIMEOUT", "3s")]).unwrap().server;
    assert_eq!(
        (server.header_timeout, server.body_timeout, server.idle_timeout, server.max_connections),
        (Duration::from_secs(2), Duration::from_secs(5), Duration::from_secs(3), 100)
    );
    let broken = EXAMPLE.replace(
        "[server]\n",
        "[server]\nheader_timeout = \"0s\"\nbody_timeout = \"2h\"\nmax_connections = 0\nmax_body_bytes = 16777217\n",
    );
    assert_eq!(
        problems_of(&broken),
        [
            "server.max_body_bytes: must be more than 0 and at most 16777216 (16 MiB), got 16777217",
            "server.header_timeout: must be more than 0",
            "server.body_timeout: must be at most 1h",
            "server.max_connections: must be from 1 to 65536, got 0",
        ]
    );
}

#[test]
fn the_console_listens_on_loopback_by_default_and_takes_its_token_from_the_environment() {
    let console = load(EXAMPLE, &[]).unwrap().console;
    assert!(console.enabled);
    assert_eq!(console.listen.to_string(), "127.0.0.1:8081");
    assert_eq!(console.token, None, "read-only without a token");

    let token = "0123456789abcdef-from-env";
    let config = load(
        EXAMPLE,
        &[("B24ACT__CONSOLE__TOKEN", token), ("B24ACT__CONSOLE__LISTEN", "0.0.0.0:9090")],
    )
    .unwrap();
    assert_eq!(config.console.token.as_ref().map(Secret::expose), Some(token));
    assert_eq!(config.console.listen.to_string(), "0.0.0.0:9090");
    assert!(!format!("{config:?}").contains(token), "the token is never printed");
}

#[test]
fn a_console_beyond_loopback_needs_a_token_of_sixteen_characters() {
    let exposed = [("B24ACT__CONSOLE__LISTEN", "0.0.0.0:8081")];
    let problems = problems_with(EXAMPLE, &exposed);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].starts_with("console.listen: `0.0.0.0:8081` is beyond loopback")
            && problems[0].contains("set console.token (or B24ACT__CONSOLE__TOKEN)"),
        "{problems:#?}"
    );
    let short = [exposed[0], ("B24ACT__CONSOLE__TOKEN", "short")];
    assert_eq!(
        problems_with(EXAMPLE, &short),
        [
            "console.token: must be at least 16 characters (`openssl rand -hex 32`); remove it for a read-only console on loopback"
        ]
    );
    let disabled = [exposed[0], ("B24ACT__CONSOLE__ENABLED", "false")];
    assert!(load(EXAMPLE, &disabled).is_ok(), "a console that does not start is not exposed");
    let same_port = [("B24ACT__CONSOLE__LISTEN", "127.0.0.1:8080")];
    assert_eq!(
        problems_with(EXAMPLE, &same_port),
        [
            "console.listen: `127.0.0.1:8080` is server.listen too; give the console a port of its own"
        ]
    );
}

#[test]
fn telemetry_is_off_by_default_and_turned_on_from_the_environment() {
    let telemetry = load(EXAMPLE, &[]).unwrap().telemetry;
    assert!(!telemetry.enabled);
    assert_eq!(telemetry.endpoint.as_str(), "http://127.0.0.1:4318/v1/traces");
    assert_eq!(telemetry.service_name, "b24act");
    assert_eq!(telemetry.sample_ratio, 1.0);

    let telemetry = load(
        EXAMPLE,
        &[
            ("B24ACT__TELEMETRY__ENABLED", "true"),
            ("B24ACT__TELEMETRY__ENDPOINT", "https://otel.example.com/v1/traces"),
            ("B24ACT__TELEMETRY__SERVICE_NAME", "b24act-eu"),
            ("B24ACT__TELEMETRY__SAMPLE_RATIO", "0.25"),
        ],
    )
    .unwrap()
    .telemetry;
    assert!(telemetry.enabled);
    assert_eq!(telemetry.endpoint.as_str(), "https://otel.example.com/v1/traces");
    assert_eq!(telemetry.service_name, "b24act-eu");
    assert_eq!(telemetry.sample_ratio, 0.25);
    let whole = load(EXAMPLE, &[("B24ACT__TELEMETRY__SAMPLE_RATIO", "0")]).unwrap();
    assert_eq!(whole.telemetry.sample_ratio, 0.0, "an integer is a ratio too");
}

#[test]
fn telemetry_settings_are_checked_by_key_even_while_export_is_off() {
    let with = |key: &str, value: &str| {
        let variable = format!("B24ACT__TELEMETRY__{}", key.to_ascii_uppercase());
        problems_with(EXAMPLE, &[(variable.as_str(), value)])
    };
    assert_eq!(
        with("endpoint", "grpc://127.0.0.1:4317"),
        [
            "telemetry.endpoint: `grpc://127.0.0.1:4317` is not an http:// or https:// URL (OTLP over HTTP, e.g. http://127.0.0.1:4318/v1/traces)"
        ]
    );
    assert_eq!(
        with("endpoint", "http://collector.internal:4318"),
        [
            "telemetry.endpoint: `http://collector.internal:4318/` has no path; OTLP over HTTP takes traces at http://collector.internal:4318/v1/traces"
        ]
    );
    let with_password =
        with("endpoint", "https://user:hunter2-password@otel.example.com/v1/traces");
    assert_eq!(
        with_password,
        [
            "telemetry.endpoint: must not hold credentials (the configuration is logged); give the collector's headers in OTEL_EXPORTER_OTLP_TRACES_HEADERS"
        ]
    );
    assert!(!with_password[0].contains("hunter2"), "the password is not repeated");
    assert_eq!(with("service_name", " "), ["telemetry.service_name: must not be empty"]);
    assert_eq!(
        with("sample_ratio", "1.5"),
        ["telemetry.sample_ratio: must be from 0 to 1, got 1.5"]
    );
    assert_eq!(
        with("sample_ratio", "-0.1"),
        ["telemetry.sample_ratio: must be from 0 to 1, got -0.1"]
    );
    let unknown = load(EXAMPLE, &[("B24ACT__TELEMETRY__PROTOCOL", "grpc")]).unwrap_err();
    let ConfigError::Environment { variable, problem } = unknown else { panic!("{unknown:?}") };
    assert_eq!(variable, "B24ACT__TELEMETRY__PROTOCOL", "{problem}");
    assert!(
        problem.starts_with(
            "sets `telemetry.protocol`, which is not a known key: unknown field `protocol`"
        ),
        "{problem}"
    );
}

#[test]
fn an_override_of_no_known_key_names_its_variable_and_the_one_probably_meant() {
    let problem = |variable: &str, value: &str| match load(EXAMPLE, &[(variable, value)]) {
        Err(ConfigError::Environment { variable: named, problem }) => {
            assert_eq!(named, variable, "{problem}");
            problem
        }
        other => panic!("{variable}: {other:?}"),
    };
    let secret = problem("B24ACT__APP__CLIENT_SECRT", "s3cret");
    assert!(
        secret.starts_with(
            "sets `app.client_secrt`, which is not a known key: unknown field `client_secrt`"
        ) && secret.ends_with("; did you mean B24ACT__APP__CLIENT_SECRET?"),
        "{secret}"
    );
    assert!(!secret.contains("s3cret"), "the value is not repeated: {secret}");
    let section = problem("B24ACT__TELEMTRY__ENABLED", "true");
    assert!(
        section.starts_with("sets `telemtry`, which is not a known key: unknown field `telemtry`")
            && section.ends_with("; did you mean B24ACT__TELEMETRY__ENABLED?"),
        "{section}"
    );
    let in_action = problem("B24ACT__ACTIONS__0__RETRY__MAX_WAITT", "5m");
    assert!(
        in_action.starts_with("sets `actions[0].retry.max_waitt`, which is not a known key")
            && in_action.ends_with("; did you mean B24ACT__ACTIONS__0__RETRY__MAX_WAIT?"),
        "{in_action}"
    );
    let typed = problem("B24ACT__WORKERS__CONCURRENCY", "many");
    assert!(typed.starts_with("`workers.concurrency`: invalid type: string \"many\""), "{typed}");
    // A variable that sets a known key is not blamed for a problem elsewhere.
    let text = EXAMPLE.replace("[workers]", "[workers]\nthreads = 2");
    let elsewhere = load(&text, &[("B24ACT__WORKERS__CONCURRENCY", "2")]).unwrap_err();
    assert!(matches!(elsewhere, ConfigError::Value { .. }), "{elsewhere:?}");
}

#[test]
fn a_misspelt_key_or_variant_in_the_file_gets_the_closest_known_one() {
    let text = EXAMPLE.replace("[workers]", "[workers]\nleese = \"1m\"");
    let err = load(&text, &[]).unwrap_err().to_string();
    assert!(
        err.contains("unknown field `leese`") && err.ends_with("; did you mean `lease`?"),
        "{err}"
    );
    let text = EXAMPLE.replace("mode = \"fallback\"", "mode = \"fallbak\"");
    let err = load(&text, &[]).unwrap_err().to_string();
    assert!(
        err.contains("unknown variant `fallbak`") && err.ends_with("; did you mean `fallback`?"),
        "{err}"
    );
    let text = EXAMPLE.replace("[actions.retry]", "[actions.retyr]");
    let err = load(&text, &[]).unwrap_err().to_string();
    assert!(err.starts_with("actions[0]") && err.ends_with("; did you mean `retry`?"), "{err}");
}

/// What `Catalog::build` (check-config, and `serve` at start) refuses in `text`, one line each.
fn catalog_problems(text: &str, env: &[(&str, &str)]) -> Vec<String> {
    let config = load(text, env).unwrap();
    match crate::catalog::Catalog::build(&config, &connectors::Registry::new()) {
        Err(refused) => refused.0.iter().map(ToString::to_string).collect(),
        Ok(_) => panic!("the catalog was built"),
    }
}

#[test]
fn a_placeholder_or_mapping_naming_an_undeclared_property_is_refused_with_the_one_probably_meant() {
    let price = concat!(
        crate::one_http_action_config!(),
        "url = \"https://erp.example.com/prices/{{properties.artcle}}\"\n",
        "[actions.connector.response]\n",
        "pric = \"/price\"\n",
        "available = \"/stock\"\n",
    )
    .replace(
        "[actions.connector]",
        "[actions.properties.article]\nname = \"Article\"\n\
         [actions.return_properties.price]\nname = \"Price\"\ntype = \"double\"\n\
         [actions.return_properties.available]\nname = \"Available\"\ntype = \"bool\"\n\
         [actions.connector]",
    );
    assert_eq!(
        catalog_problems(&price, &[]),
        [
            "actions[0].connector: reads the input property `artcle`, which the action does not declare (it declares article); did you mean `article`?",
            "actions[0].connector: fills the return property `pric`, which the action does not declare (it declares price, available); did you mean `price`?",
        ]
    );
    // The credit check's own input table and the example's URL.
    let text = EXAMPLE
        .replace("{{properties.company_id}}", "{{properties.compny_id}}")
        .replace("# company_id = \"company_id\"", "company_id = \"compny_id\"");
    assert_eq!(
        catalog_problems(&text, &[]),
        [
            "actions[0].connector: reads the input property `compny_id`, which the action does not declare (it declares company_id, amount); did you mean `company_id`?"
        ]
    );
    // A workflow that does not wait gets no values, so what the connector fills is not checked.
    let fire_and_forget = concat!(
        crate::one_http_action_config!(),
        "url = \"https://erp.example.com/notify\"\n",
        "[actions.connector.response]\n",
        "ticket = \"/id\"\n",
    )
    .replace("name = \"Check\"\n", "name = \"Check\"\nuse_subscription = false\n");
    let config = load(&fire_and_forget, &[]).unwrap();
    assert!(crate::catalog::Catalog::build(&config, &connectors::Registry::new()).is_ok());
}

#[test]
fn a_connector_key_misspelt_in_the_file_or_the_environment_names_the_key_and_the_variable() {
    let text = EXAMPLE.replace("# timeout = \"10s\"", "timeuot = \"10s\"");
    let problems = catalog_problems(&text, &[]);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].starts_with("actions[0].connector.timeuot: unknown field `timeuot`")
            && problems[0].ends_with("; did you mean `timeout`?"),
        "{problems:#?}"
    );
    let problems = catalog_problems(EXAMPLE, &[("B24ACT__ACTIONS__0__CONNECTOR__TIMEUOT", "10s")]);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].starts_with("actions[0].connector.timeuot: unknown field `timeuot`")
            && problems[0].ends_with(
                "(set by B24ACT__ACTIONS__0__CONNECTOR__TIMEUOT; did you mean B24ACT__ACTIONS__0__CONNECTOR__TIMEOUT?)"
            ),
        "{problems:#?}"
    );
}

#[test]
fn the_reason_property_is_a_declared_single_string_return_property_of_a_fallback() {
    let with = |policy: &str| {
        let text = EXAMPLE.replace("reason_property = \"error\"", policy);
        assert_ne!(text, EXAMPLE, "the example names its reason property");
        text
    };
    let config = load(&with("reason_property = \"reason\""), &[]).unwrap_err();
    // `reason` has a fallback value in the example: the reason would overwrite it.
    let ConfigError::Invalid(problems) = config else { panic!("{config:?}") };
    assert_eq!(
        problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [
            "actions[0].on_failure.values.reason: is the reason_property, which gets the reason; give it no fallback value"
        ]
    );
    assert_eq!(
        problems_of(&with("reason_property = \"failure\"")),
        [
            "actions[0].on_failure.reason_property: `failure` is not a declared return property; declare it as a string"
        ]
    );
    assert_eq!(
        problems_of(&with("reason_property = \"aproval_required\"")),
        [
            "actions[0].on_failure.reason_property: `aproval_required` is not a declared return property; declare it as a string; did you mean `approval_required`?"
        ]
    );
    assert_eq!(
        problems_of(&with("reason_property = \"available_limit\"")),
        [
            "actions[0].on_failure.reason_property: `available_limit` must be a single string (or text) return property to carry the reason, not double"
        ]
    );
    let dead = EXAMPLE
        .replace("mode = \"fallback\"", "mode = \"dead_letter\"")
        .replace("log_message = \"Credit check failed, sent to manual approval: {reason}\"\n", "")
        .replace(
            "values = { approval_required = true, reason = \"Manual approval: {reason}\" }\n",
            "",
        );
    let err = load(&dead, &[]).unwrap_err().to_string();
    assert!(err.starts_with("actions[0].on_failure") && err.contains("reason_property"), "{err}");
    // A connector that fills the reason property itself would hide a failure.
    let text = with("reason_property = \"reason\"")
        .replace(", reason = \"Manual approval: {reason}\"", "");
    assert_eq!(
        catalog_problems(&text, &[]),
        [
            "actions[0].connector: fills the return property `reason`, which on_failure.reason_property keeps for the reason of a failure (empty on success); give the reason another property"
        ]
    );
}

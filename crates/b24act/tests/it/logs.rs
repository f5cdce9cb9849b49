//! What `b24act serve` writes to stderr, read as a log collector reads it: a real child process
//! with stderr going to a file. Plain text without colour codes when stderr is not a terminal,
//! one JSON object per line with `--log-format json`, and — through a whole flow logged at trace
//! level, every dependency included — no token, secret, `application_token`, store key or event
//! token signature.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use b24_emulator::{Faults, ServerErrorBurst, WorkflowSpec, WorkflowStatus};
use fakes::finance::{Behaviour, FinanceApi};
use sandbox::{REGISTRATION_WITHIN, Sandbox};
use serde_json::Value;
use store::{Store, StoreKey, StoreOptions};

use crate::support::{CLIENT_ID, CLIENT_SECRET, CODE, KEY, Options, ServeSite, TempDir};

/// A `b24act serve` child whose stderr goes to a file; stopped with SIGTERM when dropped.
struct Server {
    child: Child,
    stderr: PathBuf,
}

impl Server {
    /// Starts `b24act ARGS… serve --config CONFIG` with `env`, and waits for its address line.
    fn start(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let stderr = config.with_extension("stderr");
        let file = std::fs::File::create(&stderr).expect("create the stderr file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_b24act"))
            .args(args)
            .args(["serve", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn b24act serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("b24act serve exited: {}", read(&stderr)))
                .expect("stdout is UTF-8");
            if line.starts_with("b24act serving on") {
                break;
            }
        }
        // Keep draining stdout so the process never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child, stderr }
    }

    /// Stops the process the way a service manager does and returns all it wrote to stderr.
    fn stop(mut self) -> String {
        self.terminate();
        read(&self.stderr)
    }

    fn terminate(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..200 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

fn read(path: &Path) -> String {
    String::from_utf8(std::fs::read(path).expect("read the stderr file")).expect("UTF-8 stderr")
}

/// The portal, the finance API and a configuration for a host at a free port, with the app
/// registered; the host is not started.
struct Site {
    sandbox: Sandbox,
    api: FinanceApi,
    dir: TempDir,
    config: PathBuf,
    store_url: String,
}

impl Site {
    async fn new() -> Site {
        let options = Options { max_wait: "30s", ..Options::default() };
        let ServeSite { sandbox, api, dir, config, store_url, .. } =
            ServeSite::new("b24act-logs", 3, &options).await;
        Site { sandbox, api, dir, config, store_url }
    }

    async fn start_workflow(&self, company_id: u64) -> String {
        let spec = WorkflowSpec {
            domain: self.sandbox.domain.clone(),
            code: CODE.into(),
            properties: serde_json::json!({ "company_id": company_id }),
            finish_after: None,
            ..WorkflowSpec::default()
        };
        self.sandbox.emulator.start_workflow(spec).await.unwrap().workflow_id
    }

    async fn wait_closed(&self, workflow_id: &str) -> b24_emulator::WorkflowState {
        let within = Duration::from_secs(30);
        let state = self
            .sandbox
            .emulator
            .wait_for_workflow(&self.sandbox.domain, workflow_id, within, |s| {
                s.status != WorkflowStatus::Waiting
            })
            .await
            .unwrap();
        assert_eq!(state.status, WorkflowStatus::Closed, "{state:?}");
        state
    }

    /// The installation as the host stored it (its current tokens), read with the store key.
    async fn stored_installation(&self, member_id: &str) -> store::Installation {
        let key = StoreKey::from_hex(KEY).unwrap();
        let store = Store::open(&self.store_url, StoreOptions::new(key)).await.unwrap();
        let installation = store.installation(member_id).await.unwrap().expect("installed");
        store.close().await;
        installation
    }
}

/// Every secret of the flow, by what it is, to look for in the logs.
#[derive(Default)]
struct Secrets(Vec<(String, String)>);

impl Secrets {
    fn add(&mut self, what: &str, value: &str) {
        assert!(value.len() >= 8, "{what} is long enough to search for: {value:?}");
        if !self.0.iter().any(|(_, known)| known == value) {
            self.0.push((what.to_owned(), value.to_owned()));
        }
    }

    fn add_installation(&mut self, when: &str, installation: &store::Installation) {
        self.add(&format!("access token ({when})"), &installation.portal.access_token);
        if let Some(refresh) = &installation.portal.refresh_token {
            self.add(&format!("refresh token ({when})"), refresh);
        }
        self.add("application_token", &installation.portal.application_token);
    }

    /// The tokens an activity call carried, and its event token's signature.
    fn add_call(&mut self, state: &b24_emulator::WorkflowState) {
        let form = phpform::decode(state.body.as_bytes(), &phpform::Limits::default()).unwrap();
        let Some(phpform::Value::Array(auth)) = form.get("auth") else {
            panic!("the call carries auth[…]: {}", state.body)
        };
        for field in ["access_token", "refresh_token", "application_token"] {
            if let Some(phpform::Value::Str(value)) = auth.get(field) {
                self.add(&format!("auth[{field}] of a call"), value);
            }
        }
        let (_, signature) = state.event_token.rsplit_once('.').expect("a signed event token");
        self.add("an event token's signature", signature);
    }

    /// Each line of `logs` that holds a secret, with the secret named instead of shown.
    fn leaks(&self, logs: &str) -> Vec<String> {
        logs.lines()
            .filter_map(|line| {
                let found: Vec<&str> = self
                    .0
                    .iter()
                    .filter(|(_, secret)| line.contains(secret.as_str()))
                    .map(|(what, _)| what.as_str())
                    .collect();
                let mut shown: String = line.chars().take(400).collect();
                for (what, secret) in &self.0 {
                    shown = shown.replace(secret.as_str(), &format!("<{what}>"));
                }
                (!found.is_empty()).then(|| format!("{}: {shown}", found.join(", ")))
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_flow_logged_at_trace_level_shows_no_secret() {
    let site = Site::new().await;
    let (emulator, domain) = (&site.sandbox.emulator, site.sandbox.domain.as_str());
    let server = Server::start(&site.config, &["--log-format", "json"], &[("RUST_LOG", "trace")]);

    // Install: ONAPPINSTALL, its check at the auth server, the registrations.
    let installed = emulator.install_app(domain, CLIENT_ID).await.unwrap();
    assert_eq!(installed.event_status, Some(200), "the host took ONAPPINSTALL");
    site.sandbox.wait_registered(&[CODE], REGISTRATION_WITHIN).await.unwrap();
    let mut secrets = Secrets::default();
    secrets.add("client_secret", CLIENT_SECRET);
    secrets.add("store.encryption_key", KEY);
    secrets.add("the finance API's bearer token", &site.api.token());
    secrets.add("access token (ONAPPINSTALL)", &installed.access_token);
    secrets.add("refresh token (ONAPPINSTALL)", &installed.refresh_token);
    secrets.add("application_token", &installed.application_token);
    let member_id = installed.member_id.clone();
    let after_install = site.stored_installation(&member_id).await;
    secrets.add_installation("after install", &after_install);

    // A call whose connector fails twice and is retried.
    site.api.set(Behaviour { down: true, ..Behaviour::default() });
    let retried = site.start_workflow(7).await;
    for _ in 0..400 {
        if site.api.counts().failures() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(site.api.counts().failures() >= 2, "the connector failed and was retried");
    // Its delivery meets expired tokens (a refresh) and two 503s (delivery retries).
    emulator.expire_tokens(domain).unwrap();
    let burst = ServerErrorBurst { count: 2, status: 503 };
    emulator
        .set_faults(domain, Faults { server_errors: Some(burst), ..Faults::default() })
        .unwrap();
    site.api.set(Behaviour::default());
    let first = site.wait_closed(&retried).await;
    // And a call that goes straight through on the refreshed tokens.
    let second = site.wait_closed(&site.start_workflow(9).await).await;
    secrets.add_call(&first);
    secrets.add_call(&second);
    let refreshed = site.stored_installation(&member_id).await;
    assert_ne!(
        refreshed.portal.refresh_token, after_install.portal.refresh_token,
        "the tokens were refreshed"
    );
    secrets.add_installation("after the refresh", &refreshed);

    let logs = server.stop();
    assert_eq!(secrets.leaks(&format!("a {KEY} b")).len(), 1, "the search finds a secret");
    let leaks = secrets.leaks(&logs);
    assert!(leaks.is_empty(), "secrets in the logs:\n{}", leaks.join("\n"));

    // The capture is real: every target at trace, as JSON lines.
    for target in ["b24act", "hyper", "reqwest", "sqlx"] {
        assert!(logs.contains(&format!("\"target\":\"{target}")), "{target} logged nothing");
    }
    assert!(logs.contains("\"level\":\"TRACE\""), "nothing at trace level");
    assert_json_lines(&logs);
    drop(site.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_to_a_file_are_plain_text_without_colour_codes() {
    let site = Site::new().await;
    // The flag wins over the environment's (and the file's) format.
    let env = [("RUST_LOG", "debug"), ("B24ACT__LOG__FORMAT", "json")];
    let server = Server::start(&site.config, &["--log-format", "text"], &env);
    site.sandbox.install(CLIENT_ID, &[CODE], REGISTRATION_WITHIN).await.unwrap();
    let logs = server.stop();
    assert!(logs.lines().count() >= 3, "serve logged its start: {logs}");
    assert!(!logs.contains('\u{1b}'), "no escape codes when stderr is a file:\n{logs}");
    assert!(logs.contains(" INFO b24act"), "plain level and target: {logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_format_json_from_the_environment_makes_every_line_a_json_object() {
    let site = Site::new().await;
    let server = Server::start(&site.config, &[], &[("B24ACT__LOG__FORMAT", "json")]);
    site.sandbox.install(CLIENT_ID, &[CODE], REGISTRATION_WITHIN).await.unwrap();
    site.wait_closed(&site.start_workflow(4).await).await;
    let logs = server.stop();
    assert!(logs.lines().count() >= 3, "serve logged its start and the call: {logs}");
    assert_json_lines(&logs);
}

/// Every line of `logs` is a JSON object with a level, a target and its fields.
fn assert_json_lines(logs: &str) {
    for line in logs.lines() {
        let event: Value = serde_json::from_str(line)
            .unwrap_or_else(|error| panic!("not a JSON line ({error}): {line}"));
        assert!(event["level"].is_string(), "a level: {line}");
        assert!(event["target"].is_string(), "a target: {line}");
        assert!(event["fields"].is_object(), "fields: {line}");
    }
}

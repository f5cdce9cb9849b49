//! A whole deployment for end-to-end tests: the emulator as the portal, the host on a real
//! SQLite file (or PostgreSQL) in a temp dir, and the fake finance system behind an `http`
//! action. The set-up is `sandbox`'s, as in the demo and the bench: the app is installed
//! the real way (ONAPPINSTALL → app.info → registration).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use b24_emulator::{Emulator, PortalSpec, WorkflowSpec, WorkflowState, WorkflowStatus};
use fakes::finance::FinanceApi;
use host::app::Running;
use host::config::{DeliveryConfig, RetryPolicy, WorkersConfig};
pub use sandbox::TempDir;
use sandbox::{self, AppIdentity, FinanceCreditCheck, HostConfig, Sandbox, Site};
use serde_json::Value;

pub const CLIENT_ID: &str = "local.b24act.test";
pub const CLIENT_SECRET: &str = "test-secret";
pub const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
pub const CODE: &str = "check_credit";
/// An action whose workflow does not wait (`use_subscription = false`).
pub const NOTIFY_CODE: &str = "tell_finance";

/// Knobs a test turns.
pub struct Options {
    pub portal: PortalSpec,
    pub max_wait: &'static str,
    /// `None`: a SQLite file in the temp dir.
    pub store_url: Option<String>,
    pub lease: &'static str,
    pub attempt_timeout: &'static str,
    /// Lines added to the `[server]` table (its deadlines and limits).
    pub server: &'static str,
    /// The credit check gets the settings form and a property of every checked type
    /// ([`SETTINGS_PROPERTIES`]).
    pub settings_form: bool,
}

/// The credit check's extra properties when it has the settings form: one of each type the form
/// checks, besides its own `company_id` (int, required).
pub const SETTINGS_PROPERTIES: &str = r#"
[actions.properties.amount]
name = { en = "Amount", ru = "Сумма" }
type = "double"

[actions.properties.priority]
name = "Priority"
type = "select"
default = "normal"
options = { normal = "Normal", urgent = { en = "Urgent", ru = "Срочно" } }

[actions.properties.confirmed]
name = "Confirmed"
type = "bool"

[actions.properties.due]
name = "Due"
type = "date"

[actions.properties.remind_at]
name = "Remind at"
type = "datetime"

[actions.properties.approver]
name = "Approver"
type = "user"

[actions.properties.contract]
name = "Contract"
type = "file"

[actions.properties.note]
name = "Note"
type = "text"

[actions.properties.tags]
name = "Tags"
multiple = true
"#;

impl Default for Options {
    fn default() -> Self {
        Options {
            portal: PortalSpec { unlimited: true, ..PortalSpec::default() },
            max_wait: "20s",
            store_url: None,
            lease: "3s",
            attempt_timeout: "1s",
            server: "",
            settings_form: false,
        }
    }
}

pub struct TestApp {
    pub emulator: Emulator,
    pub domain: String,
    pub api: FinanceApi,
    pub running: Option<Running>,
    pub config_text: String,
    /// Holds the store's directory until the test ends.
    pub _dir: TempDir,
    pub listen: std::net::SocketAddr,
}

/// The configuration of the test deployment: one `http` action asking the fake finance API
/// for a company's credit (its limit and debt as `limit` and `debt`), with a fallback that
/// names the reason, and one that only tells finance (its workflow does not wait).
pub fn config_text(site: &Site, store_url: &str, api: &FinanceApi, options: &Options) -> String {
    let duration = |text: &str| humantime::parse_duration(text).unwrap();
    let attempt_timeout = duration(options.attempt_timeout);
    let check = FinanceCreditCheck {
        code: CODE,
        name: "Check credit",
        api,
        retry: RetryPolicy {
            max_wait: duration(options.max_wait),
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_millis(400),
            jitter: 0.1,
            attempt_timeout,
            deadline_margin: Duration::from_secs(1),
            ..RetryPolicy::default()
        },
        flags_unavailable: true,
    };
    let notify = format!(
        r#"
[[actions]]
code = "{NOTIFY_CODE}"
name = "Tell finance"
use_subscription = false

[actions.properties.company_id]
name = "Company"
type = "int"
{retry}{connector}"#,
        retry = sandbox::retry_table(&RetryPolicy { attempt_timeout, ..RetryPolicy::default() }),
        connector = sandbox::finance_credit_connector(api),
    );
    let text = HostConfig {
        encryption_key: KEY.into(),
        workers: WorkersConfig { concurrency: 8, lease: duration(options.lease) },
        delivery: DeliveryConfig {
            retry_base: Duration::from_millis(100),
            retry_cap: Duration::from_secs(1),
            ..pacing(&options.portal)
        },
        actions: vec![check.to_toml(), notify],
        ..HostConfig::new(&AppIdentity::new(CLIENT_ID, CLIENT_SECRET), site, store_url)
    }
    .to_toml();
    let text = if options.settings_form {
        let first = "[actions.properties.company_id]";
        assert!(text.contains(first), "the credit check declares company_id");
        let returns = "[actions.return_properties.limit]";
        text.replacen(first, &format!("settings_form = true\n\n{first}"), 1).replacen(
            returns,
            &format!("{SETTINGS_PROPERTIES}\n{returns}"),
            1,
        )
    } else {
        text
    };
    if options.server.is_empty() {
        return text;
    }
    text.replacen("[server]\n", &format!("[server]\n{}\n", options.server), 1)
}

/// The portal, the fake finance API (`seed`), and in a temp dir (`prefix`) the store and the
/// configuration file of a host at a free loopback port, the app registered for that port; the
/// host is not started (a [`Server`] on `config` starts it).
pub struct ServeSite {
    pub sandbox: Sandbox,
    pub api: FinanceApi,
    pub dir: TempDir,
    /// `b24act.toml` in `dir`.
    pub config: PathBuf,
    /// What `config` holds.
    pub config_text: String,
    pub store_url: String,
    /// Where the host is to listen.
    pub listen: std::net::SocketAddr,
}

/// `count` distinct free loopback addresses for processes to listen on: all bound at once, so no
/// two are the same port, then released for their users.
pub fn free_addresses(count: usize) -> Vec<std::net::SocketAddr> {
    let held: Vec<_> =
        (0..count).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    held.iter().map(|listener| listener.local_addr().unwrap()).collect()
}

impl ServeSite {
    pub async fn new(prefix: &str, seed: u64, options: &Options) -> ServeSite {
        let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        ServeSite::at(prefix, seed, options, listen).await
    }

    /// A site whose host is to listen at `listen` (and whose public URL is there).
    pub async fn at(
        prefix: &str,
        seed: u64,
        options: &Options,
        listen: std::net::SocketAddr,
    ) -> ServeSite {
        let sandbox = Sandbox::start(options.portal.clone()).await.unwrap();
        let api = FinanceApi::start(seed).await.unwrap();
        let dir = TempDir::new(prefix).unwrap();
        let store_url = (options.store_url.clone())
            .unwrap_or_else(|| format!("sqlite:{}/b24act.db", dir.path().display()));
        let config_text = config_text(&sandbox.site(listen), &store_url, &api, options);
        let config = dir.path().join("b24act.toml");
        std::fs::write(&config, &config_text).unwrap();
        sandbox.register_app(&AppIdentity::new(CLIENT_ID, CLIENT_SECRET), listen);
        ServeSite { sandbox, api, dir, config, config_text, store_url, listen }
    }
}

/// The host's pacing: the portal's own limits, or, for a portal without any, none worth waiting
/// for (the host's bucket starts full, which would only slow tests that are not about limits).
pub fn pacing(portal: &PortalSpec) -> DeliveryConfig {
    if portal.unlimited {
        DeliveryConfig { rate_per_second: 10_000.0, burst: 10_000, ..DeliveryConfig::default() }
    } else {
        DeliveryConfig {
            rate_per_second: portal.rate.0,
            burst: portal.rate.1,
            ..DeliveryConfig::default()
        }
    }
}

impl TestApp {
    pub async fn start(options: Options) -> TestApp {
        let sandbox = Sandbox::start(options.portal.clone()).await.unwrap();
        let api = FinanceApi::start(7).await.unwrap();
        let dir = TempDir::new("b24act-it").unwrap();
        let (listener, listen) = sandbox::loopback_listener().await.unwrap();
        let store_url = options
            .store_url
            .clone()
            .unwrap_or_else(|| format!("sqlite:{}/b24act.db", dir.path().display()));
        let config_text = config_text(&sandbox.site(listen), &store_url, &api, &options);
        sandbox.register_app(&AppIdentity::new(CLIENT_ID, CLIENT_SECRET), listen);
        let mut test = TestApp {
            emulator: sandbox.emulator.clone(),
            domain: sandbox.domain.clone(),
            api,
            running: None,
            config_text,
            _dir: dir,
            listen,
        };
        test.start_host(listener).await;
        sandbox.install(CLIENT_ID, &[CODE, NOTIFY_CODE], Duration::from_secs(10)).await.unwrap();
        test
    }

    /// Starts the host on `listener` with the test's store and configuration.
    pub async fn start_host(&mut self, listener: tokio::net::TcpListener) {
        let registry = connectors::Registry::new();
        let running = sandbox::start_host(listener, &self.config_text, &registry).await.unwrap();
        self.running = Some(running);
    }

    pub fn store(&self) -> &store::Store {
        &self.running.as_ref().expect("host running").host.store
    }

    /// Starts a workflow running the action for `company_id`; returns its id.
    pub async fn start_workflow(&self, company_id: u64, timeout_duration: u64) -> String {
        let spec = WorkflowSpec {
            domain: self.domain.clone(),
            code: CODE.into(),
            properties: serde_json::json!({"company_id": company_id}),
            timeout_duration,
            finish_after: None,
            ..WorkflowSpec::default()
        };
        self.emulator.start_workflow(spec).await.unwrap().workflow_id
    }

    pub fn workflow(&self, id: &str) -> WorkflowState {
        self.emulator.workflow(&self.domain, id).unwrap()
    }

    /// Waits until the workflow's activity is no longer waiting.
    pub async fn wait_closed(&self, id: &str, within: Duration) -> WorkflowState {
        let deadline = Instant::now() + within;
        loop {
            let state = self.workflow(id);
            if state.status != WorkflowStatus::Waiting {
                return state;
            }
            assert!(
                Instant::now() < deadline,
                "workflow {id} still waiting after {within:?}: {state:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls `condition` until it holds or `within` passes.
    pub async fn wait_until(
        &self,
        what: &str,
        within: Duration,
        condition: impl Fn(&TestApp) -> bool,
    ) {
        let deadline = Instant::now() + within;
        while !condition(self) {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `count` jobs are in `state`.
    pub async fn wait_for_jobs(&self, state: store::JobState, count: u64, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let now = self.store().state_counts().await.unwrap().get(state);
            if now == count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{now} jobs {state:?}, expected {count}, after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// How many times the portal received a method (inside batches too).
    pub fn calls_of(&self, method: &str) -> usize {
        self.emulator.rest_calls(&self.domain).iter().filter(|c| c.method == method).count()
    }
}

pub fn number(value: &Value) -> f64 {
    match value {
        Value::Number(n) => n.as_f64().unwrap(),
        Value::String(s) => s.parse().unwrap(),
        other => panic!("not a number: {other}"),
    }
}

/// A `b24act serve` child process, started on `config` and waited for; killed when dropped.
pub struct Server(Child);

impl Server {
    pub fn start(config: &std::path::Path) -> Server {
        Server::try_start(config).unwrap_or_else(|stderr| {
            panic!("b24act serve exited before printing its address; it said:\n{stderr}")
        })
    }

    /// Starts `serve` and waits for its address; if it exits first, what it wrote on stderr.
    pub fn try_start(config: &std::path::Path) -> Result<Server, String> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_b24act"))
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn b24act serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.starts_with("b24act serving on") => break,
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    let mut said = String::new();
                    let _ = std::io::Read::read_to_string(&mut stderr, &mut said);
                    let _ = child.wait();
                    return Err(said);
                }
            }
        }
        // Keep draining both pipes so the process never blocks on a full one.
        std::thread::spawn(move || for _ in lines {});
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Ok(Server(child))
    }

    /// The process's resident set (`VmRSS` in `/proc/<pid>/status`), in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS line");
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    pub fn kill(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }

    /// Sends SIGTERM, as a service manager stopping the node does.
    pub fn terminate(&self) {
        let status = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        assert!(status.unwrap().success(), "kill -TERM");
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        self.0.try_wait().unwrap().is_some()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

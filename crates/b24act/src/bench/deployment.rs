//! One deployment under test: the emulator (a portal) and the fake finance API in this process,
//! and `b24act serve` as child processes — one node on a SQLite file in a temp dir, or several
//! nodes sharing a fresh PostgreSQL database — with the app installed the real way (ONAPPINSTALL
//! → refresh at the emulator's auth server → `bizproc.activity.add`) by [`sandbox`] on the first
//! node, which the portal then calls; the other nodes share the installation through the store.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use b24_emulator::{Emulator, PortalSpec, StartedWorkflow, WorkflowSpec};
use fakes::finance::{Behaviour, FinanceApi};
use hyper::body::Bytes;
use hyper::{Method, StatusCode, Uri};
use serde_json::Value;

use super::BenchArgs;
use super::load::Conn;
use super::measure::{self, Memory};
use super::postgres::ScratchDatabase;
use host::config::{DeliveryConfig, RetryPolicy, WorkersConfig};
use sandbox::{AppIdentity, FinanceCreditCheck, HostConfig, Sandbox, Site, TempDir};

pub const CLIENT_ID: &str = "local.b24act.bench";
const CLIENT_SECRET: &str = "bench-secret";
/// The action every scenario runs: an `http` connector asking the API for a company's credit.
pub const CODE: &str = "bench_credit";
/// How long the server may take to start and install.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How the API behind the action answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// At once: the connector costs a loopback round trip.
    Instant,
    /// Never within the attempt's timeout: every worker slot stays busy, so further jobs stay
    /// queued (a backlog behind a slow API).
    Hanging,
}

/// What to deploy.
#[derive(Debug, Clone)]
pub struct Setup {
    pub portal: PortalSpec,
    /// The server's `delivery.rate_per_second` and `delivery.burst`.
    pub delivery: (f64, u32),
    pub api: Api,
    pub workers: usize,
    /// How many `serve` nodes share the store, each with every role.
    pub nodes: usize,
    pub store: StoreKind,
}

/// Where the nodes keep their store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// A SQLite file in the deployment's temp dir (one node only).
    Sqlite,
    /// A fresh database on the PostgreSQL server at this URL, dropped at the end.
    Postgres(String),
}

/// A running deployment. Dropping it kills the servers, then drops their database and removes
/// their files.
pub struct Deployment {
    /// Declared first so they are dropped (killed) first. The first node is where the app was
    /// installed: the portal calls it.
    servers: Vec<ServerProcess>,
    pub emulator: Emulator,
    pub domain: String,
    /// The API the action calls; held so it answers as long as the deployment runs.
    _api: FinanceApi,
    /// The nodes' PostgreSQL database; none on SQLite.
    _database: Option<ScratchDatabase>,
    dir: TempDir,
}

impl Deployment {
    pub async fn start(setup: &Setup, args: &BenchArgs, server_exe: &Path) -> anyhow::Result<Self> {
        if setup.store == StoreKind::Sqlite && setup.nodes != 1 {
            bail!("{} nodes cannot share a SQLite store", setup.nodes);
        }
        let log_filter = args.server_log.as_str();
        let sandbox = Sandbox::start(setup.portal.clone()).await?;
        let api = FinanceApi::start(1).await.context("starting the fake finance API")?;
        if setup.api == Api::Hanging {
            api.set(Behaviour { latency: Duration::from_secs(24 * 3600), ..Behaviour::default() });
        }
        let mut dir = TempDir::new("b24act-bench").context("creating a temp dir")?;
        if args.keep_files {
            dir.keep();
            eprintln!("keeping the server's files in {}", dir.path().display());
        }
        let (store_url, database) = match &setup.store {
            StoreKind::Sqlite => (format!("sqlite:{}", db_path(&dir).display()), None),
            StoreKind::Postgres(server) => {
                let database = ScratchDatabase::create(server).await?;
                (database.url().to_owned(), Some(database))
            }
        };
        // Free ports for the nodes; bound again by each node an instant later.
        let mut listens = Vec::with_capacity(setup.nodes);
        for _ in 0..setup.nodes {
            listens.push(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?);
        }
        let installed_on = *listens.first().context("a deployment has at least one node")?;
        // One configuration (the first node's public URL, one encryption key); each node only
        // listens on its own port.
        let config = config_text(setup, &sandbox.site(installed_on), &store_url, &api);
        let mut config: toml::Table = config.parse().context("the bench's own configuration")?;
        sandbox.register_app(&AppIdentity::new(CLIENT_ID, CLIENT_SECRET), installed_on);
        let mut servers = Vec::with_capacity(setup.nodes);
        // One after another, so no two nodes run the store's migrations at once.
        for (node, listen) in listens.iter().enumerate() {
            // The first node's files keep the single node's names.
            let suffix = if node == 0 { String::new() } else { format!("-{}", node + 1) };
            sandbox::set(&mut config, "server.listen", listen.to_string());
            let config_path = dir.path().join(format!("b24act{suffix}.toml"));
            std::fs::write(&config_path, config.to_string())?;
            let log = dir.path().join(format!("serve{suffix}.log"));
            servers.push(ServerProcess::spawn(server_exe, &config_path, &log, log_filter).await?);
        }
        sandbox.install(CLIENT_ID, &[CODE], START_TIMEOUT).await?;
        let Sandbox { emulator, domain } = sandbox;
        Ok(Deployment { servers, emulator, domain, _api: api, _database: database, dir })
    }

    /// The first node: the one the portal calls.
    pub fn server(&self) -> &ServerProcess {
        &self.servers[0]
    }

    /// Every node's address, the first node's first.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.servers.iter().map(|server| server.addr).collect()
    }

    /// Every node's process id.
    pub fn pids(&self) -> Vec<u32> {
        self.servers.iter().map(ServerProcess::pid).collect()
    }

    /// Starts a workflow running the action for `company_id` (no timeout); ids past the fake's
    /// book wrap around into it, so every call gets an answer.
    pub async fn start_workflow(&self, company_id: u64) -> anyhow::Result<StartedWorkflow> {
        let company_id = 1 + company_id.saturating_sub(1) % fakes::finance::SEEDED_COMPANIES;
        let spec = WorkflowSpec {
            domain: self.domain.clone(),
            code: CODE.into(),
            properties: serde_json::json!({"company_id": company_id}),
            timeout_duration: 0,
            ..WorkflowSpec::default()
        };
        Ok(self.emulator.start_workflow(spec).await?)
    }

    /// The jobs by state, from the first node's `GET /health` (the store's, which the nodes
    /// share).
    pub async fn job_counts(&self) -> anyhow::Result<JobCounts> {
        let mut conn = Conn::open(self.server().addr).await?;
        let path: Uri = host::routes::HEALTH.parse()?;
        let (status, body) = conn.send(Method::GET, &path, Bytes::new()).await?;
        if status != StatusCode::OK {
            bail!("GET /health answered {status}: {}", String::from_utf8_lossy(&body));
        }
        let health: Value = serde_json::from_slice(&body).context("GET /health: not JSON")?;
        let count = |state: &str| health["jobs"][state].as_u64().unwrap_or(0);
        let total = health["jobs"]
            .as_object()
            .map_or(0, |by_state| by_state.values().filter_map(Value::as_u64).sum::<u64>());
        Ok(JobCounts { queued: count("queued"), running: count("running"), total })
    }

    /// The store the nodes share, opened as their configuration names it (with its key).
    pub async fn open_store(&self) -> anyhow::Result<store::Store> {
        let config = host::config::Config::load(&self.dir.path().join("b24act.toml"))?;
        let key = store::StoreKey::from_hex(config.store.encryption_key.expose())?;
        let options = store::StoreOptions { max_connections: 2, ..store::StoreOptions::new(key) };
        Ok(store::Store::open(config.store.url.expose(), options).await?)
    }

    /// The SQLite database's file (on SQLite).
    pub fn db_path(&self) -> PathBuf {
        db_path(&self.dir)
    }

    /// The SQLite database with its write-ahead log, in bytes.
    pub fn store_bytes(&self) -> u64 {
        let db = db_path(&self.dir);
        let wal = PathBuf::from(format!("{}-wal", db.display()));
        [db, wal].iter().filter_map(|path| std::fs::metadata(path).ok()).map(|m| m.len()).sum()
    }
}

/// The server's SQLite database in the deployment's directory.
fn db_path(dir: &TempDir) -> PathBuf {
    dir.path().join("b24act.db")
}

/// Jobs by state, as the server reports them.
#[derive(Debug, Clone, Copy)]
pub struct JobCounts {
    pub queued: u64,
    pub running: u64,
    pub total: u64,
}

fn config_text(setup: &Setup, site: &Site, store_url: &str, api: &FinanceApi) -> String {
    // A hanging API needs attempts that outlast the run; an instant one the product's defaults.
    let (lease, attempt_timeout) = match setup.api {
        Api::Hanging => (Duration::from_secs(3 * 3600), Duration::from_secs(2 * 3600)),
        Api::Instant => (Duration::from_secs(5 * 60), Duration::from_secs(30)),
    };
    let (rate_per_second, burst) = setup.delivery;
    let check = FinanceCreditCheck {
        code: CODE,
        name: "Benchmark: check credit",
        api,
        retry: RetryPolicy {
            max_wait: Duration::from_secs(4 * 3600),
            attempt_timeout,
            ..RetryPolicy::default()
        },
        flags_unavailable: false,
    };
    let app = AppIdentity::new(CLIENT_ID, CLIENT_SECRET);
    HostConfig {
        workers: WorkersConfig { concurrency: setup.workers, lease },
        delivery: DeliveryConfig { rate_per_second, burst, ..DeliveryConfig::default() },
        actions: vec![check.to_toml()],
        ..HostConfig::new(&app, site, store_url)
    }
    .to_toml()
}

/// `b24act serve` as a child process; killed when dropped.
pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
    /// Its console's address (`console.listen` is port 0), when the console is enabled.
    pub console: Option<SocketAddr>,
    log: PathBuf,
}

impl ServerProcess {
    async fn spawn(
        exe: &Path,
        config: &Path,
        log: &Path,
        log_filter: &str,
    ) -> anyhow::Result<ServerProcess> {
        let log_file = std::fs::File::create(log)?;
        let mut command = Command::new(exe);
        command
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", log_filter)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file);
        // The bench's own configuration must not leak into the server's through overrides.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("B24ACT_") {
                command.env_remove(name);
            }
        }
        let mut child =
            command.spawn().with_context(|| format!("starting {} serve", exe.display()))?;
        let stdout = child.stdout.take().context("the server's stdout")?;
        let (ready, address) = mpsc::channel();
        std::thread::spawn(move || {
            // Reads every line, so the server never blocks on a full pipe. The server prints its
            // address, then its install handler, its console's address if it has one, and its
            // actions: the addresses are known at the console's line or the first action's.
            let mut serving = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("b24act serving on http://") {
                    serving = Some(addr.trim().to_owned());
                    continue;
                }
                let line = line.trim_start();
                let console = line
                    .strip_prefix("console and /metrics: http://")
                    .and_then(|rest| rest.split('/').next())
                    .map(str::to_owned);
                if (console.is_some() || line.starts_with("action "))
                    && let Some(addr) = serving.take()
                {
                    let _ = ready.send((addr, console));
                }
            }
        });
        let mut server = ServerProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            console: None,
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok((addr, console)) = address.try_recv() {
                server.addr = addr.parse().with_context(|| format!("server address `{addr}`"))?;
                server.console = console
                    .map(|console| console.parse())
                    .transpose()
                    .with_context(|| "the console's address")?;
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                bail!("the server exited with {status}: {}", server.log_tail());
            }
            if Instant::now() > deadline {
                bail!("the server did not start within {START_TIMEOUT:?}: {}", server.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn memory(&self) -> anyhow::Result<Memory> {
        measure::memory(self.pid())
    }

    /// The last lines of the server's log, for an error message.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! The `b24act` command line: parses arguments, sets up logging, runs one subcommand.
//!
//! Exit codes: 0 success, 1 a runtime error (printed once with its whole chain), 2 bad usage.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use b24::report::ErrorChain;
use b24act::telemetry::Exporter;
use clap::builder::TypedValueParser;
use clap::{Parser, Subcommand};
use host::config::{Config, ConfigError, LogConfig, LogFormat, TelemetryConfig};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Debug, Parser)]
#[command(name = "b24act", version, about = "Hosts custom Bitrix24 business-process actions")]
struct Cli {
    /// Log lines on stderr as `text` (for people; coloured only on a terminal without
    /// NO_COLOR) or `json` (one object per line, for collectors). For a command that reads a
    /// configuration, wins over its `[log] format` and B24ACT__LOG__FORMAT.
    #[arg(long, global = true, value_name = "FORMAT", value_parser = log_format_parser())]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a starter configuration, DIR/b24act.toml: the documented example with a fresh
    /// store key, every key explained. Refuses to replace an existing file unless --force.
    Init(b24act::init::InitArgs),
    /// Try a configuration on the Bitrix24 emulator: a portal, the app installed the real way,
    /// the host running the configuration; prints a curl line per action that starts a
    /// workflow, and where to watch. --fake starts fakes of the systems connectors reach and
    /// points the connectors at them (in memory). Stops on Ctrl-C or SIGTERM.
    Dev(b24act::dev::DevArgs),
    /// Run the host: take calls from portals, run the actions, return the results. Stops on
    /// Ctrl-C or SIGTERM, letting running attempts finish.
    Serve {
        #[arg(long, env = "B24ACT_CONFIG", default_value = "b24act.toml")]
        config: PathBuf,
    },
    /// Load and validate a configuration file (with its B24ACT__* environment overrides) and
    /// each action's connector settings, reporting problems by key; nothing is started or sent.
    CheckConfig {
        #[arg(long, env = "B24ACT_CONFIG", default_value = "b24act.toml")]
        config: PathBuf,
    },
    /// Inspect and steer jobs in the store the configuration names (SQLite or PostgreSQL).
    Jobs {
        #[arg(long, env = "B24ACT_CONFIG", default_value = "b24act.toml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: b24act::operator_cli::JobsCommand,
    },
    /// See and remove the portals that installed the app, in the store the configuration names.
    Portals {
        #[arg(long, env = "B24ACT_CONFIG", default_value = "b24act.toml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: b24act::portal_cli::PortalsCommand,
    },
    /// Make every installed portal's registrations match the configuration: print per portal
    /// what is added, updated and deleted (actions removed from the configuration, unless
    /// `[app] keep_removed_actions`), then apply it. Exit code 1 when any portal failed.
    Sync(b24act::sync_cli::SyncArgs),
    /// Run the Bitrix24 emulator in the foreground: a fake OAuth server, portals and workflows,
    /// driven through its JSON control API (docs/emulator.md). Stops on Ctrl-C or SIGTERM.
    Emulator {
        /// Address of the OAuth server and control API. Portals get their own ports on the
        /// same host.
        #[arg(long, env = "B24ACT_EMULATOR_LISTEN", default_value = "127.0.0.1:8024")]
        listen: SocketAddr,
    },
    /// Run one fake of a system connectors reach (finance, onec, telegram, graph) in the
    /// foreground, printing its URL and the connector settings that reach it. Stops on Ctrl-C
    /// or SIGTERM.
    Fake(b24act::dev::fake::FakeArgs),
    /// Run a self-contained demo: the emulator, the host on a temporary SQLite file and a fake
    /// finance system in this process, running the reference case (shipment requests through
    /// a credit check, the CFO for the rest) with time compressed; a summary. Fails if a
    /// workflow hangs, a result is sent twice or a decision contradicts the finance system.
    /// Logs only errors unless RUST_LOG says otherwise.
    Demo(b24act::demo::DemoArgs),
    /// Measure a real `b24act serve` on SQLite against design.md §6: intake throughput and ack
    /// latency, results per second under the portal's limit, call-to-result latency, memory
    /// with a backlog. Prints a table; BENCHMARKS.md has the figures and the commands.
    Bench(b24act::bench::BenchArgs),
}

impl Command {
    /// The configuration file the command reads, if it reads one.
    fn config_path(&self) -> Option<&Path> {
        match self {
            Command::Serve { config } | Command::CheckConfig { config } => Some(config),
            Command::Jobs { config, .. } | Command::Portals { config, .. } => Some(config),
            Command::Sync(args) => Some(&args.config),
            Command::Dev(args) => Some(&args.config),
            Command::Init(_)
            | Command::Fake(_)
            | Command::Emulator { .. }
            | Command::Demo(_)
            | Command::Bench(_) => None,
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The demo prints its own progress; its logs would drown it.
    let default_filter = match cli.command {
        Command::Demo(_) => "error",
        // The bench's table is its output; its in-process emulator would log every workflow.
        Command::Bench(_) => "warn",
        // Sync prints each change itself; init and fake print all there is to say.
        Command::Sync(_) | Command::Init(_) | Command::Fake(_) => "warn",
        _ => "info",
    };
    // The configuration is read before logging starts, so that its `[log]` table applies to
    // every line; a command without one still honours B24ACT__LOG__FORMAT.
    let config = cli.command.config_path().map(Config::load);
    let configured = match &config {
        Some(Ok(config)) => Some(config.log.format),
        // A configuration that does not load is reported in the format the environment asks.
        Some(Err(_)) | None => LogConfig::from_env().ok().map(|log| log.format),
    };
    let format = cli.log_format.or(configured).unwrap_or_default();
    match start_and_run(cli, config, format, default_filter) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The reader went away (`b24act jobs list | head`): nothing is wrong.
        Err(error) if is_broken_pipe(&error) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            match format {
                LogFormat::Text => eprintln!("b24act: {error:#}"),
                // Still one JSON object per line, so a collector keeps the reason it stopped.
                LogFormat::Json => eprintln!(
                    "{}",
                    serde_json::json!({
                        "level": "ERROR",
                        "target": "b24act",
                        "fields": { "message": format!("b24act: {error:#}") },
                    })
                ),
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// Starts the runtime and logging (with trace export for `serve`, when configured), runs the
/// command, and flushes the export.
fn start_and_run(
    cli: Cli,
    config: Option<Result<Config, ConfigError>>,
    format: LogFormat,
    default_filter: &str,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let telemetry = match (&cli.command, &config) {
        (Command::Serve { .. }, Some(Ok(config))) => Some(&config.telemetry),
        _ => None,
    };
    let exporter = {
        // The export's batch processor is a task on the runtime.
        let _entered = runtime.enter();
        init_logging(format, default_filter, telemetry)?
    };
    let outcome = run(cli, config, &runtime);
    // Outside `block_on`, so the batch task can still run while this waits for it.
    exporter.shutdown();
    outcome
}

/// Logs to stderr at `RUST_LOG`'s levels (else `default_filter`), in `format`, and exports the
/// spans at those levels when `telemetry` enables it. Text is coloured only when stderr is a
/// terminal and `NO_COLOR` is unset or empty (no-color.org), so files, pipes and journald get
/// plain lines.
fn init_logging(
    format: LogFormat,
    default_filter: &str,
    telemetry: Option<&TelemetryConfig>,
) -> anyhow::Result<Exporter> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let lines = match format {
        LogFormat::Text => {
            let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
            lines.with_ansi(std::io::stderr().is_terminal() && !no_color).boxed()
        }
        LogFormat::Json => lines.json().with_ansi(false).boxed(),
    };
    let (export, exporter) = match telemetry {
        Some(telemetry) => b24act::telemetry::start(telemetry)?,
        None => (None, Exporter::default()),
    };
    tracing_subscriber::registry().with(filter).with(lines).with(export).init();
    Ok(exporter)
}

/// `--log-format`'s parser: the names the configuration uses, listed in `--help`.
fn log_format_parser() -> impl TypedValueParser<Value = LogFormat> {
    clap::builder::PossibleValuesParser::new(LogFormat::NAMES)
        .try_map(|name| name.parse::<LogFormat>())
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// `loaded` is the command's configuration, read by `main` (`None` for commands without one).
fn run(
    cli: Cli,
    loaded: Option<Result<Config, ConfigError>>,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    let config =
        || loaded.context("this command reads no configuration")?.map_err(anyhow::Error::from);
    runtime.block_on(async {
        match cli.command {
            Command::Serve { .. } => serve(config()?).await,
            Command::CheckConfig { config: path } => check_config(&path, config()?),
            Command::Jobs { command, .. } => {
                let actor = cli_actor();
                b24act::operator_cli::run(&config()?, command, &actor, &mut std::io::stdout()).await
            }
            Command::Portals { command, .. } => {
                b24act::portal_cli::run(&config()?, command, &mut std::io::stdout()).await
            }
            Command::Sync(args) => {
                b24act::sync_cli::run(config()?, &args, &mut std::io::stdout()).await
            }
            Command::Init(args) => b24act::init::run(&args, &mut std::io::stdout()),
            Command::Dev(args) => {
                b24act::dev::run(&args, config()?, &mut std::io::stdout(), shutdown_signal()).await
            }
            Command::Fake(args) => {
                b24act::dev::fake::run_alone(&args, &mut std::io::stdout(), shutdown_signal()).await
            }
            Command::Emulator { listen } => run_emulator(listen).await,
            Command::Bench(args) => b24act::bench::run(args, &mut std::io::stdout()).await,
            Command::Demo(args) => {
                b24act::demo::run(args, &mut std::io::stdout()).await?;
                Ok(())
            }
        }
    })
}

/// Who runs an operator command, as a job's history records it: `cli:` and the login name
/// (`USER`, else `LOGNAME`), or the user id when neither is set (a service, a container).
fn cli_actor() -> String {
    use std::os::unix::fs::MetadataExt;
    let login = ["USER", "LOGNAME"]
        .into_iter()
        .find_map(|name| std::env::var(name).ok().filter(|value| !value.is_empty()));
    let who = login.unwrap_or_else(|| {
        // The owner of this process's /proc entry is its user.
        std::fs::metadata("/proc/self")
            .map_or_else(|_| "unknown".to_owned(), |m| m.uid().to_string())
    });
    format!("cli:{who}")
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let public_url = config.app.public_url.clone();
    let running = host::app::start(config, &connectors::Registry::new()).await?;
    println!("b24act serving on http://{}", running.addr);
    println!("  install handler: {}", host::routes::install_url(&public_url));
    if let Some(console) = running.console {
        let access = match running.host.config.console.token {
            Some(_) => "console.token required",
            None => "read-only: no console.token",
        };
        println!("  console and /metrics: http://{console}/ ({access})");
    }
    for action in running.host.catalog.iter() {
        let code = &action.config.code;
        println!("  action {code}: {}", host::routes::handler_url(&public_url, code));
    }
    shutdown_signal().await;
    tracing::info!("stopping: letting running attempts finish");
    running.shutdown().await;
    Ok(())
}

fn check_config(path: &Path, config: Config) -> anyhow::Result<()> {
    // What `serve` would refuse at start.
    b24act::telemetry::ensure_built_in(&config.telemetry)?;
    // Each connector checks its own settings when built (URL templates, pointers, …).
    host::catalog::Catalog::build(&config, &connectors::Registry::new())?;
    let codes: Vec<&str> = config.actions.iter().map(|a| a.code.as_str()).collect();
    println!("{}: valid; {} action(s): {}", path.display(), codes.len(), codes.join(", "));
    // Valid as a file, but a real portal or service would refuse it (`dev` fills in the app's).
    for unfilled in &config.unfilled {
        println!(
            "warning: {} still holds the example's placeholder: fill it in, or set {}, before a \
             real portal or service sees this file",
            unfilled.key, unfilled.variable
        );
    }
    let scopes = host::portals::REQUIRED_SCOPES.join(", ");
    println!("the app needs the scopes: {scopes} (set them on the app's page in the portal)");
    Ok(())
}

async fn run_emulator(listen: SocketAddr) -> anyhow::Result<()> {
    let config = b24_emulator::EmulatorConfig { listen, portal_host: listen.ip() };
    let emulator = b24_emulator::Emulator::start(config)
        .await
        .with_context(|| format!("starting the emulator on {listen}"))?;
    println!("Bitrix24 emulator ready");
    println!("  control API:     {}/control/", emulator.control_url());
    println!("  OAuth server:    {}", emulator.oauth_token_url());
    println!("Press Ctrl-C to stop.");
    emulator.serve_until(shutdown_signal()).await;
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM (how service managers and `kill` stop a process).
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(error) => {
                tracing::warn!(error = %ErrorChain(&error), "cannot listen for SIGTERM; stop with Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

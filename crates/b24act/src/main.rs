//! The `b24act` command line: parses arguments, sets up logging, runs one subcommand.
//!
//! Exit codes: 0 success, 1 a runtime error (printed once with its whole chain), 2 bad usage.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use b24act::config::Config;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "b24act", version, about = "Hosts custom Bitrix24 business-process actions")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
    /// Run the Bitrix24 emulator in the foreground: a fake OAuth server, portals and workflows,
    /// driven through its JSON control API (see the README). Stops on Ctrl-C or SIGTERM.
    Emulator {
        /// Address of the OAuth server and control API. Portals get their own ports on the
        /// same host.
        #[arg(long, env = "B24ACT_EMULATOR_LISTEN", default_value = "127.0.0.1:8024")]
        listen: SocketAddr,
    },
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

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The demo prints its own progress; its logs would drown it.
    let default_filter = match cli.command {
        Command::Demo(_) => "error",
        // The bench's table is its output; its in-process emulator would log every workflow.
        Command::Bench(_) => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The reader went away (`b24act jobs list | head`): nothing is wrong.
        Err(error) if is_broken_pipe(&error) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("b24act: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        match cli.command {
            Command::Serve { config } => serve(&config).await,
            Command::CheckConfig { config } => check_config(&config),
            Command::Jobs { config, command } => {
                let config = Config::load(&config)?;
                b24act::operator_cli::run(&config, command, &mut std::io::stdout()).await
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

async fn serve(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let public_url = config.app.public_url.clone();
    let running = b24act::app::start(config, &connectors::Registry::new()).await?;
    println!("b24act serving on http://{}", running.addr);
    println!("  install handler: {}", b24act::catalog::install_url(&public_url));
    for action in running.host.catalog.iter() {
        let code = &action.config.code;
        println!("  action {code}: {}", b24act::catalog::handler_url(&public_url, code));
    }
    shutdown_signal().await;
    tracing::info!("stopping: letting running attempts finish");
    running.shutdown().await;
    Ok(())
}

fn check_config(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    // Each connector checks its own settings when built (URL templates, pointers, …).
    b24act::catalog::Catalog::build(&config, &connectors::Registry::new())?;
    let codes: Vec<&str> = config.actions.iter().map(|a| a.code.as_str()).collect();
    println!("{}: valid; {} action(s): {}", path.display(), codes.len(), codes.join(", "));
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
                tracing::warn!(%error, "cannot listen for SIGTERM; stop with Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

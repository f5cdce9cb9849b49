//! `b24act dev --config FILE`: a configuration tried on the Bitrix24 emulator in one command.
//!
//! The emulator starts with one portal, and the fakes `--fake` names beside it, with the
//! connectors they stand in for pointed at them. The host runs the configuration in this
//! process, as `serve` does, on the store the file names, trusting the emulator as its auth
//! server; the app is registered on the emulator with the file's client_id and secret and
//! installed the real way (ONAPPINSTALL, the refresh at the auth server,
//! `bizproc.activity.add`), as `crates/sandbox` does for the demo and the tests. Then it prints
//! a `curl` line that starts a workflow for each action, where to watch, and how to stop, and
//! runs until Ctrl-C or SIGTERM. The file is never rewritten: what dev changes — addresses, the
//! auth server, connectors pointed at fakes — is changed in memory and printed.

pub mod fake;
pub mod start_line;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use b24_emulator::PortalSpec;
use host::config::Config;
use sandbox::{AppIdentity, REGISTRATION_WITHIN, Sandbox};
use url::Url;

use fake::{Fake, FakeName};

/// `b24act dev`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct DevArgs {
    /// The configuration to run, e.g. the one `b24act init` wrote.
    #[arg(long, env = "B24ACT_CONFIG", default_value = "b24act.toml")]
    pub config: PathBuf,
    /// Start this fake beside the host and point the connectors it stands in for at it, in
    /// memory: finance (credit_limit), onec or 1c (onec), telegram (telegram), graph
    /// (sharepoint). Repeatable.
    #[arg(long = "fake", value_enum, value_name = "NAME")]
    pub fakes: Vec<FakeName>,
}

/// The dev portal's member_id, the same on every run: a run's installation replaces the
/// previous run's, whose emulator is gone, instead of piling up beside it in the store.
const DEV_MEMBER_ID: &str = "de7000000000000000000000b24ac7de";

/// Runs `config` (read from `args.config`) on the emulator until `stop` completes, printing to
/// `out` what was changed for dev and how to use it.
pub async fn run(
    args: &DevArgs,
    mut config: Config,
    out: &mut impl Write,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let shown = args.config.display().to_string();
    writeln!(out, "b24act dev: {shown} on the Bitrix24 emulator")?;
    let fakes = start_fakes(&args.fakes).await?;
    let mut changes = point_connectors(&mut config, &fakes);
    let portal = PortalSpec { member_id: Some(DEV_MEMBER_ID.to_owned()), ..PortalSpec::default() };
    let sandbox = Sandbox::start(portal).await?;
    let (listener, addr) = bind_host(config.server.listen)?;
    changes.extend(run_locally(&mut config, addr, &sandbox)?);

    for fake in &fakes {
        writeln!(out, "  {}", fake.title())?;
    }
    writeln!(out, "\nChanged for dev, in memory only ({shown} is not rewritten):")?;
    for change in &changes {
        writeln!(out, "  {change}")?;
    }
    let stopped = forget_previous_portal(&config).await?;
    if stopped > 0 {
        writeln!(
            out,
            "  the previous run's portal is gone with its emulator: its {stopped} unfinished job(s) ended dead"
        )?;
    }
    out.flush()?;

    let app = AppIdentity::new(config.app.client_id.clone(), config.app.client_secret.expose());
    sandbox.register_app(&app, addr);
    let running = host::app::start_on(listener, config, &connectors::Registry::new())
        .await
        .context("starting the host")?;
    let codes: Vec<&str> =
        running.host.catalog.iter().map(|action| action.config.code.as_str()).collect();
    if let Err(error) = sandbox.install(&app.client_id, &codes, REGISTRATION_WITHIN).await {
        running.shutdown().await;
        return Err(error.context("installing the app on the emulator's portal"));
    }

    write_guide(out, &shown, &sandbox, &running)?;
    out.flush()?;
    stop.await;
    writeln!(out, "Stopping: the host (running attempts finish), the emulator, the fakes.")?;
    out.flush()?;
    running.shutdown().await;
    drop(sandbox);
    drop(fakes);
    Ok(())
}

/// Starts each fake once, on a free loopback port.
async fn start_fakes(names: &[FakeName]) -> anyhow::Result<Vec<Fake>> {
    let mut names = names.to_vec();
    names.sort();
    names.dedup();
    let mut fakes = Vec::new();
    for name in names {
        fakes.push(Fake::start(name, SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?);
    }
    Ok(fakes)
}

/// Points every action's connector at the fake that stands in for it, if started; says what
/// changed, which fake matched nothing, and which connector a fake could stand in for.
fn point_connectors(config: &mut Config, fakes: &[Fake]) -> Vec<String> {
    let mut changes = Vec::new();
    let mut used = vec![false; fakes.len()];
    for (index, action) in config.actions.iter_mut().enumerate() {
        let kind = action.connector.kind.clone();
        let named = format!("actions[{index}] {} ({kind})", action.code);
        let pointed = fakes.iter().enumerate().find_map(|(at, fake)| {
            let keys = fake.point(&mut action.connector);
            (!keys.is_empty()).then_some((at, fake, keys))
        });
        match (pointed, FakeName::for_connector(&kind)) {
            (Some((at, fake, keys)), _) => {
                used[at] = true;
                let name = fake.name().as_str();
                changes.push(format!("{named}: connector {} → the fake {name}", keys.join(", ")));
            }
            (None, Some(name)) => changes.push(format!(
                "{named}: runs against the connector's own settings; --fake {} would point it at a fake",
                name.as_str()
            )),
            (None, None) => {}
        }
    }
    for (fake, used) in fakes.iter().zip(used) {
        if !used {
            let (kind, _) = fake.settings();
            changes.push(format!(
                "the fake {}: no action has a {kind} connector to point at it",
                fake.name().as_str()
            ));
        }
    }
    changes
}

/// Binds the host's listener at `listen`, on loopback (the emulator is on this machine).
fn bind_host(listen: SocketAddr) -> anyhow::Result<(tokio::net::TcpListener, SocketAddr)> {
    let listen = if listen.ip().is_loopback() {
        listen
    } else {
        SocketAddr::from((Ipv4Addr::LOCALHOST, listen.port()))
    };
    Ok(host::app::bind(host::app::Listener::Server, listen)?)
}

/// Sets what running on this machine against the emulator needs: the host's address and
/// public URL, the emulator as auth server, no drain on Ctrl-C. Says what changed.
fn run_locally(
    config: &mut Config,
    addr: SocketAddr,
    sandbox: &Sandbox,
) -> anyhow::Result<Vec<String>> {
    let mut changes = Vec::new();
    if config.server.listen != addr {
        changes.push(format!("server.listen: {addr} (configured: {})", config.server.listen));
        config.server.listen = addr;
    }
    let public_url = Url::parse(&format!("http://{addr}/")).context("the host's public URL")?;
    if config.app.public_url != public_url {
        changes.push(format!(
            "app.public_url: {public_url}, where the emulator reaches the host (configured: {})",
            config.app.public_url
        ));
        config.app.public_url = public_url;
    }
    let auth_server = Url::parse(&sandbox.auth_server()).context("the emulator's auth server")?;
    changes.push(format!(
        "app.auth_server: {auth_server}, the emulator's OAuth server (configured: {})",
        config.app.auth_server
    ));
    config.app.auth_server = auth_server;
    if !config.server.drain_grace.is_zero() {
        changes.push(format!(
            "server.drain_grace: 0s, so Ctrl-C stops at once (configured: {})",
            humantime::format_duration(config.server.drain_grace)
        ));
        config.server.drain_grace = Duration::ZERO;
    }
    Ok(changes)
}

/// Removes the previous run's installation of the dev portal from the store: its emulator is
/// gone, so nothing could be sent to it. Returns how many of its jobs were still unfinished.
async fn forget_previous_portal(config: &Config) -> anyhow::Result<u64> {
    let store = crate::operator_cli::connect_store(config).await?;
    let removed = store.remove_installation(DEV_MEMBER_ID, host::clock::now_ms()).await;
    store.close().await;
    Ok(removed.context("removing the previous run's portal")?.unwrap_or(0))
}

/// What a person needs next: where things are, a line that starts a workflow per action,
/// where to watch, how to stop.
fn write_guide(
    out: &mut impl Write,
    config: &str,
    sandbox: &Sandbox,
    running: &host::app::Running,
) -> std::io::Result<()> {
    let control = sandbox.emulator.control_url();
    let workflows = format!("{control}/control/portals/{}/workflows", sandbox.domain);
    let console = running.console.map(|addr| format!("http://{addr}/"));
    writeln!(
        out,
        "\nReady: the app is installed on the emulator's portal and its actions are registered."
    )?;
    writeln!(out, "  portal        http://{} (member_id {DEV_MEMBER_ID})", sandbox.domain)?;
    writeln!(out, "  control API   {control}/control/ (docs/emulator.md)")?;
    writeln!(out, "  host          http://{}/", running.addr)?;

    writeln!(
        out,
        "\nStart a workflow with example values (it answers with the workflow's \"workflow_id\"):"
    )?;
    let now = SystemTime::now();
    if running.host.catalog.iter().next().is_none() {
        writeln!(out, "  none: the configuration has no [[actions]]")?;
    }
    for action in running.host.catalog.iter() {
        let body = start_line::start_body(&action.config, now);
        writeln!(out, "  {}", action.config.code)?;
        writeln!(out, "    {}", start_line::curl_line(&workflows, &body))?;
    }

    writeln!(out, "\nWatch:")?;
    writeln!(out, "  the workflow  curl -s {workflows}/<workflow_id>")?;
    writeln!(out, "  the jobs      b24act jobs list --config {config}")?;
    match &console {
        Some(console) => writeln!(out, "  the console   {console}")?,
        None => writeln!(out, "  the console   off ([console] enabled = false)")?,
    }
    writeln!(
        out,
        "\nStop with Ctrl-C: the host, the emulator and the fakes stop; the jobs stay in the store."
    )?;
    Ok(())
}

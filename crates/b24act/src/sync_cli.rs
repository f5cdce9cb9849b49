//! `b24act sync [--dry-run] [--portal MEMBER_ID]`: makes each installed portal's registrations
//! match the configuration — what to add, update and delete, planned from what the portal lists
//! (`host::registrations`, the same plan `serve` applies at start and after an install) —
//! printing the plan per portal and then each result. Exit code 1 when any portal failed.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use b24::incoming::quoted;
use b24::report::ErrorChain;
use host::Host;
use host::config::Config;
use host::registrations::{self, Applied, Plan, RegistrationError, Step};
use serde_json::{Value, json};
use store::{Installation, InstallationStatus};

use crate::operator_cli::write_json;

/// The version of the `--json` output; bumped when a field changes meaning or disappears.
pub const JSON_FORMAT_VERSION: u32 = 1;

/// `b24act sync`'s arguments.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct SyncArgs {
    #[arg(long, env = "B24ACT_CONFIG", default_value = "b24act.toml")]
    pub config: PathBuf,
    /// Print what would be added, updated and deleted, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Only this portal (its `member_id`, as `b24act portals list` shows it).
    #[arg(long, value_name = "MEMBER_ID")]
    pub portal: Option<String>,
    /// Print JSON for scripts instead of text.
    #[arg(long)]
    pub json: bool,
}

/// One portal's sync: its plan and, unless a dry run, how each step went; or why it could not
/// be planned.
struct PortalSync {
    installation: Installation,
    outcome: Result<Synced, RegistrationError>,
}

enum Synced {
    Planned(Plan),
    Applied(Vec<Applied>),
}

impl PortalSync {
    fn failed(&self) -> bool {
        match &self.outcome {
            Err(_) => true,
            Ok(Synced::Planned(_)) => false,
            Ok(Synced::Applied(applied)) => applied.iter().any(|a| a.outcome.is_err()),
        }
    }

    fn name(&self) -> String {
        portal_name(&self.installation)
    }
}

/// `DOMAIN (member_id M)`, escaped: both came in an install event.
fn portal_name(installation: &Installation) -> String {
    let portal = &installation.portal;
    format!("{} (member_id {})", quoted(&portal.domain), quoted(&portal.member_id))
}

/// Runs `b24act sync` with `config`, printing to `out`.
pub async fn run(config: Config, args: &SyncArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let host = Host::open(config, &connectors::Registry::new()).await?;
    let outcome = sync(&host, args, out).await;
    host.store.close().await;
    outcome
}

async fn sync(host: &Host, args: &SyncArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let installations: Vec<Installation> = host
        .store
        .installations()
        .await?
        .into_iter()
        .filter(|i| i.status == InstallationStatus::Active)
        .filter(|i| args.portal.as_ref().is_none_or(|wanted| *wanted == i.portal.member_id))
        .collect();
    if let Some(member_id) = &args.portal
        && installations.is_empty()
    {
        bail!(
            "no installed portal `{member_id}` in the store (b24act portals list shows them all)"
        );
    }
    let mut synced = Vec::with_capacity(installations.len());
    for installation in installations {
        let member_id = &installation.portal.member_id;
        let outcome = match registrations::plan(host, member_id).await {
            Ok(planned) if args.dry_run => Ok(Synced::Planned(planned.plan)),
            Ok(planned) => {
                if !args.json {
                    write_plan(out, &installation, &planned.plan)?;
                }
                Ok(Synced::Applied(planned.apply(host).await))
            }
            Err(error) => Err(error),
        };
        let portal = PortalSync { installation, outcome };
        if !args.json {
            write_text(out, &portal)?;
        }
        synced.push(portal);
    }
    if args.json {
        let portals: Vec<Value> = synced.iter().map(portal_json).collect();
        write_json(
            out,
            &json!({"version": JSON_FORMAT_VERSION, "dry_run": args.dry_run, "portals": portals}),
        )?;
    } else if synced.is_empty() {
        writeln!(out, "no portal has installed the app")?;
    }
    let failed: Vec<String> = synced.iter().filter(|p| p.failed()).map(PortalSync::name).collect();
    if !failed.is_empty() {
        return Err(anyhow::anyhow!("{}", failed.join(", ")))
            .context(format!("sync failed on {} portal(s)", failed.len()));
    }
    Ok(())
}

/// `portal DOMAIN (member_id M)` and the plan's lines under it.
fn write_plan(
    out: &mut impl Write,
    installation: &Installation,
    plan: &Plan,
) -> anyhow::Result<()> {
    writeln!(out, "portal {}", portal_name(installation))?;
    if plan.steps.is_empty() {
        writeln!(out, "  nothing configured and nothing registered")?;
    }
    for step in &plan.steps {
        writeln!(out, "  {step}")?;
    }
    Ok(())
}

/// A dry run's plan, or an applied plan's results, or why the portal could not be planned.
fn write_text(out: &mut impl Write, portal: &PortalSync) -> anyhow::Result<()> {
    match &portal.outcome {
        Err(error) => {
            writeln!(out, "portal {}", portal.name())?;
            writeln!(out, "  FAILED: cannot plan: {}", ErrorChain(error))?;
        }
        Ok(Synced::Planned(plan)) => {
            write_plan(out, &portal.installation, plan)?;
            writeln!(out, "  dry run: {} change(s), nothing applied", plan.changes())?;
        }
        Ok(Synced::Applied(applied)) => {
            let changes: Vec<&Applied> = applied.iter().filter(|a| a.step.is_change()).collect();
            if changes.is_empty() {
                writeln!(out, "  nothing to change")?;
            }
            for Applied { step, outcome } in changes {
                match outcome {
                    Ok(()) => writeln!(out, "  done: {} {}", step.verb(), quoted(step.code()))?,
                    Err(error) => writeln!(
                        out,
                        "  FAILED: {} {} on {}: {}",
                        step.verb(),
                        quoted(step.code()),
                        portal.name(),
                        ErrorChain(error)
                    )?,
                }
            }
        }
    }
    Ok(())
}

fn portal_json(portal: &PortalSync) -> Value {
    let installation = &portal.installation.portal;
    let mut shown = json!({"member_id": installation.member_id, "domain": installation.domain});
    match &portal.outcome {
        Err(error) => shown["error"] = error_json(error),
        Ok(Synced::Planned(plan)) => {
            shown["steps"] = plan.steps.iter().map(|step| step_json(step, None)).collect();
        }
        Ok(Synced::Applied(applied)) => {
            shown["steps"] = applied.iter().map(|a| step_json(&a.step, Some(&a.outcome))).collect();
        }
    }
    shown
}

/// A step: `change` (add, update, delete, unchanged, keep), `code`, `kind`, `note`, and once
/// applied `applied` (true, or false with `error`).
fn step_json(step: &Step, outcome: Option<&Result<(), RegistrationError>>) -> Value {
    let mut shown = json!({
        "change": step.verb(),
        "code": step.code(),
        "kind": registrations::kind_name(step.kind()),
        "note": step.note(),
    });
    if let Some(outcome) = outcome {
        shown["applied"] = json!(outcome.is_ok());
        if let Err(error) = outcome {
            shown["error"] = error_json(error);
        }
    }
    shown
}

/// `message` (the whole chain) and `portal_error` (the portal's `CODE: description`, if any).
fn error_json(error: &RegistrationError) -> Value {
    json!({"message": ErrorChain(error).to_string(), "portal_error": error.portal_error()})
}

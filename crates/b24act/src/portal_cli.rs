//! `b24act portals list | show | remove`: the installations an operator can see and take away.
//! Nothing secret is printed — no token, no `application_token`, only whether a refresh token is
//! held — and `remove` keeps the portal's jobs for inspection (docs/protocol.md §4.4 says who
//! may install; this is how an operator undoes an installation they do not want).

use std::io::Write;

use anyhow::Context;
use serde_json::{Value, json};
use store::{Installation, JobState, StateCounts, Store};

use crate::operator_cli::{Table, timestamp, with_store, write_json};
use host::clock::now_ms;
use host::config::Config;

/// The version of the `--json` output; bumped when a field changes meaning or disappears.
pub const JSON_FORMAT_VERSION: u32 = 1;

/// `b24act portals …`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum PortalsCommand {
    /// List every portal that installed the app, active or not.
    List {
        /// Print JSON for scripts instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one portal: its endpoints as the auth server named them, its status, when its
    /// token expires, and its jobs by state. Tokens are never shown.
    Show {
        /// The portal's `member_id` (the first column of `portals list`).
        member_id: String,
        /// Print JSON for scripts instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Stop all work for a portal and forget its tokens: its calls are refused (401), its
    /// unfinished jobs end as dead, nothing more is sent to it. Its jobs stay for inspection;
    /// installing the app again on the portal brings it back. Running hosts notice within 30 s.
    Remove {
        /// The portal's `member_id`.
        member_id: String,
    },
}

/// Runs one `portals` command against the store `config` names.
pub async fn run(
    config: &Config,
    command: PortalsCommand,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    with_store(config, async |store| execute(store, command, out).await).await
}

async fn execute(
    store: &Store,
    command: PortalsCommand,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    match command {
        PortalsCommand::List { json } => {
            let installations = store.installations().await?;
            if json {
                let portals: Vec<Value> = installations.iter().map(summary_json).collect();
                return write_json(
                    out,
                    &json!({"version": JSON_FORMAT_VERSION, "portals": portals}),
                );
            }
            if installations.is_empty() {
                writeln!(out, "no portal has installed the app")?;
                return Ok(());
            }
            let mut table = Table::new(["MEMBER_ID", "DOMAIN", "STATUS", "INSTALLED", "UPDATED"]);
            for i in &installations {
                table.row([
                    i.portal.member_id.clone(),
                    i.portal.domain.clone(),
                    i.status.as_str().to_owned(),
                    timestamp(i.installed_at),
                    timestamp(i.updated_at),
                ]);
            }
            table.write(out)?;
        }
        PortalsCommand::Show { member_id, json } => {
            let installation = find(store, &member_id).await?;
            let counts = store.portal_state_counts(&member_id).await?;
            if json {
                let mut shown = summary_json(&installation);
                shown["version"] = json!(JSON_FORMAT_VERSION);
                shown["client_endpoint"] = json!(installation.portal.client_endpoint);
                shown["server_endpoint"] = json!(installation.portal.server_endpoint);
                shown["token_expires_at"] = json!(installation.portal.expires_at);
                shown["has_refresh_token"] = json!(has_refresh_token(&installation));
                shown["jobs"] = counts_json(&counts);
                return write_json(out, &shown);
            }
            let i = &installation;
            writeln!(out, "portal {}", i.portal.member_id)?;
            writeln!(out, "  domain           {}", i.portal.domain)?;
            writeln!(out, "  status           {}", i.status.as_str())?;
            writeln!(out, "  client endpoint  {}", i.portal.client_endpoint)?;
            writeln!(out, "  auth server      {}", i.portal.server_endpoint)?;
            writeln!(out, "  installed        {}", timestamp(i.installed_at))?;
            writeln!(out, "  updated          {}", timestamp(i.updated_at))?;
            writeln!(out, "  token expires    {}", timestamp(i.portal.expires_at))?;
            let refresh = if has_refresh_token(i) { "held" } else { "none" };
            writeln!(out, "  refresh token    {refresh}")?;
            let jobs: Vec<String> = JobState::ALL
                .iter()
                .filter(|state| counts.get(**state) > 0)
                .map(|state| format!("{} {}", state.as_str(), counts.get(*state)))
                .collect();
            let jobs = if jobs.is_empty() { "none".to_owned() } else { jobs.join(", ") };
            writeln!(out, "  jobs             {jobs}")?;
        }
        PortalsCommand::Remove { member_id } => {
            let stopped = store
                .remove_installation(&member_id, now_ms())
                .await?
                .with_context(|| unknown(&member_id))?;
            writeln!(
                out,
                "portal {member_id} removed: its calls are refused and its tokens forgotten; \
                 {stopped} unfinished job(s) stopped as dead. Its jobs are kept: \
                 b24act jobs list --portal {member_id}"
            )?;
        }
    }
    Ok(())
}

async fn find(store: &Store, member_id: &str) -> anyhow::Result<Installation> {
    store.installation(member_id).await?.with_context(|| unknown(member_id))
}

fn unknown(member_id: &str) -> String {
    format!("no portal `{member_id}` in the store (b24act portals list shows them all)")
}

/// A removed portal keeps an empty access token and no refresh token.
fn has_refresh_token(installation: &Installation) -> bool {
    installation.portal.refresh_token.as_deref().is_some_and(|token| !token.is_empty())
}

fn summary_json(installation: &Installation) -> Value {
    json!({
        "member_id": installation.portal.member_id,
        "domain": installation.portal.domain,
        "status": installation.status.as_str(),
        "installed_at": installation.installed_at,
        "updated_at": installation.updated_at,
    })
}

fn counts_json(counts: &StateCounts) -> Value {
    JobState::ALL
        .iter()
        .map(|state| (state.as_str().to_owned(), json!(counts.get(*state))))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

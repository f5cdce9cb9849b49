//! `b24act init [DIR]`: a starter configuration, `DIR/b24act.toml` — the documented example
//! (`examples/b24act.toml`, every key explained) with a freshly generated store key and the
//! store next to the file — written only where no file is yet (unless `--force`), and what to
//! edit next.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The file `init` writes into its directory.
pub const FILE_NAME: &str = "b24act.toml";

/// `b24act init`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct InitArgs {
    /// The directory to write b24act.toml into; created when missing.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Replace an existing b24act.toml. Its store.encryption_key is replaced too, so a store
    /// written with the old key can no longer be read with the new file.
    #[arg(long)]
    pub force: bool,
}

/// What the written file says before the example's `[app]` (the example's own header speaks of
/// the example, and of a key it leaves out on purpose); the commands go between the two parts.
const HEADER: [&str; 2] = [
    "\
# b24act configuration, written by `b24act init` from examples/b24act.toml: the reference case
# (docs/design.md §2), a credit check before a shipment on deferred payment. A workflow calls
# `check_credit_limit` with a company and an amount; b24act asks the finance system for the
# company's credit limit and debt and returns whether the amount needs a person's approval.
# Put your own action in its place (from [[actions]] to the end of the file): the README's
# \"Your own action in ten minutes\" shows one.
#
",
    "\
#
# store.encryption_key was generated for this file: keep it secret, and keep it with the store
# (tokens sealed with it cannot be read with another). Placeholders in <angle brackets> are yours
# to fill. Secrets are better kept out of the file: every key can be set from the environment as
# B24ACT__<SECTION>__<KEY>, path segments joined by `__` and list elements by index
# (B24ACT__APP__CLIENT_SECRET, B24ACT__ACTIONS__0__CONNECTOR__AUTH__BEARER); a value there wins
# over the file.
#
# Durations are written like `500ms`, `30s`, `5m`, `1h 30m`. A commented-out key shows its
# default. Errors name the key: `actions[0].retry.max_wait: …`.

",
];

/// The header's commands for the file at `path`, their comments aligned.
fn header_commands(path: &Path) -> String {
    let path = path.display();
    let commands = [
        (
            format!("b24act dev --config {path}"),
            "try it on the Bitrix24 emulator (--fake NAME: a fake system)",
        ),
        (format!("b24act check-config --config {path}"), "validate; sends nothing"),
        (format!("b24act serve --config {path}"), "for real, once [app] names your app"),
    ];
    let width = commands.iter().map(|(command, _)| command.len()).max().unwrap_or(0);
    commands.iter().map(|(command, what)| format!("#   {command:<width$}   # {what}\n")).collect()
}

/// Writes `DIR/b24act.toml` and says what to edit next.
pub fn run(args: &InitArgs, out: &mut impl Write) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating the directory {}", args.dir.display()))?;
    let path = args.dir.join(FILE_NAME);
    let dir = std::path::absolute(&args.dir)
        .with_context(|| format!("resolving {}", args.dir.display()))?;
    let store = dir.join("b24act.db");
    let text = starter_config(&path, &store, &sandbox::fresh_encryption_key());
    write_config(&path, &text, args.force)?;
    let shown = path.display();
    writeln!(
        out,
        "Wrote {shown}: the documented example, with a fresh store.encryption_key and its store at {}.",
        store.display()
    )?;
    writeln!(out, "Next:")?;
    writeln!(
        out,
        "  1. Put your action in place of the example's ([[actions]] to the end); the README's quick-start shows one."
    )?;
    writeln!(
        out,
        "  2. Try it on the Bitrix24 emulator: b24act dev --config {shown} (--fake onec|finance|telegram|graph for a fake system)."
    )?;
    writeln!(
        out,
        "  3. For a real portal: your app's client_id, client_secret and public_url in [app], then b24act check-config --config {shown} and b24act serve --config {shown}."
    )?;
    Ok(())
}

/// The example's text for the file at `path`: [`HEADER`] with the commands for `path`, then the
/// example from `[app]` on, with the SQLite store at `store` and `key` as the store key.
pub fn starter_config(path: &Path, store: &Path, key: &str) -> String {
    let example = sandbox::EXAMPLE;
    let body = example
        .find("\n[app]\n")
        .map(|at| &example[at + 1..])
        .unwrap_or_else(|| unreachable!("examples/b24act.toml has an [app] table"));
    let store_url = toml::Value::String(format!("sqlite:{}", store.display()));
    let key = toml::Value::String(key.to_owned());
    let body = replace_line(
        body,
        "url = \"sqlite:",
        &format!(
            "# `b24act init` put the store next to this file; in production, e.g.\n\
             # sqlite:/var/lib/b24act/b24act.db (on a disk that is backed up).\n\
             url = {store_url}"
        ),
    );
    let body = replace_line(&body, "encryption_key = ", &format!("encryption_key = {key}"));
    format!("{}{}{}{body}", HEADER[0], header_commands(path), HEADER[1])
}

/// `text` with its one line starting with `prefix` replaced by `with`.
fn replace_line(text: &str, prefix: &str, with: &str) -> String {
    let mut found = 0;
    let lines: Vec<&str> = text
        .lines()
        .map(|line| {
            if line.starts_with(prefix) {
                found += 1;
                with
            } else {
                line
            }
        })
        .collect();
    assert_eq!(found, 1, "examples/b24act.toml has one line starting with `{prefix}`");
    lines.join("\n") + "\n"
}

/// Writes `text` to `path`, readable by its owner only (it holds the store key); refuses to
/// replace a file unless `force`.
fn write_config(path: &Path, text: &str, force: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(0o600);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = match options.open(path) {
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => anyhow::bail!(
            "{} already exists; nothing written. `--force` replaces it, and its \
             store.encryption_key with a new one: a store written with the old key can then no \
             longer be read",
            path.display()
        ),
        opened => opened.with_context(|| format!("creating {}", path.display()))?,
    };
    file.write_all(text.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn starter() -> String {
        let key = sandbox::fresh_encryption_key();
        starter_config(Path::new("my/b24act.toml"), Path::new("/srv/my/b24act.db"), &key)
    }

    #[test]
    fn the_starter_is_the_example_with_a_key_and_a_store_next_to_it_and_it_loads() {
        let text = starter();
        let config = host::config::Config::from_toml(&text, "the starter", std::iter::empty())
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(config.store.url.expose(), "sqlite:/srv/my/b24act.db");
        assert_eq!(config.store.encryption_key.expose().len(), 64);
        assert_eq!(config.actions[0].code, "check_credit_limit");
        assert!(text.contains("#   b24act dev --config my/b24act.toml            # try"), "{text}");
        assert!(!text.contains("examples/b24act.toml   #"), "the example's header is replaced");
    }

    #[test]
    fn an_existing_file_is_kept_unless_forced() {
        let temp = sandbox::TempDir::new("b24act-init").unwrap();
        let dir = temp.path().join("new");
        let args = InitArgs { dir: dir.clone(), force: false };
        run(&args, &mut Vec::new()).unwrap();
        let path = dir.join(FILE_NAME);
        let first = std::fs::read_to_string(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);

        let refused = run(&args, &mut Vec::new()).unwrap_err().to_string();
        assert!(refused.contains("already exists; nothing written"), "{refused}");
        assert!(refused.contains("--force"), "{refused}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), first);

        run(&InitArgs { force: true, ..args }, &mut Vec::new()).unwrap();
        assert_ne!(std::fs::read_to_string(&path).unwrap(), first, "a new key");
    }
}

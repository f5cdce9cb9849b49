//! The README's quick-start, "Your own action in ten minutes", followed as written: its commands
//! and its TOML are read from README.md by their `<!-- quickstart:NAME -->` markers and run in a
//! temp dir (the test's binary standing for `cargo run --release --`). `init` writes the file and
//! will not write it twice; the action replaces the example's; `dev` prints what the README
//! quotes, ports aside; the `curl` line it printed, sent as printed, starts a workflow that
//! closes with the values the README shows, and an unknown article closes with the fallback's;
//! `jobs list` shows both jobs; Ctrl-C stops `dev` with exit code 0.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::process::Foreground;
use crate::support::TempDir;

const README: &str = include_str!("../../../../README.md");
/// What the README's commands run as.
const CARGO_RUN: &str = "cargo run --release -- ";
/// Free ports instead of the configuration's 8080 and 8081, which may be taken on this machine;
/// `dev` then says where the host listens.
const FREE_PORTS: [(&str, &str); 2] =
    [("B24ACT__SERVER__LISTEN", "127.0.0.1:0"), ("B24ACT__CONSOLE__LISTEN", "127.0.0.1:0")];

/// The fenced block after `<!-- quickstart:NAME -->`, without its fences.
fn block(name: &str) -> Vec<&'static str> {
    let marker = format!("<!-- quickstart:{name} -->");
    let mut lines = README.lines().skip_while(|line| *line != marker).skip(1);
    let fence = lines.next().unwrap_or_else(|| panic!("README.md has no {marker}"));
    assert!(fence.starts_with("```"), "{marker} is followed by a fenced block, not {fence:?}");
    lines.take_while(|line| *line != "```").collect()
}

/// The commands of block `name`, each as `b24act`'s arguments.
fn commands(name: &str) -> Vec<Vec<String>> {
    block(name)
        .into_iter()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| {
            let args = line.strip_prefix(CARGO_RUN).unwrap_or_else(|| {
                panic!("a quick-start command starts with `{CARGO_RUN}`: {line:?}")
            });
            assert!(!args.contains(['\'', '"', '\\', '$']), "plain words only: {line:?}");
            args.split_whitespace().map(str::to_owned).collect()
        })
        .collect()
}

/// The one command of block `name`.
fn command(name: &str) -> Vec<String> {
    let mut commands = commands(name);
    assert_eq!(commands.len(), 1, "one command in quickstart:{name}");
    commands.remove(0)
}

/// Runs `b24act ARGS` in `dir` to its end.
fn run(dir: &Path, args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_b24act"))
        .args(args)
        .current_dir(dir)
        .envs(FREE_PORTS)
        .output()
        .expect("run b24act")
}

/// `127.0.0.1:PORT` for every loopback address, so lines compare whatever the ports.
fn without_ports(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find("127.0.0.1:") {
        let (before, after) = rest.split_at(at + "127.0.0.1:".len());
        out.push_str(before);
        out.push_str("PORT");
        rest = after.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

/// A POSIX shell's words of `line`: split on spaces, single quotes kept together (`'\''` is a
/// quote), as `dev` quotes its `curl` lines.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' => words.extend(word.take()),
            '\'' => {
                let quoted: String = chars.by_ref().take_while(|&c| c != '\'').collect();
                word.get_or_insert_default().push_str(&quoted);
            }
            '\\' => word.get_or_insert_default().extend(chars.next()),
            c => word.get_or_insert_default().push(c),
        }
    }
    words.extend(word);
    words
}

/// The first of `lines` that, trimmed, starts with `start`.
fn line_starting<'a>(lines: &'a [impl AsRef<str>], start: &str) -> &'a str {
    lines
        .iter()
        .map(|line| line.as_ref().trim())
        .find(|line| line.starts_with(start))
        .unwrap_or_else(|| panic!("no line starting with {start:?}"))
}

/// POSTs `body` to the control API's workflows `url`; returns the new workflow's id.
async fn start(http: &reqwest::Client, url: &str, body: &str) -> String {
    let started: Value = http
        .post(url)
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    started["workflow_id"].as_str().expect("the start answers with a workflow_id").to_owned()
}

/// The workflow at `url` once it no longer waits, or after 30 s.
async fn closed(http: &reqwest::Client, url: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state: Value = http.get(url).send().await.unwrap().json().await.unwrap();
        if state["status"] != "Waiting" || Instant::now() >= deadline {
            return state;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_start_runs_as_written_and_the_workflow_closes_with_the_price() {
    let temp = TempDir::new("b24act-quickstart").unwrap();
    let dir = temp.path();

    // 1. init, and init again: the file is kept.
    let init = command("init");
    let first = run(dir, &init);
    let said = String::from_utf8_lossy(&first.stdout);
    assert!(first.status.success(), "{said}{}", String::from_utf8_lossy(&first.stderr));
    assert!(said.starts_with("Wrote myaction/b24act.toml"), "{said}");
    let again = run(dir, &init);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    // 2. The action in place of the example's, as the README says: from `[[actions]]` on.
    let dev = command("dev");
    let config = dev.iter().skip_while(|arg| *arg != "--config").nth(1).expect("--config FILE");
    let path = dir.join(config);
    let mut text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.matches("\n[[actions]]\n").count(), 1, "one example action");
    text.truncate(text.find("\n[[actions]]\n").unwrap() + 1);
    text.push_str(&(block("action").join("\n") + "\n"));
    std::fs::write(&path, text).unwrap();

    // 3. dev, read until it has said all it says before waiting.
    let mut running = Foreground::start(dir, &dev, &FREE_PORTS);
    let printed = running.lines_until("Stop with Ctrl-C", Duration::from_secs(90));
    let normalized: Vec<String> = printed.iter().map(|line| without_ports(line)).collect();
    let quoted: Vec<String> = block("printed").iter().map(|line| without_ports(line)).collect();
    assert!(
        normalized.windows(quoted.len()).any(|window| window == quoted),
        "dev no longer prints what the README quotes:\n{}\n--- the README:\n{}",
        normalized.join("\n"),
        quoted.join("\n")
    );

    // 4. The printed curl line, sent as printed.
    let words = shell_words(line_starting(&printed, "curl -s -XPOST"));
    let [curl, silent, post, url, data, body] = words.as_slice() else {
        panic!("curl -s -XPOST URL -d BODY: {words:?}")
    };
    assert_eq!([curl, silent, post, data], ["curl", "-s", "-XPOST", "-d"]);
    // reqwest is built without a crypto provider; nothing else in this test installs one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let id = start(&http, url, body).await;

    // The workflow at the URL the "the workflow" line gives, as the README asks for it.
    let watch = line_starting(&printed, "the workflow  curl -s ");
    let watch_url = watch.rsplit(' ').next().unwrap();
    let quoted = block("workflow");
    let asked = line_starting(&quoted, "curl -s ");
    assert_eq!(without_ports(asked), format!("curl -s {}", without_ports(watch_url)));
    let state = closed(&http, &watch_url.replace("<workflow_id>", &id)).await;
    assert_eq!(state["status"], "Closed", "{state:#}\n{}", running.stderr());
    let returned = &state["return_values"];
    assert_eq!(returned["price"], "12500.0", "{state:#}");
    assert_eq!(returned["available"], "Y", "{state:#}");
    let shown = format!("\"return_values\":{returned}");
    assert!(quoted.iter().any(|line| line.contains(&shown)), "README shows {shown}");

    // An article 1C does not have: the fallback at once, with the reason in the log.
    let unknown = start(&http, url, &body.replace("SKU-1", "SKU-404")).await;
    let state = closed(&http, &watch_url.replace("<workflow_id>", &unknown)).await;
    assert_eq!(state["status"], "Closed", "{state:#}");
    assert_eq!(state["return_values"], serde_json::json!({"price": "0", "available": "N"}));
    assert!(state["log"][0].as_str().unwrap().contains("SKU-404"), "{state:#}");

    // The job, with the README's command, while dev runs.
    let jobs = run(dir, &command("jobs"));
    let listed = String::from_utf8_lossy(&jobs.stdout);
    assert!(jobs.status.success(), "{listed}{}", String::from_utf8_lossy(&jobs.stderr));
    let rows: Vec<Vec<&str>> = listed
        .lines()
        .filter(|line| line.contains("GET_1C_PRICE"))
        .map(|line| line.split_whitespace().take(3).collect())
        .collect();
    assert_eq!(rows, [["2", "done", "fallback"], ["1", "done", "ok"]], "{listed}");

    // 5. Ctrl-C stops it all.
    running.signal("INT");
    let status = running.exit_status(Duration::from_secs(30));
    assert!(status.success(), "{status}: {}", running.stderr());
    assert!(running.rest().iter().any(|line| line.starts_with("Stopping")));
}

#[test]
fn a_fake_runs_alone_until_sigterm_printing_how_to_reach_it() {
    let temp = TempDir::new("b24act-fake").unwrap();
    let args: Vec<String> =
        ["fake", "1c", "--listen", "127.0.0.1:0"].into_iter().map(str::to_owned).collect();
    let mut fake = Foreground::start(temp.path(), &args, &[]);
    let printed = fake.lines_until("Press Ctrl-C", Duration::from_secs(30));
    assert!(printed[0].starts_with("fake 1C at http://127.0.0.1:"), "{printed:?}");
    let settings: toml::Table = printed[2..printed.len() - 1].join("\n").parse().unwrap();
    assert_eq!(settings["kind"].as_str(), Some("onec"));
    assert_eq!(settings["username"].as_str(), Some(fakes::onec::USER));
    assert!(printed[0].contains(settings["url"].as_str().unwrap()), "{printed:?}");
    fake.signal("TERM");
    assert!(fake.exit_status(Duration::from_secs(10)).success());
}

#[test]
fn shell_words_undo_devs_quoting() {
    assert_eq!(
        shell_words(r#"curl -s -d '{"name":"O'\''Brien"}'"#),
        ["curl", "-s", r#"-d"#, r#"{"name":"O'Brien"}"#]
    );
}

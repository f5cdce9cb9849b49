//! A `b24act` command running in the foreground as a person runs it in a terminal: its output
//! read line by line as it comes, signals sent as Ctrl-C and a service manager send them, its
//! stderr kept in a file for the failure message; killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub struct Foreground {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: PathBuf,
}

impl Foreground {
    /// Starts `b24act ARGS` in `dir` with `env` added; its stderr goes to `dir/<first arg>.err`.
    pub fn start(dir: &Path, args: &[String], env: &[(&str, &str)]) -> Foreground {
        let stderr = dir.join(format!("{}.err", args.first().map_or("b24act", String::as_str)));
        let mut child = Command::new(env!("CARGO_BIN_EXE_b24act"))
            .args(args)
            .current_dir(dir)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("create the stderr file"))
            .spawn()
            .expect("spawn b24act");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Foreground { child, lines, stderr }
    }

    /// The lines printed up to and including the first that starts with `last` (leading spaces
    /// aside), waiting at most `within` in all.
    pub fn lines_until(&mut self, last: &str, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = line.trim_start().starts_with(last);
                    lines.push(line);
                    if done {
                        return lines;
                    }
                }
                Err(why) => panic!(
                    "no line starting with {last:?} ({why:?}); printed:\n{}\nstderr:\n{}",
                    lines.join("\n"),
                    self.stderr()
                ),
            }
        }
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Sends `signal` (`INT`: Ctrl-C, `TERM`: a service manager).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal}");
    }

    /// Waits at most `within` for the process to exit.
    pub fn exit_status(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running after {within:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every line printed since the last read, up to the end of the output (call it once the
    /// process has exited).
    pub fn rest(&mut self) -> Vec<String> {
        self.lines.iter().collect()
    }
}

impl Drop for Foreground {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

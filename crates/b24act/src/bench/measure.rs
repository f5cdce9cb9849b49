//! Reading the machine and the processes from `/proc` (memory, CPU time), and latency
//! percentiles.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

/// Linux reports CPU times in `/proc/<pid>/stat` in clock ticks of `USER_HZ`, which the kernel
/// ABI fixes at 100 on every architecture Rust's Linux targets use (`sysconf(_SC_CLK_TCK)`).
const TICKS_PER_SECOND: f64 = 100.0;

/// What the benchmark ran on.
#[derive(Debug, Clone)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
    pub memory_bytes: u64,
    pub kernel: String,
}

impl Machine {
    /// Reads what `/proc` says; a field it cannot read is left "unknown" (or 0).
    pub fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map_or_else(|| "unknown".to_owned(), |(_, model)| model.trim().to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_bytes = kib_field(&meminfo, "MemTotal:").unwrap_or(0) * 1024;
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".to_owned(), |k| k.trim().to_owned());
        Machine {
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            cpu_model,
            memory_bytes,
            kernel,
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "{} cores ({}), {:.1} GiB RAM, Linux {}",
            self.cores,
            self.cpu_model,
            self.memory_bytes as f64 / f64::from(1u32 << 30),
            self.kernel
        )
    }

    pub fn to_json(&self) -> Value {
        json!({
            "cores": self.cores,
            "cpu_model": self.cpu_model,
            "memory_bytes": self.memory_bytes,
            "kernel": self.kernel,
        })
    }
}

/// A process's resident memory now and at its peak.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    pub rss_bytes: u64,
    pub peak_bytes: u64,
}

/// `VmRSS` and `VmHWM` of a process.
pub fn memory(pid: u32) -> anyhow::Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let rss = kib_field(&status, "VmRSS:").with_context(|| format!("no VmRSS in {path}"))?;
    let peak = kib_field(&status, "VmHWM:").with_context(|| format!("no VmHWM in {path}"))?;
    Ok(Memory { rss_bytes: rss * 1024, peak_bytes: peak * 1024 })
}

fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// CPU time (user + system) a process has used, in seconds; `None` is this process.
pub fn cpu_seconds(pid: Option<u32>) -> anyhow::Result<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).context("malformed stat")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of stat(5) (utime, stime) are the 12th and 13th after the name.
    let ticks = |index: usize| -> anyhow::Result<f64> {
        let field = fields.get(index).with_context(|| format!("{path}: too few fields"))?;
        Ok(field.parse::<u64>().with_context(|| format!("{path}: field {index}"))? as f64)
    };
    Ok((ticks(11)? + ticks(12)?) / TICKS_PER_SECOND)
}

/// CPU used by the servers (all nodes together) and by this process (the load generator, the
/// emulator and the API) over an interval, in cores (1.0 = one core busy the whole time).
#[derive(Debug, Clone, Copy)]
pub struct CpuShare {
    pub server_cores: f64,
    pub bench_cores: f64,
}

/// Starts measuring [`CpuShare`] now.
pub struct CpuMeter {
    server_pids: Vec<u32>,
    started: Instant,
    servers_at_start: f64,
    bench_at_start: f64,
}

impl CpuMeter {
    pub fn start(server_pids: Vec<u32>) -> anyhow::Result<CpuMeter> {
        Ok(CpuMeter {
            servers_at_start: servers_cpu_seconds(&server_pids)?,
            server_pids,
            started: Instant::now(),
            bench_at_start: cpu_seconds(None)?,
        })
    }

    pub fn stop(&self) -> anyhow::Result<CpuShare> {
        let wall = self.started.elapsed().as_secs_f64().max(f64::EPSILON);
        Ok(CpuShare {
            server_cores: (servers_cpu_seconds(&self.server_pids)? - self.servers_at_start) / wall,
            bench_cores: (cpu_seconds(None)? - self.bench_at_start) / wall,
        })
    }
}

/// The CPU time of the processes `pids`, summed, in seconds.
fn servers_cpu_seconds(pids: &[u32]) -> anyhow::Result<f64> {
    pids.iter().map(|&pid| cpu_seconds(Some(pid))).sum()
}

/// Latencies, sorted once, read as percentiles in milliseconds.
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    sorted_micros: Vec<u64>,
}

impl Latencies {
    pub fn new(mut micros: Vec<u64>) -> Latencies {
        micros.sort_unstable();
        Latencies { sorted_micros: micros }
    }

    pub fn from_durations(durations: impl IntoIterator<Item = Duration>) -> Latencies {
        Latencies::new(durations.into_iter().map(micros).collect())
    }

    pub fn len(&self) -> usize {
        self.sorted_micros.len()
    }

    /// The `q` quantile (0 to 1, nearest rank) in ms; 0 when empty.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        nearest_rank(&self.sorted_micros, q).map_or(0.0, |m| m as f64 / 1000.0)
    }

    pub fn max_ms(&self) -> f64 {
        self.sorted_micros.last().map_or(0.0, |m| *m as f64 / 1000.0)
    }
}

/// The `q` quantile (0 to 1) of `sorted` by nearest rank: the smallest sample with at least `q`
/// of the samples at or below it; `None` when empty.
pub(crate) fn nearest_rank<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied()
}

/// A duration in whole microseconds, saturating.
pub fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Bytes as decimal megabytes (10^6), the unit of design.md's memory target.
pub fn megabytes(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let l = Latencies::new((1..=100).map(|i| i * 1000).collect());
        assert_eq!(l.quantile_ms(0.5), 50.0);
        assert_eq!(l.quantile_ms(0.99), 99.0);
        assert_eq!(l.max_ms(), 100.0);
        assert_eq!(Latencies::default().quantile_ms(0.5), 0.0);
    }

    #[test]
    fn this_process_is_readable() {
        assert!(memory(std::process::id()).unwrap().rss_bytes > 0);
        assert!(cpu_seconds(None).unwrap() >= 0.0);
    }
}

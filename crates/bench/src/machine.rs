//! The machine a run was on: CPU, kernel, memory, the kernel limits that decide how many
//! connections and threads fit, the load average, and the peers' versions. RESULTS.md
//! prints it beside the numbers, since numbers without their machine mean little.

use std::fs;
use std::process::Command;

use serde::{Deserialize, Serialize};

/// What the machine is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// CPUs online.
    pub cpus: usize,
    /// `uname -srvmo`.
    pub uname: String,
    /// MemTotal, KiB.
    pub mem_total_kib: u64,
    /// Kernel and process limits, as `name = value`.
    pub limits: Vec<(String, String)>,
    /// The 1-minute load average when the run started and ended.
    pub loadavg_start: Option<f64>,
    /// See `loadavg_start`.
    pub loadavg_end: Option<f64>,
    /// `bench/baselines/run.sh versions`, one line each.
    pub versions: Vec<String>,
    /// Whether taskset was there (pinning).
    pub taskset: bool,
    /// Kernel settings the bench changed for the run (restored after).
    #[serde(default)]
    pub raised: Vec<String>,
}

/// CPUs online on the machine (not this process's affinity, which the bench changes).
pub fn cpus() -> usize {
    fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| parse_cpu_list(s.trim()))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Counts a CPU list such as `0-3,6`.
pub(crate) fn parse_cpu_list(list: &str) -> Option<usize> {
    let mut n = 0;
    for part in list.split(',') {
        n += match part.split_once('-') {
            Some((a, b)) => b.parse::<usize>().ok()?.checked_sub(a.parse::<usize>().ok()?)? + 1,
            None => {
                part.parse::<usize>().ok()?;
                1
            }
        };
    }
    (n > 0).then_some(n)
}


fn read(path: &str) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Machine {
    /// Describes this machine now; `run_sh` gives the peers' versions.
    pub fn describe(run_sh: Option<&std::path::Path>, taskset: bool) -> Machine {
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "?".into());
        let mem_total_kib = read("/proc/meminfo")
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0);
        let mut limits = vec![("open files per process (ulimit -n, hard)".to_string(), nofile_hard())];
        for (name, path) in [
            ("fs.file-max", "/proc/sys/fs/file-max"),
            ("kernel.pid_max", "/proc/sys/kernel/pid_max"),
            ("kernel.threads-max", "/proc/sys/kernel/threads-max"),
            ("vm.max_map_count", "/proc/sys/vm/max_map_count"),
            ("net.core.somaxconn", "/proc/sys/net/core/somaxconn"),
            ("net.ipv4.ip_local_port_range", "/proc/sys/net/ipv4/ip_local_port_range"),
            ("net.ipv4.tcp_max_syn_backlog", "/proc/sys/net/ipv4/tcp_max_syn_backlog"),
        ] {
            limits.push((
                name.to_string(),
                read(path).split_whitespace().collect::<Vec<_>>().join(" "),
            ));
        }
        let versions = run_sh
            .and_then(|p| output(&p.display().to_string(), &["versions"]))
            .map(|s| s.lines().map(str::to_string).collect())
            .unwrap_or_default();
        Machine {
            cpu_model,
            cpus: cpus(),
            uname: output("uname", &["-srvmo"]).unwrap_or_else(|| "?".into()),
            mem_total_kib,
            limits,
            loadavg_start: crate::procfs::loadavg(),
            loadavg_end: None,
            versions,
            taskset,
            raised: Vec::new(),
        }
    }
}

/// The hard open-files limit, as text.
fn nofile_hard() -> String {
    let limits = read("/proc/self/limits");
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4))
        .unwrap_or("?")
        .to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_lists() {
        assert_eq!(super::parse_cpu_list("0-1"), Some(2));
        assert_eq!(super::parse_cpu_list("0"), Some(1));
        assert_eq!(super::parse_cpu_list("0-3,6,8-9"), Some(7));
        assert_eq!(super::parse_cpu_list("x"), None);
    }
}

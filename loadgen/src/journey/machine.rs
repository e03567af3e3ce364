//! The machine a run measured on: cores, memory, CPU model, kernel and the versions of
//! PostgreSQL, nginx and loadgen. Recorded in every journey report and baseline run so that a
//! figure always says where it came from.

use serde::{Deserialize, Serialize};
use stack::Cluster;

/// Cores, memory and versions of the machine a journey ran on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Machine {
    pub cores: usize,
    pub memory_gib: f64,
    pub cpu_model: String,
    pub kernel: String,
    pub postgres: String,
    pub nginx: String,
    pub loadgen: String,
}

impl Machine {
    /// Read this machine; the PostgreSQL version comes from `cluster`'s binaries when given.
    pub fn detect(cluster: Option<&Cluster>) -> Machine {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string();
        let nginx = stack::nginx::find_binary()
            .ok()
            .and_then(|b| std::process::Command::new(b).arg("-v").output().ok())
            .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
            .unwrap_or_else(|| "not found".into());
        Machine {
            cores: stack::process::cores(),
            memory_gib: memory_gib(&meminfo),
            cpu_model: cpu_model(&cpuinfo),
            kernel,
            postgres: cluster.map(|c| c.binaries().version()).unwrap_or_default(),
            nginx,
            loadgen: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// `MemTotal` of `/proc/meminfo` in GiB, to one decimal; 0 when absent.
fn memory_gib(meminfo: &str) -> f64 {
    let mem_kb: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    (mem_kb / 1024.0 / 1024.0 * 10.0).round() / 10.0
}

/// The first `model name` of `/proc/cpuinfo`; empty when absent.
fn cpu_model(cpuinfo: &str) -> String {
    cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_and_cpu_model_are_read_from_proc_text() {
        let meminfo = "MemTotal:       24641336 kB\nMemFree:         1000 kB\n";
        assert_eq!(memory_gib(meminfo), 23.5);
        assert_eq!(memory_gib(""), 0.0);
        let cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu\n";
        assert_eq!(cpu_model(cpuinfo), "AMD EPYC");
        assert_eq!(cpu_model(""), "");
    }
}

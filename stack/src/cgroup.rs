//! CPU and memory budgets, so that one machine can stand in for several hosts of given sizes.
//!
//! A [`Budget`] becomes a Linux control group (v2 unified, or v1 `cpu`/`cpuacct`/`memory`
//! hierarchies) holding a process tree. Where no cgroup can be written (no permission, not
//! Linux) [`ControlGroup::create`] says why and the caller runs that component "unbudgeted".
//! CPU use is measured from /proc either way ([`process_tree_cpu`]), so budgeted and unbudgeted
//! components are compared on the same footing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The size of a stand-in host.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Budget {
    /// CPU quota in cores (0.25 = a quarter of one core); `None` = unlimited.
    pub cpus: Option<f64>,
    /// Memory limit in MiB (page cache included, as on a real host); `None` = unlimited.
    pub memory_mb: Option<u64>,
}

#[derive(Debug, Clone)]
enum Layout {
    V2(PathBuf),
    V1 {
        cpu: PathBuf,
        cpuacct: Option<PathBuf>,
        memory: Option<PathBuf>,
    },
}

/// A control group this process created; removed on drop (its processes must be gone by then).
#[derive(Debug)]
pub struct ControlGroup {
    layout: Layout,
}

/// The CFS bandwidth period for a budget of `cpus` cores, and the quota in it. The kernel's
/// default period of 100 ms lets a group of 1/16 core run 6 ms and then stall 94 ms: every query
/// caught in the stall waits the whole gap, so a small budget measures stalls, not a small host.
/// A short period makes the budget smooth (a 1/4 core runs 2.5 ms in every 10 ms). The quota
/// cannot go below the kernel's minimum of 1 ms, so budgets under 1/10 core get a period of
/// 1 ms / cpus (16 ms for 1/16 core) instead.
pub fn quota_and_period_us(cpus: f64) -> (u64, u64) {
    const PERIOD_US: f64 = 10_000.0;
    const MIN_QUOTA_US: f64 = 1_000.0;
    const MAX_PERIOD_US: f64 = 1_000_000.0;
    let period = (MIN_QUOTA_US / cpus.max(f64::MIN_POSITIVE))
        .clamp(PERIOD_US, MAX_PERIOD_US)
        .round();
    let quota = (cpus * period).round().max(MIN_QUOTA_US);
    (quota as u64, period as u64)
}

/// The period written when the group has no CPU limit.
const UNLIMITED_PERIOD_US: u64 = 100_000;

impl ControlGroup {
    /// Create a group named `name` with this budget. `Err` carries a one-line reason why budgets
    /// cannot be enforced here.
    pub fn create(name: &str, budget: &Budget) -> Result<ControlGroup, String> {
        let name = format!("related-{name}-{}", std::process::id());
        let root = Path::new("/sys/fs/cgroup");
        let group = if root.join("cgroup.controllers").exists() {
            // Pure v2: controllers must be enabled for children of the root.
            let _ = std::fs::write(root.join("cgroup.subtree_control"), "+cpu +memory");
            let dir = root.join(&name);
            mkdir(&dir)?;
            ControlGroup {
                layout: Layout::V2(dir),
            }
        } else if root.join("cpu/cpu.cfs_quota_us").exists() {
            let cpu = root.join("cpu").join(&name);
            mkdir(&cpu)?;
            let other = |controller: &str| {
                let dir = root.join(controller).join(&name);
                (root.join(controller).is_dir()
                    && !same_dir(&root.join(controller), &root.join("cpu")))
                .then(|| mkdir(&dir).ok().map(|_| dir))
                .flatten()
            };
            ControlGroup {
                layout: Layout::V1 {
                    cpuacct: other("cpuacct"),
                    memory: other("memory"),
                    cpu,
                },
            }
        } else {
            return Err("no writable cgroup hierarchy under /sys/fs/cgroup".into());
        };
        group.set_budget(budget)?;
        Ok(group)
    }

    /// Change the limits of a running group (the journey's "bigger database" stage).
    pub fn set_budget(&self, budget: &Budget) -> Result<(), String> {
        let quota = budget.cpus.map(quota_and_period_us);
        match &self.layout {
            Layout::V2(dir) => {
                let cpu_max = match quota {
                    Some((q, period)) => format!("{q} {period}"),
                    None => format!("max {UNLIMITED_PERIOD_US}"),
                };
                write(&dir.join("cpu.max"), &cpu_max)?;
                let mem = budget
                    .memory_mb
                    .map(|m| (m * 1024 * 1024).to_string())
                    .unwrap_or_else(|| "max".into());
                write(&dir.join("memory.max"), &mem)?;
            }
            Layout::V1 { cpu, memory, .. } => {
                // The quota goes to -1 first: a period below the current quota is refused.
                write(&cpu.join("cpu.cfs_quota_us"), "-1")?;
                let (q, period) = match quota {
                    Some((q, period)) => (q as i64, period),
                    None => (-1, UNLIMITED_PERIOD_US),
                };
                write(&cpu.join("cpu.cfs_period_us"), &period.to_string())?;
                write(&cpu.join("cpu.cfs_quota_us"), &q.to_string())?;
                if let Some(mem) = memory {
                    let limit = budget
                        .memory_mb
                        .map(|m| (m * 1024 * 1024) as i64)
                        .unwrap_or(-1);
                    write(&mem.join("memory.limit_in_bytes"), &limit.to_string())?;
                } else if budget.memory_mb.is_some() {
                    return Err("no writable memory cgroup".into());
                }
            }
        }
        Ok(())
    }

    /// Move a process and all its current descendants into the group; children forked later
    /// (PostgreSQL backends, say) start inside it.
    pub fn add_tree(&self, pid: i32) -> Result<(), String> {
        for p in std::iter::once(pid).chain(descendants(pid)) {
            self.add(p)?;
        }
        Ok(())
    }

    fn add(&self, pid: i32) -> Result<(), String> {
        let dirs: Vec<&PathBuf> = match &self.layout {
            Layout::V2(dir) => vec![dir],
            Layout::V1 {
                cpu,
                cpuacct,
                memory,
            } => std::iter::once(cpu)
                .chain(cpuacct.iter())
                .chain(memory.iter())
                .collect(),
        };
        for dir in dirs {
            match std::fs::write(dir.join("cgroup.procs"), pid.to_string()) {
                Ok(()) => {}
                // The process exited in the meantime: nothing to budget.
                Err(e) if e.raw_os_error() == Some(libc_esrch()) => {}
                Err(e) => return Err(format!("add pid {pid} to {}: {e}", dir.display())),
            }
        }
        Ok(())
    }

    /// CPU time used by everything that ran in the group, as the kernel accounts it.
    pub fn cpu_usage(&self) -> Option<Duration> {
        match &self.layout {
            Layout::V2(dir) => {
                let stat = std::fs::read_to_string(dir.join("cpu.stat")).ok()?;
                let usec = stat
                    .lines()
                    .find_map(|l| l.strip_prefix("usage_usec "))?
                    .trim()
                    .parse()
                    .ok()?;
                Some(Duration::from_micros(usec))
            }
            Layout::V1 { cpu, cpuacct, .. } => {
                let dir = cpuacct.as_ref().unwrap_or(cpu);
                let ns = std::fs::read_to_string(dir.join("cpuacct.usage"))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()?;
                Some(Duration::from_nanos(ns))
            }
        }
    }
}

/// Memory a group holds: all of it, and the page cache within it (the data files the group's
/// processes read count against its limit as they are cached).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryUse {
    pub bytes: u64,
    pub page_cache_bytes: u64,
}

impl ControlGroup {
    /// What the group holds now; `None` where no memory controller is attached.
    pub fn memory_use(&self) -> Option<MemoryUse> {
        let (dir, usage_file, cache_key) = match &self.layout {
            Layout::V2(dir) => (dir, "memory.current", "file "),
            Layout::V1 { memory, .. } => (memory.as_ref()?, "memory.usage_in_bytes", "cache "),
        };
        let bytes = std::fs::read_to_string(dir.join(usage_file))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let page_cache_bytes = std::fs::read_to_string(dir.join("memory.stat"))
            .ok()
            .and_then(|stat| {
                stat.lines()
                    .find_map(|l| l.strip_prefix(cache_key))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0);
        Some(MemoryUse {
            bytes,
            page_cache_bytes,
        })
    }
}

impl Drop for ControlGroup {
    fn drop(&mut self) {
        let dirs: Vec<PathBuf> = match &self.layout {
            Layout::V2(dir) => vec![dir.clone()],
            Layout::V1 {
                cpu,
                cpuacct,
                memory,
            } => std::iter::once(cpu.clone())
                .chain(cpuacct.clone())
                .chain(memory.clone())
                .collect(),
        };
        for dir in dirs {
            // Anything still inside goes back to the parent so the group can be removed.
            if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                let parent = dir.parent().map(|p| p.join("cgroup.procs"));
                for pid in procs.lines() {
                    if let Some(parent) = &parent {
                        let _ = std::fs::write(parent, pid);
                    }
                }
            }
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

fn libc_esrch() -> i32 {
    nix::errno::Errno::ESRCH as i32
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn mkdir(dir: &Path) -> Result<(), String> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("cannot create cgroup {}: {e}", dir.display())),
    }
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Every live descendant of `pid`, from /proc.
pub fn descendants(pid: i32) -> Vec<i32> {
    let parents: Vec<(i32, i32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p: i32 = e.file_name().to_str()?.parse().ok()?;
            let stat = read_stat(p)?;
            Some((p, stat.ppid))
        })
        .collect();
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(child, ppid) in &parents {
            if ppid == parent {
                found.push(child);
                frontier.push(child);
            }
        }
    }
    found
}

struct ProcStat {
    ppid: i32,
    /// utime + stime of the process itself, in clock ticks.
    own_ticks: u64,
    /// cutime + cstime: exited children that it waited for (PostgreSQL backends, say).
    children_ticks: u64,
}

fn read_stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; fields resume after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    Some(ProcStat {
        ppid: fields.get(1)?.parse().ok()?,
        own_ticks: num(11)? + num(12)?,
        children_ticks: num(13)? + num(14)?,
    })
}

/// CPU time used so far by a process, its live descendants, and the descendants that already
/// exited and were waited for. Differences of two readings give the CPU a component used.
pub fn process_tree_cpu(pid: i32) -> Duration {
    let mut ticks = 0u64;
    if let Some(root) = read_stat(pid) {
        ticks += root.own_ticks + root.children_ticks;
    }
    for child in descendants(pid) {
        if let Some(stat) = read_stat(child) {
            ticks += stat.own_ticks + stat.children_ticks;
        }
    }
    ticks_to_duration(ticks)
}

/// Bytes a process and its live descendants have caused to be read from storage so far
/// (`read_bytes` of /proc/PID/io: block-device reads, not page-cache hits). Backends that exit
/// take their count with them, so differences are meaningful while the same processes live (a
/// stage's pooled connections).
pub fn process_tree_read_bytes(pid: i32) -> u64 {
    std::iter::once(pid)
        .chain(descendants(pid))
        .filter_map(|p| {
            let io = std::fs::read_to_string(format!("/proc/{p}/io")).ok()?;
            io.lines()
                .find_map(|l| l.strip_prefix("read_bytes:"))?
                .trim()
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// CPU time used so far by one process alone (all its threads, none of its children).
pub fn process_cpu(pid: i32) -> Duration {
    ticks_to_duration(read_stat(pid).map(|s| s.own_ticks).unwrap_or(0))
}

/// Busy CPU time of the whole machine so far (all cores), from /proc/stat.
pub fn machine_busy_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return Duration::ZERO;
    };
    // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
    let busy: u64 = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .filter_map(|(_, f)| f.parse::<u64>().ok())
        .sum();
    ticks_to_duration(busy)
}

fn ticks_to_duration(ticks: u64) -> Duration {
    let per_sec = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    Duration::from_secs_f64(ticks as f64 / per_sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_budgets_get_short_periods_and_tiny_ones_the_minimum_quota() {
        assert_eq!(quota_and_period_us(0.25), (2_500, 10_000));
        assert_eq!(quota_and_period_us(1.0), (10_000, 10_000));
        assert_eq!(quota_and_period_us(2.5), (25_000, 10_000));
        assert_eq!(quota_and_period_us(0.0625), (1_000, 16_000));
        assert_eq!(quota_and_period_us(0.001), (1_000, 1_000_000));
    }
}

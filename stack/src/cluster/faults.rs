//! Faults on one server of a running topology, for drills and tests: finding a node by its
//! name, killing its postmaster with SIGKILL as a crashed host would, and freezing it with
//! SIGSTOP (every process of the server, as a hung host freezes them all) until SIGCONT.
//! Graceful stop and start are [`Cluster::stop_node`] and [`Cluster::start_node`].

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::Cluster;
use crate::{Result, StackError};

impl Cluster {
    /// The index of the node called `name` (`primary`, `replica1`, ...), or an error listing
    /// the names there are.
    pub fn node_named(&self, name: &str) -> Result<usize> {
        self.state
            .nodes
            .iter()
            .position(|n| n.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self.state.nodes.iter().map(|n| n.name.as_str()).collect();
                StackError::Other(format!(
                    "no server called `{name}` in {}; its servers are: {}",
                    self.dir.display(),
                    names.join(", ")
                ))
            })
    }

    /// `kill -9` of the node's postmaster: no shutdown checkpoint, no goodbye to clients. Its
    /// backends notice the postmaster is gone and exit on their own. Returns the killed PID.
    pub fn crash_node(&self, node: usize) -> Result<i32> {
        let pid = self.running_pid(node)?;
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        Ok(pid)
    }

    /// Freeze every process of the node (SIGSTOP): connections stay open and nothing answers,
    /// as on a host that hangs. Returns how many processes were stopped.
    pub fn pause_node(&self, node: usize) -> Result<usize> {
        self.signal_server(node, Signal::SIGSTOP)
    }

    /// Let a paused node run again (SIGCONT to every process of it).
    pub fn resume_node(&self, node: usize) -> Result<usize> {
        self.signal_server(node, Signal::SIGCONT)
    }

    fn running_pid(&self, node: usize) -> Result<i32> {
        self.pid(node).ok_or_else(|| {
            StackError::Other(format!("{} is not running", self.state.nodes[node].name))
        })
    }

    fn signal_server(&self, node: usize, signal: Signal) -> Result<usize> {
        let postmaster = self.running_pid(node)?;
        // The postmaster last on SIGSTOP and first on SIGCONT, so it never sees a child it
        // forked after the list was read running while it is itself stopped.
        let mut pids = children_of(postmaster);
        match signal {
            Signal::SIGCONT => pids.insert(0, postmaster),
            _ => pids.push(postmaster),
        }
        for &pid in &pids {
            let _ = kill(Pid::from_raw(pid), signal);
        }
        Ok(pids.len())
    }
}

/// The PIDs whose parent is `parent`, read from `/proc`.
fn children_of(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| parent_of(pid) == Some(parent))
        .collect()
}

fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces; fields after its
    // closing parenthesis are state, then the parent PID.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_a_child_of_its_parent() {
        let me = std::process::id() as i32;
        let parent = nix::unistd::getppid().as_raw();
        assert_eq!(parent_of(me), Some(parent));
        assert!(children_of(parent).contains(&me));
    }
}

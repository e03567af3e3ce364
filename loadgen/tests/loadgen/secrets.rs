//! No password on a command line: while a journey stage runs (PostgreSQL servers, two API
//! instances started as `loadgen api`, nginx, the load), every process's `/proc/<pid>/cmdline`
//! is read again and again, and none holds a password of the topology. Every local user can
//! read those files (`ps`), so a password there is a password given away.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use stack::Cluster;

use crate::test_dir;

/// One load stage behind nginx, long enough to scan it many times.
const STAGE_JOURNEY: &str = r#"
name = "secrets"

[data]
products = 2000
per_product = 16

[defaults]
users = 4
warmup_secs = 1
duration_secs = 5

[[stage]]
name = "2 APIs behind nginx"
replicas = 1
api_instances = 2
nginx = "tuned"
"#;

/// The passwords of a topology: the superuser's and the API role's.
pub fn topology_passwords(cluster: &Cluster) -> Vec<String> {
    let node = cluster.nodes().len() - 1;
    [cluster.primary_url(), cluster.api_url(node)]
        .iter()
        .map(|url| {
            let config: tokio_postgres::Config = url.parse().expect("a valid URL");
            let password = config.get_password().expect("a password in the URL");
            String::from_utf8(password.to_vec()).expect("a text password")
        })
        .collect()
}

/// Every process's command line that can be read now, as `(pid, arguments joined by spaces)`.
fn command_lines() -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            // A process may end between the listing and the read: skip it.
            let raw = std::fs::read(entry.path().join("cmdline")).ok()?;
            let line = String::from_utf8_lossy(&raw).replace('\0', " ");
            Some((pid, line.trim_end().to_string()))
        })
        .collect()
}

/// The parent of process `pid` (field 4 of `/proc/PID/stat`, after the parenthesised name).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The command lines that hold any of `secrets`.
fn leaks(secrets: &[String]) -> Vec<String> {
    command_lines()
        .into_iter()
        .filter(|(_, line)| secrets.iter().any(|s| line.contains(s.as_str())))
        .map(|(pid, line)| format!("pid {pid}: {}", stack::redact_url(&line)))
        .collect()
}

/// The journey's own topology, once its state file can be read (it is written while the
/// primary starts, before the replica is cloned).
fn open_when_written(dir: &Path, journey: &mut Child) -> Option<Cluster> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if let Ok(cluster) = Cluster::open(dir) {
            return Some(cluster);
        }
        if journey.try_wait().unwrap().is_some() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// The scan finds what it looks for: a process started with a marker argument is caught.
#[test]
fn the_scan_sees_every_command_line() {
    let marker = format!("scan-marker-{}", std::process::id());
    // The marker is the shell's $0; two commands keep the shell from exec'ing into sleep.
    let mut sleeper = Command::new("sh")
        .args(["-c", "sleep 30; :", &marker])
        .spawn()
        .unwrap();
    // Until the child has exec'd, its command line is still this test binary's; and the shell
    // forks to run `sleep`, a copy that carries the marker too until it execs. Wait (bounded)
    // for the shell to be running and its child to be `sleep`, then scan.
    let pid = sleeper.id();
    let cmdline_starts = |pid: &str, prefix: &[u8]| {
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.starts_with(prefix))
    };
    let settled = || {
        cmdline_starts(&pid.to_string(), b"sh\0")
            && std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).is_ok_and(
                |kids| {
                    kids.split_whitespace()
                        .any(|kid| cmdline_starts(kid, b"sleep\0"))
                },
            )
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !settled() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let found = leaks(std::slice::from_ref(&marker));
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_eq!(found.len(), 1, "{found:?}");
}

#[test]
fn no_password_on_any_command_line_while_a_journey_stage_runs() {
    let dir = test_dir();
    let file = dir.path().join("secrets.toml");
    std::fs::write(&file, STAGE_JOURNEY).unwrap();
    let stack_dir = dir.path().join("stack");
    let mut journey = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .arg("journey")
        .arg("--file")
        .arg(&file)
        .arg("--out")
        .arg(dir.path().join("results"))
        .arg("--stack-dir")
        .arg(&stack_dir)
        .arg("--quiet")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let cluster = open_when_written(&stack_dir, &mut journey);
    let Some(cluster) = cluster else {
        let out = journey.wait_with_output().unwrap();
        panic!(
            "the journey ended before its topology was written: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let passwords = topology_passwords(&cluster);
    drop(cluster);

    // Scan until the journey ends; count the scans that saw the stage's API instances.
    let mut scans = 0;
    let mut scans_during_the_stage = 0;
    let mut found = std::collections::BTreeSet::new();
    while journey.try_wait().unwrap().is_none() {
        let lines = command_lines();
        scans += 1;
        // This journey's own instances: other tests or runs on the machine may have theirs.
        let api_instances = lines
            .iter()
            .filter(|(pid, l)| {
                l.contains("loadgen api ")
                    && l.contains("--admin-listen")
                    && parent_of(*pid) == Some(journey.id())
            })
            .count();
        if api_instances == 2 {
            scans_during_the_stage += 1;
        }
        found.extend(leaks(&passwords));
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = journey.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        found.is_empty(),
        "passwords on command lines (shown redacted):\n{}",
        found.into_iter().collect::<Vec<_>>().join("\n")
    );
    assert!(
        scans_during_the_stage >= 10,
        "{scans_during_the_stage} of {scans} scans saw the stage's two API instances"
    );
    // Nor in what the journey printed, nor in any file it left: the results, the API
    // instances' logs, nginx's logs.
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for password in &passwords {
        assert!(!printed.contains(password.as_str()), "a password printed");
    }
    let mut files = 0;
    let mut folders = vec![dir.path().join("results")];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                folders.push(path);
                continue;
            }
            files += 1;
            let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
            for password in &passwords {
                assert!(
                    !text.contains(password.as_str()),
                    "a password in {}",
                    path.display()
                );
            }
        }
    }
    assert!(files > 3, "the journey's files were read ({files})");
}

//! Process plumbing shared by the PostgreSQL and nginx parts: which user servers run as, free
//! ports, and stopping a process by PID with a deadline.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::{Gid, Pid, Uid, User};

use crate::{io_err, Result, StackError};

/// The user that server processes run as: this process's own user, or `postgres` when we are
/// root (PostgreSQL refuses to start as root).
#[derive(Debug, Clone)]
pub struct ServerUser {
    /// `Some` when we are root and must drop to another user for the servers.
    pub switch_to: Option<(Uid, Gid)>,
}

impl ServerUser {
    pub fn detect() -> Result<Self> {
        if !Uid::effective().is_root() {
            return Ok(Self { switch_to: None });
        }
        let user = User::from_name("postgres")
            .ok()
            .flatten()
            .ok_or(StackError::NoPostgresUser)?;
        Ok(Self {
            switch_to: Some((user.uid, user.gid)),
        })
    }

    /// A command that runs as the server user.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        if let Some((uid, gid)) = self.switch_to {
            // std drops supplementary groups when root sets a uid, so the child holds only these.
            cmd.uid(uid.as_raw()).gid(gid.as_raw());
            cmd.env("HOME", "/tmp");
        }
        cmd
    }

    /// Give a file or directory tree to the server user (no-op when we are not root).
    pub fn own(&self, path: &Path) -> Result<()> {
        let Some((uid, gid)) = self.switch_to else {
            return Ok(());
        };
        chown_tree(path, uid, gid)
    }
}

fn chown_tree(path: &Path, uid: Uid, gid: Gid) -> Result<()> {
    nix::unistd::chown(path, Some(uid), Some(gid))
        .map_err(|e| StackError::Other(format!("chown {}: {e}", path.display())))?;
    if path.is_dir() {
        for entry in std::fs::read_dir(path).map_err(io_err(format!("read {}", path.display())))? {
            let entry = entry.map_err(io_err("read dir entry"))?;
            chown_tree(&entry.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// A TCP port on 127.0.0.1 that was free a moment ago. The OS hands out ephemeral ports in
/// rotation, so two tests asking at once get different ones; a server that still loses the race
/// fails to start and the caller retries with a new port.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io_err("bind 127.0.0.1:0"))?;
    Ok(listener.local_addr().map_err(io_err("local_addr"))?.port())
}

/// Whether `port` on 127.0.0.1 can be bound right now.
pub fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Whether a process with this PID exists (zombies included).
pub fn pid_alive(pid: i32) -> bool {
    pid > 0 && kill(Pid::from_raw(pid), None).is_ok()
}

/// Send `signal`, wait up to `grace` for the process to go, then SIGKILL it.
pub fn stop_pid(pid: i32, signal: Signal, grace: Duration) {
    if !pid_alive(pid) {
        return;
    }
    let _ = kill(Pid::from_raw(pid), signal);
    let deadline = Instant::now() + grace;
    while pid_alive(pid) && Instant::now() < deadline {
        reap(pid);
        std::thread::sleep(Duration::from_millis(20));
    }
    if pid_alive(pid) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        while pid_alive(pid) && Instant::now() < deadline {
            reap(pid);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Collect the exit status of our own child so it does not linger as a zombie.
fn reap(pid: i32) {
    use nix::sys::wait::{waitpid, WaitPidFlag};
    let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
}

/// A command as an error message shows it: the program and its arguments, passwords redacted,
/// and never its environment (where passwords are passed: `Command`'s `Debug` prints it).
pub fn describe_command(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    crate::secret::redact_url(&text)
}

/// Run a command to completion; a non-zero exit becomes an error carrying its output (its
/// command line without passwords, see [`describe_command`]).
pub fn run_checked(cmd: &mut Command) -> Result<String> {
    let display = describe_command(cmd);
    let output = cmd.output().map_err(|e| StackError::Command {
        command: display.clone(),
        detail: e.to_string(),
    })?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(StackError::Command {
            command: display,
            detail: crate::secret::redact_url(&format!(
                "{}: {}{}",
                output.status,
                stderr.trim(),
                stdout.trim()
            )),
        });
    }
    Ok(stdout)
}

/// A random alphanumeric secret (safe to put in SQL literals and connection strings).
pub fn random_secret(len: usize) -> String {
    use rand::{distributions::Alphanumeric, Rng};
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// The machine's logical core count.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// A fresh temporary directory that the server user can reach (when we are root the servers run
/// as `postgres`, and a new temp dir is 0700). Tests and throwaway topologies use it.
pub fn scratch_dir(prefix: &str) -> Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(io_err("create a temporary directory"))?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .map_err(io_err("chmod temporary directory"))?;
    Ok(dir)
}

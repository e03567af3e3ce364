//! One PostgreSQL server: finding the binaries, creating a data directory (initdb or
//! pg_basebackup), starting and stopping it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::process::{run_checked, stop_pid, ServerUser};
use crate::{io_err, Result, StackError};

/// `text` as a postgresql.conf string value: single-quoted, a quote doubled and a backslash
/// escaped (the file's reader takes `\n` and the like as escapes), so that a folder name with a
/// quote can neither end the value early nor add a setting. A line break or other control
/// character, which no setting of ours needs, is refused.
pub fn conf_string(text: &str) -> Result<String> {
    if text.chars().any(char::is_control) {
        return Err(StackError::Other(format!(
            "{text:?} holds a control character, which a postgresql.conf value cannot"
        )));
    }
    Ok(format!(
        "'{}'",
        text.replace('\\', "\\\\").replace('\'', "''")
    ))
}

/// The folder holding initdb, pg_ctl, pg_basebackup and postgres.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    pub bin_dir: PathBuf,
}

impl PgBinaries {
    /// `PG_BIN_DIR`, then `pg_config --bindir`, then the newest `/usr/lib/postgresql/*/bin`
    /// (Debian's client-only pg_config points at /usr/bin, which lacks the server).
    pub fn find() -> Result<Self> {
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Ok(dir) = std::env::var("PG_BIN_DIR") {
            candidates.push(dir.into());
        }
        if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
            if out.status.success() {
                candidates.push(String::from_utf8_lossy(&out.stdout).trim().into());
            }
        }
        let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
                Some((v, e.path().join("bin")))
            })
            .collect();
        versioned.sort();
        candidates.extend(versioned.into_iter().rev().map(|(_, p)| p));
        for brew in [
            "/opt/homebrew/bin",
            "/usr/local/bin",
            "/usr/lib64/pgsql/bin",
        ] {
            candidates.push(brew.into());
        }
        let tried = candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        candidates
            .into_iter()
            .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
            .map(|bin_dir| Self { bin_dir })
            .ok_or(StackError::NoPostgres(format!("looked in {tried}")))
    }

    pub fn tool(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// The server's major version, e.g. "15.8".
    pub fn version(&self) -> String {
        Command::new(self.tool("postgres"))
            .arg("--version")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "unknown".into())
    }
}

/// Where one server lives: `<node_dir>/data` is PGDATA, `<node_dir>` also holds the log and the
/// Unix socket (kept out of /var/run so that clusters never collide).
#[derive(Debug, Clone)]
pub struct ServerDir {
    pub node_dir: PathBuf,
}

impl ServerDir {
    pub fn data(&self) -> PathBuf {
        self.node_dir.join("data")
    }
    pub fn log(&self) -> PathBuf {
        self.node_dir.join("server.log")
    }

    /// The postmaster's PID from its pid file, if it is running.
    pub fn pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.data().join("postmaster.pid")).ok()?;
        let pid = text.lines().next()?.trim().parse().ok()?;
        crate::process::pid_alive(pid).then_some(pid)
    }

    /// The node's folder, closed to everyone but its owner: it holds the Unix socket and the
    /// server log, and other local users have no business with either.
    fn create_private(&self) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&self.node_dir)
            .map_err(io_err(format!("create {}", self.node_dir.display())))?;
        std::fs::set_permissions(&self.node_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err(format!("chmod {}", self.node_dir.display())))
    }

    pub fn initdb(
        &self,
        bins: &PgBinaries,
        user: &ServerUser,
        superuser_password: &str,
    ) -> Result<()> {
        self.create_private()?;
        let pwfile = self.node_dir.join("pwfile");
        std::fs::write(&pwfile, superuser_password).map_err(io_err("write pwfile"))?;
        user.own(&self.node_dir)?;
        let result = run_checked(
            user.command(bins.tool("initdb"))
                .arg("-D")
                .arg(self.data())
                .args(["-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"])
                // A password on the socket too: `peer` would let any process of the server
                // user in as the superuser, and nothing of ours connects through the socket.
                .args(["--auth-local=scram-sha-256", "--auth-host=scram-sha-256"])
                .arg(format!("--pwfile={}", pwfile.display())),
        );
        let _ = std::fs::remove_file(&pwfile);
        result.map(|_| ())
    }

    /// A replica's data directory, streamed from the primary with its own replication slot so
    /// the primary keeps the WAL a slow replica still needs.
    pub fn basebackup(
        &self,
        bins: &PgBinaries,
        user: &ServerUser,
        primary_port: u16,
        superuser_password: &str,
        slot: &str,
    ) -> Result<()> {
        self.create_private()?;
        user.own(&self.node_dir)?;
        // The password through the environment: a command line is readable by every local
        // user. `-R` writes it into the replica's primary_conninfo (in its private data folder).
        let conninfo =
            format!("host=127.0.0.1 port={primary_port} user=postgres application_name={slot}");
        run_checked(
            user.command(bins.tool("pg_basebackup"))
                .arg("-D")
                .arg(self.data())
                .args(["-d", &conninfo, "-R", "-X", "stream", "-c", "fast"])
                .args(["-C", "-S", slot, "--no-sync"])
                .env("PGPASSWORD", superuser_password),
        )?;
        Ok(())
    }

    /// Append settings to postgresql.conf; later lines win, so a replica overrides what it
    /// copied from the primary.
    pub fn append_conf(&self, lines: &[(String, String)]) -> Result<()> {
        use std::io::Write;
        let path = self.data().join("postgresql.conf");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_err(format!("open {}", path.display())))?;
        writeln!(file, "\n# written by the stack crate").map_err(io_err("write conf"))?;
        for (key, value) in lines {
            writeln!(file, "{key} = {value}").map_err(io_err("write conf"))?;
        }
        Ok(())
    }

    /// Start the server and wait until it accepts connections.
    pub fn start(&self, bins: &PgBinaries, user: &ServerUser) -> Result<i32> {
        run_checked(
            user.command(bins.tool("pg_ctl"))
                .arg("-D")
                .arg(self.data())
                .arg("-l")
                .arg(self.log())
                .args(["-w", "-t", "120", "start"]),
        )
        .map_err(|e| self.with_log_tail(e))?;
        self.pid().ok_or_else(|| {
            self.with_log_tail(StackError::Other(
                "server started but wrote no pid file".into(),
            ))
        })
    }

    /// Fast shutdown (SIGINT: abort transactions, checkpoint, exit), SIGKILL after `grace`.
    pub fn stop(&self, grace: Duration) {
        if let Some(pid) = self.pid() {
            stop_pid(pid, Signal::SIGINT, grace);
        }
    }

    /// Immediate shutdown, as if the host died.
    pub fn kill(&self) {
        if let Some(pid) = self.pid() {
            stop_pid(pid, Signal::SIGQUIT, Duration::from_secs(5));
        }
    }

    fn with_log_tail(&self, err: StackError) -> StackError {
        let tail = std::fs::read_to_string(self.log())
            .map(|log| {
                let lines: Vec<&str> = log.lines().collect();
                lines[lines.len().saturating_sub(8)..].join("\n")
            })
            .unwrap_or_default();
        StackError::Other(format!(
            "{err}\nlast lines of {}:\n{tail}",
            self.log().display()
        ))
    }

    pub fn log_mentions_port_in_use(&self) -> bool {
        std::fs::read_to_string(self.log())
            .map(|l| l.contains("Address already in use"))
            .unwrap_or(false)
    }
}

/// A path a server may create its socket in (Unix sockets are limited to about 100 bytes).
pub fn socket_dir_ok(path: &Path) -> bool {
    path.as_os_str().len() < 90
}

#[cfg(test)]
mod tests {
    use super::conf_string;

    #[test]
    fn quotes_and_backslashes_stay_inside_the_value() {
        assert_eq!(conf_string("/tmp/a").unwrap(), "'/tmp/a'");
        assert_eq!(conf_string("/tmp/it's\\x").unwrap(), "'/tmp/it''s\\\\x'");
        assert!(conf_string("/tmp/a'\nport = 1").is_err());
    }
}

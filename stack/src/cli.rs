//! The topology flags and status text shared by the commands that start a topology
//! (`loadgen up`, the one owner of up/status/down; the stack crate itself has no binary).

use std::path::PathBuf;

use crate::{Cluster, ClusterSpec, PgSettings};

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Number of streaming read replicas.
    #[arg(long, env = "STACK_REPLICAS", default_value_t = 2)]
    pub replicas: usize,
    /// Primary port (default: a free one).
    #[arg(long, env = "STACK_PORT")]
    pub port: Option<u16>,
    /// shared_buffers of each server, in MiB.
    #[arg(long, env = "STACK_SHARED_BUFFERS_MB", default_value_t = 256)]
    pub shared_buffers_mb: u32,
}

impl UpArgs {
    pub fn spec(&self, dir: PathBuf) -> ClusterSpec {
        ClusterSpec {
            dir,
            replicas: self.replicas,
            settings: PgSettings {
                shared_buffers_mb: self.shared_buffers_mb,
                ..PgSettings::default()
            },
            primary_port: self.port,
        }
    }
}

/// Print a topology's servers and connection URLs, their passwords redacted; the full URLs go
/// into files only their owner can read (0600), whose paths are printed instead: a terminal,
/// a CI log or a shared screen never shows a password.
pub fn print_status(cluster: &Cluster) -> crate::Result<()> {
    print!("{}", status_text(cluster)?);
    Ok(())
}

/// What [`print_status`] prints (after writing the connection files).
pub fn status_text(cluster: &Cluster) -> crate::Result<String> {
    let files = cluster.write_connection_files()?;
    let absolute =
        |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (superuser_url, api_replicas, pgpass) = (
        absolute(&files.superuser_url),
        absolute(&files.api_replicas),
        absolute(&files.pgpass),
    );
    let mut out = String::new();
    for line in cluster.status_lines() {
        out.push_str(&line);
        out.push('\n');
    }
    let redacted = |url: String| crate::secret::redact_url(&url);
    out.push_str(&format!(
        "primary (superuser): {}\n",
        redacted(cluster.primary_url())
    ));
    out.push_str(&format!(
        "replicas (API role): {}\n",
        redacted(cluster.replica_api_urls().join(","))
    ));
    out.push_str("passwords only in these files (mode 0600, for their owner only):\n");
    out.push_str(&format!("  superuser URL: {}\n", superuser_url.display()));
    out.push_str(&format!(
        "  API replica list: {} (api --replica-file {0})\n",
        api_replicas.display()
    ));
    out.push_str(&format!(
        "  libpq password file: {} (PGPASSFILE={0} psql -h 127.0.0.1 -p PORT -U postgres related)\n",
        pgpass.display()
    ));
    Ok(out)
}

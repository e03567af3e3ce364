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

/// Print a topology's servers and connection URLs.
pub fn print_status(cluster: &Cluster) {
    for line in cluster.status_lines() {
        println!("{line}");
    }
    println!("primary (superuser): {}", cluster.primary_url());
    println!(
        "replicas (API role): {}",
        cluster.replica_api_urls().join(",")
    );
}

//! The `stack` command: bring a topology up, show it, take it down.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::{Cluster, ClusterSpec, PgSettings};

#[derive(Debug, Parser)]
#[command(
    name = "stack",
    version,
    about = "Local PostgreSQL primary with streaming read replicas"
)]
pub struct Cli {
    /// Directory holding the topology's state (and its data, where the server user can reach it).
    #[arg(long, env = "STACK_DIR", default_value = ".stack", global = true)]
    pub dir: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create and start a primary and N streaming read replicas, and leave them running.
    Up(UpArgs),
    /// Show each server, its port and whether it runs, and the URLs to connect with.
    Status,
    /// Stop every server this topology started and remove its files.
    Down,
}

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

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up(args) => {
            let mut cluster = Cluster::create(args.spec(cli.dir)).await?;
            cluster.keep();
            print_status(&cluster);
        }
        Command::Status => print_status(&Cluster::open(&cli.dir)?),
        Command::Down => {
            let cluster = Cluster::open(&cli.dir)?;
            cluster.down()?;
            println!("stopped and removed {}", cli.dir.display());
        }
    }
    Ok(())
}

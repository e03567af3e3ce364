//! The local topology that every other part of the project stands on.
//!
//! A [`Cluster`] is a PostgreSQL primary plus N streaming read replicas, each a real server process
//! from the machine's own PostgreSQL installation, on its own 127.0.0.1 port, in its own directory.
//! The seeder loads the primary, the API reads the replicas (as the read-only role the cluster
//! creates), the load generator builds one topology per journey stage, and every integration test
//! starts its own cluster so that no two tests share ports or files.
//!
//! PostgreSQL refuses to run as root, so when this process is root the servers run as the
//! `postgres` system user (see [`process::ServerUser`]).

pub mod cgroup;
pub mod cli;
pub mod cluster;
pub mod nginx;
pub mod postgres;
pub mod process;
pub mod secret;

pub use cluster::{
    Cluster, ClusterSpec, ConnectionFiles, NodeRole, NodeState, PgSettings, PRIMARY,
};
pub use secret::redact_url;

/// Everything that can go wrong while building, querying or tearing down a topology.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("PostgreSQL server binaries not found ({0}); install PostgreSQL (scripts/bootstrap does) or set PG_BIN_DIR to the folder holding initdb and pg_ctl")]
    NoPostgres(String),
    #[error("nginx not found; install it (scripts/bootstrap does) or set NGINX_BIN to its path")]
    NoNginx,
    #[error("the system user `postgres` does not exist; as root the servers must run as that user (install PostgreSQL, or run as an ordinary user)")]
    NoPostgresUser,
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    #[error("port {0} on 127.0.0.1 is already in use; pick another or leave the port unset to get a free one")]
    PortInUse(u16),
    #[error("{0} is already running a topology (pid {1}); run `loadgen down --dir {0}` first")]
    AlreadyRunning(String, i32),
    #[error("no topology found in {0}; run `loadgen up --dir {0}` first")]
    NotFound(String),
    #[error("timed out after {secs}s waiting for {what}")]
    Timeout { what: String, secs: u64 },
    #[error("database error on {node}: {source}")]
    Database {
        node: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = StackError> = std::result::Result<T, E>;

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StackError {
    let context = context.into();
    move |source| StackError::Io { context, source }
}

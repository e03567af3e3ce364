//! Integration tests of the load generator: a tiny journey end to end, nginx in front of three
//! API instances while one of them is stopped, and `loadgen up --products 0|status|down`.

mod journey;
mod nginx_failover;
mod topology_cli;

/// A fresh directory that the postgres system user can reach (tests run as root in CI).
pub fn test_dir() -> tempfile::TempDir {
    stack::process::scratch_dir("loadgen-test-").expect("temporary directory")
}

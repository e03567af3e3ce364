//! Integration tests of the load generator: a tiny journey end to end, a tiny write-peak journey,
//! nginx in front of three API instances while one of them is stopped, `loadgen up --products
//! 0|status|down`, and no password on any command line while a journey stage runs.

mod journey;
mod nginx_failover;
mod secrets;
mod topology_cli;
mod write_peak;

/// A fresh directory that the postgres system user can reach (tests run as root in CI).
pub fn test_dir() -> tempfile::TempDir {
    stack::process::scratch_dir("loadgen-test-").expect("temporary directory")
}

//! Integration tests of the local topology against real PostgreSQL servers and nginx.

mod access;
mod budget;
mod cluster;
mod deploy;
mod nginx;
mod restart;

/// A fresh directory that the postgres system user can reach (tests run as root in CI).
pub fn test_dir() -> tempfile::TempDir {
    stack::process::scratch_dir("stack-test-").expect("temporary directory")
}

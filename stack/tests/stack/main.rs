//! Integration tests of the local topology against real PostgreSQL servers and nginx.

mod budget;
mod cluster;
mod nginx;

/// A fresh directory that the postgres system user can reach (tests run as root in CI).
pub fn test_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("stack-test-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

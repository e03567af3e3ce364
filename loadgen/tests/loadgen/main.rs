//! Integration tests of the load generator: a tiny journey end to end, a tiny write-peak journey,
//! nginx in front of three API instances while one of them is stopped, `loadgen up --products
//! 0|status|down` and no password on any command line while a journey stage runs. The CI gate's
//! test is a binary of its own (`tests/gate`), so that its timed rounds run alone.

mod drill;
mod journey;
mod nginx_failover;
mod secrets;
mod topology_cli;
mod write_peak;

/// A fresh directory that the postgres system user can reach (tests run as root in CI).
pub fn test_dir() -> tempfile::TempDir {
    stack::process::scratch_dir("loadgen-test-").expect("temporary directory")
}

/// Run `loadgen <args> --out <out> --quiet`, assert it succeeded, and return the one run folder
/// it wrote under `out` and what it printed.
pub fn run_loadgen(
    args: &[&std::ffi::OsStr],
    out: &std::path::Path,
) -> (std::path::PathBuf, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .arg("--out")
        .arg(out)
        .arg("--quiet")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let run = std::fs::read_dir(out)
        .unwrap()
        .next()
        .expect("a run folder")
        .unwrap()
        .path();
    (run, stdout)
}

//! The CI gate shown to decide: the reference against itself passes, and a candidate that is
//! known to be slower without any change to its code fails, with the ratio and interval in the
//! JSON report. The slower candidate spends 300 µs of CPU per request (`--debug-spin-us`, which
//! only debug builds of the API have; tests run debug builds, in which the API itself, not the
//! database, is what limits requests/s, so a smaller pool would not slow it reliably).
//!
//! A test binary of its own: cargo runs test binaries one after another, so the gate's timed
//! rounds share the cores with no other test. Inside the loadgen binary they ran beside the
//! journeys, the drill and nginx's failover test, and an A/A run once measured 0.66 of itself.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// A fresh directory that the postgres system user can reach (tests run as root in CI).
fn test_dir() -> tempfile::TempDir {
    stack::process::scratch_dir("loadgen-gate-test-").expect("temporary directory")
}

/// Run a small gate with `extra` flags; returns whether it passed, its report and its output.
fn gate(dir: &Path, name: &str, extra: &[&str]) -> (bool, Value, String) {
    let out = dir.join(format!("{name}.json"));
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .arg("baseline")
        // The reference is this very binary: no build, the same code on both sides.
        .arg("--reference-program")
        .arg(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "--products",
            "2000",
            "--rounds",
            "3",
            "--round-secs",
            "3",
            "--quiet",
        ])
        // Three short rounds of debug builds on a shared CI machine are noisier than the five
        // release rounds the default tolerances were chosen for (results/baseline.md); these
        // still fail a candidate that costs 300 µs more per request several times over.
        .args([
            "--tolerance",
            "0.15",
            "--cpu-tolerance",
            "0.25",
            "--latency-tolerance",
            "0.5",
        ])
        .arg("--stack-dir")
        .arg(dir.join(format!("{name}-stack")))
        .arg("--work-dir")
        .arg(dir.join(format!("{name}-work")))
        .arg("--out")
        .arg(&out)
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let text = std::fs::read_to_string(&out).unwrap_or_else(|e| {
        panic!(
            "no report at {} ({e}): {stdout}\n{}",
            out.display(),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (
        output.status.success(),
        serde_json::from_str(&text).unwrap(),
        stdout,
    )
}

fn throughput(report: &Value) -> &Value {
    report["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == "throughput")
        .expect("a throughput verdict")
}

#[test]
fn the_gate_passes_the_reference_against_itself_and_fails_a_slower_candidate() {
    let dir = test_dir();

    let (passed, report, stdout) = gate(dir.path(), "same", &[]);
    assert!(passed, "A/A must pass:\n{stdout}");
    assert_eq!(report["passed"], true);
    assert_eq!(report["rounds"].as_array().unwrap().len(), 3);
    assert_eq!(report["candidate_errors"], 0);
    let t = throughput(&report);
    assert!(t["ratio"]["high"].as_f64().unwrap() >= 0.85, "{t}");
    assert!(
        stdout.contains("requests/s, closed loop") && stdout.contains("PASS"),
        "{stdout}"
    );
    // goose's own report of the candidate, with deltas against the reference's.
    let goose = report["goose_reports"].as_array().unwrap();
    let md = goose
        .iter()
        .filter_map(Value::as_str)
        .find(|f| f.ends_with("candidate-round1.md"))
        .expect("the candidate's goose report");
    assert!(std::fs::metadata(md).unwrap().len() > 0);

    let (passed, report, stdout) = gate(
        dir.path(),
        "slower",
        &["--candidate-api-arg=--debug-spin-us=300"],
    );
    assert!(!passed, "300 µs more per request must fail:\n{stdout}");
    assert_eq!(report["passed"], false);
    assert_eq!(report["candidate_api_args"][0], "--debug-spin-us=300");
    // Fewer requests/s, more CPU per request, or both: which shows most depends on how the
    // debug build shares the cores with the database, so the test names neither alone.
    let failed: Vec<&Value> = report["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["passed"] == false)
        .collect();
    assert!(
        failed
            .iter()
            .any(|m| m["metric"] == "throughput" || m["metric"] == "cpu_per_request"),
        "{failed:?}"
    );
    assert!(stdout.contains("FAIL"), "{stdout}");
}

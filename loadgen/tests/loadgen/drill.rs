//! `loadgen drill` and `loadgen soak`, small, as a user runs them: 2 replicas, 2 API instances
//! behind nginx, short phases. What a user would notice is asserted: no failed request when one
//! replica is killed, restarted or an API instance dies, the restarted replica used again, and
//! only fast 503s with Retry-After while no replica can answer, then answers again within 5 s
//! of a replica's return; the soak fails no request and samples every instance.

use std::path::Path;
use std::sync::Mutex;

use serde_json::Value;

use crate::{run_loadgen, test_dir};

/// One at a time: each starts its own servers, and two at once on a small machine would
/// measure each other.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Run `loadgen <args>` and return the JSON file `name` it wrote in its run folder under `out`.
fn run(args: &[&str], out: &Path, name: &str) -> Value {
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
    let (run, stdout) = run_loadgen(&args, out);
    let text = std::fs::read_to_string(run.join(name)).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}\n{stdout}"))
}

#[test]
fn a_small_drill_fails_no_request_that_a_replica_could_answer() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = test_dir();
    let stack = dir.path().join("stack");
    let report = run(
        &[
            "drill",
            "--products",
            "2000",
            "--faults",
            "replica-kill,replica-restart,api-kill,primary-stop,all-replicas-down",
            "--rate",
            "150",
            "--workers",
            "16",
            "--settle-secs",
            "1",
            "--hold-secs",
            "2",
            "--observe-secs",
            "2",
            "--stack-dir",
            stack.to_str().unwrap(),
        ],
        &dir.path().join("results"),
        "drill.json",
    );
    let faults = report["faults"].as_array().unwrap();
    let names: Vec<&str> = faults.iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "replica-kill",
            "replica-restart",
            "api-kill",
            "primary-stop",
            "all-replicas-down"
        ]
    );
    for f in faults {
        let name = f["name"].as_str().unwrap();
        assert!(
            f["requests"].as_u64().unwrap() > 100,
            "{name}: traffic flowed: {f}"
        );
        if name == "all-replicas-down" {
            continue;
        }
        assert_eq!(
            f["failed"],
            serde_json::json!({}),
            "{name}: no failed request: {f}"
        );
        assert_eq!(f["meets_target"], true, "{name}: {f}");
    }
    for name in ["replica-kill", "replica-restart", "api-kill"] {
        let f = faults.iter().find(|f| f["name"] == name).unwrap();
        assert!(
            f["node_serves_ms"].as_f64().is_some(),
            "{name}: the restarted node is used again: {f}"
        );
    }
    let down = faults.last().unwrap();
    let failed = down["failed"].as_object().unwrap();
    assert!(
        failed.keys().all(|k| k == "http_503"),
        "only 503s while no replica can answer: {down}"
    );
    let unavailable = failed.get("http_503").and_then(Value::as_u64).unwrap_or(0);
    assert!(unavailable > 0, "503s while no replica can answer: {down}");
    assert_eq!(
        down["failed_with_retry_after"].as_u64(),
        Some(unavailable),
        "every 503 says Retry-After: {down}"
    );
    assert!(
        down["slowest_failure_ms"].as_f64().unwrap() < 1000.0,
        "503s come fast: {down}"
    );
    assert!(
        down["recovery_ms"].as_f64().is_some_and(|ms| ms <= 5000.0),
        "answers again within 5 s of a replica's return: {down}"
    );
    assert!(!stack.exists(), "the drill's servers are removed");
}

#[test]
fn a_short_soak_fails_no_request_and_samples_every_instance() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = test_dir();
    let out = dir.path().join("results");
    let report = run(
        &[
            "soak",
            "--products",
            "2000",
            "--users",
            "8",
            "--soak-users",
            "16",
            "--probe-secs",
            "2",
            "--duration-secs",
            "10",
            "--sample-secs",
            "2",
            "--warmup-secs",
            "4",
            "--stack-dir",
            dir.path().join("stack").to_str().unwrap(),
        ],
        &out,
        "soak.json",
    );
    assert_eq!(
        report["load"]["errors"],
        serde_json::json!({}),
        "{}",
        report["load"]
    );
    // 70% of the measured maximum, and goose's throttle set over the delivery its calibration
    // run measured.
    let target = report["target_per_sec"].as_u64().unwrap();
    let max = report["max_ok_per_sec"].as_f64().unwrap();
    assert_eq!(target, ((max * 0.7).floor() as u64).max(1), "{report}");
    let delivery = report["calibration"]["delivery"].as_f64().unwrap();
    assert!((0.5..=1.0).contains(&delivery), "{report}");
    assert_eq!(
        report["throttle_per_sec"].as_u64().unwrap(),
        (target as f64 / delivery).ceil() as u64,
        "{report}"
    );
    // The warm-up is at least the one asked for, and the caches were sampled.
    assert!(report["warmup_secs"].as_f64().unwrap() >= 4.0, "{report}");
    assert!(report["achieved_share"].as_f64().unwrap() > 0.0, "{report}");
    let samples = report["samples"].as_array().unwrap();
    assert!(samples.len() >= 5, "a sample every 2 s: {}", samples.len());
    for s in samples {
        let rss = s["rss_kib"].as_array().unwrap();
        let fds = s["fds"].as_array().unwrap();
        assert_eq!((rss.len(), fds.len()), (2, 2), "both instances: {s}");
        assert!(
            rss.iter().chain(fds).all(|v| v.as_u64().unwrap() > 0),
            "{s}"
        );
        assert!(s["cache_entries"].as_f64().unwrap() > 0.0, "{s}");
    }
    assert!(report["rss_kib"]["slope_per_min"].is_number(), "{report}");
    let run = std::fs::read_dir(&out)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    for name in ["soak.md", "soak.svg"] {
        assert!(run.join(name).metadata().unwrap().len() > 0, "{name}");
    }
}

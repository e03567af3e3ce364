//! A tiny write-peak journey end to end: the API reads from the primary, then from a replica,
//! while the primary takes a write peak. The writes reach the primary (its own statistics count
//! the rows), every read succeeds although lists change under it, and both stages record the
//! replica's replay lag.

use crate::{run_loadgen, test_dir};

const TINY_WRITE_PEAK: &str = r#"
name = "tiny write peak"

[data]
products = 2000
per_product = 16

[defaults]
users = 4
warmup_secs = 1
duration_secs = 3

[[stage]]
name = "primary + writes"
serve_from = "primary"
replicas = 1
api_instances = 1
db_budget = { cpus = 0.5, memory_mb = 512 }
write_peak = { tx_per_sec = 100, connections = 2 }

[[stage]]
name = "replica + writes"
replicas = 1
api_instances = 1
db_budget = { cpus = 0.5, memory_mb = 512 }
write_peak = { tx_per_sec = 100, connections = 2 }
"#;

#[test]
fn a_tiny_write_peak_journey_writes_reads_and_measures_the_lag() {
    let dir = test_dir();
    let file = dir.path().join("write-peak.toml");
    std::fs::write(&file, TINY_WRITE_PEAK).unwrap();
    let out = dir.path().join("results");
    let stack = dir.path().join("stack");
    let (run, _) = run_loadgen(
        &[
            "journey".as_ref(),
            "--file".as_ref(),
            file.as_os_str(),
            "--stack-dir".as_ref(),
            stack.as_os_str(),
        ],
        &out,
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("journey.json")).unwrap()).unwrap();
    let stages = json["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 2);
    assert_eq!(stages[0]["topology"]["serve_from"], "primary");
    assert!(
        stages[1]["topology"].get("serve_from").is_none(),
        "replicas, the default, are not written"
    );

    for stage in stages {
        let name = stage["name"].as_str().unwrap();
        let load = &stage["load"];
        assert!(load["ok"].as_u64().unwrap() > 0, "{name}: {load}");
        assert_eq!(
            load["errors"].as_object().unwrap().len(),
            0,
            "{name}: every read succeeds while lists change: {load}"
        );

        let peak = &stage["write_peak"];
        let count = |key: &str| {
            peak[key]
                .as_u64()
                .unwrap_or_else(|| panic!("{name}: {key} in {peak}"))
        };
        assert!(count("transactions") > 0, "{name}: {peak}");
        assert!(count("rows_written") > 0, "{name}: {peak}");
        // Each transaction rewrites a whole list (16 rows out, 16 in) and one price.
        assert!(
            count("rows_written") >= 33 * count("transactions"),
            "{name}: whole lists: {peak}"
        );
        // The primary's own statistics saw the rows change.
        assert!(
            count("primary_rows_changed") >= count("total_rows_written") / 2,
            "{name}: {peak}"
        );
        assert!(
            peak["tx_per_sec"].as_f64().unwrap() <= 100.0 * 1.2,
            "{peak}"
        );
        assert!(peak["primary_cpu_utilization"].as_f64().unwrap() > 0.0);

        assert_eq!(count("replicas_sampled"), 1, "{name}: {peak}");
        assert!(count("lag_samples") > 0, "{name}: {peak}");
        let median = peak["replay_lag_ms_median"].as_f64().unwrap();
        let max = peak["replay_lag_ms_max"].as_f64().unwrap();
        // A replica of the same size keeps up with 100 transactions/s: well under 10 s behind.
        assert!(0.0 <= median && max < 10_000.0, "{name}: {peak}");
        assert!(count("replay_lag_bytes_max") < 1 << 30, "{name}: {peak}");
        assert!(
            stage["verdict"].as_str().unwrap().contains("Write peak: "),
            "{}",
            stage["verdict"]
        );
    }

    let md = std::fs::read_to_string(run.join("journey.md")).unwrap();
    assert!(
        md.contains("| 1 | primary + writes | reads on the primary, 1 replica(s)"),
        "{md}"
    );
    assert!(md.contains("replica replay lag median"), "{md}");
    assert!(
        !dir.path().join("stack").exists(),
        "the journey tears its servers down"
    );
}

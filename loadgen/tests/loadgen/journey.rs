//! `loadgen journey` end to end on a tiny journey file (real PostgreSQL, API processes and
//! nginx): every result file is written and the servers are gone afterwards.

use std::process::Command;

use crate::{run_loadgen, test_dir};

const TINY_JOURNEY: &str = r#"
name = "tiny"

[data]
products = 3000
per_product = 16

[defaults]
users = 8
warmup_secs = 1
duration_secs = 3

[[stage]]
name = "index"
kind = "index"

[[stage]]
name = "2 APIs behind nginx"
replicas = 1
api_instances = 2
nginx = "tuned"
db_budget = { cpus = 0.5, memory_mb = 512 }
"#;

#[test]
fn a_tiny_journey_writes_every_result_file() {
    let dir = test_dir();
    let file = dir.path().join("tiny.toml");
    std::fs::write(&file, TINY_JOURNEY).unwrap();
    let out = dir.path().join("results");
    let stack = dir.path().join("stack");
    let (run, stdout) = run_loadgen(
        &[
            "journey".as_ref(),
            "--file".as_ref(),
            file.as_os_str(),
            "--stack-dir".as_ref(),
            stack.as_os_str(),
        ],
        &out,
    );
    for name in [
        "journey.json",
        "stages.csv",
        "journey.md",
        "journey.svg",
        "stage-2-goose.html",
    ] {
        let path = run.join(name);
        assert!(
            path.metadata().map(|m| m.len() > 0).unwrap_or(false),
            "{name} written"
        );
    }

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("journey.json")).unwrap()).unwrap();
    assert_eq!(json["products"], 3000);
    assert!(json["machine"]["cores"].as_u64().unwrap() >= 1);
    let stages = json["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 2);

    let index = &stages[0]["index"];
    assert_eq!(index["relation_rows"], 48_000);
    assert!(index["without_index_ms_median"].as_f64().unwrap() > 0.0);
    assert!(
        index["speedup"].as_f64().unwrap() > 1.0,
        "the index makes the lookup faster"
    );
    let plan_without = index["plan_without_index"].to_string();
    let plan_with = index["plan_with_index"].to_string();
    assert!(
        plan_without.contains("Seq Scan on related_items"),
        "{plan_without}"
    );
    assert!(plan_with.contains("related_items_pkey"), "{plan_with}");

    let load = &stages[1]["load"];
    assert!(load["requests_per_sec"].as_f64().unwrap() > 0.0);
    assert_eq!(load["errors"].as_object().unwrap().len(), 0, "{load}");
    assert!(load["ok"].as_u64().unwrap() > 0);
    let p = &load["latency"];
    assert!(p["p50_us"].as_u64().unwrap() <= p["p99_us"].as_u64().unwrap());
    assert!(p["p99_us"].as_u64().unwrap() <= p["max_us"].as_u64().unwrap());
    let components: Vec<&str> = stages[1]["cpu"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["component"].as_str().unwrap())
        .collect();
    assert_eq!(components, ["database", "api", "nginx", "load generator"]);
    assert!(!stages[1]["bottleneck"].as_str().unwrap().is_empty());

    let csv = std::fs::read_to_string(run.join("stages.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "a header and one row per stage");
    assert!(csv.starts_with("stage,name,"));
    let md = std::fs::read_to_string(run.join("journey.md")).unwrap();
    assert!(md.contains("| 2 | 2 APIs behind nginx |"));
    let svg = std::fs::read_to_string(run.join("journey.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(stdout.contains("results: "));
    assert!(
        !dir.path().join("stack").exists(),
        "the journey tears its servers down"
    );
}

#[test]
fn a_broken_journey_file_is_refused_with_its_name() {
    let dir = test_dir();
    let file = dir.path().join("broken.toml");
    std::fs::write(
        &file,
        "name = \"x\"\n[[stage]]\nname = \"a\"\nreplicas = \"two\"\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["journey", "--file"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("broken.toml") && stderr.contains("replicas"),
        "{stderr}"
    );
}

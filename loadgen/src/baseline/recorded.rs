//! The recorded figure, `results/baseline.json`: the API's requests/s per pgbench transaction/s
//! on the same replica, and the commit it was measured at. The commit is what the gate builds
//! and runs as its reference; the figure itself is kept for the trend across machines and days,
//! and decides only when there is no reference to run.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::journey::Machine;

/// The recorded figures of one baseline run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BaselineRun {
    pub recorded_at: String,
    /// The commit measured (`git rev-parse HEAD`); the gate's reference. Older files lack it.
    #[serde(default)]
    pub commit: Option<String>,
    pub machine: Machine,
    pub products: u64,
    pub users: usize,
    pub round_secs: u64,
    pub rounds: usize,
    pub api_rps: Vec<f64>,
    pub pgbench_tps: Vec<f64>,
    pub api_rps_median: f64,
    pub pgbench_tps_median: f64,
    /// API requests/s per pgbench transaction/s: the figure compared across machines and days.
    pub normalized: f64,
    pub api_p99_us_median: u64,
    pub errors: u64,
}

/// The verdict of comparing a run with the committed baseline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Comparison {
    pub baseline: f64,
    pub now: f64,
    pub ratio: f64,
    pub tolerance: f64,
    pub passed: bool,
}

/// A run passes while its normalised throughput is at least `(1 - tolerance)` of the baseline's.
pub fn compare(baseline: &BaselineRun, now: &BaselineRun, tolerance: f64) -> Comparison {
    let ratio = if baseline.normalized > 0.0 {
        now.normalized / baseline.normalized
    } else {
        f64::INFINITY
    };
    // Round away float noise so a ratio exactly at the edge passes.
    let ratio_r = (ratio * 1e9).round() / 1e9;
    Comparison {
        baseline: baseline.normalized,
        now: now.normalized,
        ratio: (ratio * 1000.0).round() / 1000.0,
        tolerance,
        passed: ratio_r >= 1.0 - tolerance && now.errors == 0,
    }
}

/// Read a recorded baseline.
pub fn load_baseline(path: &Path) -> anyhow::Result<BaselineRun> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read baseline {}: {e}; record one with --update",
            path.display()
        )
    })?;
    serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{} is not a baseline file: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(normalized: f64, errors: u64) -> BaselineRun {
        BaselineRun {
            recorded_at: String::new(),
            commit: None,
            machine: Machine {
                cores: 2,
                memory_gib: 24.0,
                cpu_model: String::new(),
                kernel: String::new(),
                postgres: String::new(),
                nginx: String::new(),
                loadgen: String::new(),
            },
            products: 1,
            users: 1,
            round_secs: 1,
            rounds: 1,
            api_rps: vec![],
            pgbench_tps: vec![],
            api_rps_median: 0.0,
            pgbench_tps_median: 0.0,
            normalized,
            api_p99_us_median: 0,
            errors,
        }
    }

    #[test]
    fn a_faster_or_equal_run_passes() {
        assert!(compare(&run(0.5, 0), &run(0.5, 0), 0.2).passed);
        assert!(compare(&run(0.5, 0), &run(0.9, 0), 0.2).passed);
    }

    #[test]
    fn a_real_regression_fails() {
        let cmp = compare(&run(0.5, 0), &run(0.3, 0), 0.2);
        assert!(!cmp.passed);
        assert_eq!(cmp.ratio, 0.6);
    }

    #[test]
    fn the_tolerance_edge_passes_and_just_below_fails() {
        assert!(
            compare(&run(0.5, 0), &run(0.4, 0), 0.2).passed,
            "exactly 80% passes"
        );
        assert!(!compare(&run(0.5, 0), &run(0.3999, 0), 0.2).passed);
    }

    #[test]
    fn failed_requests_fail_the_run_whatever_the_speed() {
        assert!(!compare(&run(0.5, 0), &run(0.6, 3), 0.2).passed);
    }
}

//! `loadgen baseline`: a short fixed workload whose throughput CI records and compares.
//!
//! Raw requests/s depends on how fast and how busy the machine is, so the figure that is
//! compared is normalised by a calibration taken in the same run on the same data: pgbench
//! running the API's own SQL against the same replica at the same concurrency. The two are
//! interleaved (calibration, API, calibration, API, ...) so that a burst of noise hits both,
//! and medians are compared.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stack::{Cluster, ClusterSpec};

use crate::cancel::Cancel;
use crate::figures::median;
use crate::ids::IdDistribution;
use crate::journey::Machine;
use crate::scenario::{run_load, LoadSpec};
use crate::topology::{ApiLaunch, ApiTier};

/// The recorded figures of one baseline run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BaselineRun {
    pub recorded_at: String,
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

/// The comparison as a table for humans.
pub fn table(baseline: &BaselineRun, now: &BaselineRun, cmp: &Comparison) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<28} {:>14} {:>14} {:>8}\n",
        "", "baseline", "now", "ratio"
    ));
    let row = |name: &str, b: f64, n: f64| {
        format!(
            "{name:<28} {b:>14.1} {n:>14.1} {:>8.3}\n",
            if b > 0.0 { n / b } else { 0.0 }
        )
    };
    out.push_str(&row(
        "API requests/s (median)",
        baseline.api_rps_median,
        now.api_rps_median,
    ));
    out.push_str(&row(
        "pgbench TPS (calibration)",
        baseline.pgbench_tps_median,
        now.pgbench_tps_median,
    ));
    out.push_str(&format!(
        "{:<28} {:>14.4} {:>14.4} {:>8.3}\n",
        "normalised (API/pgbench)", cmp.baseline, cmp.now, cmp.ratio
    ));
    out.push_str(&row(
        "API p99 µs (median)",
        baseline.api_p99_us_median as f64,
        now.api_p99_us_median as f64,
    ));
    out.push_str(&format!(
        "{}: normalised throughput is {:.1}% of the baseline (tolerance {:.0}%){}\n",
        if cmp.passed { "PASS" } else { "FAIL" },
        cmp.ratio * 100.0,
        cmp.tolerance * 100.0,
        if now.errors > 0 {
            format!("; {} failed requests", now.errors)
        } else {
            String::new()
        }
    ));
    out
}

/// What the fixed workload looks like.
#[derive(Debug, Clone)]
pub struct BaselineOptions {
    pub stack_dir: PathBuf,
    pub api_program: PathBuf,
    pub products: u64,
    pub users: usize,
    pub round_secs: u64,
    pub rounds: usize,
    pub quiet: bool,
}

/// Run the rounds; `cancel` stops the run between rounds and any load in progress.
pub async fn run_baseline(opts: &BaselineOptions, cancel: &Cancel) -> anyhow::Result<BaselineRun> {
    let say = |m: &str| {
        if !opts.quiet {
            eprintln!("{m}");
        }
    };
    let cluster = Cluster::create(ClusterSpec::new(&opts.stack_dir, 1)).await?;
    let seed = seeder::SeedOptions {
        products: opts.products,
        quiet: true,
        ..seeder::SeedOptions::default()
    };
    seeder::seed(&cluster.primary_url(), &seed).await?;
    cluster.wait_for_replicas(Duration::from_secs(300)).await?;
    let replica = cluster.replica_indexes()[0];
    let script_dir = tempdir_in(&opts.stack_dir)?;
    let script = script_dir.join("related.sql");
    std::fs::write(&script, pgbench_script(opts.products))?;

    let launch = ApiLaunch {
        program: opts.api_program.clone(),
        replica_urls: vec![cluster.api_url(replica)],
        cache_capacity: 0,
        pool_size: 8,
        extra_args: Vec::new(),
    };
    let tier = ApiTier::start(&launch, 1, Default::default(), None, &script_dir).await?;
    let mut api_rps = Vec::new();
    let mut pgbench_tps = Vec::new();
    let mut p99s = Vec::new();
    let mut errors = 0;
    for round in 1..=opts.rounds {
        cancel.check()?;
        let tps = pgbench(&cluster, replica, &script, opts.users, opts.round_secs)?;
        let spec = LoadSpec {
            host: tier.entry_url(),
            users: opts.users,
            warmup: Duration::from_secs(2),
            duration: Duration::from_secs(opts.round_secs),
            products: opts.products,
            expected_items: Some(16),
            ids: IdDistribution::Uniform,
            unknown_share: 0.0,
            report_files: Vec::new(),
            goose_args: Vec::new(),
            request_timeout: Duration::from_secs(10),
            lists_change: false,
        };
        let (load, _, _) = run_load(&spec, cancel, || ()).await?;
        say(&format!(
            "round {round}/{}: pgbench {tps:.0} TPS, API {:.0} req/s (p99 {} µs, {} errors)",
            opts.rounds,
            load.successful_per_sec,
            load.latency.p99_us,
            load.total_errors()
        ));
        pgbench_tps.push(tps);
        api_rps.push(load.successful_per_sec);
        p99s.push(load.latency.p99_us);
        errors += load.total_errors();
    }
    drop(tier);
    let api_median = median(&api_rps).unwrap_or(0.0);
    let pg_median = median(&pgbench_tps).unwrap_or(0.0);
    p99s.sort_unstable();
    Ok(BaselineRun {
        recorded_at: chrono::Utc::now().to_rfc3339(),
        machine: Machine::detect(Some(&cluster)),
        products: opts.products,
        users: opts.users,
        round_secs: opts.round_secs,
        rounds: opts.rounds,
        api_rps,
        pgbench_tps,
        api_rps_median: api_median,
        pgbench_tps_median: pg_median,
        normalized: ((api_median / pg_median) * 10_000.0).round() / 10_000.0,
        api_p99_us_median: p99s[p99s.len() / 2],
        errors,
    })
}

fn tempdir_in(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("baseline-work");
    std::fs::create_dir_all(&path)?;
    Ok(path)
}

/// The API's SQL as a pgbench script: same statement, same random ids.
pub fn pgbench_script(products: u64) -> String {
    let sql = api::RELATED_SQL
        .replace("$1", ":id")
        .replace("$2", "16")
        .replace('\n', " ");
    format!("\\set id random(1, {products})\n{sql};\n")
}

fn pgbench(
    cluster: &Cluster,
    node: usize,
    script: &Path,
    clients: usize,
    secs: u64,
) -> anyhow::Result<f64> {
    let port = cluster.nodes()[node].port;
    // The API role's password through the environment, not on pgbench's command line.
    let url: tokio_postgres::Config = cluster.api_url(node).parse()?;
    let password = String::from_utf8(url.get_password().unwrap_or_default().to_vec())?;
    let output = std::process::Command::new(cluster.binaries().tool("pgbench"))
        .args(["-n", "-M", "prepared", "-j", "2"])
        .arg("-c")
        .arg(clients.to_string())
        .arg("-T")
        .arg(secs.to_string())
        .arg("-f")
        .arg(script)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-U", stack::cluster::API_ROLE, stack::cluster::DATABASE])
        .env("PGPASSWORD", password)
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        anyhow::bail!(
            "pgbench failed: {}{}",
            text,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse_tps(&text).ok_or_else(|| anyhow::anyhow!("no tps line in pgbench output: {text}"))
}

/// `tps = 12345.678 (without initial connection time)` -> 12345.678
pub fn parse_tps(output: &str) -> Option<f64> {
    output
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
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

    #[test]
    fn pgbench_output_parses() {
        let out = "latency average = 1.2 ms\ninitial connection time = 3.1 ms\ntps = 12345.678901 (without initial connection time)\n";
        assert_eq!(parse_tps(out), Some(12345.678901));
        assert_eq!(parse_tps("nothing"), None);
    }

    #[test]
    fn the_script_uses_the_apis_sql_with_pgbench_variables() {
        let s = pgbench_script(1000);
        assert!(s.starts_with("\\set id random(1, 1000)\n"));
        assert!(s.contains(":id") && !s.contains("$1") && !s.contains("$2"));
    }
}

//! One gate run: the reference and the candidate API side by side on one topology and one data
//! set, round after round under the same load.
//!
//! Both APIs run at once as separate processes on the same replica (each with its own pool);
//! only one is loaded at a time. A round measures each in turn, closed loop for throughput, then
//! paced at one fixed offered rate for latency; which goes first alternates from round to round,
//! so a drift of the machine during a round does not always favour the same side.

use std::path::{Path, PathBuf};
use std::time::Duration;

use stack::{Cluster, ClusterSpec};

use super::calibration::{pgbench, pgbench_script};
use super::recorded::{compare, BaselineRun};
use super::reference::{self, Reference};
use super::verdict::{self, GateReport, Round, SideFigures, Tolerances};
use crate::cancel::Cancel;
use crate::figures::{median, round_to};
use crate::ids::IdDistribution;
use crate::journey::Machine;
use crate::scenario::{run_load, LoadResult, LoadSpec};
use crate::topology::{ApiInstance, ApiLaunch};

/// Where the reference comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ReferenceSource {
    /// Build the commit the recorded baseline names.
    Recorded,
    /// Run this program as the reference (an A/A study runs the candidate's own binary).
    Program(PathBuf),
    /// No reference: the candidate alone (recording a new baseline, or `--no-reference`).
    Skip(&'static str),
}

/// What the gate runs.
#[derive(Debug, Clone)]
pub struct GateOptions {
    pub stack_dir: PathBuf,
    /// The reference's worktree and build folder, and goose's reports.
    pub work_dir: PathBuf,
    /// This binary: the candidate API runs as `loadgen api`.
    pub candidate_program: PathBuf,
    pub candidate_pool_size: u32,
    /// Further `api` flags for the candidate alone (no secrets: arguments are public).
    pub candidate_api_args: Vec<String>,
    pub reference: ReferenceSource,
    /// `results/baseline.json`, when there is one.
    pub recorded: Option<BaselineRun>,
    pub recorded_tolerance: f64,
    pub products: u64,
    pub users: usize,
    pub round_secs: u64,
    pub rounds: usize,
    /// The paced rounds' offered rate as a share of the reference's closed-loop maximum.
    pub paced_share: f64,
    pub tolerances: Tolerances,
    pub quiet: bool,
}

/// Run the gate. Returns the report and the candidate's figures as a recordable baseline.
pub async fn run_gate(
    opts: &GateOptions,
    cancel: &Cancel,
) -> anyhow::Result<(GateReport, BaselineRun)> {
    let say = |m: &str| {
        if !opts.quiet {
            eprintln!("{m}");
        }
    };
    let repo = reference::repo_root().unwrap_or_else(|| PathBuf::from("."));
    let candidate = reference::candidate(&repo);
    let (reference, reference_missing) = match &opts.reference {
        ReferenceSource::Program(program) => (
            Some(Reference {
                commit: None,
                program: program.clone(),
                build_secs: None,
            }),
            None,
        ),
        ReferenceSource::Skip(why) => (None, Some(why.to_string())),
        ReferenceSource::Recorded => {
            let commit = opts.recorded.as_ref().and_then(|r| r.commit.as_deref());
            let built = reference::check(&repo, commit, &candidate).and_then(|full| {
                // The compiled dependencies: beside this binary when it is a cargo build,
                // else this checkout's target/release.
                let release = [
                    opts.candidate_program.parent().map(Path::to_path_buf),
                    Some(repo.join("target/release")),
                ]
                .into_iter()
                .flatten()
                .find(|dir| reference::is_cargo_output(dir));
                let work = std::path::absolute(&opts.work_dir).map_err(|e| {
                    reference::Unavailable::BuildFailed {
                        commit: full.clone(),
                        detail: e.to_string(),
                        log: String::new(),
                    }
                })?;
                reference::build(&repo, &full, &work, release.as_deref(), &say)
            });
            match built {
                Ok(r) => (Some(r), None),
                Err(why) => {
                    // Said even with --quiet: the verdict means something else now.
                    eprintln!("no reference run: {why}; falling back to the recorded figure");
                    (None, Some(why.to_string()))
                }
            }
        }
    };
    if let Some(r) = &reference {
        say(&format!("reference program: {}", r.program.display()));
    }
    cancel.check()?;

    let cluster = Cluster::create(ClusterSpec::new(&opts.stack_dir, 1)).await?;
    let seed = seeder::SeedOptions {
        products: opts.products,
        quiet: true,
        ..seeder::SeedOptions::default()
    };
    seeder::seed(&cluster.primary_url(), &seed).await?;
    cluster.wait_for_replicas(Duration::from_secs(300)).await?;
    let replica = cluster.replica_indexes()[0];
    let work = opts.stack_dir.join("baseline-work");
    std::fs::create_dir_all(&work)?;
    let script = work.join("related.sql");
    std::fs::write(&script, pgbench_script(opts.products))?;

    let launch = |program: &Path, pool_size: u32, extra_args: &[String]| ApiLaunch {
        program: program.to_path_buf(),
        replica_urls: vec![cluster.api_url(replica)],
        cache_capacity: 0,
        pool_size,
        extra_args: extra_args.to_vec(),
    };
    let mut candidate_api = ApiInstance::start(
        &launch(
            &opts.candidate_program,
            opts.candidate_pool_size,
            &opts.candidate_api_args,
        ),
        &work.join("candidate-api.log"),
    )
    .await?;
    let mut reference_api = match &reference {
        Some(r) => Some(
            ApiInstance::start(&launch(&r.program, 8, &[]), &work.join("reference-api.log"))
                .await?,
        ),
        None => None,
    };
    let reports = opts.work_dir.join("goose");
    std::fs::create_dir_all(&reports)?;
    let load = |host: String,
                secs: u64,
                paced: Option<u64>,
                files: Vec<PathBuf>,
                baseline: Option<&Path>| {
        let mut goose_args = Vec::new();
        if let Some(rate) = paced {
            goose_args.extend(["--throttle-requests".to_string(), rate.to_string()]);
        }
        if let Some(b) = baseline {
            goose_args.extend(["--baseline-file".to_string(), b.display().to_string()]);
        }
        LoadSpec {
            host,
            users: opts.users,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(secs),
            products: opts.products,
            expected_items: Some(16),
            ids: IdDistribution::Uniform,
            unknown_share: 0.0,
            report_files: files,
            goose_args,
            request_timeout: Duration::from_secs(10),
            lists_change: false,
        }
    };
    let url = |api: &ApiInstance| format!("http://{}", api.addr);

    // Warm-up: the replica's cache, and each API as long as the other (a process's first
    // seconds of load grow its heap and pools, which costs CPU): the reference's maximum sets
    // the paced rate.
    let first = reference_api.as_ref().unwrap_or(&candidate_api);
    let (warm, _, _) = run_load(
        &load(url(first), opts.round_secs, None, vec![], None),
        cancel,
        || (),
    )
    .await?;
    if reference_api.is_some() {
        run_load(
            &load(url(&candidate_api), opts.round_secs, None, vec![], None),
            cancel,
            || (),
        )
        .await?;
    }
    let paced_rate =
        ((warm.successful_per_sec * opts.paced_share / 10.0).round() * 10.0).max(10.0) as u64;
    say(&format!(
        "warm-up: {:.0} req/s closed loop; paced rounds offer {paced_rate} req/s",
        warm.successful_per_sec
    ));

    let mut pgbench_tps = vec![pgbench(
        &cluster,
        replica,
        &script,
        opts.users,
        opts.round_secs,
    )?];
    let reference_report = reports.join("reference-round1.json");
    let mut goose_reports = Vec::new();
    let mut rounds = Vec::new();
    for round in 1..=opts.rounds {
        cancel.check()?;
        let reference_first = round % 2 == 1;
        let mut figures: [Option<SideFigures>; 2] = [None, None]; // [reference, candidate]
        let order: Vec<usize> = match (&reference_api, reference_first) {
            (None, _) => vec![1],
            (Some(_), true) => vec![0, 1],
            (Some(_), false) => vec![1, 0],
        };
        for phase in [None, Some(paced_rate)] {
            for &side in &order {
                let api = if side == 0 {
                    reference_api.as_ref().unwrap()
                } else {
                    &candidate_api
                };
                // Round 1's closed loop: goose's own reports, the candidate's against the reference's.
                let (files, baseline) = match (round, phase, side) {
                    (1, None, 0) => (
                        vec![
                            reference_report.clone(),
                            reports.join("reference-round1.html"),
                        ],
                        None,
                    ),
                    (1, None, 1) if reference_api.is_some() => (
                        vec![
                            reports.join("candidate-round1.html"),
                            reports.join("candidate-round1.md"),
                        ],
                        Some(reference_report.as_path()),
                    ),
                    _ => (vec![], None),
                };
                if round == 1 && phase.is_none() {
                    goose_reports.extend(files.iter().map(|f| f.display().to_string()));
                }
                let pid = api.pid();
                let (result, cpu_start, cpu_end) = run_load(
                    &load(url(api), opts.round_secs, phase, files, baseline),
                    cancel,
                    move || stack::cgroup::process_cpu(pid),
                )
                .await?;
                let entry = figures[side].get_or_insert_with(SideFigures::default);
                record(
                    entry,
                    &result,
                    phase.is_some(),
                    cpu_end.saturating_sub(cpu_start),
                );
            }
        }
        let r = Round {
            round,
            reference_first,
            reference: figures[0],
            candidate: figures[1].unwrap_or_default(),
        };
        say(&describe(&r, opts.rounds));
        rounds.push(r);
    }
    pgbench_tps.push(pgbench(
        &cluster,
        replica,
        &script,
        opts.users,
        opts.round_secs,
    )?);
    candidate_api.stop();
    if let Some(api) = reference_api.as_mut() {
        api.stop();
    }

    let metrics = verdict::judge(&rounds, opts.tolerances);
    let candidate_errors: u64 = rounds.iter().map(|r| r.candidate.errors).sum();
    let machine = Machine::detect(Some(&cluster));
    let now = recordable(opts, &rounds, &pgbench_tps, &candidate, machine.clone());
    let recorded = opts
        .recorded
        .as_ref()
        .map(|b| compare(b, &now, opts.recorded_tolerance));
    let passed = verdict::passed(&metrics, recorded.as_ref(), candidate_errors);
    let report = GateReport {
        recorded_at: now.recorded_at.clone(),
        machine,
        candidate,
        candidate_pool_size: opts.candidate_pool_size,
        candidate_api_args: opts.candidate_api_args.clone(),
        reference,
        reference_missing,
        products: opts.products,
        users: opts.users,
        round_secs: opts.round_secs,
        paced_rate,
        tolerances: opts.tolerances,
        rounds,
        metrics,
        candidate_errors,
        pgbench_tps,
        normalized: now.normalized,
        recorded,
        goose_reports,
        passed,
    };
    Ok((report, now))
}

fn record(entry: &mut SideFigures, result: &LoadResult, paced: bool, cpu: Duration) {
    if paced {
        entry.paced_p99_us = result.latency.p99_us;
        entry.paced_rps = round_to(result.successful_per_sec, 1);
    } else {
        entry.rps = round_to(result.successful_per_sec, 1);
        entry.p99_us = result.latency.p99_us;
        let answered = result.successful_per_sec * result.measured_secs;
        if answered >= 1.0 {
            entry.cpu_us_per_request = round_to(cpu.as_secs_f64() * 1e6 / answered, 1);
        }
    }
    entry.errors += result.total_errors();
}

fn describe(r: &Round, rounds: usize) -> String {
    let side = |s: &SideFigures| {
        format!(
            "{:.0} req/s (p99 {} µs, {:.0} µs CPU each), paced p99 {} µs, {} failed",
            s.rps, s.p99_us, s.cpu_us_per_request, s.paced_p99_us, s.errors
        )
    };
    match &r.reference {
        Some(reference) => format!(
            "round {}/{rounds}: reference {}; candidate {}; ratio {:.3}",
            r.round,
            side(reference),
            side(&r.candidate),
            r.candidate.rps / reference.rps.max(f64::MIN_POSITIVE)
        ),
        None => format!(
            "round {}/{rounds}: candidate {}",
            r.round,
            side(&r.candidate)
        ),
    }
}

/// The candidate's figures in the recorded baseline's form (what `--update` writes).
fn recordable(
    opts: &GateOptions,
    rounds: &[Round],
    pgbench_tps: &[f64],
    candidate: &reference::Candidate,
    machine: Machine,
) -> BaselineRun {
    let api_rps: Vec<f64> = rounds.iter().map(|r| r.candidate.rps).collect();
    let mut p99s: Vec<u64> = rounds.iter().map(|r| r.candidate.p99_us).collect();
    p99s.sort_unstable();
    let api_median = median(&api_rps).unwrap_or(0.0);
    let pg_median = median(pgbench_tps).unwrap_or(0.0);
    BaselineRun {
        recorded_at: chrono::Utc::now().to_rfc3339(),
        commit: candidate.commit.clone(),
        machine,
        products: opts.products,
        users: opts.users,
        round_secs: opts.round_secs,
        rounds: rounds.len(),
        api_rps,
        pgbench_tps: pgbench_tps.to_vec(),
        api_rps_median: api_median,
        pgbench_tps_median: pg_median,
        normalized: if pg_median > 0.0 {
            round_to(api_median / pg_median, 4)
        } else {
            0.0
        },
        api_p99_us_median: p99s.get(p99s.len() / 2).copied().unwrap_or(0),
        errors: rounds.iter().map(|r| r.candidate.errors).sum(),
    }
}

//! The requests-per-second journey: a TOML list of stages, each a topology (replicas, API
//! instances, nginx, cache), budgets that make one machine stand in for hosts of given sizes,
//! and a load. The runner seeds once, builds and tears down each stage's topology, measures it,
//! and names the component closest to its limit.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use stack::cgroup::{process_tree_cpu, Budget};
use stack::nginx::{NginxErrors, NginxSettings};
use stack::{Cluster, ClusterSpec, PgSettings};

use crate::ids::IdDistribution;
use crate::index_probe::{probe_index, IndexProbe};
use crate::scenario::{run_load, LoadError, LoadResult, LoadSpec};
use crate::topology::{machine_busy_cpu, own_cpu, ApiLaunch, ApiTier, BudgetState, Budgeted};

/// The journey shipped with the project: the story's stages and one past them.
pub const DEFAULT_JOURNEY: &str = include_str!("../journeys/default.toml");

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JourneyFile {
    pub name: String,
    #[serde(default)]
    pub data: DataSpec,
    #[serde(default)]
    pub defaults: LoadDefaults,
    #[serde(rename = "stage")]
    pub stages: Vec<StageSpec>,
}

impl JourneyFile {
    pub fn parse(text: &str, origin: &str) -> anyhow::Result<JourneyFile> {
        let file: JourneyFile =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        if file.stages.is_empty() {
            anyhow::bail!("{origin}: a journey needs at least one [[stage]]");
        }
        for (i, s) in file.stages.iter().enumerate() {
            if s.kind == StageKind::Load && (s.replicas == 0 || s.api_instances == 0) {
                anyhow::bail!(
                    "{origin}: stage {} ({}) needs at least one replica and one API instance",
                    i + 1,
                    s.name
                );
            }
        }
        Ok(file)
    }
}

/// The data every stage reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSpec {
    pub products: u64,
    pub per_product: u32,
    pub seed: u64,
    /// shared_buffers of each PostgreSQL server, MiB.
    pub shared_buffers_mb: u32,
}

impl Default for DataSpec {
    fn default() -> Self {
        Self {
            products: 100_000,
            per_product: 16,
            seed: 42,
            shared_buffers_mb: 128,
        }
    }
}

/// Load settings a stage inherits unless it sets its own.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoadDefaults {
    pub users: usize,
    pub warmup_secs: u64,
    pub duration_secs: u64,
    pub unknown_share: f64,
    pub pool_size: u32,
    pub ids: IdDistribution,
}

impl Default for LoadDefaults {
    fn default() -> Self {
        Self {
            users: 64,
            warmup_secs: 3,
            duration_secs: 20,
            unknown_share: 0.01,
            pool_size: 8,
            ids: IdDistribution::Uniform,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StageKind {
    /// Single timed queries and EXPLAIN ANALYZE without and with the B-tree index.
    Index,
    #[default]
    Load,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NginxMode {
    #[default]
    Off,
    Untuned,
    Tuned,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    pub name: String,
    /// What this stage changes, in the story's words.
    #[serde(default)]
    pub note: String,
    #[serde(default)]
    pub kind: StageKind,
    #[serde(default = "one")]
    pub replicas: usize,
    #[serde(default = "one")]
    pub api_instances: usize,
    #[serde(default)]
    pub nginx: NginxMode,
    #[serde(default)]
    pub cache: bool,
    #[serde(default = "default_cache_capacity")]
    pub cache_capacity: u64,
    /// Budget of each serving replica.
    #[serde(default)]
    pub db_budget: Budget,
    /// Budget of each API instance.
    #[serde(default)]
    pub api_budget: Budget,
    pub users: Option<usize>,
    pub duration_secs: Option<u64>,
    pub ids: Option<IdDistribution>,
}

fn one() -> usize {
    1
}
fn default_cache_capacity() -> u64 {
    100_000
}

/// Options from the command line that apply to the whole run.
#[derive(Debug, Clone)]
pub struct JourneyOptions {
    pub out_dir: PathBuf,
    pub stack_dir: PathBuf,
    /// The program that serves the API (`serve-api`): normally this binary.
    pub api_program: PathBuf,
    pub products: Option<u64>,
    pub duration_secs: Option<u64>,
    pub users: Option<usize>,
    pub goose_args: Vec<String>,
    pub quiet: bool,
}

/// CPU one component used in the measured window, against its limit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ComponentCpu {
    pub component: String,
    pub cpu_secs: f64,
    /// Cores it may use: its budget, or the machine's cores when unbudgeted.
    pub limit_cores: f64,
    pub budgeted: bool,
    /// cpu_secs / (window x limit_cores).
    pub utilization: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StageTopology {
    pub replicas: usize,
    pub api_instances: usize,
    pub nginx: NginxMode,
    pub cache: bool,
    pub users: usize,
    pub ids: String,
    pub db_budget: BudgetState,
    pub api_budget: BudgetState,
    /// False when any budget the stage asked for could not be enforced.
    pub budgeted: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StageResult {
    pub number: usize,
    pub name: String,
    pub note: String,
    pub kind: StageKind,
    pub topology: Option<StageTopology>,
    pub load: Option<LoadResult>,
    pub index: Option<IndexProbe>,
    pub cpu: Vec<ComponentCpu>,
    pub machine_cpu_utilization: f64,
    pub nginx_errors: Option<NginxErrors>,
    pub bottleneck: String,
    pub verdict: String,
    pub goose_report: Option<String>,
}

/// Cores, memory and versions of the machine a journey ran on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Machine {
    pub cores: usize,
    pub memory_gib: f64,
    pub cpu_model: String,
    pub kernel: String,
    pub postgres: String,
    pub nginx: String,
    pub loadgen: String,
}

impl Machine {
    pub fn detect(cluster: Option<&Cluster>) -> Machine {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kb: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_default();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string();
        let nginx = stack::nginx::find_binary()
            .ok()
            .and_then(|b| std::process::Command::new(b).arg("-v").output().ok())
            .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
            .unwrap_or_else(|| "not found".into());
        Machine {
            cores: stack::process::cores(),
            memory_gib: (mem_kb / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            cpu_model,
            kernel,
            postgres: cluster.map(|c| c.binaries().version()).unwrap_or_default(),
            nginx,
            loadgen: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JourneyReport {
    pub journey: String,
    pub started_at: String,
    pub machine: Machine,
    pub products: u64,
    pub relation_rows: u64,
    pub seed_secs: f64,
    pub stages: Vec<StageResult>,
    pub command: String,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Make Ctrl-C stop the journey cleanly: the running load ends (goose's killswitch) and every
/// server is torn down by the values that own it.
pub fn install_interrupt_handler() {
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            eprintln!("interrupted again: exiting without cleaning up");
            std::process::exit(130);
        }
        eprintln!("interrupted: stopping the load and tearing the topology down...");
        goose::trigger_killswitch("interrupted");
    });
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

pub fn check_interrupt() -> anyhow::Result<()> {
    if interrupted() {
        anyhow::bail!("interrupted by Ctrl-C; the topology was torn down");
    }
    Ok(())
}

async fn until_interrupted() {
    while !interrupted() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Run every stage and write the results. Returns the report and the folder it went to.
pub async fn run_journey(
    file: &JourneyFile,
    opts: &JourneyOptions,
) -> anyhow::Result<(JourneyReport, PathBuf)> {
    let started_at = chrono::Utc::now();
    let run_dir = opts
        .out_dir
        .join(format!("{}", started_at.format("%Y%m%d-%H%M%S")));
    std::fs::create_dir_all(&run_dir)?;
    let products = opts.products.unwrap_or(file.data.products);
    let say = |msg: &str| {
        if !opts.quiet {
            eprintln!("{msg}");
        }
    };

    say(&format!(
        "journey {:?}: {} stages, {products} products x {} related",
        file.name,
        file.stages.len(),
        file.data.per_product
    ));
    let mut cluster = Cluster::create(ClusterSpec {
        dir: opts.stack_dir.clone(),
        replicas: 1,
        settings: PgSettings {
            shared_buffers_mb: file.data.shared_buffers_mb,
            ..PgSettings::default()
        },
        primary_port: None,
    })
    .await?;
    check_interrupt()?;

    let needs_index_stage = file.stages.first().map(|s| s.kind) == Some(StageKind::Index);
    let seed_opts = seeder::SeedOptions {
        products,
        per_product: file.data.per_product,
        seed: file.data.seed,
        no_index: needs_index_stage,
        quiet: opts.quiet,
        ..seeder::SeedOptions::default()
    };
    let seed_started = Instant::now();
    let primary_url = cluster.primary_url();
    tokio::select! {
        r = seeder::seed(&primary_url, &seed_opts) => { r?; }
        _ = until_interrupted() => check_interrupt()?,
    }
    let seed_secs = seed_started.elapsed().as_secs_f64();
    cluster.wait_for_replicas(Duration::from_secs(600)).await?;

    let mut report = JourneyReport {
        journey: file.name.clone(),
        started_at: started_at.to_rfc3339(),
        machine: Machine::detect(Some(&cluster)),
        products,
        relation_rows: products * file.data.per_product as u64,
        seed_secs: (seed_secs * 10.0).round() / 10.0,
        stages: Vec::new(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    let mut db_budgets: Vec<Budgeted> = Vec::new();
    let mut indexed = !needs_index_stage;
    let bar = if opts.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(file.stages.len() as u64).with_style(
            ProgressStyle::with_template("[{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
                .expect("valid template"),
        )
    };

    for (i, stage) in file.stages.iter().enumerate() {
        check_interrupt()?;
        let number = i + 1;
        bar.set_message(format!("stage {number}: {}", stage.name));
        let result = match stage.kind {
            StageKind::Index => {
                let probe = if indexed {
                    None
                } else {
                    let p = probe_index(&cluster, products).await?;
                    cluster.wait_for_replicas(Duration::from_secs(600)).await?;
                    indexed = true;
                    Some(p)
                };
                index_stage_result(number, stage, probe)
            }
            StageKind::Load => {
                if !indexed {
                    seeder::build_relation_index(&cluster.primary_url(), true).await?;
                    cluster.wait_for_replicas(Duration::from_secs(600)).await?;
                    indexed = true;
                }
                run_load_stage(
                    number,
                    stage,
                    file,
                    opts,
                    products,
                    &mut cluster,
                    &mut db_budgets,
                    &run_dir,
                )
                .await?
            }
        };
        bar.suspend(|| {
            say(&format!(
                "stage {number} ({}): {}",
                stage.name, result.verdict
            ))
        });
        report.stages.push(result);
        bar.inc(1);
        // Write after every stage, so an interrupted journey keeps what it measured.
        crate::report::write_all(&run_dir, &report)?;
    }
    bar.finish_and_clear();
    drop(db_budgets);
    drop(cluster);
    Ok((report, run_dir))
}

fn index_stage_result(number: usize, stage: &StageSpec, probe: Option<IndexProbe>) -> StageResult {
    let verdict = match &probe {
        Some(p) => format!(
            "without the index one lookup takes {:.1} ms (sequential scan of {} rows); with it {:.3} ms: {:.0}x faster",
            p.without_index_ms_median, p.relation_rows, p.with_index_ms_median, p.speedup
        ),
        None => "the relation index already existed; nothing to compare".into(),
    };
    StageResult {
        number,
        name: stage.name.clone(),
        note: stage.note.clone(),
        kind: StageKind::Index,
        topology: None,
        load: None,
        bottleneck: if probe.is_some() {
            "database (no index)".into()
        } else {
            String::new()
        },
        index: probe,
        cpu: Vec::new(),
        machine_cpu_utilization: 0.0,
        nginx_errors: None,
        verdict,
        goose_report: None,
    }
}

#[derive(Clone)]
struct Snapshot {
    at: Instant,
    db: Duration,
    api: Duration,
    nginx: Duration,
    generator: Duration,
    machine: Duration,
}

#[allow(clippy::too_many_arguments)]
async fn run_load_stage(
    number: usize,
    stage: &StageSpec,
    file: &JourneyFile,
    opts: &JourneyOptions,
    products: u64,
    cluster: &mut Cluster,
    db_budgets: &mut Vec<Budgeted>,
    run_dir: &Path,
) -> anyhow::Result<StageResult> {
    while cluster.replica_indexes().len() < stage.replicas {
        check_interrupt()?;
        cluster.add_replica().await?;
    }
    let serving: Vec<usize> = cluster.replica_indexes()[..stage.replicas].to_vec();
    for (k, &node) in serving.iter().enumerate() {
        let pid = cluster
            .pid(node)
            .ok_or_else(|| anyhow::anyhow!("replica {node} is not running"))?;
        if k < db_budgets.len() {
            db_budgets[k].change(&format!("db{k}"), pid, stage.db_budget);
        } else {
            db_budgets.push(Budgeted::apply(&format!("db{k}"), pid, stage.db_budget));
        }
    }
    let db_pids: Vec<i32> = serving.iter().filter_map(|&n| cluster.pid(n)).collect();

    let stage_dir = run_dir.join(format!("stage-{number}"));
    let nginx = match stage.nginx {
        NginxMode::Off => None,
        NginxMode::Untuned => Some(NginxSettings::untuned()),
        NginxMode::Tuned => Some(NginxSettings::tuned()),
    };
    let launch = ApiLaunch {
        program: opts.api_program.clone(),
        replica_urls: serving.iter().map(|&n| cluster.api_url(n)).collect(),
        cache_capacity: if stage.cache { stage.cache_capacity } else { 0 },
        pool_size: file.defaults.pool_size,
        extra_args: Vec::new(),
    };
    let tier = ApiTier::start(
        &launch,
        stage.api_instances,
        stage.api_budget,
        nginx,
        &stage_dir,
    )
    .await?;
    let api_pids: Vec<i32> = tier.instances.iter().map(|i| i.pid()).collect();
    let nginx_pid = tier.nginx.as_ref().map(|n| n.pid());

    let users = opts.users.or(stage.users).unwrap_or(file.defaults.users);
    let duration = opts
        .duration_secs
        .or(stage.duration_secs)
        .unwrap_or(file.defaults.duration_secs);
    let ids = stage.ids.unwrap_or(file.defaults.ids);
    let report_html = run_dir.join(format!("stage-{number}-goose.html"));
    let spec = LoadSpec {
        host: tier.entry_url(),
        users,
        warmup: Duration::from_secs(file.defaults.warmup_secs),
        duration: Duration::from_secs(duration),
        products,
        expected_items: Some(file.data.per_product as usize),
        ids,
        unknown_share: file.defaults.unknown_share,
        report_files: vec![report_html.clone()],
        goose_args: opts.goose_args.clone(),
        request_timeout: Duration::from_secs(10),
    };
    let sample = move || Snapshot {
        at: Instant::now(),
        db: db_pids.iter().map(|&p| process_tree_cpu(p)).sum(),
        api: api_pids.iter().map(|&p| process_tree_cpu(p)).sum(),
        nginx: nginx_pid.map(process_tree_cpu).unwrap_or_default(),
        generator: own_cpu(),
        machine: machine_busy_cpu(),
    };
    let (load, start, end) = match run_load(&spec, sample).await {
        Ok(r) => r,
        Err(LoadError::Interrupted) => {
            anyhow::bail!("interrupted by Ctrl-C; the topology was torn down")
        }
        Err(e) => return Err(e.into()),
    };
    let nginx_errors = tier.nginx.as_ref().map(|n| n.errors());
    let api_budget = tier
        .budgets
        .first()
        .map(|b| b.state.clone())
        .unwrap_or(BudgetState {
            budget: stage.api_budget,
            unbudgeted_reason: None,
        });
    drop(tier);

    let window = (end.at - start.at).as_secs_f64().max(0.001);
    let cores = stack::process::cores() as f64;
    let db_state = db_budgets[0].state.clone();
    let component = |name: &str, used: Duration, budget: &BudgetState, count: usize| {
        let budgeted = budget.enforced() && budget.budget.cpus.is_some();
        let limit = if budgeted {
            (budget.budget.cpus.unwrap_or(cores) * count as f64).min(cores)
        } else {
            cores
        };
        let cpu_secs = used.as_secs_f64();
        ComponentCpu {
            component: name.to_string(),
            cpu_secs: round3(cpu_secs),
            limit_cores: round3(limit),
            budgeted,
            utilization: round3(cpu_secs / (window * limit)),
        }
    };
    let unbudgeted = BudgetState {
        budget: Budget::default(),
        unbudgeted_reason: None,
    };
    let mut cpu = vec![
        component("database", end.db - start.db, &db_state, stage.replicas),
        component("api", end.api - start.api, &api_budget, stage.api_instances),
    ];
    if stage.nginx != NginxMode::Off {
        cpu.push(component("nginx", end.nginx - start.nginx, &unbudgeted, 1));
    }
    cpu.push(component(
        "load generator",
        end.generator - start.generator,
        &unbudgeted,
        1,
    ));
    let machine_cpu_utilization =
        round3((end.machine - start.machine).as_secs_f64() / (window * cores));
    let (bottleneck, verdict) =
        verdict(&cpu, &load, nginx_errors.as_ref(), machine_cpu_utilization);

    let budgeted = [&db_state, &api_budget].iter().all(|b| b.enforced());
    Ok(StageResult {
        number,
        name: stage.name.clone(),
        note: stage.note.clone(),
        kind: StageKind::Load,
        topology: Some(StageTopology {
            replicas: stage.replicas,
            api_instances: stage.api_instances,
            nginx: stage.nginx,
            cache: stage.cache,
            users,
            ids: ids.to_string(),
            db_budget: db_state,
            api_budget,
            budgeted,
        }),
        load: Some(load),
        index: None,
        cpu,
        machine_cpu_utilization,
        nginx_errors,
        bottleneck,
        verdict,
        goose_report: report_html
            .file_name()
            .map(|n| n.to_string_lossy().into_owned()),
    })
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Name the component closest to its limit. Errors caused by nginx's own limits come first:
/// a proxy that refuses connections caps throughput whatever the CPU readings say.
pub fn verdict(
    cpu: &[ComponentCpu],
    load: &LoadResult,
    nginx_errors: Option<&NginxErrors>,
    machine_utilization: f64,
) -> (String, String) {
    if let Some(e) = nginx_errors {
        if load.error_rate > 0.01 || e.too_many_open_files + e.worker_connections_not_enough > 0 {
            let mut what = Vec::new();
            if e.too_many_open_files > 0 {
                what.push(format!(
                    "{} x \"Too many open files\"",
                    e.too_many_open_files
                ));
            }
            if e.worker_connections_not_enough > 0 {
                what.push(format!(
                    "{} x \"worker_connections are not enough\"",
                    e.worker_connections_not_enough
                ));
            }
            if !what.is_empty() {
                return (
                    "nginx".into(),
                    format!(
                        "nginx: {} ({:.1}% of requests failed)",
                        what.join(", "),
                        load.error_rate * 100.0
                    ),
                );
            }
        }
    }
    let top = cpu
        .iter()
        .max_by(|a, b| a.utilization.total_cmp(&b.utilization))
        .expect("at least one component");
    if machine_utilization > 0.9 && top.utilization < 0.8 {
        // Nothing is at its own limit, yet the cores are all busy: the components (and anything
        // else on the machine) are starving each other.
        let shares: Vec<String> = cpu
            .iter()
            .map(|c| format!("{} {:.0}%", c.component, c.utilization * 100.0))
            .collect();
        return (
            "machine CPU".into(),
            format!(
                "the machine's CPU is {:.0}% busy while no component is at its own limit ({})",
                machine_utilization * 100.0,
                shares.join(", ")
            ),
        );
    }
    let limit = if top.budgeted {
        format!("its budget of {} CPU", top.limit_cores)
    } else {
        format!("the machine's {} cores", top.limit_cores)
    };
    let mut verdict = format!(
        "{} at {:.0}% of {limit}",
        top.component,
        top.utilization * 100.0
    );
    if machine_utilization > 0.9 {
        verdict.push_str(&format!(
            "; the machine itself is {:.0}% busy",
            machine_utilization * 100.0
        ));
    }
    if top.component == "load generator" {
        verdict.push_str(" (the generator saturates before the server: add cores or lower users)");
    }
    if load.error_rate > 0.01 {
        verdict.push_str(&format!(
            "; {:.1}% of requests failed",
            load.error_rate * 100.0
        ));
    }
    (top.component.clone(), verdict)
}

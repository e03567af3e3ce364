//! The `loadgen` command: the journey (the README's main command), single load runs, the CI
//! baseline, `up`/`status`/`down` (the one way to start, inspect and remove a topology; the
//! `stack` crate is the library behind them), and `api`, the API server inside this binary, which
//! the journey and the baseline use to start API instances as separate processes.
//!
//! Ctrl-C becomes a [`Cancel`] value here, handed to the journey and the baseline.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::baseline::{self, GateOptions, ReferenceSource};
use crate::cancel::Cancel;
use crate::drill::faults::{Fault, Holds};
use crate::drill::soak::{self, SoakOptions};
use crate::drill::{self, DrillOptions, RigOptions};
use crate::ids::IdDistribution;
use crate::journey::{self, JourneyFile, JourneyOptions, JourneyPlan, Overrides};
use crate::scenario::{run_load, LoadSpec};

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Load generator and requests-per-second journey for the related-items API"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the journey: seed once, then build, load and measure each stage's topology.
    Journey(JourneyArgs),
    /// Send the storefront-widget load to a running API (or nginx) and report percentiles.
    Run(RunArgs),
    /// Short fixed workload, normalised by pgbench, compared with the committed baseline.
    Baseline(BaselineArgs),
    /// Bring up a primary with replicas, seed it, and leave it running (`loadgen down` stops it).
    /// On a folder that already holds a topology, start what is stopped from its own data (same
    /// ports and passwords) and finish an unfinished seed; `--fresh` removes it first.
    /// With `--products 0`, only the servers: no schema, no data.
    Up(SeededUpArgs),
    /// Show the topology `up` started.
    Status(DirArg),
    /// Stop and remove the topology `up` started: the only command that deletes its data.
    Down(DirArg),
    /// Stop one server gracefully (its data stays; `start` or `up` starts it again).
    Stop(NodeArgs),
    /// Start one stopped server from its data, on its recorded port.
    Start(NodeArgs),
    /// Crash one server: `kill -9` of its postmaster, as if its host died.
    Kill(NodeArgs),
    /// Freeze one server (SIGSTOP to all its processes): connections hang, nothing answers.
    Pause(NodeArgs),
    /// Let a paused server run again (SIGCONT).
    Resume(NodeArgs),
    /// Fault drill: steady traffic through nginx while replicas, an API instance and the
    /// primary are crashed, frozen, restarted, filled and saturated in turn; a table of
    /// requests, failures, gaps and recovery per fault (JSON and Markdown in `--out`).
    Drill(DrillArgs),
    /// Soak: measure the maximum, then run at a share of it (cache on) for minutes while
    /// sampling the API processes' resident memory and open file descriptors.
    Soak(SoakArgs),
    /// Serve the API in this process: the same flags and environment variables as the `api`
    /// binary; the journey and baseline start their API instances this way so one binary holds
    /// everything.
    #[command(alias = "serve-api")]
    Api(ApiArgs),
}

#[derive(Debug, Args)]
pub struct JourneyArgs {
    /// Journey file (TOML); the built-in default journey when not given.
    #[arg(long, env = "LOADGEN_JOURNEY")]
    pub file: Option<PathBuf>,
    /// Folder for the results; each run gets a timestamped subfolder.
    #[arg(long, env = "LOADGEN_OUT", default_value = "results/journey")]
    pub out: PathBuf,
    /// Folder for the journey's PostgreSQL servers (removed at the end).
    #[arg(long, env = "LOADGEN_STACK_DIR", default_value = ".stack/journey")]
    pub stack_dir: PathBuf,
    /// Products to seed, overriding the journey file (10000000 = the full 170M rows).
    #[arg(long, env = "LOADGEN_PRODUCTS")]
    pub products: Option<u64>,
    /// Measured seconds of every load stage, overriding the journey file.
    #[arg(long, env = "LOADGEN_DURATION_SECS")]
    pub duration_secs: Option<u64>,
    /// Simulated users of every load stage, overriding the journey file.
    #[arg(long, env = "LOADGEN_USERS")]
    pub users: Option<usize>,
    /// No progress output.
    #[arg(long, env = "LOADGEN_QUIET")]
    pub quiet: bool,
    /// Print the default journey file and exit.
    #[arg(long)]
    pub print_default: bool,
    /// Exit non-zero when a stage does not have the shape its journey file expects of it (the
    /// `expect` of each stage), after writing every result.
    #[arg(long, env = "LOADGEN_CHECK_SHAPE")]
    pub check_shape: bool,
    /// Further goose options for every stage, after `--`.
    #[arg(last = true)]
    pub goose_args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Base URL of the API or of nginx in front of it.
    #[arg(long, env = "LOADGEN_HOST", default_value = "http://127.0.0.1:8080")]
    pub host: String,
    /// Seeded products: ids are drawn from 1..=N.
    #[arg(long, env = "LOADGEN_PRODUCTS", default_value_t = 10_000)]
    pub products: u64,
    /// Related items each known product must return (0: do not check).
    #[arg(long, env = "LOADGEN_PER_PRODUCT", default_value_t = 16)]
    pub per_product: usize,
    /// `uniform` or `zipf:S` (e.g. zipf:1.0).
    #[arg(long, env = "LOADGEN_IDS", default_value = "uniform")]
    pub ids: IdDistribution,
    /// Share of requests for ids that do not exist (their 404 is expected).
    #[arg(long, env = "LOADGEN_UNKNOWN_SHARE", default_value_t = 0.01)]
    pub unknown_share: f64,
    #[arg(long, env = "LOADGEN_USERS", default_value_t = 64)]
    pub users: usize,
    #[arg(long, env = "LOADGEN_WARMUP_SECS", default_value_t = 3)]
    pub warmup_secs: u64,
    #[arg(long, env = "LOADGEN_DURATION_SECS", default_value_t = 20)]
    pub duration_secs: u64,
    /// goose report files to write (.html, .json, .md); repeat for several.
    #[arg(long, env = "LOADGEN_REPORT_FILE", value_delimiter = ',')]
    pub report_file: Vec<PathBuf>,
    /// Write this run's figures (with microsecond percentiles) as JSON here.
    #[arg(long, env = "LOADGEN_JSON")]
    pub json: Option<PathBuf>,
    /// Further goose options, after `--`.
    #[arg(last = true)]
    pub goose_args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct BaselineArgs {
    /// The committed baseline: its commit is built and run as the reference; its figure is the
    /// trend, and the verdict only when no reference can run.
    #[arg(
        long,
        env = "LOADGEN_BASELINE",
        default_value = "results/baseline.json"
    )]
    pub baseline: PathBuf,
    /// Where to write this run's JSON (the gate's report; goose's reports go under --work-dir).
    #[arg(
        long,
        env = "LOADGEN_BASELINE_OUT",
        default_value = "target/loadgen/baseline-run.json"
    )]
    pub out: PathBuf,
    /// Allowed throughput drop: fail when the whole 95% interval of candidate/reference requests/s
    /// lies below 1 - this (results/baseline.md: the A/A study behind the default).
    #[arg(long, env = "LOADGEN_TOLERANCE", default_value_t = 0.10)]
    pub tolerance: f64,
    /// Allowed p99 growth at the paced rate: fail when the whole interval of candidate/reference
    /// p99 lies above 1 + this.
    #[arg(long, env = "LOADGEN_LATENCY_TOLERANCE", default_value_t = 0.25)]
    pub latency_tolerance: f64,
    /// Allowed growth of the API's CPU time per request: fail when the whole interval of
    /// candidate/reference lies above 1 + this.
    #[arg(long, env = "LOADGEN_CPU_TOLERANCE", default_value_t = 0.10)]
    pub cpu_tolerance: f64,
    /// Allowed drop of the recorded figure (requests/s per pgbench transaction/s) when there is
    /// no reference to run.
    #[arg(long, env = "LOADGEN_RECORDED_TOLERANCE", default_value_t = 0.30)]
    pub recorded_tolerance: f64,
    /// Run this program (`PROGRAM api ...`) as the reference instead of building the recorded
    /// commit: an A/A study passes this binary itself.
    #[arg(
        long,
        env = "LOADGEN_REFERENCE_PROGRAM",
        conflicts_with = "no_reference"
    )]
    pub reference_program: Option<PathBuf>,
    /// Run no reference: the verdict is the recorded figure's.
    #[arg(long, env = "LOADGEN_NO_REFERENCE")]
    pub no_reference: bool,
    /// The candidate API's pool size (the reference always gets 8): a smaller pool is a known
    /// slower candidate, for showing that the gate fails.
    #[arg(long, env = "LOADGEN_CANDIDATE_POOL_SIZE", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub candidate_pool_size: u32,
    /// A further `api` flag for the candidate alone (repeat it): e.g. `--debug-spin-us=300`,
    /// which debug builds of the API have, is a known slower candidate for the gate's own test.
    #[arg(
        long = "candidate-api-arg",
        env = "LOADGEN_CANDIDATE_API_ARGS",
        value_delimiter = ' ',
        allow_hyphen_values = true
    )]
    pub candidate_api_args: Vec<String>,
    /// The paced rounds' offered rate as a share of the reference's closed-loop maximum.
    #[arg(long, env = "LOADGEN_PACED_SHARE", default_value_t = 0.5)]
    pub paced_share: f64,
    /// Record this run as the new baseline (the candidate alone, at the current commit).
    #[arg(long)]
    pub update: bool,
    #[arg(long, env = "LOADGEN_BASELINE_PRODUCTS", default_value_t = 20_000)]
    pub products: u64,
    #[arg(long, env = "LOADGEN_BASELINE_USERS", default_value_t = 32)]
    pub users: usize,
    /// Seconds of each measurement (closed loop and paced, per API per round).
    #[arg(long, env = "LOADGEN_BASELINE_ROUND_SECS", default_value_t = 6)]
    pub round_secs: u64,
    /// Rounds of both APIs (at least 3: one or two give no usable interval).
    #[arg(long, env = "LOADGEN_BASELINE_ROUNDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(3..=100))]
    pub rounds: u64,
    #[arg(long, env = "LOADGEN_STACK_DIR", default_value = ".stack/baseline")]
    pub stack_dir: PathBuf,
    /// The reference's worktree and build folder, and goose's reports.
    #[arg(long, env = "LOADGEN_GATE_DIR", default_value = "target/gate")]
    pub work_dir: PathBuf,
    #[arg(long, env = "LOADGEN_QUIET")]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct SeededUpArgs {
    #[command(flatten)]
    pub stack: stack::cli::UpArgs,
    /// Folder of the topology (its servers' data, ports and passwords).
    #[arg(long, env = "STACK_DIR", default_value = ".stack/dev")]
    pub dir: PathBuf,
    /// Products to seed (x per-product related items); 0 starts the servers only, without the
    /// schema.
    #[arg(long, env = "SEED_PRODUCTS", default_value_t = 100_000)]
    pub products: u64,
    #[arg(long, env = "SEED_PER_PRODUCT", default_value_t = 16)]
    pub per_product: u32,
    #[arg(long, env = "SEED_SEED", default_value_t = 42)]
    pub seed: u64,
    /// Remove an existing topology in `--dir` (its servers and all their data) and start anew.
    #[arg(long, env = "STACK_FRESH")]
    pub fresh: bool,
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The server: `primary`, `replica1`, `replica2`, ... (as `loadgen status` lists them).
    pub node: String,
    /// Folder of the topology `up` started.
    #[arg(long, env = "STACK_DIR", default_value = ".stack/dev")]
    pub dir: PathBuf,
}

/// The topology a drill or a soak builds (removed at the end).
#[derive(Debug, Args)]
pub struct RigArgs {
    /// Replicas (2 or more).
    #[arg(long, env = "LOADGEN_DRILL_REPLICAS", default_value_t = 2)]
    pub replicas: usize,
    /// API instances behind nginx.
    #[arg(long, env = "LOADGEN_DRILL_API_INSTANCES", default_value_t = 2)]
    pub api_instances: usize,
    /// Products to seed (x 16 related items).
    #[arg(long, env = "LOADGEN_PRODUCTS", default_value_t = 100_000)]
    pub products: u64,
    /// Connections per replica in each API instance's pool.
    #[arg(long, env = "LOADGEN_DRILL_POOL_SIZE", default_value_t = 16)]
    pub pool_size: u32,
    /// `max_connections` of every PostgreSQL server.
    #[arg(long, env = "LOADGEN_DRILL_MAX_CONNECTIONS", default_value_t = 100)]
    pub max_connections: u32,
}

impl RigArgs {
    fn options(&self, stack_dir: PathBuf, cache_capacity: u64) -> anyhow::Result<RigOptions> {
        Ok(RigOptions {
            stack_dir,
            api_program: own_program()?,
            replicas: self.replicas,
            api_instances: self.api_instances,
            products: self.products,
            cache_capacity,
            pool_size: self.pool_size,
            max_connections: self.max_connections,
        })
    }
}

#[derive(Debug, Args)]
pub struct DrillArgs {
    #[command(flatten)]
    pub rig: RigArgs,
    /// Folder for the results; each run gets a timestamped subfolder.
    #[arg(long, env = "LOADGEN_OUT", default_value = "results/drill")]
    pub out: PathBuf,
    /// Folder for the drill's PostgreSQL servers (removed at the end).
    #[arg(long, env = "LOADGEN_STACK_DIR", default_value = ".stack/drill")]
    pub stack_dir: PathBuf,
    /// Faults to run, in this order (comma-separated); all of them when not given.
    #[arg(long, env = "LOADGEN_DRILL_FAULTS", value_enum, value_delimiter = ',')]
    pub faults: Vec<Fault>,
    /// Requests per second of the steady traffic.
    #[arg(long, env = "LOADGEN_DRILL_RATE", default_value_t = 300.0)]
    pub rate: f64,
    /// Paced workers sending it (each waits for its answer).
    #[arg(long, env = "LOADGEN_DRILL_WORKERS", default_value_t = 32)]
    pub workers: usize,
    /// Response cache entries per API instance (0: off, so every request reaches a replica).
    #[arg(long, env = "LOADGEN_DRILL_CACHE_CAPACITY", default_value_t = 0)]
    pub cache_capacity: u64,
    /// Seconds of steady traffic before each fault (its success rate is the baseline).
    #[arg(long, env = "LOADGEN_DRILL_SETTLE_SECS", default_value_t = 3.0)]
    pub settle_secs: f64,
    /// Seconds each fault holds (a killed, frozen or stopped server stays so this long).
    #[arg(long, env = "LOADGEN_DRILL_HOLD_SECS", default_value_t = 5.0)]
    pub hold_secs: f64,
    /// Seconds of the saturation fault.
    #[arg(long, env = "LOADGEN_DRILL_SATURATION_SECS", default_value_t = 60.0)]
    pub saturation_secs: f64,
    /// CPU budget of the saturated replica, in cores (where cgroups allow).
    #[arg(long, env = "LOADGEN_DRILL_SATURATION_CPUS", default_value_t = 0.05)]
    pub saturation_cpus: f64,
    /// Connections running full-table scans on the saturated replica.
    #[arg(long, env = "LOADGEN_DRILL_SATURATION_SCANS", default_value_t = 2)]
    pub saturation_scans: usize,
    /// Seconds of traffic watched after each restore (2 or more).
    #[arg(long, env = "LOADGEN_DRILL_OBSERVE_SECS", default_value_t = 10.0)]
    pub observe_secs: f64,
    /// Exit non-zero when a fault misses the target, after writing every result.
    #[arg(long, env = "LOADGEN_DRILL_CHECK")]
    pub check: bool,
    /// No progress output.
    #[arg(long, env = "LOADGEN_QUIET")]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct SoakArgs {
    #[command(flatten)]
    pub rig: RigArgs,
    /// Folder for the results; each run gets a timestamped subfolder.
    #[arg(long, env = "LOADGEN_OUT", default_value = "results/soak")]
    pub out: PathBuf,
    /// Folder for the soak's PostgreSQL servers (removed at the end).
    #[arg(long, env = "LOADGEN_STACK_DIR", default_value = ".stack/soak")]
    pub stack_dir: PathBuf,
    /// Seconds of the soak.
    #[arg(long, env = "LOADGEN_DURATION_SECS", default_value_t = 600)]
    pub duration_secs: u64,
    /// Seconds of the closed-loop run that measures the maximum.
    #[arg(long, env = "LOADGEN_SOAK_PROBE_SECS", default_value_t = 15)]
    pub probe_secs: u64,
    /// Share of the maximum to soak at.
    #[arg(long, env = "LOADGEN_SOAK_SHARE", default_value_t = 0.7)]
    pub share: f64,
    /// Seconds between samples of memory and descriptors.
    #[arg(long, env = "LOADGEN_SOAK_SAMPLE_SECS", default_value_t = 10)]
    pub sample_secs: u64,
    /// Seconds of warm-up left out of the flatness check (the cache fills, pools open).
    #[arg(long, env = "LOADGEN_WARMUP_SECS", default_value_t = 60)]
    pub warmup_secs: u64,
    /// Users of the closed-loop run that measures the maximum.
    #[arg(long, env = "LOADGEN_USERS", default_value_t = 64)]
    pub users: usize,
    /// Users of the throttled soak (more than the probe's, so the throttle sets the rate).
    #[arg(long, env = "LOADGEN_SOAK_USERS", default_value_t = 256)]
    pub soak_users: usize,
    /// `uniform` or `zipf:S`.
    #[arg(long, env = "LOADGEN_IDS", default_value = "zipf:1.0")]
    pub ids: IdDistribution,
    /// Response cache entries per API instance.
    #[arg(long, env = "LOADGEN_SOAK_CACHE_CAPACITY", default_value_t = 100_000)]
    pub cache_capacity: u64,
    /// Exit non-zero when a request failed or memory or descriptors grew.
    #[arg(long, env = "LOADGEN_SOAK_CHECK")]
    pub check: bool,
    #[arg(long, env = "LOADGEN_QUIET")]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct DirArg {
    /// Folder of the topology `up` started.
    #[arg(long, env = "STACK_DIR", default_value = ".stack/dev")]
    pub dir: PathBuf,
}

#[derive(Args)]
pub struct ApiArgs {
    #[command(flatten)]
    pub config: api::Config,
}

/// Written by hand: the API's configuration holds replica URLs with their password, so it has no
/// `Debug` of its own, and printing the command must not print them.
impl std::fmt::Debug for ApiArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiArgs").finish_non_exhaustive()
    }
}

/// `value` as pretty JSON with a final newline, creating the folder it goes in.
fn write_json(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    journey::report::write_file(path, |w| {
        serde_json::to_writer_pretty(&mut *w, value)?;
        w.write_all(b"\n")
    })?;
    Ok(())
}

fn own_program() -> anyhow::Result<PathBuf> {
    Ok(std::env::current_exe()?)
}

/// This process's command line as typed (arguments hold no secrets: those go in files and the
/// environment), recorded in the drill's and the soak's reports.
fn command_line() -> String {
    let mut args = std::env::args();
    let program = args
        .next()
        .map(|p| {
            Path::new(&p)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or(p)
        })
        .unwrap_or_default();
    std::iter::once(program)
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ")
}

fn open_node(args: &NodeArgs) -> anyhow::Result<(stack::Cluster, usize)> {
    let cluster = stack::Cluster::open(&args.dir)?;
    let node = cluster.node_named(&args.node)?;
    Ok((cluster, node))
}

pub async fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    use std::process::ExitCode;
    match cli.command {
        Command::Api(args) => {
            api::serve(args.config).await?;
        }
        Command::Journey(args) => {
            if args.print_default {
                print!("{}", journey::DEFAULT_JOURNEY);
                return Ok(ExitCode::SUCCESS);
            }
            let cancel = Cancel::on_ctrl_c();
            let (text, origin) = match &args.file {
                Some(p) => (
                    std::fs::read_to_string(p)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
                    p.display().to_string(),
                ),
                None => (
                    journey::DEFAULT_JOURNEY.to_string(),
                    "default journey".to_string(),
                ),
            };
            let file = JourneyFile::parse(&text, &origin)?;
            let plan = JourneyPlan::resolve(
                &file,
                &Overrides {
                    products: args.products,
                    duration_secs: args.duration_secs,
                    users: args.users,
                },
            );
            let opts = JourneyOptions {
                out_dir: args.out,
                stack_dir: args.stack_dir,
                api_program: own_program()?,
                goose_args: args.goose_args,
                quiet: args.quiet,
            };
            let (report, dir) = journey::run_journey(&plan, &opts, &cancel).await?;
            let mut out = std::io::stdout().lock();
            journey::report::write_markdown(&report, &mut out)?;
            writeln!(out)?;
            writeln!(out, "results: {}", dir.display())?;
            if args.check_shape {
                match report.shape_holds {
                    Some(true) => writeln!(out, "--check-shape: the story's shape holds")?,
                    Some(false) => {
                        writeln!(
                            out,
                            "--check-shape: the story's shape does not hold (see the table)"
                        )?;
                        return Ok(ExitCode::FAILURE);
                    }
                    None => {
                        writeln!(out, "--check-shape: this journey file states no expectation (`expect` on a stage)")?;
                        return Ok(ExitCode::FAILURE);
                    }
                }
            }
        }
        Command::Run(args) => {
            let spec = LoadSpec {
                host: args.host,
                users: args.users,
                warmup: Duration::from_secs(args.warmup_secs),
                duration: Duration::from_secs(args.duration_secs),
                products: args.products,
                expected_items: (args.per_product > 0).then_some(args.per_product),
                ids: args.ids,
                unknown_share: args.unknown_share,
                report_files: args.report_file,
                goose_args: args.goose_args,
                request_timeout: Duration::from_secs(10),
                lists_change: false,
            };
            // goose's own Ctrl-C handler stops this run.
            let (result, _, _) = run_load(&spec, &Cancel::never(), || ()).await?;
            let json = serde_json::to_string_pretty(&result)?;
            if let Some(path) = args.json {
                std::fs::write(&path, &json)?;
            }
            println!("{json}");
            if result.error_rate > 0.01 {
                eprintln!("{:.2}% of requests failed", result.error_rate * 100.0);
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Baseline(args) => {
            let cancel = Cancel::on_ctrl_c();
            // Without the recorded file there is no commit to build and no figure to fall back
            // on; a given reference program or a new recording does without it.
            let recorded =
                if args.baseline.exists() || !(args.update || args.reference_program.is_some()) {
                    // load_baseline's error says how to record one.
                    Some(baseline::load_baseline(&args.baseline)?)
                } else {
                    None
                };
            let reference = if args.update {
                ReferenceSource::Skip("recording a new baseline (--update)")
            } else if args.no_reference {
                ReferenceSource::Skip("--no-reference")
            } else if let Some(program) = args.reference_program {
                ReferenceSource::Program(program)
            } else {
                ReferenceSource::Recorded
            };
            let opts = GateOptions {
                stack_dir: args.stack_dir,
                work_dir: args.work_dir,
                candidate_program: own_program()?,
                candidate_pool_size: args.candidate_pool_size,
                candidate_api_args: args.candidate_api_args,
                reference,
                recorded,
                recorded_tolerance: args.recorded_tolerance,
                products: args.products,
                users: args.users,
                round_secs: args.round_secs,
                rounds: args.rounds as usize,
                paced_share: args.paced_share,
                tolerances: baseline::Tolerances {
                    throughput: args.tolerance,
                    latency: args.latency_tolerance,
                    cpu: args.cpu_tolerance,
                },
                quiet: args.quiet,
            };
            let (report, now) = baseline::run_gate(&opts, &cancel).await?;
            write_json(&args.out, &report)?;
            if args.update {
                if now.errors > 0 {
                    anyhow::bail!("{} requests failed: not recorded as a baseline", now.errors);
                }
                write_json(&args.baseline, &now)?;
                println!(
                    "baseline written to {} (commit {})",
                    args.baseline.display(),
                    now.commit.as_deref().unwrap_or("unknown")
                );
                println!("this run's JSON: {}", args.out.display());
                return Ok(ExitCode::SUCCESS);
            }
            baseline::write_table(&mut std::io::stdout().lock(), &report)?;
            println!("this run's JSON: {}", args.out.display());
            for file in &report.goose_reports {
                println!("goose report: {file}");
            }
            if !report.passed {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Up(args) => {
            let say = |line: &str| println!("{line}");
            let mut cluster =
                stack::Cluster::up(args.stack.spec(args.dir.clone()), args.fresh, &say).await?;
            if args.products > 0 {
                let opts = seeder::SeedOptions {
                    products: args.products,
                    per_product: args.per_product,
                    seed: args.seed,
                    ..seeder::SeedOptions::default()
                };
                seeder::seed(&cluster.primary_url(), &opts).await?;
                cluster.wait_for_replicas(Duration::from_secs(600)).await?;
            }
            cluster.keep();
            stack::cli::print_status(&cluster)?;
            println!("stop with: loadgen down --dir {}", args.dir.display());
        }
        Command::Status(d) => stack::cli::print_status(&stack::Cluster::open(&d.dir)?)?,
        Command::Down(d) => {
            stack::Cluster::open(&d.dir)?.down()?;
            println!("stopped and removed {}", d.dir.display());
        }
        Command::Stop(n) => {
            let (cluster, node) = open_node(&n)?;
            cluster.stop_node(node);
            println!("{}: stopped; its data is kept", n.node);
        }
        Command::Start(n) => {
            let (cluster, node) = open_node(&n)?;
            let pid = cluster.start_node(node)?;
            println!("{}: running (pid {pid})", n.node);
        }
        Command::Kill(n) => {
            let (cluster, node) = open_node(&n)?;
            let pid = cluster.crash_node(node)?;
            println!("{}: killed (kill -9 of pid {pid})", n.node);
        }
        Command::Pause(n) => {
            let (cluster, node) = open_node(&n)?;
            let count = cluster.pause_node(node)?;
            println!("{}: paused ({count} processes stopped)", n.node);
        }
        Command::Resume(n) => {
            let (cluster, node) = open_node(&n)?;
            let count = cluster.resume_node(node)?;
            println!("{}: resumed ({count} processes)", n.node);
        }
        Command::Drill(args) => {
            let secs = |s: f64| Duration::from_secs_f64(s.max(0.0));
            let opts = DrillOptions {
                rig: args
                    .rig
                    .options(args.stack_dir.clone(), args.cache_capacity)?,
                out_dir: args.out.clone(),
                faults: if args.faults.is_empty() {
                    Fault::ALL.to_vec()
                } else {
                    args.faults.clone()
                },
                rate_per_sec: args.rate,
                workers: args.workers,
                settle: secs(args.settle_secs),
                holds: Holds {
                    hold: secs(args.hold_secs),
                    saturation: secs(args.saturation_secs),
                    saturation_cpus: args.saturation_cpus,
                    saturation_scans: args.saturation_scans,
                },
                observe: secs(args.observe_secs),
                command: command_line(),
                quiet: args.quiet,
            };
            let (report, dir) = drill::run_drill(&opts, &Cancel::on_ctrl_c()).await?;
            let mut out = std::io::stdout().lock();
            drill::report::write_markdown(&report, &mut out)?;
            writeln!(out, "\nresults: {}", dir.display())?;
            if args.check && !report.target_met {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Soak(args) => {
            let opts = SoakOptions {
                rig: args
                    .rig
                    .options(args.stack_dir.clone(), args.cache_capacity)?,
                out_dir: args.out.clone(),
                probe: Duration::from_secs(args.probe_secs),
                duration: Duration::from_secs(args.duration_secs),
                share: args.share,
                sample_every: Duration::from_secs(args.sample_secs.max(1)),
                warmup: Duration::from_secs(args.warmup_secs),
                users: args.users,
                soak_users: args.soak_users,
                ids: args.ids,
                command: command_line(),
                quiet: args.quiet,
            };
            let (report, dir) = soak::run_soak(&opts, &Cancel::on_ctrl_c()).await?;
            let mut out = std::io::stdout().lock();
            soak::write_markdown(&report, &mut out)?;
            writeln!(out, "\nresults: {}", dir.display())?;
            if args.check && !report.passed {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn api_is_public_and_serve_api_a_hidden_alias() {
        let cli = Cli::command();
        let api = cli.find_subcommand("api").expect("an `api` subcommand");
        assert!(!api.is_hide_set());
        assert_eq!(api.get_all_aliases().collect::<Vec<_>>(), ["serve-api"]);
        assert_eq!(api.get_visible_aliases().count(), 0);
        assert!(cli.find_subcommand("serve-api").is_some());
    }

    #[test]
    fn up_takes_zero_products_for_servers_only() {
        let cli = Cli::try_parse_from(["loadgen", "up", "--products", "0"]).unwrap();
        let Command::Up(args) = cli.command else {
            panic!("not up");
        };
        assert_eq!(args.products, 0);
    }
}

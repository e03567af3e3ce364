//! The `loadgen` command: the journey (the README's main command), single load runs, the CI
//! baseline, a seeded topology for hands-on work, and the hidden `serve-api` that the journey
//! uses to start API instances as separate processes.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::baseline::{self, BaselineOptions};
use crate::ids::IdDistribution;
use crate::journey::{self, JourneyFile, JourneyOptions};
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
    Up(SeededUpArgs),
    /// Show the topology `up` started.
    Status(DirArg),
    /// Stop and remove the topology `up` started.
    Down(DirArg),
    /// Serve the API (used by the journey to start instances; same flags as the `api` binary).
    #[command(hide = true)]
    ServeApi(ServeApiArgs),
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
    /// The committed baseline to compare with.
    #[arg(
        long,
        env = "LOADGEN_BASELINE",
        default_value = "results/baseline.json"
    )]
    pub baseline: PathBuf,
    /// Where to write this run's JSON.
    #[arg(
        long,
        env = "LOADGEN_BASELINE_OUT",
        default_value = "target/loadgen/baseline-run.json"
    )]
    pub out: PathBuf,
    /// Allowed drop of normalised throughput (0.30 = fail below 70% of the baseline; see results/baseline.md for the measured spread behind the default).
    #[arg(long, env = "LOADGEN_TOLERANCE", default_value_t = 0.30)]
    pub tolerance: f64,
    /// Rewrite the baseline file with this run.
    #[arg(long)]
    pub update: bool,
    #[arg(long, env = "LOADGEN_BASELINE_PRODUCTS", default_value_t = 20_000)]
    pub products: u64,
    #[arg(long, env = "LOADGEN_BASELINE_USERS", default_value_t = 32)]
    pub users: usize,
    #[arg(long, env = "LOADGEN_BASELINE_ROUND_SECS", default_value_t = 12)]
    pub round_secs: u64,
    #[arg(long, env = "LOADGEN_BASELINE_ROUNDS", default_value_t = 4)]
    pub rounds: usize,
    #[arg(long, env = "LOADGEN_STACK_DIR", default_value = ".stack/baseline")]
    pub stack_dir: PathBuf,
    #[arg(long, env = "LOADGEN_QUIET")]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct SeededUpArgs {
    #[command(flatten)]
    pub stack: stack::cli::UpArgs,
    #[arg(long, env = "STACK_DIR", default_value = ".stack/dev")]
    pub dir: PathBuf,
    #[arg(long, env = "SEED_PRODUCTS", default_value_t = 100_000)]
    pub products: u64,
    #[arg(long, env = "SEED_PER_PRODUCT", default_value_t = 16)]
    pub per_product: u32,
    #[arg(long, env = "SEED_SEED", default_value_t = 42)]
    pub seed: u64,
}

#[derive(Debug, Args)]
pub struct DirArg {
    #[arg(long, env = "STACK_DIR", default_value = ".stack/dev")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct ServeApiArgs {
    #[command(flatten)]
    pub config: api::Config,
}

fn own_program() -> anyhow::Result<PathBuf> {
    Ok(std::env::current_exe()?)
}

pub async fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    use std::process::ExitCode;
    match cli.command {
        Command::ServeApi(args) => {
            api::serve(args.config).await?;
        }
        Command::Journey(args) => {
            if args.print_default {
                print!("{}", journey::DEFAULT_JOURNEY);
                return Ok(ExitCode::SUCCESS);
            }
            journey::install_interrupt_handler();
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
            let opts = JourneyOptions {
                out_dir: args.out,
                stack_dir: args.stack_dir,
                api_program: own_program()?,
                products: args.products,
                duration_secs: args.duration_secs,
                users: args.users,
                goose_args: args.goose_args,
                quiet: args.quiet,
            };
            let (report, dir) = journey::run_journey(&file, &opts).await?;
            println!("{}", crate::report::markdown(&report));
            println!("results: {}", dir.display());
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
            };
            let (result, _, _) = run_load(&spec, || ()).await?;
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
            journey::install_interrupt_handler();
            let opts = BaselineOptions {
                stack_dir: args.stack_dir,
                api_program: own_program()?,
                products: args.products,
                users: args.users,
                round_secs: args.round_secs,
                rounds: args.rounds,
                quiet: args.quiet,
            };
            let now = baseline::run_baseline(&opts).await?;
            if let Some(parent) = args.out.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&args.out, serde_json::to_string_pretty(&now)? + "\n")?;
            if args.update {
                std::fs::write(&args.baseline, serde_json::to_string_pretty(&now)? + "\n")?;
                println!("baseline written to {}", args.baseline.display());
                println!("this run's JSON: {}", args.out.display());
                return Ok(ExitCode::SUCCESS);
            }
            let recorded = baseline::load_baseline(&args.baseline)?;
            let cmp = baseline::compare(&recorded, &now, args.tolerance);
            print!("{}", baseline::table(&recorded, &now, &cmp));
            println!("this run's JSON: {}", args.out.display());
            if !cmp.passed {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Up(args) => {
            let mut cluster = stack::Cluster::create(args.stack.spec(args.dir.clone())).await?;
            let opts = seeder::SeedOptions {
                products: args.products,
                per_product: args.per_product,
                seed: args.seed,
                ..seeder::SeedOptions::default()
            };
            seeder::seed(&cluster.primary_url(), &opts).await?;
            cluster.wait_for_replicas(Duration::from_secs(600)).await?;
            cluster.keep();
            stack::cli::print_status(&cluster);
            println!("stop with: loadgen down --dir {}", args.dir.display());
        }
        Command::Status(d) => stack::cli::print_status(&stack::Cluster::open(&d.dir)?),
        Command::Down(d) => {
            stack::Cluster::open(&d.dir)?.down()?;
            println!("stopped and removed {}", d.dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

//! The `loadgen` command: the journey (the README's main command), single load runs, the CI
//! baseline, `up`/`status`/`down` (the one way to start, inspect and remove a topology; the
//! `stack` crate is the library behind them), and `api`, the API server inside this binary, which
//! the journey and the baseline use to start API instances as separate processes.
//!
//! Ctrl-C becomes a [`Cancel`] value here, handed to the journey and the baseline.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::baseline::{self, BaselineOptions};
use crate::cancel::Cancel;
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

#[derive(Debug, Args)]
pub struct DirArg {
    /// Folder of the topology `up` started.
    #[arg(long, env = "STACK_DIR", default_value = ".stack/dev")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct ApiArgs {
    #[command(flatten)]
    pub config: api::Config,
}

fn own_program() -> anyhow::Result<PathBuf> {
    Ok(std::env::current_exe()?)
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
            let opts = BaselineOptions {
                stack_dir: args.stack_dir,
                api_program: own_program()?,
                products: args.products,
                users: args.users,
                round_secs: args.round_secs,
                rounds: args.rounds,
                quiet: args.quiet,
            };
            let now = baseline::run_baseline(&opts, &cancel).await?;
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

//! The `seeder` command line: seed (the default), `index`, `export`, `import`, `write`.

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::csvio::{ImportOptions, PRODUCTS_FILE, RELATED_FILE};
use crate::writes::{self, WriteOptions};
use crate::SeedOptions;

const CSV_FORMAT: &str = "CSV format (UTF-8, comma-separated, one header line):
  products.csv       id,name,category,price_cents,image_url,rating,review_count
  related_items.csv  product_id,position,related_id
id, price_cents, review_count, product_id, related_id: integers (all but id non-negative);
position: 0..32767; rating: 0.0 to 5.0 with at most one decimal; related_id must differ from
product_id, and (product_id, position) and (product_id, related_id) must be unique.";

// No `Debug`: `--database-url` holds a password. (A plain comment: clap would read a doc comment
// as help text.)
#[derive(Parser)]
#[command(
    name = "seeder",
    version,
    about = "Create the related-items schema and load it: a deterministic synthetic catalog or CSV files",
    long_about = "Create the related-items schema and load it: a deterministic synthetic catalog \
(the default command) or CSV files. The load is resumable: kill it at any moment and rerun the \
same command. Without a subcommand, `seeder` seeds the generated catalog.",
    after_help = CSV_FORMAT,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// libpq-style URL of the primary, e.g. postgres://postgres:secret@127.0.0.1:5432/related.
    /// It holds a password: pass it in DATABASE_URL or --database-url-file, not on a command
    /// line that every local user can read (`ps`).
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
    /// A file holding the URL of --database-url (blank lines and `#` comments skipped; say, the
    /// 0600 `superuser.url` that `loadgen up` writes).
    #[arg(
        long,
        env = "DATABASE_URL_FILE",
        global = true,
        conflicts_with = "database_url"
    )]
    pub database_url_file: Option<PathBuf>,
    /// One plain line per phase instead of progress bars (also the default when stdout is not a terminal).
    #[arg(long, short, env = "SEEDER_QUIET", global = true)]
    pub quiet: bool,
    #[command(flatten)]
    pub seed: SeedArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build the related_items indexes on a database seeded with --no-index.
    Index(IndexArgs),
    /// Write products.csv and related_items.csv from the database.
    #[command(after_help = CSV_FORMAT)]
    Export(ExportArgs),
    /// Load products.csv and related_items.csv (resumable, chunked), then index and analyze.
    #[command(after_help = CSV_FORMAT)]
    Import(ImportArgs),
    /// Rewrite related-item lists and prices on the primary at a chosen rate: a write peak, as a
    /// nightly recomputation makes (each transaction replaces one product's list and its price).
    Write(WriteArgs),
}

#[derive(Debug, Args)]
pub struct SeedArgs {
    /// Number of products (ids 1..=N); 10000000 is the full 170M-row scale.
    #[arg(long, env = "SEEDER_PRODUCTS", default_value_t = 10_000)]
    pub products: u64,
    /// Related items per product.
    #[arg(long, env = "SEEDER_PER_PRODUCT", default_value_t = 16)]
    pub per_product: u32,
    /// Random seed: the same seed gives the same rows at any worker count.
    #[arg(long, env = "SEEDER_SEED", default_value_t = 42)]
    pub seed: u64,
    /// Products per committed chunk (the unit a killed load resumes from).
    #[arg(long, env = "SEEDER_CHUNK_PRODUCTS", default_value_t = 5_000)]
    pub chunk_products: u32,
    #[command(flatten)]
    pub common: LoadArgs,
}

/// Options shared by the generated load and the CSV import.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Parallel load connections (default: the number of CPUs, at least 2).
    #[arg(long, env = "SEEDER_WORKERS")]
    pub workers: Option<usize>,
    /// Leave related_items without indexes (the story's slow first stage); `seeder index` builds them later.
    #[arg(long, env = "SEEDER_NO_INDEX")]
    pub no_index: bool,
    /// Drop the tables and the progress ledger first, instead of resuming or refusing.
    #[arg(long, env = "SEEDER_RESET")]
    pub reset: bool,
    /// maintenance_work_mem of each index-building session, in MiB.
    #[arg(long, env = "SEEDER_MAINTENANCE_WORK_MEM_MB", default_value_t = 1024)]
    pub maintenance_work_mem_mb: u32,
    /// Seconds to wait for another seeder that is loading the same database before giving up
    /// and naming it (0: do not wait).
    #[arg(long = "lock-wait-secs", env = "SEEDER_LOCK_WAIT_SECS", default_value = "5", value_parser = parse_lock_wait)]
    pub lock_wait: std::time::Duration,
}

/// Seconds from 0 to an hour: a wait past that is a stuck seeder, not a busy one.
fn parse_lock_wait(text: &str) -> Result<std::time::Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !(0.0..=3600.0).contains(&secs) {
        return Err(format!("`{text}` is outside 0 to 3600 seconds"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

#[derive(Debug, Args)]
pub struct IndexArgs {}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Folder to write products.csv and related_items.csv into.
    #[arg(long, env = "SEEDER_CSV_DIR", default_value = "catalog")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Folder holding products.csv and related_items.csv.
    #[arg(long, env = "SEEDER_CSV_DIR", default_value = "catalog")]
    pub dir: PathBuf,
    /// Products file (default: DIR/products.csv).
    #[arg(long, env = "SEEDER_PRODUCTS_CSV")]
    pub products_csv: Option<PathBuf>,
    /// Related items file (default: DIR/related_items.csv).
    #[arg(long, env = "SEEDER_RELATED_CSV")]
    pub related_csv: Option<PathBuf>,
    /// Records per committed chunk.
    #[arg(long, env = "SEEDER_CHUNK_ROWS", default_value_t = 100_000)]
    pub chunk_rows: usize,
    #[command(flatten)]
    pub common: LoadArgs,
}

#[derive(Debug, Args)]
pub struct WriteArgs {
    /// Transactions per second to aim at, all connections together (above 0, at most 100000).
    #[arg(long, env = "SEEDER_WRITE_TX_PER_SEC", default_value = "100", value_parser = parse_tx_per_sec)]
    pub tx_per_sec: f64,
    /// How long to write, in seconds (above 0, at most a day); Ctrl-C stops sooner.
    #[arg(long = "duration-secs", env = "SEEDER_WRITE_DURATION_SECS", default_value = "60", value_parser = parse_write_duration)]
    pub duration: std::time::Duration,
    /// Connections writing in parallel, each on its own share of the products (1 to 64).
    #[arg(long, env = "SEEDER_WRITE_CONNECTIONS", default_value_t = 4, value_parser = parse_connections)]
    pub connections: usize,
    /// Random seed of the products picked, the lists drawn and the prices.
    #[arg(long, env = "SEEDER_WRITE_SEED", default_value_t = 42)]
    pub seed: u64,
    /// Seconds to wait for a seeder that is loading the database (0: do not wait).
    #[arg(long = "lock-wait-secs", env = "SEEDER_LOCK_WAIT_SECS", default_value = "5", value_parser = parse_lock_wait)]
    pub lock_wait: std::time::Duration,
}

fn parse_tx_per_sec(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of transactions per second"))?;
    writes::check_tx_per_sec(rate)?;
    Ok(rate)
}

fn parse_write_duration(text: &str) -> Result<std::time::Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("`{text}` is not a positive number of seconds"));
    }
    let duration = std::time::Duration::from_secs_f64(secs.min(1e9));
    writes::check_duration(duration)?;
    Ok(duration)
}

fn parse_connections(text: &str) -> Result<usize, String> {
    let n: usize = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of connections"))?;
    writes::check_connections(n)?;
    Ok(n)
}

impl LoadArgs {
    fn apply(&self, opts: &mut SeedOptions) {
        if let Some(w) = self.workers {
            opts.workers = w;
        }
        opts.no_index = self.no_index;
        opts.reset = self.reset;
        opts.maintenance_work_mem_mb = self.maintenance_work_mem_mb;
        opts.lock_wait = self.lock_wait;
    }
}

/// The URL in `path`, read as the API reads its URL files (`api::config::url_lines`, which
/// the seeder does not depend on): trimmed, blank lines and `#` comments skipped.
fn url_in_file(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read --database-url-file {}: {e}", path.display()))?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("--database-url-file {} holds no URL", path.display()))
}

/// Run one command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let from_file = match &cli.database_url_file {
        Some(path) => Some(url_in_file(path)?),
        None => None,
    };
    let Some(url) = from_file.as_deref().or(cli.database_url.as_deref()) else {
        anyhow::bail!(
            "no database given: set DATABASE_URL, or pass --database-url-file (or --database-url)"
        );
    };
    match cli.command {
        None => {
            let mut opts = SeedOptions {
                products: cli.seed.products,
                per_product: cli.seed.per_product,
                seed: cli.seed.seed,
                chunk_products: cli.seed.chunk_products,
                quiet: cli.quiet,
                ..SeedOptions::default()
            };
            cli.seed.common.apply(&mut opts);
            crate::seed(url, &opts).await?;
        }
        Some(Command::Index(_)) => {
            crate::build_relation_index(url, cli.quiet).await?;
        }
        Some(Command::Export(args)) => {
            let summary = crate::export_csv(url, &args.dir).await?;
            println!(
                "exported {} products to {} and {} related items to {}",
                summary.products,
                args.dir.join(PRODUCTS_FILE).display(),
                summary.related_items,
                args.dir.join(RELATED_FILE).display()
            );
        }
        Some(Command::Import(args)) => {
            let mut seed = SeedOptions {
                quiet: cli.quiet,
                ..SeedOptions::default()
            };
            args.common.apply(&mut seed);
            let opts = ImportOptions {
                products_csv: args
                    .products_csv
                    .unwrap_or_else(|| args.dir.join(PRODUCTS_FILE)),
                related_csv: args
                    .related_csv
                    .unwrap_or_else(|| args.dir.join(RELATED_FILE)),
                chunk_rows: args.chunk_rows,
                seed,
            };
            crate::import_csv(url, &opts).await?;
        }
        Some(Command::Write(args)) => {
            let opts = WriteOptions {
                tx_per_sec: args.tx_per_sec,
                duration: args.duration,
                connections: args.connections,
                seed: args.seed,
                quiet: cli.quiet,
                lock_wait: args.lock_wait,
            };
            // Ctrl-C ends the run between transactions, and its counts are still printed.
            let ctrl_c = async {
                if tokio::signal::ctrl_c().await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            let summary = crate::write(url, &opts, ctrl_c).await?;
            println!("{}", summary.line());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("seeder").chain(args.iter().copied()))
    }

    #[test]
    fn write_flags_are_bounded() {
        let cli = parse(&[
            "write",
            "--tx-per-sec",
            "250.5",
            "--duration-secs",
            "1.5",
            "--connections",
            "8",
        ])
        .unwrap();
        let Some(Command::Write(args)) = cli.command else {
            panic!("not a write command");
        };
        assert_eq!(args.tx_per_sec, 250.5);
        assert_eq!(args.duration, std::time::Duration::from_millis(1500));
        assert_eq!(args.connections, 8);
        for bad in [
            ["--tx-per-sec", "0"],
            ["--tx-per-sec", "1e9"],
            ["--tx-per-sec", "fast"],
            ["--duration-secs", "0"],
            ["--duration-secs", "100000"],
            ["--duration-secs", "nan"],
            ["--connections", "0"],
            ["--connections", "65"],
        ] {
            let e = parse(&["write", bad[0], bad[1]]).err().expect("refused");
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{bad:?}");
        }
    }
}

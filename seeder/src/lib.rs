//! The seeder: the schema of the related-items service, a deterministic synthetic catalog, CSV in
//! and out, and a resumable parallel bulk loader.
//!
//! [`seed`] creates the tables bare, loads the generated catalog in chunks over several
//! connections with `COPY ... FROM STDIN BINARY` (each chunk committing with its row in a progress
//! ledger, so a killed run resumes where it stopped), then builds the indexes, runs VACUUM ANALYZE
//! and grants the API role SELECT. [`build_relation_index`] is the `seeder index` step for a
//! database loaded with `no_index`. [`export_csv`] and [`import_csv`] move a catalog through CSV
//! files (format in [`csvio`]). [`write`](fn@write) (`seeder write`, module [`writes`]) rewrites related
//! lists and prices on a loaded primary at a chosen rate: the write peak of the story's CQRS
//! chapter, which the journey runs next to its read load.

pub mod catalog;
pub mod cli;
pub mod csvio;
pub mod db;
pub mod error;
pub mod index;
pub mod load;
pub mod numeric;
pub mod progress;
pub mod writes;

use std::time::Instant;

pub use catalog::Catalog;
pub use cli::{run, Cli};
pub use csvio::{export_csv, import_csv, ExportSummary, ImportOptions};
pub use error::SeedError;
pub use index::IndexSettings;
pub use writes::{write, WriteCounts, WriteOptions, WriteProgress, WriteSummary, Writer};

use load::Plan;
use progress::{per_second, Reporter};

/// What to seed and how.
#[derive(Debug, Clone)]
pub struct SeedOptions {
    /// Products, with ids 1..=products.
    pub products: u64,
    /// Related items per product.
    pub per_product: u32,
    /// Same seed, same rows, whatever `workers` and `chunk_products` are.
    pub seed: u64,
    /// Parallel load connections.
    pub workers: usize,
    /// Products per committed chunk (the unit of resumption); part of the load's identity.
    pub chunk_products: u32,
    /// Leave related_items without its indexes (the story's "one minute per query" state).
    pub no_index: bool,
    /// Drop whatever an earlier load left and start over.
    pub reset: bool,
    /// Plain line-per-phase output instead of progress bars.
    pub quiet: bool,
    /// maintenance_work_mem for each index-building session.
    pub maintenance_work_mem_mb: u32,
    /// max_parallel_maintenance_workers for each index-building session.
    pub index_workers: usize,
    /// How long to wait for another seeder's load lock before saying who holds it.
    pub lock_wait: std::time::Duration,
}

impl Default for SeedOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        SeedOptions {
            products: 10_000,
            per_product: 16,
            seed: 42,
            workers: cores.max(2),
            chunk_products: 5_000,
            no_index: false,
            reset: false,
            quiet: false,
            maintenance_work_mem_mb: 1024,
            index_workers: cores.saturating_sub(1).max(1),
            lock_wait: std::time::Duration::from_secs(5),
        }
    }
}

impl SeedOptions {
    fn index_settings(&self) -> IndexSettings {
        IndexSettings {
            maintenance_work_mem_mb: self.maintenance_work_mem_mb,
            parallel_workers: self.index_workers,
        }
    }
}

/// What a seed (or import) did.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedSummary {
    /// Rows now in the tables.
    pub products: u64,
    pub related_items: u64,
    /// Rows this run loaded (less than the total after a resume).
    pub loaded_rows: u64,
    pub load_seconds: f64,
    pub index_seconds: f64,
    pub analyze_seconds: f64,
    pub total_seconds: f64,
}

impl SeedSummary {
    pub fn rows(&self) -> u64 {
        self.products + self.related_items
    }
}

/// What an index build did.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexSummary {
    /// Rows covered by the indexes built (0 when they all existed already).
    pub rows: u64,
    pub seconds: f64,
}

/// Create the tables, load the generated catalog (resuming an interrupted load of the same
/// options), build indexes unless `no_index`, VACUUM ANALYZE, and grant the API role SELECT.
pub async fn seed(database_url: &str, opts: &SeedOptions) -> Result<SeedSummary, SeedError> {
    let started = Instant::now();
    let products = u32::try_from(opts.products)
        .ok()
        .filter(|&p| p <= i32::MAX as u32)
        .ok_or_else(|| SeedError::Options("--products must fit an integer id".into()))?;
    if opts.chunk_products == 0 || opts.workers == 0 {
        return Err(SeedError::Options(
            "--chunk-products and --workers must be at least 1".into(),
        ));
    }
    let plan = Plan {
        catalog: Catalog::new(opts.seed, products, opts.per_product).map_err(SeedError::Options)?,
        seed: opts.seed,
        chunk_products: opts.chunk_products,
    };
    let reporter = Reporter::new(opts.quiet);
    let client = db::connect(database_url).await?;
    db::lock_load(&client, opts.lock_wait).await?;
    let result = seed_locked(database_url, opts, &plan, &reporter, &client, started).await;
    db::unlock_load(&client).await;
    result
}

/// The part of [`seed`] that runs under the load lock.
async fn seed_locked(
    database_url: &str,
    opts: &SeedOptions,
    plan: &Plan,
    reporter: &Reporter,
    client: &tokio_postgres::Client,
    started: Instant,
) -> Result<SeedSummary, SeedError> {
    if opts.reset {
        db::reset(client).await?;
    }
    let ledger = db::begin_load(client, &plan.source()).await?;
    let (loaded, load_seconds) = if ledger.finished {
        reporter.line("load    already complete");
        (0, 0.0)
    } else {
        let loaded =
            load::load_generated(database_url, plan, &ledger, opts.workers, reporter).await?;
        db::mark_finished(client).await?;
        loaded
    };
    finish_load(
        database_url,
        opts,
        reporter,
        client,
        loaded,
        load_seconds,
        started,
    )
    .await
}

/// Index, VACUUM ANALYZE, grant, and print the summary line: shared by [`seed`] and
/// [`import_csv`].
pub(crate) async fn finish_load(
    database_url: &str,
    opts: &SeedOptions,
    reporter: &Reporter,
    client: &tokio_postgres::Client,
    loaded_rows: u64,
    load_seconds: f64,
    started: Instant,
) -> Result<SeedSummary, SeedError> {
    let (_, index_seconds) = index::build_indexes(
        database_url,
        !opts.no_index,
        opts.index_settings(),
        reporter,
    )
    .await?;
    let (_, analyze_seconds) = index::vacuum_analyze(database_url, reporter).await?;
    let (products, related_items) = db::ledger_rows(client).await?;
    let summary = SeedSummary {
        products,
        related_items,
        loaded_rows,
        load_seconds,
        index_seconds,
        analyze_seconds,
        total_seconds: started.elapsed().as_secs_f64(),
    };
    let resumed = if loaded_rows < summary.rows() {
        format!(", {loaded_rows} of them loaded by this run")
    } else {
        String::new()
    };
    reporter.line(&format!(
        "seeded {} rows ({} products, {} related items{resumed}) in {:.1} s, {} rows/s (load {:.1} s, index {:.1} s, analyze {:.1} s){}",
        summary.rows(),
        products,
        related_items,
        summary.total_seconds,
        per_second(summary.rows(), summary.total_seconds),
        load_seconds,
        index_seconds,
        analyze_seconds,
        if opts.no_index { "; related_items left unindexed (--no-index)" } else { "" },
    ));
    Ok(summary)
}

/// Build the related_items indexes (and the products primary key) where missing: the `seeder
/// index` command, run after a `no_index` seed.
pub async fn build_relation_index(
    database_url: &str,
    quiet: bool,
) -> Result<IndexSummary, SeedError> {
    let reporter = Reporter::new(quiet);
    let (rows, seconds) = index::build_indexes(
        database_url,
        true,
        SeedOptions::default().index_settings(),
        &reporter,
    )
    .await?;
    Ok(IndexSummary { rows, seconds })
}

//! After the load: index builds, VACUUM ANALYZE and grants, each table's work on its own
//! connection so the two tables proceed side by side, with progress polled from PostgreSQL's
//! `pg_stat_progress_*` views (a single CREATE INDEX statement reports nothing to the client).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::db;
use crate::error::{db, SeedError};
use crate::progress::Reporter;

/// One statement batch on its own connection, covering `rows` rows for the progress bar.
struct Job {
    rows: u64,
    sql: String,
    context: String,
}

const INDEX_PROGRESS_SQL: &str = "
SELECT pid, CASE
    WHEN phase = 'building index: scanning table'
        THEN 0.6 * blocks_done::float8 / greatest(blocks_total, 1)
    WHEN phase LIKE 'building index: sorting%' THEN 0.6
    WHEN phase = 'building index: loading tuples in tree'
        THEN 0.7 + 0.3 * tuples_done::float8 / greatest(tuples_total, 1)
    ELSE 0 END
FROM pg_stat_progress_create_index";

const VACUUM_PROGRESS_SQL: &str = "
SELECT pid, 0.8 * heap_blks_scanned::float8 / greatest(heap_blks_total, 1)
FROM pg_stat_progress_vacuum
UNION ALL
SELECT pid, 0.8 + 0.2 * sample_blks_scanned::float8 / greatest(sample_blks_total, 1)
FROM pg_stat_progress_analyze";

/// Settings for the index-building sessions.
#[derive(Debug, Clone, Copy)]
pub struct IndexSettings {
    pub maintenance_work_mem_mb: u32,
    pub parallel_workers: usize,
}

impl IndexSettings {
    fn sql(&self) -> String {
        // Sorting in memory instead of in temp files is most of an index build's speed; the
        // parallel workers split the heap scan and the sort.
        format!(
            "SET maintenance_work_mem = '{}MB'; SET max_parallel_maintenance_workers = {};",
            self.maintenance_work_mem_mb, self.parallel_workers
        )
    }
}

/// Build the primary key of products and, if `relation`, the relation indexes, where missing.
/// Returns (rows indexed, seconds).
pub async fn build_indexes(
    url: &str,
    relation: bool,
    settings: IndexSettings,
    reporter: &Reporter,
) -> Result<(u64, f64), SeedError> {
    let client = db::connect(url).await?;
    db::require_table(&client, "products").await?;
    db::require_table(&client, "related_items").await?;
    let (products, related) = db::table_rows(&client).await?;
    let mut jobs = Vec::new();
    if !db::exists(&client, "products_pkey").await? {
        jobs.push(Job {
            rows: products,
            sql: format!("{} {}", settings.sql(), db::INDEXES_SQL),
            context: "building the products primary key".into(),
        });
    }
    if relation && !db::exists(&client, "related_items_pkey").await? {
        jobs.push(Job {
            rows: related,
            // One transaction: a killed build leaves no half of the relation indexes behind.
            sql: format!(
                "{} BEGIN; {} COMMIT;",
                settings.sql(),
                db::RELATION_INDEX_SQL
            ),
            context: "building the related_items indexes".into(),
        });
    }
    run_jobs(url, "index", jobs, INDEX_PROGRESS_SQL, reporter).await
}

/// VACUUM (for the visibility map, which index-only scans need, and hint bits) and ANALYZE
/// (for the planner) both tables, then grant the API role its SELECT.
pub async fn vacuum_analyze(url: &str, reporter: &Reporter) -> Result<(u64, f64), SeedError> {
    let client = db::connect(url).await?;
    let (products, related) = db::table_rows(&client).await?;
    let jobs = vec![
        Job {
            rows: products,
            sql: "VACUUM (ANALYZE) products".into(),
            context: "VACUUM ANALYZE products".into(),
        },
        Job {
            rows: related,
            sql: "VACUUM (ANALYZE) related_items".into(),
            context: "VACUUM ANALYZE related_items".into(),
        },
    ];
    let result = run_jobs(url, "analyze", jobs, VACUUM_PROGRESS_SQL, reporter).await?;
    grant(&client).await?;
    Ok(result)
}

pub async fn grant(client: &tokio_postgres::Client) -> Result<(), SeedError> {
    client
        .batch_execute(db::GRANTS_SQL)
        .await
        .map_err(db("granting the API role SELECT"))
}

async fn run_jobs(
    url: &str,
    name: &'static str,
    jobs: Vec<Job>,
    progress_sql: &'static str,
    reporter: &Reporter,
) -> Result<(u64, f64), SeedError> {
    let total: u64 = jobs.iter().map(|j| j.rows).sum();
    let phase = reporter.phase(name, total, 0);
    let mut clients = Vec::new();
    for _ in &jobs {
        let client = db::connect(url).await?;
        let pid: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .map_err(db("starting a maintenance session"))?
            .get(0);
        clients.push((client, pid));
    }
    let watched: Vec<(i32, u64, Arc<AtomicBool>)> = clients
        .iter()
        .zip(&jobs)
        .map(|((_, pid), job)| (*pid, job.rows, Arc::new(AtomicBool::new(false))))
        .collect();
    let mut tasks = JoinSet::new();
    for ((client, _), (job, (_, _, done))) in
        clients.into_iter().zip(jobs.into_iter().zip(&watched))
    {
        let done = done.clone();
        tasks.spawn(async move {
            let result = client
                .batch_execute(&job.sql)
                .await
                .map_err(db(job.context));
            done.store(true, Ordering::SeqCst);
            result
        });
    }
    let poller = db::connect(url).await?;
    let mut first_error = None;
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => { first_error.get_or_insert(e); }
                Some(Err(e)) => {
                    first_error.get_or_insert(SeedError::Database { context: name.into(), reason: e.to_string() });
                }
            },
            _ = tokio::time::sleep(Duration::from_millis(250)) => {
                if let Ok(rows) = poller.query(progress_sql, &[]).await {
                    let mut position = 0.0;
                    for (pid, rows_of_job, done) in &watched {
                        if done.load(Ordering::SeqCst) {
                            position += *rows_of_job as f64;
                        } else if let Some(row) = rows.iter().find(|r| r.get::<_, i32>(0) == *pid) {
                            position += row.get::<_, f64>(1) * *rows_of_job as f64;
                        }
                    }
                    phase.set_position(position as u64);
                }
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let seconds = phase.finish(total);
    Ok((total, seconds))
}

//! The parallel bulk load of the generated catalog: chunks of consecutive product ids, each
//! written with `COPY ... FROM STDIN BINARY` (products, then their related items) and committed
//! together with its ledger row, by several connections at once.

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Transaction;

use crate::catalog::Catalog;
use crate::db::{self, Ledger};
use crate::error::{db, SeedError};
use crate::progress::Reporter;

pub const PRODUCTS_COPY: &str = "COPY products (id, name, category, price_cents, image_url, rating, review_count) FROM STDIN (FORMAT binary)";
pub const PRODUCT_TYPES: &[Type] = &[
    Type::INT4,
    Type::TEXT,
    Type::TEXT,
    Type::INT4,
    Type::TEXT,
    Type::NUMERIC,
    Type::INT4,
];
pub const RELATED_COPY: &str =
    "COPY related_items (product_id, position, related_id) FROM STDIN (FORMAT binary)";
pub const RELATED_TYPES: &[Type] = &[Type::INT4, Type::INT2, Type::INT4];

/// Ledger part name of the generated load.
pub const GENERATED_PART: &str = "generated";

/// The shape of a generated load; also what the ledger records, so a rerun with other options is
/// recognised.
#[derive(Debug, Clone)]
pub struct Plan {
    pub catalog: Catalog,
    pub seed: u64,
    pub chunk_products: u32,
}

impl Plan {
    pub fn source(&self) -> String {
        format!(
            "generated catalog: seed {}, {} products x {} related, {} products per chunk",
            self.seed,
            self.catalog.products(),
            self.catalog.per_product(),
            self.chunk_products
        )
    }

    pub fn chunks(&self) -> u32 {
        self.catalog.products().div_ceil(self.chunk_products)
    }

    /// Product ids of a chunk, inclusive.
    fn ids(&self, chunk: u32) -> (i32, i32) {
        let first = chunk as u64 * self.chunk_products as u64 + 1;
        let last = (first + self.chunk_products as u64 - 1).min(self.catalog.products() as u64);
        (first as i32, last as i32)
    }

    pub fn total_rows(&self) -> u64 {
        self.catalog.products() as u64 * (1 + self.catalog.per_product() as u64)
    }

    fn chunk_rows(&self, chunk: u32) -> u64 {
        let (first, last) = self.ids(chunk);
        (last - first + 1) as u64 * (1 + self.catalog.per_product() as u64)
    }
}

/// Load every chunk the ledger does not list yet. Returns the rows loaded by this run.
pub async fn load_generated(
    url: &str,
    plan: &Plan,
    ledger: &Ledger,
    workers: usize,
    reporter: &Reporter,
) -> Result<(u64, f64), SeedError> {
    let pending: VecDeque<u32> = (0..plan.chunks())
        .filter(|&c| !ledger.is_done(GENERATED_PART, c as i32))
        .collect();
    let already: u64 = (0..plan.chunks())
        .filter(|&c| ledger.is_done(GENERATED_PART, c as i32))
        .map(|c| plan.chunk_rows(c))
        .sum();
    let mut phase = reporter.phase("load", plan.total_rows(), already);
    let workers = workers.clamp(1, pending.len().max(1));
    let queue = Arc::new(Mutex::new(pending));
    let failed = Arc::new(AtomicBool::new(false));
    let (progress, mut loaded) = mpsc::unbounded_channel::<u64>();
    let mut tasks = JoinSet::new();
    for _ in 0..workers {
        let (url, plan, queue, failed, progress) = (
            url.to_string(),
            plan.clone(),
            queue.clone(),
            failed.clone(),
            progress.clone(),
        );
        tasks.spawn(async move {
            let result = load_worker(&url, &plan, &queue, &failed, &progress).await;
            if result.is_err() {
                failed.store(true, Ordering::SeqCst);
            }
            result
        });
    }
    drop(progress);
    while let Some(rows) = loaded.recv().await {
        phase.add(rows);
    }
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let result = joined.unwrap_or_else(|e| {
            Err(SeedError::Database {
                context: "a load worker".into(),
                reason: e.to_string(),
            })
        });
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let rows = plan.total_rows() - already;
    let seconds = phase.finish(rows);
    Ok((rows, seconds))
}

async fn load_worker(
    url: &str,
    plan: &Plan,
    queue: &Mutex<VecDeque<u32>>,
    failed: &AtomicBool,
    progress: &mpsc::UnboundedSender<u64>,
) -> Result<(), SeedError> {
    let mut client = db::connect(url).await?;
    let mut related = Vec::with_capacity(plan.chunk_products as usize * 16);
    let mut products = Vec::with_capacity(plan.chunk_products as usize);
    loop {
        if failed.load(Ordering::SeqCst) {
            return Ok(());
        }
        let Some(chunk) = queue.lock().expect("queue lock").pop_front() else {
            return Ok(());
        };
        let (first, last) = plan.ids(chunk);
        products.clear();
        related.clear();
        for id in first..=last {
            products.push(plan.catalog.product(id, &mut related));
        }
        let context = format!("loading products {first}..={last}");
        let tx = client.transaction().await.map_err(db(&context))?;
        copy_rows(
            &tx,
            PRODUCTS_COPY,
            PRODUCT_TYPES,
            products.iter().map(|p| {
                [
                    &p.id as &(dyn ToSql + Sync),
                    &p.name,
                    &p.category,
                    &p.price_cents,
                    &p.image_url,
                    &p.rating as &(dyn ToSql + Sync),
                    &p.review_count,
                ]
            }),
            &context,
        )
        .await?;
        let per = plan.catalog.per_product() as usize;
        let positions: Vec<i16> = (0..per as i16).collect();
        copy_rows(
            &tx,
            RELATED_COPY,
            RELATED_TYPES,
            related.iter().enumerate().map(|(i, r)| {
                [
                    &products[i / per].id as &(dyn ToSql + Sync),
                    &positions[i % per],
                    r,
                ]
            }),
            &context,
        )
        .await?;
        record_chunk(
            &tx,
            GENERATED_PART,
            chunk as i32,
            products.len() as u64,
            related.len() as u64,
            &context,
        )
        .await?;
        tx.commit().await.map_err(db(&context))?;
        let _ = progress.send((products.len() + related.len()) as u64);
    }
}

/// Stream rows into one COPY inside the caller's transaction.
pub async fn copy_rows<'a, const N: usize, I>(
    tx: &Transaction<'_>,
    statement: &str,
    types: &[Type],
    rows: I,
    context: &str,
) -> Result<u64, SeedError>
where
    I: Iterator<Item = [&'a (dyn ToSql + Sync); N]>,
{
    let sink = tx.copy_in(statement).await.map_err(db(context))?;
    let mut writer = pin!(BinaryCopyInWriter::new(sink, types));
    for row in rows {
        writer.as_mut().write(&row).await.map_err(db(context))?;
    }
    writer.finish().await.map_err(db(context))
}

/// The chunk's ledger row, in the chunk's own transaction.
pub async fn record_chunk(
    tx: &Transaction<'_>,
    part: &str,
    chunk: i32,
    products: u64,
    related_items: u64,
    context: &str,
) -> Result<(), SeedError> {
    tx.execute(
        "INSERT INTO seeder_chunks (part, chunk, products, related_items) VALUES ($1, $2, $3, $4)",
        &[&part, &chunk, &(products as i64), &(related_items as i64)],
    )
    .await
    .map_err(db(context))?;
    Ok(())
}

//! CSV in and out.
//!
//! Two files, each with a header line, comma-separated, UTF-8, quoted where needed:
//!
//! ```text
//! products.csv:       id,name,category,price_cents,image_url,rating,review_count
//!                     1,Lightweight Carbon Running Shoe,Running,4999,https://...,4.5,120
//! related_items.csv:  product_id,position,related_id
//!                     1,0,734
//! ```
//!
//! `id`, `price_cents`, `review_count`, `product_id`, `related_id` are integers (all but `id`
//! non-negative), `position` a small non-negative integer, `rating` a number from 0.0 to 5.0 with
//! at most one decimal; `related_id` differs from `product_id` and appears once per product. [`export_csv`] writes exactly this format from a database, ordered by id
//! (and position), and [`import_csv`] reads it back; exporting an imported set gives the same files.
//!
//! The import is chunked and resumable like the generated load: each chunk of `chunk_rows`
//! records commits with its ledger row. A malformed record stops the import with an error naming
//! the file, line, column and value; its chunk is not committed, earlier chunks stay.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::pin::pin;

use futures::TryStreamExt;
use tokio_postgres::types::ToSql;

use crate::db;
use crate::error::{db, io, SeedError};
use crate::load::{
    copy_rows, record_chunk, PRODUCTS_COPY, PRODUCT_TYPES, RELATED_COPY, RELATED_TYPES,
};
use crate::numeric::Rating;
use crate::progress::Reporter;
use crate::{finish_load, SeedOptions, SeedSummary};

pub const PRODUCT_COLUMNS: [&str; 7] = [
    "id",
    "name",
    "category",
    "price_cents",
    "image_url",
    "rating",
    "review_count",
];
pub const RELATED_COLUMNS: [&str; 3] = ["product_id", "position", "related_id"];
pub const PRODUCTS_FILE: &str = "products.csv";
pub const RELATED_FILE: &str = "related_items.csv";

/// What to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub products_csv: PathBuf,
    pub related_csv: PathBuf,
    /// Records per committed chunk.
    pub chunk_rows: usize,
    /// Shared with the generated load: no_index, reset, quiet, maintenance settings.
    pub seed: SeedOptions,
}

impl ImportOptions {
    /// The two files of `dir`, as [`export_csv`] names them.
    pub fn from_dir(dir: &Path) -> ImportOptions {
        ImportOptions {
            products_csv: dir.join(PRODUCTS_FILE),
            related_csv: dir.join(RELATED_FILE),
            chunk_rows: 100_000,
            seed: SeedOptions::default(),
        }
    }
}

/// Rows written by an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportSummary {
    pub products: u64,
    pub related_items: u64,
}

/// Write `products.csv` and `related_items.csv` into `dir` (created if missing).
pub async fn export_csv(database_url: &str, dir: &Path) -> Result<ExportSummary, SeedError> {
    let client = db::connect(database_url).await?;
    db::require_table(&client, "products").await?;
    db::require_table(&client, "related_items").await?;
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let products = export_query(
        &client,
        &dir.join(PRODUCTS_FILE),
        &PRODUCT_COLUMNS,
        "SELECT id::text, name, category, price_cents::text, image_url, rating::text, review_count::text
         FROM products ORDER BY id",
    )
    .await?;
    let related_items = export_query(
        &client,
        &dir.join(RELATED_FILE),
        &RELATED_COLUMNS,
        "SELECT product_id::text, position::text, related_id::text
         FROM related_items ORDER BY product_id, position",
    )
    .await?;
    Ok(ExportSummary {
        products,
        related_items,
    })
}

async fn export_query(
    client: &tokio_postgres::Client,
    path: &Path,
    header: &[&str],
    sql: &str,
) -> Result<u64, SeedError> {
    let context = format!("exporting to {}", path.display());
    let file = File::create(path).map_err(io(format!("creating {}", path.display())))?;
    let mut out = csv::Writer::from_writer(BufWriter::with_capacity(1 << 20, file));
    let csv_err = |e: csv::Error| SeedError::CsvFile {
        file: path.to_path_buf(),
        reason: e.to_string(),
    };
    out.write_record(header).map_err(csv_err)?;
    let params: [&(dyn ToSql + Sync); 0] = [];
    let rows = client
        .query_raw(sql, params)
        .await
        .map_err(db(context.clone()))?;
    let mut rows = pin!(rows);
    let mut count = 0u64;
    let mut fields: Vec<String> = Vec::with_capacity(header.len());
    while let Some(row) = rows.try_next().await.map_err(db(context.clone()))? {
        fields.clear();
        fields.extend((0..header.len()).map(|i| row.get::<_, String>(i)));
        out.write_record(&fields).map_err(csv_err)?;
        count += 1;
    }
    out.into_inner()
        .map_err(|e| SeedError::CsvFile {
            file: path.to_path_buf(),
            reason: e.to_string(),
        })?
        .flush()
        .map_err(io(format!("writing {}", path.display())))?;
    Ok(count)
}

/// Load the two CSV files (products first), then index and analyze like [`crate::seed`].
pub async fn import_csv(
    database_url: &str,
    opts: &ImportOptions,
) -> Result<SeedSummary, SeedError> {
    if opts.chunk_rows == 0 {
        return Err(SeedError::Options("chunk rows must be at least 1".into()));
    }
    let reporter = Reporter::new(opts.seed.quiet);
    let started = std::time::Instant::now();
    let source = format!(
        "CSV files {} ({} bytes) and {} ({} bytes), {} records per chunk",
        opts.products_csv.display(),
        file_len(&opts.products_csv)?,
        opts.related_csv.display(),
        file_len(&opts.related_csv)?,
        opts.chunk_rows
    );
    let mut client = db::connect(database_url).await?;
    db::lock_load(&client, opts.seed.lock_wait).await?;
    let result = import_locked(database_url, opts, &source, &reporter, &mut client, started).await;
    db::unlock_load(&client).await;
    result
}

/// The part of [`import_csv`] that runs under the load lock.
async fn import_locked(
    database_url: &str,
    opts: &ImportOptions,
    source: &str,
    reporter: &Reporter,
    client: &mut tokio_postgres::Client,
    started: std::time::Instant,
) -> Result<SeedSummary, SeedError> {
    if opts.seed.reset {
        db::reset(client).await?;
    }
    let ledger = db::begin_load(client, source).await?;
    let mut phase = reporter.phase("load", 0, 0);
    let mut loaded = 0;
    if !ledger.finished {
        for kind in [FileKind::Products, FileKind::Related] {
            loaded += import_file(client, opts, kind, &ledger, &mut phase).await?;
        }
        check_related_unique(client, &opts.related_csv).await?;
        db::mark_finished(client).await?;
    }
    let load_seconds = phase.finish(loaded);
    finish_load(
        database_url,
        &opts.seed,
        reporter,
        client,
        loaded,
        load_seconds,
        started,
    )
    .await
}

/// The schema has no unique index on (product_id, related_id) (see sql/relation_index.sql), so a
/// user's file is checked here, once, before the load counts as finished.
async fn check_related_unique(
    client: &tokio_postgres::Client,
    related_csv: &Path,
) -> Result<(), SeedError> {
    let duplicate = client
        .query_opt(
            "SELECT product_id, related_id FROM related_items GROUP BY 1, 2 HAVING count(*) > 1 LIMIT 1",
            &[],
        )
        .await
        .map_err(db("checking related_items for duplicates"))?;
    match duplicate {
        None => Ok(()),
        Some(row) => Err(SeedError::CsvFile {
            file: related_csv.to_path_buf(),
            reason: format!(
                "product {} lists related id {} more than once; fix the file and import it again with --reset",
                row.get::<_, i32>(0),
                row.get::<_, i32>(1)
            ),
        }),
    }
}

fn file_len(path: &Path) -> Result<u64, SeedError> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(io(format!("reading {}", path.display())))
}

type Records = Vec<(u64, csv::ByteRecord)>;

#[derive(Debug, Clone, Copy)]
enum FileKind {
    Products,
    Related,
}

async fn import_file(
    client: &mut tokio_postgres::Client,
    opts: &ImportOptions,
    kind: FileKind,
    ledger: &db::Ledger,
    phase: &mut crate::progress::Phase,
) -> Result<u64, SeedError> {
    let (path, columns, part): (&Path, &[&str], &str) = match kind {
        FileKind::Products => (&opts.products_csv, &PRODUCT_COLUMNS, "products"),
        FileKind::Related => (&opts.related_csv, &RELATED_COLUMNS, "related_items"),
    };
    let chunk_rows = opts.chunk_rows;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_path(path)
        .map_err(|e| SeedError::CsvFile {
            file: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let mut record = csv::ByteRecord::new();
    let ctx = CsvContext {
        file: path.to_path_buf(),
        columns: columns.iter().map(|c| c.to_string()).collect(),
    };
    if !read(&mut reader, &mut record, &ctx)? {
        return Err(SeedError::CsvFile {
            file: path.to_path_buf(),
            reason: format!(
                "the file is empty; expected the header {}",
                columns.join(",")
            ),
        });
    }
    for (i, expected) in columns.iter().enumerate() {
        let got = record
            .get(i)
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        if got != *expected {
            return Err(SeedError::Csv {
                file: path.to_path_buf(),
                line: 1,
                column: expected.to_string(),
                value: got.into_owned(),
                reason: format!("the header must be {}", columns.join(",")),
            });
        }
    }
    let mut loaded = 0;
    let mut chunk = 0i32;
    loop {
        let skip = ledger.is_done(part, chunk);
        let mut records: Records = Vec::with_capacity(if skip { 0 } else { chunk_rows });
        let mut count = 0;
        while count < chunk_rows && read(&mut reader, &mut record, &ctx)? {
            count += 1;
            if !skip {
                let line = record.position().map_or(0, |p| p.line());
                records.push((line, record.clone()));
            }
        }
        if count == 0 {
            return Ok(loaded);
        }
        if !skip {
            let first = records.first().map_or(0, |r| r.0);
            let last = records.last().map_or(0, |r| r.0);
            let context = format!("loading {} lines {first}-{last}", path.display());
            let tx = client.transaction().await.map_err(db(&context))?;
            let (products, related) = match kind {
                FileKind::Products => copy_products(&tx, &records, &ctx).await?,
                FileKind::Related => copy_related(&tx, &records, &ctx).await?,
            };
            record_chunk(&tx, part, chunk, products, related, &context).await?;
            tx.commit().await.map_err(db(&context))?;
            loaded += products + related;
            phase.add(products + related);
        }
        chunk += 1;
    }
}

fn read(
    reader: &mut csv::Reader<File>,
    record: &mut csv::ByteRecord,
    ctx: &CsvContext,
) -> Result<bool, SeedError> {
    reader.read_byte_record(record).map_err(|e| {
        let line = e.position().map_or(0, |p| p.line());
        SeedError::CsvFile {
            file: ctx.file.clone(),
            reason: format!("line {line}: {e}"),
        }
    })
}

/// Where a record came from, for error messages.
struct CsvContext {
    file: PathBuf,
    columns: Vec<String>,
}

impl CsvContext {
    fn error(&self, line: u64, column: usize, value: &[u8], reason: &str) -> SeedError {
        SeedError::Csv {
            file: self.file.clone(),
            line,
            column: self.columns[column].clone(),
            value: String::from_utf8_lossy(value).into_owned(),
            reason: reason.to_string(),
        }
    }

    /// Field `column` of a record as text.
    fn text<'r>(
        &self,
        line: u64,
        record: &'r csv::ByteRecord,
        column: usize,
    ) -> Result<&'r str, SeedError> {
        let Some(bytes) = record.get(column) else {
            return Err(self.error(
                line,
                column,
                b"",
                &format!(
                    "missing column: the record has {} of {} fields",
                    record.len(),
                    self.columns.len()
                ),
            ));
        };
        std::str::from_utf8(bytes).map_err(|_| self.error(line, column, bytes, "not valid UTF-8"))
    }

    fn int<T: std::str::FromStr + PartialOrd + Default>(
        &self,
        line: u64,
        record: &csv::ByteRecord,
        column: usize,
        non_negative: bool,
    ) -> Result<T, SeedError> {
        let text = self.text(line, record, column)?;
        match text.trim().parse::<T>() {
            Ok(v) if non_negative && v < T::default() => {
                Err(self.error(line, column, text.as_bytes(), "must not be negative"))
            }
            Ok(v) => Ok(v),
            Err(_) => Err(self.error(line, column, text.as_bytes(), "not an integer in range")),
        }
    }

    fn check_width(&self, line: u64, record: &csv::ByteRecord) -> Result<(), SeedError> {
        if record.len() > self.columns.len() {
            let extra = record.get(self.columns.len()).unwrap_or_default();
            return Err(SeedError::Csv {
                file: self.file.clone(),
                line,
                column: format!("#{}", self.columns.len() + 1),
                value: String::from_utf8_lossy(extra).into_owned(),
                reason: format!("too many fields: expected {}", self.columns.len()),
            });
        }
        Ok(())
    }
}

struct ProductRecord {
    id: i32,
    name: String,
    category: String,
    price_cents: i32,
    image_url: String,
    rating: Rating,
    review_count: i32,
}

async fn copy_products(
    tx: &tokio_postgres::Transaction<'_>,
    records: &Records,
    ctx: &CsvContext,
) -> Result<(u64, u64), SeedError> {
    let mut rows = Vec::with_capacity(records.len());
    for (line, r) in records {
        let line = *line;
        ctx.check_width(line, r)?;
        let rating_text = ctx.text(line, r, 5)?;
        rows.push(ProductRecord {
            id: ctx.int(line, r, 0, false)?,
            name: ctx.text(line, r, 1)?.to_string(),
            category: ctx.text(line, r, 2)?.to_string(),
            price_cents: ctx.int(line, r, 3, true)?,
            image_url: ctx.text(line, r, 4)?.to_string(),
            rating: Rating::parse(rating_text.trim()).ok_or_else(|| {
                ctx.error(
                    line,
                    5,
                    rating_text.as_bytes(),
                    "not a rating from 0.0 to 5.0 with one decimal",
                )
            })?,
            review_count: ctx.int(line, r, 6, true)?,
        });
    }
    let context = format!("loading {}", ctx.file.display());
    let n = copy_rows(
        tx,
        PRODUCTS_COPY,
        PRODUCT_TYPES,
        rows.iter().map(|p| {
            [
                &p.id as &(dyn ToSql + Sync),
                &p.name,
                &p.category,
                &p.price_cents,
                &p.image_url,
                &p.rating,
                &p.review_count,
            ]
        }),
        &context,
    )
    .await?;
    Ok((n, 0))
}

async fn copy_related(
    tx: &tokio_postgres::Transaction<'_>,
    records: &Records,
    ctx: &CsvContext,
) -> Result<(u64, u64), SeedError> {
    let mut rows: Vec<(i32, i16, i32)> = Vec::with_capacity(records.len());
    for (line, r) in records {
        let line = *line;
        ctx.check_width(line, r)?;
        let product_id: i32 = ctx.int(line, r, 0, true)?;
        let position: i16 = ctx.int(line, r, 1, true)?;
        let related_id: i32 = ctx.int(line, r, 2, true)?;
        if related_id == product_id {
            let value = r.get(2).unwrap_or_default();
            return Err(ctx.error(line, 2, value, "a product cannot be related to itself"));
        }
        rows.push((product_id, position, related_id));
    }
    let context = format!("loading {}", ctx.file.display());
    let n = copy_rows(
        tx,
        RELATED_COPY,
        RELATED_TYPES,
        rows.iter()
            .map(|(p, pos, r)| [p as &(dyn ToSql + Sync), pos, r]),
        &context,
    )
    .await?;
    Ok((0, n))
}

//! The write workload (`seeder write`): a peak of writes on the primary at a chosen rate, of the
//! kind a nightly recomputation of the related-item lists makes, so that reads can be measured
//! while the primary takes it (the CQRS chapter of `docs/story.md`; the journey's `write_peak`).
//!
//! Each transaction takes one product, deletes its related rows, inserts as many freshly drawn
//! ones (the catalog's popularity, distinct, never the product itself: see
//! [`Catalog::draw_related`]) and gives the product a new price. Every list keeps its length, and
//! a reader sees the old list or the new one, never a half-written one. The connections split the
//! products between them (by id modulo their count), so two transactions never touch one
//! product: none waits for another's row locks or runs into its new primary keys.
//!
//! [`Writer::connect`] checks the database and opens and prepares every connection up front, so a
//! caller that measures something else meanwhile (the journey) opens its window with the writer
//! ready; [`Writer::run`] paces the transactions until the duration is over or `stop` fires,
//! counting the committed work into a [`WriteProgress`] that the caller may read at any moment.
//! [`write`](fn@write) does both with a progress counter on a terminal: the command line's entry point.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use tokio::sync::watch;
use tokio_postgres::{Client, Statement};

use crate::catalog::{draw_price_cents, Catalog};
use crate::db;
use crate::error::{db as db_err, SeedError};
use crate::progress::Reporter;

/// The most transactions per second anyone may ask for: far past what one primary commits, so
/// it only catches a typo (an extra zero or two), not a real peak.
pub const MAX_TX_PER_SEC: f64 = 100_000.0;
/// A day: a longer run is a forgotten one.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);
/// Connections beyond this only queue in the server.
pub const MAX_CONNECTIONS: usize = 64;

/// How the writers name themselves in `pg_stat_activity` (and in a waiting seeder's message).
const APPLICATION_NAME: &str = "seeder-write";

const DELETE_SQL: &str = "DELETE FROM related_items WHERE product_id = $1";
/// The new list in one statement: position i holds the array's (i+1)-th id.
const INSERT_SQL: &str = "INSERT INTO related_items (product_id, position, related_id) \
     SELECT $1, (g.n - 1)::smallint, g.id FROM unnest($2::int4[]) WITH ORDINALITY AS g(id, n)";
const REPRICE_SQL: &str = "UPDATE products SET price_cents = $2 WHERE id = $1";

/// What to write and how fast.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteOptions {
    /// Transactions per second to aim at, all connections together: a ceiling the writer never
    /// passes, and what it reaches unless the primary cannot keep up.
    pub tx_per_sec: f64,
    /// How long to write (a `stop` future may end it sooner).
    pub duration: Duration,
    /// Connections writing in parallel (at most one per product).
    pub connections: usize,
    /// Seed of the products picked, the lists drawn and the prices.
    pub seed: u64,
    /// No progress counter; the summary is returned either way.
    pub quiet: bool,
    /// How long to wait for a seeder that is loading the database.
    pub lock_wait: Duration,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            tx_per_sec: 100.0,
            duration: Duration::from_secs(60),
            connections: 4,
            seed: 42,
            quiet: false,
            lock_wait: Duration::from_secs(5),
        }
    }
}

impl WriteOptions {
    /// Every bound at once, so a caller (the command line, a journey file) hears of a bad value
    /// before any connection is opened.
    pub fn validate(&self) -> Result<(), String> {
        check_tx_per_sec(self.tx_per_sec)?;
        check_duration(self.duration)?;
        check_connections(self.connections)
    }
}

/// A rate above 0 and at most [`MAX_TX_PER_SEC`].
pub fn check_tx_per_sec(rate: f64) -> Result<(), String> {
    if rate.is_finite() && rate > 0.0 && rate <= MAX_TX_PER_SEC {
        Ok(())
    } else {
        Err(format!(
            "the write rate must be above 0 and at most {MAX_TX_PER_SEC} transactions/s (got {rate})"
        ))
    }
}

/// A duration above 0 and at most [`MAX_DURATION`].
pub fn check_duration(duration: Duration) -> Result<(), String> {
    if !duration.is_zero() && duration <= MAX_DURATION {
        Ok(())
    } else {
        Err(format!(
            "the write duration must be above 0 and at most {} s (got {} s)",
            MAX_DURATION.as_secs(),
            duration.as_secs_f64()
        ))
    }
}

/// 1 to [`MAX_CONNECTIONS`] connections.
pub fn check_connections(connections: usize) -> Result<(), String> {
    if (1..=MAX_CONNECTIONS).contains(&connections) {
        Ok(())
    } else {
        Err(format!(
            "the writer needs 1 to {MAX_CONNECTIONS} connections (got {connections})"
        ))
    }
}

/// Committed work so far, each figure as the primary reported it (the statements' row counts),
/// readable while the writer runs.
#[derive(Debug, Default)]
pub struct WriteProgress {
    transactions: AtomicU64,
    deleted: AtomicU64,
    inserted: AtomicU64,
    updated: AtomicU64,
}

/// A reading of a [`WriteProgress`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteCounts {
    pub transactions: u64,
    pub deleted: u64,
    pub inserted: u64,
    pub updated: u64,
}

impl WriteCounts {
    /// Rows deleted, inserted and updated.
    pub fn rows(&self) -> u64 {
        self.deleted + self.inserted + self.updated
    }

    /// What was done between `earlier` and this reading.
    pub fn since(&self, earlier: &WriteCounts) -> WriteCounts {
        WriteCounts {
            transactions: self.transactions.saturating_sub(earlier.transactions),
            deleted: self.deleted.saturating_sub(earlier.deleted),
            inserted: self.inserted.saturating_sub(earlier.inserted),
            updated: self.updated.saturating_sub(earlier.updated),
        }
    }
}

impl WriteProgress {
    pub fn counts(&self) -> WriteCounts {
        WriteCounts {
            transactions: self.transactions.load(Ordering::Relaxed),
            deleted: self.deleted.load(Ordering::Relaxed),
            inserted: self.inserted.load(Ordering::Relaxed),
            updated: self.updated.load(Ordering::Relaxed),
        }
    }

    /// One committed transaction's rows.
    fn commit(&self, deleted: u64, inserted: u64, updated: u64) {
        self.deleted.fetch_add(deleted, Ordering::Relaxed);
        self.inserted.fetch_add(inserted, Ordering::Relaxed);
        self.updated.fetch_add(updated, Ordering::Relaxed);
        self.transactions.fetch_add(1, Ordering::Relaxed);
    }
}

/// What a run of the write workload did.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteSummary {
    /// Committed transactions and their rows.
    pub counts: WriteCounts,
    /// From the first transaction's slot to the end of the last one.
    pub seconds: f64,
    pub target_tx_per_sec: f64,
    /// Connections that wrote (fewer than asked when there are fewer products).
    pub connections: usize,
}

impl WriteSummary {
    /// Committed transactions per second over the run.
    pub fn tx_per_sec(&self) -> f64 {
        if self.seconds > 0.0 {
            self.counts.transactions as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// The line the command line prints.
    pub fn line(&self) -> String {
        let c = &self.counts;
        format!(
            "wrote {} transactions in {:.1} s ({:.1} tx/s of {} asked, {} connections): {} rows ({} deleted, {} inserted, {} updated)",
            c.transactions,
            self.seconds,
            self.tx_per_sec(),
            self.target_tx_per_sec,
            self.connections,
            c.rows(),
            c.deleted,
            c.inserted,
            c.updated
        )
    }
}

/// One writing connection with its statements prepared.
struct Connection {
    client: Client,
    delete: Statement,
    insert: Statement,
    reprice: Statement,
}

/// A write workload ready to run: the database checked, the shared load lock held, every
/// connection open and prepared.
pub struct Writer {
    /// Holds the shared load lock.
    control: Client,
    connections: Vec<Connection>,
    catalog: Catalog,
    opts: WriteOptions,
}

impl Writer {
    /// Check `opts` and the database (tables, relation index, ids 1..N, no half-finished load),
    /// take the load lock in shared mode, and open and prepare the connections.
    pub async fn connect(database_url: &str, opts: &WriteOptions) -> Result<Writer, SeedError> {
        opts.validate().map_err(SeedError::Options)?;
        let control = db::connect_as(database_url, APPLICATION_NAME).await?;
        db::lock_load_shared(&control, opts.lock_wait).await?;
        match prepare(database_url, opts, &control).await {
            Ok((catalog, connections)) => Ok(Writer {
                control,
                connections,
                catalog,
                opts: opts.clone(),
            }),
            Err(e) => {
                db::unlock_load_shared(&control).await;
                Err(e)
            }
        }
    }

    /// Products whose lists are rewritten (ids 1..=products).
    pub fn products(&self) -> u32 {
        self.catalog.products()
    }

    /// Write until the duration is over or `stop` fires (a transaction under way then still
    /// commits), counting into `progress`; the summary counts this run's work only.
    pub async fn run(
        self,
        progress: &WriteProgress,
        stop: impl Future<Output = ()>,
    ) -> Result<WriteSummary, SeedError> {
        let Writer {
            control,
            connections,
            catalog,
            opts,
        } = self;
        let before = progress.counts();
        let count = connections.len();
        let started = Instant::now();
        let deadline = started + opts.duration;
        // Each connection takes its share of the rate: one transaction every `period`.
        let period = Duration::from_secs_f64(count as f64 / opts.tx_per_sec);
        let (stopping, stopped) = watch::channel(false);
        let work = futures::future::try_join_all(connections.into_iter().enumerate().map(
            |(k, connection)| {
                let share = Share {
                    first: k as u32 + 1,
                    step: count as u32,
                    products: catalog.products(),
                };
                let rng = Pcg64Mcg::seed_from_u64(
                    opts.seed ^ (k as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                );
                write_share(
                    connection,
                    share,
                    &catalog,
                    Pacer::new(period, started),
                    deadline,
                    stopped.clone(),
                    progress,
                    rng,
                )
            },
        ));
        tokio::pin!(work);
        tokio::pin!(stop);
        let result = tokio::select! {
            done = &mut work => done,
            _ = &mut stop => {
                let _ = stopping.send(true);
                work.await
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        db::unlock_load_shared(&control).await;
        result?;
        Ok(WriteSummary {
            counts: progress.counts().since(&before),
            seconds,
            target_tx_per_sec: opts.tx_per_sec,
            connections: count,
        })
    }
}

/// Connect, write until the duration is over or `stop` fires, and say what was done; a counter
/// of rows written runs on a terminal unless `opts.quiet`.
pub async fn write(
    database_url: &str,
    opts: &WriteOptions,
    stop: impl Future<Output = ()>,
) -> Result<WriteSummary, SeedError> {
    let writer = Writer::connect(database_url, opts).await?;
    let progress = WriteProgress::default();
    let phase = Reporter::new(opts.quiet).phase("write", 0, 0);
    let run = writer.run(&progress, stop);
    tokio::pin!(run);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let result = loop {
        tokio::select! {
            done = &mut run => break done,
            _ = tick.tick() => phase.set_position(progress.counts().rows()),
        }
    };
    phase.clear();
    result
}

/// The checks of [`Writer::connect`], then the connections.
async fn prepare(
    database_url: &str,
    opts: &WriteOptions,
    control: &Client,
) -> Result<(Catalog, Vec<Connection>), SeedError> {
    db::require_table(control, "products").await?;
    db::require_table(control, "related_items").await?;
    if db::exists(control, "seeder_load").await? {
        let finished: Option<bool> = control
            .query_opt("SELECT finished FROM seeder_load", &[])
            .await
            .map_err(db_err("reading the ledger"))?
            .map(|row| row.get(0));
        if finished == Some(false) {
            return Err(SeedError::NotReady(
                "a load into it is half-finished: rerun the seeder command that started it first"
                    .into(),
            ));
        }
    }
    if !db::exists(control, "related_items_pkey").await? {
        return Err(SeedError::NotReady(
            "related_items has no index (it was seeded with --no-index), so every rewrite would scan the whole table: run `seeder index` first".into(),
        ));
    }
    let row = control
        .query_one(
            "SELECT count(*), coalesce(min(id), 0), coalesce(max(id), 0) FROM products",
            &[],
        )
        .await
        .map_err(db_err("counting the products"))?;
    let (rows, min, max): (i64, i32, i32) = (row.get(0), row.get(1), row.get(2));
    if rows < 2 || min != 1 || i64::from(max) != rows {
        return Err(SeedError::NotReady(format!(
            "the rewrites draw related ids from 1..N, so products must hold the ids 1 to N without gaps, N at least 2 (it holds {rows} rows, ids {min} to {max})"
        )));
    }
    let products = rows as u32;
    // Lists are rewritten at the length each one has, so the catalog's list length is unused.
    let catalog = Catalog::new(opts.seed, products, 0).map_err(SeedError::Options)?;
    let mut connections = Vec::new();
    for _ in 0..opts.connections.min(products as usize) {
        let client = db::connect_as(database_url, APPLICATION_NAME).await?;
        let statement = |sql: &'static str| {
            let client = &client;
            async move {
                client
                    .prepare(sql)
                    .await
                    .map_err(db_err("preparing the write statements"))
            }
        };
        let (delete, insert, reprice) = (
            statement(DELETE_SQL).await?,
            statement(INSERT_SQL).await?,
            statement(REPRICE_SQL).await?,
        );
        connections.push(Connection {
            client,
            delete,
            insert,
            reprice,
        });
    }
    Ok((catalog, connections))
}

/// One connection's loop: a transaction in each of its pacer's slots until the deadline or stop.
#[allow(clippy::too_many_arguments)]
async fn write_share(
    mut connection: Connection,
    share: Share,
    catalog: &Catalog,
    mut pacer: Pacer,
    deadline: Instant,
    mut stop: watch::Receiver<bool>,
    progress: &WriteProgress,
    mut rng: Pcg64Mcg,
) -> Result<(), SeedError> {
    let mut related = Vec::with_capacity(32);
    loop {
        let due = pacer.next_due(Instant::now());
        if due >= deadline || *stop.borrow() {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()) => {}
            // Stopped, or the run is gone.
            _ = stop.changed() => return Ok(()),
        }
        let id = share.pick(&mut rng);
        let c = &mut connection;
        let tx = c
            .client
            .transaction()
            .await
            .map_err(db_err("starting a write transaction"))?;
        let deleted = tx
            .execute(&c.delete, &[&id])
            .await
            .map_err(db_err(format!("deleting the related list of product {id}")))?;
        related.clear();
        catalog.draw_related(id, deleted as usize, &mut rng, &mut related);
        let inserted = tx
            .execute(&c.insert, &[&id, &related])
            .await
            .map_err(db_err(format!(
                "inserting the related list of product {id}"
            )))?;
        let price = draw_price_cents(&mut rng);
        let updated = tx
            .execute(&c.reprice, &[&id, &price])
            .await
            .map_err(db_err(format!("repricing product {id}")))?;
        tx.commit()
            .await
            .map_err(db_err("committing a write transaction"))?;
        progress.commit(deleted, inserted, updated);
    }
}

/// The products one connection rewrites: `first`, `first + step`, ... up to `products`. The
/// shares of `step` connections with firsts 1..=step cover every product exactly once.
#[derive(Debug, Clone, Copy)]
struct Share {
    first: u32,
    step: u32,
    products: u32,
}

impl Share {
    fn len(&self) -> u32 {
        (self.products - self.first) / self.step + 1
    }

    fn pick<R: Rng + ?Sized>(&self, rng: &mut R) -> i32 {
        (self.first + self.step * rng.gen_range(0..self.len())) as i32
    }
}

/// When each transaction of one connection is due: one every `period` from the start. After a
/// slow stretch (a slot more than one period late) the schedule restarts from now instead of
/// bursting to catch up, so the rate asked is a ceiling: a primary that cannot keep up gets
/// transactions back to back, never more.
#[derive(Debug, Clone, Copy)]
struct Pacer {
    period: Duration,
    next: Instant,
}

impl Pacer {
    fn new(period: Duration, start: Instant) -> Pacer {
        Pacer {
            period,
            next: start,
        }
    }

    /// The slot of the next transaction, when it is `now`: in the past means at once.
    fn next_due(&mut self, now: Instant) -> Instant {
        if now > self.next + self.period {
            self.next = now;
        }
        let due = self.next;
        self.next += self.period;
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_checked_at_the_door() {
        assert!(WriteOptions::default().validate().is_ok());
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY, MAX_TX_PER_SEC * 2.0] {
            let opts = WriteOptions {
                tx_per_sec: rate,
                ..WriteOptions::default()
            };
            let e = opts.validate().unwrap_err();
            assert!(e.contains("write rate"), "{e}");
        }
        assert!(check_tx_per_sec(0.5).is_ok() && check_tx_per_sec(MAX_TX_PER_SEC).is_ok());
        assert!(check_duration(Duration::ZERO).is_err());
        assert!(check_duration(MAX_DURATION + Duration::from_secs(1)).is_err());
        assert!(check_duration(Duration::from_millis(10)).is_ok());
        assert!(check_connections(0).is_err() && check_connections(MAX_CONNECTIONS + 1).is_err());
        assert!(check_connections(1).is_ok() && check_connections(MAX_CONNECTIONS).is_ok());
    }

    #[test]
    fn shares_cover_every_product_once() {
        for (products, step) in [(10, 3), (2, 2), (17, 1), (100, 64)] {
            let mut seen = Vec::new();
            for first in 1..=step {
                let share = Share {
                    first,
                    step,
                    products,
                };
                seen.extend((0..share.len()).map(|j| first + step * j));
            }
            seen.sort_unstable();
            assert_eq!(
                seen,
                (1..=products).collect::<Vec<_>>(),
                "{products}/{step}"
            );
        }
        let share = Share {
            first: 2,
            step: 3,
            products: 10,
        };
        let mut rng = Pcg64Mcg::seed_from_u64(1);
        for _ in 0..200 {
            let id = share.pick(&mut rng);
            assert!([2, 5, 8].contains(&id), "{id}");
        }
    }

    #[test]
    fn the_pacer_keeps_its_slots_and_never_bursts_after_a_stall() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let mut pacer = Pacer::new(ms(10), start);
        // On time: one slot every 10 ms.
        assert_eq!(pacer.next_due(start), start);
        assert_eq!(pacer.next_due(start + ms(1)), start + ms(10));
        assert_eq!(pacer.next_due(start + ms(12)), start + ms(20));
        // Less than a period late: the missed slot is taken at once, the schedule kept.
        assert_eq!(pacer.next_due(start + ms(35)), start + ms(30));
        assert_eq!(pacer.next_due(start + ms(36)), start + ms(40));
        // A long stall: no burst of the missed slots, the schedule restarts from now.
        let late = start + ms(500);
        assert_eq!(pacer.next_due(late), late);
        assert_eq!(pacer.next_due(late), late + ms(10));
    }

    #[test]
    fn counts_add_up_and_the_summary_says_so() {
        let progress = WriteProgress::default();
        progress.commit(16, 16, 1);
        let before = progress.counts();
        progress.commit(16, 16, 1);
        progress.commit(15, 15, 1);
        let counts = progress.counts().since(&before);
        assert_eq!(
            counts,
            WriteCounts {
                transactions: 2,
                deleted: 31,
                inserted: 31,
                updated: 2
            }
        );
        assert_eq!(counts.rows(), 64);
        let summary = WriteSummary {
            counts,
            seconds: 0.5,
            target_tx_per_sec: 5.0,
            connections: 2,
        };
        assert_eq!(summary.tx_per_sec(), 4.0);
        assert_eq!(
            summary.line(),
            "wrote 2 transactions in 0.5 s (4.0 tx/s of 5 asked, 2 connections): 64 rows (31 deleted, 31 inserted, 2 updated)"
        );
    }
}

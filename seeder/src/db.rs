//! Connections, the schema, and the progress ledger that makes a load resumable.
//!
//! The ledger is two tables next to the data: `seeder_load` says what is being loaded (seed and
//! scale, or which CSV files) and whether it finished; `seeder_chunks` holds one row per chunk,
//! committed in the same transaction as that chunk's rows. A killed run therefore leaves exactly
//! the chunks listed in the ledger, and a rerun loads the others.

use std::collections::HashSet;
use std::time::Duration;

use tokio_postgres::{Client, Config, NoTls};

use crate::error::{db, pg_reason, SeedError};

pub const SCHEMA_SQL: &str = include_str!("../sql/schema.sql");
pub const INDEXES_SQL: &str = include_str!("../sql/indexes.sql");
pub const RELATION_INDEX_SQL: &str = include_str!("../sql/relation_index.sql");
pub const GRANTS_SQL: &str = include_str!("../sql/grants.sql");

const LEDGER_SQL: &str = "
CREATE TABLE IF NOT EXISTS seeder_load (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    source    text    NOT NULL,
    finished  boolean NOT NULL DEFAULT false
);
CREATE TABLE IF NOT EXISTS seeder_chunks (
    part          text    NOT NULL,
    chunk         integer NOT NULL,
    products      bigint  NOT NULL,
    related_items bigint  NOT NULL,
    PRIMARY KEY (part, chunk)
);";

/// Any constant will do: it only has to be the same for every seeder process.
const LOAD_LOCK_KEY: i64 = 0x5eed_10ad;

/// Open a connection; its driver task runs on the current runtime.
pub async fn connect(url: &str) -> Result<Client, SeedError> {
    connect_as(url, "seeder").await
}

/// [`connect`] under another application name (unless the URL sets one), so that
/// `pg_stat_activity` and a waiting seeder's message tell a writer from a loader.
pub async fn connect_as(url: &str, application_name: &str) -> Result<Client, SeedError> {
    let mut config: Config = url
        .parse()
        .map_err(|e: tokio_postgres::Error| SeedError::InvalidUrl(pg_reason(&e)))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    // Named, so that a seeder waiting for the load lock can say who holds it.
    if config.get_application_name().is_none() {
        config.application_name(application_name);
    }
    // tokio-postgres bounds the TCP handshake only; a server that accepts and then says
    // nothing (frozen, or its host gone mid-handshake) would hold the seeder at its start.
    let limit = config
        .get_connect_timeout()
        .copied()
        .unwrap_or(Duration::from_secs(10));
    let refused = |reason: String| SeedError::Connect {
        target: describe_target(&config),
        reason,
    };
    let (client, connection) = tokio::time::timeout(limit, config.connect(NoTls))
        .await
        .map_err(|_| {
            refused(format!(
                "no answer within {} s of connecting (connect_timeout)",
                limit.as_secs_f64()
            ))
        })?
        .map_err(|e| refused(pg_reason(&e)))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

fn describe_target(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let dbname = config.get_dbname().unwrap_or("(default)");
    format!("{host}:{port}, database {dbname}")
}

/// Take the load lock on this connection, so two seeders never interleave. A seeder that holds
/// it is waited for up to `wait` (inside the server, through `lock_timeout`); past that the error
/// names the holder. Release it with [`unlock_load`] before the connection is dropped: a dropped
/// connection's backend keeps the lock until the server notices, which a rerun started at once
/// would otherwise find held.
pub async fn lock_load(client: &Client, wait: Duration) -> Result<(), SeedError> {
    lock(client, wait, LockMode::Exclusive).await
}

/// The load lock in shared mode: writers (`seeder write`) hold it together, and a load waits for
/// them as they wait for a load, so no list is rewritten while a load drops or fills the tables.
/// Released with [`unlock_load_shared`].
pub async fn lock_load_shared(client: &Client, wait: Duration) -> Result<(), SeedError> {
    lock(client, wait, LockMode::Shared).await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LockMode {
    Exclusive,
    Shared,
}

impl LockMode {
    /// The advisory-lock function name's suffix.
    fn suffix(self) -> &'static str {
        match self {
            LockMode::Exclusive => "",
            LockMode::Shared => "_shared",
        }
    }
}

async fn lock(client: &Client, wait: Duration, mode: LockMode) -> Result<(), SeedError> {
    let suffix = mode.suffix();
    if wait.is_zero() {
        let got: bool = client
            .query_one(
                &format!("SELECT pg_try_advisory_lock{suffix}($1)"),
                &[&LOAD_LOCK_KEY],
            )
            .await
            .map_err(db("taking the load lock"))?
            .get(0);
        return if got {
            Ok(())
        } else {
            Err(busy(client, wait).await)
        };
    }
    let timeout = format!("{}ms", wait.as_millis().max(1));
    client
        .execute("SELECT set_config('lock_timeout', $1, false)", &[&timeout])
        .await
        .map_err(db("setting the lock wait"))?;
    let taken = client
        .execute(
            &format!("SELECT pg_advisory_lock{suffix}($1)"),
            &[&LOAD_LOCK_KEY],
        )
        .await;
    client
        .batch_execute("RESET lock_timeout")
        .await
        .map_err(db("resetting the lock wait"))?;
    match taken {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
            Err(busy(client, wait).await)
        }
        Err(e) => Err(db("taking the load lock")(e)),
    }
}

/// Give the load lock back; a no-op when this connection does not hold it. Errors are ignored:
/// a connection that cannot run this has lost its backend, and the lock with it.
pub async fn unlock_load(client: &Client) {
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOAD_LOCK_KEY])
        .await;
}

/// Give the shared load lock back (see [`unlock_load`]).
pub async fn unlock_load_shared(client: &Client) {
    let _ = client
        .execute("SELECT pg_advisory_unlock_shared($1)", &[&LOAD_LOCK_KEY])
        .await;
}

/// The Busy error, naming the session that holds the lock (from `pg_locks` and
/// `pg_stat_activity`) so the user can tell a live seeder from a forgotten one.
async fn busy(client: &Client, waited: Duration) -> SeedError {
    // A bigint advisory key is stored as two oids: the high half in classid, the low in objid.
    let classid = (LOAD_LOCK_KEY >> 32) as u32;
    let objid = LOAD_LOCK_KEY as u32;
    let holder = client
        .query_opt(
            "SELECT a.pid, coalesce(host(a.client_addr), 'the local socket'), a.application_name,
                    extract(epoch FROM now() - a.backend_start)::float8
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.granted
               AND l.classid = $1 AND l.objid = $2 AND l.objsubid = 1
             LIMIT 1",
            &[&classid, &objid],
        )
        .await;
    let holder = match holder {
        Ok(Some(row)) => {
            let pid: i32 = row.get(0);
            let addr: String = row.get(1);
            let app: String = row.get(2);
            let secs: f64 = row.get(3);
            let app = if app.is_empty() {
                "(none)".to_string()
            } else {
                app
            };
            format!("server process {pid}, connected from {addr}, application {app}, running for {secs:.0} s")
        }
        Ok(None) => "it has just finished; rerun".to_string(),
        Err(e) => format!("its session could not be looked up: {}", pg_reason(&e)),
    };
    SeedError::Busy {
        holder,
        waited_secs: waited.as_secs_f64(),
    }
}

/// Drop everything the seeder created.
pub async fn reset(client: &Client) -> Result<(), SeedError> {
    client
        .batch_execute(
            "DROP TABLE IF EXISTS related_items, products, seeder_chunks, seeder_load CASCADE",
        )
        .await
        .map_err(db("dropping the old tables (--reset)"))
}

/// Chunks already committed for a load, by part ("generated", "products", "related_items").
#[derive(Debug, Default)]
pub struct Ledger {
    pub done: HashSet<(String, i32)>,
    pub finished: bool,
}

impl Ledger {
    pub fn is_done(&self, part: &str, chunk: i32) -> bool {
        self.done.contains(&(part.to_string(), chunk))
    }
}

/// Create the tables if missing and register this load; refuse when the database holds a
/// different load (or rows from elsewhere).
pub async fn begin_load(client: &Client, source: &str) -> Result<Ledger, SeedError> {
    client
        .batch_execute(SCHEMA_SQL)
        .await
        .map_err(db("creating the tables"))?;
    client
        .batch_execute(LEDGER_SQL)
        .await
        .map_err(db("creating the ledger"))?;
    let existing = client
        .query_opt("SELECT source, finished FROM seeder_load", &[])
        .await
        .map_err(db("reading the ledger"))?;
    let finished = match existing {
        None => {
            let has_rows: bool = client
                .query_one(
                    "SELECT EXISTS (SELECT FROM products) OR EXISTS (SELECT FROM related_items)",
                    &[],
                )
                .await
                .map_err(db("checking for existing rows"))?
                .get(0);
            if has_rows {
                return Err(SeedError::ForeignRows);
            }
            client
                .execute("INSERT INTO seeder_load (source) VALUES ($1)", &[&source])
                .await
                .map_err(db("writing the ledger"))?;
            false
        }
        Some(row) => {
            let old: String = row.get(0);
            let finished: bool = row.get(1);
            if old != source {
                let chunks: i64 = client
                    .query_one("SELECT count(*) FROM seeder_chunks", &[])
                    .await
                    .map_err(db("reading the ledger"))?
                    .get(0);
                return Err(SeedError::OtherLoad {
                    existing: old,
                    requested: source.to_string(),
                    state: if finished {
                        "fully loaded".into()
                    } else {
                        format!("half-loaded, {chunks} chunks committed")
                    },
                });
            }
            finished
        }
    };
    let done = client
        .query("SELECT part, chunk FROM seeder_chunks", &[])
        .await
        .map_err(db("reading the ledger"))?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    Ok(Ledger { done, finished })
}

pub async fn mark_finished(client: &Client) -> Result<(), SeedError> {
    client
        .execute("UPDATE seeder_load SET finished = true", &[])
        .await
        .map_err(db("writing the ledger"))?;
    Ok(())
}

/// Rows loaded so far according to the ledger: (products, related_items).
pub async fn ledger_rows(client: &Client) -> Result<(u64, u64), SeedError> {
    let row = client
        .query_one(
            "SELECT coalesce(sum(products), 0)::int8, coalesce(sum(related_items), 0)::int8 FROM seeder_chunks",
            &[],
        )
        .await
        .map_err(db("reading the ledger"))?;
    Ok((row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64))
}

/// Row counts for the index and analyze progress bars: the ledger when this seeder loaded the
/// tables, otherwise the planner's estimate.
pub async fn table_rows(client: &Client) -> Result<(u64, u64), SeedError> {
    let ledger: Option<String> = client
        .query_one("SELECT to_regclass('seeder_chunks')::text", &[])
        .await
        .map_err(db("looking for the ledger"))?
        .get(0);
    if ledger.is_some() {
        let rows = ledger_rows(client).await?;
        if rows != (0, 0) {
            return Ok(rows);
        }
    }
    let row = client
        .query_one(
            "SELECT greatest((SELECT reltuples FROM pg_class WHERE oid = 'products'::regclass), 0)::int8,
                    greatest((SELECT reltuples FROM pg_class WHERE oid = 'related_items'::regclass), 0)::int8",
            &[],
        )
        .await
        .map_err(db("estimating table sizes"))?;
    Ok((row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64))
}

/// Whether a relation (table or index) exists.
pub async fn exists(client: &Client, name: &str) -> Result<bool, SeedError> {
    let found: Option<String> = client
        .query_one("SELECT to_regclass($1)::text", &[&name])
        .await
        .map_err(db(format!("looking for {name}")))?
        .get(0);
    Ok(found.is_some())
}

pub async fn require_table(client: &Client, table: &str) -> Result<(), SeedError> {
    if exists(client, table).await? {
        Ok(())
    } else {
        Err(SeedError::MissingTable(table.to_string()))
    }
}

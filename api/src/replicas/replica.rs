//! [`Replica`]: one database server requests can be routed to — its connection pool and its
//! per-replica state: requests in flight, its [`Ban`], what the health monitor last saw, and its
//! counters. It decides nothing: routing reads it as a [`Candidate`], the exposition as
//! [`ReplicaStats`], and the attempt ([`super::attempt`]) and the monitor update it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::config::PoolSettings;
use crate::counters::Counters;
use crate::error::ApiError;
use crate::query::{ConnectSignals, PgConnectionManager};

use super::ban::{Backoff, Ban};
use super::batch::BatchQueue;
use super::select::Candidate;
use super::stats::{PoolStats, ReplicaStats};

pub(super) type Pool = bb8::Pool<PgConnectionManager>;

/// The longest a pooled connection may take to connect: a refused or hung connect must fail the
/// request over to another replica well inside the request deadline, whatever the query
/// timeout. (The health connection gets longer: see the monitor.)
const MAX_POOL_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One database server requests can be routed to.
pub struct Replica {
    /// `host:port/database`, the URL without user or password, for logs and metric labels.
    pub label: String,
    /// The primary, used only while no replica is usable.
    pub is_fallback: bool,
    pub(super) url: String,
    pub(super) pool: Pool,
    pub(super) signals: Arc<ConnectSignals>,
    pub(super) in_flight: AtomicUsize,
    pub(super) ban: Ban,
    /// What the health monitor last saw.
    pub(super) health: Health,
    pub(super) counters: ReplicaCounters,
    /// Lookups waiting for a connection, for batching (unused at `--batch-max 1`).
    pub(super) batch: BatchQueue,
    /// The process-wide counters (the batch sizes).
    pub(super) totals: Arc<Counters>,
}

/// What the health monitor last saw of a replica, and the proof of life requests give it.
#[derive(Debug)]
pub(super) struct Health {
    /// The last health check answered, or was only slow.
    pub(super) healthy: AtomicBool,
    pub(super) lag_ms: AtomicU64,
    /// Clock reading of the last query that answered, 0 if none: proof of life the health check
    /// can lean on when its own query is stuck in the server's queue.
    pub(super) last_answer_ms: AtomicU64,
}

/// Per-replica counters (rendered as `api_replica_*_total`).
#[derive(Debug, Default)]
pub(super) struct ReplicaCounters {
    pub(super) queries: AtomicU64,
    pub(super) failures: AtomicU64,
    pub(super) bans: AtomicU64,
    /// Health checks that failed while the replica looked loaded rather than down.
    pub(super) slow_checks: AtomicU64,
    /// Queries that timed out while the replica was answering others, or was the last usable
    /// one: load, so not bans.
    pub(super) timeouts_under_load: AtomicU64,
}

impl Replica {
    /// A replica with an empty pool: nothing connects until a request or the monitor does, so a
    /// replica that is down at start is not an error, it gets banned.
    pub(super) fn new(
        url: &str,
        index: usize,
        is_fallback: bool,
        pool: &PoolSettings,
        query_timeout: Duration,
        setup_timeout: Duration,
        totals: Arc<Counters>,
    ) -> Result<Self, ApiError> {
        let pg: tokio_postgres::Config =
            url.parse()
                .map_err(|e: tokio_postgres::Error| ApiError::BadReplicaUrl {
                    index,
                    reason: e.to_string(),
                })?;
        let label = label_of(&pg);
        let signals = Arc::new(ConnectSignals::default());
        let manager = PgConnectionManager::new(
            pg,
            pool.check,
            query_timeout.min(MAX_POOL_CONNECT_TIMEOUT),
            setup_timeout,
            signals.clone(),
        );
        // retry_connection(false): a refused connect must fail the waiting request over to
        // another replica now, not after the pool timeout.
        let batch = BatchQueue::new(pool.batch_max, pool.size.get() as usize);
        let pool = bb8::Pool::builder()
            .max_size(pool.size.get())
            .min_idle(None)
            .connection_timeout(pool.wait)
            .retry_connection(false)
            .test_on_check_out(true)
            .idle_timeout(Some(Duration::from_secs(300)))
            .build_unchecked(manager);
        Ok(Replica {
            label,
            is_fallback,
            url: url.to_string(),
            pool,
            signals,
            in_flight: AtomicUsize::new(0),
            ban: Ban::default(),
            health: Health {
                healthy: AtomicBool::new(true),
                lag_ms: AtomicU64::new(0),
                last_answer_ms: AtomicU64::new(0),
            },
            counters: ReplicaCounters::default(),
            batch,
            totals,
        })
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Relaxed)
    }

    pub fn is_banned(&self, now_ms: u64) -> bool {
        self.ban.is_banned(now_ms)
    }

    pub fn is_healthy(&self) -> bool {
        self.health.healthy.load(Relaxed)
    }

    pub fn lag_ms(&self) -> u64 {
        self.health.lag_ms.load(Relaxed)
    }

    /// Skips the replica for the back-off its run of failures has earned.
    pub(super) fn ban(&self, now_ms: u64, backoff: &Backoff) {
        self.ban.ban(now_ms, backoff);
        self.counters.bans.fetch_add(1, Relaxed);
    }

    pub(super) fn unban(&self) {
        self.ban.unban();
    }

    /// Records the replay lag a health check worked out.
    pub(super) fn note_lag(&self, lag: Duration) {
        self.health.lag_ms.store(lag.as_millis() as u64, Relaxed);
    }

    /// Records an answered health check. Returns whether the replica was down until now.
    pub(super) fn mark_healthy(&self) -> bool {
        !self.health.healthy.swap(true, Relaxed)
    }

    /// Records a failed health check. Returns whether the replica was healthy until now.
    pub(super) fn mark_down(&self) -> bool {
        self.health.healthy.swap(false, Relaxed)
    }

    /// Records a health check taken for overload rather than failure.
    pub(super) fn count_slow_check(&self) {
        self.counters.slow_checks.fetch_add(1, Relaxed);
    }

    /// Clock reading of the last query that answered, 0 if none.
    pub(super) fn last_answer_ms(&self) -> u64 {
        self.health.last_answer_ms.load(Relaxed)
    }

    /// The replica as a pick sees it at `now_ms`; `excluded` when the request just failed on it.
    pub(super) fn candidate(&self, now_ms: u64, excluded: bool) -> Candidate {
        Candidate {
            banned: self.is_banned(now_ms),
            healthy: self.is_healthy(),
            lag_ms: self.lag_ms(),
            in_flight: self.in_flight(),
            excluded,
        }
    }

    /// The replica's state and counters at `now_ms`.
    pub fn stats(&self, now_ms: u64) -> ReplicaStats {
        let state = self.pool.state();
        ReplicaStats {
            label: self.label.clone(),
            is_fallback: self.is_fallback,
            in_flight: self.in_flight() as u64,
            banned: self.is_banned(now_ms),
            healthy: self.is_healthy(),
            lag_ms: self.lag_ms(),
            queries: self.counters.queries.load(Relaxed),
            failures: self.counters.failures.load(Relaxed),
            bans: self.counters.bans.load(Relaxed),
            slow_checks: self.counters.slow_checks.load(Relaxed),
            timeouts_under_load: self.counters.timeouts_under_load.load(Relaxed),
            pool: PoolStats {
                connections: state.connections,
                idle_connections: state.idle_connections,
                waits: state.statistics.get_waited,
                wait_time: state.statistics.get_wait_time,
                connect_failures: self.signals.failures.load(Relaxed),
            },
        }
    }
}

/// `host:port/database` of a URL, leaving out user and password.
fn label_of(pg: &tokio_postgres::Config) -> String {
    let host = match pg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", pg.get_dbname().unwrap_or(""))
}

#[cfg(test)]
pub(super) mod tests {
    use std::num::NonZeroU32;

    use super::*;
    use crate::config::PoolCheck;

    /// A replica on a port nothing need listen on: its pool connects only when asked to, so
    /// building it needs no server (only a runtime, for the pool's reaper task).
    pub fn replica(port: u16) -> Replica {
        let pool = PoolSettings {
            size: NonZeroU32::new(2).unwrap(),
            wait: Duration::from_secs(5),
            check: PoolCheck::Closed,
            batch_max: std::num::NonZeroUsize::MIN,
        };
        let url = format!("postgres://api:secret@127.0.0.1:{port}/related");
        Replica::new(
            &url,
            0,
            false,
            &pool,
            Duration::from_millis(100),
            Duration::from_secs(5),
            Arc::default(),
        )
        .expect("valid url")
    }

    #[tokio::test]
    async fn labels_leave_out_the_credentials() {
        let r = replica(5433);
        assert_eq!(r.label, "127.0.0.1:5433/related");
        let stats = r.stats(1);
        assert_eq!(stats.label, "127.0.0.1:5433/related");
        assert!(
            stats.healthy && !stats.banned,
            "a new replica is presumed up"
        );
    }

    #[tokio::test]
    async fn a_bad_url_is_refused_with_its_position() {
        let pool = PoolSettings {
            size: NonZeroU32::new(2).unwrap(),
            wait: Duration::from_millis(10),
            check: PoolCheck::Closed,
            batch_max: std::num::NonZeroUsize::MIN,
        };
        let err = Replica::new(
            "not a url ::::",
            3,
            false,
            &pool,
            Duration::from_secs(1),
            Duration::from_secs(1),
            Arc::default(),
        )
        .err()
        .expect("refused");
        assert!(matches!(err, ApiError::BadReplicaUrl { index: 3, .. }));
    }

    #[tokio::test]
    async fn bans_are_counted_and_seen_by_picks() {
        let r = replica(5433);
        let backoff = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_millis(100),
        };
        r.ban(1000, &backoff);
        assert!(r.candidate(1050, false).banned);
        assert!(!r.candidate(1100, false).banned);
        assert_eq!(r.stats(1050).bans, 1);
        assert!(r.stats(1050).banned);
    }
}

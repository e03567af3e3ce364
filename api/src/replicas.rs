//! The set of read replicas a request can be sent to: one bb8 pool per replica, routing by
//! least in-flight among two random choices, bans with back-off, background health checks,
//! an optional lag bound and primary fallback, and reloading the list without dropping requests.

use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio_postgres::types::PgLsn;
use tokio_postgres::NoTls;

use crate::config::Config;
use crate::error::{ApiError, HttpError};
use crate::metrics::Metrics;
use crate::query::{
    is_replica_failure, query_related, ConnectSignals, Lookup, PgConnectionManager, REPLAY_SQL,
};

type Pool = bb8::Pool<PgConnectionManager>;

/// Milliseconds since the first call, a cheap monotonic clock that fits in an atomic.
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// One database server requests can be routed to.
pub struct Replica {
    /// `host:port/database`, the URL without user or password, for logs and metric labels.
    pub label: String,
    url: String,
    pool: Pool,
    signals: Arc<ConnectSignals>,
    pub is_fallback: bool,
    in_flight: AtomicUsize,
    /// `now_ms()` until which the replica is skipped; 0 when not banned.
    banned_until: AtomicU64,
    consecutive_failures: AtomicU32,
    /// The last background health check answered.
    healthy: AtomicBool,
    lag_ms: AtomicU64,
    pub queries: AtomicU64,
    pub failures: AtomicU64,
    pub bans: AtomicU64,
    /// Health checks that failed while the replica looked loaded rather than down.
    pub slow_checks: AtomicU64,
    /// `now_ms()` of the last query that answered, 0 if none: proof of life the health check
    /// can lean on when its own query is stuck in the server's queue.
    last_answer_ms: AtomicU64,
}

/// Why one attempt on one replica failed.
#[derive(Debug)]
enum AttemptError {
    /// The replica failed (connect, I/O, shutdown, timeout): ban it and retry elsewhere.
    Replica(String),
    /// The pool had no free connection within its bound: the replica is alive but saturated.
    PoolTimeout,
    /// The query itself failed on a healthy replica: a bug or a schema mismatch.
    Query(String),
}

/// Decrements the replica's in-flight count when the attempt ends, however it ends.
struct InFlight<'a>(&'a Replica);
impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

impl Replica {
    fn new(url: &str, index: usize, is_fallback: bool, config: &Config) -> Result<Self, ApiError> {
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
            config.pool_check,
            config.query_timeout().min(Duration::from_secs(2)),
            signals.clone(),
        );
        // Lazily filled: a replica that is down at start is not an error, it is banned.
        // retry_connection(false): a refused connect must fail the waiting request over to
        // another replica now, not after the pool timeout.
        let pool = bb8::Pool::builder()
            .max_size(config.pool_size.max(1))
            .min_idle(None)
            .connection_timeout(config.pool_wait().max(Duration::from_millis(1)))
            .retry_connection(false)
            .test_on_check_out(true)
            .idle_timeout(Some(Duration::from_secs(300)))
            .build_unchecked(manager);
        Ok(Replica {
            label,
            url: url.to_string(),
            pool,
            signals,
            is_fallback,
            in_flight: AtomicUsize::new(0),
            banned_until: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            healthy: AtomicBool::new(true),
            lag_ms: AtomicU64::new(0),
            queries: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            bans: AtomicU64::new(0),
            slow_checks: AtomicU64::new(0),
            last_answer_ms: AtomicU64::new(0),
        })
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Relaxed)
    }

    pub fn is_banned(&self) -> bool {
        self.banned_until.load(Relaxed) > now_ms()
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    fn lag_ok(&self, max_lag_ms: Option<u64>) -> bool {
        max_lag_ms.is_none_or(|max| self.lag_ms.load(Relaxed) <= max)
    }

    fn usable(&self, max_lag_ms: Option<u64>) -> bool {
        !self.is_banned() && self.lag_ok(max_lag_ms)
    }

    /// Skip this replica for a back-off that doubles with each consecutive failure.
    fn ban(&self, base: Duration, max: Duration) {
        let failures = self.consecutive_failures.fetch_add(1, Relaxed).min(16);
        let backoff = (base.as_millis() as u64)
            .saturating_mul(1 << failures)
            .min(max.as_millis() as u64);
        self.banned_until.store(now_ms() + backoff, Relaxed);
        self.bans.fetch_add(1, Relaxed);
    }

    fn unban(&self) {
        self.banned_until.store(0, Relaxed);
        self.consecutive_failures.store(0, Relaxed);
    }

    /// One attempt: a pooled connection, then the prepared query under `timeout`.
    async fn attempt(
        &self,
        product_id: i32,
        limit: i64,
        timeout: Duration,
    ) -> Result<Lookup, AttemptError> {
        self.in_flight.fetch_add(1, Relaxed);
        let _in_flight = InFlight(self);
        let failed = self.signals.failed.notified();
        tokio::pin!(failed);
        failed.as_mut().enable();
        let mut conn = tokio::select! {
            conn = self.pool.get() => match conn {
                Ok(conn) => conn,
                Err(bb8::RunError::TimedOut) => return Err(AttemptError::PoolTimeout),
                Err(bb8::RunError::User(e)) => return Err(AttemptError::Replica(e.to_string())),
            },
            _ = &mut failed => {
                return Err(AttemptError::Replica("connection attempt failed".into()))
            }
        };
        self.queries.fetch_add(1, Relaxed);
        match tokio::time::timeout(timeout, query_related(&conn, product_id, limit)).await {
            Ok(Ok(lookup)) => {
                self.consecutive_failures.store(0, Relaxed);
                self.last_answer_ms.store(now_ms(), Relaxed);
                Ok(lookup)
            }
            Ok(Err(e)) if is_replica_failure(&e) => {
                conn.broken = true;
                Err(AttemptError::Replica(e.to_string()))
            }
            Ok(Err(e)) => Err(AttemptError::Query(e.to_string())),
            Err(_) => {
                // The server may still be running the query: drop the connection rather than
                // queue the next request behind it.
                conn.broken = true;
                Err(AttemptError::Replica(format!(
                    "query timed out after {} ms",
                    timeout.as_millis()
                )))
            }
        }
    }

    /// The background health check: connect (or reuse a connection), read the replay position
    /// and update the lag from it.
    async fn check(&self, probe: &mut HealthProbe, timeout: Duration) -> HealthCheck {
        let started_ms = now_ms();
        let result = self.read_replay(&mut probe.client, timeout).await;
        let failure = match result {
            Ok((in_recovery, received, replayed)) => {
                let lag = if in_recovery {
                    probe.lag.observe(received, replayed, Instant::now())
                } else {
                    probe.lag = ReplayLag::default();
                    Duration::ZERO
                };
                self.lag_ms.store(lag.as_millis() as u64, Relaxed);
                probe.slow_checks = 0;
                return HealthCheck::Answered;
            }
            Err(failure) => failure,
        };
        if let CheckFailure::Error(e) = &failure {
            tracing::debug!(replica = %self.label, error = %e, "health check failed");
            probe.client = None;
        }
        // A saturated server answers late: that is load, not failure. Taking it for down would
        // turn the overload into fast 503s for every request (the journey's stage 4 measured
        // it), so a failed check is only "slow" while requests to the replica still get answers,
        // or while its query waits on a connection that is still open, up to a few times.
        let answering = self.last_answer_ms.load(Relaxed) >= started_ms;
        let waiting = matches!(failure, CheckFailure::TimedOut)
            && probe.client.as_ref().is_some_and(|c| !c.is_closed())
            && probe.slow_checks < HealthProbe::MAX_SLOW_CHECKS;
        if answering || waiting {
            probe.slow_checks += 1;
            self.slow_checks.fetch_add(1, Relaxed);
            return HealthCheck::Slow;
        }
        probe.client = None;
        probe.slow_checks = 0;
        HealthCheck::Down
    }

    /// Connects the health connection if needed and reads the replay position. Connecting gets
    /// a longer bound than the query: a new backend (a fork and a SCRAM exchange) on a
    /// saturated server can take seconds without anything being wrong.
    async fn read_replay(
        &self,
        client: &mut Option<tokio_postgres::Client>,
        timeout: Duration,
    ) -> Result<(bool, Option<PgLsn>, Option<PgLsn>), CheckFailure> {
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            let connect_timeout = timeout.max(HealthProbe::MIN_CONNECT_TIMEOUT);
            let mut pg: tokio_postgres::Config = self.url.parse()?;
            pg.connect_timeout(connect_timeout);
            pg.application_name("related-api-health");
            let (c, connection) = tokio::time::timeout(connect_timeout, pg.connect(NoTls))
                .await
                .map_err(|_| CheckFailure::TimedOut)??;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            *client = Some(c);
        }
        let c = client.as_ref().expect("connected above");
        let row = tokio::time::timeout(timeout, c.query_one(REPLAY_SQL, &[]))
            .await
            .map_err(|_| CheckFailure::TimedOut)??;
        Ok((
            row.get::<_, bool>(0),
            row.get::<_, Option<PgLsn>>(1),
            row.get::<_, Option<PgLsn>>(2),
        ))
    }

    fn pool_state(&self) -> bb8::State {
        self.pool.state()
    }
}

/// What one replica's health-check task keeps between checks.
#[derive(Default)]
struct HealthProbe {
    client: Option<tokio_postgres::Client>,
    lag: ReplayLag,
    /// Checks in a row that came out slow.
    slow_checks: u32,
}

/// Why a health check got no answer.
#[derive(Debug)]
enum CheckFailure {
    TimedOut,
    Error(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for CheckFailure {
    fn from(e: tokio_postgres::Error) -> Self {
        CheckFailure::Error(e)
    }
}

impl HealthProbe {
    /// The least time a health connection gets to connect.
    const MIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

    /// Timed-out checks in a row on an open connection, with no request answered meanwhile,
    /// before the replica counts as down (a hung server keeps its TCP connections open; its
    /// requests also time out and ban it meanwhile).
    const MAX_SLOW_CHECKS: u32 = 3;
}

/// The outcome of one health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HealthCheck {
    Answered,
    /// No answer, but the replica looks loaded rather than down (requests to it still get
    /// answers, or the check's query waits on an open connection): keep its state as it was.
    Slow,
    Down,
}

/// Replay lag as the time a replica has held WAL it has not replayed yet.
///
/// Each check notes the position received so far and when; the lag is the age of the oldest
/// noted position the replay has not reached. A replica that keeps up shows less than one
/// health interval; one that stays 5 s behind shows about 5 s at every check; one whose replay
/// is stuck (paused, or waiting on a conflicting query) shows a lag that grows until it catches
/// up. It errs low by up to one interval, where the usual
/// `now() - pg_last_xact_replay_timestamp()` errs high by however long the primary was idle.
#[derive(Debug, Default)]
struct ReplayLag {
    /// Received positions not yet replayed, oldest first, with when each was first seen.
    pending: VecDeque<(PgLsn, Instant)>,
}

impl ReplayLag {
    /// Bounds the memory of a replica that stays behind for a long time: once full, no newer
    /// position is noted, so the oldest (what the lag is measured from) is always kept.
    const MAX_PENDING: usize = 256;

    fn observe(
        &mut self,
        received: Option<PgLsn>,
        replayed: Option<PgLsn>,
        now: Instant,
    ) -> Duration {
        let (Some(received), Some(replayed)) = (received, replayed) else {
            // Not streaming (yet): nothing says the replica is behind.
            self.pending.clear();
            return Duration::ZERO;
        };
        while self
            .pending
            .front()
            .is_some_and(|&(lsn, _)| lsn <= replayed)
        {
            self.pending.pop_front();
        }
        let is_new = self.pending.back().is_none_or(|&(lsn, _)| received > lsn);
        if received > replayed && is_new && self.pending.len() < Self::MAX_PENDING {
            self.pending.push_back((received, now));
        }
        self.pending.front().map_or(Duration::ZERO, |&(_, since)| {
            now.saturating_duration_since(since)
        })
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

/// Routing settings taken from the configuration once.
#[derive(Debug, Clone)]
struct Routing {
    ban: Duration,
    max_ban: Duration,
    max_lag_ms: Option<u64>,
    query_timeout: Duration,
    health_interval: Duration,
}

/// The replicas requests are spread over.
pub struct ReplicaSet {
    /// Swapped whole on reload; a request holds its own `Arc` of the list it started with, so
    /// a replica removed by a reload finishes its in-flight queries before its pool is dropped.
    replicas: RwLock<Arc<Vec<Arc<Replica>>>>,
    fallback: Option<Arc<Replica>>,
    routing: Routing,
    config: Config,
    metrics: Arc<Metrics>,
}

impl ReplicaSet {
    /// Builds the pools (lazily: nothing connects yet) and starts the health checks.
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Arc<ReplicaSet>, ApiError> {
        let urls = config.replica_urls()?;
        if urls.is_empty() {
            return Err(ApiError::NoReplicas);
        }
        let replicas = urls
            .iter()
            .enumerate()
            .map(|(i, url)| Replica::new(url, i, false, config).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let fallback = config
            .primary_fallback
            .as_deref()
            .map(|url| Replica::new(url, urls.len(), true, config).map(Arc::new))
            .transpose()?;
        let set = Arc::new(ReplicaSet {
            replicas: RwLock::new(Arc::new(replicas)),
            fallback,
            routing: Routing {
                ban: Duration::from_millis(config.ban_ms.max(1)),
                max_ban: Duration::from_millis(config.max_ban_ms.max(config.ban_ms).max(1)),
                max_lag_ms: config.max_replica_lag_ms,
                query_timeout: config.query_timeout(),
                health_interval: config.health_interval().max(Duration::from_millis(10)),
            },
            config: config.clone(),
            metrics,
        });
        for replica in set.snapshot().iter().chain(set.fallback.iter()) {
            set.spawn_health_check(replica);
        }
        Ok(set)
    }

    /// The current list.
    pub fn snapshot(&self) -> Arc<Vec<Arc<Replica>>> {
        self.replicas.read().expect("replica list lock").clone()
    }

    /// Replaces the list with the configuration's URLs (flags plus a re-read replica file).
    /// Replicas whose URL stays keep their pool and state; a bad list leaves the old one.
    pub fn reload(&self) -> Result<usize, ApiError> {
        let urls = self.config.replica_urls()?;
        if urls.is_empty() {
            return Err(ApiError::NoReplicas);
        }
        let old = self.snapshot();
        let mut next = Vec::with_capacity(urls.len());
        let mut added = Vec::new();
        for (i, url) in urls.iter().enumerate() {
            match old.iter().find(|r| &r.url == url) {
                Some(r) => next.push(r.clone()),
                None => {
                    let r = Arc::new(Replica::new(url, i, false, &self.config)?);
                    added.push(r.clone());
                    next.push(r);
                }
            }
        }
        for r in &added {
            self.spawn_health_check(r);
        }
        let count = next.len();
        *self.replicas.write().expect("replica list lock") = Arc::new(next);
        Ok(count)
    }

    /// Checks a replica every interval until it leaves the set. The task holds only a weak
    /// reference, so dropping the replica (reload, shutdown) ends it.
    fn spawn_health_check(&self, replica: &Arc<Replica>) {
        let weak: Weak<Replica> = Arc::downgrade(replica);
        let interval = self.routing.health_interval;
        let timeout = self.routing.query_timeout.max(Duration::from_millis(200));
        let (ban, max_ban) = (self.routing.ban, self.routing.max_ban);
        tokio::spawn(async move {
            let mut probe = HealthProbe::default();
            loop {
                let Some(replica) = weak.upgrade() else {
                    return;
                };
                match replica.check(&mut probe, timeout).await {
                    // Load, not failure: the replica keeps the state it had.
                    HealthCheck::Slow => {}
                    HealthCheck::Answered => {
                        if !replica.healthy.swap(true, Relaxed) {
                            // It answers again: take it back at once rather than wait out the ban.
                            replica.unban();
                            tracing::info!(replica = %replica.label, "replica is back");
                        }
                    }
                    HealthCheck::Down => {
                        if replica.healthy.swap(false, Relaxed) {
                            tracing::warn!(replica = %replica.label, "replica failed its health check");
                        }
                        if !replica.is_banned() {
                            replica.ban(ban, max_ban);
                        }
                    }
                }
                drop(replica);
                tokio::time::sleep(interval).await;
            }
        });
    }

    /// Whether a request could be served now (for /readyz).
    pub fn any_usable(&self) -> bool {
        let max_lag = self.routing.max_lag_ms;
        let list = self.snapshot();
        list.iter().any(|r| r.usable(max_lag) || r.is_healthy())
            || self.fallback.as_ref().is_some_and(|f| f.is_healthy())
    }

    /// Power of two choices: two distinct random usable replicas, the one with fewer requests
    /// in flight wins. With everything banned or lagging, a fallback primary if configured;
    /// otherwise the bans are cleared on replicas whose health check still answers (a ban from a
    /// blip must not refuse all traffic) and, if they all lag, the freshest is used; with none
    /// answering, nothing: the caller sends a fast 503.
    fn pick(&self, exclude: Option<&Arc<Replica>>) -> Option<Arc<Replica>> {
        let list = self.snapshot();
        let max_lag = self.routing.max_lag_ms;
        let not_excluded = |r: &&Arc<Replica>| exclude.is_none_or(|x| !Arc::ptr_eq(x, r));
        let mut candidates: Vec<&Arc<Replica>> = list
            .iter()
            .filter(not_excluded)
            .filter(|r| r.usable(max_lag))
            .collect();
        if candidates.is_empty() {
            if let Some(f) = &self.fallback {
                if f.usable(None) && exclude.is_none_or(|x| !Arc::ptr_eq(x, f)) {
                    return Some(f.clone());
                }
            }
            let healthy: Vec<&Arc<Replica>> = list.iter().filter(|r| r.is_healthy()).collect();
            for r in &healthy {
                r.unban();
            }
            let reachable: Vec<&Arc<Replica>> = healthy.into_iter().filter(not_excluded).collect();
            candidates = reachable
                .iter()
                .copied()
                .filter(|r| r.lag_ok(max_lag))
                .collect();
            if candidates.is_empty() {
                // Every reachable replica lags: stale answers from the freshest one beat
                // refusing all traffic.
                return reachable
                    .into_iter()
                    .min_by_key(|r| r.lag_ms.load(Relaxed))
                    .cloned();
            }
        }
        match candidates.len() {
            0 => None,
            1 => Some(candidates[0].clone()),
            n => {
                let mut rng = rand::thread_rng();
                let a = rng.gen_range(0..n);
                let mut b = rng.gen_range(0..n - 1);
                if b >= a {
                    b += 1;
                }
                let (a, b) = (candidates[a], candidates[b]);
                Some(if b.in_flight() < a.in_flight() { b } else { a }.clone())
            }
        }
    }

    /// Runs the query on a replica, retrying once on another one if the first fails.
    pub async fn fetch(
        &self,
        product_id: i32,
        limit: i64,
        deadline: Instant,
    ) -> Result<Lookup, HttpError> {
        let mut failed: Option<Arc<Replica>> = None;
        // A retry with nowhere to go reports what the first attempt ran into.
        let mut timed_out = false;
        for attempt in 0..2 {
            let Some(replica) = self.pick(failed.as_ref()) else {
                if timed_out {
                    self.metrics.deadline_exceeded.fetch_add(1, Relaxed);
                    return Err(HttpError::DeadlineExceeded);
                }
                self.metrics.no_replica.fetch_add(1, Relaxed);
                return Err(HttpError::NoReplica);
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                self.metrics.deadline_exceeded.fetch_add(1, Relaxed);
                return Err(HttpError::DeadlineExceeded);
            }
            // Leave the request deadline a little room so the attempt's own timeout fires
            // first and the connection is marked broken.
            let timeout = self.routing.query_timeout.min(remaining);
            if attempt > 0 {
                self.metrics.retries.fetch_add(1, Relaxed);
            }
            self.metrics.db_queries.fetch_add(1, Relaxed);
            match replica.attempt(product_id, limit, timeout).await {
                Ok(lookup) => return Ok(lookup),
                Err(AttemptError::PoolTimeout) => {
                    self.metrics.pool_wait_timeouts.fetch_add(1, Relaxed);
                    return Err(HttpError::PoolTimeout);
                }
                Err(AttemptError::Query(detail)) => {
                    tracing::error!(replica = %replica.label, error = %detail, "query failed");
                    return Err(HttpError::Internal);
                }
                Err(AttemptError::Replica(detail)) => {
                    timed_out = detail.starts_with("query timed out");
                    replica.failures.fetch_add(1, Relaxed);
                    replica.ban(self.routing.ban, self.routing.max_ban);
                    tracing::warn!(
                        replica = %replica.label,
                        error = %detail,
                        retry = attempt == 0,
                        "replica failed; banned"
                    );
                    failed = Some(replica);
                }
            }
        }
        if timed_out {
            self.metrics.deadline_exceeded.fetch_add(1, Relaxed);
            return Err(HttpError::DeadlineExceeded);
        }
        self.metrics.no_replica.fetch_add(1, Relaxed);
        Err(HttpError::NoReplica)
    }

    /// Per-replica lines of the /metrics exposition.
    pub fn render_metrics(&self, out: &mut String) {
        let list = self.snapshot();
        let all: Vec<&Arc<Replica>> = list.iter().chain(self.fallback.iter()).collect();
        type Gauge = fn(&Replica) -> u64;
        let series: [(&str, &str, &str, Gauge); 10] = [
            (
                "api_replica_in_flight",
                "gauge",
                "Requests in flight on the replica.",
                |r| r.in_flight() as u64,
            ),
            (
                "api_replica_banned",
                "gauge",
                "1 while the replica is banned.",
                |r| r.is_banned() as u64,
            ),
            (
                "api_replica_healthy",
                "gauge",
                "1 while the last health check answered.",
                |r| r.is_healthy() as u64,
            ),
            (
                "api_replica_lag_ms",
                "gauge",
                "Replay lag seen by the last health check.",
                |r| r.lag_ms.load(Relaxed),
            ),
            (
                "api_replica_queries_total",
                "counter",
                "Queries sent to the replica.",
                |r| r.queries.load(Relaxed),
            ),
            (
                "api_replica_errors_total",
                "counter",
                "Failed attempts on the replica.",
                |r| r.failures.load(Relaxed),
            ),
            (
                "api_replica_bans_total",
                "counter",
                "Times the replica was banned.",
                |r| r.bans.load(Relaxed),
            ),
            (
                "api_replica_slow_health_checks_total",
                "counter",
                "Failed health checks taken for overload, not failure (the replica kept its state).",
                |r| r.slow_checks.load(Relaxed),
            ),
            (
                "api_pool_connections",
                "gauge",
                "Connections in the replica's pool.",
                |r| r.pool_state().connections as u64,
            ),
            (
                "api_pool_idle_connections",
                "gauge",
                "Idle connections in the pool.",
                |r| r.pool_state().idle_connections as u64,
            ),
        ];
        for (name, kind, help, value) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for r in &all {
                let _ = writeln!(out, "{name}{{replica=\"{}\"}} {}", r.label, value(r));
            }
        }
        let _ = writeln!(
            out,
            "# HELP api_pool_waits_total Checkouts that had to wait for a connection.\n# TYPE api_pool_waits_total counter"
        );
        for r in &all {
            let stats = r.pool_state().statistics;
            let _ = writeln!(
                out,
                "api_pool_waits_total{{replica=\"{}\"}} {}",
                r.label, stats.get_waited
            );
        }
        let _ = writeln!(
            out,
            "# HELP api_pool_wait_seconds_total Time spent waiting for a connection.\n# TYPE api_pool_wait_seconds_total counter"
        );
        for r in &all {
            let stats = r.pool_state().statistics;
            let _ = writeln!(
                out,
                "api_pool_wait_seconds_total{{replica=\"{}\"}} {}",
                r.label,
                stats.get_wait_time.as_secs_f64()
            );
        }
        let _ = writeln!(
            out,
            "# HELP api_pool_connect_failures_total Failed connection attempts.\n# TYPE api_pool_connect_failures_total counter"
        );
        for r in &all {
            let _ = writeln!(
                out,
                "api_pool_connect_failures_total{{replica=\"{}\"}} {}",
                r.label,
                r.signals.failures.load(Relaxed)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lsn(n: u64) -> Option<PgLsn> {
        Some(PgLsn::from(n))
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_replica_that_keeps_up_shows_no_lag() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut lag = ReplayLag::default();
        assert_eq!(lag.observe(lsn(10), lsn(10), t0), Duration::ZERO);
        // Mid-replay at one check, past that point at the next: never late by a whole check.
        assert_eq!(lag.observe(lsn(20), lsn(15), at(0)), Duration::ZERO);
        assert_eq!(lag.observe(lsn(30), lsn(25), at(100)), Duration::ZERO);
        assert_eq!(lag.observe(lsn(30), lsn(30), at(200)), Duration::ZERO);
    }

    #[test]
    fn a_stuck_replay_shows_a_growing_lag_until_it_catches_up() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut lag = ReplayLag::default();
        lag.observe(lsn(20), lsn(10), t0);
        assert_eq!(lag.observe(lsn(25), lsn(10), at(700)), ms(700));
        assert_eq!(lag.observe(lsn(30), lsn(19), at(1500)), ms(1500));
        // Past what was received at 0, short of what was received at 700.
        assert_eq!(lag.observe(lsn(30), lsn(22), at(1600)), ms(900));
        assert_eq!(lag.observe(lsn(30), lsn(30), at(2000)), Duration::ZERO);
    }

    #[test]
    fn a_replica_steadily_one_second_behind_shows_about_one_second() {
        let t0 = Instant::now();
        let mut lag = ReplayLag::default();
        // WAL arrives at 1 unit per ms; the replay is where the primary was 1000 ms earlier.
        for check in 0..100u64 {
            let now_ms = check * 100;
            let seen = lag.observe(
                lsn(1_000_000 + now_ms),
                lsn(1_000_000 + now_ms.saturating_sub(1000)),
                t0 + ms(now_ms),
            );
            if now_ms >= 1000 {
                assert!(
                    seen >= ms(900) && seen <= ms(1000),
                    "{seen:?} at {now_ms} ms"
                );
            }
        }
    }

    #[test]
    fn no_wal_receiver_means_no_known_lag() {
        let t0 = Instant::now();
        let mut lag = ReplayLag::default();
        lag.observe(lsn(20), lsn(10), t0);
        assert_eq!(lag.observe(None, lsn(10), t0 + ms(5000)), Duration::ZERO);
    }
}

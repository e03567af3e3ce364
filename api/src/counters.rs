//! Process-wide counters: requests by route and status, latency histograms, and the outcomes
//! of routing, the cache and reloads. They are bumped on the hot path and read only as a
//! [`CountersSnapshot`], which [`crate::metrics`] renders; nothing here writes text.
//!
//! Everything is a relaxed atomic in fixed arrays indexed by route and status, so counting a
//! request costs a few increments and no lock or allocation. What every request bumps (its
//! route and status, its latency, a cache lookup) is kept in one shard per runtime thread, so
//! that the threads do not pass the same cache lines back and forth on every request (at
//! 70,000 cache hits a second on 2 cores that traffic showed in the profile); a snapshot sums
//! the shards.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The routes requests are counted under (a fixed set, so labels cannot explode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteLabel {
    Related,
    Compat,
    Healthz,
    Readyz,
    Metrics,
    /// The embedded files: `/openapi.json` and `/widget/...`.
    Static,
    Other,
}

/// Every route with its label value, in exposition order.
pub const ROUTES: [(RouteLabel, &str); 7] = [
    (RouteLabel::Related, "/products/{id}/related"),
    (RouteLabel::Compat, "/api/data/{id}"),
    (RouteLabel::Healthz, "/healthz"),
    (RouteLabel::Readyz, "/readyz"),
    (RouteLabel::Metrics, "/metrics"),
    (RouteLabel::Static, "static"),
    (RouteLabel::Other, "other"),
];

/// Statuses the server produces itself; anything else is counted as "other".
pub const STATUSES: [u16; 11] = [200, 204, 304, 400, 404, 405, 414, 431, 500, 503, 504];
/// The slot after the known statuses counts every other status.
pub const OTHER_STATUS: usize = STATUSES.len();

/// Latency histogram upper bounds, in seconds.
pub const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// Upper bounds of the batch size histogram (lookups answered by one query).
pub const BATCH_BUCKETS: [u64; 8] = [1, 2, 4, 8, 16, 32, 64, 128];

/// Queries of the related-items SQL and how many lookups each answered (1 when batching is off
/// or a request went alone).
#[derive(Default)]
pub struct BatchSizes {
    buckets: [AtomicU64; BATCH_BUCKETS.len()],
    count: AtomicU64,
    sum: AtomicU64,
}

impl BatchSizes {
    pub fn observe(&self, lookups: usize) {
        let n = lookups as u64;
        if let Some(i) = BATCH_BUCKETS.iter().position(|b| n <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum.fetch_add(n, Relaxed);
    }

    fn snapshot(&self) -> BatchSizesSnapshot {
        BatchSizesSnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Relaxed)),
            count: self.count.load(Relaxed),
            sum: self.sum.load(Relaxed),
        }
    }
}

/// [`BatchSizes`] as read at one moment; `buckets` are per bucket, not cumulative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchSizesSnapshot {
    pub buckets: [u64; BATCH_BUCKETS.len()],
    /// Queries run.
    pub count: u64,
    /// Lookups they answered.
    pub sum: u64,
}

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Relaxed);
    }

    fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Relaxed)),
            count: self.count.load(Relaxed),
            sum_micros: self.sum_micros.load(Relaxed),
        }
    }
}

/// Shards of the per-request counters: threads beyond this many share them.
const SHARDS: usize = 8;

/// What every request bumps, for the threads of one shard; aligned so that two shards never
/// share a cache line.
#[derive(Default)]
#[repr(align(128))]
struct RequestShard {
    requests: [[AtomicU64; STATUSES.len() + 1]; ROUTES.len()],
    latency: [Histogram; ROUTES.len()],
    cache_lookups: AtomicU64,
}

/// This thread's shard: threads are numbered in the order they first count something.
fn shard_index() -> usize {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static SHARD: usize = (NEXT.fetch_add(1, Relaxed) as usize) % SHARDS;
    }
    SHARD.with(|s| *s)
}

/// Counters that are not per replica.
#[derive(Default)]
pub struct Counters {
    shards: [RequestShard; SHARDS],
    pub db_queries: AtomicU64,
    pub retries: AtomicU64,
    pub pool_wait_timeouts: AtomicU64,
    pub overloaded: AtomicU64,
    pub deadline_exceeded: AtomicU64,
    pub no_replica: AtomicU64,
    pub cache_misses: AtomicU64,
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
    pub batches: BatchSizes,
}

/// One latency histogram as read at one moment; `buckets` are per bucket, not cumulative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    pub buckets: [u64; BUCKETS.len()],
    pub count: u64,
    pub sum_micros: u64,
}

impl HistogramSnapshot {
    fn add(self, other: HistogramSnapshot) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i] + other.buckets[i]),
            count: self.count + other.count,
            sum_micros: self.sum_micros + other.sum_micros,
        }
    }
}

/// [`Counters`] as read at one moment, indexed like [`ROUTES`] and [`STATUSES`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CountersSnapshot {
    pub requests: [[u64; STATUSES.len() + 1]; ROUTES.len()],
    pub latency: [HistogramSnapshot; ROUTES.len()],
    pub db_queries: u64,
    pub retries: u64,
    pub pool_wait_timeouts: u64,
    pub overloaded: u64,
    pub deadline_exceeded: u64,
    pub no_replica: u64,
    pub cache_lookups: u64,
    pub cache_misses: u64,
    pub reloads: u64,
    pub reload_failures: u64,
    pub batches: BatchSizesSnapshot,
}

impl CountersSnapshot {
    /// Requests answered with a 5xx status (an unknown status counts as one).
    pub fn server_errors(&self) -> u64 {
        self.requests
            .iter()
            .flat_map(|row| row.iter().enumerate())
            .filter(|(s, _)| STATUSES.get(*s).is_none_or(|st| *st >= 500))
            .map(|(_, n)| n)
            .sum()
    }
}

fn route_index(route: RouteLabel) -> usize {
    ROUTES.iter().position(|(r, _)| *r == route).unwrap_or(0)
}

impl Counters {
    pub fn record(&self, route: RouteLabel, status: u16, elapsed: Duration) {
        let r = route_index(route);
        let s = STATUSES
            .iter()
            .position(|x| *x == status)
            .unwrap_or(OTHER_STATUS);
        let shard = &self.shards[shard_index()];
        shard.requests[r][s].fetch_add(1, Relaxed);
        shard.latency[r].observe(elapsed);
    }

    /// A lookup in the response cache (hit or miss; misses are counted apart).
    pub fn cache_lookup(&self) {
        self.shards[shard_index()]
            .cache_lookups
            .fetch_add(1, Relaxed);
    }

    /// Requests served on a route with a status so far.
    pub fn requests(&self, route: RouteLabel, status: u16) -> u64 {
        let r = route_index(route);
        STATUSES
            .iter()
            .position(|x| *x == status)
            .map(|s| {
                self.shards
                    .iter()
                    .map(|shard| shard.requests[r][s].load(Relaxed))
                    .sum()
            })
            .unwrap_or(0)
    }

    pub fn snapshot(&self) -> CountersSnapshot {
        CountersSnapshot {
            requests: std::array::from_fn(|r| {
                std::array::from_fn(|s| {
                    self.shards
                        .iter()
                        .map(|shard| shard.requests[r][s].load(Relaxed))
                        .sum()
                })
            }),
            latency: std::array::from_fn(|r| {
                self.shards
                    .iter()
                    .map(|shard| shard.latency[r].snapshot())
                    .fold(HistogramSnapshot::default(), HistogramSnapshot::add)
            }),
            db_queries: self.db_queries.load(Relaxed),
            retries: self.retries.load(Relaxed),
            pool_wait_timeouts: self.pool_wait_timeouts.load(Relaxed),
            overloaded: self.overloaded.load(Relaxed),
            deadline_exceeded: self.deadline_exceeded.load(Relaxed),
            no_replica: self.no_replica.load(Relaxed),
            cache_lookups: self
                .shards
                .iter()
                .map(|shard| shard.cache_lookups.load(Relaxed))
                .sum(),
            cache_misses: self.cache_misses.load(Relaxed),
            reloads: self.reloads.load(Relaxed),
            reload_failures: self.reload_failures.load(Relaxed),
            batches: self.batches.snapshot(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_land_in_their_route_and_status() {
        let c = Counters::default();
        c.record(RouteLabel::Related, 200, Duration::from_micros(300));
        c.record(RouteLabel::Related, 200, Duration::from_millis(3));
        c.record(RouteLabel::Compat, 503, Duration::from_millis(1));
        c.record(RouteLabel::Other, 418, Duration::from_millis(1));
        assert_eq!(c.requests(RouteLabel::Related, 200), 2);
        assert_eq!(c.requests(RouteLabel::Compat, 503), 1);
        let s = c.snapshot();
        assert_eq!(s.server_errors(), 2, "the 503 and the unknown 418");
        let h = &s.latency[0];
        assert_eq!(h.count, 2);
        assert_eq!(h.sum_micros, 3300);
        assert_eq!(h.buckets[0], 1, "0.3 ms is under 0.5 ms");
        assert_eq!(h.buckets[3], 1, "3 ms is under 5 ms");
    }

    #[test]
    fn counts_from_many_threads_add_up() {
        let c = std::sync::Arc::new(Counters::default());
        let threads: Vec<_> = (0..SHARDS + 3)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        c.record(RouteLabel::Compat, 200, Duration::from_micros(700));
                        c.cache_lookup();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let n = (SHARDS as u64 + 3) * 100;
        assert_eq!(c.requests(RouteLabel::Compat, 200), n);
        let s = c.snapshot();
        assert_eq!(s.cache_lookups, n);
        assert_eq!(s.latency[1].count, n);
        assert_eq!(s.latency[1].buckets[1], n, "0.7 ms is under 1 ms");
        assert_eq!(s.latency[1].sum_micros, n * 700);
    }

    #[test]
    fn batch_sizes_land_in_their_bucket() {
        let c = Counters::default();
        for n in [1, 1, 3, 16, 200] {
            c.batches.observe(n);
        }
        let b = c.snapshot().batches;
        assert_eq!(b.count, 5);
        assert_eq!(b.sum, 221);
        assert_eq!(
            b.buckets,
            [2, 0, 1, 0, 1, 0, 0, 0],
            "200 is past the last bound"
        );
    }
}

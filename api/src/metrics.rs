//! Process-wide counters and the hand-written Prometheus text exposition for `/metrics`.
//!
//! Everything is a relaxed atomic in fixed arrays indexed by route and status, so counting a
//! request costs a few uncontended increments and no lock or allocation on the hot path.

use std::fmt::Write;
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
    Other,
}

const ROUTES: [(RouteLabel, &str); 6] = [
    (RouteLabel::Related, "/products/{id}/related"),
    (RouteLabel::Compat, "/api/data/{id}"),
    (RouteLabel::Healthz, "/healthz"),
    (RouteLabel::Readyz, "/readyz"),
    (RouteLabel::Metrics, "/metrics"),
    (RouteLabel::Other, "other"),
];

/// Statuses the server produces itself; anything else is counted as "other".
const STATUSES: [u16; 11] = [200, 204, 304, 400, 404, 405, 414, 431, 500, 503, 504];
/// The slot after the known statuses counts every other status.
const OTHER_STATUS: usize = STATUSES.len();

/// Latency histogram upper bounds, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

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
}

/// Counters that are not per replica.
#[derive(Default)]
pub struct Metrics {
    requests: [[AtomicU64; STATUSES.len() + 1]; ROUTES.len()],
    latency: [Histogram; ROUTES.len()],
    pub db_queries: AtomicU64,
    pub retries: AtomicU64,
    pub pool_wait_timeouts: AtomicU64,
    pub overloaded: AtomicU64,
    pub deadline_exceeded: AtomicU64,
    pub no_replica: AtomicU64,
    pub cache_lookups: AtomicU64,
    pub cache_misses: AtomicU64,
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
}

fn route_index(route: RouteLabel) -> usize {
    ROUTES.iter().position(|(r, _)| *r == route).unwrap_or(0)
}

impl Metrics {
    pub fn record(&self, route: RouteLabel, status: u16, elapsed: Duration) {
        let r = route_index(route);
        let s = STATUSES
            .iter()
            .position(|x| *x == status)
            .unwrap_or(OTHER_STATUS);
        self.requests[r][s].fetch_add(1, Relaxed);
        self.latency[r].observe(elapsed);
    }

    /// Requests served on a route with a status so far (for tests and the exposition).
    pub fn requests(&self, route: RouteLabel, status: u16) -> u64 {
        let r = route_index(route);
        STATUSES
            .iter()
            .position(|x| *x == status)
            .map(|s| self.requests[r][s].load(Relaxed))
            .unwrap_or(0)
    }

    /// Writes the process-wide part of the exposition.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP api_requests_total HTTP requests by route and status.\n# TYPE api_requests_total counter"
        );
        for (r, (_, route)) in ROUTES.iter().enumerate() {
            for s in 0..=OTHER_STATUS {
                let n = self.requests[r][s].load(Relaxed);
                if n == 0 {
                    continue;
                }
                let status = STATUSES
                    .get(s)
                    .map_or_else(|| "other".to_string(), |st| st.to_string());
                let _ = writeln!(
                    out,
                    "api_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP api_request_duration_seconds Time from request head to response.\n# TYPE api_request_duration_seconds histogram"
        );
        for (r, (_, route)) in ROUTES.iter().enumerate() {
            let h = &self.latency[r];
            let count = h.count.load(Relaxed);
            if count == 0 {
                continue;
            }
            let mut cumulative = 0;
            for (i, bound) in BUCKETS.iter().enumerate() {
                cumulative += h.buckets[i].load(Relaxed);
                let _ = writeln!(
                    out,
                    "api_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "api_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}"
            );
            let sum = h.sum_micros.load(Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "api_request_duration_seconds_sum{{route=\"{route}\"}} {sum}\napi_request_duration_seconds_count{{route=\"{route}\"}} {count}"
            );
        }
        let lookups = self.cache_lookups.load(Relaxed);
        let misses = self.cache_misses.load(Relaxed);
        let counters: [(&str, &str, u64); 11] = [
            (
                "api_db_queries_total",
                "Related-items queries sent to a database (attempts, retries included).",
                self.db_queries.load(Relaxed),
            ),
            (
                "api_retries_total",
                "Requests retried on another replica after a failure.",
                self.retries.load(Relaxed),
            ),
            (
                "api_pool_wait_timeouts_total",
                "Requests that waited past --pool-wait-ms for a connection (503).",
                self.pool_wait_timeouts.load(Relaxed),
            ),
            (
                "api_overloaded_total",
                "Requests refused at --max-concurrent-requests (503).",
                self.overloaded.load(Relaxed),
            ),
            (
                "api_deadline_exceeded_total",
                "Requests past --request-timeout-ms (504).",
                self.deadline_exceeded.load(Relaxed),
            ),
            (
                "api_no_replica_total",
                "Requests answered 503 because no replica was usable.",
                self.no_replica.load(Relaxed),
            ),
            (
                "api_errors_total",
                "Requests answered with a 5xx status.",
                self.server_errors(),
            ),
            (
                "api_cache_hits_total",
                "Cache lookups answered without a query (coalesced waiters included).",
                lookups.saturating_sub(misses),
            ),
            (
                "api_cache_misses_total",
                "Cache lookups that ran a query.",
                misses,
            ),
            (
                "api_replica_reloads_total",
                "Replica list reloads (SIGHUP).",
                self.reloads.load(Relaxed),
            ),
            (
                "api_replica_reload_failures_total",
                "Replica list reloads refused (bad file or URL); the old list stays.",
                self.reload_failures.load(Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
    }

    fn server_errors(&self) -> u64 {
        let mut n = 0;
        for row in &self.requests {
            for (s, count) in row.iter().enumerate() {
                if STATUSES.get(s).is_none_or(|st| *st >= 500) {
                    n += count.load(Relaxed);
                }
            }
        }
        n
    }
}

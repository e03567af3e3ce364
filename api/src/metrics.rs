//! The `/metrics` exposition: the one place that writes Prometheus text. It renders snapshots
//! only (the process-wide [`CountersSnapshot`], one [`ReplicaStats`] per replica, the cache's
//! size), so it is a pure function that tests can call without a server; `http` takes the
//! snapshots and serves what this returns.

use std::fmt::{Display, Write};

use crate::counters::{
    BatchSizesSnapshot, CountersSnapshot, BATCH_BUCKETS, BUCKETS, OTHER_STATUS, ROUTES, STATUSES,
};
use crate::replicas::ReplicaStats;

/// Everything `/metrics` shows, as read at one moment.
pub struct Exposition<'a> {
    pub counters: &'a CountersSnapshot,
    /// The replicas, then the fallback primary if one is configured.
    pub replicas: &'a [ReplicaStats],
    /// Responses held in the cache; `None` when the cache is off (the series is left out).
    pub cache_entries: Option<u64>,
}

/// The Prometheus text (version 0.0.4) of `e`.
pub fn render(e: &Exposition<'_>) -> String {
    let mut out = String::with_capacity(8192);
    process(&mut out, e.counters);
    replicas(&mut out, e.replicas);
    if let Some(entries) = e.cache_entries {
        out.push_str("# HELP api_cache_entries Responses held in the cache.\n# TYPE api_cache_entries gauge\n");
        let _ = writeln!(out, "api_cache_entries {entries}");
    }
    out
}

/// The process-wide part: requests, latency, and the counters that are not per replica.
fn process(out: &mut String, c: &CountersSnapshot) {
    let _ = writeln!(
        out,
        "# HELP api_requests_total HTTP requests by route and status.\n# TYPE api_requests_total counter"
    );
    for (r, (_, route)) in ROUTES.iter().enumerate() {
        for s in 0..=OTHER_STATUS {
            let n = c.requests[r][s];
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
        let h = &c.latency[r];
        if h.count == 0 {
            continue;
        }
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += h.buckets[i];
            let _ = writeln!(
                out,
                "api_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = h.count;
        let _ = writeln!(
            out,
            "api_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}"
        );
        let sum = h.sum_micros as f64 / 1e6;
        let _ = writeln!(
            out,
            "api_request_duration_seconds_sum{{route=\"{route}\"}} {sum}\napi_request_duration_seconds_count{{route=\"{route}\"}} {count}"
        );
    }
    let counters: [(&str, &str, u64); 11] = [
        (
            "api_db_queries_total",
            "Related-items queries sent to a database (attempts, retries included).",
            c.db_queries,
        ),
        (
            "api_retries_total",
            "Requests retried on another replica after a failure.",
            c.retries,
        ),
        (
            "api_pool_wait_timeouts_total",
            "Requests that waited past --pool-wait-ms for a connection (503).",
            c.pool_wait_timeouts,
        ),
        (
            "api_overloaded_total",
            "Requests refused at --max-concurrent-requests (503).",
            c.overloaded,
        ),
        (
            "api_deadline_exceeded_total",
            "Requests past --request-timeout-ms (504).",
            c.deadline_exceeded,
        ),
        (
            "api_no_replica_total",
            "Requests answered 503 because no replica was usable.",
            c.no_replica,
        ),
        (
            "api_errors_total",
            "Requests answered with a 5xx status.",
            c.server_errors(),
        ),
        (
            "api_cache_hits_total",
            "Cache lookups answered without a query (coalesced waiters included).",
            c.cache_lookups.saturating_sub(c.cache_misses),
        ),
        (
            "api_cache_misses_total",
            "Cache lookups that ran a query.",
            c.cache_misses,
        ),
        (
            "api_replica_reloads_total",
            "Replica list reloads (SIGHUP).",
            c.reloads,
        ),
        (
            "api_replica_reload_failures_total",
            "Replica list reloads refused (bad file or URL); the old list stays.",
            c.reload_failures,
        ),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    }
    batches(out, &c.batches);
}

/// The queries run (`api_batches_total`) and the lookups each answered (`api_batch_size`).
fn batches(out: &mut String, b: &BatchSizesSnapshot) {
    let _ = writeln!(
        out,
        "# HELP api_batches_total Related-items queries run on the replicas, each answering one or more lookups (--batch-max).\n# TYPE api_batches_total counter\napi_batches_total {}",
        b.count
    );
    let _ = writeln!(
        out,
        "# HELP api_batch_size Lookups answered by one query (1: a request that went alone).\n# TYPE api_batch_size histogram"
    );
    let mut cumulative = 0;
    for (i, bound) in BATCH_BUCKETS.iter().enumerate() {
        cumulative += b.buckets[i];
        let _ = writeln!(out, "api_batch_size_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    let _ = writeln!(
        out,
        "api_batch_size_bucket{{le=\"+Inf\"}} {}\napi_batch_size_sum {}\napi_batch_size_count {}",
        b.count, b.sum, b.count
    );
}

/// One series with a `replica` label: its HELP and TYPE, then one line per replica.
fn series<V: Display>(
    out: &mut String,
    stats: &[ReplicaStats],
    name: &str,
    kind: &str,
    help: &str,
    value: impl Fn(&ReplicaStats) -> V,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for r in stats {
        let _ = writeln!(out, "{name}{{replica=\"{}\"}} {}", r.label, value(r));
    }
}

/// The per-replica part: routing state, counters and pool figures.
fn replicas(out: &mut String, stats: &[ReplicaStats]) {
    let s = stats;
    series(
        out,
        s,
        "api_replica_in_flight",
        "gauge",
        "Requests in flight on the replica.",
        |r| r.in_flight,
    );
    series(
        out,
        s,
        "api_replica_banned",
        "gauge",
        "1 while the replica is banned.",
        |r| u64::from(r.banned),
    );
    series(
        out,
        s,
        "api_replica_healthy",
        "gauge",
        "1 while the last health check answered.",
        |r| u64::from(r.healthy),
    );
    series(
        out,
        s,
        "api_replica_lag_ms",
        "gauge",
        "Replay lag seen by the last health check.",
        |r| r.lag_ms,
    );
    series(
        out,
        s,
        "api_replica_queries_total",
        "counter",
        "Queries sent to the replica.",
        |r| r.queries,
    );
    series(
        out,
        s,
        "api_replica_errors_total",
        "counter",
        "Failed attempts on the replica.",
        |r| r.failures,
    );
    series(
        out,
        s,
        "api_replica_bans_total",
        "counter",
        "Times the replica was banned.",
        |r| r.bans,
    );
    series(
        out,
        s,
        "api_replica_slow_health_checks_total",
        "counter",
        "Failed health checks taken for overload, not failure (the replica kept its state).",
        |r| r.slow_checks,
    );
    series(
        out,
        s,
        "api_replica_timeouts_under_load_total",
        "counter",
        "Query timeouts taken for load, not failure: the replica answered others meanwhile, or was the last usable one (no ban).",
        |r| r.timeouts_under_load,
    );
    series(
        out,
        s,
        "api_pool_connections",
        "gauge",
        "Connections in the replica's pool.",
        |r| r.pool.connections,
    );
    series(
        out,
        s,
        "api_pool_idle_connections",
        "gauge",
        "Idle connections in the pool.",
        |r| r.pool.idle_connections,
    );
    series(
        out,
        s,
        "api_pool_waits_total",
        "counter",
        "Checkouts that had to wait for a connection.",
        |r| r.pool.waits,
    );
    series(
        out,
        s,
        "api_pool_wait_seconds_total",
        "counter",
        "Time spent waiting for a connection.",
        |r| r.pool.wait_time.as_secs_f64(),
    );
    series(
        out,
        s,
        "api_pool_connect_failures_total",
        "counter",
        "Failed connection attempts.",
        |r| r.pool.connect_failures,
    );
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::replicas::PoolStats;

    fn replica(label: &str) -> ReplicaStats {
        ReplicaStats {
            label: label.into(),
            in_flight: 2,
            banned: true,
            healthy: true,
            lag_ms: 1500,
            queries: 40,
            failures: 3,
            bans: 1,
            slow_checks: 4,
            timeouts_under_load: 2,
            pool: PoolStats {
                connections: 8,
                idle_connections: 6,
                waits: 5,
                wait_time: Duration::from_millis(250),
                connect_failures: 7,
            },
            ..ReplicaStats::default()
        }
    }

    #[test]
    fn every_replica_series_has_one_line_per_replica() {
        let counters = CountersSnapshot::default();
        let stats = [replica("127.0.0.1:5433/related"), replica("h:5434/db")];
        let text = render(&Exposition {
            counters: &counters,
            replicas: &stats,
            cache_entries: None,
        });
        for line in [
            "# HELP api_replica_in_flight Requests in flight on the replica.",
            "# TYPE api_replica_in_flight gauge",
            "api_replica_in_flight{replica=\"127.0.0.1:5433/related\"} 2",
            "api_replica_in_flight{replica=\"h:5434/db\"} 2",
            "api_replica_banned{replica=\"h:5434/db\"} 1",
            "api_replica_healthy{replica=\"h:5434/db\"} 1",
            "api_replica_lag_ms{replica=\"h:5434/db\"} 1500",
            "# TYPE api_replica_queries_total counter",
            "api_replica_queries_total{replica=\"h:5434/db\"} 40",
            "api_replica_errors_total{replica=\"h:5434/db\"} 3",
            "api_replica_bans_total{replica=\"h:5434/db\"} 1",
            "api_replica_slow_health_checks_total{replica=\"h:5434/db\"} 4",
            "api_replica_timeouts_under_load_total{replica=\"h:5434/db\"} 2",
            "api_pool_connections{replica=\"h:5434/db\"} 8",
            "api_pool_idle_connections{replica=\"h:5434/db\"} 6",
            "api_pool_waits_total{replica=\"h:5434/db\"} 5",
            "api_pool_wait_seconds_total{replica=\"h:5434/db\"} 0.25",
            "api_pool_connect_failures_total{replica=\"h:5434/db\"} 7",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?}:\n{text}");
        }
        assert!(!text.contains("api_cache_entries"), "cache off: no gauge");
    }

    #[test]
    fn process_counters_and_the_histogram() {
        let mut c = CountersSnapshot::default();
        c.requests[0][0] = 3; // /products/{id}/related 200
        c.requests[0][OTHER_STATUS] = 1; // an unknown status
        c.requests[1][9] = 2; // /api/data/{id} 503
        c.latency[0].buckets[0] = 2;
        c.latency[0].buckets[13] = 2;
        c.latency[0].count = 4;
        c.latency[0].sum_micros = 1_500_000;
        c.cache_lookups = 10;
        c.cache_misses = 4;
        c.db_queries = 9;
        c.batches.buckets[0] = 4;
        c.batches.buckets[4] = 1;
        c.batches.count = 6;
        c.batches.sum = 4 + 12 + 300;
        let text = render(&Exposition {
            counters: &c,
            replicas: &[],
            cache_entries: Some(12),
        });
        for line in [
            "api_requests_total{route=\"/products/{id}/related\",status=\"200\"} 3",
            "api_requests_total{route=\"/products/{id}/related\",status=\"other\"} 1",
            "api_requests_total{route=\"/api/data/{id}\",status=\"503\"} 2",
            "api_request_duration_seconds_bucket{route=\"/products/{id}/related\",le=\"0.0005\"} 2",
            "api_request_duration_seconds_bucket{route=\"/products/{id}/related\",le=\"5\"} 2",
            "api_request_duration_seconds_bucket{route=\"/products/{id}/related\",le=\"10\"} 4",
            "api_request_duration_seconds_bucket{route=\"/products/{id}/related\",le=\"+Inf\"} 4",
            "api_request_duration_seconds_sum{route=\"/products/{id}/related\"} 1.5",
            "api_request_duration_seconds_count{route=\"/products/{id}/related\"} 4",
            "api_errors_total 3",
            "api_cache_hits_total 6",
            "api_cache_misses_total 4",
            "api_db_queries_total 9",
            "# TYPE api_batches_total counter",
            "api_batches_total 6",
            "# TYPE api_batch_size histogram",
            "api_batch_size_bucket{le=\"1\"} 4",
            "api_batch_size_bucket{le=\"8\"} 4",
            "api_batch_size_bucket{le=\"16\"} 5",
            "api_batch_size_bucket{le=\"128\"} 5",
            "api_batch_size_bucket{le=\"+Inf\"} 6",
            "api_batch_size_sum 316",
            "api_batch_size_count 6",
            "# TYPE api_cache_entries gauge",
            "api_cache_entries 12",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?}:\n{text}");
        }
        assert!(
            !text.contains("route=\"/healthz\""),
            "routes without requests are left out"
        );
    }
}

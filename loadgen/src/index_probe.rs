//! The measurement behind the journey's index stage (`journey/index_stage.rs`): the API's own
//! query timed without and with the B-tree index on `related_items`, with EXPLAIN ANALYZE of
//! each, at the current scale.

use std::time::{Duration, Instant};

use rand::Rng;
use serde::{Deserialize, Serialize};
use stack::Cluster;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IndexProbe {
    pub relation_rows: u64,
    pub without_index_ms: Vec<f64>,
    pub without_index_ms_median: f64,
    pub with_index_samples: usize,
    pub with_index_ms_median: f64,
    pub with_index_ms_p99: f64,
    pub speedup: f64,
    pub index_build_secs: f64,
    pub plan_without_index: Vec<String>,
    pub plan_with_index: Vec<String>,
}

const UNINDEXED_SAMPLES: usize = 3;
const INDEXED_SAMPLES: usize = 500;

/// Time the query on the primary, build the index (the `seeder index` step), time it again.
pub async fn probe_index(cluster: &Cluster, products: u64) -> anyhow::Result<IndexProbe> {
    let client = cluster.connect(0).await?;
    let rows: i64 = client
        .query_one("SELECT count(*) FROM related_items", &[])
        .await?
        .get(0);
    let mut rng = rand::thread_rng();
    let mut id = || rng.gen_range(1..=products) as i32;

    let (without, plan_without) = time_queries(&client, UNINDEXED_SAMPLES, &mut id).await?;

    let build_started = Instant::now();
    seeder::build_relation_index(&cluster.primary_url(), true).await?;
    let index_build_secs = build_started.elapsed().as_secs_f64();

    // A fresh connection plans with the new index; one query first warms its caches.
    let client = cluster.connect(0).await?;
    time_queries(&client, 1, &mut id).await?;
    let (with, plan_with) = time_queries(&client, INDEXED_SAMPLES, &mut id).await?;

    let without_median = median(&mut without.clone());
    let mut sorted = with.clone();
    let with_median = median(&mut sorted);
    let p99 = sorted[((sorted.len() as f64 * 0.99) as usize).min(sorted.len() - 1)];
    Ok(IndexProbe {
        relation_rows: rows as u64,
        without_index_ms: without.iter().map(|v| round(*v, 2)).collect(),
        without_index_ms_median: round(without_median, 2),
        with_index_samples: with.len(),
        with_index_ms_median: round(with_median, 4),
        with_index_ms_p99: round(p99, 4),
        speedup: round(without_median / with_median.max(1e-6), 1),
        index_build_secs: round(index_build_secs, 2),
        plan_without_index: plan_without,
        plan_with_index: plan_with,
    })
}

/// The API's query `samples` times with random ids (milliseconds each), then its EXPLAIN ANALYZE.
async fn time_queries(
    client: &tokio_postgres::Client,
    samples: usize,
    id: &mut impl FnMut() -> i32,
) -> anyhow::Result<(Vec<f64>, Vec<String>)> {
    let limit: i64 = 16;
    let statement = client.prepare(api::RELATED_SQL).await?;
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        client.query(&statement, &[&id(), &limit]).await?;
        times.push(ms(started.elapsed()));
    }
    let explain = client
        .prepare(&format!("EXPLAIN (ANALYZE, BUFFERS) {}", api::RELATED_SQL))
        .await?;
    let plan = plan_lines(&client.query(&explain, &[&id(), &limit]).await?);
    Ok((times, plan))
}

fn plan_lines(rows: &[tokio_postgres::Row]) -> Vec<String> {
    rows.iter().map(|r| r.get::<_, String>(0)).collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

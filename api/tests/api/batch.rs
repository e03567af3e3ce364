//! Batching (`--batch-max`): lookups waiting for a replica share one query. Its answers must be
//! byte-identical to one query per request, a lone request must go at once, alone, and
//! `/metrics` must count the batches and their sizes (checked against the servers' own count).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::helpers::*;

/// What a test compares of one response.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    status: u16,
    etag: Option<String>,
    content_type: Option<String>,
    body: Vec<u8>,
}

async fn seen(app: &TestApp, path: &str) -> Seen {
    let r = app.get(path).await;
    let header = |name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let (etag, content_type) = (header("etag"), header("content-type"));
    Seen {
        status: r.status().as_u16(),
        etag,
        content_type,
        body: r.bytes().await.expect("body").to_vec(),
    }
}

/// Fires every path at once and returns the responses in path order.
async fn fire(app: &TestApp, paths: &[String]) -> Vec<Seen> {
    futures::future::join_all(paths.iter().map(|p| seen(app, p))).await
}

/// A random request of the related routes: a known product with relations (1 has more than the
/// default limit), one without, an unknown id, or a repeat of an earlier id; either route
/// shape; the default limit or one from 1 to 100.
fn random_path(rng: &mut StdRng, earlier: &[i32]) -> (i32, String) {
    let id = match rng.gen_range(0..10) {
        0..=2 if !earlier.is_empty() => earlier[rng.gen_range(0..earlier.len())],
        0 => 1,
        1..=4 => rng.gen_range(1..=WITH_RELATIONS),
        5 | 6 => rng.gen_range(WITH_RELATIONS + 1..=PRODUCTS),
        7 => LONELY_PRODUCT,
        8 => rng.gen_range(PRODUCTS + 1..=PRODUCTS + 50),
        _ => [UNKNOWN_PRODUCT, i32::MAX][rng.gen_range(0..2)],
    };
    let path = if rng.gen_bool(0.7) {
        format!("/products/{id}/related")
    } else {
        format!("/api/data/{id}")
    };
    let query = match rng.gen_range(0..4) {
        0 => String::new(),
        1 => format!("?limit={}", rng.gen_range(1..=5)),
        2 => format!("?limit={}", rng.gen_range(14..=22)),
        _ => format!("?limit={}", rng.gen_range(1..=100)),
    };
    (id, format!("{path}{query}"))
}

/// One value of a labelled series, e.g. `api_batch_size_bucket{le="1"}`.
fn series_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

/// Property: for random mixes of ids (known, unknown, without relations, repeated) and limits,
/// fired concurrently, an API that batches (`--batch-max 16`, one connection per replica, so
/// that requests queue) answers every request exactly as one that runs a query per request
/// (`--batch-max 1`): status, ETag, content type and body bytes. The seed of a failing mix is
/// in the message; `BATCH_TEST_SEED` replays it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batched_answers_are_byte_identical_to_single_queries() {
    let cluster = shared_cluster().await;
    let mut single = test_config(&cluster);
    single.batch_max = 1;
    let mut batched = test_config(&cluster);
    batched.batch_max = 16;
    batched.pool_size = 1;
    let single = spawn_app(single).await;
    let batched = spawn_app(batched).await;

    let first_seed: u64 = std::env::var("BATCH_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let cases = if std::env::var("BATCH_TEST_SEED").is_ok() {
        1
    } else {
        24
    };
    for case in 0..cases {
        let seed = first_seed.wrapping_add(case);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut ids = Vec::new();
        let mut paths = Vec::new();
        for _ in 0..rng.gen_range(1..=48) {
            let (id, path) = random_path(&mut rng, &ids);
            ids.push(id);
            paths.push(path);
        }
        let (want, got) = tokio::join!(fire(&single, &paths), fire(&batched, &paths));
        for (i, path) in paths.iter().enumerate() {
            assert_eq!(
                got[i],
                want[i],
                "BATCH_TEST_SEED={seed}: request {i} of {}, {path}",
                paths.len()
            );
        }
        let statuses: HashSet<u16> = want.iter().map(|s| s.status).collect();
        assert!(
            statuses.is_subset(&HashSet::from([200, 404])),
            "{statuses:?}"
        );
    }
    // The property was tested on real batches: some query answered several lookups.
    let text = batched.metrics().await;
    let (sum, count) = (
        series_value(&text, "api_batch_size_sum"),
        series_value(&text, "api_batch_size_count"),
    );
    assert!(sum > count, "no batch held two lookups: {sum} / {count}");
    let text = single.metrics().await;
    assert_eq!(
        series_value(&text, "api_batch_size_sum"),
        series_value(&text, "api_batch_size_count"),
        "--batch-max 1 runs one query per lookup"
    );
    single.stop().await;
    batched.stop().await;
}

/// A request that finds nobody else waiting goes at once, alone: one after another, each
/// request is its own query of one lookup, although batches of 16 are allowed and the pool has
/// one connection per replica. (Nothing waits for company: had a request waited for another,
/// it would never have been answered, since the next one is sent only after it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_request_goes_at_once_alone() {
    let cluster = shared_cluster().await;
    let mut config = test_config(&cluster);
    config.batch_max = 16;
    config.pool_size = 1;
    let app = spawn_app(config).await;
    for i in 1..=20 {
        let r = app.get(&format!("/products/{i}/related")).await;
        assert_eq!(r.status(), 200);
    }
    let text = app.metrics().await;
    assert_eq!(series_value(&text, "api_batches_total"), 20.0);
    assert_eq!(series_value(&text, "api_batch_size_bucket{le=\"1\"}"), 20.0);
    assert_eq!(series_value(&text, "api_batch_size_sum"), 20.0);
    app.stop().await;
}

/// `/metrics` counts each query run and the lookups it answered: the count matches the
/// servers' own (pg_stat_statements), the sizes add up to the lookups, no batch is over
/// `--batch-max`, and a burst on one connection per replica runs fewer queries than requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_and_their_sizes_are_in_metrics() {
    let cluster = shared_cluster_alone().await;
    let mut config = test_config(&cluster);
    config.batch_max = 8;
    config.pool_size = 1;
    let app = spawn_app(config).await;

    let before: i64 = queries_per_replica(&cluster).await.iter().sum();
    let paths: Vec<String> = (1..=64)
        .map(|i| format!("/products/{i}/related?limit={}", i % 20 + 1))
        .collect();
    let answers = fire(&app, &paths).await;
    assert!(answers.iter().all(|a| a.status == 200));
    let after: i64 = queries_per_replica(&cluster).await.iter().sum();

    let text = app.metrics().await;
    let batches = series_value(&text, "api_batches_total");
    assert_eq!(series_value(&text, "api_batch_size_count"), batches);
    assert_eq!(series_value(&text, "api_batch_size_sum"), 64.0);
    assert_eq!(
        series_value(&text, "api_batch_size_bucket{le=\"8\"}"),
        batches
    );
    assert_eq!(
        (after - before) as f64,
        batches,
        "the servers ran one query per batch"
    );
    assert!(batches < 64.0, "{batches} queries for 64 requests");
    assert_eq!(
        app.metric("api_db_queries_total").await,
        64.0,
        "attempts stay per request"
    );
    app.stop().await;
}

/// A replica stops under traffic that forms batches (one connection per replica, 12 clients):
/// the lookups of its failed batches are retried on the other replica, and no client sees an
/// error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_batches_are_retried_elsewhere_invisibly() {
    let cluster = fixture_cluster(2).await;
    let mut config = test_config(&cluster);
    config.batch_max = 16;
    config.pool_size = 1;
    let app = spawn_app(config).await;
    let victim = cluster.replica_indexes()[0];

    let stop = Arc::new(AtomicBool::new(false));
    let (stats, handles) = start_traffic(app.base.clone(), 12, stop.clone());
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        query_calls(&cluster, victim).await > 0,
        "victim took traffic"
    );
    tokio::task::block_in_place(|| cluster.stop_node(victim));
    let ok_at_stop = stats.ok.load(Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Relaxed);
    for h in handles {
        h.await.unwrap();
    }
    assert!(
        stats.ok.load(Relaxed) > ok_at_stop + 50,
        "traffic kept flowing"
    );
    assert_eq!(
        stats.failed.load(Relaxed),
        0,
        "{:?}",
        stats.failures.lock().unwrap()
    );
    assert!(app.metric("api_replica_bans_total").await >= 1.0);
    let text = app.metrics().await;
    assert!(
        series_value(&text, "api_batch_size_sum") > series_value(&text, "api_batch_size_count"),
        "the traffic formed batches"
    );
    app.stop().await;
}

/// The SQL leaves the rows' order to the plan, and the API puts them in product, then position
/// order itself. Here the plan returns them out of product order (index scans off for the API's
/// role, and the even products' rows moved to the end of the table, which a sequential scan
/// then reads last), checked on the rows themselves; batched answers must still be the single
/// ones, and both the fixture's related items in position order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn answers_keep_position_order_whatever_order_the_rows_come_in() {
    let cluster = fixture_cluster(0).await;
    let db = cluster.connect(0).await.expect("connect primary");
    db.batch_execute(&format!(
        "ALTER ROLE {role} SET enable_indexscan = off;
         ALTER ROLE {role} SET enable_indexonlyscan = off;
         ALTER ROLE {role} SET enable_bitmapscan = off;
         UPDATE products SET name = name WHERE id % 2 = 0;",
        role = stack::cluster::API_ROLE
    ))
    .await
    .expect("plan settings and the moved rows");

    let (client, connection) = tokio_postgres::connect(&cluster.api_url(0), tokio_postgres::NoTls)
        .await
        .expect("connect as the API role");
    tokio::spawn(connection);
    let rows = client
        .query(
            api::query::RELATED_MANY_SQL,
            &[&vec![1i32, 2, 3, 4], &16i64],
        )
        .await
        .expect("the batched SQL");
    let products: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert!(
        products.windows(2).any(|w| w[1] < w[0]),
        "the rows came in product order, so this test would test nothing: {products:?}"
    );

    let mut single = test_config(&cluster);
    single.batch_max = 1;
    let mut batched = test_config(&cluster);
    batched.batch_max = 16;
    batched.pool_size = 1;
    let (single, batched) = (spawn_app(single).await, spawn_app(batched).await);
    let paths: Vec<String> = (1..=40)
        .map(|i| match i % 3 {
            0 => format!("/products/{i}/related"),
            1 => format!("/products/{i}/related?limit={}", i % 7 + 1),
            _ => format!("/products/{}/related?limit=20", 100 + i),
        })
        .collect();
    let (want, got) = tokio::join!(fire(&single, &paths), fire(&batched, &paths));
    for (i, path) in paths.iter().enumerate() {
        assert_eq!(got[i], want[i], "{path}");
        let id: i32 = path.split('/').nth(2).unwrap().parse().unwrap();
        let limit = path
            .split("limit=")
            .nth(1)
            .map_or(16, |l| l.parse().unwrap());
        let body: serde_json::Value = serde_json::from_slice(&want[i].body).unwrap();
        let cards = body["items"].as_array().expect("items");
        let ids: Vec<i32> = cards
            .iter()
            .map(|c| c["id"].as_i64().unwrap() as i32)
            .collect();
        let mut expected = related_ids(id);
        expected.truncate(limit);
        assert_eq!(ids, expected, "{path}");
        // The ratings (numeric, decoded by the API) are the fixture's, 0.0 to 5.0.
        for (card, id) in cards.iter().zip(ids) {
            assert_eq!(
                card["rating"].as_f64(),
                Some((id % 51) as f64 / 10.0),
                "{path}"
            );
        }
    }
    let text = batched.metrics().await;
    assert!(
        series_value(&text, "api_batch_size_sum") > series_value(&text, "api_batch_size_count"),
        "some query answered several lookups"
    );
    single.stop().await;
    batched.stop().await;
}

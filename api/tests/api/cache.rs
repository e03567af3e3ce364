//! The response cache: a burst of concurrent requests on one cold key runs the query once,
//! counted both by the server (pg_stat_statements) and by the API's own metrics. Replication
//! plays no part here, so the cluster is a primary alone, read through the read-only role: the
//! count is then exact and the test skips streaming two replicas.

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn burst_on_a_cold_key_runs_one_query() {
    let cluster = fixture_cluster(0).await;
    let mut config = test_config(&cluster);
    config.cache_capacity = 1000;
    config.cache_ttl_secs = 60;
    let app = spawn_app(config).await;

    let before: i64 = queries_per_replica(&cluster).await.iter().sum();
    let bodies = futures::future::join_all((0..64).map(|_| async {
        let r = app.get("/products/7/related").await;
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    }))
    .await;
    assert!(bodies.iter().all(|b| b == &bodies[0]));
    let after: i64 = queries_per_replica(&cluster).await.iter().sum();
    assert_eq!(
        after - before,
        1,
        "the burst ran the query once on the servers"
    );
    assert_eq!(app.metric("api_cache_misses_total").await, 1.0);
    assert_eq!(app.metric("api_cache_hits_total").await, 63.0);
    assert_eq!(app.metric("api_db_queries_total").await, 1.0);

    // Each shape, id and limit is its own entry; a hit serves the same ETag and 304 logic.
    let r = app.get("/products/7/related?limit=3").await;
    let etag = r.headers()["etag"].clone();
    let r = app
        .client
        .get(app.url("/products/7/related?limit=3"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(app.get("/api/data/7").await.status(), 200);
    assert_eq!(
        app.get(&format!("/products/{UNKNOWN_PRODUCT}/related"))
            .await
            .status(),
        404
    );
    assert_eq!(
        app.get(&format!("/products/{UNKNOWN_PRODUCT}/related"))
            .await
            .status(),
        404
    );
    assert_eq!(app.metric("api_cache_misses_total").await, 4.0);
    app.stop().await;
}

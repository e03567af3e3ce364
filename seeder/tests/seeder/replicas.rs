//! A seed on a primary with two replicas, and the API role's rights.

use seeder::{seed, SeedOptions};
use tokio_postgres::NoTls;

use crate::helpers::{assert_invariants, cluster, digest, small, REPLICA_WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_gives_exact_rows_on_primary_and_both_replicas() {
    let c = cluster(2).await;
    let summary = seed(&c.primary_url(), &small(3_000)).await.expect("seed");
    assert_eq!(summary.products, 3_000);
    assert_eq!(summary.related_items, 48_000);
    assert_eq!(summary.loaded_rows, 51_000);

    let primary = c.connect(0).await.expect("connect primary");
    assert_invariants(&primary, 3_000, 16).await;
    let expected = digest(&primary).await;
    assert_eq!((expected.products, expected.related_items), (3_000, 48_000));

    c.wait_for_replicas(REPLICA_WAIT)
        .await
        .expect("replicas catch up");
    assert_eq!(c.replica_indexes().len(), 2);
    for replica in c.replica_indexes() {
        let client = c.connect(replica).await.expect("connect replica");
        assert_eq!(digest(&client).await, expected, "replica {replica}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_role_can_read_but_not_write() {
    let c = cluster(0).await;
    seed(
        &c.primary_url(),
        &SeedOptions {
            products: 200,
            ..small(200)
        },
    )
    .await
    .expect("seed");
    let (api, connection) = tokio_postgres::connect(&c.api_url(0), NoTls)
        .await
        .expect("connect as the API role");
    tokio::spawn(connection);
    let n: i64 = api
        .query_one("SELECT count(*) FROM related_items", &[])
        .await
        .expect("the API role may read")
        .get(0);
    assert_eq!(n, 200 * 16);

    let insert = "INSERT INTO products VALUES (999999, 'x', 'x', 1, 'x', 1.0, 1)";
    let err = api.execute(insert, &[]).await.expect_err("INSERT refused");
    assert!(err.as_db_error().is_some(), "{err}");
    // Even with read-only transactions switched off, the role has no INSERT right.
    api.batch_execute("SET default_transaction_read_only = off")
        .await
        .expect("set");
    let err = api.execute(insert, &[]).await.expect_err("INSERT refused");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
        "{err}"
    );
}

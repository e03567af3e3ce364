//! The same seed gives the same rows whatever the worker count and chunk size; another seed
//! against a loaded database is refused without --reset.

use seeder::{seed, SeedError, SeedOptions};

use crate::helpers::{cluster, digest, small};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_seed_same_rows_at_any_worker_count() {
    let c = cluster(0).await;
    let url = c.primary_url();
    let client = c.connect(0).await.expect("connect");

    seed(
        &url,
        &SeedOptions {
            workers: 1,
            chunk_products: 2_000,
            ..small(2_000)
        },
    )
    .await
    .expect("seed with one worker");
    let one = digest(&client).await;

    seed(
        &url,
        &SeedOptions {
            workers: 4,
            chunk_products: 300,
            reset: true,
            ..small(2_000)
        },
    )
    .await
    .expect("seed with four workers");
    let four = digest(&client).await;
    assert_eq!(one, four);

    let other_seed = SeedOptions {
        seed: 7,
        ..small(2_000)
    };
    let refused = seed(&url, &other_seed)
        .await
        .expect_err("other seed refused");
    assert!(matches!(refused, SeedError::OtherLoad { .. }), "{refused}");
    assert!(refused.to_string().contains("--reset"), "{refused}");
    assert_eq!(digest(&client).await, one, "a refused run changes nothing");

    seed(
        &url,
        &SeedOptions {
            reset: true,
            ..other_seed
        },
    )
    .await
    .expect("other seed with --reset");
    let seven = digest(&client).await;
    assert_eq!(seven.related_items, one.related_items);
    assert_ne!(seven.related_md5, one.related_md5);
}

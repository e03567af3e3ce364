//! The load lock: released by a failed load before it returns (so a rerun started at once gets
//! it, without waiting), and a held lock waited for, then named.

use std::time::{Duration, Instant};

use seeder::{import_csv, seed, ImportOptions, SeedError};

use crate::helpers::{cluster, small};

/// A products file whose second record is broken, so the import fails after taking the lock.
fn write_failing(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("products.csv"),
        "id,name,category,price_cents,image_url,rating,review_count\n\
         1,A,Golf,100,a,1.0,1\n2,B,Golf,not-a-price,b,1.0,1\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("related_items.csv"),
        "product_id,position,related_id\n",
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_right_after_a_failed_one_gets_the_lock() {
    let c = cluster(0).await;
    let url = c.primary_url();
    let dir = c.dir.path().join("failing");
    write_failing(&dir);
    let mut opts = ImportOptions::from_dir(&dir);
    opts.seed = seeder::SeedOptions {
        reset: true,
        // No waiting: the lock must already be free when the failed import returns.
        lock_wait: Duration::ZERO,
        ..small(1)
    };
    // An open connection asks for the lock the moment a failed import returns: no connection
    // set-up time for a dropped session's backend to exit in.
    let probe = seeder::db::connect(&url).await.expect("connect the probe");
    for attempt in 0..20 {
        let err = import_csv(&url, &opts).await.expect_err("a broken file");
        assert!(
            matches!(err, SeedError::Csv { .. }),
            "attempt {attempt}: expected the CSV error again, got: {err}"
        );
        seeder::db::lock_load(&probe, Duration::ZERO)
            .await
            .unwrap_or_else(|e| panic!("attempt {attempt}: the lock is still held: {e}"));
        seeder::db::unlock_load(&probe).await;
    }
    // A generated seed right after a failed import gets the lock too, and loads.
    let mut after = small(100);
    after.reset = true;
    after.lock_wait = Duration::ZERO;
    let summary = seed(&url, &after)
        .await
        .expect("seed after a failed import");
    assert_eq!(summary.products, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lock_is_waited_for_then_its_holder_named() {
    let c = cluster(0).await;
    let url = c.primary_url();
    let holder = seeder::db::connect(&format!("{url}?application_name=nightly-reload"))
        .await
        .expect("connect the holder");
    seeder::db::lock_load(&holder, Duration::ZERO)
        .await
        .expect("the holder takes the lock");

    let mut opts = small(100);
    opts.lock_wait = Duration::from_millis(800);
    let started = Instant::now();
    let err = seed(&url, &opts).await.expect_err("the lock is held");
    let waited = started.elapsed();
    let message = err.to_string();
    assert!(matches!(err, SeedError::Busy { .. }), "{message}");
    assert!(
        message.contains("application nightly-reload") && message.contains("server process"),
        "the holder is named: {message}"
    );
    assert!(waited >= Duration::from_millis(800), "waited {waited:?}");

    // Released while another seeder waits: that one goes ahead.
    let waiter = tokio::spawn({
        let url = url.clone();
        async move {
            let mut opts = small(100);
            opts.lock_wait = Duration::from_secs(60);
            seed(&url, &opts).await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    seeder::db::unlock_load(&holder).await;
    let summary = waiter.await.unwrap().expect("seed once the lock is free");
    assert_eq!(summary.products, 100);
}

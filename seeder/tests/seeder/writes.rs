//! The write workload (`seeder write`): it rewrites lists and prices at no more than the rate
//! asked, every list keeps 16 distinct related products at every commit, the replicas replay it
//! all, a stop ends it between transactions, and a database it cannot rewrite is refused.

use std::process::Command;
use std::time::{Duration, Instant};

use seeder::{seed, write, SeedError, SeedOptions, WriteOptions, WriteProgress, Writer};

use crate::helpers::{assert_invariants, cluster, digest, small, REPLICA_WAIT};

fn writes(tx_per_sec: f64, secs: f64, connections: usize) -> WriteOptions {
    WriteOptions {
        tx_per_sec,
        duration: Duration::from_secs_f64(secs),
        connections,
        quiet: true,
        ..WriteOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_rewrite_lists_and_prices_and_keep_every_list_whole() {
    let c = cluster(1).await;
    let url = c.primary_url();
    seed(&url, &small(2_000)).await.expect("seed");
    let primary = c.connect(0).await.expect("connect primary");
    let before = digest(&primary).await;

    let summary = write(&url, &writes(200.0, 2.0, 3), std::future::pending())
        .await
        .expect("write");
    let tx = summary.counts.transactions;
    assert!(tx > 0, "{summary:?}");
    // The rate asked is a ceiling: at most one slot per connection ahead of it.
    assert!(
        tx as f64 <= 200.0 * summary.seconds + 3.0,
        "{tx} transactions in {} s",
        summary.seconds
    );
    assert_eq!(summary.connections, 3);
    assert_eq!(summary.counts.deleted, 16 * tx, "{summary:?}");
    assert_eq!(summary.counts.inserted, 16 * tx, "{summary:?}");
    assert_eq!(summary.counts.updated, tx, "{summary:?}");
    assert_eq!(summary.counts.rows(), 33 * tx);
    assert!(summary
        .line()
        .starts_with(&format!("wrote {tx} transactions")));

    assert_invariants(&primary, 2_000, 16).await;
    let after = digest(&primary).await;
    assert_eq!((after.products, after.related_items), (2_000, 32_000));
    assert_ne!(
        after.related_md5, before.related_md5,
        "lists were rewritten"
    );
    assert_ne!(after.products_md5, before.products_md5, "prices changed");

    c.wait_for_replicas(REPLICA_WAIT)
        .await
        .expect("the replica replays the writes");
    let replica = c.connect(c.replica_indexes()[0]).await.expect("replica");
    assert_eq!(digest(&replica).await, after, "the replica has every write");

    // The command line: the same through its flags, and a line of counts on stdout.
    let out = Command::new(env!("CARGO_BIN_EXE_seeder"))
        .args([
            "write",
            "--tx-per-sec",
            "50",
            "--duration-secs",
            "1",
            "--connections",
            "2",
            "--quiet",
        ])
        .env("DATABASE_URL", &url)
        .output()
        .expect("run seeder write");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("wrote ") && stdout.contains("tx/s of 50 asked, 2 connections"),
        "{stdout}"
    );
    assert_invariants(&primary, 2_000, 16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_ends_the_writes_and_unready_databases_are_refused() {
    // Bad options are refused before any connection is tried.
    let err = write(
        "postgres://u:p@127.0.0.1:1/none",
        &writes(0.0, 1.0, 1),
        std::future::pending(),
    )
    .await
    .expect_err("rate 0");
    assert!(matches!(err, SeedError::Options(_)), "{err}");

    let c = cluster(0).await;
    let url = c.primary_url();
    let err = write(&url, &writes(10.0, 1.0, 1), std::future::pending())
        .await
        .expect_err("no tables");
    assert!(matches!(err, SeedError::MissingTable(_)), "{err}");

    seed(
        &url,
        &SeedOptions {
            no_index: true,
            ..small(300)
        },
    )
    .await
    .expect("seed without the index");
    let err = write(&url, &writes(10.0, 1.0, 1), std::future::pending())
        .await
        .expect_err("no index");
    assert!(
        matches!(err, SeedError::NotReady(_)) && err.to_string().contains("seeder index"),
        "{err}"
    );
    seeder::build_relation_index(&url, true)
        .await
        .expect("index");

    // A loader holding the load lock keeps writers out, and is named.
    let loader = seeder::db::connect(&format!("{url}?application_name=nightly-reload"))
        .await
        .expect("connect the loader");
    seeder::db::lock_load(&loader, Duration::ZERO)
        .await
        .expect("lock");
    let mut busy = writes(10.0, 1.0, 1);
    busy.lock_wait = Duration::ZERO;
    let err = write(&url, &busy, std::future::pending())
        .await
        .expect_err("a load is running");
    assert!(
        matches!(err, SeedError::Busy { .. }) && err.to_string().contains("nightly-reload"),
        "{err}"
    );
    seeder::db::unlock_load(&loader).await;

    // A run of ten minutes, stopped after a moment: it ends between transactions.
    let writer = Writer::connect(&url, &writes(100.0, 600.0, 2))
        .await
        .expect("connect the writer");
    assert_eq!(writer.products(), 300);
    let progress = WriteProgress::default();
    let started = Instant::now();
    let summary = writer
        .run(&progress, tokio::time::sleep(Duration::from_millis(700)))
        .await
        .expect("write until stopped");
    assert!(started.elapsed() < Duration::from_secs(30), "stopped");
    assert_eq!(summary.counts, progress.counts());
    assert!(summary.counts.transactions > 0, "{summary:?}");
    let primary = c.connect(0).await.expect("connect");
    assert_invariants(&primary, 300, 16).await;

    // The writer gave its shared lock back: a load may take the lock at once.
    seeder::db::lock_load(&loader, Duration::ZERO)
        .await
        .expect("the lock is free again");
    seeder::db::unlock_load(&loader).await;
}

//! Replica routing: balance counted by the servers themselves, the lag bound, a slow health
//! check, slow queries on the last replica, and failure handling (one replica stopped under
//! traffic, restarted, all stopped, all back).
//!
//! The others use the shared cluster alone: they count queries on the servers, and two of
//! them change a replica for a while (replay paused, a backend stopped), each undone by a guard
//! even if the test fails. The failure test stops servers, so it builds its own cluster.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stack::Cluster;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_is_balanced_across_replicas() {
    let cluster = shared_cluster_alone().await;
    let app = spawn_app(test_config(&cluster)).await;
    let before = queries_per_replica(&cluster).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (stats, handles) = start_traffic(app.base.clone(), 8, stop.clone());
    let started = Instant::now();
    while stats.ok.load(Relaxed) < 3000 && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Relaxed);
    for h in handles {
        h.await.unwrap();
    }
    assert_eq!(
        stats.failed.load(Relaxed),
        0,
        "{:?}",
        stats.failures.lock().unwrap()
    );
    let after = queries_per_replica(&cluster).await;
    let deltas: Vec<i64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    let total: i64 = deltas.iter().sum();
    assert!(total >= 1000, "too few queries counted: {deltas:?}");
    let even = total as f64 / deltas.len() as f64;
    for d in &deltas {
        let off = (*d as f64 - even).abs() / even;
        assert!(
            off <= 0.35,
            "replica share {d} of {total} is {:.0}% off even ({deltas:?})",
            off * 100.0
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replica_failures_are_invisible_and_recoverable() {
    let cluster = fixture_cluster(2).await;
    let mut config = test_config(&cluster);
    config.request_timeout_ms = 5000;
    let app = spawn_app(config).await;
    let replicas = cluster.replica_indexes();
    let (victim, survivor) = (replicas[0], replicas[1]);

    // One replica stops during steady traffic: no client sees an error.
    let stop = Arc::new(AtomicBool::new(false));
    let (stats, handles) = start_traffic(app.base.clone(), 6, stop.clone());
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        query_calls(&cluster, victim).await > 0,
        "victim took traffic before"
    );
    tokio::task::block_in_place(|| cluster.stop_node(victim));
    let ok_at_stop = stats.ok.load(Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
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

    // It comes back: the health check takes it back and it gets traffic again.
    tokio::task::block_in_place(|| cluster.start_node(victim)).expect("restart replica");
    let baseline = query_calls(&cluster, victim).await;
    let back = eventually(Duration::from_secs(20), || async {
        query_calls(&cluster, victim).await > baseline + 20
    })
    .await;
    assert!(back, "restarted replica takes traffic again");
    stop.store(true, Relaxed);
    for h in handles {
        h.await.unwrap();
    }
    assert_eq!(
        stats.failed.load(Relaxed),
        0,
        "{:?}",
        stats.failures.lock().unwrap()
    );
    assert!(app.metric("api_replica_bans_total").await >= 1.0);

    // Every replica stops: fast 503s with Retry-After, and /readyz says so.
    tokio::task::block_in_place(|| {
        cluster.stop_node(victim);
        cluster.stop_node(survivor);
    });
    for _ in 0..10 {
        let started = Instant::now();
        let r = app.get("/products/3/related").await;
        let elapsed = started.elapsed();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["code"], "no_replica");
        // The request deadline is 5 s; a dead replica set must not make clients wait for it.
        assert!(elapsed < Duration::from_secs(1), "503 took {elapsed:?}");
    }
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.get("/readyz").await.status() == 503
        })
        .await
    );

    // With the optional primary fallback, the same outage is served by the primary.
    let mut with_fallback = test_config(&cluster);
    with_fallback.primary_fallback = Some(cluster.api_url(0));
    let fallback_app = spawn_app(with_fallback).await;
    let served = eventually(Duration::from_secs(10), || async {
        fallback_app.get("/products/3/related").await.status() == 200
    })
    .await;
    assert!(
        served,
        "the primary fallback serves while no replica is usable"
    );
    fallback_app.stop().await;

    // They return: the service recovers by itself.
    tokio::task::block_in_place(|| {
        cluster.start_node(victim).expect("restart");
        cluster.start_node(survivor).expect("restart");
    });
    let recovered = eventually(Duration::from_secs(20), || async {
        app.get("/products/3/related").await.status() == 200
    })
    .await;
    assert!(recovered, "service recovers when replicas return");
    assert_eq!(app.get("/readyz").await.status(), 200);
    app.stop().await;
}

/// `--max-replica-lag-ms`: a replica whose replay is paused behind the primary gets no queries
/// until it catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_replica_is_skipped() {
    let cluster = shared_cluster_alone().await;
    let replicas = cluster.replica_indexes();
    let (lagging, current) = (replicas[0], replicas[1]);
    let mut config = test_config(&cluster);
    config.max_replica_lag_ms = Some(1000);
    let app = spawn_app(config).await;
    let paused = ReplayPaused::pause(&cluster, lagging).await;
    // Something to replay: the replica now lags by the age of its last replayed commit.
    let primary = cluster.connect(0).await.unwrap();
    primary
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS lag_probe (x int); INSERT INTO lag_probe VALUES (1);",
        )
        .await
        .unwrap();
    // Routing follows the health checks: wait until they see the paused replica late and the
    // other one current.
    let (late, fresh) = (
        replica_label(&cluster, lagging),
        replica_label(&cluster, current),
    );
    let seen = eventually(Duration::from_secs(20), || async {
        let text = app.metrics().await;
        replica_gauge(&text, "api_replica_lag_ms", &late) > Some(1000)
            && replica_gauge(&text, "api_replica_lag_ms", &fresh) <= Some(1000)
            && replica_gauge(&text, "api_replica_healthy", &fresh) == Some(1)
    })
    .await;
    let metrics = app.metrics().await;
    assert!(seen, "the health checks see the lag:\n{metrics}");
    let before = (
        query_calls(&cluster, lagging).await,
        query_calls(&cluster, current).await,
    );
    for id in 1..=60 {
        assert_eq!(
            app.get(&format!("/products/{id}/related")).await.status(),
            200
        );
    }
    let after = (
        query_calls(&cluster, lagging).await,
        query_calls(&cluster, current).await,
    );
    drop(paused);
    assert_eq!(
        after.0 - before.0,
        0,
        "the lagging replica is skipped:\n{metrics}"
    );
    assert_eq!(
        after.1 - before.1,
        60,
        "the current replica takes every query"
    );
    cluster
        .wait_for_replicas(Duration::from_secs(30))
        .await
        .unwrap();
    app.stop().await;
}

/// A replica too busy to answer its health check in time, on a connection that stays open, is
/// loaded, not dead: it stays healthy, unbanned and in rotation (until several checks in a row
/// go unanswered). Stopping (SIGSTOP) the server process behind the health check's connection
/// makes exactly that: the check hangs while the replica's other connections serve queries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_health_check_is_not_a_failure() {
    let cluster = shared_cluster_alone().await;
    let replicas = cluster.replica_indexes();
    let slow = replicas[0];
    let label = replica_label(&cluster, slow);
    let mut config = test_config(&cluster);
    config.query_timeout_ms = 500;
    let app = spawn_app(config).await;
    let db = cluster.connect(slow).await.unwrap();
    // Exactly one health connection: this app's. The cluster is ours alone, and earlier tests'
    // instances close theirs as they stop.
    let health_pids =
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'related-api-health'";
    let backend = eventually(Duration::from_secs(10), || async {
        db.query(health_pids, &[]).await.unwrap().len() == 1
    })
    .await;
    assert!(backend, "the health check connects");
    let pid: i32 = db.query_one(health_pids, &[]).await.unwrap().get(0);
    let stopped = Stopped::stop(pid);
    let went_slow = eventually(Duration::from_secs(10), || async {
        let text = app.metrics().await;
        replica_gauge(&text, "api_replica_slow_health_checks_total", &label) >= Some(1)
    })
    .await;
    let metrics = app.metrics().await;
    let before = query_calls(&cluster, slow).await;
    let mut statuses = Vec::new();
    for id in 1..=40 {
        statuses.push(app.get(&format!("/products/{id}/related")).await.status());
    }
    let served = query_calls(&cluster, slow).await - before;
    drop(stopped);
    assert!(went_slow, "the check times out:\n{metrics}");
    assert_eq!(
        replica_gauge(&metrics, "api_replica_healthy", &label),
        Some(1)
    );
    assert_eq!(
        replica_gauge(&metrics, "api_replica_banned", &label),
        Some(0)
    );
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert!(served > 0, "the slow-to-check replica still takes queries");
    app.stop().await;
}

/// Sends a signal with kill(1), which works for the postgres user's processes when root.
fn signal(pid: i32, name: &str) -> bool {
    std::process::Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

/// A server process stopped with SIGSTOP, continued when this is dropped (the test failing
/// included), so no other test meets a frozen backend.
struct Stopped(i32);

impl Stopped {
    fn stop(pid: i32) -> Stopped {
        assert!(signal(pid, "STOP"), "kill -STOP {pid}");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let continued = signal(self.0, "CONT");
        if !std::thread::panicking() {
            assert!(continued, "kill -CONT {}", self.0);
        }
    }
}

/// A replica whose WAL replay is paused; resumed when this is dropped (the test failing
/// included), so no other test meets a lagging replica.
struct ReplayPaused<'a> {
    cluster: &'a Cluster,
    node: usize,
}

impl<'a> ReplayPaused<'a> {
    async fn pause(cluster: &'a Cluster, node: usize) -> ReplayPaused<'a> {
        cluster
            .connect(node)
            .await
            .unwrap()
            .batch_execute("SELECT pg_wal_replay_pause()")
            .await
            .unwrap();
        ReplayPaused { cluster, node }
    }
}

impl Drop for ReplayPaused<'_> {
    fn drop(&mut self) {
        // Drop cannot await: resume on a thread with a runtime of its own, and wait for it.
        let (cluster, node) = (self.cluster, self.node);
        let resumed = std::thread::scope(|s| {
            s.spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async {
                    let client = cluster.connect(node).await.map_err(|e| e.to_string())?;
                    client
                        .batch_execute("SELECT pg_wal_replay_resume()")
                        .await
                        .map_err(|e| e.to_string())
                })
            })
            .join()
            .expect("resume thread")
        });
        if let Err(e) = resumed {
            if !std::thread::panicking() {
                panic!("resume replay on node {node}: {e}");
            }
        }
    }
}

/// A query slower than the query timeout on the only replica is load, not failure: the replica
/// is not banned and the request waits, within its deadline, for the late answer rather than
/// getting a 504. The primary's ACCESS EXCLUSIVE lock on `related_items` is replayed on the
/// replica and holds every read there until the primary commits, as a saturated replica would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_replica_is_not_banned_for_slow_queries() {
    let cluster = shared_cluster_alone().await;
    let only = cluster.replica_indexes()[0];
    let label = replica_label(&cluster, only);
    let mut config = api::Config::with_replicas(vec![cluster.api_url(only)]);
    config.listen = "127.0.0.1:0".into();
    config.health_interval_ms = 100;
    config.query_timeout_ms = 200;
    config.request_timeout_ms = 5000;
    // Three of the four requests below open new pooled connections, whose statements are
    // prepared against the locked table: setting a connection up waits for the lock as a query
    // does. A pool wait well past the lock's 800 ms keeps a busy machine (the whole suite runs
    // at once) from turning that wait into a 503, which is not what this test is about.
    config.pool_wait_ms = 4000;
    let app = spawn_app(config).await;
    assert_eq!(app.get("/products/1/related").await.status(), 200);

    let mut primary = cluster.connect(0).await.unwrap();
    let lock = primary.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE related_items IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    // Commit-less WAL reaches the replica when the WAL writer flushes it.
    lock.batch_execute("SELECT pg_switch_wal()").await.unwrap();
    let replica = cluster.connect(only).await.unwrap();
    let held = eventually(Duration::from_secs(10), || async {
        let locks: i64 = replica
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE relation = 'related_items'::regclass \
                 AND mode = 'AccessExclusiveLock' AND granted",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        locks == 1
    })
    .await;
    assert!(held, "the lock is replayed on the replica");

    let requests: Vec<_> = (1..=4)
        .map(|id| {
            let client = app.client.clone();
            let url = app.url(&format!("/products/{id}/related"));
            tokio::spawn(async move { client.get(url).send().await.unwrap().status() })
        })
        .collect();
    // Every request now waits past the 200 ms query timeout.
    tokio::time::sleep(Duration::from_millis(800)).await;
    lock.commit().await.unwrap();
    let mut statuses = Vec::new();
    for r in requests {
        statuses.push(r.await.unwrap());
    }
    let metrics = app.metrics().await;
    assert!(
        statuses.iter().all(|s| *s == 200),
        "{statuses:?}\n{metrics}"
    );
    assert_eq!(
        replica_gauge(&metrics, "api_replica_bans_total", &label),
        Some(0),
        "{metrics}"
    );
    // At least one query outlived its timeout and was waited for (the others may have waited
    // in the pool, behind a connection's first statement preparation, which the lock holds too).
    assert!(
        replica_gauge(&metrics, "api_replica_timeouts_under_load_total", &label) >= Some(1),
        "{metrics}"
    );
    app.stop().await;
}

/// A replica that answers the API's query with "permission denied" is answering from another
/// state of the database, as a standby restarted after a crash does for a moment (its state
/// before the seeder's GRANT): the request is retried on another replica and gets its 200, and
/// that replica is banned, never a 500. Here the second "replica" is the same server reached as
/// `localhost` with a search path that finds copies of the API's tables without the GRANT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_answering_from_another_state_is_banned_and_its_requests_retried() {
    // It adds a schema to the shared cluster: alone, as the helpers ask of tests that change it.
    let cluster = shared_cluster_alone().await;
    let primary = cluster.connect(0).await.unwrap();
    primary
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS before_grants;
             GRANT USAGE ON SCHEMA before_grants TO related_api;
             CREATE TABLE IF NOT EXISTS before_grants.products (LIKE public.products);
             CREATE TABLE IF NOT EXISTS before_grants.related_items (LIKE public.related_items);",
        )
        .await
        .unwrap();
    cluster
        .wait_for_replicas(Duration::from_secs(30))
        .await
        .unwrap();
    let node = cluster.replica_indexes()[0];
    let good = cluster.api_url(node);
    let elsewhere = format!(
        "{}?options=-c%20search_path%3Dbefore_grants",
        good.replace("@127.0.0.1:", "@localhost:")
    );
    let other_label = format!("localhost:{}/related", cluster.nodes()[node].port);
    let mut config = api::Config::with_replicas(vec![good, elsewhere]);
    config.listen = "127.0.0.1:0".into();
    let app = spawn_app(config).await;
    let mut statuses = Vec::new();
    for id in 1..=40 {
        statuses.push(app.get(&format!("/products/{id}/related")).await.status());
    }
    let metrics = app.metrics().await;
    assert!(
        statuses.iter().all(|s| *s == 200),
        "{statuses:?}\n{metrics}"
    );
    assert!(
        replica_gauge(&metrics, "api_replica_bans_total", &other_label) >= Some(1),
        "{metrics}"
    );
    app.stop().await;
}

/// A server that accepts the TCP connection and then says nothing (frozen, or its host gone
/// mid-handshake) fails the pool's connection attempt within the connect timeout: the pool's
/// slot comes free and the waiting requests learn of the failure, instead of waiting for as
/// long as the kernel keeps the connection.
#[tokio::test]
async fn a_server_that_says_nothing_fails_a_connection_attempt_in_time() {
    use api::query::{ConnectError, ConnectSignals, PgConnectionManager};
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            held.push(silent.accept().await.unwrap().0);
        }
    });
    let config: tokio_postgres::Config = format!("postgres://related_api@{addr}/related")
        .parse()
        .unwrap();
    let signals = Arc::new(ConnectSignals::default());
    let manager = PgConnectionManager::new(
        config,
        api::PoolCheck::Closed,
        Duration::from_millis(300),
        Duration::from_millis(300),
        signals.clone(),
    );
    let started = Instant::now();
    let attempt = tokio::time::timeout(
        Duration::from_secs(10),
        bb8::ManageConnection::connect(&manager),
    )
    .await
    .expect("the attempt ends by itself");
    let elapsed = started.elapsed();
    assert!(
        matches!(attempt, Err(ConnectError::TimedOut(t)) if t == Duration::from_millis(300)),
        "{:?}",
        attempt.err()
    );
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert_eq!(signals.failures.load(Relaxed), 1);
    holder.abort();
}

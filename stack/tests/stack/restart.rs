//! `up` on a folder that holds a topology keeps it: stopped and crashed servers start again
//! from their data, on the same ports with the same passwords; only `--fresh` starts over.

use std::time::Duration;

use stack::{Cluster, ClusterSpec};

use crate::test_dir;

async fn count(cluster: &Cluster, node: usize) -> i64 {
    cluster
        .connect(node)
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM kept", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn up_restarts_a_stopped_replica_and_a_crashed_primary_keeping_their_data() {
    let dir = test_dir();
    let spec = ClusterSpec::new(dir.path().join("c"), 2);
    let mut cluster = Cluster::create(spec.clone()).await.unwrap();
    cluster.keep();
    let urls_before = (cluster.primary_url(), cluster.replica_api_urls());
    let primary = cluster.connect(0).await.unwrap();
    primary
        .batch_execute(
            "CREATE TABLE kept (v int); INSERT INTO kept SELECT generate_series(1, 500);",
        )
        .await
        .unwrap();
    cluster
        .wait_for_replicas(Duration::from_secs(30))
        .await
        .unwrap();
    drop(primary);

    // One replica stopped cleanly, then more writes it misses; then the primary crashes.
    cluster.stop_node(2);
    cluster
        .connect(0)
        .await
        .unwrap()
        // The servers run with synchronous_commit off (a crash may lose the last moment of
        // commits, which the seeder's ledger redoes); this commit must be durable before the crash.
        .batch_execute(
            "SET synchronous_commit = on; INSERT INTO kept SELECT generate_series(501, 700)",
        )
        .await
        .unwrap();
    cluster.kill_node(0);
    assert!(cluster.pid(0).is_none() && cluster.pid(2).is_none());
    drop(cluster);

    let lines = std::sync::Mutex::new(Vec::new());
    let say = |line: &str| lines.lock().unwrap().push(line.to_string());
    let cluster = Cluster::up(spec.clone(), false, &say).await.unwrap();
    let lines = lines.into_inner().unwrap();
    assert!(
        lines.iter().any(|l| l.starts_with("primary: stopped"))
            && lines.iter().any(|l| l.starts_with("replica2: stopped")),
        "says what it starts: {lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("cloning")),
        "nothing needed a new clone: {lines:?}"
    );
    assert_eq!(
        (cluster.primary_url(), cluster.replica_api_urls()),
        urls_before,
        "same ports and passwords"
    );
    for node in 0..3 {
        assert!(cluster.pid(node).is_some(), "node {node} runs again");
        assert_eq!(
            count(&cluster, node).await,
            700,
            "node {node} kept every row"
        );
    }
    // The restarted replica streams again.
    cluster
        .connect(0)
        .await
        .unwrap()
        .batch_execute("INSERT INTO kept VALUES (701)")
        .await
        .unwrap();
    cluster
        .wait_for_replicas(Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(count(&cluster, 2).await, 701);

    // `up` with everything running changes nothing; `--fresh` starts over and says so.
    let quiet = Cluster::up(spec.clone(), false, &|_| {}).await.unwrap();
    assert_eq!(quiet.primary_url(), urls_before.0);
    let said = std::sync::Mutex::new(String::new());
    let fresh = Cluster::up(spec, true, &|l: &str| said.lock().unwrap().push_str(l))
        .await
        .unwrap();
    assert!(said.into_inner().unwrap().contains("removing their data"));
    assert_ne!(fresh.primary_url(), urls_before.0, "new passwords");
    let missing = fresh
        .connect(0)
        .await
        .unwrap()
        .query_one("SELECT to_regclass('kept') IS NULL", &[])
        .await
        .unwrap()
        .get::<_, bool>(0);
    assert!(missing, "--fresh removed the old data");
}

#[tokio::test]
async fn up_clones_again_a_replica_whose_data_cannot_start() {
    let dir = test_dir();
    let spec = ClusterSpec::new(dir.path().join("c"), 1);
    let mut cluster = Cluster::create(spec.clone()).await.unwrap();
    cluster.keep();
    cluster
        .connect(0)
        .await
        .unwrap()
        .batch_execute("CREATE TABLE kept (v int); INSERT INTO kept SELECT generate_series(1, 10);")
        .await
        .unwrap();
    cluster.stop_node(1);
    // A replica whose data folder lost its control file cannot start.
    let control = cluster.server_folder(1).join("data/global/pg_control");
    std::fs::remove_file(&control).unwrap();
    drop(cluster);

    let lines = std::sync::Mutex::new(Vec::new());
    let cluster = Cluster::up(spec, false, &|l: &str| {
        lines.lock().unwrap().push(l.to_string())
    })
    .await
    .unwrap();
    let lines = lines.into_inner().unwrap();
    assert!(
        lines.iter().any(|l| l.contains("cloning it again")),
        "says it clones again: {lines:?}"
    );
    assert_eq!(count(&cluster, 1).await, 10);
    assert!(cluster.pid(1).is_some());
}

use std::time::Duration;

use stack::{Cluster, ClusterSpec, NodeRole};

use crate::test_dir;

#[tokio::test]
async fn replicas_stream_what_the_primary_commits() {
    let dir = test_dir();
    let cluster = Cluster::create(ClusterSpec::new(dir.path().join("c"), 2))
        .await
        .unwrap();
    assert_eq!(cluster.nodes().len(), 3);
    assert_eq!(cluster.replica_indexes(), vec![1, 2]);
    let primary = cluster.connect(0).await.unwrap();
    primary
        .batch_execute("CREATE TABLE t (v int); INSERT INTO t SELECT generate_series(1, 1000);")
        .await
        .unwrap();
    cluster
        .wait_for_replicas(Duration::from_secs(30))
        .await
        .unwrap();
    for node in cluster.replica_indexes() {
        let replica = cluster.connect(node).await.unwrap();
        let n: i64 = replica
            .query_one("SELECT count(*) FROM t", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1000, "replica {node} sees every committed row");
        let in_recovery: bool = replica
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .unwrap()
            .get(0);
        assert!(in_recovery, "replica {node} is a hot standby");
        let err = replica.batch_execute("INSERT INTO t VALUES (1)").await;
        assert!(err.is_err(), "a standby refuses writes");
    }
}

#[tokio::test]
async fn api_role_is_read_only_and_state_file_reopens() {
    let dir = test_dir();
    let path = dir.path().join("c");
    let mut cluster = Cluster::create(ClusterSpec::new(&path, 1)).await.unwrap();
    let primary = cluster.connect(0).await.unwrap();
    primary
        .batch_execute("CREATE TABLE t (v int); GRANT SELECT ON t TO related_api;")
        .await
        .unwrap();
    let (api, conn) = tokio_postgres::connect(&cluster.api_url(0), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    api.query("SELECT * FROM t", &[]).await.unwrap();
    let err = api
        .batch_execute("INSERT INTO t VALUES (1)")
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION),
        "{err:?}"
    );
    // Turning read-only off in its own session gets it no further: it holds no right to write
    // a table or to create one.
    for write in [
        "INSERT INTO t VALUES (1)",
        "UPDATE t SET v = 2",
        "DELETE FROM t",
        "CREATE TABLE mine (v int)",
    ] {
        let err = api
            .batch_execute(&format!("BEGIN READ WRITE; {write}; COMMIT;"))
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{write}: {err:?}"
        );
        api.batch_execute("ROLLBACK").await.unwrap();
    }
    // The state file holds the passwords: its owner's alone.
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path.join("stack.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    cluster.keep();
    let ports: Vec<u16> = cluster.nodes().iter().map(|n| n.port).collect();
    drop(cluster);
    let reopened = Cluster::open(&path).unwrap();
    assert_eq!(
        reopened.nodes().iter().map(|n| n.port).collect::<Vec<_>>(),
        ports
    );
    assert!(reopened.pid(0).is_some(), "kept servers still run");
    assert_eq!(reopened.nodes()[1].role, NodeRole::Replica);
    reopened.down().unwrap();
    assert!(!path.exists(), "down removes what up created");
}

#[tokio::test]
async fn two_clusters_side_by_side_and_a_node_restarts() {
    let (a_dir, b_dir) = (test_dir(), test_dir());
    let (a, b) = tokio::join!(
        Cluster::create(ClusterSpec::new(a_dir.path().join("a"), 1)),
        Cluster::create(ClusterSpec::new(b_dir.path().join("b"), 1)),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut ports: Vec<u16> = a.nodes().iter().chain(b.nodes()).map(|n| n.port).collect();
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 4, "every server has its own port");

    a.stop_node(1);
    assert!(a.pid(1).is_none());
    assert!(
        a.connect(1).await.is_err(),
        "a stopped replica refuses connections"
    );
    a.start_node(1).unwrap();
    a.connect(1).await.unwrap();
    a.wait_for_replicas(Duration::from_secs(30)).await.unwrap();
}

#[tokio::test]
async fn a_crashed_run_is_cleaned_up() {
    let dir = test_dir();
    let path = dir.path().join("c");
    let mut first = Cluster::create(ClusterSpec::new(&path, 1)).await.unwrap();
    first.keep();
    first.kill_node(1);
    drop(first);
    // One server died: the directory is stale, and a new `up` replaces it.
    let second = Cluster::create(ClusterSpec::new(&path, 1)).await.unwrap();
    second.connect(1).await.unwrap();
    // All servers alive: a second `up` on the same directory is refused with a clear message.
    let mut kept = second;
    kept.keep();
    let err = Cluster::create(ClusterSpec::new(&path, 1))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("loadgen down"), "{err}");
    Cluster::open(&path).unwrap().down().unwrap();
}

//! Shared test plumbing: a real primary + 2 replicas with a known fixture (built per test, or
//! once per test binary and shared: [`shared_cluster`]), the API started in process on port 0,
//! traffic loops, and server-side query counts from pg_stat_statements.

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use stack::{Cluster, ClusterSpec, PgSettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, Mutex, OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

const SCHEMA: &str = include_str!("../../../seeder/sql/schema.sql");
const INDEXES: &str = include_str!("../../../seeder/sql/indexes.sql");
const RELATION_INDEX: &str = include_str!("../../../seeder/sql/relation_index.sql");
const GRANTS: &str = include_str!("../../../seeder/sql/grants.sql");

/// Products 1..=PRODUCTS exist; those up to WITH_RELATIONS have related rows.
pub const PRODUCTS: i32 = 200;
pub const WITH_RELATIONS: i32 = 100;
/// Product 1 has this many related rows (more than the default limit of 16).
pub const FIRST_PRODUCT_RELATIONS: i32 = 20;
/// A product without related rows.
pub const LONELY_PRODUCT: i32 = 150;
/// No product has this id.
pub const UNKNOWN_PRODUCT: i32 = 999_999;

/// The related ids of `product` in position order: a scrambled but fixed sequence, so a test
/// can tell position order from id order.
pub fn related_ids(product: i32) -> Vec<i32> {
    let count = if product == 1 {
        FIRST_PRODUCT_RELATIONS
    } else if product <= WITH_RELATIONS {
        16
    } else {
        0
    };
    let mut ids = Vec::new();
    let mut k = 0;
    while (ids.len() as i32) < count {
        let candidate = (product * 7 + k * 37) % PRODUCTS + 1;
        k += 1;
        if candidate != product && !ids.contains(&candidate) {
            ids.push(candidate);
        }
    }
    ids
}

/// The nodes the API reads from: the replicas, or the primary itself (as the read-only role)
/// in a cluster built without replicas. Tests whose subject is not replication use such a
/// cluster: each replica costs several seconds to stream and start.
pub fn read_nodes(cluster: &Cluster) -> Vec<usize> {
    let replicas = cluster.replica_indexes();
    if replicas.is_empty() {
        vec![0]
    } else {
        replicas
    }
}

/// A cluster and the temporary folder it lives in. Fields drop in order: the servers stop
/// before their folder is removed (the other way round, the teardown would find no PID files
/// and leave the servers running until they noticed their data directory gone).
pub struct Fixture {
    cluster: Cluster,
    scratch: tempfile::TempDir,
}

impl Fixture {
    /// A folder for the test's own files, removed with the cluster.
    pub fn scratch(&self) -> &std::path::Path {
        self.scratch.path()
    }
}

impl Deref for Fixture {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

impl DerefMut for Fixture {
    fn deref_mut(&mut self) -> &mut Cluster {
        &mut self.cluster
    }
}

/// A cluster of a primary and `replicas` replicas with pg_stat_statements (to count queries per
/// replica on the server side), the schema and the fixture loaded, replicas caught up.
pub async fn fixture_cluster(replicas: usize) -> Fixture {
    let dir = tempfile::Builder::new()
        .prefix("api-test-")
        .tempdir_in("/tmp")
        .expect("tempdir");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod tempdir");
    }
    let mut spec = ClusterSpec::new(dir.path().join("c"), replicas);
    spec.settings = PgSettings {
        shared_buffers_mb: 32,
        max_connections: 100,
        extra: vec![
            (
                "shared_preload_libraries".into(),
                "'pg_stat_statements'".into(),
            ),
            ("pg_stat_statements.track".into(), "'top'".into()),
        ],
        ..PgSettings::default()
    };
    let cluster = Cluster::create(spec).await.expect("cluster starts");
    let db = cluster.connect(0).await.expect("connect primary");
    db.batch_execute(SCHEMA).await.expect("schema");
    let mut sql = String::from("BEGIN;\n");
    for id in 1..=PRODUCTS {
        sql.push_str(&format!(
            "INSERT INTO products VALUES ({id}, 'Product {id}', '{}', {}, 'https://img.example/{id}.jpg', {}, {});\n",
            ["Running", "Tennis", "Hiking", "Cycling"][id as usize % 4],
            id * 100 + 99,
            (id % 51) as f64 / 10.0,
            id * 3
        ));
        for (position, related) in related_ids(id).into_iter().enumerate() {
            sql.push_str(&format!(
                "INSERT INTO related_items VALUES ({id}, {position}, {related});\n"
            ));
        }
    }
    sql.push_str("COMMIT;\n");
    db.batch_execute(&sql).await.expect("fixture rows");
    db.batch_execute(INDEXES).await.expect("indexes");
    db.batch_execute(RELATION_INDEX)
        .await
        .expect("relation index");
    db.batch_execute(GRANTS).await.expect("grants");
    db.batch_execute("ANALYZE; CREATE EXTENSION IF NOT EXISTS pg_stat_statements;")
        .await
        .expect("analyze");
    cluster
        .wait_for_replicas(Duration::from_secs(60))
        .await
        .expect("replicas catch up");
    Fixture {
        cluster,
        scratch: dir,
    }
}

/// The cluster shared by the tests that never stop a node: a primary and 2 replicas take tens of
/// seconds to build on a busy 2-core machine, so it is built once, by the first test that asks.
///
/// Each `#[tokio::test]` has its own runtime, so what is shared holds nothing bound to one: the
/// servers are OS processes, and every test opens its own connections and starts its own API.
/// Statics are never dropped, so the servers are stopped and their folders removed at process
/// exit ([`tear_down_shared_cluster`]).
struct Shared {
    fixture: Fixture,
    /// Taken shared by tests that only need the cluster to answer, and alone by tests that
    /// count queries on the servers or change a replica (pause its replay, stop a backend).
    access: Arc<RwLock<()>>,
}

static SHARED: Mutex<Option<Arc<Shared>>> = Mutex::const_new(None);

/// The shared cluster, held for one test (shared or alone); derefs to the [`Cluster`].
pub struct SharedCluster {
    shared: Arc<Shared>,
    _shared_access: Option<OwnedRwLockReadGuard<()>>,
    _sole_access: Option<OwnedRwLockWriteGuard<()>>,
}

impl Deref for SharedCluster {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.shared.fixture
    }
}

async fn shared() -> Arc<Shared> {
    let mut slot = SHARED.lock().await;
    if let Some(shared) = slot.as_ref() {
        return shared.clone();
    }
    let shared = Arc::new(Shared {
        fixture: fixture_cluster(2).await,
        access: Arc::new(RwLock::new(())),
    });
    *slot = Some(shared.clone());
    static AT_EXIT: Once = Once::new();
    AT_EXIT.call_once(|| {
        // SAFETY: registers a plain function with the C runtime; it runs once, at exit.
        let registered = unsafe { atexit(tear_down_shared_cluster) };
        assert_eq!(registered, 0, "atexit");
    });
    shared
}

/// The shared cluster for a test that only reads through its own API instance: such tests run
/// in parallel with each other.
pub async fn shared_cluster() -> SharedCluster {
    let shared = shared().await;
    let access = shared.access.clone().read_owned().await;
    SharedCluster {
        shared,
        _shared_access: Some(access),
        _sole_access: None,
    }
}

/// The shared cluster for a test that counts queries on the servers or changes a replica: no
/// other test uses the cluster meanwhile.
pub async fn shared_cluster_alone() -> SharedCluster {
    let shared = shared().await;
    let access = shared.access.clone().write_owned().await;
    SharedCluster {
        shared,
        _shared_access: None,
        _sole_access: Some(access),
    }
}

extern "C" {
    fn atexit(callback: extern "C" fn()) -> std::os::raw::c_int;
}

/// Stops the shared cluster's servers and removes its folders (the [`Fixture`]'s drop). By
/// exit every test has returned its handle, so this drops the last one.
extern "C" fn tear_down_shared_cluster() {
    if let Ok(mut slot) = SHARED.try_lock() {
        drop(slot.take());
    }
}

/// The API running in this test's runtime.
pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    /// The operator listener: `/metrics`, `/healthz`, `/readyz`.
    pub admin_addr: SocketAddr,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<Result<(), api::ApiError>>>,
}

/// A configuration for `cluster`'s replicas with test-friendly timings.
pub fn test_config(cluster: &Cluster) -> api::Config {
    let urls = read_nodes(cluster)
        .into_iter()
        .map(|i| cluster.api_url(i))
        .collect();
    let mut config = api::Config::with_replicas(urls);
    config.listen = "127.0.0.1:0".into();
    config.health_interval_ms = 100;
    config.ban_ms = 200;
    config.max_ban_ms = 2000;
    config.pool_size = 8;
    config.request_timeout_ms = 5000;
    config.query_timeout_ms = 2000;
    config
}

/// Starts the API, its public and its operator listener each on port 0, and returns once it
/// accepts connections.
pub async fn spawn_app(config: api::Config) -> TestApp {
    let bind = || async {
        tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0")
    };
    let listeners = api::Listeners {
        public: bind().await,
        admin: Some(bind().await),
    };
    let addr = listeners.public.local_addr().expect("local addr");
    let admin_addr = listeners
        .admin
        .as_ref()
        .unwrap()
        .local_addr()
        .expect("local addr");
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(api::run(listeners, config, async move {
        let _ = rx.await;
    }));
    TestApp {
        addr,
        base: format!("http://{addr}"),
        admin_addr,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client"),
        shutdown: Some(tx),
        handle: Some(handle),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request completes")
    }

    /// A GET on the operator listener.
    pub async fn get_admin(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("http://{}{path}", self.admin_addr))
            .send()
            .await
            .expect("request completes")
    }

    /// The Prometheus text of `/metrics`, from the operator listener.
    pub async fn metrics(&self) -> String {
        self.get_admin("/metrics")
            .await
            .text()
            .await
            .expect("metrics body")
    }

    /// The value of an unlabelled metric, or the sum of a labelled one.
    pub async fn metric(&self, name: &str) -> f64 {
        metric_value(&self.metrics().await, name)
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.expect("server task").expect("server ends cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The `replica` label the API gives a node of the cluster in /metrics.
pub fn replica_label(cluster: &Cluster, node: usize) -> String {
    format!("127.0.0.1:{}/related", cluster.nodes()[node].port)
}

/// One replica's value of a per-replica series in /metrics.
pub fn replica_gauge(text: &str, name: &str, label: &str) -> Option<u64> {
    let prefix = format!("{name}{{replica=\"{label}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse::<u64>().ok())
}

pub fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub async fn raw_request(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // A server may answer and close before reading everything; ignore write errors.
    let _ = stream.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of a raw HTTP/1.1 response, if any came back.
pub fn raw_status(response: &str) -> Option<u16> {
    let line = response.lines().next()?;
    line.split(' ').nth(1)?.parse().ok()
}

/// Calls of the API's query on each node it reads from, counted by the servers themselves.
pub async fn queries_per_replica(cluster: &Cluster) -> Vec<i64> {
    let mut counts = Vec::new();
    for node in read_nodes(cluster) {
        counts.push(query_calls(cluster, node).await);
    }
    counts
}

/// Calls of the API's query on one node (0 if the node is down).
pub async fn query_calls(cluster: &Cluster, node: usize) -> i64 {
    let Ok(client) = cluster.connect(node).await else {
        return 0;
    };
    client
        .query_one(
            "SELECT coalesce(sum(calls), 0)::int8 FROM pg_stat_statements WHERE query LIKE '%LEFT JOIN LATERAL%'",
            &[],
        )
        .await
        .map(|r| r.get(0))
        .unwrap_or(0)
}

/// Outcomes of background traffic.
#[derive(Default)]
pub struct TrafficStats {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub failures: std::sync::Mutex<Vec<String>>,
}

/// `workers` loops of GETs on random product ids until `stop` is set.
pub fn start_traffic(
    base: String,
    workers: usize,
    stop: Arc<AtomicBool>,
) -> (Arc<TrafficStats>, Vec<tokio::task::JoinHandle<()>>) {
    let stats = Arc::new(TrafficStats::default());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let handles = (0..workers)
        .map(|w| {
            let (client, base, stop, stats) =
                (client.clone(), base.clone(), stop.clone(), stats.clone());
            tokio::spawn(async move {
                let mut i = w as i32;
                while !stop.load(Relaxed) {
                    i = (i * 31 + 17) % PRODUCTS;
                    let url = format!("{base}/products/{}/related", i + 1);
                    match client.get(&url).send().await {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                            stats.ok.fetch_add(1, Relaxed);
                        }
                        Ok(r) => {
                            stats.failed.fetch_add(1, Relaxed);
                            let status = r.status();
                            let body = r.text().await.unwrap_or_default();
                            stats
                                .failures
                                .lock()
                                .unwrap()
                                .push(format!("{status} {body}"));
                        }
                        Err(e) => {
                            stats.failed.fetch_add(1, Relaxed);
                            stats.failures.lock().unwrap().push(e.to_string());
                        }
                    }
                }
            })
        })
        .collect();
    (stats, handles)
}

/// Polls `check` until it is true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

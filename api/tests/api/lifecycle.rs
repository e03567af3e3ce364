//! The process lifecycle through the real binary: SIGHUP reloads the replica list (a replica
//! added to the cluster takes traffic, no request fails), SIGTERM lets in-flight requests
//! finish and exits 0; the per-request deadline gives 504; `--scheduling batch` reaches every
//! thread; `--worker-threads 1` serves on the main thread alone.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::helpers::*;

/// The `api` binary on free ports (public and operator); killed if the test fails before it
/// exits.
struct ApiProcess {
    child: Child,
    base: String,
    /// The operator listener, where `/metrics` is.
    admin: String,
}

impl ApiProcess {
    /// `env` is where secrets go (API_REPLICAS), never `args`: a command line is public.
    fn start(args: &[&str], env: &[(&str, &str)]) -> ApiProcess {
        let port = stack::process::free_port().expect("free port");
        let admin_port = loop {
            let p = stack::process::free_port().expect("free port");
            if p != port {
                break p;
            }
        };
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_api"));
        for (key, _) in std::env::vars() {
            if key.starts_with("API_") {
                cmd.env_remove(key);
            }
        }
        let child = cmd
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
            .args(["--health-interval-ms", "100", "--ban-ms", "200"])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the api binary");
        ApiProcess {
            child,
            base: format!("http://127.0.0.1:{port}"),
            admin: format!("http://127.0.0.1:{admin_port}"),
        }
    }

    async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let url = format!("{}/readyz", self.base);
        let ready = eventually(Duration::from_secs(20), || async {
            matches!(client.get(&url).send().await, Ok(r) if r.status() == 200)
        })
        .await;
        assert!(ready, "api binary became ready");
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("signal the api");
    }

    async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "api did not exit");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ApiProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sighup_reload_routes_to_an_added_replica() {
    let mut cluster = fixture_cluster(1).await;
    let list = cluster.scratch().join("replicas.txt");
    std::fs::write(&list, cluster.replica_api_urls().join("\n")).unwrap();
    let mut api = ApiProcess::start(&["--replica-file", list.to_str().unwrap()], &[]);
    api.wait_ready().await;

    let stop = Arc::new(AtomicBool::new(false));
    let (stats, handles) = start_traffic(api.base.clone(), 4, stop.clone());
    let added = cluster.add_replica().await.expect("add a replica");
    assert_eq!(
        query_calls(&cluster, added).await,
        0,
        "not routed before the reload"
    );
    std::fs::write(
        &list,
        format!(
            "# two replicas now\n{}\n",
            cluster.replica_api_urls().join("\n")
        ),
    )
    .unwrap();
    api.signal(Signal::SIGHUP);
    let routed = eventually(Duration::from_secs(20), || async {
        query_calls(&cluster, added).await > 20
    })
    .await;
    stop.store(true, Relaxed);
    for h in handles {
        h.await.unwrap();
    }
    assert!(routed, "the added replica takes traffic after SIGHUP");
    assert_eq!(
        stats.failed.load(Relaxed),
        0,
        "{:?}",
        stats.failures.lock().unwrap()
    );
    assert!(stats.ok.load(Relaxed) > 50);

    // A broken list is refused and the old one kept.
    std::fs::write(&list, "not a url at all ::::\n").unwrap();
    api.signal(Signal::SIGHUP);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = reqwest::get(format!("{}/products/1/related", api.base))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    api.signal(Signal::SIGTERM);
    assert!(api.wait_exit(Duration::from_secs(15)).await.success());
}

/// Replication plays no part here, so the cluster is a primary alone, read through the
/// read-only role; holding a table lock on it makes requests reliably wait in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_finishes_in_flight_requests_then_exits_zero() {
    let cluster = fixture_cluster(0).await;
    let url = cluster.api_url(0);
    let mut api = ApiProcess::start(
        &[
            "--request-timeout-ms",
            "30000",
            "--query-timeout-ms",
            "30000",
            "--shutdown-grace-ms",
            "30000",
        ],
        &[("API_REPLICAS", &url)],
    );
    api.wait_ready().await;
    let client = reqwest::Client::new();
    assert_eq!(
        client
            .get(format!("{}/products/1/related", api.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let locker = cluster.connect(0).await.unwrap();
    locker
        .batch_execute("BEGIN; LOCK TABLE related_items IN ACCESS EXCLUSIVE MODE;")
        .await
        .unwrap();

    // The deadline: an in-process instance with a short one answers 504 while the lock holds.
    let mut config = test_config(&cluster);
    config.request_timeout_ms = 500;
    let quick = spawn_app(config).await;
    let r = quick.get("/products/2/related").await;
    assert_eq!(r.status(), 504);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "deadline_exceeded");
    quick.stop().await;

    // The concurrency bound: with room for one request, a second one is shed at once (503
    // with Retry-After) while the first waits on the lock.
    let mut config = test_config(&cluster);
    config.max_concurrent_requests = 1;
    let bounded = spawn_app(config).await;
    let first = {
        let (client, url) = (bounded.client.clone(), bounded.url("/products/3/related"));
        tokio::spawn(async move { client.get(url).send().await.map(|r| r.status().as_u16()) })
    };
    let shed = eventually(Duration::from_secs(10), || async {
        let r = bounded.get("/products/4/related").await;
        r.status() == 503 && r.headers().contains_key("retry-after")
    })
    .await;
    assert!(shed, "requests over the bound get a 503");
    first.abort();
    bounded.stop().await;

    let in_flight: Vec<_> = (1..=5)
        .map(|id| {
            let client = client.clone();
            let url = format!("{}/products/{id}/related", api.base);
            tokio::spawn(async move { client.get(url).send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    let metrics_url = format!("{}/metrics", api.admin);
    let waiting = eventually(Duration::from_secs(10), || async {
        let text = client
            .get(&metrics_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metric_value(&text, "api_replica_in_flight") >= 5.0
    })
    .await;
    assert!(waiting, "five requests in flight");

    api.signal(Signal::SIGTERM);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        api.child.try_wait().unwrap().is_none(),
        "still finishing in-flight requests"
    );
    assert!(
        tokio::net::TcpStream::connect(api.base.trim_start_matches("http://"))
            .await
            .is_err(),
        "no new connections after SIGTERM"
    );
    locker.batch_execute("COMMIT").await.unwrap();
    for request in in_flight {
        assert_eq!(
            request.await.unwrap().expect("in-flight request completes"),
            200
        );
    }
    let status = api.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0));
}

/// The scheduling policy (field 41 of `/proc/<pid>/task/<tid>/stat`) of each of a process's
/// threads, by thread name.
fn thread_policies(pid: u32) -> Vec<(String, i32)> {
    let mut policies = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let Ok(stat) = std::fs::read_to_string(task.unwrap().path().join("stat")) else {
            continue; // the thread ended meanwhile
        };
        // The name is in parentheses and may hold spaces; the fields after it start at 3.
        let (name, rest) = stat.rsplit_once(") ").unwrap();
        let name = name.split_once(" (").unwrap().1.to_string();
        let policy = rest.split(' ').nth(41 - 3).unwrap().parse().unwrap();
        policies.push((name, policy));
    }
    policies
}

/// `--scheduling batch` puts every thread of the process under SCHED_BATCH (3), the runtime's
/// workers included, and the process answers as before; by default every thread keeps the
/// kernel's default policy (0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduling_batch_covers_every_thread() {
    let cluster = fixture_cluster(0).await;
    let url = cluster.api_url(0);
    for (scheduling, policy) in [("batch", 3), ("normal", 0)] {
        let api = ApiProcess::start(
            &["--worker-threads", "2"],
            &[("API_REPLICAS", &url), ("API_SCHEDULING", scheduling)],
        );
        api.wait_ready().await;
        let r = reqwest::get(format!("{}/products/1/related", api.base))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let threads = thread_policies(api.child.id());
        let workers = threads
            .iter()
            .filter(|(name, _)| name.starts_with("tokio-"))
            .count();
        assert!(workers >= 2, "{scheduling}: {threads:?}");
        assert!(
            threads.iter().all(|&(_, p)| p == policy),
            "{scheduling}: {threads:?}"
        );
    }
}

/// `--worker-threads 1` runs the whole server on the process's main thread: concurrent requests
/// that share batched queries get the bodies an in-process server of several threads gives
/// (known products, one without relations, an unknown one, duplicates), no runtime worker
/// thread exists, and SIGTERM still ends it with 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_worker_thread_serves_on_the_main_thread() {
    let cluster = fixture_cluster(0).await;
    let url = cluster.api_url(0);
    let mut api = ApiProcess::start(
        &[
            "--worker-threads",
            "1",
            "--batch-max",
            "16",
            "--pool-size",
            "2",
        ],
        &[("API_REPLICAS", &url)],
    );
    api.wait_ready().await;
    let reference = spawn_app(test_config(&cluster)).await;
    let client = reqwest::Client::new();
    let paths: Vec<String> = (0..96)
        .map(|i| match i % 8 {
            6 => format!("/products/{LONELY_PRODUCT}/related"),
            7 => format!("/products/{UNKNOWN_PRODUCT}/related"),
            _ => format!("/products/{}/related?limit={}", i % 40 + 1, i % 16 + 1),
        })
        .collect();
    let answers = futures::future::join_all(paths.iter().map(|path| {
        let (client, url) = (client.clone(), format!("{}{path}", api.base));
        async move {
            let r = client.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    }))
    .await;
    for (path, (status, body)) in paths.iter().zip(answers) {
        let expected = reference.get(path).await;
        assert_eq!(status, expected.status().as_u16(), "{path}");
        assert_eq!(body, expected.text().await.unwrap(), "{path}");
    }
    reference.stop().await;

    let threads = thread_policies(api.child.id());
    assert!(
        !threads.iter().any(|(name, _)| name.starts_with("tokio-")),
        "{threads:?}"
    );
    api.signal(Signal::SIGTERM);
    let status = api.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0));
}

/// Nonsense configuration is refused before anything starts: the binary exits non-zero with a
/// message naming the flag and its variable, and the in-process server returns the same error.
/// No cluster: nothing is ever connected to.
#[tokio::test]
async fn nonsense_configuration_is_refused_at_start() {
    let refused = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_api"));
        for (key, _) in std::env::vars() {
            if key.starts_with("API_") || key.starts_with("RUST_") {
                cmd.env_remove(key);
            }
        }
        let out = cmd
            .args(["--replica", "postgres://api@127.0.0.1:1/related"])
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("run the api binary");
        assert!(!out.status.success(), "{args:?} {env:?} was accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = refused(&["--pool-size", "0"], &[]);
    assert_eq!(
        stderr.trim(),
        "Error: invalid configuration: --pool-size (API_POOL_SIZE) must be from 1 to 10000; got 0"
    );
    let stderr = refused(&[], &[("API_QUERY_TIMEOUT_MS", "0")]);
    assert!(
        stderr
            .contains("--query-timeout-ms (API_QUERY_TIMEOUT_MS) must be from 1 to 3600000; got 0"),
        "{stderr}"
    );
    let stderr = refused(&["--scheduling", "fast"], &[]);
    assert!(
        stderr.contains("invalid value 'fast' for '--scheduling <SCHEDULING>'")
            && stderr.contains("[possible values: normal, batch]"),
        "{stderr}"
    );
    let stderr = refused(&["--worker-threads", "0"], &[]);
    assert!(
        stderr.contains("--worker-threads (API_WORKER_THREADS)"),
        "{stderr}"
    );
    // An operator port that another process holds: the error names the flag.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = holder.local_addr().unwrap().to_string();
    let stderr = refused(&["--admin-listen", &taken], &[]);
    assert!(
        stderr.contains(&format!("cannot listen on {taken} (--admin-listen)")),
        "{stderr}"
    );
    drop(holder);

    let mut config = api::Config::with_replicas(vec!["postgres://api@127.0.0.1:1/related".into()]);
    config.health_interval_ms = 1;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = api::run(listener, config, async {})
        .await
        .expect_err("refused");
    assert!(
        matches!(
            err,
            api::ApiError::Config(api::ConfigError::OutOfRange {
                flag: "--health-interval-ms",
                ..
            })
        ),
        "{err}"
    );
}

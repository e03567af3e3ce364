//! nginx in front of three API instances started as `loadgen api`: stopping one during traffic
//! fails no request.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use loadgen::topology::{ApiLaunch, ApiTier};
use stack::nginx::NginxSettings;
use stack::{Cluster, ClusterSpec};

use crate::test_dir;

/// nginx in front of 3 API instances: one is stopped during traffic, and no GET fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_one_of_three_instances_fails_no_request() {
    let dir = test_dir();
    let cluster = Cluster::create(ClusterSpec::new(dir.path().join("stack"), 1))
        .await
        .unwrap();
    let opts = seeder::SeedOptions {
        products: 2000,
        quiet: true,
        ..seeder::SeedOptions::default()
    };
    seeder::seed(&cluster.primary_url(), &opts).await.unwrap();
    cluster
        .wait_for_replicas(Duration::from_secs(60))
        .await
        .unwrap();
    let launch = ApiLaunch {
        program: PathBuf::from(env!("CARGO_BIN_EXE_loadgen")),
        replica_urls: cluster.replica_api_urls(),
        cache_capacity: 0,
        pool_size: 4,
        extra_args: Vec::new(),
    };
    let mut tier = ApiTier::start(
        &launch,
        3,
        Default::default(),
        Some(NginxSettings::tuned()),
        &dir.path().join("tier"),
    )
    .await
    .unwrap();
    let url = tier.entry_url();

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for worker in 0..4u64 {
        let (stop, ok, failures, url) = (stop.clone(), ok.clone(), failures.clone(), url.clone());
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut i = worker;
            while !stop.load(Ordering::Relaxed) {
                i += 4;
                let id = 1 + i % 2000;
                match client
                    .get(format!("{url}/products/{id}/related"))
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failures
                        .lock()
                        .unwrap()
                        .push(format!("status {}", r.status())),
                    Err(e) => failures.lock().unwrap().push(format!("{e}")),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = ok.load(Ordering::Relaxed);
    tier.instances[1].stop();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let after = ok.load(Ordering::Relaxed);
    assert!(before > 0, "traffic flowed before the stop");
    assert!(after > before, "traffic kept flowing after the stop");
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed GETs: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

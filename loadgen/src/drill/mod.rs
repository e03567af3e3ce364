//! The fault drill and the soak (issue 9): what a crash, a freeze, a restart or saturation does
//! to requests through nginx, and whether the API's memory and file descriptors stay flat under
//! long steady load.
//!
//! Both start the same [`Rig`] from the pieces the journey uses: a seeded [`stack::Cluster`]
//! (primary and replicas), API instances as `loadgen api` processes and a tuned nginx in front
//! ([`crate::topology::ApiTier`]).
//!
//! - the drill ([`run_drill`]) sends steady paced traffic ([`traffic`]) while [`faults`]
//!   inflicts each fault in turn and restores it; [`measure`] turns the timeline of answers
//!   into each fault's figures and [`report`] judges them against the target and renders them;
//! - the soak ([`soak::run_soak`]) measures the maximum with a short closed-loop goose run
//!   ([`crate::scenario::run_load`]), then runs goose throttled to a share of it for minutes
//!   while sampling the API processes' resident memory and open file descriptors.

pub mod faults;
pub mod measure;
pub mod report;
pub mod soak;
pub mod traffic;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use stack::nginx::NginxSettings;
use stack::{Cluster, ClusterSpec, PgSettings};

use crate::cancel::{Cancel, INTERRUPTED};
use crate::figures::round_to;
use crate::journey::report::write_file;
use crate::journey::Machine;
use crate::topology::{ApiLaunch, ApiTier};
use faults::{Fault, Holds, Inflicted, Watch};
use report::{DrillReport, DrillSetup, FaultResult};
use traffic::Traffic;

/// The topology a drill or a soak runs on.
#[derive(Debug, Clone)]
pub struct RigOptions {
    /// Folder for the servers (removed at the end).
    pub stack_dir: PathBuf,
    /// The program that serves the API (`loadgen api`): normally this binary.
    pub api_program: PathBuf,
    pub replicas: usize,
    pub api_instances: usize,
    pub products: u64,
    /// Response cache entries per API instance (0: off).
    pub cache_capacity: u64,
    pub pool_size: u32,
    /// `max_connections` of every server (the connection-slots fault fills one replica's).
    pub max_connections: u32,
}

/// A seeded primary with replicas, API instances and nginx. Fields drop in order: the API tier
/// before the servers it reads from.
pub struct Rig {
    pub tier: ApiTier,
    pub launch: ApiLaunch,
    pub cluster: Cluster,
    pub max_connections: u32,
    /// Where the API instances and nginx write their logs.
    pub logs: PathBuf,
    client: reqwest::Client,
}

impl Rig {
    /// Create and seed the servers, then start the API instances and nginx; their logs go to
    /// `logs`.
    pub async fn start(opts: &RigOptions, logs: &Path, say: &dyn Fn(&str)) -> anyhow::Result<Rig> {
        anyhow::ensure!(opts.replicas >= 2, "a drill needs 2 replicas or more");
        anyhow::ensure!(opts.api_instances >= 1, "at least one API instance");
        let mut spec = ClusterSpec::new(&opts.stack_dir, opts.replicas);
        spec.settings = PgSettings {
            max_connections: opts.max_connections,
            ..PgSettings::default()
        };
        say(&format!(
            "starting a primary and {} replicas in {}",
            opts.replicas,
            opts.stack_dir.display()
        ));
        let cluster = Cluster::create(spec).await?;
        say(&format!("seeding {} products", opts.products));
        let seed = seeder::SeedOptions {
            products: opts.products,
            quiet: true,
            ..seeder::SeedOptions::default()
        };
        seeder::seed(&cluster.primary_url(), &seed).await?;
        cluster.wait_for_replicas(Duration::from_secs(600)).await?;
        let launch = ApiLaunch {
            program: opts.api_program.clone(),
            replica_urls: cluster.replica_api_urls(),
            cache_capacity: opts.cache_capacity,
            pool_size: opts.pool_size,
            extra_args: Vec::new(),
        };
        say(&format!(
            "starting {} API instances behind nginx",
            opts.api_instances
        ));
        let tier = ApiTier::start(
            &launch,
            opts.api_instances,
            Default::default(),
            Some(NginxSettings::tuned()),
            logs,
        )
        .await?;
        Ok(Rig {
            tier,
            launch,
            cluster,
            max_connections: opts.max_connections,
            logs: logs.to_path_buf(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()?,
        })
    }

    /// The label the API gives a replica in its metrics (`host:port/database`).
    pub fn replica_label(&self, node: usize) -> String {
        format!(
            "127.0.0.1:{}/{}",
            self.cluster.nodes()[node].port,
            stack::cluster::DATABASE
        )
    }

    /// The API instances' operator listeners.
    pub fn admin_addrs(&self) -> Vec<SocketAddr> {
        self.tier.instances.iter().map(|i| i.admin_addr).collect()
    }

    /// The current value of what `watch` counts; instances that do not answer count 0.
    pub async fn watch_value(&self, watch: &Watch) -> f64 {
        match watch {
            Watch::Replica(label) => {
                let selector = format!("replica=\"{label}\"");
                let mut total = 0.0;
                for addr in self.admin_addrs() {
                    total += self
                        .scrape(addr, "api_replica_queries_total", &selector)
                        .await;
                }
                total
            }
            Watch::Api(addr) => {
                self.scrape(
                    *addr,
                    "api_requests_total",
                    "route=\"/products/{id}/related\"",
                )
                .await
            }
        }
    }

    async fn scrape(&self, addr: SocketAddr, name: &str, selector: &str) -> f64 {
        scrape_sum(&self.client, addr, name, selector).await
    }
}

/// The sum of series `name` whose labels contain `selector`, on one instance's operator
/// listener; 0 when it does not answer.
pub(crate) async fn scrape_sum(
    client: &reqwest::Client,
    addr: SocketAddr,
    name: &str,
    selector: &str,
) -> f64 {
    let Ok(response) = client.get(format!("http://{addr}/metrics")).send().await else {
        return 0.0;
    };
    let text = response.text().await.unwrap_or_default();
    sum_series(&text, name, selector)
}

/// The sum of the series called `name` whose label set contains `selector`, in Prometheus text.
fn sum_series(text: &str, name: &str, selector: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| series.split('{').next() == Some(name) && series.contains(selector))
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum()
}

/// Sleep, unless Ctrl-C comes first.
pub(crate) async fn pause(cancel: &Cancel, d: Duration) -> anyhow::Result<()> {
    tokio::select! {
        _ = tokio::time::sleep(d) => Ok(()),
        _ = cancel.cancelled() => anyhow::bail!(INTERRUPTED),
    }
}

/// What the drill runs.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    pub rig: RigOptions,
    /// Folder for the results; each run gets a timestamped subfolder.
    pub out_dir: PathBuf,
    pub faults: Vec<Fault>,
    pub rate_per_sec: f64,
    pub workers: usize,
    pub settle: Duration,
    pub holds: Holds,
    pub observe: Duration,
    /// The command line, recorded in the report.
    pub command: String,
    pub quiet: bool,
}

/// A run's start: its time, a new timestamped folder under `out` for its files, and how it says
/// its progress (on stderr, `what: ...`, unless quiet). The drill and the soak share it.
pub(crate) fn start_run(
    out: &Path,
    quiet: bool,
    what: &'static str,
) -> anyhow::Result<(chrono::DateTime<chrono::Utc>, PathBuf, impl Fn(&str) + Copy)> {
    let now = chrono::Utc::now();
    let run_dir = out.join(now.format("%Y%m%d-%H%M%S").to_string());
    std::fs::create_dir_all(&run_dir)?;
    let say = move |line: &str| {
        if !quiet {
            eprintln!("{what}: {line}");
        }
    };
    Ok((now, run_dir, say))
}

/// Run every fault of `opts` in turn under steady traffic; writes `drill.json` and `drill.md`
/// into a new timestamped folder of `opts.out_dir` and returns the report and that folder.
pub async fn run_drill(
    opts: &DrillOptions,
    cancel: &Cancel,
) -> anyhow::Result<(DrillReport, PathBuf)> {
    anyhow::ensure!(
        opts.observe >= Duration::from_secs(2),
        "watch at least 2 s after each restore (a one-second window must fit)"
    );
    let (now, run_dir, say) = start_run(&opts.out_dir, opts.quiet, "drill")?;
    let mut rig = Rig::start(&opts.rig, &run_dir.join("logs"), &say).await?;
    let machine = Machine::detect(Some(&rig.cluster));
    let traffic = Traffic::start(
        &rig.tier.entry_url(),
        opts.rig.products,
        opts.rate_per_sec,
        opts.workers,
    );
    say(&format!(
        "traffic: {} requests/s from {} workers through {}",
        opts.rate_per_sec,
        opts.workers,
        rig.tier.entry_url()
    ));
    // The first seconds open the API's pools and nginx's upstream connections.
    pause(cancel, Duration::from_secs(2)).await?;

    let mut results = Vec::new();
    for &fault in &opts.faults {
        let from = traffic.now_us();
        pause(cancel, opts.settle).await?;
        let baseline = measure::ok_rate(&traffic.events(), from, traffic.now_us());
        say(&format!("{}: inflicting", fault.name()));
        let done = faults::inflict(&mut rig, fault, &opts.holds, &traffic, cancel).await?;
        let node_serves = watch_node(&rig, &done, opts.observe, cancel).await?;
        let watched_for = Duration::from_micros(traffic.now_us() - done.restore_us);
        pause(cancel, opts.observe.saturating_sub(watched_for)).await?;
        let end = traffic.now_us();
        let result = judge(fault, &done, node_serves, baseline, &traffic.events(), end);
        say(&format!(
            "{}: {} requests, {} failed, longest gap {:.0} ms, recovery {} ms: {}",
            result.name,
            result.requests,
            result.failed_total(),
            result.longest_gap_ms,
            result
                .recovery_ms
                .map(|v| format!("{v:.0}"))
                .unwrap_or_else(|| "-".into()),
            result.verdict
        ));
        results.push(result);
    }
    traffic.stop().await;
    let report = DrillReport {
        started: now.format("%Y-%m-%d %H:%M:%S").to_string(),
        command: opts.command.clone(),
        machine,
        setup: DrillSetup {
            replicas: opts.rig.replicas,
            api_instances: opts.rig.api_instances,
            products: opts.rig.products,
            rate_per_sec: opts.rate_per_sec,
            workers: opts.workers,
            max_connections: opts.rig.max_connections,
            pool_size: opts.rig.pool_size,
            settle_secs: opts.settle.as_secs_f64(),
            hold_secs: opts.holds.hold.as_secs_f64(),
            saturation_secs: opts.holds.saturation.as_secs_f64(),
            observe_secs: opts.observe.as_secs_f64(),
        },
        target_met: results.iter().all(|r| r.meets_target),
        faults: results,
    };
    write_file(&run_dir.join("drill.json"), |w| {
        report::write_json(&report, w)
    })?;
    write_file(&run_dir.join("drill.md"), |w| {
        report::write_markdown(&report, w)
    })?;
    Ok((report, run_dir))
}

/// Poll the watched counter every 100 ms after the restore until it rises: how long after the
/// restore the node served again, or `None` within `observe`.
async fn watch_node(
    rig: &Rig,
    done: &Inflicted,
    observe: Duration,
    cancel: &Cancel,
) -> anyhow::Result<Option<Duration>> {
    let Some((watch, before)) = &done.watch else {
        return Ok(None);
    };
    let restored = std::time::Instant::now();
    while restored.elapsed() < observe {
        if rig.watch_value(watch).await > *before {
            return Ok(Some(restored.elapsed()));
        }
        pause(cancel, Duration::from_millis(100)).await?;
    }
    Ok(None)
}

fn judge(
    fault: Fault,
    done: &Inflicted,
    node_serves: Option<Duration>,
    baseline: f64,
    events: &[traffic::Event],
    end_us: u64,
) -> FaultResult {
    let counts = measure::count(events, done.start_us, end_us);
    let rate_back = measure::rate_back_after(events, done.restore_us, end_us, baseline);
    let round = |v: f64| round_to(v, 1);
    let mut result = FaultResult {
        name: fault.name().into(),
        action: done.action.clone(),
        no_replica_can_answer: fault.no_replica_can_answer(),
        fault_secs: round((done.restore_us - done.start_us) as f64 / 1e6),
        requests: counts.requests,
        ok: counts.ok,
        failed: counts.failed.clone(),
        failed_with_retry_after: counts.with_retry_after,
        slowest_failure_ms: counts.slowest_failure_ms.map(round),
        longest_gap_ms: round(counts.longest_gap_ms),
        baseline_ok_per_sec: round(baseline),
        rate_back_ms: rate_back.map(|us| round(us as f64 / 1000.0)),
        node_serves_ms: node_serves.map(|d| round(d.as_secs_f64() * 1000.0)),
        node_watched: done.watch.is_some(),
        recovery_ms: None,
        note: done.note.clone(),
        meets_target: false,
        verdict: String::new(),
    };
    result.judge();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_summed_over_instances_labels_matching_the_selector() {
        let text = "# TYPE api_replica_queries_total counter\n\
            api_replica_queries_total{replica=\"127.0.0.1:5433/related\"} 40\n\
            api_replica_queries_total{replica=\"127.0.0.1:5434/related\"} 7\n\
            api_replica_errors_total{replica=\"127.0.0.1:5433/related\"} 3\n";
        assert_eq!(
            sum_series(
                text,
                "api_replica_queries_total",
                "replica=\"127.0.0.1:5433/related\""
            ),
            40.0
        );
        assert_eq!(sum_series(text, "api_replica_queries_total", ""), 47.0);
        assert_eq!(sum_series(text, "api_requests_total", ""), 0.0);
    }
}

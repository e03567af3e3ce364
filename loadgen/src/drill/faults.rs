//! The faults a drill inflicts, each with its restore: servers crashed, frozen, restarted or
//! stopped through the `stack` library's fault calls ([`stack::Cluster::crash_node`] and
//! friends, the same that `loadgen kill|pause|stop|start NODE` use), an API instance killed and
//! started again where nginx expects it, a replica's connection slots filled, and a replica
//! saturated (its CPU budget cut while queries of our own compete for it).
//!
//! The `stack` calls that wait (a server's start or stop) block their thread; they run under
//! `block_in_place` so the traffic's workers keep their runtime threads meanwhile.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use stack::cgroup::Budget;

use super::traffic::Traffic;
use super::{pause, Rig};
use crate::cancel::Cancel;
use crate::topology::{ApiInstance, Budgeted};
use stack::PRIMARY;

/// One fault of the drill, in the order [`Fault::ALL`] runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// `kill -9` of a replica's postmaster; started again from its data after the hold.
    ReplicaKill,
    /// SIGSTOP of every process of a replica for the hold, then SIGCONT.
    ReplicaPause,
    /// A replica stopped gracefully and started again at once: is it used again?
    ReplicaRestart,
    /// `kill -9` of an API instance; started again on its address after the hold.
    ApiKill,
    /// The primary stopped for the hold (reads go on from the replicas), then started.
    PrimaryStop,
    /// A replica's connections opened up to `max_connections`, held, then closed.
    ReplicaConnectionsFull,
    /// A replica's CPU budget cut and competing scans run on it for the saturation time.
    ReplicaSaturation,
    /// Every replica killed for the hold: no replica can answer; then started again.
    AllReplicasDown,
}

impl Fault {
    pub const ALL: [Fault; 8] = [
        Fault::ReplicaKill,
        Fault::ReplicaPause,
        Fault::ReplicaRestart,
        Fault::ApiKill,
        Fault::PrimaryStop,
        Fault::ReplicaConnectionsFull,
        Fault::ReplicaSaturation,
        Fault::AllReplicasDown,
    ];

    /// The name `--faults` takes and the report shows.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::ReplicaKill => "replica-kill",
            Fault::ReplicaPause => "replica-pause",
            Fault::ReplicaRestart => "replica-restart",
            Fault::ApiKill => "api-kill",
            Fault::PrimaryStop => "primary-stop",
            Fault::ReplicaConnectionsFull => "replica-connections-full",
            Fault::ReplicaSaturation => "replica-saturation",
            Fault::AllReplicasDown => "all-replicas-down",
        }
    }

    /// Whether no replica can answer while it holds (503s are then the right answer).
    pub fn no_replica_can_answer(&self) -> bool {
        *self == Fault::AllReplicasDown
    }
}

/// How long faults hold.
#[derive(Debug, Clone, Copy)]
pub struct Holds {
    pub hold: Duration,
    pub saturation: Duration,
    /// CPU budget of the saturated replica, in cores.
    pub saturation_cpus: f64,
    /// Connections running scans on the saturated replica.
    pub saturation_scans: usize,
}

/// What to watch to see the restored node serve again.
#[derive(Debug, Clone)]
pub enum Watch {
    /// `api_replica_queries_total` of this replica label, summed over the API instances.
    Replica(String),
    /// This API instance's own answered requests.
    Api(SocketAddr),
}

/// A fault done and undone.
pub struct Inflicted {
    pub start_us: u64,
    pub restore_us: u64,
    pub action: String,
    pub note: String,
    /// With the watched counter's value just before the restore.
    pub watch: Option<(Watch, f64)>,
}

/// Run `fault` on `rig` under `traffic`: inflict, hold, restore. Returns once the node is back.
pub async fn inflict(
    rig: &mut Rig,
    fault: Fault,
    holds: &Holds,
    traffic: &Traffic,
    cancel: &Cancel,
) -> anyhow::Result<Inflicted> {
    let replicas = rig.cluster.replica_indexes();
    let target = replicas[0];
    let name = rig.cluster.nodes()[target].name.clone();
    let label = rig.replica_label(target);
    let hold = holds.hold;
    let secs = hold.as_secs_f64();
    let start_us = traffic.now_us();
    let mut note = String::new();
    let (action, watch) = match fault {
        Fault::ReplicaKill => {
            let pid = rig.cluster.crash_node(target)?;
            pause(cancel, hold).await?;
            let before = rig.watch_value(&Watch::Replica(label.clone())).await;
            tokio::task::block_in_place(|| rig.cluster.start_node(target))?;
            note = format!("postmaster pid {pid}");
            (
                format!("kill -9 of {name}, down {secs} s, started from its data"),
                Some((Watch::Replica(label), before)),
            )
        }
        Fault::ReplicaPause => {
            let count = rig.cluster.pause_node(target)?;
            pause(cancel, hold).await?;
            let before = rig.watch_value(&Watch::Replica(label.clone())).await;
            rig.cluster.resume_node(target)?;
            note = format!("{count} processes");
            (
                format!("SIGSTOP of {name} for {secs} s, then SIGCONT"),
                Some((Watch::Replica(label), before)),
            )
        }
        Fault::ReplicaRestart => {
            tokio::task::block_in_place(|| rig.cluster.stop_node(target));
            let before = rig.watch_value(&Watch::Replica(label.clone())).await;
            tokio::task::block_in_place(|| rig.cluster.start_node(target))?;
            (
                format!("{name} stopped (fast shutdown) and started at once"),
                Some((Watch::Replica(label), before)),
            )
        }
        Fault::ApiKill => {
            let instance = &rig.tier.instances[0];
            let (addr, admin) = (instance.addr, instance.admin_addr);
            let _ = kill(Pid::from_raw(instance.pid()), Signal::SIGKILL);
            pause(cancel, hold).await?;
            let restarted = ApiInstance::start_at(
                &rig.launch,
                &rig.logs.join("api-0-restarted.log"),
                addr,
                admin,
            )
            .await?;
            // The killed one is reaped as it drops.
            rig.tier.instances[0] = restarted;
            (
                format!(
                    "kill -9 of API instance 1 of {}, down {secs} s, started again on its address",
                    rig.tier.instances.len()
                ),
                Some((Watch::Api(admin), 0.0)),
            )
        }
        Fault::PrimaryStop => {
            tokio::task::block_in_place(|| rig.cluster.stop_node(PRIMARY));
            pause(cancel, hold).await?;
            tokio::task::block_in_place(|| rig.cluster.start_node(PRIMARY))?;
            (format!("primary stopped for {secs} s, then started"), None)
        }
        Fault::ReplicaConnectionsFull => {
            let (held, why) = fill_connections(rig, target).await;
            pause(cancel, hold).await?;
            let before = rig.watch_value(&Watch::Replica(label.clone())).await;
            let count = held.len();
            drop(held);
            note = format!(
                "{count} connections opened until refused: {why}; max_connections {}",
                rig.max_connections
            );
            (
                format!("{name}'s connection slots filled for {secs} s, then released"),
                Some((Watch::Replica(label), before)),
            )
        }
        Fault::ReplicaSaturation => {
            let pid = rig
                .cluster
                .pid(target)
                .ok_or_else(|| anyhow::anyhow!("{name} is not running"))?;
            let budget = Budget {
                cpus: Some(holds.saturation_cpus),
                memory_mb: None,
            };
            let budgeted = Budgeted::apply("drill-saturated", pid, budget);
            let mut scans = Vec::new();
            for _ in 0..holds.saturation_scans {
                let client = rig.cluster.connect(target).await?;
                scans.push(tokio::spawn(async move {
                    loop {
                        if client
                            .simple_query("SELECT count(*), sum(related_id) FROM related_items")
                            .await
                            .is_err()
                        {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }));
            }
            pause(cancel, holds.saturation).await?;
            let before = rig.watch_value(&Watch::Replica(label.clone())).await;
            let enforced = budgeted.state.unbudgeted_reason.clone();
            drop(budgeted);
            for scan in &scans {
                scan.abort();
            }
            note = match enforced {
                None => format!(
                    "CPU budget {} core and {} competing scans",
                    holds.saturation_cpus, holds.saturation_scans
                ),
                Some(why) => format!(
                    "no CPU budget ({why}): {} competing scans only",
                    holds.saturation_scans
                ),
            };
            (
                format!("{name} saturated for {} s", holds.saturation.as_secs_f64()),
                Some((Watch::Replica(label), before)),
            )
        }
        Fault::AllReplicasDown => {
            for &r in &replicas {
                rig.cluster.crash_node(r)?;
            }
            pause(cancel, hold).await?;
            let before = rig.watch_value(&Watch::Replica(label.clone())).await;
            tokio::task::block_in_place(|| rig.cluster.start_node(target))?;
            let restore_us = traffic.now_us();
            let started = Instant::now();
            for &r in &replicas[1..] {
                tokio::task::block_in_place(|| rig.cluster.start_node(r))?;
            }
            note = format!(
                "the others started {} ms after it",
                started.elapsed().as_millis()
            );
            return Ok(Inflicted {
                start_us,
                restore_us,
                action: format!(
                    "kill -9 of all {} replicas, down {secs} s; {name} started first",
                    replicas.len()
                ),
                note,
                watch: Some((Watch::Replica(label), before)),
            });
        }
    };
    Ok(Inflicted {
        start_us,
        restore_us: traffic.now_us(),
        action,
        note,
        watch,
    })
}

/// Open superuser connections to `node` until the server refuses one; returns them and the
/// refusal (superusers may use the slots reserved for them, so every slot is taken).
async fn fill_connections(rig: &Rig, node: usize) -> (Vec<tokio_postgres::Client>, String) {
    let mut held = Vec::new();
    let limit = rig.max_connections as usize + 10;
    while held.len() < limit {
        match rig.cluster.connect(node).await {
            Ok(client) => held.push(client),
            Err(e) => {
                // The server's own words are at the end of the chain ("db error" says nothing).
                let mut text = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    text = format!("{text}: {s}");
                    source = s.source();
                }
                let text = stack::redact_url(&text);
                let why = if text.contains("too many clients") {
                    "\"too many clients already\"".to_string()
                } else {
                    text
                };
                return (held, why);
            }
        }
    }
    (held, format!("still accepting after {limit}"))
}

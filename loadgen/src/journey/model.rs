//! What a journey measured: the components it names, each stage's result (topology, load,
//! index probe, CPU per component, verdict, the write peak's figures) and the whole report. Plain data that serialises to
//! `journey.json`; the runner fills it, [`super::verdict`] judges it and [`super::report`]
//! renders it, and neither of those needs anything else of the journey.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use stack::nginx::NginxErrors;

use super::machine::Machine;
use crate::index_probe::IndexProbe;
use crate::scenario::LoadResult;
use crate::topology::BudgetState;

/// What a stage does.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StageKind {
    /// Single timed queries and EXPLAIN ANALYZE without and with the B-tree index.
    Index,
    #[default]
    Load,
}

/// nginx in front of the API instances, or not.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NginxMode {
    #[default]
    Off,
    Untuned,
    Tuned,
}

impl NginxMode {
    /// The word the journey file, the CSV and the Markdown use.
    pub fn name(self) -> &'static str {
        match self {
            NginxMode::Off => "off",
            NginxMode::Untuned => "untuned",
            NginxMode::Tuned => "tuned",
        }
    }
}

/// Where a stage's API instances read from.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ServeFrom {
    /// The stage's replicas: the read copies of the story's last steps.
    #[default]
    Replicas,
    /// The primary alone, the only server the API knows: reads and writes on one database, the
    /// state the story's CQRS chapter started from.
    Primary,
    /// The primary and the stage's replicas: with no writes to keep away from, the primary is one
    /// more read copy of the same size, and the data is held once less than with a replica more
    /// (what lets the full 170M rows fit 60 GB of disk).
    All,
}

impl ServeFrom {
    pub fn is_replicas(&self) -> bool {
        *self == ServeFrom::Replicas
    }

    /// Whether the primary answers reads.
    pub fn includes_primary(&self) -> bool {
        matches!(self, ServeFrom::Primary | ServeFrom::All)
    }
}

/// A part of a stage that can be its bottleneck. Its [`name`](Component::name) is the one
/// spelling of it in `journey.json`, `stages.csv`, `journey.md` and the verdicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    /// The serving replicas, together.
    Database,
    /// The API instances, together.
    Api,
    Nginx,
    /// This process, which sends the load.
    LoadGenerator,
    /// The machine's CPU as a whole, when no component is at its own limit.
    Machine,
}

impl Component {
    pub const ALL: [Component; 5] = [
        Component::Database,
        Component::Api,
        Component::Nginx,
        Component::LoadGenerator,
        Component::Machine,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Component::Database => "database",
            Component::Api => "api",
            Component::Nginx => "nginx",
            Component::LoadGenerator => "load generator",
            Component::Machine => "machine CPU",
        }
    }

    pub fn from_name(name: &str) -> Option<Component> {
        Component::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl std::fmt::Display for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Component {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Component {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Component::from_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown component {name:?}")))
    }
}

/// CPU one component used in the measured window, against its limit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ComponentCpu {
    pub component: Component,
    pub cpu_secs: f64,
    /// Cores it may use: its budget, or the machine's cores when unbudgeted.
    pub limit_cores: f64,
    pub budgeted: bool,
    /// cpu_secs / (window x limit_cores).
    pub utilization: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StageTopology {
    pub replicas: usize,
    pub api_instances: usize,
    pub nginx: NginxMode,
    pub cache: bool,
    pub users: usize,
    pub ids: String,
    pub db_budget: BudgetState,
    pub api_budget: BudgetState,
    /// False when any budget the stage asked for could not be enforced.
    pub budgeted: bool,
    /// Where the API read from; absent in the JSON for the replicas, as before it existed.
    #[serde(default, skip_serializing_if = "ServeFrom::is_replicas")]
    pub serve_from: ServeFrom,
    /// Each API instance's `--batch-max`; 1 (one query per request) in reports from before it
    /// existed.
    #[serde(default = "batching_off")]
    pub batch_max: u32,
}

fn batching_off() -> u32 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StageResult {
    pub number: usize,
    pub name: String,
    pub note: String,
    pub kind: StageKind,
    pub topology: Option<StageTopology>,
    pub load: Option<LoadResult>,
    pub index: Option<IndexProbe>,
    pub cpu: Vec<ComponentCpu>,
    pub machine_cpu_utilization: f64,
    pub nginx_errors: Option<NginxErrors>,
    /// The limiting component's name (or "database (no index)" for the index stage).
    pub bottleneck: String,
    pub verdict: String,
    pub goose_report: Option<String>,
    /// Whether the stage has the shape the story expects of it (see [`super::shape`]); `None`
    /// when the journey states no expectation for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<ShapeCheck>,
    /// CPU microseconds per request each component spent in the measured window: what the
    /// capacity plan's costs (`[capacity]`) are checked against.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub cost_us: std::collections::BTreeMap<String, f64>,
    /// The API instances' own counters (retries, bans, deadlines, pool waits, cache hits...),
    /// summed over the instances, scraped from their operator listeners after the load.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub api_counters: std::collections::BTreeMap<String, f64>,
    /// What the stage's write peak did on the primary and how far the replicas fell behind
    /// replaying it; `None` for a stage without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_peak: Option<WritePeakResult>,
    /// Whether the serving databases' data fitted their memory: buffer hits, reads from disk and
    /// memory held, over the stage's load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_memory: Option<DatabaseMemory>,
    /// Disk the journey's servers held at the end of the stage, MB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_used_mb: Option<f64>,
}

/// How the serving databases' data met their memory during a stage, summed over them: what
/// tells a memory limit (reads waiting on the disk) from a CPU one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DatabaseMemory {
    /// One copy of the database, MB (`pg_database_size`).
    pub data_mb: f64,
    /// Blocks found in shared buffers and blocks read from outside them (the page cache or the
    /// disk), `pg_stat_database`, over the stage's load with its warm-up.
    pub blocks_hit: u64,
    pub blocks_read: u64,
    /// blocks_hit / (blocks_hit + blocks_read); `None` without any block access.
    pub buffer_hit_share: Option<f64>,
    /// Bytes the serving servers read from the disk itself (`read_bytes` of /proc/PID/io) in
    /// the measured window, MB, and per request in 8 KiB blocks.
    pub disk_read_mb: f64,
    pub disk_reads_per_request: f64,
    /// Memory the serving servers' groups held at the end of the load, and the page cache in
    /// it, MB summed; the memory budget of each, MB. `None` where not measurable.
    pub memory_used_mb: Option<f64>,
    pub page_cache_mb: Option<f64>,
    pub memory_limit_mb: Option<u64>,
    /// True when requests waited on the disk often enough to limit the stage (see
    /// [`DatabaseMemory::MEMORY_BOUND_READS`]).
    pub memory_bound: bool,
}

impl DatabaseMemory {
    /// Disk reads per request from which the data's fit in memory, not CPU, is said to limit
    /// the databases: at one read every other request a 1/4-core host at a few hundred
    /// requests/s already waits on the disk more than it computes.
    pub const MEMORY_BOUND_READS: f64 = 0.5;

    /// The sentence added to the stage's verdict.
    pub fn sentence(&self) -> String {
        let hits = self
            .buffer_hit_share
            .map_or("no block accesses".to_string(), |h| {
                format!("{:.2}% buffer hits", h * 100.0)
            });
        let held = match (self.memory_used_mb, self.memory_limit_mb) {
            (Some(used), Some(limit)) => format!(", {used:.0} MB held (limit {limit} MB each)"),
            (Some(used), None) => format!(", {used:.0} MB held"),
            _ => String::new(),
        };
        format!(
            "Memory: {:.0} MB of data per copy, {hits}, {:.2} disk reads per request{held}: {}.",
            self.data_mb,
            self.disk_reads_per_request,
            if self.memory_bound {
                "the data does not fit, memory limits it"
            } else {
                "the data fits, memory does not limit it"
            }
        )
    }
}

/// A stage's write peak (`write_peak` in the journey file, run by `seeder write`'s library on
/// the primary): the writes done, the primary's CPU, and the replicas' replay lag, over the
/// stage's measured window unless said otherwise.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WritePeakResult {
    /// Transactions per second asked of the writer, and its connections.
    pub tx_per_sec_asked: f64,
    pub connections: usize,
    /// Committed transactions, and per second: under the rate asked when the primary could
    /// not keep up.
    pub transactions: u64,
    pub tx_per_sec: f64,
    /// Rows deleted, inserted and updated, and per second.
    pub rows_written: u64,
    pub rows_per_sec: f64,
    /// Rows the writer wrote over its whole run (warm-up included), and the rows the primary's
    /// own statistics (`pg_stat_database`: inserted + updated + deleted) counted over that run:
    /// that the writes reached the primary, as the server saw them.
    pub total_rows_written: u64,
    pub primary_rows_changed: Option<u64>,
    /// The primary's CPU time over its limit (its budget, or the machine's cores).
    pub primary_cpu_utilization: f64,
    /// Replicas whose replay was sampled (every 250 ms), and the samples in the window.
    pub replicas_sampled: usize,
    pub lag_samples: usize,
    /// How long ago the primary had written what the slowest replica had replayed, per sample:
    /// median and max, milliseconds. `None` without samples.
    pub replay_lag_ms_median: Option<f64>,
    pub replay_lag_ms_max: Option<f64>,
    /// The same in WAL bytes not yet replayed.
    pub replay_lag_bytes_median: Option<u64>,
    pub replay_lag_bytes_max: Option<u64>,
}

impl WritePeakResult {
    /// The sentence added to the stage's verdict.
    pub fn sentence(&self) -> String {
        let lag = match (self.replay_lag_ms_median, self.replay_lag_ms_max) {
            (Some(median), Some(max)) => format!(
                "replica replay lag median {median:.0} ms, max {max:.0} ms ({} samples)",
                self.lag_samples
            ),
            _ => "no replica lag sampled".to_string(),
        };
        format!(
            "Write peak: {:.0} tx/s of {} asked ({:.0} rows/s), primary CPU {:.0}% of its limit; {lag}.",
            self.tx_per_sec,
            self.tx_per_sec_asked,
            self.rows_per_sec,
            self.primary_cpu_utilization * 100.0
        )
    }
}

/// One stage's shape check: what the story expects of it and whether the run held to it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShapeCheck {
    pub holds: bool,
    /// Each expectation, with what was measured, e.g. "x1.93 of stage 5 (>= 1.7): holds".
    pub findings: Vec<ShapeFinding>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShapeFinding {
    pub holds: bool,
    pub text: String,
}

impl StageResult {
    /// Lookups answered per query of the related-items SQL over the stage (warm-up included),
    /// from the instances' `api_batch_size` histogram: 1 when nothing was batched.
    pub fn lookups_per_query(&self) -> Option<f64> {
        let queries = *self.api_counters.get("api_batch_size_count")?;
        let lookups = *self.api_counters.get("api_batch_size_sum")?;
        (queries > 0.0).then(|| lookups / queries)
    }

    /// The utilization of `component` in this stage, if it was measured.
    pub fn utilization(&self, component: Component) -> Option<f64> {
        self.cpu
            .iter()
            .find(|c| c.component == component)
            .map(|c| c.utilization)
    }
}

/// Everything a journey run measured: what `journey.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JourneyReport {
    pub journey: String,
    pub started_at: String,
    pub machine: Machine,
    pub products: u64,
    pub relation_rows: u64,
    pub seed_secs: f64,
    pub stages: Vec<StageResult>,
    pub command: String,
    /// How the budgets were fitted to the machine before the first stage (see
    /// [`super::capacity`]); `None` for a journey that keeps its budgets as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<super::capacity::CapacityPlan>,
    /// Whether every stage that states an expectation held to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape_holds: Option<bool>,
    /// The disk the journey said it needs before starting, and the most its servers held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<super::disk::DiskUse>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_serialise_by_their_one_name() {
        for c in Component::ALL {
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{c}\""));
            assert_eq!(serde_json::from_str::<Component>(&json).unwrap(), c);
        }
        assert_eq!(Component::LoadGenerator.to_string(), "load generator");
        assert!(serde_json::from_str::<Component>("\"disk\"").is_err());
    }

    #[test]
    fn nginx_modes_are_named_as_serde_spells_them() {
        for m in [NginxMode::Off, NginxMode::Untuned, NginxMode::Tuned] {
            assert_eq!(
                serde_json::to_string(&m).unwrap(),
                format!("\"{}\"", m.name())
            );
        }
    }
}

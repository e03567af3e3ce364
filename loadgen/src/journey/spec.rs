//! The journey file and the plan made from it. [`JourneyFile`] is the TOML as written (stages,
//! data, load defaults); [`JourneyPlan::resolve`] applies the command line's overrides
//! (`--products`, `--duration-secs`, `--users`) and the file's defaults once, so every stage
//! of the runner reads final values from its [`StagePlan`] and no precedence rule is repeated.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use stack::cgroup::Budget;

use super::capacity::CapacitySpec;
use super::model::{NginxMode, ServeFrom, StageKind};
use super::shape::Expectation;
use crate::ids::IdDistribution;

/// The journey shipped with the project: the story's stages and one past them.
pub const DEFAULT_JOURNEY: &str = include_str!("../../journeys/default.toml");

/// The second committed journey: the story's CQRS chapter, reads on the primary and on a replica
/// while the primary takes a write peak (`loadgen journey --file loadgen/journeys/write-peak.toml`).
pub const WRITE_PEAK_JOURNEY: &str = include_str!("../../journeys/write-peak.toml");

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JourneyFile {
    pub name: String,
    #[serde(default)]
    pub data: DataSpec,
    #[serde(default)]
    pub defaults: LoadDefaults,
    /// How the CPU budgets are fitted to the machine; absent: kept as written.
    #[serde(default)]
    pub capacity: Option<CapacitySpec>,
    #[serde(rename = "stage")]
    pub stages: Vec<StageSpec>,
}

impl JourneyFile {
    /// Parse and check a journey file; `origin` (its path) starts every error message.
    pub fn parse(text: &str, origin: &str) -> anyhow::Result<JourneyFile> {
        let file: JourneyFile =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        if file.stages.is_empty() {
            anyhow::bail!("{origin}: a journey needs at least one [[stage]]");
        }
        check_batch_max(file.defaults.batch_max)
            .map_err(|e| anyhow::anyhow!("{origin}: [defaults] {e}"))?;
        for (i, s) in file.stages.iter().enumerate() {
            if let Some(b) = s.batch_max {
                check_batch_max(b)
                    .map_err(|e| anyhow::anyhow!("{origin}: stage {} ({}): {e}", i + 1, s.name))?;
            }
            // A stage reading from the primary may have no replica at all.
            let no_replica = s.replicas == 0 && s.serve_from == ServeFrom::Replicas;
            if s.kind == StageKind::Load && (no_replica || s.api_instances == 0) {
                anyhow::bail!(
                    "{origin}: stage {} ({}) needs at least one replica and one API instance",
                    i + 1,
                    s.name
                );
            }
            if let Some(peak) = &s.write_peak {
                let checked = if s.kind == StageKind::Load {
                    peak.validate()
                } else {
                    Err("write_peak runs next to a load: it needs a load stage".into())
                };
                checked
                    .map_err(|e| anyhow::anyhow!("{origin}: stage {} ({}): {e}", i + 1, s.name))?;
            }
            if let Some(expect) = &s.expect {
                expect
                    .validate(i + 1)
                    .map_err(|e| anyhow::anyhow!("{origin}: stage {} ({}): {e}", i + 1, s.name))?;
            }
        }
        Ok(file)
    }
}

/// The API's `--batch-max` in every stage unless the file says otherwise: the size that served
/// the most in `scripts/bench-batch` (results/api.md, "Batching").
pub const DEFAULT_BATCH_MAX: u32 = 16;

/// `batch_max` within the API's own `--batch-max` range.
fn check_batch_max(b: u32) -> Result<(), String> {
    let range = api::config::limits::BATCH_MAX;
    if range.contains(&(b as usize)) {
        Ok(())
    } else {
        Err(format!(
            "batch_max = {b} is out of range (1 to {}; 1 turns batching off)",
            range.end()
        ))
    }
}

/// The data every stage reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSpec {
    pub products: u64,
    pub per_product: u32,
    pub seed: u64,
    /// shared_buffers of each PostgreSQL server, MiB.
    pub shared_buffers_mb: u32,
}

impl Default for DataSpec {
    fn default() -> Self {
        Self {
            products: 100_000,
            per_product: 16,
            seed: 42,
            shared_buffers_mb: 128,
        }
    }
}

/// Load settings a stage inherits unless it sets its own.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoadDefaults {
    pub users: usize,
    pub warmup_secs: u64,
    pub duration_secs: u64,
    pub unknown_share: f64,
    pub pool_size: u32,
    /// Each API instance's `--batch-max`: lookups one query may answer when requests wait for
    /// a connection (1: one query per request).
    pub batch_max: u32,
    pub ids: IdDistribution,
}

impl Default for LoadDefaults {
    fn default() -> Self {
        Self {
            users: 64,
            warmup_secs: 3,
            duration_secs: 20,
            unknown_share: 0.01,
            pool_size: 8,
            batch_max: DEFAULT_BATCH_MAX,
            ids: IdDistribution::Uniform,
        }
    }
}

/// One `[[stage]]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    pub name: String,
    /// What this stage changes, in the story's words.
    #[serde(default)]
    pub note: String,
    #[serde(default)]
    pub kind: StageKind,
    #[serde(default = "one")]
    pub replicas: usize,
    #[serde(default = "one")]
    pub api_instances: usize,
    #[serde(default)]
    pub nginx: NginxMode,
    #[serde(default)]
    pub cache: bool,
    #[serde(default = "default_cache_capacity")]
    pub cache_capacity: u64,
    /// Budget of each serving replica.
    #[serde(default)]
    pub db_budget: Budget,
    /// Budget of each API instance.
    #[serde(default)]
    pub api_budget: Budget,
    pub users: Option<usize>,
    pub duration_secs: Option<u64>,
    pub ids: Option<IdDistribution>,
    /// Connections of each API instance's pool per replica, else the file's default.
    pub pool_size: Option<u32>,
    /// Each API instance's `--batch-max`, else the file's default.
    pub batch_max: Option<u32>,
    /// What the story expects of this stage relative to an earlier one.
    pub expect: Option<Expectation>,
    /// Where the API reads from: the stage's replicas (the default) or the primary alone.
    #[serde(default)]
    pub serve_from: ServeFrom,
    /// Writes on the primary while the load runs.
    pub write_peak: Option<WritePeak>,
}

/// A write peak on the primary during a load stage, `write_peak = { tx_per_sec = 300,
/// connections = 4 }`: `seeder write`'s workload (each transaction rewrites one product's
/// related list and price) from before the warm-up to the end of the measured window. The rate
/// is in transactions per second as written: the capacity plan scales CPU budgets, not this.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WritePeak {
    pub tx_per_sec: f64,
    #[serde(default = "default_write_connections")]
    pub connections: usize,
}

impl WritePeak {
    /// The seeder's own bounds, so a journey file hears of a bad value before anything starts.
    pub fn validate(&self) -> Result<(), String> {
        seeder::writes::check_tx_per_sec(self.tx_per_sec)?;
        seeder::writes::check_connections(self.connections)
    }
}

fn default_write_connections() -> usize {
    4
}

fn one() -> usize {
    1
}
fn default_cache_capacity() -> u64 {
    100_000
}

/// What the command line overrides in every journey file: `None` keeps the file's value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// `--products`: products to seed.
    pub products: Option<u64>,
    /// `--duration-secs`: measured seconds of every load stage.
    pub duration_secs: Option<u64>,
    /// `--users`: simulated users of every load stage.
    pub users: Option<usize>,
}

/// A journey with every value final: the file's defaults and the command line applied.
#[derive(Debug, Clone, PartialEq)]
pub struct JourneyPlan {
    pub name: String,
    /// Products to seed: `--products`, else the file's `[data] products`.
    pub products: u64,
    pub per_product: u32,
    pub seed: u64,
    pub shared_buffers_mb: u32,
    /// Seed without the relation index: the first stage measures the query without it.
    pub seed_without_index: bool,
    pub warmup: Duration,
    pub unknown_share: f64,
    /// The file's `[capacity]`: budgets are fitted to the machine before the first stage.
    pub capacity: Option<CapacitySpec>,
    pub stages: Vec<StagePlan>,
}

/// One stage with its final values.
#[derive(Debug, Clone, PartialEq)]
pub struct StagePlan {
    /// 1-based, as reported.
    pub number: usize,
    pub name: String,
    pub note: String,
    pub kind: StageKind,
    pub replicas: usize,
    pub api_instances: usize,
    pub nginx: NginxMode,
    /// Whether the stage turns the API's response cache on.
    pub cache: bool,
    /// Capacity of each API instance's response cache; 0 when the stage has the cache off.
    pub cache_capacity: u64,
    pub db_budget: Budget,
    pub api_budget: Budget,
    /// `--users`, else the stage's `users`, else the file's default.
    pub users: usize,
    /// `--duration-secs`, else the stage's `duration_secs`, else the file's default.
    pub duration: Duration,
    /// The stage's `ids`, else the file's default.
    pub ids: IdDistribution,
    /// Connections of each API instance's pool per replica: the stage's, else the default.
    pub pool_size: u32,
    /// Each API instance's `--batch-max`: the stage's, else the default.
    pub batch_max: u32,
    pub expect: Option<Expectation>,
    pub serve_from: ServeFrom,
    pub write_peak: Option<WritePeak>,
}

impl StagePlan {
    /// Database servers that answer the API's reads: the primary alone, or the replicas.
    pub fn serving_count(&self) -> usize {
        match self.serve_from {
            ServeFrom::Primary => 1,
            ServeFrom::Replicas => self.replicas,
            ServeFrom::All => self.replicas + 1,
        }
    }
}

impl JourneyPlan {
    /// Apply `overrides` and the file's defaults to every stage (the command line first, then the
    /// stage's own value, then `[defaults]`).
    pub fn resolve(file: &JourneyFile, overrides: &Overrides) -> JourneyPlan {
        let defaults = &file.defaults;
        let stages = file
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| StagePlan {
                number: i + 1,
                name: s.name.clone(),
                note: s.note.clone(),
                kind: s.kind,
                replicas: s.replicas,
                api_instances: s.api_instances,
                nginx: s.nginx,
                cache: s.cache,
                cache_capacity: if s.cache { s.cache_capacity } else { 0 },
                db_budget: s.db_budget,
                api_budget: s.api_budget,
                users: overrides.users.or(s.users).unwrap_or(defaults.users),
                duration: Duration::from_secs(
                    overrides
                        .duration_secs
                        .or(s.duration_secs)
                        .unwrap_or(defaults.duration_secs),
                ),
                ids: s.ids.unwrap_or(defaults.ids),
                pool_size: s.pool_size.unwrap_or(defaults.pool_size),
                batch_max: s.batch_max.unwrap_or(defaults.batch_max),
                expect: s.expect.clone(),
                serve_from: s.serve_from,
                write_peak: s.write_peak,
            })
            .collect();
        JourneyPlan {
            name: file.name.clone(),
            products: overrides.products.unwrap_or(file.data.products),
            per_product: file.data.per_product,
            seed: file.data.seed,
            shared_buffers_mb: file.data.shared_buffers_mb,
            seed_without_index: file.stages.first().map(|s| s.kind) == Some(StageKind::Index),
            warmup: Duration::from_secs(defaults.warmup_secs),
            unknown_share: defaults.unknown_share,
            capacity: file.capacity.clone(),
            stages,
        }
    }

    /// Relation rows the seeded data holds.
    pub fn relation_rows(&self) -> u64 {
        self.products * self.per_product as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
name = "t"

[data]
products = 5000

[defaults]
users = 10
duration_secs = 7
ids = { zipf = 1.0 }

[[stage]]
name = "index"
kind = "index"

[[stage]]
name = "own values"
users = 20
duration_secs = 9
ids = "uniform"
cache = true
cache_capacity = 500
nginx = "tuned"
db_budget = { cpus = 0.5, memory_mb = 512 }

[[stage]]
name = "defaults"
replicas = 3
"#;

    fn parse(text: &str) -> anyhow::Result<JourneyFile> {
        JourneyFile::parse(text, "test.toml")
    }

    #[test]
    fn the_default_journey_parses_into_its_seven_stages() {
        let file = JourneyFile::parse(DEFAULT_JOURNEY, "default journey").unwrap();
        let plan = JourneyPlan::resolve(&file, &Overrides::default());
        assert_eq!(plan.stages.len(), 7);
        assert!(plan.seed_without_index);
        assert_eq!(plan.stages[0].kind, StageKind::Index);
        assert!(plan.stages[1..].iter().all(|s| s.kind == StageKind::Load));
        let numbers: Vec<usize> = plan.stages.iter().map(|s| s.number).collect();
        assert_eq!(numbers, [1, 2, 3, 4, 5, 6, 7]);
        let batches: Vec<u32> = plan.stages[1..].iter().map(|s| s.batch_max).collect();
        assert_eq!(
            batches,
            [1, 1, 1, 16, 16, 16],
            "the small host one product at a time"
        );
    }

    #[test]
    fn without_overrides_a_stage_value_beats_the_files_default() {
        let plan = JourneyPlan::resolve(&parse(FILE).unwrap(), &Overrides::default());
        assert_eq!(plan.products, 5000);
        assert_eq!(plan.relation_rows(), 5000 * 16);
        let own = &plan.stages[1];
        assert_eq!(own.users, 20);
        assert_eq!(own.duration, Duration::from_secs(9));
        assert_eq!(own.ids, IdDistribution::Uniform);
        assert_eq!(own.cache_capacity, 500);
        assert_eq!(own.nginx, NginxMode::Tuned);
        assert_eq!(own.db_budget.cpus, Some(0.5));
        let defaults = &plan.stages[2];
        assert_eq!(defaults.users, 10);
        assert_eq!(defaults.duration, Duration::from_secs(7));
        assert_eq!(defaults.ids, IdDistribution::Zipf(1.0));
        assert_eq!((defaults.replicas, defaults.api_instances), (3, 1));
        assert!(own.cache);
        assert!(
            !defaults.cache,
            "the cache is off unless a stage turns it on"
        );
        assert_eq!(defaults.cache_capacity, 0, "and the API gets no cache");
        assert_eq!(defaults.nginx, NginxMode::Off);
        assert_eq!(plan.warmup, Duration::from_secs(3));
        assert_eq!(plan.stages[2].pool_size, 8);
        assert_eq!(plan.stages[2].batch_max, DEFAULT_BATCH_MAX);
    }

    #[test]
    fn batching_is_on_by_default_and_a_stage_or_the_file_can_set_it() {
        let file = parse(
            "name = \"b\"\n[defaults]\nbatch_max = 4\n\
             [[stage]]\nname = \"own\"\nbatch_max = 1\n[[stage]]\nname = \"inherits\"\n",
        )
        .unwrap();
        let plan = JourneyPlan::resolve(&file, &Overrides::default());
        assert_eq!((plan.stages[0].batch_max, plan.stages[1].batch_max), (1, 4));
        let plain = parse("name = \"p\"\n[[stage]]\nname = \"s\"\n").unwrap();
        let plan = JourneyPlan::resolve(&plain, &Overrides::default());
        assert_eq!(plan.stages[0].batch_max, 16);
        for (text, says) in [
            (
                "name = \"x\"\n[defaults]\nbatch_max = 0\n[[stage]]\nname = \"s\"\n",
                "[defaults] batch_max = 0 is out of range",
            ),
            (
                "name = \"x\"\n[[stage]]\nname = \"s\"\nbatch_max = 1001\n",
                "stage 1 (s): batch_max = 1001 is out of range",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.starts_with("test.toml: ") && e.contains(says), "{e}");
        }
    }

    #[test]
    fn the_command_line_beats_the_stage_and_the_file() {
        let overrides = Overrides {
            products: Some(700),
            duration_secs: Some(2),
            users: Some(3),
        };
        let plan = JourneyPlan::resolve(&parse(FILE).unwrap(), &overrides);
        assert_eq!(plan.products, 700);
        for s in &plan.stages {
            assert_eq!(s.users, 3, "{}", s.name);
            assert_eq!(s.duration, Duration::from_secs(2), "{}", s.name);
        }
        assert_eq!(
            plan.stages[1].ids,
            IdDistribution::Uniform,
            "no flag for ids"
        );
    }

    #[test]
    fn the_relation_index_is_seeded_unless_the_first_stage_measures_it() {
        let file = parse(
            "name = \"x\"\n[[stage]]\nname = \"a\"\n[[stage]]\nname = \"i\"\nkind = \"index\"\n",
        )
        .unwrap();
        assert!(!JourneyPlan::resolve(&file, &Overrides::default()).seed_without_index);
    }

    #[test]
    fn a_write_peak_and_primary_reads_are_resolved_into_the_plan() {
        let plan = JourneyPlan::resolve(
            &parse(
                "name = \"w\"\n\
                 [[stage]]\nname = \"primary\"\nserve_from = \"primary\"\nreplicas = 0\n\
                 write_peak = { tx_per_sec = 250.5 }\n\
                 [[stage]]\nname = \"replica\"\nwrite_peak = { tx_per_sec = 10, connections = 2 }\n\
                 [[stage]]\nname = \"plain\"\nreplicas = 2\n",
            )
            .unwrap(),
            &Overrides::default(),
        );
        let [primary, replica, plain] = &plan.stages[..] else {
            panic!("three stages");
        };
        assert_eq!(primary.serve_from, ServeFrom::Primary);
        assert_eq!(
            primary.write_peak,
            Some(WritePeak {
                tx_per_sec: 250.5,
                connections: 4
            }),
            "four connections unless set"
        );
        assert_eq!(primary.serving_count(), 1, "the primary alone serves");
        assert_eq!(replica.serve_from, ServeFrom::Replicas);
        assert_eq!(replica.write_peak.map(|w| w.connections), Some(2));
        assert_eq!((plain.write_peak, plain.serving_count()), (None, 2));
        assert!(!plan.seed_without_index);
    }

    #[test]
    fn write_peaks_out_of_bounds_or_on_an_index_stage_are_refused() {
        for (peak, says) in [
            ("{ tx_per_sec = 0 }", "write rate"),
            ("{ tx_per_sec = 1e9 }", "write rate"),
            ("{ tx_per_sec = 10, connections = 0 }", "connections"),
            ("{ tx_per_sec = 10, connections = 65 }", "connections"),
            ("{ tx_per_sec = 10, speed = 2 }", "speed"),
        ] {
            let e = parse(&format!(
                "name = \"x\"\n[[stage]]\nname = \"a\"\nwrite_peak = {peak}\n"
            ))
            .unwrap_err();
            assert!(e.to_string().contains(says), "{peak}: {e}");
        }
        let e = parse(
            "name = \"x\"\n[[stage]]\nname = \"i\"\nkind = \"index\"\nwrite_peak = { tx_per_sec = 5 }\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("stage 1 (i): write_peak"), "{e}");
        let e =
            parse("name = \"x\"\n[[stage]]\nname = \"a\"\nserve_from = \"cache\"\n").unwrap_err();
        assert!(e.to_string().contains("serve_from"), "{e}");
        // Reading from the primary needs no replica; reading from replicas does.
        let e = parse("name = \"x\"\n[[stage]]\nname = \"a\"\nreplicas = 0\n").unwrap_err();
        assert!(e.to_string().contains("needs at least one replica"), "{e}");
    }

    #[test]
    fn the_write_peak_journey_parses_resolves_and_fits_two_cores() {
        let file = JourneyFile::parse(WRITE_PEAK_JOURNEY, "write-peak.toml").unwrap();
        let mut plan = JourneyPlan::resolve(&file, &Overrides::default());
        assert!(!plan.seed_without_index, "the relation index is seeded");
        let reads: Vec<ServeFrom> = plan.stages.iter().map(|s| s.serve_from).collect();
        assert_eq!(
            reads,
            [ServeFrom::Primary, ServeFrom::Primary, ServeFrom::Replicas]
        );
        let peaks: Vec<Option<WritePeak>> = plan.stages.iter().map(|s| s.write_peak).collect();
        assert!(peaks[0].is_none());
        assert!(
            peaks[1].is_some() && peaks[1] == peaks[2],
            "the same peak twice"
        );
        for s in &plan.stages {
            assert_eq!(s.kind, StageKind::Load);
            assert_eq!(s.db_budget, plan.stages[0].db_budget, "equal budgets");
            assert_eq!(
                (s.replicas, s.api_instances, s.nginx, s.users, s.pool_size),
                (
                    1,
                    1,
                    NginxMode::Off,
                    plan.stages[0].users,
                    plan.stages[0].pool_size
                ),
                "{}: the same topology",
                s.name
            );
        }
        let spec = file.capacity.clone().expect("a [capacity] table");
        let capacity = super::super::capacity::fit(&mut plan.stages, &spec, 2.0);
        assert!(capacity.fits(), "{:#?}", capacity.lines());
    }

    #[test]
    fn broken_files_are_refused_with_their_origin() {
        let e = parse("name = \"x\"\n[[stage]]\nname = \"a\"\nreplicas = \"two\"\n").unwrap_err();
        assert!(e.to_string().starts_with("test.toml: "), "{e}");
        let e = parse("name = \"x\"\nstage = []\n").unwrap_err();
        assert!(e.to_string().contains("at least one [[stage]]"), "{e}");
        let e = parse("name = \"x\"\n[[stage]]\nname = \"a\"\napi_instances = 0\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("stage 1 (a) needs at least one replica"),
            "{e}"
        );
        let e = parse("name = \"x\"\n[[stage]]\nname = \"a\"\nspeed = 3\n").unwrap_err();
        assert!(e.to_string().contains("speed"), "{e}");
        // An index stage needs no API.
        parse("name = \"x\"\n[[stage]]\nname = \"a\"\nkind = \"index\"\nreplicas = 0\n").unwrap();
    }
}

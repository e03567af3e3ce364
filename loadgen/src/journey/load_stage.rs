//! The load stage: serve from the stage's replicas (or the primary) under their budgets, start
//! its API tier (instances, budgets, nginx or not), start its write peak on the primary if it has
//! one ([`super::write_peak`]), send the load through [`crate::scenario::run_load`] while reading
//! every component's CPU (and the writer's counters) over exactly the measured window, and judge
//! the stage with [`super::verdict`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use stack::cgroup::{process_tree_cpu, process_tree_read_bytes, Budget};
use stack::nginx::NginxSettings;

use super::context::StageContext;
use super::memory::{self, BlockCounts};
use super::model::{
    Component, ComponentCpu, NginxMode, ServeFrom, StageKind, StageResult, StageTopology,
};
use super::spec::StagePlan;
use super::verdict::{verdict, with_memory};
use super::write_peak::{self, WritePeakRun};
use crate::cancel::INTERRUPTED;
use crate::scenario::{run_load, LoadError, LoadSpec};
use crate::topology::{
    machine_busy_cpu, own_cpu, ApiInstance, ApiLaunch, ApiTier, BudgetState, Budgeted,
};
use stack::PRIMARY;

/// How long the writer may run past the stage's warm-up and measured window before it stops by
/// itself; the stage stops it when the load is over.
const WRITER_SLACK: Duration = Duration::from_secs(60);

/// Run the stage: its topology is torn down before this returns; the replicas stay for the next.
pub(crate) async fn run(
    ctx: &mut StageContext<'_>,
    stage: &StagePlan,
) -> anyhow::Result<StageResult> {
    ctx.ensure_indexed().await?;
    let replicas = serve_from_replicas(ctx, stage).await?;
    // The primary is a host of the stage's database size whenever it serves the reads or takes
    // the write peak, so that writes and reads compete for one small host as in the story.
    // Otherwise it stays unbudgeted: the seeding and index builds between stages run on it. Its
    // group is dropped with this value at the end of the stage.
    let primary_budget = (stage.serve_from.includes_primary() || stage.write_peak.is_some())
        .then(|| -> anyhow::Result<Budgeted> {
            let pid = ctx
                .cluster
                .pid(PRIMARY)
                .ok_or_else(|| anyhow::anyhow!("the primary is not running"))?;
            Ok(Budgeted::apply("primary", pid, stage.db_budget))
        })
        .transpose()?;
    let serving = match stage.serve_from {
        ServeFrom::Primary => vec![PRIMARY],
        ServeFrom::Replicas => replicas.clone(),
        ServeFrom::All => std::iter::once(PRIMARY).chain(replicas.clone()).collect(),
    };
    let db_pids: Vec<i32> = serving.iter().filter_map(|&n| ctx.cluster.pid(n)).collect();
    let data_mb = memory::data_mb(&ctx.cluster, serving[0]).await;

    let stage_dir = ctx.run_dir.join(format!("stage-{}", stage.number));
    let nginx = match stage.nginx {
        NginxMode::Off => None,
        NginxMode::Untuned => Some(NginxSettings::untuned()),
        NginxMode::Tuned => Some(NginxSettings::tuned()),
    };
    let launch = ApiLaunch {
        program: ctx.opts.api_program.clone(),
        replica_urls: serving.iter().map(|&n| ctx.cluster.api_url(n)).collect(),
        cache_capacity: stage.cache_capacity,
        pool_size: stage.pool_size,
        // At a stage's saturation, waiting for a pooled connection is queueing, not failure:
        // a request may wait for one as long as its deadline (2 s), instead of being shed
        // with a 503 after the default 1 s while the database is answering at full speed.
        extra_args: vec![
            "--pool-wait-ms".into(),
            "2000".into(),
            "--batch-max".into(),
            stage.batch_max.to_string(),
        ],
    };
    let tier = ApiTier::start(
        &launch,
        stage.api_instances,
        stage.api_budget,
        nginx,
        &stage_dir,
    )
    .await?;
    let api_pids: Vec<i32> = tier.instances.iter().map(|i| i.pid()).collect();
    let nginx_pid = tier.nginx.as_ref().map(|n| n.pid());

    // Started before the warm-up, so the measured window sees the writes at their steady rate.
    let peak = match &stage.write_peak {
        Some(peak) => Some(
            WritePeakRun::start(
                &ctx.cluster,
                peak,
                ctx.plan.warmup + stage.duration + WRITER_SLACK,
                ctx.plan.seed.wrapping_add(stage.number as u64),
                &replicas,
            )
            .await?,
        ),
        None => None,
    };
    let writes = peak.as_ref().map(|p| p.progress());
    let primary_pid = peak.as_ref().and(ctx.cluster.pid(PRIMARY));

    let blocks_before = BlockCounts::read(&ctx.cluster, &serving).await;
    let goose_report = format!("stage-{}-goose.html", stage.number);
    let spec = LoadSpec {
        host: tier.entry_url(),
        users: stage.users,
        warmup: ctx.plan.warmup,
        duration: stage.duration,
        products: ctx.plan.products,
        expected_items: Some(ctx.plan.per_product as usize),
        ids: stage.ids,
        unknown_share: ctx.plan.unknown_share,
        report_files: vec![ctx.run_dir.join(&goose_report)],
        goose_args: ctx.opts.goose_args.clone(),
        request_timeout: Duration::from_secs(10),
        // A rewritten list is a new answer, not a wrong one.
        lists_change: stage.write_peak.is_some(),
    };
    let sample = move || Snapshot {
        at: Instant::now(),
        db: db_pids.iter().map(|&p| process_tree_cpu(p)).sum(),
        db_read_bytes: db_pids.iter().map(|&p| process_tree_read_bytes(p)).sum(),
        api: api_pids.iter().map(|&p| process_tree_cpu(p)).sum(),
        nginx: nginx_pid.map(process_tree_cpu).unwrap_or_default(),
        generator: own_cpu(),
        machine: machine_busy_cpu(),
        primary: primary_pid.map(process_tree_cpu).unwrap_or_default(),
        writes: writes.as_ref().map(|w| w.counts()).unwrap_or_default(),
    };
    let (load, start, end) = match run_load(&spec, ctx.cancel, sample).await {
        Ok(r) => r,
        Err(LoadError::Interrupted) => anyhow::bail!(INTERRUPTED),
        Err(e) => return Err(e.into()),
    };
    let primary_state = primary_budget.as_ref().map(|b| b.state.clone());
    let usage = CpuUse::between(&start, &end, stack::process::cores() as f64);
    let write_peak = match peak {
        Some(writing) => {
            let primary_cpu = usage.component(
                Component::Database,
                usage.primary,
                primary_state.as_ref().unwrap_or(&unbudgeted()),
                1,
            );
            Some(
                writing
                    .finish(write_peak::Window {
                        from: start.at,
                        to: end.at,
                        counts_from: start.writes,
                        counts_to: end.writes,
                        primary_cpu_utilization: primary_cpu.utilization,
                    })
                    .await?,
            )
        }
        None => None,
    };
    // What the serving servers' groups hold at the end of the load, before any is dropped.
    let replica_groups = ctx.db_budgets[..stage.replicas.min(ctx.db_budgets.len())]
        .iter()
        .filter(|_| stage.serve_from != ServeFrom::Primary);
    let primary_group = primary_budget
        .iter()
        .filter(|_| stage.serve_from.includes_primary());
    let memory_groups: Vec<_> = replica_groups
        .chain(primary_group)
        .filter_map(|b| b.group.as_ref()?.memory_use())
        .collect();
    let nginx_errors = tier.nginx.as_ref().map(|n| n.errors());
    let api_counters = scrape_api_counters(&tier.instances).await;
    let api_budget = tier
        .budgets
        .first()
        .map(|b| b.state.clone())
        .unwrap_or(BudgetState {
            budget: stage.api_budget,
            unbudgeted_reason: None,
        });
    drop(tier);
    drop(primary_budget);
    // The API's connections are closed: their backends flushed their statistics on the way out.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let blocks_after = BlockCounts::read(&ctx.cluster, &serving).await;

    let db_budget = match (stage.serve_from, primary_state) {
        (ServeFrom::Primary, Some(state)) => state,
        (_, primary) => ctx
            .db_budgets
            .first()
            .map(|b| b.state.clone())
            .or(primary)
            .unwrap_or_else(unbudgeted),
    };
    let cpu = usage.components(stage, &db_budget, &api_budget);
    let machine_cpu_utilization = usage.machine();
    let requests = load.ok + load.expected_not_found + load.total_errors();
    let database_memory = memory::judge(&memory::Measured {
        data_mb,
        before: blocks_before,
        after: blocks_after,
        disk_read_bytes: end.db_read_bytes.saturating_sub(start.db_read_bytes),
        requests,
        groups: memory_groups,
        memory_limit_mb: stage.db_budget.memory_mb,
    });
    let judged = with_memory(
        verdict(&cpu, &load, nginx_errors.as_ref(), machine_cpu_utilization),
        &cpu,
        Some(&database_memory),
    );
    let verdict_text = match &write_peak {
        Some(w) => format!("{}. {}", judged.text, w.sentence()),
        None => judged.text,
    };
    let cost_us = cpu
        .iter()
        .filter(|_| requests > 0)
        .map(|c| {
            let us = c.cpu_secs * 1e6 / requests as f64;
            (c.component.name().to_string(), us.round())
        })
        .collect();

    let budgeted = [&db_budget, &api_budget].iter().all(|b| b.enforced());
    Ok(StageResult {
        number: stage.number,
        name: stage.name.clone(),
        note: stage.note.clone(),
        kind: StageKind::Load,
        topology: Some(StageTopology {
            replicas: stage.replicas,
            api_instances: stage.api_instances,
            nginx: stage.nginx,
            cache: stage.cache,
            users: stage.users,
            ids: stage.ids.to_string(),
            db_budget,
            api_budget,
            budgeted,
            serve_from: stage.serve_from,
            batch_max: stage.batch_max,
        }),
        load: Some(load),
        index: None,
        cpu,
        machine_cpu_utilization,
        nginx_errors,
        bottleneck: judged.bottleneck.to_string(),
        verdict: verdict_text,
        goose_report: Some(goose_report),
        shape: None,
        cost_us,
        api_counters,
        write_peak,
        database_memory: Some(database_memory),
        // Filled in by the runner from its disk watch.
        disk_used_mb: None,
    })
}

/// The state of a component that has no budget.
fn unbudgeted() -> BudgetState {
    BudgetState {
        budget: Budget::default(),
        unbudgeted_reason: None,
    }
}

/// The API counters a stage's verdict leans on, summed over its instances, read from each
/// instance's operator listener (`/metrics` is not on the public one): cumulative since the
/// instance started, warm-up included.
const SCRAPED: [&str; 11] = [
    "api_db_queries_total",
    "api_retries_total",
    "api_pool_wait_timeouts_total",
    "api_deadline_exceeded_total",
    "api_no_replica_total",
    "api_cache_hits_total",
    "api_cache_misses_total",
    "api_replica_bans_total",
    "api_replica_timeouts_under_load_total",
    // The batch size histogram's count and sum: queries and the lookups they answered.
    "api_batch_size_count",
    "api_batch_size_sum",
];

async fn scrape_api_counters(instances: &[ApiInstance]) -> BTreeMap<String, f64> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("an HTTP client");
    let mut totals = BTreeMap::new();
    for instance in instances {
        let url = format!("http://{}/metrics", instance.admin_addr);
        let Ok(response) = client.get(&url).send().await else {
            continue;
        };
        let Ok(text) = response.text().await else {
            continue;
        };
        for (name, value) in counters(&text) {
            *totals.entry(name).or_insert(0.0) += value;
        }
    }
    totals
}

/// The [`SCRAPED`] series of one Prometheus text, each summed over its labels.
fn counters(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        if let (true, Ok(v)) = (SCRAPED.contains(&name), value.parse::<f64>()) {
            *out.entry(name.to_string()).or_insert(0.0) += v;
        }
    }
    out
}

/// Add replicas up to the stage's count and put the first `stage.replicas` of them under the
/// stage's database budget. Returns those replicas (they serve unless the primary does; they
/// replay the write peak either way).
async fn serve_from_replicas(
    ctx: &mut StageContext<'_>,
    stage: &StagePlan,
) -> anyhow::Result<Vec<usize>> {
    while ctx.cluster.replica_indexes().len() < stage.replicas {
        ctx.cancel.check()?;
        ctx.cluster.add_replica().await?;
    }
    let serving: Vec<usize> = ctx.cluster.replica_indexes()[..stage.replicas].to_vec();
    for (k, &node) in serving.iter().enumerate() {
        let pid = ctx
            .cluster
            .pid(node)
            .ok_or_else(|| anyhow::anyhow!("replica {node} is not running"))?;
        let name = format!("db{k}");
        match ctx.db_budgets.get_mut(k) {
            Some(budgeted) => budgeted.change(&name, pid, stage.db_budget),
            None => ctx
                .db_budgets
                .push(Budgeted::apply(&name, pid, stage.db_budget)),
        }
    }
    Ok(serving)
}

/// CPU time of every component (and of the whole machine) at one instant.
#[derive(Clone)]
struct Snapshot {
    at: Instant,
    db: Duration,
    /// Bytes the serving databases read from the disk.
    db_read_bytes: u64,
    api: Duration,
    nginx: Duration,
    generator: Duration,
    machine: Duration,
    /// The primary, read only when the stage has a write peak (it is `db` too when it serves).
    primary: Duration,
    /// The write peak's counters (zero without one).
    writes: seeder::WriteCounts,
}

/// CPU used between two snapshots, on a machine of `cores` cores.
struct CpuUse {
    window_secs: f64,
    cores: f64,
    db: Duration,
    api: Duration,
    nginx: Duration,
    generator: Duration,
    machine: Duration,
    primary: Duration,
}

impl CpuUse {
    fn between(start: &Snapshot, end: &Snapshot, cores: f64) -> CpuUse {
        CpuUse {
            window_secs: (end.at - start.at).as_secs_f64().max(0.001),
            cores,
            db: end.db - start.db,
            api: end.api - start.api,
            nginx: end.nginx - start.nginx,
            generator: end.generator - start.generator,
            machine: end.machine - start.machine,
            primary: end.primary.saturating_sub(start.primary),
        }
    }

    /// The database, the API, nginx when the stage has it, and the load generator, each against
    /// its limit: `count` budgets together (at most the machine), or the machine's cores.
    fn components(
        &self,
        stage: &StagePlan,
        db_budget: &BudgetState,
        api_budget: &BudgetState,
    ) -> Vec<ComponentCpu> {
        let unbudgeted = unbudgeted();
        let mut cpu = vec![
            self.component(
                Component::Database,
                self.db,
                db_budget,
                stage.serving_count(),
            ),
            self.component(Component::Api, self.api, api_budget, stage.api_instances),
        ];
        if stage.nginx != NginxMode::Off {
            cpu.push(self.component(Component::Nginx, self.nginx, &unbudgeted, 1));
        }
        cpu.push(self.component(Component::LoadGenerator, self.generator, &unbudgeted, 1));
        cpu
    }

    fn component(
        &self,
        component: Component,
        used: Duration,
        budget: &BudgetState,
        count: usize,
    ) -> ComponentCpu {
        let budgeted = budget.enforced() && budget.budget.cpus.is_some();
        let limit = if budgeted {
            (budget.budget.cpus.unwrap_or(self.cores) * count as f64).min(self.cores)
        } else {
            self.cores
        };
        let cpu_secs = used.as_secs_f64();
        ComponentCpu {
            component,
            cpu_secs: round3(cpu_secs),
            limit_cores: round3(limit),
            budgeted,
            utilization: round3(cpu_secs / (self.window_secs * limit)),
        }
    }

    /// Busy share of all the machine's cores.
    fn machine(&self) -> f64 {
        round3(self.machine.as_secs_f64() / (self.window_secs * self.cores))
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::super::spec::{JourneyFile, JourneyPlan, Overrides};
    use super::*;

    fn stage(nginx: &str, replicas: usize) -> StagePlan {
        let file = JourneyFile::parse(
            &format!("name = \"x\"\n[[stage]]\nname = \"s\"\nnginx = \"{nginx}\"\nreplicas = {replicas}\napi_instances = 6\n"),
            "test",
        )
        .unwrap();
        JourneyPlan::resolve(&file, &Overrides::default()).stages[0].clone()
    }

    fn budget(cpus: Option<f64>, unbudgeted_reason: Option<&str>) -> BudgetState {
        BudgetState {
            budget: Budget {
                cpus,
                memory_mb: None,
            },
            unbudgeted_reason: unbudgeted_reason.map(String::from),
        }
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn usage() -> CpuUse {
        let at = Instant::now();
        let start = Snapshot {
            at,
            db: secs(100.0),
            db_read_bytes: 0,
            api: secs(50.0),
            nginx: secs(10.0),
            generator: secs(5.0),
            machine: secs(1000.0),
            primary: secs(30.0),
            writes: Default::default(),
        };
        let end = Snapshot {
            at: at + secs(20.0),
            db: secs(100.0 + 9.0),
            db_read_bytes: 8192,
            api: secs(50.0 + 4.0),
            nginx: secs(10.0 + 2.0),
            generator: secs(5.0 + 8.0),
            machine: secs(1000.0 + 36.0),
            primary: secs(30.0 + 3.0),
            writes: Default::default(),
        };
        CpuUse::between(&start, &end, 2.0)
    }

    #[test]
    fn counters_are_summed_over_their_labels_and_others_ignored() {
        let text = "# HELP api_retries_total x\n# TYPE api_retries_total counter\napi_retries_total 3\n\
            api_replica_bans_total{replica=\"a:1/r\"} 2\napi_replica_bans_total{replica=\"b:2/r\"} 5\n\
            api_replica_lag_ms{replica=\"a:1/r\"} 900\n";
        let c = counters(text);
        assert_eq!(c.get("api_retries_total"), Some(&3.0));
        assert_eq!(c.get("api_replica_bans_total"), Some(&7.0));
        assert!(!c.contains_key("api_replica_lag_ms"));
    }

    #[test]
    fn budgets_of_every_replica_add_up_to_at_most_the_machine() {
        let cpu = usage().components(
            &stage("tuned", 3),
            &budget(Some(0.25), None),
            &budget(None, None),
        );
        let names: Vec<Component> = cpu.iter().map(|c| c.component).collect();
        assert_eq!(
            names,
            [
                Component::Database,
                Component::Api,
                Component::Nginx,
                Component::LoadGenerator
            ]
        );
        // 9 s of CPU over 20 s against 3 x 0.25 cores.
        assert_eq!(
            cpu[0],
            ComponentCpu {
                component: Component::Database,
                cpu_secs: 9.0,
                limit_cores: 0.75,
                budgeted: true,
                utilization: 0.6
            }
        );
        // No CPU budget: the machine's 2 cores.
        assert_eq!(
            (cpu[1].limit_cores, cpu[1].budgeted, cpu[1].utilization),
            (2.0, false, 0.1)
        );
        assert_eq!(cpu[2].utilization, 0.05);
        assert_eq!(cpu[3].utilization, 0.2);
        assert_eq!(usage().machine(), 0.9);

        let big = usage().components(
            &stage("off", 3),
            &budget(Some(1.0), None),
            &budget(None, None),
        );
        assert_eq!(big[0].limit_cores, 2.0, "3 x 1 core on a 2-core machine");
    }

    #[test]
    fn no_nginx_no_nginx_row_and_an_unenforced_budget_counts_the_machine() {
        let cpu = usage().components(
            &stage("off", 1),
            &budget(Some(0.25), Some("no cgroup v2")),
            &budget(None, None),
        );
        assert!(cpu.iter().all(|c| c.component != Component::Nginx));
        assert_eq!(
            (cpu[0].limit_cores, cpu[0].budgeted, cpu[0].utilization),
            (2.0, false, 0.225)
        );
    }
}

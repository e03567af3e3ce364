//! The capacity plan: before any stage runs, the journey works out what each stage asks of the
//! machine and scales the CPU budgets so the largest stage fits in its cores with headroom.
//!
//! A stage's demand is its budgets (database budget x serving databases, and the API tier's budget when
//! it has one) plus what the unbudgeted parts (the API tier without a budget, nginx, the load
//! generator) spend at the rate the budgets allow, from the CPU cost of one request that each
//! component was measured at ([`CapacitySpec`]). Rates grow in proportion to the budgets, so
//! one factor scales every stage alike and the ratios between stages (the story's shape) stay
//! as written: on 2 cores the default journey's budgets come out near a quarter of a core, on
//! 16 cores proportionally bigger. Memory budgets stay as written: they model the data's fit
//! in memory, not the machine's size.
//!
//! Pure arithmetic over the plan, so it is tested for any machine without one.

use serde::{Deserialize, Serialize};

use super::model::NginxMode;
use super::spec::StagePlan;

/// How a journey file sizes its CPU budgets.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Fit {
    /// Scale every CPU budget by one factor so the largest stage fills the machine's cores less
    /// the headroom: budgets are stated relative to each other, not in cores.
    #[default]
    Machine,
    /// Keep the budgets in cores as written; the plan only says which stages do not fit.
    AsWritten,
}

/// The `[capacity]` table of a journey file: how to fit it, and the cost of one request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CapacitySpec {
    pub fit: Fit,
    /// Share of the machine's cores the plan leaves free: the primary, health checks, the
    /// kernel, the runner's own bookkeeping.
    pub headroom: f64,
    /// CPU microseconds of one request in each component, at the database's saturation.
    pub db_us: f64,
    pub api_us: f64,
    /// An API request the response cache answers.
    pub api_cached_us: f64,
    pub nginx_us: f64,
    pub generator_us: f64,
    /// Share of requests the response cache answers in a stage with the cache on.
    pub cache_hit_share: f64,
}

impl Default for CapacitySpec {
    /// Costs measured on the development machine (2 cores, AMD EPYC): see
    /// `results/journey/README.md` for the command; each run's `journey.json` records the
    /// costs it measured per stage, to compare.
    fn default() -> Self {
        Self {
            fit: Fit::Machine,
            headroom: 0.15,
            db_us: 190.0,
            api_us: 110.0,
            api_cached_us: 50.0,
            nginx_us: 100.0,
            generator_us: 140.0,
            cache_hit_share: 0.6,
        }
    }
}

/// The plan: the factor every CPU budget was multiplied by, and each stage's demand after it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CapacityPlan {
    pub fit: Fit,
    pub cores: f64,
    pub headroom: f64,
    /// Cores the plan fills: cores x (1 - headroom).
    pub usable_cores: f64,
    /// The factor applied to every CPU budget (1 when kept as written).
    pub scale: f64,
    pub stages: Vec<StageDemand>,
    /// A sentence per stage that cannot fit, or per budget too small to enforce.
    pub problems: Vec<String>,
}

/// What one load stage asks of the machine, with its budgets as planned.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StageDemand {
    pub number: usize,
    pub name: String,
    /// Each serving replica's CPU budget, cores.
    pub db_cpus: Option<f64>,
    /// Each API instance's CPU budget, cores.
    pub api_cpus: Option<f64>,
    /// The rate the budgets allow, requests/s.
    pub expected_rps: Option<f64>,
    /// Budgets plus the unbudgeted components at the expected rate, cores.
    pub demand_cores: Option<f64>,
    pub fits: bool,
}

impl CapacityPlan {
    /// True when every stage fits and no budget is too small.
    pub fn fits(&self) -> bool {
        self.problems.is_empty()
    }

    /// The plan as the lines the journey prints before the first stage.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "capacity plan: {} cores, {:.0}% headroom, {:.2} cores to fill; CPU budgets x{:.3} ({})",
            self.cores,
            self.headroom * 100.0,
            self.usable_cores,
            self.scale,
            match self.fit {
                Fit::Machine => "fitted to this machine",
                Fit::AsWritten => "as written",
            }
        )];
        for s in &self.stages {
            let cores = |c: Option<f64>| c.map_or("-".to_string(), |c| format!("{c:.3}"));
            let rps = s.expected_rps.map_or("-".into(), |r| format!("{r:.0}"));
            let demand = s.demand_cores.map_or("?".into(), |d| format!("{d:.2}"));
            lines.push(format!(
                "  stage {} ({}): DB {} cores each, API {} cores each, about {rps} req/s, {demand} cores{}",
                s.number,
                s.name,
                cores(s.db_cpus),
                cores(s.api_cpus),
                if s.fits { "" } else { ": DOES NOT FIT" }
            ));
        }
        lines.extend(self.problems.iter().map(|p| format!("  {p}")));
        lines
    }
}

/// A budget under this many cores is a rounding error of the scheduler, not a host.
const SMALLEST_BUDGET: f64 = 0.01;

/// Plan `stages` (load stages only are sized) on a machine of `cores`, and scale their CPU
/// budgets in place when the spec fits to the machine.
pub fn fit(stages: &mut [StagePlan], spec: &CapacitySpec, cores: f64) -> CapacityPlan {
    let usable = cores * (1.0 - spec.headroom.clamp(0.0, 0.9));
    let unscaled: Vec<StageDemand> = load_stages(stages.iter())
        .map(|s| demand(s, spec))
        .collect();
    let largest = unscaled
        .iter()
        .filter_map(|d| d.demand_cores)
        .fold(0.0, f64::max);
    let scale = match spec.fit {
        Fit::Machine if largest > 0.0 => usable / largest,
        _ => 1.0,
    };
    for stage in stages.iter_mut() {
        if let Some(c) = stage.db_budget.cpus.as_mut() {
            *c = round4(*c * scale);
        }
        if let Some(c) = stage.api_budget.cpus.as_mut() {
            *c = round4(*c * scale);
        }
    }
    let mut problems = Vec::new();
    let planned: Vec<StageDemand> = load_stages(stages.iter())
        .map(|s| {
            let mut d = demand(s, spec);
            d.fits = d.demand_cores.is_some_and(|c| c <= usable * 1.001);
            match d.demand_cores {
                None => problems.push(format!(
                    "stage {} ({}) has no CPU budget on the database or the API, so nothing bounds its rate: it takes the whole machine and its verdict will name the machine",
                    d.number, d.name
                )),
                Some(c) if !d.fits => problems.push(format!(
                    "stage {} ({}) needs {c:.2} cores, more than the {usable:.2} this machine has to give: its verdict will likely name the machine",
                    d.number, d.name
                )),
                Some(_) => {}
            }
            for (what, cpus) in [("database", d.db_cpus), ("API", d.api_cpus)] {
                if cpus.is_some_and(|c| c < SMALLEST_BUDGET) {
                    problems.push(format!(
                        "stage {} ({}): the {what} budget comes out at {:.4} cores, too small to enforce on {cores} cores",
                        d.number,
                        d.name,
                        cpus.unwrap_or_default()
                    ));
                }
            }
            d
        })
        .collect();
    CapacityPlan {
        fit: spec.fit,
        cores,
        headroom: spec.headroom,
        usable_cores: round4(usable),
        scale: round4(scale),
        stages: planned,
        problems,
    }
}

fn load_stages<'a>(
    stages: impl Iterator<Item = &'a StagePlan>,
) -> impl Iterator<Item = &'a StagePlan> {
    stages.filter(|s| s.kind == super::model::StageKind::Load)
}

/// One stage's demand with its budgets as they stand.
fn demand(stage: &StagePlan, spec: &CapacitySpec) -> StageDemand {
    let hit = if stage.cache {
        spec.cache_hit_share.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let db_per_request = spec.db_us * (1.0 - hit) / 1e6;
    let api_per_request = (spec.api_cached_us * hit + spec.api_us * (1.0 - hit)) / 1e6;
    let db_cores = stage
        .db_budget
        .cpus
        .map(|c| c * stage.serving_count() as f64);
    let api_cores = stage
        .api_budget
        .cpus
        .map(|c| c * stage.api_instances as f64);
    let bounds = [
        db_cores
            .filter(|_| db_per_request > 0.0)
            .map(|c| c / db_per_request),
        api_cores.map(|c| c / api_per_request),
    ];
    let rate = bounds.into_iter().flatten().reduce(f64::min);
    let mut unbudgeted_per_request = spec.generator_us / 1e6;
    if stage.nginx != NginxMode::Off {
        unbudgeted_per_request += spec.nginx_us / 1e6;
    }
    if api_cores.is_none() {
        unbudgeted_per_request += api_per_request;
    }
    let demand = rate
        .map(|r| db_cores.unwrap_or(0.0) + api_cores.unwrap_or(0.0) + r * unbudgeted_per_request);
    StageDemand {
        number: stage.number,
        name: stage.name.clone(),
        db_cpus: stage.db_budget.cpus,
        api_cpus: stage.api_budget.cpus,
        expected_rps: rate.map(|r| r.round()),
        demand_cores: demand.map(round4),
        fits: true,
    }
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::super::spec::{JourneyFile, JourneyPlan, Overrides, DEFAULT_JOURNEY};
    use super::*;

    fn default_plan() -> (JourneyPlan, CapacitySpec) {
        let file = JourneyFile::parse(DEFAULT_JOURNEY, "default").unwrap();
        let plan = JourneyPlan::resolve(&file, &Overrides::default());
        let spec = file.capacity.clone().unwrap_or_default();
        (plan, spec)
    }

    fn db_cpus(plan: &JourneyPlan) -> Vec<f64> {
        plan.stages
            .iter()
            .filter_map(|s| s.db_budget.cpus)
            .collect()
    }

    #[test]
    fn on_two_cores_the_default_journey_fits_with_its_ratios_kept() {
        let (mut plan, spec) = default_plan();
        let written = db_cpus(&plan);
        let capacity = fit(&mut plan.stages, &spec, 2.0);
        assert!(capacity.fits(), "{:#?}", capacity.lines());
        let largest = capacity
            .stages
            .iter()
            .filter_map(|s| s.demand_cores)
            .fold(0.0, f64::max);
        assert!((largest - 1.7).abs() < 0.01, "fills 2 x 85%: {largest}");
        let fitted = db_cpus(&plan);
        for (w, f) in written.iter().zip(&fitted) {
            assert!((f / w - capacity.scale).abs() < 0.01, "{w} -> {f}");
        }
        // The index stage is not sized.
        assert_eq!(capacity.stages.len(), plan.stages.len() - 1);
    }

    #[test]
    fn sixteen_cores_give_eight_times_the_budgets_of_two() {
        let (mut two, spec) = default_plan();
        let (mut sixteen, _) = default_plan();
        let small = fit(&mut two.stages, &spec, 2.0);
        let big = fit(&mut sixteen.stages, &spec, 16.0);
        assert!(big.fits());
        assert!((big.scale / small.scale - 8.0).abs() < 0.01);
        for (a, b) in db_cpus(&two).iter().zip(db_cpus(&sixteen)) {
            assert!((b / a - 8.0).abs() < 0.05, "{a} -> {b}");
        }
    }

    fn file(stages: &str, capacity: &str) -> (JourneyPlan, CapacitySpec) {
        let text = format!("name = \"t\"\n{capacity}\n{stages}");
        let file = JourneyFile::parse(&text, "t").unwrap();
        let spec = file.capacity.clone().unwrap_or_default();
        (JourneyPlan::resolve(&file, &Overrides::default()), spec)
    }

    #[test]
    fn a_stage_over_the_machine_as_written_is_named() {
        let (mut plan, spec) = file(
            "[[stage]]\nname = \"small\"\ndb_budget = { cpus = 0.25 }\n\
             [[stage]]\nname = \"huge\"\nreplicas = 4\ndb_budget = { cpus = 2.0 }\n",
            "[capacity]\nfit = \"as-written\"\n",
        );
        let capacity = fit(&mut plan.stages, &spec, 2.0);
        assert!(!capacity.fits());
        assert_eq!(capacity.scale, 1.0);
        assert!(capacity.stages[0].fits && !capacity.stages[1].fits);
        assert!(
            capacity.problems[0].starts_with("stage 2 (huge) needs"),
            "{:?}",
            capacity.problems
        );
        assert_eq!(plan.stages[1].db_budget.cpus, Some(2.0), "kept as written");
    }

    #[test]
    fn a_stage_without_any_cpu_budget_cannot_be_planned() {
        let (mut plan, spec) = file(
            "[[stage]]\nname = \"free\"\n[[stage]]\nname = \"b\"\ndb_budget = { cpus = 0.5 }\n",
            "",
        );
        let capacity = fit(&mut plan.stages, &spec, 2.0);
        assert!(!capacity.fits());
        assert!(capacity.problems[0].contains("stage 1 (free) has no CPU budget"));
        assert!(capacity.stages[1].fits, "the budgeted stage is still sized");
    }

    #[test]
    fn the_demand_counts_budgets_and_the_unbudgeted_at_the_budgets_rate() {
        let (mut plan, spec) = file(
            "[[stage]]\nname = \"s\"\nreplicas = 2\napi_instances = 3\nnginx = \"tuned\"\ndb_budget = { cpus = 0.19 }\n",
            "[capacity]\nfit = \"as-written\"\ndb_us = 190.0\napi_us = 100.0\nnginx_us = 50.0\ngenerator_us = 50.0\n",
        );
        let d = &fit(&mut plan.stages, &spec, 2.0).stages[0];
        // 2 x 0.19 cores at 190 us a request: 2,000 req/s, costing the unbudgeted API, nginx
        // and the generator 200 us each: 0.4 cores on top of the database's 0.38.
        assert_eq!(d.expected_rps, Some(2000.0));
        assert_eq!(d.demand_cores, Some(0.78));
    }

    #[test]
    fn tiny_machines_are_told_the_budget_is_too_small() {
        let (mut plan, spec) = file(
            "[[stage]]\nname = \"s\"\ndb_budget = { cpus = 0.001 }\n\
             [[stage]]\nname = \"big\"\nreplicas = 8\ndb_budget = { cpus = 1.0 }\n",
            "",
        );
        let capacity = fit(&mut plan.stages, &spec, 1.0);
        assert!(capacity
            .problems
            .iter()
            .any(|p| p.contains("stage 1 (s): the database budget comes out at")));
    }
}

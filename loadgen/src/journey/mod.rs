//! The requests-per-second journey: a TOML list of stages, each a topology (replicas, API
//! instances, nginx, cache), budgets that make one machine stand in for hosts of given sizes,
//! and a load. The runner seeds once, builds and tears down each stage's topology, measures it,
//! and names the component closest to its limit.
//!
//! - [`spec`]: the journey file, its defaults, and the [`JourneyPlan`] resolved once from it and
//!   the command line's overrides;
//! - [`model`]: what a run measured ([`JourneyReport`], stage results, [`model::Component`]);
//!   [`machine`]: the machine it ran on;
//! - `run`: the runner ([`run_journey`]) over a `context::StageContext` lent to one entry point
//!   per kind of stage, `index_stage` and `load_stage`; `write_peak`: the writes on the primary
//!   and the replicas' replay lag that a load stage with a `write_peak` runs beside its load;
//! - [`capacity`]: the budgets fitted to the machine before the first stage; [`disk`]: the disk
//!   it needs, checked before anything starts, and the most it held; `memory`: whether a
//!   stage's data fitted its databases' memory;
//! - [`verdict`]: which component limits a load stage, and why; [`shape`]: whether a stage
//!   has the shape the story expects of it;
//! - [`report`]: the result files, rendered from the model alone; `chart` draws its SVG.
//!
//! Ctrl-C reaches the runner as a [`crate::cancel::Cancel`] value.

pub mod capacity;
mod chart;
mod context;
pub mod disk;
#[cfg(test)]
mod fixture;
mod index_stage;
mod load_stage;
pub mod machine;
mod memory;
pub mod model;
pub mod report;
mod run;
pub mod shape;
pub mod spec;
pub mod verdict;
mod write_peak;

pub use context::JourneyOptions;
pub use machine::Machine;
pub use model::JourneyReport;
pub use run::run_journey;
pub use spec::{JourneyFile, JourneyPlan, Overrides, DEFAULT_JOURNEY, WRITE_PEAK_JOURNEY};

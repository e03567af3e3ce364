//! `loadgen baseline`: CI's throughput and latency gate.
//!
//! The candidate (this build) runs side by side with a reference (the commit the committed
//! `results/baseline.json` was recorded at, built in a worktree), alternately on the same
//! topology and data under the same load, round after round; the verdict is candidate /
//! reference on the same rounds with an interval over them. Comparing with a figure recorded on
//! another day cannot tell a 10% regression from a busier machine; comparing within one run can.
//!
//! - [`gate`]: the run (topology, both APIs, the rounds);
//! - [`reference`](mod@reference): which commit is the reference, its worktree and its build;
//! - [`verdict`]: the report model, the rules per metric, the table;
//! - [`interval`]: the paired ratio's bootstrap interval;
//! - [`recorded`]: `results/baseline.json`, kept for the trend and as the fallback verdict;
//! - [`calibration`]: pgbench on the same replica, which the recorded figure is normalised by.

pub mod calibration;
pub mod gate;
pub mod interval;
pub mod recorded;
pub mod reference;
pub mod verdict;

pub use gate::{run_gate, GateOptions, ReferenceSource};
pub use recorded::{compare, load_baseline, BaselineRun, Comparison};
pub use verdict::{write_table, GateReport, Tolerances};

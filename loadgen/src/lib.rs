//! The load generator and the requests-per-second journey.
//!
//! [`scenario`] is the storefront-widget load on goose with microsecond [`latency`] recording and
//! ids from [`ids`]; [`topology`] starts API instances and nginx for a stage and reads their CPU;
//! [`journey`] runs a TOML list of stages over one seeded [`stack::Cluster`], names each stage's
//! bottleneck and writes the result files; [`baseline`] is the short, calibrated run CI compares
//! with the committed figure; [`cancel`] carries Ctrl-C to all of them as a value; [`cli`] is the
//! `loadgen` command.

pub mod baseline;
pub mod cancel;
pub mod cli;
pub mod drill;
pub mod figures;
pub mod ids;
pub mod index_probe;
pub mod journey;
pub mod latency;
pub mod scenario;
pub mod topology;

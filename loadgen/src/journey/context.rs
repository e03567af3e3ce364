//! What the stages of one journey run share: the resolved plan, the run's options, the
//! [`Cancel`] handle, the results folder, and the state one stage leaves to the next (the seeded
//! cluster, the serving replicas' budgets, whether the relation index exists). The runner owns a
//! [`StageContext`] and lends it to each stage's entry point.

use std::path::{Path, PathBuf};
use std::time::Duration;

use stack::Cluster;

use super::spec::JourneyPlan;
use crate::cancel::Cancel;
use crate::topology::Budgeted;

/// How long the replicas may take to replay the primary's WAL after seeding or an index build.
pub(crate) const REPLICA_CATCH_UP: Duration = Duration::from_secs(600);

/// Options from the command line that apply to the whole run (the journey's values are in the
/// [`JourneyPlan`]).
#[derive(Debug, Clone)]
pub struct JourneyOptions {
    /// Folder for the results; each run gets a timestamped subfolder.
    pub out_dir: PathBuf,
    /// Folder for the journey's PostgreSQL servers (removed at the end).
    pub stack_dir: PathBuf,
    /// The program that serves the API (`loadgen api`): normally this binary.
    pub api_program: PathBuf,
    /// Further goose options for every load stage.
    pub goose_args: Vec<String>,
    pub quiet: bool,
}

/// One run's shared values and the state stages hand on. Fields drop in order: the replicas'
/// budgets before the cluster whose processes they hold.
pub(crate) struct StageContext<'a> {
    pub plan: &'a JourneyPlan,
    pub opts: &'a JourneyOptions,
    pub cancel: &'a Cancel,
    /// This run's results folder.
    pub run_dir: &'a Path,
    /// Budgets of the serving replicas by position, kept from stage to stage so that a later
    /// stage changes a replica's group in place.
    pub db_budgets: Vec<Budgeted>,
    pub cluster: Cluster,
    /// Whether the relation index exists (the seeder leaves it out when the first stage
    /// measures the query without it).
    pub indexed: bool,
}

impl StageContext<'_> {
    /// Build the relation index if no stage has yet, and wait for the replicas to have it.
    pub async fn ensure_indexed(&mut self) -> anyhow::Result<()> {
        if !self.indexed {
            seeder::build_relation_index(&self.cluster.primary_url(), true).await?;
            self.cluster.wait_for_replicas(REPLICA_CATCH_UP).await?;
            checkpoint_all(&self.cluster).await?;
            self.indexed = true;
        }
        Ok(())
    }
}

/// A checkpoint on every server (a restartpoint on a replica), after the seeding or an index
/// build: the WAL they wrote is then recycled down to `max_wal_size` instead of staying on disk
/// beside each copy of the data while the stages run.
pub(crate) async fn checkpoint_all(cluster: &Cluster) -> anyhow::Result<()> {
    for node in 0..cluster.nodes().len() {
        cluster
            .connect(node)
            .await?
            .batch_execute("CHECKPOINT")
            .await?;
    }
    Ok(())
}

//! `loadgen up` on a folder that already holds a topology: what is stopped is started again
//! from its own data, on its recorded ports with its recorded passwords, so the URLs that API
//! instances were given keep working and nothing is re-seeded. A crashed primary runs crash
//! recovery on start; a replica whose data cannot start or catch up is cloned again from the
//! primary, and says so. Data is removed only by `down`, or by `up --fresh`, which says what.

use std::time::{Duration, Instant};

use super::{Cluster, ClusterSpec, ServerDir, STATE_FILE};
use crate::process::port_is_free;
use crate::{Result, StackError};

/// How long a restarted replica gets to replay what the primary wrote while it was down before
/// it counts as unable to catch up.
const CATCH_UP: Duration = Duration::from_secs(120);

impl Cluster {
    /// A new topology when `spec.dir` has none; otherwise the existing one, with every stopped
    /// server started again (its data, ports and passwords kept), or removed first when
    /// `fresh`. `say` gets one line per thing done to an existing topology.
    pub async fn up(spec: ClusterSpec, fresh: bool, say: &dyn Fn(&str)) -> Result<Cluster> {
        if !spec.dir.join(STATE_FILE).exists() {
            return Cluster::create(spec).await;
        }
        let existing = Cluster::open(&spec.dir)?;
        if fresh {
            say(&format!(
                "--fresh: stopping {} server(s) and removing their data in {} and the topology in {}",
                existing.nodes().len(),
                existing.data_root().display(),
                spec.dir.display()
            ));
            existing.down()?;
            return Cluster::create(spec).await;
        }
        existing.restart_stopped(say).await?;
        Ok(existing)
    }

    /// Start every stopped server from its data, primary first (the replicas stream from it),
    /// then wait for each replica to catch up, cloning again one that cannot.
    pub async fn restart_stopped(&self, say: &dyn Fn(&str)) -> Result<()> {
        let mut started = Vec::new();
        for node in std::iter::once(0).chain(self.replica_indexes()) {
            if self.pid(node).is_some() {
                continue;
            }
            let name = &self.state.nodes[node].name;
            let port = self.state.nodes[node].port;
            if !port_is_free(port) {
                return Err(StackError::PortInUse(port));
            }
            say(&format!(
                "{name}: stopped; starting it from its data on port {port}"
            ));
            match self.start_node(node) {
                Ok(_) => started.push(node),
                Err(e) if node != 0 => {
                    say(&format!(
                        "{name}: its data does not start ({}); cloning it again from the primary",
                        first_line(&e.to_string())
                    ));
                    self.reclone(node).await?;
                }
                // The primary's data is the only copy: never replaced behind the user's back.
                Err(e) => return Err(e),
            }
        }
        if started.is_empty() {
            say("every server is running; nothing to start");
        }
        let lsn = self.primary_lsn().await?;
        for node in self.replica_indexes() {
            if self.replayed(node, &lsn, CATCH_UP).await? {
                continue;
            }
            let name = &self.state.nodes[node].name;
            say(&format!(
                "{name}: has not caught up with the primary in {} s; cloning it again",
                CATCH_UP.as_secs()
            ));
            self.reclone(node).await?;
        }
        self.wait_for_replicas(CATCH_UP).await
    }

    /// Replace a replica's data with a fresh clone of the primary, on the same port and with
    /// the same replication slot name.
    async fn reclone(&self, node: usize) -> Result<()> {
        let dir = self.server_dir(node);
        dir.stop(Duration::from_secs(10));
        let name = self.state.nodes[node].name.clone();
        let primary = self.connect(0).await?;
        super::bounded(
            "primary",
            "dropping the old replication slot",
            super::DATABASE_WAIT,
            primary.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
                 WHERE slot_name = $1 AND NOT active",
                &[&name],
            ),
        )
        .await?;
        let _ = std::fs::remove_dir_all(&dir.node_dir);
        let fresh = ServerDir {
            node_dir: dir.node_dir.clone(),
        };
        fresh.basebackup(
            &self.bins,
            &self.user,
            self.state.nodes[0].port,
            &self.state.superuser_password,
            &name,
        )?;
        let mut lines = self.state.settings.lines();
        lines.extend(self.node_lines(node)?);
        fresh.append_conf(&lines)?;
        fresh.start(&self.bins, &self.user)?;
        Ok(())
    }

    /// Whether a running replica replays up to `lsn` within `timeout`; a replica that does not
    /// answer at all counts as not caught up.
    async fn replayed(&self, node: usize, lsn: &str, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        let Ok(client) = self.connect(node).await else {
            return Ok(false);
        };
        self.replayed_on(&client, node, lsn, deadline).await
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

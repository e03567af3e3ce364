//! A load stage's write peak (`write_peak` in the journey file): `seeder write`'s workload on the
//! primary from before the warm-up to the end of the measured window, and a sampler that reads
//! every 250 ms how far the stage's replicas have replayed the primary's WAL. The load stage
//! starts a [`WritePeakRun`] once its topology is up and [`finish`](WritePeakRun::finish)es it
//! when the load is over, with the writer's counters and the primary's CPU read at the edges of
//! the measured window; the result is the stage's [`WritePeakResult`]. Dropping a run (a stage
//! interrupted or failed) stops both tasks.
//!
//! The lag is stated as time, not only bytes: how long ago the primary had written what a replica
//! has replayed ([`replay_lag_secs`]), that is how stale a read on that replica is.
//! `now() - pg_last_xact_replay_timestamp()` says the same only while the primary commits all the
//! time, and minutes when it idles; WAL positions of both sides at known instants say it either
//! way.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use seeder::writes::MAX_DURATION;
use seeder::{SeedError, WriteCounts, WriteOptions, WriteProgress, WriteSummary, Writer};
use stack::Cluster;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_postgres::{Client, Statement};

use super::model::WritePeakResult;
use super::spec::WritePeak;
use crate::figures::{median, round_to};
use stack::PRIMARY;

/// How often the replicas' replay positions are read.
const LAG_INTERVAL: Duration = Duration::from_millis(250);
/// How long the sampler may take to notice it was stopped (a throttled replica answers slowly)
/// before it is aborted; what it read is kept either way.
const SAMPLER_STOP_WAIT: Duration = Duration::from_secs(2);
/// How long the primary's statistics may take to count the writer's last rows: each backend
/// flushes its counts when it goes idle (at most once a second) or exits.
const STATS_WAIT: Duration = Duration::from_secs(3);

/// Where the primary's WAL was (bytes from 0/0, the position it would insert at next: what a
/// read on the primary already sees) and what a replica had replayed.
const PRIMARY_POSITION_SQL: &str = "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::int8";
const REPLAY_POSITION_SQL: &str = "SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::int8";
/// Rows the database's backends inserted, updated and deleted, as the server counts them.
const ROWS_CHANGED_SQL: &str = "SELECT (tup_inserted + tup_updated + tup_deleted)::int8 \
     FROM pg_stat_database WHERE datname = current_database()";

/// A WAL position at an instant: (seconds since the sampler started, bytes).
type WalPoint = (f64, u64);

/// One reading of the sampler: the primary's position, then each replica's that answered.
#[derive(Debug, Clone, PartialEq)]
struct Tick {
    primary: WalPoint,
    replays: Vec<WalPoint>,
}

/// The edges of a stage's measured window, as the load stage read them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub from: Instant,
    pub to: Instant,
    /// The writer's counters at each edge.
    pub counts_from: WriteCounts,
    pub counts_to: WriteCounts,
    /// The primary's CPU over the window against its limit.
    pub primary_cpu_utilization: f64,
}

/// A write peak under way: the writer on the primary and the lag sampler on the replicas.
pub(crate) struct WritePeakRun {
    peak: WritePeak,
    progress: Arc<WriteProgress>,
    /// When the sampler started: its readings are in seconds from here.
    origin: Instant,
    /// A connection to the primary for its statistics.
    stats: Client,
    rows_before: Option<u64>,
    stop_writer: Option<oneshot::Sender<()>>,
    writer: Option<JoinHandle<Result<WriteSummary, SeedError>>>,
    stop_sampler: watch::Sender<bool>,
    sampler: Option<JoinHandle<()>>,
    ticks: Arc<Mutex<Vec<Tick>>>,
    replicas_sampled: usize,
}

impl WritePeakRun {
    /// Check the data and open the writer's connections (so the load's window opens with the
    /// writer ready), then start it and the sampler of `replicas`. The writer stops by itself
    /// after `duration` at the latest.
    pub async fn start(
        cluster: &Cluster,
        peak: &WritePeak,
        duration: Duration,
        seed: u64,
        replicas: &[usize],
    ) -> anyhow::Result<WritePeakRun> {
        let opts = WriteOptions {
            tx_per_sec: peak.tx_per_sec,
            duration: duration.min(MAX_DURATION),
            connections: peak.connections,
            seed,
            quiet: true,
            lock_wait: Duration::from_secs(5),
        };
        let writer = Writer::connect(&cluster.primary_url(), &opts)
            .await
            .map_err(|e| anyhow::anyhow!("the write peak cannot start: {e}"))?;
        let stats = cluster.connect(PRIMARY).await?;
        let rows_before = rows_changed(&stats).await;
        let sampled_primary = cluster.connect(PRIMARY).await?;
        let mut sampled_replicas = Vec::new();
        for &node in replicas {
            sampled_replicas.push(cluster.connect(node).await?);
        }
        let replicas_sampled = sampled_replicas.len();

        let origin = Instant::now();
        let ticks = Arc::new(Mutex::new(Vec::new()));
        let (stop_sampler, sampler_stopped) = watch::channel(false);
        let sampler = tokio::spawn(sample(
            sampled_primary,
            sampled_replicas,
            origin,
            ticks.clone(),
            sampler_stopped,
        ));
        let progress = Arc::new(WriteProgress::default());
        let (stop_writer, writer_stopped) = oneshot::channel::<()>();
        let writer = tokio::spawn({
            let progress = progress.clone();
            async move {
                // A dropped sender stops the writer too.
                let stop = async move {
                    let _ = writer_stopped.await;
                };
                writer.run(&progress, stop).await
            }
        });
        Ok(WritePeakRun {
            peak: *peak,
            progress,
            origin,
            stats,
            rows_before,
            stop_writer: Some(stop_writer),
            writer: Some(writer),
            stop_sampler,
            sampler: Some(sampler),
            ticks,
            replicas_sampled,
        })
    }

    /// The writer's counters, for the load stage to read at the edges of its window.
    pub fn progress(&self) -> Arc<WriteProgress> {
        self.progress.clone()
    }

    /// Stop the writer and the sampler, and work out the figures over `window`.
    pub async fn finish(mut self, window: Window) -> anyhow::Result<WritePeakResult> {
        if let Some(stop) = self.stop_writer.take() {
            let _ = stop.send(());
        }
        let summary = match self.writer.take() {
            Some(task) => task
                .await
                .map_err(|e| anyhow::anyhow!("the write peak's task failed: {e}"))?
                .map_err(|e| anyhow::anyhow!("the write peak failed: {e}"))?,
            None => anyhow::bail!("the write peak was already finished"),
        };
        let _ = self.stop_sampler.send(true);
        if let Some(mut task) = self.sampler.take() {
            if tokio::time::timeout(SAMPLER_STOP_WAIT, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
        let total_rows = summary.counts.rows();
        let primary_rows_changed = self.rows_changed_since_start(total_rows).await;

        let secs = (window.to - window.from).as_secs_f64().max(0.001);
        let done = window.counts_to.since(&window.counts_from);
        let ticks = std::mem::take(&mut *self.ticks.lock().unwrap());
        let lag = LagFigures::of(
            &ticks,
            window
                .from
                .saturating_duration_since(self.origin)
                .as_secs_f64(),
            window
                .to
                .saturating_duration_since(self.origin)
                .as_secs_f64(),
        );
        Ok(WritePeakResult {
            tx_per_sec_asked: self.peak.tx_per_sec,
            connections: summary.connections,
            transactions: done.transactions,
            tx_per_sec: round_to(done.transactions as f64 / secs, 1),
            rows_written: done.rows(),
            rows_per_sec: round_to(done.rows() as f64 / secs, 1),
            total_rows_written: total_rows,
            primary_rows_changed,
            primary_cpu_utilization: window.primary_cpu_utilization,
            replicas_sampled: self.replicas_sampled,
            lag_samples: lag.samples,
            replay_lag_ms_median: lag.secs_median.map(|s| round_to(s * 1000.0, 1)),
            replay_lag_ms_max: lag.secs_max.map(|s| round_to(s * 1000.0, 1)),
            replay_lag_bytes_median: lag.bytes_median,
            replay_lag_bytes_max: lag.bytes_max,
        })
    }

    /// Rows the primary's statistics counted since the start, once they count at least
    /// `written` (the writer's backends have flushed them) or [`STATS_WAIT`] has passed.
    async fn rows_changed_since_start(&self, written: u64) -> Option<u64> {
        let before = self.rows_before?;
        let deadline = Instant::now() + STATS_WAIT;
        loop {
            let changed = rows_changed(&self.stats).await?.saturating_sub(before);
            if changed >= written || Instant::now() >= deadline {
                return Some(changed);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for WritePeakRun {
    fn drop(&mut self) {
        // Only an unfinished run has tasks left: an interrupted stage must not leave writes on.
        if let Some(task) = self.writer.take() {
            task.abort();
        }
        if let Some(task) = self.sampler.take() {
            task.abort();
        }
    }
}

async fn rows_changed(client: &Client) -> Option<u64> {
    let row = client.query_one(ROWS_CHANGED_SQL, &[]).await.ok()?;
    Some(row.get::<_, i64>(0).max(0) as u64)
}

/// Read the primary's position and then each replica's every [`LAG_INTERVAL`] into `ticks`,
/// until stopped. A server that does not answer a reading is left out of that tick.
async fn sample(
    primary: Client,
    replicas: Vec<Client>,
    origin: Instant,
    ticks: Arc<Mutex<Vec<Tick>>>,
    mut stopped: watch::Receiver<bool>,
) {
    let Ok(primary_sql) = primary.prepare(PRIMARY_POSITION_SQL).await else {
        return;
    };
    let mut sampled = Vec::new();
    for client in &replicas {
        if let Ok(sql) = client.prepare(REPLAY_POSITION_SQL).await {
            sampled.push((client, sql));
        }
    }
    let mut interval = tokio::time::interval(LAG_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stopped.changed() => return,
        }
        let Some(primary_point) = position(&primary, &primary_sql, origin).await else {
            continue;
        };
        let mut replays = Vec::with_capacity(sampled.len());
        for (client, sql) in &sampled {
            if let Some(point) = position(client, sql, origin).await {
                replays.push(point);
            }
        }
        ticks.lock().unwrap().push(Tick {
            primary: primary_point,
            replays,
        });
    }
}

/// One WAL position, at the middle of the round trip that read it.
async fn position(client: &Client, sql: &Statement, origin: Instant) -> Option<WalPoint> {
    let sent = Instant::now();
    let row = client.query_one(sql, &[]).await.ok()?;
    let bytes: Option<i64> = row.get(0);
    let at = sent + sent.elapsed() / 2;
    Some((
        at.saturating_duration_since(origin).as_secs_f64(),
        bytes?.max(0) as u64,
    ))
}

/// How far behind the primary a replica is that had replayed up to `replayed` at `at`, in
/// seconds: `at` less the instant the primary's WAL passed `replayed`, interpolated between the
/// two primary readings around that position (WAL written at an even pace between readings).
/// Only readings taken by `at` count. 0 when the replica has replayed all the primary had at its
/// latest reading; when it has not even reached the first reading, the time since that reading
/// (a lower bound). `None` without a primary reading.
fn replay_lag_secs(primary: &[WalPoint], at: f64, replayed: u64) -> Option<f64> {
    let known = &primary[..primary.partition_point(|p| p.0 <= at)];
    let &(_, latest) = known.last()?;
    if replayed >= latest {
        return Some(0.0);
    }
    let lag = match known.iter().rposition(|p| p.1 <= replayed) {
        None => at - known[0].0,
        Some(i) => {
            // replayed < latest, so a later reading exists and is past `replayed`.
            let ((t0, l0), (t1, l1)) = (known[i], known[i + 1]);
            let passed = t0 + (t1 - t0) * (replayed - l0) as f64 / (l1 - l0) as f64;
            at - passed
        }
    };
    Some(lag.max(0.0))
}

/// The lag over a window: per tick the slowest replica, then the median and the max of those.
#[derive(Debug, Clone, Default, PartialEq)]
struct LagFigures {
    samples: usize,
    secs_median: Option<f64>,
    secs_max: Option<f64>,
    bytes_median: Option<u64>,
    bytes_max: Option<u64>,
}

impl LagFigures {
    /// Over the ticks whose primary reading is within `from..=to` (seconds, as the ticks).
    fn of(ticks: &[Tick], from: f64, to: f64) -> LagFigures {
        let primary: Vec<WalPoint> = ticks.iter().map(|t| t.primary).collect();
        let mut secs = Vec::new();
        let mut bytes = Vec::new();
        for tick in ticks
            .iter()
            .filter(|t| (from..=to).contains(&t.primary.0) && !t.replays.is_empty())
        {
            let worst = tick
                .replays
                .iter()
                .filter_map(|&(at, replayed)| replay_lag_secs(&primary, at, replayed))
                .fold(0.0, f64::max);
            let behind = tick
                .replays
                .iter()
                .map(|&(_, replayed)| tick.primary.1.saturating_sub(replayed))
                .max()
                .unwrap_or(0);
            secs.push(worst);
            bytes.push(behind as f64);
        }
        let max = |v: &[f64]| v.iter().copied().reduce(f64::max);
        LagFigures {
            samples: secs.len(),
            secs_median: median(&secs),
            secs_max: max(&secs),
            bytes_median: median(&bytes).map(|b| b.round() as u64),
            bytes_max: max(&bytes).map(|b| b as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The primary writes 1,000 bytes a second, read every 0.25 s from t = 0.
    fn steady() -> Vec<WalPoint> {
        (0..=8).map(|i| (i as f64 * 0.25, i as u64 * 250)).collect()
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn a_replica_that_replayed_everything_has_no_lag() {
        assert_eq!(replay_lag_secs(&steady(), 2.0, 2_000), Some(0.0));
        // Past the latest reading (the primary wrote more after it): still no lag.
        assert_eq!(replay_lag_secs(&steady(), 2.0, 2_100), Some(0.0));
        // An idle primary: a replica at its position is current, however long the idle spell.
        let idle = [(0.0, 500), (0.25, 500), (10.0, 500)];
        assert_eq!(replay_lag_secs(&idle, 10.0, 500), Some(0.0));
    }

    #[test]
    fn the_lag_is_interpolated_between_the_readings_around_the_replay() {
        // At t = 2.0 the replica has replayed byte 1,600, which the primary wrote at t = 1.6.
        assert!(close(replay_lag_secs(&steady(), 2.0, 1_600), 0.4));
        // On a reading exactly: byte 1,000 was written at t = 1.0.
        assert!(close(replay_lag_secs(&steady(), 2.0, 1_000), 1.0));
        // Readings after `at` do not count: at t = 1.1 the latest is t = 1.0, byte 1,000.
        assert_eq!(replay_lag_secs(&steady(), 1.1, 1_000), Some(0.0));
        assert!(close(replay_lag_secs(&steady(), 1.1, 900), 0.2));
    }

    #[test]
    fn a_replica_behind_the_first_reading_lags_at_least_since_then() {
        let primary = [(1.0, 5_000), (1.25, 6_000)];
        assert!(close(replay_lag_secs(&primary, 1.3, 100), 0.3));
        assert_eq!(replay_lag_secs(&[], 1.0, 100), None);
        assert_eq!(replay_lag_secs(&primary, 0.5, 100), None, "no reading yet");
    }

    fn tick(at: f64, primary: u64, replays: &[u64]) -> Tick {
        Tick {
            primary: (at, primary),
            replays: replays.iter().map(|&r| (at + 0.01, r)).collect(),
        }
    }

    #[test]
    fn figures_take_the_slowest_replica_per_tick_within_the_window() {
        // 1,000 bytes/s; two replicas, the second 0.5 s behind from t = 1.0 on.
        let ticks: Vec<Tick> = (0..=12)
            .map(|i| {
                let t = i as f64 * 0.25;
                let at = (i * 250) as u64;
                let slow = if t >= 1.0 { at - 500 } else { at };
                tick(t, at, &[at, slow])
            })
            .collect();
        let all = LagFigures::of(&ticks, 0.0, 10.0);
        assert_eq!(all.samples, 13);
        assert!(close(all.secs_max, 0.51), "{all:?}");
        let window = LagFigures::of(&ticks, 1.0, 2.0);
        assert_eq!(window.samples, 5);
        assert!(close(window.secs_median, 0.51), "{window:?}");
        assert_eq!(window.bytes_median, Some(500));
        assert_eq!(window.bytes_max, Some(500));
        let before = LagFigures::of(&ticks, 0.0, 0.9);
        assert_eq!((before.samples, before.bytes_max), (4, Some(0)));
        assert_eq!(before.secs_max, Some(0.0));
    }

    #[test]
    fn no_replica_no_figures() {
        let ticks = vec![tick(0.0, 10, &[]), tick(0.25, 20, &[])];
        assert_eq!(LagFigures::of(&ticks, 0.0, 1.0), LagFigures::default());
    }
}

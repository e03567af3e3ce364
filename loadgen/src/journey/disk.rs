//! The journey's disk: how much its servers will hold at their largest stage, checked against
//! the free space before anything starts (a full disk half an hour into a 170M-row run loses
//! the run), and the most they held, watched while it runs.
//!
//! Every server holds a full copy of the data, so the need is copies x (one copy + the WAL a
//! server keeps). One copy's size per product and per relation row was measured at 10M products
//! (8.2 GB of tables and 3.6 GB of indexes, `results/seeder.md`); the WAL a server keeps is
//! bounded by the journey's `max_wal_size` ([`JOURNEY_MAX_WAL_MB`]) and trimmed after seeding.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::model::StageKind;
use super::spec::JourneyPlan;
use crate::figures::round_to;

/// Bytes one product takes in one copy: its row in `products` and its primary key entry.
const BYTES_PER_PRODUCT: f64 = 136.0;
/// Bytes one relation row takes: its heap tuple and its primary key entry.
const BYTES_PER_RELATION_ROW: f64 = 65.0;
/// The journey's servers' `max_wal_size`: enough for checkpoints not to crowd the seeding,
/// small enough that four servers' WAL is not a copy of the data each.
pub const JOURNEY_MAX_WAL_MB: u64 = 2048;
/// Share added for what the estimate leaves out (catalogs, free space map, temporary files of
/// the index build, the results folder).
const MARGIN: f64 = 0.10;

/// What the journey needs and what it found, in `journey.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DiskUse {
    /// Where the servers keep their data.
    pub dir: PathBuf,
    /// Servers holding a copy at the largest stage (the primary and its replicas).
    pub copies: usize,
    /// One copy of the data, and the WAL one server may keep, MB (estimates).
    pub copy_mb: f64,
    pub wal_mb_per_server: f64,
    /// copies x (copy + WAL), with a margin, MB.
    pub need_mb: f64,
    /// Free space on the folder's file system before the journey started, MB.
    pub free_mb: f64,
    /// The most the servers' folder held at any sample (every 5 s), MB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_mb: Option<f64>,
}

impl DiskUse {
    /// The line printed before the first stage.
    pub fn line(&self) -> String {
        format!("disk: {}", self.summary())
    }

    /// What it needs and what there is, in a sentence.
    pub fn summary(&self) -> String {
        format!(
            "the journey needs about {} in {} ({} copies of {} of data, plus up to {} of WAL each), {} free",
            gb(self.need_mb),
            self.dir.display(),
            self.copies,
            gb(self.copy_mb),
            gb(self.wal_mb_per_server),
            gb(self.free_mb)
        )
    }

    pub fn fits(&self) -> bool {
        self.need_mb <= self.free_mb
    }
}

fn gb(mb: f64) -> String {
    if mb >= 1024.0 {
        format!("{:.1} GB", mb / 1024.0)
    } else {
        format!("{mb:.0} MB")
    }
}

/// The journey's need, before anything exists: `free_mb` is the free space it will be put
/// against.
pub fn estimate(plan: &JourneyPlan, dir: &Path, free_mb: f64) -> DiskUse {
    let copy_mb = (plan.products as f64 * BYTES_PER_PRODUCT
        + plan.relation_rows() as f64 * BYTES_PER_RELATION_ROW)
        / (1024.0 * 1024.0);
    // A server keeps at most about max_wal_size of WAL, and no more than it was ever sent: the
    // seeding writes about one copy's worth.
    let wal_mb_per_server = (JOURNEY_MAX_WAL_MB as f64 * 1.5).min(copy_mb) + 64.0;
    let replicas = plan
        .stages
        .iter()
        .filter(|s| s.kind == StageKind::Load)
        .map(|s| s.replicas)
        .max()
        .unwrap_or(0)
        // The journey starts with one replica, whatever its stages ask.
        .max(1);
    let copies = replicas + 1;
    let need_mb = copies as f64 * (copy_mb + wal_mb_per_server) * (1.0 + MARGIN);
    DiskUse {
        dir: dir.to_path_buf(),
        copies,
        copy_mb: round_to(copy_mb, 1),
        wal_mb_per_server: round_to(wal_mb_per_server, 1),
        need_mb: round_to(need_mb, 1),
        free_mb: round_to(free_mb, 1),
        peak_mb: None,
    }
}

/// Free space, MB, on the file system that holds `dir` (or would: its nearest existing
/// ancestor).
pub fn free_mb(dir: &Path) -> anyhow::Result<f64> {
    let mut probe = dir.to_path_buf();
    if probe.is_relative() {
        probe = std::env::current_dir()?.join(probe);
    }
    while !probe.exists() {
        if !probe.pop() {
            anyhow::bail!("no existing folder above {}", dir.display());
        }
    }
    let stat = nix::sys::statvfs::statvfs(&probe)
        .map_err(|e| anyhow::anyhow!("cannot read the free space of {}: {e}", probe.display()))?;
    Ok(stat.blocks_available() as f64 * stat.fragment_size() as f64 / (1024.0 * 1024.0))
}

/// Why the journey refuses to start, or `None` when it fits.
pub fn refusal(disk: &DiskUse) -> Option<String> {
    (!disk.fits()).then(|| {
        format!(
            "not enough disk: {}. Free {} more, put the servers on a bigger disk (--stack-dir), or run fewer products (--products)",
            disk.summary(),
            gb(disk.need_mb - disk.free_mb)
        )
    })
}

/// Size of everything under `dir`, MB (files that vanish while it walks are skipped).
pub fn folder_mb(dir: &Path) -> f64 {
    fn walk(dir: &Path) -> u64 {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        entries
            .flatten()
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() => walk(&e.path()),
                Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => 0,
            })
            .sum()
    }
    round_to(walk(dir) as f64 / (1024.0 * 1024.0), 1)
}

/// Samples a folder's size every few seconds on its own thread and keeps the latest and the
/// largest; stops when dropped. The only walk of the servers' folder: stages read its latest
/// sample rather than walk tens of GB again.
pub struct DiskWatch {
    latest_kb: Arc<AtomicU64>,
    peak_kb: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl DiskWatch {
    pub fn start(dir: PathBuf) -> DiskWatch {
        let latest_kb = Arc::new(AtomicU64::new(0));
        let peak_kb = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (latest, peak, halt) = (latest_kb.clone(), peak_kb.clone(), stop.clone());
        std::thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                let kb = (folder_mb(&dir) * 1024.0) as u64;
                latest.store(kb, Ordering::Relaxed);
                peak.fetch_max(kb, Ordering::Relaxed);
                // Short sleeps, so a dropped watch ends promptly.
                for _ in 0..50 {
                    if halt.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
        DiskWatch {
            latest_kb,
            peak_kb,
            stop,
        }
    }

    /// The size at the latest sample (at most 5 s old), MB.
    pub fn latest_mb(&self) -> f64 {
        round_to(self.latest_kb.load(Ordering::Relaxed) as f64 / 1024.0, 1)
    }

    /// The largest size seen so far, MB.
    pub fn peak_mb(&self) -> f64 {
        round_to(self.peak_kb.load(Ordering::Relaxed) as f64 / 1024.0, 1)
    }
}

impl Drop for DiskWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journey::spec::{JourneyFile, Overrides, DEFAULT_JOURNEY};

    fn default_plan(products: u64) -> JourneyPlan {
        let file = JourneyFile::parse(DEFAULT_JOURNEY, "default.toml").unwrap();
        JourneyPlan::resolve(
            &file,
            &Overrides {
                products: Some(products),
                ..Overrides::default()
            },
        )
    }

    #[test]
    fn the_full_170m_rows_fit_60_gb_with_three_copies() {
        let disk = estimate(&default_plan(10_000_000), Path::new("/d"), 60.0 * 1024.0);
        assert_eq!(disk.copies, 3, "a primary and two replicas at most");
        // 10M x 136 B + 160M x 65 B = 11.2 GiB, the measured 8.2 GB + 3.6 GB.
        assert!((disk.copy_mb / 1024.0 - 11.0).abs() < 0.5, "{disk:?}");
        assert!(disk.fits(), "{}", disk.line());
        assert!(disk.need_mb / 1024.0 > 40.0, "{}", disk.line());
        assert_eq!(refusal(&disk), None);
    }

    #[test]
    fn a_disk_too_small_is_refused_with_what_it_needs() {
        let disk = estimate(&default_plan(10_000_000), Path::new("/d"), 20.0 * 1024.0);
        let why = refusal(&disk).expect("refused");
        assert!(
            why.starts_with("not enough disk: the journey needs about 4"),
            "{why}"
        );
        assert!(why.contains("3 copies of 11"), "{why}");
        assert!(why.contains("20.0 GB free"), "{why}");
        assert!(why.contains("--products"), "{why}");
    }

    #[test]
    fn the_small_journey_needs_little_and_its_wal_is_no_more_than_its_data() {
        let disk = estimate(&default_plan(100_000), Path::new("/d"), 1024.0);
        assert!(disk.copy_mb < 150.0, "{disk:?}");
        // Less data than max_wal_size: a server keeps no more WAL than the data it was sent.
        assert!(
            (disk.wal_mb_per_server - (disk.copy_mb + 64.0)).abs() < 0.11,
            "{disk:?}"
        );
        assert!(disk.need_mb < 1024.0, "{}", disk.line());
    }

    #[test]
    fn free_space_is_read_from_the_nearest_existing_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let free = free_mb(&tmp.path().join("not/yet/made")).unwrap();
        assert!(free > 0.0);
        std::fs::write(tmp.path().join("f"), vec![0u8; 3 * 1024 * 1024]).unwrap();
        assert!((folder_mb(tmp.path()) - 3.0).abs() < 0.01);
    }
}

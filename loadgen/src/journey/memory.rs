//! Whether a stage's data fitted its databases' memory. The story's "1 GB -> 4 GB" step was
//! about the data outgrowing a small host's memory; at 100,000 products it always fits, at 10M
//! (12 GB a copy) it does not, and a database that waits on its disk looks idle by its CPU. So a
//! load stage reads, from the serving servers: block hits and reads (`pg_stat_database`), the
//! bytes their processes read from the disk itself (in the measured window, from /proc), and
//! the memory their groups hold; [`judge`] turns that into a [`DatabaseMemory`].

use stack::cgroup::MemoryUse;
use stack::Cluster;

use super::model::DatabaseMemory;
use crate::figures::round_to;

/// `pg_stat_database` counters of the serving servers, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct BlockCounts {
    pub hit: u64,
    pub read: u64,
}

impl BlockCounts {
    /// Read on each of `nodes`; a server that cannot be asked counts nothing (the stage still
    /// has its other figures).
    pub async fn read(cluster: &Cluster, nodes: &[usize]) -> BlockCounts {
        let mut total = BlockCounts::default();
        for &node in nodes {
            let Ok(client) = cluster.connect(node).await else {
                continue;
            };
            if let Ok(row) = client
                .query_one(
                    "SELECT blks_hit, blks_read FROM pg_stat_database WHERE datname = current_database()",
                    &[],
                )
                .await
            {
                total.hit += row.get::<_, i64>(0).max(0) as u64;
                total.read += row.get::<_, i64>(1).max(0) as u64;
            }
        }
        total
    }

    fn since(self, earlier: BlockCounts) -> BlockCounts {
        BlockCounts {
            hit: self.hit.saturating_sub(earlier.hit),
            read: self.read.saturating_sub(earlier.read),
        }
    }
}

/// One copy's size, MB, read on `node`.
pub(crate) async fn data_mb(cluster: &Cluster, node: usize) -> f64 {
    let Ok(client) = cluster.connect(node).await else {
        return 0.0;
    };
    client
        .query_one("SELECT pg_database_size(current_database())", &[])
        .await
        .map(|row| row.get::<_, i64>(0) as f64 / (1024.0 * 1024.0))
        .unwrap_or(0.0)
}

/// What a stage measured, put together.
pub(crate) struct Measured {
    pub data_mb: f64,
    pub before: BlockCounts,
    pub after: BlockCounts,
    /// Bytes read from the disk by the serving servers in the measured window.
    pub disk_read_bytes: u64,
    /// Requests answered or failed in the measured window.
    pub requests: u64,
    /// Each serving server's group, where it has one with a memory controller.
    pub groups: Vec<MemoryUse>,
    pub memory_limit_mb: Option<u64>,
}

/// Whether the data fitted: memory limits the stage when requests waited on the disk at least
/// [`DatabaseMemory::MEMORY_BOUND_READS`] times each on average.
pub(crate) fn judge(m: &Measured) -> DatabaseMemory {
    let blocks = m.after.since(m.before);
    let accesses = blocks.hit + blocks.read;
    let disk_reads = m.disk_read_bytes as f64 / 8192.0;
    let disk_reads_per_request = if m.requests > 0 {
        disk_reads / m.requests as f64
    } else {
        0.0
    };
    let mb = |b: u64| round_to(b as f64 / (1024.0 * 1024.0), 1);
    DatabaseMemory {
        data_mb: round_to(m.data_mb, 1),
        blocks_hit: blocks.hit,
        blocks_read: blocks.read,
        buffer_hit_share: (accesses > 0)
            .then(|| (blocks.hit as f64 / accesses as f64 * 10_000.0).round() / 10_000.0),
        disk_read_mb: mb(m.disk_read_bytes),
        disk_reads_per_request: round_to(disk_reads_per_request, 3),
        memory_used_mb: (!m.groups.is_empty()).then(|| mb(m.groups.iter().map(|g| g.bytes).sum())),
        page_cache_mb: (!m.groups.is_empty())
            .then(|| mb(m.groups.iter().map(|g| g.page_cache_bytes).sum())),
        memory_limit_mb: m.memory_limit_mb,
        memory_bound: disk_reads_per_request >= DatabaseMemory::MEMORY_BOUND_READS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(hit: u64, read: u64, disk_read_bytes: u64, requests: u64) -> Measured {
        Measured {
            data_mb: 11_800.0,
            before: BlockCounts {
                hit: 1000,
                read: 10,
            },
            after: BlockCounts {
                hit: 1000 + hit,
                read: 10 + read,
            },
            disk_read_bytes,
            requests,
            groups: vec![
                MemoryUse {
                    bytes: 512 << 20,
                    page_cache_bytes: 300 << 20,
                },
                MemoryUse {
                    bytes: 512 << 20,
                    page_cache_bytes: 200 << 20,
                },
            ],
            memory_limit_mb: Some(1024),
        }
    }

    #[test]
    fn data_in_memory_does_not_limit() {
        let m = judge(&measured(99_000, 1_000, 8192 * 100, 10_000));
        assert_eq!((m.blocks_hit, m.blocks_read), (99_000, 1_000));
        assert_eq!(m.buffer_hit_share, Some(0.99));
        assert_eq!(m.disk_reads_per_request, 0.01);
        assert_eq!(m.memory_used_mb, Some(1024.0));
        assert_eq!(m.page_cache_mb, Some(500.0));
        assert!(!m.memory_bound);
        assert!(
            m.sentence()
                .ends_with("the data fits, memory does not limit it."),
            "{}",
            m.sentence()
        );
    }

    #[test]
    fn requests_waiting_on_the_disk_are_memory_bound() {
        let m = judge(&measured(50_000, 50_000, 8192 * 30_000, 10_000));
        assert_eq!(m.disk_reads_per_request, 3.0);
        assert!(m.memory_bound);
        let s = m.sentence();
        assert!(
            s.contains("50.00% buffer hits, 3.00 disk reads per request"),
            "{s}"
        );
        assert!(s.contains("1024 MB held (limit 1024 MB each)"), "{s}");
        assert!(s.ends_with("memory limits it."), "{s}");
    }

    #[test]
    fn nothing_measured_says_so_and_limits_nothing() {
        let mut m = measured(0, 0, 0, 0);
        m.groups.clear();
        let m = judge(&m);
        assert_eq!(m.buffer_hit_share, None);
        assert_eq!(m.memory_used_mb, None);
        assert!(!m.memory_bound);
        assert!(
            m.sentence().contains("no block accesses"),
            "{}",
            m.sentence()
        );
    }
}

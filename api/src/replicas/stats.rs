//! [`ReplicaStats`]: one replica's state and counters as read at one moment. The replica set
//! hands these out and [`crate::metrics`] renders them; a snapshot is plain data, so the
//! exposition never reaches into a replica's atomics or its pool.

use std::time::Duration;

/// One replica (or the fallback primary) as read at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaStats {
    /// `host:port/database`: the URL without user or password.
    pub label: String,
    pub is_fallback: bool,
    /// Requests in flight on the replica.
    pub in_flight: u64,
    pub banned: bool,
    /// The last health check answered (or was only slow).
    pub healthy: bool,
    /// Replay lag seen by the last health check, in milliseconds.
    pub lag_ms: u64,
    /// Queries sent.
    pub queries: u64,
    /// Failed attempts.
    pub failures: u64,
    /// Times banned.
    pub bans: u64,
    /// Failed health checks taken for overload rather than failure.
    pub slow_checks: u64,
    /// Query timeouts taken for load, not failure (no ban).
    pub timeouts_under_load: u64,
    pub pool: PoolStats,
}

/// The replica's connection pool as read at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub connections: u32,
    pub idle_connections: u32,
    /// Checkouts that had to wait for a connection.
    pub waits: u64,
    /// Time spent waiting for a connection.
    pub wait_time: Duration,
    /// Failed connection attempts.
    pub connect_failures: u64,
}

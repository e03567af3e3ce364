//! The replicas' clock: milliseconds since the first call, monotonic and cheap enough to read
//! on every request and to keep in an atomic. Only the edges read it (a request picking a
//! replica, an attempt ending, a health check); the routing state ([`super::ban::Ban`]) and the
//! decisions ([`super::select`], [`super::health`]) take the time as an argument, so tests
//! drive them with any clock they like.

use std::sync::OnceLock;
use std::time::Instant;

/// Milliseconds since the first call, plus one: 0 never names a moment, so it can mean "none".
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

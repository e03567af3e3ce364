//! [`Ban`]: whether a replica is skipped, and until when. A failure bans a replica for a
//! back-off that doubles with each consecutive failure up to a maximum; an answered query ends
//! the run of failures; the health monitor lifts a ban early. The clock is passed in, so a ban's
//! expiry is tested with made-up times.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// How long bans last: `base` after one failure, doubling per consecutive failure, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The ban after `failures` earlier consecutive failures.
    pub fn after(&self, failures: u32) -> Duration {
        let ms = (self.base.as_millis() as u64)
            .saturating_mul(1 << failures.min(16))
            .min(self.max.as_millis() as u64);
        Duration::from_millis(ms)
    }
}

/// One replica's ban; lock-free, shared by every request and the health monitor.
#[derive(Debug, Default)]
pub struct Ban {
    /// The clock reading until which the replica is skipped; 0 when not banned.
    until_ms: AtomicU64,
    consecutive_failures: AtomicU32,
}

impl Ban {
    /// Bans from `now_ms` for the back-off this failure earns; returns that back-off.
    pub fn ban(&self, now_ms: u64, backoff: &Backoff) -> Duration {
        let failures = self.consecutive_failures.fetch_add(1, Relaxed);
        let length = backoff.after(failures);
        self.until_ms
            .store(now_ms + length.as_millis() as u64, Relaxed);
        length
    }

    pub fn is_banned(&self, now_ms: u64) -> bool {
        self.until_ms.load(Relaxed) > now_ms
    }

    /// Ends the ban now, and the run of failures with it.
    pub fn unban(&self) {
        self.until_ms.store(0, Relaxed);
        self.consecutive_failures.store(0, Relaxed);
    }

    /// A query answered: the next failure starts the back-off again from `base`. A ban in
    /// force stays (the answer may come from a query sent before it).
    pub fn answered(&self) {
        self.consecutive_failures.store(0, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKOFF: Backoff = Backoff {
        base: Duration::from_millis(100),
        max: Duration::from_millis(1000),
    };

    #[test]
    fn a_ban_lasts_its_back_off_then_expires() {
        let ban = Ban::default();
        assert!(!ban.is_banned(5));
        assert_eq!(ban.ban(1000, &BACKOFF), Duration::from_millis(100));
        assert!(ban.is_banned(1000));
        assert!(ban.is_banned(1099));
        assert!(!ban.is_banned(1100), "expired at its end");
        assert!(!ban.is_banned(5000));
    }

    #[test]
    fn consecutive_failures_double_the_ban_up_to_the_maximum() {
        let ban = Ban::default();
        let lengths: Vec<u64> = (0..6)
            .map(|_| ban.ban(0, &BACKOFF).as_millis() as u64)
            .collect();
        assert_eq!(lengths, [100, 200, 400, 800, 1000, 1000]);
        assert!(ban.is_banned(999));
        assert!(!ban.is_banned(1000));
    }

    #[test]
    fn an_answer_restarts_the_back_off_but_keeps_the_ban() {
        let ban = Ban::default();
        ban.ban(0, &BACKOFF);
        ban.ban(0, &BACKOFF);
        ban.answered();
        assert!(ban.is_banned(150), "the second ban (200 ms) still holds");
        assert_eq!(ban.ban(0, &BACKOFF), Duration::from_millis(100));
    }

    #[test]
    fn unban_ends_the_ban_and_the_run_of_failures() {
        let ban = Ban::default();
        ban.ban(0, &BACKOFF);
        ban.ban(0, &BACKOFF);
        ban.unban();
        assert!(!ban.is_banned(1));
        assert_eq!(ban.ban(10, &BACKOFF), Duration::from_millis(100));
        assert!(ban.is_banned(109));
    }

    #[test]
    fn huge_failure_counts_do_not_overflow() {
        let backoff = Backoff {
            base: Duration::from_millis(3_600_000),
            max: Duration::from_millis(3_600_000),
        };
        assert_eq!(backoff.after(u32::MAX), Duration::from_millis(3_600_000));
    }
}

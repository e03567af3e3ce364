//! [`ReplayLag`]: a replica's replay lag worked out from successive health-check readings of
//! how far it has received and replayed WAL. Pure: the monitor feeds it readings and the time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tokio_postgres::types::PgLsn;

/// Replay lag as the time a replica has held WAL it has not replayed yet.
///
/// Each check notes the position received so far and when; the lag is the age of the oldest
/// noted position the replay has not reached. A replica that keeps up shows less than one
/// health interval; one that stays 5 s behind shows about 5 s at every check; one whose replay
/// is stuck (paused, or waiting on a conflicting query) shows a lag that grows until it catches
/// up. It errs low by up to one interval, where the usual
/// `now() - pg_last_xact_replay_timestamp()` errs high by however long the primary was idle.
#[derive(Debug, Default)]
pub struct ReplayLag {
    /// Received positions not yet replayed, oldest first, with when each was first seen.
    pending: VecDeque<(PgLsn, Instant)>,
}

impl ReplayLag {
    /// Bounds the memory of a replica that stays behind for a long time: once full, no newer
    /// position is noted, so the oldest (what the lag is measured from) is always kept.
    const MAX_PENDING: usize = 256;

    pub fn observe(
        &mut self,
        received: Option<PgLsn>,
        replayed: Option<PgLsn>,
        now: Instant,
    ) -> Duration {
        let (Some(received), Some(replayed)) = (received, replayed) else {
            // Not streaming (yet): nothing says the replica is behind.
            self.pending.clear();
            return Duration::ZERO;
        };
        while self
            .pending
            .front()
            .is_some_and(|&(lsn, _)| lsn <= replayed)
        {
            self.pending.pop_front();
        }
        let is_new = self.pending.back().is_none_or(|&(lsn, _)| received > lsn);
        if received > replayed && is_new && self.pending.len() < Self::MAX_PENDING {
            self.pending.push_back((received, now));
        }
        self.pending.front().map_or(Duration::ZERO, |&(_, since)| {
            now.saturating_duration_since(since)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lsn(n: u64) -> Option<PgLsn> {
        Some(PgLsn::from(n))
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_replica_that_keeps_up_shows_no_lag() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut lag = ReplayLag::default();
        assert_eq!(lag.observe(lsn(10), lsn(10), t0), Duration::ZERO);
        // Mid-replay at one check, past that point at the next: never late by a whole check.
        assert_eq!(lag.observe(lsn(20), lsn(15), at(0)), Duration::ZERO);
        assert_eq!(lag.observe(lsn(30), lsn(25), at(100)), Duration::ZERO);
        assert_eq!(lag.observe(lsn(30), lsn(30), at(200)), Duration::ZERO);
    }

    #[test]
    fn a_stuck_replay_shows_a_growing_lag_until_it_catches_up() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut lag = ReplayLag::default();
        lag.observe(lsn(20), lsn(10), t0);
        assert_eq!(lag.observe(lsn(25), lsn(10), at(700)), ms(700));
        assert_eq!(lag.observe(lsn(30), lsn(19), at(1500)), ms(1500));
        // Past what was received at 0, short of what was received at 700.
        assert_eq!(lag.observe(lsn(30), lsn(22), at(1600)), ms(900));
        assert_eq!(lag.observe(lsn(30), lsn(30), at(2000)), Duration::ZERO);
    }

    #[test]
    fn a_replica_steadily_one_second_behind_shows_about_one_second() {
        let t0 = Instant::now();
        let mut lag = ReplayLag::default();
        // WAL arrives at 1 unit per ms; the replay is where the primary was 1000 ms earlier.
        for check in 0..100u64 {
            let now_ms = check * 100;
            let seen = lag.observe(
                lsn(1_000_000 + now_ms),
                lsn(1_000_000 + now_ms.saturating_sub(1000)),
                t0 + ms(now_ms),
            );
            if now_ms >= 1000 {
                assert!(
                    seen >= ms(900) && seen <= ms(1000),
                    "{seen:?} at {now_ms} ms"
                );
            }
        }
    }

    #[test]
    fn no_wal_receiver_means_no_known_lag() {
        let t0 = Instant::now();
        let mut lag = ReplayLag::default();
        lag.observe(lsn(20), lsn(10), t0);
        assert_eq!(lag.observe(None, lsn(10), t0 + ms(5000)), Duration::ZERO);
    }
}

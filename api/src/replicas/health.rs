//! The health monitor's decisions, apart from its loop ([`super::monitor`]): what an
//! unanswered check means ([`judge`]: loaded or down), what each outcome does to a replica's
//! routing state ([`apply`]), and the way out of "every replica banned"
//! ([`lift_bans_if_stranded`]). The clock is an argument; nothing here does I/O.

use std::sync::Arc;

use super::ban::Backoff;
use super::replica::Replica;
use super::select::{self, Rules};

/// The outcome of one health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthCheck {
    Answered,
    /// No answer, but the replica looks loaded rather than down (requests to it still get
    /// answers, or the check's query waits on an open connection): it keeps the state it had.
    Slow,
    Down,
}

/// What is known when a check got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unanswered {
    /// The check ran out of time, rather than failing with an error.
    pub timed_out: bool,
    /// The health connection is still open.
    pub connection_open: bool,
    /// A request to the replica got an answer since the check started.
    pub answered_since_start: bool,
    /// Checks in a row that came out slow before this one.
    pub slow_in_a_row: u32,
}

/// Timed-out checks in a row on an open connection, with no request answered meanwhile,
/// before the replica counts as down (a hung server keeps its TCP connections open; its
/// requests also time out and ban it meanwhile).
pub const MAX_SLOW_CHECKS: u32 = 3;

/// Whether an unanswered check means load or failure.
///
/// A saturated server answers late: that is load, not failure. Taking it for down would turn
/// the overload into fast 503s for every request (the journey's stage 4 measured it), so a
/// failed check is only "slow" while requests to the replica still get answers, or while its
/// query waits on a connection that is still open, up to [`MAX_SLOW_CHECKS`] times.
pub fn judge(check: &Unanswered) -> HealthCheck {
    let waiting = check.timed_out && check.connection_open && check.slow_in_a_row < MAX_SLOW_CHECKS;
    if check.answered_since_start || waiting {
        HealthCheck::Slow
    } else {
        HealthCheck::Down
    }
}

/// Applies a check's outcome to the replica: one that answers again is taken back at once
/// rather than after its ban; one that is down is banned (unless it already is); a slow one
/// keeps its state.
pub fn apply(replica: &Replica, outcome: HealthCheck, now_ms: u64, backoff: &Backoff) {
    match outcome {
        HealthCheck::Slow => replica.count_slow_check(),
        HealthCheck::Answered => {
            if replica.mark_healthy() {
                replica.unban();
                tracing::info!(replica = %replica.label, "replica is back");
            }
        }
        HealthCheck::Down => {
            if replica.mark_down() {
                tracing::warn!(replica = %replica.label, "replica failed its health check");
            }
            if !replica.is_banned(now_ms) {
                replica.ban(now_ms, backoff);
            }
        }
    }
}

/// With no replica usable and no usable fallback, routing serves from the replicas whose health
/// check still answers despite their bans ([`select::choose`]'s last resort). This lifts those
/// bans, so the set leaves that state (and a ban from a blip does not outlive the blip). Returns
/// how many bans it lifted.
pub fn lift_bans_if_stranded(
    replicas: &[Arc<Replica>],
    fallback: Option<&Arc<Replica>>,
    rules: &Rules,
    now_ms: u64,
) -> usize {
    let candidates: Vec<_> = replicas
        .iter()
        .map(|r| r.candidate(now_ms, false))
        .collect();
    let fallback_candidate = fallback.map(|f| f.candidate(now_ms, false));
    if !select::stranded(&candidates, fallback_candidate.as_ref(), rules) {
        return 0;
    }
    let mut lifted = 0;
    for (r, c) in replicas.iter().zip(&candidates) {
        if c.healthy && c.banned {
            r.unban();
            lifted += 1;
        }
    }
    lifted
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::replicas::replica::tests::replica;

    const BACKOFF: Backoff = Backoff {
        base: Duration::from_millis(100),
        max: Duration::from_millis(1000),
    };
    const NO_LAG_BOUND: Rules = Rules { max_lag_ms: None };

    fn timed_out(slow_in_a_row: u32) -> Unanswered {
        Unanswered {
            timed_out: true,
            connection_open: true,
            answered_since_start: false,
            slow_in_a_row,
        }
    }

    #[test]
    fn a_late_check_on_an_open_connection_is_slow_a_few_times() {
        assert_eq!(judge(&timed_out(0)), HealthCheck::Slow);
        assert_eq!(judge(&timed_out(MAX_SLOW_CHECKS - 1)), HealthCheck::Slow);
        assert_eq!(judge(&timed_out(MAX_SLOW_CHECKS)), HealthCheck::Down);
    }

    #[test]
    fn a_failed_or_closed_check_is_down_unless_requests_get_answers() {
        let error = Unanswered {
            timed_out: false,
            ..timed_out(0)
        };
        assert_eq!(judge(&error), HealthCheck::Down);
        let closed = Unanswered {
            connection_open: false,
            ..timed_out(0)
        };
        assert_eq!(judge(&closed), HealthCheck::Down);
        let answering = Unanswered {
            answered_since_start: true,
            ..error
        };
        assert_eq!(judge(&answering), HealthCheck::Slow);
        let answering_long = Unanswered {
            answered_since_start: true,
            ..timed_out(100)
        };
        assert_eq!(judge(&answering_long), HealthCheck::Slow);
    }

    #[tokio::test]
    async fn down_bans_once_and_answering_again_lifts_the_ban() {
        let r = replica(5433);
        apply(&r, HealthCheck::Down, 1000, &BACKOFF);
        assert!(!r.is_healthy() && r.is_banned(1000));
        // Still down while banned: the ban is not stretched.
        apply(&r, HealthCheck::Down, 1050, &BACKOFF);
        assert!(!r.is_banned(1100));
        assert_eq!(r.stats(1000).bans, 1);
        // Down after the ban ran out: banned again, for longer.
        apply(&r, HealthCheck::Down, 1100, &BACKOFF);
        assert!(r.is_banned(1299) && !r.is_banned(1300));
        apply(&r, HealthCheck::Answered, 1150, &BACKOFF);
        assert!(r.is_healthy() && !r.is_banned(1150), "back at once");
    }

    #[tokio::test]
    async fn a_slow_check_keeps_the_state_and_is_counted() {
        let r = replica(5433);
        r.ban(1000, &BACKOFF);
        apply(&r, HealthCheck::Slow, 1010, &BACKOFF);
        assert!(r.is_healthy() && r.is_banned(1010));
        assert_eq!(r.stats(1010).slow_checks, 1);
        // An answer on a healthy, banned replica leaves the ban to run out (a request failed
        // on it since the last check).
        apply(&r, HealthCheck::Answered, 1020, &BACKOFF);
        assert!(r.is_banned(1020));
    }

    #[tokio::test]
    async fn bans_are_lifted_only_when_every_replica_is_banned() {
        let replicas = [Arc::new(replica(5433)), Arc::new(replica(5434))];
        replicas[0].ban(0, &BACKOFF);
        assert_eq!(
            lift_bans_if_stranded(&replicas, None, &NO_LAG_BOUND, 10),
            0,
            "one replica is usable"
        );
        assert!(replicas[0].is_banned(10));
        replicas[1].ban(0, &BACKOFF);
        assert_eq!(lift_bans_if_stranded(&replicas, None, &NO_LAG_BOUND, 10), 2);
        assert!(!replicas[0].is_banned(10) && !replicas[1].is_banned(10));
    }

    #[tokio::test]
    async fn replicas_that_do_not_answer_stay_banned() {
        let replicas = [Arc::new(replica(5433)), Arc::new(replica(5434))];
        apply(&replicas[0], HealthCheck::Down, 0, &BACKOFF);
        replicas[1].ban(0, &BACKOFF);
        assert_eq!(lift_bans_if_stranded(&replicas, None, &NO_LAG_BOUND, 10), 1);
        assert!(replicas[0].is_banned(10), "down: keeps its ban");
        assert!(!replicas[1].is_banned(10), "answers: the last one usable");
    }

    #[tokio::test]
    async fn a_usable_fallback_leaves_the_bans_to_run_out() {
        let replicas = [Arc::new(replica(5433))];
        let fallback = Arc::new(replica(5432));
        replicas[0].ban(0, &BACKOFF);
        assert_eq!(
            lift_bans_if_stranded(&replicas, Some(&fallback), &NO_LAG_BOUND, 10),
            0
        );
        assert!(replicas[0].is_banned(10));
        fallback.ban(0, &BACKOFF);
        assert_eq!(
            lift_bans_if_stranded(&replicas, Some(&fallback), &NO_LAG_BOUND, 10),
            1
        );
        assert!(fallback.is_banned(10), "the fallback's own ban is its own");
    }
}

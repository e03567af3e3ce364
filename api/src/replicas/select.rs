//! Which replica a request goes to, as pure functions over [`Candidate`]s: what each replica
//! looks like at the moment of the pick (banned, healthy, lag, in flight). No clock, no I/O, no
//! side effects, so every rule is tested without a server; the replica set builds the
//! candidates and acts on the [`Choice`].
//!
//! The rules, in order:
//! 1. among usable replicas (not banned, lag within the bound, not the one that just failed),
//!    the one with fewer requests in flight of two random ones;
//! 2. with none usable, the fallback primary if one is configured and not banned;
//! 3. otherwise the last resort: replicas whose health check still answers, bans ignored (a ban
//!    from a blip must not refuse all traffic), by the same two choices among those within the
//!    lag bound, or the freshest if they all lag;
//! 4. with no replica answering, nothing: the request gets a fast 503.

use rand::Rng;

/// One replica as a pick sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Candidate {
    pub banned: bool,
    /// The last health check answered (or was only slow).
    pub healthy: bool,
    pub lag_ms: u64,
    pub in_flight: usize,
    /// This request just failed on it: not to be tried again.
    pub excluded: bool,
}

/// The routing settings the rules read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rules {
    /// Replicas lagging more are skipped while others are not (off when `None`).
    pub max_lag_ms: Option<u64>,
}

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// The replica at this index of the candidates.
    Replica(usize),
    Fallback,
    Nothing,
}

impl Candidate {
    fn lag_ok(&self, rules: &Rules) -> bool {
        rules.max_lag_ms.is_none_or(|max| self.lag_ms <= max)
    }

    /// Rule 1: a replica routing can use as it is.
    pub fn usable(&self, rules: &Rules) -> bool {
        !self.excluded && !self.banned && self.lag_ok(rules)
    }

    /// Rule 2: the fallback primary is used whatever its lag.
    fn usable_as_fallback(&self) -> bool {
        !self.excluded && !self.banned
    }

    /// Rule 3: a replica that still answers its health check.
    fn reachable(&self) -> bool {
        !self.excluded && self.healthy
    }
}

/// Power of two choices: two distinct random entries of `pool` (indexes into `candidates`),
/// the one with fewer requests in flight wins (the first drawn on a tie).
pub fn least_loaded_of_two<R: Rng + ?Sized>(
    pool: &[usize],
    candidates: &[Candidate],
    rng: &mut R,
) -> Option<usize> {
    match pool.len() {
        0 => None,
        1 => Some(pool[0]),
        n => {
            let a = rng.gen_range(0..n);
            let mut b = rng.gen_range(0..n - 1);
            if b >= a {
                b += 1;
            }
            let (a, b) = (pool[a], pool[b]);
            Some(if candidates[b].in_flight < candidates[a].in_flight {
                b
            } else {
                a
            })
        }
    }
}

/// Applies the rules (see the module's documentation) to the replicas and the fallback.
pub fn choose<R: Rng + ?Sized>(
    replicas: &[Candidate],
    fallback: Option<&Candidate>,
    rules: &Rules,
    rng: &mut R,
) -> Choice {
    let usable: Vec<usize> = indexes(replicas, |c| c.usable(rules));
    if let Some(i) = least_loaded_of_two(&usable, replicas, rng) {
        return Choice::Replica(i);
    }
    if fallback.is_some_and(Candidate::usable_as_fallback) {
        return Choice::Fallback;
    }
    let fresh_enough: Vec<usize> = indexes(replicas, |c| c.reachable() && c.lag_ok(rules));
    if let Some(i) = least_loaded_of_two(&fresh_enough, replicas, rng) {
        return Choice::Replica(i);
    }
    // Every reachable replica lags: stale answers from the freshest one beat refusing all
    // traffic.
    indexes(replicas, Candidate::reachable)
        .into_iter()
        .min_by_key(|&i| replicas[i].lag_ms)
        .map_or(Choice::Nothing, Choice::Replica)
}

/// Whether routing is down to its last resort: no replica usable and no fallback usable. The
/// health monitor then lifts the bans of the replicas that still answer (rule 3 already uses
/// them), so the set leaves the state instead of waiting out the bans.
pub fn stranded(replicas: &[Candidate], fallback: Option<&Candidate>, rules: &Rules) -> bool {
    !replicas.iter().any(|c| c.usable(rules))
        && !fallback.is_some_and(Candidate::usable_as_fallback)
}

/// Whether a request could be served now (`/readyz`): some replica is usable or still answers
/// its health check, or the fallback answers its own.
pub fn ready(replicas: &[Candidate], fallback: Option<&Candidate>, rules: &Rules) -> bool {
    replicas.iter().any(|c| c.usable(rules) || c.healthy) || fallback.is_some_and(|f| f.healthy)
}

/// What a query that ran out of time says about the replica it ran on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimedOut {
    /// The replica is busy, not gone, and others can take the request: retry elsewhere, keep
    /// routing to it.
    Busy,
    /// No other replica (nor the fallback) could take the request: no ban, and no retry (the
    /// attempt already waited up to the request deadline).
    LastUsable,
    /// The replica stopped answering while others can serve: ban it like a refused connection.
    Failure,
}

/// A query timeout is load, not failure, when the replica answered other queries while this one
/// waited, or when no other replica is usable: banning the last one for slowness turns a
/// saturated database into failed requests for everyone, while the request deadline already
/// bounds each request (a 504 past it). A replica that answers nobody while others could serve
/// is banned, so a hung server still loses its traffic.
pub fn judge_timeout(answered_since_start: bool, others_usable: bool) -> TimedOut {
    if !others_usable {
        TimedOut::LastUsable
    } else if answered_since_start {
        TimedOut::Busy
    } else {
        TimedOut::Failure
    }
}

/// Whether any replica but the one at `index` (or the fallback) is usable: the "others" of
/// [`judge_timeout`].
pub fn others_usable(
    replicas: &[Candidate],
    index: Option<usize>,
    fallback: Option<&Candidate>,
    rules: &Rules,
) -> bool {
    let other_replica = (0..replicas.len())
        .filter(|&i| Some(i) != index)
        .any(|i| replicas[i].usable(rules));
    other_replica || fallback.is_some_and(Candidate::usable_as_fallback)
}

fn indexes(candidates: &[Candidate], keep: impl Fn(&Candidate) -> bool) -> Vec<usize> {
    (0..candidates.len())
        .filter(|&i| keep(&candidates[i]))
        .collect()
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    const NO_LAG_BOUND: Rules = Rules { max_lag_ms: None };
    const LAG_BOUND_1S: Rules = Rules {
        max_lag_ms: Some(1000),
    };

    fn up(in_flight: usize) -> Candidate {
        Candidate {
            healthy: true,
            in_flight,
            ..Candidate::default()
        }
    }

    fn banned(c: Candidate) -> Candidate {
        Candidate { banned: true, ..c }
    }

    fn lagging(c: Candidate, lag_ms: u64) -> Candidate {
        Candidate { lag_ms, ..c }
    }

    fn down(c: Candidate) -> Candidate {
        Candidate {
            healthy: false,
            banned: true,
            ..c
        }
    }

    fn excluded(c: Candidate) -> Candidate {
        Candidate {
            excluded: true,
            ..c
        }
    }

    /// How often each outcome comes out over many seeded picks.
    fn tally(replicas: &[Candidate], fallback: Option<&Candidate>, rules: &Rules) -> Tally {
        let mut t = Tally {
            replicas: vec![0; replicas.len()],
            fallback: 0,
            nothing: 0,
        };
        for seed in 0..2000 {
            match choose(replicas, fallback, rules, &mut StdRng::seed_from_u64(seed)) {
                Choice::Replica(i) => t.replicas[i] += 1,
                Choice::Fallback => t.fallback += 1,
                Choice::Nothing => t.nothing += 1,
            }
        }
        t
    }

    #[derive(Debug)]
    struct Tally {
        replicas: Vec<u32>,
        fallback: u32,
        nothing: u32,
    }

    #[test]
    fn idle_replicas_share_the_load() {
        let t = tally(&[up(0), up(0), up(0)], None, &NO_LAG_BOUND);
        for n in &t.replicas {
            assert!((500..=850).contains(n), "{t:?}");
        }
    }

    #[test]
    fn of_two_the_one_with_fewer_in_flight_wins() {
        let t = tally(&[up(5), up(1)], None, &NO_LAG_BOUND);
        assert_eq!(t.replicas, [0, 2000]);
        // Of three, the busiest never wins a pair and the idlest always does.
        let t = tally(&[up(9), up(0), up(4)], None, &NO_LAG_BOUND);
        assert_eq!(t.replicas[0], 0, "{t:?}");
        assert!(t.replicas[1] > t.replicas[2], "{t:?}");
        // Ties go to the first drawn: both are picked.
        let t = tally(&[up(3), up(3)], None, &NO_LAG_BOUND);
        assert!(t.replicas.iter().all(|n| *n > 0), "{t:?}");
    }

    #[test]
    fn banned_replicas_are_skipped() {
        let t = tally(&[banned(up(0)), up(50), banned(up(0))], None, &NO_LAG_BOUND);
        assert_eq!(t.replicas, [0, 2000, 0]);
    }

    #[test]
    fn the_replica_that_just_failed_is_not_tried_again() {
        let t = tally(&[excluded(up(0)), up(50)], None, &NO_LAG_BOUND);
        assert_eq!(t.replicas, [0, 2000]);
        // Not even as the last resort, when it is the only one left.
        let t = tally(&[excluded(up(0)), down(up(0))], None, &NO_LAG_BOUND);
        assert_eq!(t.nothing, 2000);
    }

    #[test]
    fn replicas_over_the_lag_bound_are_skipped() {
        let replicas = [lagging(up(0), 5000), lagging(up(9), 1000)];
        let t = tally(&replicas, None, &LAG_BOUND_1S);
        assert_eq!(t.replicas, [0, 2000], "at the bound is within it");
        // Without a bound, lag plays no part.
        let t = tally(&replicas, None, &NO_LAG_BOUND);
        assert_eq!(t.replicas, [2000, 0]);
    }

    #[test]
    fn when_every_replica_lags_the_freshest_serves() {
        let replicas = [
            lagging(up(0), 5000),
            lagging(up(9), 2000),
            lagging(up(0), 3000),
        ];
        let t = tally(&replicas, None, &LAG_BOUND_1S);
        assert_eq!(t.replicas, [0, 2000, 0]);
        // A freshest replica that no longer answers is passed over.
        let replicas = [lagging(up(0), 5000), down(lagging(up(0), 10))];
        let t = tally(&replicas, None, &LAG_BOUND_1S);
        assert_eq!(t.replicas, [2000, 0]);
    }

    #[test]
    fn the_fallback_serves_only_when_no_replica_is_usable() {
        let fallback = up(0);
        let t = tally(&[up(100)], Some(&fallback), &NO_LAG_BOUND);
        assert_eq!(t.replicas, [2000]);
        let t = tally(&[banned(up(0))], Some(&fallback), &NO_LAG_BOUND);
        assert_eq!(t.fallback, 2000, "before any banned replica");
        let t = tally(&[lagging(up(0), 9000)], Some(&fallback), &LAG_BOUND_1S);
        assert_eq!(t.fallback, 2000, "before any lagging replica");
        // Its own lag is not looked at; its ban is.
        let lagging_fallback = lagging(up(0), 9000);
        let t = tally(&[down(up(0))], Some(&lagging_fallback), &LAG_BOUND_1S);
        assert_eq!(t.fallback, 2000);
        let banned_fallback = banned(up(0));
        let t = tally(&[banned(up(0))], Some(&banned_fallback), &NO_LAG_BOUND);
        assert_eq!(
            t.replicas,
            [2000],
            "a banned fallback leaves the last resort"
        );
        let t = tally(&[down(up(0))], Some(&excluded(up(0))), &NO_LAG_BOUND);
        assert_eq!(
            t.nothing, 2000,
            "a fallback that just failed is not retried"
        );
    }

    /// The last usable replica: with every replica banned, those whose health check still
    /// answers serve anyway (by in-flight and lag like any other pick); with none answering,
    /// nothing does.
    #[test]
    fn with_every_replica_banned_the_ones_still_answering_serve() {
        let t = tally(&[banned(up(0)), down(up(0))], None, &NO_LAG_BOUND);
        assert_eq!(t.replicas, [2000, 0]);
        let t = tally(&[banned(up(7)), banned(up(2))], None, &NO_LAG_BOUND);
        assert_eq!(t.replicas, [0, 2000], "fewer in flight wins here too");
        let t = tally(
            &[banned(lagging(up(0), 5000)), banned(lagging(up(0), 10))],
            None,
            &LAG_BOUND_1S,
        );
        assert_eq!(t.replicas, [0, 2000]);
        let t = tally(
            &[banned(lagging(up(0), 5000)), banned(lagging(up(0), 3000))],
            None,
            &LAG_BOUND_1S,
        );
        assert_eq!(t.replicas, [0, 2000], "all lagging: the freshest");
        let t = tally(&[down(up(0)), down(up(0))], None, &NO_LAG_BOUND);
        assert_eq!(t.nothing, 2000);
        let t = tally(&[], None, &NO_LAG_BOUND);
        assert_eq!(t.nothing, 2000);
    }

    #[test]
    fn a_single_usable_replica_takes_every_request() {
        let t = tally(&[down(up(0)), up(1000), banned(up(0))], None, &NO_LAG_BOUND);
        assert_eq!(t.replicas, [0, 2000, 0]);
    }

    #[test]
    fn stranded_means_nothing_usable_and_no_fallback() {
        assert!(!stranded(&[up(0), banned(up(0))], None, &NO_LAG_BOUND));
        assert!(stranded(&[banned(up(0)), down(up(0))], None, &NO_LAG_BOUND));
        assert!(stranded(&[lagging(up(0), 5000)], None, &LAG_BOUND_1S));
        assert!(!stranded(&[banned(up(0))], Some(&up(0)), &NO_LAG_BOUND));
        assert!(stranded(
            &[banned(up(0))],
            Some(&banned(up(0))),
            &NO_LAG_BOUND
        ));
    }

    #[test]
    fn ready_while_anything_could_serve() {
        assert!(ready(&[banned(up(0))], None, &NO_LAG_BOUND), "answers");
        let unhealthy_unbanned = Candidate::default();
        assert!(
            ready(&[unhealthy_unbanned], None, &NO_LAG_BOUND),
            "usable until banned"
        );
        assert!(!ready(&[down(up(0))], None, &NO_LAG_BOUND));
        assert!(ready(&[down(up(0))], Some(&banned(up(0))), &NO_LAG_BOUND));
        assert!(!ready(&[down(up(0))], Some(&down(up(0))), &NO_LAG_BOUND));
    }

    #[test]
    fn a_timeout_on_a_replica_that_answers_others_is_load() {
        assert_eq!(judge_timeout(true, true), TimedOut::Busy);
        assert_eq!(judge_timeout(true, false), TimedOut::LastUsable);
    }

    #[test]
    fn the_last_usable_replica_is_never_banned_for_a_timeout() {
        assert_eq!(judge_timeout(false, false), TimedOut::LastUsable);
    }

    #[test]
    fn a_silent_replica_with_others_to_go_to_is_a_failure() {
        assert_eq!(judge_timeout(false, true), TimedOut::Failure);
    }

    #[test]
    fn others_leave_out_the_replica_itself_and_count_the_fallback() {
        let alone = [up(3)];
        assert!(!others_usable(&alone, Some(0), None, &NO_LAG_BOUND));
        assert!(others_usable(&alone, Some(0), Some(&up(0)), &NO_LAG_BOUND));
        assert!(!others_usable(
            &alone,
            Some(0),
            Some(&banned(up(0))),
            &NO_LAG_BOUND
        ));
        let pair = [up(3), banned(up(0))];
        assert!(!others_usable(&pair, Some(0), None, &NO_LAG_BOUND));
        let pair = [up(3), up(0)];
        assert!(others_usable(&pair, Some(0), None, &NO_LAG_BOUND));
        let pair = [up(3), lagging(up(0), 5000)];
        assert!(!others_usable(&pair, Some(0), None, &LAG_BOUND_1S));
        // The fallback itself timing out: any usable replica is another.
        assert!(others_usable(&pair, None, None, &NO_LAG_BOUND));
    }
}

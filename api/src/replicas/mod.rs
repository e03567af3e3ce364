//! The set of read replicas a request can be sent to ([`ReplicaSet`]): it picks a replica per
//! request, runs the attempt, bans and retries once elsewhere on a replica failure, reloads the
//! list without dropping requests, and hands out [`ReplicaStats`] snapshots for `/metrics`.
//!
//! Its parts, one concern each (none imports this file, so there are no circles):
//! - [`replica`]: one replica's pool and state (in flight, ban, health, counters);
//! - [`attempt`]: one attempt on one replica and its typed [`AttemptError`];
//! - [`batch`]: lookups waiting for a replica answered together, one query per batch;
//! - [`ban`]: bans with back-off, the clock passed in;
//! - [`select`]: the routing rules as pure functions over [`select::Candidate`]s;
//! - [`monitor`]: the health-check loop; [`health`]: what its outcomes mean; [`lag`]: replay lag;
//! - [`roster`]: the current list and the fallback; [`stats`]: the snapshot types;
//! - [`clock`]: the millisecond clock the edges read.

pub mod attempt;
pub mod ban;
pub mod batch;
pub mod clock;
pub mod health;
pub mod lag;
pub mod monitor;
pub mod replica;
pub mod roster;
pub mod select;
pub mod stats;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use crate::config::Settings;
use crate::counters::Counters;
use crate::error::{ApiError, HttpError};
use crate::query::{describe, Lookup};

pub use attempt::AttemptError;
pub use replica::Replica;
pub use stats::{PoolStats, ReplicaStats};

use ban::Backoff;
use monitor::MonitorSettings;
use roster::Roster;
use select::{Choice, Rules, TimedOut};

/// The replicas requests are spread over.
pub struct ReplicaSet {
    roster: Arc<Roster>,
    rules: Rules,
    backoff: Backoff,
    monitor: MonitorSettings,
    /// For reloads: the URL sources, the pool settings and the query timeout.
    settings: Settings,
    counters: Arc<Counters>,
}

impl ReplicaSet {
    /// Builds the pools (lazily: nothing connects yet) and starts the health checks.
    pub fn new(settings: &Settings, counters: Arc<Counters>) -> Result<Arc<ReplicaSet>, ApiError> {
        let urls = replica_urls(settings)?;
        if urls.is_empty() {
            return Err(ApiError::NoReplicas);
        }
        let new_replica = |url: &str, index: usize, is_fallback: bool| {
            Replica::new(
                url,
                index,
                is_fallback,
                &settings.pool,
                settings.query_timeout,
                settings.connection_setup_timeout(),
                counters.clone(),
            )
            .map(Arc::new)
        };
        let replicas = urls
            .iter()
            .enumerate()
            .map(|(i, url)| new_replica(url, i, false))
            .collect::<Result<Vec<_>, _>>()?;
        let fallback = settings
            .primary_fallback
            .as_deref()
            .map(|url| new_replica(url, urls.len(), true))
            .transpose()?;
        let rules = Rules {
            max_lag_ms: settings.max_replica_lag.map(|lag| lag.as_millis() as u64),
        };
        let backoff = Backoff {
            base: settings.ban,
            max: settings.max_ban,
        };
        let set = Arc::new(ReplicaSet {
            roster: Arc::new(Roster::new(replicas, fallback)),
            rules,
            backoff,
            monitor: MonitorSettings {
                interval: settings.health_interval,
                query_timeout: settings.query_timeout,
                backoff,
                rules,
            },
            settings: settings.clone(),
            counters,
        });
        for replica in set.snapshot().iter().chain(set.roster.fallback()) {
            monitor::spawn(replica, &set.roster, set.monitor);
        }
        Ok(set)
    }

    /// The current list.
    pub fn snapshot(&self) -> Arc<Vec<Arc<Replica>>> {
        self.roster.current()
    }

    /// Replaces the list with the configuration's URLs (flags plus a re-read replica file).
    /// Replicas whose URL stays keep their pool and state; a bad list leaves the old one.
    pub fn reload(&self) -> Result<usize, ApiError> {
        let urls = replica_urls(&self.settings)?;
        if urls.is_empty() {
            return Err(ApiError::NoReplicas);
        }
        let old = self.snapshot();
        let mut next = Vec::with_capacity(urls.len());
        let mut added = Vec::new();
        for (i, url) in urls.iter().enumerate() {
            match old.iter().find(|r| &r.url == url) {
                Some(r) => next.push(r.clone()),
                None => {
                    let r = Arc::new(Replica::new(
                        url,
                        i,
                        false,
                        &self.settings.pool,
                        self.settings.query_timeout,
                        self.settings.connection_setup_timeout(),
                        self.counters.clone(),
                    )?);
                    added.push(r.clone());
                    next.push(r);
                }
            }
        }
        for r in &added {
            monitor::spawn(r, &self.roster, self.monitor);
        }
        let count = next.len();
        self.roster.replace(next);
        Ok(count)
    }

    /// Whether a request could be served now (for /readyz).
    pub fn any_usable(&self) -> bool {
        let now = clock::now_ms();
        let list = self.snapshot();
        let candidates: Vec<_> = list.iter().map(|r| r.candidate(now, false)).collect();
        let fallback = self.roster.fallback().map(|f| f.candidate(now, false));
        select::ready(&candidates, fallback.as_ref(), &self.rules)
    }

    /// The replica for one attempt (see [`select`] for the rules), never `exclude`.
    fn pick(&self, exclude: Option<&Arc<Replica>>) -> Option<Arc<Replica>> {
        let now = clock::now_ms();
        let list = self.snapshot();
        let excluded = |r: &Arc<Replica>| exclude.is_some_and(|x| Arc::ptr_eq(x, r));
        let candidates: Vec<_> = list.iter().map(|r| r.candidate(now, excluded(r))).collect();
        let fallback = self.roster.fallback();
        let fallback_candidate = fallback.map(|f| f.candidate(now, excluded(f)));
        match select::choose(
            &candidates,
            fallback_candidate.as_ref(),
            &self.rules,
            &mut rand::thread_rng(),
        ) {
            Choice::Replica(i) => Some(list[i].clone()),
            Choice::Fallback => fallback.cloned(),
            Choice::Nothing => None,
        }
    }

    /// Runs the query on a replica, retrying once on another one if the first fails.
    pub async fn fetch(
        &self,
        product_id: i32,
        limit: i64,
        deadline: Instant,
    ) -> Result<Lookup, HttpError> {
        let mut failed: Option<Arc<Replica>> = None;
        // A retry with nowhere to go reports what the last attempt ran into.
        let mut last = Failure::NoReplica;
        for attempt in 0..2 {
            let Some(replica) = self.pick(failed.as_ref()) else {
                return Err(self.nowhere_left(last));
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                self.counters.deadline_exceeded.fetch_add(1, Relaxed);
                return Err(HttpError::DeadlineExceeded);
            }
            // Leave the request deadline a little room so the attempt's own timeout fires
            // first and the connection is marked broken.
            let timeout = self.settings.query_timeout.min(remaining);
            if attempt > 0 {
                self.counters.retries.fetch_add(1, Relaxed);
            }
            self.counters.db_queries.fetch_add(1, Relaxed);
            let started = clock::now_ms();
            let patience = remaining.saturating_sub(timeout);
            let last_usable = || !self.others_usable(&replica);
            let answer = replica.attempt(product_id, limit, timeout, patience, last_usable);
            let error = match answer.await {
                Ok(lookup) => return Ok(lookup),
                Err(e) => e,
            };
            match error {
                AttemptError::PoolTimeout => {
                    self.counters.pool_wait_timeouts.fetch_add(1, Relaxed);
                    // No connection of this replica came free within the pool wait: it is busy,
                    // or frozen with every connection stuck in it. Another usable replica may
                    // have one free, so the request tries it before giving up (no ban: a full
                    // pool is load).
                    if attempt > 0 || !self.others_usable(&replica) {
                        return Err(HttpError::PoolTimeout);
                    }
                    tracing::warn!(
                        replica = %replica.label,
                        "no pooled connection within the pool wait; trying another replica"
                    );
                    last = Failure::PoolFull;
                    failed = Some(replica);
                }
                AttemptError::Query(ref e) => {
                    tracing::error!(replica = %replica.label, error = %describe(e), "query failed");
                    return Err(HttpError::Internal);
                }
                AttemptError::Timeout(_)
                    if self.timeout_is(&replica, started) != TimedOut::Failure =>
                {
                    last = Failure::TimedOut;
                    // An attempt that waited past its timeout on the last usable replica has
                    // counted that already.
                    if patience.is_zero() || self.others_usable(&replica) {
                        replica.counters.timeouts_under_load.fetch_add(1, Relaxed);
                    }
                    tracing::warn!(
                        replica = %replica.label,
                        error = %error,
                        retry = attempt == 0,
                        "query timed out on a busy replica; not banned"
                    );
                    failed = Some(replica);
                }
                AttemptError::ConnectFailed
                | AttemptError::Connect(_)
                | AttemptError::Replica(_)
                | AttemptError::Timeout(_) => {
                    last = if error.is_timeout() {
                        Failure::TimedOut
                    } else {
                        Failure::NoReplica
                    };
                    replica.counters.failures.fetch_add(1, Relaxed);
                    replica.ban(clock::now_ms(), &self.backoff);
                    tracing::warn!(
                        replica = %replica.label,
                        error = %error,
                        retry = attempt == 0,
                        "replica failed; banned"
                    );
                    failed = Some(replica);
                }
            }
        }
        Err(self.nowhere_left(last))
    }

    /// What a query that timed out on `replica` after starting at `started_ms` says about it
    /// (see [`select::judge_timeout`]).
    fn timeout_is(&self, replica: &Arc<Replica>, started_ms: u64) -> TimedOut {
        let last = replica.last_answer_ms();
        let answered_since_start = last > 0 && last >= started_ms;
        select::judge_timeout(answered_since_start, self.others_usable(replica))
    }

    /// Whether a replica other than `replica` (or the fallback, unless it is `replica`) could
    /// take a request now.
    fn others_usable(&self, replica: &Arc<Replica>) -> bool {
        let now = clock::now_ms();
        let list = self.snapshot();
        let candidates: Vec<_> = list.iter().map(|r| r.candidate(now, false)).collect();
        let index = list.iter().position(|r| Arc::ptr_eq(r, replica));
        let fallback = self
            .roster
            .fallback()
            .filter(|f| !Arc::ptr_eq(f, replica))
            .map(|f| f.candidate(now, false));
        select::others_usable(&candidates, index, fallback.as_ref(), &self.rules)
    }

    /// The answer when no attempt is left, by what the last one ran into: a 504 after a
    /// timeout (the request ran out of time), the pool's 503 after a full pool (the replicas
    /// are saturated, and retrying shortly helps), else a 503 for no replica. The pool's count
    /// was taken when it timed out.
    fn nowhere_left(&self, last: Failure) -> HttpError {
        match last {
            Failure::TimedOut => {
                self.counters.deadline_exceeded.fetch_add(1, Relaxed);
                HttpError::DeadlineExceeded
            }
            Failure::PoolFull => HttpError::PoolTimeout,
            Failure::NoReplica => {
                self.counters.no_replica.fetch_add(1, Relaxed);
                HttpError::NoReplica
            }
        }
    }

    /// Every replica's state and counters, then the fallback's, for `/metrics`.
    pub fn stats(&self) -> Vec<ReplicaStats> {
        let now = clock::now_ms();
        let list = self.snapshot();
        list.iter()
            .chain(self.roster.fallback())
            .map(|r| r.stats(now))
            .collect()
    }
}

/// The replica URLs from the flags and the replica file (re-read on every call, so a reload sees
/// its new contents), deduplicated, in order.
fn replica_urls(settings: &Settings) -> Result<Vec<String>, ApiError> {
    let mut urls: Vec<String> = settings
        .replicas
        .iter()
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty())
        .collect();
    if let Some(path) = &settings.replica_file {
        let text = std::fs::read_to_string(path).map_err(|source| ApiError::ReplicaFile {
            path: path.display().to_string(),
            source,
        })?;
        urls.extend(crate::config::url_lines(&text).map(String::from));
    }
    let mut seen = std::collections::HashSet::new();
    urls.retain(|u| seen.insert(u.clone()));
    Ok(urls)
}

/// What an attempt of [`ReplicaSet::fetch`] ran into, for the answer when none is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// A replica failed, or none was there to try.
    NoReplica,
    /// A query ran out of time.
    TimedOut,
    /// No pooled connection came free within the pool wait.
    PoolFull,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn replica_urls_join_the_flags_and_the_file_without_repeats() {
        let file = std::env::temp_dir().join(format!("api-replicas-{}.txt", std::process::id()));
        std::fs::write(
            &file,
            "# the list\npostgres://b@h/db\n\n  postgres://a@h/db  \npostgres://c@h/db\n",
        )
        .unwrap();
        let mut config = Config::with_replicas(vec![
            " postgres://a@h/db".into(),
            String::new(),
            "postgres://b@h/db".into(),
        ]);
        config.replica_file = Some(file.clone());
        let urls = replica_urls(&config.validate().unwrap());
        std::fs::remove_file(&file).unwrap();
        assert_eq!(
            urls.unwrap(),
            [
                "postgres://a@h/db",
                "postgres://b@h/db",
                "postgres://c@h/db"
            ]
        );
        config.replica_file = Some(file);
        assert!(matches!(
            replica_urls(&config.validate().unwrap()),
            Err(ApiError::ReplicaFile { .. })
        ));
    }
}

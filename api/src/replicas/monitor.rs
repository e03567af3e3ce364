//! The health monitor's loop: one task per replica that every interval connects (or reuses its
//! connection), reads the replay position, works out the lag ([`ReplayLag`]), and hands the
//! outcome to the decisions in [`super::health`]; after each check it also lets the set out of
//! "every replica banned" ([`health::lift_bans_if_stranded`]). This file holds the I/O and the
//! timing; what an outcome means is decided there.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio_postgres::types::PgLsn;
use tokio_postgres::NoTls;

use crate::query::REPLAY_SQL;

use super::ban::Backoff;
use super::clock;
use super::health::{self, HealthCheck, Unanswered};
use super::lag::ReplayLag;
use super::replica::Replica;
use super::roster::Roster;
use super::select::Rules;

/// What the monitor runs with, taken from the settings once.
#[derive(Debug, Clone, Copy)]
pub struct MonitorSettings {
    pub interval: Duration,
    /// The query timeout; a check gets at least [`MIN_CHECK_TIMEOUT`].
    pub query_timeout: Duration,
    pub backoff: Backoff,
    pub rules: Rules,
}

/// The least time a check's query gets: a check is one more query in the server's queue.
pub const MIN_CHECK_TIMEOUT: Duration = Duration::from_millis(200);

/// The least time a health connection gets to connect: a new backend (a fork and a SCRAM
/// exchange) on a saturated server can take seconds without anything being wrong.
pub const MIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Checks `replica` every interval until it leaves the set. The task holds only weak
/// references, so dropping the replica (reload) or the whole set (shutdown) ends it.
pub fn spawn(replica: &Arc<Replica>, roster: &Arc<Roster>, settings: MonitorSettings) {
    let replica: Weak<Replica> = Arc::downgrade(replica);
    let roster: Weak<Roster> = Arc::downgrade(roster);
    let timeout = settings.query_timeout.max(MIN_CHECK_TIMEOUT);
    tokio::spawn(async move {
        let mut probe = HealthProbe::default();
        loop {
            let Some(r) = replica.upgrade() else {
                return;
            };
            let outcome = probe.check(&r, timeout).await;
            let now = clock::now_ms();
            health::apply(&r, outcome, now, &settings.backoff);
            drop(r);
            if let Some(roster) = roster.upgrade() {
                health::lift_bans_if_stranded(
                    &roster.current(),
                    roster.fallback(),
                    &settings.rules,
                    now,
                );
            }
            tokio::time::sleep(settings.interval).await;
        }
    });
}

/// What one replica's health-check task keeps between checks.
#[derive(Default)]
struct HealthProbe {
    client: Option<tokio_postgres::Client>,
    lag: ReplayLag,
    /// Checks in a row that came out slow.
    slow_checks: u32,
}

/// Why a health check got no answer.
#[derive(Debug)]
enum CheckFailure {
    TimedOut,
    Error(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for CheckFailure {
    fn from(e: tokio_postgres::Error) -> Self {
        CheckFailure::Error(e)
    }
}

impl HealthProbe {
    /// One check: read the replay position and update the lag from it, or judge why no answer
    /// came.
    async fn check(&mut self, replica: &Replica, timeout: Duration) -> HealthCheck {
        let started_ms = clock::now_ms();
        let failure = match self.read_replay(&replica.url, timeout).await {
            Ok((in_recovery, received, replayed)) => {
                let lag = if in_recovery {
                    self.lag.observe(received, replayed, Instant::now())
                } else {
                    self.lag = ReplayLag::default();
                    Duration::ZERO
                };
                replica.note_lag(lag);
                self.slow_checks = 0;
                return HealthCheck::Answered;
            }
            Err(failure) => failure,
        };
        if let CheckFailure::Error(e) = &failure {
            tracing::debug!(replica = %replica.label, error = %e, "health check failed");
            self.client = None;
        }
        let outcome = health::judge(&Unanswered {
            timed_out: matches!(failure, CheckFailure::TimedOut),
            connection_open: self.client.as_ref().is_some_and(|c| !c.is_closed()),
            answered_since_start: replica.last_answer_ms() >= started_ms,
            slow_in_a_row: self.slow_checks,
        });
        if outcome == HealthCheck::Slow {
            self.slow_checks += 1;
        } else {
            self.client = None;
            self.slow_checks = 0;
        }
        outcome
    }

    /// Connects the health connection if needed and reads the replay position. Connecting gets
    /// a longer bound than the query (see [`MIN_CONNECT_TIMEOUT`]).
    async fn read_replay(
        &mut self,
        url: &str,
        timeout: Duration,
    ) -> Result<(bool, Option<PgLsn>, Option<PgLsn>), CheckFailure> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            let connect_timeout = timeout.max(MIN_CONNECT_TIMEOUT);
            let mut pg: tokio_postgres::Config = url.parse()?;
            pg.connect_timeout(connect_timeout);
            pg.application_name("related-api-health");
            let (c, connection) = tokio::time::timeout(connect_timeout, pg.connect(NoTls))
                .await
                .map_err(|_| CheckFailure::TimedOut)??;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            self.client = Some(c);
        }
        let c = self.client.as_ref().expect("connected above");
        let row = tokio::time::timeout(timeout, c.query_one(REPLAY_SQL, &[]))
            .await
            .map_err(|_| CheckFailure::TimedOut)??;
        Ok((
            row.get::<_, bool>(0),
            row.get::<_, Option<PgLsn>>(1),
            row.get::<_, Option<PgLsn>>(2),
        ))
    }
}

//! One attempt of a request on one replica — a pooled connection, then the prepared query under
//! a timeout — and [`AttemptError`], which says how it failed in a way the replica set can act
//! on without reading messages: a replica failure (ban it, retry elsewhere), a timeout (retry
//! elsewhere; a ban only when [`super::select::judge_timeout`] finds it was not load; a 504 if
//! nowhere is left), a saturated pool, or a query that failed on a healthy replica.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use crate::query::{
    describe, is_replica_failure, query_related, ConnectError, Lookup, PgConnectionManager,
};

use super::clock;
use super::replica::Replica;

/// Why one attempt on one replica failed. Cloneable (errors behind `Arc`), so that one failed
/// batched query can tell each request it answered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AttemptError {
    /// A connection attempt of the pool failed while this request waited for it.
    #[error("connection attempt failed")]
    ConnectFailed,
    /// The pool could not connect (connect, authentication, I/O, or no answer in time).
    #[error("{0}")]
    Connect(#[source] Arc<ConnectError>),
    /// The connection failed during the query (I/O, shutdown, recovery conflict, a replica
    /// answering from another state of the database...).
    #[error("{}", describe(.0))]
    Replica(#[source] Arc<tokio_postgres::Error>),
    /// The query did not answer within its timeout; the connection is dropped, as the server may
    /// still be running it.
    #[error("query timed out after {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The pool had no free connection within its bound: the replica is alive but saturated.
    #[error("no pooled connection within the pool wait")]
    PoolTimeout,
    /// The query itself failed on a replica that answers from the right state of the database:
    /// a bug in the query or a value the server refuses. (A missing table, column or privilege
    /// is a [`AttemptError::Replica`] failure: see `query::is_replica_failure`.)
    #[error("{}", describe(.0))]
    Query(#[source] Arc<tokio_postgres::Error>),
}

impl AttemptError {
    /// The replica failed (rather than the pool being busy or the query being wrong): ban it and
    /// retry elsewhere.
    pub fn is_replica_failure(&self) -> bool {
        matches!(
            self,
            AttemptError::ConnectFailed
                | AttemptError::Connect(_)
                | AttemptError::Replica(_)
                | AttemptError::Timeout(_)
        )
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, AttemptError::Timeout(_))
    }
}

/// Decrements the replica's in-flight count when the attempt ends, however it ends.
pub(super) struct InFlight<'a>(&'a Replica);

impl<'a> InFlight<'a> {
    pub(super) fn enter(replica: &'a Replica) -> Self {
        replica.in_flight.fetch_add(1, Relaxed);
        InFlight(replica)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

impl Replica {
    /// One attempt: a pooled connection, then the prepared query under `timeout`. When the
    /// query outlives `timeout` and `is_last_usable` says no other replica could take the
    /// request, the query keeps running for up to `patience` more: on the last replica a late
    /// answer beats a 504, and dropping the query would only queue it again. With
    /// `--batch-max` above 1 the lookup may share its query with others waiting for this
    /// replica ([`super::batch`]); at 1 it always runs alone.
    pub(super) async fn attempt(
        &self,
        product_id: i32,
        limit: i64,
        timeout: Duration,
        patience: Duration,
        is_last_usable: impl Fn() -> bool,
    ) -> Result<Lookup, AttemptError> {
        if self.batch.is_on() {
            self.attempt_batched(product_id, limit, timeout, patience, is_last_usable)
                .await
        } else {
            self.attempt_alone(product_id, limit, timeout, patience, is_last_usable)
                .await
        }
    }

    /// One query for this one lookup (`--batch-max 1`).
    async fn attempt_alone(
        &self,
        product_id: i32,
        limit: i64,
        timeout: Duration,
        patience: Duration,
        is_last_usable: impl Fn() -> bool,
    ) -> Result<Lookup, AttemptError> {
        let _in_flight = InFlight::enter(self);
        let failed = self.signals.failed.notified();
        tokio::pin!(failed);
        failed.as_mut().enable();
        let mut conn = tokio::select! {
            conn = self.pool.get() => match conn {
                Ok(conn) => conn,
                Err(bb8::RunError::TimedOut) => return Err(AttemptError::PoolTimeout),
                Err(bb8::RunError::User(e)) => return Err(AttemptError::Connect(Arc::new(e))),
            },
            _ = &mut failed => return Err(AttemptError::ConnectFailed),
        };
        self.query_alone(
            &mut conn,
            product_id,
            limit,
            timeout,
            patience,
            is_last_usable,
        )
        .await
    }

    /// The query for one lookup on a connection already held.
    pub(super) async fn query_alone(
        &self,
        conn: &mut bb8::PooledConnection<'_, PgConnectionManager>,
        product_id: i32,
        limit: i64,
        timeout: Duration,
        patience: Duration,
        is_last_usable: impl Fn() -> bool,
    ) -> Result<Lookup, AttemptError> {
        self.counters.queries.fetch_add(1, Relaxed);
        self.totals.batches.observe(1);
        let answer = self
            .within_patience(
                query_related(conn, product_id, limit),
                timeout,
                patience,
                is_last_usable,
            )
            .await;
        match answer {
            Ok(Ok(lookup)) => {
                self.ban.answered();
                self.health.last_answer_ms.store(clock::now_ms(), Relaxed);
                Ok(lookup)
            }
            Ok(Err(e)) if is_replica_failure(&e) => {
                conn.broken = true;
                Err(AttemptError::Replica(Arc::new(e)))
            }
            Ok(Err(e)) => Err(AttemptError::Query(Arc::new(e))),
            Err(_) => {
                // The server may still be running the query: drop the connection rather than
                // queue the next request behind it.
                conn.broken = true;
                Err(AttemptError::Timeout(timeout))
            }
        }
    }

    /// Run `query` for up to `timeout`; past it, when `is_last_usable` says no other replica
    /// could take the work, keep it running for up to `patience` more (a late answer beats a
    /// 504 there). `Err` when it did not answer in time.
    pub(super) async fn within_patience<T>(
        &self,
        query: impl std::future::Future<Output = T>,
        timeout: Duration,
        patience: Duration,
        is_last_usable: impl Fn() -> bool,
    ) -> Result<T, tokio::time::error::Elapsed> {
        tokio::pin!(query);
        let mut answer = tokio::time::timeout(timeout, &mut query).await;
        if answer.is_err() && !patience.is_zero() && is_last_usable() {
            self.counters.timeouts_under_load.fetch_add(1, Relaxed);
            answer = tokio::time::timeout(patience, &mut query).await;
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_is_a_replica_failure_and_says_how_long() {
        let e = AttemptError::Timeout(Duration::from_millis(1500));
        assert!(e.is_timeout() && e.is_replica_failure());
        assert_eq!(e.to_string(), "query timed out after 1500 ms");
    }

    #[test]
    fn a_busy_pool_is_not_a_replica_failure() {
        assert!(!AttemptError::PoolTimeout.is_replica_failure());
        assert!(!AttemptError::PoolTimeout.is_timeout());
        assert!(AttemptError::ConnectFailed.is_replica_failure());
        assert!(!AttemptError::ConnectFailed.is_timeout());
    }

    /// Nothing listens on the replica's port: the attempt fails as a replica failure, not a
    /// timeout, and the in-flight count goes back to zero.
    #[tokio::test]
    async fn a_refused_connect_fails_the_attempt_over() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let r = super::super::replica::tests::replica(port);
        let e = r
            .attempt(1, 16, Duration::from_secs(1), Duration::ZERO, || false)
            .await
            .expect_err("nothing listens");
        assert!(e.is_replica_failure() && !e.is_timeout(), "{e:?}");
        assert_eq!(r.in_flight(), 0);
    }
}

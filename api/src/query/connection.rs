//! The connections the related-items query runs on: the bb8 manager that opens one
//! (connect, authenticate, prepare [`RELATED_SQL`] and [`RELATED_MANY_SQL`] once), bounds its
//! setup, checks it on checkout, and tells the requests waiting on a replica's pool when an
//! attempt failed.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_postgres::{Client, NoTls, Statement};

use super::{describe, RELATED_MANY_SQL, RELATED_SQL};
use crate::config::PoolCheck;

/// Signals a replica's pool raises for the requests waiting on it.
#[derive(Debug, Default)]
pub struct ConnectSignals {
    /// Woken when a connection attempt fails: bb8 only reports connect errors to its error
    /// sink while waiters sit out the whole pool timeout, so waiters listen here to fail over
    /// at once.
    pub failed: Notify,
    pub failures: AtomicU64,
    pub created: AtomicU64,
}

/// A pooled connection with the related-items statements prepared on it.
pub struct ReplicaConnection {
    pub(super) client: Client,
    pub(super) related: Statement,
    pub(super) related_many: Statement,
    /// Set after a timeout or an I/O error, so the pool drops the connection instead of
    /// handing out one that may still be busy or dead.
    pub broken: bool,
}

/// bb8 manager: connects with tokio-postgres and prepares [`RELATED_SQL`] and
/// [`RELATED_MANY_SQL`] once per connection.
pub struct PgConnectionManager {
    config: tokio_postgres::Config,
    check: PoolCheck,
    setup_timeout: Duration,
    signals: Arc<ConnectSignals>,
}

/// Why the pool could not open a connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Connecting, authenticating or preparing failed.
    #[error("{}", describe(.0))]
    Postgres(#[source] tokio_postgres::Error),
    /// Connecting, authenticating and preparing together took longer than any request could
    /// wait for them (`Settings::connection_setup_timeout`): a server that accepts the TCP
    /// connection and then says nothing (frozen, or its host gone mid-handshake).
    /// tokio-postgres's own connect timeout covers only the TCP handshake, and bb8 waits for a
    /// connection attempt as long as it takes, so without this bound such an attempt would hold
    /// one of the pool's slots for as long as the kernel keeps the connection.
    #[error("setting the connection up took longer than {} ms", .0.as_millis())]
    TimedOut(Duration),
}

impl From<tokio_postgres::Error> for ConnectError {
    fn from(e: tokio_postgres::Error) -> Self {
        ConnectError::Postgres(e)
    }
}

impl PgConnectionManager {
    /// `connect_timeout` bounds the TCP handshake, `setup_timeout` the whole setup (the
    /// handshake, authentication and preparing the statements, which waits for locks on the
    /// tables as a query does).
    pub fn new(
        mut config: tokio_postgres::Config,
        check: PoolCheck,
        connect_timeout: Duration,
        setup_timeout: Duration,
        signals: Arc<ConnectSignals>,
    ) -> Self {
        config.connect_timeout(connect_timeout);
        config.application_name("related-api");
        Self {
            config,
            check,
            setup_timeout: setup_timeout.max(connect_timeout),
            signals,
        }
    }

    async fn connect_and_prepare(&self) -> Result<ReplicaConnection, tokio_postgres::Error> {
        let (client, connection) = self.config.connect(NoTls).await?;
        tokio::spawn(async move {
            // Ends when the server or the pool closes the connection; the client then reports
            // is_closed() and the pool discards it.
            let _ = connection.await;
        });
        // Both statements in one round trip: tokio-postgres pipelines the two prepares.
        let (related, related_many) = futures::future::try_join(
            client.prepare(RELATED_SQL),
            client.prepare(RELATED_MANY_SQL),
        )
        .await?;
        Ok(ReplicaConnection {
            client,
            related,
            related_many,
            broken: false,
        })
    }
}

impl bb8::ManageConnection for PgConnectionManager {
    type Connection = ReplicaConnection;
    type Error = ConnectError;

    async fn connect(&self) -> Result<ReplicaConnection, ConnectError> {
        let connected = tokio::time::timeout(self.setup_timeout, self.connect_and_prepare())
            .await
            .map_err(|_| ConnectError::TimedOut(self.setup_timeout))
            .and_then(|c| c.map_err(ConnectError::from));
        match connected {
            Ok(conn) => {
                self.signals.created.fetch_add(1, Relaxed);
                Ok(conn)
            }
            Err(e) => {
                self.signals.failures.fetch_add(1, Relaxed);
                self.signals.failed.notify_waiters();
                Err(e)
            }
        }
    }

    async fn is_valid(&self, conn: &mut ReplicaConnection) -> Result<(), ConnectError> {
        let checked = match self.check {
            // An empty simple query is the cheapest round trip the protocol has.
            PoolCheck::RoundTrip => conn.client.simple_query("").await.map(|_| ()),
            PoolCheck::Closed if conn.client.is_closed() => {
                // Provoke the library's own "connection closed" error value.
                conn.client.simple_query("").await.map(|_| ())
            }
            PoolCheck::Closed => Ok(()),
        };
        checked.map_err(ConnectError::from)
    }

    fn has_broken(&self, conn: &mut ReplicaConnection) -> bool {
        conn.broken || conn.client.is_closed()
    }
}

//! Opportunistic batching of lookups per replica (`--batch-max`).
//!
//! Each replica keeps a queue of the lookups waiting for one of its pooled connections
//! ([`BatchQueue`]). A request puts its lookup in the queue, then waits for whichever comes
//! first: its answer (another request's connection served it), or a connection of its own. A
//! request that gets a connection holds it: it takes its share of the queued lookups (the queue
//! over the pool's connections, at most `--batch-max`), oldest first (its own among them if
//! still queued), answers them with one query over an array of ids
//! ([`crate::query::RELATED_MANY_SQL`]), and repeats until its own lookup is answered or the
//! queue is empty; then the connection goes back to the pool, and so to the next waiting
//! request. There is no timer: a request that finds the queue empty and a connection free
//! queries alone at once, as with batching off. Batches form only while requests outnumber
//! connections, which is when a query saved matters.
//!
//! What each request gets stays its own: a duplicate id in a batch is fetched once, the largest
//! limit is fetched and each lookup cut to its own, an id without a row is an unknown product.
//! A failed or timed-out batch hands every lookup in it the same [`AttemptError`], and each
//! request's replica set then bans, retries elsewhere or answers exactly as after a query of its
//! own. A lookup whose batch was abandoned (the holder's request was dropped mid-query, at its
//! deadline) sees its answer channel close and queues again: it is never answered wrongly.
//!
//! The decisions — which lookups go (`BatchQueue::take`), which ids and limit are queried
//! ([`plan`]), how the rows are split back ([`split`]) — are plain functions, tested here
//! without a server; the integration tests compare batched answers with single ones on a real
//! database.

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::oneshot::{self, error::TryRecvError};

use crate::query::{
    is_replica_failure, query_related_many, Lookup, PgConnectionManager, RelatedItems,
};

use super::attempt::{AttemptError, InFlight};
use super::clock;
use super::replica::Replica;

/// What a lookup is answered with.
pub(super) type Answer = Result<Lookup, AttemptError>;

/// One request's lookup, waiting in a replica's queue.
pub(super) struct Waiting {
    ticket: u64,
    product_id: i32,
    limit: i64,
    /// The request's own query timeout and patience (see [`Replica::attempt`]).
    timeout: Duration,
    patience: Duration,
    reply: oneshot::Sender<Answer>,
    /// Dropped when a batch takes the lookup: its request then stops waiting for a connection
    /// of its own, so that the pool hands freed connections to requests whose lookups still
    /// wait, rather than to one whose lookup is already being queried.
    taken: Option<oneshot::Sender<()>>,
}

/// Where a queued lookup's request learns what became of it.
pub(super) struct Ticket {
    id: u64,
    /// Its answer (closed unanswered when its batch was abandoned).
    answer: oneshot::Receiver<Answer>,
    /// Closes when a batch takes the lookup.
    taken: oneshot::Receiver<()>,
}

/// The lookups waiting for a replica's connections, oldest first.
pub struct BatchQueue {
    max: usize,
    /// The replica's pool size. A freed connection takes its share of the queue, not all it
    /// can: a queue no longer than the pool drains in about one query time one lookup per
    /// query, and at half the maximum rate taking all it could cost p99 for no throughput
    /// (results/api.md, "Batching", runs F to H).
    connections: usize,
    inner: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Waiting>,
    next_ticket: u64,
}

impl BatchQueue {
    /// `max` lookups per query at most, the queue shared over `connections` (the replica's
    /// pool size; see `BatchQueue::take`).
    pub fn new(max: NonZeroUsize, connections: usize) -> Self {
        BatchQueue {
            max: max.get(),
            connections: connections.max(1),
            inner: Mutex::new(Queue::default()),
        }
    }

    /// Whether lookups may share a query (`--batch-max` above 1).
    pub fn is_on(&self) -> bool {
        self.max > 1
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // The lock guards plain moves of a queue; a panic elsewhere cannot leave it half-done.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a lookup; returns its ticket: its number (to withdraw it), where its answer will
    /// come and when a batch takes it.
    pub(super) fn push(
        &self,
        product_id: i32,
        limit: i64,
        timeout: Duration,
        patience: Duration,
    ) -> Ticket {
        let (reply, answer) = oneshot::channel();
        let (taken_tx, taken) = oneshot::channel();
        let mut q = self.lock();
        let id = q.next_ticket;
        q.next_ticket += 1;
        q.waiting.push_back(Waiting {
            ticket: id,
            product_id,
            limit,
            timeout,
            patience,
            reply,
            taken: Some(taken_tx),
        });
        Ticket { id, answer, taken }
    }

    /// The oldest lookups for one query: this connection's share of the queue (its length
    /// over the pool's connections, rounded up), at least one and at most `--batch-max`.
    /// Lookups whose request has gone (its deadline passed, its client left) are dropped on
    /// the way rather than queried.
    pub(super) fn take(&self) -> Vec<Waiting> {
        let mut q = self.lock();
        let max = q
            .waiting
            .len()
            .div_ceil(self.connections)
            .clamp(1, self.max);
        let mut batch = Vec::with_capacity(max.min(q.waiting.len()));
        while batch.len() < max {
            let Some(mut w) = q.waiting.pop_front() else {
                break;
            };
            if !w.reply.is_closed() {
                w.taken = None;
                batch.push(w);
            }
        }
        batch
    }

    /// Takes a lookup out of the queue; false when it is no longer there (a batch took it).
    pub(super) fn withdraw(&self, ticket: u64) -> bool {
        let mut q = self.lock();
        match q.waiting.iter().position(|w| w.ticket == ticket) {
            Some(i) => {
                q.waiting.remove(i);
                true
            }
            None => false,
        }
    }

    /// Lookups waiting now.
    pub fn len(&self) -> usize {
        self.lock().waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What one query for `lookups` (product id, limit) asks: the distinct ids in first-seen
/// order, and the largest limit.
pub fn plan(lookups: &[(i32, i64)]) -> (Vec<i32>, i64) {
    let mut ids: Vec<i32> = Vec::with_capacity(lookups.len());
    let mut limit = 0;
    for &(id, l) in lookups {
        if !ids.contains(&id) {
            ids.push(id);
        }
        limit = limit.max(l);
    }
    (ids, limit)
}

/// Each lookup's answer, in the order of `lookups`, from the products one query found: an id
/// not found is an unknown product; a found one gets its first `limit` items (the rows are in
/// position order, so these are exactly what a query with its own limit returns).
pub fn split(mut found: Vec<RelatedItems>, lookups: &[(i32, i64)]) -> Vec<Lookup> {
    lookups
        .iter()
        .enumerate()
        .map(|(i, &(id, limit))| {
            let Some(product) = found.iter_mut().find(|p| p.product_id == id) else {
                return Lookup::UnknownProduct(id);
            };
            let keep = usize::try_from(limit).unwrap_or(0);
            let last_of_id = !lookups[i + 1..].iter().any(|&(other, _)| other == id);
            let mut items = if last_of_id {
                // No later lookup needs this product's rows: hand them over.
                std::mem::replace(product, RelatedItems::new(id))
            } else {
                product.clone()
            };
            items.truncate(keep);
            Lookup::Found(items)
        })
        .collect()
}

/// How a request that held a connection left it.
enum Held {
    /// Its own lookup was answered (by its own queries or another's).
    Answered(Answer),
    /// Its lookup is in another request's batch: the answer will come on its channel.
    Waiting,
    /// Its lookup's batch was dropped unanswered: it must queue again.
    Abandoned,
}

type Connection<'a> = bb8::PooledConnection<'a, PgConnectionManager>;

impl Replica {
    /// One attempt with batching on: queue the lookup, then either get its answer from
    /// another request's query, or get a connection and answer the queue (see the module).
    pub(super) async fn attempt_batched(
        &self,
        product_id: i32,
        limit: i64,
        timeout: Duration,
        patience: Duration,
        is_last_usable: impl Fn() -> bool,
    ) -> Answer {
        let _in_flight = InFlight::enter(self);
        // Nothing waiting and a connection free: the lookup goes alone at once, exactly as
        // with batching off (no queue, no channels, the single-product statement), so that
        // batching costs nothing below saturation.
        if self.batch.is_empty() {
            if let Some(Ok(mut conn)) = self.pool.get().now_or_never() {
                return self
                    .query_alone(
                        &mut conn,
                        product_id,
                        limit,
                        timeout,
                        patience,
                        is_last_usable,
                    )
                    .await;
            }
        }
        let failed = self.signals.failed.notified();
        tokio::pin!(failed);
        failed.as_mut().enable();
        let mut failed_seen = false;
        let mut ticket = self.batch.push(product_id, limit, timeout, patience);
        let mut get = Some(Box::pin(self.pool.get()));
        let mut queued = true;
        loop {
            tokio::select! {
                biased;
                a = &mut ticket.answer => match a {
                    Ok(a) => return a,
                    Err(_) => {
                        // Its batch was dropped unanswered: queue again.
                        ticket = self.batch.push(product_id, limit, timeout, patience);
                        queued = true;
                        get = Some(Box::pin(self.pool.get()));
                    }
                },
                _ = &mut ticket.taken, if queued => {
                    // A batch took the lookup: its answer comes; leave the pool's queue.
                    queued = false;
                    get = None;
                },
                conn = async { get.as_mut().expect("polled only when set").await }, if get.is_some() => {
                    get = None;
                    match conn {
                        Ok(conn) => match self.hold(conn, &mut ticket, &is_last_usable).await {
                            Held::Answered(a) => return a,
                            Held::Waiting => {}
                            Held::Abandoned => {
                                ticket = self.batch.push(product_id, limit, timeout, patience);
                                queued = true;
                                get = Some(Box::pin(self.pool.get()));
                            }
                        },
                        // No connection: the lookup fails as a lone one would, unless a batch
                        // has already taken it (then its answer comes).
                        Err(e) => if self.batch.withdraw(ticket.id) {
                            return Err(match e {
                                bb8::RunError::TimedOut => AttemptError::PoolTimeout,
                                bb8::RunError::User(e) => AttemptError::Connect(Arc::new(e)),
                            });
                        },
                    }
                },
                _ = &mut failed, if !failed_seen => {
                    failed_seen = true;
                    if self.batch.withdraw(ticket.id) {
                        return Err(AttemptError::ConnectFailed);
                    }
                }
            }
        }
    }

    /// Answers queued lookups on `conn`, one query per batch, until `own` is answered or the
    /// queue is empty, or the connection broke; then the connection goes back to the pool.
    async fn hold(
        &self,
        mut conn: Connection<'_>,
        own: &mut Ticket,
        is_last_usable: &impl Fn() -> bool,
    ) -> Held {
        loop {
            let batch = self.batch.take();
            if batch.is_empty() {
                return Held::Waiting;
            }
            let broke = self.run(&mut conn, batch, is_last_usable).await;
            match own.answer.try_recv() {
                Ok(a) => return Held::Answered(a),
                Err(TryRecvError::Closed) => return Held::Abandoned,
                Err(TryRecvError::Empty) => {}
            }
            if let Some(e) = broke {
                // The replica failed under this connection: a lookup still queued behind it
                // fails the same way, and its request retries elsewhere.
                if self.batch.withdraw(own.id) {
                    return Held::Answered(Err(e));
                }
                return Held::Waiting;
            }
        }
    }

    /// One query for `batch`, each lookup answered on its channel. Returns the error when it
    /// broke the connection (a replica failure or a timeout): the connection is then dropped.
    async fn run(
        &self,
        conn: &mut Connection<'_>,
        batch: Vec<Waiting>,
        is_last_usable: &impl Fn() -> bool,
    ) -> Option<AttemptError> {
        let lookups: Vec<(i32, i64)> = batch.iter().map(|w| (w.product_id, w.limit)).collect();
        let (ids, limit) = plan(&lookups);
        let timeout = batch.iter().map(|w| w.timeout).max().unwrap_or_default();
        let patience = batch.iter().map(|w| w.patience).max().unwrap_or_default();
        self.counters.queries.fetch_add(1, Relaxed);
        self.totals.batches.observe(batch.len());
        // If this future is dropped mid-query (the holder's own deadline), the connection must
        // not serve a query queued behind this one: it stays marked until the query answers.
        // The batch's channels drop with it, so its lookups queue again.
        conn.broken = true;
        let answer = self
            .within_patience(
                query_related_many(conn, &ids, limit),
                timeout,
                patience,
                is_last_usable,
            )
            .await;
        let outcome = match answer {
            Ok(Ok(found)) => {
                conn.broken = false;
                self.ban.answered();
                self.health.last_answer_ms.store(clock::now_ms(), Relaxed);
                Ok(split(found, &lookups))
            }
            Ok(Err(e)) if is_replica_failure(&e) => Err(AttemptError::Replica(Arc::new(e))),
            Ok(Err(e)) => {
                conn.broken = false;
                Err(AttemptError::Query(Arc::new(e)))
            }
            // The server may still be running the query: the connection stays broken.
            Err(_) => Err(AttemptError::Timeout(timeout)),
        };
        match outcome {
            Ok(answers) => {
                for (w, lookup) in batch.into_iter().zip(answers) {
                    let _ = w.reply.send(Ok(lookup));
                }
                None
            }
            Err(e) => {
                for w in batch {
                    let _ = w.reply.send(Err(e.clone()));
                }
                conn.broken.then_some(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::RelatedItem;

    fn product(id: i32, items: &[i32]) -> RelatedItems {
        let names: Vec<String> = items.iter().map(|i| format!("n{i}")).collect();
        let cards = items.iter().zip(&names).map(|(&i, name)| RelatedItem {
            id: i,
            name,
            category: "c",
            price_cents: i,
            image_url: "u",
            rating: 1.5,
            review_count: 2,
        });
        RelatedItems::from_items(id, cards)
    }

    fn found(lookup: &Lookup) -> Vec<i32> {
        match lookup {
            Lookup::Found(f) => f.items().map(|i| i.id).collect(),
            Lookup::UnknownProduct(id) => panic!("{id} unknown"),
        }
    }

    fn queue(max: usize) -> BatchQueue {
        BatchQueue::new(NonZeroUsize::new(max).unwrap(), 0)
    }

    fn push(q: &BatchQueue, id: i32) -> Ticket {
        q.push(id, 16, Duration::from_secs(1), Duration::ZERO)
    }

    #[test]
    fn one_turns_batching_off() {
        assert!(!queue(1).is_on());
        assert!(queue(2).is_on());
    }

    #[test]
    fn a_lone_lookup_is_taken_alone_at_once() {
        let q = queue(16);
        let _rx = push(&q, 7);
        let batch = q.take();
        assert_eq!(batch.len(), 1, "no waiting for company");
        assert_eq!(batch[0].product_id, 7);
        assert!(q.take().is_empty());
    }

    #[test]
    fn batches_take_the_oldest_up_to_the_max() {
        let q = queue(3);
        let _rx: Vec<_> = (1..=7).map(|id| push(&q, id)).collect();
        let ids = |b: Vec<Waiting>| b.iter().map(|w| w.product_id).collect::<Vec<_>>();
        assert_eq!(ids(q.take()), [1, 2, 3]);
        assert_eq!(ids(q.take()), [4, 5, 6]);
        assert_eq!(ids(q.take()), [7]);
        assert!(q.is_empty());
    }

    #[test]
    fn a_connection_takes_its_share_of_the_queue() {
        let q = BatchQueue::new(NonZeroUsize::new(16).unwrap(), 4);
        let ids = |b: Vec<Waiting>| b.iter().map(|w| w.product_id).collect::<Vec<_>>();
        let _rx: Vec<_> = (1..=4).map(|id| push(&q, id)).collect();
        assert_eq!(
            ids(q.take()),
            [1],
            "four waiting, four connections: one each"
        );
        let _rx: Vec<_> = (5..=10).map(|id| push(&q, id)).collect();
        assert_eq!(
            ids(q.take()),
            [2, 3, 4],
            "nine waiting: a quarter, rounded up"
        );
        let _rx: Vec<_> = (11..=200).map(|id| push(&q, id)).collect();
        assert_eq!(
            q.take().len(),
            16,
            "a deep queue: the most one query may answer"
        );
    }

    #[test]
    fn lookups_of_requests_that_left_are_skipped() {
        let q = queue(2);
        let gone = push(&q, 1);
        let _kept = push(&q, 2);
        let _kept2 = push(&q, 3);
        drop(gone);
        let batch = q.take();
        assert_eq!(
            batch.iter().map(|w| w.product_id).collect::<Vec<_>>(),
            [2, 3]
        );
    }

    #[test]
    fn a_lookup_can_be_withdrawn_until_a_batch_takes_it() {
        let q = queue(2);
        let a = push(&q, 1);
        let b = push(&q, 2);
        let c = push(&q, 3);
        assert!(q.withdraw(b.id));
        assert!(!q.withdraw(b.id), "gone already");
        let batch = q.take();
        assert_eq!(
            batch.iter().map(|w| w.product_id).collect::<Vec<_>>(),
            [1, 3]
        );
        assert!(!q.withdraw(a.id) && !q.withdraw(c.id), "taken by the batch");
    }

    #[test]
    fn a_dropped_batch_closes_its_lookups_channels() {
        let q = queue(4);
        let mut t = push(&q, 1);
        drop(q.take());
        assert!(matches!(t.answer.try_recv(), Err(TryRecvError::Closed)));
    }

    /// A request learns when a batch takes its lookup (so it leaves the pool's queue), and
    /// not before.
    #[test]
    fn a_taken_lookup_says_so() {
        let q = queue(1);
        let mut first = push(&q, 1);
        let mut second = push(&q, 2);
        let batch = q.take();
        assert!(matches!(first.taken.try_recv(), Err(TryRecvError::Closed)));
        assert!(matches!(second.taken.try_recv(), Err(TryRecvError::Empty)));
        assert!(
            matches!(first.answer.try_recv(), Err(TryRecvError::Empty)),
            "not answered yet"
        );
        drop(batch);
    }

    #[test]
    fn plans_query_each_id_once_with_the_largest_limit() {
        assert_eq!(
            plan(&[(5, 3), (2, 16), (5, 100), (9, 1)]),
            (vec![5, 2, 9], 100)
        );
        assert_eq!(plan(&[(1, 16)]), (vec![1], 16));
    }

    #[test]
    fn rows_split_back_per_lookup_with_its_own_limit() {
        let rows = vec![
            product(2, &[]),
            product(5, &[11, 12, 13, 14]),
            product(9, &[3]),
        ];
        let lookups = [(5, 2), (404, 16), (2, 16), (5, 100), (9, 1), (5, 1)];
        let answers = split(rows, &lookups);
        assert_eq!(answers.len(), lookups.len());
        assert_eq!(found(&answers[0]), [11, 12]);
        assert_eq!(answers[1], Lookup::UnknownProduct(404));
        assert_eq!(found(&answers[2]), Vec::<i32>::new(), "known, no relations");
        assert_eq!(found(&answers[3]), [11, 12, 13, 14]);
        assert_eq!(found(&answers[4]), [3]);
        assert_eq!(
            found(&answers[5]),
            [11],
            "the last of an id still gets its rows"
        );
        for (a, (id, _)) in answers.iter().zip(lookups) {
            if let Lookup::Found(f) = a {
                assert_eq!(f.product_id, id);
            }
        }
    }

    #[test]
    fn nothing_found_is_every_lookup_unknown() {
        assert_eq!(
            split(vec![], &[(1, 16), (1, 3)]),
            [Lookup::UnknownProduct(1), Lookup::UnknownProduct(1)]
        );
    }
}

//! The optional in-process cache of rendered responses (off by default).
//!
//! Keys are (route shape, product id, limit); values are the finished body and its ETag, so a
//! hit costs no query and no JSON rendering. Concurrent misses on one key wait for a single
//! load, so a burst on a cold key runs the query once; if the request loading it gives up (its
//! deadline, a closed connection), one of the waiting requests loads it instead. Errors (503,
//! 504) are never cached; an unknown product is, for the TTL like anything else.
//!
//! Why not a general-purpose cache crate: moka, used until issue 8, does bookkeeping on every
//! read (a read log, an access-order list, a frequency sketch), and on a cache hit that was about
//! 11% of the API's CPU samples, the largest cost left on the hit path beyond hyper and the
//! kernel. This cache does what the API needs and no more: the keys are spread over shards,
//! each behind a mutex held for one map operation (never across an await); every entry lives
//! for the same TTL, checked when it is read, so insertion order is expiry order and each
//! insertion sweeps the oldest expired entries; the size is bounded with second-chance (CLOCK)
//! eviction: an entry read since the hand last passed it survives one more round.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::config::CacheSettings;
use crate::counters::Counters;
use crate::error::HttpError;
use crate::render::Rendered;

/// The shape of the response a key renders to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shape {
    /// `/products/{id}/related`: an object, 404 for an unknown product.
    Related,
    /// `/api/data/{id}`: the bare array, `[]` for an unknown product.
    Compat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub shape: Shape,
    pub product_id: i32,
    pub limit: u16,
}

/// A response worth keeping: a body, or the fact that the product does not exist.
pub type CachedResponse = Result<Rendered, HttpError>;

/// What a load ended with, as every request waiting on it sees it.
type Loaded = Result<Arc<CachedResponse>, HttpError>;

/// Enough shards that the runtime's threads rarely meet on one lock; a power of two so that
/// the shard is the hash's top bits.
const SHARDS: usize = 64;

pub struct ResponseCache {
    shards: Box<[Mutex<Shard<Arc<CachedResponse>>>]>,
    hasher: RandomState,
    ttl: Duration,
    counters: Arc<Counters>,
}

impl ResponseCache {
    /// `settings.capacity` is split evenly over the shards, rounded up: the cache holds at most
    /// that many entries plus fewer than one per shard.
    pub fn new(settings: &CacheSettings, counters: Arc<Counters>) -> Self {
        let per_shard =
            usize::try_from(settings.capacity.get().div_ceil(SHARDS as u64)).unwrap_or(usize::MAX);
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(Shard::new(per_shard)))
                .collect(),
            hasher: RandomState::new(),
            ttl: settings.ttl,
            counters,
        }
    }

    /// The cached response for `key`, if there is one: a lookup, and a hit when it answers.
    pub fn get(&self, key: &CacheKey) -> Option<Arc<CachedResponse>> {
        self.counters.cache_lookup();
        self.shard(key).get(key, Instant::now())
    }

    /// After [`ResponseCache::get`] missed: the cached response for `key` (another request may
    /// have loaded it meanwhile), or the result of `load`, run once for all concurrent callers
    /// of the same key; only a run of `load` counts as a miss. A load that fails with a
    /// transient error is not stored (the requests waiting on it get the error too).
    pub async fn get_or_load<F>(&self, key: CacheKey, load: F) -> Loaded
    where
        F: std::future::Future<Output = Result<CachedResponse, HttpError>>,
    {
        // `load` is awaited in place, at the end: moving it into another future first would
        // give this future room for two copies of it (rustc keeps a moved-from local's
        // storage), and the load is kilobytes.
        let done = loop {
            // Decided under the shard's lock, acted on after it is released: the guard must
            // not live across an await.
            let next = {
                let mut shard = self.shard(&key);
                if let Some(hit) = shard.get(&key, Instant::now()) {
                    return Ok(hit);
                }
                match shard.loading.get(&key) {
                    Some(loading) => Err(loading.clone()),
                    None => {
                        let (done, loading) = watch::channel(None);
                        shard.loading.insert(key, loading);
                        Ok(done)
                    }
                }
            };
            let mut waiting = match next {
                Ok(done) => break done,
                Err(waiting) => waiting,
            };
            // Another request is loading this key: wait for its result. A closed channel
            // without one means that request gave up; go round again and take over.
            loop {
                // The borrow is a lock guard: it must end before the await.
                let seen = waiting.borrow_and_update().clone();
                if let Some(loaded) = seen {
                    return loaded;
                }
                if waiting.changed().await.is_err() {
                    let last = waiting.borrow().clone();
                    match last {
                        Some(loaded) => return loaded,
                        None => break,
                    }
                }
            }
        };
        // Dropped before the load ends (the request's deadline, a closed connection), the
        // guard takes the key off the loading list before the channel closes, so that a waiter
        // woken by the close finds no stale load to wait on.
        let mut leading = Leading {
            cache: self,
            key,
            done: Some(done),
        };
        self.counters.cache_misses.fetch_add(1, Relaxed);
        let loaded = load.await.map(Arc::new);
        {
            let mut shard = self.shard(&key);
            shard.loading.remove(&key);
            if let Ok(response) = &loaded {
                shard.insert(key, response.clone(), Instant::now(), self.ttl);
            }
        }
        let done = leading.done.take().expect("sent once");
        done.send_replace(Some(loaded.clone()));
        loaded
    }

    /// Entries held, expired ones not yet swept included.
    pub fn entries(&self) -> u64 {
        self.shards
            .iter()
            .map(|shard| lock(shard).entries.len() as u64)
            .sum()
    }

    fn shard(&self, key: &CacheKey) -> MutexGuard<'_, Shard<Arc<CachedResponse>>> {
        let hash = self.hasher.hash_one(key);
        lock(&self.shards[(hash >> (64 - SHARDS.trailing_zeros())) as usize])
    }
}

/// A shard's lock; a panic elsewhere while it was held cannot leave it half-changed (every
/// change is one map or queue operation), so poisoning is ignored.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Leading<'a> {
    cache: &'a ResponseCache,
    key: CacheKey,
    done: Option<watch::Sender<Option<Loaded>>>,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        if self.done.is_some() {
            self.cache.shard(&self.key).loading.remove(&self.key);
        }
    }
}

/// One shard: its entries, their order for expiry and eviction, and the loads in progress.
struct Shard<V> {
    entries: HashMap<CacheKey, Entry<V>>,
    /// Keys in insertion order, each with the generation it was inserted with: a key removed
    /// or inserted again leaves a stale place here, skipped when reached and compacted away
    /// when they pile up.
    order: VecDeque<(CacheKey, u64)>,
    loading: HashMap<CacheKey, watch::Receiver<Option<Loaded>>>,
    capacity: usize,
    generation: u64,
}

struct Entry<V> {
    value: V,
    expires: Instant,
    generation: u64,
    /// Read since the eviction hand last passed it.
    read: bool,
}

/// How many expired entries one insertion sweeps from the front at most: enough to keep up
/// with insertions, bounded so that one request never pays for many.
const SWEEP: usize = 2;

impl<V: Clone> Shard<V> {
    fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
            loading: HashMap::new(),
            capacity: capacity.max(1),
            generation: 0,
        }
    }

    fn get(&mut self, key: &CacheKey, now: Instant) -> Option<V> {
        let entry = self.entries.get_mut(key)?;
        if entry.expires <= now {
            self.entries.remove(key);
            return None;
        }
        entry.read = true;
        Some(entry.value.clone())
    }

    fn insert(&mut self, key: CacheKey, value: V, now: Instant, ttl: Duration) {
        self.sweep_expired(now);
        if !self.entries.contains_key(&key) {
            while self.entries.len() >= self.capacity {
                self.evict_one(now);
            }
        }
        self.generation += 1;
        let generation = self.generation;
        self.entries.insert(
            key,
            Entry {
                value,
                expires: now + ttl,
                generation,
                read: false,
            },
        );
        self.order.push_back((key, generation));
        if self.order.len() > 2 * self.entries.len() + 16 {
            let entries = &self.entries;
            self.order.retain(|(key, generation)| {
                entries
                    .get(key)
                    .is_some_and(|e| e.generation == *generation)
            });
        }
    }

    /// Removes up to [`SWEEP`] expired entries (or stale places) from the front of the order.
    fn sweep_expired(&mut self, now: Instant) {
        for _ in 0..SWEEP {
            let Some(&(key, generation)) = self.order.front() else {
                return;
            };
            match self.entries.get(&key) {
                Some(e) if e.generation == generation && e.expires > now => return,
                Some(e) if e.generation == generation => {
                    self.entries.remove(&key);
                }
                _ => {}
            }
            self.order.pop_front();
        }
    }

    /// Removes one entry: the oldest not read since the hand last passed it (an expired one
    /// goes whatever its mark); the read ones passed on the way go to the back, unmarked.
    fn evict_one(&mut self, now: Instant) {
        while let Some((key, generation)) = self.order.pop_front() {
            let Some(entry) = self.entries.get_mut(&key) else {
                continue;
            };
            if entry.generation != generation {
                continue;
            }
            if entry.read && entry.expires > now {
                entry.read = false;
                self.order.push_back((key, generation));
            } else {
                self.entries.remove(&key);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU64;
    use std::sync::atomic::AtomicUsize;

    fn key(product_id: i32) -> CacheKey {
        CacheKey {
            shape: Shape::Related,
            product_id,
            limit: 16,
        }
    }

    const TTL: Duration = Duration::from_secs(30);

    #[test]
    fn an_entry_expires_after_its_ttl() {
        let t0 = Instant::now();
        let mut shard = Shard::new(10);
        shard.insert(key(1), "one", t0, TTL);
        assert_eq!(
            shard.get(&key(1), t0 + TTL - Duration::from_millis(1)),
            Some("one")
        );
        assert_eq!(shard.get(&key(1), t0 + TTL), None);
        assert!(shard.entries.is_empty(), "an expired entry read is removed");
    }

    #[test]
    fn insertions_sweep_expired_entries_that_nobody_reads() {
        let t0 = Instant::now();
        let mut shard = Shard::new(1000);
        for id in 0..100 {
            shard.insert(key(id), id, t0, TTL);
        }
        let later = t0 + TTL;
        for id in 100..200 {
            shard.insert(key(id), id, later, TTL);
        }
        assert_eq!(shard.entries.len(), 100, "each insertion swept up to two");
        assert!((100..200).all(|id| shard.get(&key(id), later) == Some(id)));
    }

    #[test]
    fn the_size_stays_bounded_and_read_entries_get_a_second_chance() {
        let t0 = Instant::now();
        let mut shard = Shard::new(3);
        for id in 1..=3 {
            shard.insert(key(id), id, t0, TTL);
        }
        assert_eq!(shard.get(&key(1), t0), Some(1));
        shard.insert(key(4), 4, t0, TTL);
        assert_eq!(shard.entries.len(), 3);
        assert_eq!(shard.get(&key(2), t0), None, "the oldest unread entry went");
        assert_eq!(shard.get(&key(1), t0), Some(1), "the read one stayed");
        for id in 5..1000 {
            shard.insert(key(id), id, t0, TTL);
            assert!(shard.entries.len() <= 3);
        }
    }

    #[test]
    fn the_order_queue_does_not_grow_with_reloads() {
        let t0 = Instant::now();
        let mut shard = Shard::new(100);
        // Each key expires, is read (removed) and loaded again, many times over.
        for round in 0..1000u32 {
            let now = t0 + TTL * round;
            for id in 0..10 {
                assert_eq!(shard.get(&key(id), now), None);
                shard.insert(key(id), id, now, TTL);
            }
        }
        assert_eq!(shard.entries.len(), 10);
        assert!(
            shard.order.len() <= 2 * 10 + 16 + 1,
            "{}",
            shard.order.len()
        );
    }

    fn cache(capacity: u64) -> ResponseCache {
        ResponseCache::new(
            &CacheSettings {
                capacity: NonZeroU64::new(capacity).unwrap(),
                ttl: TTL,
            },
            Arc::new(Counters::default()),
        )
    }

    fn found(body: &'static str) -> CachedResponse {
        Ok(Rendered::new(body.as_bytes().to_vec()))
    }

    #[test]
    fn the_capacity_bounds_the_whole_cache() {
        let cache = cache(640);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for id in 0..10_000 {
            rt.block_on(cache.get_or_load(key(id), async { Ok(found("x")) }))
                .unwrap();
        }
        assert!(cache.entries() <= 640, "{}", cache.entries());
        assert!(cache.entries() >= 500, "{}", cache.entries());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_run_one_load() {
        let cache = Arc::new(cache(1000));
        let loads = Arc::new(AtomicUsize::new(0));
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let released = futures::FutureExt::shared(released);
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (cache, loads, released) = (cache.clone(), loads.clone(), released.clone());
                tokio::spawn(async move {
                    cache
                        .get_or_load(key(7), async {
                            loads.fetch_add(1, Relaxed);
                            let _ = released.await;
                            Ok(found("seven"))
                        })
                        .await
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        release.send(()).unwrap();
        for task in tasks {
            let got = task.await.unwrap().unwrap();
            assert_eq!(got.as_ref().as_ref().unwrap().body, "seven");
        }
        assert_eq!(loads.load(Relaxed), 1);
        assert_eq!(cache.counters.snapshot().cache_misses, 1);
        assert!(cache.get(&key(7)).is_some());
    }

    #[tokio::test]
    async fn a_transient_error_reaches_the_waiters_and_is_not_stored() {
        let cache = cache(1000);
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let leader = cache.get_or_load(key(3), async {
            let _ = released.await;
            Err(HttpError::DeadlineExceeded)
        });
        let waiter = cache.get_or_load(key(3), async { unreachable!("the leader loads") });
        let release = async {
            tokio::task::yield_now().await;
            release.send(()).unwrap();
        };
        let (a, b, ()) = tokio::join!(leader, waiter, release);
        assert_eq!(a.unwrap_err(), HttpError::DeadlineExceeded);
        assert_eq!(b.unwrap_err(), HttpError::DeadlineExceeded);
        assert!(cache.get(&key(3)).is_none(), "errors are not cached");
        let again = cache
            .get_or_load(key(3), async { Ok(Err(HttpError::ProductNotFound)) })
            .await
            .unwrap();
        assert_eq!(*again, Err(HttpError::ProductNotFound));
        assert!(cache.get(&key(3)).is_some(), "an unknown product is cached");
    }

    #[tokio::test]
    async fn a_waiter_takes_over_when_the_loading_request_gives_up() {
        let cache = cache(1000);
        let leader = cache.get_or_load(key(5), std::future::pending());
        let waiter = cache.get_or_load(key(5), async { Ok(found("five")) });
        let timed_out_leader = tokio::time::timeout(Duration::from_millis(20), leader);
        let (a, b) = tokio::join!(timed_out_leader, waiter);
        assert!(a.is_err(), "the leader never finished");
        assert_eq!(b.unwrap().as_ref().as_ref().unwrap().body, "five");
        assert_eq!(cache.counters.snapshot().cache_misses, 2);
        assert!(cache.shard(&key(5)).loading.is_empty());
    }
}

//! The optional in-process cache of rendered responses (off by default).
//!
//! Keys are (route shape, product id, limit); values are the finished body and its ETag, so a
//! hit costs no query and no JSON rendering. moka's `try_get_with` coalesces: concurrent misses
//! on one key wait for a single load, so a burst on a cold key runs the query once. Errors
//! (503, 504) are never cached; an unknown product is, for the TTL like anything else.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

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

pub struct ResponseCache {
    cache: moka::future::Cache<CacheKey, Arc<CachedResponse>>,
    counters: Arc<Counters>,
}

impl ResponseCache {
    pub fn new(settings: &CacheSettings, counters: Arc<Counters>) -> Self {
        Self {
            cache: moka::future::Cache::builder()
                .max_capacity(settings.capacity.get())
                .time_to_live(settings.ttl)
                .build(),
            counters,
        }
    }

    /// The cached response for `key`, if there is one: a lookup, and a hit when it answers.
    pub async fn get(&self, key: &CacheKey) -> Option<Arc<CachedResponse>> {
        self.counters.cache_lookup();
        self.cache.get(key).await
    }

    /// After [`ResponseCache::get`] missed: the cached response for `key` (another request may
    /// have loaded it meanwhile), or the result of `load`, run once for all concurrent callers
    /// of the same key; only a run of `load` counts as a miss. A load that fails with a
    /// transient error is not stored.
    pub async fn get_or_load<F>(
        &self,
        key: CacheKey,
        load: F,
    ) -> Result<Arc<CachedResponse>, HttpError>
    where
        F: std::future::Future<Output = Result<CachedResponse, HttpError>>,
    {
        let counters = &self.counters;
        self.cache
            .try_get_with(key, async move {
                counters.cache_misses.fetch_add(1, Relaxed);
                load.await.map(Arc::new)
            })
            .await
            .map_err(|e| (*e).clone())
    }

    pub fn entries(&self) -> u64 {
        self.cache.entry_count()
    }
}

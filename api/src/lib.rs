//! The related-items read API: hyper over a set of PostgreSQL read replicas.
//!
//! `GET /products/{id}/related?limit=N` answers one storefront carousel with one prepared query
//! on one replica; `GET /api/data/{id}` keeps the original service's bare-array contract.
//! Replicas are chosen per request by least in-flight among two random choices, failing ones
//! are banned and the request retried elsewhere, and an optional cache coalesces hot keys.
//!
//! Modules: [`config`] (flags, validated once into settings), [`server`] (the public and the
//! operator listener, accept loop, shutdown, signals), [`http`] (routes and the HTTP contract), [`params`] (the id and `limit`, checked),
//! [`replicas`] (pools, routing, bans, health), [`query`] (the SQL), [`render`] (JSON bodies
//! and ETags), [`assets`] (the embedded OpenAPI document and carousel widget), [`cache`],
//! [`counters`] (process-wide counts), [`metrics`] (the only writer of Prometheus text),
//! [`error`], [`alloc`] and [`sched`] (the malloc setting and the scheduling policy the binary
//! starts with).

pub mod alloc;
pub mod assets;
pub mod cache;
pub mod config;
pub mod counters;
pub mod error;
pub mod http;
pub mod metrics;
pub mod params;
pub mod query;
pub mod render;
pub mod replicas;
pub mod sched;
pub mod server;

pub use config::{Config, ConfigError, PoolCheck, Settings};
pub use error::{ApiError, HttpError};
pub use query::{RelatedItem, RelatedItems, RELATED_SQL};
pub use replicas::ReplicaSet;
pub use server::{
    init_tracing, run, run_settings, run_with_reload, serve, serve_settings, Listeners,
};

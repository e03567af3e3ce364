//! Integration tests of the API against a real PostgreSQL primary with streaming replicas
//! (the stack crate). One binary, one module per concern; `helpers` holds the plumbing.
//!
//! Every check is its own `#[tokio::test]`, so a failure names what broke and any check runs
//! alone (`cargo test -p api --test api <name>`). Tests that never stop a node share one
//! cluster (`helpers::shared_cluster`): those that only read run side by side, and those that
//! count queries on the servers or change a replica take it alone
//! (`helpers::shared_cluster_alone`). Tests that stop servers build their own cluster.

mod batch;
mod cache;
mod contract;
mod helpers;
mod lifecycle;
mod malformed;
mod openapi;
mod replicas;
mod widget;

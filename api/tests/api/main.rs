//! Integration tests of the API against a real PostgreSQL primary with streaming replicas
//! (the stack crate). One binary, one module per concern; `helpers` holds the plumbing.

mod cache;
mod contract;
mod helpers;
mod lifecycle;
mod malformed;
mod replicas;

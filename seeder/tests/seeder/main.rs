//! Integration tests of the seeder against real PostgreSQL servers started by the stack crate;
//! every test gets its own cluster in its own temporary directory.

mod csv;
mod determinism;
mod errors;
mod helpers;
mod lock;
mod replicas;
mod resume;
mod writes;

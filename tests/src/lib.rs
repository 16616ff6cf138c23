#![forbid(unsafe_code)]
//! A real Haven network on loopback, for the integration tests and the demo: development PKI made in a
//! temporary directory, the gateway on SQLite or a fresh PostgreSQL database, and nodes.
//!
//! The database comes from `HAVEN_TEST_DB`: `sqlite` (the default) or `postgres`. With `postgres`, each
//! test creates its own database on the server named by `HAVEN_TEST_PG` (default
//! `postgres://postgres@127.0.0.1:5432/test`), and a server that cannot be reached fails the test.

pub mod fixtures;
pub mod net;
pub mod procs;
pub mod sender;
pub mod web;

#![forbid(unsafe_code)]
//! Haven's gateway.
//!
//! - [`identity`]: the mTLS edge and person tokens, turned into a typed `Caller`;
//! - [`policy`]: the sharing-policy bundle and the pure decision function;
//! - [`audit`]: appending to the audit log in the same transaction as each state change;
//! - [`store`]: SQLite and PostgreSQL behind one code path, with embedded migrations;
//! - [`stream`]: each node's delivery stream, and the lease that lets one stream per organization
//!   receive across replicas;
//! - [`service`]: the gRPC services; [`server`]: the listener that serves them;
//! - [`app`]: the running gateway's state and its reload path; [`config`]: its settings.

pub mod app;
pub mod audit;
pub mod commit;
pub mod config;
pub mod consent;
pub mod envelope;
pub mod error;
pub mod identity;
pub mod integrity;
pub mod keys;
pub mod keys_cli;
pub mod policy;
pub mod routing;
pub mod server;
pub mod service;
pub mod state;
pub mod store;
pub mod stream;
pub mod views;

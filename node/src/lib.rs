#![forbid(unsafe_code)]
//! Haven's node: an organization's outbound link to the gateway and the API its people use.
//!
//! - [`link`]: the mTLS channel to the gateway and the person tokens the node mints;
//! - [`stream`]: the long-lived delivery stream, reopened after any outage;
//! - [`users`]: the organization's people and their node tokens;
//! - [`store`]: the node's own SQLite database;
//! - [`api`]: the `Node` service; [`app`]: the running node.

pub mod api;
pub mod app;
pub mod link;
pub mod store;
pub mod stream;
pub mod users;

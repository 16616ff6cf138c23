//! The parts of `haven-bench`.
//!
//! - [`network`]: the bench network: a copy of the sample bundle with the organizations the scenarios
//!   need, development certificates, fresh databases, and the child processes (gateway, echo);
//! - [`echo`]: the `baseline` scenario's bare echo service over the gateway's own mTLS acceptor;
//! - [`load`]: closed-loop and fixed-rate drivers that time each operation into an HDR histogram;
//! - [`report`]: the figures of a scenario, the table on stdout and the JSON file;
//! - [`scenarios`]: `baseline`, `submit`, `e2e`, `fanout` and `many-orgs`.

pub mod echo;
pub mod load;
pub mod network;
pub mod report;
pub mod scenarios;

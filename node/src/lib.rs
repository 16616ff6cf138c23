#![forbid(unsafe_code)]
//! Haven's node: an organization's outbound link to the gateway and the API its people use.
//!
//! - [`link`]: the mTLS channel to the gateway and the person tokens the node mints;
//! - [`stream`]: the long-lived delivery stream, reopened after any outage;
//! - [`people`]: the organization's people, their roles and node tokens, in the node's database;
//!   [`password`]: their passwords, and the check that signs them in with one; [`users`]: the users
//!   file of earlier versions, imported once; [`totp`]: the console's second factor;
//! - [`store`]: the node's own SQLite database; [`network`]: the network's purposes, kinds and
//!   organizations, as the node keeps them for the people who build messages;
//! - [`actions`]: what people do at their node, one function per action, each with its permission
//!   check; [`access`]: the node's access log (views of survivor data, sign-ins); [`views`]: views
//!   reported to the gateway, signed;
//! - [`api`]: the `Node` service, a thin caller of the actions; [`app`]: the running node;
//! - [`witness`]: checks every audit checkpoint the node sees; [`audit_proxy`]: the `Audit` service,
//!   forwarded to the gateway;
//! - [`sealing`]: the organization's sealing keys; [`keylog`]: the key-log witness; [`seal`]: a send
//!   decided here and sealed to each recipient; [`unseal`]: a received copy verified and opened, or
//!   rejected and reported; [`bundles`]: the policy bundles this node decides and checks under;
//! - [`failure`]: why a call failed, told apart (never reached the other end, or its answer);
//! - [`cli`]: every `haven-node` command but `serve`: what people run against their node
//!   (`referral|alert|inbox|consent|whoami|audit`) and `users`.

pub mod access;
pub mod actions;
pub mod api;
pub mod app;
pub mod audit_proxy;
pub mod bundles;
pub mod cli;
pub mod consent;
pub mod console;
pub mod failure;
pub mod keylog;
pub mod link;
pub mod mailbox;
pub mod network;
pub mod password;
pub mod people;
pub mod seal;
pub mod sealing;
pub mod state;
pub mod store;
pub mod stream;
pub mod totp;
pub mod unseal;
pub mod users;
pub mod views;
pub mod witness;

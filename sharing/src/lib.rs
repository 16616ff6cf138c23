//! Haven's rules of sharing, as pure functions over facts.
//!
//! This crate holds what the gateway (and, for sealed payloads, a node) must decide the same way
//! everywhere, and nothing that does I/O: no database, no network, no async runtime. CI checks that
//! `cargo tree -e normal -p haven-sharing` names none of `sqlx`, `tonic`, `tokio` or `hyper`.
//!
//! - [`policy`]: the sharing-policy language (`policies/`), read, checked and indexed into a
//!   [`policy::Bundle`], and [`policy::decide`], which says for each recipient whether a message may go
//!   and which of its fields it may see;
//! - [`consent`]: whether a consent is in force now, for a decision and for a copy already queued;
//! - [`envelope`]: a submitted envelope parsed once, with typed ids ([`envelope::MessageId`],
//!   [`envelope::ConsentId`], [`envelope::Kind`], [`envelope::Purpose`]) and a refusal for each bad part;
//! - [`delivery`]: the states of a recipient's copy and of a queued item, and the closed loop of
//!   status changes a referral or an alert follows.

#![forbid(unsafe_code)]

pub mod consent;
pub mod delivery;
pub mod envelope;
pub mod policy;

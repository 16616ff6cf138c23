#![forbid(unsafe_code)]
//! What the gateway, the nodes and the tools must agree on to trust each other.
//!
//! - [`ids`]: typed identities, parsed once at the edge;
//! - [`registry`]: the organization registry and its certificate pins;
//! - [`source`]: contract files that report problems as `file:line:col`;
//! - [`pki`]: reading certificates and keys, and building the TLS configurations;
//! - [`owner_only`]: key and database files that only their owner may read;
//! - [`es256`]: the signatures of every JWS, by ring;
//! - [`token`]: the short-lived person tokens a node mints and the gateway verifies;
//! - [`receipt`]: the signed consent receipt;
//! - [`audit`]: the audit entry encoding, the Merkle tree and signed checkpoints;
//! - [`export`]: the audit export format and the offline verifier;
//! - [`untrusted`]: how much of a caller's text an error repeats.

pub mod audit;
pub mod clock;
pub mod es256;
pub mod export;
pub mod hpke;
pub mod ids;
pub mod keylog;
pub mod merkle;
pub mod owner_only;
pub mod pki;
pub mod receipt;
pub mod registry;
pub mod sealed;
pub mod sealing;
pub mod source;
pub mod token;
pub mod untrusted;
pub mod views;

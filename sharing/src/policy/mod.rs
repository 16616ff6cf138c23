//! The sharing-policy engine: the contract in `policies/`, read, checked and indexed into a
//! [`Bundle`], and the pure [`decide`] function that says, for each recipient of a message, whether it
//! may go, which rules say so, and which of its fields the recipient may see.
//!
//! - [`bundle`]: loading a whole `policies/` directory, its version, its lookups;
//! - [`network`]: `network.toml` (limits) and `purposes.toml`;
//! - [`schema`]: `schema.toml`, message kinds, field types and sensitivity labels;
//! - [`rules`]: `rules/*.toml`, the sharing rules, and the checks that refuse a rule that is wrong or
//!   can never match;
//! - [`engine`]: [`decide`], [`Decision`] and the fixed list of [`DenyReason`]s;
//! - [`explain`]: why a decision came out as it did, rule by rule;
//! - [`testcases`]: the table-driven cases in `policies/tests/*.toml`;
//! - [`synthetic`]: a large generated network for the benchmark and the index-equivalence tests.
//!
//! The language itself is documented in `docs/policy-language.md`.

pub mod bundle;
mod directory;
pub mod engine;
pub mod explain;
mod files;
#[cfg(test)]
pub(crate) mod fixtures;
mod index;
pub mod network;
pub mod rules;
pub mod schema;
pub mod synthetic;
pub mod testcases;
pub mod words;

pub use bundle::{Bundle, BundleParts, BundleVersion};
pub use engine::{Decision, DecisionRequest, DenyReason, decide, decide_linear};
pub use explain::{Explanation, explain};
pub use network::{NetworkParams, PurposeDef, Purposes};
pub use rules::{ConsentRequirement, Effect, FieldGrant, Origin, Parties, Rule};
pub use schema::{FieldDef, FieldProblem, FieldType, FieldValue, KindDef, LABELS, Schema};
pub use words::Words;

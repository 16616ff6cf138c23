#![forbid(unsafe_code)]
//! Haven's development PKI: the network CA, the gateway's and every organization's TLS and signing
//! certificates, revocation (CRL), renewal, CSR signing, and the pins the registry merges.
//!
//! Every key is ECDSA P-256 (PKCS#8 PEM, mode 0600); every certificate has a random serial; the CA
//! signs with rcgen on ring.
//!
//! - [`layout`] — where each file lives in the output directory ([`Layout`]);
//! - [`party`] — whom a certificate names ([`Party`]) and what it is for ([`CertKind`]);
//! - [`network`] — [`init`], setting up or completing a directory;
//! - [`revocation`] — [`revoke`], `revoked.toml` and `crl.pem`;
//! - [`renewal`] — [`renew`];
//! - [`csr`] — the production flow, [`make_csr`] and [`sign_csr`];
//! - [`install`] — [`install()`], a node's certificate folder from the files an organization holds;
//! - [`pins`] — `pins.toml`;
//! - [`bad_certs`] — expired, unpinned and foreign certificates for TLS tests;
//! - [`error`] — [`CertsError`].
//!
//! Internal: `ca` (the CA itself), `issue` (certificate profiles), `store` (writing files safely).

mod ca;
mod issue;
mod store;
mod validity;

pub mod bad_certs;
pub mod csr;
pub mod error;
pub mod install;
pub mod layout;
pub mod network;
pub mod party;
pub mod pins;
pub mod renewal;
pub mod revocation;

pub use bad_certs::{foreign_ca_org_cert, issue_expired_org_cert, issue_unpinned_org_cert};
pub use ca::NETWORK_CA_NAME;
pub use csr::{make_csr, sign_csr};
pub use error::CertsError;
pub use install::{InstallFiles, Installed, install};
pub use issue::Issued;
pub use layout::Layout;
pub use network::{InitOptions, InitReport, init, init_with, init_with_gateway_names};
pub use party::{CertKind, Party};
pub use renewal::{renew, renew_with_gateway_names};
pub use revocation::{RevocationCause, RevocationList, RevokedEntry, revoke, revoke_cert_file, revoke_party};

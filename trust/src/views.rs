//! View records: what a recipient organization asserts about its own people looking at the data it
//! received. The gateway cannot see who at an organization opened a message, so the organization's
//! node signs a batch of records with its signing key (a compact JWS, ES256, `x5c` carrying the signing
//! certificate, as consent receipts are) and the gateway writes each record to the audit trail as a
//! `viewed` entry asserted by that organization. A record names fields, never their values.

use serde::{Deserialize, Serialize};

use crate::ids::OrgId;

/// The most records one batch may carry.
pub const MAX_VIEWS_PER_BATCH: usize = 200;
/// The largest batch, as a JWS, in bytes.
pub const MAX_BATCH_BYTES: usize = 256 * 1024;

/// One person shown one received message's fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewRecord {
    /// A UUID the node gives the record: the gateway stores each once, however often it is sent.
    pub view_id: String,
    /// When it was shown, microseconds since the epoch.
    pub at_micros: i64,
    /// The person and their role at the organization.
    pub person: String,
    pub role: String,
    pub message_id: String,
    /// The recipient-scoped pseudonym of the subject, as the delivery carried it.
    pub subject: String,
    /// The names of the fields shown.
    pub fields: Vec<String>,
}

/// A batch of view records, signed by the organization whose people they are about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewBatch {
    pub org: OrgId,
    pub views: Vec<ViewRecord>,
}

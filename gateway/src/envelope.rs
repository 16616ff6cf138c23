//! The wire's envelope, handed to [`haven_sharing::envelope::parse`]: the one place a submitted
//! envelope is parsed and checked (every id typed, every field against the schema). Decide and Submit
//! both start here, so both refuse the same bad input the same way.

use haven_proto::v1 as pb;
use haven_sharing::envelope::{EnvelopeError, RawEnvelope};
use haven_trust::ids::OrgId;

use crate::error::Error;
use crate::policy::Bundle;

pub use haven_sharing::envelope::{ConsentId, Envelope, Kind, MessageId, Purpose, Recipients};

/// Parses and validates an envelope. `require_id` is false for a dry run, which may omit the id.
pub fn parse(env: Option<pb::Envelope>, bundle: &Bundle, sender: &OrgId, require_id: bool) -> Result<Envelope, Error> {
    let env = env.ok_or(EnvelopeError::Missing).map_err(refused)?;
    let env = haven_sharing::envelope::parse(RawEnvelope::from(env), bundle, sender, require_id).map_err(refused)?;
    if env.fields.has_values() {
        return Err(Error::InvalidArgument(
            "the gateway takes no field values: name the fields in `field_names` and seal the values to each recipient (SubmitRequest.copies; docs/wire-protocol.md#sealed-copies)".into(),
        ));
    }
    Ok(env)
}

fn refused(e: EnvelopeError) -> Error {
    if let EnvelopeError::Fields(problems) = &e {
        let all = problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
        tracing::debug!(problems = %haven_trust::untrusted::bounded(all), "envelope refused");
    }
    Error::InvalidArgument(e.to_string())
}

//! The wire's envelope, handed to [`haven_sharing::envelope::parse`]: the one place a submitted
//! envelope is parsed and checked (every id typed, every field against the schema). Decide and Submit
//! both start here, so both refuse the same bad input the same way.

use haven_proto::v1::{self as pb, field_value};
use haven_sharing::envelope::{EnvelopeError, RawEnvelope, RawValue};
use haven_trust::ids::OrgId;

use crate::error::Error;
use crate::policy::{Bundle, FieldValue};

pub use haven_sharing::envelope::{ConsentId, Envelope, Kind, MessageId, Purpose, Recipients};

/// Parses and validates an envelope. `require_id` is false for a dry run, which may omit the id.
pub fn parse(env: Option<pb::Envelope>, bundle: &Bundle, sender: &OrgId, require_id: bool) -> Result<Envelope, Error> {
    let env = env.ok_or(EnvelopeError::Missing).map_err(refused)?;
    haven_sharing::envelope::parse(raw(env), bundle, sender, require_id).map_err(refused)
}

fn refused(e: EnvelopeError) -> Error {
    if let EnvelopeError::Fields(problems) = &e {
        let all = problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
        tracing::debug!(problems = %haven_trust::untrusted::bounded(all), "envelope refused");
    }
    Error::InvalidArgument(e.to_string())
}

/// The wire's envelope as the parser takes it.
fn raw(env: pb::Envelope) -> RawEnvelope {
    let fields = env
        .fields
        .into_iter()
        .map(|(name, v)| {
            let value = v.value.map(|v| match v {
                field_value::Value::Text(s) => RawValue::Text(s),
                field_value::Value::Integer(i) => RawValue::Integer(i),
                field_value::Value::Date(d) => RawValue::Date(d),
                field_value::Value::List(l) => RawValue::List(l.items),
            });
            (name, value)
        })
        .collect();
    RawEnvelope {
        message_id: env.message_id,
        kind: env.kind,
        recipients: env.recipients,
        all_permitted_recipients: env.all_permitted_recipients,
        purpose: env.purpose,
        subject_pseudonym: env.subject_pseudonym,
        consent_id: env.consent_id,
        fields,
        correlation_id: env.correlation_id,
    }
}

/// The wire form of a field value.
pub fn to_proto(v: &FieldValue) -> pb::FieldValue {
    let value = match v {
        FieldValue::Str(s) => field_value::Value::Text(s.clone()),
        FieldValue::Int(i) => field_value::Value::Integer(*i),
        FieldValue::Date(d) => field_value::Value::Date(d.to_string()),
        FieldValue::List(items) => field_value::Value::List(pb::StringList { items: items.clone() }),
    };
    pb::FieldValue { value: Some(value) }
}

//! A submitted envelope, parsed once at the edge: every id typed, every field checked against the
//! schema. Decide and Submit both start here, so both refuse the same bad input the same way.

use std::collections::BTreeMap;

use haven_proto::v1::{self as pb, field_value};
use haven_trust::ids::OrgId;
use haven_trust::untrusted;
use uuid::Uuid;

use crate::consent::check_pseudonym;
use crate::error::Error;
use crate::policy::{Bundle, FieldValue};

/// Who a message is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipients {
    /// Named organizations.
    Named(Vec<OrgId>),
    /// Alerts: every organization a rule permits.
    AllPermitted,
}

/// A validated envelope.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub message_id: Uuid,
    pub kind: String,
    pub recipients: Recipients,
    pub purpose: String,
    pub subject: Option<String>,
    pub consent_id: Option<String>,
    pub fields: BTreeMap<String, FieldValue>,
    pub correlation_id: String,
}

fn short(s: &str) -> untrusted::Shown<'_> {
    untrusted::Shown(s)
}

fn invalid(m: String) -> Error {
    Error::InvalidArgument(m)
}

/// Parses and validates an envelope. `require_id` is false for a dry run, which may omit the id.
pub fn parse(env: Option<pb::Envelope>, bundle: &Bundle, sender: &OrgId, require_id: bool) -> Result<Envelope, Error> {
    let env = env.ok_or_else(|| invalid("envelope is missing".into()))?;
    let message_id = if env.message_id.is_empty() && !require_id {
        Uuid::nil()
    } else {
        let id = Uuid::parse_str(&env.message_id)
            .map_err(|_| invalid(format!("message_id `{}` is not a UUID", short(&env.message_id))))?;
        if id.get_version_num() != 7 {
            return Err(invalid(format!("message_id `{id}` must be a UUIDv7 made by the sender")));
        }
        id
    };
    if bundle.schema().kind(&env.kind).is_none() {
        let kinds: Vec<&str> = bundle.schema().kinds().map(|k| k.name.as_str()).collect();
        return Err(invalid(format!("unknown message kind `{}` (known: {})", short(&env.kind), kinds.join(", "))));
    }
    if !bundle.is_purpose(&env.purpose) {
        let known: Vec<&str> = bundle.purposes().collect();
        return Err(invalid(format!("unknown purpose `{}` (known: {})", short(&env.purpose), known.join(", "))));
    }
    let max = bundle.network().max_recipients as usize;
    let recipients = if env.all_permitted_recipients {
        if !env.recipients.is_empty() {
            return Err(invalid("name recipients or set all_permitted_recipients, not both".into()));
        }
        if env.kind != "alert" {
            return Err(invalid("all_permitted_recipients is for alerts only; a referral names its recipients".into()));
        }
        Recipients::AllPermitted
    } else {
        if env.recipients.is_empty() {
            return Err(invalid("the envelope names no recipient".into()));
        }
        if env.recipients.len() > max {
            return Err(invalid(format!(
                "{} recipients is more than the network maximum of {max}",
                env.recipients.len()
            )));
        }
        let mut out: Vec<OrgId> = Vec::with_capacity(env.recipients.len());
        for r in &env.recipients {
            let id = OrgId::parse(r).map_err(|e| invalid(format!("recipient: {e}")))?;
            if bundle.registry().get(&id).is_none() {
                return Err(invalid(format!("unknown recipient organization `{id}`")));
            }
            if &id == sender {
                return Err(invalid("an organization cannot send a message to itself".into()));
            }
            if out.contains(&id) {
                return Err(invalid(format!("recipient `{id}` is named twice")));
            }
            out.push(id);
        }
        Recipients::Named(out)
    };
    let subject = if env.subject_pseudonym.is_empty() {
        None
    } else {
        check_pseudonym(&env.subject_pseudonym)?;
        Some(env.subject_pseudonym)
    };
    let consent_id = if env.consent_id.is_empty() {
        None
    } else {
        Uuid::parse_str(&env.consent_id)
            .map_err(|_| invalid(format!("consent_id `{}` is not a UUID", short(&env.consent_id))))?;
        Some(env.consent_id)
    };
    if consent_id.is_some() && subject.is_none() {
        return Err(invalid("a message that names a consent must name its subject".into()));
    }
    let mut fields = BTreeMap::new();
    for (name, value) in env.fields {
        let v = match value.value {
            Some(field_value::Value::Text(s)) => FieldValue::Str(s),
            Some(field_value::Value::Integer(i)) => FieldValue::Int(i),
            Some(field_value::Value::Date(d)) => {
                let fmt = time::macros::format_description!("[year]-[month]-[day]");
                FieldValue::Date(
                    time::Date::parse(&d, &fmt)
                        .map_err(|_| invalid(format!("field `{}`: a date must be YYYY-MM-DD", short(&name))))?,
                )
            }
            Some(field_value::Value::List(l)) => FieldValue::List(l.items),
            None => return Err(invalid(format!("field `{}` has no value", short(&name)))),
        };
        fields.insert(name, v);
    }
    bundle
        .schema()
        .validate(&env.kind, &fields)
        .map_err(|problems| {
            tracing::debug!(problems = %problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "), "envelope refused");
            invalid(untrusted::list_problems(&problems, "; "))
        })?;
    let correlation_id = if env.correlation_id.is_empty() {
        String::new()
    } else {
        Uuid::parse_str(&env.correlation_id)
            .map_err(|_| invalid(format!("correlation_id `{}` is not a UUID", short(&env.correlation_id))))?
            .to_string()
    };
    Ok(Envelope {
        message_id,
        kind: env.kind,
        recipients,
        purpose: env.purpose,
        subject,
        consent_id,
        fields,
        correlation_id,
    })
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

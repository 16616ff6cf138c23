//! A submitted envelope, parsed once at the edge: every id typed, every field checked against the
//! bundle's schema. Decide and Submit both start here, so both refuse the same bad input the same way,
//! and a node can run the same checks before it seals a payload.
//!
//! The input is [`RawEnvelope`], the wire's fields as they came; the wire conversion lives with the
//! wire. Every refusal is an [`EnvelopeError`] whose text is bounded (input is shown through
//! [`haven_trust::untrusted::Shown`]) and says what to fix.

use std::collections::BTreeMap;
use std::fmt;

use haven_trust::ids::OrgId;
use haven_trust::untrusted::{self, Shown};
use uuid::Uuid;

use crate::consent::{PseudonymError, check_pseudonym};
use crate::policy::{Bundle, FieldProblem, FieldValue};

/// A message id: a UUIDv7 the sender made (time-ordered, so the sender's retries carry it unchanged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(Uuid);

impl MessageId {
    /// The id a dry run uses when it names none.
    pub const NONE: MessageId = MessageId(Uuid::nil());

    /// The UUID.
    pub fn uuid(&self) -> Uuid {
        self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A consent id: a UUID, kept as the sender wrote it (the registry stores and compares it as text).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConsentId(String);

impl ConsentId {
    /// Checks that `s` is a UUID.
    pub fn parse(s: &str) -> Result<ConsentId, EnvelopeError> {
        Uuid::parse_str(s).map_err(|_| EnvelopeError::BadConsentId { given: untrusted::shown(s) })?;
        Ok(ConsentId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConsentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A message kind the bundle's schema defines (`referral`, `alert`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Kind(String);

impl Kind {
    /// The kind named `s`, if the bundle's schema defines it.
    pub fn parse(s: &str, bundle: &Bundle) -> Result<Kind, EnvelopeError> {
        if bundle.schema().kind(s).is_none() {
            let known = bundle.schema().kinds().map(|k| k.name.clone()).collect();
            return Err(EnvelopeError::UnknownKind { given: untrusted::shown(s), known });
        }
        Ok(Kind(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the alert kind, the only one that may go to every permitted recipient.
    pub fn is_alert(&self) -> bool {
        self.0 == "alert"
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A purpose the bundle's `purposes.toml` names (`housing`, `medical`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Purpose(String);

impl Purpose {
    /// The purpose named `s`, if the bundle recognizes it.
    pub fn parse(s: &str, bundle: &Bundle) -> Result<Purpose, EnvelopeError> {
        if !bundle.is_purpose(s) {
            let known = bundle.purposes().map(str::to_owned).collect();
            return Err(EnvelopeError::UnknownPurpose { given: untrusted::shown(s), known });
        }
        Ok(Purpose(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who a message is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipients {
    /// Named organizations.
    Named(Vec<OrgId>),
    /// Alerts: every organization a rule permits.
    AllPermitted,
}

/// A field's value as the wire carries it, before the schema is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawValue {
    Text(String),
    Integer(i64),
    /// `YYYY-MM-DD`.
    Date(String),
    List(Vec<String>),
}

/// An envelope as it arrived: every field a string, nothing checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawEnvelope {
    pub message_id: String,
    pub kind: String,
    pub recipients: Vec<String>,
    pub all_permitted_recipients: bool,
    pub purpose: String,
    pub subject_pseudonym: String,
    pub consent_id: String,
    /// `None` for a field sent without a value.
    pub fields: Vec<(String, Option<RawValue>)>,
    /// The names of the fields, when the values travel sealed.
    pub field_names: Vec<String>,
    pub correlation_id: String,
}

/// What an envelope carries of its fields: the values (a person's send, at its own node) or only the
/// names (what the gateway sees of a sealed message).
#[derive(Debug, Clone, PartialEq)]
pub enum Contents {
    Values(BTreeMap<String, FieldValue>),
    Names(std::collections::BTreeSet<String>),
}

impl Contents {
    /// The field names, sorted.
    pub fn names(&self) -> Vec<&str> {
        match self {
            Contents::Values(v) => v.keys().map(String::as_str).collect(),
            Contents::Names(n) => n.iter().map(String::as_str).collect(),
        }
    }

    /// The values, when the envelope carries them.
    pub fn values(&self) -> Option<&BTreeMap<String, FieldValue>> {
        match self {
            Contents::Values(v) => Some(v),
            Contents::Names(_) => None,
        }
    }

    /// Whether any value is present (an envelope without fields carries none).
    pub fn has_values(&self) -> bool {
        matches!(self, Contents::Values(v) if !v.is_empty())
    }
}

/// A validated envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub message_id: MessageId,
    pub kind: Kind,
    pub recipients: Recipients,
    pub purpose: Purpose,
    /// The subject's pseudonym as the sender knows it (checked for form).
    pub subject: Option<String>,
    pub consent_id: Option<ConsentId>,
    pub fields: Contents,
    /// A UUID in canonical form, or empty.
    pub correlation_id: String,
}

/// Why an envelope is refused. Every variant is the sender's to fix; the gateway answers
/// `INVALID_ARGUMENT` with this text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("envelope is missing")]
    Missing,
    #[error("message_id `{given}` is not a UUID")]
    BadMessageId { given: String },
    #[error("message_id `{id}` must be a UUIDv7 made by the sender")]
    MessageIdNotV7 { id: Uuid },
    #[error("unknown message kind `{given}` (known: {})", .known.join(", "))]
    UnknownKind { given: String, known: Vec<String> },
    #[error("unknown purpose `{given}` (known: {})", .known.join(", "))]
    UnknownPurpose { given: String, known: Vec<String> },
    #[error("name recipients or set all_permitted_recipients, not both")]
    RecipientsAndAll,
    #[error("all_permitted_recipients is for alerts only; a referral names its recipients")]
    AllPermittedNotAlert,
    #[error("the envelope names no recipient")]
    NoRecipient,
    #[error("{given} recipients is more than the network maximum of {max}")]
    TooManyRecipients { given: usize, max: usize },
    #[error("recipient: {0}")]
    BadRecipient(String),
    #[error("unknown recipient organization `{0}`")]
    UnknownRecipient(OrgId),
    #[error("an organization cannot send a message to itself")]
    ToItself,
    #[error("recipient `{0}` is named twice")]
    RecipientTwice(OrgId),
    #[error(transparent)]
    Pseudonym(#[from] PseudonymError),
    #[error("consent_id `{given}` is not a UUID")]
    BadConsentId { given: String },
    #[error("a message that names a consent must name its subject")]
    ConsentWithoutSubject,
    #[error("field `{name}`: a date must be YYYY-MM-DD")]
    BadDate { name: String },
    #[error("field `{name}` has no value")]
    NoValue { name: String },
    /// The fields do not fit the kind's schema: every problem, the first twenty listed.
    #[error("{}", untrusted::list_problems(.0, "; "))]
    Fields(Vec<FieldProblem>),
    #[error("correlation_id `{given}` is not a UUID")]
    BadCorrelationId { given: String },
    #[error("give the fields' values or their names (field_names), not both")]
    ValuesAndNames,
    #[error("field `{name}` is named twice")]
    NameTwice { name: String },
}

/// Parses and validates an envelope from `sender`. `require_id` is false for a dry run, which may
/// omit the message id.
pub fn parse(env: RawEnvelope, bundle: &Bundle, sender: &OrgId, require_id: bool) -> Result<Envelope, EnvelopeError> {
    let message_id = if env.message_id.is_empty() && !require_id {
        MessageId::NONE
    } else {
        let id = Uuid::parse_str(&env.message_id)
            .map_err(|_| EnvelopeError::BadMessageId { given: Shown(&env.message_id).to_string() })?;
        if id.get_version_num() != 7 {
            return Err(EnvelopeError::MessageIdNotV7 { id });
        }
        MessageId(id)
    };
    let kind = Kind::parse(&env.kind, bundle)?;
    let purpose = Purpose::parse(&env.purpose, bundle)?;
    let recipients = recipients(&env, &kind, bundle, sender)?;
    let subject = if env.subject_pseudonym.is_empty() {
        None
    } else {
        check_pseudonym(&env.subject_pseudonym)?;
        Some(env.subject_pseudonym)
    };
    let consent_id = if env.consent_id.is_empty() { None } else { Some(ConsentId::parse(&env.consent_id)?) };
    if consent_id.is_some() && subject.is_none() {
        return Err(EnvelopeError::ConsentWithoutSubject);
    }
    let fields = if env.field_names.is_empty() {
        let mut fields = BTreeMap::new();
        for (name, value) in env.fields {
            let v = match value {
                Some(RawValue::Text(s)) => FieldValue::Str(s),
                Some(RawValue::Integer(i)) => FieldValue::Int(i),
                Some(RawValue::Date(d)) => {
                    let fmt = time::macros::format_description!("[year]-[month]-[day]");
                    FieldValue::Date(
                        time::Date::parse(&d, &fmt)
                            .map_err(|_| EnvelopeError::BadDate { name: untrusted::shown(&name) })?,
                    )
                }
                Some(RawValue::List(items)) => FieldValue::List(items),
                None => return Err(EnvelopeError::NoValue { name: untrusted::shown(&name) }),
            };
            fields.insert(name, v);
        }
        bundle.schema().validate(kind.as_str(), &fields).map_err(EnvelopeError::Fields)?;
        Contents::Values(fields)
    } else {
        if !env.fields.is_empty() {
            return Err(EnvelopeError::ValuesAndNames);
        }
        let mut names = std::collections::BTreeSet::new();
        for name in env.field_names {
            if names.contains(&name) {
                return Err(EnvelopeError::NameTwice { name: untrusted::shown(&name) });
            }
            names.insert(name);
        }
        bundle.schema().validate_names(kind.as_str(), &names).map_err(EnvelopeError::Fields)?;
        Contents::Names(names)
    };
    let correlation_id = if env.correlation_id.is_empty() {
        String::new()
    } else {
        Uuid::parse_str(&env.correlation_id)
            .map_err(|_| EnvelopeError::BadCorrelationId { given: untrusted::shown(&env.correlation_id) })?
            .to_string()
    };
    Ok(Envelope { message_id, kind, recipients, purpose, subject, consent_id, fields, correlation_id })
}

fn recipients(env: &RawEnvelope, kind: &Kind, bundle: &Bundle, sender: &OrgId) -> Result<Recipients, EnvelopeError> {
    if env.all_permitted_recipients {
        if !env.recipients.is_empty() {
            return Err(EnvelopeError::RecipientsAndAll);
        }
        if !kind.is_alert() {
            return Err(EnvelopeError::AllPermittedNotAlert);
        }
        return Ok(Recipients::AllPermitted);
    }
    if env.recipients.is_empty() {
        return Err(EnvelopeError::NoRecipient);
    }
    let max = bundle.network().max_recipients as usize;
    if env.recipients.len() > max {
        return Err(EnvelopeError::TooManyRecipients { given: env.recipients.len(), max });
    }
    let mut out: Vec<OrgId> = Vec::with_capacity(env.recipients.len());
    for r in &env.recipients {
        let id = OrgId::parse(r).map_err(|e| EnvelopeError::BadRecipient(e.to_string()))?;
        if bundle.registry().get(&id).is_none() {
            return Err(EnvelopeError::UnknownRecipient(id));
        }
        if &id == sender {
            return Err(EnvelopeError::ToItself);
        }
        if out.contains(&id) {
            return Err(EnvelopeError::RecipientTwice(id));
        }
        out.push(id);
    }
    Ok(Recipients::Named(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::fixtures::shipped;

    const CONSENT: &str = "6849f7c0-2bf1-430e-978f-84fab71f4543";
    const SUBJECT: &str = "83fc82eb7ddf74db5140714eff6a48e7";

    fn referral() -> RawEnvelope {
        RawEnvelope {
            message_id: Uuid::now_v7().to_string(),
            kind: "referral".into(),
            recipients: vec!["maple-house".into()],
            purpose: "housing".into(),
            subject_pseudonym: SUBJECT.into(),
            consent_id: CONSENT.into(),
            fields: vec![
                ("urgency".into(), Some(RawValue::Text("high".into()))),
                ("safe_to_contact_by".into(), Some(RawValue::Text("through_caseworker".into()))),
            ],
            ..RawEnvelope::default()
        }
    }

    fn harbor() -> OrgId {
        OrgId::parse("harbor").unwrap()
    }

    #[test]
    fn a_good_referral_parses_into_typed_parts() {
        let b = shipped();
        let env = parse(referral(), &b, &harbor(), true).unwrap();
        assert_eq!(env.kind.as_str(), "referral");
        assert_eq!(env.purpose.as_str(), "housing");
        assert_eq!(env.consent_id.as_ref().map(ConsentId::as_str), Some(CONSENT));
        assert_eq!(env.recipients, Recipients::Named(vec![OrgId::parse("maple-house").unwrap()]));
        assert_eq!(env.message_id.uuid().get_version_num(), 7);
    }

    #[test]
    fn each_bad_part_is_refused_with_what_to_fix() {
        let b = shipped();
        let refused = |change: &dyn Fn(&mut RawEnvelope)| {
            let mut env = referral();
            change(&mut env);
            parse(env, &b, &harbor(), true).unwrap_err()
        };
        let e = refused(&|e| e.message_id = "not-a-uuid".into());
        assert_eq!(e, EnvelopeError::BadMessageId { given: "not-a-uuid".into() });
        let e = refused(&|e| e.message_id = Uuid::new_v4().to_string());
        assert!(matches!(e, EnvelopeError::MessageIdNotV7 { .. }), "{e}");
        let e = refused(&|e| e.kind = "postcard".into());
        assert!(e.to_string().starts_with("unknown message kind `postcard` (known: "), "{e}");
        let e = refused(&|e| e.purpose = "holiday".into());
        assert!(e.to_string().starts_with("unknown purpose `holiday` (known: "), "{e}");
        assert_eq!(refused(&|e| e.all_permitted_recipients = true), EnvelopeError::RecipientsAndAll);
        let e = refused(&|e| {
            e.recipients.clear();
            e.all_permitted_recipients = true;
        });
        assert_eq!(e, EnvelopeError::AllPermittedNotAlert);
        assert_eq!(refused(&|e| e.recipients.clear()), EnvelopeError::NoRecipient);
        assert_eq!(refused(&|e| e.recipients = vec!["harbor".into()]), EnvelopeError::ToItself);
        let e = refused(&|e| e.recipients.push("maple-house".into()));
        assert_eq!(e.to_string(), "recipient `maple-house` is named twice");
        let e = refused(&|e| e.recipients = vec!["nowhere-at-all".into()]);
        assert_eq!(e.to_string(), "unknown recipient organization `nowhere-at-all`");
        let e = refused(&|e| e.consent_id = "6849f7c0".into());
        assert_eq!(e.to_string(), "consent_id `6849f7c0` is not a UUID");
        assert_eq!(refused(&|e| e.subject_pseudonym.clear()), EnvelopeError::ConsentWithoutSubject);
        let e = refused(&|e| e.fields.push(("date_of_birth".into(), Some(RawValue::Date("31/01/2026".into())))));
        assert_eq!(e.to_string(), "field `date_of_birth`: a date must be YYYY-MM-DD");
        let e = refused(&|e| e.fields.push(("urgency".into(), None)));
        assert_eq!(e.to_string(), "field `urgency` has no value");
        let e = refused(&|e| e.correlation_id = "x".into());
        assert_eq!(e.to_string(), "correlation_id `x` is not a UUID");
        assert_eq!(refused(&|e| e.field_names = vec!["urgency".into()]), EnvelopeError::ValuesAndNames);
        let names_only = |e: &mut RawEnvelope| {
            e.field_names = e.fields.drain(..).map(|(n, _)| n).collect();
        };
        let e = refused(&|e| {
            names_only(e);
            e.field_names.push("urgency".into());
        });
        assert_eq!(e.to_string(), "field `urgency` is named twice");
        let e = refused(&|e| {
            names_only(e);
            e.field_names.retain(|n| n != "urgency");
        });
        assert_eq!(e.to_string(), "required field `urgency` is missing");
        let e = refused(&|e| {
            names_only(e);
            e.field_names.push("shoe_size".into());
        });
        assert!(e.to_string().starts_with("kind `referral` has no field `shoe_size`"), "{e}");
    }

    #[test]
    fn an_envelope_may_name_its_fields_without_values() {
        let b = shipped();
        let mut env = referral();
        env.field_names = env.fields.drain(..).map(|(n, _)| n).collect();
        let env = parse(env, &b, &harbor(), true).unwrap();
        assert_eq!(env.fields.names(), vec!["safe_to_contact_by", "urgency"]);
        assert!(env.fields.values().is_none() && !env.fields.has_values());
    }

    #[test]
    fn untrusted_text_in_a_refusal_is_bounded() {
        let b = shipped();
        let mut env = referral();
        env.kind = "k".repeat(10_000);
        let e = parse(env, &b, &harbor(), true).unwrap_err();
        assert!(e.to_string().len() < 1_000, "{} bytes", e.to_string().len());
    }
}

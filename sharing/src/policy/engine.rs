//! The decision: may this sender, through this person, send this message to this recipient, and which
//! of its fields?
//!
//! [`decide`] is a pure function of the request, the bundle, the consent and the time. The gateway,
//! `policy test`, `policy explain` and the benchmark all call it. The rules, in order:
//!
//! 1. A rule *fits* when its `from`, `to`, `kind` and `purposes` cover the request, it is in force at
//!    `now`, and the sender's person role is in its `person_roles`.
//! 2. A fitting deny rule without `fields` denies the message. A deny always wins.
//! 3. A fitting allow rule that requires consent counts only if the consent covers the send (it exists,
//!    belongs to the sender, is about the same subject, is given and within its window, names the
//!    purpose and the recipient).
//! 4. No counting allow rule: denied, with the reason of the allow rule that came closest.
//! 5. `released` = the fields present ∩ the union of what the counting allow rules grant (each
//!    consent-bound grant narrowed to what the consent covers) − what fitting deny rules with `fields`
//!    strip.
//! 6. A required field that is present but not released denies the message; anything else not
//!    released is withheld and stripped before the message is queued.

use std::fmt;

use haven_trust::ids::{OrgId, Role};
use haven_trust::receipt::{ConsentState, ConsentView};
use time::OffsetDateTime;

use super::bundle::Bundle;
use super::rules::{Compiled, role_bit};
use super::schema::{KindDef, label_mask};

/// One recipient of one message, as the engine sees it.
#[derive(Debug, Clone, Copy)]
pub struct DecisionRequest<'a> {
    /// The authenticated sending organization.
    pub sender: &'a OrgId,
    /// The authenticated person's role inside it.
    pub sender_role: Role,
    pub recipient: &'a OrgId,
    pub kind: &'a str,
    pub purpose: &'a str,
    /// The subject's pseudonym as the sender knows it, checked against the consent.
    pub subject: Option<&'a str>,
    /// The consent the message names; the caller looks it up and passes it to [`decide`].
    pub consent_id: Option<&'a str>,
    /// The names of the fields the message carries.
    pub fields: &'a [&'a str],
}

/// The outcome for one recipient. Every decision names the rules and the bundle version it came
/// from, so an audit entry can say exactly why data moved or did not. An allow has no reason and a
/// deny releases nothing: the type cannot say otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The message may go to this recipient, carrying only `released`.
    Allow {
        /// The allow rules that released fields and the deny rules that stripped some.
        rule_ids: Vec<String>,
        /// The fields the recipient receives, sorted.
        released: Vec<String>,
        /// The fields present but not released, sorted.
        withheld: Vec<String>,
        /// `sha256:<hex>` of the bundle that decided.
        bundle_version: String,
    },
    /// The message may not go to this recipient.
    Deny {
        reason: DenyReason,
        /// The specific rule, field, purpose, organization or consent the reason is about; see
        /// `docs/policy-language.md` for what each reason puts here. Never a field value.
        detail: Option<String>,
        /// The rules the denial rests on (the denying rule, or the allow rules that came closest).
        rule_ids: Vec<String>,
        /// Every field present, sorted.
        withheld: Vec<String>,
        /// `sha256:<hex>` of the bundle that decided.
        bundle_version: String,
    },
}

impl Decision {
    /// Whether the message may go.
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }

    /// Why it may not; `None` on an allow.
    pub fn reason(&self) -> Option<DenyReason> {
        match self {
            Decision::Allow { .. } => None,
            Decision::Deny { reason, .. } => Some(*reason),
        }
    }

    /// What the reason is about, when it names something.
    pub fn reason_detail(&self) -> Option<&str> {
        match self {
            Decision::Allow { .. } => None,
            Decision::Deny { detail, .. } => detail.as_deref(),
        }
    }

    /// The rules the decision rests on.
    pub fn rule_ids(&self) -> &[String] {
        match self {
            Decision::Allow { rule_ids, .. } | Decision::Deny { rule_ids, .. } => rule_ids,
        }
    }

    /// The fields the recipient receives; empty on a deny.
    pub fn released(&self) -> &[String] {
        match self {
            Decision::Allow { released, .. } => released,
            Decision::Deny { .. } => &[],
        }
    }

    /// The fields present but not released.
    pub fn withheld(&self) -> &[String] {
        match self {
            Decision::Allow { withheld, .. } | Decision::Deny { withheld, .. } => withheld,
        }
    }

    /// `sha256:<hex>` of the bundle that decided.
    pub fn bundle_version(&self) -> &str {
        match self {
            Decision::Allow { bundle_version, .. } | Decision::Deny { bundle_version, .. } => bundle_version,
        }
    }

    /// An allow narrowed to the fields the sender sealed: those become the released fields and the rest
    /// of the release joins the withheld ones. `Err` names the sealed fields the decision does not
    /// release (the copy exceeds the grant). A deny stays a deny.
    pub fn narrowed_to(self, sealed: &[String]) -> Result<Decision, Vec<String>> {
        match self {
            Decision::Allow { rule_ids, released, mut withheld, bundle_version } => {
                let exceeding: Vec<String> = sealed.iter().filter(|f| !released.contains(f)).cloned().collect();
                if !exceeding.is_empty() {
                    return Err(exceeding);
                }
                let (kept, dropped): (Vec<String>, Vec<String>) =
                    released.into_iter().partition(|f| sealed.contains(f));
                withheld.extend(dropped);
                withheld.sort_unstable();
                Ok(Decision::Allow { rule_ids, released: kept, withheld, bundle_version })
            }
            deny @ Decision::Deny { .. } => Ok(deny),
        }
    }

    /// The same recipient refused after the rules allowed it, for a reason outside them (the queue
    /// quota): nothing released, every field present withheld, the rules kept.
    pub fn refused(self, reason: DenyReason, detail: Option<String>) -> Decision {
        match self {
            Decision::Allow { rule_ids, released, mut withheld, bundle_version } => {
                withheld.extend(released);
                withheld.sort_unstable();
                Decision::Deny { reason, detail, rule_ids, withheld, bundle_version }
            }
            deny @ Decision::Deny { .. } => deny,
        }
    }
}

macro_rules! deny_reasons {
    ($($(#[$doc:meta])* $variant:ident = $code:literal, $text:literal;)*) => {
        /// Why a message was denied for a recipient. The codes are stable: audit entries and the wire
        /// carry them.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum DenyReason {
            $($(#[$doc])* $variant,)*
        }

        impl DenyReason {
            const ALL: &'static [DenyReason] = &[$(DenyReason::$variant,)*];

            /// The stable snake_case code.
            pub fn code(&self) -> &'static str {
                match self {
                    $(DenyReason::$variant => $code,)*
                }
            }

            /// What the reason means, for people.
            pub fn describe(&self) -> &'static str {
                match self {
                    $(DenyReason::$variant => $text,)*
                }
            }
        }
    };
}

deny_reasons! {
    /// No allow rule covers this sender, recipient, kind and purpose.
    NoRuleMatched = "no_rule_matched", "no rule allows this sender to send this kind of message to this recipient for this purpose";
    /// A deny rule matched; the detail names it.
    DeniedByRule = "denied_by_rule", "a deny rule forbids it";
    /// An allow rule matched, but not for the sender's person role.
    RoleNotPermitted = "role_not_permitted", "the allow rule does not let a person in this role use it";
    /// The rule requires consent and the message names none (or one the gateway does not hold).
    ConsentMissing = "consent_missing", "the rule requires consent and none was given";
    /// The consent's window has not started.
    ConsentNotYetValid = "consent_not_yet_valid", "the consent is not yet valid";
    /// The consent's window has ended, or the expiry sweep marked it expired.
    ConsentExpired = "consent_expired", "the consent has expired";
    /// The controller organization revoked the consent.
    ConsentRevoked = "consent_revoked", "the consent was revoked by the organization";
    /// The subject withdrew the consent.
    ConsentWithdrawn = "consent_withdrawn", "the consent was withdrawn by the survivor";
    /// A renewal replaced the consent.
    ConsentSuperseded = "consent_superseded", "the consent was superseded by a renewal";
    /// The consent was collected by another organization; only its controller may use it.
    ConsentOtherOrganization = "consent_other_organization", "the consent belongs to another organization";
    /// The consent is about another subject.
    ConsentOtherSubject = "consent_other_subject", "the consent is about another subject";
    /// The consent does not name the message's purpose.
    ConsentPurposeNotCovered = "consent_purpose_not_covered", "the consent does not cover this purpose";
    /// The consent names neither the recipient nor its type.
    ConsentRecipientNotCovered = "consent_recipient_not_covered", "the consent does not cover this recipient";
    /// A required field would be withheld because the consent does not cover its labels.
    ConsentLabelNotCovered = "consent_label_not_covered", "the consent does not cover a required field's labels";
    /// The allow rule that would apply is not yet in force.
    RuleNotYetValid = "rule_not_yet_valid", "the rule that would allow it is not yet in force";
    /// The allow rule that would apply is no longer in force.
    RuleExpired = "rule_expired", "the rule that would allow it has expired";
    /// A required field would be withheld (not granted, or stripped by a deny rule).
    RequiredFieldNotReleased = "required_field_not_released", "a required field may not be released to this recipient";
    /// The recipient's queue is full. Decided by the router, never by [`decide`].
    QuotaExceeded = "quota_exceeded", "the recipient's queue from this sender is full";
    /// The recipient is not in the registry. The router checks this first; [`decide`] also returns it.
    UnknownRecipient = "unknown_recipient", "the recipient is not an organization of the network";
    /// The registry pins no TLS or no signing certificate of the recipient, so its node can never
    /// connect and nothing is queued for it. Decided by the router, never by [`decide`].
    RecipientNotPinned = "recipient_not_pinned", "the recipient has no pinned certificates, so its node cannot connect";
    /// The sealed copy's manifest lists a field the decision withholds. Decided by the router.
    ManifestExceedsGrant = "manifest_exceeds_grant", "the sealed copy lists a field the policy does not release to this recipient";
    /// The sealed copy's manifest does not verify or does not match the envelope. Decided by the router.
    ManifestMismatch = "manifest_mismatch", "the sealed copy's manifest does not verify or does not match the message";
    /// The sealed copy is sealed to a key that is not the recipient's current sealing key. Decided by the router.
    UnknownSealingKey = "unknown_sealing_key", "the sealed copy is not sealed to the recipient's current sealing key";
    /// The policy allows the recipient but the sender sealed no copy for it. Decided by the router.
    NoSealedCopy = "no_sealed_copy", "the sender sealed no copy for this recipient";
}

impl DenyReason {
    /// Every reason, in a stable order.
    pub fn all() -> &'static [DenyReason] {
        Self::ALL
    }

    /// The reason with this code.
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|r| r.code() == code)
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// The request in the bundle's own numbering.
pub(crate) struct Facts<'r> {
    pub(crate) kind: usize,
    pub(crate) sender: u32,
    pub(crate) sender_type: u32,
    pub(crate) recipient: u32,
    pub(crate) recipient_type: u32,
    /// `None` for a purpose the network does not know: no rule lists it.
    pub(crate) purpose: Option<u32>,
    pub(crate) role: u8,
    pub(crate) present: u128,
    /// Names present that the kind does not define: never released.
    pub(crate) unknown: Vec<&'r str>,
}

impl<'r> Facts<'r> {
    /// Numbers the request, or gives the reason to deny it at once when it names something the bundle
    /// does not know. Details hold identifiers only, never text a caller chose, so an unknown kind or
    /// sender is not echoed (the gateway refuses such requests before deciding anyway).
    pub(crate) fn of(bundle: &Bundle, req: &DecisionRequest<'r>) -> Result<Facts<'r>, (DenyReason, Option<String>)> {
        let dir = &bundle.dir;
        let Some(recipient) = dir.org(req.recipient.as_str()) else {
            return Err((DenyReason::UnknownRecipient, Some(req.recipient.to_string())));
        };
        let Some(sender) = dir.org(req.sender.as_str()) else {
            return Err((DenyReason::NoRuleMatched, None));
        };
        let Some(kind) = bundle.schema().kind_index(req.kind) else {
            return Err((DenyReason::NoRuleMatched, None));
        };
        let def = bundle.schema().kind_at(kind);
        let mut present = 0u128;
        let mut unknown = Vec::new();
        for name in req.fields {
            match def.index_of(name) {
                Some(i) => present |= 1 << i,
                None => unknown.push(*name),
            }
        }
        Ok(Facts {
            kind,
            sender,
            sender_type: dir.type_of(sender),
            recipient,
            recipient_type: dir.type_of(recipient),
            purpose: bundle.purpose_defs().index_of(req.purpose).map(|p| p as u32),
            role: role_bit(req.sender_role),
            present,
            unknown,
        })
    }
}

/// How far a rule's conditions carry it for a request, checked in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fit {
    SenderNotInFrom,
    RecipientNotInTo,
    OtherKind,
    PurposeNotListed,
    NotYetValid,
    Expired,
    RoleNotListed,
    Fits,
}

pub(crate) fn fit(rule: &Compiled, f: &Facts<'_>, now: OffsetDateTime) -> Fit {
    if !rule.from.matches(f.sender, f.sender_type) {
        return Fit::SenderNotInFrom;
    }
    if !rule.to.matches(f.recipient, f.recipient_type) {
        return Fit::RecipientNotInTo;
    }
    if rule.kind.is_some_and(|k| k != f.kind) {
        return Fit::OtherKind;
    }
    if let Some(purposes) = &rule.purposes
        && f.purpose.is_none_or(|p| purposes.binary_search(&p).is_err())
    {
        return Fit::PurposeNotListed;
    }
    if rule.valid_from.is_some_and(|t| now < t) {
        return Fit::NotYetValid;
    }
    if rule.valid_until.is_some_and(|t| now >= t) {
        return Fit::Expired;
    }
    if rule.roles & f.role == 0 {
        return Fit::RoleNotListed;
    }
    Fit::Fits
}

/// Checks the consent against the request; on success, the fields of the kind it covers.
pub(crate) fn consent_cover(
    bundle: &Bundle,
    req: &DecisionRequest<'_>,
    f: &Facts<'_>,
    consent: Option<ConsentView<'_>>,
    now: OffsetDateTime,
) -> Result<u128, (DenyReason, Option<String>)> {
    let Some(view) = consent else {
        return Err((DenyReason::ConsentMissing, req.consent_id.map(str::to_owned)));
    };
    let r = view.receipt;
    if let Some(named) = req.consent_id
        && named != r.consent_id
    {
        return Err((DenyReason::ConsentMissing, Some(named.to_owned())));
    }
    let id = || Some(r.consent_id.clone());
    if r.controller != *req.sender {
        return Err((DenyReason::ConsentOtherOrganization, Some(r.controller.to_string())));
    }
    if req.subject != Some(r.subject.as_str()) {
        return Err((DenyReason::ConsentOtherSubject, id()));
    }
    match view.state {
        ConsentState::Given => {}
        ConsentState::Withdrawn => return Err((DenyReason::ConsentWithdrawn, id())),
        ConsentState::Revoked => return Err((DenyReason::ConsentRevoked, id())),
        ConsentState::Expired => return Err((DenyReason::ConsentExpired, id())),
        ConsentState::Superseded => return Err((DenyReason::ConsentSuperseded, id())),
    }
    if now < r.valid_from {
        return Err((DenyReason::ConsentNotYetValid, id()));
    }
    if now >= r.valid_until {
        return Err((DenyReason::ConsentExpired, id()));
    }
    if !r.purposes.iter().any(|p| p == req.purpose) {
        return Err((DenyReason::ConsentPurposeNotCovered, Some(req.purpose.to_owned())));
    }
    let recipient_type = bundle.dir.type_name(f.recipient_type);
    if !r.recipient_orgs.iter().any(|o| o == req.recipient) && !r.recipient_types.iter().any(|t| t == recipient_type) {
        return Err((DenyReason::ConsentRecipientNotCovered, Some(req.recipient.to_string())));
    }
    let def = bundle.schema().kind_at(f.kind);
    Ok(def.within(label_mask(r.labels.iter().map(String::as_str))) | def.mask_of(r.fields.iter().map(String::as_str)))
}

/// Decides one recipient of one message, looking only at the rules the index files under its kind,
/// sender and recipient.
pub fn decide(
    req: &DecisionRequest<'_>,
    bundle: &Bundle,
    consent: Option<ConsentView<'_>>,
    now: OffsetDateTime,
) -> Decision {
    let f = match Facts::of(bundle, req) {
        Ok(f) => f,
        Err((reason, detail)) => return denial(bundle, req, None, reason, detail, Vec::new()),
    };
    let mut candidates = Vec::with_capacity(16);
    bundle.index.candidates(f.kind, (f.sender, f.sender_type), (f.recipient, f.recipient_type), &mut candidates);
    evaluate(bundle, req, &f, consent, now, candidates.iter().map(|&i| i as usize))
}

/// The reference implementation: the same decision, reached by testing every rule in bundle order.
/// The benchmark measures [`decide`] against it, and tests check they always agree.
pub fn decide_linear(
    req: &DecisionRequest<'_>,
    bundle: &Bundle,
    consent: Option<ConsentView<'_>>,
    now: OffsetDateTime,
) -> Decision {
    let f = match Facts::of(bundle, req) {
        Ok(f) => f,
        Err((reason, detail)) => return denial(bundle, req, None, reason, detail, Vec::new()),
    };
    evaluate(bundle, req, &f, consent, now, 0..bundle.compiled.len())
}

/// The allow rules that came closest to allowing, and why they did not.
struct Shortfall {
    /// 1: rule window, 2: person role, 3: consent. A later stage is a closer miss.
    rank: u8,
    reason: DenyReason,
    detail: Option<String>,
    rules: Vec<usize>,
}

impl Shortfall {
    fn note(
        best: &mut Option<Shortfall>,
        rank: u8,
        reason: DenyReason,
        detail: impl FnOnce() -> Option<String>,
        rule: usize,
    ) {
        match best {
            Some(b) if b.rank > rank => {}
            Some(b) if b.rank == rank => {
                if b.reason == reason {
                    b.rules.push(rule);
                }
            }
            _ => *best = Some(Shortfall { rank, reason, detail: detail(), rules: vec![rule] }),
        }
    }
}

fn evaluate(
    bundle: &Bundle,
    req: &DecisionRequest<'_>,
    f: &Facts<'_>,
    consent: Option<ConsentView<'_>>,
    now: OffsetDateTime,
    rules: impl Iterator<Item = usize>,
) -> Decision {
    let mut message_denies: Vec<usize> = Vec::new();
    let mut counted: Vec<usize> = Vec::new();
    let mut granted = 0u128;
    let mut granted_before_consent = 0u128;
    let mut stripped = 0u128;
    let mut consent_result = None;
    let mut best: Option<Shortfall> = None;
    for i in rules {
        let rule = &bundle.compiled[i];
        let id = || Some(bundle.rules()[i].id.clone());
        match (fit(rule, f, now), rule.allow) {
            (Fit::Fits, false) => {
                if rule.denies_message {
                    message_denies.push(i);
                } else {
                    stripped |= rule.masks[f.kind];
                    counted.push(i);
                }
            }
            (Fit::Fits, true) => {
                let grant = rule.masks[f.kind] & f.present;
                if !rule.consent_required {
                    granted |= grant;
                    counted.push(i);
                    continue;
                }
                match consent_result.get_or_insert_with(|| consent_cover(bundle, req, f, consent, now)) {
                    Ok(cover) => {
                        granted |= grant & *cover;
                        granted_before_consent |= grant;
                        counted.push(i);
                    }
                    Err((reason, detail)) => Shortfall::note(&mut best, 3, *reason, || detail.clone(), i),
                }
            }
            (Fit::RoleNotListed, true) => Shortfall::note(&mut best, 2, DenyReason::RoleNotPermitted, id, i),
            (Fit::NotYetValid, true) => Shortfall::note(&mut best, 1, DenyReason::RuleNotYetValid, id, i),
            (Fit::Expired, true) => Shortfall::note(&mut best, 1, DenyReason::RuleExpired, id, i),
            _ => {}
        }
    }
    if let Some(&first) = message_denies.first() {
        let detail = Some(bundle.rules()[first].id.clone());
        return denial(bundle, req, Some(f), DenyReason::DeniedByRule, detail, message_denies);
    }
    if !counted.iter().any(|&i| bundle.compiled[i].allow) {
        return match best {
            Some(b) => denial(bundle, req, Some(f), b.reason, b.detail, b.rules),
            None => denial(bundle, req, Some(f), DenyReason::NoRuleMatched, None, Vec::new()),
        };
    }
    let def = bundle.schema().kind_at(f.kind);
    let released = granted & f.present & !stripped;
    let missing = def.required_mask() & f.present & !released;
    if missing != 0 {
        let bit = missing & missing.wrapping_neg();
        let field = def.names_in(bit).next().map(str::to_owned);
        let by_consent = bit & stripped == 0 && bit & granted_before_consent != 0;
        let reason = if by_consent { DenyReason::ConsentLabelNotCovered } else { DenyReason::RequiredFieldNotReleased };
        return denial(bundle, req, Some(f), reason, field, counted);
    }
    Decision::Allow {
        rule_ids: counted.iter().map(|&i| bundle.rules()[i].id.clone()).collect(),
        released: def.names_in(released).map(str::to_owned).collect(),
        withheld: withheld(def, f.present & !released, &f.unknown),
        bundle_version: bundle.version_id().to_owned(),
    }
}

fn withheld(def: &KindDef, mask: u128, unknown: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = def.names_in(mask).map(str::to_owned).collect();
    if !unknown.is_empty() {
        names.extend(unknown.iter().map(|n| (*n).to_owned()));
        names.sort_unstable();
        names.dedup();
    }
    names
}

fn denial(
    bundle: &Bundle,
    req: &DecisionRequest<'_>,
    f: Option<&Facts<'_>>,
    reason: DenyReason,
    detail: Option<String>,
    rules: Vec<usize>,
) -> Decision {
    let withheld = match f {
        Some(f) => withheld(bundle.schema().kind_at(f.kind), f.present, &f.unknown),
        None => {
            let mut names: Vec<String> = req.fields.iter().map(|n| (*n).to_owned()).collect();
            names.sort_unstable();
            names.dedup();
            names
        }
    };
    Decision::Deny {
        reason,
        detail,
        rule_ids: rules.into_iter().map(|i| bundle.rules()[i].id.clone()).collect(),
        withheld,
        bundle_version: bundle.version_id().to_owned(),
    }
}

#[cfg(test)]
mod tests;

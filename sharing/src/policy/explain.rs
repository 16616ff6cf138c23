//! Why a decision came out as it did: the decision, then every rule of the bundle with whether it
//! applied and, when it did not, the first of its conditions the request failed. `policy explain`
//! prints this; the decision itself always comes from [`decide`].

use std::fmt;

use haven_trust::receipt::ConsentView;
use time::OffsetDateTime;

use super::bundle::Bundle;
use super::engine::{Decision, DecisionRequest, Facts, Fit, consent_cover, decide, fit};
use super::files::show_instant;
use super::rules::{Effect, Parties, Rule};

/// A decision with its reasons.
#[derive(Debug, Clone)]
pub struct Explanation {
    pub decision: Decision,
    /// The bundle's version with its label.
    pub bundle: String,
    /// Every rule, in bundle order. Empty when the request names an organization or kind the bundle
    /// does not know, because then no rule is evaluated.
    pub rules: Vec<RuleFinding>,
}

/// What one rule made of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleFinding {
    pub rule_id: String,
    pub effect: Effect,
    /// `file:line` of the rule.
    pub location: String,
    /// Whether the rule took part in the decision.
    pub applied: bool,
    /// What it did, or why it did not apply.
    pub why: String,
}

fn list(names: impl Iterator<Item = impl AsRef<str>>) -> String {
    let names: Vec<String> = names.map(|n| format!("`{}`", n.as_ref())).collect();
    if names.is_empty() { "nothing".to_owned() } else { names.join(", ") }
}

fn parties(p: &Option<Parties>) -> String {
    match p {
        None => "any".to_owned(),
        Some(p) => p
            .orgs
            .iter()
            .map(|o| o.to_string())
            .chain(p.types.iter().map(|t| format!("type {t}")))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// Decides the request and explains the decision.
pub fn explain(
    req: &DecisionRequest<'_>,
    bundle: &Bundle,
    consent: Option<ConsentView<'_>>,
    now: OffsetDateTime,
) -> Explanation {
    let decision = decide(req, bundle, consent, now);
    let bundle_label = bundle.version().to_string();
    let Ok(f) = Facts::of(bundle, req) else {
        return Explanation { decision, bundle: bundle_label, rules: Vec::new() };
    };
    let def = bundle.schema().kind_at(f.kind);
    let sender_type = bundle.dir.type_name(f.sender_type);
    let recipient_type = bundle.dir.type_name(f.recipient_type);
    let rules = bundle
        .rules()
        .iter()
        .zip(&bundle.compiled)
        .map(|(rule, c): (&Rule, _)| {
            let (applied, why) = match fit(c, &f, now) {
                Fit::SenderNotInFrom => (
                    false,
                    format!("sender `{}` ({sender_type}) is not in `from` ({})", req.sender, parties(&rule.from)),
                ),
                Fit::RecipientNotInTo => (
                    false,
                    format!("recipient `{}` ({recipient_type}) is not in `to` ({})", req.recipient, parties(&rule.to)),
                ),
                Fit::OtherKind => {
                    (false, format!("it is about kind `{}`, not `{}`", rule.kind.as_deref().unwrap_or("?"), req.kind))
                }
                Fit::PurposeNotListed => (
                    false,
                    format!(
                        "purpose `{}` is not in its purposes ({})",
                        req.purpose,
                        rule.purposes.as_deref().unwrap_or_default().join(", ")
                    ),
                ),
                Fit::NotYetValid => (
                    false,
                    format!("it is not in force until {}", rule.valid_from.map(show_instant).unwrap_or_default()),
                ),
                Fit::Expired => (
                    false,
                    format!("it stopped being in force at {}", rule.valid_until.map(show_instant).unwrap_or_default()),
                ),
                Fit::RoleNotListed => (
                    false,
                    format!(
                        "person role `{}` is not in its person_roles ({})",
                        req.sender_role,
                        rule.person_roles.iter().flatten().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                ),
                Fit::Fits if !c.allow && c.denies_message => (true, "applies: denies the whole message".to_owned()),
                Fit::Fits if !c.allow => {
                    let strips = c.masks[f.kind] & f.present;
                    (true, format!("applies: strips {}", list(def.names_in(strips))))
                }
                Fit::Fits if !c.consent_required => (
                    true,
                    format!("applies without consent: grants {}", list(def.names_in(c.masks[f.kind] & f.present))),
                ),
                Fit::Fits => match consent_cover(bundle, req, &f, consent, now) {
                    Ok(cover) => {
                        let grant = c.masks[f.kind] & f.present;
                        let mut why =
                            format!("applies under the consent: grants {}", list(def.names_in(grant & cover)));
                        if grant & !cover != 0 {
                            why.push_str(&format!(
                                "; the consent does not cover {}",
                                list(def.names_in(grant & !cover))
                            ));
                        }
                        (true, why)
                    }
                    Err((reason, detail)) => (
                        false,
                        format!(
                            "fits, but its consent check fails: {} ({}){}",
                            reason.code(),
                            reason.describe(),
                            detail.map(|d| format!(": {d}")).unwrap_or_default()
                        ),
                    ),
                },
            };
            RuleFinding { rule_id: rule.id.clone(), effect: rule.effect, location: rule.location(), applied, why }
        })
        .collect();
    Explanation { decision, bundle: bundle_label, rules }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.decision;
        match (d.allowed(), d.reason()) {
            (true, _) => writeln!(f, "decision: allow")?,
            (false, Some(reason)) => {
                write!(f, "decision: deny, {} ({})", reason.code(), reason.describe())?;
                if let Some(detail) = &d.reason_detail() {
                    write!(f, ": {detail}")?;
                }
                writeln!(f)?;
            }
            (false, None) => writeln!(f, "decision: deny")?,
        }
        writeln!(f, "rules:    {}", if d.rule_ids().is_empty() { "none".to_owned() } else { d.rule_ids().join(", ") })?;
        writeln!(f, "released: {}", d.released().join(", "))?;
        writeln!(f, "withheld: {}", d.withheld().join(", "))?;
        writeln!(f, "bundle:   {}", self.bundle)?;
        if self.rules.is_empty() {
            return writeln!(f, "\nno rule was evaluated: the request names something the bundle does not know");
        }
        writeln!(f, "\nrule by rule:")?;
        for r in &self.rules {
            let mark = if r.applied { '+' } else { '-' };
            writeln!(f, "  {mark} {} ({}, {}): {}", r.rule_id, r.effect.as_str(), r.location, r.why)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use haven_trust::ids::Role;

    use super::*;
    use crate::policy::fixtures::{NOW, Req, consent, given, shipped};

    #[test]
    fn every_rule_says_whether_it_applied_and_if_not_why() {
        let b = shipped();
        let c = consent("harbor", &["investigation"], &["metro-police"], &["identifying", "contact", "operational"]);
        let mut req =
            Req::new("harbor", "metro-police", "referral", "investigation", &["safe_to_contact_by", "urgency"]);
        req.role = Role::Liaison;
        let e = explain(&req.get(), &b, given(&c), NOW);
        assert_eq!(e.decision, decide(&req.get(), &b, given(&c), NOW), "explain reports decide's decision");
        assert_eq!(e.rules.len(), b.rules().len());
        let why = |id: &str| e.rules.iter().find(|r| r.rule_id == id).map(|r| (r.applied, r.why.clone())).unwrap();
        assert_eq!(
            why("ngo-to-law-enforcement-investigation"),
            (false, "person role `liaison` is not in its person_roles (caseworker, privacy_officer)".to_owned())
        );
        assert_eq!(
            why("ngo-to-shelter-housing"),
            (false, "recipient `metro-police` (law_enforcement) is not in `to` (type shelter)".to_owned())
        );
        assert_eq!(
            why("no-identity-in-safety-alerts"),
            (false, "purpose `investigation` is not in its purposes (safety_alert)".to_owned())
        );
        assert_eq!(
            why("ngo-safety-alert-to-law-enforcement"),
            (false, "it is about kind `alert`, not `referral`".to_owned())
        );
        assert_eq!(
            why("clinic-to-legal-aid-pilot"),
            (false, "sender `harbor` (ngo) is not in `from` (riverside-clinic)".to_owned())
        );
        let text = e.to_string();
        assert!(text.starts_with("decision: deny, role_not_permitted (the allow rule does not let a person in this role use it): ngo-to-law-enforcement-investigation\n"), "{text}");
        assert!(text.contains("  - ngo-to-law-enforcement-investigation (allow, "), "{text}");

        req.role = Role::Caseworker;
        let mut revoked = c.clone();
        revoked.purposes = vec!["housing".to_owned()];
        let e = explain(&req.get(), &b, given(&revoked), NOW);
        assert!(
            e.rules.iter().any(|r| r.why.starts_with("fits, but its consent check fails: consent_purpose_not_covered")),
            "{e}"
        );
        let e = explain(&req.get(), &b, given(&c), NOW);
        let applied: Vec<&str> = e.rules.iter().filter(|r| r.applied).map(|r| r.why.as_str()).collect();
        assert_eq!(applied, ["applies under the consent: grants `safe_to_contact_by`, `urgency`"]);
    }

    #[test]
    fn a_request_naming_an_unknown_organization_is_explained_without_rules() {
        let b = shipped();
        let e = explain(&Req::new("harbor", "ghost-shelter", "referral", "housing", &[]).get(), &b, None, NOW);
        assert!(e.rules.is_empty());
        assert!(e.to_string().contains("no rule was evaluated"), "{e}");
    }
}

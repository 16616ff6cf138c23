//! Sharing rules (`rules/*.toml`): who may send what kind of message to whom, for which purposes, under
//! which consent, and which fields go along.
//!
//! A rule is read in two steps. [`parse_file`] turns the TOML into a [`Rule`], resolving each `from`
//! and `to` entry to an organization or an organization type. [`compile`] then checks the rule against
//! the rest of the bundle (kinds, purposes, fields, labels, rules that can never match) and turns it
//! into the numbered form the engine evaluates. Rules built in memory go through the same
//! [`compile`], so both paths obey the same contract.

use std::ops::Range;
use std::path::PathBuf;

use haven_trust::ids::{OrgId, OrgType, Role};
use haven_trust::registry::Registry;
use haven_trust::source::{Located, SourceFile};
use serde::Deserialize;
use time::OffsetDateTime;
use toml::Spanned;
use toml::value::Datetime;

use super::files;
use super::index::Directory;
use super::network::Purposes;
use super::schema::{LABELS, STATUS_KIND, Schema, label_bit};

/// Whether a rule lets messages through or stops them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// Lets a message through, with the fields the rule grants.
    Allow,
    /// Stops the message, or with `fields`, strips those fields. A matching deny always wins.
    Deny,
}

impl Effect {
    /// The name used in rule files.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        }
    }
}

/// Whether an allow rule needs the survivor's consent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsentRequirement {
    /// The message must name a consent that covers it; see [`super::engine`].
    Required,
    /// No consent is needed (for example a de-identified safety alert).
    #[serde(rename = "none")]
    NotRequired,
}

/// The organizations a rule names as senders or recipients.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parties {
    pub orgs: Vec<OrgId>,
    /// Every organization of these types, including ones that join later.
    pub types: Vec<OrgType>,
}

/// Fields a rule grants (allow) or strips (deny), by name and by label.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldGrant {
    pub names: Vec<String>,
    /// An allow releases a field when it grants every label the field carries; a deny strips a field
    /// carrying any of these labels.
    pub labels: Vec<String>,
}

/// Where a rule was written, for `policy explain` and for problems found after parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
}

/// A sharing rule. On a deny rule an absent `from`, `to`, `person_roles`, `kind` or `purposes` means
/// "any"; an allow rule must state every one of them, because an allow is a grant the network reviews
/// and a grant should say exactly what it grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub id: String,
    /// What the rule means in words, for the people who review the policy like a legal agreement.
    pub description: String,
    pub effect: Effect,
    pub from: Option<Parties>,
    pub to: Option<Parties>,
    /// The roles, inside the sending organization, of the people who may use the rule.
    pub person_roles: Option<Vec<Role>>,
    pub kind: Option<String>,
    pub purposes: Option<Vec<String>>,
    /// Only on allow rules.
    pub consent: Option<ConsentRequirement>,
    /// Required on allow rules. On a deny rule, present means "strip these fields", absent means
    /// "deny the whole message".
    pub fields: Option<FieldGrant>,
    /// The rule is in force from this instant (inclusive)...
    pub valid_from: Option<OffsetDateTime>,
    /// ...until this one (exclusive).
    pub valid_until: Option<OffsetDateTime>,
    /// `None` for rules built in memory.
    pub origin: Option<Origin>,
}

impl Rule {
    /// Where the rule was written, as `file:line`, or `in memory`.
    pub fn location(&self) -> String {
        self.origin.as_ref().map_or_else(|| "in memory".to_owned(), |o| format!("{}:{}", o.file.display(), o.line))
    }
}

/// The bit of a role in a role mask.
pub(crate) fn role_bit(role: Role) -> u8 {
    Role::ALL.iter().position(|r| *r == role).map_or(0, |i| 1 << i)
}

const ALL_ROLES: u8 = (1 << Role::ALL.len()) - 1;

/// A part of a rule that a problem can point at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    Header,
    Id,
    Description,
    From,
    To,
    Roles,
    Kind,
    Purposes,
    Purpose(usize),
    Consent,
    Fields,
    FieldName(usize),
    FieldLabel(usize),
    ValidUntil,
}

/// Where each part of a rule was written, so problems found by [`compile`] point into the file.
#[derive(Debug, Clone, Default)]
pub(crate) struct RuleSpans {
    header: usize,
    id: Option<usize>,
    description: Option<usize>,
    from: Option<usize>,
    to: Option<usize>,
    roles: Option<usize>,
    kind: Option<usize>,
    purposes: Option<usize>,
    purpose_items: Vec<usize>,
    consent: Option<usize>,
    fields: Option<usize>,
    field_names: Vec<usize>,
    field_labels: Vec<usize>,
    valid_until: Option<usize>,
}

impl RuleSpans {
    /// The byte offset of a part, or of the rule's header when the part was not written.
    pub(crate) fn offset(&self, part: Part) -> usize {
        let at = match part {
            Part::Header => None,
            Part::Id => self.id,
            Part::Description => self.description,
            Part::From => self.from,
            Part::To => self.to,
            Part::Roles => self.roles,
            Part::Kind => self.kind,
            Part::Purposes => self.purposes,
            Part::Purpose(i) => self.purpose_items.get(i).copied().or(self.purposes),
            Part::Consent => self.consent,
            Part::Fields => self.fields,
            Part::FieldName(i) => self.field_names.get(i).copied().or(self.fields),
            Part::FieldLabel(i) => self.field_labels.get(i).copied().or(self.fields),
            Part::ValidUntil => self.valid_until,
        };
        at.unwrap_or(self.header)
    }
}

type SpannedList = Spanned<Vec<Spanned<String>>>;

/// A rule as written in a rules file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: Spanned<String>,
    description: Spanned<String>,
    effect: Spanned<Effect>,
    from: Option<SpannedList>,
    to: Option<SpannedList>,
    person_roles: Option<SpannedList>,
    kind: Option<Spanned<String>>,
    purposes: Option<SpannedList>,
    consent: Option<Spanned<ConsentRequirement>>,
    fields: Option<Spanned<RawFields>>,
    valid_from: Option<Spanned<Datetime>>,
    valid_until: Option<Spanned<Datetime>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFields {
    #[serde(default)]
    names: Vec<Spanned<String>>,
    #[serde(default)]
    labels: Vec<Spanned<String>>,
}

fn start(span: Range<usize>) -> usize {
    span.start
}

/// Reads one rules file. Each `[[rule]]` is parsed on its own, so every broken rule is reported. With
/// no registry (because `orgs.toml` is broken), rules are checked for shape only. What is allowed but
/// worth a reviewer's look (a type no organization has yet) goes to `warnings`.
pub(crate) fn parse_file(
    src: &SourceFile,
    registry: Option<&Registry>,
    problems: &mut Vec<Located>,
    warnings: &mut Vec<Located>,
) -> Vec<(Rule, RuleSpans)> {
    let doc = match files::parse_document(src) {
        Ok(doc) => doc,
        Err(e) => {
            problems.push(e);
            return Vec::new();
        }
    };
    files::check_keys(src, doc.get_ref(), &["rule"], "a rules file (it holds only `[[rule]]` tables)", problems);
    let Some(node) = files::get(doc.get_ref(), "rule") else { return Vec::new() };
    let mut rules = Vec::new();
    for item in files::items(src, "rule", node, problems) {
        let raw: RawRule = match files::deserialize(src, item) {
            Ok(raw) => raw,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        let before = problems.len();
        let rule = resolve(src, item.span().start, raw, registry, problems, warnings);
        if problems.len() == before {
            rules.extend(rule);
        }
    }
    rules
}

fn resolve(
    src: &SourceFile,
    header: usize,
    raw: RawRule,
    registry: Option<&Registry>,
    problems: &mut Vec<Located>,
    warnings: &mut Vec<Located>,
) -> Option<(Rule, RuleSpans)> {
    let id = raw.id.get_ref().clone();
    let mut say = |at: usize, msg: String| problems.push(src.at(at, format!("rule `{id}`: {msg}")));
    let mut warn = |at: usize, msg: String| warnings.push(src.at(at, format!("rule `{id}`: {msg}")));
    let spans = RuleSpans {
        header,
        id: Some(raw.id.span().start),
        description: Some(raw.description.span().start),
        from: raw.from.as_ref().map(|l| l.span().start),
        to: raw.to.as_ref().map(|l| l.span().start),
        roles: raw.person_roles.as_ref().map(|l| l.span().start),
        kind: raw.kind.as_ref().map(|k| k.span().start),
        purposes: raw.purposes.as_ref().map(|l| l.span().start),
        purpose_items: raw.purposes.iter().flat_map(|l| l.get_ref().iter().map(|p| p.span().start)).collect(),
        consent: raw.consent.as_ref().map(|c| c.span().start),
        fields: raw.fields.as_ref().map(|f| f.span().start),
        field_names: raw.fields.iter().flat_map(|f| f.get_ref().names.iter().map(|n| n.span().start)).collect(),
        field_labels: raw.fields.iter().flat_map(|f| f.get_ref().labels.iter().map(|n| n.span().start)).collect(),
        valid_until: raw.valid_until.as_ref().map(|v| v.span().start),
    };
    let registry = registry?;
    let from = raw.from.map(|l| resolve_parties(&l, "from", registry, &mut say, &mut warn));
    let to = raw.to.map(|l| resolve_parties(&l, "to", registry, &mut say, &mut warn));
    let person_roles = raw.person_roles.map(|list| {
        let mut roles = Vec::new();
        for entry in list.into_inner() {
            match Role::parse(entry.get_ref()) {
                Ok(role) if roles.contains(&role) => say(start(entry.span()), format!("role `{role}` is listed twice")),
                Ok(role) => roles.push(role),
                Err(_) => {
                    let known = Role::ALL.map(Role::as_str);
                    say(
                        start(entry.span()),
                        format!(
                            "unknown person role `{}`{} (known: {})",
                            entry.get_ref(),
                            files::did_you_mean(entry.get_ref(), known),
                            known.join(", ")
                        ),
                    );
                }
            }
        }
        roles
    });
    let mut when = |dt: Option<Spanned<Datetime>>| {
        dt.and_then(|dt| files::instant(dt.get_ref()).map_err(|e| say(start(dt.span()), e)).ok())
    };
    let valid_from = when(raw.valid_from);
    let valid_until = when(raw.valid_until);
    let strings = |l: Vec<Spanned<String>>| l.into_iter().map(Spanned::into_inner).collect::<Vec<_>>();
    let rule = Rule {
        id,
        description: raw.description.into_inner(),
        effect: raw.effect.into_inner(),
        from,
        to,
        person_roles,
        kind: raw.kind.map(Spanned::into_inner),
        purposes: raw.purposes.map(|l| strings(l.into_inner())),
        consent: raw.consent.map(Spanned::into_inner),
        fields: raw.fields.map(|f| {
            let f = f.into_inner();
            FieldGrant { names: strings(f.names), labels: strings(f.labels) }
        }),
        valid_from,
        valid_until,
        origin: Some(Origin { file: src.path.clone(), line: src.line_col(header).0 }),
    };
    Some((rule, spans))
}

/// Resolves `from`/`to` entries. An entry is an organization id or an organization type; when a name
/// is both (the operator organization is usually of type `operator`), it must be written `org:<id>`
/// or `type:<type>`. A type written `type:<type>` that no organization has yet is accepted with a
/// warning: a type covers the organizations that join later, so a bundle written for a network's
/// types checks clean before every type has a member (the starter bundle relies on it).
fn resolve_parties(
    list: &SpannedList,
    key: &str,
    registry: &Registry,
    say: &mut impl FnMut(usize, String),
    warn: &mut impl FnMut(usize, String),
) -> Parties {
    let types = registry.types();
    let org_names: Vec<&str> = registry.iter().map(|o| o.id.as_str()).collect();
    let type_names: Vec<&str> = types.iter().map(|t| t.as_str()).collect();
    let mut parties = Parties::default();
    for entry in list.get_ref() {
        let at = start(entry.span());
        let text = entry.get_ref().as_str();
        let as_org = |name: &str| OrgId::parse(name).ok().filter(|id| registry.get(id).is_some());
        let as_type = |name: &str| OrgType::parse(name).ok().filter(|t| types.contains(t));
        let (org, ty) = if let Some(name) = text.strip_prefix("org:") {
            match as_org(name) {
                Some(id) => (Some(id), None),
                None => {
                    say(
                        at,
                        format!(
                            "unknown organization `{name}` in `{key}`{}",
                            files::did_you_mean(name, org_names.iter().copied())
                        ),
                    );
                    continue;
                }
            }
        } else if let Some(name) = text.strip_prefix("type:") {
            match (as_type(name), OrgType::parse(name)) {
                (Some(t), _) => (None, Some(t)),
                (None, Ok(t)) => {
                    warn(
                        at,
                        format!(
                            "no organization in the registry has type `{name}` yet, so `{key}` covers none until one joins{} (types in the registry: {})",
                            files::did_you_mean(name, type_names.iter().copied()),
                            type_names.join(", ")
                        ),
                    );
                    (None, Some(t))
                }
                (None, Err(e)) => {
                    say(at, format!("`{key}`: {e}"));
                    continue;
                }
            }
        } else {
            match (as_org(text), as_type(text)) {
                (Some(_), Some(_)) => {
                    say(
                        at,
                        format!(
                            "`{text}` in `{key}` is both an organization and an organization type; write `org:{text}` or `type:{text}`"
                        ),
                    );
                    continue;
                }
                (org, ty) if org.is_some() || ty.is_some() => (org, ty),
                _ => {
                    say(
                        at,
                        format!(
                            "`{text}` in `{key}` is neither an organization nor an organization type{} (types: {}); a type no organization has yet is written `type:{text}`",
                            files::did_you_mean(text, org_names.iter().chain(type_names.iter()).copied()),
                            type_names.join(", ")
                        ),
                    );
                    continue;
                }
            }
        };
        let duplicate = org.as_ref().is_some_and(|o| parties.orgs.contains(o))
            || ty.as_ref().is_some_and(|t| parties.types.contains(t));
        if duplicate {
            say(at, format!("`{text}` is listed twice in `{key}`"));
        }
        parties.orgs.extend(org.filter(|o| !parties.orgs.contains(o)));
        parties.types.extend(ty.filter(|t| !parties.types.contains(t)));
    }
    parties
}

/// Which organizations a compiled rule's `from` or `to` covers.
#[derive(Debug, Clone)]
pub(crate) struct PartyMatch {
    pub(crate) any: bool,
    /// Sorted organization numbers.
    pub(crate) orgs: Box<[u32]>,
    /// Sorted type numbers.
    pub(crate) types: Box<[u32]>,
}

impl PartyMatch {
    pub(crate) fn matches(&self, org: u32, org_type: u32) -> bool {
        self.any || self.orgs.binary_search(&org).is_ok() || self.types.binary_search(&org_type).is_ok()
    }
}

/// A rule in the engine's numbering: organizations, types, kinds, purposes and fields are numbers and
/// masks, so evaluating it compares integers.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    pub(crate) allow: bool,
    pub(crate) consent_required: bool,
    pub(crate) from: PartyMatch,
    pub(crate) to: PartyMatch,
    pub(crate) kind: Option<usize>,
    /// Sorted purpose numbers; `None` is any purpose.
    pub(crate) purposes: Option<Box<[u32]>>,
    pub(crate) roles: u8,
    pub(crate) valid_from: Option<OffsetDateTime>,
    pub(crate) valid_until: Option<OffsetDateTime>,
    /// Per kind number: the fields an allow grants, or a field-level deny strips.
    pub(crate) masks: Box<[u128]>,
    /// A deny without `fields`: it stops the whole message.
    pub(crate) denies_message: bool,
}

/// What a rule is checked against.
pub(crate) struct Context<'a> {
    pub(crate) dir: &'a Directory,
    pub(crate) schema: &'a Schema,
    pub(crate) purposes: &'a Purposes,
}

fn valid_rule_id(id: &str) -> bool {
    let mut bytes = id.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'0'..=b'9'))
        && id.len() <= 80
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
}

/// Checks a rule against the bundle and numbers it. Every problem is returned with the part of the
/// rule it concerns.
pub(crate) fn compile(rule: &Rule, cx: &Context<'_>) -> Result<Compiled, Vec<(Part, String)>> {
    let mut p: Vec<(Part, String)> = Vec::new();
    if !valid_rule_id(&rule.id) {
        p.push((
            Part::Id,
            format!("rule id `{}` must use only lowercase letters, digits, `-`, `_` and `.` (at most 80)", rule.id),
        ));
    }
    if rule.description.trim().is_empty() {
        p.push((Part::Description, "every rule needs a `description` the network can review".to_owned()));
    }
    let allow = rule.effect == Effect::Allow;
    if allow {
        let required = [
            (rule.from.is_none(), "from", "the senders it covers"),
            (rule.to.is_none(), "to", "the recipients it covers"),
            (rule.person_roles.is_none(), "person_roles", "who inside the sender may use it"),
            (rule.kind.is_none(), "kind", "the message kind"),
            (rule.purposes.is_none(), "purposes", "what the sharing is for"),
            (rule.consent.is_none(), "consent", "`required` or `none`"),
            (rule.fields.is_none(), "fields", "what it releases, by name and/or label"),
        ];
        for (_, key, what) in required.iter().filter(|(missing, _, _)| *missing) {
            p.push((
                Part::Header,
                format!("an allow rule must state `{key}` ({what}); only a deny rule may leave it out to mean \"any\""),
            ));
        }
    } else if rule.consent.is_some() {
        p.push((
            Part::Consent,
            "`consent` belongs on allow rules only: a deny applies whatever the consent says".to_owned(),
        ));
    }
    let from = party_match(rule.from.as_ref(), Part::From, "from", cx, &mut p);
    let to = party_match(rule.to.as_ref(), Part::To, "to", cx, &mut p);
    if let (Some(f), Some(t)) = (&rule.from, &rule.to)
        && f.types.is_empty()
        && t.types.is_empty()
        && f.orgs.len() == 1
        && f.orgs == t.orgs
    {
        p.push((Part::To, format!("`from` and `to` are both only `{}`, so the rule can never match: an organization does not send to itself through the gateway", f.orgs[0])));
    }
    let roles = match &rule.person_roles {
        None => ALL_ROLES,
        Some(roles) if roles.is_empty() => {
            p.push((
                Part::Roles,
                "`person_roles` is empty, so the rule can never match; list the roles that may use it".to_owned(),
            ));
            0
        }
        Some(roles) => roles.iter().fold(0, |m, r| m | role_bit(*r)),
    };
    let kind = rule.kind.as_deref().and_then(|k| {
        let found = cx.schema.kind_index(k);
        if k == STATUS_KIND {
            p.push((Part::Kind, "`status` updates are built in and need no rule".to_owned()));
        } else if found.is_none() {
            let known: Vec<&str> = cx.schema.kinds().map(|k| k.name.as_str()).collect();
            p.push((
                Part::Kind,
                format!(
                    "unknown message kind `{k}`{} (known: {})",
                    files::did_you_mean(k, known.iter().copied()),
                    known.join(", ")
                ),
            ));
        }
        found
    });
    let purposes = rule.purposes.as_ref().map(|names| {
        if names.is_empty() {
            p.push((
                Part::Purposes,
                "`purposes` is empty, so the rule can never match; list the purposes it covers".to_owned(),
            ));
        }
        let mut numbers = Vec::new();
        for (i, name) in names.iter().enumerate() {
            match cx.purposes.index_of(name) {
                Some(n) => numbers.push(n as u32),
                None => p.push((
                    Part::Purpose(i),
                    format!(
                        "unknown purpose `{name}`{} (purposes.toml defines: {})",
                        files::did_you_mean(name, cx.purposes.names()),
                        cx.purposes.names().collect::<Vec<_>>().join(", ")
                    ),
                )),
            }
        }
        numbers.sort_unstable();
        numbers.dedup();
        numbers.into_boxed_slice()
    });
    let mut masks = vec![0u128; cx.schema.len()];
    let mut denies_message = false;
    match &rule.fields {
        None => denies_message = !allow,
        Some(grant) => field_masks(rule, grant, kind, cx, &mut masks, &mut p),
    }
    if let (Some(from_t), Some(until_t)) = (rule.valid_from, rule.valid_until)
        && until_t <= from_t
    {
        p.push((
            Part::ValidUntil,
            format!(
                "`valid_until` ({}) is not after `valid_from` ({}), so the rule is never in force",
                files::show_instant(until_t),
                files::show_instant(from_t)
            ),
        ));
    }
    if !p.is_empty() {
        return Err(p);
    }
    Ok(Compiled {
        allow,
        consent_required: rule.consent == Some(ConsentRequirement::Required),
        from,
        to,
        kind,
        purposes,
        roles,
        valid_from: rule.valid_from,
        valid_until: rule.valid_until,
        masks: masks.into_boxed_slice(),
        denies_message,
    })
}

fn party_match(
    parties: Option<&Parties>,
    part: Part,
    key: &str,
    cx: &Context<'_>,
    p: &mut Vec<(Part, String)>,
) -> PartyMatch {
    let Some(parties) = parties else {
        return PartyMatch { any: true, orgs: Box::new([]), types: Box::new([]) };
    };
    if parties.orgs.is_empty() && parties.types.is_empty() {
        p.push((part, format!("`{key}` is empty, so the rule can never match; name organizations or types (a deny rule may leave `{key}` out to mean any)")));
    }
    let mut orgs = Vec::new();
    for org in &parties.orgs {
        match cx.dir.org(org.as_str()) {
            Some(n) => orgs.push(n),
            None => p.push((part, format!("unknown organization `{org}` in `{key}`"))),
        }
    }
    // A type no organization has yet covers none now: it gets no number, so nothing is filed under it,
    // and the next bundle (every registry change is one) numbers it once it has a member.
    let mut types: Vec<u32> = parties.types.iter().filter_map(|t| cx.dir.type_number(t.as_str())).collect();
    orgs.sort_unstable();
    orgs.dedup();
    types.sort_unstable();
    types.dedup();
    PartyMatch { any: false, orgs: orgs.into_boxed_slice(), types: types.into_boxed_slice() }
}

fn field_masks(
    rule: &Rule,
    grant: &FieldGrant,
    kind: Option<usize>,
    cx: &Context<'_>,
    masks: &mut [u128],
    p: &mut Vec<(Part, String)>,
) {
    let allow = rule.effect == Effect::Allow;
    let before = p.len();
    if grant.names.is_empty() && grant.labels.is_empty() {
        p.push((
            Part::Fields,
            if allow {
                "`fields` is empty, so the rule releases nothing; name fields and/or labels".to_owned()
            } else {
                "`fields` is empty, so the rule strips nothing; leave `fields` out to deny the whole message".to_owned()
            },
        ));
        return;
    }
    let mut labels = 0u8;
    for (i, label) in grant.labels.iter().enumerate() {
        match label_bit(label) {
            Some(bit) => labels |= bit,
            None => p.push((
                Part::FieldLabel(i),
                format!("unknown label `{label}`{} (known: {})", files::did_you_mean(label, LABELS), LABELS.join(", ")),
            )),
        }
    }
    if !grant.names.is_empty() {
        match (kind, &rule.kind) {
            (Some(k), _) => {
                let def = cx.schema.kind_at(k);
                for (i, name) in grant.names.iter().enumerate() {
                    if def.index_of(name).is_none() {
                        p.push((
                            Part::FieldName(i),
                            format!(
                                "kind `{}` has no field `{name}`{}",
                                def.name,
                                files::did_you_mean(name, def.field_names())
                            ),
                        ));
                    }
                }
            }
            (None, None) => p.push((
                Part::FieldName(0),
                "fields named in `fields.names` belong to one kind; give the rule a `kind`".to_owned(),
            )),
            (None, Some(_)) => {} // the unknown kind is reported already
        }
    }
    if p.len() != before || (rule.kind.is_some() && kind.is_none()) {
        return;
    }
    for (k, mask) in masks.iter_mut().enumerate() {
        if kind.is_some_and(|only| only != k) {
            continue;
        }
        let def = cx.schema.kind_at(k);
        let by_label = if allow { def.within(labels) } else { def.touching(labels) };
        *mask = def.mask_of(grant.names.iter().map(String::as_str)) | by_label;
    }
    if allow {
        let Some(k) = kind else { return };
        let def = cx.schema.kind_at(k);
        let labels_text = grant.labels.join(", ");
        if masks[k] == 0 {
            p.push((
                Part::Fields,
                format!("the rule can never release anything: no field of kind `{}` is named or carries only the labels [{labels_text}]", def.name),
            ));
        } else if def.required_mask() & !masks[k] != 0 {
            let missing: Vec<String> = def
                .names_in(def.required_mask() & !masks[k])
                .map(|n| format!("`{n}` ({})", def.field(n).map(|f| f.labels.join(", ")).unwrap_or_default()))
                .collect();
            p.push((
                Part::Fields,
                format!(
                    "the rule can never allow a message: it does not release the required field(s) {} of kind `{}`",
                    missing.join(", "),
                    def.name
                ),
            ));
        }
    } else if masks.iter().all(|m| *m == 0) {
        p.push((
            Part::Fields,
            "the rule strips nothing: no field of the kinds it applies to is named or carries these labels".to_owned(),
        ));
    }
}

//! Message schemas (`schema.toml`): the kinds of message the network exchanges, each field's type and
//! limits, and the sensitivity labels that sharing rules and consents grant fields by.
//!
//! A field carries one or more labels. A grant by label releases a field only when it grants *every*
//! label the field carries, so a field labelled `operational` and `sensitive` stays with the sender
//! unless both are granted. Fields of a kind are kept sorted by name; a set of fields is a bit mask over
//! that order, which is what makes a decision cheap.

use std::collections::{BTreeMap, BTreeSet};

use haven_trust::source::{Located, SourceFile};
use haven_trust::untrusted::Shown;
use serde::Deserialize;
use toml::Spanned;

use super::directory::FxMap;
use super::files::{self, Node};
use super::words::{Label, RawWords, Words};
use crate::delivery::DeliveryStatus;

/// The sensitivity labels, fixed by the network (FHIR security labels in spirit).
pub const LABELS: [&str; 5] = ["identifying", "contact", "sensitive", "operational", "location"];

/// The most fields one kind may have: a set of fields is a 128-bit mask.
pub const MAX_FIELDS_PER_KIND: usize = 128;

/// The longest item of a list field, in characters.
pub const LIST_ITEM_MAX_CHARS: usize = 200;

/// Status updates (accepted, declined, closed, acknowledged, ...) are built in: they carry codes only,
/// flow only between the two parties of a referral or alert, and need no rule. A schema may not
/// redefine them.
pub const STATUS_KIND: &str = "status";

/// The kinds the gateway itself routes, which every schema must define.
pub const REQUIRED_KINDS: [&str; 2] = ["referral", "alert"];

/// The bit of a label in a label mask.
pub(crate) fn label_bit(label: &str) -> Option<u8> {
    LABELS.iter().position(|l| *l == label).map(|i| 1 << i)
}

/// The mask of the known labels among `labels`; unknown ones are ignored.
pub(crate) fn label_mask<'a>(labels: impl IntoIterator<Item = &'a str>) -> u8 {
    labels.into_iter().filter_map(label_bit).fold(0, |m, b| m | b)
}

/// What a field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// Free text, at most `max_len` characters.
    String,
    /// A whole number, optionally within `min..=max`.
    Integer,
    /// A calendar date.
    Date,
    /// One of a fixed list of `values`.
    Enum,
    /// A list of at most `max_len` short strings, optionally each one of `values`.
    List,
}

impl FieldType {
    /// The name used in `schema.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Integer => "integer",
            FieldType::Date => "date",
            FieldType::Enum => "enum",
            FieldType::List => "list",
        }
    }
}

/// One field of a message kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDef {
    pub name: String,
    /// A short name for the field ("First name"), when the bundle gives one.
    pub label: Option<Words>,
    /// What the field means, for reviewers and for the caseworker filling it in.
    pub description: Option<Words>,
    /// The words for each of `values`, when the bundle gives them (every value, in every language).
    pub value_labels: BTreeMap<String, Words>,
    pub field_type: FieldType,
    /// For a string the most characters, for a list the most items; `None` for other types.
    pub max_len: Option<u32>,
    /// A message of this kind without the field is invalid, and a recipient that may not see it
    /// receives nothing (the message is denied for that recipient rather than sent incomplete).
    pub required: bool,
    /// Sensitivity labels; every field has at least one.
    pub labels: Vec<String>,
    /// The values of an enum, or the allowed items of a list (empty: any short string).
    pub values: Vec<String>,
    /// The smallest integer allowed.
    pub min: Option<i64>,
    /// The largest integer allowed.
    pub max: Option<i64>,
    label_bits: u8,
}

/// A message kind and its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindDef {
    pub name: String,
    /// A short name for the kind ("Referral"), when the bundle gives one.
    pub label: Option<Words>,
    /// What the kind is for.
    pub description: Words,
    /// The codes a party must choose from when it moves a copy to a status (a decline's reasons, a
    /// close's outcomes), with their words; a status not listed takes any snake_case code.
    pub codes: BTreeMap<DeliveryStatus, Vec<(String, Words)>>,
    /// Sorted by name; a field's position is its bit in a field mask.
    fields: Vec<FieldDef>,
    /// Field positions by name: the lookup every decision makes for every field it carries.
    positions: FxMap<String, usize>,
    required: u128,
    /// For each of the 32 label sets, the fields whose labels all lie inside it.
    within_labels: [u128; 32],
    /// For each label bit, the fields carrying that label.
    with_label: [u128; 5],
}

impl KindDef {
    fn new(head: KindHead, mut fields: Vec<FieldDef>) -> Self {
        let KindHead { name, label, description, codes } = head;
        fields.sort_by(|a, b| a.name.cmp(&b.name));
        let mut required = 0;
        let mut within_labels = [0u128; 32];
        let mut with_label = [0u128; 5];
        for (i, f) in fields.iter().enumerate() {
            let bit = 1u128 << i;
            if f.required {
                required |= bit;
            }
            for (set, mask) in within_labels.iter_mut().enumerate() {
                if f.label_bits != 0 && f.label_bits & !(set as u8) == 0 {
                    *mask |= bit;
                }
            }
            for (l, mask) in with_label.iter_mut().enumerate() {
                if f.label_bits & (1 << l) != 0 {
                    *mask |= bit;
                }
            }
        }
        let positions = fields.iter().enumerate().map(|(i, f)| (f.name.clone(), i)).collect();
        KindDef { name, label, description, codes, fields, positions, required, within_labels, with_label }
    }

    /// The codes allowed with a change to `status`, if the kind lists them.
    pub fn codes_for(&self, status: DeliveryStatus) -> Option<&[(String, Words)]> {
        self.codes.get(&status).map(Vec::as_slice)
    }

    /// Visits every text of the kind and its fields, with what it names.
    pub(crate) fn each_words(&mut self, visit: &mut dyn FnMut(&str, &mut Words)) {
        let k = &self.name;
        visit(&format!("kind `{k}`'s description"), &mut self.description);
        if let Some(l) = &mut self.label {
            visit(&format!("kind `{k}`'s label"), l);
        }
        for (status, codes) in &mut self.codes {
            for (code, words) in codes {
                visit(&format!("kind `{k}`'s {status} code `{code}`"), words);
            }
        }
        for f in &mut self.fields {
            let n = &f.name;
            if let Some(d) = &mut f.description {
                visit(&format!("field `{k}.{n}`'s description"), d);
            }
            if let Some(l) = &mut f.label {
                visit(&format!("field `{k}.{n}`'s label"), l);
            }
            for (value, words) in &mut f.value_labels {
                visit(&format!("field `{k}.{n}`'s value `{value}`"), words);
            }
        }
    }

    /// The fields, sorted by name.
    pub fn fields(&self) -> &[FieldDef] {
        &self.fields
    }

    /// The field with this name.
    pub fn field(&self, name: &str) -> Option<&FieldDef> {
        self.index_of(name).map(|i| &self.fields[i])
    }

    /// The names of the fields, sorted.
    pub fn field_names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|f| f.name.as_str())
    }

    pub(crate) fn index_of(&self, name: &str) -> Option<usize> {
        self.positions.get(name).copied()
    }

    /// The fields a message of this kind must carry and every recipient must be able to see.
    pub(crate) fn required_mask(&self) -> u128 {
        self.required
    }

    /// The fields whose labels all lie in `labels` (a grant or a consent by label).
    pub(crate) fn within(&self, labels: u8) -> u128 {
        self.within_labels[usize::from(labels & 0x1f)]
    }

    /// The fields carrying any label in `labels` (a field-level deny by label).
    pub(crate) fn touching(&self, labels: u8) -> u128 {
        (0..LABELS.len()).filter(|l| labels & (1 << l) != 0).fold(0, |m, l| m | self.with_label[l])
    }

    /// The mask of the named fields; unknown names are ignored.
    pub(crate) fn mask_of<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> u128 {
        names.into_iter().filter_map(|n| self.index_of(n)).fold(0, |m, i| m | (1 << i))
    }

    /// The names of the fields in `mask`, in name order.
    pub(crate) fn names_in(&self, mask: u128) -> impl Iterator<Item = &str> {
        self.fields.iter().enumerate().filter(move |(i, _)| mask & (1 << i) != 0).map(|(_, f)| f.name.as_str())
    }
}

/// A field's value, as the gateway parsed it from the wire, for [`Schema::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldValue {
    Str(String),
    Int(i64),
    Date(time::Date),
    List(Vec<String>),
}

impl FieldValue {
    fn type_name(&self) -> &'static str {
        match self {
            FieldValue::Str(_) => "a string",
            FieldValue::Int(_) => "an integer",
            FieldValue::Date(_) => "a date",
            FieldValue::List(_) => "a list",
        }
    }
}

fn hint(did_you_mean: &Option<String>) -> String {
    did_you_mean.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default()
}

/// Why a message's fields do not fit its kind. The messages name fields but never echo a value, since
/// values may be personal data and these messages reach logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldProblem {
    /// The message kind is not in the schema.
    #[error("unknown message kind `{}`{}", Shown(.kind), hint(.did_you_mean))]
    UnknownKind { kind: String, did_you_mean: Option<String> },
    /// The kind has no such field.
    #[error("kind `{}` has no field `{}`{}", Shown(.kind), Shown(.field), hint(.did_you_mean))]
    UnknownField { kind: String, field: String, did_you_mean: Option<String> },
    /// A required field is absent.
    #[error("required field `{field}` is missing")]
    MissingRequired { field: String },
    /// The value has the wrong type.
    #[error("field `{}` must be {expected}, not {got}", Shown(.field))]
    TypeMismatch { field: String, expected: &'static str, got: &'static str },
    /// A string (or a list item, named `field[i]`) is longer than allowed.
    #[error("field `{}` is {len} characters long; at most {max} are allowed", Shown(.field))]
    TooLong { field: String, max: usize, len: usize },
    /// A list has more items than allowed.
    #[error("field `{}` has {len} items; at most {max} are allowed", Shown(.field))]
    TooManyItems { field: String, max: usize, len: usize },
    /// An enum value (or a list item, named `field[i]`) is not one of the allowed values.
    #[error("field `{}` holds a value outside its list; allowed: {}", Shown(.field), .allowed.join(", "))]
    NotInEnum { field: String, allowed: Vec<String> },
    /// An integer lies outside its range.
    #[error("field `{}` is outside its range {}..={}", Shown(.field), fmt_bound(.min), fmt_bound(.max))]
    OutOfRange { field: String, min: Option<i64>, max: Option<i64> },
}

fn fmt_bound(b: &Option<i64>) -> String {
    b.map(|v| v.to_string()).unwrap_or_default()
}

/// Every message kind of the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    /// Sorted by name; a kind's position is its index in rule tables.
    kinds: Vec<KindDef>,
}

impl Schema {
    /// Every kind, sorted by name.
    pub fn kinds(&self) -> impl Iterator<Item = &KindDef> {
        self.kinds.iter()
    }

    /// Visits every text of every kind, with what it names.
    pub(crate) fn each_words(&mut self, visit: &mut dyn FnMut(&str, &mut Words)) {
        for k in &mut self.kinds {
            k.each_words(visit);
        }
    }

    /// Checks the code a party gives with a change of a `kind` copy to `to`: the transition rules of
    /// [`crate::delivery::check_code`], and then, where the kind lists codes for `to`, one of them.
    pub fn check_status_code(
        &self,
        kind: &str,
        to: Option<DeliveryStatus>,
        code: &str,
    ) -> Result<(), crate::delivery::StatusError> {
        crate::delivery::check_code(to, code)?;
        let listed = to.and_then(|to| self.kind(kind)?.codes_for(to));
        match listed {
            Some(codes) if !code.is_empty() && !codes.iter().any(|(c, _)| c == code) => {
                Err(crate::delivery::StatusError::UnknownCode {
                    status: to.map(DeliveryStatus::as_str).unwrap_or_default(),
                    allowed: codes.iter().map(|(c, _)| c.clone()).collect(),
                })
            }
            _ => Ok(()),
        }
    }

    /// The kind with this name.
    pub fn kind(&self, name: &str) -> Option<&KindDef> {
        self.kind_index(name).map(|i| &self.kinds[i])
    }

    pub(crate) fn kind_index(&self, name: &str) -> Option<usize> {
        self.kinds.binary_search_by(|k| k.name.as_str().cmp(name)).ok()
    }

    pub(crate) fn kind_at(&self, index: usize) -> &KindDef {
        &self.kinds[index]
    }

    pub(crate) fn len(&self) -> usize {
        self.kinds.len()
    }

    /// The field `name` of `kind`.
    pub fn field(&self, kind: &str, name: &str) -> Option<&FieldDef> {
        self.kind(kind)?.field(name)
    }

    /// The labels of a field; empty for an unknown kind or field.
    pub fn labels_of(&self, kind: &str, field: &str) -> &[String] {
        self.field(kind, field).map_or(&[], |f| &f.labels)
    }

    /// Checks a message's fields against its kind, reporting every problem.
    pub fn validate(&self, kind: &str, fields: &BTreeMap<String, FieldValue>) -> Result<(), Vec<FieldProblem>> {
        self.validate_items(kind, fields.iter().map(|(n, v)| (n, Some(v))))
    }

    /// Checks the names of a message's fields without their values (the gateway's view of a sealed
    /// message): every name known for `kind`, every required field present.
    pub fn validate_names<'a>(
        &self,
        kind: &str,
        names: impl IntoIterator<Item = &'a String>,
    ) -> Result<(), Vec<FieldProblem>> {
        self.validate_items(kind, names.into_iter().map(|n| (n, None)))
    }

    fn validate_items<'a>(
        &self,
        kind: &str,
        items: impl Iterator<Item = (&'a String, Option<&'a FieldValue>)>,
    ) -> Result<(), Vec<FieldProblem>> {
        let Some(def) = self.kind(kind) else {
            let did_you_mean = haven_trust::source::near_miss(kind, self.kinds.iter().map(|k| k.name.as_str()));
            return Err(vec![FieldProblem::UnknownKind {
                kind: kind.to_owned(),
                did_you_mean: did_you_mean.map(str::to_owned),
            }]);
        };
        let mut problems = Vec::new();
        let mut present = BTreeSet::new();
        for (name, value) in items {
            present.insert(name.as_str());
            match def.field(name) {
                None => problems.push(FieldProblem::UnknownField {
                    kind: kind.to_owned(),
                    field: name.clone(),
                    // A suggestion costs an edit distance per known field; only the problems an
                    // error lists get one, so a flood of unknown names costs no more than twenty.
                    did_you_mean: (problems.len() < haven_trust::untrusted::LISTED_PROBLEMS)
                        .then(|| haven_trust::source::near_miss(name, def.field_names()).map(str::to_owned))
                        .flatten(),
                }),
                Some(f) => {
                    if let Some(value) = value {
                        check_value(f, value, &mut problems)
                    }
                }
            }
        }
        for f in def.fields.iter().filter(|f| f.required && !present.contains(f.name.as_str())) {
            problems.push(FieldProblem::MissingRequired { field: f.name.clone() });
        }
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }

    /// Reads `schema.toml`, reporting every problem.
    pub fn parse(src: &SourceFile) -> Result<Schema, Vec<Located>> {
        let doc = files::parse_document(src).map_err(|e| vec![e])?;
        let mut problems = Vec::new();
        files::check_keys(src, doc.get_ref(), &["kind"], "schema.toml", &mut problems);
        let mut kinds = Vec::new();
        match files::get(doc.get_ref(), "kind") {
            Some(node) => {
                for (name, node) in files::entries(src, "kind", node, &mut problems) {
                    if let Some(kind) = parse_kind(src, name, node, &mut problems) {
                        kinds.push(kind);
                    }
                }
            }
            None => problems
                .push(src.whole("the schema defines no message kinds; add `[kind.referral]` and `[kind.alert]`")),
        }
        let defined: BTreeSet<&str> = kinds.iter().map(|k: &KindDef| k.name.as_str()).collect();
        if problems.is_empty() {
            for required in REQUIRED_KINDS.iter().filter(|k| !defined.contains(*k)) {
                problems.push(src.whole(format!("the schema must define kind `{required}`, which the gateway routes")));
            }
        }
        if !problems.is_empty() {
            return Err(files::in_order(problems));
        }
        kinds.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Schema { kinds })
    }
}

fn check_value(f: &FieldDef, value: &FieldValue, problems: &mut Vec<FieldProblem>) {
    let mismatch = |expected| FieldProblem::TypeMismatch { field: f.name.clone(), expected, got: value.type_name() };
    match (f.field_type, value) {
        (FieldType::String, FieldValue::Str(s)) => {
            let (len, max) = (s.chars().count(), f.max_len.unwrap_or(u32::MAX) as usize);
            if len > max {
                problems.push(FieldProblem::TooLong { field: f.name.clone(), max, len });
            }
        }
        (FieldType::Enum, FieldValue::Str(s)) => {
            if !f.values.contains(s) {
                problems.push(FieldProblem::NotInEnum { field: f.name.clone(), allowed: f.values.clone() });
            }
        }
        (FieldType::Integer, FieldValue::Int(v)) => {
            if f.min.is_some_and(|m| *v < m) || f.max.is_some_and(|m| *v > m) {
                problems.push(FieldProblem::OutOfRange { field: f.name.clone(), min: f.min, max: f.max });
            }
        }
        (FieldType::Date, FieldValue::Date(_)) => {}
        (FieldType::List, FieldValue::List(items)) => {
            let max = f.max_len.unwrap_or(u32::MAX) as usize;
            if items.len() > max {
                problems.push(FieldProblem::TooManyItems { field: f.name.clone(), max, len: items.len() });
            }
            for (i, item) in items.iter().enumerate() {
                let field = format!("{}[{i}]", f.name);
                if !f.values.is_empty() && !f.values.contains(item) {
                    problems.push(FieldProblem::NotInEnum { field, allowed: f.values.clone() });
                } else if item.chars().count() > LIST_ITEM_MAX_CHARS {
                    problems.push(FieldProblem::TooLong { field, max: LIST_ITEM_MAX_CHARS, len: item.chars().count() });
                }
            }
        }
        (FieldType::String, _) => problems.push(mismatch("a string")),
        (FieldType::Enum, _) => problems.push(mismatch("one of its values (a string)")),
        (FieldType::Integer, _) => problems.push(mismatch("an integer")),
        (FieldType::Date, _) => problems.push(mismatch("a date")),
        (FieldType::List, _) => problems.push(mismatch("a list of strings")),
    }
}

/// What a kind is, before its fields: its name and its words.
struct KindHead {
    name: String,
    label: Option<Words>,
    description: Words,
    codes: BTreeMap<DeliveryStatus, Vec<(String, Words)>>,
}

/// The statuses whose change carries a code, which a kind may list codes for.
const CODED: [DeliveryStatus; 2] = [DeliveryStatus::Declined, DeliveryStatus::Closed];

/// A field as written in `schema.toml`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    #[serde(rename = "type")]
    field_type: Spanned<FieldType>,
    description: Option<Spanned<RawWords>>,
    label: Option<Spanned<RawWords>>,
    value_labels: Option<Spanned<BTreeMap<String, Spanned<RawWords>>>>,
    max_len: Option<Spanned<u32>>,
    #[serde(default)]
    required: bool,
    labels: Spanned<Vec<Spanned<String>>>,
    values: Option<Spanned<Vec<Spanned<String>>>>,
    min: Option<Spanned<i64>>,
    max: Option<Spanned<i64>>,
}

fn parse_kind(
    src: &SourceFile,
    name: &Spanned<toml::de::DeString<'_>>,
    node: &Node<'_>,
    problems: &mut Vec<Located>,
) -> Option<KindDef> {
    let before = problems.len();
    let kind_name: &str = name.get_ref();
    if kind_name == STATUS_KIND {
        problems.push(
            src.at(
                name.span().start,
                "`status` is built in: status updates carry codes only and need no schema or rule",
            ),
        );
    } else if !files::is_identifier(kind_name) {
        problems.push(src.at(
            name.span().start,
            format!("kind name `{kind_name}` must start with a lowercase letter and use only a-z, 0-9 and `_`"),
        ));
    }
    let Some(table) = node.get_ref().as_table() else {
        problems.push(src.at(node.span().start, format!("`kind.{kind_name}` must be a table")));
        return None;
    };
    files::check_keys(
        src,
        table,
        &["label", "description", "codes", "fields"],
        &format!("kind `{kind_name}`"),
        problems,
    );
    let words = |key: &str, one_line: bool, problems: &mut Vec<Located>| {
        let node = files::get(table, key)?;
        let what = format!("kind `{kind_name}`'s {key}");
        match files::deserialize::<Spanned<RawWords>>(src, node) {
            Ok(raw) => Some(Words::read(src, raw, Label { what: &what, one_line }, problems)),
            Err(_) => {
                problems.push(
                    src.at(node.span().start, format!("{what} must be a string or a table of texts by language")),
                );
                None
            }
        }
    };
    let label = words("label", true, problems);
    let description = words("description", false, problems).unwrap_or_else(|| {
        if files::get(table, "description").is_none() {
            problems.push(src.at(node.span().start, format!("kind `{kind_name}` needs a `description`")));
        }
        Words::default()
    });
    let codes = match files::get(table, "codes") {
        Some(codes) => parse_codes(src, kind_name, codes, problems),
        None => BTreeMap::new(),
    };
    let mut fields = Vec::new();
    match files::get(table, "fields") {
        Some(fnode) => {
            for (fname, fnode) in files::entries(src, "fields", fnode, problems) {
                if let Some(f) = parse_field(src, kind_name, fname, fnode, problems) {
                    fields.push(f);
                }
            }
        }
        None => problems.push(src.at(
            node.span().start,
            format!("kind `{kind_name}` has no fields; add `[kind.{kind_name}.fields.<name>]` tables"),
        )),
    }
    if fields.len() > MAX_FIELDS_PER_KIND {
        problems.push(src.at(
            node.span().start,
            format!("kind `{kind_name}` has {} fields; at most {MAX_FIELDS_PER_KIND} are allowed", fields.len()),
        ));
    }
    let head = KindHead { name: kind_name.to_owned(), label, description, codes };
    (problems.len() == before).then(|| KindDef::new(head, fields))
}

/// Reads `[kind.<k>.codes.<status>]`: for a status whose change carries a code, the codes a party
/// chooses from, each with its words.
fn parse_codes(
    src: &SourceFile,
    kind: &str,
    node: &Node<'_>,
    problems: &mut Vec<Located>,
) -> BTreeMap<DeliveryStatus, Vec<(String, Words)>> {
    let mut out = BTreeMap::new();
    for (status, list) in files::entries(src, "codes", node, problems) {
        let name: &str = status.get_ref();
        let Some(st) = CODED.into_iter().find(|s| s.as_str() == name) else {
            let known: Vec<&str> = CODED.iter().map(|s| s.as_str()).collect();
            problems.push(src.at(
                status.span().start,
                format!(
                    "`codes.{name}`: only a change to {} carries a code{}",
                    known.join(" or "),
                    files::did_you_mean(name, known.iter().copied())
                ),
            ));
            continue;
        };
        let mut codes = Vec::new();
        for (code, words) in files::entries(src, name, list, problems) {
            let c: &str = code.get_ref();
            if crate::delivery::check_code(None, c).is_err() || c.is_empty() {
                problems
                    .push(src.at(code.span().start, format!("code `{c}` must be snake_case, at most 64 characters")));
                continue;
            }
            let what = format!("kind `{kind}`'s {name} code `{c}`");
            match files::deserialize::<Spanned<RawWords>>(src, words) {
                Ok(raw) => {
                    codes.push((c.to_owned(), Words::read(src, raw, Label { what: &what, one_line: true }, problems)))
                }
                Err(_) => problems.push(
                    src.at(words.span().start, format!("{what} must be a string or a table of texts by language")),
                ),
            }
        }
        if codes.is_empty() {
            problems.push(
                src.at(list.span().start, format!("`codes.{name}` lists no codes, so no {name} change could be made")),
            );
        }
        out.insert(st, codes);
    }
    out
}

fn parse_field(
    src: &SourceFile,
    kind: &str,
    name: &Spanned<toml::de::DeString<'_>>,
    node: &Node<'_>,
    problems: &mut Vec<Located>,
) -> Option<FieldDef> {
    let before = problems.len();
    let field_name: &str = name.get_ref();
    if !files::is_identifier(field_name) {
        problems.push(src.at(
            name.span().start,
            format!("field name `{field_name}` must start with a lowercase letter and use only a-z, 0-9 and `_`"),
        ));
    }
    let raw: RawField = match files::deserialize(src, node) {
        Ok(raw) => raw,
        Err(e) => {
            problems.push(e);
            return None;
        }
    };
    let ty = *raw.field_type.get_ref();
    let at = |span: std::ops::Range<usize>, msg: String| src.at(span.start, msg);
    let mut labels = Vec::new();
    if raw.labels.get_ref().is_empty() {
        problems.push(at(
            raw.labels.span(),
            format!("field `{kind}.{field_name}` needs at least one label ({})", LABELS.join(", ")),
        ));
    }
    for label in raw.labels.get_ref() {
        let l = label.get_ref();
        if label_bit(l).is_none() {
            problems.push(at(
                label.span(),
                format!("unknown label `{l}`{} (known: {})", files::did_you_mean(l, LABELS), LABELS.join(", ")),
            ));
        } else if labels.contains(l) {
            problems.push(at(label.span(), format!("label `{l}` is listed twice")));
        } else {
            labels.push(l.clone());
        }
    }
    match (ty, &raw.max_len) {
        (FieldType::String | FieldType::List, None) => problems.push(at(
            raw.field_type.span(),
            format!(
                "a {} field needs `max_len` ({})",
                ty.as_str(),
                if ty == FieldType::List { "the most items" } else { "the most characters" }
            ),
        )),
        (FieldType::String | FieldType::List, Some(m)) if *m.get_ref() == 0 => {
            problems.push(at(m.span(), "`max_len` must be at least 1".to_owned()))
        }
        (FieldType::Integer | FieldType::Date | FieldType::Enum, Some(m)) => problems
            .push(at(m.span(), format!("`max_len` applies only to string and list fields, not {}", ty.as_str()))),
        _ => {}
    }
    let mut values = Vec::new();
    match (ty, &raw.values) {
        (FieldType::Enum, None) => problems.push(at(raw.field_type.span(), "an enum field needs `values`".to_owned())),
        (FieldType::Enum | FieldType::List, Some(vs)) => {
            if vs.get_ref().is_empty() {
                problems.push(at(vs.span(), "`values` is empty, so no value could ever be valid".to_owned()));
            }
            for v in vs.get_ref() {
                if values.contains(v.get_ref()) {
                    problems.push(at(v.span(), format!("value `{}` is listed twice", v.get_ref())));
                } else if v.get_ref().is_empty() || v.get_ref().chars().count() > LIST_ITEM_MAX_CHARS {
                    problems.push(at(v.span(), format!("a value must be 1 to {LIST_ITEM_MAX_CHARS} characters")));
                } else {
                    values.push(v.get_ref().clone());
                }
            }
        }
        (_, Some(vs)) => {
            problems.push(at(vs.span(), format!("`values` applies only to enum and list fields, not {}", ty.as_str())))
        }
        _ => {}
    }
    for bound in [&raw.min, &raw.max].into_iter().flatten() {
        if ty != FieldType::Integer {
            problems
                .push(at(bound.span(), format!("`min` and `max` apply only to integer fields, not {}", ty.as_str())));
        }
    }
    if let (Some(min), Some(max)) = (&raw.min, &raw.max)
        && min.get_ref() > max.get_ref()
    {
        problems.push(at(max.span(), format!("`max` ({}) is below `min` ({})", max.get_ref(), min.get_ref())));
    }
    let what = format!("field `{kind}.{field_name}`");
    let description = raw
        .description
        .map(|d| Words::read(src, d, Label { what: &format!("{what}'s description"), one_line: false }, problems));
    let label =
        raw.label.map(|l| Words::read(src, l, Label { what: &format!("{what}'s label"), one_line: true }, problems));
    let mut value_labels = BTreeMap::new();
    if let Some(vl) = raw.value_labels {
        let span = vl.span();
        if values.is_empty() {
            problems.push(at(
                span.clone(),
                format!("`value_labels` applies only to a field with `values`, not {}", ty.as_str()),
            ));
        }
        for (value, words) in vl.into_inner() {
            if !values.contains(&value) {
                problems.push(at(
                    words.span(),
                    format!("`value_labels` names `{value}`, which is not one of the field's values"),
                ));
                continue;
            }
            let label = Label { what: &format!("{what}'s value `{value}`"), one_line: true };
            value_labels.insert(value, Words::read(src, words, label, problems));
        }
        let missing: Vec<&str> = values.iter().filter(|v| !value_labels.contains_key(*v)).map(String::as_str).collect();
        if !values.is_empty() && !missing.is_empty() {
            problems.push(at(
                span,
                format!("`value_labels` must give words for every value; missing: {}", missing.join(", ")),
            ));
        }
    }
    (problems.len() == before).then(|| FieldDef {
        name: field_name.to_owned(),
        label,
        description,
        value_labels,
        field_type: ty,
        max_len: raw.max_len.map(|m| m.into_inner()),
        required: raw.required,
        label_bits: label_mask(labels.iter().map(String::as_str)),
        labels,
        values,
        min: raw.min.map(|m| m.into_inner()),
        max: raw.max.map(|m| m.into_inner()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(text: &str) -> Result<Schema, Vec<Located>> {
        Schema::parse(&SourceFile { path: "schema.toml".into(), text: text.to_owned() })
    }

    const SMALL: &str = r#"
[kind.referral]
description = "r"
[kind.referral.fields.urgency]
type = "enum"
values = ["low", "high"]
required = true
labels = ["operational"]
[kind.referral.fields.name]
type = "string"
max_len = 5
labels = ["identifying"]
[kind.referral.fields.needs]
type = "list"
max_len = 2
values = ["housing", "medical"]
labels = ["operational", "sensitive"]
[kind.referral.fields.size]
type = "integer"
min = 1
max = 20
labels = ["operational"]
[kind.alert]
description = "a"
[kind.alert.fields.incident_type]
type = "enum"
values = ["x"]
required = true
labels = ["operational"]
"#;

    #[test]
    fn validate_reports_every_field_problem_without_echoing_values() {
        let s = schema(SMALL).unwrap();
        let fields = BTreeMap::from([
            ("name".to_owned(), FieldValue::Str("Alexandra".into())),
            ("nam".to_owned(), FieldValue::Str("x".into())),
            ("size".to_owned(), FieldValue::Int(99)),
            ("needs".to_owned(), FieldValue::List(vec!["housing".into(), "secret".into(), "medical".into()])),
        ]);
        let problems = s.validate("referral", &fields).unwrap_err();
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(problems.contains(&FieldProblem::TooLong { field: "name".into(), max: 5, len: 9 }), "{text:?}");
        assert!(text.iter().any(|t| t.contains("no field `nam` (did you mean `name`?)")), "{text:?}");
        assert!(problems.contains(&FieldProblem::OutOfRange { field: "size".into(), min: Some(1), max: Some(20) }));
        assert!(problems.contains(&FieldProblem::TooManyItems { field: "needs".into(), max: 2, len: 3 }));
        assert!(text.iter().any(|t| t.starts_with("field `needs[1]` holds a value outside")), "{text:?}");
        assert!(problems.contains(&FieldProblem::MissingRequired { field: "urgency".into() }));
        assert!(text.iter().all(|t| !t.contains("Alexandra") && !t.contains("secret")), "{text:?}");
        let wrong = BTreeMap::from([("urgency".to_owned(), FieldValue::Int(3))]);
        assert_eq!(
            s.validate("referral", &wrong).unwrap_err()[0].to_string(),
            "field `urgency` must be one of its values (a string), not an integer"
        );
        assert!(s.validate("refferal", &wrong).unwrap_err()[0].to_string().contains("did you mean `referral`"));
    }

    #[test]
    fn grants_by_label_need_every_label_of_a_field() {
        let s = schema(SMALL).unwrap();
        let k = s.kind("referral").unwrap();
        let op = label_mask(["operational"]);
        let names: Vec<&str> = k.names_in(k.within(op)).collect();
        assert_eq!(names, ["size", "urgency"], "needs is also sensitive");
        let names: Vec<&str> = k.names_in(k.touching(label_mask(["sensitive"]))).collect();
        assert_eq!(names, ["needs"]);
    }

    #[test]
    fn schema_problems_are_all_listed_with_positions() {
        let broken = SMALL
            .replace("labels = [\"identifying\"]", "labels = [\"identifiying\"]")
            .replace("type = \"integer\"", "type = \"integr\"")
            .replace("max_len = 2\n", "");
        let errs = schema(&broken).unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(errs.len(), 3, "{text:#?}");
        assert!(text.iter().any(|t| t.starts_with("schema.toml:12:") && t.contains("did you mean `identifying`")));
        assert!(text.iter().any(|t| t.contains("unknown value `integr` (did you mean `integer`?)")), "{text:#?}");
        assert!(text.iter().any(|t| t.contains("a list field needs `max_len`")), "{text:#?}");
    }

    #[test]
    fn status_is_reserved_and_referral_and_alert_are_required() {
        let errs = schema("[kind.status]\ndescription = \"s\"\n[kind.status.fields.code]\ntype = \"string\"\nmax_len = 3\nlabels = [\"operational\"]\n").unwrap_err();
        assert!(errs[0].to_string().starts_with("schema.toml:1:7: `status` is built in"), "{}", errs[0]);
        let errs = schema(&SMALL.replace("[kind.alert", "[kind.notice")).unwrap_err();
        assert!(errs[0].to_string().contains("must define kind `alert`"), "{}", errs[0]);
    }
}

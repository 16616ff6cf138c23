//! What the node keeps of the network's policy bundle for the people who build messages: its purposes,
//! its message kinds and their fields, and the organizations (`Gateway.NetworkInfo`). Fetched on first
//! use and again whenever the node sees another bundle version in a gateway's answer.
//!
//! The node checks the fields people type with the same schema code the gateway runs
//! (`haven_sharing::policy::schema`): it rebuilds the schema from the description ([`schema_of`]) and
//! validates a message's fields with it ([`check_fields`]) before anything is sent, so a wrong value is
//! named beside its field and nothing leaves the node.

use std::sync::Arc;

use haven_proto::v1::gateway_client::GatewayClient;
use std::collections::BTreeMap;

use haven_proto::v1::{FieldInfo, FieldValue, KindInfo, NetworkInfoRequest, NetworkInfoResponse, Words};
use haven_sharing::policy::schema::{FieldProblem, Schema};
use haven_trust::source::SourceFile;
use tokio::sync::Mutex;
use tonic::Status;

use crate::link::GatewayLink;
use crate::people::Person;

/// The node's copy of the network's description. Cheap to clone: clones share it.
#[derive(Clone, Default)]
pub struct Network(Arc<Mutex<Option<Arc<NetworkInfoResponse>>>>);

impl Network {
    /// The description, fetched as `who` when the node holds none.
    pub async fn get(&self, link: &GatewayLink, who: &Person) -> Result<Arc<NetworkInfoResponse>, Status> {
        let mut held = self.0.lock().await;
        if let Some(info) = held.as_ref() {
            return Ok(info.clone());
        }
        let mut gw = GatewayClient::new(link.channel());
        let info = gw
            .network_info(link.request(&who.name, who.role, NetworkInfoRequest {})?)
            .await
            .map_err(|s| link.relay(s))?
            .into_inner();
        let info = Arc::new(info);
        *held = Some(info.clone());
        Ok(info)
    }

    /// Notes a bundle version the gateway named: a description of another version is dropped, to be
    /// fetched again on next use.
    pub async fn saw(&self, bundle_version: &str) {
        if bundle_version.is_empty() {
            return;
        }
        let mut held = self.0.lock().await;
        if held.as_ref().is_some_and(|info| !same_bundle(&info.bundle_version, bundle_version)) {
            *held = None;
        }
    }
}

/// The words of the network's description in one language: labels and descriptions of purposes,
/// kinds, fields, values and status codes. A text missing in that language (or its primary language)
/// falls back to the network's main language, then to the identifier.
#[derive(Clone, Copy)]
pub struct Wording<'a> {
    /// None when the node could not fetch the description: every text is its identifier.
    info: Option<&'a NetworkInfoResponse>,
    language: &'a str,
}

impl<'a> Wording<'a> {
    pub fn new(info: &'a NetworkInfoResponse, language: &'a str) -> Self {
        Wording { info: Some(info), language }
    }

    /// The words of `info` when the node has it, else the identifiers themselves.
    pub fn of(info: Option<&'a NetworkInfoResponse>, language: &'a str) -> Self {
        Wording { info, language }
    }

    /// `words` in this language, else the main language, else `fallback`.
    pub fn say(&self, words: Option<&'a Words>, fallback: &'a str) -> &'a str {
        let Some(w) = words else { return fallback };
        let primary = self.language.split('-').next().unwrap_or(self.language);
        let main = self.info.and_then(|i| i.languages.first()).map_or("en", String::as_str);
        [self.language, primary, main]
            .iter()
            .find_map(|l| w.by_language.get(*l))
            .or_else(|| w.by_language.values().next())
            .map_or(fallback, String::as_str)
    }

    /// A purpose's short name.
    pub fn purpose(&self, id: &'a str) -> &'a str {
        self.purposes().find(|p| p.id == id).map_or(id, |p| self.say(p.label.as_ref(), &p.id))
    }

    fn purposes(&self) -> impl Iterator<Item = &'a haven_proto::v1::PurposeInfo> {
        self.info.into_iter().flat_map(|i| i.purposes.iter())
    }

    /// What a purpose means, as the survivor is told.
    pub fn purpose_description(&self, id: &'a str) -> &'a str {
        self.purposes().find(|p| p.id == id).map_or(id, |p| self.say(p.description.as_ref(), &p.id))
    }

    /// A field's short name.
    pub fn field(&self, f: &'a FieldInfo) -> &'a str {
        self.say(f.label.as_ref(), &f.name)
    }

    /// What a field means ('' when the schema says nothing).
    pub fn field_description(&self, f: &'a FieldInfo) -> &'a str {
        self.say(f.description.as_ref(), "")
    }

    /// A field's name, looked up by kind.
    pub fn field_named(&self, kind: &str, name: &'a str) -> &'a str {
        self.kind_info(kind).and_then(|k| k.fields.iter().find(|f| f.name == name)).map_or(name, |f| self.field(f))
    }

    /// One of the values of field `field` of `kind`.
    pub fn value_named(&self, kind: &str, field: &str, value: &'a str) -> &'a str {
        self.kind_info(kind)
            .and_then(|k| k.fields.iter().find(|f| f.name == field))
            .map_or(value, |f| self.value(f, value))
    }

    /// One of a field's values.
    pub fn value(&self, f: &'a FieldInfo, value: &'a str) -> &'a str {
        self.say(f.value_labels.get(value), value)
    }

    /// A kind's short name.
    pub fn kind(&self, kind: &'a str) -> &'a str {
        self.kind_info(kind).map_or(kind, |k| self.say(k.label.as_ref(), &k.name))
    }

    /// The codes a kind lists for a status, with their words (empty: any code).
    pub fn codes(&self, kind: &str, status: &str) -> Vec<(&'a str, &'a str)> {
        self.kind_info(kind).map_or_else(Vec::new, |k| {
            k.codes
                .iter()
                .filter(|c| c.status == status)
                .map(|c| (c.code.as_str(), self.say(c.label.as_ref(), &c.code)))
                .collect()
        })
    }

    /// A status code as words, where the kind lists it; else the code itself.
    pub fn code(&self, kind: &str, status: &str, code: &'a str) -> &'a str {
        self.codes(kind, status).into_iter().find(|(c, _)| *c == code).map_or(code, |(_, w)| w)
    }

    fn kind_info(&self, kind: &str) -> Option<&'a KindInfo> {
        self.info?.kinds.iter().find(|k| k.name == kind)
    }
}

/// The schema the description carries, parsed by the core crate as the gateway parses `schema.toml`.
pub fn schema_of(info: &NetworkInfoResponse) -> Result<Schema, String> {
    let mut kinds = toml::Table::new();
    for k in &info.kinds {
        let mut fields = toml::Table::new();
        for f in &k.fields {
            let mut t = toml::Table::new();
            t.insert("type".into(), f.r#type.clone().into());
            if f.required {
                t.insert("required".into(), true.into());
            }
            if f.max_len > 0 {
                t.insert("max_len".into(), i64::from(f.max_len).into());
            }
            if !f.values.is_empty() {
                t.insert("values".into(), f.values.clone().into());
            }
            t.insert("labels".into(), f.labels.clone().into());
            if let Some(min) = f.min {
                t.insert("min".into(), min.into());
            }
            if let Some(max) = f.max {
                t.insert("max".into(), max.into());
            }
            fields.insert(f.name.clone(), t.into());
        }
        let mut kind = toml::Table::new();
        kind.insert("description".into(), Wording::new(info, "").say(k.description.as_ref(), &k.name).into());
        kind.insert("fields".into(), fields.into());
        kinds.insert(k.name.clone(), kind.into());
    }
    let mut root = toml::Table::new();
    root.insert("kind".into(), kinds.into());
    let text = toml::to_string(&root).map_err(|e| e.to_string())?;
    let source = SourceFile { path: "schema.toml (from the gateway)".into(), text };
    Schema::parse(&source).map_err(|problems| problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
}

/// A field's problem, by the field it concerns ('' for one about the whole message).
pub type Problems = Vec<(String, String)>;

/// Checks a message's fields against the schema: every problem, by field.
pub fn check_fields(schema: &Schema, kind: &str, fields: &std::collections::HashMap<String, FieldValue>) -> Problems {
    let mut values = BTreeMap::new();
    let mut problems = Problems::new();
    for (name, value) in fields {
        match to_value(value) {
            Ok(v) => {
                values.insert(name.clone(), v);
            }
            Err(problem) => problems.push((name.clone(), problem)),
        }
    }
    if let Err(found) = schema.validate(kind, &values) {
        for p in found {
            let field = match &p {
                FieldProblem::UnknownKind { .. } => String::new(),
                FieldProblem::UnknownField { field, .. }
                | FieldProblem::MissingRequired { field }
                | FieldProblem::TypeMismatch { field, .. }
                | FieldProblem::TooLong { field, .. }
                | FieldProblem::TooManyItems { field, .. }
                | FieldProblem::NotInEnum { field, .. }
                | FieldProblem::OutOfRange { field, .. } => field.split('[').next().unwrap_or_default().to_owned(),
            };
            problems.push((field, p.to_string()));
        }
    }
    problems
}

fn to_value(value: &FieldValue) -> Result<haven_sharing::policy::schema::FieldValue, String> {
    use haven_proto::v1::field_value::Value;
    use haven_sharing::policy::schema::FieldValue as V;
    match &value.value {
        Some(Value::Text(s)) => Ok(V::Str(s.clone())),
        Some(Value::Integer(i)) => Ok(V::Int(*i)),
        Some(Value::Date(d)) => time::Date::parse(d, time::macros::format_description!("[year]-[month]-[day]"))
            .map(V::Date)
            .map_err(|_| "a date must be YYYY-MM-DD".to_owned()),
        Some(Value::List(l)) => Ok(V::List(l.items.clone())),
        None => Err("no value".to_owned()),
    }
}

/// Whether two bundle versions name the same bundle (`sha256:<hex>`, with or without a label after it).
fn same_bundle(a: &str, b: &str) -> bool {
    let digest = |v: &str| v.split_whitespace().next().unwrap_or_default().to_owned();
    digest(a) == digest(b)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_label_does_not_make_another_bundle() {
        assert!(super::same_bundle("sha256:ab (sample network)", "sha256:ab"));
        assert!(!super::same_bundle("sha256:ab", "sha256:cd"));
    }
}

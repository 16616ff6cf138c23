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

use haven_proto::v1::{FieldValue, NetworkInfoRequest, NetworkInfoResponse};
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
            if !f.description.is_empty() {
                t.insert("description".into(), f.description.clone().into());
            }
            fields.insert(f.name.clone(), t.into());
        }
        let mut kind = toml::Table::new();
        kind.insert("description".into(), k.description.clone().into());
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

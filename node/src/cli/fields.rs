//! Message fields on the command line: `name=value` is text (enum fields such as `urgency` are text
//! too), and a type after the name selects another: `name:int=3`, `name:date=2026-01-31`,
//! `name:list=a,b`. Which type each field takes is fixed by `policies/schema.toml`; the gateway checks it.

use std::collections::{BTreeMap, HashMap};

use haven_proto::v1::field_value::Value;
use haven_proto::v1::{FieldValue, StringList};

use super::error::CliError;

/// The `--field` help, shared by every command that sends a message.
pub const FIELD_HELP: &str = "A field of the message: NAME=VALUE for text (enum values are text), \
NAME:int=3 for an integer, NAME:date=2026-01-31 for a date, NAME:list=a,b for a list. \
Repeat for each field; names and types come from policies/schema.toml.";

/// One `--field` argument, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldArg {
    pub name: String,
    pub value: FieldValue,
}

/// Parses `name[:type]=value` (a clap value parser, so a malformed field is a usage error).
pub fn parse(arg: &str) -> Result<FieldArg, String> {
    let (key, raw) = arg
        .split_once('=')
        .ok_or_else(|| format!("`{arg}` is not NAME=VALUE (for example urgency=high or household_size:int=3)"))?;
    let (name, ty) = key.split_once(':').unwrap_or((key, "text"));
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err(format!("field name `{name}` must be lowercase letters, digits and `_`"));
    }
    let value = match ty {
        "text" => Value::Text(raw.to_owned()),
        "int" => Value::Integer(raw.parse().map_err(|_| format!("{name}: `{raw}` is not an integer"))?),
        "date" => {
            super::dates::parse(raw).map_err(|e| format!("{name}: {e}"))?;
            Value::Date(raw.to_owned())
        }
        "list" => Value::List(StringList {
            items: if raw.is_empty() { Vec::new() } else { raw.split(',').map(|s| s.trim().to_owned()).collect() },
        }),
        other => return Err(format!("{name}: unknown type `{other}` (known: text, int, date, list)")),
    };
    Ok(FieldArg { name: name.to_owned(), value: FieldValue { value: Some(value) } })
}

/// The fields as the envelope carries them; a field given twice is a usage error, not a silent overwrite.
pub fn collect(args: &[FieldArg]) -> Result<HashMap<String, FieldValue>, CliError> {
    let mut fields = HashMap::new();
    for a in args {
        if fields.insert(a.name.clone(), a.value.clone()).is_some() {
            return Err(CliError::Usage(format!("--field {} is given more than once", a.name)));
        }
    }
    Ok(fields)
}

/// A field value for scripts: text and dates as strings, integers as numbers, lists as arrays.
pub fn to_json(v: &FieldValue) -> serde_json::Value {
    match &v.value {
        Some(Value::Text(s) | Value::Date(s)) => serde_json::Value::String(s.clone()),
        Some(Value::Integer(i)) => serde_json::Value::from(*i),
        Some(Value::List(l)) => serde_json::Value::from(l.items.clone()),
        None => serde_json::Value::Null,
    }
}

/// Every field for scripts, sorted by name.
pub fn all_to_json(fields: &HashMap<String, FieldValue>) -> BTreeMap<String, serde_json::Value> {
    fields.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_type_after_the_name_selects_the_value_type() {
        assert_eq!(parse("urgency=high").unwrap().value.value, Some(Value::Text("high".into())));
        assert_eq!(parse("note=a=b").unwrap().value.value, Some(Value::Text("a=b".into())));
        assert_eq!(parse("household_size:int=3").unwrap().value.value, Some(Value::Integer(3)));
        assert_eq!(parse("observed_at:date=2026-01-31").unwrap().value.value, Some(Value::Date("2026-01-31".into())));
        assert_eq!(
            parse("needs:list=housing, medical").unwrap().value.value,
            Some(Value::List(StringList { items: vec!["housing".into(), "medical".into()] }))
        );
    }

    #[test]
    fn malformed_fields_are_refused_with_the_reason() {
        assert!(parse("urgency").unwrap_err().contains("NAME=VALUE"));
        assert!(parse("n:int=three").unwrap_err().contains("not an integer"));
        assert!(parse("d:date=31/01/2026").unwrap_err().contains("YYYY-MM-DD"));
        assert!(parse("x:blob=1").unwrap_err().contains("unknown type"));
        assert!(parse("Bad=1").unwrap_err().contains("lowercase"));
    }

    #[test]
    fn a_field_given_twice_is_a_usage_error() {
        let args = [parse("urgency=high").unwrap(), parse("urgency=low").unwrap()];
        assert!(matches!(collect(&args), Err(CliError::Usage(_))));
    }
}

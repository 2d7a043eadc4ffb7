//! Custom parameters (`{{name}}`) and the built-in `{{ACS::…}}` ones.
//!
//! A command with `EnableParameter=true` names its parameters in its content; an
//! invocation supplies their values in `Parameters` (a JSON object of strings), and the
//! built-ins are filled in per instance.

use std::collections::BTreeMap;

/// The most custom parameters a command may have.
pub const MAX_PARAMETERS: usize = 20;
/// The longest parameter name.
pub const MAX_NAME_LEN: usize = 64;
const BUILTIN_PREFIX: &str = "ACS::";

/// The built-in parameters the server knows per instance.
#[derive(Debug, Clone, Default)]
pub struct Builtins {
    pub instance_id: String,
    pub instance_name: String,
    pub region_id: String,
    pub invoke_id: String,
    pub command_id: String,
}

impl Builtins {
    fn get(&self, name: &str) -> Option<&str> {
        Some(match name {
            "InstanceId" => &self.instance_id,
            "InstanceName" => &self.instance_name,
            "RegionId" => &self.region_id,
            "InvokeId" => &self.invoke_id,
            "CommandId" => &self.command_id,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamError {
    /// More than [`MAX_PARAMETERS`] distinct custom parameters.
    TooMany(usize),
    /// A name that is empty, too long or has characters other than `[A-Za-z0-9_-]`.
    BadName(String),
    /// `{{ACS::X}}` with an `X` that is not a built-in.
    UnknownBuiltin(String),
    /// A parameter the content names but the invocation gave no value for.
    Missing(String),
    /// A value the invocation gave for a parameter the content does not name.
    Unexpected(String),
}

impl std::fmt::Display for ParamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParamError::TooMany(n) => write!(
                f,
                "the command defines {n} parameters; at most {MAX_PARAMETERS} are allowed"
            ),
            ParamError::BadName(n) => write!(f, "the parameter name {n:?} is not valid"),
            ParamError::UnknownBuiltin(n) => {
                write!(f, "the built-in parameter {{{{ACS::{n}}}}} does not exist")
            }
            ParamError::Missing(n) => write!(f, "no value was given for the parameter {n:?}"),
            ParamError::Unexpected(n) => {
                write!(f, "the command does not define the parameter {n:?}")
            }
        }
    }
}

/// One `{{…}}` found in content: its byte range and its trimmed name.
fn placeholders(content: &str) -> Vec<(std::ops::Range<usize>, &str)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(open) = content[from..].find("{{") {
        let start = from + open;
        match content[start + 2..].find("}}") {
            Some(close) => {
                let end = start + 2 + close + 2;
                let name = content[start + 2..start + 2 + close].trim();
                out.push((start..end, name));
                from = end;
            }
            None => break,
        }
    }
    out
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The custom parameter names `content` uses, each once, in order of first use.
/// Built-ins are checked but not listed.
pub fn parameter_names(content: &str) -> Result<Vec<String>, ParamError> {
    let mut names: Vec<String> = Vec::new();
    for (_, name) in placeholders(content) {
        if let Some(builtin) = name.strip_prefix(BUILTIN_PREFIX) {
            if Builtins::default().get(builtin).is_none() {
                return Err(ParamError::UnknownBuiltin(builtin.to_string()));
            }
            continue;
        }
        if !valid_name(name) {
            return Err(ParamError::BadName(name.to_string()));
        }
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    if names.len() > MAX_PARAMETERS {
        return Err(ParamError::TooMany(names.len()));
    }
    Ok(names)
}

/// Checks that `values` gives exactly the parameters `content` names.
pub fn check_values(content: &str, values: &BTreeMap<String, String>) -> Result<(), ParamError> {
    let names = parameter_names(content)?;
    if let Some(missing) = names.iter().find(|n| !values.contains_key(*n)) {
        return Err(ParamError::Missing(missing.clone()));
    }
    if let Some(extra) = values.keys().find(|k| !names.contains(k)) {
        return Err(ParamError::Unexpected(extra.clone()));
    }
    Ok(())
}

/// Replaces every placeholder of `content`: custom ones from `values` (when
/// `enable_parameter`), built-ins from `builtins` (always, as the cloud does).
/// Placeholders that are neither stay as they are.
pub fn substitute(
    content: &str,
    enable_parameter: bool,
    values: &BTreeMap<String, String>,
    builtins: &Builtins,
) -> String {
    let mut out = String::with_capacity(content.len());
    let mut last = 0;
    for (range, name) in placeholders(content) {
        let value = match name.strip_prefix(BUILTIN_PREFIX) {
            Some(b) => builtins.get(b),
            None if enable_parameter => values.get(name).map(String::as_str),
            None => None,
        };
        if let Some(v) = value {
            out.push_str(&content[last..range.start]);
            out.push_str(v);
            last = range.end;
        }
    }
    out.push_str(&content[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn names_are_found_once_in_order_builtins_aside() {
        let c = "echo {{ name }} {{dir}} {{name}} {{ACS::InstanceId}}";
        assert_eq!(parameter_names(c).unwrap(), vec!["name", "dir"]);
        assert_eq!(
            parameter_names("{{ACS::Nope}}"),
            Err(ParamError::UnknownBuiltin("Nope".into()))
        );
        assert_eq!(
            parameter_names("{{a b}}"),
            Err(ParamError::BadName("a b".into()))
        );
        let many: String = (0..21).map(|i| format!("{{{{p{i}}}}}")).collect();
        assert_eq!(parameter_names(&many), Err(ParamError::TooMany(21)));
    }

    #[test]
    fn values_must_match_names() {
        let c = "echo {{a}} {{b}}";
        assert!(check_values(c, &map(&[("a", "1"), ("b", "2")])).is_ok());
        assert_eq!(
            check_values(c, &map(&[("a", "1")])),
            Err(ParamError::Missing("b".into()))
        );
        assert_eq!(
            check_values(c, &map(&[("a", "1"), ("b", "2"), ("c", "3")])),
            Err(ParamError::Unexpected("c".into()))
        );
    }

    #[test]
    fn substitution_fills_custom_and_builtin() {
        let b = Builtins {
            instance_id: "mi-1".into(),
            instance_name: "host".into(),
            region_id: "r".into(),
            invoke_id: "t-1".into(),
            command_id: "c-1".into(),
        };
        let c = "{{who}}@{{ ACS::InstanceName }}/{{ACS::InstanceId}} {{ACS::InvokeId}} {{ACS::CommandId}} {{ACS::RegionId}} {{x}}";
        assert_eq!(
            substitute(c, true, &map(&[("who", "me")]), &b),
            "me@host/mi-1 t-1 c-1 r {{x}}"
        );
        assert_eq!(
            substitute(
                "{{who}} {{ACS::InstanceId}}",
                false,
                &map(&[("who", "me")]),
                &b
            ),
            "{{who}} mi-1"
        );
        assert_eq!(
            substitute("no {{ close", true, &map(&[]), &b),
            "no {{ close"
        );
    }

    proptest! {
        #[test]
        fn content_without_braces_is_unchanged(s in "[^{}]{0,200}") {
            prop_assert_eq!(substitute(&s, true, &BTreeMap::new(), &Builtins::default()), s.clone());
            prop_assert!(parameter_names(&s).unwrap().is_empty());
        }

        #[test]
        fn every_named_parameter_is_replaced(
            names in prop::collection::btree_set("[a-z][a-z0-9_]{0,8}", 1..6),
            value in "[^{}]{0,12}",
        ) {
            let content: String = names.iter().map(|n| format!("<{{{{{n}}}}}>")).collect();
            let values: BTreeMap<_, _> = names.iter().map(|n| (n.clone(), value.clone())).collect();
            prop_assert!(check_values(&content, &values).is_ok());
            let out = substitute(&content, true, &values, &Builtins::default());
            let expected: String = names.iter().map(|_| format!("<{value}>")).collect();
            prop_assert_eq!(out, expected);
        }
    }
}

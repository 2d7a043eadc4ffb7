//! Building the `Task` an agent runs from a stored invocation.

use base64::prelude::*;
use oca_domain::command::{CommandType, TerminationMode};
use oca_domain::params::{substitute, Builtins};
use oca_proto::{FileDelivery, Repeat, Task};
use oca_store::{InstanceRecord, InvocationRecord};
use std::collections::BTreeMap;

/// Parses an invocation's `Parameters` JSON object into name → value. Values that are
/// not strings are given as their JSON text.
pub fn parameter_values(json: &str) -> BTreeMap<String, String> {
    match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(json) {
        Ok(map) => map
            .into_iter()
            .map(|(k, v)| {
                let s = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, s)
            })
            .collect(),
        Err(_) => BTreeMap::new(),
    }
}

/// The task for one instance: the script with its parameters and the `ACS::`
/// built-ins of that instance filled in, or, for a file delivery, the file.
pub fn build_task(inv: &InvocationRecord, instance: &InstanceRecord, output_cap: u64) -> Task {
    let builtins = Builtins {
        instance_id: instance.instance_id.clone(),
        instance_name: instance.name.clone(),
        region_id: inv.region_id.clone(),
        invoke_id: inv.invoke_id.clone(),
        command_id: inv.command_id.clone(),
    };
    let file = inv.file.as_ref().map(|spec| {
        Box::new(FileDelivery {
            name: inv.command_name.clone(),
            target_dir: spec.target_dir.clone(),
            content: BASE64_STANDARD.encode(&inv.command_content),
            owner: spec.owner.clone(),
            group: spec.group.clone(),
            mode: spec.mode.clone(),
            overwrite: spec.overwrite,
        })
    });
    // A repeating task's runs report their 24 KB view only (see oca_proto).
    let mode = inv.repeat();
    let repeat = mode.repeats().then(|| Repeat {
        mode,
        frequency: inv.frequency.clone(),
        anchor: inv.created,
    });
    let output_cap = if repeat.is_some() { 0 } else { output_cap };
    let script = if file.is_some() {
        String::new()
    } else {
        let content = String::from_utf8_lossy(&inv.command_content);
        let values = parameter_values(&inv.parameters);
        substitute(&content, inv.enable_parameter, &values, &builtins)
    };
    Task {
        invoke_id: inv.invoke_id.clone(),
        command_id: inv.command_id.clone(),
        command_type: CommandType::parse(&inv.command_type).unwrap_or(CommandType::RunShellScript),
        script,
        working_dir: inv.working_dir.clone(),
        username: inv.username.clone(),
        timeout_secs: inv.timeout_secs.max(1) as u64,
        output_cap,
        termination_mode: TerminationMode::parse(&inv.termination_mode).unwrap_or_default(),
        file,
        repeat,
        revision: inv.revision,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_values_accept_strings_and_other_json() {
        let v = parameter_values(r#"{"a":"x","n":3,"b":true}"#);
        assert_eq!(v["a"], "x");
        assert_eq!(v["n"], "3");
        assert_eq!(v["b"], "true");
        assert!(parameter_values("not json").is_empty());
    }
}

//! The audit trail of the API: every call of an action that is not `Describe…`/
//! `List…` ([`Endpoint::is_read_only`]) is recorded once answered, refusals included
//! (by signature, by validation, or failed), through the dispatcher's
//! [`oca_store::audit::AuditLog`].
//!
//! An entry keeps the time, the account (of the key the request named, when that key
//! exists), the access key named, the caller's address, the action, the ids the
//! request named or created (`InstanceId`, `InstanceIds`, `CommandId`, `InvokeId`,
//! `ActivationId`, `ResourceId`, each also as `Name.N`; created ids first), the
//! result code, the HTTP status and the request id. Never a parameter's value other
//! than those ids: no command content, no parameters, no names, no tags, no secret.
//!
//! A request whose action cannot be known is not recorded (it names none): one refused
//! before routing (a malformed parameter name, a body too large, an unknown action or
//! version). The log has those.
//!
//! No API action reads the trail: it is the operators' (`oca audit`, offline).

use crate::router::Endpoint;
use crate::signature::{self, RequestParts};
use oca_store::audit::{Targets, MAX_TARGETS};
use std::sync::{Arc, Mutex};

/// The parameters whose values are ids worth recording (also as `Name.N`).
const ID_PARAMS: &[&str] = &[
    "InvokeId",
    "CommandId",
    "InstanceId",
    "InstanceIds",
    "ActivationId",
    "ResourceId",
];

/// What the trail learns of a request as it is served.
#[derive(Default)]
pub(crate) struct Seen {
    /// The action, once routed; nothing is recorded without one.
    pub endpoint: Option<Endpoint>,
    /// The access key the request named.
    pub access_key_id: String,
    /// The account of that key, when the key exists.
    pub account_id: String,
    /// The signature was verified and the request admitted.
    pub authenticated: bool,
    /// The ids the request names.
    pub named: Targets,
    /// The ids the request created, noted by handlers ([`crate::Ctx::created`]).
    pub created: Created,
}

impl Seen {
    /// Whether the request's action is one the trail records.
    pub fn recorded(&self) -> bool {
        self.endpoint.is_some_and(|e| !e.is_read_only())
    }

    /// Notes the access key a request names, whether or not its signature can be
    /// read.
    pub fn claimed(&mut self, parts: &RequestParts, params: &[(String, String)]) {
        if self.access_key_id.is_empty() {
            if let Some(key) = signature::claimed_access_key_id(parts, params) {
                self.access_key_id = key;
            }
        }
    }

    /// The ids `params` name: see [`ID_PARAMS`]. A JSON array value (SWAS's
    /// `InstanceIds`) counts item by item; at most [`MAX_TARGETS`] are kept.
    pub fn named(&mut self, params: &[(String, String)]) {
        for (name, value) in params {
            let base = name.split_once('.').map_or(name.as_str(), |(b, _)| b);
            if !ID_PARAMS.contains(&base) || value.is_empty() {
                continue;
            }
            if !(value.starts_with('[') && json_ids(value, &mut self.named)) {
                self.named.add(value);
            }
        }
    }

    /// The ids to record: those created first, then those named.
    pub fn targets(&self) -> Targets {
        let mut all = Targets::default();
        for id in self.created.ids() {
            all.add(&id);
        }
        for id in &self.named.ids {
            all.add(id);
        }
        all.omitted += self.named.omitted;
        all
    }
}

/// Adds the strings of a JSON array to `targets` (past the cap only counting them);
/// false when `text` is not a JSON array of strings.
fn json_ids(text: &str, targets: &mut Targets) -> bool {
    use serde::de::{Deserializer, IgnoredAny, SeqAccess, Visitor};
    struct Ids<'a>(&'a mut Targets);
    impl<'de> Visitor<'de> for Ids<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON array of strings")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while self.0.ids.len() < MAX_TARGETS {
                match seq.next_element::<String>()? {
                    Some(id) => self.0.add(&id),
                    None => return Ok(()),
                }
            }
            while seq.next_element::<IgnoredAny>()?.is_some() {
                self.0.omitted += 1;
            }
            Ok(())
        }
    }
    let mut scratch = Targets::default();
    let mut de = serde_json::Deserializer::from_str(text);
    let read = de
        .deserialize_seq(Ids(&mut scratch))
        .and_then(|()| de.end())
        .is_ok();
    if read {
        for id in &scratch.ids {
            targets.add(id);
        }
        targets.omitted += scratch.omitted;
    }
    read
}

/// The ids a request created, noted by its handler; shared by the copies of a
/// request's context (SWAS renames parameters in a copy).
#[derive(Clone, Default)]
pub struct Created(Arc<Mutex<Vec<String>>>);

impl Created {
    pub fn note(&self, id: &str) {
        let mut ids = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if ids.len() < MAX_TARGETS {
            ids.push(id.to_string());
        }
    }

    fn ids(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn named_ids_and_only_those() {
        let mut seen = Seen::default();
        seen.named(&pairs(&[
            ("CommandContent", "echo secret"),
            ("Parameters", r#"{"password":"hunter2"}"#),
            ("InstanceId.1", "mi-1"),
            ("InstanceId.2", "mi-2"),
            ("CommandId", "c-1"),
            ("Name", "my command"),
            ("Tag.1.Value", "secret-value"),
            ("ResourceId.1", "mi-1"),
            ("InstanceIds", r#"["mi-3","mi-4"]"#),
        ]));
        seen.created.note("t-9");
        let t = seen.targets();
        assert_eq!(t.ids, vec!["t-9", "mi-1", "mi-2", "c-1", "mi-3", "mi-4"]);
        assert_eq!(t.omitted, 0);
    }

    #[test]
    fn ids_are_bounded() {
        let many: Vec<String> = (0..100_000).map(|n| format!("\"mi-{n}\"")).collect();
        let json = format!("[{}]", many.join(","));
        let mut seen = Seen::default();
        seen.named(&pairs(&[
            ("InstanceIds", &json),
            ("InvokeId", &"x".repeat(5000)),
        ]));
        let t = seen.targets();
        assert_eq!(t.ids.len(), MAX_TARGETS);
        assert_eq!(t.omitted, 100_000 - MAX_TARGETS as u64 + 1);
        assert!(t.ids.iter().all(|id| id.len() <= 64));
        // Not an array of strings: one id (cut).
        let mut seen = Seen::default();
        seen.named(&pairs(&[("InstanceIds", "[1, 2")]));
        assert_eq!(seen.targets().ids, vec!["[1,?2"]);
    }
}

//! Bytes → the agent protocol's JSON messages, as the server reads an agent's frames
//! (`AgentMsg`, the registration) and the agent reads the server's (`ServerMsg`,
//! `RegisterResponse`, `RegisterError`).
//!
//! Properties: parsing never panics; whatever parses serializes (the `to_json` the
//! peers use never fails) and reads back to an equal value, whose JSON is the same
//! again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oca_proto::{
    AgentMsg, KnownTask, RegisterError, RegisterRequest, RegisterResponse, ServerMsg, Task,
    TaskResult,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(data: &[u8]) -> Option<T> {
    let value: T = serde_json::from_slice(data).ok()?;
    let json = serde_json::to_string(&value).expect("a message read serializes");
    let again: T = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("{json} does not read back: {e} ({value:?})"));
    assert_eq!(again, value, "{json}");
    assert_eq!(serde_json::to_string(&again).unwrap(), json);
    Some(value)
}

fuzz_target!(|data: &[u8]| {
    // The peers read text frames: what is not UTF-8 never reaches the parser.
    if let Some(msg) = round_trip::<AgentMsg>(data) {
        let json = msg.to_json();
        assert_eq!(serde_json::from_str::<AgentMsg>(&json).unwrap(), msg);
    }
    if let Some(msg) = round_trip::<ServerMsg>(data) {
        let json = msg.to_json();
        assert_eq!(serde_json::from_str::<ServerMsg>(&json).unwrap(), msg);
    }
    round_trip::<RegisterRequest>(data);
    round_trip::<RegisterResponse>(data);
    round_trip::<RegisterError>(data);
    round_trip::<Task>(data);
    round_trip::<TaskResult>(data);
    round_trip::<KnownTask>(data);
    // The same bytes through the `&str` path the server takes for text frames.
    if let Ok(text) = std::str::from_utf8(data) {
        assert_eq!(
            serde_json::from_str::<AgentMsg>(text).ok(),
            serde_json::from_slice::<AgentMsg>(data).ok()
        );
    }
});

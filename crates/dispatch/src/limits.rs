//! Holding what agents send to the bounds of `oca_proto::limits`.
//!
//! Per field, refuse or cut:
//! - Registration refuses a field past its cap (`InvalidParameter`): nothing is lost,
//!   and whoever registers sees at once what is wrong.
//! - `Hello` cuts a field past its cap (host name, OS type, agent version) and keeps at
//!   most `MAX_KNOWN_TASKS` known tasks: the connection is authenticated, and the
//!   results its agent holds matter more than a cosmetic field; refusing it would
//!   strand them.
//! - A message about an invoke id past `MAX_ID` is ignored (no task has such an id).
//! - A result's 24 KB view is cut to 24 KB, like the agent itself cuts it, the cut
//!   bytes counted in `Dropped`.

use oca_domain::output::{HeadTail, OUTPUT_LIMIT};
use oca_proto::AgentMsg;

/// `s` cut to at most `max` bytes, at a character boundary; whether it was cut.
pub fn cut(mut s: String, max: usize) -> (String, bool) {
    if s.len() <= max {
        return (s, false);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.shrink_to_fit();
    (s, true)
}

/// The invoke id an agent message is about, if any.
pub fn invoke_id(msg: &AgentMsg) -> Option<&str> {
    match msg {
        AgentMsg::Hello { .. } | AgentMsg::Heartbeat { .. } => None,
        AgentMsg::Started { invoke_id, .. }
        | AgentMsg::Scheduled { invoke_id, .. }
        | AgentMsg::Output { invoke_id, .. } => Some(invoke_id),
        AgentMsg::Finished(result) => Some(&result.invoke_id),
    }
}

/// A result's view held to [`OUTPUT_LIMIT`]: a longer one keeps its head and tail, and
/// the bytes cut from between are added to `dropped`.
pub fn view(output: Vec<u8>, dropped: u64) -> (Vec<u8>, u64) {
    if output.len() <= OUTPUT_LIMIT {
        return (output, dropped);
    }
    let mut kept = HeadTail::new(OUTPUT_LIMIT);
    kept.push(&output);
    let (view, cut) = kept.finish();
    (view, dropped.saturating_add(cut))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_cut_at_character_boundaries() {
        assert_eq!(cut("host".into(), 10), ("host".into(), false));
        assert_eq!(cut("hostname".into(), 4), ("host".into(), true));
        // "é" takes two bytes: a cut in its middle moves before it.
        assert_eq!(cut("aé".into(), 2), ("a".into(), true));
        let (big, was_cut) = cut("x".repeat(1 << 20), 255);
        assert!(was_cut && big.len() == 255 && big.capacity() < 1024);
    }

    #[test]
    fn views_are_held_to_the_limit() {
        let small = vec![b'a'; 100];
        assert_eq!(view(small.clone(), 3), (small, 3));
        let mut big = vec![b'h'; OUTPUT_LIMIT];
        big.extend(vec![b't'; OUTPUT_LIMIT]);
        let (v, dropped) = view(big, 5);
        assert_eq!(v.len(), OUTPUT_LIMIT);
        assert!(v.starts_with(b"hhh") && v.ends_with(b"ttt"));
        assert_eq!(dropped, 5 + OUTPUT_LIMIT as u64);
    }
}

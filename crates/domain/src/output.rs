//! A run's output as the API reports it: at most [`OUTPUT_LIMIT`] bytes, the head and
//! the tail of what the script printed, with `Dropped` counting the bytes cut from
//! between. The whole output is kept elsewhere (up to a cap) for operators who need it.
//!
//! [`HeadTail`] takes the output as it streams, so memory stays bounded however much a
//! script prints. Cuts are moved to UTF-8 character boundaries where the bytes are
//! UTF-8, so a kept view never ends in half a character; bytes that are not UTF-8 are
//! kept as they are.

use std::collections::VecDeque;

/// The most output the API returns for one run: 24 KB.
pub const OUTPUT_LIMIT: usize = 24 * 1024;

/// Keeps the first and the last bytes of a stream within a limit.
#[derive(Debug, Clone)]
pub struct HeadTail {
    limit: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
}

impl Default for HeadTail {
    fn default() -> Self {
        Self::new(OUTPUT_LIMIT)
    }
}

impl HeadTail {
    /// `limit` bytes at most are kept: half from the head, half from the tail.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            head: Vec::new(),
            tail: VecDeque::new(),
            total: 0,
        }
    }

    fn head_cap(&self) -> usize {
        self.limit / 2
    }

    fn tail_cap(&self) -> usize {
        self.limit - self.head_cap()
    }

    pub fn push(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let room = self.head_cap().saturating_sub(self.head.len());
        if room > 0 {
            let n = room.min(bytes.len());
            self.head.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
        }
        if bytes.len() >= self.tail_cap() {
            self.tail.clear();
            self.tail.extend(&bytes[bytes.len() - self.tail_cap()..]);
        } else {
            let overflow = (self.tail.len() + bytes.len()).saturating_sub(self.tail_cap());
            self.tail.drain(..overflow);
            self.tail.extend(bytes);
        }
    }

    /// Total bytes seen.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The kept view and the number of bytes dropped from between head and tail.
    pub fn finish(&self) -> (Vec<u8>, u64) {
        let tail: Vec<u8> = self.tail.iter().copied().collect();
        let kept = (self.head.len() + tail.len()) as u64;
        if kept == self.total {
            let mut all = self.head.clone();
            all.extend_from_slice(&tail);
            return (all, 0);
        }
        // Something was dropped: cut at character boundaries.
        let head_end = utf8_floor(&self.head, self.head.len());
        let tail_start = utf8_ceil(&tail, 0);
        let mut out = Vec::with_capacity(head_end + tail.len() - tail_start);
        out.extend_from_slice(&self.head[..head_end]);
        out.extend_from_slice(&tail[tail_start..]);
        let dropped = self.total - out.len() as u64;
        (out, dropped)
    }
}

/// The kept view of a whole output at once.
pub fn truncate(output: &[u8], limit: usize) -> (Vec<u8>, u64) {
    let mut ht = HeadTail::new(limit);
    ht.push(output);
    ht.finish()
}

fn is_continuation(b: u8) -> bool {
    b & 0b1100_0000 == 0b1000_0000
}

/// The largest cut `<= at` that does not split a UTF-8 character started within the
/// last three bytes before `at`.
fn utf8_floor(bytes: &[u8], at: usize) -> usize {
    // Walk back over continuation bytes to the lead byte of the last character.
    let mut i = at;
    let mut steps = 0;
    while i > 0 && steps < 4 && is_continuation(bytes[i - 1]) {
        i -= 1;
        steps += 1;
    }
    if i == 0 {
        return at;
    }
    let lead = bytes[i - 1];
    let width = match lead {
        0x00..=0x7F => 1,
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => return at,
    };
    if width == steps + 1 {
        at // the last character is whole
    } else if width > steps + 1 {
        i - 1 // cut before the incomplete character
    } else {
        at
    }
}

/// The smallest cut `>= at` that does not start inside a UTF-8 character (skips at most
/// three continuation bytes).
fn utf8_ceil(bytes: &[u8], at: usize) -> usize {
    let mut i = at;
    while i < bytes.len() && i - at < 3 && is_continuation(bytes[i]) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_output_is_kept_whole() {
        let (v, d) = truncate(b"hello\n", OUTPUT_LIMIT);
        assert_eq!(v, b"hello\n");
        assert_eq!(d, 0);
    }

    #[test]
    fn exactly_the_limit_drops_nothing() {
        let out = vec![b'x'; OUTPUT_LIMIT];
        let (v, d) = truncate(&out, OUTPUT_LIMIT);
        assert_eq!(v.len(), OUTPUT_LIMIT);
        assert_eq!(d, 0);
    }

    #[test]
    fn long_output_keeps_head_and_tail() {
        let mut out = Vec::new();
        out.extend(vec![b'a'; 20_000]);
        out.extend(vec![b'b'; 100_000]);
        out.extend(vec![b'c'; 20_000]);
        let (v, d) = truncate(&out, OUTPUT_LIMIT);
        assert_eq!(v.len(), OUTPUT_LIMIT);
        assert_eq!(d as usize, out.len() - OUTPUT_LIMIT);
        assert!(v.starts_with(&[b'a'; 12 * 1024]));
        assert!(v.ends_with(&[b'c'; 12 * 1024]));
    }

    #[test]
    fn cuts_do_not_split_characters() {
        let s = "é".repeat(40_000); // two bytes each
        let (v, d) = truncate(s.as_bytes(), 1001);
        assert!(std::str::from_utf8(&v).is_ok(), "view is valid UTF-8");
        assert_eq!(v.len() as u64 + d, s.len() as u64);
    }

    #[test]
    fn invalid_utf8_is_kept_as_bytes() {
        let out = vec![0xFFu8; 50_000];
        let (v, d) = truncate(&out, OUTPUT_LIMIT);
        assert_eq!(v.len(), OUTPUT_LIMIT);
        assert_eq!(d, 50_000 - OUTPUT_LIMIT as u64);
    }

    proptest! {
        #[test]
        fn streaming_equals_whole_and_accounts_every_byte(
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..700), 0..60),
            limit in 8usize..2000,
        ) {
            let whole: Vec<u8> = chunks.concat();
            let mut ht = HeadTail::new(limit);
            for c in &chunks { ht.push(c); }
            let (v, d) = ht.finish();
            prop_assert_eq!((v.clone(), d), truncate(&whole, limit));
            prop_assert_eq!(v.len() as u64 + d, whole.len() as u64);
            prop_assert!(v.len() <= limit);
            if whole.len() <= limit {
                prop_assert_eq!(&v, &whole);
            } else {
                // The view is a prefix of the output within the head's share followed by
                // a suffix within the tail's share. (Where the split is can be
                // ambiguous when a tail byte happens to repeat the next head byte, so
                // ask that some split fits, not a particular one.)
                let fits = (0..=v.len()).any(|k| {
                    k <= limit / 2
                        && v.len() - k <= limit - limit / 2
                        && whole.starts_with(&v[..k])
                        && whole.ends_with(&v[k..])
                });
                prop_assert!(fits, "the view is not head + tail");
            }
        }

        #[test]
        fn utf8_text_stays_utf8(s in "\\PC{0,3000}", limit in 16usize..600) {
            let (v, _) = truncate(s.as_bytes(), limit);
            prop_assert!(std::str::from_utf8(&v).is_ok());
        }
    }
}

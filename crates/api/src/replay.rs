//! The replay cache: the nonces of recent requests, per access key, in memory. (The
//! nonces of requests that change something are kept in the store as well: see
//! `auth.rs`.)

use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Remembers nonces per access key until they are older than the window; thread-safe.
///
/// Use a window of twice the allowed clock skew: a request stamped `t` passes the time
/// check from `t - skew` to `t + skew`, so a replay may come up to `2 * skew` after the
/// first use. Memory is bounded per key: a nonce is kept as a 128-bit digest (whatever
/// its length, itself capped at [`crate::signature::MAX_NONCE_LEN`]), entries older than the window go
/// as new ones come, and a key with more than `per_key` nonces in the window forgets
/// its own oldest — never another key's, so one busy (or hostile) tenant cannot make
/// the server forget another's nonces. Only keys whose signatures verified get here, so
/// the number of keys is the number of real keys. The server keeps the nonces of
/// requests that change something in its store as well (see `auth.rs`), so a forgotten
/// nonce can only replay a read.
pub struct NonceCache {
    window_ms: i64,
    per_key: usize,
    inner: Mutex<NonceInner>,
}

#[derive(Default)]
struct NonceInner {
    keys: HashMap<String, KeyNonces>,
    /// Inserts since the last sweep of idle keys.
    since_sweep: usize,
}

#[derive(Default)]
struct KeyNonces {
    /// Digest → when it was first seen.
    seen: HashMap<u128, i64>,
    /// The same entries, oldest first.
    order: VecDeque<(i64, u128)>,
}

impl KeyNonces {
    fn expire(&mut self, now_ms: i64, window_ms: i64) {
        while let Some(&(at, digest)) = self.order.front() {
            if now_ms - at < window_ms {
                break;
            }
            self.order.pop_front();
            if self.seen.get(&digest) == Some(&at) {
                self.seen.remove(&digest);
            }
        }
    }
}

/// A nonce's digest: the first 128 bits of its SHA-256.
pub fn nonce_digest(nonce: &str) -> u128 {
    let d = Sha256::digest(nonce.as_bytes());
    u128::from_be_bytes(d[..16].try_into().expect("16 bytes"))
}

impl NonceCache {
    /// The default cap on nonces remembered per key: at the vendor's 15-minute skew
    /// (a 30-minute window), 55 requests a second, sustained, from one key.
    pub const DEFAULT_PER_KEY: usize = 100_000;

    pub fn new(window_ms: i64) -> Self {
        Self::with_per_key(window_ms, Self::DEFAULT_PER_KEY)
    }

    pub fn with_per_key(window_ms: i64, per_key: usize) -> Self {
        NonceCache {
            window_ms,
            per_key: per_key.max(1),
            inner: Mutex::new(NonceInner::default()),
        }
    }

    /// Whether this nonce was seen for this key within the window (without
    /// remembering it).
    pub fn seen(&self, access_key_id: &str, nonce: &str, now_ms: i64) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .keys
            .get(access_key_id)
            .and_then(|k| k.seen.get(&nonce_digest(nonce)))
            .is_some_and(|&at| now_ms - at < self.window_ms)
    }

    /// `false` if this nonce was seen for this key within the window; otherwise
    /// remembers it and returns `true`.
    pub fn check_and_insert(&self, access_key_id: &str, nonce: &str, now_ms: i64) -> bool {
        let digest = nonce_digest(nonce);
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.since_sweep += 1;
        if inner.since_sweep >= 4096 {
            // Keys that went quiet keep their old entries until they are used again;
            // now and then every key is swept, and emptied keys are dropped.
            inner.since_sweep = 0;
            let window = self.window_ms;
            inner.keys.retain(|_, k| {
                k.expire(now_ms, window);
                !k.order.is_empty()
            });
        }
        let key = inner.keys.entry(access_key_id.to_string()).or_default();
        key.expire(now_ms, self.window_ms);
        if let Some(&at) = key.seen.get(&digest) {
            if now_ms - at < self.window_ms {
                return false;
            }
        }
        key.seen.insert(digest, now_ms);
        key.order.push_back((now_ms, digest));
        if key.order.len() > self.per_key {
            let (at, old) = key.order.pop_front().expect("longer than the cap");
            if key.seen.get(&old) == Some(&at) {
                key.seen.remove(&old);
            }
        }
        true
    }

    /// How many nonces are remembered.
    pub fn len(&self) -> usize {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.keys.values().map(|k| k.seen.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An upper estimate of the memory the remembered nonces take, in bytes.
    pub fn approx_bytes(&self) -> usize {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .keys
            .iter()
            .map(|(id, k)| id.len() + 128 + k.seen.capacity() * 40 + k.order.capacity() * 32)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::{DEFAULT_MAX_SKEW_MS, MAX_NONCE_LEN};

    /// 2026-11-23T08:00:00Z
    const NOW: i64 = 1_795_420_800_000;

    #[test]
    fn nonce_reuse_is_detected_per_key_within_the_window() {
        let cache = NonceCache::new(2 * DEFAULT_MAX_SKEW_MS);
        assert!(cache.check_and_insert("ak1", "n1", NOW));
        assert!(!cache.check_and_insert("ak1", "n1", NOW + 1));
        assert!(!cache.check_and_insert("ak1", "n1", NOW + 2 * DEFAULT_MAX_SKEW_MS - 1));
        assert!(
            cache.check_and_insert("ak2", "n1", NOW),
            "another key, another namespace"
        );
        assert!(cache.check_and_insert("ak1", "n2", NOW));
        // Once the window has passed, the nonce is forgotten (and may be used again).
        assert!(cache.check_and_insert("ak1", "n1", NOW + 2 * DEFAULT_MAX_SKEW_MS));
        assert!(!cache.check_and_insert("ak1", "n1", NOW + 2 * DEFAULT_MAX_SKEW_MS + 1));
    }

    #[test]
    fn nonce_cache_forgets_old_entries_as_it_goes() {
        let cache = NonceCache::new(1_000);
        for i in 0..10_000i64 {
            assert!(cache.check_and_insert("ak", &format!("n{i}"), NOW + i));
            assert!(cache.len() <= 1_000, "{} entries at {i}", cache.len());
        }
        let capped = NonceCache::with_per_key(1_000_000, 100);
        for i in 0..1_000i64 {
            assert!(capped.check_and_insert("ak", &format!("n{i}"), NOW));
        }
        assert_eq!(capped.len(), 100);
        assert!(!capped.check_and_insert("ak", "n999", NOW + 1));
    }

    #[test]
    fn one_key_cannot_make_the_cache_forget_another_keys_nonces() {
        let cache = NonceCache::with_per_key(1_000_000, 100);
        assert!(cache.check_and_insert("victim", "v1", NOW));
        for i in 0..10_000i64 {
            cache.check_and_insert("flooder", &format!("n{i}"), NOW + i);
        }
        assert!(!cache.check_and_insert("victim", "v1", NOW + 20_000));
        assert_eq!(cache.len(), 101, "the flooder keeps its own 100");
        assert!(cache.seen("victim", "v1", NOW + 20_000));
        assert!(!cache.seen("victim", "v2", NOW + 20_000));
    }

    #[test]
    fn nonce_cache_memory_is_bounded_whatever_the_nonces() {
        // 1 MB nonces are refused before the cache (MAX_NONCE_LEN); what the cache
        // keeps per nonce is a fixed-size digest.
        let cache = NonceCache::with_per_key(1_000_000, 10_000);
        let long = "x".repeat(MAX_NONCE_LEN - 8);
        for i in 0..10_000i64 {
            cache.check_and_insert("ak", &format!("{long}{i:08}"), NOW);
        }
        let bytes = cache.approx_bytes();
        assert!(bytes < 10_000 * 120, "{bytes} bytes for 10,000 nonces");
        // Idle keys are swept.
        for i in 0..5_000i64 {
            cache.check_and_insert(&format!("k{i}"), "n", NOW + 2_000_000 + i);
        }
        assert!(cache.len() <= 5_000, "{}", cache.len());
    }

    #[test]
    fn nonce_cache_is_shared_across_threads() {
        let cache = std::sync::Arc::new(NonceCache::new(60_000));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let cache = cache.clone();
                std::thread::spawn(move || {
                    (0..200)
                        .filter(|i| cache.check_and_insert("ak", &format!("n{i}"), NOW))
                        .count()
                })
            })
            .collect();
        let accepted: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(accepted, 200, "each nonce accepted exactly once");
    }
}

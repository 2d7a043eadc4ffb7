//! Replay protection: the nonces of requests that changed something.

use crate::{NonceRecord, Result};
use oca_domain::time::Millis;
use rusqlite::{params, Connection, TransactionBehavior};

/// How many expired nonces one call forgets at most (the rest go with later calls).
const EXPIRED_PER_CALL: i64 = 1_000;

pub(super) fn record(c: &mut Connection, nonces: &[NonceRecord], now: Millis) -> Result<Vec<bool>> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.prepare_cached(
        "DELETE FROM nonces WHERE (access_key_id, digest) IN \
         (SELECT access_key_id, digest FROM nonces WHERE expires <= ? LIMIT ?)",
    )?
    .execute(params![now, EXPIRED_PER_CALL])?;
    let mut fresh = Vec::with_capacity(nonces.len());
    {
        let mut lookup =
            tx.prepare_cached("SELECT expires FROM nonces WHERE access_key_id = ? AND digest = ?")?;
        let mut upsert = tx.prepare_cached(
            "INSERT INTO nonces (access_key_id, digest, expires) VALUES (?, ?, ?) \
             ON CONFLICT (access_key_id, digest) DO UPDATE SET expires = excluded.expires",
        )?;
        for n in nonces {
            let live = lookup
                .query_map(params![n.access_key_id, n.digest], |r| r.get::<_, i64>(0))?
                .next()
                .transpose()?
                .is_some_and(|expires| expires > now);
            if live {
                fresh.push(false);
                continue;
            }
            upsert.execute(params![n.access_key_id, n.digest, n.expires])?;
            fresh.push(true);
        }
    }
    tx.commit()?;
    Ok(fresh)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{disk_store, memory_store, on_both_stores};
    use crate::sqlite::SqliteStore;
    use crate::{NonceRecord, Store};

    fn nonce(key: &str, digest: u8, expires: i64) -> NonceRecord {
        NonceRecord {
            access_key_id: key.to_string(),
            digest: vec![digest; 16],
            expires,
        }
    }

    on_both_stores!(nonces_are_kept_until_they_expire);

    async fn nonces_are_kept_until_they_expire(s: &SqliteStore) {
        let fresh = s
            .record_nonces(
                vec![nonce("a", 1, 100), nonce("b", 1, 100), nonce("a", 2, 100)],
                10,
            )
            .await
            .unwrap();
        assert_eq!(fresh, vec![true, true, true]);
        // Used again by the same key: refused, in a later batch or the same one.
        let again = s
            .record_nonces(
                vec![nonce("a", 1, 200), nonce("a", 3, 150), nonce("a", 3, 150)],
                50,
            )
            .await
            .unwrap();
        assert_eq!(again, vec![false, true, false]);
        // Once expired it is forgotten (and may be used again: no request carrying it
        // could pass the time check any more).
        let later = s
            .record_nonces(vec![nonce("a", 1, 300)], 100)
            .await
            .unwrap();
        assert_eq!(later, vec![true]);
        let count: i64 = s
            .inner
            .writer
            .lock()
            .unwrap()
            .query_row("SELECT COUNT(*) FROM nonces", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            count, 2,
            "the expired ones went: a/1 (renewed) and a/3 stay"
        );
    }
}

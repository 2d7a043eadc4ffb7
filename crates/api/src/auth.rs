//! Who is calling: access keys, their secrets sealed at rest, and the signature check.
//!
//! Secrets must be readable by the server (both signature schemes are HMACs over the
//! secret), so they cannot be hashed; they are sealed with ChaCha20-Poly1305 under a
//! master key that lives outside the database (the server's `master.key`), so a copy
//! of the database alone reveals no secret.

use crate::error::ApiError;
use crate::signature::{self, NonceCache, RequestParts, SignatureError};
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use oca_domain::time::now_millis;
use oca_store::{AccessKeyRecord, Store};
use rand::Rng;
use std::sync::Arc;

/// Seals and opens access key secrets.
pub struct SecretBox {
    cipher: ChaCha20Poly1305,
}

impl SecretBox {
    pub fn new(master_key: &[u8; 32]) -> Self {
        SecretBox {
            cipher: ChaCha20Poly1305::new(Key::from_slice(master_key)),
        }
    }

    /// A fresh random master key.
    pub fn generate_key() -> [u8; 32] {
        rand::rng().random()
    }

    /// `nonce (12 bytes) || ciphertext`.
    pub fn seal(&self, secret: &str) -> Vec<u8> {
        let nonce: [u8; 12] = rand::rng().random();
        let mut out = nonce.to_vec();
        let ct = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), secret.as_bytes())
            .expect("sealing a short secret cannot fail");
        out.extend(ct);
        out
    }

    pub fn open(&self, sealed: &[u8]) -> Option<String> {
        if sealed.len() < 12 {
            return None;
        }
        let (nonce, ct) = sealed.split_at(12);
        let plain = self.cipher.decrypt(Nonce::from_slice(nonce), ct).ok()?;
        String::from_utf8(plain).ok()
    }
}

/// The caller a valid signature proves.
#[derive(Debug, Clone)]
pub struct Principal {
    pub access_key_id: String,
    pub account_id: String,
}

pub struct Authenticator {
    store: Arc<dyn Store>,
    secrets: SecretBox,
    nonces: NonceCache,
    max_skew_ms: i64,
    /// The second this authenticator started in. Nonces are remembered in memory only,
    /// so a request stamped earlier could be a replay of one the previous process
    /// served: it is refused. (A client whose clock is behind the server's by `d` is
    /// refused for `d` after a restart; a replay is possible only of a request served
    /// in the same second as the restart.)
    started_ms: i64,
}

impl Authenticator {
    pub fn new(store: Arc<dyn Store>, secrets: SecretBox, max_skew_ms: i64) -> Self {
        Authenticator {
            store,
            secrets,
            // A nonce must be remembered as long as a request carrying it could still
            // pass the time check: the skew on either side.
            nonces: NonceCache::new(2 * max_skew_ms),
            max_skew_ms,
            started_ms: now_millis() / 1000 * 1000,
        }
    }

    pub fn secrets(&self) -> &SecretBox {
        &self.secrets
    }

    /// Creates an access key for `account_id`; returns the record and the secret, which
    /// is shown once and kept only sealed.
    pub async fn create_key(
        &self,
        account_id: &str,
    ) -> Result<(AccessKeyRecord, String), ApiError> {
        let secret = oca_domain::ids::new_secret(30);
        let record = AccessKeyRecord {
            access_key_id: oca_domain::ids::new_access_key_id(),
            secret_sealed: self.secrets.seal(&secret),
            account_id: account_id.to_string(),
            enabled: true,
            created: now_millis(),
        };
        self.store.insert_access_key(&record).await?;
        Ok((record, secret))
    }

    /// Checks the request's signature, timestamp and nonce.
    pub async fn authenticate(
        &self,
        parts: &RequestParts<'_>,
        params: &[(String, String)],
    ) -> Result<Principal, ApiError> {
        let claim = signature::claim(parts, params)?;
        let key = self
            .store
            .get_access_key(&claim.access_key_id)
            .await?
            .ok_or(SignatureError::InvalidAccessKeyIdNotFound)?;
        let secret = self.secrets.open(&key.secret_sealed).ok_or_else(|| {
            ApiError::Internal(format!(
                "the secret of {} cannot be opened with this server's master key",
                key.access_key_id
            ))
        })?;
        let now = now_millis();
        signature::verify(parts, params, &claim, &secret, now, self.max_skew_ms)?;
        // Read on every request, never cached: disabling a key or its account takes
        // effect on the next call. A key whose account is missing or disabled is
        // refused like a disabled key. Checked only after the signature, so that
        // nobody without the secret learns the key's state.
        if !key.enabled {
            return Err(SignatureError::InvalidAccessKeyIdInactive.into());
        }
        let account = self.store.get_account(&key.account_id).await?;
        if !account.is_some_and(|a| a.enabled) {
            return Err(SignatureError::InvalidAccessKeyIdInactive.into());
        }
        if claim.timestamp_ms < self.started_ms {
            return Err(SignatureError::SignedBeforeStart.into());
        }
        if !self
            .nonces
            .check_and_insert(&claim.access_key_id, &claim.nonce, now)
        {
            return Err(SignatureError::SignatureNonceUsed.into());
        }
        Ok(Principal {
            access_key_id: key.access_key_id,
            account_id: key.account_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_their_key() {
        let a = SecretBox::new(&SecretBox::generate_key());
        let b = SecretBox::new(&SecretBox::generate_key());
        let sealed = a.seal("s3cret");
        assert!(!sealed.windows(6).any(|w| w == b"s3cret"));
        assert_eq!(a.open(&sealed).as_deref(), Some("s3cret"));
        assert_eq!(b.open(&sealed), None);
        assert_ne!(a.seal("s3cret"), sealed, "a fresh nonce every time");
        assert_eq!(a.open(b"short"), None);
    }
}

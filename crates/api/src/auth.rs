//! Who is calling: access keys, their secrets sealed at rest, and the signature check.
//!
//! Secrets must be readable by the server (both signature schemes are HMACs over the
//! secret), so they cannot be hashed; they are sealed with ChaCha20-Poly1305 under a
//! master key that lives outside the database (the server's `master.key`), so a copy
//! of the database alone reveals no secret.

use crate::error::ApiError;
use crate::replay::{self, NonceCache};
use crate::router::Endpoint;
use crate::signature::{self, Claim, RequestParts, SignatureError};
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use oca_domain::time::now_millis;
use oca_store::{AccessKeyRecord, NonceRecord, Store};
use rand::Rng;
use std::sync::{Arc, OnceLock};
use tokio::sync::{mpsc, oneshot};

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

/// An access key a request names, with its secret opened.
pub struct SigningKey {
    record: AccessKeyRecord,
    secret: String,
}

impl SigningKey {
    /// The account the key acts for.
    pub fn account_id(&self) -> &str {
        &self.record.account_id
    }
}

pub struct Authenticator {
    store: Arc<dyn Store>,
    secrets: SecretBox,
    nonces: NonceCache,
    /// The nonces of requests that change something, kept in the store.
    durable: OnceLock<mpsc::UnboundedSender<DurableNonce>>,
    max_skew_ms: i64,
    /// The second this authenticator started in. Read-only requests' nonces are
    /// remembered in memory only, so one stamped earlier could be a replay of one the
    /// previous process served: it is refused. (A client whose clock is behind the
    /// server's by `d` is refused reads for `d` after a restart.) Requests that change
    /// something need no such rule: their nonces are in the store.
    started_ms: i64,
}

/// A nonce to keep in the store, and where to say whether it was new.
struct DurableNonce {
    record: NonceRecord,
    reply: oneshot::Sender<Result<bool, String>>,
}

impl Authenticator {
    pub fn new(store: Arc<dyn Store>, secrets: SecretBox, max_skew_ms: i64) -> Self {
        Self::with_nonces_per_key(store, secrets, max_skew_ms, NonceCache::DEFAULT_PER_KEY)
    }

    /// [`Self::new`] with another cap on the nonces remembered in memory per key.
    pub fn with_nonces_per_key(
        store: Arc<dyn Store>,
        secrets: SecretBox,
        max_skew_ms: i64,
        per_key: usize,
    ) -> Self {
        Authenticator {
            store,
            secrets,
            // A nonce must be remembered as long as a request carrying it could still
            // pass the time check: the skew on either side.
            nonces: NonceCache::with_per_key(2 * max_skew_ms, per_key),
            durable: OnceLock::new(),
            max_skew_ms,
            started_ms: now_millis() / 1000 * 1000,
        }
    }

    pub fn secrets(&self) -> &SecretBox {
        &self.secrets
    }

    /// The in-memory replay cache (for figures: its size and memory).
    pub fn nonce_cache(&self) -> &NonceCache {
        &self.nonces
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

    /// Checks the request's signature, timestamp and nonce: [`Self::key_of`],
    /// [`Self::verify`], [`Self::admit`] in one.
    pub async fn authenticate(
        &self,
        parts: &RequestParts<'_>,
        params: &[(String, String)],
        endpoint: Endpoint,
    ) -> Result<Principal, ApiError> {
        let claim = signature::claim(parts, params)?;
        let key = self.key_of(&claim).await?;
        self.verify(parts, params, &claim, &key)?;
        self.admit(key, &claim, endpoint).await
    }

    /// The key the request claims to be signed with.
    pub async fn key_of(&self, claim: &Claim) -> Result<SigningKey, ApiError> {
        let record = self
            .store
            .get_access_key(&claim.access_key_id)
            .await?
            .ok_or(SignatureError::InvalidAccessKeyIdNotFound)?;
        let secret = self.secrets.open(&record.secret_sealed).ok_or_else(|| {
            ApiError::Internal(format!(
                "the secret of {} cannot be opened with this server's master key",
                record.access_key_id
            ))
        })?;
        Ok(SigningKey { record, secret })
    }

    /// The signature and the time check: CPU only (linear in the request's size).
    pub fn verify(
        &self,
        parts: &RequestParts<'_>,
        params: &[(String, String)],
        claim: &Claim,
        key: &SigningKey,
    ) -> Result<(), ApiError> {
        signature::verify(
            parts,
            params,
            claim,
            &key.secret,
            now_millis(),
            self.max_skew_ms,
        )?;
        Ok(())
    }

    /// After a verified signature: the key's and its account's state, then the nonce,
    /// which is remembered (in the store too, when the action changes something).
    pub async fn admit(
        &self,
        key: SigningKey,
        claim: &Claim,
        endpoint: Endpoint,
    ) -> Result<Principal, ApiError> {
        let key = key.record;
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
        let now = now_millis();
        if endpoint.is_read_only() {
            if claim.timestamp_ms < self.started_ms {
                return Err(SignatureError::SignedBeforeStart.into());
            }
        } else {
            // The store is the authority for requests that change something: a
            // request captured and sent again after a restart (or to another server
            // on the same database) finds its nonce there.
            if self.nonces.seen(&claim.access_key_id, &claim.nonce, now) {
                return Err(SignatureError::SignatureNonceUsed.into());
            }
            let record = NonceRecord {
                access_key_id: claim.access_key_id.clone(),
                digest: replay::nonce_digest(&claim.nonce).to_be_bytes().to_vec(),
                // As long as the request could pass the time check.
                expires: claim.timestamp_ms.max(now) + self.max_skew_ms + 1000,
            };
            if !self.record_durably(record).await? {
                return Err(SignatureError::SignatureNonceUsed.into());
            }
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

    /// Keeps a nonce in the store; `false` if it was there. Nonces of concurrent
    /// requests share one transaction (group commit), so a burst of changes costs a
    /// few syncs, not one each.
    async fn record_durably(&self, record: NonceRecord) -> Result<bool, ApiError> {
        let tx = self.durable.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(nonce_writer(self.store.clone(), rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        tx.send(DurableNonce { record, reply })
            .map_err(|_| ApiError::Internal("the nonce writer is gone".into()))?;
        answer
            .await
            .map_err(|_| ApiError::Internal("the nonce writer is gone".into()))?
            .map_err(ApiError::Internal)
    }
}

/// The most nonces committed in one transaction.
const NONCE_BATCH: usize = 512;

/// Commits whatever nonces queued while the previous commit synced.
async fn nonce_writer(store: Arc<dyn Store>, mut rx: mpsc::UnboundedReceiver<DurableNonce>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < NONCE_BATCH {
            match rx.try_recv() {
                Ok(n) => batch.push(n),
                Err(_) => break,
            }
        }
        let (records, replies): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|n| (n.record, n.reply)).unzip();
        match store.record_nonces(records, now_millis()).await {
            Ok(fresh) => {
                for (reply, new) in replies.into_iter().zip(fresh) {
                    let _ = reply.send(Ok(new));
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.to_string()));
                }
            }
        }
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

//! API keys: `mk_` followed by 32 random bytes in base64url. A tenant's configuration holds only
//! the SHA-256 of each key; a presented key is hashed and compared with every configured digest
//! in constant time (no early exit, no lookup keyed by secret-derived data).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use base64::Engine as _;
use marina_core::domain::Owner;
use marina_core::settings::ApiKeySettings;
use rand::Rng as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::{API_KEY_ISSUER, AuthError, Principal};

/// Every key starts with this, so a key is recognisable (in a leak scan, in a header).
pub const PREFIX: &str = "mk_";

/// A fresh key, to be shown once.
pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The SHA-256 of the whole key string, lowercase hex: what the configuration stores.
pub fn digest(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A key's public id: the first 16 hex digits of its digest (what the admin API lists and
/// revokes; it reveals nothing the stored digest does not).
pub fn key_id(sha256_hex: &str) -> String {
    sha256_hex.trim().to_ascii_lowercase().chars().take(16).collect()
}

#[derive(Debug)]
struct Entry {
    digest: [u8; 32],
    id: String,
    subject: String,
    roles: Vec<String>,
    expires: Option<SystemTime>,
    /// When this node last accepted it (Unix ms; 0: not since the tenant was built here).
    used_ms: AtomicU64,
}

/// A tenant's API keys.
#[derive(Debug, Default)]
pub struct KeyRing {
    entries: Vec<Entry>,
}

impl KeyRing {
    /// From the tenant's settings.
    pub fn new(keys: &[ApiKeySettings]) -> Result<Self, String> {
        let entries = keys
            .iter()
            .map(|k| {
                let mut digest = [0u8; 32];
                hex::decode_to_slice(k.sha256.trim(), &mut digest)
                    .map_err(|_| format!("api key of {:?}: sha256 must be 64 hex digits", k.subject))?;
                Ok(Entry {
                    digest,
                    id: key_id(&k.sha256),
                    subject: k.subject.clone(),
                    roles: k.roles.clone(),
                    expires: k.expires,
                    used_ms: AtomicU64::new(0),
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Self { entries })
    }

    /// The principal of `key`, if it is one of ours and has not expired at `now`.
    pub fn verify(&self, key: &str, now: SystemTime) -> Result<Principal, AuthError> {
        let presented: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found = None;
        for e in &self.entries {
            if bool::from(e.digest.ct_eq(&presented)) {
                found = Some(e);
            }
        }
        let Some(e) = found else {
            return Err(AuthError::InvalidToken(
                "unknown_key",
                "the credential is not valid",
            ));
        };
        if e.expires.is_some_and(|t| t <= now) {
            return Err(AuthError::InvalidToken("expired", "the credential has expired"));
        }
        let ms = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        e.used_ms.store(ms, Ordering::Relaxed);
        Ok(Principal {
            owner: Owner {
                issuer: API_KEY_ISSUER.into(),
                subject: e.subject.clone(),
            },
            roles: e.roles.clone(),
            scopes: Vec::new(),
            expires_at: e.expires,
        })
    }
}

impl KeyRing {
    /// When this node last accepted each key it has accepted: (key id, Unix ms).
    pub fn usage(&self) -> Vec<(String, u64)> {
        self.entries
            .iter()
            .filter_map(|e| {
                let ms = e.used_ms.load(Ordering::Relaxed);
                (ms > 0).then(|| (e.id.clone(), ms))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_prefixed_and_hash_to_64_hex_digits() {
        let (a, b) = (generate_key(), generate_key());
        assert_ne!(a, b);
        assert!(a.starts_with(PREFIX) && a.len() == PREFIX.len() + 43, "{a}");
        let d = digest(&a);
        assert_eq!(d.len(), 64);
        assert!(
            d.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        // A known vector: SHA-256("abc").
        assert_eq!(
            digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

//! Validated access tokens, remembered until they expire. Keyed by the token itself: a lookup
//! hashes it with a fast seeded hash and compares it whole — a SHA-256 of a 900-byte JWT per
//! request cost more than the rest of authentication. A plain map under a read-mostly lock, not
//! moka: a hit is a read lock and one probe, where moka records every read for its eviction
//! policy and runs housekeeping on the request path (measured: ~0.3 µs per call on the
//! security benchmark). Eviction needs no policy here: entries leave when their token
//! expires, and at the cap the expired ones are swept, then — under a flood of valid tokens —
//! everything is dropped; a forgotten token is only verified again.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use crate::Principal;

#[derive(Debug)]
pub(crate) struct TokenCache {
    cap: usize,
    map: RwLock<HashMap<Box<str>, Arc<Principal>, foldhash::fast::RandomState>>,
}

impl TokenCache {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap,
            map: RwLock::default(),
        }
    }

    /// The principal of `token` if it was validated and has not expired since.
    pub(crate) fn get(&self, token: &str) -> Option<Arc<Principal>> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        let p = map.get(token)?;
        p.expires_at
            .is_some_and(|t| t > SystemTime::now())
            .then(|| p.clone())
    }

    /// Remember a validated token (only one with an expiry: the map is swept by it).
    pub(crate) fn insert(&self, token: &str, p: Arc<Principal>) {
        if p.expires_at.is_none() {
            return;
        }
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if map.len() >= self.cap {
            let now = SystemTime::now();
            map.retain(|_, p| p.expires_at.is_some_and(|t| t > now));
            if map.len() >= self.cap {
                map.clear();
            }
        }
        map.insert(token.into(), p);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.read().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use marina_core::domain::Owner;
    use std::time::Duration;

    fn principal(expires_in: i64) -> Arc<Principal> {
        let now = SystemTime::now();
        let at = if expires_in >= 0 {
            now + Duration::from_secs(expires_in as u64)
        } else {
            now - Duration::from_secs((-expires_in) as u64)
        };
        Arc::new(Principal {
            owner: Owner {
                issuer: "https://idp".into(),
                subject: "alice".into(),
            },
            roles: vec![],
            scopes: vec![],
            expires_at: Some(at),
        })
    }

    #[test]
    fn a_token_is_served_until_it_expires_and_the_cap_holds() {
        let c = TokenCache::new(3);
        c.insert("live", principal(60));
        c.insert("dead", principal(-1));
        assert!(c.get("live").is_some());
        assert!(c.get("dead").is_none(), "an expired token is not served");
        assert!(c.get("other").is_none());
        c.insert("b", principal(60));
        // At the cap the expired entry is swept first; the live ones stay.
        c.insert("c", principal(60));
        assert_eq!(c.len(), 3);
        assert!(c.get("live").is_some() && c.get("c").is_some());
        // Full of live tokens: dropped, then the new one kept.
        c.insert("d", principal(60));
        assert_eq!(c.len(), 1);
        assert!(c.get("d").is_some());
    }
}

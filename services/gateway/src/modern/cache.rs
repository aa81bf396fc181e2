//! What a node keeps of a principal's stateless requests for a little while, per tenant
//! snapshot: a stateless request has no session to keep things in, and fetching them afresh on
//! every request would cost each call what a session pays once.
//!
//! - **Tool indexes** ([`IndexCache`], for [`INDEX_TTL`]). A session lists its tools once and
//!   keeps the index for its life; listing every source on every stateless call would double an
//!   upstream's traffic (a `tools/list` before each `tools/call`). A changed tenant is indexed
//!   afresh, and an upstream's new tool is callable statelessly within the TTL (2026-07-28
//!   clients cache the list itself for its `ttlMs` anyway). An index built while a source could
//!   not list is not kept, so a passing failure does not hide its tools; and an upstream's list
//!   change that this node's listener watchers hear (`watch.rs`) drops its tenant's indexes at
//!   once.
//! - **A principal's upstream sessions** ([`UpstreamSessions`], for [`SESSIONS_TTL`]): the
//!   sessions a principal's stateless requests share with sessionful upstreams live in the store
//!   (any node continues them); this node keeps the ones it read or wrote, written through, so a
//!   translated call pays no store round trip. One another node replaced is found out by the
//!   upstream's "no such session", and then read again from the store (`context.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use marina_core::tenant::Tenant;
use marina_core::tools::{ToolIndex, UpstreamSession};

/// How long a principal's index is used before its sources are listed again.
pub const INDEX_TTL: Duration = Duration::from_secs(10);
/// How long a principal's upstream sessions are used before they are read from the store again.
pub const SESSIONS_TTL: Duration = Duration::from_secs(60);
/// Most entries a cache keeps (beyond: expired ones go, then all).
const MAX_ENTRIES: usize = 10_000;

/// Recent tool indexes, by `<tenant>:<principal digest>`.
pub type IndexCache = SnapshotCache<Arc<ToolIndex>>;
/// Principals' upstream sessions (by upstream name), by `<tenant>:<principal digest>`.
pub type UpstreamSessions = SnapshotCache<HashMap<String, UpstreamSession>>;

struct Entry<V> {
    tenant: Weak<Tenant>,
    kept: Instant,
    value: V,
}

/// Values by `<tenant>:<principal digest>`, each valid for the tenant snapshot it was made from
/// and for `ttl`; at most [`MAX_ENTRIES`].
pub struct SnapshotCache<V> {
    ttl: Duration,
    entries: Mutex<HashMap<String, Entry<V>>>,
}

impl Default for IndexCache {
    fn default() -> Self {
        Self::new(INDEX_TTL)
    }
}

impl Default for UpstreamSessions {
    fn default() -> Self {
        Self::new(SESSIONS_TTL)
    }
}

impl<V> std::fmt::Debug for SnapshotCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotCache")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl<V: Clone> SnapshotCache<V> {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::default(),
        }
    }

    /// The value of `key` made from tenant snapshot `t` less than the TTL ago.
    pub fn get(&self, t: &Arc<Tenant>, key: &str) -> Option<V> {
        let entries = self.lock();
        let e = entries.get(key)?;
        (e.tenant.ptr_eq(&Arc::downgrade(t)) && e.kept.elapsed() < self.ttl).then(|| e.value.clone())
    }

    /// Keep `value` of `key`, made from `t`.
    pub fn put(&self, t: &Arc<Tenant>, key: &str, value: V) {
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(key) {
            let ttl = self.ttl;
            entries.retain(|_, e| e.kept.elapsed() < ttl && e.tenant.strong_count() > 0);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(
            key.to_owned(),
            Entry {
                tenant: Arc::downgrade(t),
                kept: Instant::now(),
                value,
            },
        );
    }

    /// Forget what is kept of `tenant` (an upstream announced a new list).
    pub fn forget_tenant(&self, tenant: &str) {
        let prefix = format!("{tenant}:");
        self.lock().retain(|k, _| !k.starts_with(&prefix));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry<V>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use marina_core::tools::ToolDef;
    use serde_json::json;

    fn tenant() -> Arc<Tenant> {
        Arc::new(Tenant {
            id: "acme".into(),
            settings: Default::default(),
            providers: Default::default(),
            authorizer: None,
            schemas: Default::default(),
        })
    }

    fn index(name: &str) -> Arc<ToolIndex> {
        let def = ToolDef {
            name: name.into(),
            definition: json!({"name": name}),
        };
        Arc::new(ToolIndex::new(vec![vec![def]]))
    }

    #[test]
    fn an_index_is_reused_for_its_principal_and_tenant_snapshot_only() {
        let cache = IndexCache::default();
        let (t, changed) = (tenant(), tenant());
        cache.put(&t, "acme:p1", index("echo"));
        assert!(cache.get(&t, "acme:p1").unwrap().get("echo").is_some());
        assert!(cache.get(&t, "acme:p2").is_none(), "another principal");
        assert!(
            cache.get(&changed, "acme:p1").is_none(),
            "another snapshot of the tenant"
        );
        cache.put(&changed, "acme:p1", index("add"));
        assert!(cache.get(&changed, "acme:p1").unwrap().get("add").is_some());
        assert!(cache.get(&t, "acme:p1").is_none(), "replaced");
        cache.put(&changed, "acme-2:p1", index("add"));
        cache.forget_tenant("acme");
        assert!(cache.get(&changed, "acme:p1").is_none(), "forgotten");
        assert!(
            cache.get(&changed, "acme-2:p1").is_some(),
            "another tenant's kept"
        );
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = IndexCache::default();
        let t = tenant();
        for i in 0..MAX_ENTRIES + 5 {
            cache.put(&t, &format!("acme:p{i}"), index("echo"));
        }
        assert!(cache.lock().len() <= MAX_ENTRIES);
    }
}

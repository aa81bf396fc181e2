//! The tool index of a principal's stateless requests, kept for a few seconds. A session lists
//! its tools once and keeps the index for its life; a stateless request has no session, and
//! listing every source on every call would double an upstream's traffic (a `tools/list` before
//! each `tools/call`). So each node keeps the index of each (tenant, principal) for
//! [`INDEX_TTL`], for the tenant snapshot it was built from: a changed tenant is indexed afresh,
//! and an upstream's new tool is callable statelessly within the TTL (2026-07-28 clients cache
//! the list itself for its `ttlMs` anyway). An index built while a source could not list is not
//! kept, so a passing failure does not hide its tools; and an upstream's list change that this
//! node's listener watchers hear (`watch.rs`) drops its tenant's indexes at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use marina_core::tenant::Tenant;
use marina_core::tools::ToolIndex;

/// How long a principal's index is used before its sources are listed again.
pub const INDEX_TTL: Duration = Duration::from_secs(10);
/// Most indexes a node keeps (beyond: expired ones go, then all).
const MAX_ENTRIES: usize = 10_000;

struct Entry {
    tenant: Weak<Tenant>,
    built: Instant,
    index: Arc<ToolIndex>,
}

/// Recent tool indexes, by `<tenant>:<principal digest>`.
#[derive(Default)]
pub struct IndexCache {
    entries: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for IndexCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexCache").finish_non_exhaustive()
    }
}

impl IndexCache {
    /// The index of `key` built from tenant snapshot `t` less than [`INDEX_TTL`] ago.
    pub fn get(&self, t: &Arc<Tenant>, key: &str) -> Option<Arc<ToolIndex>> {
        let entries = self.lock();
        let e = entries.get(key)?;
        (e.tenant.ptr_eq(&Arc::downgrade(t)) && e.built.elapsed() < INDEX_TTL).then(|| e.index.clone())
    }

    /// Keep `index` of `key`, built from `t`.
    pub fn put(&self, t: &Arc<Tenant>, key: &str, index: Arc<ToolIndex>) {
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(key) {
            entries.retain(|_, e| e.built.elapsed() < INDEX_TTL && e.tenant.strong_count() > 0);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(
            key.to_owned(),
            Entry {
                tenant: Arc::downgrade(t),
                built: Instant::now(),
                index,
            },
        );
    }

    /// Forget the indexes of `tenant` (an upstream announced a new list).
    pub fn forget_tenant(&self, tenant: &str) {
        let prefix = format!("{tenant}:");
        self.lock().retain(|k, _| !k.starts_with(&prefix));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
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

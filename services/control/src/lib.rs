//! The control plane's storage: tenant documents, versioned and shared by every node of the
//! cluster, with a change signal so each node applies a write within a second.
//!
//! A document is the tenant section of the configuration file, as JSON with exactly the file's
//! key names: one document, whether it arrives by file or by the admin API. Every write gets
//! the next value of one cluster-wide counter as its version (the `ETag` of the admin API), so a
//! node that has seen version `v` knows whether anything changed with one read.

pub mod audit;
mod memory;
mod redis_docs;
pub mod upstreams;
pub mod usage;

use std::time::Duration;

use async_trait::async_trait;
use marina_core::store::StoreError;
use serde_json::Value;

pub use audit::{AuditEntry, AuditLog, MemoryAudit, RedisAudit};
pub use memory::MemoryDocs;
pub use redis_docs::RedisDocs;
pub use upstreams::{MemoryReports, RedisReports, Report, UpstreamReports};
pub use usage::{KeyUsage, MemoryUsage, RedisUsage};

/// One stored tenant document.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTenant {
    /// Tenant id.
    pub id: String,
    /// Its version: the cluster-wide configuration version of its last write.
    pub version: u64,
    /// The document (the configuration file's tenant section, as JSON).
    pub doc: Value,
    /// When it was last written (Unix milliseconds).
    pub updated_ms: u64,
}

/// What a write expects to find (the admin API's `If-Match` / `If-None-Match`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Whatever is there.
    Any,
    /// Nothing: create only.
    Absent,
    /// Exactly this version.
    Version(u64),
}

/// Why a write was not stored.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The document is not at the expected version (`current`: its version, 0 when absent).
    #[error("the tenant is at version {current}, not the one expected")]
    Conflict {
        /// Its version now (0: it does not exist).
        current: u64,
    },
    /// The store holds its maximum number of tenants.
    #[error("the store holds its maximum number of tenants")]
    Full,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Versioned tenant documents shared by the cluster.
#[async_trait]
pub trait TenantDocs: Send + Sync + std::fmt::Debug {
    /// The configuration version: changes with every write (0: nothing was ever written).
    async fn version(&self) -> Result<u64, StoreError>;
    /// Every stored tenant, by id.
    async fn list(&self) -> Result<Vec<StoredTenant>, StoreError>;
    /// One tenant.
    async fn get(&self, id: &str) -> Result<Option<StoredTenant>, StoreError>;
    /// Create or replace tenant `id`; its new version.
    async fn put(&self, id: &str, doc: &Value, expect: Expect) -> Result<u64, WriteError>;
    /// Delete tenant `id`; `Ok(false)` when there was none.
    async fn delete(&self, id: &str, expect: Expect) -> Result<bool, WriteError>;
    /// Wait until a write may have happened (a change message), or at most `max`. Returning
    /// says nothing for sure: the caller reads [`Self::version`].
    async fn changed(&self, max: Duration);
}

/// Unix milliseconds now.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The behaviour every implementation shares (run by the unit tests on memory and by the
/// integration tests on a real Redis).
#[doc(hidden)]
pub mod suite {
    use super::*;
    use serde_json::json;

    /// Needs an empty store holding at most 2 tenants.
    pub async fn versions_conflicts_and_caps(docs: &dyn TenantDocs) {
        assert_eq!(docs.version().await.unwrap(), 0);
        assert!(docs.get("acme").await.unwrap().is_none());
        let v1 = docs.put("acme", &json!({"a": 1}), Expect::Absent).await.unwrap();
        assert!(v1 > 0);
        assert_eq!(docs.version().await.unwrap(), v1);
        let err = docs
            .put("acme", &json!({"a": 2}), Expect::Absent)
            .await
            .unwrap_err();
        assert!(matches!(err, WriteError::Conflict { current } if current == v1));
        let err = docs
            .put("acme", &json!({"a": 2}), Expect::Version(v1 + 100))
            .await
            .unwrap_err();
        assert!(matches!(err, WriteError::Conflict { current } if current == v1));
        let v2 = docs
            .put("acme", &json!({"a": 2}), Expect::Version(v1))
            .await
            .unwrap();
        assert!(v2 > v1);
        let got = docs.get("acme").await.unwrap().unwrap();
        assert_eq!((got.version, got.doc), (v2, json!({"a": 2})));
        let v3 = docs.put("beta", &json!({}), Expect::Any).await.unwrap();
        // The cap (2 in the tests' stores) refuses a third tenant, not an update.
        assert!(matches!(
            docs.put("gamma", &json!({}), Expect::Any).await,
            Err(WriteError::Full)
        ));
        docs.put("beta", &json!({"b": 1}), Expect::Version(v3))
            .await
            .unwrap();
        let mut ids: Vec<String> = docs.list().await.unwrap().into_iter().map(|t| t.id).collect();
        ids.sort();
        assert_eq!(ids, ["acme", "beta"]);
        assert!(matches!(
            docs.delete("acme", Expect::Version(v1)).await,
            Err(WriteError::Conflict { .. })
        ));
        let before = docs.version().await.unwrap();
        assert!(docs.delete("acme", Expect::Version(v2)).await.unwrap());
        assert!(docs.version().await.unwrap() > before, "a delete is a change");
        assert!(!docs.delete("acme", Expect::Any).await.unwrap());
        assert!(docs.get("acme").await.unwrap().is_none());
        assert_eq!(docs.list().await.unwrap().len(), 1);
    }
}

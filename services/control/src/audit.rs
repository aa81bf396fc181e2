//! The admin audit log: who changed what and when. Each entry is also a log event
//! (`marina::audit`, `event = "admin_change"`); the store keeps them for the admin API with a cap
//! and a retention, in Redis as one stream (`<p>:{cp}:audit`, `MAXLEN ~ cap`, `MINID ~ now -
//! retention` on every append) or in memory.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use marina_core::store::{RedisStore, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::now_ms;

/// One administrative change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// When (Unix ms).
    pub at_ms: u64,
    /// Who (the administrator's subject).
    pub actor: String,
    /// What (`tenant.create`, `tenant.patch`, `api_key.revoke`, …).
    pub action: String,
    /// The tenant concerned.
    pub tenant: String,
    /// What in it, when more precise than the tenant (a key id, a session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The change (a merge patch, the new version); never a secret.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub change: Value,
}

/// Where audit entries are kept.
#[async_trait]
pub trait AuditLog: Send + Sync + std::fmt::Debug {
    /// Keep `entry` (and log it).
    async fn append(&self, entry: AuditEntry) -> Result<(), StoreError>;
    /// Entries since `since_ms` (inclusive), oldest first, of `tenant` if given, at most `limit`.
    async fn list(
        &self,
        tenant: Option<&str>,
        since_ms: u64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError>;
}

fn log(e: &AuditEntry) {
    tracing::info!(
        target: "marina::audit",
        event = "admin_change",
        action = %e.action,
        actor = %e.actor,
        tenant = %e.tenant,
        target_id = e.target.as_deref().unwrap_or(""),
        change = %e.change,
        "admin change"
    );
}

/// Audit entries in this process.
#[derive(Debug)]
pub struct MemoryAudit {
    max: usize,
    retention: Duration,
    entries: Mutex<VecDeque<AuditEntry>>,
}

impl MemoryAudit {
    /// Keeping at most `max` entries, none older than `retention`.
    pub fn new(max: usize, retention: Duration) -> Self {
        Self {
            max,
            retention,
            entries: Mutex::default(),
        }
    }
}

#[async_trait]
impl AuditLog for MemoryAudit {
    async fn append(&self, entry: AuditEntry) -> Result<(), StoreError> {
        log(&entry);
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let oldest = now_ms().saturating_sub(self.retention.as_millis() as u64);
        while e.front().is_some_and(|f| f.at_ms < oldest) || e.len() >= self.max {
            e.pop_front();
        }
        e.push_back(entry);
        Ok(())
    }

    async fn list(
        &self,
        tenant: Option<&str>,
        since_ms: u64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        Ok(e.iter()
            .filter(|x| x.at_ms >= since_ms && tenant.is_none_or(|t| x.tenant == t))
            .take(limit)
            .cloned()
            .collect())
    }
}

/// Audit entries in the cluster's Redis.
#[derive(Debug)]
pub struct RedisAudit {
    store: Arc<RedisStore>,
    max: usize,
    retention: Duration,
}

impl RedisAudit {
    /// On `store`'s Redis, keeping about `max` entries, none older than about `retention`.
    pub fn new(store: Arc<RedisStore>, max: usize, retention: Duration) -> Self {
        Self {
            store,
            max,
            retention,
        }
    }

    fn key(&self) -> String {
        format!("{}:{{cp}}:audit", self.store.prefix())
    }
}

/// Entries read per round trip while scanning for a tenant's.
const SCAN_BATCH: usize = 500;

#[async_trait]
impl AuditLog for RedisAudit {
    async fn append(&self, entry: AuditEntry) -> Result<(), StoreError> {
        log(&entry);
        let oldest = now_ms().saturating_sub(self.retention.as_millis() as u64);
        let data = serde_json::to_string(&entry).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut pipe = redis::pipe();
        pipe.cmd("XADD")
            .arg(self.key())
            .arg("MAXLEN")
            .arg("~")
            .arg(self.max)
            .arg("*")
            .arg("d")
            .arg(data)
            .ignore();
        pipe.cmd("XTRIM")
            .arg(self.key())
            .arg("MINID")
            .arg("~")
            .arg(oldest)
            .ignore();
        self.store.pipeline::<()>(pipe).await
    }

    async fn list(
        &self,
        tenant: Option<&str>,
        since_ms: u64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let mut out = Vec::new();
        let mut start = since_ms.to_string();
        loop {
            let rows: Vec<(String, Vec<(String, String)>)> = self
                .store
                .command(
                    redis::cmd("XRANGE")
                        .arg(self.key())
                        .arg(&start)
                        .arg("+")
                        .arg("COUNT")
                        .arg(SCAN_BATCH)
                        .clone(),
                )
                .await?;
            let n = rows.len();
            for (id, fields) in &rows {
                start = format!("({id}");
                let Some((_, d)) = fields.iter().find(|(k, _)| k == "d") else {
                    continue;
                };
                let Ok(e) = serde_json::from_str::<AuditEntry>(d) else {
                    continue;
                };
                if tenant.is_none_or(|t| e.tenant == t) {
                    out.push(e);
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
            if n < SCAN_BATCH {
                return Ok(out);
            }
        }
    }
}

/// The behaviour both share.
#[doc(hidden)]
pub async fn suite(log: &dyn AuditLog) {
    let entry = |tenant: &str, action: &str| AuditEntry {
        at_ms: now_ms(),
        actor: "ops".into(),
        action: action.into(),
        tenant: tenant.into(),
        target: None,
        change: serde_json::json!({"v": 1}),
    };
    let before = now_ms();
    log.append(entry("acme", "tenant.create")).await.unwrap();
    log.append(entry("beta", "tenant.create")).await.unwrap();
    log.append(entry("acme", "tenant.patch")).await.unwrap();
    let all = log.list(None, before, 100).await.unwrap();
    assert_eq!(all.len(), 3);
    let acme: Vec<String> = log
        .list(Some("acme"), before, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(
        acme,
        ["tenant.create", "tenant.patch"],
        "oldest first, one tenant"
    );
    assert_eq!(log.list(None, before, 2).await.unwrap().len(), 2, "limit");
    assert!(
        log.list(None, now_ms() + 60_000, 100).await.unwrap().is_empty(),
        "since"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_audit_filters_and_caps() {
        suite(&MemoryAudit::new(100, Duration::from_secs(3600))).await;
        let capped = MemoryAudit::new(2, Duration::from_secs(3600));
        for i in 0..5 {
            capped
                .append(AuditEntry {
                    at_ms: now_ms(),
                    actor: "a".into(),
                    action: format!("x{i}"),
                    tenant: "t".into(),
                    target: None,
                    change: Value::Null,
                })
                .await
                .unwrap();
        }
        let kept: Vec<String> = capped
            .list(None, 0, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect();
        assert_eq!(kept, ["x3", "x4"]);
    }
}

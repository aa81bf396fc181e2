//! Tenant documents in this process (the embedded default: one node, no Redis).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use marina_core::store::StoreError;
use serde_json::Value;
use tokio::sync::Notify;

use crate::{Expect, StoredTenant, TenantDocs, WriteError, now_ms};

/// Tenant documents in memory.
#[derive(Debug)]
pub struct MemoryDocs {
    max: usize,
    state: Mutex<(u64, BTreeMap<String, StoredTenant>)>,
    notify: Notify,
}

impl MemoryDocs {
    /// Holding at most `max` tenants.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            state: Mutex::default(),
            notify: Notify::new(),
        }
    }
}

fn check(map: &BTreeMap<String, StoredTenant>, id: &str, expect: Expect) -> Result<(), WriteError> {
    let current = map.get(id).map_or(0, |t| t.version);
    let ok = match expect {
        Expect::Any => true,
        Expect::Absent => current == 0,
        Expect::Version(v) => v == current,
    };
    if ok {
        Ok(())
    } else {
        Err(WriteError::Conflict { current })
    }
}

#[async_trait]
impl TenantDocs for MemoryDocs {
    async fn version(&self) -> Result<u64, StoreError> {
        Ok(self.state.lock().unwrap_or_else(|p| p.into_inner()).0)
    }

    async fn list(&self) -> Result<Vec<StoredTenant>, StoreError> {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        Ok(s.1.values().cloned().collect())
    }

    async fn get(&self, id: &str) -> Result<Option<StoredTenant>, StoreError> {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        Ok(s.1.get(id).cloned())
    }

    async fn put(&self, id: &str, doc: &Value, expect: Expect) -> Result<u64, WriteError> {
        let version = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            check(&s.1, id, expect)?;
            if !s.1.contains_key(id) && s.1.len() >= self.max {
                return Err(WriteError::Full);
            }
            s.0 += 1;
            let version = s.0;
            s.1.insert(
                id.to_owned(),
                StoredTenant {
                    id: id.to_owned(),
                    version,
                    doc: doc.clone(),
                    updated_ms: now_ms(),
                },
            );
            version
        };
        self.notify.notify_one();
        Ok(version)
    }

    async fn delete(&self, id: &str, expect: Expect) -> Result<bool, WriteError> {
        {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            check(&s.1, id, expect)?;
            if s.1.remove(id).is_none() {
                return Ok(false);
            }
            s.0 += 1;
        }
        self.notify.notify_one();
        Ok(true)
    }

    async fn changed(&self, max: Duration) {
        let _ = tokio::time::timeout(max, self.notify.notified()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_docs_behave_like_the_shared_ones() {
        crate::suite::versions_conflicts_and_caps(&MemoryDocs::new(2)).await;
    }
}

//! When each tenant API key was last used, across the cluster. Nodes note it in memory on every
//! accepted key and flush it here now and then; the admin API lists it. In Redis one hash per
//! tenant (`<p>:{cp}:used:<tenant>`: key id → Unix ms, only ever raised), expiring after
//! `admin.audit_retention_days` without a use; at most one field per key the tenant ever had
//! within that time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use marina_core::store::{RedisStore, StoreError};
use redis::Script;

/// Last-use times of API keys.
#[async_trait]
pub trait KeyUsage: Send + Sync + std::fmt::Debug {
    /// Raise the last-use times of `used` (key id, Unix ms) of `tenant`.
    async fn record(&self, tenant: &str, used: &[(String, u64)]) -> Result<(), StoreError>;
    /// The last-use times of `tenant`'s keys.
    async fn get(&self, tenant: &str) -> Result<HashMap<String, u64>, StoreError>;
}

/// Last-use times in this process.
#[derive(Debug, Default)]
pub struct MemoryUsage(Mutex<HashMap<String, HashMap<String, u64>>>);

#[async_trait]
impl KeyUsage for MemoryUsage {
    async fn record(&self, tenant: &str, used: &[(String, u64)]) -> Result<(), StoreError> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let t = m.entry(tenant.to_owned()).or_default();
        for (id, ms) in used {
            let e = t.entry(id.clone()).or_default();
            *e = (*e).max(*ms);
        }
        Ok(())
    }

    async fn get(&self, tenant: &str) -> Result<HashMap<String, u64>, StoreError> {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Ok(m.get(tenant).cloned().unwrap_or_default())
    }
}

/// KEYS used; ARGV ttl ms, then id, ms pairs. Raises each field, never lowers it.
const RECORD: &str = r"
for i = 2, #ARGV, 2 do
  local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0')
  if cur < tonumber(ARGV[i + 1]) then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1";

/// Last-use times in the cluster's Redis.
#[derive(Debug)]
pub struct RedisUsage {
    store: Arc<RedisStore>,
    ttl: Duration,
    record: Script,
}

impl RedisUsage {
    /// On `store`'s Redis, forgotten after `ttl` without a use.
    pub fn new(store: Arc<RedisStore>, ttl: Duration) -> Self {
        Self {
            store,
            ttl,
            record: Script::new(RECORD),
        }
    }

    fn key(&self, tenant: &str) -> String {
        format!("{}:{{cp}}:used:{tenant}", self.store.prefix())
    }
}

#[async_trait]
impl KeyUsage for RedisUsage {
    async fn record(&self, tenant: &str, used: &[(String, u64)]) -> Result<(), StoreError> {
        if used.is_empty() {
            return Ok(());
        }
        let mut args = vec![(self.ttl.as_millis() as u64).max(1).to_string()];
        for (id, ms) in used {
            args.push(id.clone());
            args.push(ms.to_string());
        }
        self.store
            .eval_script::<i64, _>(&self.record, vec![self.key(tenant)], args)
            .await
            .map(|_| ())
    }

    async fn get(&self, tenant: &str) -> Result<HashMap<String, u64>, StoreError> {
        self.store
            .command(redis::cmd("HGETALL").arg(self.key(tenant)).clone())
            .await
    }
}

/// The behaviour both share.
#[doc(hidden)]
pub async fn suite(u: &dyn KeyUsage) {
    u.record("acme", &[("k1".into(), 100), ("k2".into(), 50)])
        .await
        .unwrap();
    u.record("acme", &[("k1".into(), 90), ("k2".into(), 70)])
        .await
        .unwrap();
    let got = u.get("acme").await.unwrap();
    assert_eq!(got.get("k1"), Some(&100), "never lowered");
    assert_eq!(got.get("k2"), Some(&70), "raised");
    assert!(u.get("beta").await.unwrap().is_empty());
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_usage_only_rises() {
        super::suite(&super::MemoryUsage::default()).await;
    }
}

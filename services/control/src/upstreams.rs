//! What the nodes last saw of each tenant's upstreams, across the cluster: facts such as "last
//! success", "last error" or "tools listed", each with the time it was seen. Nodes note them in
//! memory as they talk to upstreams and flush them here now and then; the admin API reads them.
//! For each fact the most recent report wins, whichever node made it. In Redis one hash per
//! tenant (`<p>:{cp}:up:<tenant>`: `<upstream>\0<fact>` → `<Unix ms>|<value>`), expiring
//! [`RETENTION`] after the last report; a few fields per upstream the tenant had within that time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use marina_core::store::{RedisStore, StoreError};
use redis::Script;

/// How long a tenant's upstream reports outlive the last one.
pub const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// One fact about one upstream, as seen at `at_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The upstream's configured name.
    pub upstream: String,
    /// What was seen (`ok`, `error`, `tools`, ...).
    pub fact: String,
    /// When (Unix ms).
    pub at_ms: u64,
    /// Its value (no `\0`).
    pub value: String,
}

/// The latest reports on tenants' upstreams.
#[async_trait]
pub trait UpstreamReports: Send + Sync + std::fmt::Debug {
    /// Keep those of `reports` (of `tenant`) newer than what is known.
    async fn record(&self, tenant: &str, reports: &[Report]) -> Result<(), StoreError>;
    /// The latest report of each fact of each upstream of `tenant`.
    async fn get(&self, tenant: &str) -> Result<Vec<Report>, StoreError>;
}

/// A tenant's reports: (upstream, fact) → (Unix ms, value).
type Facts = HashMap<(String, String), (u64, String)>;

/// Reports in this process.
#[derive(Debug, Default)]
pub struct MemoryReports(Mutex<HashMap<String, Facts>>);

#[async_trait]
impl UpstreamReports for MemoryReports {
    async fn record(&self, tenant: &str, reports: &[Report]) -> Result<(), StoreError> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let t = m.entry(tenant.to_owned()).or_default();
        for r in reports {
            let e = t
                .entry((r.upstream.clone(), r.fact.clone()))
                .or_insert((0, String::new()));
            if r.at_ms >= e.0 {
                *e = (r.at_ms, r.value.clone());
            }
        }
        Ok(())
    }

    async fn get(&self, tenant: &str) -> Result<Vec<Report>, StoreError> {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Ok(m.get(tenant)
            .into_iter()
            .flatten()
            .map(|((upstream, fact), (at_ms, value))| Report {
                upstream: upstream.clone(),
                fact: fact.clone(),
                at_ms: *at_ms,
                value: value.clone(),
            })
            .collect())
    }
}

/// KEYS reports; ARGV ttl ms, then field, ms, value triples. A field takes the value unless it
/// holds a newer one.
const RECORD: &str = r"
for i = 2, #ARGV, 3 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  local at = cur and tonumber(string.match(cur, '^(%d+)|')) or 0
  if at <= tonumber(ARGV[i + 1]) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1] .. '|' .. ARGV[i + 2])
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1";

/// Reports in the cluster's Redis.
#[derive(Debug)]
pub struct RedisReports {
    store: Arc<RedisStore>,
    record: Script,
}

impl RedisReports {
    /// On `store`'s Redis.
    pub fn new(store: Arc<RedisStore>) -> Self {
        Self {
            store,
            record: Script::new(RECORD),
        }
    }

    fn key(&self, tenant: &str) -> String {
        format!("{}:{{cp}}:up:{tenant}", self.store.prefix())
    }
}

#[async_trait]
impl UpstreamReports for RedisReports {
    async fn record(&self, tenant: &str, reports: &[Report]) -> Result<(), StoreError> {
        if reports.is_empty() {
            return Ok(());
        }
        let mut args = vec![RETENTION.as_millis().to_string()];
        for r in reports {
            args.push(format!("{}\0{}", r.upstream, r.fact));
            args.push(r.at_ms.to_string());
            args.push(r.value.clone());
        }
        self.store
            .eval_script::<i64, _>(&self.record, vec![self.key(tenant)], args)
            .await
            .map(|_| ())
    }

    async fn get(&self, tenant: &str) -> Result<Vec<Report>, StoreError> {
        let all: HashMap<String, String> = self
            .store
            .command(redis::cmd("HGETALL").arg(self.key(tenant)).clone())
            .await?;
        Ok(all
            .into_iter()
            .filter_map(|(field, v)| {
                let (upstream, fact) = field.split_once('\0')?;
                let (at, value) = v.split_once('|')?;
                Some(Report {
                    upstream: upstream.to_owned(),
                    fact: fact.to_owned(),
                    at_ms: at.parse().ok()?,
                    value: value.to_owned(),
                })
            })
            .collect())
    }
}

/// The behaviour both share.
#[doc(hidden)]
pub async fn suite(r: &dyn UpstreamReports) {
    let report = |upstream: &str, fact: &str, at_ms, value: &str| Report {
        upstream: upstream.into(),
        fact: fact.into(),
        at_ms,
        value: value.into(),
    };
    r.record(
        "acme",
        &[
            report("files", "ok", 100, "a"),
            report("files", "error", 90, "b|timed out"),
        ],
    )
    .await
    .unwrap();
    r.record(
        "acme",
        &[
            report("files", "ok", 80, "b"),
            report("files", "error", 120, "b|refused"),
            report("wiki", "tools", 50, "3"),
        ],
    )
    .await
    .unwrap();
    let mut got = r.get("acme").await.unwrap();
    got.sort_by(|a, b| (&a.upstream, &a.fact).cmp(&(&b.upstream, &b.fact)));
    assert_eq!(
        got,
        [
            report("files", "error", 120, "b|refused"),
            report("files", "ok", 100, "a"),
            report("wiki", "tools", 50, "3"),
        ],
        "each fact keeps its latest report"
    );
    assert!(r.get("beta").await.unwrap().is_empty());
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_reports_keep_the_latest() {
        super::suite(&super::MemoryReports::default()).await;
    }
}

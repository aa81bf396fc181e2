//! Tenant documents in Redis, shared by the cluster. Every key carries the hash tag `{cp}`, so
//! the scripts' keys stay in one Redis Cluster slot.
//!
//! | key | type | content | bound |
//! |---|---|---|---|
//! | `<p>:{cp}:v` | string | configuration version (INCR per write) | one key |
//! | `<p>:{cp}:tenants` | hash | tenant id → version | `admin.max_tenants` fields |
//! | `<p>:{cp}:t:<id>` | hash | `v` version, `d` document JSON, `at` Unix ms | one per tenant; documents ≤ the admin API's body cap |
//! | channel `<p>:{cp}:changed` | pub/sub | the id written | — |
//!
//! Tenant documents are configuration, so they have no TTL: they are bounded by the tenant cap
//! instead, and a delete removes them.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt as _;
use marina_core::store::{RedisStore, StoreError};
use redis::Script;
use serde_json::Value;
use tokio::sync::Notify;

use crate::{Expect, StoredTenant, TenantDocs, WriteError, now_ms};

/// KEYS v, tenants, t; ARGV id, expect ('*' any, '0' absent, else a version), doc, now, max,
/// channel. `{1, version}` stored; `{-1, current}` conflict; `{-2, 0}` full.
const PUT: &str = r"
local cur = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if ARGV[2] ~= '*' and tonumber(ARGV[2]) ~= cur then return {-1, cur} end
if cur == 0 and redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[5]) then return {-2, 0} end
local v = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[3], 'v', v, 'd', ARGV[3], 'at', ARGV[4])
redis.call('HSET', KEYS[2], ARGV[1], v)
redis.call('PUBLISH', ARGV[6], ARGV[1])
return {1, v}";

/// KEYS v, tenants, t; ARGV id, expect, channel. `{1, 0}` deleted, `{0, 0}` absent, `{-1, current}`.
const DELETE: &str = r"
local cur = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if ARGV[2] ~= '*' and tonumber(ARGV[2]) ~= cur then return {-1, cur} end
if cur == 0 then return {0, 0} end
redis.call('DEL', KEYS[3])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[3], ARGV[1])
return {1, 0}";

/// How long a lost pub/sub connection waits before it reconnects.
const RESUBSCRIBE: Duration = Duration::from_millis(500);

/// Tenant documents in the cluster's Redis.
#[derive(Debug)]
pub struct RedisDocs {
    store: Arc<RedisStore>,
    max: usize,
    put: Script,
    delete: Script,
    notify: Arc<Notify>,
    listener: OnceLock<tokio::task::JoinHandle<()>>,
}

impl Drop for RedisDocs {
    fn drop(&mut self) {
        if let Some(h) = self.listener.get() {
            h.abort();
        }
    }
}

impl RedisDocs {
    /// On `store`'s Redis, holding at most `max` tenants.
    pub fn new(store: Arc<RedisStore>, max: usize) -> Self {
        Self {
            store,
            max,
            put: Script::new(PUT),
            delete: Script::new(DELETE),
            notify: Arc::new(Notify::new()),
            listener: OnceLock::new(),
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{}:{{cp}}:{name}", self.store.prefix())
    }

    fn keys(&self, id: &str) -> Vec<String> {
        vec![self.key("v"), self.key("tenants"), self.key(&format!("t:{id}"))]
    }

    fn channel(&self) -> String {
        self.key("changed")
    }

    /// Listen to the change channel until dropped, reconnecting after a failure. Every message
    /// (and every reconnection, which may have missed some) wakes the watcher.
    fn listen(&self) {
        let (store, notify, channel) = (self.store.clone(), self.notify.clone(), self.channel());
        self.listener.get_or_init(|| {
            tokio::spawn(async move {
                loop {
                    match store.pubsub().await {
                        Ok(mut ps) => {
                            if ps.subscribe(&channel).await.is_ok() {
                                notify.notify_one();
                                let mut messages = ps.on_message();
                                while messages.next().await.is_some() {
                                    notify.notify_one();
                                }
                            }
                        }
                        Err(e) => tracing::debug!(error = %e, "configuration change channel unavailable"),
                    }
                    tokio::time::sleep(RESUBSCRIBE).await;
                }
            })
        });
    }
}

fn expect_arg(e: Expect) -> String {
    match e {
        Expect::Any => "*".into(),
        Expect::Absent => "0".into(),
        Expect::Version(v) => v.to_string(),
    }
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn status(reply: Vec<i64>) -> Result<(i64, u64), StoreError> {
    match reply[..] {
        [s, v] => Ok((s, v.max(0) as u64)),
        _ => Err(corrupt("unexpected script reply")),
    }
}

/// A tenant hash's `v`, `d`, `at` (HMGET order) as a stored tenant.
fn stored(id: &str, fields: Vec<Option<String>>) -> Result<Option<StoredTenant>, StoreError> {
    let [v, d, at] = &fields[..] else {
        return Err(corrupt("unexpected HMGET reply"));
    };
    let (Some(v), Some(d)) = (v, d) else {
        return Ok(None);
    };
    Ok(Some(StoredTenant {
        id: id.to_owned(),
        version: v.parse().map_err(corrupt)?,
        doc: serde_json::from_str(d).map_err(corrupt)?,
        updated_ms: at.as_deref().and_then(|a| a.parse().ok()).unwrap_or(0),
    }))
}

#[async_trait]
impl TenantDocs for RedisDocs {
    async fn version(&self) -> Result<u64, StoreError> {
        let v: Option<u64> = self
            .store
            .command(redis::cmd("GET").arg(self.key("v")).clone())
            .await?;
        Ok(v.unwrap_or(0))
    }

    async fn list(&self) -> Result<Vec<StoredTenant>, StoreError> {
        let ids: Vec<String> = self
            .store
            .command(redis::cmd("HKEYS").arg(self.key("tenants")).clone())
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HMGET")
                .arg(self.key(&format!("t:{id}")))
                .arg(&["v", "d", "at"][..]);
        }
        let rows: Vec<Vec<Option<String>>> = self.store.pipeline(pipe).await?;
        let mut out = Vec::with_capacity(ids.len());
        for (id, fields) in ids.iter().zip(rows) {
            // Deleted between the two reads: skip it.
            if let Some(t) = stored(id, fields)? {
                out.push(t);
            }
        }
        Ok(out)
    }

    async fn get(&self, id: &str) -> Result<Option<StoredTenant>, StoreError> {
        let fields: Vec<Option<String>> = self
            .store
            .command(
                redis::cmd("HMGET")
                    .arg(self.key(&format!("t:{id}")))
                    .arg(&["v", "d", "at"][..])
                    .clone(),
            )
            .await?;
        stored(id, fields)
    }

    async fn put(&self, id: &str, doc: &Value, expect: Expect) -> Result<u64, WriteError> {
        let reply: Vec<i64> = self
            .store
            .eval_script(
                &self.put,
                self.keys(id),
                vec![
                    id.to_owned(),
                    expect_arg(expect),
                    doc.to_string(),
                    now_ms().to_string(),
                    self.max.to_string(),
                    self.channel(),
                ],
            )
            .await?;
        match status(reply)? {
            (1, v) => Ok(v),
            (-1, current) => Err(WriteError::Conflict { current }),
            (-2, _) => Err(WriteError::Full),
            _ => Err(corrupt("unexpected script status").into()),
        }
    }

    async fn delete(&self, id: &str, expect: Expect) -> Result<bool, WriteError> {
        let reply: Vec<i64> = self
            .store
            .eval_script(
                &self.delete,
                self.keys(id),
                vec![id.to_owned(), expect_arg(expect), self.channel()],
            )
            .await?;
        match status(reply)? {
            (1, _) => Ok(true),
            (0, _) => Ok(false),
            (-1, current) => Err(WriteError::Conflict { current }),
            _ => Err(corrupt("unexpected script status").into()),
        }
    }

    async fn changed(&self, max: Duration) {
        self.listen();
        let _ = tokio::time::timeout(max, self.notify.notified()).await;
    }
}

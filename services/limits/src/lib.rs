//! Rate limits shared by every node: GCRA (generic cell rate algorithm) buckets, all the buckets
//! of one request checked — and, only if every one has room, charged — atomically by one Redis
//! script that reads the clock from Redis (`TIME`), so nodes' clocks do not matter and a limit
//! is not multiplied by the number of replicas. Concurrent requests of a tenant share one
//! execution of that script (`batch`), and busy buckets lend the node that charged them a few
//! tokens ahead, which it spends without a round trip (`reserve`: never more than the bucket
//! allows). [`MemoryLimiter`] is the same algorithm for a single
//! node without Redis.
//!
//! A bucket of `count` per `period` lets one event through every `period / count` on average,
//! with bursts of up to `count / 10` (at least 1): held for ten periods, it admits `10·count`
//! plus one burst — within 1 %.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use marina_core::settings::Rate;
use marina_core::store::{RedisStore, StoreError};
use sha2::{Digest as _, Sha256};

mod batch;
mod reserve;

/// What a limit applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// All requests of a tenant.
    Tenant,
    /// One principal's requests.
    Principal,
    /// One principal's calls of one tool.
    Tool,
}

impl Scope {
    /// Stable name (headers, audit events, metrics).
    pub fn name(self) -> &'static str {
        match self {
            Self::Tenant => "tenant",
            Self::Principal => "principal",
            Self::Tool => "tool",
        }
    }
}

/// One bucket a request is charged to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    /// Which limit.
    pub scope: Scope,
    /// Its rate.
    pub rate: Rate,
    /// Identity within the scope (bounded: hashed principals, published tool names).
    key: String,
}

impl Bucket {
    /// The tenant's bucket.
    pub fn tenant(tenant: &str, rate: Rate) -> Self {
        Self {
            scope: Scope::Tenant,
            rate,
            key: format!("{{{tenant}}}:t"),
        }
    }

    /// A principal's bucket.
    pub fn principal(tenant: &str, principal: &PrincipalId, rate: Rate) -> Self {
        Self {
            scope: Scope::Principal,
            rate,
            key: format!("{{{tenant}}}:p:{}", principal.0),
        }
    }

    /// A principal's bucket for one tool.
    pub fn tool(tenant: &str, principal: &PrincipalId, tool: &str, rate: Rate) -> Self {
        Self {
            scope: Scope::Tool,
            rate,
            key: format!("{{{tenant}}}:c:{}:{}", principal.0, short_hash(tool)),
        }
    }

    /// The tenant's hash tag (`{tenant}`) the key starts with: checks are batched per tag.
    fn tag(&self) -> &str {
        self.key
            .find('}')
            .map_or(self.key.as_str(), |end| &self.key[..=end])
    }

    /// Emission interval and burst tolerance, in microseconds.
    fn params(&self) -> (u64, u64) {
        let interval = (self.rate.period.as_micros() as u64 / self.rate.count).max(1);
        let burst = (self.rate.count / 10).max(1);
        (interval, interval * (burst - 1))
    }
}

/// A principal as its buckets' keys name it: issuer and subject, hashed (bounded and opaque).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalId(String);

impl PrincipalId {
    /// The id of `principal` (issuer and subject, or `anonymous`).
    pub fn new(principal: &str) -> Self {
        Self(short_hash(principal))
    }
}

/// The first 96 bits of `s`'s SHA-256, in hex (a bounded, opaque part of a key).
fn short_hash(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(s.as_bytes());
    let mut out = String::with_capacity(24);
    for b in &digest[..12] {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xf)] as char);
    }
    out
}

/// The outcome of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Every bucket had room; each was charged.
    Allowed,
    /// A bucket is full; nothing was charged.
    Limited {
        /// The bucket that refused (the one to wait longest for).
        scope: Scope,
        /// Its rate.
        rate: Rate,
        /// When a retry can succeed.
        retry_after: Duration,
    },
}

/// Why limits could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// The shared store did not answer.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks and charges rate-limit buckets.
#[async_trait]
pub trait RateLimiter: Send + Sync + std::fmt::Debug {
    /// Charge every bucket if all have room, else none.
    async fn check(&self, buckets: &[Bucket]) -> Result<Decision, LimitError>;
}

/// GCRA for one bucket at `now` (µs): the new theoretical arrival time, or how long to wait.
fn gcra(tat: Option<u64>, now: u64, interval: u64, tolerance: u64) -> Result<u64, u64> {
    let tat = tat.unwrap_or(now).max(now);
    match tat.saturating_sub(now).checked_sub(tolerance) {
        Some(wait) if wait > 0 => Err(wait),
        _ => Ok(tat + interval),
    }
}

fn limited(buckets: &[Bucket], worst: usize, wait_us: u64) -> Decision {
    let b = &buckets[worst];
    Decision::Limited {
        scope: b.scope,
        rate: b.rate,
        retry_after: Duration::from_micros(wait_us),
    }
}

/// Buckets in Redis, shared by every node.
#[derive(Debug)]
pub struct RedisLimiter {
    store: Arc<RedisStore>,
    rates: batch::Coalescer,
    reserves: reserve::Reserves,
    scripts: Scripts,
}

/// Every script the limiter runs, built (and hashed) once.
#[derive(Debug)]
struct Scripts {
    admit: redis::Script,
    touch: redis::Script,
    release: redis::Script,
    begin_call: redis::Script,
    keep_calls: redis::Script,
    end_call: redis::Script,
}

impl RedisLimiter {
    /// Limits kept in `store`'s Redis, under its key prefix (`<prefix>:rl:{tenant}:…`, each key
    /// expiring once its bucket is full again).
    pub fn new(store: Arc<RedisStore>) -> Self {
        Self {
            rates: batch::Coalescer::new(store.clone()),
            reserves: reserve::Reserves::default(),
            store,
            scripts: Scripts {
                admit: redis::Script::new(ADMIT),
                touch: redis::Script::new(TOUCH),
                release: redis::Script::new(RELEASE),
                begin_call: redis::Script::new(BEGIN_CALL),
                keep_calls: redis::Script::new(KEEP_CALLS),
                end_call: redis::Script::new(END_CALL),
            },
        }
    }
}

#[async_trait]
impl RateLimiter for RedisLimiter {
    async fn check(&self, buckets: &[Bucket]) -> Result<Decision, LimitError> {
        if buckets.is_empty() {
            return Ok(Decision::Allowed);
        }
        // Tokens this node took ahead first; only the other buckets go to Redis.
        let keys: Vec<&str> = buckets.iter().map(|b| b.key.as_str()).collect();
        let taken = match self.reserves.take(&keys) {
            reserve::Local::Full { index, wait } => {
                return Ok(limited(buckets, index, wait.as_micros() as u64));
            }
            reserve::Local::Taken(taken) => taken,
        };
        let rest: Vec<usize> = (0..buckets.len()).filter(|i| !taken[*i]).collect();
        if rest.is_empty() {
            return Ok(Decision::Allowed);
        }
        let prefix = self.store.prefix();
        let check = batch::Check {
            keys: rest.iter().map(|i| format!("{prefix}:rl:{}", keys[*i])).collect(),
            params: rest
                .iter()
                .map(|i| {
                    let (interval, tolerance) = buckets[*i].params();
                    (interval, tolerance, reserve::ahead(buckets[*i].rate))
                })
                .collect(),
        };
        let sent = std::time::Instant::now();
        match self.rates.check(buckets[0].tag(), check).await {
            Ok(Ok(granted)) => {
                let rest_keys: Vec<&str> = rest.iter().map(|i| keys[*i]).collect();
                self.reserves.add(&rest_keys, &granted);
                Ok(Decision::Allowed)
            }
            Ok(Err((i, wait))) => {
                self.reserves.give_back(&keys, &taken);
                let worst = rest.get(i).copied().unwrap_or(rest[0]);
                self.reserves
                    .full(keys[worst], sent + Duration::from_micros(wait));
                Ok(limited(buckets, worst, wait))
            }
            Err(e) => {
                self.reserves.give_back(&keys, &taken);
                Err(e.into())
            }
        }
    }
}

/// Buckets (and session caps) in this process (single node, in-memory store). Bucket entries are
/// dropped once full again, cap entries once their session has expired, so the maps stay bounded
/// by what is active.
#[derive(Debug)]
pub struct MemoryLimiter {
    epoch: Instant,
    buckets: Mutex<HashMap<String, u64>>,
    caps: MemoryCaps,
}

impl Default for MemoryLimiter {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            buckets: Mutex::new(HashMap::new()),
            caps: MemoryCaps::default(),
        }
    }
}

#[async_trait]
impl RateLimiter for MemoryLimiter {
    async fn check(&self, buckets: &[Bucket]) -> Result<Decision, LimitError> {
        let now = self.epoch.elapsed().as_micros() as u64;
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 100_000 {
            map.retain(|_, tat| *tat > now);
        }
        let mut news = Vec::with_capacity(buckets.len());
        let mut worst: Option<(usize, u64)> = None;
        for (i, b) in buckets.iter().enumerate() {
            let (interval, tolerance) = b.params();
            match gcra(map.get(&b.key).copied(), now, interval, tolerance) {
                Ok(tat) => news.push(tat),
                Err(wait) if worst.is_none_or(|(_, w)| wait > w) => worst = Some((i, wait)),
                Err(_) => {}
            }
        }
        if let Some((i, wait)) = worst {
            return Ok(limited(buckets, i, wait));
        }
        for (b, tat) in buckets.iter().zip(news) {
            map.insert(b.key.clone(), tat);
        }
        Ok(Decision::Allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(s: &str) -> Rate {
        s.parse().unwrap()
    }

    #[test]
    fn gcra_admits_the_rate_plus_one_burst() {
        // 100/s: one every 10 ms, bursts of 10.
        let b = Bucket::tenant("t", rate("100/s"));
        let (interval, tolerance) = b.params();
        assert_eq!((interval, tolerance), (10_000, 90_000));
        // Ask every millisecond for 10 s.
        let (mut tat, mut admitted) = (None, 0);
        for ms in 0..10_000u64 {
            if let Ok(t) = gcra(tat, ms * 1000, interval, tolerance) {
                tat = Some(t);
                admitted += 1;
            }
        }
        assert_eq!(admitted, 1000 + 9, "10 s of 100/s, plus the burst");
        // A refused request learns how long to wait, and waiting that long is enough.
        // A refused request (one more at the last instant) learns how long to wait, and
        // waiting that long is enough.
        let last = 9_999_000;
        let wait = gcra(tat, last, interval, tolerance).unwrap_err();
        assert!(wait <= interval, "{wait}");
        assert!(gcra(tat, last + wait, interval, tolerance).is_ok());
    }

    #[test]
    fn rates_parse_and_print() {
        assert_eq!(rate("20/s").period, Duration::from_secs(1));
        assert_eq!(rate("1/min").to_string(), "1/min");
        assert_eq!(rate("1000/h").count, 1000);
        for bad in ["20", "0/s", "x/s", "5/day", "2000000/s"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn all_buckets_or_none_are_charged() {
        let l = MemoryLimiter::default();
        let roomy = Bucket::tenant("t", rate("1000/s"));
        let tight = Bucket::tool("t", &PrincipalId::new("p"), "x", rate("1/min"));
        assert_eq!(
            l.check(&[roomy.clone(), tight.clone()]).await.unwrap(),
            Decision::Allowed
        );
        let d = l.check(&[roomy.clone(), tight.clone()]).await.unwrap();
        let Decision::Limited {
            scope, retry_after, ..
        } = d
        else {
            panic!("{d:?}")
        };
        assert_eq!(scope, Scope::Tool);
        assert!(retry_after > Duration::from_secs(50), "{retry_after:?}");
        // The refused request charged nothing: the tenant bucket still has its burst (100).
        for _ in 0..99 {
            assert_eq!(
                l.check(std::slice::from_ref(&roomy)).await.unwrap(),
                Decision::Allowed
            );
        }
        // Another tool, another principal: their own buckets.
        let other = Bucket::tool("t", &PrincipalId::new("p"), "y", rate("1/min"));
        assert_eq!(l.check(&[other]).await.unwrap(), Decision::Allowed);
    }
}

// === session caps ===

use marina_core::caps::{CapScope, Caps};

fn cap_keys(prefix: &str, tenant: &str, principal: &str) -> Vec<String> {
    vec![
        format!("{prefix}:cap:{{{tenant}}}:s"),
        format!("{prefix}:cap:{{{tenant}}}:s:{}", short_hash(principal)),
    ]
}

/// KEYS: tenant set, principal set; ARGV: session, ttl ms, max tenant, max principal (0 = no
/// cap). Sorted sets of session → expiry (ms, Redis clock); expired entries are dropped first.
const ADMIT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, k in ipairs(KEYS) do redis.call('ZREMRANGEBYSCORE', k, '-inf', now) end
local mt, mp = tonumber(ARGV[3]), tonumber(ARGV[4])
if mt > 0 and redis.call('ZCARD', KEYS[1]) >= mt then return 'tenant' end
if mp > 0 and redis.call('ZCARD', KEYS[2]) >= mp then return 'principal' end
local exp = now + tonumber(ARGV[2])
for _, k in ipairs(KEYS) do
  redis.call('ZADD', k, exp, ARGV[1])
  redis.call('PEXPIRE', k, ARGV[2])
end
return 'ok'";

/// KEYS as [`ADMIT`]; ARGV: session, ttl ms. Only sessions still counted are refreshed.
const TOUCH: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, k in ipairs(KEYS) do
  redis.call('ZADD', k, 'XX', now + tonumber(ARGV[2]), ARGV[1])
  redis.call('PEXPIRE', k, ARGV[2])
end
return 1";

/// KEYS: the tenant's calls; ARGV: call, max, lease ms. '1' when counted (or still counted:
/// renewed), '0' when full.
const BEGIN_CALL: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return '0'
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return '1'";

/// KEYS: the tenant's calls; ARGV: lease ms, then the calls. Only calls still counted renew.
const KEEP_CALLS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1";

/// KEYS: the sets a session is counted in; ARGV: the session.
const RELEASE: &str = "for _, k in ipairs(KEYS) do redis.call('ZREM', k, ARGV[1]) end return 1";

/// KEYS: the tenant's calls; ARGV: the call.
const END_CALL: &str = "redis.call('ZREM', KEYS[1], ARGV[1]) return 1";

fn calls_key(prefix: &str, tenant: &str) -> String {
    format!("{prefix}:cap:{{{tenant}}}:c")
}

fn scope(reply: &str) -> Option<CapScope> {
    match reply {
        "tenant" => Some(CapScope::Tenant),
        "principal" => Some(CapScope::Principal),
        _ => None,
    }
}

#[async_trait]
impl Caps for RedisLimiter {
    async fn admit(
        &self,
        tenant: &str,
        principal: &str,
        session: &str,
        ttl: Duration,
        max_tenant: Option<u64>,
        max_principal: Option<u64>,
    ) -> Result<Option<CapScope>, StoreError> {
        let keys = cap_keys(self.store.prefix(), tenant, principal);
        let args = vec![
            session.to_owned(),
            ttl.as_millis().max(1).to_string(),
            max_tenant.unwrap_or(0).to_string(),
            max_principal.unwrap_or(0).to_string(),
        ];
        let reply: String = self.store.eval_script(&self.scripts.admit, keys, args).await?;
        Ok(scope(&reply))
    }

    async fn touch(
        &self,
        tenant: &str,
        principal: &str,
        session: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let keys = cap_keys(self.store.prefix(), tenant, principal);
        let args = vec![session.to_owned(), ttl.as_millis().max(1).to_string()];
        self.store
            .eval_script::<i64, _>(&self.scripts.touch, keys, args)
            .await
            .map(|_| ())
    }

    async fn release(&self, tenant: &str, principal: &str, session: &str) -> Result<(), StoreError> {
        let keys = cap_keys(self.store.prefix(), tenant, principal);
        self.store
            .eval_script::<i64, _>(&self.scripts.release, keys, vec![session.to_owned()])
            .await
            .map(|_| ())
    }

    async fn begin_call(
        &self,
        tenant: &str,
        call: &str,
        max: u64,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let keys = vec![calls_key(self.store.prefix(), tenant)];
        let args = vec![call.to_owned(), max.to_string(), lease.as_millis().to_string()];
        let reply: String = self
            .store
            .eval_script(&self.scripts.begin_call, keys, args)
            .await?;
        Ok(reply == "1")
    }

    async fn keep_calls(&self, tenant: &str, calls: &[String], lease: Duration) -> Result<(), StoreError> {
        let keys = vec![calls_key(self.store.prefix(), tenant)];
        let mut args = vec![lease.as_millis().to_string()];
        args.extend(calls.iter().cloned());
        self.store
            .eval_script::<i64, _>(&self.scripts.keep_calls, keys, args)
            .await
            .map(|_| ())
    }

    async fn end_call(&self, tenant: &str, call: &str) -> Result<(), StoreError> {
        let keys = vec![calls_key(self.store.prefix(), tenant)];
        self.store
            .eval_script::<i64, _>(&self.scripts.end_call, keys, vec![call.to_owned()])
            .await
            .map(|_| ())
    }
}

/// Live sessions per (tenant) and (tenant, principal), with their expiry.
#[derive(Debug, Default)]
pub struct MemoryCaps {
    sets: Mutex<HashMap<String, HashMap<String, Instant>>>,
}

#[async_trait]
impl Caps for MemoryLimiter {
    async fn admit(
        &self,
        tenant: &str,
        principal: &str,
        session: &str,
        ttl: Duration,
        max_tenant: Option<u64>,
        max_principal: Option<u64>,
    ) -> Result<Option<CapScope>, StoreError> {
        let now = Instant::now();
        let keys = cap_keys("", tenant, principal);
        let mut sets = self.caps.sets.lock().unwrap_or_else(|p| p.into_inner());
        for k in &keys {
            if let Some(set) = sets.get_mut(k) {
                set.retain(|_, exp| *exp > now);
            }
        }
        let count = |k: &str| sets.get(k).map_or(0, |s| s.len() as u64);
        if max_tenant.is_some_and(|m| count(&keys[0]) >= m) {
            return Ok(Some(CapScope::Tenant));
        }
        if max_principal.is_some_and(|m| count(&keys[1]) >= m) {
            return Ok(Some(CapScope::Principal));
        }
        for k in keys {
            sets.entry(k).or_default().insert(session.to_owned(), now + ttl);
        }
        Ok(None)
    }

    async fn touch(
        &self,
        tenant: &str,
        principal: &str,
        session: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut sets = self.caps.sets.lock().unwrap_or_else(|p| p.into_inner());
        for k in cap_keys("", tenant, principal) {
            if let Some(exp) = sets.get_mut(&k).and_then(|s| s.get_mut(session)) {
                *exp = Instant::now() + ttl;
            }
        }
        Ok(())
    }

    async fn release(&self, tenant: &str, principal: &str, session: &str) -> Result<(), StoreError> {
        let mut sets = self.caps.sets.lock().unwrap_or_else(|p| p.into_inner());
        for k in cap_keys("", tenant, principal) {
            remove(&mut sets, &k, session);
        }
        Ok(())
    }

    async fn begin_call(
        &self,
        tenant: &str,
        call: &str,
        max: u64,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let now = Instant::now();
        let key = calls_key("", tenant);
        let mut sets = self.caps.sets.lock().unwrap_or_else(|p| p.into_inner());
        let set = sets.entry(key).or_default();
        set.retain(|_, exp| *exp > now);
        if !set.contains_key(call) && set.len() as u64 >= max {
            return Ok(false);
        }
        set.insert(call.to_owned(), now + lease);
        Ok(true)
    }

    async fn keep_calls(&self, tenant: &str, calls: &[String], lease: Duration) -> Result<(), StoreError> {
        let mut sets = self.caps.sets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(set) = sets.get_mut(&calls_key("", tenant)) {
            for c in calls {
                if let Some(exp) = set.get_mut(c) {
                    *exp = Instant::now() + lease;
                }
            }
        }
        Ok(())
    }

    async fn end_call(&self, tenant: &str, call: &str) -> Result<(), StoreError> {
        let mut sets = self.caps.sets.lock().unwrap_or_else(|p| p.into_inner());
        remove(&mut sets, &calls_key("", tenant), call);
        Ok(())
    }
}

fn remove(sets: &mut HashMap<String, HashMap<String, Instant>>, key: &str, member: &str) {
    if let Some(s) = sets.get_mut(key) {
        s.remove(member);
        if s.is_empty() {
            sets.remove(key);
        }
    }
}

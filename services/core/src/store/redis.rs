//! Redis session store (deadpool-redis). Key schema — every key of a session shares the hash tag
//! `{<session id>}` so the multi-key scripts below stay in one Redis Cluster slot:
//!
//! | key | type | content | TTL |
//! |---|---|---|---|
//! | `<p>:{<sid>}:s` | hash | `v` write version, `d` session record JSON | idle TTL, capped by the absolute maximum |
//! | `<p>:{<sid>}:f` | string | fencing counter (INCR per lease) | as the session |
//! | `<p>:{<sid>}:l` | string | lease `<instance>\|<token>`, valid while the node key lives | as the session |
//! | `<p>:{<sid>}:i` | hash | in-flight calls (`<stream>` → call JSON) and `next` stream number | as the session |
//! | `<p>:{<sid>}:e:<n>` | stream | events of stream `n` (`d` = JSON-RPC message) | as the session; MAXLEN ~cap |
//! | `<p>:idx:{<tenant>}:s` | sorted set | the tenant's sessions → expiry (ms), for administrators | the longest session TTL; members past their expiry dropped on every add |
//! | `<p>:pu:{<tenant>:<principal>}` | hash | upstream sessions a principal shares across stateless requests (upstream → JSON) | idle TTL after the last write; one field per upstream |
//! | `<p>:once:{<token>}` | string | a single-use token (an MRTR `requestState`) already claimed | until the token expires |
//! | `<p>:key:<name>` | string | a key the cluster shares (the `requestState` sealing key when no cluster secret is set) | none: one per name |
//! | channel `<p>:sessions:ended` | pub/sub | ids of sessions an administrator ended | — |
//! | `<p>:node:<instance>` | string | node JSON (url, draining): its liveness | lease TTL, renewed every third |
//! | `<p>:nodes` | sorted set | the node directory: instance → its record's expiry (ms), to list the nodes | the lease TTL, renewed by every announcement; members past their expiry dropped on every announcement |

use std::time::Duration;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::ThreadId;

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::io::tcp::TcpSettings;
use redis::{FromRedisValue, IntoConnectionInfo as _, Script, Value as RValue};

use super::{
    Fence, InflightCall, LeaseOutcome, NodeInfo, SessionId, SessionRecord, SessionStore, StoreError,
    StoredEvent, decode_record, encode_record, parse_lease,
};
use crate::domain::StreamId;

/// KEYS s, f; ARGV json, ttl. Creates the record only if absent.
const CREATE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'v', 1, 'd', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('DEL', KEYS[2])
return 1";

/// KEYS s, l, f, i; ARGV lease value, version, json, ttl. Fenced, versioned write-through.
const SAVE: &str = r"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end
if redis.call('EXISTS', KEYS[1]) == 0 then return -2 end
local cur = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if cur < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'v', ARGV[2], 'd', ARGV[3])
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
redis.call('PEXPIRE', KEYS[4], ARGV[4])
return 1";

/// KEYS s, l, f; ARGV holder, stale lease value ('' = none). Takes the lease with a fresh fencing
/// token if it is free or still holds exactly the value the caller found stale (compare-and-set:
/// the liveness check of the holder's node happens outside, as node keys live in other slots).
const ACQUIRE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
local cur = redis.call('GET', KEYS[2])
if cur and cur ~= ARGV[2] then return {2, cur} end
local t = redis.call('INCR', KEYS[3])
redis.call('SET', KEYS[2], ARGV[1] .. '|' .. t)
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[2], ttl)
  redis.call('PEXPIRE', KEYS[3], ttl)
end
return {1, tostring(t)}";

/// KEYS l; ARGV lease value.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

/// KEYS e, l; ARGV lease value, data, cap, ttl. Fenced append; '' when fenced.
const APPEND: &str = r"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return '' end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'd', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return id";

/// KEYS l, i, s; ARGV lease value, stream, call json, ttl. Fenced: records a call in flight and
/// advances the stream counter.
const BEGIN: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if redis.call('EXISTS', KEYS[3]) == 0 then return -2 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
local next = tonumber(ARGV[2]) + 1
if tonumber(redis.call('HGET', KEYS[2], 'next') or '0') < next then
  redis.call('HSET', KEYS[2], 'next', next)
end
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1";

/// KEYS e, l, i, s; ARGV lease value, data ('' = none), cap, ttl, stream. Fenced: appends a
/// stream's final message and clears its in-flight entry, in one step.
const COMPLETE: &str = r"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return {-1} end
if redis.call('EXISTS', KEYS[4]) == 0 then return {-2} end
local id = ''
if ARGV[2] ~= '' then
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'd', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
redis.call('HDEL', KEYS[3], ARGV[5])
return {1, id}";

/// Redis-backed store.
///
/// It keeps one multiplexed connection (with `TCP_NODELAY`) per thread that uses it, shared by
/// all tasks of that thread, which pipeline their commands over it. A connection that fails is dropped from its slot and
/// re-established on next use — that is how the store recovers from an outage. (Why not
/// deadpool-redis: see docs/architecture.md, "Decisions".)
pub struct RedisStore {
    client: redis::Client,
    /// Connections by the thread that made them. A multiplexed connection's I/O runs on the
    /// runtime that created it; using the current thread's own avoids a cross-thread wake-up on
    /// every command (each actix worker is a single-threaded runtime).
    slots: Mutex<HashMap<ThreadId, MultiplexedConnection>>,
    prefix: String,
    timeout: Duration,
    create: Script,
    save: Script,
    acquire: Script,
    release: Script,
    append: Script,
    complete: Script,
    begin: Script,
    /// The lease TTL this process announces its node with (ms; 0 before the first
    /// announcement): the take-over grace is derived from it ([`super::takeover_grace`]).
    node_ttl_ms: AtomicU64,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: never print it.
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl RedisStore {
    /// A store for `url`. Connections are made lazily, so this succeeds while Redis is down.
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> Result<Self, StoreError> {
        // Pipelined small writes stall ~40 ms each under Nagle + delayed ACK.
        let info = url
            .into_connection_info()
            .map_err(unavailable)?
            .set_tcp_settings(TcpSettings::default().set_nodelay(true));
        let client = redis::Client::open(info).map_err(unavailable)?;
        Ok(Self {
            client,
            slots: Mutex::new(HashMap::new()),
            prefix: prefix.to_owned(),
            timeout,
            create: Script::new(CREATE),
            save: Script::new(SAVE),
            acquire: Script::new(ACQUIRE),
            release: Script::new(RELEASE),
            append: Script::new(APPEND),
            complete: Script::new(COMPLETE),
            begin: Script::new(BEGIN),
            node_ttl_ms: AtomicU64::new(0),
        })
    }

    fn key(&self, id: &SessionId, suffix: &str) -> String {
        format!("{}:{{{}}}:{}", self.prefix, id.as_str(), suffix)
    }

    fn index_key(&self, tenant: &str) -> String {
        format!("{}:idx:{{{tenant}}}:s", self.prefix)
    }

    fn principal_key(&self, key: &str) -> String {
        format!("{}:pu:{{{key}}}", self.prefix)
    }

    fn ended_channel(&self) -> String {
        format!("{}:sessions:ended", self.prefix)
    }

    /// Keep session `id` in its tenant's index until its keys expire. The index key lives as long
    /// as its longest-lived member (`NX` gives a new key a TTL, `GT` only ever extends it), and
    /// every add drops the members already expired, so it holds at most the tenant's live
    /// sessions.
    async fn index(&self, id: &SessionId, rec: &SessionRecord, ttl: Duration) -> Result<(), StoreError> {
        let key = self.index_key(&rec.tenant);
        let now = super::now_ms();
        let mut pipe = redis::pipe();
        pipe.cmd("ZADD")
            .arg(&key)
            .arg(now + ttl.as_millis() as u64)
            .arg(id.as_str())
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&key)
            .arg("-inf")
            .arg(now)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(ms(ttl))
            .arg("NX")
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(ms(ttl))
            .arg("GT")
            .ignore();
        self.query_pipe::<()>(pipe).await
    }

    fn stream_key(&self, id: &SessionId, stream: StreamId) -> String {
        self.key(id, &format!("e:{stream}"))
    }

    fn node_key(&self, instance: &str) -> String {
        format!("{}:node:{}", self.prefix, instance)
    }

    fn nodes_key(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<ThreadId, MultiplexedConnection>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This thread's connection, connecting it if needed.
    async fn connection(&self) -> Result<MultiplexedConnection, StoreError> {
        let me = std::thread::current().id();
        if let Some(c) = self.slots().get(&me).cloned() {
            return Ok(c);
        }
        // `run` bounds every call by the store's timeout; redis-rs's own default response
        // timeout (500 ms) would cut calls short of it and, under load, turn a slow answer into
        // a 503 the operator never configured.
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(None)
            .set_connection_timeout(Some(self.timeout));
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(unavailable)?;
        self.slots().insert(me, conn.clone());
        Ok(conn)
    }

    /// Run `f` on a shared connection, bounded by the command timeout. A connection-level
    /// failure (or a timeout) retires the connection so the next use reconnects.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: for<'c> FnOnce(
            &'c mut MultiplexedConnection,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, redis::RedisError>> + Send + 'c>,
        >,
    {
        let work = async {
            let mut conn = self.connection().await?;
            f(&mut conn).await.map_err(|e| {
                if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
                {
                    self.slots().remove(&std::thread::current().id());
                }
                unavailable(e)
            })
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => r,
            Err(_) => {
                // A hung server makes every connection suspect: reconnect them all.
                self.slots().clear();
                Err(StoreError::Unavailable("timed out".into()))
            }
        }
    }
}

/// A duration as the millisecond argument of `PX` / `PEXPIRE` (at least 1).
fn ms(d: Duration) -> String {
    (d.as_millis() as u64).max(1).to_string()
}

fn events_from(reply: RValue) -> Result<Vec<StoredEvent>, StoreError> {
    // XRANGE reply: [[id, [field, value, ...]], ...]
    let RValue::Array(items) = reply else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let RValue::Array(mut pair) = item else {
            continue;
        };
        if pair.len() != 2 {
            continue;
        }
        let fields = pair.pop();
        let id = pair.pop();
        let entry: String = redis::from_redis_value(id.unwrap_or(RValue::Nil))
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut data = None;
        if let Some(RValue::Array(kv)) = fields {
            let mut it = kv.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                let k: String = redis::from_redis_value(k).unwrap_or_default();
                if k == "d" {
                    data = Some(
                        redis::from_redis_value::<String>(v)
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    );
                }
            }
        }
        out.push(StoredEvent {
            entry,
            data: data.unwrap_or_default(),
        });
    }
    Ok(out)
}

/// The lease `holder` took on session `id`, with the fencing token the acquire script returned.
fn acquired(id: &SessionId, holder: &str, token: &str) -> Result<LeaseOutcome, StoreError> {
    let token = token
        .parse()
        .map_err(|_| StoreError::Corrupt("bad fencing token".into()))?;
    Ok(LeaseOutcome::Acquired(Fence {
        session: id.clone(),
        holder: holder.to_owned(),
        token,
    }))
}

/// A script's `-1` / `-2` status codes: the caller's lease is gone, or the session is.
fn check_status(code: i64) -> Result<(), StoreError> {
    match code {
        -1 => Err(StoreError::Fenced),
        -2 => Err(StoreError::Gone),
        _ => Ok(()),
    }
}

/// A script's `{status, detail}` reply.
fn status_and_detail(reply: Vec<RValue>) -> Result<(i64, Option<String>), StoreError> {
    let corrupt = |e: redis::ParsingError| StoreError::Corrupt(e.to_string());
    let mut it = reply.into_iter();
    let status: i64 = it
        .next()
        .map(redis::from_redis_value)
        .transpose()
        .map_err(corrupt)?
        .unwrap_or(0);
    let detail: Option<String> = it
        .next()
        .map(redis::from_redis_value)
        .transpose()
        .map_err(corrupt)?;
    Ok((status, detail))
}

impl RedisStore {
    /// The keys `<p>:{<sid>}:<name>` of a session, in order.
    fn keys(&self, id: &SessionId, names: &[&str]) -> Vec<String> {
        names.iter().map(|n| self.key(id, n)).collect()
    }

    /// Run one command.
    async fn query<T: FromRedisValue + Send + 'static>(&self, cmd: redis::Cmd) -> Result<T, StoreError> {
        self.run(move |c| Box::pin(async move { cmd.query_async(c).await }))
            .await
    }

    /// Run a pipeline (one round trip).
    async fn query_pipe<T: FromRedisValue + Send + 'static>(
        &self,
        pipe: redis::Pipeline,
    ) -> Result<T, StoreError> {
        self.run(move |c| Box::pin(async move { pipe.query_async(c).await }))
            .await
    }

    /// Run a script (`EVALSHA`, loading it on first use).
    /// Run a Lua script on this store's connections, for other concerns sharing the Redis (the
    /// rate limiter); they build their keys under [`Self::prefix`].
    pub async fn eval_script<T: FromRedisValue + Send + 'static, A: redis::ToRedisArgs + Send + 'static>(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<A>,
    ) -> Result<T, StoreError> {
        self.eval(script, keys, args).await
    }

    /// Run one command on this store's connections, for other concerns sharing the Redis (the
    /// control plane).
    pub async fn command<T: FromRedisValue + Send + 'static>(
        &self,
        cmd: redis::Cmd,
    ) -> Result<T, StoreError> {
        self.query(cmd).await
    }

    /// Run a pipeline (one round trip) on this store's connections.
    pub async fn pipeline<T: FromRedisValue + Send + 'static>(
        &self,
        pipe: redis::Pipeline,
    ) -> Result<T, StoreError> {
        self.query_pipe(pipe).await
    }

    /// A new pub/sub connection (its own TCP connection: a subscribed connection can do
    /// nothing else).
    pub async fn pubsub(&self) -> Result<redis::aio::PubSub, StoreError> {
        let work = self.client.get_async_pubsub();
        match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => r.map_err(unavailable),
            Err(_) => Err(StoreError::Unavailable("timed out".into())),
        }
    }

    /// The key prefix of this deployment.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// How long a missing node record must stay missing before this node takes that node's
    /// sessions over.
    fn takeover_grace(&self) -> Duration {
        super::takeover_grace(Duration::from_millis(self.node_ttl_ms.load(Ordering::Relaxed)))
    }

    /// Run the acquire script: take the lease if it is free or still holds exactly `stale`
    /// (`""`: free only); its status and detail.
    async fn take_lease(
        &self,
        id: &SessionId,
        holder: &str,
        stale: String,
    ) -> Result<(i64, Option<String>), StoreError> {
        let reply = self
            .eval(
                &self.acquire,
                self.keys(id, &["s", "l", "f"]),
                vec![holder.to_owned(), stale],
            )
            .await?;
        status_and_detail(reply)
    }

    async fn eval<T: FromRedisValue + Send + 'static, A: redis::ToRedisArgs + Send + 'static>(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<A>,
    ) -> Result<T, StoreError> {
        let script = script.clone();
        self.run(move |c| {
            Box::pin(async move {
                let mut inv = script.prepare_invoke();
                for k in keys {
                    inv.key(k);
                }
                for a in args {
                    inv.arg(a);
                }
                inv.invoke_async(c).await
            })
        })
        .await
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.query::<String>(redis::cmd("PING")).await.map(|_| ())
    }

    async fn create_session(
        &self,
        id: &SessionId,
        rec: &SessionRecord,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let args = vec![encode_record(rec)?, ms(ttl)];
        match self
            .eval::<i64, _>(&self.create, self.keys(id, &["s", "f"]), args)
            .await?
        {
            1 => self.index(id, rec, ttl).await,
            _ => Err(StoreError::Corrupt("session id collision".into())),
        }
    }

    async fn load_session(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET")
            .arg(self.key(id, "s"))
            .arg("v")
            .arg("d")
            .cmd("HGETALL")
            .arg(self.key(id, "i"));
        let ((v, d), calls): ((Option<u64>, Option<String>), HashMap<String, String>) =
            self.query_pipe(pipe).await?;
        let (Some(v), Some(d)) = (v, d) else {
            return Ok(None);
        };
        let mut rec = decode_record(v, &d)?;
        for (field, value) in calls {
            if field == "next" {
                rec.next_stream = rec.next_stream.max(value.parse().unwrap_or(0));
            } else if let Ok(stream) = field.parse::<StreamId>() {
                let call = serde_json::from_str(&value).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                rec.inflight.insert(stream, call);
            }
        }
        Ok(Some(rec))
    }

    async fn save_session(
        &self,
        fence: &Fence,
        rec: &SessionRecord,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let keys = self.keys(&fence.session, &["s", "l", "f", "i"]);
        let args = vec![
            fence.lease_value(),
            rec.version.to_string(),
            encode_record(rec)?,
            ms(ttl),
        ];
        check_status(self.eval(&self.save, keys, args).await?)?;
        self.index(&fence.session, rec, ttl).await
    }

    async fn delete_session(&self, id: &SessionId, streams: StreamId) -> Result<bool, StoreError> {
        let mut keys = self.keys(id, &["s", "l", "f", "i"]);
        keys.extend((0..streams.max(1)).map(|n| self.stream_key(id, n)));
        let mut pipe = redis::pipe();
        pipe.cmd("EXISTS").arg(&keys[0]).cmd("DEL").arg(keys);
        let (existed, _): (i64, i64) = self.query_pipe(pipe).await?;
        Ok(existed == 1)
    }

    async fn tenant_sessions(&self, tenant: &str, max: usize) -> Result<Vec<SessionId>, StoreError> {
        let key = self.index_key(tenant);
        let mut pipe = redis::pipe();
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(&key)
            .arg("-inf")
            .arg(super::now_ms())
            .ignore()
            .cmd("ZRANGE")
            .arg(&key)
            .arg(0)
            .arg(max.saturating_sub(1));
        let (ids,): (Vec<String>,) = self.query_pipe(pipe).await?;
        Ok(ids.iter().filter_map(|i| SessionId::parse(i)).collect())
    }

    async fn principal_upstreams(&self, key: &str) -> Result<HashMap<String, String>, StoreError> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.principal_key(key));
        self.query(cmd).await
    }

    async fn set_principal_upstream(
        &self,
        key: &str,
        upstream: &str,
        session: Option<&str>,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let key = self.principal_key(key);
        let mut pipe = redis::pipe();
        match session {
            Some(v) => pipe.cmd("HSET").arg(&key).arg(upstream).arg(v).ignore(),
            None => pipe.cmd("HDEL").arg(&key).arg(upstream).ignore(),
        };
        pipe.cmd("PEXPIRE").arg(&key).arg(ms(ttl)).ignore();
        self.query_pipe::<()>(pipe).await
    }

    async fn claim_once(&self, token: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(format!("{}:once:{{{token}}}", self.prefix))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ms(ttl));
        let set: Option<String> = self.query(cmd).await?;
        Ok(set.is_some())
    }

    async fn cluster_key(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>, StoreError> {
        let key = format!("{}:key:{name}", self.prefix);
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(&key)
            .arg(candidate)
            .arg("NX")
            .ignore()
            .cmd("GET")
            .arg(&key);
        let (got,): (Vec<u8>,) = self.query_pipe(pipe).await?;
        Ok(got)
    }

    async fn announce_ended(&self, id: &SessionId) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(self.ended_channel()).arg(id.as_str());
        self.query::<i64>(cmd).await.map(|_| ())
    }

    async fn ended_sessions(&self) -> Result<Option<super::EndedSessions>, StoreError> {
        use futures_util::StreamExt as _;
        let mut ps = self.pubsub().await?;
        ps.subscribe(self.ended_channel()).await.map_err(unavailable)?;
        let ids = ps.into_on_message().filter_map(|m| {
            std::future::ready(m.get_payload::<String>().ok().and_then(|p| SessionId::parse(&p)))
        });
        Ok(Some(Box::pin(ids)))
    }

    async fn acquire_lease(&self, id: &SessionId, holder: &str) -> Result<LeaseOutcome, StoreError> {
        let mut stale = String::new();
        // At most two rounds: find the holder; if its node is gone, take over exactly that lease.
        // The holder found gone in the first round, whose lease the second takes over.
        let mut gone: Option<String> = None;
        for _ in 0..2 {
            match self.take_lease(id, holder, stale).await? {
                (1, Some(t)) => {
                    if let Some(previous) = &gone {
                        // The holder's node record expired: it died (or lost the store).
                        marina_telemetry::metrics().takeover("owner_gone");
                        tracing::info!(
                            session = crate::telemetry::session_tag(id.as_str()),
                            previous,
                            "took over a session whose holder's node record is gone"
                        );
                    }
                    return acquired(id, holder, &t);
                }
                (2, Some(v)) => {
                    let owner = parse_lease(&v).0;
                    if owner == holder || self.node(&owner).await?.is_some() {
                        return Ok(LeaseOutcome::Held { holder: owner });
                    }
                    // Its record is gone — expired, or vanished early because Redis's clock
                    // jumped. A live owner announces itself again within the grace.
                    tokio::time::sleep(self.takeover_grace()).await;
                    if self.node(&owner).await?.is_some() {
                        return Ok(LeaseOutcome::Held { holder: owner });
                    }
                    gone = Some(owner);
                    stale = v;
                }
                _ => return Ok(LeaseOutcome::NoSession),
            }
        }
        // The lease changed hands between our look and our take-over: someone else won.
        Ok(self
            .lease_holder(id)
            .await?
            .map_or(LeaseOutcome::NoSession, |holder| LeaseOutcome::Held { holder }))
    }

    async fn reclaim_lease(&self, id: &SessionId, holder: &str) -> Result<LeaseOutcome, StoreError> {
        let current: Option<String> = self
            .query(redis::cmd("GET").arg(self.key(id, "l")).clone())
            .await?;
        let Some(stale) = current.filter(|v| parse_lease(v).0 == holder) else {
            return self.acquire_lease(id, holder).await;
        };
        // Compare-and-set on exactly the value we found: if anything changed since, we lose.
        Ok(match self.take_lease(id, holder, stale).await? {
            (1, Some(t)) => {
                // Our own lease, whose actor stopped when this node's liveness lapsed.
                marina_telemetry::metrics().takeover("lease_expired");
                return acquired(id, holder, &t);
            }
            (2, Some(v)) => LeaseOutcome::Held {
                holder: parse_lease(&v).0,
            },
            _ => LeaseOutcome::NoSession,
        })
    }

    async fn release_lease(&self, fence: &Fence) -> Result<(), StoreError> {
        let keys = self.keys(&fence.session, &["l"]);
        self.eval::<i64, _>(&self.release, keys, vec![fence.lease_value()])
            .await
            .map(|_| ())
    }

    async fn lease_holder(&self, id: &SessionId) -> Result<Option<String>, StoreError> {
        let v: Option<String> = self
            .query(redis::cmd("GET").arg(self.key(id, "l")).clone())
            .await?;
        Ok(v.map(|v| parse_lease(&v).0))
    }

    async fn append_event(
        &self,
        fence: &Fence,
        stream: StreamId,
        data: &str,
        cap: usize,
        ttl: Duration,
    ) -> Result<String, StoreError> {
        let keys = vec![
            self.stream_key(&fence.session, stream),
            self.key(&fence.session, "l"),
        ];
        let args = vec![fence.lease_value(), data.to_owned(), cap.to_string(), ms(ttl)];
        let id: String = self.eval(&self.append, keys, args).await?;
        if id.is_empty() {
            Err(StoreError::Fenced)
        } else {
            Ok(id)
        }
    }

    async fn begin_call(
        &self,
        fence: &Fence,
        stream: StreamId,
        call: &InflightCall,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(call).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let keys = self.keys(&fence.session, &["l", "i", "s"]);
        let args = vec![fence.lease_value(), stream.to_string(), json, ms(ttl)];
        check_status(self.eval(&self.begin, keys, args).await?)
    }

    async fn complete_stream(
        &self,
        fence: &Fence,
        stream: StreamId,
        data: Option<&str>,
        cap: usize,
        ttl: Duration,
    ) -> Result<Option<String>, StoreError> {
        let id = &fence.session;
        let keys = vec![
            self.stream_key(id, stream),
            self.key(id, "l"),
            self.key(id, "i"),
            self.key(id, "s"),
        ];
        let args = vec![
            fence.lease_value(),
            data.unwrap_or_default().to_owned(),
            cap.to_string(),
            ms(ttl),
            stream.to_string(),
        ];
        let (status, entry) = status_and_detail(self.eval(&self.complete, keys, args).await?)?;
        check_status(status)?;
        Ok(entry.filter(|e| !e.is_empty()))
    }

    async fn read_events(
        &self,
        id: &SessionId,
        stream: StreamId,
        after: &str,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let cmd = redis::cmd("XRANGE")
            .arg(self.stream_key(id, stream))
            .arg(format!("({after}"))
            .arg("+")
            .arg("COUNT")
            .arg(limit)
            .clone();
        events_from(self.query(cmd).await?)
    }

    async fn last_entry(&self, id: &SessionId, stream: StreamId) -> Result<Option<String>, StoreError> {
        let cmd = redis::cmd("XREVRANGE")
            .arg(self.stream_key(id, stream))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .clone();
        Ok(events_from(self.query(cmd).await?)?
            .into_iter()
            .next()
            .map(|e| e.entry))
    }

    async fn register_node(&self, node: &NodeInfo, ttl: Duration) -> Result<bool, StoreError> {
        let v = serde_json::to_string(node).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX / 2);
        self.node_ttl_ms.store(ttl_ms, Ordering::Relaxed);
        let now = super::now_ms();
        let until = now + ttl_ms;
        let dir = self.nodes_key();
        // The record first: the directory only points at records, listing reads them. GET: the
        // previous record, to tell whether it vanished before its time.
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.node_key(&node.instance))
            .arg(v)
            .arg("PX")
            .arg(ms(ttl))
            .arg("GET")
            .cmd("ZADD")
            .arg(&dir)
            .arg(until)
            .arg(&node.instance)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&dir)
            .arg("-inf")
            .arg(format!("({now}"))
            .ignore()
            // Gone with the last node's record.
            .cmd("PEXPIRE")
            .arg(&dir)
            .arg(ms(ttl))
            .arg("NX")
            .ignore()
            .cmd("PEXPIRE")
            .arg(&dir)
            .arg(ms(ttl))
            .arg("GT")
            .ignore();
        let (previous,): (Option<String>,) = self.query_pipe(pipe).await?;
        Ok(previous.is_some())
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>, StoreError> {
        let now = super::now_ms();
        let instances: Vec<String> = self
            .query(
                redis::cmd("ZRANGEBYSCORE")
                    .arg(self.nodes_key())
                    .arg(now)
                    .arg("+inf")
                    .clone(),
            )
            .await?;
        if instances.is_empty() {
            return Ok(Vec::new());
        }
        // One GET per node (their keys are in different slots), in one round trip.
        let mut pipe = redis::pipe();
        for i in &instances {
            pipe.cmd("GET").arg(self.node_key(i));
        }
        let records: Vec<Option<String>> = self.query_pipe(pipe).await?;
        records
            .into_iter()
            .flatten()
            .map(|v| serde_json::from_str(&v).map_err(|e| StoreError::Corrupt(e.to_string())))
            .collect()
    }

    async fn node(&self, instance: &str) -> Result<Option<NodeInfo>, StoreError> {
        let v: Option<String> = self
            .query(redis::cmd("GET").arg(self.node_key(instance)).clone())
            .await?;
        v.map(|v| serde_json::from_str(&v).map_err(|e| StoreError::Corrupt(e.to_string())))
            .transpose()
    }

    async fn unregister_node(&self, instance: &str) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("DEL")
            .arg(self.node_key(instance))
            .ignore()
            .cmd("ZREM")
            .arg(self.nodes_key())
            .arg(instance)
            .ignore();
        self.query_pipe::<()>(pipe).await
    }
}

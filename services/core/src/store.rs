//! The session store: everything a session needs to survive its node — the session record, the
//! actor lease with its fencing token, the per-stream event logs, and the node directory.
//!
//! Two implementations share this trait and one conformance suite (`suite`): [`MemoryStore`] for
//! the single-node embedded default and [`RedisStore`] for clusters.

mod memory;
mod metered;
mod redis;
#[cfg(any(test, feature = "test-suite"))]
pub mod suite;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::{SessionId, StreamId};

pub use self::memory::MemoryStore;
pub use self::metered::MeteredStore;
pub use self::redis::RedisStore;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backing store cannot be reached or did not answer in time (→ HTTP 503).
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// The caller no longer holds the session's lease; its write was refused.
    #[error("session lease lost")]
    Fenced,
    /// The session no longer exists.
    #[error("session gone")]
    Gone,
    /// Stored data could not be decoded.
    #[error("corrupt session data: {0}")]
    Corrupt(String),
}

/// A request that was running when the record was saved. If the node dies, the next holder gives
/// it a definite outcome: re-run when `replayable`, otherwise an "interrupted" error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InflightCall {
    /// The client's JSON-RPC request id.
    pub request_id: Value,
    /// The method (`tools/call`).
    pub method: String,
    /// The request params as received (tool name, arguments, `_meta`).
    pub params: Value,
    /// Safe to run again (the tool is annotated read-only and idempotent).
    pub replayable: bool,
}

/// Everything about a session that must outlive its actor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Tenant the session belongs to.
    pub tenant: String,
    /// Principal the session is bound to (`None` on a tenant without authentication).
    pub principal: Option<crate::domain::Owner>,
    /// Negotiated protocol version.
    pub protocol_version: String,
    /// Client capabilities from `initialize`.
    pub client_capabilities: Value,
    /// Client info from `initialize`.
    pub client_info: Value,
    /// Sessions with upstream MCP servers, by upstream name.
    #[serde(default)]
    pub upstreams: BTreeMap<String, crate::tools::UpstreamSession>,
    /// Minimum level of `notifications/message` (set by `logging/setLevel`).
    pub log_level: Option<String>,
    /// `notifications/initialized` received.
    pub initialized: bool,
    /// Creation time (ms since the epoch).
    pub created_at_ms: u64,
    /// Absolute expiry (ms since the epoch), whatever the activity.
    pub expires_at_ms: u64,
    /// Last written (ms since the epoch): the session's last use, to within the tenth of the
    /// idle TTL after which a used session is saved again.
    #[serde(default)]
    pub last_used_ms: u64,
    /// Next POST stream number (stream 0 is the GET stream). Persisted by
    /// [`SessionStore::begin_call`]; loading merges it.
    pub next_stream: StreamId,
    /// Requests in flight, by the stream that carries their response. Kept apart from the
    /// record in the store (one field per call, written by [`SessionStore::begin_call`] and
    /// cleared by [`SessionStore::complete_stream`]), so concurrent calls never rewrite each
    /// other's state; loading merges them.
    #[serde(skip)]
    pub inflight: BTreeMap<StreamId, InflightCall>,
    /// Write version; a save with a version not above the stored one is ignored, so writes that
    /// complete out of order never roll state back.
    #[serde(skip)]
    pub version: u64,
}

impl SessionRecord {
    /// TTL to give the session's keys now: the idle TTL, capped by the absolute expiry. `None`
    /// when the session has reached its absolute maximum.
    pub fn ttl(&self, idle: Duration) -> Option<Duration> {
        let left = self.expires_at_ms.saturating_sub(now_ms());
        (left > 0).then(|| idle.min(Duration::from_millis(left)))
    }
}

/// Proof of holding a session's lease: the holder's instance name and the fencing token the store
/// issued. Every write of the holder carries it; writes with a stale token are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The session.
    pub session: SessionId,
    /// The holder's instance name (`<node-id>/<boot nonce>`).
    pub holder: String,
    /// Monotonic per session.
    pub token: u64,
}

impl Fence {
    /// The lease value as stored.
    pub fn lease_value(&self) -> String {
        format!("{}|{}", self.holder, self.token)
    }
}

/// How long a node whose record it finds missing waits, and looks again, before it takes that
/// node's sessions over: half the lease TTL. A record can vanish before its time — Redis expires
/// keys by its wall clock, which jumps when the host's clock is stepped or its VM resumes from a
/// pause — while the node itself, which counts on a monotonic clock, is alive and still serving;
/// it re-announces within a third of the TTL, so a live node's record is back before the grace
/// ends. A node that finds its own record gone after a gap at least this long handles it as a
/// lapse (`Node::heartbeat`), so no two nodes ever both run a session.
pub fn takeover_grace(lease_ttl: Duration) -> Duration {
    lease_ttl / 2
}

/// Result of trying to take a session's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// We hold it now.
    Acquired(Fence),
    /// Someone holds it (possibly another worker of this very node).
    Held {
        /// The holder's instance name.
        holder: String,
    },
    /// There is no such session (never existed, expired or deleted).
    NoSession,
}

/// One persisted SSE event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Entry id within the stream (`<ms>-<seq>`).
    pub entry: String,
    /// The JSON-RPC message, serialized.
    pub data: String,
}

/// A node as seen by its peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Instance name (`<node-id>/<boot nonce>`).
    pub instance: String,
    /// Where peers forward requests for sessions this node holds.
    pub url: String,
    /// The node is shutting down (from the SIGTERM on, delay included): peers hand it no new
    /// work.
    pub draining: bool,
}

/// Announcements of sessions ended elsewhere ([`SessionStore::ended_sessions`]).
pub type EndedSessions = futures_util::stream::BoxStream<'static, SessionId>;

/// The session store.
#[async_trait]
pub trait SessionStore: Send + Sync + std::fmt::Debug + 'static {
    /// Is the store reachable?
    async fn ping(&self) -> Result<(), StoreError>;
    /// Persist a new session (version 1).
    async fn create_session(
        &self,
        id: &SessionId,
        rec: &SessionRecord,
        ttl: Duration,
    ) -> Result<(), StoreError>;
    /// Load a session, if it exists.
    async fn load_session(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError>;
    /// Write a session record through (fenced, versioned) and refresh its TTL.
    async fn save_session(&self, fence: &Fence, rec: &SessionRecord, ttl: Duration)
    -> Result<(), StoreError>;
    /// Delete a session and all its keys (streams `0..streams`). Returns whether it existed.
    async fn delete_session(&self, id: &SessionId, streams: StreamId) -> Result<bool, StoreError>;
    /// Take the session's lease if nobody holds it, or if its holder's node is no longer alive
    /// (its node record expired, and is still missing after [`takeover_grace`]). A lease has no
    /// TTL of its own: it is valid while its holder's node renews its record
    /// ([`Self::register_node`]), so liveness costs one write per node, not one per session.
    /// Taking over bumps the fencing token, which fences the old holder.
    async fn acquire_lease(&self, id: &SessionId, holder: &str) -> Result<LeaseOutcome, StoreError>;
    /// Like [`Self::acquire_lease`], and also take over a lease that names `holder` itself, with
    /// a fresh fencing token. Only for a holder that knows it runs no actor for the session (an
    /// actor stopped while the store was unreachable, so it could not release): the new token
    /// fences anything the old actor might still try to write.
    async fn reclaim_lease(&self, id: &SessionId, holder: &str) -> Result<LeaseOutcome, StoreError>;
    /// Give the lease up (only if it is still ours).
    async fn release_lease(&self, fence: &Fence) -> Result<(), StoreError>;
    /// Who holds the lease now, if anyone.
    async fn lease_holder(&self, id: &SessionId) -> Result<Option<String>, StoreError>;
    /// Append an event to a stream (fenced), trimming the stream to `cap` entries and refreshing
    /// its TTL. Returns the entry id.
    async fn append_event(
        &self,
        fence: &Fence,
        stream: StreamId,
        data: &str,
        cap: usize,
        ttl: Duration,
    ) -> Result<String, StoreError>;
    /// Record a call as in flight on `stream` (fenced) and advance the session's stream counter
    /// past it, before any of the call's work starts: if the node dies, the next holder finds the
    /// call and gives it an outcome.
    async fn begin_call(
        &self,
        fence: &Fence,
        stream: StreamId,
        call: &InflightCall,
        ttl: Duration,
    ) -> Result<(), StoreError>;
    /// Finish a stream atomically (fenced): append its final message (if any — a cancelled call
    /// has none) and clear its in-flight entry. Returns the entry id of the message.
    async fn complete_stream(
        &self,
        fence: &Fence,
        stream: StreamId,
        data: Option<&str>,
        cap: usize,
        ttl: Duration,
    ) -> Result<Option<String>, StoreError>;
    /// Events of a stream strictly after `after` (an entry id), oldest first, at most `limit`.
    async fn read_events(
        &self,
        id: &SessionId,
        stream: StreamId,
        after: &str,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError>;
    /// The last entry id of a stream, if it has any.
    async fn last_entry(&self, id: &SessionId, stream: StreamId) -> Result<Option<String>, StoreError>;
    /// Sessions of `tenant` that may be live, at most `max`: an index that creating and saving a
    /// session keep (each entry expires with its session's TTL). A session deleted since may
    /// still be listed; callers load each one.
    async fn tenant_sessions(&self, tenant: &str, max: usize) -> Result<Vec<SessionId>, StoreError>;
    /// Tell every node that session `id` was ended from outside its actor (an administrator):
    /// its keys are already gone, and the node running its actor stops it.
    async fn announce_ended(&self, id: &SessionId) -> Result<(), StoreError>;
    /// The announcements of [`Self::announce_ended`] as they arrive; `None` when the store serves
    /// a single node (nothing to listen to). A stream that ends lost its connection and may have
    /// missed some: the caller subscribes again and checks its own sessions.
    async fn ended_sessions(&self) -> Result<Option<EndedSessions>, StoreError>;
    /// The upstream sessions one principal of a tenant shares across stateless (2026-07-28)
    /// requests, under `key`: upstream name → session JSON. Any node continues them.
    async fn principal_upstreams(&self, key: &str) -> Result<HashMap<String, String>, StoreError>;
    /// Remember (`Some`) or forget (`None`) one of them; the set expires `ttl` after its last
    /// write.
    async fn set_principal_upstream(
        &self,
        key: &str,
        upstream: &str,
        session: Option<&str>,
        ttl: Duration,
    ) -> Result<(), StoreError>;
    /// Claim `token` for the first and only time within `ttl`: `true` the first time, `false` on
    /// every later claim (a replayed single-use token).
    async fn claim_once(&self, token: &str, ttl: Duration) -> Result<bool, StoreError>;
    /// The cluster's key `name`: the first node to ask stores `candidate` and every node gets
    /// that one.
    async fn cluster_key(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>, StoreError>;
    /// Announce (or refresh) a node; it is alive — and its leases valid — for `ttl`. Whether
    /// its previous record was still there: one that vanished before its time (the store's
    /// clock stepped forward, or someone removed it) may have let a peer take its sessions over.
    async fn register_node(&self, node: &NodeInfo, ttl: Duration) -> Result<bool, StoreError>;
    /// Look a node up.
    async fn node(&self, instance: &str) -> Result<Option<NodeInfo>, StoreError>;
    /// Every node alive now (the directory a draining node hands new work on from).
    async fn nodes(&self) -> Result<Vec<NodeInfo>, StoreError>;
    /// Remove a node's announcement.
    async fn unregister_node(&self, instance: &str) -> Result<(), StoreError>;
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) fn encode_record(rec: &SessionRecord) -> Result<String, StoreError> {
    serde_json::to_string(rec).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn decode_record(version: u64, json: &str) -> Result<SessionRecord, StoreError> {
    let mut rec: SessionRecord =
        serde_json::from_str(json).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    rec.version = version;
    Ok(rec)
}

pub(crate) fn parse_lease(value: &str) -> (String, u64) {
    match value.rsplit_once('|') {
        Some((h, t)) => (h.to_owned(), t.parse().unwrap_or(0)),
        None => (value.to_owned(), 0),
    }
}

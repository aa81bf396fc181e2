//! The store as the node uses it: every call of the [`SessionStore`] trait timed and its failures
//! counted (`marina_store_operation_duration_seconds`, `marina_store_errors_total`), whichever
//! store is behind it. One decorator, so no store method is measured by hand. Within a traced
//! request each call is also a CLIENT span (`db.system.name`: `redis` or `memory`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{
    EndedSessions, Fence, InflightCall, LeaseOutcome, NodeInfo, SessionRecord, SessionStore, StoreError,
    StoredEvent,
};
use crate::domain::{SessionId, StreamId};

/// A store whose every call is measured; `system` is `db_system_name` (`redis`, `memory`).
#[derive(Debug)]
pub struct MeteredStore {
    inner: Arc<dyn SessionStore>,
    system: &'static str,
}

impl MeteredStore {
    /// Measure `inner`.
    pub fn new(inner: Arc<dyn SessionStore>, system: &'static str) -> Self {
        Self { inner, system }
    }
}

/// `error_type` of a failed call: domain outcomes (fenced, gone) are answers, not failures.
fn error_type(e: &StoreError) -> Option<&'static str> {
    match e {
        StoreError::Unavailable(m) if m.contains("timed out") => Some("timeout"),
        StoreError::Unavailable(_) => Some("io"),
        StoreError::Corrupt(_) => Some("response"),
        StoreError::Fenced | StoreError::Gone => None,
    }
}

macro_rules! measured {
    ($self:ident, $op:literal, $call:expr) => {{
        let started = Instant::now();
        // Inside a traced request, each round trip is a span of its trace, from here until it
        // is dropped. Nothing within the call starts a span or carries a context, so the call is
        // not run inside it (that would cost a context switch per poll for nothing).
        let span = marina_telemetry::traces::store_span($op, $self.system);
        let r = $call.await;
        let error = r.as_ref().err().and_then(error_type);
        if let Some(e) = error {
            span.record_error(e);
        }
        marina_telemetry::metrics().store_operation($op, $self.system, started.elapsed(), error);
        drop(span);
        r
    }};
}

#[async_trait]
impl SessionStore for MeteredStore {
    async fn ping(&self) -> Result<(), StoreError> {
        measured!(self, "ping", self.inner.ping())
    }
    async fn create_session(
        &self,
        id: &SessionId,
        rec: &SessionRecord,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        measured!(self, "create_session", self.inner.create_session(id, rec, ttl))
    }
    async fn load_session(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        measured!(self, "load_session", self.inner.load_session(id))
    }
    async fn save_session(
        &self,
        fence: &Fence,
        rec: &SessionRecord,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        measured!(self, "save_session", self.inner.save_session(fence, rec, ttl))
    }
    async fn delete_session(&self, id: &SessionId, streams: StreamId) -> Result<bool, StoreError> {
        measured!(self, "delete_session", self.inner.delete_session(id, streams))
    }
    async fn acquire_lease(&self, id: &SessionId, holder: &str) -> Result<LeaseOutcome, StoreError> {
        measured!(self, "acquire_lease", self.inner.acquire_lease(id, holder))
    }
    async fn reclaim_lease(&self, id: &SessionId, holder: &str) -> Result<LeaseOutcome, StoreError> {
        measured!(self, "reclaim_lease", self.inner.reclaim_lease(id, holder))
    }
    async fn release_lease(&self, fence: &Fence) -> Result<(), StoreError> {
        measured!(self, "release_lease", self.inner.release_lease(fence))
    }
    async fn lease_holder(&self, id: &SessionId) -> Result<Option<String>, StoreError> {
        measured!(self, "lease_holder", self.inner.lease_holder(id))
    }
    async fn append_event(
        &self,
        fence: &Fence,
        stream: StreamId,
        data: &str,
        cap: usize,
        ttl: Duration,
    ) -> Result<String, StoreError> {
        measured!(
            self,
            "append_event",
            self.inner.append_event(fence, stream, data, cap, ttl)
        )
    }
    async fn begin_call(
        &self,
        fence: &Fence,
        stream: StreamId,
        call: &InflightCall,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        measured!(
            self,
            "begin_call",
            self.inner.begin_call(fence, stream, call, ttl)
        )
    }
    async fn complete_stream(
        &self,
        fence: &Fence,
        stream: StreamId,
        data: Option<&str>,
        cap: usize,
        ttl: Duration,
    ) -> Result<Option<String>, StoreError> {
        measured!(
            self,
            "complete_stream",
            self.inner.complete_stream(fence, stream, data, cap, ttl)
        )
    }
    async fn read_events(
        &self,
        id: &SessionId,
        stream: StreamId,
        after: &str,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        measured!(
            self,
            "read_events",
            self.inner.read_events(id, stream, after, limit)
        )
    }
    async fn last_entry(&self, id: &SessionId, stream: StreamId) -> Result<Option<String>, StoreError> {
        measured!(self, "last_entry", self.inner.last_entry(id, stream))
    }
    async fn tenant_sessions(&self, tenant: &str, max: usize) -> Result<Vec<SessionId>, StoreError> {
        measured!(self, "tenant_sessions", self.inner.tenant_sessions(tenant, max))
    }
    async fn announce_ended(&self, id: &SessionId) -> Result<(), StoreError> {
        measured!(self, "announce_ended", self.inner.announce_ended(id))
    }
    async fn ended_sessions(&self) -> Result<Option<EndedSessions>, StoreError> {
        measured!(self, "ended_sessions", self.inner.ended_sessions())
    }
    async fn principal_upstreams(&self, key: &str) -> Result<HashMap<String, String>, StoreError> {
        measured!(self, "principal_upstreams", self.inner.principal_upstreams(key))
    }
    async fn set_principal_upstream(
        &self,
        key: &str,
        upstream: &str,
        session: Option<&str>,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        measured!(
            self,
            "set_principal_upstream",
            self.inner.set_principal_upstream(key, upstream, session, ttl)
        )
    }
    async fn claim_once(&self, token: &str, ttl: Duration) -> Result<bool, StoreError> {
        measured!(self, "claim_once", self.inner.claim_once(token, ttl))
    }
    async fn cluster_key(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>, StoreError> {
        measured!(self, "cluster_key", self.inner.cluster_key(name, candidate))
    }
    async fn register_node(&self, node: &NodeInfo, ttl: Duration) -> Result<bool, StoreError> {
        measured!(self, "register_node", self.inner.register_node(node, ttl))
    }
    async fn node(&self, instance: &str) -> Result<Option<NodeInfo>, StoreError> {
        measured!(self, "node", self.inner.node(instance))
    }
    async fn nodes(&self) -> Result<Vec<NodeInfo>, StoreError> {
        measured!(self, "nodes", self.inner.nodes())
    }
    async fn unregister_node(&self, instance: &str) -> Result<(), StoreError> {
        measured!(self, "unregister_node", self.inner.unregister_node(instance))
    }
}

//! In-memory session store for the single-node embedded default. Same semantics as Redis —
//! TTLs, fencing, capped streams — so the shared suite holds for both.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{
    Fence, InflightCall, LeaseOutcome, NodeInfo, SessionId, SessionRecord, SessionStore, StoreError,
    StoredEvent, decode_record, encode_record,
};
use crate::domain::{StreamId, entry_key};

/// How many operations between sweeps of expired entries.
const SWEEP_EVERY: u64 = 1024;

#[derive(Debug)]
struct Expiring<T> {
    value: T,
    expires: Instant,
}

impl<T> Expiring<T> {
    fn new(value: T, ttl: Duration) -> Self {
        Self {
            value,
            expires: Instant::now() + ttl,
        }
    }
    fn live(&self) -> bool {
        self.expires > Instant::now()
    }
}

#[derive(Debug, Default)]
struct EventLog {
    entries: VecDeque<(u64, String)>,
    next: u64,
}

#[derive(Debug, Default)]
struct Inner {
    sessions: HashMap<SessionId, Expiring<(u64, String)>>,
    leases: HashMap<SessionId, (String, u64)>,
    fences: HashMap<SessionId, u64>,
    /// In-flight calls and the stream counter, per session.
    calls: HashMap<SessionId, (StreamId, BTreeMap<StreamId, String>)>,
    events: HashMap<(SessionId, StreamId), Expiring<EventLog>>,
    nodes: HashMap<String, Expiring<NodeInfo>>,
    principal_upstreams: HashMap<String, Expiring<HashMap<String, String>>>,
    claimed: HashMap<String, Expiring<()>>,
    keys: HashMap<String, Vec<u8>>,
    ops: u64,
}

impl Inner {
    fn tick(&mut self) {
        self.ops += 1;
        if self.ops.is_multiple_of(SWEEP_EVERY) {
            self.sessions.retain(|_, v| v.live());
            self.events.retain(|_, v| v.live());
            self.nodes.retain(|_, v| v.live());
            self.principal_upstreams.retain(|_, v| v.live());
            self.claimed.retain(|_, v| v.live());
            let sessions = &self.sessions;
            self.fences.retain(|k, _| sessions.contains_key(k));
            self.leases.retain(|k, _| sessions.contains_key(k));
            self.calls.retain(|k, _| sessions.contains_key(k));
        }
    }

    fn session_live(&self, id: &SessionId) -> bool {
        self.sessions.get(id).is_some_and(Expiring::live)
    }

    fn lease(&self, id: &SessionId) -> Option<&(String, u64)> {
        self.leases.get(id).filter(|_| self.session_live(id))
    }

    fn node_alive(&self, instance: &str) -> bool {
        self.nodes.get(instance).is_some_and(Expiring::live)
    }

    /// Append to a stream's log (caller checked the fence); returns the entry id.
    fn append(&mut self, id: &SessionId, stream: StreamId, data: &str, cap: usize, ttl: Duration) -> String {
        let slot = self
            .events
            .entry((id.clone(), stream))
            .or_insert_with(|| Expiring::new(EventLog::default(), ttl));
        if !slot.live() {
            *slot = Expiring::new(EventLog::default(), ttl);
        }
        slot.expires = Instant::now() + ttl;
        let log = &mut slot.value;
        log.next += 1;
        log.entries.push_back((log.next, data.to_owned()));
        while log.entries.len() > cap {
            log.entries.pop_front();
        }
        format!("{}-0", log.next)
    }

    /// Take the lease if it is free, its holder's node is dead, or (`reclaim`) it names `holder`
    /// itself; a fresh fencing token either way.
    fn take_lease(&mut self, id: &SessionId, holder: &str, reclaim: bool) -> LeaseOutcome {
        if !self.session_live(id) {
            return LeaseOutcome::NoSession;
        }
        if let Some((h, _)) = self.lease(id)
            && ((h == holder && !reclaim) || (h != holder && self.node_alive(h)))
        {
            return LeaseOutcome::Held { holder: h.clone() };
        }
        let token = self.fences.entry(id.clone()).or_insert(0);
        *token += 1;
        let token = *token;
        self.leases.insert(id.clone(), (holder.to_owned(), token));
        LeaseOutcome::Acquired(Fence {
            session: id.clone(),
            holder: holder.to_owned(),
            token,
        })
    }

    fn holds(&self, fence: &Fence) -> bool {
        self.lease(&fence.session) == Some(&(fence.holder.clone(), fence.token))
    }
}

/// The in-memory store.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        // A poisoned lock means a panic mid-update elsewhere; the maps are still structurally
        // sound, so keep serving rather than cascading the panic.
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.tick();
        f(&mut g)
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn create_session(
        &self,
        id: &SessionId,
        rec: &SessionRecord,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let json = encode_record(rec)?;
        self.with(|s| {
            if s.session_live(id) {
                return Err(StoreError::Corrupt("session id collision".into()));
            }
            s.sessions.insert(id.clone(), Expiring::new((1, json), ttl));
            Ok(())
        })
    }

    async fn load_session(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        let found = self.with(|s| {
            s.sessions
                .get(id)
                .filter(|e| e.live())
                .map(|e| (e.value.0, e.value.1.clone(), s.calls.get(id).cloned()))
        });
        let Some((v, json, calls)) = found else {
            return Ok(None);
        };
        let mut rec = decode_record(v, &json)?;
        if let Some((next, calls)) = calls {
            rec.next_stream = rec.next_stream.max(next);
            for (stream, call) in calls {
                rec.inflight.insert(
                    stream,
                    serde_json::from_str(&call).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                );
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
        let json = encode_record(rec)?;
        self.with(|s| {
            if !s.holds(fence) {
                return Err(StoreError::Fenced);
            }
            let Some(cur) = s.sessions.get_mut(&fence.session).filter(|e| e.live()) else {
                return Err(StoreError::Gone);
            };
            if cur.value.0 < rec.version {
                *cur = Expiring::new((rec.version, json), ttl);
            }
            Ok(())
        })
    }

    async fn delete_session(&self, id: &SessionId, streams: StreamId) -> Result<bool, StoreError> {
        Ok(self.with(|s| {
            let existed = s.sessions.remove(id).is_some_and(|e| e.live());
            s.leases.remove(id);
            s.fences.remove(id);
            s.calls.remove(id);
            for n in 0..streams.max(1) {
                s.events.remove(&(id.clone(), n));
            }
            existed
        }))
    }

    async fn tenant_sessions(&self, tenant: &str, max: usize) -> Result<Vec<SessionId>, StoreError> {
        // No index here: one node's sessions, read by an administrator now and then.
        Ok(self.with(|s| {
            s.sessions
                .iter()
                .filter(|(_, e)| e.live())
                .filter(|(_, e)| {
                    serde_json::from_str::<serde_json::Value>(&e.value.1).is_ok_and(|d| d["tenant"] == tenant)
                })
                .map(|(id, _)| id.clone())
                .take(max)
                .collect()
        }))
    }

    async fn principal_upstreams(&self, key: &str) -> Result<HashMap<String, String>, StoreError> {
        Ok(self.with(|s| {
            s.principal_upstreams
                .get(key)
                .filter(|e| e.live())
                .map(|e| e.value.clone())
                .unwrap_or_default()
        }))
    }

    async fn set_principal_upstream(
        &self,
        key: &str,
        upstream: &str,
        session: Option<&str>,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.with(|s| {
            let mut all = s
                .principal_upstreams
                .remove(key)
                .filter(|e| e.live())
                .map(|e| e.value)
                .unwrap_or_default();
            match session {
                Some(v) => all.insert(upstream.to_owned(), v.to_owned()),
                None => all.remove(upstream),
            };
            s.principal_upstreams
                .insert(key.to_owned(), Expiring::new(all, ttl));
        });
        Ok(())
    }

    async fn claim_once(&self, token: &str, ttl: Duration) -> Result<bool, StoreError> {
        Ok(self.with(|s| {
            if s.claimed.get(token).is_some_and(Expiring::live) {
                return false;
            }
            s.claimed.insert(token.to_owned(), Expiring::new((), ttl));
            true
        }))
    }

    async fn cluster_key(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>, StoreError> {
        Ok(self.with(|s| {
            s.keys
                .entry(name.to_owned())
                .or_insert_with(|| candidate.to_vec())
                .clone()
        }))
    }

    async fn announce_ended(&self, _id: &SessionId) -> Result<(), StoreError> {
        Ok(()) // one node: whoever ended the session already stopped its actor
    }

    async fn ended_sessions(&self) -> Result<Option<super::EndedSessions>, StoreError> {
        Ok(None)
    }

    async fn acquire_lease(&self, id: &SessionId, holder: &str) -> Result<LeaseOutcome, StoreError> {
        Ok(self.with(|s| s.take_lease(id, holder, false)))
    }

    async fn reclaim_lease(&self, id: &SessionId, holder: &str) -> Result<LeaseOutcome, StoreError> {
        Ok(self.with(|s| s.take_lease(id, holder, true)))
    }

    async fn release_lease(&self, fence: &Fence) -> Result<(), StoreError> {
        self.with(|s| {
            if s.holds(fence) {
                s.leases.remove(&fence.session);
            }
        });
        Ok(())
    }

    async fn lease_holder(&self, id: &SessionId) -> Result<Option<String>, StoreError> {
        Ok(self.with(|s| s.lease(id).map(|(h, _)| h.clone())))
    }

    async fn append_event(
        &self,
        fence: &Fence,
        stream: StreamId,
        data: &str,
        cap: usize,
        ttl: Duration,
    ) -> Result<String, StoreError> {
        self.with(|s| {
            if !s.holds(fence) {
                return Err(StoreError::Fenced);
            }
            Ok(s.append(&fence.session, stream, data, cap, ttl))
        })
    }

    async fn begin_call(
        &self,
        fence: &Fence,
        stream: StreamId,
        call: &InflightCall,
        _ttl: Duration,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(call).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.with(|s| {
            if !s.holds(fence) {
                return Err(StoreError::Fenced);
            }
            let (next, calls) = s.calls.entry(fence.session.clone()).or_default();
            *next = (*next).max(stream + 1);
            calls.insert(stream, json);
            Ok(())
        })
    }

    async fn complete_stream(
        &self,
        fence: &Fence,
        stream: StreamId,
        data: Option<&str>,
        cap: usize,
        ttl: Duration,
    ) -> Result<Option<String>, StoreError> {
        self.with(|s| {
            if !s.holds(fence) {
                return Err(StoreError::Fenced);
            }
            if !s.session_live(&fence.session) {
                return Err(StoreError::Gone);
            }
            let entry = data.map(|d| s.append(&fence.session, stream, d, cap, ttl));
            if let Some((_, calls)) = s.calls.get_mut(&fence.session) {
                calls.remove(&stream);
            }
            Ok(entry)
        })
    }

    async fn read_events(
        &self,
        id: &SessionId,
        stream: StreamId,
        after: &str,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let after = entry_key(after);
        Ok(self.with(|s| {
            let Some(slot) = s.events.get(&(id.clone(), stream)).filter(|e| e.live()) else {
                return Vec::new();
            };
            slot.value
                .entries
                .iter()
                .filter(|(n, _)| (*n, 0) > after)
                .take(limit)
                .map(|(n, d)| StoredEvent {
                    entry: format!("{n}-0"),
                    data: d.clone(),
                })
                .collect()
        }))
    }

    async fn last_entry(&self, id: &SessionId, stream: StreamId) -> Result<Option<String>, StoreError> {
        Ok(self.with(|s| {
            s.events
                .get(&(id.clone(), stream))
                .filter(|e| e.live())
                .and_then(|e| e.value.entries.back().map(|(n, _)| format!("{n}-0")))
        }))
    }

    async fn register_node(&self, node: &NodeInfo, ttl: Duration) -> Result<bool, StoreError> {
        Ok(self.with(|s| {
            s.nodes
                .insert(node.instance.clone(), Expiring::new(node.clone(), ttl))
                .is_some_and(|old| old.live())
        }))
    }

    async fn node(&self, instance: &str) -> Result<Option<NodeInfo>, StoreError> {
        Ok(self.with(|s| {
            s.nodes
                .get(instance)
                .filter(|n| n.live())
                .map(|n| n.value.clone())
        }))
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>, StoreError> {
        Ok(self.with(|s| {
            s.nodes
                .values()
                .filter(|n| n.live())
                .map(|n| n.value.clone())
                .collect()
        }))
    }

    async fn unregister_node(&self, instance: &str) -> Result<(), StoreError> {
        self.with(|s| s.nodes.remove(instance));
        Ok(())
    }
}

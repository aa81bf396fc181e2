//! This node: its identity, the registry of local session actors, and how a request finds the one
//! live actor of its session — locally, by activating it from the store, or on another node.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::{Actor as _, Addr};
use marina_core::domain::SessionId;
use marina_core::settings::SessionSettings;
use marina_core::store::{Fence, LeaseOutcome, NodeInfo, SessionRecord, SessionStore, StoreError, now_ms};
use marina_core::tenant::Tenant;

use crate::session::SessionActor;

/// How long a request waits for a session to become available (lease expiry of a dead holder,
/// or another worker activating it) on top of the lease TTL.
const RESOLVE_SLACK: Duration = Duration::from_secs(2);
/// Pause between attempts while a lease is held by a node we cannot reach.
const RESOLVE_BACKOFF: Duration = Duration::from_millis(100);

/// What a node needs to run sessions.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// `<node-id>/<boot nonce>`: a restarted node never mistakes its predecessor's leases for its own.
    pub instance: String,
    /// Session settings.
    pub sessions: SessionSettings,
}

/// Where the live actor of a session is.
#[derive(Debug)]
pub enum Resolved {
    /// On this node.
    Local(Addr<SessionActor>),
    /// On another node, reachable at `url`.
    Remote {
        /// Holder instance.
        holder: String,
        /// Its advertised base URL.
        url: String,
    },
}

/// Why a session could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// No such session (never issued, expired or deleted), or it belongs to another tenant.
    #[error("session not found")]
    NotFound,
    /// The store is unavailable.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The session is held elsewhere and did not become available in time.
    #[error("session busy")]
    Busy,
    /// This node is draining and does not activate sessions.
    #[error("node draining")]
    Draining,
}

/// This node.
#[derive(Debug)]
pub struct Node {
    /// The session store.
    pub store: Arc<dyn SessionStore>,
    /// Identity and session settings.
    pub config: NodeConfig,
    tenants: HashMap<String, Arc<Tenant>>,
    draining: AtomicBool,
    registry: Mutex<HashMap<SessionId, (u64, Addr<SessionActor>)>>,
    generation: AtomicU64,
    /// When this node last announced itself successfully.
    last_heartbeat: Mutex<Option<Instant>>,
    /// Actors started and not yet stopped (a retiring actor has left the registry but may still
    /// be releasing its lease; shutdown waits for it).
    running: AtomicUsize,
}

impl Node {
    /// A node serving `tenants` from `store`.
    pub fn new(store: Arc<dyn SessionStore>, config: NodeConfig, tenants: Vec<Arc<Tenant>>) -> Arc<Self> {
        Arc::new(Self {
            store,
            config,
            tenants: tenants.into_iter().map(|t| (t.id.clone(), t)).collect(),
            draining: AtomicBool::new(false),
            registry: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            running: AtomicUsize::new(0),
            last_heartbeat: Mutex::new(None),
        })
    }

    /// A tenant by id.
    pub fn tenant(&self, id: &str) -> Option<&Arc<Tenant>> {
        self.tenants.get(id)
    }

    /// Session settings.
    pub fn sessions(&self) -> &SessionSettings {
        &self.config.sessions
    }

    /// Is the node shutting down?
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Number of live (registered) actors on this node.
    pub fn live_sessions(&self) -> usize {
        self.lock().len()
    }

    /// Number of actors not yet stopped, including retiring ones.
    pub fn running_actors(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    pub(crate) fn actor_stopped(&self) {
        self.running.fetch_sub(1, Ordering::SeqCst);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, (u64, Addr<SessionActor>)>> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn local(&self, id: &SessionId) -> Option<Addr<SessionActor>> {
        self.lock()
            .get(id)
            .filter(|(_, a)| a.connected())
            .map(|(_, a)| a.clone())
    }

    pub(crate) fn unregister(&self, id: &SessionId, generation: u64) {
        let mut reg = self.lock();
        if reg.get(id).is_some_and(|(g, _)| *g == generation) {
            reg.remove(id);
        }
    }

    /// Create a session for `tenant` and activate its actor here.
    pub async fn create_session(
        self: &Arc<Self>,
        tenant: Arc<Tenant>,
        rec: SessionRecord,
    ) -> Result<SessionId, ResolveError> {
        if self.is_draining() {
            return Err(ResolveError::Draining);
        }
        let id = SessionId::generate();
        let ttl = rec
            .ttl(self.sessions().idle_ttl())
            .ok_or(ResolveError::NotFound)?;
        self.store.create_session(&id, &rec, ttl).await?;
        match self.store.acquire_lease(&id, &self.config.instance).await? {
            LeaseOutcome::Acquired(fence) => {
                self.activate(tenant, fence, rec);
                Ok(id)
            }
            _ => Err(ResolveError::Busy),
        }
    }

    /// Find the live actor of session `id` of `tenant`: local, activated here from the store, or
    /// (when `may_forward`) on another reachable node. `avoid` names a holder we just failed to
    /// reach; we then wait for its lease to expire instead of forwarding to it again.
    pub async fn resolve(
        self: &Arc<Self>,
        tenant: &str,
        id: &SessionId,
        may_forward: bool,
        avoid: Option<&str>,
    ) -> Result<Resolved, ResolveError> {
        let deadline = Instant::now() + self.sessions().lease_ttl() + RESOLVE_SLACK;
        loop {
            if let Some(addr) = self.local(id) {
                return Ok(Resolved::Local(addr));
            }
            let outcome = if self.is_draining() {
                // A draining node never takes new leases; it only says who holds the session.
                match self.store.lease_holder(id).await? {
                    Some(holder) => LeaseOutcome::Held { holder },
                    None => return Err(ResolveError::Draining),
                }
            } else {
                self.store.acquire_lease(id, &self.config.instance).await?
            };
            match outcome {
                LeaseOutcome::NoSession => return Err(ResolveError::NotFound),
                LeaseOutcome::Acquired(fence) => {
                    let Some(rec) = self.store.load_session(id).await? else {
                        self.store.release_lease(&fence).await?;
                        return Err(ResolveError::NotFound);
                    };
                    let Some(t) = self.tenants.get(&rec.tenant).filter(|t| t.id == tenant).cloned() else {
                        self.store.release_lease(&fence).await?;
                        return Err(ResolveError::NotFound);
                    };
                    if rec.expires_at_ms <= now_ms() {
                        self.store.delete_session(id, rec.next_stream).await?;
                        return Err(ResolveError::NotFound);
                    }
                    return Ok(Resolved::Local(self.activate(t, fence, rec)));
                }
                LeaseOutcome::Held { holder } if holder == self.config.instance => {
                    // Another worker of this node is activating it right now.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                LeaseOutcome::Held { holder } => {
                    if may_forward
                        && avoid != Some(holder.as_str())
                        && let Some(node) = self.store.node(&holder).await?
                    {
                        return Ok(Resolved::Remote {
                            holder,
                            url: node.url,
                        });
                    }
                    tokio::time::sleep(RESOLVE_BACKOFF).await;
                }
            }
            if Instant::now() > deadline {
                return Err(ResolveError::Busy);
            }
        }
    }

    fn activate(
        self: &Arc<Self>,
        tenant: Arc<Tenant>,
        fence: Fence,
        rec: SessionRecord,
    ) -> Addr<SessionActor> {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        self.running.fetch_add(1, Ordering::SeqCst);
        let id = fence.session.clone();
        let addr = SessionActor::new(self.clone(), tenant, fence, rec, generation).start();
        self.lock().insert(id, (generation, addr.clone()));
        addr
    }

    /// Announce this node to its peers — its liveness, which keeps every lease it holds valid,
    /// and its address for forwarding. Call every third of the lease TTL. If the node could not
    /// announce itself for a whole lease TTL (store unreachable, process paused), another node may
    /// have taken its sessions over: every local actor is stopped before serving again.
    pub async fn heartbeat(&self, url: &str) -> Result<(), StoreError> {
        let ttl = self.sessions().lease_ttl();
        let info = NodeInfo {
            instance: self.config.instance.clone(),
            url: url.to_owned(),
            draining: self.is_draining(),
        };
        let res = self.store.register_node(&info, ttl).await;
        let mut last = self.last_heartbeat.lock().unwrap_or_else(|p| p.into_inner());
        let lapsed = last.is_some_and(|t| t.elapsed() >= ttl);
        if res.is_ok() {
            *last = Some(Instant::now());
        }
        drop(last);
        if lapsed {
            self.stop_all();
        }
        res
    }

    /// Stop every local actor at once (their leases may have been taken over).
    fn stop_all(&self) {
        let actors: Vec<_> = self.lock().drain().map(|(_, (_, a))| a).collect();
        if !actors.is_empty() {
            tracing::warn!(
                count = actors.len(),
                "node liveness lapsed; stopping every local session actor"
            );
        }
        for a in actors {
            a.do_send(crate::session::Lost);
        }
    }

    /// Start draining: no new sessions or activations; every local actor closes its streams with a
    /// retry hint, finishes its calls, releases its lease and stops. Resolves when all are gone or
    /// `timeout` passed; then the remaining actors are stopped (their leases released, so a peer
    /// re-activates them and gives their calls a definite outcome).
    pub async fn drain(&self, timeout: Duration) {
        self.draining.store(true, Ordering::SeqCst);
        let actors: Vec<_> = self.lock().values().map(|(_, a)| a.clone()).collect();
        for a in &actors {
            let _ = a.send(crate::session::Drain { force: false }).await;
        }
        let deadline = Instant::now() + timeout;
        while self.running_actors() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let rest: Vec<_> = self.lock().values().map(|(_, a)| a.clone()).collect();
        for a in &rest {
            let _ = a.send(crate::session::Drain { force: true }).await;
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.running_actors() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.store.unregister_node(&self.config.instance).await;
    }
}

//! This node: its identity, the registry of local session actors, and how a request finds the one
//! live actor of its session — locally, by activating it from the store, or on another node.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::{Actor as _, Addr};
use marina_core::caps::Caps;
use marina_core::domain::SessionId;
use marina_core::settings::SessionSettings;
use marina_core::store::{Fence, LeaseOutcome, NodeInfo, SessionRecord, SessionStore, StoreError, now_ms};
use marina_core::tenant::Tenant;

use crate::session::SessionActor;

/// How long a request waits for a session to become available (lease expiry of a dead holder,
/// or another worker activating it) on top of the lease TTL.
const RESOLVE_SLACK: Duration = Duration::from_secs(2);
/// How long a lost subscription to ended-session announcements waits before it resubscribes.
const RESUBSCRIBE: Duration = Duration::from_millis(500);
/// Pause between attempts while a lease is held by a node we cannot reach.
const RESOLVE_BACKOFF: Duration = Duration::from_millis(100);

/// What a node needs to run sessions.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// `<node-id>/<boot nonce>`: a restarted node never mistakes its predecessor's leases for its own.
    pub instance: String,
    /// Session settings.
    pub sessions: SessionSettings,
    /// Where live sessions are counted for the tenants' session caps.
    pub caps: Option<Arc<dyn Caps>>,
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
    /// This node's record in the store may have expired (it could not announce itself for a
    /// whole lease TTL, or has not yet since it started): until it has announced itself again it
    /// runs no session, since a peer may have taken its sessions over.
    #[error("node not announced in the cluster")]
    Rejoining,
}

/// One session in this node's registry.
#[derive(Debug)]
enum Slot {
    /// A worker of this node holds the right to activate it and is doing so.
    Activating,
    /// Its actor runs here.
    Live {
        generation: u64,
        addr: Addr<SessionActor>,
    },
}

/// This node's standing in the cluster. Its record in the store is what keeps its leases valid;
/// once the record may have expired, a peer may take any of its sessions over.
#[derive(Debug)]
struct Liveness {
    /// The record surely lives in the store until then: the start of the last successful
    /// announcement plus the lease TTL (the write landed after that start). `None`: never
    /// announced.
    valid_until: Option<Instant>,
    /// Bumped at every lapse. An activation completes only in the epoch it began in.
    epoch: u64,
    /// The current lapse has been handled (every local actor stopped). True until the first
    /// announcement.
    lapsed: bool,
}

/// What the registry says about a session, for one worker resolving it.
enum Found<'a> {
    /// Its actor runs here.
    Live(Addr<SessionActor>),
    /// Another worker of this node is activating it.
    Activating,
    /// This worker may activate it.
    Claimed(Claim<'a>),
}

/// One worker's exclusive right to activate a session on this node, in one liveness epoch.
/// Dropped without activating, it frees the session's slot.
struct Claim<'a> {
    node: &'a Node,
    id: SessionId,
    epoch: u64,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut reg = self.node.lock();
        if matches!(reg.get(&self.id), Some(Slot::Activating)) {
            reg.remove(&self.id);
        }
    }
}

/// This node.
#[derive(Debug)]
pub struct Node {
    /// The session store.
    pub store: Arc<dyn SessionStore>,
    /// Identity and session settings.
    pub config: NodeConfig,
    /// The tenants served, replaced whole when the control plane changes one.
    tenants: arc_swap::ArcSwap<HashMap<String, Arc<Tenant>>>,
    /// A shutdown was asked for: readiness is off and peers are told to hand this node no new
    /// work, while it still serves everything (the shutdown delay), then drains.
    leaving: AtomicBool,
    draining: AtomicBool,
    /// Turns the hand-off's choice of peer.
    handoffs: AtomicUsize,
    registry: Mutex<HashMap<SessionId, Slot>>,
    generation: AtomicU64,
    /// Lock order: `liveness` before `registry`.
    liveness: Mutex<Liveness>,
    /// Actors started and not yet stopped (a retiring actor has left the registry but may still
    /// be releasing its lease; shutdown waits for it).
    running: AtomicUsize,
    /// The ids of tenants whose configuration changed or that were removed, for what follows
    /// them without a session (2026-07-28 `subscriptions/listen`).
    changes: tokio::sync::broadcast::Sender<String>,
    /// Cancelled when the node starts draining: long-lived streams end gracefully.
    draining_token: tokio_util::sync::CancellationToken,
}

/// Tenant changes kept for a slow follower before it is told it lagged.
const CHANGES_BUFFER: usize = 256;

impl Node {
    /// A node serving `tenants` from `store`. It runs no session until its first successful
    /// [`Self::heartbeat`].
    pub fn new(store: Arc<dyn SessionStore>, config: NodeConfig, tenants: Vec<Arc<Tenant>>) -> Arc<Self> {
        Arc::new(Self {
            store,
            config,
            tenants: arc_swap::ArcSwap::from_pointee(
                tenants.into_iter().map(|t| (t.id.clone(), t)).collect(),
            ),
            leaving: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            handoffs: AtomicUsize::new(0),
            registry: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            running: AtomicUsize::new(0),
            liveness: Mutex::new(Liveness {
                valid_until: None,
                epoch: 0,
                lapsed: true,
            }),
            changes: tokio::sync::broadcast::channel(CHANGES_BUFFER).0,
            draining_token: tokio_util::sync::CancellationToken::new(),
        })
    }

    /// Follow tenant changes: each message is the id of a tenant whose configuration changed or
    /// that was removed (`Lagged`: some were missed — assume any changed).
    pub fn tenant_changes(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.changes.subscribe()
    }

    /// Fires when the node starts draining.
    pub fn draining_signal(&self) -> tokio_util::sync::CancellationToken {
        self.draining_token.clone()
    }

    /// A tenant by id, as configured now.
    pub fn tenant(&self, id: &str) -> Option<Arc<Tenant>> {
        self.tenants.load().get(id).cloned()
    }

    /// Serve `tenants` from now on (the control plane applied a change). Sessions pick up
    /// their tenant's new configuration with their next request.
    pub fn set_tenants(&self, tenants: HashMap<String, Arc<Tenant>>) {
        let old = self.tenants.swap(Arc::new(tenants));
        let new = self.tenants.load();
        let changed = old
            .iter()
            .filter(|(id, t)| new.get(*id).is_none_or(|n| !Arc::ptr_eq(n, t)))
            .map(|(id, _)| id)
            .chain(new.keys().filter(|id| !old.contains_key(*id)));
        for id in changed {
            // Nobody following is no error.
            let _ = self.changes.send(id.clone());
        }
        // Open streams learn of it now (list_changed), not at the session's next request.
        for a in self.live_actors() {
            a.do_send(crate::session::TenantChanged);
        }
    }

    /// Session settings.
    pub fn sessions(&self) -> &SessionSettings {
        &self.config.sessions
    }

    /// Is the node draining (it takes no new lease and creates no session: such work is handed
    /// to a live peer)?
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Is the node shutting down — in its shutdown delay (still serving everything) or draining?
    /// Readiness is off and its record in the directory says so from the moment it is asked to.
    pub fn is_leaving(&self) -> bool {
        self.leaving.load(Ordering::SeqCst) || self.is_draining()
    }

    /// A shutdown was asked for: from now on readiness is off and the directory tells peers to
    /// hand this node no new work (announced now, not at the next heartbeat); the node still
    /// serves everything until [`Self::drain_with`].
    pub async fn leave(&self, url: &str) {
        self.leaving.store(true, Ordering::SeqCst);
        if let Err(e) = self.heartbeat(url).await {
            tracing::debug!(error = %e, "could not announce the shutdown; the next heartbeat will");
        }
    }

    /// Live peers a draining node may hand new work to: in the directory, not this node, not
    /// shutting down themselves — in a turning order, so hand-offs spread over them.
    pub async fn live_peers(&self) -> Result<Vec<NodeInfo>, StoreError> {
        let mut peers: Vec<NodeInfo> = self
            .store
            .nodes()
            .await?
            .into_iter()
            .filter(|n| n.instance != self.config.instance && !n.draining)
            .collect();
        peers.sort_by(|a, b| a.instance.cmp(&b.instance));
        if !peers.is_empty() {
            let turn = self.handoffs.fetch_add(1, Ordering::Relaxed) % peers.len();
            peers.rotate_left(turn);
        }
        Ok(peers)
    }

    /// Is this node's record in the store surely alive, so that it may run sessions? (Handles a
    /// lapse that has not been handled yet: see [`Self::heartbeat`].)
    pub fn is_live(&self) -> bool {
        self.live_epoch().is_some()
    }

    /// Number of live (registered) actors on this node.
    pub fn live_sessions(&self) -> usize {
        self.lock()
            .values()
            .filter(|s| matches!(s, Slot::Live { .. }))
            .count()
    }

    /// Number of actors not yet stopped, including retiring ones.
    pub fn running_actors(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    pub(crate) fn actor_stopped(&self) {
        self.running.fetch_sub(1, Ordering::SeqCst);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Slot>> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn liveness(&self) -> std::sync::MutexGuard<'_, Liveness> {
        self.liveness.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current liveness epoch, or `None` while the node's record may have expired.
    fn live_epoch(&self) -> Option<u64> {
        let mut l = self.liveness();
        self.check_liveness(&mut l, Instant::now())
    }

    /// The lapse is handled the first time anyone looks after it happened — a request, the
    /// readiness probe or the heartbeat, whichever comes first: every local actor stops at once.
    fn check_liveness(&self, l: &mut Liveness, now: Instant) -> Option<u64> {
        if l.valid_until.is_some_and(|t| now < t) {
            return Some(l.epoch);
        }
        self.lapse(l);
        None
    }

    /// Handle a lapse once: a new epoch, every local actor stopped.
    fn lapse(&self, l: &mut Liveness) {
        if !l.lapsed {
            l.lapsed = true;
            l.epoch += 1;
            self.stop_all();
        }
    }

    /// The session's actor if it runs here; else the right to activate it, unless another worker
    /// of this node has it.
    fn find_or_claim(&self, id: &SessionId, epoch: u64) -> Found<'_> {
        let mut reg = self.lock();
        match reg.get(id) {
            Some(Slot::Live { addr, .. }) if addr.connected() => return Found::Live(addr.clone()),
            Some(Slot::Activating) => return Found::Activating,
            // Nothing, or an actor that has stopped (it unregisters itself by generation, so
            // overwriting its slot is safe).
            _ => {}
        }
        reg.insert(id.clone(), Slot::Activating);
        Found::Claimed(Claim {
            node: self,
            id: id.clone(),
            epoch,
        })
    }

    pub(crate) fn unregister(&self, id: &SessionId, generation: u64) {
        let mut reg = self.lock();
        if matches!(reg.get(id), Some(Slot::Live { generation: g, .. }) if *g == generation) {
            reg.remove(id);
        }
    }

    /// Create session `id` (freshly generated) for `tenant` and activate its actor here.
    pub async fn create_session(
        self: &Arc<Self>,
        tenant: Arc<Tenant>,
        id: SessionId,
        rec: SessionRecord,
    ) -> Result<SessionId, ResolveError> {
        if self.is_draining() {
            return Err(ResolveError::Draining);
        }
        let epoch = self.live_epoch().ok_or(ResolveError::Rejoining)?;
        let ttl = rec
            .ttl(self.sessions().idle_ttl())
            .ok_or(ResolveError::NotFound)?;
        // A fresh 256-bit id is in nobody's registry; the claim only ties this activation to
        // the liveness epoch.
        let Found::Claimed(claim) = self.find_or_claim(&id, epoch) else {
            return Err(ResolveError::Busy);
        };
        self.store.create_session(&id, &rec, ttl).await?;
        let outcome = self.store.acquire_lease(&id, &self.config.instance).await?;
        let LeaseOutcome::Acquired(fence) = outcome else {
            return Err(ResolveError::Busy);
        };
        let tenant_id = tenant.id.clone();
        match self.activate(claim, tenant, fence, rec) {
            Ok(_) => {
                marina_telemetry::metrics().session_started(&tenant_id);
                Ok(id)
            }
            Err(fence) => {
                // Nobody has seen the id yet: remove the session rather than leave it to expire.
                let _ = self.store.release_lease(&fence).await;
                let _ = self.store.delete_session(&id, 1).await;
                Err(ResolveError::Rejoining)
            }
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
        let ttl = self.sessions().lease_ttl();
        let deadline = Instant::now() + ttl + marina_core::store::takeover_grace(ttl) + RESOLVE_SLACK;
        loop {
            let epoch = self.live_epoch().ok_or(ResolveError::Rejoining)?;
            let claim = match self.find_or_claim(id, epoch) {
                Found::Live(addr) => return Ok(Resolved::Local(addr)),
                Found::Activating => {
                    // Another worker of this node is activating it right now.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    if Instant::now() > deadline {
                        return Err(ResolveError::Busy);
                    }
                    continue;
                }
                Found::Claimed(claim) => claim,
            };
            let outcome = if self.is_draining() {
                // A draining node never takes new leases; it only says who holds the session.
                match self.store.lease_holder(id).await? {
                    Some(holder) => LeaseOutcome::Held { holder },
                    None => return Err(ResolveError::Draining),
                }
            } else {
                match self.store.acquire_lease(id, &self.config.instance).await? {
                    // The lease names this node, yet no actor of ours runs the session and no
                    // other worker is activating it (we hold the claim): its actor stopped
                    // without releasing — its node's liveness lapsed while the store was
                    // unreachable, or the release failed — or is retiring and releasing now.
                    // Take it over with a fresh fencing token rather than wait for a release
                    // that may never come.
                    LeaseOutcome::Held { holder } if holder == self.config.instance => {
                        tracing::info!(
                            session = marina_core::telemetry::session_tag(id.as_str()),
                            "reclaiming a lease this node holds without an actor"
                        );
                        self.store.reclaim_lease(id, &self.config.instance).await?
                    }
                    other => other,
                }
            };
            match outcome {
                LeaseOutcome::NoSession => return Err(ResolveError::NotFound),
                LeaseOutcome::Acquired(fence) => {
                    let Some(rec) = self.store.load_session(id).await? else {
                        self.store.release_lease(&fence).await?;
                        return Err(ResolveError::NotFound);
                    };
                    let Some(t) = self.tenant(&rec.tenant).filter(|t| t.id == tenant) else {
                        self.store.release_lease(&fence).await?;
                        return Err(ResolveError::NotFound);
                    };
                    if rec.expires_at_ms <= now_ms() {
                        self.store.delete_session(id, rec.next_stream).await?;
                        return Err(ResolveError::NotFound);
                    }
                    return match self.activate(claim, t, fence, rec) {
                        Ok(addr) => Ok(Resolved::Local(addr)),
                        Err(fence) => {
                            let _ = self.store.release_lease(&fence).await;
                            Err(ResolveError::Rejoining)
                        }
                    };
                }
                LeaseOutcome::Held { holder } if holder == self.config.instance => {
                    // Draining: a retiring actor of ours is releasing it.
                    drop(claim);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                LeaseOutcome::Held { holder } => {
                    drop(claim);
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

    /// Start the session's actor under `claim` — unless the node's liveness lapsed since the claim
    /// was made (a peer may own the session now): then the fence comes back, for the caller to
    /// release. Checked and registered under the liveness lock, so no lapse slips in between.
    fn activate(
        self: &Arc<Self>,
        claim: Claim<'_>,
        tenant: Arc<Tenant>,
        fence: Fence,
        rec: SessionRecord,
    ) -> Result<Addr<SessionActor>, Fence> {
        let mut l = self.liveness();
        if self.check_liveness(&mut l, Instant::now()) != Some(claim.epoch) {
            return Err(fence);
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        self.running.fetch_add(1, Ordering::SeqCst);
        let id = fence.session.clone();
        let addr = SessionActor::new(self.clone(), tenant, fence, rec, generation).start();
        self.lock().insert(
            id,
            Slot::Live {
                generation,
                addr: addr.clone(),
            },
        );
        drop(l);
        Ok(addr)
    }

    /// Announce this node to its peers — its liveness, which keeps every lease it holds valid,
    /// and its address for forwarding. Call every third of the lease TTL.
    ///
    /// If the node could not announce itself for a whole lease TTL (store unreachable, process
    /// paused), its record may have expired and a peer may have taken its sessions over: every
    /// local actor is stopped the moment that is noticed, and until an announcement succeeds again
    /// the node activates nothing (requests get [`ResolveError::Rejoining`], readiness is false).
    /// So no actor activated after recovery is ever stopped for the earlier lapse.
    pub async fn heartbeat(&self, url: &str) -> Result<(), StoreError> {
        let ttl = self.sessions().lease_ttl();
        let info = NodeInfo {
            instance: self.config.instance.clone(),
            url: url.to_owned(),
            draining: self.is_leaving(),
        };
        // A lapse since the last tick is handled before waiting on the store.
        self.live_epoch();
        let started = Instant::now();
        // An announcement slower than half the TTL counts as failed (whatever the store's own
        // timeout), so a slow store cannot keep the node believing in a record that has expired.
        let res = tokio::time::timeout(ttl / 2, self.store.register_node(&info, ttl))
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("node announcement timed out".into())));
        if let Ok(existed) = res {
            let mut l = self.liveness();
            let now = Instant::now();
            // The record was written somewhere between `started` and now. If the old one may
            // have expired before that, handle the lapse first (its actors all predate it:
            // activations need liveness), then count the new one from `started`.
            let mut was_live = self.check_liveness(&mut l, now).is_some();
            // The old record had vanished before its time (Redis's clock jumped, or it was
            // removed). A peer takes a node's sessions over only once its record has been
            // missing for the take-over grace; if our announcements were that far apart, one
            // may have: handle it as a lapse.
            let previous = l.valid_until.and_then(|t| t.checked_sub(ttl));
            if was_live
                && !existed
                && previous.is_some_and(|p| now.duration_since(p) >= marina_core::store::takeover_grace(ttl))
            {
                tracing::warn!(
                    "this node's record vanished from the store before its time; handling it as a lapse"
                );
                self.lapse(&mut l);
                was_live = false;
            }
            let until = started + ttl;
            if l.valid_until.is_none_or(|t| t < until) {
                l.valid_until = Some(until);
            }
            if !was_live && now < until {
                l.lapsed = false;
                if l.epoch > 0 {
                    tracing::info!("node announced again after its liveness lapsed; serving");
                }
            }
        }
        res.map(|_| ())
    }

    /// Stop every local actor at once (their leases may have been taken over). Claims in progress
    /// stay: their activations fail on the epoch check.
    fn stop_all(&self) {
        let actors: Vec<_> = {
            let mut reg = self.lock();
            let live: Vec<SessionId> = reg
                .iter()
                .filter(|(_, s)| matches!(s, Slot::Live { .. }))
                .map(|(id, _)| id.clone())
                .collect();
            live.iter()
                .filter_map(|id| match reg.remove(id) {
                    Some(Slot::Live { addr, .. }) => Some(addr),
                    _ => None,
                })
                .collect()
        };
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

    /// End session `id` (its record `rec`) from outside, wherever its actor runs: its keys are
    /// deleted, its cap entry released, its actor stopped here or — through the store's
    /// announcement — on the node running it. Every node answers 404 for it from then on.
    pub async fn end_session(&self, id: &SessionId, rec: &SessionRecord) -> Result<(), StoreError> {
        self.end_local(id);
        self.store.delete_session(id, rec.next_stream).await?;
        if let Some(caps) = &self.config.caps {
            let principal = marina_core::caps::principal_key(rec.principal.as_ref());
            if let Err(e) = caps.release(&rec.tenant, &principal, id.as_str()).await {
                tracing::warn!(error = %e, "could not release an ended session's cap entry; it ages out");
            }
        }
        self.store.announce_ended(id).await
    }

    /// Stop the local actor of session `id`, if one runs here, writing nothing (its keys are
    /// gone). Whether one ran.
    pub fn end_local(&self, id: &SessionId) -> bool {
        let addr = match self.lock().get(id) {
            Some(Slot::Live { addr, .. }) => addr.clone(),
            _ => return false,
        };
        addr.do_send(crate::session::Ended);
        true
    }

    /// Stop the local actors of sessions ended on other nodes, as the store announces them, until
    /// the task is dropped. Whenever the subscription is (re)made — it may have missed
    /// announcements — every local session is checked against the store.
    pub async fn follow_ended(self: Arc<Self>) {
        use futures_util::StreamExt as _;
        loop {
            match self.store.ended_sessions().await {
                Ok(None) => return,
                Ok(Some(mut ended)) => {
                    self.end_vanished().await;
                    while let Some(id) = ended.next().await {
                        self.end_local(&id);
                    }
                    tracing::debug!("ended-session announcements interrupted; resubscribing");
                }
                Err(e) => tracing::debug!(error = %e, "ended-session announcements unavailable"),
            }
            tokio::time::sleep(RESUBSCRIBE).await;
        }
    }

    /// Stop the local actors whose session no longer exists in the store.
    async fn end_vanished(&self) {
        let ids: Vec<SessionId> = self.lock().keys().cloned().collect();
        for id in ids {
            if matches!(self.store.load_session(&id).await, Ok(None)) {
                self.end_local(&id);
            }
        }
    }

    fn live_actors(&self) -> Vec<Addr<SessionActor>> {
        self.lock()
            .values()
            .filter_map(|s| match s {
                Slot::Live { addr, .. } => Some(addr.clone()),
                Slot::Activating => None,
            })
            .collect()
    }

    /// Start draining: no new sessions or activations; every local actor closes its streams with a
    /// retry hint, finishes its calls, releases its lease and stops. Resolves when all are gone or
    /// `timeout` passed; then the remaining actors are stopped (their leases released, so a peer
    /// re-activates them and gives their calls a definite outcome).
    pub async fn drain(&self, timeout: Duration) {
        self.drain_with(timeout, std::future::ready(())).await;
    }

    /// [`Self::drain`], also waiting (within the same `timeout`) for `also`: other work of the
    /// node that must end while it is still in the directory (peers forward requests to it).
    pub async fn drain_with(&self, timeout: Duration, also: impl std::future::Future<Output = ()>) {
        let metrics = marina_telemetry::metrics();
        metrics.set_draining(true);
        self.draining.store(true, Ordering::SeqCst);
        self.draining_token.cancel();
        for a in &self.live_actors() {
            let _ = a.send(crate::session::Drain { force: false }).await;
        }
        let deadline = Instant::now() + timeout;
        let actors = async {
            while self.running_actors() > 0 && Instant::now() < deadline {
                metrics.set_drain_inflight(self.running_actors() + metrics.open_streams().max(0) as usize);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let _ = tokio::time::timeout(timeout, futures_util::future::join(actors, also)).await;
        for a in &self.live_actors() {
            let _ = a.send(crate::session::Drain { force: true }).await;
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.running_actors() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.store.unregister_node(&self.config.instance).await;
    }
}

//! The state of a live session and everything done with it: dispatching messages, emitting
//! events (persist first, then deliver), opening and resuming streams, write-through saves.
//!
//! All of it runs on the actor's arbiter (single-threaded), so `RefCell` guards suffice; a borrow
//! is never held across an `.await` (clippy `await_holding_refcell_ref` is denied).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use marina_core::access::{Access, action};
use marina_core::caps::{CALL_LEASE, principal_key};
use marina_core::domain::{EventId, GET_STREAM, Owner, SessionId, StreamId};
use marina_core::protocol::{self, MessageKind, RpcError, code, result_response};
use marina_core::settings::CallResponseMode;
use marina_core::store::{Fence, InflightCall, SessionRecord, StoreError, now_ms};
use marina_core::telemetry::session_tag;
use marina_core::tenant::Tenant;
use marina_core::tools::ToolIndex;
use marina_telemetry::traces::InSpan as _;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::call::RunCall;
use super::{Dispatch, Frame, OpenStream, Rejection, Reply, StreamHandle};
use crate::node::Node;

/// Live frames buffered per connection; a client slower than this is disconnected and resumes
/// from the event log (nothing is lost, memory stays bounded).
const LIVE_BUFFER: usize = 64;
/// Attempts to persist a call's final response while the store is unavailable.
const EMIT_ATTEMPTS: u32 = 20;

pub(crate) struct Slot {
    /// Serializes persist-then-deliver per stream, so delivery order equals log order and a
    /// resumption can replay and attach without missing or repeating an event.
    lock: Rc<tokio::sync::Mutex<()>>,
    live: Option<mpsc::Sender<Frame>>,
}

pub(crate) struct Call {
    pub(crate) cancel: CancellationToken,
}

/// Shared state of one live session.
pub(crate) struct Shared {
    pub(crate) node: Arc<Node>,
    pub(crate) id: SessionId,
    /// The tenant as this session last saw it (replaced when the control plane changes it).
    tenant: RefCell<Arc<Tenant>>,
    pub(crate) fence: Fence,
    pub(crate) rec: RefCell<SessionRecord>,
    streams: RefCell<HashMap<StreamId, Slot>>,
    pub(crate) calls: RefCell<HashMap<String, Call>>,
    pub(crate) pending: RefCell<HashMap<String, oneshot::Sender<Result<Value, RpcError>>>>,
    /// The session's tool index (see [`Self::tool_index`]).
    index: RefCell<Option<Rc<ToolIndex>>>,
    /// Providers whose server-initiated messages are being followed (see `ensure_followers`).
    pub(crate) followers: RefCell<std::collections::HashSet<usize>>,
    /// Cancels the followers of the tenant's current providers (a child of `stopping`, replaced
    /// when the tenant's configuration changes).
    pub(crate) follow_cancel: RefCell<CancellationToken>,
    /// What its resources, prompts and completion requests share (see `features.rs`).
    pub(crate) features: super::features::Features,
    /// The access of the owner's latest request (see [`Self::may_read`]).
    latest_access: RefCell<Option<Access>>,
    next_client_request: Cell<u64>,
    /// Cancelled when the actor stops: every call ends, nothing more is written.
    pub(crate) stopping: CancellationToken,
    last_activity: Cell<Instant>,
    last_save: Cell<Instant>,
    lost: Cell<bool>,
    draining: Cell<bool>,
    /// Serializes record writes so that version order is write order.
    save_lock: tokio::sync::Mutex<()>,
    /// Entry after which GET-stream events were not delivered live (no GET connection open): the
    /// next GET without `Last-Event-ID` starts there, so server-initiated messages — requests the
    /// upstream waits on above all — are not lost when the client connects its GET stream late.
    gap0: RefCell<Option<String>>,
    /// The actor is retiring (passivation, drain): new work must be re-routed.
    pub(crate) retiring: Cell<bool>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("session", &self.tag())
            .field("tenant", &self.tenant.borrow().id)
            .finish_non_exhaustive()
    }
}

/// The key under which a request id is tracked (its JSON text: `1` and `"1"` differ).
pub(crate) fn id_key(id: &Value) -> String {
    id.to_string()
}

/// Who sent a request, as the policy and the audit log need it.
#[derive(Debug)]
pub(crate) struct Who {
    /// Subject and credential roles.
    pub(crate) access: Access,
    /// The HTTP request's id.
    pub(crate) request_id: String,
    /// The request's clock of upstream waits.
    pub(crate) wait: marina_telemetry::UpstreamWait,
}

impl Shared {
    /// The tenant as this session sees it now.
    pub(crate) fn tenant(&self) -> Arc<Tenant> {
        self.tenant.borrow().clone()
    }

    /// Take up the tenant's configuration as the node serves it now. A change (upstreams,
    /// policy, limits) drops what the session derived from the old one — its tool index,
    /// listings and upstream followers — and tells the client to list again, since what it may
    /// see can differ. `false`: the tenant was deleted or suspended, and the session must end.
    pub(crate) async fn refresh_tenant(self: &Rc<Self>) -> bool {
        // (Looked up by the borrowed id: this runs on every request.)
        let now = self.node.tenant(&self.tenant.borrow().id);
        let Some(now) = now.filter(|t| !t.settings.disabled) else {
            return false;
        };
        if Arc::ptr_eq(&now, &self.tenant.borrow()) {
            return true;
        }
        let features = |t: &Tenant| t.providers.iter().any(|p| p.serves_features());
        let had_features = features(&self.tenant());
        let has_features = features(&now);
        *self.tenant.borrow_mut() = now;
        self.invalidate_tools();
        self.features.forget_listings();
        let fresh = self.stopping.child_token();
        std::mem::replace(&mut *self.follow_cancel.borrow_mut(), fresh).cancel();
        self.followers.borrow_mut().clear();
        tracing::debug!(session = self.tag(), "tenant configuration changed");
        if !self.rec.borrow().initialized {
            return true;
        }
        let mut changed = vec!["notifications/tools/list_changed"];
        if had_features || has_features {
            changed.extend([
                "notifications/resources/list_changed",
                "notifications/prompts/list_changed",
            ]);
        }
        for method in changed {
            let _ = self
                .emit(
                    GET_STREAM,
                    &serde_json::json!({"jsonrpc": "2.0", "method": method}),
                )
                .await;
        }
        if has_features && !self.streams.borrow().is_empty() {
            self.ensure_followers();
        }
        true
    }

    pub(crate) fn new(node: Arc<Node>, tenant: Arc<Tenant>, fence: Fence, rec: SessionRecord) -> Self {
        let now = Instant::now();
        let stopping = CancellationToken::new();
        Self {
            id: fence.session.clone(),
            node,
            tenant: RefCell::new(tenant),
            fence,
            rec: RefCell::new(rec),
            streams: RefCell::new(HashMap::new()),
            calls: RefCell::new(HashMap::new()),
            pending: RefCell::new(HashMap::new()),
            index: RefCell::new(None),
            followers: RefCell::new(std::collections::HashSet::new()),
            follow_cancel: RefCell::new(stopping.child_token()),
            features: Default::default(),
            latest_access: RefCell::new(None),
            next_client_request: Cell::new(0),
            stopping,
            last_activity: Cell::new(now),
            last_save: Cell::new(now),
            lost: Cell::new(false),
            draining: Cell::new(false),
            retiring: Cell::new(false),
            gap0: RefCell::new(None),
            save_lock: tokio::sync::Mutex::new(()),
        }
    }

    pub(crate) fn tag(&self) -> &str {
        session_tag(self.id.as_str())
    }

    // === lifecycle ===

    pub(crate) fn lost(&self) -> bool {
        self.lost.get()
    }

    pub(crate) fn draining(&self) -> bool {
        self.draining.get()
    }

    pub(crate) fn start_draining(&self) {
        self.draining.set(true);
        self.close_all_streams();
    }

    /// The session has ended by time: its absolute maximum passed, or nobody used it for the idle
    /// TTL (its keys in the store have expired, or are about to).
    pub(crate) fn expired(&self) -> bool {
        let idle =
            self.last_activity.get().elapsed() >= self.node.sessions().idle_ttl() && !self.has_live_streams();
        idle || self.rec.borrow().expires_at_ms <= now_ms()
    }

    pub(crate) fn idle_calls(&self) -> bool {
        self.calls.borrow().is_empty()
    }

    /// Open connections other than `except`'s (which a new connection of it would replace).
    fn live_streams_except(&self, except: Option<StreamId>) -> usize {
        self.streams
            .borrow()
            .iter()
            .filter(|(id, s)| Some(**id) != except && s.live.as_ref().is_some_and(|t| !t.is_closed()))
            .count()
    }

    /// Would one more stream (besides a new connection of `except`) pass the tenant's cap?
    fn stream_cap_reached(&self, except: Option<StreamId>) -> bool {
        let t = self.tenant();
        let Some(max) = t.settings.limits.max_streams_per_session else {
            return false;
        };
        let reached = self.live_streams_except(except) >= max;
        marina_telemetry::metrics().limit_decision(&t.id, "streams", !reached);
        reached
    }

    pub(crate) fn has_live_streams(&self) -> bool {
        self.streams
            .borrow()
            .values()
            .any(|s| s.live.as_ref().is_some_and(|t| !t.is_closed()))
    }

    pub(crate) fn last_activity(&self) -> Instant {
        self.last_activity.get()
    }

    fn touch(&self) {
        self.last_activity.set(Instant::now());
    }

    /// Drop every live connection. The HTTP layer ends each with a `retry` hint; clients resume
    /// with `Last-Event-ID` wherever the session lives next.
    pub(crate) fn close_all_streams(&self) {
        for slot in self.streams.borrow_mut().values_mut() {
            slot.live = None;
        }
    }

    /// The actor stopped: end all work and connections.
    pub(crate) fn shutdown(&self) {
        self.stopping.cancel();
        self.close_all_streams();
        self.pending.borrow_mut().clear();
    }

    pub(crate) async fn release(&self) {
        if let Err(e) = self.node.store.release_lease(&self.fence).await {
            tracing::warn!(session = self.tag(), error = %e, "could not release lease; this node reclaims it on the session's next request");
        }
    }

    /// Ended from outside: nothing of ours may be written any more, and work stops.
    pub(crate) fn mark_ended(&self) {
        self.lost.set(true);
        self.stopping.cancel();
        tracing::info!(session = self.tag(), "session ended by an administrator");
    }

    pub(crate) fn mark_lost(&self, why: &str) {
        self.lose(why);
    }

    fn lose(&self, why: &str) {
        if !self.lost.replace(true) {
            tracing::warn!(session = self.tag(), why, "session lease lost; stopping actor");
            self.stopping.cancel();
        }
    }

    /// The session ends for good (`deleted`, `expired`, `evicted`): count it and its lifetime.
    pub(crate) fn record_end(&self, reason: &'static str) {
        let rec = self.rec.borrow();
        let lifetime = std::time::Duration::from_millis(now_ms().saturating_sub(rec.created_at_ms));
        marina_telemetry::metrics().session_ended(&rec.tenant, reason, &rec.protocol_version, lifetime);
    }

    /// End the session: stop calls, delete every key.
    pub(crate) async fn delete(&self) -> Result<(), Rejection> {
        self.stopping.cancel();
        let streams = self.rec.borrow().next_stream;
        self.node
            .store
            .delete_session(&self.id, streams)
            .await
            .map_err(|_| Rejection::Unavailable)?;
        self.lost.set(true); // nothing of ours may be written any more
        if let Some(caps) = self.counted() {
            let principal = principal_key(self.rec.borrow().principal.as_ref());
            if let Err(e) = caps
                .release(&self.tenant().id, &principal, self.id.as_str())
                .await
            {
                tracing::warn!(session = self.tag(), error = %e, "could not release the session's cap entry; it ages out");
            }
        }
        Ok(())
    }

    /// The member naming call `key` of this session among its tenant's calls in flight.
    pub(crate) fn call_cap_key(&self, key: &str) -> String {
        format!("{}:{key}", self.id.as_str())
    }

    /// Stop counting call `key` in the tenant's calls in flight (in the background).
    pub(crate) fn end_call_cap(&self, key: &str) {
        if self.tenant().settings.limits.max_inflight_calls.is_none() {
            return;
        }
        if let Some(caps) = self.node.config.caps.clone() {
            let (tenant, member) = (self.tenant().id.clone(), self.call_cap_key(key));
            actix::spawn(async move {
                let _ = caps.end_call(&tenant, &member).await;
            });
        }
    }

    /// Renew the leases of this session's running calls among its tenant's calls in flight.
    pub(crate) fn keep_call_caps(&self) {
        if self.tenant().settings.limits.max_inflight_calls.is_none() || self.calls.borrow().is_empty() {
            return;
        }
        if let Some(caps) = self.node.config.caps.clone() {
            let tenant = self.tenant().id.clone();
            let members: Vec<String> = self.calls.borrow().keys().map(|k| self.call_cap_key(k)).collect();
            actix::spawn(async move {
                let _ = caps.keep_calls(&tenant, &members, CALL_LEASE).await;
            });
        }
    }

    /// The caps this session is counted in, if its tenant caps sessions.
    fn counted(&self) -> Option<&Arc<dyn marina_core::caps::Caps>> {
        let l = &self.tenant().settings.limits;
        if l.max_sessions.is_none() && l.max_sessions_per_principal.is_none() {
            return None;
        }
        self.node.config.caps.as_ref()
    }

    // === persistence ===

    fn ttl(&self) -> Option<Duration> {
        self.rec.borrow().ttl(self.node.sessions().idle_ttl())
    }

    /// Write the record through (fenced, versioned). Also refreshes the idle TTL.
    pub(crate) async fn save(&self) -> Result<(), StoreError> {
        let _serial = self.save_lock.lock().await;
        let rec = {
            let mut r = self.rec.borrow_mut();
            r.version += 1;
            r.last_used_ms = marina_core::store::now_ms();
            r.clone()
        };
        let ttl = self.ttl().ok_or(StoreError::Gone)?;
        self.last_save.set(Instant::now());
        let res = self.node.store.save_session(&self.fence, &rec, ttl).await;
        if matches!(res, Err(StoreError::Fenced)) {
            self.lose("write fenced");
        }
        // The session's cap entry lives as long as its keys.
        if res.is_ok()
            && let Some(caps) = self.counted()
        {
            let principal = principal_key(rec.principal.as_ref());
            if let Err(e) = caps
                .touch(&self.tenant().id, &principal, self.id.as_str(), ttl)
                .await
            {
                tracing::debug!(session = self.tag(), error = %e, "could not refresh the session's cap entry");
            }
        }
        res
    }

    /// Keep the session's keys alive while it is used without changing state (pings, lists,
    /// open streams): at most one save per tenth of the idle TTL.
    pub(crate) fn refresh_ttl_if_due(self: Rc<Self>) {
        let every = self.node.sessions().idle_ttl() / 10;
        let used = self.last_activity.get() > self.last_save.get() || self.has_live_streams();
        if used && self.last_save.get().elapsed() >= every {
            self.last_save.set(Instant::now());
            actix::spawn(async move {
                let _ = self.save().await;
            });
        }
    }

    // === events ===

    fn slot_lock(&self, stream: StreamId) -> Rc<tokio::sync::Mutex<()>> {
        self.streams
            .borrow_mut()
            .entry(stream)
            .or_insert_with(|| Slot {
                lock: Rc::new(tokio::sync::Mutex::new(())),
                live: None,
            })
            .lock
            .clone()
    }

    /// Persist `msg` on `stream`, then deliver it to the stream's live connection, if any.
    pub(crate) async fn emit(&self, stream: StreamId, msg: &Value) -> Result<(), StoreError> {
        if self.lost.get() {
            return Err(StoreError::Fenced);
        }
        let lock = self.slot_lock(stream);
        let _order = lock.lock().await;
        let data = msg.to_string();
        let ttl = self.ttl().ok_or(StoreError::Gone)?;
        let cap = self.node.sessions().max_events_per_stream;
        let entry = match self
            .node
            .store
            .append_event(&self.fence, stream, &data, cap, ttl)
            .await
        {
            Err(StoreError::Fenced) => {
                self.lose("append fenced");
                return Err(StoreError::Fenced);
            }
            other => other?,
        };
        let id = EventId {
            stream,
            entry: entry.clone(),
        }
        .to_string();
        if !self.deliver(stream, Frame::Event { id, data })
            && stream == GET_STREAM
            && self.gap0.borrow().is_none()
        {
            *self.gap0.borrow_mut() = Some(predecessor(&entry));
        }
        Ok(())
    }

    /// Finish a POST stream: persist its final message (if any — a cancelled call has none) and
    /// clear its in-flight entry, in one atomic write; then deliver the message and
    /// end the connection. Retries while the store is briefly unavailable: losing a response
    /// would leave the client without an outcome. `false` if it could not be persisted (the call
    /// stays in flight in the store, and the session's next holder answers it).
    pub(crate) async fn complete(&self, stream: StreamId, msg: Option<&Value>) -> bool {
        let data = msg.map(Value::to_string);
        let cap = self.node.sessions().max_events_per_stream;
        let mut delay = Duration::from_millis(50);
        for _ in 0..EMIT_ATTEMPTS {
            if self.lost.get() {
                return false;
            }
            let lock = self.slot_lock(stream);
            let _order = lock.lock().await;
            let Some(ttl) = self.ttl() else { return false };
            match self
                .node
                .store
                .complete_stream(&self.fence, stream, data.as_deref(), cap, ttl)
                .await
            {
                Ok(entry) => {
                    self.rec.borrow_mut().inflight.remove(&stream);
                    if let (Some(entry), Some(data)) = (entry, data) {
                        self.deliver(
                            stream,
                            Frame::Event {
                                id: EventId { stream, entry }.to_string(),
                                data,
                            },
                        );
                    }
                    self.finish_stream(stream);
                    return true;
                }
                Err(StoreError::Unavailable(_)) if !self.stopping.is_cancelled() => {}
                Err(StoreError::Fenced) => {
                    self.lose("write fenced");
                    return false;
                }
                Err(_) => return false,
            }
            drop(_order);
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
        false
    }

    /// Hand a frame to the stream's live connection; `false` if there is none (or it failed).
    fn deliver(&self, stream: StreamId, frame: Frame) -> bool {
        let mut streams = self.streams.borrow_mut();
        let Some(slot) = streams.get_mut(&stream) else {
            return false;
        };
        let Some(tx) = &slot.live else { return false };
        if tx.try_send(frame).is_err() {
            // Closed, or too slow: drop the connection; the log has everything for a resume.
            slot.live = None;
            return false;
        }
        true
    }

    /// A POST stream got its response: tell its connection to end, forget the slot.
    pub(crate) fn finish_stream(&self, stream: StreamId) {
        if let Some(slot) = self.streams.borrow_mut().remove(&stream)
            && let Some(tx) = slot.live
        {
            let _ = tx.try_send(Frame::End);
        }
    }

    // === dispatch ===

    /// A header that names another supported version than the negotiated one contradicts the
    /// session (400) — except `2025-03-26`, the value the spec tells servers to assume when the
    /// header is absent: clients that send it as a default (the conformance suite's raw requests
    /// do) mean "unspecified", so it is treated like an absent header.
    pub(crate) fn check_version(&self, header: Option<&str>) -> Result<(), Rejection> {
        match header {
            Some(v) if v != protocol::DEFAULT_HEADER_VERSION && v != self.rec.borrow().protocol_version => {
                Err(Rejection::VersionMismatch)
            }
            _ => Ok(()),
        }
    }

    /// Only the principal that initialized the session may use it; anyone else is told it does
    /// not exist (404), before anything else is checked or touched, so nothing leaks.
    pub(crate) fn check_owner(&self, owner: Option<&Owner>) -> Result<(), Rejection> {
        let rec = self.rec.borrow();
        if rec.principal.as_ref() == owner {
            Ok(())
        } else {
            marina_telemetry::metrics().auth_failure(&rec.tenant, "principal_mismatch");
            Err(Rejection::Gone)
        }
    }

    pub(crate) fn protocol_version(&self) -> String {
        self.rec.borrow().protocol_version.clone()
    }

    pub(crate) async fn dispatch(self: Rc<Self>, d: Dispatch) -> Reply {
        if self.retiring.get() {
            return Reply::Moved(Box::new(d));
        }
        if self.expired() {
            return Reply::Rejected(Rejection::Gone);
        }
        if let Err(r) = self.check_owner(d.owner.as_ref()) {
            return Reply::Rejected(r);
        }
        if !self.refresh_tenant().await {
            return Reply::Rejected(Rejection::Gone);
        }
        self.saw(&d.access);
        self.touch();
        if let Err(r) = self.check_version(d.protocol_version.as_deref()) {
            return Reply::Rejected(r);
        }
        if self.lost.get() {
            return Reply::Rejected(Rejection::Gone);
        }
        match d.kind {
            MessageKind::Notification { method } => self.notification(&method, &d.message).await,
            MessageKind::Response { id } => {
                let key = match &id {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                if let Some(tx) = self.pending.borrow_mut().remove(&key) {
                    let outcome = match d.message.get("error") {
                        Some(e) => Err(RpcError::new(
                            e["code"].as_i64().unwrap_or(code::INTERNAL_ERROR),
                            e["message"].as_str().unwrap_or("client error"),
                        )),
                        None => Ok(d.message.get("result").cloned().unwrap_or(Value::Null)),
                    };
                    let _ = tx.send(outcome);
                }
                // A response to nothing we asked (or asked before a failover) is ignored (202).
                Reply::Accepted
            }
            MessageKind::Request { id, method } => {
                let who = Who {
                    access: d.access,
                    request_id: d.request_id,
                    wait: d.wait,
                };
                self.request(id, &method, d.message, d.force_json, &who).await
            }
        }
    }

    async fn notification(self: &Rc<Self>, method: &str, msg: &Value) -> Reply {
        match method {
            "notifications/initialized" if !self.rec.borrow().initialized => {
                self.rec.borrow_mut().initialized = true;
                if self.save().await.is_err() {
                    return Reply::Rejected(Rejection::Unavailable);
                }
            }
            "notifications/cancelled" => {
                if let Some(id) = msg.pointer("/params/requestId")
                    && let Some(call) = self.calls.borrow().get(&id_key(id))
                {
                    call.cancel.cancel();
                }
            }
            "notifications/roots/list_changed" => {
                let ctx = super::call::SessionCtx(self.clone());
                for provider in &self.tenant().providers {
                    provider.roots_changed(&ctx).await;
                }
            }
            // Other notifications (progress for nothing we asked, unknown ones) need nothing.
            _ => {}
        }
        Reply::Accepted
    }

    async fn request(
        self: Rc<Self>,
        id: Value,
        method: &str,
        msg: Value,
        force_json: bool,
        who: &Who,
    ) -> Reply {
        let params = msg.get("params").cloned().unwrap_or_else(|| json!({}));
        let answer = |r: Result<Value, RpcError>| {
            Reply::Json(match r {
                Ok(v) => result_response(&id, v),
                Err(e) => e.to_response(Some(&id)),
            })
        };
        match method {
            "ping" => answer(Ok(json!({}))),
            "initialize" => answer(Err(RpcError::new(
                code::INVALID_REQUEST,
                "this session is already initialized; send initialize without MCP-Session-Id to start a new one",
            ))),
            "tools/list" => answer(self.list_tools(&params, &who.access).await),
            "logging/setLevel" => {
                let Some(level) = params
                    .get("level")
                    .and_then(Value::as_str)
                    .filter(|l| protocol::log_level_rank(l).is_some())
                else {
                    return answer(Err(RpcError::invalid_params(format!(
                        "level must be one of {}",
                        protocol::LOG_LEVELS.join(", ")
                    ))));
                };
                self.rec.borrow_mut().log_level = Some(level.to_owned());
                if self.save().await.is_err() {
                    return Reply::Rejected(Rejection::Unavailable);
                }
                let ctx = super::call::SessionCtx(self.clone());
                let tenant = self.tenant();
                let fan_out = tenant.providers.iter().map(|p| p.set_log_level(level, &ctx));
                futures_util::future::join_all(fan_out).await;
                answer(Ok(json!({})))
            }
            "tools/call" => self.call_tool(id, params, force_json, who).await,
            "resources/list"
            | "resources/templates/list"
            | "resources/read"
            | "resources/subscribe"
            | "resources/unsubscribe"
            | "prompts/list"
            | "prompts/get"
            | "completion/complete"
                if self.tenant().providers.iter().any(|p| p.serves_features()) =>
            {
                answer(self.clone().feature_request(method, params, who).await)
            }
            _ => answer(Err(RpcError::method_not_found(method))),
        }
    }

    /// This session's tool index: every provider's list, built on first need and kept until an
    /// upstream's list changes. A provider that cannot list (an upstream down) contributes nothing
    /// this time, and the index is not kept, so the next request asks again.
    pub(crate) fn invalidate_tools(&self) {
        self.index.borrow_mut().take();
    }

    pub(crate) async fn tool_index(self: &Rc<Self>) -> Rc<ToolIndex> {
        if let Some(index) = self.index.borrow().clone() {
            return index;
        }
        self.ensure_followers();
        let ctx = super::call::SessionCtx(self.clone());
        let lists =
            futures_util::future::join_all(self.tenant().providers.iter().map(|p| p.list_tools(&ctx))).await;
        let mut complete = true;
        let lists = lists
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|e| {
                    tracing::warn!(session = self.tag(), error = %e.message, "a tool source could not list its tools");
                    complete = false;
                    Vec::new()
                })
            })
            .collect();
        let index = Rc::new(ToolIndex::new(lists));
        if complete {
            *self.index.borrow_mut() = Some(index.clone());
        }
        index
    }

    /// May `access` do `action` on `object`? Everything, on a tenant without a policy. (For
    /// filtering lists; a request for one item goes through [`Self::authorize`].)
    pub(crate) fn permits(&self, access: &Access, object: &str, action: &str) -> bool {
        self.tenant().permits(access, object, action)
    }

    /// Remember the access of the owner's latest request: what it may see decides which
    /// server-initiated messages (resource updates) still reach it.
    fn saw(&self, access: &Access) {
        let mut latest = self.latest_access.borrow_mut();
        if latest.as_ref() != Some(access) {
            *latest = Some(access.clone());
        }
    }

    /// May the session's owner, as of its latest request, still read resource `uri` (as it was
    /// published to it)? Roles can shrink with a refreshed token, and the policy can change,
    /// after a subscription was made: an update the owner may no longer read is not delivered.
    pub(crate) fn may_read(&self, uri: &str) -> bool {
        if self.tenant().authorizer.is_none() {
            return true;
        }
        match self.latest_access.borrow().as_ref() {
            Some(access) => self.permits(access, &format!("resource:{uri}"), action::READ),
            None => false,
        }
    }

    /// Like [`Self::permits`], for a request naming one item: a denial is an audit event.
    pub(crate) fn authorize(&self, who: &Who, object: &str, action: &str) -> bool {
        let ok = self.permits(&who.access, object, action);
        if self.tenant().authorizer.is_some() {
            marina_telemetry::metrics().authz_decision(&self.tenant().id, ok, authz_action(action));
        }
        if !ok {
            tracing::info!(
                target: "marina::audit",
                event = "access_denied",
                reason = "policy",
                tenant = %self.tenant().id,
                subject = %who.access.subject,
                object,
                action,
                request_id = %who.request_id,
                session = self.tag(),
                "access denied"
            );
        }
        ok
    }

    async fn list_tools(self: &Rc<Self>, params: &Value, access: &Access) -> Result<Value, RpcError> {
        let index = self.tool_index().await;
        if self.tenant().authorizer.is_some() {
            // One decision per list, not per item filtered.
            marina_telemetry::metrics().authz_decision(&self.tenant().id, true, "list");
        }
        // Only what the caller may call; pages are cut from the filtered list, so cursors stay
        // consistent for this caller.
        let tools: Vec<Value> = index
            .tools()
            .iter()
            .filter(|t| self.permits(access, &format!("tool:{}", t.name), action::CALL))
            .map(|t| t.definition.clone())
            .collect();
        page(
            "tools",
            "tools",
            &self.id,
            &tools,
            params.get("cursor"),
            self.node.sessions().page_size,
        )
    }

    async fn call_tool(self: Rc<Self>, id: Value, params: Value, force_json: bool, who: &Who) -> Reply {
        let err = |e: RpcError| Reply::Json(e.to_response(Some(&id)));
        let Some(name) = params.get("name").and_then(Value::as_str) else {
            return err(RpcError::invalid_params("tools/call needs a string name"));
        };
        let index = self.tool_index().await;
        // A tool the caller may not call is answered exactly like one that does not exist.
        let found = index
            .get(name)
            .filter(|_| self.authorize(who, &format!("tool:{name}"), action::CALL));
        let Some((def, _)) = found else {
            return err(RpcError::invalid_params(format!(
                "unknown tool: {}",
                protocol::truncate(name, 128)
            )));
        };
        match params.get("arguments") {
            None | Some(Value::Null) | Some(Value::Object(_)) => {}
            Some(_) => return err(RpcError::invalid_params("arguments must be an object")),
        }
        // Checked here, before any upstream sees them.
        if let Some(text) = self.tenant().argument_problem(def, params.get("arguments")) {
            let result = json!({"content": [{"type": "text", "text": text}], "isError": true});
            return Reply::Json(result_response(&id, result));
        }
        let key = id_key(&id);
        let limits = &self.tenant().settings.limits;
        let m = marina_telemetry::metrics();
        let tenant = self.tenant().id.clone();
        if let Some(max) = limits.max_inflight_calls_per_session {
            let allow = self.calls.borrow().len() < max;
            m.limit_decision(&tenant, "session_inflight", allow);
            if !allow {
                return Reply::Rejected(Rejection::Limited("session"));
            }
        }
        let duplicate = || {
            err(RpcError::new(
                code::INVALID_REQUEST,
                "a request with this id is already in flight",
            ))
        };
        if self.calls.borrow().contains_key(&key) {
            return duplicate();
        }
        let sse = !force_json && self.node.sessions().tools_call_response == CallResponseMode::Sse;
        if sse && self.stream_cap_reached(None) {
            return Reply::Rejected(Rejection::Limited("session"));
        }
        if let Some(max) = limits.max_inflight_calls
            && let Some(caps) = &self.node.config.caps
        {
            match caps
                .begin_call(&self.tenant().id, &self.call_cap_key(&key), max, CALL_LEASE)
                .await
            {
                Ok(true) => m.limit_decision(&tenant, "inflight", true),
                Ok(false) => {
                    m.limit_decision(&tenant, "inflight", false);
                    return Reply::Rejected(Rejection::Limited("calls_tenant"));
                }
                Err(_) => return Reply::Rejected(Rejection::Unavailable),
            }
            // Another request with the same id may have come in while we asked.
            if self.calls.borrow().contains_key(&key) {
                self.end_call_cap(&key);
                return duplicate();
            }
        }
        let cancel = self.stopping.child_token();
        self.calls.borrow_mut().insert(
            key.clone(),
            Call {
                cancel: cancel.clone(),
            },
        );
        if !sse {
            let (tx, rx) = oneshot::channel();
            actix::spawn(
                self.clone()
                    .run_call(RunCall {
                        stream: None,
                        id,
                        params,
                        cancel,
                        progress_floor: f64::NEG_INFINITY,
                        reply: Some(tx),
                        wait: who.wait.clone(),
                    })
                    .in_span(marina_telemetry::traces::current()),
            );
            return Reply::Pending(rx);
        }
        let call = InflightCall {
            request_id: id.clone(),
            method: "tools/call".into(),
            params: params.clone(),
            replayable: def.replayable(),
        };
        let stream = {
            let mut rec = self.rec.borrow_mut();
            let s = rec.next_stream;
            rec.next_stream += 1;
            rec.inflight.insert(s, call.clone());
            s
        };
        // Write-through before any work: if this node dies from here on, the next holder finds
        // the call and gives it an outcome.
        let begun = match self.ttl() {
            Some(ttl) => self.node.store.begin_call(&self.fence, stream, &call, ttl).await,
            None => Err(StoreError::Gone),
        };
        if let Err(e) = begun {
            self.rec.borrow_mut().inflight.remove(&stream);
            self.calls.borrow_mut().remove(&key);
            self.end_call_cap(&key);
            return Reply::Rejected(match e {
                StoreError::Fenced => {
                    self.lose("write fenced");
                    Rejection::Gone
                }
                StoreError::Gone => Rejection::Gone,
                _ => Rejection::Unavailable,
            });
        }
        let (tx, rx) = mpsc::channel(LIVE_BUFFER);
        self.streams.borrow_mut().insert(
            stream,
            Slot {
                lock: Rc::new(tokio::sync::Mutex::new(())),
                live: Some(tx),
            },
        );
        actix::spawn(
            self.clone()
                .run_call(RunCall {
                    stream: Some(stream),
                    id,
                    params,
                    cancel,
                    progress_floor: f64::NEG_INFINITY,
                    reply: None,
                    wait: who.wait.clone(),
                })
                .in_span(marina_telemetry::traces::current()),
        );
        let polling = protocol::supports_sse_polling(&self.protocol_version());
        Reply::Stream(StreamHandle {
            stream,
            priming: polling.then(|| EventId::start(stream)),
            backlog: Vec::new(),
            frames: rx,
            polling,
        })
    }

    /// Allocate an id for a server→client request: unique within the session across failovers
    /// (the fencing token is part of it).
    pub(crate) fn next_client_request_id(&self) -> String {
        let n = self.next_client_request.get() + 1;
        self.next_client_request.set(n);
        format!("marina-{}-{}", self.fence.token, n)
    }

    // === streams ===

    pub(crate) async fn open_stream(self: Rc<Self>, req: OpenStream) -> Result<StreamHandle, Rejection> {
        if self.retiring.get() {
            return Err(Rejection::Moved);
        }
        if self.expired() {
            return Err(Rejection::Gone);
        }
        self.check_owner(req.owner.as_ref())?;
        self.saw(&req.access);
        self.touch();
        self.check_version(req.protocol_version.as_deref())?;
        if self.lost.get() {
            return Err(Rejection::Gone);
        }
        let polling = protocol::supports_sse_polling(&self.protocol_version());
        let store_err = |_| Rejection::Unavailable;
        let target = req.last_event_id.as_ref().map_or(GET_STREAM, |e| e.stream);
        if self.stream_cap_reached(Some(target)) {
            return Err(Rejection::Limited("session"));
        }
        match req.last_event_id {
            None if self.draining.get() => {
                // Served, not refused: the stream closes at once (with a retry hint where the
                // session speaks SEP-1699) and the client reconnects — to the session's next
                // holder once this actor has retired. Its priming id resumes from where this node
                // last had a GET stream, so what was sent meanwhile is replayed there.
                let gap = self.gap0.borrow().clone();
                let priming = if polling {
                    let after = match gap {
                        Some(after) => Some(after),
                        None => self
                            .node
                            .store
                            .last_entry(&self.id, GET_STREAM)
                            .await
                            .map_err(store_err)?,
                    };
                    Some(EventId {
                        stream: GET_STREAM,
                        entry: after.unwrap_or_else(|| "0-0".into()),
                    })
                } else {
                    None
                };
                let (_closed, rx) = mpsc::channel(1);
                Ok(StreamHandle {
                    stream: GET_STREAM,
                    priming,
                    backlog: Vec::new(),
                    frames: rx,
                    polling,
                })
            }
            None => {
                let lock = self.slot_lock(GET_STREAM);
                let _order = lock.lock().await;
                // A new standalone GET replaces the previous one (closed with a retry hint): a
                // client reconnecting after a dropped connection must not wait until the server
                // notices the old one is dead. Every message still goes on exactly one stream.
                // Messages sent while no GET stream was open come first (the lock keeps new ones
                // out until the connection is attached).
                let gap = self.gap0.borrow_mut().take();
                let mut backlog = Vec::new();
                if let Some(after) = &gap {
                    let cap = self.node.sessions().max_events_per_stream;
                    let missed = self
                        .node
                        .store
                        .read_events(&self.id, GET_STREAM, after, cap)
                        .await
                        .map_err(store_err)?;
                    backlog.extend(missed.into_iter().map(|e| {
                        Frame::Event {
                            id: EventId {
                                stream: GET_STREAM,
                                entry: e.entry,
                            }
                            .to_string(),
                            data: e.data,
                        }
                    }));
                }
                let priming = if !polling {
                    None
                } else if let Some(after) = gap {
                    // Resuming from the priming id replays the backlog too.
                    Some(EventId {
                        stream: GET_STREAM,
                        entry: after,
                    })
                } else {
                    let last = self
                        .node
                        .store
                        .last_entry(&self.id, GET_STREAM)
                        .await
                        .map_err(store_err)?;
                    Some(EventId {
                        stream: GET_STREAM,
                        entry: last.unwrap_or_else(|| "0-0".into()),
                    })
                };
                let (tx, rx) = mpsc::channel(LIVE_BUFFER);
                if let Some(slot) = self.streams.borrow_mut().get_mut(&GET_STREAM) {
                    slot.live = Some(tx);
                }
                Ok(StreamHandle {
                    stream: GET_STREAM,
                    priming,
                    backlog,
                    frames: rx,
                    polling,
                })
            }
            Some(eid) => {
                if eid.stream >= self.rec.borrow().next_stream {
                    return Err(Rejection::UnknownStream);
                }
                let lock = self.slot_lock(eid.stream);
                // Holding the stream's lock: no event can be appended between the replay and
                // attaching the live connection, so nothing is missed or repeated.
                let _order = lock.lock().await;
                let cap = self.node.sessions().max_events_per_stream;
                let mut backlog = Vec::new();
                let mut after = eid.entry.clone();
                loop {
                    let batch = self
                        .node
                        .store
                        .read_events(&self.id, eid.stream, &after, 256)
                        .await
                        .map_err(store_err)?;
                    let Some(last) = batch.last() else { break };
                    after = last.entry.clone();
                    backlog.extend(batch.into_iter().map(|e| {
                        Frame::Event {
                            id: EventId {
                                stream: eid.stream,
                                entry: e.entry,
                            }
                            .to_string(),
                            data: e.data,
                        }
                    }));
                    if backlog.len() > cap {
                        break;
                    }
                }
                let is_get = eid.stream == GET_STREAM;
                let running = !is_get && self.rec.borrow().inflight.contains_key(&eid.stream);
                let (tx, rx) = mpsc::channel(LIVE_BUFFER);
                if running || (is_get && !self.draining.get()) {
                    // Replaces any previous connection of this stream: one message, one stream.
                    if let Some(slot) = self.streams.borrow_mut().get_mut(&eid.stream) {
                        slot.live = Some(tx);
                    }
                } else if !is_get {
                    // The stream's response is in the backlog: the stream is complete.
                    backlog.push(Frame::End);
                    self.streams.borrow_mut().remove(&eid.stream);
                }
                // (A GET stream on a draining node gets its backlog, then a retry hint.)
                Ok(StreamHandle {
                    stream: eid.stream,
                    priming: None,
                    backlog,
                    frames: rx,
                    polling,
                })
            }
        }
    }
}

/// The entry id just before `entry` (`<ms>-<seq>`), for "from this entry on" reads with the
/// store's exclusive `after`.
fn predecessor(entry: &str) -> String {
    let (ms, seq) = marina_core::domain::entry_key(entry);
    match (ms, seq) {
        (_, s) if s > 0 => format!("{ms}-{}", s - 1),
        (m, _) if m > 0 => format!("{}-{}", m - 1, u64::MAX),
        _ => "0-0".into(),
    }
}

/// A stable 32-bit tag of the session (FNV-1a): it binds cursors to their session, the same on
/// every node and every version.
fn session_tag32(id: &SessionId) -> u32 {
    id.as_str().bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Gateway-owned list cursor: `<list>:<offset>:<session tag>`, base64url. A cursor of another
/// list or session (or made up) is refused with -32602.
pub(crate) fn encode_cursor(list: &str, id: &SessionId, offset: usize) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("{list}:{offset}:{:08x}", session_tag32(id)))
}

pub(crate) fn decode_cursor(list: &str, id: &SessionId, c: &str) -> Option<usize> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(c).ok()?;
    let rest = std::str::from_utf8(&raw)
        .ok()?
        .strip_prefix(list)?
        .strip_prefix(':')?;
    let (offset, tag) = rest.split_once(':')?;
    (tag == format!("{:08x}", session_tag32(id))).then_some(())?;
    offset.parse().ok()
}

/// One page of `items` (already in order) after `cursor`, as `{<key>: [...], nextCursor?}`.
pub(crate) fn page(
    list: &str,
    key: &str,
    id: &SessionId,
    items: &[Value],
    cursor: Option<&Value>,
    size: usize,
) -> Result<Value, RpcError> {
    let start = match cursor {
        None | Some(Value::Null) => 0,
        Some(Value::String(c)) => decode_cursor(list, id, c)
            .filter(|o| *o <= items.len())
            .ok_or_else(|| RpcError::invalid_params("invalid cursor"))?,
        Some(_) => return Err(RpcError::invalid_params("cursor must be a string")),
    };
    let end = (start + size).min(items.len());
    let mut result = json!({ key: items[start..end] });
    if end < items.len() {
        result["nextCursor"] = json!(encode_cursor(list, id, end));
    }
    Ok(result)
}

/// `action` of `marina_authz_decisions_total` (a fixed set whatever the policy names).
pub(crate) fn authz_action(action: &str) -> &'static str {
    match action {
        "call" => "call",
        "read" => "read",
        "get" => "get",
        _ => "list",
    }
}

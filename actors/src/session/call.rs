//! Running a `tools/call`: the [`CallContext`] a tool sees (progress, logs, requests to the
//! client, cancellation), the call's outcome on its stream, and recovery of calls that were in
//! flight when a previous holder of the session died.

use std::rc::Rc;

use async_trait::async_trait;
use marina_core::caps::CALL_LEASE;
use marina_core::domain::{GET_STREAM, StreamId};
use marina_core::protocol::{self, RpcError, code, notification, result_response};
use marina_core::tools::{CallContext, SessionContext, UpstreamSession};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::state::{Call, Shared, id_key};

/// When a client whose interrupted call could not be re-run for the tenant's cap may retry it.
const RECOUNT_RETRY_MS: u64 = 1_000;

/// What a tool sees of its session while it runs.
struct CallCtx {
    shared: Rc<Shared>,
    /// The call's POST stream; `None` in JSON mode (its notifications go to the GET stream).
    stream: Option<StreamId>,
    progress_token: Option<Value>,
    /// Progress at or below this was already sent by an earlier run of this call (failover
    /// re-run): progress must keep increasing, so those are not sent again.
    progress_floor: f64,
    cancel: CancellationToken,
    /// Index of the provider whose messages this context relays (resource URIs it publishes may
    /// be namespaced in this session).
    provider: Option<usize>,
    /// The request's clock of upstream waits (a default one outside a client's request).
    wait: marina_telemetry::UpstreamWait,
}

impl CallCtx {
    fn target(&self) -> StreamId {
        self.stream.unwrap_or(GET_STREAM)
    }
}

/// Whole numbers as JSON integers (`3`, not `3.0`).
fn number(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        json!(v as i64)
    } else {
        json!(v)
    }
}

/// Removes a pending server→client request when its waiter goes away. Unanswered (the upstream
/// cancelled it, or the call it served ended), the client is told with `notifications/cancelled`
/// so it can stop asking its user.
struct PendingGuard {
    shared: Rc<Shared>,
    id: String,
    stream: StreamId,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        let unanswered = self.shared.pending.borrow_mut().remove(&self.id).is_some();
        if unanswered && !self.shared.stopping.is_cancelled() {
            let (shared, stream) = (self.shared.clone(), self.stream);
            let note = notification(
                "notifications/cancelled",
                json!({"requestId": self.id, "reason": "the server no longer needs the answer"}),
            );
            actix::spawn(async move {
                let _ = shared.emit(stream, &note).await;
            });
        }
    }
}

/// What a tool source sees of the session outside a call (listing tools).
pub(crate) struct SessionCtx(pub(crate) Rc<Shared>);

impl Shared {
    fn log_level(&self) -> Option<String> {
        self.rec.borrow().log_level.clone()
    }

    fn client_capabilities(&self) -> Value {
        self.rec.borrow().client_capabilities.clone()
    }

    fn upstream_session(&self, upstream: &str) -> Option<UpstreamSession> {
        self.rec.borrow().upstreams.get(upstream).cloned()
    }

    async fn set_upstream_session(
        &self,
        upstream: &str,
        session: Option<UpstreamSession>,
    ) -> Result<(), RpcError> {
        {
            let mut rec = self.rec.borrow_mut();
            match session {
                Some(s) => rec.upstreams.insert(upstream.to_owned(), s),
                None => rec.upstreams.remove(upstream),
            };
        }
        self.save()
            .await
            .map_err(|_| RpcError::new(code::SERVICE_UNAVAILABLE, "session store unavailable"))
    }
}

#[async_trait(?Send)]
impl SessionContext for SessionCtx {
    fn session_key(&self) -> String {
        self.0.tag().to_owned() + &self.0.fence.token.to_string()
    }
    fn client_capabilities(&self) -> Value {
        self.0.client_capabilities()
    }
    fn log_level(&self) -> Option<String> {
        self.0.log_level()
    }
    fn upstream_session(&self, upstream: &str) -> Option<UpstreamSession> {
        self.0.upstream_session(upstream)
    }
    async fn set_upstream_session(
        &self,
        upstream: &str,
        session: Option<UpstreamSession>,
    ) -> Result<(), RpcError> {
        self.0.set_upstream_session(upstream, session).await
    }
}

#[async_trait(?Send)]
impl SessionContext for CallCtx {
    fn session_key(&self) -> String {
        self.shared.tag().to_owned() + &self.shared.fence.token.to_string()
    }
    fn client_capabilities(&self) -> Value {
        self.shared.client_capabilities()
    }
    fn log_level(&self) -> Option<String> {
        self.shared.log_level()
    }
    fn upstream_session(&self, upstream: &str) -> Option<UpstreamSession> {
        self.shared.upstream_session(upstream)
    }
    async fn set_upstream_session(
        &self,
        upstream: &str,
        session: Option<UpstreamSession>,
    ) -> Result<(), RpcError> {
        self.shared.set_upstream_session(upstream, session).await
    }
}

#[async_trait(?Send)]
impl CallContext for CallCtx {
    fn progress_token(&self) -> Option<Value> {
        self.progress_token.clone()
    }
    fn upstream_waited(&self, waited: std::time::Duration) {
        self.wait.add(waited);
    }

    async fn progress(&self, progress: f64, total: Option<f64>, message: Option<&str>) {
        let Some(token) = &self.progress_token else {
            return;
        };
        if progress <= self.progress_floor {
            return;
        }
        let mut params = json!({"progressToken": token, "progress": number(progress)});
        if let Some(t) = total {
            params["total"] = number(t);
        }
        if let Some(m) = message {
            params["message"] = json!(m);
        }
        let _ = self
            .shared
            .emit(self.target(), &notification("notifications/progress", params))
            .await;
    }

    async fn log(&self, level: &str, logger: &str, data: Value) {
        let min = self
            .shared
            .rec
            .borrow()
            .log_level
            .as_deref()
            .and_then(protocol::log_level_rank)
            .unwrap_or(0);
        if protocol::log_level_rank(level).is_some_and(|r| r >= min) {
            let params = json!({"level": level, "logger": logger, "data": data});
            let _ = self
                .shared
                .emit(self.target(), &notification("notifications/message", params))
                .await;
        }
    }

    async fn request_client(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        if let Some(cap) = protocol::capability_of(method)
            && !self.client_supports(cap)
        {
            return Err(RpcError::new(
                code::MISSING_CAPABILITY,
                format!("the client did not declare the {cap} capability, so it cannot be asked"),
            ));
        }
        let id = self.shared.next_client_request_id();
        let (tx, rx) = oneshot::channel();
        self.shared.pending.borrow_mut().insert(id.clone(), tx);
        let _guard = PendingGuard {
            shared: self.shared.clone(),
            id: id.clone(),
            stream: self.target(),
        };
        self.shared
            .emit(self.target(), &protocol::request(&json!(id), method, params))
            .await
            .map_err(|_| RpcError::new(code::SERVICE_UNAVAILABLE, "session store unavailable"))?;
        rx.await.unwrap_or_else(|_| {
            Err(RpcError::new(
                code::INTERRUPTED,
                "the session stopped before the client answered",
            ))
        })
    }

    fn cancellation(&self) -> CancellationToken {
        self.cancel.clone()
    }

    async fn notify(&self, method: &str, params: Value) {
        if method.ends_with("/list_changed") {
            self.shared.forget_listings();
        }
        let params = match (method, self.provider) {
            ("notifications/resources/updated", Some(p)) => {
                let params = self.shared.published_update(p, params);
                let uri = params["uri"].as_str().unwrap_or_default();
                if !self.shared.may_read(uri) {
                    tracing::debug!(
                        session = self.shared.tag(),
                        "an update of a resource the owner may no longer read is dropped"
                    );
                    return;
                }
                params
            }
            _ => params,
        };
        let _ = self
            .shared
            .emit(self.target(), &notification(method, params))
            .await;
    }

    fn tools_changed(&self) {
        self.shared.invalidate_tools();
    }
}

impl Shared {
    /// Start following every upstream's server-initiated messages for this session (once per
    /// upstream while the actor lives): they go to the session's GET stream.
    pub(crate) fn ensure_followers(self: &Rc<Self>) {
        for (i, provider) in self.tenant().providers.iter().enumerate() {
            if !provider.serves_features() || !self.followers.borrow_mut().insert(i) {
                continue;
            }
            let cancel = self.follow_cancel.borrow().child_token();
            let (shared, provider) = (self.clone(), provider.clone());
            actix::spawn(async move {
                let ctx = CallCtx {
                    shared: shared.clone(),
                    stream: None,
                    progress_token: None,
                    progress_floor: f64::NEG_INFINITY,
                    cancel: cancel.clone(),
                    provider: Some(i),
                    wait: Default::default(),
                };
                tokio::select! {
                    () = provider.follow(&ctx) => {}
                    () = cancel.cancelled() => {}
                }
                // Cancelled: the actor stops, or the tenant changed and the set was cleared
                // (index `i` may name another provider's follower now).
                if !cancel.is_cancelled() {
                    shared.followers.borrow_mut().remove(&i);
                }
            });
        }
    }
}

/// One tools/call to run (see [`Shared::run_call`]).
pub(crate) struct RunCall {
    /// The call's POST stream; `None` in JSON mode.
    pub(crate) stream: Option<StreamId>,
    pub(crate) id: Value,
    pub(crate) params: Value,
    pub(crate) cancel: CancellationToken,
    /// Progress already sent by an earlier run of this call.
    pub(crate) progress_floor: f64,
    /// Where the response goes in JSON mode.
    pub(crate) reply: Option<oneshot::Sender<Value>>,
    /// The client request's clock of upstream waits (a fresh one for a re-run).
    pub(crate) wait: marina_telemetry::UpstreamWait,
}

impl Shared {
    /// Run one tools/call to its outcome. With a stream, the response is persisted on it and the
    /// in-flight record cleared; in JSON mode it goes to `reply`.
    pub(crate) async fn run_call(self: Rc<Self>, run: RunCall) {
        let RunCall {
            stream,
            id,
            params,
            cancel,
            progress_floor,
            reply,
            wait,
        } = run;
        let name = params
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let args = params
            .get("arguments")
            .filter(|a| a.is_object())
            .cloned()
            .unwrap_or_else(|| json!({}));
        let index = self.tool_index().await.get(&name).map(|(_, p)| p);
        let ctx = CallCtx {
            shared: self.clone(),
            stream,
            progress_token: params
                .pointer("/_meta/progressToken")
                .filter(|t| t.is_string() || t.is_number())
                .cloned(),
            progress_floor,
            cancel: cancel.clone(),
            provider: index,
            wait,
        };
        let provider = index.map(|p| self.tenant().providers[p].clone());
        let outcome = match provider {
            None => Some(Err(RpcError::invalid_params(format!(
                "unknown tool: {}",
                protocol::truncate(&name, 128)
            )))),
            Some(p) => tokio::select! {
                r = p.call(&name, args, &ctx) => Some(r),
                () = cancel.cancelled() => None,
            },
        };
        drop(ctx);
        let response = outcome.map(|r| match r {
            Ok(mut result) => {
                if let Some(i) = index {
                    self.publish_links(i, &mut result);
                }
                result_response(&id, result)
            }
            Err(e) => e.to_response(Some(&id)),
        });
        self.calls.borrow_mut().remove(&id_key(&id));
        self.end_call_cap(&id_key(&id));
        let Some(stream) = stream else {
            if let (Some(tx), Some(resp)) = (reply, response) {
                let _ = tx.send(resp);
            }
            return;
        };
        if self.stopping.is_cancelled() {
            // The actor stopped (lease lost, drain timeout, deletion): the call stays recorded as
            // in flight, and whoever holds the session next gives it its outcome.
            return;
        }
        // Answered, or cancelled by the client (no response, per the spec): the stream is done.
        if !self.complete(stream, response.as_ref()).await {
            tracing::warn!(
                session = self.tag(),
                stream,
                "could not persist a call's outcome; the next holder will"
            );
        }
    }

    /// Give every call recorded as in flight (by a holder that died) a definite outcome: re-run
    /// it if the tool is read-only and idempotent, otherwise answer that it was interrupted.
    pub(crate) async fn recover_inflight(self: Rc<Self>) {
        let inflight: Vec<_> = self.rec.borrow().inflight.clone().into_iter().collect();
        for (stream, call) in inflight {
            let known = self
                .tool_index()
                .await
                .get(call.params["name"].as_str().unwrap_or_default())
                .is_some();
            if call.replayable && known {
                if let Err(refusal) = self.recount_call(&call.request_id, stream).await {
                    // The stream is open (the client is resuming it): the refusal goes in it.
                    self.complete(stream, Some(&refusal.to_response(Some(&call.request_id))))
                        .await;
                    continue;
                }
                let floor = self.sent_progress(stream).await;
                let cancel = self.stopping.child_token();
                self.calls.borrow_mut().insert(
                    id_key(&call.request_id),
                    Call {
                        cancel: cancel.clone(),
                    },
                );
                tracing::info!(
                    session = self.tag(),
                    stream,
                    "re-running an interrupted idempotent call"
                );
                actix::spawn(self.clone().run_call(RunCall {
                    stream: Some(stream),
                    id: call.request_id,
                    params: call.params,
                    cancel,
                    progress_floor: floor,
                    reply: None,
                    wait: Default::default(),
                }));
            } else {
                tracing::info!(
                    session = self.tag(),
                    stream,
                    "answering an interrupted call with an error"
                );
                let err = RpcError::new(
                    code::INTERRUPTED,
                    "the request was interrupted by a node failure and may or may not have taken effect",
                )
                .to_response(Some(&call.request_id));
                // Its place among the tenant's calls in flight (the dead node's lease) is free.
                self.end_call_cap(&id_key(&call.request_id));
                self.complete(stream, Some(&err)).await;
            }
        }
    }

    /// Count a call about to be re-run among its tenant's calls in flight, like a new one (its
    /// entry may still be there from the node that died: it keeps its place). `Err` is the
    /// answer to give instead: the cap is reached, or the store cannot say.
    async fn recount_call(&self, request_id: &Value, stream: StreamId) -> Result<(), RpcError> {
        let (Some(max), Some(caps)) = (
            self.tenant().settings.limits.max_inflight_calls,
            self.node.config.caps.as_ref(),
        ) else {
            return Ok(());
        };
        let member = self.call_cap_key(&id_key(request_id));
        match caps.begin_call(&self.tenant().id, &member, max, CALL_LEASE).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                tracing::info!(
                    target: "marina::audit",
                    event = "rate_limited",
                    reason = "calls_tenant",
                    tenant = %self.tenant().id,
                    session = self.tag(),
                    stream,
                    "an interrupted call cannot be re-run: the tenant's calls in flight are at their cap"
                );
                Err(RpcError::new(
                    code::RATE_LIMITED,
                    "the call was interrupted by a node failure and cannot be re-run now: too many calls in flight for this tenant; retry shortly",
                )
                .with_data(json!({"retryAfterMs": RECOUNT_RETRY_MS, "scope": "calls_tenant"})))
            }
            Err(_) => Err(RpcError::new(
                code::INTERRUPTED,
                "the request was interrupted by a node failure and could not be re-run",
            )),
        }
    }

    /// The highest progress already sent on `stream` (to keep progress increasing on a re-run).
    async fn sent_progress(&self, stream: StreamId) -> f64 {
        let cap = self.node.sessions().max_events_per_stream;
        let events = self
            .node
            .store
            .read_events(&self.id, stream, "0-0", cap)
            .await
            .unwrap_or_default();
        events
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
            .filter(|m| m["method"] == "notifications/progress")
            .filter_map(|m| m.pointer("/params/progress").and_then(Value::as_f64))
            .fold(f64::NEG_INFINITY, f64::max)
    }
}

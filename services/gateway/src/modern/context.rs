//! The request context of a stateless request: what the session actor supplies for a sessionful
//! request — the client's capabilities, its log level, the upstream sessions it continues, the
//! stream its notifications go on — supplied by the request itself and the store.
//!
//! Upstream MCP servers of the sessionful era need a session: a principal's stateless requests
//! share one per upstream, kept in the store (`SessionStore::principal_upstreams`), so any node
//! continues it and no request pays an `initialize`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use marina_core::protocol::{self, RpcError, code};
use marina_core::store::SessionStore;
use marina_core::tenant::Tenant;
use marina_core::tools::{CallContext, SessionContext, UpstreamSession};
use serde_json::{Map, Value, json};
use sha2::Digest as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::cache::UpstreamSessions;
use super::meta::RequestMeta;
use super::park::AskLink;

/// One stateless request's context.
pub struct RequestCtx {
    /// `<tenant>:<principal digest>`: the key of the principal's shared upstream sessions.
    key: String,
    /// The tenant snapshot the request is served from (what `kept` is valid for).
    tenant: Weak<Tenant>,
    meta: RequestMeta,
    store: Arc<dyn SessionStore>,
    /// This node's copy of principals' upstream sessions, written through.
    kept: Arc<UpstreamSessions>,
    idle_ttl: Duration,
    upstreams: RefCell<HashMap<String, UpstreamSession>>,
    progress_token: Option<Value>,
    /// The request's own response stream, when it has one (notifications go there; dropped
    /// when it is full).
    out: Option<mpsc::Sender<Value>>,
    /// A call that cannot be re-run asks its client through this (see `park.rs`).
    link: Option<AskLink>,
    /// A retry of a call an upstream answered `input_required`: what its request adds.
    continuation: Option<Value>,
    cancel: CancellationToken,
    /// Answers to the questions of earlier rounds of a multi round-trip request, by key `q<n>`.
    answers: Map<String, Value>,
    /// Questions asked this round that have no answer yet (its `inputRequests`).
    asked: RefCell<Map<String, Value>>,
    /// Questions asked so far this round (they are numbered in order).
    questions: Cell<usize>,
    /// The source of the running call may be re-run with the answers (see
    /// `ToolProvider::replays_questions`); if not, its questions fail.
    replays: bool,
    /// A capability a question needed that the client did not declare.
    missing: RefCell<Option<&'static str>>,
}

impl RequestCtx {
    /// The context of a request of `principal` (its cap key, `anonymous` without authentication)
    /// of tenant snapshot `t`, with its upstream sessions when `upstreams` (a source of the tenant
    /// keeps them): those this node keeps (`cache.rs`), or else read from the store — one store
    /// round trip only for requests that may need them, and only when the node has none.
    pub async fn load(
        t: &Arc<Tenant>,
        principal: &str,
        meta: RequestMeta,
        store: Arc<dyn SessionStore>,
        kept: Arc<UpstreamSessions>,
        idle_ttl: Duration,
        upstreams: bool,
    ) -> Result<Self, RpcError> {
        let digest = sha2::Sha256::digest(principal.as_bytes());
        let key = format!("{}:{}", t.id, hex::encode(&digest[..12]));
        let upstreams = match upstreams.then(|| kept.get(t, &key)) {
            None => HashMap::new(),
            Some(Some(known)) => known,
            Some(None) => {
                let stored = stored_sessions(&*store, &key).await?;
                // None stored: not kept, so one another node makes is found on the next request.
                if !stored.is_empty() {
                    kept.put(t, &key, stored.clone());
                }
                stored
            }
        };
        Ok(Self {
            key,
            tenant: Arc::downgrade(t),
            meta,
            store,
            kept,
            idle_ttl,
            upstreams: RefCell::new(upstreams),
            progress_token: None,
            out: None,
            cancel: CancellationToken::new(),
            answers: Map::new(),
            asked: RefCell::new(Map::new()),
            questions: Cell::new(0),
            replays: false,
            missing: RefCell::new(None),
            link: None,
            continuation: None,
        })
    }

    /// The answers of earlier rounds (the n-th question asked gets answer `q<n>`), for a call
    /// whose source `replays` its questions.
    pub fn with_answers(mut self, answers: Map<String, Value>, replays: bool) -> Self {
        self.answers = answers;
        self.replays = replays;
        self
    }

    /// The capability a question needed that the client did not declare, if one did.
    pub fn missing_capability(&self) -> Option<&'static str> {
        *self.missing.borrow()
    }

    /// The questions asked this round without an answer (`inputRequests`).
    pub fn take_asked(&self) -> Map<String, Value> {
        std::mem::take(&mut *self.asked.borrow_mut())
    }

    /// Notifications of the request (progress, log messages) go to `out`, with `token` naming
    /// its progress; `cancel` fires when the client goes away.
    pub fn streaming(
        mut self,
        token: Option<Value>,
        out: mpsc::Sender<Value>,
        cancel: CancellationToken,
    ) -> Self {
        self.progress_token = token;
        self.out = Some(out);
        self.cancel = cancel;
        self
    }

    /// The context of a call running in the background (`park.rs`): notifications go to
    /// `notes`, questions through `link`, and `cancel` fires when the call is given up.
    pub fn running(mut self, notes: mpsc::Sender<Value>, link: AskLink, cancel: CancellationToken) -> Self {
        self.out = Some(notes);
        self.link = Some(link);
        self.cancel = cancel;
        self
    }

    /// Continue an upstream's multi round-trip request: `more` (`inputResponses`, the
    /// upstream's `requestState`) goes into the upstream request.
    pub fn with_continuation(mut self, more: Value) -> Self {
        self.continuation = Some(more);
        self
    }

    /// The progress token the call's notifications carry.
    pub fn with_progress_token(mut self, token: Option<Value>) -> Self {
        self.progress_token = token;
        self
    }

    fn send(&self, method: &str, params: Value) {
        if let Some(out) = &self.out {
            let _ = out.try_send(protocol::notification(method, params));
        }
    }
}

impl RequestCtx {
    /// Keep this request's upstream sessions on the node (for the tenant snapshot it serves).
    fn keep(&self) {
        if let Some(t) = self.tenant.upgrade() {
            self.kept.put(&t, &self.key, self.upstreams.borrow().clone());
        }
    }
}

/// The upstream sessions of `key` in the store.
async fn stored_sessions(
    store: &dyn SessionStore,
    key: &str,
) -> Result<HashMap<String, UpstreamSession>, RpcError> {
    let stored = store.principal_upstreams(key).await.map_err(|_| unavailable())?;
    Ok(stored
        .into_iter()
        .filter_map(|(k, v)| serde_json::from_str(&v).ok().map(|s| (k, s)))
        .collect())
}

fn unavailable() -> RpcError {
    RpcError::new(code::SERVICE_UNAVAILABLE, "session store unavailable")
}

#[async_trait(?Send)]
impl SessionContext for RequestCtx {
    fn session_key(&self) -> String {
        self.key.clone()
    }

    fn client_capabilities(&self) -> Value {
        self.meta.client_capabilities.clone()
    }

    fn log_level(&self) -> Option<String> {
        self.meta.log_level.clone()
    }

    fn upstream_sessions_shared(&self) -> bool {
        true
    }

    fn upstream_session(&self, upstream: &str) -> Option<UpstreamSession> {
        self.upstreams.borrow().get(upstream).cloned()
    }

    async fn set_upstream_session(
        &self,
        upstream: &str,
        session: Option<UpstreamSession>,
    ) -> Result<(), RpcError> {
        if session.is_none() {
            // The upstream lost the session this request used. If another node has replaced it
            // meanwhile (this node's copy was older than the store's), continue that one.
            let stored = stored_sessions(&*self.store, &self.key).await?;
            let failed = self.upstreams.borrow().get(upstream).cloned();
            if let Some(newer) = stored.get(upstream).filter(|s| Some(*s) != failed.as_ref()) {
                self.upstreams
                    .borrow_mut()
                    .insert(upstream.to_owned(), newer.clone());
                self.keep();
                return Ok(());
            }
        }
        let json = session.as_ref().and_then(|s| serde_json::to_string(s).ok());
        match session {
            Some(s) => self.upstreams.borrow_mut().insert(upstream.to_owned(), s),
            None => self.upstreams.borrow_mut().remove(upstream),
        };
        self.keep();
        self.store
            .set_principal_upstream(&self.key, upstream, json.as_deref(), self.idle_ttl)
            .await
            .map_err(|_| unavailable())
    }
}

#[async_trait(?Send)]
impl CallContext for RequestCtx {
    fn progress_token(&self) -> Option<Value> {
        self.progress_token.clone()
    }

    async fn progress(&self, progress: f64, total: Option<f64>, message: Option<&str>) {
        let Some(token) = &self.progress_token else {
            return;
        };
        let mut params = json!({"progressToken": token, "progress": progress});
        if let Some(t) = total {
            params["total"] = json!(t);
        }
        if let Some(m) = message {
            params["message"] = json!(m);
        }
        self.send("notifications/progress", params);
    }

    async fn log(&self, level: &str, logger: &str, data: Value) {
        // No log messages unless the request asks for them (2026-07-28).
        let Some(min) = self.meta.log_level.as_deref().and_then(protocol::log_level_rank) else {
            return;
        };
        if protocol::log_level_rank(level).is_some_and(|r| r >= min) {
            self.send(
                "notifications/message",
                json!({"level": level, "logger": logger, "data": data}),
            );
        }
    }

    async fn request_client(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        // The stateless era has no server-initiated requests: a question is answered from an
        // earlier round, or becomes one of this round's `inputRequests` (see `mrtr.rs`).
        if let Some(cap) = protocol::capability_of(method)
            && !self.client_supports(cap)
        {
            self.missing.replace(Some(cap));
            return Err(RpcError::new(
                code::MISSING_CAPABILITY,
                format!("the client did not declare the {cap} capability"),
            ));
        }
        if !self.replays {
            // Re-running this source could repeat what it did before asking: the call waits,
            // parked, for the answer (`park.rs`).
            return match &self.link {
                Some(link) => link.ask(method, params).await,
                None => Err(RpcError::new(
                    code::INTERNAL_ERROR,
                    format!("{method} cannot be asked outside a running call"),
                )),
            };
        }
        let n = self.questions.get();
        self.questions.set(n + 1);
        let key = format!("q{n}");
        if let Some(answer) = self.answers.get(&key) {
            return Ok(answer.clone());
        }
        self.asked
            .borrow_mut()
            .insert(key, json!({"method": method, "params": params}));
        Err(RpcError::new(code::INTERRUPTED, "input required from the client"))
    }

    fn cancellation(&self) -> CancellationToken {
        self.cancel.clone()
    }

    async fn notify(&self, method: &str, params: Value) {
        // Only what relates to this request belongs on its stream.
        if matches!(method, "notifications/progress" | "notifications/message") {
            self.send(method, params);
        }
    }

    fn tools_changed(&self) {}

    fn passes_input_required(&self) -> bool {
        true
    }

    fn continuation(&self) -> Option<Value> {
        self.continuation.clone()
    }
}

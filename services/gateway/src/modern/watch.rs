//! What a tenant's upstreams announce, for the `subscriptions/listen` streams of this node: while
//! a tenant has listeners here, one watcher follows each of its upstream MCP servers — a
//! 2026-07-28 upstream through its own `subscriptions/listen`, a sessionful one through the GET
//! stream of a node-level upstream session — and hands their list changes to every listener of
//! the tenant on this node. Every node with listeners watches for itself, so an upstream's
//! change reaches listeners on every node without crossing the cluster.
//!
//! Resource subscriptions: the watchers subscribe (`resources/subscribe` on their upstream
//! session, or their upstream listener's `resourceSubscriptions`) to every URI some listener of
//! the tenant on this node asked for, counted, and unsubscribe when the last one leaves. A URI
//! `marina://<upstream>/<uri>` goes to that upstream alone, as `<uri>`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use marina_core::protocol::{self, RpcError, code};
use marina_core::tenant::Tenant;
use marina_core::tools::{CallContext, SessionContext, ToolProvider, UpstreamSession};
use rand::RngExt as _;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio_util::sync::{CancellationToken, DropGuard};

/// Notifications buffered per listener; a listener that lags assumes every list changed.
const QUEUE: usize = 64;
/// Longest pause before following an upstream that failed again.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The watchers of this node, by tenant.
#[derive(Default)]
pub struct Watchers {
    tenants: Mutex<HashMap<String, Entry>>,
    /// Stateless callers' tool indexes, dropped when an upstream's tool list changes.
    indexes: Arc<super::cache::IndexCache>,
}

impl std::fmt::Debug for Watchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watchers").finish_non_exhaustive()
    }
}

struct Entry {
    /// The tenant snapshot watched (a changed tenant is watched afresh).
    tenant: Weak<Tenant>,
    tx: broadcast::Sender<Value>,
    /// How many of its watchers have their upstream stream open, and how many it has.
    ready: (tokio::sync::watch::Receiver<usize>, usize),
    /// Each watcher's subscription commands (`true`: subscribe), with its upstream's name.
    commands: Vec<(String, tokio::sync::mpsc::UnboundedSender<(bool, String)>)>,
    /// How many listeners want each URI (as they wrote it).
    uris: HashMap<String, usize>,
    listeners: usize,
    _stop: DropGuard,
}

/// A listener's share of its tenant's watcher: what the upstreams announce. Leaving (dropping
/// it) stops the watcher with its last listener.
pub struct Watching {
    /// The upstreams' notifications.
    pub rx: broadcast::Receiver<Value>,
    ready: (tokio::sync::watch::Receiver<usize>, usize),
    _leave: Leave,
}

impl Watching {
    /// Wait (at most `limit`) until every upstream of the tenant is being followed, so that a
    /// change it announces after this is heard.
    pub async fn ready(&mut self, limit: Duration) {
        let (rx, all) = &mut self.ready;
        let all = *all;
        let _ = tokio::time::timeout(limit, rx.wait_for(|n| *n >= all)).await;
    }
}

struct Leave {
    watchers: Weak<Watchers>,
    tenant: String,
    snapshot: Weak<Tenant>,
    uris: Vec<String>,
}

impl Drop for Leave {
    fn drop(&mut self) {
        let Some(watchers) = self.watchers.upgrade() else {
            return;
        };
        let mut tenants = watchers.lock();
        if let Some(e) = tenants.get_mut(&self.tenant)
            && e.tenant.ptr_eq(&self.snapshot)
        {
            e.listeners -= 1;
            if e.listeners == 0 {
                tenants.remove(&self.tenant);
                return;
            }
            for uri in &self.uris {
                e.want(uri, false);
            }
        }
    }
}

impl Watchers {
    /// Watchers that drop `indexes` of a tenant whose upstream announces a new tool list.
    pub fn new(indexes: Arc<super::cache::IndexCache>) -> Self {
        Self {
            tenants: Mutex::default(),
            indexes,
        }
    }

    /// Join the watcher of tenant snapshot `t`, starting it if this is its first listener here;
    /// `uris`: the resources whose updates the listener wants.
    pub fn join(self: &Arc<Self>, t: &Arc<Tenant>, uris: &[String]) -> Watching {
        let mut tenants = self.lock();
        let current = tenants
            .get(&t.id)
            .is_some_and(|e| e.tenant.ptr_eq(&Arc::downgrade(t)));
        if !current {
            let (tx, _) = broadcast::channel(QUEUE);
            let stop = CancellationToken::new();
            let (opened, ready) = tokio::sync::watch::channel(0);
            let opened = Arc::new(opened);
            let watched: Vec<_> = t.providers.iter().filter(|p| p.serves_features()).collect();
            let mut commands = Vec::new();
            for provider in &watched {
                let (cmd, cmds) = tokio::sync::mpsc::unbounded_channel();
                commands.push((provider.name().to_owned(), cmd));
                spawn_watcher(
                    &t.id,
                    (*provider).clone(),
                    tx.clone(),
                    stop.clone(),
                    opened.clone(),
                    cmds,
                    self.indexes.clone(),
                );
            }
            // Replacing an older snapshot's entry stops its watchers.
            tenants.insert(
                t.id.clone(),
                Entry {
                    tenant: Arc::downgrade(t),
                    tx,
                    ready: (ready, watched.len()),
                    commands,
                    uris: HashMap::new(),
                    listeners: 0,
                    _stop: stop.drop_guard(),
                },
            );
        }
        let e = tenants.get_mut(&t.id).expect("just ensured");
        e.listeners += 1;
        for uri in uris {
            e.want(uri, true);
        }
        Watching {
            rx: e.tx.subscribe(),
            ready: e.ready.clone(),
            _leave: Leave {
                watchers: Arc::downgrade(self),
                tenant: t.id.clone(),
                snapshot: Arc::downgrade(t),
                uris: uris.to_vec(),
            },
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.tenants.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Entry {
    /// One more (`on`) or one fewer listener wants `uri`: the watchers subscribe to it with its
    /// first and unsubscribe with its last.
    fn want(&mut self, uri: &str, on: bool) {
        let n = self.uris.entry(uri.to_owned()).or_default();
        let before = *n;
        *n = if on { before + 1 } else { before.saturating_sub(1) };
        let edge = (before == 0) != (*n == 0);
        if *n == 0 {
            self.uris.remove(uri);
        }
        if !edge {
            return;
        }
        let target = uri
            .strip_prefix("marina://")
            .and_then(|rest| rest.split_once('/'));
        for (name, cmd) in &self.commands {
            match target {
                Some((upstream, inner)) if upstream == name => {
                    let _ = cmd.send((on, inner.to_owned()));
                }
                Some(_) => {}
                None => {
                    let _ = cmd.send((on, uri.to_owned()));
                }
            }
        }
    }
}

/// Follow `provider` for the listeners of `tenant` until `stop`: list it (which also finds its
/// era and, for a sessionful upstream, starts the watcher's own upstream session), then follow
/// what it sends; again after a failure, with back-off.
fn spawn_watcher(
    tenant: &str,
    provider: Arc<dyn ToolProvider>,
    tx: broadcast::Sender<Value>,
    stop: CancellationToken,
    opened: Arc<tokio::sync::watch::Sender<usize>>,
    mut commands: tokio::sync::mpsc::UnboundedReceiver<(bool, String)>,
    indexes: Arc<super::cache::IndexCache>,
) {
    let nonce = hex::encode(rand::rng().random::<[u8; 6]>());
    let ctx = WatchCtx {
        key: format!("watch:{tenant}:{}:{nonce}", provider.name()),
        upstream: provider.name().to_owned(),
        tx,
        upstreams: RefCell::new(HashMap::new()),
        cancel: stop.clone(),
        lost: tokio::sync::Notify::new(),
        opened,
        counted: std::cell::Cell::new(false),
        tenant: tenant.to_owned(),
        indexes,
    };
    actix_web::rt::spawn(async move {
        let subscribed = RefCell::new(std::collections::BTreeSet::new());
        let subscribe = |on: bool, uri: String| {
            let (provider, ctx) = (&provider, &ctx);
            async move {
                let method = if on {
                    "resources/subscribe"
                } else {
                    "resources/unsubscribe"
                };
                if let Err(e) = provider.request_feature(method, json!({"uri": uri}), ctx).await {
                    tracing::debug!(upstream = provider.name(), uri, error = %e.message, "listener subscription not passed on");
                }
            }
        };
        let follow = async {
            let mut delay = Duration::from_millis(500);
            loop {
                if provider.list_tools(&ctx).await.is_ok() {
                    delay = Duration::from_millis(500);
                    // A new upstream session knows none of the listeners' subscriptions.
                    let uris: Vec<String> = subscribed.borrow().iter().cloned().collect();
                    for uri in uris {
                        subscribe(true, uri).await;
                    }
                    // Until the upstream forgets the watcher's session: then list (and so start
                    // a session) again.
                    tokio::select! {
                        () = provider.follow(&ctx) => {}
                        () = ctx.lost.notified() => {}
                    }
                }
                // Failed or ended: listeners are not held up waiting for this one.
                ctx.stream_opened();
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_BACKOFF);
            }
        };
        let commands = async {
            while let Some((on, uri)) = commands.recv().await {
                if on {
                    subscribed.borrow_mut().insert(uri.clone());
                } else {
                    subscribed.borrow_mut().remove(&uri);
                }
                subscribe(on, uri).await;
            }
        };
        tokio::select! {
            () = follow => {}
            () = commands => {}
            () = stop.cancelled() => {}
        }
    });
}

/// The context a watcher follows an upstream with: no client behind it (the upstream is told
/// of no capability, and what it asks is refused); notifications go to the tenant's listeners.
struct WatchCtx {
    key: String,
    /// The upstream's configured name (resource updates are matched with it).
    upstream: String,
    tx: broadcast::Sender<Value>,
    upstreams: RefCell<HashMap<String, UpstreamSession>>,
    cancel: CancellationToken,
    /// Fires when an upstream session of the watcher is forgotten.
    lost: tokio::sync::Notify,
    /// Counts the tenant's watchers whose upstream stream has been open (this one once).
    opened: Arc<tokio::sync::watch::Sender<usize>>,
    counted: std::cell::Cell<bool>,
    tenant: String,
    indexes: Arc<super::cache::IndexCache>,
}

#[async_trait(?Send)]
impl SessionContext for WatchCtx {
    fn session_key(&self) -> String {
        self.key.clone()
    }

    fn client_capabilities(&self) -> Value {
        json!({})
    }

    fn log_level(&self) -> Option<String> {
        None
    }

    fn upstream_session(&self, upstream: &str) -> Option<UpstreamSession> {
        self.upstreams.borrow().get(upstream).cloned()
    }

    async fn set_upstream_session(
        &self,
        upstream: &str,
        session: Option<UpstreamSession>,
    ) -> Result<(), RpcError> {
        match session {
            Some(s) => {
                self.upstreams.borrow_mut().insert(upstream.to_owned(), s);
            }
            None => {
                self.upstreams.borrow_mut().remove(upstream);
                self.lost.notify_one();
            }
        }
        Ok(())
    }
}

#[async_trait(?Send)]
impl CallContext for WatchCtx {
    fn progress_token(&self) -> Option<Value> {
        None
    }

    async fn progress(&self, _progress: f64, _total: Option<f64>, _message: Option<&str>) {}

    async fn log(&self, _level: &str, _logger: &str, _data: Value) {}

    async fn request_client(&self, method: &str, _params: Value) -> Result<Value, RpcError> {
        Err(RpcError::new(
            code::METHOD_NOT_FOUND,
            format!("{method}: no client behind this listener"),
        ))
    }

    fn cancellation(&self) -> CancellationToken {
        self.cancel.clone()
    }

    async fn notify(&self, method: &str, params: Value) {
        // Nobody listening at this instant is fine: the next listener joins a live watcher.
        let mut note = protocol::notification(method, params);
        note["source"] = json!(self.upstream);
        let _ = self.tx.send(note);
    }

    fn tools_changed(&self) {
        // Stateless callers list again (a session's actor does so on its own notice).
        self.indexes.forget_tenant(&self.tenant);
    }

    fn stream_opened(&self) {
        if !self.counted.replace(true) {
            self.opened.send_modify(|n| *n += 1);
        }
    }
}

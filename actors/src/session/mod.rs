//! The session actor: one per live MCP session, on the node holding the session's lease.
//!
//! Lifecycle: **activated** (created by `initialize`, or re-activated from the store by the first
//! request that reaches a node while nobody holds the lease) → **live** (renews its lease every
//! third of its TTL; every state change is written through, fenced by the lease token) →
//! **passivated** when idle (nothing in flight, no open stream: lease released, memory freed, state
//! stays in the store) or **drained** on SIGTERM, **deleted** by DELETE or expiry, or **lost** when
//! its lease could not be renewed (it stops writing at once; the next holder takes over).
//!
//! The actor's mailbox carries requests from any worker of the node; the work itself runs as
//! futures on the actor's arbiter sharing [`state::Shared`], so a slow call never blocks the
//! session's other requests.

mod call;
mod features;
pub use features::{FeatureCaller, Features};
mod state;

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use marina_core::access::Access;
use marina_core::domain::{EventId, Owner, StreamId};
use marina_core::protocol::MessageKind;
use marina_core::store::{Fence, SessionRecord};
use marina_core::tenant::Tenant;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::node::Node;
use state::Shared;

/// Mailbox capacity: requests beyond it wait (`send`) rather than pile up unbounded.
const MAILBOX: usize = 256;
/// While draining, how often the actor checks whether its last call has ended.
const DRAIN_POLL: Duration = Duration::from_millis(50);
/// Bounds of the housekeeping period (passivation, expiry, TTL refresh).
const HOUSEKEEPING_MIN: Duration = Duration::from_secs(1);
const HOUSEKEEPING_MAX: Duration = Duration::from_secs(15);

/// One frame of an SSE response.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A persisted event.
    Event {
        /// SSE id (`<stream>_<entry>`).
        id: String,
        /// The JSON-RPC message.
        data: String,
    },
    /// The stream is complete (its response was sent); close the connection normally.
    End,
}

/// An SSE stream handed to the HTTP layer.
#[derive(Debug)]
pub struct StreamHandle {
    /// Which stream of the session.
    pub stream: StreamId,
    /// Priming event id to send first (sessions ≥ 2025-11-25 only).
    pub priming: Option<EventId>,
    /// Replayed frames to send before the live ones.
    pub backlog: Vec<Frame>,
    /// Live frames.
    pub frames: mpsc::Receiver<Frame>,
    /// The session speaks SEP-1699 (priming, `retry`, server-initiated close).
    pub polling: bool,
}

/// Why the actor refused a request at the HTTP level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// `MCP-Protocol-Version` contradicts the negotiated version (400).
    VersionMismatch,
    /// `Last-Event-ID` names no stream of this session (400).
    UnknownStream,
    /// The store is unavailable (503).
    Unavailable,
    /// The session is gone (404).
    Gone,
    /// The node is draining (503, retry elsewhere).
    Draining,
    /// The actor is passivating: resolve the session again (the caller retries).
    Moved,
    /// A cap is reached (429): per session (calls in flight, open streams) or the tenant's calls
    /// in flight; the scope says which.
    Limited(&'static str),
}

/// The actor's answer to a POSTed message.
#[derive(Debug)]
pub enum Reply {
    /// 200 with this JSON body.
    Json(Value),
    /// 202, no body (notifications and responses).
    Accepted,
    /// 200 with a JSON body that is not ready yet (JSON-mode tools/call).
    Pending(oneshot::Receiver<Value>),
    /// 200 with an SSE stream.
    Stream(StreamHandle),
    /// An HTTP-level refusal.
    Rejected(Rejection),
    /// The actor is passivating and did not take the message: resolve the session again and
    /// send it there.
    Moved(Box<Dispatch>),
}

/// Handle one JSON-RPC message POSTed to the session.
#[derive(Debug, Message)]
#[rtype(result = "Reply")]
pub struct Dispatch {
    /// The message.
    pub message: Value,
    /// Its classification.
    pub kind: MessageKind,
    /// The `MCP-Protocol-Version` header, if any.
    pub protocol_version: Option<String>,
    /// Answer with JSON even for tools/call (inside a 2025-03-26 batch).
    pub force_json: bool,
    /// Who sent it (authenticated for this request); must be the session's owner.
    pub owner: Option<Owner>,
    /// What the sender's credential lets it do (its subject and roles, read from this request's
    /// credential, so fewer roles in a refreshed token apply at once).
    pub access: Access,
    /// The HTTP request's id, for audit events.
    pub request_id: String,
    /// The request's clock of upstream waits (its metrics).
    pub wait: marina_telemetry::UpstreamWait,
    /// The request's span: the actor serves the message inside it, so the request's trace
    /// continues here (its upstream calls are its children).
    pub span: marina_telemetry::traces::Span,
}

/// Open an SSE stream: the standalone GET stream, or a resumption after `last_event_id`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<StreamHandle, Rejection>")]
pub struct OpenStream {
    /// `Last-Event-ID`, if any.
    pub last_event_id: Option<EventId>,
    /// The `MCP-Protocol-Version` header, if any.
    pub protocol_version: Option<String>,
    /// Who asks; must be the session's owner.
    pub owner: Option<Owner>,
    /// Its subject and credential roles (what the stream may carry to it).
    pub access: Access,
}

/// End the session (DELETE).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), Rejection>")]
pub struct Terminate {
    /// The `MCP-Protocol-Version` header, if any.
    pub protocol_version: Option<String>,
    /// Who asks; must be the session's owner.
    pub owner: Option<Owner>,
}

/// Node shutdown: close streams with a retry hint and stop once nothing is in flight
/// (`force`: stop now; calls still running are recovered by the next holder).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Drain {
    /// Stop now.
    pub force: bool,
}

/// Ask for the session's negotiated protocol version (to decide whether a batch is allowed).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<String, Rejection>")]
pub struct Describe {
    /// Who asks; must be the session's owner.
    pub owner: Option<Owner>,
}

/// The node's liveness lapsed: another node may hold this session now. Stop at once, writing
/// nothing (any write would be fenced anyway).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Lost;

/// The node's tenants changed: take up this session's tenant as configured now, or end the
/// session's streams if its tenant was deleted or suspended.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct TenantChanged;

/// The session was ended from outside (an administrator); its keys are already gone. Stop at
/// once, writing nothing: requests still queued are re-routed and find no session (404).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Ended;

/// The session actor.
#[derive(Debug)]
pub struct SessionActor {
    shared: Rc<Shared>,
    generation: u64,
    retiring: bool,
}

impl SessionActor {
    pub(crate) fn new(
        node: Arc<Node>,
        tenant: Arc<Tenant>,
        fence: Fence,
        rec: SessionRecord,
        generation: u64,
    ) -> Self {
        Self {
            shared: Rc::new(Shared::new(node, tenant, fence, rec)),
            generation,
            retiring: false,
        }
    }

    /// Stop after releasing the lease (passivation, drain, deletion).
    fn retire(&mut self, ctx: &mut Context<Self>, reason: &'static str) {
        if self.retiring {
            return;
        }
        self.retiring = true;
        // From now on requests go elsewhere: out of the registry (a new request waits for the
        // lease and activates a fresh actor) and every message still in the mailbox is told to
        // re-route.
        self.shared.retiring.set(true);
        self.shared.node.unregister(&self.shared.id, self.generation);
        let shared = self.shared.clone();
        tracing::debug!(session = shared.tag(), reason, "retiring session actor");
        ctx.spawn(
            async move {
                shared.close_all_streams();
                shared.release().await;
            }
            .into_actor(self)
            .map(|_, _, ctx| ctx.stop()),
        );
    }

    fn housekeeping(&mut self, ctx: &mut Context<Self>) {
        let s = &self.shared;
        if s.lost() {
            ctx.stop();
            return;
        }
        if s.expired() {
            s.record_end("expired");
            self.retiring = true;
            let shared = s.clone();
            ctx.spawn(
                async move { shared.delete().await }
                    .into_actor(self)
                    .map(|_, _, ctx| ctx.stop()),
            );
            return;
        }
        if s.draining() && s.idle_calls() {
            self.retire(ctx, "drained");
            return;
        }
        let passivate_after = Duration::from_secs(s.node.sessions().passivate_after_secs);
        if s.idle_calls() && !s.has_live_streams() && s.last_activity().elapsed() >= passivate_after {
            self.retire(ctx, "passivated");
            return;
        }
        s.clone().refresh_ttl_if_due();
        s.keep_call_caps();
    }
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX);
        marina_telemetry::metrics().session_activated(&self.shared.tenant().id);
        // Leases need no per-actor renewal (the node's heartbeat keeps them valid); the actor only
        // wakes for passivation, expiry and TTL refresh, often enough to passivate on time.
        let passivate = Duration::from_secs(self.shared.node.sessions().passivate_after_secs);
        let period = (passivate / 4).clamp(HOUSEKEEPING_MIN, HOUSEKEEPING_MAX);
        ctx.run_interval(period, |act, ctx| act.housekeeping(ctx));
        // Requests that were in flight when the previous holder died get a definite outcome now.
        actix::spawn(self.shared.clone().recover_inflight());
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        marina_telemetry::metrics().session_deactivated(&self.shared.tenant().id);
        self.shared.shutdown();
        self.shared.node.unregister(&self.shared.id, self.generation);
        if !self.retiring && !self.shared.lost() {
            // Stopped without a clean release (e.g. the arbiter is going away): free the lease.
            let shared = self.shared.clone();
            actix::spawn(async move { shared.release().await });
        }
        self.shared.node.actor_stopped();
    }
}

impl Handler<Dispatch> for SessionActor {
    type Result = ResponseFuture<Reply>;

    fn handle(&mut self, msg: Dispatch, _ctx: &mut Self::Context) -> Self::Result {
        let shared = self.shared.clone();
        let span = msg.span.clone();
        Box::pin(span.within(async move { shared.dispatch(msg).await }))
    }
}

impl Handler<OpenStream> for SessionActor {
    type Result = ResponseFuture<Result<StreamHandle, Rejection>>;

    fn handle(&mut self, msg: OpenStream, _ctx: &mut Self::Context) -> Self::Result {
        let shared = self.shared.clone();
        Box::pin(async move { shared.open_stream(msg).await })
    }
}

impl Handler<Terminate> for SessionActor {
    type Result = ResponseActFuture<Self, Result<(), Rejection>>;

    fn handle(&mut self, msg: Terminate, _ctx: &mut Self::Context) -> Self::Result {
        let shared = self.shared.clone();
        let early = if self.retiring {
            Err(Rejection::Moved)
        } else {
            shared
                .check_owner(msg.owner.as_ref())
                .and_then(|()| shared.check_version(msg.protocol_version.as_deref()))
        };
        if let Err(r) = early {
            return Box::pin(async move { Err(r) }.into_actor(self));
        }
        self.retiring = true;
        shared.record_end("deleted");
        Box::pin(
            async move { shared.delete().await }
                .into_actor(self)
                .map(|res, _, ctx| {
                    ctx.stop();
                    res
                }),
        )
    }
}

impl Handler<TenantChanged> for SessionActor {
    type Result = ();

    fn handle(&mut self, _: TenantChanged, ctx: &mut Self::Context) {
        if self.retiring {
            return;
        }
        let shared = self.shared.clone();
        ctx.spawn(async move { shared.refresh_tenant().await }.into_actor(self).map(
            |still_served, act, ctx| {
                if !still_served {
                    act.retire(ctx, "tenant removed or suspended");
                }
            },
        ));
    }
}

impl Handler<Ended> for SessionActor {
    type Result = ();

    fn handle(&mut self, _: Ended, ctx: &mut Self::Context) {
        self.shared.record_end("evicted");
        self.retiring = true;
        self.shared.retiring.set(true);
        self.shared.mark_ended();
        self.shared.node.unregister(&self.shared.id, self.generation);
        ctx.stop();
    }
}

impl Handler<Drain> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: Drain, ctx: &mut Self::Context) {
        self.shared.start_draining();
        if msg.force || self.shared.idle_calls() {
            self.retire(ctx, if msg.force { "drain timeout" } else { "drained" });
        } else {
            // Retire as soon as the last call ends, not at the next housekeeping tick.
            ctx.run_interval(DRAIN_POLL, |act, ctx| {
                if act.shared.idle_calls() {
                    act.retire(ctx, "drained");
                }
            });
        }
    }
}

impl Handler<Describe> for SessionActor {
    type Result = Result<String, Rejection>;

    fn handle(&mut self, msg: Describe, _ctx: &mut Self::Context) -> Self::Result {
        self.shared.check_owner(msg.owner.as_ref())?;
        Ok(self.shared.protocol_version())
    }
}

impl Handler<Lost> for SessionActor {
    type Result = ();

    fn handle(&mut self, _msg: Lost, ctx: &mut Self::Context) {
        self.shared.mark_lost("node liveness lapsed");
        ctx.stop();
    }
}

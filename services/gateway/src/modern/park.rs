//! Parked calls: a stateless (2026-07-28) call whose source asks the client something it cannot
//! ask again — an upstream MCP server of the sessionful era sending `elicitation/create`,
//! `sampling/createMessage` or `roots/list` in the middle of a call — is not re-run. It keeps
//! running on the node where it started, waiting for the answer, while the client gets
//! `input_required` with a sealed state naming this node and the parked call. The client's retry
//! — on any node: a peer forwards it here — hands the answer over and continues the same call to
//! its next question or its result.
//!
//! A call is "running" ([`Running`]) from its start: the request that started it, and then each
//! retry in turn, follows it ([`Running::next`]): its notifications, its questions, its outcome.
//! Between a question and its retry it waits in this node's [`ParkedCalls`]; one nobody resumes
//! within the request state's TTL is dropped there, which cancels it (and so the upstream call).
//! If the node stops, the retry finds neither node nor call and gets a definite error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use marina_core::protocol::{RpcError, code};
use marina_core::tools::ToolProvider;
use rand::RngExt as _;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::context::RequestCtx;

/// Notifications a running call may queue while nobody follows it; more are dropped (progress
/// and log messages are advisory, and a parked call must not grow without bound).
const NOTES_QUEUED: usize = 256;

/// A question a running call puts to its client, with the way back for the answer.
pub struct Ask {
    /// `elicitation/create`, `sampling/createMessage` or `roots/list`.
    pub method: String,
    /// The request's params, as the source sent them.
    pub params: Value,
    /// Where the client's answer (the request's result) goes.
    pub reply: oneshot::Sender<Value>,
}

/// How a running call ended.
pub struct Outcome {
    /// The call's result or error.
    pub result: Result<Value, RpcError>,
    /// A capability a question needed that the client did not declare (→ -32021).
    pub missing: Option<&'static str>,
}

/// What the running call's context holds to ask the client (see `RequestCtx::request_client`).
#[derive(Clone)]
pub struct AskLink {
    asks: mpsc::UnboundedSender<Ask>,
    cancel: CancellationToken,
}

impl AskLink {
    /// Put a question to the client and wait for its answer, however many requests later it
    /// comes; an error when the call is cancelled first (the client went away, or nobody
    /// answered in time).
    pub async fn ask(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        let (reply, answer) = oneshot::channel();
        let ask = Ask {
            method: method.to_owned(),
            params,
            reply,
        };
        let gone = || {
            RpcError::new(
                code::CANCELLED,
                "the client did not answer: the call was cancelled",
            )
        };
        self.asks.send(ask).map_err(|_| gone())?;
        tokio::select! {
            a = answer => a.map_err(|_| gone()),
            () = self.cancel.cancelled() => Err(gone()),
        }
    }
}

/// One step of a running call, as its follower sees it.
pub enum Step {
    /// A notification of the call (progress, a log message).
    Note(Value),
    /// A question for the client.
    Ask(Ask),
    /// The end.
    Done(Outcome),
}

/// A call running in the background, followed by one request at a time. Dropping it cancels
/// the call.
pub struct Running {
    notes: mpsc::Receiver<Value>,
    asks: mpsc::UnboundedReceiver<Ask>,
    done: oneshot::Receiver<Outcome>,
    /// Questions asked so far (the next one's key is `q<asked>`).
    pub asked: usize,
    _cancel: DropGuard,
}

impl Running {
    /// Start `provider`'s tool `name` with `arguments` in the background, under `ctx` (whose
    /// notifications and questions come to the returned follower). `hold` lives as long as the
    /// call (the tenant's in-flight count).
    pub fn start<H: 'static>(
        provider: Arc<dyn ToolProvider>,
        name: String,
        arguments: Value,
        ctx: RequestCtx,
        hold: H,
    ) -> Self {
        let (notes_tx, notes) = mpsc::channel(NOTES_QUEUED);
        let (asks_tx, asks) = mpsc::unbounded_channel();
        let (done_tx, done) = oneshot::channel();
        let cancel = CancellationToken::new();
        let link = AskLink {
            asks: asks_tx,
            cancel: cancel.clone(),
        };
        let ctx = ctx.running(notes_tx, link, cancel.clone());
        let guard = cancel.clone().drop_guard();
        actix_web::rt::spawn(async move {
            let _hold = hold;
            let result = tokio::select! {
                r = provider.call(&name, arguments, &ctx) => r,
                // Dropping the call's future cancels it upstream.
                () = cancel.cancelled() => return,
            };
            let _ = done_tx.send(Outcome {
                result,
                missing: ctx.missing_capability(),
            });
        });
        Self {
            notes,
            asks,
            done,
            asked: 0,
            _cancel: guard,
        }
    }

    /// The call's next step. Notifications sent before a question or the end come first.
    pub async fn next(&mut self) -> Step {
        tokio::select! {
            biased;
            Some(n) = self.notes.recv() => Step::Note(n),
            Some(a) = self.asks.recv() => Step::Ask(a),
            o = &mut self.done => Step::Done(o.unwrap_or_else(|_| Outcome {
                result: Err(RpcError::new(code::INTERNAL_ERROR, "the call ended without an outcome")),
                missing: None,
            })),
        }
    }
}

/// A call waiting for its client's answer.
pub struct Parked {
    /// The call.
    pub running: Running,
    /// Its pending question's key in `inputRequests`/`inputResponses`.
    pub key: String,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Value>,
}

/// This node's parked calls.
#[derive(Default)]
pub struct ParkedCalls {
    calls: Mutex<HashMap<String, Parked>>,
}

impl std::fmt::Debug for ParkedCalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParkedCalls")
            .field("parked", &self.len())
            .finish()
    }
}

impl ParkedCalls {
    /// Park `call` for at most `ttl`; its id (random, 128 bits).
    pub fn park(self: &Arc<Self>, call: Parked, ttl: Duration) -> String {
        let id = hex::encode(rand::rng().random::<[u8; 16]>());
        self.lock().insert(id.clone(), call);
        let calls = Arc::downgrade(self);
        let key = id.clone();
        actix_web::rt::spawn(async move {
            tokio::time::sleep(ttl).await;
            // Nobody came back for it: dropping it cancels the call.
            let expired = calls.upgrade().and_then(|c| c.lock().remove(&key));
            if expired.is_some() {
                tracing::info!(park = %key, "a parked call waited too long for its input: cancelled");
            }
        });
        id
    }

    /// Take parked call `id` to continue it (once).
    pub fn take(&self, id: &str) -> Option<Parked> {
        self.lock().remove(id)
    }

    /// How many calls are parked here.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Is no call parked here?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Parked>> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The error of a retry whose parked call is gone: its node stopped, or it waited too long.
pub fn lost() -> RpcError {
    RpcError::new(
        code::INTERRUPTED,
        "the call waiting for this input is gone (its node stopped, or it waited too long); \
         whether it ran to its end is unknown: call the tool again if that is safe",
    )
}

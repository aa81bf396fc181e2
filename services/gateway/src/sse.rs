//! SSE response bodies: priming event, replayed backlog, live frames, keep-alives, and the end —
//! normal after the response, or a `retry` hint when the server closes early (SEP-1699) so the
//! client resumes with `Last-Event-ID`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use actix_web::HttpResponse;
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use marina_actors::{Frame, StreamHandle};

use crate::reply::Refusal;
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval};

/// Comment lines on otherwise idle streams keep proxies and load balancers from timing out.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// How a stream is served.
#[derive(Debug, Clone, Copy)]
pub struct SseOptions {
    /// `retry` hint in ms.
    pub retry_ms: u64,
    /// Close the connection (with a retry hint) after this long (POST streams of ≥ 2025-11-25
    /// sessions only).
    pub max_duration: Option<Duration>,
    /// Close the connection then, whatever the session's version: the credential that opened it
    /// expires (a retry hint where the session speaks SEP-1699).
    pub until: Option<std::time::SystemTime>,
}

impl SseOptions {
    /// When this stream must end, if ever.
    fn deadline(&self, polling: bool) -> Option<Instant> {
        let by_duration = self.max_duration.filter(|_| polling).map(|d| Instant::now() + d);
        let by_credential = self.until.map(|t| {
            Instant::now()
                + t.duration_since(std::time::SystemTime::now())
                    .unwrap_or(Duration::ZERO)
        });
        match (by_duration, by_credential) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// `id:` + `data:` event.
pub fn event(id: &str, data: &str) -> Bytes {
    Bytes::from(format!("id: {id}\nevent: message\ndata: {data}\n\n"))
}

struct State {
    /// This stream in the node's metrics (open, events, why it closed).
    metered: marina_telemetry::SseStream,
    queue: VecDeque<Frame>,
    head: Option<Bytes>,
    rx: mpsc::Receiver<Frame>,
    deadline: Option<Instant>,
    polling: bool,
    retry_ms: u64,
    done: bool,
    keepalive: Interval,
}

fn retry_hint(ms: u64) -> Bytes {
    Bytes::from(format!("retry: {ms}\n\n"))
}

/// The body stream of an SSE response of `kind` (`post`, `get`).
pub fn body(
    handle: StreamHandle,
    opts: SseOptions,
    kind: &'static str,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    let head = handle
        .priming
        .map(|p| Bytes::from(format!("id: {p}\nretry: {}\ndata: \n\n", opts.retry_ms)));
    let mut keepalive = tokio::time::interval_at(Instant::now() + KEEPALIVE, KEEPALIVE);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let metered = marina_telemetry::metrics().stream(kind);
    let state = State {
        metered,
        queue: handle.backlog.into(),
        head,
        rx: handle.frames,
        deadline: opts.deadline(handle.polling),
        polling: handle.polling,
        retry_ms: opts.retry_ms,
        done: false,
        keepalive,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        // Everything ready now goes out as one chunk (one write, one TCP segment).
        let mut out = BytesMut::new();
        if let Some(h) = st.head.take() {
            out.extend_from_slice(&h);
        }
        drain_ready(&mut st, &mut out);
        if !out.is_empty() {
            return Some((Ok(out.freeze()), st));
        }
        if st.done {
            return None;
        }
        let deadline = st.deadline;
        let sleep = async move {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            f = st.rx.recv() => match f {
                Some(Frame::Event { id, data }) => {
                    out.extend_from_slice(&event(&id, &data));
                    st.metered.event();
                    drain_ready(&mut st, &mut out);
                    Some((Ok(out.freeze()), st))
                }
                Some(Frame::End) => {
                    st.metered.closing("complete");
                    None
                }
                // The session closed this connection (drain, failover, slow reader, replaced):
                // tell the client when to resume.
                None => {
                    st.done = true;
                    let why = if marina_telemetry::metrics().is_draining() { "drain" } else { "evicted" };
                    st.metered.closing(why);
                    st.polling.then(|| (Ok(retry_hint(st.retry_ms)), st))
                }
            },
            () = sleep => {
                st.done = true;
                st.metered.closing("max_duration");
                st.polling.then(|| (Ok(retry_hint(st.retry_ms)), st))
            }
            _ = st.keepalive.tick() => Some((Ok(Bytes::from_static(b": keepalive\n\n")), st)),
        }
    })
}

/// Append every frame available without waiting (backlog first, then live); stop at the end.
fn drain_ready(st: &mut State, out: &mut BytesMut) {
    loop {
        let next = match st.queue.pop_front() {
            Some(f) => Some(f),
            None => st.rx.try_recv().ok(),
        };
        match next {
            Some(Frame::Event { id, data }) => {
                out.extend_from_slice(&event(&id, &data));
                st.metered.event();
            }
            Some(Frame::End) => {
                st.metered.closing("complete");
                st.done = true;
                return;
            }
            None => return,
        }
    }
}

/// A 200 `text/event-stream` response around `body`.
pub fn response(handle: StreamHandle, opts: SseOptions, kind: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body(handle, opts, kind))
}

/// The step before a request that opens an SSE stream of `kind` is dispatched: refused with 503,
/// `Retry-After` and a JSON-RPC error once the node has `server.max_open_streams` open.
pub fn room(kind: &'static str) -> Result<(), Refusal> {
    marina_telemetry::metrics()
        .stream_room(kind)
        .map_err(|_| Refusal::unavailable("this node has too many open streams; retry"))
}

/// A stream of SSE chunks counted as a stream of `kind` (one data event per `data: {`), closed
/// as `complete` when it ends and `client_gone` when it is dropped before (the stateless era's
/// streams, which end with their response).
pub fn counted<S>(kind: &'static str, inner: S) -> impl Stream<Item = Result<Bytes, Infallible>>
where
    S: Stream<Item = Result<Bytes, Infallible>> + Unpin,
{
    let metered = marina_telemetry::metrics().stream(kind);
    futures_util::stream::unfold((inner, metered), |(mut inner, mut metered)| async move {
        use futures_util::StreamExt as _;
        match inner.next().await {
            Some(Ok(chunk)) => {
                metered.events(chunk.windows(7).filter(|w| w == b"data: {").count());
                Some((Ok(chunk), (inner, metered)))
            }
            Some(Err(e)) => match e {},
            None => {
                metered.closing("complete");
                None
            }
        }
    })
}

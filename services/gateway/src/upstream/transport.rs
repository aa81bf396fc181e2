//! The POST exchange with MCP upstreams: hyper's pooled client, used directly.
//!
//! Every proxied or translated call is one such POST, so its fixed cost is paid per call. reqwest
//! (which the node uses for everything else) clones the header map twice per request, converts
//! its URL and runs its redirect layer — which clones the request again — even with redirects
//! off: about 7 % of a proxied call's CPU (`docs/benchmarks.md`). This client keeps what the
//! node's reqwest client is configured for (`egress::client`) and nothing else: the guarded
//! resolver (egress policy), no redirects (a 3xx is an answer), no proxy from the environment, a
//! 5 s connect timeout, `TCP_NODELAY`, TLS by rustls with the platform's roots and HTTP/2 by ALPN,
//! and one deadline for the whole exchange, body included. Answers are handed back as
//! `reqwest::Response`, so reading them (JSON or SSE) is the same code for both clients.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::{Instant, Sleep};

use super::egress::{GuardedResolver, Policy};

/// How long an idle pooled connection is kept (reqwest's default).
const POOL_IDLE: Duration = Duration::from_secs(90);
/// How long a connection may take to open.
const CONNECT: Duration = Duration::from_secs(5);

type Connector = hyper_rustls::HttpsConnector<HttpConnector<GuardedResolver>>;

/// The node's client for upstream POSTs (cheap to clone: one pool).
#[derive(Clone)]
pub struct Transport {
    client: Client<Connector, Full<Bytes>>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport").finish_non_exhaustive()
    }
}

/// Why an exchange failed.
#[derive(Debug)]
pub enum Failed {
    /// No answer (headers) within the deadline.
    Timeout,
    /// The connection or the request failed (the text says how; it names no secret).
    Unreachable(String),
}

impl Transport {
    /// A client under egress `policy`.
    pub fn new(policy: Policy) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = rustls_platform_verifier::Verifier::new(provider.clone())
            .map_err(|e| format!("cannot load the platform's TLS roots: {e}"))?;
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("cannot configure TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        let mut http = HttpConnector::new_with_resolver(GuardedResolver::new(policy));
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(CONNECT));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Ok(Self { client })
    }

    /// Send `req` and return its answer; `timeout` bounds the whole exchange, reading the body
    /// included (a body still arriving at the deadline ends in an error).
    pub async fn send(
        &self,
        req: http::Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<reqwest::Response, Failed> {
        let deadline = Instant::now() + timeout;
        let sent = tokio::time::timeout_at(deadline, self.client.request(req)).await;
        let resp = match sent {
            Err(_) => return Err(Failed::Timeout),
            Ok(Err(e)) => return Err(Failed::Unreachable(describe(&e))),
            Ok(Ok(resp)) => resp,
        };
        let (parts, body) = resp.into_parts();
        let body = reqwest::Body::wrap(Deadline {
            body,
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
        });
        Ok(reqwest::Response::from(http::Response::from_parts(parts, body)))
    }
}

/// The error and its causes, in one line.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// A response body that fails once its deadline passes.
struct Deadline {
    body: hyper::body::Incoming,
    sleep: Pin<Box<Sleep>>,
}

/// The error of a body cut off by its deadline.
#[derive(Debug)]
struct TimedOut;

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the answer did not end within the request's timeout")
    }
}

impl std::error::Error for TimedOut {}

impl Body for Deadline {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(TimedOut)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    fn policy(allow_loopback: bool) -> Policy {
        Policy::new(
            &serde_json::from_value(
                serde_json::json!({"allow_loopback": allow_loopback, "allow_private": false}),
            )
            .unwrap(),
        )
    }

    fn open() -> Policy {
        policy(true)
    }

    fn post(url: &str) -> http::Request<Full<Bytes>> {
        let mut req = http::Request::new(Full::new(Bytes::from_static(b"{}")));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = url.parse().unwrap();
        req
    }

    /// A loopback server answering each request on a connection with `answer` (then keeping
    /// the connection open, or stalling when `answer` is `None`); counts connections.
    async fn server(answer: Option<&'static str>) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    // One read per request: the test requests are small.
                    while let Ok(n) = conn.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        match answer {
                            Some(a) => conn.write_all(a.as_bytes()).await.unwrap(),
                            None => std::future::pending::<()>().await,
                        }
                    }
                });
            }
        });
        (url, accepted)
    }

    #[tokio::test]
    async fn answers_come_back_and_connections_are_reused() {
        let (url, accepted) = server(Some(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
        ))
        .await;
        let t = Transport::new(open()).unwrap();
        for _ in 0..3 {
            let resp = t.send(post(&url), Duration::from_secs(5)).await.unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(resp.headers()["content-type"], "application/json");
            assert_eq!(&resp.bytes().await.unwrap()[..], b"{}");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one pooled connection");
    }

    #[tokio::test]
    async fn no_answer_in_time_is_a_timeout() {
        let (url, _) = server(None).await;
        let t = Transport::new(open()).unwrap();
        let e = t.send(post(&url), Duration::from_millis(200)).await.unwrap_err();
        assert!(matches!(e, Failed::Timeout), "{e:?}");
    }

    #[tokio::test]
    async fn the_deadline_covers_the_body() {
        // Headers at once, then half of the body and nothing more.
        let (url, _) = server(Some(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 100\r\n\r\ndata: {}\n\n",
        ))
        .await;
        let t = Transport::new(open()).unwrap();
        let resp = t.send(post(&url), Duration::from_millis(300)).await.unwrap();
        let started = std::time::Instant::now();
        let read = tokio::time::timeout(Duration::from_secs(10), resp.bytes()).await;
        let body = read.expect("the body read ends at the deadline, not later");
        assert!(body.is_err(), "a cut-off body is an error");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn names_resolving_to_refused_addresses_are_not_reached() {
        let (url, accepted) = server(Some("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")).await;
        let by_name = url.replace("127.0.0.1", "localhost");
        let t = Transport::new(policy(false)).unwrap();
        match t.send(post(&by_name), Duration::from_secs(5)).await {
            Err(Failed::Unreachable(why)) => assert!(why.contains("may not reach"), "{why}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_failed_tls_handshake_is_an_error() {
        // https to a server that answers the client hello with garbage: an error, never a
        // panic or a hang.
        let (url, _) = server(Some("not tls")).await;
        let t = Transport::new(open()).unwrap();
        let e = t
            .send(post(&url.replace("http://", "https://")), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(e, Failed::Unreachable(_)), "{e:?}");
    }
}

//! A minimal MCP Streamable-HTTP client for black-box tests: raw JSON-RPC over POST/GET/DELETE
//! and a raw SSE reader that keeps what SDK clients hide (priming events, `retry`, ids).

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

/// One SSE event as sent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SseEvent {
    /// `id:` field.
    pub id: Option<String>,
    /// `data:` (joined), possibly empty.
    pub data: String,
    /// `retry:` field.
    pub retry: Option<u64>,
}

impl SseEvent {
    /// The data as JSON (None for priming / retry-only events).
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.data).ok()
    }
}

fn parse_block(block: &str) -> Option<SseEvent> {
    let mut ev = SseEvent::default();
    let mut data = Vec::new();
    let mut any = false;
    for line in block.lines() {
        if line.starts_with(':') {
            continue;
        }
        let (k, v) = line
            .split_once(':')
            .map(|(k, v)| (k, v.strip_prefix(' ').unwrap_or(v)))
            .unwrap_or((line, ""));
        match k {
            "id" => ev.id = Some(v.to_owned()),
            "data" => data.push(v.to_owned()),
            "retry" => ev.retry = v.parse().ok(),
            _ => {}
        }
        any = true;
    }
    ev.data = data.join("\n");
    any.then_some(ev)
}

/// Read SSE events from `resp` until `stop` says so, the stream ends, or `timeout` passes.
/// Returns the events and whether the stream ended by itself.
pub async fn read_events(
    resp: Response,
    timeout: Duration,
    mut stop: impl FnMut(&[SseEvent]) -> bool,
) -> (Vec<SseEvent>, bool) {
    let deadline = Instant::now() + timeout;
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    let mut events = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (events, false);
        }
        match tokio::time::timeout(left, body.next()).await {
            Err(_) => return (events, false),
            Ok(None) | Ok(Some(Err(_))) => {
                if let Some(e) = parse_block(buf.trim()) {
                    events.push(e);
                }
                return (events, true);
            }
            Ok(Some(Ok(chunk))) => {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(i) = buf.find("\n\n") {
                    let block: String = buf.drain(..i + 2).collect();
                    if let Some(e) = parse_block(&block) {
                        events.push(e);
                        if stop(&events) {
                            return (events, false);
                        }
                    }
                }
            }
        }
    }
}

/// A client bound to one endpoint (and, after initialize, one session).
#[derive(Debug, Clone)]
pub struct Mcp {
    /// HTTP client.
    pub http: reqwest::Client,
    /// Endpoint URL.
    pub url: String,
    /// Session id.
    pub session: Option<String>,
    /// Protocol version header to send (None: omit it).
    pub version: Option<String>,
    /// Extra headers on every request (credentials).
    pub headers: Vec<(String, String)>,
}

impl Mcp {
    /// A client without a session.
    pub fn new(url: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            url: url.to_owned(),
            session: None,
            version: None,
            headers: Vec::new(),
        }
    }

    /// The same client, sending `name: value` with every request.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The same client with `Authorization: Bearer <token>` instead of its other credentials.
    pub fn bearer(&self, token: &str) -> Self {
        Self {
            headers: vec![("Authorization".into(), format!("Bearer {token}"))],
            ..self.clone()
        }
    }

    /// The same session and endpoint, without credentials.
    pub fn anonymous(&self) -> Self {
        Self {
            headers: Vec::new(),
            ..self.clone()
        }
    }

    /// The same session, at another node's endpoint.
    pub fn at(&self, url: &str) -> Self {
        Self {
            url: url.to_owned(),
            ..self.clone()
        }
    }

    /// Initialize a session at `version` with `capabilities`, then send `notifications/initialized`.
    pub async fn connect(url: &str, version: &str, capabilities: Value) -> Self {
        Self::new(url).open(version, capabilities).await
    }

    /// Like [`Self::connect`], with this client's headers (credentials).
    pub async fn open(self, version: &str, capabilities: Value) -> Self {
        let mut c = self;
        let resp = c
            .post(
                &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": version, "capabilities": capabilities,
                "clientInfo": {"name": "marina-tests", "version": "0"}}}),
            )
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
        let sid = resp
            .headers()
            .get("mcp-session-id")
            .expect("session id")
            .to_str()
            .unwrap()
            .to_owned();
        let body: Value = resp.json().await.unwrap();
        c.version = Some(body["result"]["protocolVersion"].as_str().unwrap().to_owned());
        c.session = Some(sid);
        let r = c
            .post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        c
    }

    /// A request with the MCP headers.
    pub fn request(&self, method: Method) -> RequestBuilder {
        let mut r = self
            .http
            .request(method, &self.url)
            .header("Accept", "application/json, text/event-stream");
        if let Some(s) = &self.session {
            r = r.header("MCP-Session-Id", s);
        }
        if let Some(v) = &self.version {
            r = r.header("MCP-Protocol-Version", v);
        }
        for (k, v) in &self.headers {
            r = r.header(k, v);
        }
        r
    }

    /// POST a JSON body.
    pub async fn post(&self, body: &Value) -> Response {
        self.request(Method::POST)
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("POST")
    }

    /// POST a request and return every JSON-RPC message of its answer (JSON or a complete SSE
    /// stream, bounded by 20 s), and the HTTP status.
    pub async fn exchange(&self, body: &Value) -> (StatusCode, Vec<Value>) {
        let resp = self.post(body).await;
        let status = resp.status();
        let sse = resp
            .headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/event-stream"));
        if sse {
            let (events, _) = read_events(resp, Duration::from_secs(20), |_| false).await;
            (status, events.iter().filter_map(SseEvent::json).collect())
        } else {
            let text = resp.text().await.unwrap_or_default();
            (status, serde_json::from_str(&text).ok().into_iter().collect())
        }
    }

    /// Send request `method` with `params` (id `id`) and return its response message.
    pub async fn rpc(&self, id: i64, method: &str, params: Value) -> Value {
        let (status, msgs) = self
            .exchange(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        assert_eq!(status, StatusCode::OK, "{method}: {msgs:?}");
        msgs.into_iter()
            .find(|m| m.get("id") == Some(&json!(id)))
            .unwrap_or_else(|| panic!("no response to {method}"))
    }

    /// `tools/list` (first page) → the tool names, in the order listed.
    pub async fn tool_names(&self, id: i64) -> Vec<String> {
        let list = self.rpc(id, "tools/list", json!({})).await;
        let tools = list["result"]["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("no tools in {list}"));
        tools
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// `tools/call` → the result's first text.
    pub async fn call_text(&self, id: i64, tool: &str, args: Value) -> String {
        let r = self
            .rpc(id, "tools/call", json!({"name": tool, "arguments": args}))
            .await;
        r["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("no text in {r}"))
            .to_owned()
    }

    /// GET (open the standalone stream, or resume after `last_event_id`).
    pub async fn get(&self, last_event_id: Option<&str>) -> Response {
        let mut r = self.request(Method::GET);
        if let Some(l) = last_event_id {
            r = r.header("Last-Event-ID", l);
        }
        r.send().await.expect("GET")
    }

    /// Resume the stream after `last_event_id` repeatedly (bounded: ~10 s) until a message
    /// matching `pred` has been persisted on it; return that message.
    pub async fn wait_for_message(
        &self,
        last_event_id: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        for _ in 0..50 {
            let (events, _) = read_events(
                self.get(Some(last_event_id)).await,
                Duration::from_millis(200),
                |ev| ev.iter().filter_map(SseEvent::json).any(|m| pred(&m)),
            )
            .await;
            if let Some(m) = events.iter().filter_map(SseEvent::json).find(|m| pred(m)) {
                return Some(m);
            }
        }
        None
    }

    /// DELETE the session.
    pub async fn delete(&self) -> Response {
        self.request(Method::DELETE).send().await.expect("DELETE")
    }
}

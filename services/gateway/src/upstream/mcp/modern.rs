//! The 2026-07-28 side of an `mcp` upstream: which era it speaks (configured, or probed once with
//! `server/discover` and remembered), and requests of the stateless era — no session, the
//! per-request `_meta` envelope, the routing headers — including the multi round-trip requests
//! an upstream answers with `input_required`.
//!
//! Translation for sessionful clients: an upstream's `input_required` becomes requests to the
//! client (on the call's stream, only for capabilities it declared), and the upstream is retried
//! with the answers and its `requestState` until it completes. A 2026-07-28 client gets the
//! `input_required` itself (the gateway wraps the upstream's state in its own sealed one).

use std::time::Duration;

use eventsource_stream::Eventsource as _;
use futures_util::StreamExt as _;
use marina_core::protocol::{self, RpcError};
use marina_core::tools::{CallContext, SessionContext, UpstreamSession};
use serde_json::{Map, Value, json};

use super::{Failure, McpUpstream, RELAYED_REQUESTS, egress, tool_error, upstream_request_id};
use crate::modern::routing;

/// The stateless revision Marina speaks to upstreams.
pub const MODERN: &str = "2026-07-28";
/// Most rounds of `input_required` one call may go through for a sessionful client.
const MAX_INPUT_ROUNDS: usize = 8;

/// The era an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// 2026-07-28: stateless requests.
    Modern,
    /// `initialize` and an upstream session.
    Sessionful,
}

/// What the configuration says to speak (`protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Probe with `server/discover`; fall back to `initialize`.
    Auto,
    /// 2026-07-28.
    Modern,
    /// This sessionful revision, offered in `initialize`.
    Sessionful(&'static str),
}

impl Protocol {
    /// From the `protocol` setting.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Self::Auto),
            MODERN => Some(Self::Modern),
            v => protocol::SUPPORTED_VERSIONS
                .iter()
                .find(|x| **x == v)
                .map(|x| Self::Sessionful(x)),
        }
    }
}

/// The stand-in for an upstream session on stateless requests: no id, and
/// `MCP-Protocol-Version: 2026-07-28` (which also makes [`McpUpstream::post_request`] add the
/// routing headers).
pub fn stateless() -> UpstreamSession {
    UpstreamSession {
        id: None,
        protocol_version: MODERN.into(),
    }
}

/// Put the per-request envelope into `params._meta`: the revision, the client's capabilities
/// that Marina relays, Marina's identity, and the client's log level.
pub fn envelope(params: &mut Value, ctx: &dyn SessionContext) {
    envelope_of(params, &ctx.client_capabilities(), ctx.log_level());
}

/// [`envelope`] for a client with capabilities `client` and log level `log_level`.
fn envelope_of(params: &mut Value, client: &Value, log_level: Option<String>) {
    let mut capabilities = json!({});
    for (_, capability) in RELAYED_REQUESTS {
        if let Some(v) = client.get(capability).filter(|v| v.is_object()) {
            capabilities[capability] = v.clone();
        }
    }
    if !params.is_object() {
        *params = json!({});
    }
    let meta = &mut params["_meta"];
    if !meta.is_object() {
        *meta = json!({});
    }
    meta["io.modelcontextprotocol/protocolVersion"] = json!(MODERN);
    meta["io.modelcontextprotocol/clientCapabilities"] = capabilities;
    meta["io.modelcontextprotocol/clientInfo"] =
        json!({"name": "marina", "version": env!("CARGO_PKG_VERSION")});
    match log_level {
        Some(level) => meta["io.modelcontextprotocol/logLevel"] = json!(level),
        None => {
            meta.as_object_mut()
                .map(|m| m.remove("io.modelcontextprotocol/logLevel"));
        }
    }
}

/// The routing headers of a stateless request `body` (`schema`: the called tool's input schema,
/// when it marks arguments with `x-mcp-header`).
pub fn routing_headers(body: &Value, schema: Option<&Value>) -> Vec<(String, String)> {
    let Some(method) = body.get("method").and_then(Value::as_str) else {
        return Vec::new();
    };
    let mut out = vec![("mcp-method".to_owned(), method.to_owned())];
    let params = &body["params"];
    let name = match method {
        "tools/call" | "prompts/get" => params.get("name"),
        "resources/read" => params.get("uri"),
        _ => None,
    };
    if let Some(n) = name.and_then(Value::as_str) {
        out.push(("mcp-name".to_owned(), routing::encode(n)));
    }
    if let Some(schema) = schema {
        out.extend(routing::param_headers(schema, &params["arguments"]));
    }
    out
}

impl McpUpstream {
    /// The era this upstream speaks, if known (configured, or probed by this node).
    pub(super) fn known_era(&self) -> Option<Era> {
        match self.protocol {
            Protocol::Modern => Some(Era::Modern),
            Protocol::Sessionful(_) => Some(Era::Sessionful),
            Protocol::Auto => *self.era.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }

    /// The era this upstream speaks: probed with `server/discover` the first time (`auto`).
    pub(super) async fn era(&self) -> Result<Era, Failure> {
        if let Some(era) = self.known_era() {
            return Ok(era);
        }
        let era = self.discover().await?;
        *self.era.lock().unwrap_or_else(|p| p.into_inner()) = Some(era);
        tracing::info!(upstream = %self.name, era = ?era, "upstream protocol era probed");
        Ok(era)
    }

    /// Forget a probed era (the upstream seems to have changed): the next request probes again.
    pub(super) fn forget_era(&self) {
        if self.protocol == Protocol::Auto {
            self.era.lock().unwrap_or_else(|p| p.into_inner()).take();
        }
    }

    /// `server/discover`: an upstream that lists 2026-07-28 speaks it; any other answer (a
    /// sessionful server refuses, ignores or garbles a request without a session) means the
    /// sessionful era. Only no answer at all (unreachable, timeout) decides nothing.
    async fn discover(&self) -> Result<Era, Failure> {
        let mut params = json!({});
        // A probe has no client behind it: no capabilities, no log level.
        envelope_of(&mut params, &json!({}), None);
        let id = upstream_request_id("discover");
        let body = protocol::request(&id, "server/discover", params);
        let resp = self
            .post_within(Some(&stateless()), &body, self.timeout.min(super::LIST_TIMEOUT))
            .await?;
        if !resp.status().is_success() {
            return Ok(Era::Sessionful);
        }
        let Ok(bytes) = resp.bytes().await else {
            return Ok(Era::Sessionful);
        };
        if bytes.len() > self.max_bytes {
            return Ok(Era::Sessionful);
        }
        // One JSON answer, or an SSE stream holding it.
        let text = String::from_utf8_lossy(&bytes);
        let answers = std::iter::once(text.as_ref())
            .chain(text.lines().filter_map(|l| l.strip_prefix("data:")))
            .filter_map(|s| serde_json::from_str::<Value>(s.trim()).ok());
        let modern = answers.filter(|m| m.get("id") == Some(&id)).any(|m| {
            m.pointer("/result/supportedVersions")
                .and_then(Value::as_array)
                .is_some_and(|v| v.iter().any(|x| x == MODERN))
        });
        Ok(if modern { Era::Modern } else { Era::Sessionful })
    }

    /// One stateless request outside a call (lists, reads, prompts, completion).
    pub(super) async fn exchange_modern(
        &self,
        ctx: &dyn SessionContext,
        method: &str,
        mut params: Value,
    ) -> Result<Value, RpcError> {
        envelope(&mut params, ctx);
        let id = upstream_request_id("req");
        let (msg, _) = self
            .request(Some(&stateless()), &id, method, params, None)
            .await
            .map_err(Failure::into_rpc)?;
        self.noted_version_error(&msg);
        let result = super::relayed_result(&msg)?;
        if result["resultType"] == "input_required" && !ctx.upstream_sessions_shared() {
            // A session's feature requests have no stream to ask the client on.
            return Err(RpcError::new(
                protocol::code::INTERNAL_ERROR,
                format!(
                    "the upstream {} needs input from the client for {method}, which Marina relays                      to sessionful clients only during tool calls",
                    self.name
                ),
            ));
        }
        Ok(result)
    }

    /// An upstream that no longer takes 2026-07-28 (-32022) is probed again next time.
    fn noted_version_error(&self, msg: &Value) {
        if msg.pointer("/error/code").and_then(Value::as_i64) == Some(-32022) {
            self.forget_era();
        }
    }

    /// `tools/call` of upstream tool `name`, statelessly.
    pub(super) async fn call_modern(
        &self,
        name: &str,
        arguments: Value,
        ctx: &dyn CallContext,
    ) -> Result<Value, RpcError> {
        let session = stateless();
        let mut params = json!({"name": name, "arguments": arguments});
        if let Some(token) = ctx.progress_token() {
            params["_meta"] = json!({"progressToken": token});
        }
        if let Some(Value::Object(more)) = ctx.continuation() {
            for (k, v) in more {
                params[k] = v;
            }
        }
        envelope(&mut params, ctx);
        for _ in 0..MAX_INPUT_ROUNDS {
            let id = upstream_request_id("call");
            // Dropping this future closes the request's stream, which cancels it upstream.
            let msg = match self
                .request(Some(&session), &id, "tools/call", params.clone(), Some(ctx))
                .await
            {
                Ok((msg, _)) => msg,
                Err(f) => return Ok(tool_error(f.into_rpc().message)),
            };
            self.noted_version_error(&msg);
            let result = super::relayed_result(&msg)?;
            if result["resultType"] != "input_required" || ctx.passes_input_required() {
                return Ok(result);
            }
            // A sessionful client: put each question to it, then retry with the answers.
            let mut answers = Map::new();
            for (key, question) in result["inputRequests"].as_object().into_iter().flatten() {
                let method = question["method"].as_str().unwrap_or_default();
                let params = question.get("params").cloned().unwrap_or_else(|| json!({}));
                if !RELAYED_REQUESTS.iter().any(|(m, _)| *m == method) {
                    return Ok(tool_error(format!(
                        "the upstream {} asked the client something Marina does not relay ({})",
                        self.name,
                        protocol::truncate(method, 64)
                    )));
                }
                match ctx.request_client(method, params).await {
                    Ok(answer) => answers.insert(key.clone(), answer),
                    Err(e) => {
                        return Ok(tool_error(format!(
                            "the client could not answer the upstream's {method}: {}",
                            e.message
                        )));
                    }
                };
            }
            params["inputResponses"] = Value::Object(answers);
            match result.get("requestState") {
                Some(s) => params["requestState"] = s.clone(),
                None => {
                    params.as_object_mut().map(|p| p.remove("requestState"));
                }
            }
        }
        Ok(tool_error(format!(
            "the upstream {} kept asking for input",
            self.name
        )))
    }
}

impl McpUpstream {
    /// A session's `resources/subscribe` or `resources/unsubscribe` on a 2026-07-28 upstream,
    /// which has neither: the session's listener (see [`Self::listen`]) asks for the updates.
    pub(super) fn subscribe(&self, ctx: &dyn SessionContext, method: &str, params: &Value) -> Value {
        let key = ctx.session_key();
        let uri = params["uri"].as_str().unwrap_or_default().to_owned();
        {
            let mut subscribed = self.subscribed.lock().unwrap_or_else(|p| p.into_inner());
            let set = subscribed.entry(key.clone()).or_default();
            if method == "resources/subscribe" {
                set.insert(uri);
            } else {
                set.remove(&uri);
            }
        }
        // The listener starts over with the new set.
        if let Some(link) = self.followers.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            link.wake.notify_one();
        }
        json!({})
    }

    /// Follow a 2026-07-28 upstream for a session: one `subscriptions/listen` stream (list
    /// changes, and updates of the resources the session subscribed to), its notifications
    /// relayed like those of a sessionful upstream's GET stream; opened again after it ends or
    /// fails (with back-off), or at once when the session's subscriptions change (`wake`).
    pub(super) async fn listen(&self, ctx: &dyn CallContext, wake: &tokio::sync::Notify) {
        let mut delay = Duration::from_millis(500);
        loop {
            let uris: Vec<String> = self
                .subscribed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&ctx.session_key())
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default();
            let mut filter = json!({
                "toolsListChanged": true,
                "promptsListChanged": true,
                "resourcesListChanged": true,
            });
            if !uris.is_empty() {
                filter["resourceSubscriptions"] = json!(uris);
            }
            let mut params = json!({"notifications": filter});
            envelope(&mut params, ctx);
            let body = protocol::request(&upstream_request_id("listen"), "subscriptions/listen", params);
            let heard = tokio::select! {
                heard = self.listen_once(ctx, &body) => heard,
                () = wake.notified() => {
                    delay = Duration::from_millis(500);
                    continue;
                }
            };
            delay = if heard {
                Duration::from_millis(500)
            } else {
                (delay * 2).min(LISTEN_BACKOFF)
            };
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = wake.notified() => {}
            }
        }
    }

    /// One `subscriptions/listen` stream, relayed until it ends; whether it was opened.
    async fn listen_once(&self, ctx: &dyn CallContext, body: &Value) -> bool {
        if egress::check_url(&self.policy, &self.url).is_err() {
            return false;
        }
        let sent = self
            .transport
            .send(self.post_request(Some(&stateless()), body), LISTEN_FOR)
            .await;
        let Ok(resp) =
            sent.inspect_err(|e| tracing::debug!(upstream = %self.name, error = ?e, "listen failed"))
        else {
            return false;
        };
        if !resp.status().is_success() {
            return false;
        }
        ctx.stream_opened();
        let mut events = resp.bytes_stream().eventsource();
        while let Some(Ok(event)) = events.next().await {
            if event.data.is_empty() || event.data.len() > self.max_bytes {
                continue;
            }
            let Ok(mut msg) = serde_json::from_str::<Value>(&event.data) else {
                continue;
            };
            let Some(method) = msg.get("method").and_then(Value::as_str).map(str::to_owned) else {
                break; // the response: the upstream ended the subscription
            };
            let mut params = msg
                .get_mut("params")
                .map(Value::take)
                .unwrap_or_else(|| json!({}));
            if let Some(meta) = params.get_mut("_meta").and_then(Value::as_object_mut) {
                meta.remove("io.modelcontextprotocol/subscriptionId");
                if meta.is_empty() {
                    params.as_object_mut().map(|p| p.remove("_meta"));
                }
            }
            match method.as_str() {
                "notifications/tools/list_changed" => {
                    ctx.tools_changed();
                    ctx.notify(&method, json!({})).await;
                }
                "notifications/resources/updated"
                | "notifications/resources/list_changed"
                | "notifications/prompts/list_changed" => ctx.notify(&method, params).await,
                _ => {}
            }
        }
        true
    }
}

/// The longest a listener stream is held before it is opened again.
const LISTEN_FOR: Duration = Duration::from_secs(3600);
/// Longest pause between failed attempts to listen.
const LISTEN_BACKOFF: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_parse_and_routing_headers_mirror_the_body() {
        assert_eq!(Protocol::parse("auto"), Some(Protocol::Auto));
        assert_eq!(Protocol::parse("2026-07-28"), Some(Protocol::Modern));
        assert_eq!(
            Protocol::parse("2025-06-18"),
            Some(Protocol::Sessionful("2025-06-18"))
        );
        assert_eq!(Protocol::parse("2024-11-05"), None);
        let body =
            json!({"method": "tools/call", "params": {"name": "ünï", "arguments": {"region": "eu", "n": 3}}});
        let schema = json!({"properties": {"region": {"type": "string", "x-mcp-header": "Region"}, "n": {"type": "integer"}}});
        let headers = routing_headers(&body, Some(&schema));
        assert_eq!(headers[0], ("mcp-method".into(), "tools/call".into()));
        assert_eq!(headers[1].0, "mcp-name");
        assert!(headers[1].1.starts_with("=?base64?"), "non-ASCII in Base64 form");
        assert_eq!(headers[2], ("mcp-param-Region".into(), "eu".into()));
        assert_eq!(headers.len(), 3);
    }
}

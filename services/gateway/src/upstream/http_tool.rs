//! Upstream kind `http`: one tool defined by a JSON Schema and run by an HTTP endpoint.
//!
//! Arguments are validated against the tool's `inputSchema` (JSON Schema 2020-12 unless the
//! schema names another dialect; `jsonschema` crate, no remote `$ref` resolution) before anything
//! is sent. GET and DELETE carry the arguments as query parameters (scalars only), other methods
//! as a JSON body. A 2xx JSON answer becomes `structuredContent` (when it is an object, checked
//! against `outputSchema` when there is one) plus the same JSON as text; every other outcome — a
//! non-2xx status, a non-JSON body, a body over the size limit, a timeout, an unreachable or
//! forbidden address — is a tool error (`isError`) with a short message that reveals nothing of the
//! upstream's answer. The endpoint's credentials come from the tenant's configuration; nothing of
//! the client's request (and never its token) is forwarded.
//!
//! When traces are on, each request to the endpoint is a CLIENT span (after the OpenTelemetry
//! HTTP conventions, named by its method) under the call's SERVER span, and carries its context
//! in `traceparent`/`tracestate`. Its `url.full` is the configured URL without query, fragment
//! or user info: neither arguments (GET and DELETE send them in the query) nor credentials go
//! into a span.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt as _;
use marina_core::protocol::RpcError;
use marina_core::settings::HttpToolSettings;
use marina_core::tools::{CallContext, ToolDef, ToolProvider};
use marina_telemetry::traces;
use reqwest::header::HeaderMap;
use serde_json::{Map, Value, json};

use super::egress::{self, Policy};

/// An HTTP tool, ready to call.
pub struct HttpTool {
    def: ToolDef,
    input: jsonschema::Validator,
    output: Option<jsonschema::Validator>,
    method: reqwest::Method,
    url: reqwest::Url,
    headers: HeaderMap,
    timeout: Duration,
    max_bytes: usize,
    client: reqwest::Client,
    policy: Policy,
    /// What this node sees of the tool's service (for the admin API's status).
    health: std::sync::Arc<super::health::Health>,
    /// The CLIENT span's attributes that never change (the tenant's is added per call).
    span_attributes: Vec<traces::KeyValue>,
}

impl std::fmt::Debug for HttpTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Headers may hold credentials: never print them.
        f.debug_struct("HttpTool")
            .field("name", &self.def.name)
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

/// Is `name` a valid MCP tool name (SEP-986)?
pub fn valid_tool_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

fn compile(schema: &Value, what: &str) -> Result<jsonschema::Validator, String> {
    if schema.get("type").and_then(Value::as_str) != Some("object") {
        return Err(format!(
            "{what} must be a JSON Schema whose root type is \"object\""
        ));
    }
    jsonschema::validator_for(schema).map_err(|e| format!("{what} is not a valid JSON Schema: {e}"))
}

impl HttpTool {
    /// Note what is seen of the tool's service in `health`.
    pub fn with_health(mut self, health: std::sync::Arc<super::health::Health>) -> Self {
        self.health = health;
        self
    }

    /// Build a tool from its settings; every problem is a configuration error.
    pub fn new(s: &HttpToolSettings, client: reqwest::Client, policy: Policy) -> Result<Self, String> {
        let name = &s.name;
        if !valid_tool_name(name) {
            return Err(format!(
                "http tool {name:?}: names are 1-128 characters of A-Z a-z 0-9 _ - ."
            ));
        }
        let input = compile(&s.input_schema, &format!("http tool {name}: input_schema"))?;
        let output = s
            .output_schema
            .as_ref()
            .map(|o| compile(o, &format!("http tool {name}: output_schema")))
            .transpose()?;
        let method = reqwest::Method::from_bytes(s.method.to_ascii_uppercase().as_bytes())
            .ok()
            .filter(|m| ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&m.as_str()))
            .ok_or_else(|| format!("http tool {name}: method must be GET, POST, PUT, PATCH or DELETE"))?;
        let url = super::http_url(&format!("http tool {name}"), &s.url)?;
        let headers = super::credential_headers(
            &format!("http tool {name}"),
            &s.headers,
            s.bearer_env.as_deref(),
            s.bearer_file.as_deref(),
        )?;
        let mut definition = json!({"name": name, "inputSchema": s.input_schema});
        for (key, value) in [
            ("title", s.title.clone().map(Value::String)),
            ("description", s.description.clone().map(Value::String)),
            ("outputSchema", s.output_schema.clone()),
            ("annotations", s.annotations.clone()),
        ] {
            if let Some(v) = value {
                definition[key] = v;
            }
        }
        Ok(Self {
            span_attributes: span_attributes(&method, &url, name),
            def: ToolDef {
                name: name.clone(),
                definition,
            },
            input,
            output,
            method,
            url,
            headers,
            timeout: Duration::from_millis(s.timeout_ms),
            max_bytes: s.max_response_bytes,
            client,
            policy,
            health: Default::default(),
        })
    }

    fn request(&self, args: &Map<String, Value>) -> Result<reqwest::RequestBuilder, String> {
        let mut req = self
            .client
            .request(self.method.clone(), self.url.clone())
            .headers(self.headers.clone())
            .timeout(self.timeout);
        if matches!(self.method, reqwest::Method::GET | reqwest::Method::DELETE) {
            let mut url = self.url.clone();
            {
                let mut q = url.query_pairs_mut();
                for (k, v) in args {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        Value::Null => continue,
                        _ => return Err(format!("argument {k:?} cannot be sent as a query parameter")),
                    };
                    q.append_pair(k, &v);
                }
            }
            req = self
                .client
                .request(self.method.clone(), url)
                .headers(self.headers.clone())
                .timeout(self.timeout);
        } else {
            req = req.json(args);
        }
        Ok(req)
    }

    /// Call the endpoint; `Err` is the tool error's message. The exchange (until the answer is
    /// read) is a CLIENT span when traces are on.
    async fn invoke(&self, args: &Map<String, Value>) -> Result<Value, String> {
        egress::check_url(&self.policy, &self.url).map_err(str::to_owned)?;
        let req = self.request(args)?;
        let span = self.span();
        span.clone().within(self.exchange(req, &span)).await
    }

    /// The CLIENT span of a request to the endpoint (none when traces are off), a child of the
    /// current span (the `tools/call`'s SERVER span).
    fn span(&self) -> traces::Span {
        if !traces::enabled() {
            return traces::Span::none();
        }
        let mut attributes = self.span_attributes.clone();
        let tenant = self.health.tenant();
        if !tenant.is_empty() {
            attributes.push(traces::KeyValue::new("marina.tenant", tenant.to_owned()));
        }
        traces::client(span_name(&self.method).into(), attributes)
    }

    /// Send `req` inside `span` (the current one), with its context, and read the answer.
    async fn exchange(&self, req: reqwest::RequestBuilder, span: &traces::Span) -> Result<Value, String> {
        let mut trace = HeaderMap::new();
        traces::inject_headers(&mut trace);
        let req = if trace.is_empty() { req } else { req.headers(trace) };
        let resp = req.send().await.map_err(|e| {
            span.record_error(error_type(&e));
            let message = if e.is_timeout() {
                format!(
                    "the tool's service did not answer within {} ms",
                    self.timeout.as_millis()
                )
            } else {
                tracing::info!(tool = %self.def.name, error = %e, "http tool unreachable");
                "the tool's service could not be reached".to_owned()
            };
            self.health.failed(&message);
            message
        })?;
        let status = resp.status();
        span.set("http.response.status_code", i64::from(status.as_u16()));
        if status.is_client_error() || status.is_server_error() {
            span.record_error(status.as_str().to_owned());
        }
        if status.is_server_error() {
            self.health.failed(&format!(
                "the tool's service answered with HTTP {}",
                status.as_u16()
            ));
        } else {
            self.health.succeeded();
        }
        if !status.is_success() {
            return Err(format!(
                "the tool's service answered with HTTP {}",
                status.as_u16()
            ));
        }
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                span.record_error(error_type(&e));
                if e.is_timeout() {
                    format!(
                        "the tool's service did not answer within {} ms",
                        self.timeout.as_millis()
                    )
                } else {
                    "the tool's service broke off its answer".to_owned()
                }
            })?;
            if body.len() + chunk.len() > self.max_bytes {
                span.record_error("response_too_large");
                return Err(format!(
                    "the tool's service answered with more than {} bytes",
                    self.max_bytes
                ));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|_| "the tool's service did not answer with JSON".to_owned())
    }
}

/// The CLIENT span's name, after the HTTP conventions: the method.
fn span_name(method: &reqwest::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        _ => "HTTP",
    }
}

/// The attributes every CLIENT span of tool `name` at `url` has: `http.request.method`,
/// `server.address`, `server.port`, `url.full` (without query, fragment and user info) and
/// `gen_ai.tool.name`.
fn span_attributes(method: &reqwest::Method, url: &reqwest::Url, name: &str) -> Vec<traces::KeyValue> {
    use traces::KeyValue;
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    let mut attributes = vec![KeyValue::new("http.request.method", span_name(method))];
    if let Some(host) = url.host_str() {
        attributes.push(KeyValue::new("server.address", host.to_owned()));
    }
    if let Some(port) = url.port_or_known_default() {
        attributes.push(KeyValue::new("server.port", i64::from(port)));
    }
    attributes.push(KeyValue::new("url.full", String::from(shown)));
    attributes.push(KeyValue::new("gen_ai.tool.name", name.to_owned()));
    attributes
}

/// `error.type` of a request that got no (complete) answer.
fn error_type(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "request"
    }
}

fn text_result(text: String, is_error: bool) -> Value {
    json!({"content": [{"type": "text", "text": text}], "isError": is_error})
}

#[async_trait(?Send)]
impl ToolProvider for HttpTool {
    fn tools(&self) -> Vec<ToolDef> {
        vec![self.def.clone()]
    }

    async fn call(&self, _name: &str, arguments: Value, ctx: &dyn CallContext) -> Result<Value, RpcError> {
        // Also checked by the session when the tenant validates arguments; here too, for tenants
        // that leave it to their tools.
        let problems = marina_core::schema::problems(&self.input, &arguments);
        if !problems.is_empty() {
            return Ok(text_result(
                format!("invalid arguments: {}", problems.join("; ")),
                true,
            ));
        }
        let args = arguments.as_object().cloned().unwrap_or_default();
        let started = std::time::Instant::now();
        let invoked = self.invoke(&args).await;
        ctx.upstream_waited(started.elapsed());
        let answer = match invoked {
            Ok(v) => v,
            Err(message) => return Ok(text_result(message, true)),
        };
        let text = answer.to_string();
        if let Some(out) = &self.output
            && !out.is_valid(&answer)
        {
            let message =
                "the tool's service answered with data that does not match the tool's output schema";
            return Ok(text_result(message.into(), true));
        }
        let mut result = text_result(text, false);
        if answer.is_object() {
            result["structuredContent"] = answer;
        }
        Ok(result)
    }
}

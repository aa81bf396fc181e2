//! Process settings, layered with the `config` crate: built-in defaults < file (`--config`,
//! TOML or YAML) < environment (`MARINA__SECTION__KEY`) < command-line flags.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use serde::Deserialize;

const DEFAULTS: &str = include_str!("../config/default.toml");

/// The settings root: one section per concern.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// Listener, node identity, shutdown and logs.
    pub server: ServerSettings,
    /// Session store.
    pub store: StoreSettings,
    /// How nodes trust each other.
    pub cluster: ClusterSettings,
    /// Session lifecycle and streams.
    pub sessions: SessionSettings,
    /// Outbound requests to tenants' services (SSRF guard).
    pub egress: EgressSettings,
    /// The admin API (control plane).
    pub admin: AdminSettings,
    /// Traces (OpenTelemetry); off unless an OTLP endpoint is set.
    pub telemetry: TelemetrySettings,
    /// Tenants of the configuration file, by id (read-only in the admin API; the admin API
    /// stores further tenants in the store).
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantSettings>,
    /// The file's tenant documents as written (what the admin API shows for them).
    #[serde(skip)]
    pub tenant_docs: BTreeMap<String, serde_json::Value>,
}

/// `[admin]`: the control plane's HTTP API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Listen address of the admin API (`ADDR:PORT`); empty: no admin API on this node.
    pub bind: String,
    /// Platform administrators' API keys (SHA-256 digests, like tenants' keys).
    #[serde(default)]
    pub api_keys: Vec<AdminKeySettings>,
    /// Platform administrators' OAuth tokens: an issuer and the admin API's own audience
    /// (required; never a tenant endpoint's). Tokens must carry the `marina:admin` scope (and
    /// any `required_scopes`).
    #[serde(default)]
    pub oauth: Option<OAuthSettings>,
    /// Most tenants the store holds (the control plane's cap).
    pub max_tenants: usize,
    /// How often each node checks the store's configuration version (pub/sub delivers changes
    /// at once; the check heals a missed message).
    pub poll_ms: u64,
    /// Audit entries kept (about; older ones are trimmed).
    pub audit_max_entries: usize,
    /// Audit entries older than this are trimmed (and API keys' last-use times unused that
    /// long are forgotten).
    pub audit_retention_days: u64,
    /// How often each node hands the store the API key uses it saw (their last-use times).
    pub key_usage_flush_ms: u64,
}

/// `[telemetry]`: OpenTelemetry traces, exported over OTLP/HTTP (protobuf). Off unless an endpoint
/// is set here or in `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// Record Prometheus metrics (on by default; the benchmark's "metrics off").
    pub metrics: bool,
    /// The collector's base URL (`http://collector:4318`; spans go to `/v1/traces`).
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// Fraction of new traces sampled, 0 to 1; a request that comes with a parent follows the
    /// parent's decision (in `parent` mode).
    pub sampling_ratio: f64,
    /// What a client's trace context (`_meta.traceparent`, else the `traceparent` header) becomes.
    pub client_context: ClientContext,
}

/// How a client's trace context is used by the request's server span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientContext {
    /// The client's span is the parent (OpenTelemetry MCP conventions): one trace end to end.
    Parent,
    /// A new trace, linked to the client's span: a tenant's client cannot choose Marina's trace
    /// ids or sampling decisions.
    Link,
}

/// One platform administrator's key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminKeySettings {
    /// Who the key authenticates (named in the audit log).
    pub subject: String,
    /// SHA-256 of the whole key string, 64 hex digits.
    pub sha256: String,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Listen address (`ADDR:PORT`, port 0 = any free port).
    pub bind: String,
    /// Node name; empty = derived.
    pub node_id: String,
    /// URL peers use to forward requests here; empty = `http://<bound address>`.
    pub advertise_url: String,
    /// On SIGTERM: how long the node keeps serving everything (readiness already 503) before it
    /// drains, so balancers deregister it before anything is refused.
    pub shutdown_delay_ms: u64,
    /// Drain budget on SIGTERM.
    pub drain_timeout_ms: u64,
    /// SSE response streams this node keeps open at most (every kind); a new one past it is
    /// refused with 503.
    pub max_open_streams: usize,
    /// `human` or `json`.
    pub log_format: LogFormat,
    /// EnvFilter directive.
    pub log_filter: String,
    /// Worker threads (0 = number of CPUs).
    pub workers: usize,
    /// How clients reach the cluster (`https://mcp.example.com`); tenants' default OAuth
    /// audiences and metadata URLs derive from it. Empty: `http://<bind address>`.
    pub public_url: String,
    /// Serve MCP 2026-07-28 (stateless) requests beside the sessionful era (on by default).
    pub stateless_era: bool,
    /// How long a multi round-trip request's `requestState` may be used.
    pub request_state_ttl_ms: u64,
    /// HTTPS served by Marina itself.
    pub tls: TlsSettings,
}

/// `[server.tls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// Certificate chain (PEM); empty: plain HTTP.
    pub cert_file: String,
    /// Private key (PEM).
    pub key_file: String,
    /// CA certificates (PEM) peers' certificates are checked against when forwarding.
    pub peer_ca_file: String,
}

impl TlsSettings {
    /// Does Marina serve HTTPS?
    pub fn enabled(&self) -> bool {
        !self.cert_file.is_empty()
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// `[store]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// Redis URL; empty = in-memory store.
    pub redis_url: String,
    /// Prefix of every key.
    pub key_prefix: String,
    /// Per-command timeout.
    pub timeout_ms: u64,
}

/// `[cluster]`
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// Shared secret of the cluster's nodes (authenticates forwarded requests).
    pub secret: String,
    /// File holding the secret (wins over `secret`).
    pub secret_file: String,
}

impl std::fmt::Debug for ClusterSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("ClusterSettings")
            .field("secret", &if self.secret.is_empty() { "" } else { "<set>" })
            .field("secret_file", &self.secret_file)
            .finish()
    }
}

/// `[egress]`: which addresses tenants' upstreams may reach. Private, loopback, link-local
/// (including the cloud metadata address), unique-local, CGNAT, multicast and unspecified addresses
/// are refused unless allowed here; the check runs on every resolved address at connect time, so
/// DNS answers cannot slip past it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressSettings {
    /// Allow 127.0.0.0/8 and ::1 (tests, sidecars).
    pub allow_loopback: bool,
    /// Allow private networks (10/8, 172.16/12, 192.168/16, fc00::/7, 100.64/10) — never the
    /// link-local / metadata ranges.
    pub allow_private: bool,
}

/// How `tools/call` responses are delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallResponseMode {
    /// A resumable SSE stream whose events are persisted.
    Sse,
    /// A single JSON body.
    Json,
}

/// `[sessions]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSettings {
    /// Idle expiry.
    pub idle_ttl_secs: u64,
    /// Absolute expiry.
    pub max_lifetime_secs: u64,
    /// Actor lease.
    pub lease_ttl_ms: u64,
    /// Passivation delay.
    pub passivate_after_secs: u64,
    /// Cap per event stream.
    pub max_events_per_stream: usize,
    /// Maximum POST stream duration.
    pub max_post_stream_ms: u64,
    /// SSE retry hint.
    pub retry_ms: u64,
    /// tools/call response mode.
    pub tools_call_response: CallResponseMode,
    /// tools/list page size.
    pub page_size: usize,
}

impl SessionSettings {
    /// Idle TTL as a duration.
    pub fn idle_ttl(&self) -> Duration {
        Duration::from_secs(self.idle_ttl_secs)
    }
    /// Absolute lifetime as a duration.
    pub fn max_lifetime(&self) -> Duration {
        Duration::from_secs(self.max_lifetime_secs)
    }
    /// Lease TTL as a duration.
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_millis(self.lease_ttl_ms)
    }
}

/// One tenant.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TenantSettings {
    /// Origins allowed in addition to localhost ones (`*` allows any). A list, or one string
    /// with comma-separated values (handy in environment variables).
    #[serde(default, deserialize_with = "string_or_list")]
    pub allowed_origins: Vec<String>,
    /// Hosts allowed in addition to localhost ones (`*` allows any), with or without port.
    #[serde(default, deserialize_with = "string_or_list")]
    pub allowed_hosts: Vec<String>,
    /// Proxies (CIDRs or addresses) whose `X-Forwarded-For/-Host/-Proto` are believed; from
    /// anyone else those headers are ignored.
    #[serde(default, deserialize_with = "cidrs")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Limits.
    #[serde(default)]
    pub limits: TenantLimits,
    /// Tool sources.
    #[serde(default = "default_upstreams")]
    pub upstreams: Vec<UpstreamSettings>,
    /// Check `tools/call` arguments against the tool's `inputSchema` before any upstream sees
    /// them.
    #[serde(default = "yes")]
    pub validate_arguments: bool,
    /// Who may connect. Absent: nobody is authenticated (loopback binds only, or the embedded
    /// default tenant).
    #[serde(default)]
    pub auth: Option<AuthSettings>,
    /// What each role may see and use. Absent: every authenticated caller may use everything.
    #[serde(default)]
    pub rbac: Option<RbacSettings>,
    /// Suspended: every request is refused (403) and open streams end, until set back.
    #[serde(default)]
    pub disabled: bool,
    /// The embedded default tenant (no tenant configured): open, on any bind.
    #[serde(skip)]
    pub embedded_default: bool,
}

/// Is `id` a valid tenant id (1-64 characters of `A-Z a-z 0-9 - _`)?
pub fn valid_tenant_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl TenantSettings {
    /// The checks that need nothing but the document (the gateway then builds the tenant:
    /// upstream URLs through the SSRF guard, the policy parsed). `Err((field, detail))`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if let Some(auth) = &self.auth {
            auth.validate().map_err(|(f, d)| (format!("auth.{f}"), d))?;
        }
        Ok(())
    }
}

/// A CIDR (`10.0.0.0/8`, `fd00::/8`) or a single address.
pub fn parse_cidr(s: &str) -> Option<ipnet::IpNet> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

/// A list (or comma-separated string) of CIDRs or addresses, parsed once, at load.
fn cidrs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    string_or_list(d)?
        .iter()
        .map(|p| {
            parse_cidr(p).ok_or_else(|| {
                serde::de::Error::custom(format!("{p:?} is not a CIDR (10.0.0.0/8) or an address"))
            })
        })
        .collect()
}

/// `tenants.<id>.rbac`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RbacSettings {
    /// casbin policy lines (`p, sub, obj, act, allow|deny` and `g, sub, role`); the model is
    /// `policies/model.conf`. Default deny: what no line allows is refused.
    pub policy: String,
}

/// `tenants.<id>.auth`: the credentials a tenant accepts. A tenant may accept several kinds.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// OAuth 2.1: JWT access tokens of one issuer.
    #[serde(default)]
    pub oauth: Option<OAuthSettings>,
    /// API keys (`mk_…`), stored as SHA-256 digests.
    #[serde(default)]
    pub api_keys: Vec<ApiKeySettings>,
    /// Requests without credentials act as subject `anonymous` with role `anonymous`.
    #[serde(default)]
    pub anonymous: bool,
}

/// `tenants.<id>.auth.oauth`: Marina as an OAuth 2.1 resource server for one issuer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthSettings {
    /// The authorization server's issuer identifier (https; http only on loopback). Its metadata
    /// is discovered (RFC 8414, then OpenID Connect Discovery) and must name the same issuer.
    pub issuer: String,
    /// The audience tokens must carry; default `<server.public_url>/t/<tenant>/mcp`.
    #[serde(default)]
    pub audience: Option<String>,
    /// Scopes every token must have (403 `insufficient_scope` otherwise).
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// Claim holding the principal's roles (a string or an array of strings).
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
}

fn yes() -> bool {
    true
}

fn default_roles_claim() -> String {
    "roles".into()
}

/// One API key of a tenant. The key itself is never stored: `marina keys new` prints it once,
/// with the line to configure.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySettings {
    /// Who the key authenticates (the principal's subject).
    pub subject: String,
    /// SHA-256 of the whole key string, 64 hex digits.
    pub sha256: String,
    /// Roles the key carries.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Expiry (RFC 3339, e.g. `2027-06-30T00:00:00Z`); never when absent.
    #[serde(default, deserialize_with = "rfc3339_opt")]
    pub expires: Option<std::time::SystemTime>,
}

fn rfc3339_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<std::time::SystemTime>, D::Error> {
    let raw: Option<String> = Option::deserialize(d)?;
    raw.map(|s| {
        humantime::parse_rfc3339_weak(s.trim()).map_err(|e| {
            serde::de::Error::custom(format!(
                "expires must be an RFC 3339 time such as 2027-06-30T00:00:00Z ({e})"
            ))
        })
    })
    .transpose()
}

fn string_or_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Either::deserialize(d)? {
        Either::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        Either::Many(v) => v,
    })
}

/// Per-tenant limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantLimits {
    /// Largest accepted POST body (413 above it).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Live sessions of the tenant, cluster-wide.
    #[serde(default)]
    pub max_sessions: Option<u64>,
    /// Live sessions of one principal, cluster-wide.
    #[serde(default)]
    pub max_sessions_per_principal: Option<u64>,
    /// Calls the tenant may have running at once, cluster-wide.
    #[serde(default)]
    pub max_inflight_calls: Option<u64>,
    /// Calls one session may have running at once.
    #[serde(default)]
    pub max_inflight_calls_per_session: Option<usize>,
    /// SSE streams one session may have open at once.
    #[serde(default)]
    pub max_streams_per_session: Option<usize>,
    /// Request rates, enforced by every node together.
    #[serde(default)]
    pub rate: RateLimits,
}

impl Default for TenantLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: default_max_body(),
            max_sessions: None,
            max_sessions_per_principal: None,
            max_inflight_calls: None,
            max_inflight_calls_per_session: None,
            max_streams_per_session: None,
            rate: RateLimits::default(),
        }
    }
}

/// `limits.rate`: requests per period, shared by all nodes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    /// All requests of the tenant.
    #[serde(default)]
    pub tenant: Option<Rate>,
    /// Requests of one principal.
    #[serde(default)]
    pub principal: Option<Rate>,
    /// `tools/call`s per principal and tool, by tool-name pattern (`*` matches any run of
    /// characters); the most specific (longest) matching pattern applies.
    #[serde(default)]
    pub tools: BTreeMap<String, Rate>,
}

/// A rate: `count` events per `period` (written `20/s`, `600/min`, `1000/h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Events per period.
    pub count: u64,
    /// The period.
    pub period: Duration,
}

impl std::str::FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a rate such as 20/s, 600/min or 1000/h");
        let (n, unit) = s.trim().split_once('/').ok_or_else(bad)?;
        let count: u64 = n.trim().parse().map_err(|_| bad())?;
        let period = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        if count == 0 || count > 1_000_000 {
            return Err(format!("{s:?}: the count must be 1 to 1000000"));
        }
        Ok(Self { count, period })
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.period.as_secs() {
            1 => "s",
            60 => "min",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

fn default_max_body() -> usize {
    1024 * 1024
}

/// One tool source of a tenant.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum UpstreamSettings {
    /// Marina's built-in tools; `tools` selects some (all when absent).
    Builtin {
        /// Names of the built-in tools to expose.
        #[serde(default)]
        tools: Option<Vec<String>>,
    },
    /// One tool backed by an HTTP endpoint.
    Http(Box<HttpToolSettings>),
    /// A remote MCP server over Streamable HTTP; its tools are published under a prefix.
    Mcp(Box<McpUpstreamSettings>),
}

/// A remote MCP server.
///
/// Its credential, timeout and size fields repeat those of [`HttpToolSettings`] on purpose: a
/// shared struct would need `#[serde(flatten)]`, which silently disables `deny_unknown_fields`
/// (a typo such as `timout_ms` would then be ignored instead of refused).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpUpstreamSettings {
    /// Upstream name, unique within the tenant (`[A-Za-z0-9_-]{1,64}`).
    pub name: String,
    /// Streamable HTTP endpoint (http or https).
    pub url: String,
    /// Tools are published as `<prefix>.<tool>`; defaults to the upstream's name, `""` for none.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Only these upstream tool names (exact, or ending in `*` for a prefix); all when empty.
    #[serde(default)]
    pub include: Vec<String>,
    /// Never these upstream tool names (same patterns).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Static headers sent with every request (the tenant's credentials).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Environment variable holding a bearer token for the upstream.
    #[serde(default)]
    pub bearer_env: Option<String>,
    /// File holding a bearer token for the upstream.
    #[serde(default)]
    pub bearer_file: Option<std::path::PathBuf>,
    /// Per-request timeout (a tool call's whole stream).
    #[serde(default = "default_tool_timeout")]
    pub timeout_ms: u64,
    /// Largest accepted response (JSON body, or each SSE event).
    #[serde(default = "default_max_body")]
    pub max_response_bytes: usize,
    /// The protocol revision to speak: `auto` (probe `server/discover`, else `initialize`),
    /// `2026-07-28` (stateless), or a sessionful revision (`2025-11-25`, `2025-06-18`,
    /// `2025-03-26`) to offer in `initialize`.
    #[serde(default = "default_upstream_protocol")]
    pub protocol: String,
}

fn default_upstream_protocol() -> String {
    "auto".into()
}

/// An HTTP tool: a JSON Schema for its arguments and the endpoint that runs it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpToolSettings {
    /// Tool name (`[A-Za-z0-9_.-]{1,128}`).
    pub name: String,
    /// Human title.
    #[serde(default)]
    pub title: Option<String>,
    /// What the tool does (shown to the model).
    #[serde(default)]
    pub description: Option<String>,
    /// JSON Schema (2020-12 unless `$schema` says otherwise) of the arguments; root type object.
    pub input_schema: serde_json::Value,
    /// Optional JSON Schema of the structured result.
    #[serde(default)]
    pub output_schema: Option<serde_json::Value>,
    /// Tool annotations (hints), passed through.
    #[serde(default)]
    pub annotations: Option<serde_json::Value>,
    /// HTTP method: GET and DELETE send the arguments as query parameters, others as a JSON body.
    #[serde(default = "default_method")]
    pub method: String,
    /// Endpoint URL (http or https).
    pub url: String,
    /// Static headers sent with every call.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Name of an environment variable holding a bearer token for the endpoint (the tenant's
    /// credential — never the client's).
    #[serde(default)]
    pub bearer_env: Option<String>,
    /// Path of a file holding a bearer token for the endpoint.
    #[serde(default)]
    pub bearer_file: Option<std::path::PathBuf>,
    /// Per-call timeout.
    #[serde(default = "default_tool_timeout")]
    pub timeout_ms: u64,
    /// Largest accepted response body.
    #[serde(default = "default_max_body")]
    pub max_response_bytes: usize,
}

fn default_method() -> String {
    "POST".into()
}

fn default_tool_timeout() -> u64 {
    10_000
}

fn default_upstreams() -> Vec<UpstreamSettings> {
    vec![UpstreamSettings::Builtin { tools: None }]
}

impl AuthSettings {
    /// `Err((field, detail))`, the field relative to `auth`.
    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |f: &str, d: &str| Err((f.to_owned(), d.to_owned()));
        if let Some(o) = &self.oauth {
            let issuer =
                url::Url::parse(&o.issuer).map_err(|e| ("oauth.issuer".to_owned(), e.to_string()))?;
            let loopback = matches!(issuer.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
            if !(issuer.scheme() == "https" || issuer.scheme() == "http" && loopback)
                || issuer.query().is_some()
                || issuer.fragment().is_some()
            {
                return bad(
                    "oauth.issuer",
                    "must be an https URL without query or fragment (http only on loopback)",
                );
            }
            if let Some(a) = &o.audience
                && a.trim().is_empty()
            {
                return bad("oauth.audience", "must not be empty");
            }
            if o.roles_claim.trim().is_empty() {
                return bad("oauth.roles_claim", "must not be empty");
            }
            if o.required_scopes
                .iter()
                .any(|s| s.is_empty() || s.contains([' ', '"', '\\']))
            {
                return bad(
                    "oauth.required_scopes",
                    "must be scope tokens (no spaces or quotes)",
                );
            }
        }
        let mut digests = std::collections::HashSet::new();
        for (i, k) in self.api_keys.iter().enumerate() {
            if k.subject.trim().is_empty() || k.subject.len() > 256 {
                return bad(&format!("api_keys[{i}].subject"), "must be 1-256 characters");
            }
            if k.sha256.len() != 64 || !k.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return bad(
                    &format!("api_keys[{i}].sha256"),
                    "must be 64 hex digits (the SHA-256 of the key; `marina keys new` prints it)",
                );
            }
            if !digests.insert(k.sha256.to_ascii_lowercase()) {
                return bad(&format!("api_keys[{i}]"), "the same key is configured twice");
            }
        }
        Ok(())
    }
}

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The layered sources did not form valid settings.
    #[error("invalid configuration: {0}")]
    Config(#[from] config::ConfigError),
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Load settings. `env` is the environment to read `MARINA__*` from (tests pass their own map so
/// they never mutate the process environment); `overrides` are flag values as `section.key`.
pub fn load(
    file: Option<&Path>,
    env: Option<HashMap<String, String>>,
    overrides: &[(&str, String)],
) -> Result<Settings, SettingsError> {
    let mut b = Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
    if let Some(path) = file {
        b = b.add_source(File::from(path).required(true));
    }
    let mut env_src = Environment::with_prefix("MARINA")
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true);
    if let Some(map) = env {
        env_src = env_src.source(Some(map));
    }
    b = b.add_source(env_src);
    for (k, v) in overrides {
        b = b.set_override(*k, v.clone())?;
    }
    let built = b.build()?;
    let docs: BTreeMap<String, serde_json::Value> = built.get("tenants").unwrap_or_default();
    let mut s: Settings = built.try_deserialize()?;
    s.tenant_docs = docs;
    if s.tenants.is_empty() {
        s.tenants.insert(
            "demo".into(),
            TenantSettings {
                upstreams: default_upstreams(),
                embedded_default: true,
                validate_arguments: true,
                ..Default::default()
            },
        );
    }
    s.validate()?;
    Ok(s)
}

impl Settings {
    fn validate(&self) -> Result<(), SettingsError> {
        let bad = |m: &str| Err(SettingsError::Invalid(m.to_owned()));
        if self.server.bind.parse::<SocketAddr>().is_err() {
            return bad("server.bind must be ADDR:PORT, e.g. 127.0.0.1:8080");
        }
        if self.server.tls.cert_file.is_empty() != self.server.tls.key_file.is_empty() {
            return bad("server.tls.cert_file and server.tls.key_file go together");
        }
        if self.sessions.lease_ttl_ms < 500 {
            return bad("sessions.lease_ttl_ms must be at least 500");
        }
        if self.sessions.idle_ttl_secs == 0 || self.sessions.max_lifetime_secs == 0 {
            return bad("sessions.idle_ttl_secs and sessions.max_lifetime_secs must be positive");
        }
        if self.sessions.page_size == 0 || self.sessions.max_events_per_stream == 0 {
            return bad("sessions.page_size and sessions.max_events_per_stream must be positive");
        }
        for (id, t) in &self.tenants {
            t.validate()
                .map_err(|(f, d)| SettingsError::Invalid(format!("tenants.{id}.{f}: {d}")))?;
        }
        if self.tenants.keys().any(|id| !valid_tenant_id(id)) {
            return bad("tenant ids are 1-64 characters of A-Z a-z 0-9 - _");
        }
        if !self.admin.bind.is_empty() && self.admin.bind.parse::<SocketAddr>().is_err() {
            return bad("admin.bind must be ADDR:PORT (e.g. 127.0.0.1:9090), or empty for none");
        }
        for (i, k) in self.admin.api_keys.iter().enumerate() {
            if k.subject.trim().is_empty()
                || k.sha256.len() != 64
                || !k.sha256.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return Err(SettingsError::Invalid(format!(
                    "admin.api_keys[{i}] needs a subject and the 64-hex-digit SHA-256 of the key"
                )));
            }
        }
        if !(0.0..=1.0).contains(&self.telemetry.sampling_ratio) {
            return bad("telemetry.sampling_ratio must be between 0 and 1");
        }
        if let Some(e) = &self.telemetry.otlp_endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return bad("telemetry.otlp_endpoint must be an http(s) URL, e.g. http://collector:4318");
        }
        if self.admin.poll_ms == 0
            || self.admin.max_tenants == 0
            || self.admin.audit_max_entries == 0
            || self.admin.audit_retention_days == 0
            || self.admin.key_usage_flush_ms == 0
        {
            return bad(
                "admin.poll_ms, max_tenants, audit_max_entries, audit_retention_days and key_usage_flush_ms must be positive",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_give_demo_tenant_and_local_bind() {
        let s = load(None, Some(HashMap::new()), &[]).unwrap();
        assert_eq!(s.server.bind, "127.0.0.1:8080");
        assert!(s.store.redis_url.is_empty());
        assert!(s.tenants.contains_key("demo"));
    }

    #[test]
    fn layers_file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("m.yaml");
        std::fs::write(
            &f,
            "server:\n  bind: 127.0.0.1:9000\n  node_id: file\nsessions:\n  retry_ms: 7\ntenants:\n  acme:\n    allowed_origins: [\"https://a.example\"]\n",
        )
        .unwrap();
        let env = HashMap::from([
            ("MARINA__SERVER__NODE_ID".to_owned(), "env".to_owned()),
            ("MARINA__SESSIONS__LEASE_TTL_MS".to_owned(), "2500".to_owned()),
        ]);
        let s = load(Some(&f), Some(env), &[("server.bind", "127.0.0.1:9001".into())]).unwrap();
        assert_eq!(s.server.bind, "127.0.0.1:9001");
        assert_eq!(s.server.node_id, "env");
        assert_eq!(s.sessions.lease_ttl_ms, 2500);
        assert_eq!(s.sessions.retry_ms, 7);
        assert!(!s.tenants.contains_key("demo"));
        assert_eq!(s.tenants["acme"].allowed_origins, vec!["https://a.example"]);
        assert_eq!(s.tenants["acme"].upstreams.len(), 1);
    }

    #[test]
    fn typos_and_bad_values_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("m.toml");
        std::fs::write(&f, "[sessions]\nidle_ttl = 3\n").unwrap();
        assert!(load(Some(&f), Some(HashMap::new()), &[]).is_err());
        assert!(load(None, Some(HashMap::new()), &[("server.bind", "nope".into())]).is_err());
    }

    #[test]
    fn telemetry_is_off_by_default_and_checked() {
        let s = load(None, Some(HashMap::new()), &[]).unwrap();
        assert_eq!(s.telemetry.otlp_endpoint, None);
        assert!(s.telemetry.metrics);
        assert_eq!(s.telemetry.sampling_ratio, 1.0);
        assert_eq!(s.telemetry.client_context, ClientContext::Parent);
        let env = HashMap::from([
            (
                "MARINA__TELEMETRY__OTLP_ENDPOINT".to_owned(),
                "http://127.0.0.1:4318".to_owned(),
            ),
            ("MARINA__TELEMETRY__CLIENT_CONTEXT".to_owned(), "link".to_owned()),
            ("MARINA__TELEMETRY__SAMPLING_RATIO".to_owned(), "0.25".to_owned()),
        ]);
        let s = load(None, Some(env), &[]).unwrap();
        assert_eq!(
            s.telemetry.otlp_endpoint.as_deref(),
            Some("http://127.0.0.1:4318")
        );
        assert_eq!(s.telemetry.client_context, ClientContext::Link);
        assert_eq!(s.telemetry.sampling_ratio, 0.25);
        for (k, v) in [
            ("telemetry.sampling_ratio", "1.5"),
            ("telemetry.client_context", "child"),
            ("telemetry.otlp_endpoint", "collector:4318"),
            ("telemetry.endpoint", "http://x"),
        ] {
            assert!(
                load(None, Some(HashMap::new()), &[(k, v.into())]).is_err(),
                "{k}={v}"
            );
        }
    }
}

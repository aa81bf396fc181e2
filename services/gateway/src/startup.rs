//! Building the application: store, tenants, node, HTTP server — bound, but not yet running — and
//! running it until a shutdown signal, then draining.

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::HttpMessage as _;
use actix_web::dev::{Service as _, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context as _;
use marina_actors::{Node, NodeConfig};
use marina_control::{
    AuditLog, KeyUsage, MemoryAudit, MemoryDocs, MemoryReports, MemoryUsage, RedisAudit, RedisDocs,
    RedisReports, RedisUsage, TenantDocs, UpstreamReports,
};
use marina_core::caps::Caps;
use marina_core::settings::Settings;
use marina_core::store::{MemoryStore, MeteredStore, RedisStore, SessionStore};
use marina_limits::{MemoryLimiter, RateLimiter, RedisLimiter};
use rand::RngExt as _;
use tracing::Instrument as _;

use crate::routes::{health, mcp, well_known};
use crate::state::AppState;
use crate::upstream;

/// Pause before the next announcement after a failed one.
const HEARTBEAT_RETRY: Duration = Duration::from_millis(200);
/// How often what this node saw of upstreams is flushed to the cluster.
const UPSTREAM_REPORTS: Duration = Duration::from_secs(1);

/// The configuration cannot be served (invalid upstreams, store URL): the process should exit with
/// status 64 before binding anything.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0:#}")]
pub struct ConfigError(anyhow::Error);

/// A built, bound application.
pub struct Application {
    server: actix_web::dev::Server,
    admin: Option<(actix_web::dev::Server, std::net::SocketAddr)>,
    tenants: Arc<crate::tenants::Registry>,
    docs: Arc<dyn TenantDocs>,
    usage: Arc<dyn KeyUsage>,
    reports: Arc<dyn UpstreamReports>,
    health: Arc<crate::upstream::health::HealthBook>,
    node: Arc<Node>,
    /// Stateless calls parked here, waiting for their clients (drained like sessions' calls).
    parked: Arc<crate::modern::park::ParkedCalls>,
    url: String,
    settings: Arc<Settings>,
    local_addr: std::net::SocketAddr,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// What the node keeps in the shared store: all in Redis (shared by the cluster), or all in this
/// process (one node).
struct Backends {
    store: Arc<dyn SessionStore>,
    limiter: Arc<dyn RateLimiter>,
    caps: Arc<dyn Caps>,
    docs: Arc<dyn TenantDocs>,
    audit: Arc<dyn AuditLog>,
    usage: Arc<dyn KeyUsage>,
    reports: Arc<dyn UpstreamReports>,
}

fn build_store(settings: &Settings) -> anyhow::Result<Backends> {
    let s = &settings.store;
    let max_tenants = settings.admin.max_tenants;
    let (audit_max, retention) = (
        settings.admin.audit_max_entries,
        Duration::from_secs(settings.admin.audit_retention_days * 86_400),
    );
    if s.redis_url.is_empty() {
        let limits = Arc::new(MemoryLimiter::default());
        return Ok(Backends {
            store: Arc::new(MeteredStore::new(Arc::new(MemoryStore::new()), "memory")),
            limiter: limits.clone(),
            caps: limits,
            docs: Arc::new(MemoryDocs::new(max_tenants)),
            audit: Arc::new(MemoryAudit::new(audit_max, retention)),
            usage: Arc::new(MemoryUsage::default()),
            reports: Arc::new(MemoryReports::default()),
        });
    }
    let store = Arc::new(
        RedisStore::new(&s.redis_url, &s.key_prefix, Duration::from_millis(s.timeout_ms))
            .context("invalid store.redis_url")?,
    );
    let limits = Arc::new(RedisLimiter::new(store.clone()));
    Ok(Backends {
        limiter: limits.clone(),
        caps: limits,
        docs: Arc::new(RedisDocs::new(store.clone(), max_tenants)),
        audit: Arc::new(RedisAudit::new(store.clone(), audit_max, retention)),
        usage: Arc::new(RedisUsage::new(store.clone(), retention)),
        reports: Arc::new(RedisReports::new(store.clone())),
        store: Arc::new(MeteredStore::new(store, "redis")),
    })
}

/// The egress client every upstream (and OAuth issuer) of this node shares.
fn build_egress(settings: &Settings) -> anyhow::Result<upstream::Upstreams> {
    let policy = upstream::egress::Policy::new(&settings.egress);
    Ok(upstream::Upstreams {
        policy,
        client: upstream::egress::client(policy).context("cannot build the upstream HTTP client")?,
        transport: upstream::transport::Transport::new(policy)
            .map_err(|e| anyhow::anyhow!("cannot build the upstream HTTP client: {e}"))?,
        health: Default::default(),
    })
}

/// rustls' server configuration when `server.tls` names a certificate and a key.
fn tls_config(s: &marina_core::settings::TlsSettings) -> anyhow::Result<Option<rustls::ServerConfig>> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    if !s.enabled() {
        return Ok(None);
    }
    let certs = CertificateDer::pem_file_iter(&s.cert_file)
        .with_context(|| format!("cannot read server.tls.cert_file {}", s.cert_file))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| {
            format!(
                "server.tls.cert_file {} is not a PEM certificate chain",
                s.cert_file
            )
        })?;
    anyhow::ensure!(
        !certs.is_empty(),
        "server.tls.cert_file {} holds no certificate",
        s.cert_file
    );
    let key = PrivateKeyDer::from_pem_file(&s.key_file)
        .with_context(|| format!("server.tls.key_file {} holds no PEM private key", s.key_file))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("server.tls: the key does not match the certificate")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(config))
}

/// The cluster secret (`cluster.secret_file` wins over `cluster.secret`). Nodes sharing Redis on
/// a non-loopback bind must have one: without it any client could pose as a forwarding peer.
fn cluster_secret(settings: &Settings) -> anyhow::Result<Option<String>> {
    let c = &settings.cluster;
    let secret = if c.secret_file.is_empty() {
        c.secret.trim().to_owned()
    } else {
        std::fs::read_to_string(&c.secret_file)
            .with_context(|| format!("cannot read cluster.secret_file {}", c.secret_file))?
            .trim()
            .to_owned()
    };
    let loopback = settings
        .server
        .bind
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback());
    anyhow::ensure!(
        !secret.is_empty() || settings.store.redis_url.is_empty() || loopback,
        "nodes sharing Redis on a non-loopback bind need cluster.secret or cluster.secret_file \
         (it authenticates the requests they forward to each other)"
    );
    anyhow::ensure!(
        secret.is_empty() || secret.len() >= 16,
        "cluster.secret must be at least 16 characters"
    );
    Ok((!secret.is_empty()).then_some(secret))
}

/// `http_route` of a request on the public listener: the pattern it matched, from the fixed
/// route table, or `_OTHER` (no route: unknown paths never become label values).
fn http_route(pattern: Option<&str>) -> &'static str {
    const ROUTES: &[&str] = &[
        "/t/{tenant}/mcp",
        "/.well-known/oauth-protected-resource/t/{tenant}/mcp",
        "/healthz",
        "/readyz",
    ];
    pattern
        .and_then(|p| ROUTES.iter().find(|r| **r == p).copied())
        .unwrap_or(marina_telemetry::OTHER)
}

/// A configured tenant without an `auth` section lets anyone who reaches the node in: allowed
/// on a loopback bind (development, with a warning), refused on any other. The embedded default
/// tenant (no tenant configured) stays open.
pub fn check_open_tenants(settings: &Settings) -> anyhow::Result<()> {
    let loopback = settings
        .server
        .bind
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback());
    for (id, t) in &settings.tenants {
        if t.auth.is_some() || t.embedded_default {
            continue;
        }
        anyhow::ensure!(
            loopback,
            "tenant {id} has no `auth` section, so anyone could use it; on a non-loopback bind every \
             tenant needs one (api_keys, or `anonymous: true` to serve it openly on purpose)"
        );
        tracing::warn!(tenant = %id, "tenant has no `auth` section: served without authentication (loopback only)");
    }
    Ok(())
}

/// The node's name: `server.node_id`, else derived from the host name and the bound `port`.
pub fn node_name(settings: &Settings, port: u16) -> String {
    if settings.server.node_id.is_empty() {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "marina".into());
        format!("{host}-{port}")
    } else {
        settings.server.node_id.clone()
    }
}

impl Application {
    /// Build everything and bind the listener (port 0 picks a free port).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with(settings, |_| {}).await
    }

    /// [`Self::build`], calling `bound` with the node's id as soon as it is known — the listener
    /// bound, nothing served yet (the binary starts its traces there, `service.instance.id`
    /// being the node's id).
    pub async fn build_with(settings: Settings, bound: impl FnOnce(&str)) -> anyhow::Result<Self> {
        let settings = Arc::new(settings);
        let Backends {
            store,
            limiter,
            caps,
            docs,
            audit,
            usage,
            reports,
        } = build_store(&settings).map_err(ConfigError)?;
        let egress = build_egress(&settings).map_err(ConfigError)?;
        check_open_tenants(&settings).map_err(ConfigError)?;
        let cluster_secret = cluster_secret(&settings).map_err(ConfigError)?;
        let listener = TcpListener::bind(&settings.server.bind)
            .with_context(|| format!("cannot bind {}", settings.server.bind))?;
        let local_addr = listener.local_addr()?;
        let node_id = node_name(&settings, local_addr.port());
        bound(&node_id);
        let nonce: u32 = rand::rng().random();
        let instance = format!("{node_id}/{nonce:08x}");
        let tls = tls_config(&settings.server.tls).map_err(ConfigError)?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = if settings.server.advertise_url.is_empty() {
            format!("{scheme}://{local_addr}")
        } else {
            settings.server.advertise_url.clone()
        };
        let public_url = if settings.server.public_url.is_empty() {
            format!("{scheme}://{local_addr}")
        } else {
            settings.server.public_url.clone()
        };
        let auth = Arc::new(crate::authn::Authenticators::default());
        let node = Node::new(
            store,
            NodeConfig {
                instance,
                sessions: settings.sessions.clone(),
                caps: Some(caps.clone()),
            },
            Vec::new(),
        );
        let loopback = local_addr.ip().is_loopback();
        let builder = crate::tenants::Builder::new(egress.clone(), &public_url, loopback);
        let tenants = Arc::new(
            crate::tenants::Registry::new(&settings, builder, node.clone(), auth.clone())
                .await
                .map_err(ConfigError)?,
        );
        if let Err(e) = tenants.sync(docs.as_ref()).await {
            tracing::warn!(error = %e, "stored tenants cannot be read at start; will keep retrying");
        }
        let admin = match settings.admin.bind.as_str() {
            "" => None,
            bind => {
                let admin_auth = crate::admin::AdminAuth::new(
                    &settings,
                    Arc::new(crate::authn::IssuerFetch(egress.clone())),
                )
                .map_err(ConfigError)?;
                let l = TcpListener::bind(bind).with_context(|| format!("cannot bind admin.bind {bind}"))?;
                let addr = l.local_addr()?;
                let state = crate::admin::AdminState {
                    auth: Arc::new(admin_auth),
                    tenants: tenants.clone(),
                    docs: docs.clone(),
                    audit,
                    usage: usage.clone(),
                    node: node.clone(),
                    reports: reports.clone(),
                    health: egress.health.clone(),
                    store: if settings.store.redis_url.is_empty() {
                        tracing::warn!(
                            "admin API on the in-memory store: tenants written through it are served by this node alone and lost when it stops (set store.redis_url for a cluster)"
                        );
                        "memory"
                    } else {
                        "redis"
                    },
                };
                tracing::info!(%addr, "admin API listening");
                Some((crate::admin::server(state, l)?, addr))
            }
        };
        if let Err(e) = node.heartbeat(&url).await {
            tracing::warn!(error = %e, "session store unavailable at start; will keep retrying");
        }
        let state_ttl = Duration::from_millis(settings.server.request_state_ttl_ms);
        let sealer = match crate::modern::mrtr::Sealer::for_cluster(
            cluster_secret.as_deref(),
            node.store.as_ref(),
            state_ttl,
        )
        .await
        {
            Ok(s) => s,
            Err(e) => {
                // The store is down at start: states sealed here open on this node only until
                // it restarts. (Set cluster.secret to never depend on the store for this.)
                tracing::warn!(error = %e, "cluster key for request states unavailable; using a node-local one");
                let local: [u8; 32] = rand::rng().random();
                crate::modern::mrtr::Sealer::new(&local, state_ttl)
            }
        };
        let peer_ca = &settings.server.tls.peer_ca_file;
        let peer_certs = if peer_ca.is_empty() {
            Vec::new()
        } else {
            let pem = std::fs::read(peer_ca)
                .with_context(|| format!("cannot read server.tls.peer_ca_file {peer_ca}"))
                .map_err(ConfigError)?;
            reqwest::Certificate::from_pem_bundle(&pem)
                .context("server.tls.peer_ca_file holds no PEM certificate")
                .map_err(ConfigError)?
        };
        let peer_client = |pooled: bool| {
            let mut http = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(1))
                .tcp_nodelay(true);
            if !pooled {
                http = http.pool_max_idle_per_host(0);
            }
            for cert in &peer_certs {
                http = http.add_root_certificate(cert.clone());
            }
            http.build().context("cannot build the HTTP client")
        };
        let http = peer_client(true)?;
        let handoff = peer_client(false)?;
        let hsts = tls.is_some();
        let parked: Arc<crate::modern::park::ParkedCalls> = Arc::default();
        let indexes: Arc<crate::modern::cache::IndexCache> = Arc::default();
        let state = AppState {
            node: node.clone(),
            http,
            handoff,
            auth,
            limiter,
            caps,
            buckets: Arc::default(),
            cluster: crate::cluster::ClusterKey::new(cluster_secret.as_deref()),
            stateless_era: settings.server.stateless_era,
            sealer: Arc::new(sealer),
            parked: parked.clone(),
            watchers: Arc::new(crate::modern::watch::Watchers::new(indexes.clone())),
            indexes,
            upstream_sessions: Arc::default(),
        };
        let workers = match settings.server.workers {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        };
        marina_telemetry::metrics().set_max_open_streams(settings.server.max_open_streams);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(state.clone()))
                .wrap_fn(move |req, srv| {
                    let request_id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .filter(|v| {
                            !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic())
                        })
                        .map(str::to_owned)
                        .unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()));
                    let tenant = req
                        .path()
                        .strip_prefix("/t/")
                        .and_then(|r| r.split('/').next())
                        .unwrap_or("")
                        .to_owned();
                    // The tenant's view of the connection (trusted proxies) and the CORS grant
                    // its allowed origins give this request.
                    let settings = req
                        .app_data::<web::Data<AppState>>()
                        .and_then(|s| s.node.tenant(&tenant));
                    let seen = settings
                        .as_ref()
                        .map(|t| crate::proxy::seen(req.request(), &t.settings));
                    let client_ip = seen
                        .as_ref()
                        .map_or_else(|| req.peer_addr().map(|a| a.ip()), |s| s.client_ip);
                    if let Some(seen) = seen {
                        // The Host/Origin step reads it instead of working it out again.
                        req.extensions_mut().insert(seen);
                    }
                    let cors_origin = settings
                        .as_ref()
                        .and_then(|t| crate::origin::allowed_origin(req.request(), &t.settings))
                        .map(str::to_owned);
                    let span = tracing::info_span!(
                        "request",
                        request_id = %request_id,
                        method = %req.method(),
                        path = %req.path(),
                        tenant = %tenant,
                        client_ip = %client_ip.map(|i| i.to_string()).unwrap_or_default(),
                        session = tracing::field::Empty,
                        // Set when the request's MCP operation is traced and sampled (observe.rs).
                        trace_id = tracing::field::Empty,
                        span_id = tracing::field::Empty,
                    );
                    let started = std::time::Instant::now();
                    let mcp = req.path().starts_with("/t/");
                    let hsts = hsts;
                    req.extensions_mut()
                        .insert(crate::state::RequestId(request_id.clone()));
                    let fut = srv.call(req);
                    async move {
                        let mut res: ServiceResponse = fut.await?;
                        marina_telemetry::metrics().http_request(
                            http_route(res.request().match_pattern().as_deref()),
                            res.request().method().as_str(),
                            res.status().as_u16(),
                            started.elapsed(),
                        );
                        // The access log has its own target so operators can turn it off
                        // (`log_filter = "info,marina::access=off"`) without losing other logs.
                        tracing::info!(
                            target: "marina::access",
                            status = res.status().as_u16(),
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            elapsed_us = started.elapsed().as_micros() as u64,
                            "request done"
                        );
                        if let Ok(v) = HeaderValue::from_str(&request_id) {
                            res.headers_mut()
                                .insert(HeaderName::from_static("x-request-id"), v);
                        }
                        if hsts {
                            res.headers_mut().insert(
                                HeaderName::from_static("strict-transport-security"),
                                HeaderValue::from_static("max-age=31536000"),
                            );
                        }
                        if mcp {
                            // MCP answers carry session data: never sniffed, never cached.
                            let h = res.headers_mut();
                            if let Some(origin) = &cors_origin
                                && !h.contains_key("access-control-allow-origin")
                            {
                                crate::cors::grant(h, origin);
                            }
                            h.insert(
                                HeaderName::from_static("x-content-type-options"),
                                HeaderValue::from_static("nosniff"),
                            );
                            h.insert(
                                actix_web::http::header::CACHE_CONTROL,
                                HeaderValue::from_static("no-store"),
                            );
                        }
                        Ok(res)
                    }
                    .instrument(span)
                })
                .service(
                    web::resource("/t/{tenant}/mcp")
                        .route(web::post().to(mcp::post))
                        .route(web::get().to(mcp::get))
                        .route(web::delete().to(mcp::delete))
                        .route(web::method(actix_web::http::Method::OPTIONS).to(mcp::options))
                        .default_service(web::to(|| async {
                            HttpResponse::MethodNotAllowed()
                                .insert_header(("Allow", "GET, POST, DELETE, OPTIONS"))
                                .json(
                                    marina_core::protocol::RpcError::new(
                                        marina_core::protocol::code::INVALID_REQUEST,
                                        "method not allowed",
                                    )
                                    .to_response(None),
                                )
                        })),
                )
                .route(
                    "/.well-known/oauth-protected-resource/t/{tenant}/mcp",
                    web::get().to(well_known::protected_resource),
                )
                .route("/healthz", web::get().to(health::healthz))
                .route("/readyz", web::get().to(health::readyz))
                .default_service(web::to(|| async {
                    HttpResponse::NotFound().json(serde_json::json!({"error": "not found"}))
                }))
        })
        // SSE responses are written as several small chunks; without TCP_NODELAY, Nagle's
        // algorithm and delayed ACKs hold each one back ~40 ms.
        .on_connect(|conn, _ext| {
            if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
                let _ = tcp.set_nodelay(true);
            }
        })
        .workers(workers)
        .disable_signals()
        .shutdown_timeout(2);
        let server = match tls {
            Some(config) => server.listen_rustls_0_23(listener, config)?,
            None => server.listen(listener)?,
        }
        .run();
        Ok(Self {
            server,
            admin,
            tenants,
            docs,
            usage,
            reports,
            health: egress.health.clone(),
            node,
            parked,
            url,
            settings,
            local_addr,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    /// Base URL (`http://addr:port`, or `https://` when Marina serves TLS).
    pub fn base_url(&self) -> String {
        let scheme = if self.settings.server.tls.enabled() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.local_addr)
    }

    /// MCP endpoint URLs, one per tenant.
    pub fn endpoints(&self) -> Vec<(String, String)> {
        self.settings
            .tenants
            .keys()
            .map(|t| (t.clone(), format!("{}/t/{t}/mcp", self.base_url())))
            .collect()
    }

    /// The admin API's bound address, if this node serves it.
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin.as_ref().map(|(_, a)| *a)
    }

    /// This node.
    pub fn node(&self) -> Arc<Node> {
        self.node.clone()
    }

    /// Serve until `shutdown` resolves, then shut down gracefully (see
    /// [`Self::run_until_signalled`]; nothing cuts the shutdown delay short).
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        self.run_until_signalled(shutdown, std::future::pending()).await
    }

    /// Serve until `shutdown` resolves (the first SIGTERM/SIGINT), then: readiness turns 503 at
    /// once and the directory tells peers to hand this node no new work, while it still serves
    /// everything for `server.shutdown_delay_ms` (or until `hurry` resolves — the second signal)
    /// so balancers deregister it first; then it drains: streams close with a retry hint,
    /// in-flight calls finish (bounded by `server.drain_timeout_ms`), work that would need a
    /// new lease is handed to a live peer, leases are released, and the listener stops.
    pub async fn run_until_signalled(
        self,
        shutdown: impl Future<Output = ()>,
        hurry: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let server = actix_rt::spawn(self.server);
        let admin = self.admin.map(|(s, _)| (s.handle(), actix_rt::spawn(s)));
        let follow = actix_rt::spawn(self.tenants.clone().follow(
            self.docs.clone(),
            Duration::from_millis(self.settings.admin.poll_ms),
        ));
        let (tenants, usage) = (self.tenants.clone(), self.usage.clone());
        let every = Duration::from_millis(self.settings.admin.key_usage_flush_ms);
        let flush = actix_rt::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                tenants.flush_key_usage(usage.as_ref()).await;
            }
        });
        let ended = actix_rt::spawn(self.node.clone().follow_ended());
        let (health, reports, tenants) = (self.health.clone(), self.reports.clone(), self.tenants.clone());
        let node_id = crate::admin::node_id(&self.node.config.instance).to_owned();
        let upstream_reports = actix_rt::spawn(async move {
            loop {
                tokio::time::sleep(UPSTREAM_REPORTS).await;
                let served = |t: &str| tenants.get(t).is_some();
                if let Err(e) = health.flush(&node_id, reports.as_ref(), served).await {
                    tracing::debug!(error = %e, "upstream reports not flushed; retrying");
                }
            }
        });
        let (node, url) = (self.node.clone(), self.url.clone());
        let heartbeat = actix_rt::spawn(async move {
            // Every third of the lease TTL: the node's liveness is what keeps its leases valid.
            // After a failure, retry sooner: a node whose liveness lapsed serves nothing until an
            // announcement succeeds, so it should notice the store's return quickly.
            let period = node.sessions().lease_ttl() / 3;
            loop {
                let pause = match node.heartbeat(&url).await {
                    Ok(()) => period,
                    Err(e) => {
                        tracing::debug!(error = %e, "heartbeat failed");
                        period.min(HEARTBEAT_RETRY)
                    }
                };
                tokio::time::sleep(pause).await;
            }
        });
        shutdown.await;
        let delay = Duration::from_millis(self.settings.server.shutdown_delay_ms);
        tracing::info!(
            delay_ms = delay.as_millis() as u64,
            "shutdown requested; not ready, still serving for the shutdown delay"
        );
        self.node.leave(&self.url).await;
        if !delay.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = hurry => tracing::info!("second signal: the rest of the shutdown delay skipped"),
            }
        }
        tracing::info!("draining");
        // Calls parked here wait for their clients' answers, which peers forward here while the
        // node drains; within the same budget as the sessions' calls.
        let parked = self.parked.clone();
        let parked_done = async move {
            while !parked.is_empty() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        self.node
            .drain_with(
                Duration::from_millis(self.settings.server.drain_timeout_ms),
                parked_done,
            )
            .await;
        heartbeat.abort();
        follow.abort();
        flush.abort();
        ended.abort();
        upstream_reports.abort();
        self.tenants.flush_key_usage(self.usage.as_ref()).await;
        let _ = self.node.store.unregister_node(&self.node.config.instance).await;
        if let Some((h, s)) = admin {
            h.stop(true).await;
            let _ = s.await;
        }
        handle.stop(true).await;
        let _ = server.await;
        tracing::info!("stopped");
        Ok(())
    }
}

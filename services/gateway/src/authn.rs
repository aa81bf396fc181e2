//! The authentication step of the request path: the request's credentials become the caller's
//! principal for the tenant it addresses, or a 401 with a `WWW-Authenticate` challenge. Every
//! failure is one audit event (`event = "auth_failed"`, a stable `reason`) — never the
//! credential itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpMessage as _, HttpRequest};
use futures_util::StreamExt as _;
use marina_auth::{Credentials, Fetch, Principal, TenantAuth};
use marina_core::access::Access;
use marina_core::domain::Owner;

use crate::reply::Refusal;
use crate::upstream::{Upstreams, egress};

/// Largest issuer metadata or JWKS document accepted.
const MAX_ISSUER_DOCUMENT: usize = 1024 * 1024;
/// Whole-request timeout towards an issuer.
const ISSUER_TIMEOUT: Duration = Duration::from_secs(5);

/// Reaches OAuth issuers with the upstreams' egress client: the same SSRF guard (an issuer on a
/// private or loopback address needs `egress.allow_private` / `allow_loopback`), no redirects,
/// bounded size and time.
#[derive(Debug)]
pub struct IssuerFetch(pub Upstreams);

#[async_trait::async_trait]
impl Fetch for IssuerFetch {
    async fn get_json(&self, url: &str) -> Result<serde_json::Value, String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("invalid URL: {e}"))?;
        egress::check_url(&self.0.policy, &url)?;
        let resp = self
            .0
            .client
            .get(url)
            .header("accept", "application/json")
            .timeout(ISSUER_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("status {}", resp.status()));
        }
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| format!("read failed: {e}"))?;
            if body.len() + chunk.len() > MAX_ISSUER_DOCUMENT {
                return Err("document too large".into());
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))
    }
}

/// Every tenant's authentication, by tenant id, replaced whole when the control plane changes a
/// tenant (see `tenants.rs`).
#[derive(Debug, Default)]
pub struct Authenticators(arc_swap::ArcSwap<HashMap<String, Arc<TenantAuth>>>);

impl Authenticators {
    /// Tenant `id`'s authentication.
    pub fn tenant(&self, id: &str) -> Option<Arc<TenantAuth>> {
        self.0.load().get(id).cloned()
    }

    /// Authenticate with these from now on.
    pub fn set(&self, tenants: HashMap<String, Arc<TenantAuth>>) {
        self.0.store(Arc::new(tenants));
    }
}

/// Who is calling, for one request.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// `None` on a tenant without authentication.
    pub principal: Option<std::sync::Arc<Principal>>,
    /// The request's id, for audit events.
    pub request_id: String,
}

impl Caller {
    /// What a session of this caller is bound to.
    pub fn owner(&self) -> Option<Owner> {
        self.principal.as_ref().map(|p| p.owner.clone())
    }

    /// What the tenant's policy is asked about: the principal's subject and credential roles
    /// (`anonymous` on a tenant without authentication).
    pub fn access(&self) -> Access {
        match &self.principal {
            Some(p) => Access::new(p.owner.subject.clone(), p.roles.clone()),
            None => Access::new(marina_auth::ANONYMOUS, vec![marina_auth::ANONYMOUS.to_owned()]),
        }
    }
}

/// Names of query parameters that carry a credential (RFC 6750 §2.3 and the API-key habit).
const QUERY_CREDENTIALS: [&str; 3] = ["access_token", "api_key", "apikey"];

fn credentials(req: &HttpRequest) -> Credentials<'_> {
    // UTF-8 validation is vectorized, where `HeaderValue::to_str` checks byte by byte: a JWT
    // in a header is long. Anything odd in it fails the credential's own parsing.
    let header = |name: &str| {
        req.headers()
            .get(name)
            .map(|v| std::str::from_utf8(v.as_bytes()).unwrap_or("\u{fffd}"))
    };
    Credentials {
        authorization: header("authorization"),
        api_key: header("x-api-key"),
        in_query: url::form_urlencoded::parse(req.query_string().as_bytes())
            .any(|(k, _)| QUERY_CREDENTIALS.iter().any(|q| k.eq_ignore_ascii_case(q))),
    }
}

/// Authenticate `req` for `tenant`.
pub async fn authenticate(auth: &Authenticators, req: &HttpRequest, tenant: &str) -> Result<Caller, Refusal> {
    let request_id = req
        .extensions()
        .get::<crate::state::RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let Some(ta) = auth.tenant(tenant) else {
        return Ok(Caller {
            principal: None,
            request_id,
        });
    };
    match ta.authenticate(&credentials(req)).await {
        Ok(principal) => Ok(Caller {
            principal,
            request_id,
        }),
        Err(e) => {
            marina_telemetry::metrics().auth_failure(tenant, failure_reason(&e));
            tracing::warn!(
                target: "marina::audit",
                event = "auth_failed",
                reason = e.reason(),
                tenant,
                request_id = %request_id,
                "authentication failed"
            );
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
            Err(Refusal::auth(status, e.description(), ta.challenge(&e)))
        }
    }
}

/// `reason` of `marina_auth_failures_total`: the audit reasons folded into the metric's fixed
/// set (docs/operations.md).
fn failure_reason(e: &marina_auth::AuthError) -> &'static str {
    use marina_auth::AuthError;
    match e {
        AuthError::Missing => "missing",
        AuthError::InvalidRequest(..) => "malformed",
        AuthError::InsufficientScope => "insufficient_scope",
        AuthError::Unavailable => "issuer_unavailable",
        AuthError::InvalidToken(reason, _) => match *reason {
            "unknown_key" | "unknown_credential" => "invalid_key",
            "expired" => "expired",
            "wrong_audience" => "audience",
            "wrong_issuer" => "issuer",
            "malformed" => "malformed",
            _ => "invalid_token",
        },
    }
}

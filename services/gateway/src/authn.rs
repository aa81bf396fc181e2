//! The authentication step of the request path: the request's credentials become the caller's
//! principal for the tenant it addresses, or a 401 with a `WWW-Authenticate` challenge. Every
//! failure is one audit event (`event = "auth_failed"`, a stable `reason`) — never the
//! credential itself.

use std::collections::HashMap;

use actix_web::HttpRequest;
use marina_auth::{Credentials, Principal, TenantAuth};
use marina_core::domain::Owner;
use marina_core::settings::Settings;

use crate::reply::Refusal;

/// Every tenant's authentication, by tenant id.
#[derive(Debug, Default)]
pub struct Authenticators(HashMap<String, TenantAuth>);

impl Authenticators {
    /// From the settings' tenants.
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        settings
            .tenants
            .iter()
            .map(|(id, t)| {
                let auth =
                    TenantAuth::new(t.auth.as_ref()).map_err(|e| anyhow::anyhow!("tenant {id}: {e}"))?;
                Ok((id.clone(), auth))
            })
            .collect::<anyhow::Result<_>>()
            .map(Self)
    }
}

/// Who is calling, for one request.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// `None` on a tenant without authentication.
    pub principal: Option<Principal>,
}

impl Caller {
    /// What a session of this caller is bound to.
    pub fn owner(&self) -> Option<Owner> {
        self.principal.as_ref().map(|p| p.owner.clone())
    }
}

/// Names of query parameters that carry a credential (RFC 6750 §2.3 and the API-key habit).
const QUERY_CREDENTIALS: [&str; 3] = ["access_token", "api_key", "apikey"];

fn credentials(req: &HttpRequest) -> Credentials<'_> {
    let header = |name: &str| req.headers().get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"));
    Credentials {
        authorization: header("authorization"),
        api_key: header("x-api-key"),
        in_query: url::form_urlencoded::parse(req.query_string().as_bytes())
            .any(|(k, _)| QUERY_CREDENTIALS.iter().any(|q| k.eq_ignore_ascii_case(q))),
    }
}

/// Authenticate `req` for `tenant`.
pub async fn authenticate(auth: &Authenticators, req: &HttpRequest, tenant: &str) -> Result<Caller, Refusal> {
    let Some(ta) = auth.0.get(tenant) else {
        return Ok(Caller::default());
    };
    match ta.authenticate(&credentials(req)).await {
        Ok(principal) => Ok(Caller { principal }),
        Err(e) => {
            tracing::warn!(
                target: "marina::audit",
                event = "auth_failed",
                reason = e.reason(),
                tenant,
                "authentication failed"
            );
            Err(Refusal::unauthorized(e.description(), ta.challenge(&e)))
        }
    }
}

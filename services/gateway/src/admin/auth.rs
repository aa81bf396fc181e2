//! Who may use the admin API. Platform administrators present an admin API key (`admin.api_keys`,
//! stored as SHA-256 digests like tenants' keys) as `Authorization: Bearer` or `X-API-Key`.
//! Without any admin credential configured, the API is open only on a loopback bind (a
//! development setup; the node warns at start) and the node refuses to start otherwise.
//!
//! Tenant administrators: a principal of tenant T — authenticated by T's own credentials (API key
//! or OAuth token, exactly as on T's MCP endpoint) — that holds T's `tenant-admin` role (from
//! its credential or through T's policy) may manage T, on the paths naming T. Credentials that
//! are not T's get 404 there, as if T did not exist (nothing tells one tenant about another); T's
//! principals without the role get 403.

use std::sync::Arc;

use actix_web::HttpRequest;
use actix_web::http::StatusCode;
use marina_auth::{Credentials, Endpoint, Fetch, TenantAuth};
use marina_core::access::Access;
use marina_core::settings::{ApiKeySettings, AuthSettings, Settings};

use super::problem::Problem;

/// The role every platform administrator holds.
pub const PLATFORM_ADMIN: &str = "platform-admin";

/// The scope an OAuth token must carry to administer the platform.
pub const ADMIN_SCOPE: &str = "marina:admin";

/// The role that makes a tenant's principal one of its administrators.
pub const TENANT_ADMIN: &str = "tenant-admin";

/// Who is calling the admin API.
#[derive(Debug, Clone)]
pub struct Admin {
    /// For the audit log (`<tenant>/<subject>` for a tenant administrator).
    pub subject: String,
    /// The tenant it administers; `None`: the whole platform.
    pub tenant: Option<String>,
}

impl Admin {
    /// Refuse a tenant administrator what only platform administrators may do.
    pub fn platform_only(&self, what: &str) -> Result<(), Problem> {
        match self.tenant {
            None => Ok(()),
            Some(_) => Err(Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("only platform administrators may {what}"),
            )),
        }
    }
}

fn credentials(req: &HttpRequest) -> Credentials<'_> {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    Credentials {
        authorization: header("authorization"),
        api_key: header("x-api-key"),
        in_query: false,
    }
}

/// The admin API's authentication.
#[derive(Debug)]
pub struct AdminAuth {
    /// `None`: open (loopback only, no admin credential configured).
    keys: Option<TenantAuth>,
}

impl AdminAuth {
    /// From `admin.api_keys` and `admin.oauth`; `Err` when the admin API would be open on a
    /// non-loopback bind, or `admin.oauth` names no audience of its own.
    pub fn new(settings: &Settings, fetch: Arc<dyn Fetch>) -> anyhow::Result<Self> {
        let a = &settings.admin;
        if a.api_keys.is_empty() && a.oauth.is_none() {
            let loopback = a
                .bind
                .parse::<std::net::SocketAddr>()
                .is_ok_and(|s| s.ip().is_loopback());
            anyhow::ensure!(
                loopback || a.bind.is_empty(),
                "admin.bind {} is not a loopback address, so admin.api_keys must name at least one key",
                a.bind
            );
            if !a.bind.is_empty() {
                tracing::warn!(bind = %a.bind, "admin API without admin.api_keys: open to anyone on this host");
            }
            return Ok(Self { keys: None });
        }
        let oauth = match &a.oauth {
            None => None,
            Some(o) => {
                let Some(audience) = o.audience.as_deref().filter(|a| !a.is_empty()) else {
                    anyhow::bail!(
                        "admin.oauth.audience must name the admin API's own audience (tokens for a tenant's endpoint never administer)"
                    );
                };
                anyhow::ensure!(
                    !audience.contains("/t/"),
                    "admin.oauth.audience {audience} looks like a tenant endpoint's; give the admin API an audience of its own"
                );
                let mut o = o.clone();
                if !o.required_scopes.iter().any(|s| s == ADMIN_SCOPE) {
                    o.required_scopes.push(ADMIN_SCOPE.to_owned());
                }
                Some(o)
            }
        };
        let auth = AuthSettings {
            oauth,
            api_keys: a
                .api_keys
                .iter()
                .map(|k| ApiKeySettings {
                    subject: k.subject.clone(),
                    sha256: k.sha256.clone(),
                    roles: vec![PLATFORM_ADMIN.to_owned()],
                    expires: None,
                })
                .collect(),
            anonymous: false,
        };
        let endpoint = Endpoint::new("http://admin.invalid", "admin");
        let keys =
            TenantAuth::new(Some(&auth), &endpoint, fetch).map_err(|e| anyhow::anyhow!("admin.{e}"))?;
        Ok(Self { keys: Some(keys) })
    }

    /// The platform administrator behind `req`, if it is one.
    async fn platform(&self, req: &HttpRequest) -> Option<Admin> {
        let Some(keys) = &self.keys else {
            return Some(Admin {
                subject: "local".into(),
                tenant: None,
            });
        };
        match keys.authenticate(&credentials(req)).await {
            // An admin key carries the role; a token the scope (checked again here although
            // the authenticator requires it: nothing else makes a platform administrator).
            Ok(Some(p))
                if p.roles.iter().any(|r| r == PLATFORM_ADMIN)
                    || (p.owner.issuer != "api-key" && p.scopes.iter().any(|s| s == ADMIN_SCOPE)) =>
            {
                Some(Admin {
                    subject: p.owner.subject.clone(),
                    tenant: None,
                })
            }
            _ => None,
        }
    }

    /// A platform administrator, or 401.
    pub async fn admin(&self, req: &HttpRequest) -> Result<Admin, Problem> {
        self.platform(req).await.ok_or_else(|| {
            tracing::warn!(target: "marina::audit", event = "auth_failed", reason = "admin", "admin API authentication failed");
            unauthorized()
        })
    }

    /// A platform administrator, or an administrator of tenant `id` (see the module's comment).
    pub async fn for_tenant(
        &self,
        req: &HttpRequest,
        tenants: &crate::tenants::Registry,
        id: &str,
    ) -> Result<Admin, Problem> {
        if let Some(a) = self.platform(req).await {
            return Ok(a);
        }
        let creds = credentials(req);
        if creds.authorization.is_none() && creds.api_key.is_none() {
            return Err(unauthorized());
        }
        let not_yours = || Problem::not_found(format!("no tenant {id}"));
        let served = tenants.get(id).ok_or_else(not_yours)?;
        let principal = match served.auth.authenticate(&creds).await {
            Ok(Some(p)) => p,
            _ => {
                tracing::warn!(target: "marina::audit", event = "auth_failed", reason = "admin", tenant = %id, "admin API authentication failed");
                return Err(not_yours());
            }
        };
        let who = Access::new(principal.owner.subject.clone(), principal.roles.clone());
        let holds = match &served.tenant.authorizer {
            Some(a) => a.holds_role(&who, TENANT_ADMIN),
            None => who.roles.iter().any(|r| r == TENANT_ADMIN),
        };
        if !holds {
            tracing::warn!(target: "marina::audit", event = "access_denied", reason = "not_tenant_admin", tenant = %id, subject = %who.subject, "admin API refused");
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("administering tenant {id} needs its {TENANT_ADMIN} role"),
            ));
        }
        Ok(Admin {
            subject: format!("{id}/{}", who.subject),
            tenant: Some(id.to_owned()),
        })
    }
}

fn unauthorized() -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "an admin API key is required (Authorization: Bearer <key> or X-API-Key), or a tenant administrator's credential on that tenant's paths",
    )
}

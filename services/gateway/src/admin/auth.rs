//! Who may use the admin API. Platform administrators present an admin API key (`admin.api_keys`,
//! stored as SHA-256 digests like tenants' keys) as `Authorization: Bearer` or `X-API-Key`.
//! Without any admin credential configured, the API is open only on a loopback bind (a
//! development setup; the node warns at start) and the node refuses to start otherwise.

use std::sync::Arc;

use actix_web::HttpRequest;
use actix_web::http::StatusCode;
use marina_auth::{Credentials, Endpoint, Fetch, TenantAuth};
use marina_core::settings::{ApiKeySettings, AuthSettings, Settings};

use super::problem::Problem;

/// The role every platform administrator holds.
pub const PLATFORM_ADMIN: &str = "platform-admin";

/// Who is calling the admin API.
#[derive(Debug, Clone)]
pub struct Admin {
    /// For the audit log.
    pub subject: String,
}

/// The admin API's authentication.
#[derive(Debug)]
pub struct AdminAuth {
    /// `None`: open (loopback only, no admin credential configured).
    keys: Option<TenantAuth>,
}

impl AdminAuth {
    /// From `admin.api_keys`; `Err` when the admin API would be open on a non-loopback bind.
    pub fn new(settings: &Settings, fetch: Arc<dyn Fetch>) -> anyhow::Result<Self> {
        let a = &settings.admin;
        if a.api_keys.is_empty() {
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
        let auth = AuthSettings {
            oauth: None,
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

    /// The administrator behind `req`, or 401.
    pub async fn admin(&self, req: &HttpRequest) -> Result<Admin, Problem> {
        let Some(keys) = &self.keys else {
            return Ok(Admin {
                subject: "local".into(),
            });
        };
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        let creds = Credentials {
            authorization: header("authorization"),
            api_key: header("x-api-key"),
            in_query: false,
        };
        match keys.authenticate(&creds).await {
            Ok(Some(p)) if p.roles.iter().any(|r| r == PLATFORM_ADMIN) => Ok(Admin {
                subject: p.owner.subject.clone(),
            }),
            Ok(_) | Err(_) => {
                tracing::warn!(target: "marina::audit", event = "auth_failed", reason = "admin", "admin API authentication failed");
                Err(Problem::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "an admin API key is required (Authorization: Bearer <key> or X-API-Key)",
                ))
            }
        }
    }
}

//! Authentication: what a request presents (its [`Credentials`]) becomes a [`Principal`] of the
//! tenant it addresses — or an [`AuthError`] that says, without revealing anything, why not.
//!
//! One [`TenantAuth`] per tenant, built from its `auth` settings. The HTTP layer extracts the
//! credentials and turns errors into 401 answers with a `WWW-Authenticate` challenge
//! ([`TenantAuth::challenge`]); nothing here knows about HTTP frameworks.

mod api_key;
mod oauth;
mod tokens;

use std::sync::Arc;
use std::time::SystemTime;

use marina_core::domain::Owner;
use marina_core::settings::AuthSettings;

pub use api_key::{KeyRing, digest, generate_key, key_id};
pub use oauth::{Fetch, OAuth, REFETCH_MIN};

/// Issuer of the principals authenticated by an API key.
pub const API_KEY_ISSUER: &str = "api-key";
/// Issuer, subject and role of requests without credentials on a tenant that allows them.
pub const ANONYMOUS: &str = "anonymous";

/// Who is calling, as far as one request's credential says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Issuer and subject: what a session is bound to.
    pub owner: Owner,
    /// Roles the credential carries (policies may add more through role links).
    pub roles: Vec<String>,
    /// OAuth scopes granted (empty for API keys).
    pub scopes: Vec<String>,
    /// When the credential stops being valid; streams opened with it end then.
    pub expires_at: Option<SystemTime>,
}

/// What a request presented, as the HTTP layer found it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    /// The `Authorization` header.
    pub authorization: Option<&'a str>,
    /// The `X-API-Key` header.
    pub api_key: Option<&'a str>,
    /// The query string carries a credential (`access_token=`, `api_key=`): refused, since URLs
    /// end up in logs and browser histories.
    pub in_query: bool,
}

/// Why a request is not authenticated. Every variant is answered 401; [`Self::reason`] is the
/// stable name audit events carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credential at all.
    #[error("authentication required")]
    Missing,
    /// The request is malformed as far as credentials go (query-string token, several
    /// credentials, a scheme other than Bearer).
    #[error("invalid request: {1}")]
    InvalidRequest(&'static str, &'static str),
    /// The credential is not valid (unknown, expired, …).
    #[error("invalid credential: {1}")]
    InvalidToken(&'static str, &'static str),
    /// A valid token without the tenant's required scopes (403).
    #[error("insufficient scope")]
    InsufficientScope,
    /// The credential cannot be checked now: the issuer's keys are unreachable (503).
    #[error("authentication unavailable")]
    Unavailable,
}

impl AuthError {
    /// Stable reason for audit events (`missing`, `unknown_key`, `expired`, …).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::InvalidRequest(r, _) | Self::InvalidToken(r, _) => r,
            Self::InsufficientScope => "insufficient_scope",
            Self::Unavailable => "issuer_unavailable",
        }
    }

    /// A short, safe description for the client.
    pub fn description(&self) -> &'static str {
        match self {
            Self::Missing => "authentication required",
            Self::InvalidRequest(_, d) | Self::InvalidToken(_, d) => d,
            Self::InsufficientScope => "the access token lacks a required scope",
            Self::Unavailable => "authentication is temporarily unavailable; retry",
        }
    }

    /// The HTTP status answering it.
    pub fn status(&self) -> u16 {
        match self {
            Self::InsufficientScope => 403,
            Self::Unavailable => 503,
            _ => 401,
        }
    }
}

/// One tenant's authentication.
#[derive(Debug)]
pub struct TenantAuth {
    /// `None`: the tenant authenticates nobody (development, or the embedded default tenant).
    config: Option<Config>,
}

#[derive(Debug)]
struct Config {
    keys: KeyRing,
    oauth: Option<OAuth>,
    anonymous: bool,
}

/// Where a tenant is reached, for its OAuth audience and metadata URL.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `<public_url>/t/<tenant>/mcp`: the default audience.
    pub url: String,
    /// `<public_url>/.well-known/oauth-protected-resource/t/<tenant>/mcp`.
    pub metadata_url: String,
}

impl Endpoint {
    /// Tenant `tenant` of a cluster reached at `public_url`.
    pub fn new(public_url: &str, tenant: &str) -> Self {
        let base = public_url.trim_end_matches('/');
        Self {
            url: format!("{base}/t/{tenant}/mcp"),
            metadata_url: format!("{base}/.well-known/oauth-protected-resource/t/{tenant}/mcp"),
        }
    }
}

impl TenantAuth {
    /// From a tenant's `auth` settings (already validated when the settings were loaded);
    /// `fetch` reaches its OAuth issuer.
    pub fn new(
        settings: Option<&AuthSettings>,
        endpoint: &Endpoint,
        fetch: Arc<dyn Fetch>,
    ) -> Result<Self, String> {
        let config = settings
            .map(|s| {
                Ok::<_, String>(Config {
                    keys: KeyRing::new(&s.api_keys)?,
                    oauth: s
                        .oauth
                        .as_ref()
                        .map(|o| OAuth::new(o, &endpoint.url, endpoint.metadata_url.clone(), fetch.clone())),
                    anonymous: s.anonymous,
                })
            })
            .transpose()?;
        Ok(Self { config })
    }

    /// Its OAuth resource server, if it accepts OAuth tokens.
    pub fn oauth(&self) -> Option<&OAuth> {
        self.config.as_ref().and_then(|c| c.oauth.as_ref())
    }

    /// When this node last accepted each of the tenant's API keys: (key id, Unix ms).
    pub fn key_usage(&self) -> Vec<(String, u64)> {
        self.config.as_ref().map(|c| c.keys.usage()).unwrap_or_default()
    }

    /// RFC 9728 protected-resource metadata, for a tenant that accepts OAuth tokens.
    pub fn resource_metadata(&self) -> Option<serde_json::Value> {
        let o = self.oauth()?;
        Some(serde_json::json!({
            "resource": o.audience(),
            "authorization_servers": [o.issuer()],
            "scopes_supported": o.required_scopes(),
            "bearer_methods_supported": ["header"],
        }))
    }

    /// Does this tenant authenticate its callers at all?
    pub fn is_enabled(&self) -> bool {
        self.config.is_some()
    }

    /// The principal behind `creds`: `Ok(None)` on a tenant without authentication. Shared: a
    /// token's principal is cached, and every request with it gets the same one.
    pub async fn authenticate(&self, creds: &Credentials<'_>) -> Result<Option<Arc<Principal>>, AuthError> {
        let Some(config) = &self.config else {
            return Ok(None);
        };
        if creds.in_query {
            return Err(AuthError::InvalidRequest(
                "query_token",
                "credentials are not accepted in the query string; use the Authorization header",
            ));
        }
        let presented = match (creds.authorization, creds.api_key) {
            (Some(_), Some(_)) => {
                return Err(AuthError::InvalidRequest(
                    "several_credentials",
                    "send one credential, not several",
                ));
            }
            (Some(header), None) => bearer(header)?,
            (None, Some(key)) => key.trim(),
            (None, None) if config.anonymous => return Ok(Some(Arc::new(anonymous()))),
            (None, None) => return Err(AuthError::Missing),
        };
        if presented.starts_with(api_key::PREFIX) {
            return config
                .keys
                .verify(presented, SystemTime::now())
                .map(|p| Some(Arc::new(p)));
        }
        match &config.oauth {
            Some(o) => o.verify(presented).await.map(Some),
            None => Err(AuthError::InvalidToken(
                "unknown_credential",
                "the credential is not valid",
            )),
        }
    }

    /// The `WWW-Authenticate` value answering `err`: the error (RFC 6750 §3; none when no
    /// credential was presented) and, for OAuth tenants, where the resource's metadata is and
    /// which scopes to ask for (RFC 9728 §5.1).
    pub fn challenge(&self, err: &AuthError) -> String {
        let mut params = Vec::new();
        let error = match err {
            AuthError::Missing | AuthError::Unavailable => None,
            AuthError::InvalidRequest(..) => Some("invalid_request"),
            AuthError::InvalidToken(..) => Some("invalid_token"),
            AuthError::InsufficientScope => Some("insufficient_scope"),
        };
        if let Some(e) = error {
            params.push(format!("error=\"{e}\""));
            params.push(format!("error_description=\"{}\"", err.description()));
        }
        if let Some(o) = self.oauth() {
            params.push(format!("resource_metadata=\"{}\"", o.metadata_url()));
            if !o.required_scopes().is_empty() {
                params.push(format!("scope=\"{}\"", o.required_scopes().join(" ")));
            }
        }
        if params.is_empty() {
            "Bearer".to_owned()
        } else {
            format!("Bearer {}", params.join(", "))
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(header: &str) -> Result<&str, AuthError> {
    let (scheme, token) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::InvalidRequest(
            "unsupported_scheme",
            "use Authorization: Bearer <token>",
        ));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::InvalidRequest(
            "malformed",
            "the Bearer token is empty",
        ));
    }
    Ok(token)
}

fn anonymous() -> Principal {
    Principal {
        owner: Owner {
            issuer: ANONYMOUS.into(),
            subject: ANONYMOUS.into(),
        },
        roles: vec![ANONYMOUS.into()],
        scopes: Vec::new(),
        expires_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use marina_core::settings::ApiKeySettings;

    #[derive(Debug)]
    struct NoFetch;

    #[async_trait::async_trait]
    impl Fetch for NoFetch {
        async fn get_json(&self, url: &str) -> Result<serde_json::Value, String> {
            Err(format!("no network in unit tests: {url}"))
        }
    }

    fn endpoint() -> Endpoint {
        Endpoint::new("http://127.0.0.1:8080", "acme")
    }

    fn auth(keys: Vec<ApiKeySettings>, anonymous: bool) -> TenantAuth {
        let s = AuthSettings {
            oauth: None,
            api_keys: keys,
            anonymous,
        };
        TenantAuth::new(Some(&s), &endpoint(), Arc::new(NoFetch)).unwrap()
    }

    fn key_settings(key: &str, subject: &str, expires: Option<SystemTime>) -> ApiKeySettings {
        ApiKeySettings {
            subject: subject.into(),
            sha256: digest(key),
            roles: vec!["operator".into()],
            expires,
        }
    }

    fn creds<'a>(authorization: Option<&'a str>, api_key: Option<&'a str>) -> Credentials<'a> {
        Credentials {
            authorization,
            api_key,
            in_query: false,
        }
    }

    #[tokio::test]
    async fn api_keys_authenticate_by_header_and_refuse_everything_else() {
        let key = generate_key();
        let old = generate_key();
        let past = SystemTime::now() - std::time::Duration::from_secs(1);
        let a = auth(
            vec![
                key_settings(&key, "ci-bot", None),
                key_settings(&old, "old-bot", Some(past)),
            ],
            false,
        );
        let bearer = format!("Bearer {key}");
        let p = a
            .authenticate(&creds(Some(&bearer), None))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.owner.subject, "ci-bot");
        assert_eq!(p.owner.issuer, API_KEY_ISSUER);
        assert_eq!(p.roles, ["operator"]);
        let p2 = a.authenticate(&creds(None, Some(&key))).await.unwrap().unwrap();
        assert_eq!(p, p2, "X-API-Key is the same credential");
        let lower = format!("bearer {key}");
        assert!(a.authenticate(&creds(Some(&lower), None)).await.is_ok());

        let reason = |r: Result<Option<Arc<Principal>>, AuthError>| r.unwrap_err().reason();
        assert_eq!(reason(a.authenticate(&creds(None, None)).await), "missing");
        let unknown = generate_key();
        assert_eq!(
            reason(a.authenticate(&creds(None, Some(&unknown))).await),
            "unknown_key"
        );
        assert_eq!(reason(a.authenticate(&creds(None, Some(&old))).await), "expired");
        assert_eq!(
            reason(a.authenticate(&creds(Some(&bearer), Some(&key))).await),
            "several_credentials"
        );
        let basic = format!("Basic {key}");
        assert_eq!(
            reason(a.authenticate(&creds(Some(&basic), None)).await),
            "unsupported_scheme"
        );
        assert_eq!(
            reason(a.authenticate(&creds(Some("Bearer "), None)).await),
            "malformed"
        );
        assert_eq!(
            reason(a.authenticate(&creds(Some("Bearer eyJ.not.ours"), None)).await),
            "unknown_credential"
        );
        let q = Credentials {
            in_query: true,
            ..creds(Some(&bearer), None)
        };
        assert_eq!(reason(a.authenticate(&q).await), "query_token");
    }

    #[tokio::test]
    async fn anonymous_and_open_tenants() {
        let a = auth(Vec::new(), true);
        let p = a.authenticate(&creds(None, None)).await.unwrap().unwrap();
        assert_eq!(p.owner.subject, ANONYMOUS);
        assert_eq!(p.roles, [ANONYMOUS]);
        // Anonymous access does not make a wrong credential acceptable.
        assert!(a.authenticate(&creds(None, Some("mk_nope"))).await.is_err());
        let open = TenantAuth::new(None, &endpoint(), Arc::new(NoFetch)).unwrap();
        assert!(!open.is_enabled());
        assert_eq!(open.authenticate(&creds(None, None)).await, Ok(None));
    }

    #[test]
    fn challenges_name_the_error_only_when_a_credential_was_presented() {
        let a = auth(Vec::new(), false);
        assert_eq!(a.challenge(&AuthError::Missing), "Bearer");
        let c = a.challenge(&AuthError::InvalidToken("expired", "the credential has expired"));
        assert!(c.starts_with("Bearer error=\"invalid_token\""), "{c}");
    }
}

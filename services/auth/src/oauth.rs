//! OAuth 2.1 resource server: JWT access tokens of one issuer, checked against the issuer's
//! JWKS — asymmetric algorithms only, the key's family and declared algorithm matching the
//! token's, `iss` exact, `aud` naming this tenant's endpoint, `exp`/`nbf` with 60 s leeway, and
//! the tenant's required scopes.
//!
//! The issuer's metadata is discovered lazily (RFC 8414, then OpenID Connect Discovery), so a
//! node starts while the issuer is down. The JWKS is cached and fetched again only for an
//! unknown `kid`, at most once per [`REFETCH_MIN`]: a burst of forged `kid`s costs the issuer
//! one request. A validated token is cached (by its SHA-256) until it expires, so the hot path
//! verifies no signature.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, UNIX_EPOCH};

use async_trait::async_trait;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use marina_core::domain::Owner;
use marina_core::settings::OAuthSettings;
use serde_json::Value;

use crate::tokens::TokenCache;
use crate::{AuthError, Principal};

/// The JWKS is fetched again for an unknown `kid` at most this often.
pub const REFETCH_MIN: Duration = Duration::from_secs(5);
/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 60;
/// Validated tokens kept (by digest) until they expire.
const TOKEN_CACHE: usize = 100_000;
/// Algorithms accepted: asymmetric only (no `none`, no HMAC — a shared secret would let anyone
/// holding the issuer's public key mint tokens).
const ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// How the resource server reaches the issuer: a GET returning JSON. The gateway implements it
/// with its egress client, so issuer URLs go through the same SSRF guard as upstreams.
#[async_trait]
pub trait Fetch: Send + Sync + std::fmt::Debug {
    /// GET `url` and parse its JSON body; `Err` describes the failure (for logs).
    async fn get_json(&self, url: &str) -> Result<Value, String>;
}

#[derive(Debug, Default)]
struct Keys {
    jwks_uri: Option<String>,
    set: Option<Arc<JwkSet>>,
    fetched: Option<Instant>,
}

/// One tenant's OAuth resource server.
pub struct OAuth {
    issuer: String,
    audience: String,
    required_scopes: Vec<String>,
    roles_claim: String,
    metadata_url: String,
    fetch: Arc<dyn Fetch>,
    keys: RwLock<Keys>,
    refetch_min: Duration,
    /// One refetch at a time.
    refetch: tokio::sync::Mutex<()>,
    /// Validated tokens, in memory only, until they expire.
    tokens: TokenCache,
}

impl std::fmt::Debug for OAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, serde::Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    scope: Option<Value>,
    #[serde(default)]
    scp: Option<Value>,
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
}

/// Strings of a claim that is a string (space-separated when `split`) or an array of strings.
fn strings(v: Option<&Value>, split: bool) -> Vec<String> {
    match v {
        Some(Value::String(s)) if split => s.split_whitespace().map(str::to_owned).collect(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

fn invalid(reason: &'static str) -> AuthError {
    AuthError::InvalidToken(reason, "the access token is not valid")
}

impl OAuth {
    /// For tenant `tenant`, whose endpoint's public URL is `endpoint`.
    pub fn new(
        settings: &OAuthSettings,
        endpoint: &str,
        metadata_url: String,
        fetch: Arc<dyn Fetch>,
    ) -> Self {
        Self {
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone().unwrap_or_else(|| endpoint.to_owned()),
            required_scopes: settings.required_scopes.clone(),
            roles_claim: settings.roles_claim.clone(),
            metadata_url,
            fetch,
            keys: RwLock::new(Keys::default()),
            refetch_min: REFETCH_MIN,
            refetch: tokio::sync::Mutex::new(()),
            tokens: TokenCache::new(TOKEN_CACHE),
        }
    }

    /// With another minimum interval between JWKS fetches (tests).
    pub fn with_refetch_min(mut self, d: Duration) -> Self {
        self.refetch_min = d;
        self
    }

    /// The audience tokens must carry (the protected resource's identifier).
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The issuer.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Scopes every token needs.
    pub fn required_scopes(&self) -> &[String] {
        &self.required_scopes
    }

    /// Where this tenant's protected-resource metadata is served.
    pub fn metadata_url(&self) -> &str {
        &self.metadata_url
    }

    /// The principal of a JWT access token.
    pub async fn verify(&self, token: &str) -> Result<Arc<Principal>, AuthError> {
        if let Some(p) = self.tokens.get(token) {
            return Ok(p);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("malformed"))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(invalid("algorithm"));
        }
        let key = self.key(header.kid.as_deref(), header.alg).await?;
        let mut v = Validation::new(header.alg);
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &key, &v).map_err(|e| {
            invalid(match e.kind() {
                ErrorKind::ExpiredSignature => "expired",
                ErrorKind::ImmatureSignature => "not_yet_valid",
                ErrorKind::InvalidIssuer => "wrong_issuer",
                ErrorKind::InvalidAudience => "wrong_audience",
                ErrorKind::InvalidSignature => "bad_signature",
                ErrorKind::InvalidAlgorithm => "algorithm",
                ErrorKind::MissingRequiredClaim(_) => "missing_claim",
                _ => "malformed",
            })
        })?;
        let c = data.claims;
        let mut scopes = strings(c.scope.as_ref(), true);
        scopes.extend(strings(c.scp.as_ref(), true));
        let missing: Vec<&String> = self
            .required_scopes
            .iter()
            .filter(|s| !scopes.contains(s))
            .collect();
        if !missing.is_empty() {
            return Err(AuthError::InsufficientScope);
        }
        let p = Arc::new(Principal {
            owner: Owner {
                issuer: self.issuer.clone(),
                subject: c.sub,
            },
            roles: strings(c.rest.get(&self.roles_claim), false),
            scopes,
            expires_at: Some(UNIX_EPOCH + Duration::from_secs(c.exp)),
        });
        self.tokens.insert(token, p.clone());
        Ok(p)
    }

    /// The issuer's key for `kid` (the only key when the token names none and the set has one),
    /// fit for `alg`.
    async fn key(&self, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, AuthError> {
        let find = |set: &JwkSet| match kid {
            Some(k) => set.find(k).cloned(),
            None if set.keys.len() == 1 => set.keys.first().cloned(),
            None => None,
        };
        let cached = self.keys.read().unwrap_or_else(|p| p.into_inner()).set.clone();
        let jwk = match cached.as_deref().and_then(find) {
            Some(j) => j,
            None => {
                let set = self.refresh().await?;
                find(&set).ok_or_else(|| invalid("unknown_kid"))?
            }
        };
        if jwk
            .common
            .key_algorithm
            .is_some_and(|ka| ka != jsonwebtoken::jwk::KeyAlgorithm::from(alg))
        {
            return Err(invalid("algorithm"));
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| invalid("unknown_kid"))?;
        if key.family() != alg.family() {
            return Err(invalid("algorithm"));
        }
        Ok(key)
    }

    /// Fetch the JWKS again — unless it was fetched less than [`REFETCH_MIN`] ago (then the
    /// current set is the answer; a failed fetch counts too, so a down issuer is not hammered). One fetch at a time; waiters use its result.
    async fn refresh(&self) -> Result<Arc<JwkSet>, AuthError> {
        let _one = self.refetch.lock().await;
        let known_uri = {
            let k = self.keys.read().unwrap_or_else(|p| p.into_inner());
            if let Some(at) = k.fetched
                && at.elapsed() < self.refetch_min
            {
                return k.set.clone().ok_or(AuthError::Unavailable);
            }
            k.jwks_uri.clone()
        };
        let uri = match known_uri {
            Some(u) => Ok(u),
            None => self.discover().await,
        };
        let mut result = Err(AuthError::Unavailable);
        if let Ok(uri) = uri {
            match self
                .fetch
                .get_json(&uri)
                .await
                .and_then(|v| serde_json::from_value::<JwkSet>(v).map_err(|e| format!("not a JWK set: {e}")))
            {
                Ok(set) => result = Ok(Arc::new(set)),
                Err(e) => {
                    tracing::warn!(issuer = %self.issuer, error = %e, "could not fetch the issuer's JWKS")
                }
            }
            self.keys.write().unwrap_or_else(|p| p.into_inner()).jwks_uri = Some(uri);
        }
        let mut k = self.keys.write().unwrap_or_else(|p| p.into_inner());
        k.fetched = Some(Instant::now());
        match result {
            Ok(set) => {
                k.set = Some(set.clone());
                Ok(set)
            }
            // Keep serving with the keys we had.
            Err(e) => k.set.clone().ok_or(e),
        }
    }

    /// The issuer's `jwks_uri`, from its metadata: RFC 8414 (path-inserted well-known URL), then
    /// OpenID Connect Discovery. The metadata must name exactly the configured issuer.
    async fn discover(&self) -> Result<String, AuthError> {
        let base = self.issuer.trim_end_matches('/');
        let (origin, path) = match url::Url::parse(base) {
            Ok(u) => (
                u.origin().ascii_serialization(),
                u.path().trim_end_matches('/').to_owned(),
            ),
            Err(_) => return Err(AuthError::Unavailable),
        };
        let candidates = [
            format!("{origin}/.well-known/oauth-authorization-server{path}"),
            format!("{base}/.well-known/openid-configuration"),
        ];
        for url in candidates {
            match self.fetch.get_json(&url).await {
                Ok(meta) => {
                    if meta["issuer"].as_str() != Some(self.issuer.as_str()) {
                        tracing::warn!(issuer = %self.issuer, url, "issuer metadata names another issuer; ignored");
                        continue;
                    }
                    if let Some(j) = meta["jwks_uri"].as_str() {
                        return Ok(j.to_owned());
                    }
                }
                Err(e) => tracing::debug!(issuer = %self.issuer, url, error = %e, "no issuer metadata here"),
            }
        }
        tracing::warn!(issuer = %self.issuer, "could not discover the issuer's metadata");
        Err(AuthError::Unavailable)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use base64::Engine as _;
    use serde_json::json;

    use super::*;

    /// A public RSA key (modulus only; no private half exists anywhere in the repo).
    const N: &str = "vW3evbVK3C_Gk0MgT8E1Z7SxJats2R2PbChLvaoWZaF9gXPy0hBdrUTA0cjwKVav5EbbADfT1VpbP641Hc5xWoSohYgOeV9oEaysE-s7XVomBeCKgTphw7r2UH4aTzo6-0AfH4geiDYrTsyAjzsBzCGGvXml9Ib2OX-6MoR25BlSjbWB2kEn4344-JtPCBA4mLOZHneq3FdP9o-ENSWb-8UnesARN-SDUGpK1KS8r0KBaU_JU44dI78duiiC1vKjBlnmRCoOpWI8OyL5xE0-nvq7sDBglUIG6FnUiPXZMQTaQCRkEzlBgmfIa3Il7CxSAl9WTu2A_xmba6zu40mB7w";
    const ISSUER: &str = "https://idp.example";

    /// Serves the issuer's metadata and JWKS (or nothing, when `down`), counting requests.
    #[derive(Debug, Default)]
    struct Counting {
        down: bool,
        metadata: AtomicUsize,
        jwks: AtomicUsize,
    }

    #[async_trait]
    impl Fetch for Counting {
        async fn get_json(&self, url: &str) -> Result<Value, String> {
            tokio::task::yield_now().await;
            if url.ends_with("/jwks") {
                self.jwks.fetch_add(1, Ordering::SeqCst);
                if self.down {
                    return Err("down".into());
                }
                return Ok(
                    json!({"keys": [{"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig", "n": N, "e": "AQAB"}]}),
                );
            }
            self.metadata.fetch_add(1, Ordering::SeqCst);
            if self.down {
                return Err("down".into());
            }
            Ok(json!({"issuer": ISSUER, "jwks_uri": format!("{ISSUER}/jwks")}))
        }
    }

    fn oauth(fetch: Arc<Counting>) -> OAuth {
        let settings = OAuthSettings {
            issuer: ISSUER.into(),
            audience: None,
            required_scopes: Vec::new(),
            roles_claim: "roles".into(),
        };
        OAuth::new(
            &settings,
            "https://mcp.example/t/a/mcp",
            "https://mcp.example/m".into(),
            fetch,
        )
        .with_refetch_min(Duration::from_millis(300))
    }

    /// A token whose header names `alg` and `kid` (signature and claims do not matter: these
    /// tokens are refused before either is looked at).
    fn token(alg: &str, kid: &str) -> String {
        let b = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.c2ln",
            b(json!({"alg": alg, "kid": kid})),
            b(json!({"sub": "x"}))
        )
    }

    #[tokio::test]
    async fn a_burst_of_unknown_kids_costs_at_most_one_jwks_fetch_per_interval() {
        let fetch = Arc::new(Counting::default());
        let o = oauth(fetch.clone());
        let burst = |tag: &'static str| {
            let o = &o;
            futures_util::future::join_all(
                (0..50).map(move |i| async move { o.verify(&token("RS256", &format!("{tag}-{i}"))).await }),
            )
        };
        for r in burst("a").await {
            assert_eq!(r.unwrap_err().reason(), "unknown_kid");
        }
        assert_eq!(fetch.metadata.load(Ordering::SeqCst), 1, "discovered once");
        assert_eq!(
            fetch.jwks.load(Ordering::SeqCst),
            1,
            "one fetch for the whole burst"
        );
        for r in burst("b").await {
            assert_eq!(r.unwrap_err().reason(), "unknown_kid");
        }
        assert_eq!(
            fetch.jwks.load(Ordering::SeqCst),
            1,
            "none again within the interval"
        );
        // Proving the interval: once it has passed, a burst costs exactly one more fetch.
        tokio::time::sleep(Duration::from_millis(350)).await;
        for r in burst("c").await {
            assert_eq!(r.unwrap_err().reason(), "unknown_kid");
        }
        assert_eq!(fetch.jwks.load(Ordering::SeqCst), 2);
        assert_eq!(
            fetch.metadata.load(Ordering::SeqCst),
            1,
            "metadata is not discovered again"
        );
    }

    #[tokio::test]
    async fn symmetric_and_unsigned_algorithms_are_refused_before_any_key_lookup() {
        let fetch = Arc::new(Counting::default());
        let o = oauth(fetch.clone());
        for alg in ["none", "HS256", "HS384", "HS512"] {
            let e = o.verify(&token(alg, "k1")).await.unwrap_err();
            assert!(matches!(e.reason(), "algorithm" | "malformed"), "{alg}: {e:?}");
        }
        assert_eq!(fetch.jwks.load(Ordering::SeqCst), 0);
        // A known key of another family than the header's algorithm is refused too.
        let e = o.verify(&token("ES256", "k1")).await.unwrap_err();
        assert_eq!(e.reason(), "algorithm");
    }

    #[tokio::test]
    async fn an_unreachable_issuer_is_unavailable_not_invalid_and_is_not_hammered() {
        let fetch = Arc::new(Counting {
            down: true,
            ..Default::default()
        });
        let o = oauth(fetch.clone());
        for i in 0..20 {
            let e = o.verify(&token("RS256", &format!("k{i}"))).await.unwrap_err();
            assert_eq!(e, AuthError::Unavailable);
            assert_eq!(e.status(), 503);
        }
        assert_eq!(
            fetch.metadata.load(Ordering::SeqCst),
            2,
            "both discovery URLs tried once in the interval"
        );
    }
}

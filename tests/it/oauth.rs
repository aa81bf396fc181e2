//! Marina as an OAuth 2.1 resource server, against a real authorization server (oidc-provider):
//! RFC 9728 metadata per tenant, 401/403 challenges, and every way a token can be wrong — each
//! refused with its exact status and `WWW-Authenticate`.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use marina_tests::{Mcp, OidcIssuer, TestApp, spawn_app_with};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

/// How clients reach the cluster in these tests: audiences and metadata URLs derive from it,
/// whatever port the node is bound to.
const PUBLIC: &str = "http://mcp.test";
const ACME: &str = "http://mcp.test/t/acme/mcp";
const BETA: &str = "http://mcp.test/t/beta/mcp";

struct Setup {
    issuer: OidcIssuer,
    app: TestApp,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let issuer = OidcIssuer::start(&[ACME, BETA]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("marina.yaml");
    std::fs::write(
        &file,
        format!(
            r#"server: {{public_url: "{PUBLIC}"}}
egress: {{allow_loopback: true}}
tenants:
  acme:
    auth:
      oauth: {{issuer: "{iss}", required_scopes: ["mcp:tools"]}}
  beta:
    auth:
      oauth: {{issuer: "{iss}"}}
  keys-only:
    auth: {{api_keys: []}}
"#,
            iss = issuer.url
        ),
    )
    .unwrap();
    let app = spawn_app_with(Some(&file), &[]).await;
    Setup {
        issuer,
        app,
        _dir: dir,
    }
}

fn initialize() -> Value {
    json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}})
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Parameters of a `WWW-Authenticate: Bearer k="v", …` challenge.
fn challenge(r: &Response) -> Vec<(String, String)> {
    let raw = r.headers()["www-authenticate"].to_str().unwrap();
    let rest = raw.strip_prefix("Bearer").expect("a Bearer challenge").trim();
    rest.split("\", ")
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap();
            (k.trim().to_owned(), v.trim_matches('"').to_owned())
        })
        .collect()
}

fn param<'a>(c: &'a [(String, String)], k: &str) -> Option<&'a str> {
    c.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

/// The request is refused with `status`, a challenge naming `error` (or none) and pointing at
/// acme's metadata with its required scope.
async fn refused(r: Response, status: StatusCode, error: Option<&str>, why: &str) {
    assert_eq!(r.status(), status, "{why}");
    let c = challenge(&r);
    assert_eq!(param(&c, "error"), error, "{why}: {c:?}");
    assert_eq!(
        param(&c, "resource_metadata"),
        Some("http://mcp.test/.well-known/oauth-protected-resource/t/acme/mcp"),
        "{why}"
    );
    assert_eq!(param(&c, "scope"), Some("mcp:tools"), "{why}");
    let body: Value = r.json().await.unwrap();
    assert!(body["error"]["code"].is_i64(), "{why}: {body}");
}

/// A token signed with the issuer's own key, with `claims` and `alg`.
fn forge(issuer: &OidcIssuer, claims: Value) -> String {
    let (pem, kid) = issuer.signing_key();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid);
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_pem(&pem).unwrap()).unwrap()
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[actix_rt::test]
async fn tokens_of_a_real_issuer_work_and_every_bad_token_is_refused() {
    let s = setup().await;
    let acme = Mcp::new(&s.app.endpoint("acme"));

    // No token: 401 pointing at the metadata, no error attribute.
    refused(
        acme.post(&initialize()).await,
        StatusCode::UNAUTHORIZED,
        None,
        "no token",
    )
    .await;
    // The metadata: `resource` is exactly the audience.
    let prm: Value = reqwest::get(format!(
        "{}/.well-known/oauth-protected-resource/t/acme/mcp",
        s.app.base
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(
        prm,
        json!({"resource": ACME, "authorization_servers": [s.issuer.url], "scopes_supported": ["mcp:tools"], "bearer_methods_supported": ["header"]})
    );
    for other in ["keys-only", "nope"] {
        let r = reqwest::get(format!(
            "{}/.well-known/oauth-protected-resource/t/{other}/mcp",
            s.app.base
        ))
        .await
        .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{other}");
    }

    // A real token for acme works.
    let good = s.issuer.token("gw-test", ACME, "mcp:tools").await;
    let c = acme.bearer(&good).open("2025-11-25", json!({})).await;
    assert_eq!(c.call_text(2, "echo", json!({"text": "ok"})).await, "ok");

    // Missing scope: 403 insufficient_scope.
    let narrow = s.issuer.token("gw-test", ACME, "mcp:resources").await;
    refused(
        acme.bearer(&narrow).post(&initialize()).await,
        StatusCode::FORBIDDEN,
        Some("insufficient_scope"),
        "missing scope",
    )
    .await;
    // Another tenant's audience, both ways.
    let for_beta = s.issuer.token("gw-test", BETA, "mcp:tools").await;
    refused(
        acme.bearer(&for_beta).post(&initialize()).await,
        StatusCode::UNAUTHORIZED,
        Some("invalid_token"),
        "beta's audience on acme",
    )
    .await;
    let beta = Mcp::new(&s.app.endpoint("beta"));
    let r = beta.bearer(&good).post(&initialize()).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "acme's token on beta");
    let on_beta = beta.bearer(&for_beta).open("2025-11-25", json!({})).await;
    assert_eq!(
        on_beta.call_text(2, "echo", json!({"text": "beta"})).await,
        "beta"
    );

    // Forged with the issuer's key: each claim wrong in turn.
    let base = json!({"iss": s.issuer.url, "aud": ACME, "sub": "mallory", "scope": "mcp:tools", "iat": now(), "exp": now() + 300});
    let with = |k: &str, v: Value| {
        let mut c = base.clone();
        c[k] = v;
        c
    };
    let without = |k: &str| {
        let mut c = base.clone();
        c.as_object_mut().unwrap().remove(k);
        c
    };
    let control = forge(&s.issuer, base.clone());
    let r = acme.bearer(&control).post(&initialize()).await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "the forging itself is sound (control)"
    );
    // Within the 60 s leeway an expired token still passes; beyond it, it does not.
    let r = acme
        .bearer(&forge(&s.issuer, with("exp", json!(now() - 30))))
        .post(&initialize())
        .await;
    assert_eq!(r.status(), StatusCode::OK, "expired 30 s ago: within the leeway");
    for (why, claims) in [
        ("expired", with("exp", json!(now() - 120))),
        ("not yet valid", with("nbf", json!(now() + 300))),
        ("wrong issuer", with("iss", json!("http://127.0.0.1:1"))),
        (
            "wrong audience",
            with("aud", json!("http://mcp.test/t/other/mcp")),
        ),
        ("no audience", without("aud")),
        ("no subject", without("sub")),
        ("no expiry", without("exp")),
    ] {
        refused(
            acme.bearer(&forge(&s.issuer, claims)).post(&initialize()).await,
            StatusCode::UNAUTHORIZED,
            Some("invalid_token"),
            why,
        )
        .await;
    }
    // An audience list that contains ours is fine.
    let r = acme
        .bearer(&forge(
            &s.issuer,
            with("aud", json!(["https://elsewhere.example", ACME])),
        ))
        .post(&initialize())
        .await;
    assert_eq!(r.status(), StatusCode::OK, "aud array containing ours");

    // Broken signature, alg none, HS256 keyed with the issuer's public key (algorithm
    // confusion), an unknown kid, garbage.
    let (sig_ok, _) = control.rsplit_once('.').unwrap();
    let bad_sig = format!("{sig_ok}.{}", "A".repeat(342));
    let (_, kid) = s.issuer.signing_key();
    let none = format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&base));
    let jwks: Value = reqwest::get(format!("{}/jwks", s.issuer.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let public_jwk = jwks["keys"][0].to_string();
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some(kid);
    let confused =
        jsonwebtoken::encode(&hs, &base, &EncodingKey::from_secret(public_jwk.as_bytes())).unwrap();
    let (pem, _) = s.issuer.signing_key();
    let mut unknown = Header::new(Algorithm::RS256);
    unknown.kid = Some("no-such-kid".into());
    let unknown_kid =
        jsonwebtoken::encode(&unknown, &base, &EncodingKey::from_rsa_pem(&pem).unwrap()).unwrap();
    for (why, token) in [
        ("bad signature", bad_sig.as_str()),
        ("alg none", none.as_str()),
        ("HS256 with the public key", confused.as_str()),
        ("unknown kid", unknown_kid.as_str()),
        ("not a JWT", "not-a-jwt"),
    ] {
        refused(
            acme.bearer(token).post(&initialize()).await,
            StatusCode::UNAUTHORIZED,
            Some("invalid_token"),
            why,
        )
        .await;
    }
    // A token in the query string is refused even when valid.
    let q = Mcp::new(&format!("{}?access_token={good}", s.app.endpoint("acme")));
    refused(
        q.post(&initialize()).await,
        StatusCode::UNAUTHORIZED,
        Some("invalid_request"),
        "query token",
    )
    .await;
}

#[actix_rt::test]
async fn oauth_sessions_belong_to_the_token_subject() {
    let s = setup().await;
    let acme = Mcp::new(&s.app.endpoint("acme"));
    let mine = s.issuer.token("gw-test", ACME, "mcp:tools").await;
    let theirs = s.issuer.token("gw-other", ACME, "mcp:tools").await;
    let c = acme.bearer(&mine).open("2025-11-25", json!({})).await;
    assert_eq!(c.call_text(2, "echo", json!({"text": "mine"})).await, "mine");
    // Another client of the same issuer and tenant: 404 on every verb.
    let other = c.bearer(&theirs);
    let r = other.post(&json!({"jsonrpc":"2.0","id":3,"method":"ping"})).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(other.get(None).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(other.get(Some("1_0-0")).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(other.delete().await.status(), StatusCode::NOT_FOUND);
    // A fresh token of the same subject continues the session (sessions bind to the subject,
    // not to one token).
    let renewed = s.issuer.token("gw-test", ACME, "mcp:tools").await;
    assert_ne!(renewed, mine);
    assert_eq!(
        c.bearer(&renewed)
            .call_text(4, "echo", json!({"text": "renewed"}))
            .await,
        "renewed"
    );
    // A key-shaped credential on an OAuth-only tenant is unknown, not an error of another kind.
    let r = acme.bearer("mk_AAAA").post(&initialize()).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

/// The admin API's own audience in these tests.
const ADMIN: &str = "http://admin.mcp.test";

#[actix_rt::test]
async fn platform_administrators_use_tokens_for_the_admin_audience_with_the_admin_scope_only() {
    let issuer = OidcIssuer::start(&[ACME, ADMIN]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("marina.yaml");
    std::fs::write(
        &file,
        format!(
            r#"server: {{public_url: "{PUBLIC}"}}
egress: {{allow_loopback: true}}
admin:
  oauth: {{issuer: "{iss}", audience: "{ADMIN}"}}
tenants:
  acme:
    auth:
      oauth: {{issuer: "{iss}"}}
"#,
            iss = issuer.url
        ),
    )
    .unwrap();
    let app = spawn_app_with(Some(&file), &[]).await;
    let http = reqwest::Client::new();
    let get = |url: String, token: String| {
        let http = http.clone();
        async move { http.get(url).bearer_auth(token).send().await.unwrap() }
    };
    let tenants = format!("{}/tenants", app.admin);
    let acme = format!("{}/tenants/acme", app.admin);

    // The admin audience with marina:admin: a platform administrator.
    let admin = issuer.token("gw-test", ADMIN, "marina:admin").await;
    assert_eq!(get(tenants.clone(), admin.clone()).await.status(), StatusCode::OK);
    assert_eq!(get(acme.clone(), admin).await.status(), StatusCode::OK);

    // The admin audience without the scope: nobody.
    let scopeless = issuer.token("gw-test", ADMIN, "mcp:tools").await;
    assert_eq!(
        get(tenants.clone(), scopeless).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // A tenant endpoint's token, even with the scope: not a platform administrator (its
    // audience is the tenant's); on its tenant's paths a principal without tenant-admin: 403.
    let tenant_token = issuer.token("gw-test", ACME, "marina:admin mcp:tools").await;
    let r = get(tenants, tenant_token.clone()).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert_eq!(get(acme, tenant_token).await.status(), StatusCode::FORBIDDEN);
}

#[actix_rt::test]
async fn an_admin_oauth_without_an_audience_of_its_own_is_refused_at_start() {
    for admin in [
        r#"{issuer: "http://127.0.0.1:9/"}"#,
        r#"{issuer: "http://127.0.0.1:9/", audience: "http://mcp.test/t/acme/mcp"}"#,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("marina.yaml");
        std::fs::write(&file, format!("admin:\n  oauth: {admin}\n")).unwrap();
        let binds = [
            ("server.bind", "127.0.0.1:0".to_owned()),
            ("admin.bind", "127.0.0.1:0".to_owned()),
        ];
        let settings = marina_core::settings::load(Some(&file), Some(Default::default()), &binds).unwrap();
        let Err(err) = marina_gateway::Application::build(settings).await else {
            panic!("started with admin.oauth {admin}");
        };
        assert!(format!("{err:#}").contains("admin.oauth.audience"), "{err:#}");
    }
}

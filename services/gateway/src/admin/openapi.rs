//! The admin API's OpenAPI 3.1 document, generated from the code and served (without
//! authentication) at `GET /admin/v1/openapi.json`.
//!
//! # Documenting a handler
//!
//! Routes stay registered by hand in `mod.rs`'s `.route(...)` list; the test at the end of this
//! file reads that list and fails while a registered route is missing from the document (or a
//! documented one is not registered). For a new route:
//!
//! 1. Put `#[utoipa::path(...)]` on its handler, with
//!    - the method and `path` exactly as registered in `mod.rs` (relative to `/admin/v1`, the
//!      document's server), an `operation_id` (camelCase; handler names repeat across modules,
//!      operation ids must not) and a `tag` (one of [`AdminApi`]'s `tags`);
//!    - `params(...)`: [`TenantPath`] for `{id}`, an `IntoParams` struct for the query (derive it
//!      on the struct the handler deserializes, `#[into_params(parameter_in = Query)]`), tuples
//!      for anything else;
//!    - `request_body(content = T, content_type = "application/json")` when it reads a body;
//!    - `responses(...)`: every success with its `body = T` (a `ToSchema` type, preferably the one
//!      the handler serializes, so the document cannot drift from the answer) and its headers,
//!      then every error status the handler can return as one of the shared problem responses
//!      below: `(status = 404, response = NotFound)`. The 401 comes with any authenticated
//!      operation; 403 and 404 with any that names a tenant (tenant administrators); 503 with
//!      any that reads or writes the store; 400/413 with any that reads a body.
//! 2. Add the handler to `paths(...)` of [`AdminApi`] (types referenced by an operation are
//!    collected automatically).
//! 3. Run `cargo test -p marina-gateway openapi` and the schemathesis check
//!    (`tests/peers/schemathesis/run.sh`) against the live document.

use std::sync::LazyLock;

use actix_web::HttpResponse;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToResponse};

use super::problem::ProblemDocument;
use super::{audit, explain, keys, sessions, tenants, upstreams};

/// The admin API's document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Marina admin API",
        version = env!("CARGO_PKG_VERSION"),
        description = "The control plane of a Marina cluster: tenants as live data (written on any node, \
            applied on every node within a second), their API keys, policy explanations and the audit log. \
            Every error is an RFC 9457 problem document. See docs/admin-api.md.",
    ),
    servers((url = "/admin/v1", description = "This node's admin listener (`admin.bind`)")),
    paths(
        document,
        tenants::list,
        tenants::get,
        tenants::put,
        tenants::patch,
        tenants::delete,
        keys::list,
        keys::create,
        keys::revoke,
        explain::explain,
        sessions::list,
        sessions::get,
        sessions::end,
        sessions::end_principal,
        upstreams::status,
        audit::list,
    ),
    components(
        schemas(ProblemDocument),
        responses(
            BadRequest,
            Unauthorized,
            Forbidden,
            NotFound,
            Conflict,
            PreconditionFailed,
            PayloadTooLarge,
            Unavailable
        )
    ),
    modifiers(&SecuritySchemes),
    security(("bearer" = []), ("apiKey" = [])),
    tags(
        (name = "tenants", description = "Tenant documents: the `tenants.<id>` section of the configuration file, as live data"),
        (name = "api-keys", description = "A tenant's API keys (kept in its document as SHA-256 digests)"),
        (name = "policy", description = "What a tenant's policy decides, and why"),
        (name = "sessions", description = "A tenant's live sessions across the cluster, named by their tags"),
        (name = "upstreams", description = "What the cluster last saw of a tenant's upstreams"),
        (name = "audit", description = "Who changed what and when"),
        (name = "meta", description = "This document"),
    )
)]
pub struct AdminApi;

/// The document, serialized once.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    AdminApi::openapi()
        .to_json()
        .expect("the OpenAPI document serializes")
});

/// The OpenAPI document
///
/// This document. Served without authentication.
#[utoipa::path(
    get, path = "/openapi.json", operation_id = "getOpenApiDocument", tag = "meta",
    security(()),
    responses((status = 200, description = "The admin API's OpenAPI 3.1 document", body = Object,
        content_type = "application/json")),
)]
pub async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(DOCUMENT.as_str())
}

/// Platform administrators' admin API keys (`admin.api_keys`) or access tokens (`admin.oauth`),
/// and tenant administrators' credentials (their tenant's API keys or access tokens).
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`Authorization: Bearer <credential>`: an admin API key or an admin \
                         access token (`admin.oauth`, scope `marina:admin`), or on a tenant's \
                         paths one of its administrators' API keys or access tokens",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "The same keys as `Authorization: Bearer`, in their own header",
            ))),
        );
    }
}

/// A tenant's path parameter.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // documentation only: handlers take the id as `web::Path<String>`
pub struct TenantPath {
    /// The tenant's id: 1-64 characters of `A-Z a-z 0-9 - _` (another id is a 400 on create,
    /// a 404 elsewhere).
    #[param(example = "acme")]
    id: String,
}

// The problem responses every operation shares, each a problem document
// (`application/problem+json`). Documentation only: handlers answer with `Problem`.

/// The request is malformed (body not a JSON object, bad query, malformed `If-Match`), or a field
/// of its document is invalid (`field` names it).
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
#[allow(dead_code)]
pub struct BadRequest(ProblemDocument);

/// No credential, or one that is neither a platform administrator's (admin API key or token) nor
/// (on a tenant's paths) that tenant's.
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"marina-admin\"`"))
)]
#[allow(dead_code)]
pub struct Unauthorized(ProblemDocument);

/// A tenant's principal without its `tenant-admin` role, or a tenant administrator doing what
/// only platform administrators may (create, delete, suspend or resume a tenant).
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
#[allow(dead_code)]
pub struct Forbidden(ProblemDocument);

/// No such tenant (or key) — or a tenant whose credentials were not presented.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
#[allow(dead_code)]
pub struct NotFound(ProblemDocument);

/// The tenant is defined in the configuration file (read-only here), or the store already holds
/// `admin.max_tenants` tenants.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
#[allow(dead_code)]
pub struct Conflict(ProblemDocument);

/// `If-Match` names a version that is no longer current, `If-None-Match: *` and the tenant
/// exists, or the tenant changed meanwhile.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
#[allow(dead_code)]
pub struct PreconditionFailed(ProblemDocument);

/// A body over 256 KiB.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
#[allow(dead_code)]
pub struct PayloadTooLarge(ProblemDocument);

/// The store cannot be reached (nothing was written); retry shortly.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
#[allow(dead_code)]
pub struct Unavailable(ProblemDocument);

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::{Value, json};

    use super::*;

    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "patch", "head", "options", "trace",
    ];

    fn doc() -> Value {
        serde_json::from_str(&DOCUMENT).unwrap()
    }

    /// The routes `mod.rs` registers, as (method, path): read from its
    /// `.route("<path>", web::<method>()…)` calls, so a route added there is checked here.
    fn registered() -> BTreeSet<(String, String)> {
        let code: String = include_str!("mod.rs")
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        // Anything but `.route(...)` in the one /admin/v1 scope would register routes unseen.
        for (bypass, allowed) in [
            ("web::resource(", 0),
            (".configure(", 0),
            ("web::scope(", 1),
            (".service(", 1),
        ] {
            assert!(
                code.matches(bypass).count() <= allowed,
                "admin/mod.rs uses `{bypass}`, which this test cannot follow: register each route \
                 in the /admin/v1 scope as .route(\"/path\", web::<method>().to(handler))"
            );
        }
        let routes: BTreeSet<_> = code
            .match_indices(".route(")
            .map(|(at, m)| {
                let rest = code[at + m.len()..].trim_start();
                let read = || -> Option<(String, String)> {
                    let rest = rest.strip_prefix('"')?;
                    let (path, rest) = rest.split_once('"')?;
                    let rest = rest.trim_start().strip_prefix(',')?.trim_start();
                    let (method, _) = rest.strip_prefix("web::")?.split_once('(')?;
                    METHODS
                        .contains(&method)
                        .then(|| (method.to_owned(), path.to_owned()))
                };
                read().unwrap_or_else(|| {
                    panic!(
                        "cannot read the route registered at `.route({}…` in admin/mod.rs: write \
                         it as .route(\"/path\", web::<method>().to(handler))",
                        &rest[..rest.len().min(60)]
                    )
                })
            })
            .collect();
        assert!(routes.len() >= 10, "found only {routes:?} in admin/mod.rs");
        // Served by the admin listener beside the API, not part of it (no /admin/v1 prefix).
        let beside_api = ("get".to_owned(), "/metrics".to_owned());
        assert!(routes.contains(&beside_api), "GET /metrics is registered");
        routes.into_iter().filter(|r| *r != beside_api).collect()
    }

    fn documented(doc: &Value) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if METHODS.contains(&method.as_str()) {
                    out.insert((method.clone(), path.clone()));
                }
            }
        }
        out
    }

    fn operations(doc: &Value) -> Vec<(String, &Value)> {
        let mut out = vec![];
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                if METHODS.contains(&method.as_str()) {
                    out.push((format!("{} {path}", method.to_uppercase()), op));
                }
            }
        }
        out
    }

    #[test]
    fn the_document_is_openapi_3_1_with_its_server_and_security() {
        let doc = doc();
        assert!(
            doc["openapi"].as_str().unwrap().starts_with("3.1."),
            "{}",
            doc["openapi"]
        );
        assert_eq!(doc["info"]["title"], "Marina admin API");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(doc["servers"][0]["url"], "/admin/v1");
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(schemes["bearer"]["type"], "http");
        assert_eq!(schemes["bearer"]["scheme"], "bearer");
        assert_eq!(schemes["apiKey"]["type"], "apiKey");
        assert_eq!(schemes["apiKey"]["in"], "header");
        assert_eq!(schemes["apiKey"]["name"], "X-API-Key");
        assert_eq!(doc["security"], json!([{"bearer": []}, {"apiKey": []}]));
    }

    #[test]
    fn every_registered_route_is_documented_and_every_documented_one_registered() {
        let doc = doc();
        let registered = registered();
        let documented = documented(&doc);
        let missing: Vec<_> = registered.difference(&documented).collect();
        assert!(
            missing.is_empty(),
            "routes registered in admin/mod.rs but not in the OpenAPI document (annotate the \
             handler with #[utoipa::path] and add it to AdminApi's paths; see openapi.rs): {missing:?}"
        );
        let extra: Vec<_> = documented.difference(&registered).collect();
        assert!(
            extra.is_empty(),
            "documented but not registered in admin/mod.rs: {extra:?}"
        );
    }

    #[test]
    fn every_operation_is_complete() {
        let doc = doc();
        let mut ids = BTreeSet::new();
        for (name, op) in operations(&doc) {
            let id = op["operationId"].as_str().unwrap_or_default();
            assert!(
                ids.insert(id.to_owned()),
                "{name}: operationId {id:?} is not unique"
            );
            assert!(!op["tags"].as_array().unwrap().is_empty(), "{name}: no tag");
            assert!(
                op["summary"].is_string(),
                "{name}: no summary (the doc comment's first line)"
            );
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{name}: no success response"
            );
            // Unauthenticated only where it says so (security: [{}]); anything else answers 401.
            let open = op["security"] == json!([{}]);
            assert_eq!(
                !open,
                responses.contains_key("401"),
                "{name}: 401 iff authenticated"
            );
            for (status, r) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    let name_ = r["$ref"].as_str().unwrap_or_default();
                    let shared = name_.strip_prefix("#/components/responses/").unwrap_or_else(|| {
                        panic!("{name}: {status} is not one of the shared problem responses")
                    });
                    let content = &doc["components"]["responses"][shared]["content"];
                    assert_eq!(
                        content["application/problem+json"]["schema"]["$ref"],
                        "#/components/schemas/ProblemDocument",
                        "{name}: {status}"
                    );
                }
            }
            // Every `{param}` of the path is declared.
            let path = name.split_once(' ').unwrap().1;
            let declared: BTreeSet<&str> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            let in_path: BTreeSet<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            assert_eq!(declared, in_path, "{name}: path parameters");
        }
    }

    /// What `Problem` sends conforms to the documented `ProblemDocument`.
    #[test]
    fn problem_documents_match_their_schema() {
        let doc = doc();
        let mut root = json!({"$ref": "#/components/schemas/ProblemDocument"});
        root["components"] = doc["components"].clone();
        let validator = jsonschema::validator_for(&root).unwrap();
        let invalid = crate::admin::Problem::invalid(crate::tenants::Invalid {
            field: "auth.api_keys[0].sha256".into(),
            detail: "must be 64 hex digits".into(),
        });
        for p in [
            crate::admin::Problem::not_found("no tenant acme"),
            crate::admin::Problem::unavailable(),
            invalid,
        ] {
            let body = serde_json::to_value(p.body()).unwrap();
            let errors: Vec<String> = validator.iter_errors(&body).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{body}: {errors:?}");
        }
        assert!(
            !validator.is_valid(&json!({"title": "x"})),
            "the schema checks something"
        );
    }
}

//! DNS-rebinding protection: `Host` and `Origin` must be localhost ones or allowed by the tenant.
//! A request without `Origin` (a CLI client) is fine; one with a disallowed value gets 403. Behind
//! a trusted proxy the host checked is its `X-Forwarded-Host` (see `proxy.rs`).

use actix_web::HttpRequest;
use actix_web::http::header;
use marina_core::settings::TenantSettings;

fn is_local_host(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "[::1]" | "::1")
}

/// Split `host[:port]` (IPv6 in brackets) and return the host part, lowercased.
fn host_part(authority: &str) -> String {
    let a = authority.trim().to_ascii_lowercase();
    if a.starts_with('[') {
        return a.split_inclusive(']').next().unwrap_or(&a).to_owned();
    }
    match a.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h.to_owned(),
        _ => a,
    }
}

fn host_allowed(authority: &str, allowed: &[String]) -> bool {
    let host = host_part(authority);
    is_local_host(&host)
        || allowed.iter().any(|a| {
            a == "*" || a.eq_ignore_ascii_case(authority.trim()) || host_part(a) == host && !a.contains(':')
        })
}

fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    if allowed.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https") && !rest.contains('/') && is_local_host(&host_part(rest))
}

/// Check the host the client asked for (`Host`, or a trusted proxy's `X-Forwarded-Host`) and
/// `Origin`; `Err` carries what was refused (for the log, not the client).
pub fn check(req: &HttpRequest, host: Option<&str>, tenant: &TenantSettings) -> Result<(), &'static str> {
    if let Some(host) = host
        && !host_allowed(host, &tenant.allowed_hosts)
    {
        return Err("host not allowed");
    }
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let ok = origin
            .to_str()
            .is_ok_and(|o| origin_allowed(o, &tenant.allowed_origins));
        if !ok {
            return Err("origin not allowed");
        }
    }
    Ok(())
}

/// The request's `Origin`, if it is one the tenant allows (for CORS answers).
pub fn allowed_origin<'a>(req: &'a HttpRequest, tenant: &TenantSettings) -> Option<&'a str> {
    req.headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .filter(|o| origin_allowed(o, &tenant.allowed_origins))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localhost_is_allowed_by_default() {
        assert!(host_allowed("127.0.0.1:8080", &[]));
        assert!(host_allowed("localhost", &[]));
        assert!(host_allowed("[::1]:9", &[]));
        assert!(!host_allowed("evil.example.com", &[]));
        assert!(!host_allowed("evil.example.com:8080", &[]));
        assert!(origin_allowed("http://localhost:3000", &[]));
        assert!(origin_allowed("https://127.0.0.1", &[]));
        assert!(!origin_allowed("http://evil.example.com", &[]));
        assert!(!origin_allowed("null", &[]));
        assert!(!origin_allowed("http://localhost.evil.com", &[]));
    }

    #[test]
    fn tenants_widen_the_lists() {
        let hosts = vec!["mcp.acme.example".to_owned()];
        assert!(host_allowed("mcp.acme.example:443", &hosts));
        assert!(!host_allowed("other.example", &hosts));
        let origins = vec!["https://app.acme.example".to_owned()];
        assert!(origin_allowed("https://app.acme.example", &origins));
        assert!(!origin_allowed("https://evil.example", &origins));
        assert!(host_allowed("anything", &["*".to_owned()]));
    }
}

//! Requests that reach Marina through proxies. `X-Forwarded-For`, `-Host` and `-Proto` are
//! believed only when the connection comes from one of the tenant's `trusted_proxies`; from
//! anyone else they are ignored (a client cannot claim another address, or a host it did not
//! connect to, to slip past the Host allow-list).

use std::net::IpAddr;

use actix_web::HttpRequest;
use ipnet::IpNet;
use marina_core::settings::TenantSettings;

/// What the request looks like from the client's side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The client's address: the peer, or — behind trusted proxies — the nearest untrusted
    /// address of `X-Forwarded-For`.
    pub client_ip: Option<IpAddr>,
    /// The host the client asked for: `Host`, or a trusted proxy's `X-Forwarded-Host`.
    pub host: Option<String>,
    /// `https` when the client's connection was TLS (a trusted proxy's `X-Forwarded-Proto`).
    pub proto: String,
}

fn first(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn trusted(ip: IpAddr, proxies: &[IpNet]) -> bool {
    proxies.iter().any(|n| n.contains(&ip))
}

/// How `req` looks from the client's side, for a tenant with these settings.
pub fn seen(req: &HttpRequest, tenant: &TenantSettings) -> Seen {
    let peer = req.peer_addr().map(|a| a.ip());
    let host = req
        .headers()
        .get("host")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let direct = Seen {
        client_ip: peer,
        host: host.clone(),
        // Not `connection_info()`: actix fills it from `X-Forwarded-Proto` and `Forwarded`
        // whoever sent them. Marina itself serves plain HTTP.
        proto: "http".to_owned(),
    };
    let proxies = &tenant.trusted_proxies;
    let Some(peer) = peer.filter(|p| trusted(*p, proxies)) else {
        return direct;
    };
    // The nearest address that is not one of our proxies is the client; a malformed entry ends
    // the walk (everything to its left is the client's own claim).
    let mut client = peer;
    let hops: Vec<String> = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_owned())
        .collect();
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !trusted(ip, proxies) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    Seen {
        client_ip: Some(client),
        host: first(req, "x-forwarded-host").or(host),
        proto: first(req, "x-forwarded-proto")
            .filter(|p| p == "http" || p == "https")
            .unwrap_or(direct.proto),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn tenant(proxies: &[&str]) -> TenantSettings {
        TenantSettings {
            trusted_proxies: proxies.iter().map(|p| p.parse().unwrap()).collect(),
            ..Default::default()
        }
    }

    fn from(peer: &str) -> TestRequest {
        TestRequest::default()
            .peer_addr(format!("{peer}:40000").parse().unwrap())
            .insert_header(("host", "internal.svc:8080"))
            .insert_header(("x-forwarded-for", "203.0.113.7, 10.0.0.9"))
            .insert_header(("x-forwarded-host", "mcp.example.com"))
            .insert_header(("x-forwarded-proto", "https"))
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        let t = tenant(&["10.0.0.0/8"]);
        let via_proxy = seen(&from("10.1.2.3").to_http_request(), &t);
        assert_eq!(via_proxy.client_ip, Some("203.0.113.7".parse().unwrap()));
        assert_eq!(via_proxy.host.as_deref(), Some("mcp.example.com"));
        assert_eq!(via_proxy.proto, "https");

        let direct = seen(&from("198.51.100.1").to_http_request(), &t);
        assert_eq!(direct.client_ip, Some("198.51.100.1".parse().unwrap()));
        assert_eq!(direct.host.as_deref(), Some("internal.svc:8080"));
        assert_eq!(direct.proto, "http");

        let no_proxies = seen(&from("10.1.2.3").to_http_request(), &tenant(&[]));
        assert_eq!(no_proxies.client_ip, Some("10.1.2.3".parse().unwrap()));
        assert_eq!(no_proxies.host.as_deref(), Some("internal.svc:8080"));
    }

    #[test]
    fn a_client_cannot_prepend_its_own_claims() {
        // The client sent "X-Forwarded-For: 1.1.1.1"; the proxy appended the real address.
        let req = TestRequest::default()
            .peer_addr("10.0.0.2:1".parse().unwrap())
            .insert_header(("x-forwarded-for", "1.1.1.1, 198.51.100.9"))
            .to_http_request();
        let s = seen(&req, &tenant(&["10.0.0.0/8"]));
        assert_eq!(s.client_ip, Some("198.51.100.9".parse().unwrap()));
        let req = TestRequest::default()
            .peer_addr("10.0.0.2:1".parse().unwrap())
            .insert_header(("x-forwarded-for", "garbage, 10.0.0.3"))
            .to_http_request();
        let s = seen(&req, &tenant(&["10.0.0.0/8"]));
        assert_eq!(
            s.client_ip,
            Some("10.0.0.3".parse().unwrap()),
            "all trusted: the leftmost valid"
        );
    }
}

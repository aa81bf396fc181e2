//! Outbound HTTP for tenants' upstreams, with the SSRF guard.
//!
//! Every name an upstream request resolves goes through [`GuardedResolver`], which drops addresses
//! the operator did not allow (private, loopback, link-local/metadata, …) and fails when none is
//! left: the check happens on the addresses actually connected to, so a DNS answer that changes
//! between a check and the connection (rebinding) cannot slip past it. IP-literal URLs never reach
//! a resolver, so they are checked by [`check_url`] before the request. Redirects are not followed
//! (a redirect could name an IP literal).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use marina_core::settings::EgressSettings;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// 10/8, 172.16/12, 192.168/16, 100.64/10 (CGNAT), fc00::/7.
    Private,
    /// 169.254.0.0/16 (including the cloud metadata address 169.254.169.254), fe80::/10.
    LinkLocal,
    /// Unspecified, broadcast, multicast, documentation and other non-routable ranges.
    Special,
}

/// Classify an address; `None` means it is publicly routable.
pub fn classify(ip: IpAddr) -> Option<Refused> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Refused> {
    let o = ip.octets();
    if ip.is_loopback() {
        Some(Refused::Loopback)
    } else if ip.is_link_local() {
        Some(Refused::LinkLocal)
    } else if ip.is_private() || (o[0] == 100 && (64..128).contains(&o[1])) {
        Some(Refused::Private)
    } else if ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0
        || o[0] >= 240
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        || (o[0] == 198 && (o[1] == 18 || o[1] == 19))
    {
        Some(Refused::Special)
    } else {
        None
    }
}

fn classify_v6(ip: Ipv6Addr) -> Option<Refused> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some(Refused::Loopback)
    } else if (first & 0xffc0) == 0xfe80 {
        Some(Refused::LinkLocal)
    } else if (first & 0xfe00) == 0xfc00 {
        Some(Refused::Private)
    } else if ip.is_unspecified()
        || ip.is_multicast()
        || first == 0x2001 && ip.segments()[1] == 0x0db8
        || first == 0x64
    {
        // unspecified, multicast, 2001:db8::/32 documentation, 64:ff9b::/96 NAT64 (could reach v4 privates)
        Some(Refused::Special)
    } else {
        None
    }
}

/// The operator's egress policy.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    allow_loopback: bool,
    allow_private: bool,
}

impl Policy {
    /// From settings.
    pub fn new(s: &EgressSettings) -> Self {
        Self {
            allow_loopback: s.allow_loopback,
            allow_private: s.allow_private,
        }
    }

    /// May an upstream connect to `ip`?
    pub fn allows(&self, ip: IpAddr) -> bool {
        match classify(ip) {
            None => true,
            Some(Refused::Loopback) => self.allow_loopback,
            Some(Refused::Private) => self.allow_private,
            Some(Refused::LinkLocal | Refused::Special) => false,
        }
    }
}

/// Checks a URL before a request: http(s) only, and an IP-literal host must be allowed.
pub fn check_url(policy: &Policy, url: &reqwest::Url) -> Result<(), &'static str> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err("only http and https upstream URLs are allowed");
    }
    let literal = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        Some(url::Host::Domain(_)) => None,
        None => return Err("the upstream URL has no host"),
    };
    match literal {
        Some(ip) if !policy.allows(ip) => Err("the upstream address is not allowed"),
        _ => Ok(()),
    }
}

/// A resolver that only returns allowed addresses.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: Policy,
}

impl GuardedResolver {
    /// A resolver under `policy`.
    pub fn new(policy: Policy) -> Self {
        Self { policy }
    }

    /// The addresses of `host` that `policy` allows; an error when there are none.
    async fn allowed(policy: Policy, host: String) -> Result<Vec<SocketAddr>, BoxError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
        let allowed: Vec<SocketAddr> = addrs.into_iter().filter(|a| policy.allows(a.ip())).collect();
        if allowed.is_empty() {
            return Err(format!("{host} resolves only to addresses upstreams may not reach").into());
        }
        Ok(allowed)
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// For reqwest (streams, HTTP tools, everything but MCP POSTs).
impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let lookup = Self::allowed(self.policy, name.as_str().to_owned());
        Box::pin(async move { Ok(Box::new(lookup.await?.into_iter()) as Addrs) })
    }
}

/// For hyper's connector (`transport.rs`: MCP POSTs).
impl tower_service::Service<hyper_util::client::legacy::connect::dns::Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        let lookup = Self::allowed(self.policy, name.as_str().to_owned());
        Box::pin(async move { Ok(lookup.await?.into_iter()) })
    }
}

/// The HTTP client every upstream of this node uses: guarded resolution, no redirects, no proxy
/// from the environment, connect timeout.
pub fn client(policy: Policy) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver { policy }))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(std::time::Duration::from_secs(5))
        .tcp_nodelay(true)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn classifies_the_dangerous_ranges() {
        assert_eq!(classify(ip("127.0.0.1")), Some(Refused::Loopback));
        assert_eq!(classify(ip("::1")), Some(Refused::Loopback));
        assert_eq!(classify(ip("10.1.2.3")), Some(Refused::Private));
        assert_eq!(classify(ip("172.20.0.1")), Some(Refused::Private));
        assert_eq!(classify(ip("192.168.1.1")), Some(Refused::Private));
        assert_eq!(classify(ip("100.64.0.1")), Some(Refused::Private));
        assert_eq!(classify(ip("fd00::1")), Some(Refused::Private));
        assert_eq!(classify(ip("169.254.169.254")), Some(Refused::LinkLocal));
        assert_eq!(classify(ip("fe80::1")), Some(Refused::LinkLocal));
        assert_eq!(classify(ip("::ffff:169.254.169.254")), Some(Refused::LinkLocal));
        assert_eq!(classify(ip("::ffff:127.0.0.1")), Some(Refused::Loopback));
        assert_eq!(classify(ip("0.0.0.0")), Some(Refused::Special));
        assert_eq!(classify(ip("224.0.0.1")), Some(Refused::Special));
        assert_eq!(classify(ip("64:ff9b::a00:1")), Some(Refused::Special));
        assert_eq!(classify(ip("93.184.216.34")), None);
        assert_eq!(classify(ip("2606:4700::1111")), None);
    }

    #[test]
    fn policy_never_allows_metadata() {
        let open = Policy {
            allow_loopback: true,
            allow_private: true,
        };
        assert!(open.allows(ip("127.0.0.1")) && open.allows(ip("10.0.0.1")));
        assert!(!open.allows(ip("169.254.169.254")));
        let closed = Policy {
            allow_loopback: false,
            allow_private: false,
        };
        assert!(!closed.allows(ip("127.0.0.1")) && !closed.allows(ip("10.0.0.1")));
        assert!(closed.allows(ip("93.184.216.34")));
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        assert!(check_url(&closed, &url("http://127.0.0.1:9/x")).is_err());
        assert!(check_url(&closed, &url("http://[::1]/x")).is_err());
        assert!(check_url(&closed, &url("file:///etc/passwd")).is_err());
        assert!(check_url(&closed, &url("https://example.com/x")).is_ok());
        assert!(check_url(&open, &url("http://127.0.0.1:9/x")).is_ok());
    }
}

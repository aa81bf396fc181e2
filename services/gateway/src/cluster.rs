//! Trust between nodes. A request one node forwards to the session's holder carries
//! `x-marina-forwarded: <instance>;<unix seconds>;<HMAC-SHA256>` over the instance, the time, the
//! method, the path and the session id, keyed with the cluster secret. The holder believes the
//! marker (and so does not forward the request again) only when the MAC is valid and fresh; a
//! client that sends the header itself gets nothing from it — its request is treated like any
//! other. The holder authenticates the client's own credentials in every case.

use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::HttpRequest;
use hmac::{KeyInit as _, Mac as _};
use subtle::ConstantTimeEq as _;

/// Header carrying the forwarding marker.
pub const FORWARDED: &str = "x-marina-forwarded";
/// A marker older (or newer) than this is refused: clocks of a cluster agree far better.
const FRESH_SECS: u64 = 30;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The cluster secret.
#[derive(Clone)]
pub struct ClusterKey(Option<Vec<u8>>);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "ClusterKey(<set>)"
        } else {
            "ClusterKey(none)"
        })
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl ClusterKey {
    /// From the secret (`None`: a development cluster on loopback, whose markers are taken on
    /// trust).
    pub fn new(secret: Option<&str>) -> Self {
        Self(secret.filter(|s| !s.is_empty()).map(|s| s.as_bytes().to_vec()))
    }

    fn mac(key: &[u8], instance: &str, ts: u64, method: &str, path: &str, session: &str) -> Vec<u8> {
        let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
        for part in [instance, &ts.to_string(), method, path, session] {
            m.update(part.as_bytes());
            m.update(&[0]);
        }
        m.finalize().into_bytes().to_vec()
    }

    /// The marker for a request this node (`instance`) forwards.
    pub fn sign(&self, instance: &str, req: &HttpRequest) -> String {
        let Some(key) = &self.0 else {
            return instance.to_owned();
        };
        let ts = now();
        let mac = Self::mac(key, instance, ts, req.method().as_str(), req.path(), session(req));
        format!("{instance};{ts};{}", hex::encode(mac))
    }

    /// Was `req` forwarded by a node of this cluster?
    pub fn is_forwarded(&self, req: &HttpRequest) -> bool {
        let Some(value) = req.headers().get(FORWARDED).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let Some(key) = &self.0 else {
            return true;
        };
        let valid = (|| {
            let mut parts = value.splitn(3, ';');
            let (instance, ts, mac) = (parts.next()?, parts.next()?, parts.next()?);
            let ts: u64 = ts.parse().ok()?;
            if now().abs_diff(ts) > FRESH_SECS {
                return None;
            }
            let presented = hex::decode(mac).ok()?;
            let expected = Self::mac(key, instance, ts, req.method().as_str(), req.path(), session(req));
            bool::from(expected.ct_eq(&presented)).then_some(())
        })()
        .is_some();
        if !valid {
            tracing::warn!(
                target: "marina::audit",
                event = "forged_forward",
                reason = "bad_marker",
                "a request carried an invalid forwarding marker; treated as a client request"
            );
        }
        valid
    }
}

fn session(req: &HttpRequest) -> &str {
    req.headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn req(marker: Option<&str>) -> HttpRequest {
        let mut r = TestRequest::post()
            .uri("/t/acme/mcp")
            .insert_header(("mcp-session-id", "abc"));
        if let Some(m) = marker {
            r = r.insert_header((FORWARDED, m));
        }
        r.to_http_request()
    }

    #[test]
    fn only_markers_signed_with_the_cluster_secret_count() {
        let key = ClusterKey::new(Some("s3cret"));
        let marker = key.sign("node-a/1", &req(None));
        assert!(key.is_forwarded(&req(Some(&marker))));
        assert!(!key.is_forwarded(&req(None)));
        assert!(
            !key.is_forwarded(&req(Some("node-a/1"))),
            "a client's bare header"
        );
        let other = ClusterKey::new(Some("another")).sign("node-a/1", &req(None));
        assert!(!key.is_forwarded(&req(Some(&other))), "another cluster's secret");
        let (head, _) = marker.rsplit_once(';').unwrap();
        assert!(
            !key.is_forwarded(&req(Some(&format!("{head};00")))),
            "a broken MAC"
        );
        let stale = format!(
            "node-a/1;{};{}",
            now() - 120,
            hex::encode(ClusterKey::mac(
                b"s3cret",
                "node-a/1",
                now() - 120,
                "POST",
                "/t/acme/mcp",
                "abc"
            ))
        );
        assert!(!key.is_forwarded(&req(Some(&stale))), "a stale marker");
        // For another session or path, the marker is worthless.
        let moved = TestRequest::post()
            .uri("/t/acme/mcp")
            .insert_header(("mcp-session-id", "xyz"))
            .insert_header((FORWARDED, marker.as_str()))
            .to_http_request();
        assert!(!key.is_forwarded(&moved));
        assert!(format!("{key:?}").contains("<set>") && !format!("{key:?}").contains("s3cret"));
    }

    #[test]
    fn without_a_secret_markers_are_taken_on_trust() {
        let key = ClusterKey::new(None);
        assert_eq!(key.sign("n/1", &req(None)), "n/1");
        assert!(key.is_forwarded(&req(Some("n/1"))));
    }
}

//! Multi round-trip requests (2026-07-28): a stateless call that needs input from the client
//! (elicitation, sampling, roots) answers `resultType: "input_required"` with its `inputRequests`
//! and a `requestState`; the client retries with `inputResponses` and that state, on any node.
//!
//! A `requestState` Marina issues is sealed: XChaCha20-Poly1305 (a random 192-bit nonce per
//! state) under a key derived with HKDF-SHA256 from the cluster secret — or, on a cluster without
//! one, a random key the first node stores and every node shares. Inside: the tenant, a digest of
//! the principal, the method, the tool, a digest of the arguments, an expiry, a random id, and
//! the answers gathered in earlier rounds. A state that does not open, names another tenant,
//! principal, tool or arguments, has expired, or was used before (its id is claimed once in the
//! store) is refused — all with the same `-32602`, telling an attacker nothing.
//!
//! A tool is re-run on each round with the answers so far; the n-th question it asks gets the
//! n-th answer (`q<n>`). Built-in tools ask deterministically, so the replay is faithful.

use std::time::Duration;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use marina_core::protocol::RpcError;
use marina_core::store::{SessionStore, StoreError, now_ms};
use rand::RngExt as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::Digest as _;

/// Binds a sealed state to its purpose (additional authenticated data).
const AAD: &[u8] = b"marina/requestState/v1";
/// HKDF `info` of the sealing key.
const KEY_INFO: &[u8] = b"marina requestState sealing key v1";

/// What a `requestState` carries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RequestState {
    /// Tenant.
    pub t: String,
    /// Digest of the principal.
    pub p: String,
    /// Method.
    pub m: String,
    /// Tool.
    pub n: String,
    /// Digest of the arguments.
    pub a: String,
    /// Expiry (Unix ms).
    pub exp: u64,
    /// Random id, claimed once when the state is used.
    pub id: String,
    /// Answers gathered in earlier rounds, by question key.
    pub r: Map<String, Value>,
    /// The parked call the retry continues, when the source cannot be re-run (`park.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<ParkRef>,
    /// The retry continues an upstream's own multi round-trip request (a 2026-07-28 upstream
    /// answered `input_required`), whose `requestState`, if it gave one, is `w`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub u: bool,
    /// The upstream's `requestState` (see `u`), carried sealed inside ours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub w: Option<String>,
}

impl RequestState {
    /// What a retry of `method` on `name` (a tool, prompt or URI) with arguments of digest
    /// `arguments` by principal `principal` of `tenant` must carry: the binding a state is
    /// checked against, and the base of every state issued for that request.
    pub fn expected(tenant: &str, principal: String, method: &str, name: &str, arguments: String) -> Self {
        Self {
            t: tenant.to_owned(),
            p: principal,
            m: method.to_owned(),
            n: name.to_owned(),
            a: arguments,
            exp: 0,
            id: String::new(),
            r: Map::new(),
            k: None,
            u: false,
            w: None,
        }
    }
}

/// Where a parked call waits: the node's instance name, the call's id there, and the key of the
/// question it waits on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ParkRef {
    /// Instance name of the node running the call.
    pub node: String,
    /// The call's id in that node's parked calls.
    pub id: String,
    /// The pending question's key (`inputRequests` / `inputResponses`).
    pub q: String,
}

/// Seals and opens request states.
pub struct Sealer {
    cipher: XChaCha20Poly1305,
    ttl: Duration,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer keyed from `secret` (the cluster secret, or the cluster's stored random key);
    /// states live `ttl`.
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        let mut key = [0u8; 32];
        hkdf::Hkdf::<sha2::Sha256>::new(None, secret)
            .expand(KEY_INFO, &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Self {
            cipher: XChaCha20Poly1305::new_from_slice(&key).expect("a 32-byte key"),
            ttl,
        }
    }

    /// The sealer of this cluster: from `secret` if there is one, else from the random key the
    /// store keeps for the cluster (created by the first node that asks).
    pub async fn for_cluster(
        secret: Option<&str>,
        store: &dyn SessionStore,
        ttl: Duration,
    ) -> Result<Self, StoreError> {
        if let Some(s) = secret.filter(|s| !s.is_empty()) {
            return Ok(Self::new(s.as_bytes(), ttl));
        }
        let candidate: [u8; 32] = rand::rng().random();
        let key = store.cluster_key("request-state", &candidate).await?;
        Ok(Self::new(&key, ttl))
    }

    /// How long a state is good for.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Seal `state` into an opaque string.
    pub fn seal(&self, state: &RequestState) -> String {
        let nonce_bytes: [u8; 24] = rand::rng().random();
        let nonce = XNonce::from(nonce_bytes);
        let plain = serde_json::to_vec(state).expect("a state serializes");
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: &plain,
                    aad: AAD,
                },
            )
            .expect("XChaCha20-Poly1305 encrypts any message of this size");
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&sealed);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out)
    }

    /// Open a sealed state; `None` when it was not sealed by this cluster or was altered.
    pub fn open(&self, sealed: &str) -> Option<RequestState> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sealed)
            .ok()?;
        if raw.len() < 24 {
            return None;
        }
        let (nonce, body) = raw.split_at(24);
        let nonce = XNonce::from(<[u8; 24]>::try_from(nonce).ok()?);
        let plain = self
            .cipher
            .decrypt(&nonce, Payload { msg: body, aad: AAD })
            .ok()?;
        serde_json::from_slice(&plain).ok()
    }
}

/// A digest of `v`, the same for equal JSON values whatever their key order. The canonical
/// text (keys sorted, `,` after every member) is streamed into the hash, never built: every
/// stateless call computes this.
pub fn digest(v: &Value) -> String {
    struct Hashing<'a>(&'a mut sha2::Sha256);
    impl std::io::Write for Hashing<'_> {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.update(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    fn text<T: serde::Serialize + ?Sized>(h: &mut sha2::Sha256, v: &T) {
        // Writing into a hash cannot fail, nor can serializing a JSON value or a string.
        let _ = serde_json::to_writer(Hashing(h), v);
    }
    fn canonical(v: &Value, h: &mut sha2::Sha256) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                h.update(b"{");
                for k in keys {
                    text(h, k);
                    h.update(b":");
                    canonical(&m[k], h);
                    h.update(b",");
                }
                h.update(b"}");
            }
            Value::Array(a) => {
                h.update(b"[");
                for x in a {
                    canonical(x, h);
                    h.update(b",");
                }
                h.update(b"]");
            }
            other => text(h, other),
        }
    }
    let mut h = sha2::Sha256::new();
    canonical(v, &mut h);
    hex::encode(h.finalize())
}

/// The error for every state that cannot be used (nothing tells why, beyond "not usable").
pub fn refused(why: &str) -> RpcError {
    tracing::info!(target: "marina::audit", event = "request_state_refused", reason = why, "requestState refused");
    RpcError::invalid_params(format!("invalid requestState: {why}"))
}

/// Check a state opened for a retry of `expected` (tenant, principal, method, tool, arguments);
/// claim its id so it cannot be used again.
pub async fn admit(
    sealer: &Sealer,
    store: &dyn SessionStore,
    sealed: &str,
    expected: &RequestState,
) -> Result<RequestState, RpcError> {
    let state = open_for(sealer, sealed, expected)?;
    claim(store, state).await
}

/// Open a state for a retry of `expected`: sealed by this cluster, for exactly this request, not
/// expired. Not claimed yet (see [`claim`]).
pub fn open_for(sealer: &Sealer, sealed: &str, expected: &RequestState) -> Result<RequestState, RpcError> {
    let Some(state) = sealer.open(sealed) else {
        return Err(refused("not issued by this cluster, or altered"));
    };
    let same = state.t == expected.t
        && state.p == expected.p
        && state.m == expected.m
        && state.n == expected.n
        && state.a == expected.a;
    if !same {
        return Err(refused("issued for another request"));
    }
    if state.exp <= now_ms() {
        return Err(refused("expired"));
    }
    Ok(state)
}

/// Use an opened state up: the first claim of its id succeeds, every later one is refused.
pub async fn claim(store: &dyn SessionStore, state: RequestState) -> Result<RequestState, RpcError> {
    let left = Duration::from_millis(state.exp.saturating_sub(now_ms()).max(1));
    match store.claim_once(&state.id, left).await {
        Ok(true) => Ok(state),
        Ok(false) => Err(refused("already used")),
        Err(_) => Err(RpcError::new(
            marina_core::protocol::code::SERVICE_UNAVAILABLE,
            "session store unavailable",
        )),
    }
}

/// A fresh state for `expected` with the answers `r`, good for the sealer's TTL.
pub fn next(sealer: &Sealer, expected: &RequestState, r: Map<String, Value>) -> RequestState {
    let id: [u8; 16] = rand::rng().random();
    RequestState {
        exp: now_ms() + sealer.ttl().as_millis() as u64,
        id: hex::encode(id),
        r,
        ..expected.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn state() -> RequestState {
        RequestState {
            t: "acme".into(),
            p: "p1".into(),
            m: "tools/call".into(),
            n: "confirm".into(),
            a: digest(&json!({"question": "?"})),
            exp: now_ms() + 60_000,
            id: "id1".into(),
            r: Map::new(),
            k: None,
            u: false,
            w: None,
        }
    }

    #[test]
    fn a_sealed_state_opens_only_unaltered_and_under_its_key() {
        let sealer = Sealer::new(b"secret", Duration::from_secs(60));
        let original = state();
        let sealed = sealer.seal(&original);
        assert_eq!(sealer.open(&sealed), Some(original.clone()));
        assert_ne!(sealed, sealer.seal(&original), "a fresh nonce each time");
        let mut bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&sealed)
            .unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let tampered = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        assert_eq!(sealer.open(&tampered), None);
        assert_eq!(Sealer::new(b"other", Duration::from_secs(60)).open(&sealed), None);
        assert_eq!(sealer.open("not base64 !"), None);
        assert_eq!(sealer.open(""), None);
    }

    #[test]
    fn argument_digests_ignore_key_order() {
        assert_eq!(
            digest(&json!({"a": 1, "b": [1, {"y": 2, "x": 1}]})),
            digest(&json!({"b": [1, {"x": 1, "y": 2}], "a": 1}))
        );
        assert_ne!(digest(&json!({"a": 1})), digest(&json!({"a": 2})));
        // The canonical text is fixed (states sealed by other versions of Marina stay valid):
        // SHA-256 of `{"a":{"y":true,"z":null,},"b":[1,"x\"q",1.5,],}`.
        assert_eq!(
            digest(&json!({"b": [1, "x\"q", 1.5], "a": {"z": null, "y": true}})),
            "587397693edf26e3ac551518d2acda1e7bc98b29e7c70280c597effa32933765"
        );
    }
}

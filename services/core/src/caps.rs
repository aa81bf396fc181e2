//! Caps on live sessions, per tenant and per principal, counted by the whole cluster. The session
//! actor keeps its session counted while it lives (it refreshes its entry whenever it refreshes
//! the session's TTL) and removes it when the session ends; an entry of a session that expired
//! unnoticed ages out with the session's idle TTL. `marina-limits` implements it (Redis, memory).

use std::time::Duration;

use async_trait::async_trait;

use crate::domain::Owner;
use crate::store::StoreError;

/// Which cap refused a new session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapScope {
    /// `limits.max_sessions` of the tenant.
    Tenant,
    /// `limits.max_sessions_per_principal`.
    Principal,
}

impl CapScope {
    /// Stable name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tenant => "tenant",
            Self::Principal => "principal",
        }
    }
}

/// The principal a cap entry is counted under (`anonymous` without authentication).
pub fn principal_key(owner: Option<&Owner>) -> String {
    match owner {
        Some(o) => format!("{}\u{0}{}", o.issuer, o.subject),
        None => "anonymous".to_owned(),
    }
}

/// Live sessions, counted per tenant and per principal.
#[async_trait]
pub trait SessionCaps: Send + Sync + std::fmt::Debug {
    /// Count `session` (alive for `ttl` unless touched) if both caps have room; else say which
    /// is full (and count nothing). Atomic: concurrent admissions never exceed a cap.
    async fn admit(
        &self,
        tenant: &str,
        principal: &str,
        session: &str,
        ttl: Duration,
        max_tenant: Option<u64>,
        max_principal: Option<u64>,
    ) -> Result<Option<CapScope>, StoreError>;
    /// Keep `session` counted for another `ttl`.
    async fn touch(
        &self,
        tenant: &str,
        principal: &str,
        session: &str,
        ttl: Duration,
    ) -> Result<(), StoreError>;
    /// Stop counting `session`.
    async fn release(&self, tenant: &str, principal: &str, session: &str) -> Result<(), StoreError>;
}

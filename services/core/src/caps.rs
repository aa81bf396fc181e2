//! Caps counted by the whole cluster: live sessions per tenant and per principal, and calls in
//! flight per tenant. The session actor keeps its session counted while it lives (it refreshes
//! the entry whenever it refreshes the session's TTL) and removes it when the session ends; it
//! holds a short lease on each running call's entry and renews it while the call runs. Entries of
//! a node that died age out (a session's with its idle TTL, a call's with its lease).
//! `marina-limits` implements it (Redis, memory).

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

/// How long a running call's entry lasts unless renewed (the actor renews it at least every
/// 15 s, its housekeeping period).
pub const CALL_LEASE: Duration = Duration::from_secs(60);

/// Live sessions and calls in flight, counted cluster-wide.
#[async_trait]
pub trait Caps: Send + Sync + std::fmt::Debug {
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
    /// Count `call` among the tenant's calls in flight (for `lease`) if fewer than `max` are;
    /// `false` when the cap is reached. A call still counted (its lease not yet lapsed: a call
    /// re-run after its node died) keeps its place and renews it. Atomic.
    async fn begin_call(
        &self,
        tenant: &str,
        call: &str,
        max: u64,
        lease: Duration,
    ) -> Result<bool, StoreError>;
    /// Renew the leases of running `calls`.
    async fn keep_calls(&self, tenant: &str, calls: &[String], lease: Duration) -> Result<(), StoreError>;
    /// Stop counting `call`.
    async fn end_call(&self, tenant: &str, call: &str) -> Result<(), StoreError>;
}

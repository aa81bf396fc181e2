//! The limits step of the request path: every request charges the tenant's and the principal's
//! rate buckets, and a `tools/call` its principal-and-tool bucket — all in one check shared by
//! every node (`marina-limits`). A full bucket answers 429 with `Retry-After`, the IETF
//! `RateLimit-Policy`/`RateLimit` headers and a JSON-RPC error carrying the request id and
//! `data.retryAfterMs`; each refusal is a `rate_limited` audit event. Requests a peer forwarded
//! were charged by the node that received them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use marina_core::access::glob_match;
use marina_core::caps::{CapScope, principal_key};
use marina_core::domain::SessionId;
use marina_core::settings::TenantLimits;
use marina_core::tenant::Tenant;
use marina_limits::{Bucket, Decision, LimitError, PrincipalId};
use serde_json::json;

use crate::authn::Caller;
use crate::reply::Refusal;
use crate::state::AppState;

/// The buckets a request of `caller` to `tenant` (a call of `tool`, if any) is charged to.
fn buckets(tenant: &str, limits: &TenantLimits, caller: &Caller, tool: Option<&str>) -> Vec<Bucket> {
    let rate = &limits.rate;
    let mut out = Vec::new();
    if let Some(r) = rate.tenant {
        out.push(Bucket::tenant(tenant, r));
    }
    if rate.principal.is_none() && rate.tools.is_empty() {
        return out;
    }
    let principal = PrincipalId::new(&principal_key(caller.principal.as_ref().map(|p| &p.owner)));
    if let Some(r) = rate.principal {
        out.push(Bucket::principal(tenant, &principal, r));
    }
    if let Some(tool) = tool {
        // The most specific pattern: the longest one that matches.
        let best = rate
            .tools
            .iter()
            .filter(|(pattern, _)| glob_match(tool, pattern))
            .max_by_key(|(pattern, _)| pattern.len());
        if let Some((_, r)) = best {
            out.push(Bucket::tool(tenant, &principal, tool, *r));
        }
    }
    out
}

/// Count a new session against the tenant's session caps (when it has any).
pub async fn admit_session(
    state: &AppState,
    t: &Tenant,
    caller: &Caller,
    id: &SessionId,
) -> Result<(), Refusal> {
    let l = &t.settings.limits;
    if l.max_sessions.is_none() && l.max_sessions_per_principal.is_none() {
        return Ok(());
    }
    let principal = principal_key(caller.owner().as_ref());
    let ttl = state.node.sessions().idle_ttl();
    match state
        .caps
        .admit(
            &t.id,
            &principal,
            id.as_str(),
            ttl,
            l.max_sessions,
            l.max_sessions_per_principal,
        )
        .await
    {
        Ok(None) => {
            let m = marina_telemetry::metrics();
            if l.max_sessions.is_some() {
                m.limit_decision(&t.id, "sessions", true);
            }
            if l.max_sessions_per_principal.is_some() {
                m.limit_decision(&t.id, "principal_sessions", true);
            }
            Ok(())
        }
        Ok(Some(scope)) => {
            let m = marina_telemetry::metrics();
            let label = match scope {
                CapScope::Tenant => "sessions",
                CapScope::Principal => "principal_sessions",
            };
            m.limit_decision(&t.id, label, false);
            m.session_ended(&t.id, "refused", "", std::time::Duration::ZERO);
            tracing::info!(
                target: "marina::audit",
                event = "rate_limited",
                reason = format!("sessions_{}", scope.name()),
                tenant = %t.id,
                request_id = %caller.request_id,
                "session cap reached"
            );
            let max = match scope {
                CapScope::Tenant => l.max_sessions,
                CapScope::Principal => l.max_sessions_per_principal,
            }
            .unwrap_or(0);
            Err(Refusal::rate_limited(
                format!(
                    "too many live sessions ({} cap {max}); end one (DELETE) or retry later",
                    scope.name()
                ),
                SESSION_RETRY_MS,
                json!({"retryAfterMs": SESSION_RETRY_MS, "scope": format!("sessions_{}", scope.name())}),
                Vec::new(),
            ))
        }
        Err(e) => {
            tracing::warn!(error = %e, "session caps cannot be checked");
            Err(Refusal::unavailable("session store unavailable; retry shortly"))
        }
    }
}

/// `scope` of `marina_limit_decisions_total` for a rate bucket.
fn scope_label(scope: marina_limits::Scope) -> &'static str {
    match scope {
        marina_limits::Scope::Tenant => "tenant_rate",
        marina_limits::Scope::Principal => "principal_rate",
        marina_limits::Scope::Tool => "tool_rate",
    }
}

/// Undo [`admit_session`] for a session that could not be created.
pub async fn release_session(state: &AppState, t: &Tenant, caller: &Caller, id: &SessionId) {
    let l = &t.settings.limits;
    if l.max_sessions.is_some() || l.max_sessions_per_principal.is_some() {
        let principal = principal_key(caller.owner().as_ref());
        let _ = state.caps.release(&t.id, &principal, id.as_str()).await;
    }
}

/// When a client refused a session is told to try again.
const SESSION_RETRY_MS: u64 = 5_000;

/// The buckets of each (tenant, principal, tool) seen lately, built once: building them hashes
/// the principal and the tool and formats three keys — most of the limits step's cost on a busy
/// tenant, whose limiter answers from tokens lent ahead. An entry remembers the tenant it was
/// built for and is rebuilt when the tenant's configuration is replaced; at its cap the memo
/// starts over.
#[derive(Debug, Default)]
pub struct BucketMemo(Mutex<Memo>);

type Memo = HashMap<String, (Arc<Tenant>, Arc<[Bucket]>), foldhash::fast::RandomState>;

/// Entries the memo holds at most.
const MEMO_CAP: usize = 50_000;

impl BucketMemo {
    fn buckets(&self, t: &Arc<Tenant>, caller: &Caller, tool: Option<&str>) -> Arc<[Bucket]> {
        let rate = &t.settings.limits.rate;
        if rate.tenant.is_none() && rate.principal.is_none() && rate.tools.is_empty() {
            return Arc::new([]);
        }
        // principal, tenant, tool, NUL-separated (NUL occurs in none of them).
        let mut key = principal_key(caller.principal.as_ref().map(|p| &p.owner));
        key.push('\0');
        key.push_str(&t.id);
        if let Some(tool) = tool {
            key.push('\0');
            key.push_str(tool);
        }
        let mut memo = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((built_for, b)) = memo.get(&key)
            && Arc::ptr_eq(built_for, t)
        {
            return b.clone();
        }
        let b: Arc<[Bucket]> = buckets(&t.id, &t.settings.limits, caller, tool).into();
        if memo.len() >= MEMO_CAP {
            memo.clear();
        }
        memo.insert(key, (t.clone(), b.clone()));
        b
    }
}

/// Charge the request; `Err` is the answer when a limit is hit (or the limiter is unreachable).
pub async fn check(
    state: &AppState,
    t: &Arc<Tenant>,
    caller: &Caller,
    tool: Option<&str>,
) -> Result<(), Refusal> {
    let buckets = state.buckets.buckets(t, caller, tool);
    if buckets.is_empty() {
        return Ok(());
    }
    let m = marina_telemetry::metrics();
    match state.limiter.check(&buckets).await {
        Ok(Decision::Allowed) => {
            for b in buckets.iter() {
                m.limit_decision(&t.id, scope_label(b.scope), true);
            }
            Ok(())
        }
        Ok(Decision::Limited {
            scope,
            rate,
            retry_after,
        }) => {
            m.limit_decision(&t.id, scope_label(scope), false);
            let ms = retry_after.as_millis().max(1) as u64;
            tracing::info!(
                target: "marina::audit",
                event = "rate_limited",
                reason = scope.name(),
                tenant = %t.id,
                subject = caller.principal.as_ref().map(|p| p.owner.subject.as_str()).unwrap_or(""),
                request_id = %caller.request_id,
                "rate limited"
            );
            let window = rate.period.as_secs();
            Err(Refusal::rate_limited(
                format!("rate limit exceeded ({} {rate}); retry later", scope.name()),
                ms,
                json!({"retryAfterMs": ms, "scope": scope.name()}),
                vec![
                    (
                        "ratelimit-policy",
                        format!("\"{}\";q={};w={window}", scope.name(), rate.count),
                    ),
                    (
                        "ratelimit",
                        format!("\"{}\";r=0;t={}", scope.name(), ms.div_ceil(1000)),
                    ),
                ],
            ))
        }
        Err(LimitError::Store(e)) => {
            tracing::warn!(error = %e, "rate limits cannot be checked");
            Err(Refusal::unavailable("session store unavailable; retry shortly"))
        }
    }
}

//! What this node sees of each upstream — reached or not, the last error, how many tools,
//! resources and prompts it listed — noted by the upstream kinds as they talk to their servers,
//! and flushed to the cluster's [`UpstreamReports`] for the admin API's upstream status.
//!
//! Noting costs the request path an atomic load per exchange: a success is reported again only
//! when the last report was an error or is older than [`REFRESH_MS`], a count only when it
//! changed or is as old. Errors are always reported (they are rare, and the latest one matters).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use marina_control::{Report, UpstreamReports};
use marina_core::store::{StoreError, now_ms};

/// A success or an unchanged count is reported again after this long.
pub const REFRESH_MS: u64 = 30_000;

/// Facts noted about one upstream on this node.
#[derive(Debug, Default)]
pub struct Health {
    /// Whose upstream (the metrics' `tenant` and `upstream` labels).
    tenant: String,
    upstream: String,
    /// When a success was last reported (Unix ms).
    ok_reported: AtomicU64,
    /// An error was reported after the last reported success.
    failing: AtomicBool,
    /// Facts not yet flushed: fact → (Unix ms, value).
    pending: Mutex<HashMap<&'static str, (u64, String)>>,
    /// The counts last reported: fact → (count, Unix ms).
    counts: Mutex<HashMap<&'static str, (usize, u64)>>,
}

impl Health {
    /// The health of `tenant`'s upstream `upstream`.
    pub fn named(tenant: &str, upstream: &str) -> Self {
        Self {
            tenant: tenant.to_owned(),
            upstream: upstream.to_owned(),
            ..Self::default()
        }
    }

    /// The tenant whose upstream this is.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    fn note(&self, fact: &'static str, at: u64, value: String) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fact, (at, value));
    }

    /// An exchange with the upstream succeeded.
    pub fn succeeded(&self) {
        let now = now_ms();
        if self.failing.load(Ordering::Relaxed)
            || now.saturating_sub(self.ok_reported.load(Ordering::Relaxed)) >= REFRESH_MS
        {
            self.ok_reported.store(now, Ordering::Relaxed);
            self.failing.store(false, Ordering::Relaxed);
            marina_telemetry::metrics().upstream_up(&self.tenant, &self.upstream, true);
            self.note("ok", now, String::new());
        }
    }

    /// An exchange with the upstream failed: it could not be reached, timed out or answered
    /// with a server error. `message` is safe to show the tenant (no credentials, no addresses
    /// the tenant did not configure).
    pub fn failed(&self, message: &str) {
        self.failing.store(true, Ordering::Relaxed);
        marina_telemetry::metrics().upstream_up(&self.tenant, &self.upstream, false);
        self.note("error", now_ms(), message.replace('\0', " "));
    }

    /// The upstream listed `n` items of `fact` (`tools`, `resources`, `prompts`).
    pub fn counted(&self, fact: &'static str, n: usize) {
        let now = now_ms();
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let due = counts
            .get(fact)
            .is_none_or(|(c, at)| *c != n || now.saturating_sub(*at) >= REFRESH_MS);
        if due {
            marina_telemetry::metrics().upstream_list(&self.tenant, &self.upstream, fact, n);
            counts.insert(fact, (n, now));
            drop(counts);
            self.note(fact, now, n.to_string());
        }
    }

    fn take(&self) -> HashMap<&'static str, (u64, String)> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Every upstream's [`Health`] on this node, by tenant and upstream name. An entry outlives the
/// tenant's rebuilds (a configuration change keeps what was seen) and is dropped with its tenant.
#[derive(Debug, Default)]
pub struct HealthBook(Mutex<HashMap<(String, String), Arc<Health>>>);

impl HealthBook {
    /// The health of `tenant`'s upstream `name`.
    pub fn of(&self, tenant: &str, name: &str) -> Arc<Health> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((tenant.to_owned(), name.to_owned()))
            .or_insert_with(|| Arc::new(Health::named(tenant, name)))
            .clone()
    }

    /// Report what was noted since the last flush (as seen by `node`), and forget the
    /// upstreams of tenants no longer `served`. Facts that could not be stored are noted again.
    pub async fn flush(
        &self,
        node: &str,
        reports: &dyn UpstreamReports,
        served: impl Fn(&str) -> bool,
    ) -> Result<(), StoreError> {
        let mut by_tenant: HashMap<String, Vec<(Arc<Health>, String)>> = HashMap::new();
        {
            let mut book = self.0.lock().unwrap_or_else(|p| p.into_inner());
            book.retain(|(tenant, _), _| served(tenant));
            for ((tenant, name), h) in book.iter() {
                by_tenant
                    .entry(tenant.clone())
                    .or_default()
                    .push((h.clone(), name.clone()));
            }
        }
        let mut result = Ok(());
        for (tenant, upstreams) in by_tenant {
            let mut batch = Vec::new();
            let mut taken = Vec::new();
            for (h, name) in upstreams {
                let facts = h.take();
                for (fact, (at_ms, value)) in &facts {
                    let value = match *fact {
                        "ok" => node.to_owned(),
                        "error" => format!("{node}|{value}"),
                        _ => value.clone(),
                    };
                    batch.push(Report {
                        upstream: name.clone(),
                        fact: (*fact).to_owned(),
                        at_ms: *at_ms,
                        value,
                    });
                }
                taken.push((h, facts));
            }
            if let Err(e) = reports.record(&tenant, &batch).await {
                for (h, facts) in taken {
                    let mut pending = h.pending.lock().unwrap_or_else(|p| p.into_inner());
                    for (fact, v) in facts {
                        pending.entry(fact).or_insert(v);
                    }
                }
                result = Err(e);
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use marina_control::MemoryReports;

    #[tokio::test]
    async fn facts_are_flushed_once_and_successes_throttled() {
        let book = HealthBook::default();
        let h = book.of("acme", "files");
        h.succeeded();
        h.succeeded(); // within REFRESH_MS: nothing new
        h.counted("tools", 3);
        h.counted("tools", 3);
        let reports = MemoryReports::default();
        book.flush("a", &reports, |_| true).await.unwrap();
        let got = reports.get("acme").await.unwrap();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got.iter().any(|r| r.fact == "ok" && r.value == "a"));
        assert!(got.iter().any(|r| r.fact == "tools" && r.value == "3"));
        // An error is reported, and the success after it too (the state flipped).
        h.failed("the upstream files could not be reached");
        h.succeeded();
        assert_eq!(h.take().len(), 2);
        // Nothing new: nothing flushed; a tenant no longer served is forgotten.
        book.flush("a", &reports, |_| false).await.unwrap();
        assert!(book.0.lock().unwrap().is_empty());
    }
}

//! The tenants this node serves, live: those of the configuration file, and those the control
//! plane stores, applied within a second of a write on any node. A tenant document is checked
//! and built here — the same checks for a file and for the admin API (unknown keys, auth,
//! upstream URLs through the SSRF guard, the casbin policy, duplicate tool names) — so nothing
//! invalid is ever stored or served.
//!
//! The node's tenants and their authenticators are replaced as one snapshot each (readers never
//! lock); open sessions pick up their tenant's new configuration through the node.

use std::collections::HashMap;
use std::sync::Arc;

use marina_auth::{Endpoint, Fetch, TenantAuth};
use marina_control::{StoredTenant, TenantDocs};
use marina_core::settings::{Settings, TenantSettings, valid_tenant_id};
use marina_core::store::StoreError;
use marina_core::tenant::Tenant;
use serde_json::Value;

use crate::authn::{Authenticators, IssuerFetch};
use crate::upstream::Upstreams;

/// Where a tenant's document lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The configuration file (read-only in the admin API).
    File,
    /// The control plane's store.
    Store,
}

/// A tenant being served, with its document.
#[derive(Debug)]
pub struct Served {
    /// The tenant, built.
    pub tenant: Arc<Tenant>,
    /// Its authentication.
    pub auth: Arc<TenantAuth>,
    /// Its document as written.
    pub doc: Value,
    /// Where it comes from.
    pub source: Source,
    /// Its version in the store (0 for the file's).
    pub version: u64,
    /// When it was last written (Unix ms; 0 for the file's).
    pub updated_ms: u64,
}

/// A document that cannot be served: the field at fault and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// JSON path of the offending field (`upstreams[0].url`), empty for the whole document.
    pub field: String,
    /// What is wrong with it.
    pub detail: String,
}

impl Invalid {
    fn new(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            detail: detail.into(),
        }
    }
}

/// Builds tenants from documents, the same way for every source.
#[derive(Debug, Clone)]
pub struct Builder {
    egress: Upstreams,
    public_url: String,
    fetch: Arc<dyn Fetch>,
    loopback_bind: bool,
}

impl Builder {
    /// Tenants reaching their services through `egress`, served at `public_url`.
    pub fn new(egress: Upstreams, public_url: &str, loopback_bind: bool) -> Self {
        Self {
            fetch: Arc::new(IssuerFetch(egress.clone())),
            egress,
            public_url: public_url.to_owned(),
            loopback_bind,
        }
    }

    /// Parse a document as the configuration file's tenant section (unknown keys refused).
    pub fn parse(doc: &Value) -> Result<TenantSettings, Invalid> {
        serde_path_to_error::deserialize(doc).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." { String::new() } else { path };
            Invalid::new(field, e.into_inner().to_string())
        })
    }

    /// Check and build tenant `id` from its settings.
    pub async fn build(
        &self,
        id: &str,
        ts: &TenantSettings,
    ) -> Result<(Arc<Tenant>, Arc<TenantAuth>), Invalid> {
        if !valid_tenant_id(id) {
            return Err(Invalid::new(
                "id",
                "tenant ids are 1-64 characters of A-Z a-z 0-9 - _",
            ));
        }
        ts.validate()
            .map_err(|(field, detail)| Invalid::new(field, detail))?;
        if ts.auth.is_none() && !ts.embedded_default && !self.loopback_bind {
            return Err(Invalid::new(
                "auth",
                "required on a non-loopback bind: api_keys, oauth, or `anonymous: true` to serve it openly on purpose",
            ));
        }
        let authorizer: Option<Arc<dyn marina_core::access::Authorizer>> = match &ts.rbac {
            Some(r) => Some(Arc::new(
                marina_policy::TenantPolicy::new(&r.policy)
                    .await
                    .map_err(|e| Invalid::new("rbac.policy", e.to_string()))?,
            )),
            None => None,
        };
        let providers = crate::upstream::providers(id, &ts.upstreams, &self.egress)
            .map_err(|e| Invalid::new("upstreams", e))?;
        let mut names = std::collections::HashSet::new();
        for tool in providers.iter().flat_map(|p| p.tools()) {
            if !names.insert(tool.name.clone()) {
                return Err(Invalid::new(
                    "upstreams",
                    format!("two tools are named {:?}", tool.name),
                ));
            }
        }
        let endpoint = Endpoint::new(&self.public_url, id);
        let auth = TenantAuth::new(ts.auth.as_ref(), &endpoint, self.fetch.clone())
            .map_err(|e| Invalid::new("auth", e))?;
        let tenant = Arc::new(Tenant {
            id: id.to_owned(),
            settings: ts.clone(),
            providers,
            authorizer,
            schemas: Default::default(),
        });
        Ok((tenant, Arc::new(auth)))
    }

    /// Refuse upstream URLs the SSRF guard would refuse at connect time (a literal private,
    /// loopback or metadata address; hosts by name are checked on every connection), so an
    /// administrator learns it when writing the tenant, not from its callers' errors.
    pub fn check_addresses(&self, ts: &TenantSettings) -> Result<(), Invalid> {
        use marina_core::settings::UpstreamSettings;
        for (i, u) in ts.upstreams.iter().enumerate() {
            let url = match u {
                UpstreamSettings::Builtin { .. } => continue,
                UpstreamSettings::Http(h) => &h.url,
                UpstreamSettings::Mcp(m) => &m.url,
            };
            let field = format!("upstreams[{i}].url");
            let parsed =
                reqwest::Url::parse(url).map_err(|e| Invalid::new(&field, format!("not a URL: {e}")))?;
            crate::upstream::egress::check_url(&self.egress.policy, &parsed)
                .map_err(|e| Invalid::new(&field, e))?;
        }
        Ok(())
    }

    /// Parse, check and build a document.
    pub async fn build_doc(&self, id: &str, doc: &Value) -> Result<(Arc<Tenant>, Arc<TenantAuth>), Invalid> {
        self.build(id, &Self::parse(doc)?).await
    }
}

/// Every tenant this node serves.
#[derive(Debug)]
pub struct Registry {
    builder: Builder,
    node: Arc<marina_actors::Node>,
    auth: Arc<Authenticators>,
    served: arc_swap::ArcSwap<HashMap<String, Arc<Served>>>,
    /// One apply at a time.
    applying: tokio::sync::Mutex<()>,
    /// API key uses already flushed to the store: (tenant, key id) → Unix ms.
    flushed: std::sync::Mutex<HashMap<(String, String), u64>>,
    /// When this node started (Unix ms): changes written before are not propagation delays.
    booted_ms: std::sync::OnceLock<u64>,
}

impl Registry {
    /// The file's tenants, built; the store's come with [`Self::sync`].
    pub async fn new(
        settings: &Settings,
        builder: Builder,
        node: Arc<marina_actors::Node>,
        auth: Arc<Authenticators>,
    ) -> anyhow::Result<Self> {
        let mut served = HashMap::new();
        for (id, ts) in &settings.tenants {
            let (tenant, ta) = builder
                .build(id, ts)
                .await
                .map_err(|e| anyhow::anyhow!("tenant {id}: {}{}", field_prefix(&e.field), e.detail))?;
            let doc = settings.tenant_docs.get(id).cloned().unwrap_or(Value::Null);
            served.insert(
                id.clone(),
                Arc::new(Served {
                    tenant,
                    auth: ta,
                    doc,
                    source: Source::File,
                    version: 0,
                    updated_ms: 0,
                }),
            );
        }
        let r = Self {
            builder,
            node,
            auth,
            served: arc_swap::ArcSwap::from_pointee(served),
            applying: tokio::sync::Mutex::new(()),
            flushed: Default::default(),
            booted_ms: std::sync::OnceLock::from(marina_core::store::now_ms()),
        };
        r.publish();
        Ok(r)
    }

    /// How documents are checked and built.
    pub fn builder(&self) -> &Builder {
        &self.builder
    }

    /// Every tenant served now.
    pub fn snapshot(&self) -> Arc<HashMap<String, Arc<Served>>> {
        self.served.load_full()
    }

    /// One tenant served now.
    pub fn get(&self, id: &str) -> Option<Arc<Served>> {
        self.served.load().get(id).cloned()
    }

    /// Hand the snapshot to the request path: authenticators first, so a revoked credential is
    /// refused no later than the tenant's other changes apply.
    fn publish(&self) {
        let served = self.served.load();
        marina_telemetry::metrics().set_tenants(served.len());
        self.auth.set(
            served
                .iter()
                .map(|(id, s)| (id.clone(), s.auth.clone()))
                .collect(),
        );
        self.node.set_tenants(
            served
                .iter()
                .map(|(id, s)| (id.clone(), s.tenant.clone()))
                .collect(),
        );
    }

    /// Bring the store's tenants up to date: build what is new or changed, drop what is gone.
    /// A stored document that no longer builds here (say, an upstream's address is now refused)
    /// keeps its last good version served and is logged. The file's tenants always win.
    pub async fn sync(&self, docs: &dyn TenantDocs) -> Result<(), StoreError> {
        let _one = self.applying.lock().await;
        let stored = docs.list().await?;
        let current = self.served.load_full();
        let mut next: HashMap<String, Arc<Served>> = current
            .iter()
            .filter(|(_, s)| s.source == Source::File)
            .map(|(id, s)| (id.clone(), s.clone()))
            .collect();
        let mut changed = false;
        for StoredTenant {
            id,
            version,
            doc,
            updated_ms,
        } in stored
        {
            if next.contains_key(&id) {
                continue;
            }
            if let Some(s) = current.get(&id).filter(|s| s.version == version) {
                next.insert(id, s.clone());
                continue;
            }
            match self.builder.build_doc(&id, &doc).await {
                Ok((tenant, auth)) => {
                    changed = true;
                    // Changes written while this node runs (not the backlog it read at start).
                    let now = marina_core::store::now_ms();
                    if self.booted_ms.get().is_some_and(|b| updated_ms >= *b) {
                        marina_telemetry::metrics().control_applied(std::time::Duration::from_millis(
                            now.saturating_sub(updated_ms),
                        ));
                    }
                    next.insert(
                        id,
                        Arc::new(Served {
                            tenant,
                            auth,
                            doc,
                            source: Source::Store,
                            version,
                            updated_ms,
                        }),
                    );
                }
                Err(e) => {
                    marina_telemetry::metrics().control_apply_error();
                    tracing::error!(tenant = %id, version, field = %e.field, error = %e.detail, "stored tenant cannot be applied; keeping its previous version");
                    if let Some(s) = current.get(&id) {
                        next.insert(id, s.clone());
                    }
                }
            }
        }
        changed |= current.keys().any(|id| !next.contains_key(id));
        for gone in current.keys().filter(|id| !next.contains_key(*id)) {
            marina_telemetry::metrics().forget_tenant(gone, []);
        }
        if changed {
            self.served.store(Arc::new(next));
            self.publish();
        }
        Ok(())
    }

    /// Keep applying the store's changes until the task is dropped: at once on a change
    /// message, and at least every `poll` (a missed message heals itself).
    pub async fn follow(self: Arc<Self>, docs: Arc<dyn TenantDocs>, poll: std::time::Duration) {
        let mut seen = None;
        loop {
            match docs.version().await {
                Ok(v) if Some(v) != seen => match self.sync(docs.as_ref()).await {
                    Ok(()) => seen = Some(v),
                    Err(e) => tracing::warn!(error = %e, "cannot read tenant configuration; will retry"),
                },
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "cannot read the configuration version"),
            }
            docs.changed(poll).await;
        }
    }
}

impl Registry {
    /// Hand the store the API key uses this node saw since the last flush (the admin API lists
    /// them as each key's last use).
    pub async fn flush_key_usage(&self, usage: &dyn marina_control::KeyUsage) {
        let served = self.served.load_full();
        self.flushed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(t, _), _| served.contains_key(t));
        for (id, s) in served.iter() {
            let fresh: Vec<(String, u64)> = {
                let flushed = self.flushed.lock().unwrap_or_else(|p| p.into_inner());
                s.auth
                    .key_usage()
                    .into_iter()
                    .filter(|(k, ms)| flushed.get(&(id.clone(), k.clone())).is_none_or(|f| f < ms))
                    .collect()
            };
            if fresh.is_empty() {
                continue;
            }
            match usage.record(id, &fresh).await {
                Ok(()) => {
                    let mut flushed = self.flushed.lock().unwrap_or_else(|p| p.into_inner());
                    for (k, ms) in fresh {
                        flushed.insert((id.clone(), k), ms);
                    }
                }
                Err(e) => tracing::debug!(error = %e, tenant = %id, "API key uses not flushed; will retry"),
            }
        }
    }
}

fn field_prefix(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!("{field}: ")
    }
}

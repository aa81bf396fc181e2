//! Resources, resource templates, prompts and completion of the tenant's upstream MCP servers,
//! aggregated under the session: lists merged in a deterministic order with gateway-owned cursors,
//! and every other request routed to the upstream that owns the resource or prompt.
//!
//! Resources keep their URIs — links in tool results and the upstreams' own documentation stay
//! valid — unless two upstreams publish the same URI (or URI template): the first in configuration
//! order keeps it, every later one's copy is published as `marina://<upstream>/<uri>`, so that
//! everything listed is readable and reaches its owner. `marina://<upstream>/<uri>` addresses any
//! upstream's resource explicitly. A plain URI's owner is found in the upstreams' resource lists,
//! then by their templates (RFC 6570 level-1 matching, see [`template_matches`]). Prompts are
//! published under the same prefix scheme as tools. Lists are read from the upstreams on each
//! request (not cached yet).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use std::rc::Rc;
use std::sync::Arc;

use marina_core::access::{Access, action};
use marina_core::protocol::{RpcError, code};
use marina_core::tenant::Tenant;
use marina_core::tools::{SessionContext, ToolProvider};
use serde_json::{Value, json};

use super::call::SessionCtx;
use super::state::{Shared, Who, page};

/// A merged listing: items with the index of their provider.
type Listing = Rc<Vec<(Value, usize)>>;

/// What one client's resources, prompts and completion requests share: the URIs it was shown
/// namespaced, and its last listings (for routing). A session keeps one for its life; a
/// stateless request starts from an empty one.
#[derive(Debug, Default)]
pub struct Features {
    /// Resource URIs shown namespaced (`marina://<upstream>/<uri>`, because an earlier upstream
    /// publishes the same URI), as (upstream name, original URI): their update notifications and
    /// links are rewritten to match.
    namespaced: RefCell<HashSet<(String, String)>>,
    /// The last merged listing per list method.
    listings: RefCell<HashMap<String, (Instant, Listing)>>,
}

/// Cuts a page of a filtered list: (its field, its items, the request's cursor).
pub type PageFn<'a> = dyn Fn(&str, &[Value], Option<&Value>) -> Result<Value, RpcError> + 'a;

/// Who makes a feature request, and how its answers are cut.
pub struct FeatureCaller<'a> {
    /// The tenant as served now.
    pub tenant: &'a Tenant,
    /// The caller's access (lists are filtered by it).
    pub access: &'a Access,
    /// Decide a request for one item (object, action), auditing a denial.
    pub authorize: &'a dyn Fn(&str, &str) -> bool,
    /// A page of a filtered list: (its field, its items, the request's cursor).
    pub page: &'a PageFn<'a>,
    /// Names the caller in logs (a session tag, a request id).
    pub label: &'a str,
}

/// The tenant's providers that serve resources, prompts and completion.
fn feature_providers(tenant: &Tenant) -> Vec<Arc<dyn ToolProvider>> {
    tenant
        .providers
        .iter()
        .filter(|p| p.serves_features())
        .cloned()
        .collect()
}

/// Does `uri` match the URI template `template`? Level-1 templates only: every `{var}` matches a
/// non-empty run of characters other than `/`, `?` and `#`; literal text must match exactly. (A
/// matcher is all routing needs — no expansion — so a 20-line function instead of a crate.)
pub(crate) fn template_matches(template: &str, uri: &str) -> bool {
    fn go(t: &str, u: &str) -> bool {
        match t.find('{') {
            None => t == u,
            Some(open) => {
                let Some(close) = t[open..].find('}').map(|c| open + c) else {
                    return t == u;
                };
                let (literal, rest) = (&t[..open], &t[close + 1..]);
                let Some(u) = u.strip_prefix(literal) else {
                    return false;
                };
                let run = u.find(['/', '?', '#']).unwrap_or(u.len());
                // The variable takes 1..=run characters; try each split (templates are short).
                (1..=run).any(|n| go(rest, &u[n..]))
            }
        }
    }
    go(template, uri)
}

/// How long routing trusts a session's last listing of an upstream's resources, templates or
/// prompts (an upstream without `listChanged` notifications is re-read at least this often).
const LISTING_TTL: Duration = Duration::from_secs(30);

/// Scheme of namespaced resource URIs.
const NAMESPACE: &str = "marina://";

/// `uri` of upstream `upstream` as published when another upstream already publishes it.
fn namespaced(upstream: &str, uri: &str) -> String {
    format!("{NAMESPACE}{upstream}/{uri}")
}

/// The upstream name and original URI of a namespaced URI.
fn split_namespaced(uri: &str) -> Option<(&str, &str)> {
    uri.strip_prefix(NAMESPACE)?.split_once('/')
}

/// Namespace the URIs of `resource_link` and embedded `resource` items of a tool result's
/// content that `is_namespaced`, as published by upstream `upstream`.
fn rewrite_links(result: &mut Value, upstream: &str, is_namespaced: impl Fn(&str) -> bool) {
    let Some(content) = result.get_mut("content").and_then(Value::as_array_mut) else {
        return;
    };
    for item in content {
        // `pointer_mut`, not indexing: an upstream's malformed item must not panic.
        let pointer = match item["type"].as_str() {
            Some("resource_link") => "/uri",
            Some("resource") => "/resource/uri",
            _ => continue,
        };
        if let Some(uri) = item.pointer_mut(pointer)
            && let Some(plain) = uri.as_str().filter(|u| is_namespaced(u)).map(str::to_owned)
        {
            *uri = Value::String(namespaced(upstream, &plain));
        }
    }
}

/// Where a resource request goes: the provider index and the URI that upstream knows, and the
/// URI the client used when it was namespaced (results are rewritten back to it).
struct Route {
    owner: usize,
    uri: String,
    published: Option<String>,
}

impl Features {
    /// Rewrite the URIs (field `key`) of a merged resource or template list: the first provider to
    /// publish a URI keeps it; later providers' copies are namespaced and remembered.
    fn namespace_duplicates(
        &self,
        providers: &[Arc<dyn ToolProvider>],
        items: &mut [(Value, usize)],
        key: &str,
    ) {
        let mut first: HashMap<String, usize> = HashMap::new();
        for (item, i) in items.iter_mut() {
            let Some(uri) = item[key].as_str().map(str::to_owned) else {
                continue;
            };
            let owner = *first.entry(uri.clone()).or_insert(*i);
            if owner != *i {
                item[key] = Value::String(namespaced(providers[*i].name(), &uri));
                self.namespaced
                    .borrow_mut()
                    .insert((providers[*i].name().to_owned(), uri));
            }
        }
    }

    /// A `notifications/resources/updated` from provider `provider`: name the resource as this
    /// session was shown it.
    pub fn published_update(&self, tenant: &Tenant, provider: usize, mut params: Value) -> Value {
        let Some(uri) = params["uri"].as_str().map(str::to_owned) else {
            return params;
        };
        // (An index from before a tenant change may name no provider now.)
        let Some(name) = tenant.providers.get(provider).map(|p| p.name().to_owned()) else {
            return params;
        };
        if self.namespaced.borrow().contains(&(name.clone(), uri.clone())) {
            params["uri"] = Value::String(namespaced(&name, &uri));
        }
        params
    }

    /// Resource links and embedded resources in a tool result of provider `provider` name the
    /// resource as this session was shown it (namespaced when another upstream has the URI).
    pub fn publish_links(&self, tenant: &Tenant, provider: usize, result: &mut Value) {
        let namespaced = self.namespaced.borrow();
        if namespaced.is_empty() {
            return;
        }
        let Some(name) = tenant.providers.get(provider).map(|p| p.name().to_owned()) else {
            return;
        };
        rewrite_links(result, &name, |uri| {
            namespaced.contains(&(name.clone(), uri.to_owned()))
        });
    }

    /// Every item of `method`'s list across upstreams (an upstream that fails contributes nothing),
    /// each with the index of its provider in `providers`.
    async fn gather(
        &self,
        ctx: &dyn SessionContext,
        label: &str,
        providers: &[Arc<dyn ToolProvider>],
        method: &str,
    ) -> Vec<(Value, usize)> {
        let lists =
            futures_util::future::join_all(providers.iter().map(|p| p.list_feature(method, ctx))).await;
        let mut items = Vec::new();
        for (i, list) in lists.into_iter().enumerate() {
            match list {
                Ok(list) => items.extend(list.into_iter().map(|item| (item, i))),
                Err(e) => {
                    tracing::warn!(caller = label, method, error = %e.message, "an upstream could not list")
                }
            }
        }
        items
    }

    /// Where a request for resource `uri` goes: a namespaced URI to the upstream it names;
    /// otherwise the first upstream listing exactly that URI, else the first whose template
    /// matches it, else — with a single upstream — that one.
    async fn resource_route(
        &self,
        ctx: &dyn SessionContext,
        label: &str,
        providers: &[Arc<dyn ToolProvider>],
        uri: &str,
    ) -> Option<Route> {
        if let Some((name, original)) = split_namespaced(uri)
            && let Some(owner) = providers.iter().position(|p| p.name() == name)
        {
            return Some(Route {
                owner,
                uri: original.to_owned(),
                published: Some(uri.to_owned()),
            });
        }
        let plain = |owner| Route {
            owner,
            uri: uri.to_owned(),
            published: None,
        };
        if providers.len() == 1 {
            return Some(plain(0));
        }
        if let Some(i) = self
            .find_listed(ctx, label, providers, "resources/list", &|r| r["uri"] == uri)
            .await
        {
            return Some(plain(i));
        }
        let by_template = |t: &Value| {
            t["uriTemplate"]
                .as_str()
                .is_some_and(|tpl| tpl == uri || template_matches(tpl, uri))
        };
        self.find_listed(ctx, label, providers, "resources/templates/list", &by_template)
            .await
            .map(plain)
    }

    /// The provider of the first item of `method`'s merged list that satisfies `wanted`. Routing
    /// reads the session's last listing (at most [`LISTING_TTL`] old, dropped when an upstream
    /// says its list changed) and lists afresh only when that finds nothing — so a read or a
    /// prompt costs one upstream round trip, not three, yet new items are found at once.
    async fn find_listed(
        &self,
        ctx: &dyn SessionContext,
        label: &str,
        providers: &[Arc<dyn ToolProvider>],
        method: &str,
        wanted: &dyn Fn(&Value) -> bool,
    ) -> Option<usize> {
        let cached = self
            .listings
            .borrow()
            .get(method)
            .filter(|(at, _)| at.elapsed() < LISTING_TTL)
            .map(|(_, items)| items.clone());
        if let Some(items) = cached
            && let Some((_, i)) = items.iter().find(|(item, _)| wanted(item))
        {
            return Some(*i);
        }
        let items = self.gather(ctx, label, providers, method).await;
        let found = items.iter().find(|(item, _)| wanted(item)).map(|(_, i)| *i);
        self.remember_listing(method, items);
        found
    }

    fn remember_listing(&self, method: &str, items: Vec<(Value, usize)>) {
        self.listings
            .borrow_mut()
            .insert(method.to_owned(), (Instant::now(), Rc::new(items)));
    }

    /// An upstream's list changed: routing must not trust the session's last listing.
    pub fn forget_listings(&self) {
        self.listings.borrow_mut().clear();
    }

    async fn prompt_owner(
        &self,
        ctx: &dyn SessionContext,
        label: &str,
        providers: &[Arc<dyn ToolProvider>],
        name: &str,
    ) -> Option<usize> {
        self.find_listed(ctx, label, providers, "prompts/list", &|p| p["name"] == name)
            .await
    }

    /// Serve a resources/prompts/completion request of `caller` from the tenant's upstreams.
    pub async fn request(
        &self,
        caller: &FeatureCaller<'_>,
        ctx: &dyn SessionContext,
        method: &str,
        params: Value,
    ) -> Result<Value, RpcError> {
        let providers = feature_providers(caller.tenant);
        let label = caller.label;
        let list = |key: &'static str, sort_by: &'static str| (key, sort_by);
        let listing = match method {
            "resources/list" => Some(list("resources", "uri")),
            "resources/templates/list" => Some(list("resourceTemplates", "uriTemplate")),
            "prompts/list" => Some(list("prompts", "name")),
            _ => None,
        };
        if let Some((key, sort_by)) = listing {
            let mut gathered = self.gather(ctx, label, &providers, method).await;
            self.remember_listing(method, gathered.clone());
            if sort_by != "name" {
                self.namespace_duplicates(&providers, &mut gathered, sort_by);
            }
            // Only what the caller may use (pages are cut from the filtered list).
            let (kind, act) = if key == "prompts" {
                ("prompt", action::GET)
            } else {
                ("resource", action::READ)
            };
            let mut items: Vec<Value> = gathered
                .into_iter()
                .map(|(v, _)| v)
                .filter(|v| {
                    let id = v[sort_by].as_str().unwrap_or_default();
                    caller.tenant.permits(caller.access, &format!("{kind}:{id}"), act)
                })
                .collect();
            items.sort_by(|a, b| {
                a[sort_by]
                    .as_str()
                    .unwrap_or_default()
                    .cmp(b[sort_by].as_str().unwrap_or_default())
            });
            return (caller.page)(key, &items, params.get("cursor"));
        }
        let mut params = params;
        let (owner, published) = match method {
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                let uri = params
                    .get("uri")
                    .and_then(Value::as_str)
                    .ok_or_else(|| RpcError::invalid_params("uri must be a string"))?
                    .to_owned();
                let not_found = || {
                    RpcError::new(code::RESOURCE_NOT_FOUND, "resource not found")
                        .with_data(json!({"uri": uri}))
                };
                // A resource the caller may not read is answered exactly like a missing one,
                // before any upstream is asked.
                if !(caller.authorize)(&format!("resource:{uri}"), action::READ) {
                    return Err(not_found());
                }
                let route = self
                    .resource_route(ctx, label, &providers, &uri)
                    .await
                    .ok_or_else(not_found)?;
                if route.published.is_some() && method == "resources/subscribe" {
                    // Its updates must carry the URI the client subscribed to.
                    self.namespaced
                        .borrow_mut()
                        .insert((providers[route.owner].name().to_owned(), route.uri.clone()));
                }
                params["uri"] = Value::String(route.uri.clone());
                (route.owner, route.published.map(|p| (route.uri, p)))
            }
            "prompts/get" => {
                let name = params
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| RpcError::invalid_params("name must be a string"))?;
                let unknown = || RpcError::invalid_params("unknown prompt");
                if !(caller.authorize)(&format!("prompt:{name}"), action::GET) {
                    return Err(unknown());
                }
                let owner = self
                    .prompt_owner(ctx, label, &providers, name)
                    .await
                    .ok_or_else(unknown)?;
                (owner, None)
            }
            "completion/complete" => {
                let reference = params["ref"].clone();
                let found = match reference["type"].as_str() {
                    Some("ref/prompt") => match reference["name"].as_str() {
                        Some(name) if (caller.authorize)(&format!("prompt:{name}"), action::GET) => {
                            self.prompt_owner(ctx, label, &providers, name).await
                        }
                        _ => None,
                    },
                    Some("ref/resource") => match reference["uri"].as_str() {
                        Some(uri) if !(caller.authorize)(&format!("resource:{uri}"), action::READ) => None,
                        Some(uri) => self.resource_route(ctx, label, &providers, uri).await.map(|r| {
                            params["ref"]["uri"] = Value::String(r.uri);
                            r.owner
                        }),
                        None => None,
                    },
                    _ => None,
                };
                let owner = found.ok_or_else(|| {
                    RpcError::invalid_params("completion reference names no known prompt or resource")
                })?;
                (owner, None)
            }
            _ => return Err(RpcError::method_not_found(method)),
        };
        let mut result = providers[owner].request_feature(method, params, ctx).await?;
        if let (Some((original, published)), Some(contents)) = (
            published,
            result.get_mut("contents").and_then(Value::as_array_mut),
        ) {
            // The contents name the resource as the client asked for it.
            for content in contents.iter_mut().filter(|c| c["uri"] == original.as_str()) {
                content["uri"] = Value::String(published.clone());
            }
        }
        Ok(result)
    }
}

impl Shared {
    /// A `notifications/resources/updated` from provider `provider`, named as this session was
    /// shown the resource.
    pub(crate) fn published_update(&self, provider: usize, params: Value) -> Value {
        self.features.published_update(&self.tenant(), provider, params)
    }

    /// Name the resources a tool result of provider `provider` links as this session was shown
    /// them.
    pub(crate) fn publish_links(&self, provider: usize, result: &mut Value) {
        self.features.publish_links(&self.tenant(), provider, result);
    }

    /// An upstream's list changed: routing must not trust the session's last listing.
    pub(crate) fn forget_listings(&self) {
        self.features.forget_listings();
    }

    /// Serve a resources/prompts/completion request of the session's owner.
    pub(crate) async fn feature_request(
        self: Rc<Self>,
        method: &str,
        params: Value,
        who: &Who,
    ) -> Result<Value, RpcError> {
        self.ensure_followers();
        let tenant = self.tenant();
        let ctx = SessionCtx(self.clone());
        let size = self.node.sessions().page_size;
        let authorize = |object: &str, act: &str| self.authorize(who, object, act);
        let page = |key: &str, items: &[Value], cursor: Option<&Value>| {
            page(key, key, &self.id, items, cursor, size)
        };
        let caller = FeatureCaller {
            tenant: &tenant,
            access: &who.access,
            authorize: &authorize,
            page: &page,
            label: self.tag(),
        };
        self.features.request(&caller, &ctx, method, params).await
    }
}

#[cfg(test)]
mod tests {
    use super::{rewrite_links, template_matches};
    use serde_json::json;

    #[test]
    fn links_to_namespaced_resources_are_rewritten() {
        let mut result = json!({"content": [
            {"type": "resource_link", "uri": "file:///a", "name": "a"},
            {"type": "resource", "resource": {"uri": "file:///a", "text": "x"}},
            {"type": "resource_link", "uri": "file:///b", "name": "b"},
            {"type": "resource", "resource": "malformed"},
            {"type": "resource_link"},
            {"type": "text", "text": "file:///a"},
        ]});
        rewrite_links(&mut result, "twin", |u| u == "file:///a");
        let c = &result["content"];
        assert_eq!(c[0]["uri"], "marina://twin/file:///a");
        assert_eq!(c[1]["resource"]["uri"], "marina://twin/file:///a");
        assert_eq!(c[2]["uri"], "file:///b");
        assert_eq!(c[3]["resource"], "malformed");
        assert_eq!(c[5]["text"], "file:///a");
    }

    #[test]
    fn level_one_templates_match_uris() {
        assert!(template_matches(
            "test://template/{id}/data",
            "test://template/123/data"
        ));
        assert!(!template_matches(
            "test://template/{id}/data",
            "test://template//data"
        ));
        assert!(!template_matches(
            "test://template/{id}/data",
            "test://template/1/2/data"
        ));
        assert!(template_matches("file:///{path}", "file:///readme"));
        assert!(template_matches("db://{table}/{row}", "db://users/42"));
        assert!(!template_matches("db://{table}/{row}", "db://users"));
        assert!(
            template_matches("static://a", "static://a") && !template_matches("static://a", "static://b")
        );
    }
}

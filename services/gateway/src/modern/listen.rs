//! `subscriptions/listen` (2026-07-28): one long-lived response stream per listener, in place of
//! the sessionful era's GET stream. It is acknowledged first, every message on it carries the
//! subscription's id (the request's JSON-RPC id) in `_meta`, and it carries only the types asked
//! for. A change of the tenant anywhere in the cluster reaches it: every node applies the control
//! plane's changes and tells its listeners (`Node::tenant_changes`). Keep-alive comments flow well
//! under the 100–125 s idle cut-offs of common proxies; the stream ends gracefully (a response)
//! when the node drains, the tenant goes away or the credential expires.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix_web::HttpResponse;
use bytes::Bytes;
use marina_core::access::{Access, action};
use marina_core::protocol::{self, RpcError, result_response};
use marina_core::tenant::Tenant;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::state::AppState;

/// The `_meta` key naming the subscription a message belongs to.
const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";
/// A comment line this often keeps proxies from cutting an idle stream.
const KEEP_ALIVE: Duration = Duration::from_secs(25);
/// Longest wait for a tenant's upstreams to be followed before a listener is acknowledged.
const READY_WAIT: Duration = Duration::from_secs(3);

/// The list-changed types a listener may ask for, with their notification.
const LIST_CHANGES: [(&str, &str); 3] = [
    ("toolsListChanged", "notifications/tools/list_changed"),
    ("promptsListChanged", "notifications/prompts/list_changed"),
    ("resourcesListChanged", "notifications/resources/list_changed"),
];

/// Most resources one listener may subscribe to.
const MAX_SUBSCRIPTIONS: usize = 100;
/// Longest resource URI a listener may subscribe to.
const MAX_URI: usize = 2048;

/// The resources of a request's `notifications.resourceSubscriptions` that `access` may read on
/// tenant `t` (none when no upstream serves resources). What it may not read is left out of the
/// acknowledgment, exactly like what does not exist.
fn subscriptions(t: &Tenant, filter: &Value, access: &Access) -> Result<Vec<String>, RpcError> {
    let Some(asked) = filter.get("resourceSubscriptions") else {
        return Ok(Vec::new());
    };
    let bad = || {
        RpcError::invalid_params(format!(
            "resourceSubscriptions must be an array of at most {MAX_SUBSCRIPTIONS} URIs"
        ))
    };
    let asked = asked
        .as_array()
        .filter(|a| a.len() <= MAX_SUBSCRIPTIONS)
        .ok_or_else(bad)?;
    let mut uris = Vec::new();
    for uri in asked {
        let uri = uri
            .as_str()
            .filter(|u| !u.is_empty() && u.len() <= MAX_URI)
            .ok_or_else(bad)?;
        if !uris.iter().any(|u| u == uri) {
            uris.push(uri.to_owned());
        }
    }
    if !t.providers.iter().any(|p| p.serves_features()) {
        return Ok(Vec::new());
    }
    uris.retain(|u| t.permits(access, &format!("resource:{u}"), action::READ));
    Ok(uris)
}

/// An upstream's resource update for a listener subscribed to `uris`: under the URI the listener
/// used (plain, or `marina://<upstream>/<uri>`), `None` when it subscribed to neither.
fn update_for(uris: &[String], source: &str, mut params: Value) -> Option<Value> {
    let uri = params["uri"].as_str()?.to_owned();
    let namespaced = format!("marina://{source}/{uri}");
    if uris.contains(&uri) {
        return Some(params);
    }
    uris.contains(&namespaced).then(|| {
        params["uri"] = json!(namespaced);
        params
    })
}

/// The types honored for a request's `notifications` filter on tenant `t`: list changes (tools
/// always; prompts and resources when an upstream serves them).
fn honored(t: &Tenant, filter: &Value) -> Result<Vec<(&'static str, &'static str)>, RpcError> {
    if !filter.is_object() && !filter.is_null() {
        return Err(RpcError::invalid_params("notifications must be an object"));
    }
    let features = t.providers.iter().any(|p| p.serves_features());
    Ok(LIST_CHANGES
        .into_iter()
        .filter(|(k, _)| filter.get(*k) == Some(&Value::Bool(true)))
        .filter(|(k, _)| *k == "toolsListChanged" || features)
        .collect())
}

fn tagged(id: &Value, method: &str, mut params: Value) -> Bytes {
    params["_meta"] = json!({ SUBSCRIPTION_ID: id });
    frame(&protocol::notification(method, params))
}

fn frame(msg: &Value) -> Bytes {
    Bytes::from(format!("event: message\ndata: {msg}\n\n"))
}

/// Open a listener for request `id` with `params`; `until`: when the caller's credential expires.
pub fn listen(
    state: &AppState,
    t: &Arc<Tenant>,
    id: Value,
    params: &Value,
    until: Option<SystemTime>,
    access: Access,
) -> Result<HttpResponse, RpcError> {
    let filter = params.get("notifications").unwrap_or(&Value::Null);
    let types = honored(t, filter)?;
    let mut uris = subscriptions(t, filter, &access)?;
    let asked_uris = filter.get("resourceSubscriptions").cloned();
    let mut ack = json!({});
    for (k, _) in &types {
        ack[*k] = json!(true);
    }
    if asked_uris.is_some() && !uris.is_empty() {
        ack["resourceSubscriptions"] = json!(uris);
    }
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let node = state.node.clone();
    let watchers = state.watchers.clone();
    let mut watching = watchers.join(t, &uris);
    let mut changes = node.tenant_changes();
    let draining = node.draining_signal();
    let tenant = t.id.clone();
    let ack = tagged(
        &id,
        "notifications/subscriptions/acknowledged",
        json!({"notifications": ack}),
    );
    actix_web::rt::spawn(async move {
        // Acknowledged once the tenant's upstreams are followed (or after a bound, when one
        // cannot be): a change they announce after the acknowledgment is heard.
        watching.ready(READY_WAIT).await;
        if tx.send(ack).await.is_err() {
            return;
        }
        let expiry = until.map(|u| u.duration_since(SystemTime::now()).unwrap_or_default());
        let expired = async move {
            match expiry {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(expired);
        let mut keep_alive = tokio::time::interval(KEEP_ALIVE);
        keep_alive.tick().await;
        let graceful = loop {
            let changed = tokio::select! {
                () = tx.closed() => break false,
                () = draining.cancelled() => break true,
                () = &mut expired => break true,
                _ = keep_alive.tick() => {
                    if tx.send(Bytes::from_static(b": keep-alive\n\n")).await.is_err() {
                        break false;
                    }
                    continue;
                }
                c = changes.recv() => c,
                n = watching.rx.recv() => match n {
                    // An upstream's own change: passed on when the listener asked for its type.
                    Ok(note) => {
                        let method = note["method"].as_str().unwrap_or_default();
                        let mut params = note.get("params").cloned().unwrap_or_else(|| json!({}));
                        params.as_object_mut().map(|p| p.remove("_meta"));
                        let relayed = if method == "notifications/resources/updated" {
                            update_for(&uris, note["source"].as_str().unwrap_or_default(), params)
                        } else {
                            types.iter().any(|(_, m)| *m == method).then_some(params)
                        };
                        if let Some(params) = relayed
                            && tx.send(tagged(&id, method, params)).await.is_err()
                        {
                            return;
                        }
                        continue;
                    }
                    // Missed some: say that everything may have changed.
                    Err(broadcast::error::RecvError::Lagged(_)) => Ok(tenant.clone()),
                    // The tenant changed and its watcher with it (handled below).
                    Err(broadcast::error::RecvError::Closed) => Ok(tenant.clone()),
                },
            };
            match changed {
                Ok(t) if t != tenant => continue,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break true,
            }
            let Some(current) = node.tenant(&tenant).filter(|t| !t.settings.disabled) else {
                break true;
            };
            // The tenant may have new upstreams, and a new policy: watch what it is now, and
            // only what the caller may still read.
            uris.retain(|u| current.permits(&access, &format!("resource:{u}"), action::READ));
            watching = watchers.join(&current, &uris);
            for (_, method) in &types {
                if tx.send(tagged(&id, method, json!({}))).await.is_err() {
                    return;
                }
            }
        };
        if graceful {
            // A response ends the subscription cleanly (a dropped stream would mean "reconnect").
            let done = result_response(
                &id,
                json!({"resultType": "complete", "_meta": { SUBSCRIPTION_ID: id }}),
            );
            let _ = tx.send(frame(&done)).await;
        }
    });
    let listening = Listening::new(&t.id);
    let body = futures_util::stream::unfold((rx, listening), |(mut rx, l)| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), (rx, l)))
    });
    let body = crate::sse::counted("listen", Box::pin(body));
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .streaming(body))
}

/// A `subscriptions/listen` stream of a tenant, counted while it is open
/// (`marina_listen_streams_open`).
struct Listening(String);

impl Listening {
    fn new(tenant: &str) -> Self {
        marina_telemetry::metrics().listen_stream(tenant, 1);
        Self(tenant.to_owned())
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        marina_telemetry::metrics().listen_stream(&self.0, -1);
    }
}

//! A round-robin HTTP load balancer for tests: every request (not connection) goes to the next
//! backend, so consecutive requests of one MCP session land on different Marina nodes. Requests
//! and responses are streamed (SSE passes through as it is produced); `Host` and `Origin` are
//! passed unchanged, as a real balancer in front of Marina would.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use futures_util::TryStreamExt as _;

/// Hop-by-hop headers a proxy must not forward.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
];

/// Start the balancer on a free port in front of `backends` (base URLs); returns its base URL.
/// Must run inside an actix System.
pub async fn start_balancer(backends: Vec<String>) -> String {
    let backends = Arc::new(backends);
    let next = Arc::new(AtomicUsize::new(0));
    let client = reqwest::Client::new();
    let server = HttpServer::new(move || {
        let (backends, next, client) = (backends.clone(), next.clone(), client.clone());
        App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
            let (backends, next, client) = (backends.clone(), next.clone(), client.clone());
            async move {
                let backend = &backends[next.fetch_add(1, Ordering::Relaxed) % backends.len()];
                let url = format!(
                    "{backend}{}",
                    req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/")
                );
                let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes())
                    .unwrap_or(reqwest::Method::GET);
                let mut out = client.request(method, url);
                for (k, v) in req.headers() {
                    if !HOP_BY_HOP.contains(&k.as_str()) {
                        out = out.header(k.as_str(), v.as_bytes());
                    }
                }
                let Ok(resp) = out.body(body.to_vec()).send().await else {
                    return HttpResponse::BadGateway().finish();
                };
                let mut builder = HttpResponse::build(
                    actix_web::http::StatusCode::from_u16(resp.status().as_u16()).unwrap(),
                );
                for (k, v) in resp.headers() {
                    if !HOP_BY_HOP.contains(&k.as_str()) {
                        builder.insert_header((k.as_str(), v.as_bytes()));
                    }
                }
                builder.streaming(
                    resp.bytes_stream()
                        .map_err(|e| actix_web::error::ErrorBadGateway(e.to_string())),
                )
            }
        }))
    })
    .workers(2)
    .bind(("127.0.0.1", 0))
    .expect("bind balancer");
    let port = server.addrs()[0].port();
    actix_rt::spawn(server.run());
    format!("http://127.0.0.1:{port}")
}

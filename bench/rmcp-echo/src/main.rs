//! Minimal fast MCP upstream for the gateway-overhead benchmark: one `echo` tool over Streamable
//! HTTP with the official Rust SDK (rmcp 3.11.0), stateless JSON responses. After the harness of
//! shared/research/perf-peers.md §3.1, so figures compare with the peers measured there.
//! env: ADDR (default 127.0.0.1:9100), THREADS (tokio workers, default 1).

use std::sync::Arc;

use rmcp::model::*;
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};

#[derive(Clone)]
struct Echo {
    tools: Arc<Vec<Tool>>,
}

impl ServerHandler for Echo {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _r: Option<PaginatedRequestParams>,
        _c: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items((*self.tools).clone()))
    }

    async fn call_tool(
        &self,
        req: CallToolRequestParams,
        _c: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if req.name != "echo" {
            return Err(ErrorData::invalid_params("unknown tool", None));
        }
        let text = req
            .arguments
            .as_ref()
            .and_then(|a| a.get("message"))
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        Ok(CallToolResult::success(vec![ContentBlock::text(text)]).into())
    }
}

fn main() {
    let threads = std::env::var("THREADS").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run());
}

async fn run() {
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:9100".into());
    let schema: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
        r#"{"type":"object","properties":{"message":{"type":"string"}},"required":["message"]}"#,
    )
    .expect("schema");
    let tools = Arc::new(vec![Tool::new("echo", "Echo back the message", Arc::new(schema))]);
    let mut cfg = StreamableHttpServerConfig::default();
    cfg.legacy_session_mode = false;
    cfg.json_response = true;
    cfg.sse_keep_alive = None;
    let cfg = cfg.with_allowed_hosts(["localhost", "127.0.0.1", "::1"]);
    let svc: StreamableHttpService<Echo, LocalSessionManager> =
        StreamableHttpService::new(move || Ok(Echo { tools: tools.clone() }), Default::default(), cfg);
    let router = axum::Router::new().nest_service("/mcp", svc);
    use axum::serve::ListenerExt;
    // Without TCP_NODELAY small replies stall on Nagle + delayed ACK.
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .expect("bind")
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    eprintln!("rmcp-echo on http://{addr}/mcp");
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .expect("serve");
}

//! What a sampled request's traces cost Marina's process, apart from everything else a request
//! does: the spans one `tools/call` makes (its SERVER span, the upstream CLIENT span, the
//! `traceparent` written into the upstream request's `_meta` and headers), built `--iterations`
//! times, with the process's CPU time (the exporter's threads included) divided by the count.
//! Without `--endpoint` traces are off and the same loop measures the helpers' cost when
//! disabled. docs/benchmarks.md ("The price of telemetry") has the command and its results.
//!
//! ```text
//! OTEL_BSP_MAX_QUEUE_SIZE=1000000 taskset -c 0 \
//!     cargo run --release -p marina-telemetry --example trace_cost -- --endpoint http://127.0.0.1:4318
//! ```
//!
//! The queue is raised so that no span is dropped: the loop makes spans much faster than any
//! node would, and the processor drops what its queue cannot hold.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use marina_telemetry::traces::{self, KeyValue};
use serde_json::json;

/// Poll `fut` to its end; the futures here never wait.
fn run<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// This process's CPU time (all threads), in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime, in clock ticks of 1/100 s (USER_HZ on Linux).
    (ticks(11) + ticks(12)) / 100.0
}

/// The spans of one sampled `tools/call`, built as the gateway builds them.
fn one_call(tenant: &str, upstream: &str, id: u64) {
    let server = traces::server(
        traces::span_name("tools/call", Some("echo")),
        vec![
            KeyValue::new("mcp.method.name", traces::method_value("tools/call")),
            KeyValue::new("gen_ai.tool.name", "echo".to_owned()),
            KeyValue::new("jsonrpc.request.id", id.to_string()),
            KeyValue::new("mcp.protocol.version", "2025-11-25".to_owned()),
            KeyValue::new("marina.tenant", tenant.to_owned()),
        ],
        None,
        false,
    );
    server.set("mcp.session.id", "0123456789abcdef".to_owned());
    run(server.clone().within(async {
        let client = traces::client(
            traces::span_name("tools/call", Some("echo")),
            vec![
                KeyValue::new("mcp.method.name", traces::method_value("tools/call")),
                KeyValue::new("gen_ai.tool.name", "echo".to_owned()),
                KeyValue::new("marina.upstream", upstream.to_owned()),
                KeyValue::new("marina.tenant", tenant.to_owned()),
            ],
        );
        let mut params = json!({"name": "echo", "arguments": {"message": "hello"}});
        traces::inject_meta(&client, &mut params);
        run(client.within(async {
            let mut headers = http::HeaderMap::new();
            traces::inject_headers(&mut headers);
            std::hint::black_box(&headers);
        }));
        std::hint::black_box(&params);
    }));
}

fn main() {
    let mut endpoint = None;
    let mut iterations: u64 = 200_000;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--endpoint" => endpoint = args.next(),
            "--iterations" => iterations = args.next().and_then(|v| v.parse().ok()).unwrap_or(iterations),
            other => {
                eprintln!("unknown argument {other}; usage: trace_cost [--endpoint URL] [--iterations N]");
                std::process::exit(2);
            }
        }
    }
    let on = endpoint.is_some();
    if on {
        let config = traces::Config {
            endpoint,
            sampling_ratio: 1.0,
            link_client_context: true,
            instance: "bench".into(),
            version: "0".into(),
        };
        traces::init(&config).expect("traces start");
    }
    // Warm up, then measure.
    for i in 0..iterations / 10 {
        one_call("bench", "echo", i);
    }
    let (cpu0, wall0) = (cpu_seconds(), Instant::now());
    for i in 0..iterations {
        one_call("bench", "echo", i);
    }
    // The exporter's work for these spans is part of their cost: wait for it.
    traces::shutdown();
    let cpu = cpu_seconds() - cpu0;
    let wall = wall0.elapsed().as_secs_f64();
    println!(
        "traces {}: {iterations} calls, {:.2} µs CPU per call (exporter included), {:.2} µs wall",
        if on { "on (100 %)" } else { "off" },
        cpu / iterations as f64 * 1e6,
        wall / iterations as f64 * 1e6,
    );
}

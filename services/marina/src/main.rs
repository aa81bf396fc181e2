//! `marina`: the multi-tenant MCP hosting platform, as one binary.
//!
//! `marina serve` runs a gateway node; `marina keys new` makes an API key; `marina admin …` drives
//! the admin API of running nodes. With no configuration it listens on 127.0.0.1:8080 with an
//! in-memory store and the tenant `demo` (built-in tools); with `--redis-url` any number of nodes
//! share sessions through Redis.

mod admin;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use marina_core::settings;
use marina_gateway::Application;

// The request path allocates many small, short-lived buffers (HTTP heads, JSON values) across
// threads; glibc malloc spent ~20 % of a proxied call's CPU on them (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status for invalid configuration (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

#[derive(Debug, Parser)]
#[command(name = "marina", version, about = "Multi-tenant hosting platform for MCP tools", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a gateway node serving every tenant's MCP endpoint at /t/{tenant}/mcp.
    ///
    /// Settings are layered: built-in defaults < --config FILE < MARINA__SECTION__KEY environment
    /// variables < these flags. See docs/configuration.md for every setting.
    Serve(ServeArgs),
    /// API keys of tenants.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Tenants' authorization policies (casbin, policies/model.conf).
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Administer running nodes through their admin API (docs/admin-api.md): tenants, keys,
    /// policy decisions, audit, sessions, upstreams.
    ///
    /// The key is read from MARINA_ADMIN_KEY (or --key-file), never from a flag. Exit status: 0
    /// success, 1 the API refused, 2 usage error, 3 the API cannot be reached.
    Admin(admin::AdminArgs),
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Decide one request against a tenant's policy and show why: the deciding rule and the role
    /// chain that led to it.
    Explain(ExplainArgs),
    /// Check a decision table (YAML; see policies/README.md) against a policy. Exit status 1
    /// when a row disagrees.
    Test(TestArgs),
}

#[derive(Debug, clap::Args)]
struct ExplainArgs {
    /// Configuration file holding the tenant.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Tenant id.
    #[arg(long)]
    tenant: String,
    /// The principal's subject.
    #[arg(long)]
    subject: String,
    /// Roles its credential carries, comma-separated.
    #[arg(long, value_delimiter = ',')]
    roles: Vec<String>,
    /// tool:<name>, resource:<uri> or prompt:<name>.
    #[arg(long)]
    object: String,
    /// call, read or get.
    #[arg(long)]
    action: String,
}

#[derive(Debug, clap::Args)]
struct TestArgs {
    /// Configuration file (for tables without their own `policy`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Tenant whose policy to use (default: the table's `tenant`).
    #[arg(long)]
    tenant: Option<String>,
    /// The decision table.
    table: PathBuf,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Make a new random API key. The key is printed once, with the entry to add under the
    /// tenant's `auth.api_keys` (only its SHA-256 is stored; the key cannot be recovered).
    New(NewKeyArgs),
}

#[derive(Debug, clap::Args)]
struct NewKeyArgs {
    /// Who the key authenticates (the principal's subject).
    #[arg(long)]
    subject: String,
    /// Roles the key carries, comma-separated.
    #[arg(long, value_delimiter = ',')]
    roles: Vec<String>,
    /// Expiry, RFC 3339 (e.g. 2027-06-30T00:00:00Z).
    #[arg(long, value_name = "TIME")]
    expires: Option<String>,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Configuration file (TOML, or YAML with a .yaml/.yml extension).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen address, ADDR:PORT (port 0 picks a free port). Default 127.0.0.1:8080.
    #[arg(long, value_name = "ADDR:PORT")]
    bind: Option<String>,
    /// Admin API listen address, ADDR:PORT (port 0 picks a free port; "" serves none). Default
    /// 127.0.0.1:9090.
    #[arg(long, value_name = "ADDR:PORT")]
    admin_bind: Option<String>,
    /// Redis URL (redis://host:port/db) for the shared session store. Without it the node keeps
    /// sessions in memory and cannot share them with other nodes.
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,
    /// Name of this node in logs and leases. Default: <hostname>-<port>.
    #[arg(long, value_name = "ID")]
    node_id: Option<String>,
    /// URL peers use to forward a session's requests to this node. Default: http://<bound address>.
    #[arg(long, value_name = "URL")]
    advertise_url: Option<String>,
    /// Log format: human or json.
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(args) => serve_command(args),
        Command::Keys(KeysCommand::New(args)) => new_key(args),
        Command::Policy(cmd) => policy_command(cmd),
        Command::Admin(args) => admin::run(args),
    }
}

/// A tenant's policy text from a configuration file.
fn tenant_policy(config: &std::path::Path, tenant: &str) -> Result<String, String> {
    let s = settings::load(Some(config), None, &[]).map_err(|e| e.to_string())?;
    let t = s
        .tenants
        .get(tenant)
        .ok_or_else(|| format!("no tenant {tenant:?} in {}", config.display()))?;
    t.rbac.as_ref().map(|r| r.policy.clone()).ok_or_else(|| {
        format!("tenant {tenant:?} has no rbac section: every authenticated caller may use everything")
    })
}

fn policy_command(cmd: PolicyCommand) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("marina: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cmd {
            PolicyCommand::Explain(a) => {
                let text = tenant_policy(&a.config, &a.tenant)?;
                let p = marina_policy::TenantPolicy::new(&text)
                    .await
                    .map_err(|e| e.to_string())?;
                let who = marina_core::access::Access::new(a.subject, a.roles);
                let ex = p.explain(&who, &a.object, &a.action);
                println!("decision: {}", if ex.allowed { "allow" } else { "deny" });
                match ex.rule {
                    Some(rule) => {
                        println!("rule: {rule}");
                        println!("chain: {}", ex.chain.join(" -> "));
                    }
                    None => println!("rule: none matched (default deny)"),
                }
                Ok(ExitCode::SUCCESS)
            }
            PolicyCommand::Test(a) => {
                let raw =
                    std::fs::read_to_string(&a.table).map_err(|e| format!("{}: {e}", a.table.display()))?;
                let table = marina_policy::table::Table::from_yaml(&raw)
                    .map_err(|e| format!("{}: {e}", a.table.display()))?;
                let text = match (&table.policy, &a.config) {
                    (Some(p), _) => p.clone(),
                    (None, Some(config)) => {
                        let tenant = a
                            .tenant
                            .clone()
                            .or_else(|| table.tenant.clone())
                            .ok_or("the table names no tenant; pass --tenant")?;
                        tenant_policy(config, &tenant)?
                    }
                    (None, None) => return Err("the table has no policy; pass --config".into()),
                };
                let bad = table.check(&text).await.map_err(|e| e.to_string())?;
                for m in &bad {
                    let r = &m.row;
                    println!(
                        "row {}: {} (roles [{}]) {} {}: expected {}, got {}{}",
                        m.index,
                        r.subject,
                        r.roles.join(", "),
                        r.action,
                        r.object,
                        if r.allow { "allow" } else { "deny" },
                        if m.got.allowed { "allow" } else { "deny" },
                        m.got
                            .rule
                            .as_ref()
                            .map(|x| format!(" by `{x}`"))
                            .unwrap_or_default()
                    );
                }
                println!("{} rows, {} failed", table.rows.len(), bad.len());
                Ok(if bad.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                })
            }
        }
    });
    result.unwrap_or_else(|e: String| {
        eprintln!("marina: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

/// `marina keys new`: the key on the first line (for scripts), then the configuration entry.
fn new_key(args: NewKeyArgs) -> ExitCode {
    if args.subject.trim().is_empty() || args.subject.len() > 256 || args.subject.contains(['"', '\\', '\n'])
    {
        eprintln!("marina: --subject must be 1-256 characters without quotes, backslashes or newlines");
        return ExitCode::from(EXIT_CONFIG);
    }
    if let Some(e) = &args.expires
        && humantime::parse_rfc3339_weak(e).is_err()
    {
        eprintln!("marina: --expires must be an RFC 3339 time such as 2027-06-30T00:00:00Z");
        return ExitCode::from(EXIT_CONFIG);
    }
    let key = marina_auth::generate_key();
    let roles: Vec<String> = args.roles.iter().map(|r| format!("{:?}", r.trim())).collect();
    let mut out = format!(
        "{key}\n\n# Shown once; store it now. Add under tenants.<tenant>.auth.api_keys:\n\
         - subject: \"{}\"\n  sha256: {}\n  roles: [{}]\n",
        args.subject,
        marina_auth::digest(&key),
        roles.join(", ")
    );
    if let Some(e) = args.expires {
        out.push_str(&format!("  expires: {}\n", e.trim()));
    }
    // One write, and a reader that stops early (`| head -1`) is not an error worth a panic.
    use std::io::Write as _;
    match std::io::stdout().write_all(out.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("marina: cannot write the key: {e}");
            ExitCode::from(74)
        }
        _ => ExitCode::SUCCESS,
    }
}

fn serve_command(args: ServeArgs) -> ExitCode {
    let overrides: Vec<(&str, String)> = [
        ("server.bind", args.bind),
        ("admin.bind", args.admin_bind),
        ("store.redis_url", args.redis_url),
        ("server.node_id", args.node_id),
        ("server.advertise_url", args.advertise_url),
        ("server.log_format", args.log_format),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect();
    let settings = match settings::load(args.config.as_deref(), None, &overrides) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("marina: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    marina_telemetry::set_recording(settings.telemetry.metrics);
    let traces = marina_telemetry::traces::Config {
        endpoint: settings.telemetry.otlp_endpoint.clone(),
        sampling_ratio: settings.telemetry.sampling_ratio,
        link_client_context: settings.telemetry.client_context == settings::ClientContext::Link,
        // The node's id, known once its listener is bound (`serve`).
        instance: String::new(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    // Logs now; traces once the node knows its id.
    marina_core::telemetry::init(settings.server.log_format, &settings.server.log_filter, None);
    let result = actix_rt::System::new().block_on(serve(settings, traces));
    // The spans of the last requests are still in the batch processor's buffer.
    marina_core::telemetry::shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<marina_gateway::ConfigError>() => {
            eprintln!("marina: {e:#}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "marina failed");
            eprintln!("marina: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: settings::Settings, traces: marina_telemetry::traces::Config) -> anyhow::Result<()> {
    let store = if settings.store.redis_url.is_empty() {
        "memory"
    } else {
        "redis"
    };
    // `service.instance.id` is the node's id, as its leases and the admin API name it (with
    // port 0 it names the port the listener got): traces start once it is bound, before it
    // serves anything.
    let app = Application::build_with(settings, |node_id| {
        marina_core::telemetry::init_traces(&marina_telemetry::traces::Config {
            instance: node_id.to_owned(),
            ..traces
        });
    })
    .await?;
    // These lines name the bound addresses (port 0 picks a free one): the admin line comes first,
    // so whoever waits for "marina listening on" has both.
    if let Some(admin) = app.admin_addr() {
        println!("admin API listening on http://{admin}/admin/v1");
    }
    println!("marina listening on {} (store: {store})", app.base_url());
    for (tenant, url) in app.endpoints() {
        println!("tenant {tenant}: {url}");
    }
    let (shutdown, hurry) = shutdown_signals();
    app.run_until_signalled(shutdown, hurry).await
}

/// The first SIGTERM or SIGINT (Ctrl-C) starts the graceful shutdown; the second one skips the
/// rest of its delay (`server.shutdown_delay_ms`).
fn shutdown_signals() -> (
    impl std::future::Future<Output = ()>,
    impl std::future::Future<Output = ()>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let (first_tx, first) = tokio::sync::oneshot::channel::<()>();
    let (second_tx, second) = tokio::sync::oneshot::channel::<()>();
    actix_rt::spawn(async move {
        for tx in [first_tx, second_tx] {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            let _ = tx.send(());
        }
    });
    (
        async move {
            let _ = first.await;
        },
        async move {
            let _ = second.await;
        },
    )
}

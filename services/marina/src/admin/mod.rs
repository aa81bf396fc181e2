//! `marina admin …`: the admin API (`/admin/v1`, docs/admin-api.md) from the command line.
//!
//! Exit status: 0 success; 1 the API refused (its problem document on stderr as
//! `marina: <status> <detail> (field: …)`); 2 a usage error (flags, an unreadable or malformed
//! file); 3 the API cannot be reached. The administrator's key comes from `MARINA_ADMIN_KEY` or
//! `--key-file`, never from a flag, and is never printed.

/// `print!` that ignores a closed stdout (`marina admin export | head`) instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

/// `println!` that ignores a closed stdout.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod client;
mod config;
mod output;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::builder::NonEmptyStringValueParser;
use clap::{ArgGroup, Subcommand};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use client::{Client, Failure, printable};
use output::{cell, fields, print_json, table, time};

/// The environment variable holding the administrator's key.
const KEY_ENV: &str = "MARINA_ADMIN_KEY";

#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// The admin API: http://host:port or http://host:port/admin/v1.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "MARINA_ADMIN_URL",
        default_value = "http://127.0.0.1:9090"
    )]
    url: String,
    /// Read the administrator's API key from FILE (its first line) instead of the
    /// MARINA_ADMIN_KEY environment variable.
    #[arg(long, global = true, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Print the API's JSON instead of tables (for scripts).
    #[arg(long, global = true)]
    json: bool,
    /// Seconds to wait for each answer of the API.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Tenants: list, show, apply from a configuration file, delete.
    #[command(subcommand)]
    Tenants(TenantsCommand),
    /// Write every tenant as a configuration file (`tenants: {id: document, …}`, YAML; JSON
    /// with --json) that `tenants apply -f` takes back.
    Export(ExportArgs),
    /// A tenant's API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Decide one request against a tenant's policy, with the deciding rule and role chain.
    Explain(ExplainArgs),
    /// Who changed what and when (oldest first).
    Audit(AuditArgs),
    /// A tenant's MCP sessions.
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// A tenant's upstreams and whether they answer.
    Upstreams(TenantArg),
}

#[derive(Debug, clap::Args)]
struct TenantArg {
    /// Tenant id.
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    tenant: String,
}

#[derive(Debug, Subcommand)]
enum TenantsCommand {
    /// Every tenant (all pages).
    List,
    /// One tenant's document (YAML; JSON with --json).
    Get(TenantArg),
    /// Create or replace the tenants of a configuration file (its top-level `tenants:` map, YAML
    /// or JSON). Tenants already as written are left alone: applying twice changes nothing.
    Apply(ApplyArgs),
    /// Delete a tenant: its endpoint answers 404 on every node within a second.
    Delete(TenantArg),
}

#[derive(Debug, clap::Args)]
struct ApplyArgs {
    /// The configuration file ("-": standard input).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: PathBuf,
    /// Only say what would change.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, clap::Args)]
struct ExportArgs {
    /// Write to FILE instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Make a key: printed once (first line), with its id; only its SHA-256 is stored.
    Create(CreateKeyArgs),
    /// The tenant's keys (never a secret).
    List(TenantArg),
    /// Revoke a key: refused on every node within a second.
    Revoke(RevokeKeyArgs),
}

#[derive(Debug, clap::Args)]
struct CreateKeyArgs {
    /// Tenant id.
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    tenant: String,
    /// Who the key authenticates (the principal's subject).
    #[arg(long)]
    subject: String,
    /// A role the key carries (repeat, or comma-separate).
    #[arg(
        long = "role",
        visible_alias = "roles",
        value_name = "ROLE",
        value_delimiter = ','
    )]
    roles: Vec<String>,
    /// Expiry, RFC 3339 (2027-06-30T00:00:00Z).
    #[arg(long, value_name = "TIME")]
    expires: Option<String>,
}

#[derive(Debug, clap::Args)]
struct RevokeKeyArgs {
    /// Tenant id.
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    tenant: String,
    /// The key's id (`keys list`).
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    key_id: String,
}

#[derive(Debug, clap::Args)]
struct ExplainArgs {
    /// Tenant id.
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    tenant: String,
    /// The principal's subject.
    #[arg(long)]
    subject: String,
    /// A role its credential carries (repeat, or comma-separate).
    #[arg(
        long = "role",
        visible_alias = "roles",
        value_name = "ROLE",
        value_delimiter = ','
    )]
    roles: Vec<String>,
    /// tool:<name>, resource:<uri> or prompt:<name>.
    #[arg(long)]
    object: String,
    /// call, read or get.
    #[arg(long)]
    action: String,
}

#[derive(Debug, clap::Args)]
struct AuditArgs {
    /// Only this tenant's changes.
    #[arg(long, value_parser = NonEmptyStringValueParser::new())]
    tenant: Option<String>,
    /// Only changes since TIME: RFC 3339, Unix milliseconds, or a duration ago (90m, 2days).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// At most N entries (1-1000; the API's default 100).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    limit: Option<u32>,
}

#[derive(Debug, Subcommand)]
enum SessionsCommand {
    /// The tenant's open sessions (all pages).
    List(ListSessionsArgs),
    /// One session.
    Get(SessionArgs),
    /// End one session, or every session of a principal.
    Kill(KillArgs),
}

#[derive(Debug, clap::Args)]
struct ListSessionsArgs {
    /// Tenant id.
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    tenant: String,
    /// Only this principal's sessions (its subject).
    #[arg(long, value_name = "SUBJECT")]
    principal: Option<String>,
}

#[derive(Debug, clap::Args)]
struct SessionArgs {
    /// Tenant id.
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    tenant: String,
    /// Session tag (8 characters; it may begin with `-`).
    #[arg(value_parser = NonEmptyStringValueParser::new(), allow_hyphen_values = true)]
    sid: String,
}

#[derive(Debug, clap::Args)]
#[command(group(ArgGroup::new("which").required(true).args(["sid", "principal"])))]
struct KillArgs {
    /// Tenant id.
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    tenant: String,
    /// Session tag (8 characters; it may begin with `-`).
    #[arg(value_parser = NonEmptyStringValueParser::new(), allow_hyphen_values = true)]
    sid: Option<String>,
    /// Every session of this principal (its subject) instead.
    #[arg(long, value_name = "SUBJECT", value_parser = NonEmptyStringValueParser::new())]
    principal: Option<String>,
}

/// Run `marina admin …`.
pub fn run(args: AdminArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("marina: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("marina: {f}");
            ExitCode::from(f.code())
        }
    }
}

/// The administrator's key: the first line of `--key-file`, else `MARINA_ADMIN_KEY`.
fn admin_key(file: Option<&Path>) -> Result<Option<String>, Failure> {
    if let Some(f) = file {
        let text = std::fs::read_to_string(f)
            .map_err(|e| Failure::Usage(format!("--key-file {}: {e}", f.display())))?;
        let key = text.lines().map(str::trim).find(|l| !l.is_empty());
        return match key {
            Some(k) => Ok(Some(k.to_owned())),
            None => Err(Failure::Usage(format!("--key-file {}: empty", f.display()))),
        };
    }
    match std::env::var(KEY_ENV) {
        Ok(k) if !k.trim().is_empty() => Ok(Some(k.trim().to_owned())),
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(Failure::Usage(format!("{KEY_ENV} is not valid UTF-8")))
        }
    }
}

async fn dispatch(args: AdminArgs) -> Result<(), Failure> {
    let base = client::base_url(&args.url)?;
    let key = admin_key(args.key_file.as_deref())?;
    let c = Client::new(base, key, Duration::from_secs(args.timeout))?;
    let json = args.json;
    match args.command {
        AdminCommand::Tenants(TenantsCommand::List) => tenants_list(&c, json).await,
        AdminCommand::Tenants(TenantsCommand::Get(a)) => tenants_get(&c, &a.tenant, json).await,
        AdminCommand::Tenants(TenantsCommand::Apply(a)) => apply(&c, &a.file, a.dry_run, json).await,
        AdminCommand::Tenants(TenantsCommand::Delete(a)) => {
            c.call(Method::DELETE, &["tenants", &a.tenant], &[], &[], None)
                .await?
                .ok()?;
            if !json {
                outln!("deleted tenant {}", printable(&a.tenant));
            }
            Ok(())
        }
        AdminCommand::Export(a) => export(&c, a.output.as_deref(), json).await,
        AdminCommand::Keys(k) => keys(&c, k, json).await,
        AdminCommand::Explain(a) => explain(&c, a, json).await,
        AdminCommand::Audit(a) => audit(&c, a, json).await,
        AdminCommand::Sessions(s) => sessions(&c, s, json).await,
        AdminCommand::Upstreams(a) => upstreams(&c, &a.tenant, json).await,
    }
}

async fn tenants_list(c: &Client, json: bool) -> Result<(), Failure> {
    let items = c.all_pages(&["tenants"], &[("limit", "500".into())]).await?;
    if json {
        print_json(&json!({"items": items, "next": null}));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|t| {
            vec![
                cell(t.get("id")),
                cell(t.get("source")),
                cell(t.get("version")),
                cell(t.get("disabled")),
                time(t.get("updatedMs")),
            ]
        })
        .collect();
    out!(
        "{}",
        table(&["ID", "SOURCE", "VERSION", "DISABLED", "UPDATED"], &rows)
    );
    Ok(())
}

async fn tenants_get(c: &Client, id: &str, json: bool) -> Result<(), Failure> {
    let a = c.get(&["tenants", id], &[]).await?;
    if json {
        print_json(&a.body);
        return Ok(());
    }
    let source = a.header("marina-source").unwrap_or("store");
    let etag = a
        .header("etag")
        .map(|e| format!(", ETag {}", printable(e)))
        .unwrap_or_default();
    outln!("# tenant {}: source {}{etag}", printable(id), printable(source));
    let mut one = serde_json::Map::new();
    one.insert(id.to_owned(), a.body);
    let text = serde_yaml_ng::to_string(&Value::Object(one))
        .map_err(|e| Failure::Failed(format!("cannot show the document as YAML: {e}")))?;
    out!("{text}");
    Ok(())
}

/// What `apply` did to one tenant.
#[derive(Debug)]
enum Applied {
    Created {
        version: Option<u64>,
    },
    Replaced {
        version: Option<u64>,
        changed: Vec<String>,
    },
    Unchanged,
    WouldCreate,
    WouldReplace {
        changed: Vec<String>,
    },
}

/// The version an answer's `ETag` names.
fn version_of(etag: Option<&str>) -> Option<u64> {
    etag?.trim_start_matches("W/").trim_matches('"').parse().ok()
}

async fn apply_one(c: &Client, id: &str, doc: &Value, dry_run: bool) -> Result<Applied, Failure> {
    let path = ["tenants", id];
    let current = c.call(Method::GET, &path, &[], &[], None).await?;
    if current.status == StatusCode::NOT_FOUND {
        if dry_run {
            return Ok(Applied::WouldCreate);
        }
        let put = c
            .call(
                Method::PUT,
                &path,
                &[],
                &[("if-none-match", "*".into())],
                Some(doc),
            )
            .await?
            .ok()?;
        return Ok(Applied::Created {
            version: version_of(put.header("etag")),
        });
    }
    let current = current.ok()?;
    if current.body == *doc {
        return Ok(Applied::Unchanged);
    }
    let changed = config::changed_keys(&current.body, doc);
    if current.header("marina-source") == Some("file") {
        return Err(Failure::Api {
            status: StatusCode::CONFLICT.as_u16(),
            title: None,
            detail: Some(format!(
                "tenant {id} is defined in the node's configuration file, which the admin API cannot change; change it there{}",
                if changed.is_empty() {
                    String::new()
                } else {
                    format!(" (differs in: {})", changed.join(", "))
                }
            )),
            field: None,
        });
    }
    if dry_run {
        return Ok(Applied::WouldReplace { changed });
    }
    let condition: Vec<(&'static str, String)> = current
        .header("etag")
        .map(|e| ("if-match", e.to_owned()))
        .into_iter()
        .collect();
    let put = c
        .call(Method::PUT, &path, &[], &condition, Some(doc))
        .await?
        .ok()?;
    Ok(Applied::Replaced {
        version: version_of(put.header("etag")),
        changed,
    })
}

/// Read a file given on the command line ("-": standard input).
fn read_input(path: &Path) -> Result<(String, String), Failure> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|e| Failure::Usage(format!("standard input: {e}")))?;
        return Ok((text, "standard input".into()));
    }
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Failure::Usage(format!("{name}: {e}")))?;
    Ok((text, name))
}

async fn apply(c: &Client, file: &Path, dry_run: bool, json: bool) -> Result<(), Failure> {
    let (text, name) = read_input(file)?;
    let tenants = config::tenants_of(&text, &name).map_err(Failure::Usage)?;
    let mut report = Vec::new();
    let mut failed = 0;
    for (id, doc) in &tenants {
        let shown = printable(id);
        let (line, entry) = match apply_one(c, id, doc, dry_run).await {
            Err(f @ (Failure::Unreachable(_) | Failure::Usage(_))) => return Err(f),
            Err(f) => {
                failed += 1;
                eprintln!("marina: {shown}: {f}");
                let mut e = json!({"id": id, "result": "failed", "error": f.to_string()});
                if let Failure::Api { status, .. } = &f {
                    e["status"] = json!(status);
                }
                (None, e)
            }
            Ok(a) => {
                let (result, line, version, changed) = match a {
                    Applied::Created { version } => (
                        "created",
                        format!("created{}", at_version(version)),
                        version,
                        None,
                    ),
                    Applied::Replaced { version, changed } => (
                        "replaced",
                        format!("replaced{}{}", at_version(version), listed(&changed)),
                        version,
                        Some(changed),
                    ),
                    Applied::Unchanged => ("unchanged", "unchanged".into(), None, None),
                    Applied::WouldCreate => ("would create", "would be created".into(), None, None),
                    Applied::WouldReplace { changed } => (
                        "would replace",
                        format!("would be replaced{}", listed(&changed)),
                        None,
                        Some(changed),
                    ),
                };
                let mut e = json!({"id": id, "result": result});
                if let Some(v) = version {
                    e["version"] = json!(v);
                }
                if let Some(ch) = changed {
                    e["changed"] = json!(ch);
                }
                (Some(format!("{shown}: {line}")), e)
            }
        };
        if let Some(l) = line
            && !json
        {
            outln!("{l}");
        }
        report.push(entry);
    }
    if json {
        print_json(&json!({"items": report}));
    } else if tenants.is_empty() {
        outln!("no tenants in {name}");
    }
    if failed > 0 {
        return Err(Failure::Failed(format!(
            "{failed} of {} tenants not applied",
            tenants.len()
        )));
    }
    Ok(())
}

fn at_version(v: Option<u64>) -> String {
    v.map(|v| format!(" (version {v})")).unwrap_or_default()
}

fn listed(changed: &[String]) -> String {
    if changed.is_empty() {
        String::new()
    } else {
        format!(
            ": {}",
            changed
                .iter()
                .map(|k| printable(k))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

async fn export(c: &Client, output: Option<&Path>, json: bool) -> Result<(), Failure> {
    let items = c.all_pages(&["tenants"], &[("limit", "500".into())]).await?;
    let mut tenants = Vec::new();
    for item in &items {
        let Some(id) = item.get("id").and_then(Value::as_str) else {
            continue;
        };
        let a = c.call(Method::GET, &["tenants", id], &[], &[], None).await?;
        if a.status == StatusCode::NOT_FOUND {
            // Deleted since the list.
            eprintln!("marina: tenant {} is gone; not exported", printable(id));
            continue;
        }
        let a = a.ok()?;
        let source = a
            .header("marina-source")
            .map(str::to_owned)
            .or_else(|| item.get("source").and_then(Value::as_str).map(str::to_owned));
        tenants.push((id.to_owned(), a.body, source));
    }
    let text = if json {
        let mut s = serde_json::to_string_pretty(&config::export_json(&tenants))
            .map_err(|e| Failure::Failed(e.to_string()))?;
        s.push('\n');
        s
    } else {
        config::export_yaml(&tenants, c.base()).map_err(Failure::Failed)?
    };
    match output {
        None => out!("{text}"),
        Some(path) => {
            std::fs::write(path, text).map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
            eprintln!("exported {} tenants to {}", tenants.len(), path.display());
        }
    }
    Ok(())
}

async fn keys(c: &Client, cmd: KeysCommand, json: bool) -> Result<(), Failure> {
    match cmd {
        KeysCommand::Create(a) => {
            let mut body = json!({"subject": a.subject});
            let roles: Vec<&str> = a
                .roles
                .iter()
                .map(|r| r.trim())
                .filter(|r| !r.is_empty())
                .collect();
            if !roles.is_empty() {
                body["roles"] = json!(roles);
            }
            if let Some(e) = &a.expires {
                body["expires"] = json!(e.trim());
            }
            let answer = c
                .call(
                    Method::POST,
                    &["tenants", &a.tenant, "api-keys"],
                    &[],
                    &[],
                    Some(&body),
                )
                .await?
                .ok()?
                .body;
            if json {
                print_json(&answer);
                return Ok(());
            }
            let Some(key) = answer.get("key").and_then(Value::as_str) else {
                return Err(Failure::Failed("the API's answer holds no key".into()));
            };
            // The key alone on the first line, for scripts (`| head -n1`).
            outln!("{key}");
            out!(
                "{}",
                fields(&[
                    ("id", cell(answer.get("id"))),
                    ("subject", cell(answer.get("subject"))),
                    ("roles", cell(answer.get("roles"))),
                    ("expires", cell(answer.get("expires"))),
                ])
            );
            eprintln!("The key is shown this once (only its SHA-256 is stored): keep it now.");
            Ok(())
        }
        KeysCommand::List(a) => {
            let answer = c.get(&["tenants", &a.tenant, "api-keys"], &[]).await?.body;
            if json {
                print_json(&answer);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = items(&answer)
                .iter()
                .map(|k| {
                    let used = match k.get("lastUsedMs") {
                        Some(v) if v.as_u64().is_some() => time(Some(v)),
                        _ => "never".into(),
                    };
                    vec![
                        cell(k.get("id")),
                        cell(k.get("subject")),
                        cell(k.get("roles")),
                        cell(k.get("expires")),
                        used,
                    ]
                })
                .collect();
            out!(
                "{}",
                table(&["ID", "SUBJECT", "ROLES", "EXPIRES", "LAST USED"], &rows)
            );
            Ok(())
        }
        KeysCommand::Revoke(a) => {
            c.call(
                Method::DELETE,
                &["tenants", &a.tenant, "api-keys", &a.key_id],
                &[],
                &[],
                None,
            )
            .await?
            .ok()?;
            if !json {
                outln!(
                    "revoked key {} of tenant {}",
                    printable(&a.key_id),
                    printable(&a.tenant)
                );
            }
            Ok(())
        }
    }
}

/// The `items` of a list answer.
fn items(v: &Value) -> &[Value] {
    v.get("items")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

async fn explain(c: &Client, a: ExplainArgs, json: bool) -> Result<(), Failure> {
    let body = json!({"subject": a.subject, "roles": a.roles, "object": a.object, "action": a.action});
    let answer = c
        .call(
            Method::POST,
            &["tenants", &a.tenant, "explain"],
            &[],
            &[],
            Some(&body),
        )
        .await?
        .ok()?
        .body;
    if json {
        print_json(&answer);
        return Ok(());
    }
    let decision = cell(answer.get("decision"));
    let mut lines = vec![("decision", decision.clone())];
    match answer.get("rule").and_then(Value::as_str) {
        Some(rule) => {
            lines.push(("rule", printable(rule)));
            let chain: Vec<String> = answer
                .get("chain")
                .and_then(Value::as_array)
                .map(|c| c.iter().map(|x| cell(Some(x))).collect())
                .unwrap_or_default();
            if !chain.is_empty() {
                lines.push(("chain", chain.join(" -> ")));
            }
        }
        None if decision == "deny" => lines.push(("rule", "none matched (default deny)".into())),
        None => lines.push(("rule", "none".into())),
    }
    if let Some(reason) = answer.get("reason").and_then(Value::as_str) {
        lines.push(("reason", printable(reason)));
    }
    out!("{}", fields(&lines));
    Ok(())
}

/// `--since` for the API: RFC 3339 and Unix milliseconds as given; a duration (`90m`) as the
/// milliseconds of that long ago.
fn since_param(s: &str) -> String {
    let s = s.trim();
    if s.parse::<u64>().is_ok() || humantime::parse_rfc3339_weak(s).is_ok() {
        return s.to_owned();
    }
    match humantime::parse_duration(s) {
        Ok(d) => SystemTime::now()
            .checked_sub(d)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64)
            .to_string(),
        // The API says what is wrong with it.
        Err(_) => s.to_owned(),
    }
}

async fn audit(c: &Client, a: AuditArgs, json: bool) -> Result<(), Failure> {
    let mut q: Vec<(&str, String)> = Vec::new();
    if let Some(t) = a.tenant {
        q.push(("tenant", t));
    }
    if let Some(s) = &a.since {
        q.push(("since", since_param(s)));
    }
    if let Some(l) = a.limit {
        q.push(("limit", l.to_string()));
    }
    let answer = c.get(&["audit"], &q).await?.body;
    if json {
        print_json(&answer);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = items(&answer)
        .iter()
        .map(|e| {
            let change = e.get("change").unwrap_or(&Value::Null);
            let mut detail = Vec::new();
            if let Some(t) = e.get("target").and_then(Value::as_str) {
                detail.push(printable(t));
            }
            if let Some(k) = change.pointer("/change/id").and_then(Value::as_str) {
                detail.push(format!("key {}", printable(k)));
            }
            if let Some(v) = change.get("version").and_then(Value::as_u64) {
                detail.push(format!("version {v}"));
            }
            if let Some(s) = change.get("session").and_then(Value::as_str) {
                detail.push(format!("session {}", printable(s)));
            }
            if let Some(p) = change.get("principal").and_then(Value::as_str) {
                detail.push(format!("principal {}", printable(p)));
            }
            if let Some(n) = change.get("terminated").and_then(Value::as_u64) {
                detail.push(format!("{n} terminated"));
            }
            vec![
                time(e.get("atMs")),
                cell(e.get("actor")),
                cell(e.get("action")),
                cell(e.get("tenant")),
                if detail.is_empty() {
                    "-".into()
                } else {
                    detail.join(", ")
                },
            ]
        })
        .collect();
    out!(
        "{}",
        table(&["TIME", "ACTOR", "ACTION", "TENANT", "DETAIL"], &rows)
    );
    Ok(())
}

/// A session's principal as `subject (issuer)`; `-` for an anonymous one.
fn principal(s: &Value) -> String {
    let p = s.get("principal").unwrap_or(&Value::Null);
    match (p.get("subject"), p.get("issuer").and_then(Value::as_str)) {
        (Some(sub), Some(iss)) if !iss.is_empty() => format!("{} ({})", cell(Some(sub)), printable(iss)),
        (Some(sub), _) => cell(Some(sub)),
        _ => "-".into(),
    }
}

/// A session's client as `name version`.
fn client_info(s: &Value) -> String {
    let info = s.get("clientInfo").unwrap_or(&Value::Null);
    match (info.get("name"), info.get("version")) {
        (None, None) => "-".into(),
        (name, None) => cell(name),
        (name, version) => format!("{} {}", cell(name), cell(version)),
    }
}

async fn sessions(c: &Client, cmd: SessionsCommand, json: bool) -> Result<(), Failure> {
    match cmd {
        SessionsCommand::List(a) => {
            let q: Vec<(&str, String)> = a.principal.map(|p| ("principal", p)).into_iter().collect();
            let list = c.all_pages(&["tenants", &a.tenant, "sessions"], &q).await?;
            if json {
                print_json(&json!({"items": list, "next": null}));
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|s| {
                    vec![
                        cell(s.get("id")),
                        principal(s),
                        client_info(s),
                        cell(s.get("protocolVersion")),
                        time(s.get("createdMs")),
                        time(s.get("lastUsedMs")),
                        time(s.get("expiresMs")),
                        cell(s.get("node")),
                    ]
                })
                .collect();
            out!(
                "{}",
                table(
                    &[
                        "ID",
                        "PRINCIPAL",
                        "CLIENT",
                        "PROTOCOL",
                        "CREATED",
                        "LAST USED",
                        "EXPIRES",
                        "NODE"
                    ],
                    &rows
                )
            );
            Ok(())
        }
        SessionsCommand::Get(a) => {
            let s = c
                .get(&["tenants", &a.tenant, "sessions", &a.sid], &[])
                .await?
                .body;
            if json {
                print_json(&s);
                return Ok(());
            }
            out!(
                "{}",
                fields(&[
                    ("id", cell(s.get("id"))),
                    ("principal", principal(&s)),
                    ("client", client_info(&s)),
                    ("protocol", cell(s.get("protocolVersion"))),
                    ("created", time(s.get("createdMs"))),
                    ("last used", time(s.get("lastUsedMs"))),
                    ("expires", time(s.get("expiresMs"))),
                    ("node", cell(s.get("node"))),
                    ("log level", cell(s.get("logLevel"))),
                    ("upstreams", cell(s.get("upstreams"))),
                    ("inflight calls", cell(s.get("inflightCalls"))),
                ])
            );
            Ok(())
        }
        SessionsCommand::Kill(a) => match (a.sid, a.principal) {
            (Some(sid), _) => {
                c.call(
                    Method::DELETE,
                    &["tenants", &a.tenant, "sessions", &sid],
                    &[],
                    &[],
                    None,
                )
                .await?
                .ok()?;
                if !json {
                    outln!("terminated session {}", printable(&sid));
                }
                Ok(())
            }
            (None, Some(p)) => {
                let answer = c
                    .call(
                        Method::DELETE,
                        &["tenants", &a.tenant, "sessions"],
                        &[("principal", p.clone())],
                        &[],
                        None,
                    )
                    .await?
                    .ok()?
                    .body;
                if json {
                    print_json(&answer);
                } else {
                    outln!(
                        "terminated {} sessions of {}",
                        cell(answer.get("terminated")),
                        printable(&p)
                    );
                }
                Ok(())
            }
            (None, None) => Err(Failure::Usage("name a session or --principal".into())),
        },
    }
}

async fn upstreams(c: &Client, tenant: &str, json: bool) -> Result<(), Failure> {
    let answer = c.get(&["tenants", tenant, "upstreams"], &[]).await?.body;
    if json {
        print_json(&answer);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = items(&answer)
        .iter()
        .map(|u| {
            let reachable = match u.get("reachable").and_then(Value::as_bool) {
                Some(true) => "yes",
                Some(false) => "no",
                None => "?",
            };
            let last_error = match u.get("lastError").and_then(Value::as_str) {
                Some(e) => format!("{} {}", time(u.get("lastErrorMs")), printable(e)),
                None => "-".into(),
            };
            vec![
                cell(u.get("name")),
                cell(u.get("kind")),
                reachable.into(),
                cell(u.get("tools")),
                cell(u.get("resources")),
                cell(u.get("prompts")),
                time(u.get("lastSuccessMs")),
                cell(u.get("node")),
                cell(u.get("url")),
                last_error,
            ]
        })
        .collect();
    out!(
        "{}",
        table(
            &[
                "NAME",
                "KIND",
                "REACHABLE",
                "TOOLS",
                "RESOURCES",
                "PROMPTS",
                "LAST SUCCESS",
                "NODE",
                "URL",
                "LAST ERROR"
            ],
            &rows
        )
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_times_and_durations() {
        assert_eq!(since_param("1764690000000"), "1764690000000");
        assert_eq!(since_param("2026-12-01T00:00:00Z"), "2026-12-01T00:00:00Z");
        let ms: u64 = since_param("1h").parse().unwrap();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        assert!(now - ms >= 3_600_000 && now - ms < 3_700_000);
        assert_eq!(since_param("yesterday"), "yesterday");
    }

    #[test]
    fn etags_name_versions() {
        assert_eq!(version_of(Some("\"42\"")), Some(42));
        assert_eq!(version_of(Some("W/\"7\"")), Some(7));
        assert_eq!(version_of(None), None);
    }

    #[test]
    fn the_command_line_parses() {
        use clap::{CommandFactory, Parser};
        #[derive(Debug, Parser)]
        struct T {
            #[command(subcommand)]
            top: Top,
        }
        #[derive(Debug, Subcommand)]
        enum Top {
            Admin(AdminArgs),
        }
        let parse = |args: &[&str]| {
            T::try_parse_from(["marina", "admin"].iter().chain(args)).map(|t| {
                let Top::Admin(a) = t.top;
                a
            })
        };
        T::command().debug_assert();
        let a = parse(&["sessions", "kill", "acme", "--principal", "bob", "--json"]).unwrap();
        assert!(a.json);
        assert!(parse(&["sessions", "kill", "acme"]).is_err());
        assert!(parse(&["sessions", "kill", "acme", "0123", "--principal", "b"]).is_err());
        assert!(parse(&["tenants", "get", ""]).is_err());
        // Session tags are base64url: one may begin with `-`.
        let a = parse(&["sessions", "get", "acme", "-xAbc12_", "--json"]).unwrap();
        let AdminCommand::Sessions(SessionsCommand::Get(g)) = a.command else {
            panic!("not sessions get");
        };
        assert_eq!(g.sid, "-xAbc12_");
        assert!(a.json);
        let a = parse(&["sessions", "kill", "acme", "-xAbc12_"]).unwrap();
        let AdminCommand::Sessions(SessionsCommand::Kill(k)) = a.command else {
            panic!("not sessions kill");
        };
        assert_eq!(k.sid.as_deref(), Some("-xAbc12_"));
        let a = parse(&[
            "keys",
            "create",
            "acme",
            "--subject",
            "s",
            "--role",
            "a",
            "--role",
            "b,c",
        ])
        .unwrap();
        let AdminCommand::Keys(KeysCommand::Create(k)) = a.command else {
            panic!("not keys create");
        };
        assert_eq!(k.roles, ["a", "b", "c"]);
    }
}

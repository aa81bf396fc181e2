//! Built-in tools, for the embedded default and for tests: `echo`, `add`, `countdown`, `log`,
//! `confirm`. Invalid arguments are tool errors (`isError`, SEP-1303), not protocol errors.

use std::time::Duration;

use async_trait::async_trait;
use marina_core::protocol::{self, RpcError};
use marina_core::tools::{CallContext, ToolDef, ToolProvider};
use serde_json::{Value, json};

/// Largest `countdown` the demo accepts.
const MAX_STEPS: u64 = 10_000;
/// Longest `countdown` interval.
const MAX_INTERVAL_MS: u64 = 60_000;
/// Every built-in tool name.
pub const NAMES: [&str; 5] = ["add", "confirm", "countdown", "echo", "log"];

/// The built-in tools (optionally a subset).
#[derive(Debug, Clone)]
pub struct Builtin {
    enabled: Vec<&'static str>,
}

impl Builtin {
    /// Expose `only` (all when `None`). Unknown names are an error.
    pub fn new(only: Option<&[String]>) -> Result<Self, String> {
        let enabled = match only {
            None => NAMES.to_vec(),
            Some(list) => list
                .iter()
                .map(|n| {
                    NAMES
                        .iter()
                        .copied()
                        .find(|k| k == n)
                        .ok_or_else(|| format!("unknown built-in tool {n:?}"))
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(Self { enabled })
    }
}

fn definition(name: &str) -> Value {
    match name {
        "echo" => json!({
            "name": "echo", "title": "Echo",
            "description": "Returns the text it is given.",
            "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"], "additionalProperties": false},
            "annotations": {"readOnlyHint": true, "idempotentHint": true, "openWorldHint": false}
        }),
        "add" => json!({
            "name": "add", "title": "Add",
            "description": "Adds two numbers.",
            "inputSchema": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"], "additionalProperties": false},
            "annotations": {"readOnlyHint": true, "idempotentHint": true, "openWorldHint": false}
        }),
        "countdown" => json!({
            "name": "countdown", "title": "Countdown",
            "description": "Counts down `steps` times, waiting `interval_ms` between steps and reporting progress at each step.",
            "inputSchema": {"type": "object", "properties": {
                "steps": {"type": "integer", "minimum": 0, "maximum": MAX_STEPS},
                "interval_ms": {"type": "integer", "minimum": 0, "maximum": MAX_INTERVAL_MS}
            }, "required": ["steps", "interval_ms"], "additionalProperties": false},
            "annotations": {"readOnlyHint": true, "idempotentHint": true, "openWorldHint": false}
        }),
        "log" => json!({
            "name": "log", "title": "Log",
            "description": "Emits a log message (notifications/message) at the given level.",
            "inputSchema": {"type": "object", "properties": {
                "level": {"type": "string", "enum": protocol::LOG_LEVELS},
                "message": {"type": "string"}
            }, "required": ["level", "message"], "additionalProperties": false},
            "annotations": {"readOnlyHint": true, "idempotentHint": false, "openWorldHint": false}
        }),
        "confirm" => json!({
            "name": "confirm", "title": "Confirm",
            "description": "Asks the user a question (elicitation) and returns the answer.",
            "inputSchema": {"type": "object", "properties": {"question": {"type": "string"}}, "required": ["question"], "additionalProperties": false},
            "annotations": {"readOnlyHint": false, "idempotentHint": false, "openWorldHint": true}
        }),
        _ => Value::Null,
    }
}

/// A successful text result.
fn text(s: impl Into<String>) -> Value {
    json!({"content": [{"type": "text", "text": s.into()}], "isError": false})
}

/// A tool error the model can read.
fn tool_error(s: impl Into<String>) -> Value {
    json!({"content": [{"type": "text", "text": s.into()}], "isError": true})
}

fn string_arg<'a>(args: &'a Value, key: &str) -> Result<&'a str, Value> {
    args.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| tool_error(format!("argument {key:?} must be a string")))
}

fn uint_arg(args: &Value, key: &str, max: u64) -> Result<u64, Value> {
    args.get(key)
        .and_then(Value::as_u64)
        .filter(|v| *v <= max)
        .ok_or_else(|| tool_error(format!("argument {key:?} must be an integer from 0 to {max}")))
}

#[async_trait(?Send)]
impl ToolProvider for Builtin {
    /// The built-in tools ask their questions first and act only on the answers.
    fn replays_questions(&self) -> bool {
        true
    }

    fn tools(&self) -> Vec<ToolDef> {
        self.enabled
            .iter()
            .map(|n| ToolDef {
                name: (*n).to_owned(),
                definition: definition(n),
            })
            .collect()
    }

    async fn call(&self, name: &str, args: Value, ctx: &dyn CallContext) -> Result<Value, RpcError> {
        if !self.enabled.contains(&name) {
            return Err(RpcError::invalid_params(format!(
                "unknown tool: {}",
                protocol::truncate(name, 128)
            )));
        }
        let result = match name {
            "echo" => echo(&args),
            "add" => add(&args),
            "countdown" => countdown(&args, ctx).await,
            "log" => log(&args, ctx).await,
            "confirm" => confirm(&args, ctx).await,
            _ => Err(tool_error("unknown tool")),
        };
        Ok(result.unwrap_or_else(|e| e))
    }
}

fn echo(args: &Value) -> Result<Value, Value> {
    Ok(text(string_arg(args, "text")?))
}

fn add(args: &Value) -> Result<Value, Value> {
    let num = |k: &str| {
        args.get(k)
            .filter(|v| v.is_number())
            .ok_or_else(|| tool_error(format!("argument {k:?} must be a number")))
    };
    let (a, b) = (num("a")?, num("b")?);
    let sum = match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) => x.checked_add(y).map(|s| s.to_string()),
        _ => None,
    }
    .unwrap_or_else(|| {
        let s = a.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0);
        s.to_string()
    });
    Ok(text(sum))
}

async fn countdown(args: &Value, ctx: &dyn CallContext) -> Result<Value, Value> {
    let steps = uint_arg(args, "steps", MAX_STEPS)?;
    let interval = Duration::from_millis(uint_arg(args, "interval_ms", MAX_INTERVAL_MS)?);
    for step in 1..=steps {
        // Cancellation drops this future (the caller selects on the token), ending the sleep.
        tokio::time::sleep(interval).await;
        ctx.progress(
            step as f64,
            Some(steps as f64),
            Some(&format!("{} to go", steps - step)),
        )
        .await;
    }
    Ok(text(format!("done: {steps} steps")))
}

async fn log(args: &Value, ctx: &dyn CallContext) -> Result<Value, Value> {
    let level = string_arg(args, "level")?;
    if protocol::log_level_rank(level).is_none() {
        return Err(tool_error(format!(
            "level must be one of {}",
            protocol::LOG_LEVELS.join(", ")
        )));
    }
    let message = string_arg(args, "message")?;
    ctx.log(level, "marina.builtin.log", json!(message)).await;
    Ok(text(format!("logged at {level}")))
}

async fn confirm(args: &Value, ctx: &dyn CallContext) -> Result<Value, Value> {
    let question = string_arg(args, "question")?;
    // (The context refuses it when the client did not declare elicitation.)
    let params = json!({
        "message": question,
        "requestedSchema": {"type": "object", "properties": {"answer": {"type": "string", "title": "Answer"}}, "required": ["answer"]}
    });
    let answer = ctx
        .request_client("elicitation/create", params)
        .await
        .map_err(|e| tool_error(format!("elicitation failed: {}", e.message)))?;
    match answer.get("action").and_then(Value::as_str) {
        Some("accept") => match answer.pointer("/content/answer").and_then(Value::as_str) {
            Some(a) => Ok(text(a)),
            None => Err(tool_error("the answer is missing")),
        },
        Some(other @ ("decline" | "cancel")) => Err(tool_error(format!("the user chose to {other}"))),
        _ => Err(tool_error("the client sent an invalid elicitation result")),
    }
}

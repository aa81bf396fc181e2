//! What the commands print: aligned tables for people, the API's JSON for scripts.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value;

use super::client::printable;

/// Columns aligned on the widest cell, two spaces apart; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let width = |s: &str| s.chars().count();
    let mut widths: Vec<usize> = headers.iter().map(|h| width(h)).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(width(cell));
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths.get(i).copied().unwrap_or(0).saturating_sub(width(cell));
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A value as a table cell: text as is (control characters escaped), `null` or absent as `-`,
/// lists comma-separated.
pub fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) if s.is_empty() => "-".into(),
        Some(Value::String(s)) => printable(s),
        Some(Value::Array(a)) if a.is_empty() => "-".into(),
        Some(Value::Array(a)) => a.iter().map(|x| cell(Some(x))).collect::<Vec<_>>().join(","),
        Some(Value::Bool(b)) => if *b { "yes" } else { "no" }.into(),
        Some(other) => printable(&other.to_string()),
    }
}

/// Unix milliseconds as an RFC 3339 time (UTC, seconds); `-` for none.
pub fn time(ms: Option<&Value>) -> String {
    match ms.and_then(Value::as_u64) {
        Some(ms) if ms > 0 => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        }
        _ => "-".into(),
    }
}

/// Pretty JSON on stdout.
pub fn print_json(v: &Value) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => outln!("{s}"),
        Err(_) => outln!("{v}"),
    }
}

/// Lines `label: value` with the values aligned.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    pairs
        .iter()
        .map(|(k, v)| format!("{:<w$} {v}\n", format!("{k}:")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align() {
        let t = table(
            &["ID", "SOURCE", "VERSION"],
            &[
                vec!["acme".into(), "store".into(), "12".into()],
                vec!["x".into(), "file".into(), "0".into()],
            ],
        );
        assert_eq!(t, "ID    SOURCE  VERSION\nacme  store   12\nx     file    0\n");
    }

    #[test]
    fn cells() {
        assert_eq!(cell(Some(&json!(["a", "b"]))), "a,b");
        assert_eq!(cell(Some(&json!(null))), "-");
        assert_eq!(cell(None), "-");
        assert_eq!(cell(Some(&json!("a\nb"))), "a\\nb");
        assert_eq!(cell(Some(&json!(3))), "3");
        assert_eq!(time(Some(&json!(0))), "-");
        assert_eq!(time(Some(&json!(1_764_690_000_000u64))), "2025-12-02T15:40:00Z");
    }
}

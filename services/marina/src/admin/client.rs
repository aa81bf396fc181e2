//! The admin API over HTTP: one base URL (`…/admin/v1`), the administrator's key as
//! `Authorization: Bearer` (marked sensitive, never printed), JSON in and out, and problem
//! documents (RFC 9457) turned into [`Failure::Api`].

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Why a command failed; each maps to an exit status.
#[derive(Debug)]
pub enum Failure {
    /// The API answered with an error (exit 1).
    Api {
        status: u16,
        title: Option<String>,
        detail: Option<String>,
        field: Option<String>,
    },
    /// Something the API said or did that the command cannot go on with, or a partial failure
    /// already reported line by line (exit 1).
    Failed(String),
    /// Bad input on this side: flags, files, environment (exit 2).
    Usage(String),
    /// The API could not be reached (exit 3).
    Unreachable(String),
}

impl Failure {
    /// The exit status.
    pub fn code(&self) -> u8 {
        match self {
            Self::Api { .. } | Self::Failed(_) => 1,
            Self::Usage(_) => 2,
            Self::Unreachable(_) => 3,
        }
    }

    /// The problem of an error answer.
    pub fn from_answer(status: StatusCode, body: &[u8]) -> Self {
        let doc: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let text = |k: &str| {
            doc.get(k)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let mut detail = text("detail");
        if detail.is_none() && !doc.is_object() {
            // Not a problem document (a proxy's page?): its start says more than nothing.
            let raw = String::from_utf8_lossy(body);
            let raw: String = raw.trim().chars().take(200).collect();
            if !raw.is_empty() {
                detail = Some(raw);
            }
        }
        Self::Api {
            status: status.as_u16(),
            title: text("title"),
            detail,
            field: text("field"),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Api {
                status,
                title,
                detail,
                field,
            } => {
                let reason = StatusCode::from_u16(*status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("error");
                let what = detail.as_deref().or(title.as_deref()).unwrap_or(reason);
                write!(f, "{status} {}", printable(what))?;
                if let Some(field) = field {
                    write!(f, " (field: {})", printable(field))?;
                }
                Ok(())
            }
            Self::Failed(m) | Self::Usage(m) | Self::Unreachable(m) => f.write_str(m),
        }
    }
}

/// `s` with control characters (a terminal's escape sequences, newlines) shown escaped: what the
/// API sends is data, never something for the terminal to interpret.
pub fn printable(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// An answer of the API (any status).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The JSON body; `Null` when there is none.
    pub body: Value,
    raw: Vec<u8>,
}

impl Answer {
    /// This answer if it is a success, else its problem.
    pub fn ok(self) -> Result<Self, Failure> {
        if self.status.is_success() {
            Ok(self)
        } else {
            Err(Failure::from_answer(self.status, &self.raw))
        }
    }

    /// A response header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The admin API of one node (or of a load balancer in front of several).
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    /// `…/admin/v1`, without a trailing slash.
    base: url::Url,
    key: Option<HeaderValue>,
}

/// The admin API's base from what the user gave: `http://host:port` or
/// `http://host:port/admin/v1` (a trailing slash either way).
pub fn base_url(given: &str) -> Result<url::Url, Failure> {
    let bad = |why: String| Failure::Usage(format!("--url {}: {why}", printable(given)));
    let mut url = url::Url::parse(given.trim()).map_err(|e| bad(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad("must be an http:// or https:// URL with a host".into()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not have a query or fragment".into()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "must not hold credentials (use MARINA_ADMIN_KEY or --key-file)".into(),
        ));
    }
    let path = url.path().trim_end_matches('/').to_owned();
    let path = if path.ends_with("/admin/v1") {
        path
    } else {
        format!("{path}/admin/v1")
    };
    url.set_path(&path);
    Ok(url)
}

impl Client {
    /// A client of the API at `base` (see [`base_url`]) with the administrator's `key`.
    pub fn new(base: url::Url, key: Option<String>, timeout: Duration) -> Result<Self, Failure> {
        let key = key
            .map(|k| {
                let mut v = HeaderValue::from_str(&format!("Bearer {k}")).map_err(|_| {
                    Failure::Usage("the admin key holds characters an HTTP header cannot".into())
                })?;
                v.set_sensitive(true);
                Ok::<_, Failure>(v)
            })
            .transpose()?;
        let http = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .timeout(timeout)
            // The key goes to the URL given, never to where a redirect points.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("marina-admin/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Failure::Usage(format!("cannot make an HTTP client: {}", chain(&e))))?;
        Ok(Self { http, base, key })
    }

    /// The base URL (for messages).
    pub fn base(&self) -> &str {
        self.base.as_str()
    }

    /// `…/admin/v1/<segments…>?<query>`, each segment percent-encoded.
    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> url::Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }

    /// `method` on `segments` with `query`, extra `headers` and a JSON `body`: the answer,
    /// whatever its status; `Err` only when the API cannot be reached.
    pub async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        headers: &[(&'static str, String)],
        body: Option<&Value>,
    ) -> Result<Answer, Failure> {
        let url = self.url(segments, query);
        let mut req = self
            .http
            .request(method, url)
            .header("accept", "application/json, application/problem+json");
        if let Some(k) = &self.key {
            req = req.header("authorization", k.clone());
        }
        for (name, value) in headers {
            let value = HeaderValue::from_str(value)
                .map_err(|_| Failure::Failed(format!("cannot send the header {name}: {value:?}")))?;
            req = req.header(HeaderName::from_static(name), value);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let unreachable = |e: reqwest::Error| {
            Failure::Unreachable(format!(
                "cannot reach the admin API at {}: {}",
                self.base,
                chain(&e)
            ))
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let raw = resp.bytes().await.map_err(unreachable)?.to_vec();
        let body = if raw.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else if status.is_success() {
            serde_json::from_slice(&raw).map_err(|e| {
                Failure::Failed(format!(
                    "{} answered {status} with a body that is not JSON ({e}): is it Marina's admin API?",
                    self.base
                ))
            })?
        } else {
            serde_json::from_slice(&raw).unwrap_or(Value::Null)
        };
        Ok(Answer {
            status,
            headers,
            body,
            raw,
        })
    }

    /// GET, a success or its problem.
    pub async fn get(&self, segments: &[&str], query: &[(&str, String)]) -> Result<Answer, Failure> {
        self.call(Method::GET, segments, query, &[], None).await?.ok()
    }

    /// Every item of a paged list (`{"items": […], "next": cursor|null}`, `after=<cursor>`).
    pub async fn all_pages(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<Vec<Value>, Failure> {
        /// More pages than any real list has: a cursor that never ends is the API's bug.
        const MAX_PAGES: usize = 100_000;
        let mut items = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut q = query.to_vec();
            if let Some(a) = &after {
                q.push(("after", a.clone()));
            }
            let page = self.get(segments, &q).await?.body;
            let Some(batch) = page.get("items").and_then(Value::as_array) else {
                return Err(Failure::Failed(format!(
                    "unexpected answer from {}: no `items` list",
                    self.base
                )));
            };
            items.extend(batch.iter().cloned());
            match page.get("next").and_then(Value::as_str) {
                Some(next) if after.as_deref() != Some(next) && !batch.is_empty() => {
                    after = Some(next.to_owned());
                }
                Some(_) => {
                    return Err(Failure::Failed(format!(
                        "{} returned a page cursor that does not advance",
                        self.base
                    )));
                }
                None => return Ok(items),
            }
        }
        Err(Failure::Failed(format!(
            "{} returned more than {MAX_PAGES} pages",
            self.base
        )))
    }
}

/// An error with its causes (reqwest's own message leaves out why a connection failed).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !s.contains(&c_text) {
            s.push_str(": ");
            s.push_str(&c_text);
        }
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_takes_either_form() {
        for given in [
            "http://127.0.0.1:9090",
            "http://127.0.0.1:9090/",
            "http://127.0.0.1:9090/admin/v1",
            "http://127.0.0.1:9090/admin/v1/",
        ] {
            assert_eq!(
                base_url(given).unwrap().as_str(),
                "http://127.0.0.1:9090/admin/v1",
                "{given}"
            );
        }
        assert_eq!(
            base_url("https://lb.internal/marina").unwrap().as_str(),
            "https://lb.internal/marina/admin/v1"
        );
        for bad in ["", "127.0.0.1:9090", "ftp://x/", "http://u:p@x/", "http://x/?a=b"] {
            assert!(matches!(base_url(bad), Err(Failure::Usage(_))), "{bad}");
        }
    }

    #[test]
    fn segments_are_encoded() {
        let c = Client::new(
            base_url("http://127.0.0.1:1").unwrap(),
            None,
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(
            c.url(&["tenants", "a/b?c"], &[("after", "x&y".into())]).as_str(),
            "http://127.0.0.1:1/admin/v1/tenants/a%2Fb%3Fc?after=x%26y"
        );
    }

    #[test]
    fn problems_read_as_status_detail_field() {
        let p = Failure::from_answer(
            StatusCode::BAD_REQUEST,
            br#"{"title":"invalid document","status":400,"detail":"must be 64 hex digits","field":"auth.api_keys[0].sha256"}"#,
        );
        assert_eq!(
            p.to_string(),
            "400 must be 64 hex digits (field: auth.api_keys[0].sha256)"
        );
        assert_eq!(p.code(), 1);
        let p = Failure::from_answer(StatusCode::BAD_GATEWAY, b"<html>\x1b[31mbad\n</html>");
        assert_eq!(p.to_string(), "502 <html>\\u{1b}[31mbad\\n</html>");
        let p = Failure::from_answer(StatusCode::NOT_FOUND, b"");
        assert_eq!(p.to_string(), "404 Not Found");
    }
}

//! The calls of `sandbox-check`: each one made once (no retry: the check reports what the org
//! does), counted, and kept as an exchange for the trace. The only I/O of the check besides
//! writing the trace file.

use super::assumptions::Seen;
use super::redact::Redactor;
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use std::time::Duration;

/// The answer headers the trace keeps: versions, rate limits, content type.
const TRACED_HEADERS: &[&str] = &[
    "etag",
    "content-type",
    "retry-after",
    "inin-ratelimit-allowed",
    "inin-ratelimit-count",
    "inin-ratelimit-reset",
];

const SCIM_JSON: &str = "application/scim+json";
const JSON: &str = "application/json";

/// One request and its answer, unredacted (redacted only when written).
#[derive(Debug, Clone)]
pub struct Exchange {
    pub method: &'static str,
    /// The route template (`/users/{id}`), for people.
    pub route: &'static str,
    /// The URL's path and query as sent.
    pub path: String,
    pub if_match: Option<String>,
    pub request_body: Option<Value>,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Exchange {
    pub fn seen(&self) -> Seen {
        Seen {
            status: self.status,
            etag: self.header("etag").map(str::to_owned),
            body: self.body.clone(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The trace line: JSON, everything redacted.
    pub fn trace_line(&self, seq: usize, r: &mut Redactor) -> Value {
        let headers: serde_json::Map<String, Value> = self
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), Value::String(v.clone())))
            .collect();
        json!({
            "seq": seq,
            "method": self.method,
            "route": self.route,
            "path": r.text(&self.path),
            "if_match": self.if_match,
            "request_body": self.request_body.as_ref().map(|b| r.json(b)),
            "status": self.status,
            "headers": headers,
            "body": r.json(&self.body),
        })
    }
}

/// A transport failure (no answer): its message.
#[derive(Debug, Clone)]
pub struct NoAnswer(pub String);

impl std::fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no answer: {}", self.0)
    }
}

pub struct Caller {
    http: reqwest::Client,
    token: SecretString,
    /// Origin of the target (`https://api.mypurecloud.com`): paths are relative to it.
    origin: String,
    pub calls: u32,
    pub exchanges: Vec<Exchange>,
}

impl Caller {
    pub fn new(http: reqwest::Client, token: SecretString, origin: String, calls: u32) -> Caller {
        Caller {
            http,
            token,
            origin,
            calls,
            exchanges: Vec::new(),
        }
    }

    /// Sends one request; `path` starts with `/` and holds the query already encoded.
    pub async fn call(
        &mut self,
        method: Method,
        route: &'static str,
        path: String,
        if_match: Option<&str>,
        body: Option<Value>,
    ) -> Result<Exchange, NoAnswer> {
        self.calls += 1;
        let scim = path.contains("/scim/");
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.origin))
            .bearer_auth(self.token.expose_secret())
            .header(reqwest::header::ACCEPT, format!("{SCIM_JSON}, {JSON}"));
        if let Some(v) = if_match {
            req = req.header(reqwest::header::IF_MATCH, v);
        }
        if let Some(b) = &body {
            // SCIM takes application/scim+json; the Platform API application/json
            // (docs/bulk-grants.md, assumption 16).
            let content_type = if scim { SCIM_JSON } else { JSON };
            req = req
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(b.to_string());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| NoAnswer(e.without_url().to_string()))?;
        let status = resp.status().as_u16();
        let headers = TRACED_HEADERS
            .iter()
            .filter_map(|name| {
                resp.headers()
                    .get(*name)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| ((*name).to_owned(), v.to_owned()))
            })
            .collect();
        // A body that is not JSON (or none) is kept as null: the status still tells.
        let bytes = resp.bytes().await.unwrap_or_default();
        let answer = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let exchange = Exchange {
            method: method_name(&method),
            route,
            path,
            if_match: if_match.map(str::to_owned),
            request_body: body,
            status,
            headers,
            body: answer,
        };
        self.exchanges.push(exchange.clone());
        Ok(exchange)
    }
}

fn method_name(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        _ => "OTHER",
    }
}

/// A client for the check: short time-outs, its own user agent.
pub fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!(
            "rolesync-sandbox-check/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
        .unwrap_or_default()
}

/// Percent-encodes a query value or path segment.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

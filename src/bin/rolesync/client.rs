//! A small client of the rolesync HTTP API, shared by the CLI commands and the demo.

use std::time::Duration;

use anyhow::Context;
use rolesync::domain::{JobStatus, Mode, Outcome, Roster};
use rolesync::ingest::Format;
use serde_json::Value;
use tokio::time::Instant;

#[derive(clap::Args, Debug, Clone)]
pub struct ClientArgs {
    /// Base URL of the rolesync service.
    #[arg(long, env = "ROLESYNC_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key (sent as a bearer token).
    #[arg(long, env = "ROLESYNC_API_KEY", hide_env_values = true)]
    pub api_key: String,
}

/// What a submission asks for besides its body. Sent as query parameters whatever the file's
/// format; the service settles them with what a JSON envelope says (a dry run on either side
/// is a dry run; two different modes are refused).
#[derive(Debug, Clone, Copy, Default)]
pub struct SubmitOptions {
    /// None: the file's own `mode` (JSON envelope), else `merge`.
    pub mode: Option<Mode>,
    pub dry_run: bool,
    /// None: the file's own `roster` (JSON envelope), else `partial`.
    pub roster: Option<Roster>,
}

/// A small client of the rolesync API, for the CLI and the demo.
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

/// Uploads and CSV downloads of a large job may take long; other calls are short.
const LONG: Duration = Duration::from_secs(3600);
const SHORT: Duration = Duration::from_secs(60);

/// Consecutive failed polls tolerated while waiting for a job (a restart of the service, a
/// 503 while the store fails over), one poll interval apart or more.
const POLL_FAILURES: u32 = 20;

impl Client {
    pub fn new(args: &ClientArgs) -> anyhow::Result<Client> {
        Ok(Client {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .build()?,
            base: args.url.trim_end_matches('/').to_owned(),
            key: args.api_key.clone(),
        })
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .timeout(SHORT)
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .timeout(SHORT)
    }

    /// Sends the request; a non-2xx answer is an error carrying the problem's detail and the
    /// fields it names.
    async fn send(req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let resp = req.send().await.map_err(|e| {
            let url = e.url().map(|u| u.to_string()).unwrap_or_default();
            anyhow::anyhow!("cannot reach rolesync at {url}: {e}")
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let mut message = format!("rolesync answered {status}");
        if let Some(detail) = body.get("detail").and_then(|d| d.as_str()) {
            message.push_str(": ");
            message.push_str(detail);
        }
        for e in body
            .get("errors")
            .and_then(|e| e.as_array())
            .into_iter()
            .flatten()
            .take(20)
        {
            let field = e.get("field").and_then(|f| f.as_str()).unwrap_or("");
            let text = e.get("message").and_then(|f| f.as_str()).unwrap_or("");
            match e.get("line").and_then(|l| l.as_u64()) {
                Some(line) => message.push_str(&format!("\n  line {line}: {field}: {text}")),
                None => message.push_str(&format!("\n  {field}: {text}")),
            }
        }
        anyhow::bail!(message)
    }

    async fn json(req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        Self::send(req)
            .await?
            .json()
            .await
            .context("rolesync answered with a body that is not JSON")
    }

    /// `POST /v1/jobs` with an `Idempotency-Key`: sent again with the same key and body, it
    /// answers the same job instead of creating a second one.
    pub async fn submit(
        &self,
        format: Format,
        body: impl Into<reqwest::Body>,
        options: SubmitOptions,
        idempotency_key: &str,
    ) -> anyhow::Result<Value> {
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(mode) = options.mode {
            query.push(("mode", mode.as_str()));
        }
        if options.dry_run {
            query.push(("dry_run", "true"));
        }
        if let Some(roster) = options.roster {
            query.push(("roster", roster.as_str()));
        }
        let req = self
            .post("/v1/jobs")
            .timeout(LONG)
            .header(reqwest::header::CONTENT_TYPE, format.content_type())
            .header("Idempotency-Key", idempotency_key)
            .query(&query)
            .body(body);
        Self::json(req).await
    }

    pub async fn job(&self, id: &str) -> anyhow::Result<Value> {
        Self::json(self.get(&format!("/v1/jobs/{}", segment(id)))).await
    }

    pub async fn jobs(
        &self,
        status: Option<JobStatus>,
        limit: u32,
        cursor: Option<&str>,
    ) -> anyhow::Result<Value> {
        let mut query = vec![("limit", limit.to_string())];
        if let Some(s) = status {
            query.push(("status", s.as_str().to_owned()));
        }
        if let Some(c) = cursor {
            query.push(("cursor", c.to_owned()));
        }
        Self::json(self.get("/v1/jobs").query(&query)).await
    }

    /// One page of a job's rows (`next_cursor` null on the last).
    pub async fn items(
        &self,
        id: &str,
        outcome: Option<Outcome>,
        limit: u32,
        cursor: Option<&str>,
    ) -> anyhow::Result<Value> {
        let mut query = vec![("limit", limit.to_string())];
        if let Some(o) = outcome {
            query.push(("outcome", o.as_str().to_owned()));
        }
        if let Some(c) = cursor {
            query.push(("cursor", c.to_owned()));
        }
        Self::json(
            self.get(&format!("/v1/jobs/{}/items", segment(id)))
                .query(&query),
        )
        .await
    }

    /// A job's rows as the service's CSV file, to be read as a stream.
    pub async fn items_csv(
        &self,
        id: &str,
        outcome: Option<Outcome>,
    ) -> anyhow::Result<reqwest::Response> {
        let mut req = self
            .get(&format!("/v1/jobs/{}/items", segment(id)))
            .timeout(LONG)
            .header(reqwest::header::ACCEPT, "text/csv");
        if let Some(o) = outcome {
            req = req.query(&[("outcome", o.as_str())]);
        }
        Self::send(req).await
    }

    pub async fn cancel(&self, id: &str) -> anyhow::Result<Value> {
        Self::json(self.post(&format!("/v1/jobs/{}/cancel", segment(id)))).await
    }

    /// `POST /v1/jobs/{id}/revert`: the new revert job.
    pub async fn revert(&self, id: &str, dry_run: bool, force: bool) -> anyhow::Result<Value> {
        let req = self
            .post(&format!("/v1/jobs/{}/revert", segment(id)))
            .query(&[("dry_run", dry_run), ("force", force)]);
        Self::json(req).await
    }

    /// `POST /v1/reconcile`: the new reconcile job.
    pub async fn reconcile(&self, dry_run: bool, mode: Mode) -> anyhow::Result<Value> {
        let req = self
            .post("/v1/reconcile")
            .json(&serde_json::json!({"dry_run": dry_run, "mode": mode.as_str()}));
        Self::json(req).await
    }

    pub async fn approve(&self, id: &str) -> anyhow::Result<Value> {
        Self::json(self.post(&format!("/v1/jobs/{}/approve", segment(id)))).await
    }

    /// Polls the job until it ends (or waits for approval) or `deadline` passes, drawing a
    /// progress bar of rows done on standard error when it is a terminal. Returns the job as
    /// last read.
    pub async fn wait(&self, id: &str, deadline: Option<Instant>) -> anyhow::Result<Value> {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{bar:40}] {pos}/{len} rows  {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        let mut failures = 0u32;
        let mut last: Option<Value> = None;
        loop {
            let job = match self.job(id).await {
                Ok(job) => {
                    failures = 0;
                    job
                }
                // Once the job has been seen, a failed poll is a passing outage, tolerated a
                // while; a first poll that fails (no such job, a refused key) ends the wait.
                Err(e) if last.is_some() && failures < POLL_FAILURES => {
                    failures += 1;
                    bar.set_message(format!("retrying: {e}"));
                    if deadline.is_some_and(|d| Instant::now() >= d)
                        && let Some(job) = last
                    {
                        bar.abandon();
                        return Ok(job);
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let counts = job.get("counts").cloned().unwrap_or_default();
            let total = counts.get("total").and_then(|v| v.as_u64()).unwrap_or(0);
            let pending = counts.get("pending").and_then(|v| v.as_u64()).unwrap_or(0);
            let status = job
                .get("status")
                .and_then(|v| v.as_str())
                .and_then(JobStatus::parse);
            let calls = job
                .pointer("/scim/requests")
                .and_then(|v| v.as_u64())
                .unwrap_or(0);
            bar.set_length(total);
            bar.set_position(total.saturating_sub(pending));
            bar.set_message(format!(
                "{}, {calls} SCIM calls",
                status.map_or("?", JobStatus::as_str)
            ));
            // A cancelled job is over once `finished_at` is set: until then, the writes that
            // were in flight when it was cancelled are being recorded.
            let finished = job.get("finished_at").is_some_and(|v| !v.is_null());
            let over = match status {
                Some(JobStatus::Cancelled) => finished,
                Some(s) => s.is_terminal() || s == JobStatus::AwaitingApproval,
                None => true,
            };
            if over {
                bar.finish();
                return Ok(job);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                bar.abandon();
                return Ok(job);
            }
            last = Some(job);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// A job id as one URL path segment: whatever the user typed cannot reach another endpoint.
fn segment(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

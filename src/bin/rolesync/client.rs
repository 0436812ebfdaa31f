//! A small client of the rolesync HTTP API, shared by the CLI commands and the demo.

use std::time::Duration;

use rolesync::ingest::Format;

#[derive(clap::Args, Debug, Clone)]
pub struct ClientArgs {
    /// Base URL of the rolesync service.
    #[arg(long, env = "ROLESYNC_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key (sent as a bearer token).
    #[arg(long, env = "ROLESYNC_API_KEY", hide_env_values = true)]
    pub api_key: String,
}

/// A small client of the rolesync API, for the CLI and the demo.
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    pub fn new(args: &ClientArgs) -> anyhow::Result<Client> {
        Ok(Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(600))
                .build()?,
            base: args.url.trim_end_matches('/').to_owned(),
            key: args.api_key.clone(),
        })
    }

    async fn json(resp: reqwest::Response) -> anyhow::Result<serde_json::Value> {
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
        if !status.is_success() {
            let detail = body.get("detail").and_then(|d| d.as_str()).unwrap_or("");
            anyhow::bail!("rolesync answered {status}: {detail}");
        }
        Ok(body)
    }

    pub async fn submit(
        &self,
        format: Format,
        body: impl Into<reqwest::Body>,
        mode: &str,
        dry_run: bool,
        idempotency_key: Option<&str>,
    ) -> anyhow::Result<serde_json::Value> {
        let mut req = self
            .http
            .post(format!("{}/v1/jobs", self.base))
            .bearer_auth(&self.key)
            .header(reqwest::header::CONTENT_TYPE, format.content_type())
            .body(body);
        if format != Format::Json {
            req = req.query(&[
                ("mode", mode),
                ("dry_run", if dry_run { "true" } else { "false" }),
            ]);
        }
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        Self::json(req.send().await?).await
    }

    pub async fn job(&self, id: &str) -> anyhow::Result<serde_json::Value> {
        Self::json(
            self.http
                .get(format!("{}/v1/jobs/{id}", self.base))
                .bearer_auth(&self.key)
                .send()
                .await?,
        )
        .await
    }

    pub async fn items(
        &self,
        id: &str,
        outcome: &str,
        limit: u32,
    ) -> anyhow::Result<serde_json::Value> {
        let url = format!("{}/v1/jobs/{id}/items", self.base);
        let req = self
            .http
            .get(url)
            .bearer_auth(&self.key)
            .query(&[("outcome", outcome), ("limit", &limit.to_string())]);
        Self::json(req.send().await?).await
    }

    /// Polls the job until it ends, drawing a progress bar of rows done.
    pub async fn wait_with_progress(&self, id: &str) -> anyhow::Result<serde_json::Value> {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{bar:40}] {pos}/{len} rows  {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        loop {
            let job = self.job(id).await?;
            let counts = job.get("counts").cloned().unwrap_or_default();
            let total = counts.get("total").and_then(|v| v.as_u64()).unwrap_or(0);
            let pending = counts.get("pending").and_then(|v| v.as_u64()).unwrap_or(0);
            let status = job
                .get("status")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_owned();
            let calls = job
                .pointer("/scim/requests")
                .and_then(|v| v.as_u64())
                .unwrap_or(0);
            bar.set_length(total);
            bar.set_position(total - pending);
            bar.set_message(format!("{status}, {calls} SCIM calls"));
            // A cancelled job is over once `finished_at` is set: until then, the writes that
            // were in flight when it was cancelled are being recorded.
            let finished = job.get("finished_at").is_some_and(|v| !v.is_null());
            if matches!(
                status.as_str(),
                "succeeded" | "completed_with_errors" | "failed" | "awaiting_approval"
            ) || (status == "cancelled" && finished)
            {
                bar.finish();
                return Ok(job);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

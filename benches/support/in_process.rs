//! A rolesync served inside the bench's own process (on a temporary SQLite file, against an
//! emulator the bench spawned), and the calls the benches make to it and to the emulator.
//! The benches that count calls use it; those that measure a process's memory start
//! `rolesync serve` instead (`start_server`).

use super::KEY;
use anyhow::{Context, ensure};
use rolesync::configuration::Settings;
use rolesync::policy::Policy;
use rolesync::startup::Application;
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// rolesync, running until `stop`; its store lives as long as this.
pub struct Service {
    pub addr: String,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Service {
    /// Serves on a free port against the emulator at `base`, pacing its calls at
    /// `requests_per_minute`; `extra` is TOML appended to the config (whole tables).
    pub async fn start(
        base: &str,
        requests_per_minute: u64,
        extra: &str,
        policy: &str,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("rolesync.db");
        let settings = Settings::from_toml_overrides(&format!(
            r#"
            [server]
            bind = "127.0.0.1:0"
            [store]
            url = "sqlite://{db}"
            [target]
            scim_base = "{base}/api/v2/scim/v2"
            token_url = "{base}/oauth/token"
            requests_per_minute = {requests_per_minute}
            max_concurrency = 32
            [[auth.keys]]
            name = "bench"
            key_sha256 = "{digest}"
            scopes = ["admin"]
            {extra}
            "#,
            db = db.display(),
            digest = rolesync::http::auth::key_digest_hex(KEY),
        ))?;
        let app =
            Application::build_with_policy(settings, Policy::from_toml_str(policy)?, None).await?;
        let addr = format!("http://{}", app.local_addr()?);
        let stop = CancellationToken::new();
        let stop_app = stop.clone();
        let server = tokio::spawn(app.run_until_stopped(async move { stop_app.cancelled().await }));
        Ok(Self {
            addr,
            stop,
            server,
            _dir: dir,
        })
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.server.await;
    }
}

/// An access token of the emulator's OAuth client `(id, secret)`.
pub async fn client_token(
    http: &reqwest::Client,
    base: &str,
    (id, secret): (&str, &str),
) -> anyhow::Result<String> {
    let token: Value = http
        .post(format!("{base}/oauth/token"))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await?
        .json()
        .await?;
    Ok(token["access_token"].as_str().context("token")?.to_owned())
}

/// The bench's calls: to rolesync at `addr` (with the bench key), and to the emulator at
/// `base` (its admin routes, and its public API with `token`).
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub addr: String,
    pub token: String,
}

impl Client {
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.addr))
            .bearer_auth(KEY);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        ensure!(status.is_success(), "{path}: {status} {v}");
        Ok(v)
    }

    /// Submits a CSV job; the answer (with `job_id`).
    pub async fn submit_csv(&self, csv: String) -> anyhow::Result<Value> {
        let resp = self
            .http
            .post(format!("{}/v1/jobs", self.addr))
            .bearer_auth(KEY)
            .header("content-type", "text/csv")
            .body(csv)
            .send()
            .await?;
        ensure!(resp.status().is_success(), "submit: {}", resp.status());
        Ok(resp.json().await?)
    }

    /// Polls the job (an answer with `job_id`) until it has finished, or fails after `within`.
    pub async fn wait(&self, job: &Value, within: Duration) -> anyhow::Result<Value> {
        let id = job["job_id"].as_str().context("job_id")?.to_owned();
        let deadline = Instant::now() + within;
        loop {
            let j = self
                .api(reqwest::Method::GET, &format!("/v1/jobs/{id}"), None)
                .await?;
            if !j["finished_at"].is_null() {
                return Ok(j);
            }
            ensure!(Instant::now() < deadline, "job {id} never finished: {j}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The emulator's call counts since its last reset.
    pub async fn stats(&self) -> anyhow::Result<Value> {
        Ok(self
            .http
            .get(format!("{}/emulator/stats", self.base))
            .send()
            .await?
            .json()
            .await?)
    }

    pub async fn reset_stats(&self) -> anyhow::Result<()> {
        let resp = self
            .http
            .post(format!("{}/emulator/stats/reset", self.base))
            .send()
            .await?;
        ensure!(resp.status().is_success(), "stats reset: {}", resp.status());
        Ok(())
    }

    /// The SCIM user `EMP-{n}` (six digits), as the emulator's SCIM API lists it.
    pub async fn scim_user(&self, n: u64) -> anyhow::Result<Value> {
        let found: Value = self
            .http
            .get(format!("{}/api/v2/scim/v2/users", self.base))
            .bearer_auth(&self.token)
            .query(&[("filter", format!("externalId eq \"EMP-{n:06}\""))])
            .send()
            .await?
            .json()
            .await?;
        let user = &found["Resources"][0];
        ensure!(user.is_object(), "no user EMP-{n:06}: {found}");
        Ok(user.clone())
    }
}

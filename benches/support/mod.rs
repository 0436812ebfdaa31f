//! What the benches share: free ports, the real `rolesync` and emulator processes (a fresh one
//! per run, so a peak RSS is the run's own), fresh stores, polling a job; `in_process`: a rolesync served inside the bench itself.
// A bench that cannot start its processes stops with a panic naming what failed.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The API key every bench server accepts (scope `admin`).
pub const KEY: &str = "bench-admin-key";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Proc {
    pub child: Child,
    pub url: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Peak resident set size in MiB (Linux).
    pub fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    }
}

pub async fn wait_ready(http: &reqwest::Client, url: &str, path: &str) {
    for _ in 0..600 {
        if let Ok(r) = http.get(format!("{url}{path}")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} did not become ready");
}

pub async fn start_emulator(http: &reqwest::Client, users: u64) -> Proc {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_rolesync"))
        .args(["emulator", "--bind"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--rate-limit-per-minute", "0", "--users"])
        .arg(users.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    wait_ready(http, &url, "/emulator/faults").await;
    Proc { child, url }
}

/// Starts `rolesync serve` on a fresh port, with `extra` TOML appended to its config.
pub async fn start_server(
    http: &reqwest::Client,
    dir: &Path,
    store_url: &str,
    emulator: &str,
    extra: &str,
) -> Proc {
    start_server_with(http, dir, store_url, emulator, "", extra).await
}

/// `start_server`, with `target` TOML lines added to its `[target]` table.
pub async fn start_server_with(
    http: &reqwest::Client,
    dir: &Path,
    store_url: &str,
    emulator: &str,
    target: &str,
    extra: &str,
) -> Proc {
    let port = free_port();
    let config = format!(
        r#"
[server]
bind = "127.0.0.1:{port}"
[store]
url = "{store_url}"
[target]
scim_base = "{emulator}/api/v2/scim/v2"
token_url = "{emulator}/oauth/token"
client_id = "rolesync-dev"
client_secret = "rolesync-dev-secret"
requests_per_minute = 6000000
max_concurrency = 16
{target}
[policy]
file = "{policy}"
[[auth.keys]]
name = "bench"
key_sha256 = "{digest}"
scopes = ["admin"]
{extra}
"#,
        policy = concat!(env!("CARGO_MANIFEST_DIR"), "/config/policy.toml"),
        digest = rolesync::http::auth::key_digest_hex(KEY),
    );
    let path = dir.join(format!("rolesync-{port}.toml"));
    std::fs::write(&path, config).unwrap();
    // `BENCH_SERVER_LOG=<file>`: the server's log at `info` goes there (appended), to see
    // where a run spends its time; otherwise it is discarded.
    let (level, log) = match std::env::var_os("BENCH_SERVER_LOG") {
        Some(file) => (
            "info",
            Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(file)
                    .unwrap(),
            ),
        ),
        None => ("warn", Stdio::null()),
    };
    let child = Command::new(env!("CARGO_BIN_EXE_rolesync"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", level)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    wait_ready(http, &url, "/readyz").await;
    Proc { child, url }
}

/// A store for one run: a fresh SQLite file, or a fresh PostgreSQL database.
pub async fn fresh_store(backend: &str, dir: &Path, pg_admin: &str, n: usize) -> String {
    if backend == "sqlite" {
        let path = dir.join(format!("run-{n}.db"));
        return format!("sqlite://{}", path.display());
    }
    let name = format!("rolesync_bench_{}", uuid::Uuid::new_v4().simple());
    let pool = sqlx::PgPool::connect(pg_admin).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let base = pg_admin
        .rsplit_once('/')
        .map(|(b, _)| b)
        .unwrap_or(pg_admin);
    format!("{base}/{name}")
}

pub async fn drop_store(backend: &str, store_url: &str, pg_admin: &str) {
    if backend != "postgres" {
        return;
    }
    let Some((_, name)) = store_url.rsplit_once('/') else {
        return;
    };
    if let Ok(pool) = sqlx::PgPool::connect(pg_admin).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&pool)
        .await;
        pool.close().await;
    }
}

/// Polls the job until it has finished, or panics after `BENCH_DEADLINE_SECS` (default two
/// hours: a whole-org job of a million users took 32 minutes at worst): a hung bench stops with
/// the job's last state instead of running for ever.
pub async fn wait_finished(http: &reqwest::Client, server: &str, job_id: &str) -> Value {
    let secs = std::env::var("BENCH_DEADLINE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7_200);
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let job: Value = http
            .get(format!("{server}/v1/jobs/{job_id}"))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if job["finished_at"].is_string() {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "job {job_id} not finished after {secs} s (BENCH_DEADLINE_SECS): {job}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
pub mod in_process;

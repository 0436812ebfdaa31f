//! `spawn_app()`: a real rolesync on 127.0.0.1:0 against a real emulator, on a fresh SQLite
//! file, or on a fresh PostgreSQL database when `TEST_DATABASE_URL` is set.

use genesys_cloud_emulator::{self as emulator, EmulatorArgs, EmulatorHandle};
use rolesync::configuration::Settings;
use rolesync::http::auth::key_digest_hex;
use rolesync::policy::Policy;
use rolesync::startup::Application;
use serde_json::{Value, json};
use std::sync::LazyLock;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const ADMIN_KEY: &str = "test-admin-key";
/// The HR system's key: writes jobs, and may grant the policy's privileged roles.
pub const WRITER_KEY: &str = "test-writer-key";
/// A key that writes jobs but whose grants of privileged roles wait for approval.
pub const PLAIN_WRITER_KEY: &str = "test-plain-writer-key";
pub const READER_KEY: &str = "test-reader-key";

static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var("TEST_LOG").is_ok() {
        rolesync::telemetry::init(rolesync::domain::LogFormat::Pretty, "info");
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
});

pub struct TestOptions {
    pub emulator: EmulatorArgs,
    /// Extra TOML layered over the test settings.
    pub config: String,
    pub policy: String,
    /// Load the policy from a file in the test's folder, watched for changes.
    pub policy_file: bool,
}

impl Default for TestOptions {
    fn default() -> Self {
        TestOptions {
            emulator: EmulatorArgs {
                rate_limit_per_minute: 0,
                ..EmulatorArgs::default()
            },
            config: String::new(),
            policy: include_str!("../../config/policy.toml").to_owned(),
            policy_file: false,
        }
    }
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub emulator: EmulatorHandle,
    pub settings_toml: String,
    pub extra_toml: String,
    pub policy: String,
    pub policy_path: Option<std::path::PathBuf>,
    /// `{:?}` of the router being served: axum prints its route paths (`tests/api/openapi.rs`).
    pub router_debug: String,
    _dir: tempfile::TempDir,
    stop: CancellationToken,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    /// Last: dropped after everything that uses it.
    store: TestStore,
}

/// Another replica started by `TestApp::replica`; stopped when dropped.
pub struct Replica {
    pub address: String,
    stop: CancellationToken,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Replica {
    /// Stops it gracefully (its leases are given back).
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(s) = self.server.take() {
            s.await
                .expect("replica task")
                .expect("replica stops cleanly");
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A fresh store for one test: a SQLite file in `dir`, or a new PostgreSQL database when
/// `TEST_DATABASE_URL` is set. The database is dropped with the guard, unless the test is
/// failing: then it is kept for a look, and named on stderr.
pub struct TestStore {
    pub url: String,
    /// The server's URL (to connect for the drop) and the database's name.
    postgres: Option<(String, String)>,
}

pub async fn fresh_store(dir: &std::path::Path) -> TestStore {
    match std::env::var("TEST_DATABASE_URL") {
        Ok(base) if !base.is_empty() => {
            use sqlx::Connection;
            let name = format!("rolesync_test_{}", uuid::Uuid::new_v4().simple());
            let mut conn = sqlx::PgConnection::connect(&base)
                .await
                .expect("TEST_DATABASE_URL reachable");
            let sql = format!("CREATE DATABASE {name}");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .expect("create database");
            let (prefix, _) = base
                .rsplit_once('/')
                .expect("TEST_DATABASE_URL ends with /dbname");
            TestStore {
                url: format!("{prefix}/{name}"),
                postgres: Some((base, name)),
            }
        }
        _ => TestStore {
            url: format!("sqlite://{}", dir.join("rolesync.db").display()),
            postgres: None,
        },
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        let Some((base, name)) = self.postgres.take() else {
            return;
        };
        if std::thread::panicking() {
            eprintln!("kept the failed test's database {name}");
            return;
        }
        // Drop runs inside the test's runtime, which cannot be blocked on: the drop gets a
        // thread and a runtime of its own. FORCE ends the connections a service still holds.
        let dropped = std::thread::spawn(move || {
            use sqlx::Connection;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&base)
                    .await
                    .map_err(|e| e.to_string())?;
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| format!("{name}: {e}"))?;
                Ok::<(), String>(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("cannot drop the test database: {e}"),
            Err(_) => eprintln!("cannot drop the test database: its thread panicked"),
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(TestOptions::default()).await
}

pub async fn spawn_app_with(opts: TestOptions) -> TestApp {
    LazyLock::force(&TRACING);
    let emulator = emulator::spawn(opts.emulator)
        .await
        .expect("emulator starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = fresh_store(dir.path()).await;
    let policy_path = opts.policy_file.then(|| {
        let p = dir.path().join("policy.toml");
        std::fs::write(&p, &opts.policy).expect("write policy");
        p
    });
    let base = emulator.base_url();
    let settings_toml = format!(
        r#"
        [server]
        bind = "127.0.0.1:0"
        shutdown_grace_secs = 5
        [store]
        url = "{store_url}"
        lease_secs = 10
        [target]
        scim_base = "{base}/api/v2/scim/v2"
        token_url = "{base}/oauth/token"
        requests_per_minute = 60000
        max_retry_secs = 20
        [sync]
        chunk_size = 10
        # A user not in the emulator is not_found at once, as most tests expect; the joiners'
        # tests (`joiners.rs`) turn the wait for their account on.
        await_user_secs = 0
        [[auth.keys]]
        name = "admin"
        key_sha256 = "{admin}"
        scopes = ["admin"]
        [[auth.keys]]
        name = "writer"
        key_sha256 = "{writer}"
        scopes = ["jobs:write", "jobs:read", "roles:privileged"]
        [[auth.keys]]
        name = "plain-writer"
        key_sha256 = "{plain_writer}"
        scopes = ["jobs:write", "jobs:read"]
        [[auth.keys]]
        name = "reader"
        key_sha256 = "{reader}"
        scopes = ["jobs:read"]
        "#,
        admin = key_digest_hex(ADMIN_KEY),
        writer = key_digest_hex(WRITER_KEY),
        plain_writer = key_digest_hex(PLAIN_WRITER_KEY),
        reader = key_digest_hex(READER_KEY),
        store_url = store.url,
    );
    let mut app = TestApp {
        address: String::new(),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client"),
        emulator,
        settings_toml,
        extra_toml: opts.config,
        policy: opts.policy,
        policy_path,
        router_debug: String::new(),
        _dir: dir,
        stop: CancellationToken::new(),
        server: None,
        store,
    };
    app.start().await;
    app
}

impl TestApp {
    /// The URL of the test's store.
    pub fn store_url(&self) -> &str {
        &self.store.url
    }

    async fn start(&mut self) {
        let settings = Settings::from_toml_layers(&[&self.settings_toml, &self.extra_toml])
            .expect("valid test settings");
        let policy = Policy::from_toml_str(&self.policy).expect("valid test policy");
        let application =
            Application::build_with_policy(settings, policy, self.policy_path.clone())
                .await
                .expect("app builds");
        self.address = format!("http://{}", application.local_addr().expect("addr"));
        self.router_debug = format!("{:?}", application.router());
        self.stop = CancellationToken::new();
        let stop = self.stop.clone();
        self.server = Some(tokio::spawn(
            application.run_until_stopped(async move { stop.cancelled().await }),
        ));
    }

    /// Stops the service gracefully and starts a new one on the same store and emulator.
    pub async fn restart(&mut self) {
        self.stop_service().await;
        self.start().await;
    }

    pub async fn stop_service(&mut self) {
        self.stop.cancel();
        if let Some(s) = self.server.take() {
            s.await.expect("server task").expect("server stops cleanly");
        }
    }

    /// A second rolesync on the same store and emulator, with the same settings: another
    /// replica of the deployment, in this process (its own lease owner).
    pub async fn replica(&self) -> Replica {
        let settings = Settings::from_toml_layers(&[&self.settings_toml, &self.extra_toml])
            .expect("valid test settings");
        let policy = Policy::from_toml_str(&self.policy).expect("valid test policy");
        let application =
            Application::build_with_policy(settings, policy, self.policy_path.clone())
                .await
                .expect("replica builds");
        let address = format!("http://{}", application.local_addr().expect("addr"));
        let stop = CancellationToken::new();
        let until = stop.clone();
        let server =
            tokio::spawn(application.run_until_stopped(async move { until.cancelled().await }));
        Replica {
            address,
            stop,
            server: Some(server),
        }
    }

    /// Runs `sql` (a statement, no rows) on the test's store, on either backend: for a test
    /// that stages what a fault would leave in the store.
    pub async fn store_exec(&self, sql: &str) {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        if self.store_url().starts_with("sqlite:") {
            let pool = sqlx::SqlitePool::connect(self.store_url()).await.unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
            pool.close().await;
        } else {
            let pool = sqlx::PgPool::connect(self.store_url()).await.unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }

    /// The emulator's log of accepted role writes (`GET /emulator/writes`), all of it.
    pub async fn accepted_writes(&self) -> Vec<Value> {
        let mut all = Vec::new();
        loop {
            let page: Value = self
                .client
                .get(format!(
                    "{}/emulator/writes?after={}&limit=100000",
                    self.emulator_url(),
                    all.len()
                ))
                .send()
                .await
                .expect("writes")
                .json()
                .await
                .expect("writes json");
            let writes = page["writes"].as_array().cloned().unwrap_or_default();
            if writes.is_empty() {
                return all;
            }
            all.extend(writes);
        }
    }

    /// A number the store answers to `sql` (one row, one BIGINT column), on either backend.
    pub async fn store_count(&self, sql: &str) -> i64 {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        if self.store_url().starts_with("sqlite:") {
            let pool = sqlx::SqlitePool::connect(self.store_url()).await.unwrap();
            let n = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
            pool.close().await;
            n
        } else {
            let pool = sqlx::PgPool::connect(self.store_url()).await.unwrap();
            let n = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
            pool.close().await;
            n
        }
    }

    pub fn emulator_url(&self) -> String {
        self.emulator.base_url()
    }

    pub async fn submit(
        &self,
        content_type: &str,
        query: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.client
            .post(format!("{}/v1/jobs{query}", self.address))
            .bearer_auth(WRITER_KEY)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn submit_csv(&self, csv: &str) -> Value {
        let resp = self.submit("text/csv", "", csv.to_owned()).await;
        assert_eq!(resp.status(), 202, "submit: {:?}", resp.text().await);
        resp.json().await.expect("job json")
    }

    pub async fn submit_json(&self, body: Value) -> Value {
        let resp = self.submit("application/json", "", body.to_string()).await;
        assert_eq!(resp.status(), 202, "submit: {:?}", resp.text().await);
        resp.json().await.expect("job json")
    }

    pub async fn get(&self, path: &str, key: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .bearer_auth(key)
            .send()
            .await
            .expect("request")
    }

    pub async fn post(&self, path: &str, key: &str) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.address))
            .bearer_auth(key)
            .send()
            .await
            .expect("request")
    }

    pub async fn job(&self, id: &str) -> Value {
        let resp = self.get(&format!("/v1/jobs/{id}"), READER_KEY).await;
        assert_eq!(resp.status(), 200);
        resp.json().await.expect("job json")
    }

    /// Polls until the job reaches a status in `statuses` (180 s at most: a deadline, not a
    /// speed target: a 12 000-row dry run on PostgreSQL took over 60 s on a loaded 2-core machine).
    pub async fn wait_for(&self, id: &str, statuses: &[&str]) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
        loop {
            let job = self.job(id).await;
            let status = job["status"].as_str().unwrap_or("").to_owned();
            if statuses.contains(&status.as_str()) {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {id} stuck in {status}: {job}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls until the job has ended: a final status and `finished_at` (a cancelled job gets
    /// it once the writes that were in flight are recorded).
    pub async fn wait_finished(&self, id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let job = self
                .wait_for(
                    id,
                    &["succeeded", "completed_with_errors", "failed", "cancelled"],
                )
                .await;
            if !job["finished_at"].is_null() {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {id} never finished: {job}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every row of a job, by line.
    pub async fn items(&self, id: &str) -> Vec<Value> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/jobs/{id}/items?limit=1000");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let v: Value = self
                .get(&path, READER_KEY)
                .await
                .json()
                .await
                .expect("items");
            all.extend(v["items"].as_array().cloned().unwrap_or_default());
            match v["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return all,
            }
        }
    }

    /// Adds users to the emulator's org: (externalId, roles).
    pub async fn seed(&self, users: &[(&str, &[&str])]) {
        let body: Vec<Value> = users
            .iter()
            .enumerate()
            .map(|(i, (ext, roles))| {
                json!({
                    "userName": format!("user-{i}-{}@example.com", uuid::Uuid::new_v4().simple()),
                    "externalId": ext,
                    "displayName": format!("User {ext}"),
                    "roles": roles.iter().map(|r| json!({"value": r})).collect::<Vec<_>>(),
                })
            })
            .collect();
        let resp = self
            .client
            .post(format!("{}/emulator/users", self.emulator_url()))
            .json(&body)
            .send()
            .await
            .expect("seed");
        assert!(resp.status().is_success(), "seed: {:?}", resp.text().await);
    }

    /// The roles of every emulator user with this externalId, sorted.
    pub async fn roles_of(&self, external_id: &str) -> Vec<Vec<String>> {
        let users: Value = self
            .client
            .get(format!("{}/emulator/users", self.emulator_url()))
            .send()
            .await
            .expect("dump")
            .json()
            .await
            .expect("users json");
        let mut out = Vec::new();
        for u in users.as_array().into_iter().flatten() {
            if u["externalId"].as_str() == Some(external_id) {
                let mut roles: Vec<String> = u["roles"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| {
                        r.as_str()
                            .map(str::to_owned)
                            .or_else(|| r["value"].as_str().map(str::to_owned))
                    })
                    .collect();
                roles.sort();
                out.push(roles);
            }
        }
        out
    }

    /// A token of rolesync's own client at the emulator, for changing users behind the
    /// service's back.
    pub async fn emulator_token(&self) -> String {
        crate::process::client_token(&self.emulator_url(), "rolesync-dev", "rolesync-dev-secret")
            .await
    }

    pub async fn emulator_stats(&self) -> Value {
        self.client
            .get(format!("{}/emulator/stats", self.emulator_url()))
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("stats json")
    }

    /// Zeroes the emulator's call counters: what follows is counted alone.
    pub async fn reset_emulator_stats(&self) {
        let resp = self
            .client
            .post(format!("{}/emulator/stats/reset", self.emulator_url()))
            .send()
            .await
            .expect("stats reset");
        assert!(resp.status().is_success());
    }

    pub async fn set_faults(&self, faults: Value) {
        let resp = self
            .client
            .post(format!("{}/emulator/faults", self.emulator_url()))
            .json(&faults)
            .send()
            .await
            .expect("faults");
        assert!(
            resp.status().is_success(),
            "faults: {:?}",
            resp.text().await
        );
    }
}

pub fn by_line(items: &[Value]) -> std::collections::BTreeMap<i64, Value> {
    items
        .iter()
        .map(|i| (i["line"].as_i64().unwrap_or(0), i.clone()))
        .collect()
}

pub fn strs(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect();
    out.sort();
    out
}

/// A CSV body giving each of `users` the role `role` in tier `tier`.
pub fn csv_for(users: &[String], role: &str, tier: &str) -> String {
    std::iter::once("external_id,role_template,license_tier".to_owned())
        .chain(users.iter().map(|u| format!("{u},{role},{tier}")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Seeds `n` users `{prefix}0000`… with no roles but `Employee`; returns their external ids.
pub async fn seed_n(app: &TestApp, prefix: &str, n: usize) -> Vec<String> {
    let users: Vec<String> = (0..n).map(|i| format!("{prefix}{i:04}")).collect();
    let seeds: Vec<(&str, &[&str])> = users.iter().map(|u| (u.as_str(), &[][..])).collect();
    app.seed(&seeds).await;
    users
}

/// PATCH calls in an emulator's stats (`GET /emulator/stats`): the writes it received.
pub fn patches(stats: &Value) -> u64 {
    stats["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["method"] == "PATCH")
        .map(|r| r["count"].as_u64().unwrap_or(0))
        .sum()
}

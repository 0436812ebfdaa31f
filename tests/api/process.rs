//! The real `rolesync` binary as a child process: start-up from a config file, SIGTERM, and
//! crashes (`kill -9`) in the middle of a job.

use crate::helpers::*;
use genesys_cloud_emulator::{self as emulator, EmulatorArgs, EmulatorHandle};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Service {
    pub child: Child,
    pub url: String,
}

impl Drop for Service {
    /// A failed test leaves no process behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a config for `store_url` and the emulator at `base`, and starts `rolesync serve`.
pub async fn start_service(
    dir: &std::path::Path,
    store_url: &str,
    base: &str,
    extra: &str,
) -> Service {
    start_service_env(dir, store_url, base, extra, &[]).await
}

/// `start_service` with `ROLESYNC__…` variables (settings of a section the file already has).
pub async fn start_service_env(
    dir: &std::path::Path,
    store_url: &str,
    base: &str,
    extra: &str,
    env: &[(&str, &str)],
) -> Service {
    let port = free_port();
    let config = format!(
        r#"
[server]
bind = "127.0.0.1:{port}"
shutdown_grace_secs = 5
[store]
url = "{store_url}"
lease_secs = 5
[target]
scim_base = "{base}/api/v2/scim/v2"
token_url = "{base}/oauth/token"
client_id = "rolesync-dev"
client_secret = "rolesync-dev-secret"
requests_per_minute = 60000
[policy]
file = "{policy}"
[[auth.keys]]
name = "admin"
key_sha256 = "{admin}"
scopes = ["admin"]
{extra}
"#,
        policy = concat!(env!("CARGO_MANIFEST_DIR"), "/config/policy.toml"),
        admin = rolesync::http::auth::key_digest_hex(ADMIN_KEY),
    );
    let path = dir.join(format!("rolesync-{port}.toml"));
    std::fs::write(&path, config).unwrap();
    let log = std::fs::File::create(dir.join(format!("rolesync-{port}.log"))).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rolesync"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(r) = client.get(format!("{url}/readyz")).send().await
            && r.status() == 200
        {
            return Service { child, url };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("rolesync did not become ready");
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn emulator_with(args: EmulatorArgs) -> EmulatorHandle {
    emulator::spawn(args).await.unwrap()
}

pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

/// Waits for the child to exit (at most `secs`), returning its exit code.
pub async fn wait_exit(child: &mut Child, secs: u64) -> Option<i32> {
    for _ in 0..secs * 20 {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    panic!("the process did not exit within {secs} s");
}

pub async fn api(
    url: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<(&str, String)>,
) -> Value {
    let client = reqwest::Client::new();
    let mut req = client
        .request(method, format!("{url}{path}"))
        .bearer_auth(ADMIN_KEY);
    if let Some((ct, b)) = body {
        req = req.header("content-type", ct).body(b);
    }
    let resp = req.send().await.unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.unwrap()
}

pub async fn seed_users(base: &str, prefix: &str, n: usize) -> Vec<String> {
    let users: Vec<String> = (0..n).map(|i| format!("{prefix}{i:05}")).collect();
    let body: Vec<Value> = users
        .iter()
        .map(|u| serde_json::json!({"userName": format!("{u}@example.com"), "externalId": u, "displayName": u}))
        .collect();
    let resp = reqwest::Client::new()
        .post(format!("{base}/emulator/users"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    users
}

#[tokio::test]
async fn sigterm_mid_job_exits_0_within_the_grace_period_and_the_job_finishes_after_restart() {
    let emu = emulator_with(EmulatorArgs {
        rate_limit_per_minute: 0,
        latency_ms: 30,
        ..Default::default()
    })
    .await;
    let base = emu.base_url();
    let users = seed_users(&base, "T", 400).await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("rolesync.db").display());
    let mut svc = start_service(dir.path(), &store, &base, "").await;
    let job = api(
        &svc.url,
        reqwest::Method::POST,
        "/v1/jobs",
        Some(("text/csv", csv_for(&users, "Agent", "Standard Agent"))),
    )
    .await;
    let id = job["job_id"].as_str().unwrap().to_owned();
    // Let it start writing, then ask it to stop.
    loop {
        let j = api(
            &svc.url,
            reqwest::Method::GET,
            &format!("/v1/jobs/{id}"),
            None,
        )
        .await;
        if j["counts"]["applied"].as_i64().unwrap_or(0) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = std::time::Instant::now();
    signal(&svc.child, "-TERM");
    let code = wait_exit(&mut svc.child, 15).await;
    assert_eq!(code, Some(0), "exit code after SIGTERM");
    assert!(
        started.elapsed() < Duration::from_secs(5 + 3),
        "took {:?}",
        started.elapsed()
    );

    let svc = start_service(dir.path(), &store, &base, "").await;
    let mut done = Value::Null;
    for _ in 0..600 {
        done = api(
            &svc.url,
            reqwest::Method::GET,
            &format!("/v1/jobs/{id}"),
            None,
        )
        .await;
        if done["status"] == "succeeded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["counts"]["applied"], 400);
    let mut svc = svc;
    signal(&svc.child, "-TERM");
    assert_eq!(wait_exit(&mut svc.child, 15).await, Some(0));
}

#[tokio::test]
async fn a_bad_config_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[sync]\nchunk_size = 0\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rolesync"))
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sync.chunk_size"), "{stderr}");
}

#[tokio::test]
async fn policy_check_prints_the_roles_or_every_problem() {
    let ok = Command::new(env!("CARGO_BIN_EXE_rolesync"))
        .args(["policy", "check"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(ok.status.success());
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(
        out.contains("Supervisor") && out.contains("System Administrator"),
        "{out}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("policy.toml");
    std::fs::write(
        &bad,
        "[[tiers]]\nname = \"T\"\nroles = [\"A\", \"Ghost\"]\n[[roles]]\nname = \"A\"\ninherits = [\"B\"]\n[[roles]]\nname = \"B\"\ninherits = [\"A\"]\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rolesync"))
        .args(["policy", "check"])
        .env("ROLESYNC__POLICY__FILE", &bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("A -> B -> A"), "{text}");
    assert!(text.contains("Ghost"), "{text}");
}

/// A client-credentials token from the emulator at `emulator`, for changes made behind the
/// service's back (as rolesync's own client, or as another tool).
pub async fn client_token(emulator: &str, id: &str, secret: &str) -> String {
    let v: Value = reqwest::Client::new()
        .post(format!("{emulator}/oauth/token"))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["access_token"].as_str().unwrap().to_owned()
}

/// Sets a user's roles by hand through the emulator's SCIM API with `token` (lookup, PATCH
/// with If-Match), as an admin changing roles in Genesys behind the service's back would.
pub async fn set_roles_by_hand(emulator: &str, token: &str, external_id: &str, roles: &[&str]) {
    let http = reqwest::Client::new();
    let found: Value = http
        .get(format!("{emulator}/api/v2/scim/v2/users"))
        .bearer_auth(token)
        .query(&[("filter", format!("externalId eq \"{external_id}\""))])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let user = &found["Resources"][0];
    let id = user["id"].as_str().unwrap();
    let version = user["meta"]["version"].as_str().unwrap();
    let roles: Vec<Value> = roles.iter().map(|r| json!({"value": r})).collect();
    let resp = http
        .patch(format!("{emulator}/api/v2/scim/v2/users/{id}"))
        .bearer_auth(token)
        .header("if-match", format!("\"{}\"", version.trim_matches('"')))
        .json(&json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "roles", "value": roles}],
        }))
        .send()
        .await
        .unwrap();
    assert!(
        resp.status().is_success(),
        "hand change of {external_id}: {}",
        resp.text().await.unwrap_or_default()
    );
}

/// Polls a service's job until `finished_at` is set (at most 120 s).
pub async fn wait_job_finished(url: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let j = api(url, reqwest::Method::GET, &format!("/v1/jobs/{id}"), None).await;
        if !j["finished_at"].is_null() {
            return j;
        }
        assert!(
            Instant::now() < deadline,
            "the job did not finish in 120 s: {j}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

//! SCIM path against Authorization path: `cargo bench --bench bulk`.
//!
//! Runs the real `rolesync` binary (`serve`, a fresh process and SQLite store per run) against
//! a fresh emulator process per run (rate limit off, so the run is quick; the calls are what
//! is measured), submits one job over HTTP, waits for it, counts the API calls the emulator saw
//! (`/emulator/stats`, `/oauth/token` excluded), and checks that every user ends exactly right
//! as the emulator's SCIM model holds them.
//!
//! Scenarios:
//! - `rollout`: one role (`Agent`) to 10 000 users holding only `Employee` (`merge`);
//! - `swap`: a `replace` job giving 5 000 users holding `Agent` the role `Reporting` instead
//!   (approved through the API: it crosses the policy's removal bound).
//!
//! Each through `target.write_api = "scim"` and `"authorization"` (at `bulk_max_subjects` 100,
//! the default, and 500), the latter twice: as the first job rolesync runs (its users' ids
//! unknown: a SCIM scan reads them), and with the ids known from an earlier job (here a dry run
//! of the same body, not counted), when the users' roles are read from the home division's
//! grants, 500 a call. Columns: the calls, the wall time they imply at Genesys' 300 calls a
//! minute per token, the planner's choice and estimate, and the calls as a share of the SCIM
//! path's. Goal: the Authorization path at most 2 % of the SCIM path's calls.
//!
//! Subset: `BENCH_ONLY=rollout` or `BENCH_ONLY=swap`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::*;

#[derive(Clone, Copy)]
struct Scenario {
    name: &'static str,
    users: u64,
    /// Roles every user holds before the job (besides `Employee`).
    holds: &'static [&'static str],
    role: &'static str,
    tier: &'static str,
    mode: &'static str,
    /// Roles every user must hold after it, sorted.
    after: &'static [&'static str],
}

const SCENARIOS: [Scenario; 2] = [
    Scenario {
        name: "rollout",
        users: 10_000,
        holds: &[],
        role: "Agent",
        tier: "Standard Agent",
        mode: "merge",
        after: &["Agent", "Employee"],
    },
    Scenario {
        name: "swap",
        users: 5_000,
        holds: &["Agent"],
        role: "Reporting",
        tier: "Auditor",
        mode: "replace",
        after: &["Employee", "Reporting"],
    },
];

const AUTHZ_100: &str = "write_api = \"authorization\"\nbulk_max_subjects = 100";
const AUTHZ_500: &str = "write_api = \"authorization\"\nbulk_max_subjects = 500";

/// (label, `[target]` lines, warm: a dry run of the same body first, whose calls are not
/// counted, so that the store knows the users' ids as it does after any earlier job).
const PATHS: [(&str, &str, bool); 5] = [
    ("scim", "write_api = \"scim\"", false),
    ("authorization (100), first job", AUTHZ_100, false),
    ("authorization (500), first job", AUTHZ_500, false),
    ("authorization (100), ids known", AUTHZ_100, true),
    ("authorization (500), ids known", AUTHZ_500, true),
];

struct Run {
    calls: u64,
    writes: u64,
    estimate: Value,
    secs: f64,
}

fn ext(i: u64) -> String {
    format!("EMP-{i:06}")
}

async fn seed(http: &reqwest::Client, emulator: &str, s: &Scenario) {
    let users: Vec<Value> = (1..=s.users)
        .map(|i| {
            json!({
                "userName": format!("emp-{i:06}@example.com"),
                "externalId": ext(i),
                "roles": s.holds.iter().map(|r| json!({"value": r})).collect::<Vec<_>>(),
            })
        })
        .collect();
    let r = http
        .post(format!("{emulator}/emulator/users"))
        .json(&users)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "seed: {:?}", r.text().await);
}

/// API calls the emulator counted, `/oauth/token` excluded; and the role writes among them.
async fn calls(http: &reqwest::Client, emulator: &str) -> (u64, u64) {
    let stats: Value = http
        .get(format!("{emulator}/emulator/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut total = 0;
    let mut writes = 0;
    for r in stats["requests"].as_array().unwrap() {
        let route = r["route"].as_str().unwrap_or("");
        let n = r["count"].as_u64().unwrap_or(0);
        if route == "/oauth/token" {
            continue;
        }
        total += n;
        if r["method"] == "PATCH"
            || r["method"] == "PUT"
            || (r["method"] == "POST" && route.starts_with("/api/v2/authorization/roles/"))
        {
            writes += n;
        }
    }
    (total, writes)
}

/// Every user holds exactly `after`, as the emulator's SCIM model has them.
async fn check_users(http: &reqwest::Client, emulator: &str, s: &Scenario) {
    let users: Value = http
        .get(format!("{emulator}/emulator/users"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let users = users.as_array().unwrap();
    assert_eq!(users.len() as u64, s.users);
    for u in users {
        let mut roles: Vec<&str> = u["roles"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r.as_str().or_else(|| r["value"].as_str()))
            .collect();
        roles.sort_unstable();
        assert_eq!(roles, s.after, "{u}");
    }
}

/// Submits the scenario's body; returns the job id.
async fn submit(http: &reqwest::Client, server: &str, s: &Scenario, query: &str) -> String {
    let csv: String = std::iter::once("external_id,role_template,license_tier".to_owned())
        .chain((1..=s.users).map(|i| format!("{},{},{}", ext(i), s.role, s.tier)))
        .collect::<Vec<_>>()
        .join("\n");
    let resp = http
        .post(format!("{server}/v1/jobs?mode={}{query}", s.mode))
        .bearer_auth(KEY)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    resp.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn run(http: &reqwest::Client, s: &Scenario, target: &str, warm: bool, n: usize) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let emulator = start_emulator(http, 0).await;
    seed(http, &emulator.url, s).await;
    let store = fresh_store("sqlite", dir.path(), "", n).await;
    let server = start_server_with(http, dir.path(), &store, &emulator.url, target, "").await;
    if warm {
        let id = submit(http, &server.url, s, "&dry_run=true").await;
        let job = wait_finished(http, &server.url, &id).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        let r = http
            .post(format!("{}/emulator/stats/reset", emulator.url))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    let started = Instant::now();
    let id = submit(http, &server.url, s, "").await;
    // A replace job over the removal bound waits for approval: approve it once it is planned.
    loop {
        let job: Value = http
            .get(format!("{}/v1/jobs/{id}", server.url))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        match job["status"].as_str() {
            Some("awaiting_approval") => {
                let r = http
                    .post(format!("{}/v1/jobs/{id}/approve", server.url))
                    .bearer_auth(KEY)
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success(), "approve: {:?}", r.text().await);
                break;
            }
            Some("queued") => tokio::time::sleep(Duration::from_millis(200)).await,
            _ => break,
        }
    }
    let job = wait_finished(http, &server.url, &id).await;
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(job["status"], "succeeded", "{job}");
    check_users(http, &emulator.url, s).await;
    let (calls, writes) = calls(http, &emulator.url).await;
    Run {
        calls,
        writes,
        estimate: job["estimate"].clone(),
        secs,
    }
}

#[tokio::main]
async fn main() {
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(1800))
        .build()
        .unwrap();
    println!(
        "\n| scenario | path | calls | writes | minutes at 300/min | read / write chosen | estimate scim / authorization | % of SCIM path | run s |\n|---|---|---:|---:|---:|---|---|---:|---:|"
    );
    let mut n = 0;
    let mut worst: f64 = 0.0;
    for s in SCENARIOS
        .iter()
        .filter(|s| only.is_empty() || only == s.name)
    {
        let mut scim_calls = None;
        for (label, target, warm) in PATHS {
            n += 1;
            let r = run(&http, s, target, warm, n).await;
            let base = *scim_calls.get_or_insert(r.calls);
            let share = 100.0 * r.calls as f64 / base as f64;
            if label.starts_with("authorization") {
                worst = worst.max(share);
            }
            println!(
                "| {} ({} users) | {label} | {} | {} | {:.1} | {} / {} | {} / {} | {share:.2} % | {:.1} |",
                s.name,
                s.users,
                r.calls,
                r.writes,
                r.calls as f64 / 300.0,
                r.estimate["strategy"].as_str().unwrap_or("?"),
                r.estimate["write_api"].as_str().unwrap_or("?"),
                r.estimate["scim_path_calls"],
                r.estimate["authorization_path_calls"],
                r.secs,
            );
        }
    }
    println!(
        "\nworst Authorization path share: {worst:.2} % of the SCIM path's calls (goal: at most 2 %)"
    );
}

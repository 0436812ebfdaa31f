//! Drift found by the audit feed against drift found by a scan, in a 100 000-user org:
//! `cargo bench --bench drift` (`BENCH_ORG_USERS` to change the org).
//!
//! Runs rolesync (`[drift] source = "audit"`, `poll_secs = 10`) and the Genesys Cloud emulator
//! in this process, on a temporary SQLite file. The org's users already hold `Agent`; one merge
//! job makes every one of them managed (found in place: no write). Right after a poll, an
//! administrator's tool (its own OAuth client) takes `Agent` from 10 users by hand: 5 through
//! SCIM `PATCH`, 5 through the Authorization API's `users/remove`. Measured on
//! `/emulator/stats`: the calls rolesync made until the 10 were reported with who and when
//! (`rolesync_drift_detected_total`), and the time from the last hand change; then a dry-run
//! reconcile (the scan) finding the same 10.

mod support;

use anyhow::{Context, ensure};
use genesys_cloud_emulator::{self as emulator, EmulatorArgs};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::in_process::{Client, Service, client_token};

const CHANGED: u64 = 10;
const POLL_SECS: u64 = 10;
const TOOL: (&str, &str) = ("admin-tool", "admin-tool-secret");
const WITHIN: Duration = Duration::from_secs(3600);

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run())
}

async fn metric(b: &Client, series: &str) -> anyhow::Result<f64> {
    let text = b
        .http
        .get(format!("{}/metrics", b.addr))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0))
}

async fn wait_metric(b: &Client, series: &str, at_least: f64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while metric(b, series).await? < at_least {
        ensure!(
            Instant::now() < deadline,
            "{series} never reached {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The tool takes Agent from `EMP-{n}`: through SCIM, or through `users/remove`.
async fn hand_change(b: &Client, n: u64, role_id: &str, scim: bool) -> anyhow::Result<()> {
    let user = b.scim_user(n).await?;
    let id = user["id"].as_str().context("user id")?;
    let resp = if scim {
        b.http
            .patch(format!("{}/api/v2/scim/v2/users/{id}", b.base))
            .bearer_auth(&b.token)
            .json(&json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "path": "roles", "value": [{"value": "Employee"}]}]}))
            .send()
            .await?
    } else {
        b.http
            .put(format!(
                "{}/api/v2/authorization/roles/{role_id}/users/remove",
                b.base
            ))
            .bearer_auth(&b.token)
            .json(&json!([id]))
            .send()
            .await?
    };
    ensure!(resp.status().is_success(), "hand change: {}", resp.status());
    Ok(())
}

/// Calls counted on the routes rolesync uses (the tool's own calls are on other routes).
fn rolesync_calls(stats: &Value) -> (u64, u64, u64) {
    let (mut audit, mut reads, mut all) = (0, 0, 0);
    for r in stats["requests"].as_array().into_iter().flatten() {
        let route = r["route"].as_str().unwrap_or("");
        let n = r["count"].as_u64().unwrap_or(0);
        if route.starts_with("/api/v2/audits") {
            audit += n;
        }
        if route == "/api/v2/scim/v2/users/{id}" && r["method"] == "GET" {
            reads += n;
        }
        if !route.contains("oauth") {
            all += n;
        }
    }
    (audit, reads, all)
}

async fn run() -> anyhow::Result<()> {
    let org: u64 = std::env::var("BENCH_ORG_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let emulator = emulator::spawn(EmulatorArgs {
        rate_limit_per_minute: 0,
        extra_clients: vec![(TOOL.0.into(), TOOL.1.into())],
        ..EmulatorArgs::default()
    })
    .await?;
    let base = emulator.base_url();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?;
    let users: Vec<Value> = (1..=org)
        .map(|n| json!({"userName": format!("emp-{n:06}@example.com"), "externalId": format!("EMP-{n:06}"),
            "displayName": format!("Employee {n:06}"), "roles": [{"value": "Employee"}, {"value": "Agent"}]}))
        .collect();
    let resp = http
        .post(format!("{base}/emulator/users"))
        .json(&users)
        .send()
        .await?;
    ensure!(resp.status().is_success(), "seed: {}", resp.status());
    let token = client_token(&http, &base, TOOL).await?;
    let service = Service::start(
        &base,
        1_000_000,
        &format!("[drift]\nsource = \"audit\"\npoll_secs = {POLL_SECS}"),
        include_str!("../config/policy.toml"),
    )
    .await?;
    let b = Client {
        http,
        base,
        addr: service.addr.clone(),
        token,
    };

    let csv: String = std::iter::once("external_id,role_template,license_tier".to_owned())
        .chain((1..=org).map(|n| format!("EMP-{n:06},Agent,Standard Agent")))
        .collect::<Vec<_>>()
        .join("\n");
    let job = b.wait(&b.submit_csv(csv).await?, WITHIN).await?;
    ensure!(job["counts"]["unchanged"] == org, "the first job: {job}");
    let roles: Value = b
        .http
        .get(format!("{}/api/v2/authorization/roles?name=Agent", b.base))
        .bearer_auth(&b.token)
        .send()
        .await?
        .json()
        .await?;
    let agent = roles["entities"][0]["id"]
        .as_str()
        .context("Agent id")?
        .to_owned();

    // Right after a poll: the 10 hand changes, then the counters from zero.
    let ok = "rolesync_drift_polls_total{result=\"ok\"}";
    let polls = metric(&b, ok).await?;
    wait_metric(&b, ok, polls + 1.0).await?;
    b.reset_stats().await?;
    let step = org / CHANGED;
    for k in 0..CHANGED {
        hand_change(&b, 1 + k * step, &agent, k % 2 == 0).await?;
    }
    let last_change = Instant::now();
    wait_metric(
        &b,
        "rolesync_drift_detected_total{source=\"audit\"}",
        CHANGED as f64,
    )
    .await?;
    let found_after = last_change.elapsed();
    let (audit, reads, _) = rolesync_calls(&b.stats().await?);

    println!(
        "rolesync {} · drift of {CHANGED} users found in an org of {org}: audit feed vs scan\n",
        env!("CARGO_PKG_VERSION")
    );
    println!(
        "| how | calls | of which audit query pages | of which user reads | found after | who and when |"
    );
    println!("|---|---:|---:|---:|---:|---|");
    println!(
        "| feed (`drift.source = \"audit\"`, poll every {POLL_SECS} s) | {} | {audit} | {reads} | {:.1} s after the last change | yes (`changed_by`, `changed_at`) |",
        audit + reads,
        found_after.as_secs_f64()
    );
    ensure!(audit + reads <= 15, "the feed took {} calls", audit + reads);

    b.reset_stats().await?;
    let started = Instant::now();
    let j = b
        .api(
            reqwest::Method::POST,
            "/v1/reconcile",
            Some(json!({"dry_run": true, "mode": "merge"})),
        )
        .await?;
    let j = b.wait(&j, WITHIN).await?;
    let wall = started.elapsed();
    ensure!(j["users"]["changed"] == CHANGED, "scan: {j}");
    let (_, _, all) = rolesync_calls(&b.stats().await?);
    // The feed's own polls during the scan are on the audit routes.
    let (audit_during, _, _) = rolesync_calls(&b.stats().await?);
    println!(
        "| scan (dry-run reconcile) | {} | — | — | {:.1} s (its run) | no |",
        all - audit_during,
        wall.as_secs_f64()
    );
    service.stop().await;
    Ok(())
}

//! SCIM calls of a reconcile and of a revert over 10 000 managed users with 1 % drift:
//! `cargo bench --bench undo`.
//!
//! Runs rolesync and the Genesys Cloud emulator in this process (an org of 10 000 users, a
//! fresh service on a temporary SQLite file), gives every user `Agent` in one merge job, then
//! takes `Agent` away by hand from 1 % of them (100 users, through the emulator's SCIM API,
//! before the counters are zeroed) and measures, on `/emulator/stats` (`/oauth/token`
//! excluded):
//! - a dry-run reconcile (finds the 100);
//! - a real reconcile (fixes them);
//! - after another 1 % of hand changes (Reporting granted), a revert of the first job (puts
//!   the 9 900 users still as the job left them back; leaves the 100 changed since,
//!   `changed_since`).
//!
//! Each run checks the counts it expects. `floor` is the fewest calls that can do it: the
//! directory read once (`ceil(org / 100)` pages, the emulator's largest page) plus one write
//! per user to change.

mod support;

use anyhow::{Context, ensure};
use genesys_cloud_emulator::{self as emulator, EmulatorArgs};
use serde_json::json;
use std::time::{Duration, Instant};
use support::in_process::{Client, Service, client_token};

const ORG: u64 = 10_000;
const DRIFT: u64 = 100;
const PAGE: u64 = 100;
const WITHIN: Duration = Duration::from_secs(1800);

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run())
}

/// SCIM calls (every route but `/oauth/token`) and PATCHes since the last reset.
async fn calls(b: &Client) -> anyhow::Result<(u64, u64)> {
    let stats = b.stats().await?;
    let mut calls = 0;
    let mut patches = 0;
    for r in stats["requests"].as_array().into_iter().flatten() {
        if r["route"].as_str().unwrap_or("").contains("oauth") {
            continue;
        }
        let n = r["count"].as_u64().unwrap_or(0);
        calls += n;
        if r["method"] == "PATCH" {
            patches += n;
        }
    }
    Ok((calls, patches))
}

/// Sets the roles of user `EMP-{n}` by hand.
async fn drift(b: &Client, n: u64, roles: &[&str]) -> anyhow::Result<()> {
    let user = b.scim_user(n).await?;
    let id = user["id"].as_str().context("user id")?;
    let version = user["meta"]["version"].as_str().context("version")?;
    let resp = b
        .http
        .patch(format!("{}/api/v2/scim/v2/users/{id}", b.base))
        .bearer_auth(&b.token)
        .header("if-match", format!("\"{}\"", version.trim_matches('"')))
        .json(&json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "roles",
                "value": roles.iter().map(|r| json!({"value": r})).collect::<Vec<_>>()}],
        }))
        .send()
        .await?;
    ensure!(resp.status().is_success(), "hand change: {}", resp.status());
    Ok(())
}

async fn run() -> anyhow::Result<()> {
    let emulator = emulator::spawn(EmulatorArgs {
        users: ORG,
        rate_limit_per_minute: 0,
        ..EmulatorArgs::default()
    })
    .await?;
    let base = emulator.base_url();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let token = client_token(&http, &base, ("rolesync-dev", "rolesync-dev-secret")).await?;
    // Removal bounds off: the revert takes Agent from the whole org, and is measured, not held.
    let policy = include_str!("../config/policy.toml")
        .replace("max_removal_fraction = 0.2", "max_removal_fraction = 1.0")
        .replace("max_removed_users = 500", "max_removed_users = 1000000");
    let service = Service::start(&base, 1_000_000, "", &policy).await?;
    let b = Client {
        http,
        base,
        addr: service.addr.clone(),
        token,
    };

    let csv: String = std::iter::once("external_id,role_template,license_tier".to_owned())
        .chain((1..=ORG).map(|n| format!("EMP-{n:06},Agent,Standard Agent")))
        .collect::<Vec<_>>()
        .join("\n");
    let job = b.wait(&b.submit_csv(csv).await?, WITHIN).await?;
    ensure!(job["counts"]["applied"] == ORG, "the first job: {job}");
    let step = ORG / DRIFT;
    // Agent taken away by hand: drift a reconcile finds.
    for k in 0..DRIFT {
        drift(&b, 1 + k * step, &["Employee"]).await?;
    }

    println!(
        "rolesync {} · SCIM calls of a reconcile and a revert · org {ORG}, drift {DRIFT} users (1 %)\n",
        env!("CARGO_PKG_VERSION")
    );
    println!("| run | users | changed | SCIM calls | of which PATCH | floor | wall s |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let floor = |writes: u64| ORG.div_ceil(PAGE) + writes;

    for (what, dry_run) in [("reconcile, dry run", true), ("reconcile, fix", false)] {
        b.reset_stats().await?;
        let started = Instant::now();
        let j = b
            .api(
                reqwest::Method::POST,
                "/v1/reconcile",
                Some(json!({"dry_run": dry_run, "mode": "merge"})),
            )
            .await?;
        let j = b.wait(&j, WITHIN).await?;
        let wall = started.elapsed();
        let (calls, patches) = calls(&b).await?;
        ensure!(j["users"]["changed"] == DRIFT, "{what}: {j}");
        println!(
            "| {what} | {} | {} | {calls} | {patches} | {} | {:.1} |",
            j["users"]["total"],
            j["users"]["changed"],
            floor(if dry_run { 0 } else { DRIFT }),
            wall.as_secs_f64()
        );
    }

    // Another 1 % changed by hand since the job (Reporting granted): the revert leaves them
    // alone. (A user whose Agent was taken by hand already holds what the revert puts back:
    // it is `unchanged`, not changed since.)
    for k in 0..DRIFT {
        drift(&b, 2 + k * step, &["Employee", "Agent", "Reporting"]).await?;
    }
    b.reset_stats().await?;
    let started = Instant::now();
    let original = job["job_id"].as_str().context("job_id")?;
    let r = b
        .api(
            reqwest::Method::POST,
            &format!("/v1/jobs/{original}/revert"),
            None,
        )
        .await?;
    let r = b.wait(&r, WITHIN).await?;
    let wall = started.elapsed();
    let (calls, patches) = calls(&b).await?;
    ensure!(r["counts"]["applied"] == ORG - DRIFT, "revert: {r}");
    ensure!(r["counts"]["rejected"] == DRIFT, "revert: {r}");
    println!(
        "| revert ({} changed since: `changed_since`) | {} | {} | {calls} | {patches} | {} | {:.1} |",
        DRIFT,
        r["users"]["total"],
        r["users"]["changed"],
        floor(ORG - DRIFT),
        wall.as_secs_f64()
    );
    service.stop().await;
    Ok(())
}

//! SCIM calls per assignment: `cargo bench --bench sync_calls`.
//!
//! Runs rolesync and the Genesys Cloud emulator in this process (a fresh emulator org, a fresh
//! service on a temporary SQLite file for every run), submits one job over HTTP, waits for it,
//! and counts the SCIM calls the emulator saw (`/emulator/stats`, `/oauth/token` excluded). Each
//! run checks that the job succeeded with exactly the expected users changed.
//!
//! Scenarios:
//! - `a`: 10 000 users, all changing (org of 10 000, every user `[Employee]` → `+Agent`);
//! - `b`: full-org resync of 10 000 users, 5 % changing (9 500 already hold `Agent`);
//! - `c`: 50 users changing in an org of 100 000.
//!
//! Each under three targets:
//! - `off`: the emulator's rate limit off (rolesync's limiter set far above what it reaches);
//! - `limit`: 6 000 calls/min at the emulator and `target.requests_per_minute = 6000`;
//! - `latency`: the same limit with 100 ms added to every call.
//!
//! `target.max_concurrency = 32` (enough to reach 100 calls/s at 100 ms), the other settings
//! are the defaults (`sync.chunk_size = 50`, read strategy `auto`).
//!
//! Columns: `floor` is the changed users plus the fewest reads that can tell which they are
//! (one lookup per user, or one directory scan of `ceil(org / 100)` pages, whichever is fewer;
//! the emulator's largest page is 100); `naive` is a lookup plus a write per row.
//!
//! Subset: name scenarios and/or targets as arguments or in `BENCH_ONLY` (comma-separated), e.g.
//! `cargo bench --bench sync_calls -- c off` or `BENCH_ONLY=a,limit cargo bench --bench
//! sync_calls`. A run is kept when it matches a named scenario (if any is named) and a named
//! target (if any is named).

mod support;

use anyhow::{Context, bail, ensure};
use genesys_cloud_emulator::{self as emulator, EmulatorArgs};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::KEY as API_KEY;
use support::in_process::Service;

const POLICY: &str = include_str!("../config/policy.toml");
/// The emulator's `filter.maxResults`: the largest page of a directory scan.
const PAGE: u64 = 100;

#[derive(Clone, Copy)]
struct Scenario {
    name: &'static str,
    what: &'static str,
    org: u64,
    /// Users in the job (`EMP-000001`… spread over the org).
    rows: u64,
    /// Users of the job that do not already hold `Agent`.
    changing: u64,
}

const SCENARIOS: [Scenario; 3] = [
    Scenario {
        name: "a",
        what: "10 000 users, all changing",
        org: 10_000,
        rows: 10_000,
        changing: 10_000,
    },
    Scenario {
        name: "b",
        what: "full-org resync of 10 000, 5 % changing",
        org: 10_000,
        rows: 10_000,
        changing: 500,
    },
    Scenario {
        name: "c",
        what: "50 users in an org of 100 000",
        org: 100_000,
        rows: 50,
        changing: 50,
    },
];

#[derive(Clone, Copy)]
struct Target {
    name: &'static str,
    what: &'static str,
    /// At the emulator; 0 = off.
    limit_per_minute: u64,
    latency_ms: u64,
}

const TARGETS: [Target; 3] = [
    Target {
        name: "off",
        what: "no limit",
        limit_per_minute: 0,
        latency_ms: 0,
    },
    Target {
        name: "limit",
        what: "6 000/min",
        limit_per_minute: 6000,
        latency_ms: 0,
    },
    Target {
        name: "latency",
        what: "6 000/min + 100 ms",
        limit_per_minute: 6000,
        latency_ms: 100,
    },
];

struct Measured {
    calls: u64,
    rate_limited: u64,
    wall: Duration,
    changed: u64,
}

impl Scenario {
    /// The job's users: every `org / rows`-th user of the org.
    fn user_numbers(&self) -> impl Iterator<Item = u64> {
        let step = (self.org / self.rows).max(1);
        (0..self.rows).map(move |i| 1 + i * step)
    }

    /// A user of the job that already holds `Agent`: all but every `rows / changing`-th.
    fn already_right(&self, k: u64) -> bool {
        let every = (self.rows / self.changing.max(1)).max(1);
        !k.is_multiple_of(every)
    }

    fn floor(&self) -> u64 {
        self.changing + self.rows.min(self.org.div_ceil(PAGE))
    }

    fn naive(&self) -> u64 {
        2 * self.rows
    }
}

fn selected(filters: &[String], name: &str, all: &[&str]) -> bool {
    let named: Vec<&String> = filters
        .iter()
        .filter(|f| all.contains(&f.as_str()))
        .collect();
    named.is_empty() || named.iter().any(|f| f.as_str() == name)
}

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if let Ok(only) = std::env::var("BENCH_ONLY") {
        filters.extend(
            only.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty()),
        );
    }
    let scenario_names: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
    let target_names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
    for f in &filters {
        if !scenario_names.contains(&f.as_str()) && !target_names.contains(&f.as_str()) {
            bail!("unknown filter `{f}`: scenarios a, b, c; targets off, limit, latency");
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "rolesync {} · SCIM calls per assignment · {cores} cores · max_concurrency 32, chunk_size 50\n",
        env!("CARGO_PKG_VERSION")
    );
    println!(
        "| scenario | target | rows | changed | SCIM calls | calls/row | floor | naive | wall s | 429s |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for s in SCENARIOS {
        if !selected(&filters, s.name, &scenario_names) {
            continue;
        }
        for t in TARGETS {
            if !selected(&filters, t.name, &target_names) {
                continue;
            }
            let m = rt
                .block_on(run(s, t))
                .with_context(|| format!("scenario {} with target {}", s.name, t.name))?;
            println!(
                "| ({}) {} | {} | {} | {} | {} | {:.3} | {} | {} | {:.1} | {} |",
                s.name,
                s.what,
                t.what,
                s.rows,
                m.changed,
                m.calls,
                m.calls as f64 / s.rows as f64,
                s.floor(),
                s.naive(),
                m.wall.as_secs_f64(),
                m.rate_limited,
            );
        }
    }
    Ok(())
}

async fn run(s: Scenario, t: Target) -> anyhow::Result<Measured> {
    // Seeded with `[Employee]` only; in (b) the users already right are added by hand below.
    let seeded_by_flag = if s.changing == s.rows { s.org } else { 0 };
    let emulator = emulator::spawn(EmulatorArgs {
        users: seeded_by_flag,
        rate_limit_per_minute: t.limit_per_minute,
        latency_ms: t.latency_ms,
        ..EmulatorArgs::default()
    })
    .await?;
    let base = emulator.base_url();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    if seeded_by_flag == 0 {
        seed_with_roles(&http, &base, &s).await?;
    }

    // With the emulator's limit off, pace far above anything reachable (the limiter is always on).
    let rpm = if t.limit_per_minute == 0 {
        1_000_000
    } else {
        t.limit_per_minute
    };
    let service = Service::start(&base, rpm, "", POLICY).await?;
    let addr = service.addr.clone();

    let csv: String = std::iter::once("external_id,role_template,license_tier".to_owned())
        .chain(
            s.user_numbers()
                .map(|n| format!("EMP-{n:06},Agent,Standard Agent")),
        )
        .collect::<Vec<_>>()
        .join("\n");
    let before = scim_calls(&http, &base).await?;
    let started = Instant::now();
    let resp = http
        .post(format!("{addr}/v1/jobs"))
        .bearer_auth(API_KEY)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await?;
    ensure!(resp.status() == 202, "submit: {}", resp.text().await?);
    let job: Value = resp.json().await?;
    let id = job["job_id"].as_str().context("job_id")?.to_owned();
    let job = loop {
        let job: Value = http
            .get(format!("{addr}/v1/jobs/{id}"))
            .bearer_auth(API_KEY)
            .send()
            .await?
            .json()
            .await?;
        let status = job["status"].as_str().unwrap_or("");
        if matches!(
            status,
            "succeeded" | "completed_with_errors" | "failed" | "cancelled"
        ) {
            break job;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(1800),
            "job still {status} after 30 min"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let wall = started.elapsed();
    let after = scim_calls(&http, &base).await?;
    service.stop().await;
    emulator.shutdown().await;

    let changed = job["users"]["changed"].as_u64().unwrap_or(0);
    ensure!(job["status"] == "succeeded", "job: {job}");
    ensure!(
        changed == s.changing,
        "expected {} users changed: {job}",
        s.changing
    );
    ensure!(
        job["users"]["unchanged"].as_u64() == Some(s.rows - s.changing),
        "job: {job}"
    );
    Ok(Measured {
        calls: after.0 - before.0,
        rate_limited: after.1 - before.1,
        wall,
        changed,
    })
}

/// The org of (b): every user of the org, the job's users already holding `Agent` but for the
/// ones meant to change. Through the admin endpoint (not rate limited, not counted).
async fn seed_with_roles(http: &reqwest::Client, base: &str, s: &Scenario) -> anyhow::Result<()> {
    let job_users: std::collections::HashMap<u64, u64> = s
        .user_numbers()
        .enumerate()
        .map(|(k, n)| (n, k as u64))
        .collect();
    let numbers: Vec<u64> = (1..=s.org).collect();
    for batch in numbers.chunks(2000) {
        let users: Vec<Value> = batch
            .iter()
            .map(|n| {
                let right = job_users.get(n).is_some_and(|k| s.already_right(*k));
                let roles = if right {
                    json!([{"value": "Agent"}])
                } else {
                    json!([])
                };
                json!({
                    "userName": format!("emp-{n:06}@example.com"),
                    "externalId": format!("EMP-{n:06}"),
                    "displayName": format!("Employee {n:06}"),
                    "roles": roles,
                })
            })
            .collect();
        let resp = http
            .post(format!("{base}/emulator/users"))
            .json(&users)
            .send()
            .await?;
        ensure!(
            resp.status().is_success(),
            "seeding: {}",
            resp.text().await?
        );
    }
    Ok(())
}

/// (SCIM calls, 429 answers) the emulator has seen, `/oauth/token` excluded.
async fn scim_calls(http: &reqwest::Client, base: &str) -> anyhow::Result<(u64, u64)> {
    let stats: Value = http
        .get(format!("{base}/emulator/stats"))
        .send()
        .await?
        .json()
        .await?;
    let mut calls = 0;
    let mut limited = 0;
    for r in stats["requests"].as_array().into_iter().flatten() {
        if r["route"] == "/oauth/token" {
            continue;
        }
        let n = r["count"].as_u64().unwrap_or(0);
        calls += n;
        if r["status"] == 429 {
            limited += n;
        }
    }
    Ok((calls, limited))
}

//! Load benchmark of the Genesys Cloud emulator: `cargo bench --bench emulator_load`.
//!
//! Starts the emulator in-process on 127.0.0.1:0 (its own 2-worker runtime, rate limit off,
//! 100 000 seeded users) and drives it over keep-alive HTTP/1.1 connections from a second
//! runtime, for a fixed time per run. Prints requests per second for each scenario, the median
//! of 3 runs. The load generator shares the machine's cores with the server, so the figures are
//! a floor; `benches/wrk/` has scripts for an external generator.
//!
//! Knobs (environment): `BENCH_SECS` (per run, default 10), `BENCH_RUNS` (default 3),
//! `BENCH_CONNECTIONS` (default 64), `BENCH_USERS` (default 100000),
//! `BENCH_SERVER_THREADS` / `BENCH_CLIENT_THREADS` (default 2 each).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rolesync::emulator::{self, EmulatorArgs};
use serde_json::{Value, json};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Copy, Debug)]
enum Scenario {
    /// `GET /users?filter=externalId eq "EMP-nnnnnn"` on random users.
    FilterByExternalId,
    /// `PATCH /users/{id}` replacing `roles` (alternating sets, so every PATCH is a change).
    PatchRoles,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::FilterByExternalId => "GET filter externalId eq",
            Scenario::PatchRoles => "PATCH replace roles",
        }
    }
}

struct Run {
    ok: u64,
    errors: u64,
    elapsed: Duration,
}

/// A small xorshift generator per task (no shared state on the hot path).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

async fn run(
    scenario: Scenario,
    base: Arc<String>,
    token: Arc<String>,
    ids: Arc<Vec<String>>,
    users: u64,
    connections: u64,
    secs: u64,
) -> Run {
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        // One client per task: one keep-alive connection each.
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()
            .unwrap();
        let (base, token, ids) = (base.clone(), token.clone(), ids.clone());
        let (ok, errors, stop) = (ok.clone(), errors.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (c + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
            let mut flip = false;
            while !stop.load(Ordering::Relaxed) {
                let n = rng.next() % users;
                let request = match scenario {
                    Scenario::FilterByExternalId => client.get(format!(
                        "{base}/api/v2/scim/v2/users?filter=externalId%20eq%20%22EMP-{:06}%22",
                        n + 1
                    )),
                    Scenario::PatchRoles => {
                        flip = !flip;
                        let roles = if flip {
                            json!([{"value": "Agent"}, {"value": "Queue Member"}])
                        } else {
                            json!([{"value": "Supervisor"}])
                        };
                        let body = json!({
                            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                            "Operations": [{"op": "replace", "path": "roles", "value": roles}]
                        });
                        client
                            .patch(format!("{base}/api/v2/scim/v2/users/{}", ids[n as usize]))
                            .header("content-type", "application/scim+json")
                            .body(body.to_string())
                    }
                };
                match request.bearer_auth(token.as_str()).send().await {
                    Ok(res) if res.status().is_success() => {
                        let _ = res.bytes().await;
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    Run {
        ok: ok.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    }
}

fn main() {
    let secs = env_or("BENCH_SECS", 10);
    let runs = env_or("BENCH_RUNS", 3).max(1);
    let connections = env_or("BENCH_CONNECTIONS", 64).max(1);
    let users = env_or("BENCH_USERS", 100_000).max(1);
    let server_threads = env_or("BENCH_SERVER_THREADS", 2).max(1) as usize;
    let client_threads = env_or("BENCH_CLIENT_THREADS", 2).max(1) as usize;

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(server_threads)
        .thread_name("emulator")
        .enable_all()
        .build()
        .unwrap();
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(client_threads)
        .thread_name("loadgen")
        .enable_all()
        .build()
        .unwrap();

    let seeded = Instant::now();
    let handle = server_rt
        .block_on(emulator::spawn(EmulatorArgs {
            users,
            rate_limit_per_minute: 0,
            ..EmulatorArgs::default()
        }))
        .unwrap();
    let base = Arc::new(handle.base_url());
    eprintln!(
        "emulator on {base} with {users} users (seeded in {:.1}s); {connections} keep-alive connections, \
         {secs}s per run, {runs} runs; server {server_threads} threads, load generator {client_threads} threads",
        seeded.elapsed().as_secs_f64()
    );

    let (token, ids) = client_rt.block_on(async {
        let client = reqwest::Client::new();
        let res = client
            .post(format!("{base}/oauth/token"))
            .basic_auth("rolesync-dev", Some("rolesync-dev-secret"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials")
            .send()
            .await
            .unwrap();
        let token: Value = res.json().await.unwrap();
        let dump: Value = client
            .get(format!("{base}/emulator/users"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let ids: Vec<String> = dump
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["id"].as_str().unwrap().to_string())
            .collect();
        (token["access_token"].as_str().unwrap().to_string(), ids)
    });
    let token = Arc::new(token);
    let ids = Arc::new(ids);

    for scenario in [Scenario::FilterByExternalId, Scenario::PatchRoles] {
        let mut rates = Vec::new();
        for i in 0..runs {
            let r = client_rt.block_on(run(
                scenario,
                base.clone(),
                token.clone(),
                ids.clone(),
                users,
                connections,
                secs,
            ));
            let rate = r.ok as f64 / r.elapsed.as_secs_f64();
            eprintln!(
                "  {:<26} run {}: {:>9.0} req/s ({} ok, {} errors)",
                scenario.name(),
                i + 1,
                rate,
                r.ok,
                r.errors
            );
            rates.push(rate);
        }
        rates.sort_by(f64::total_cmp);
        let median = rates[rates.len() / 2];
        println!(
            "{:<26} {:>9.0} req/s (median of {runs} runs of {secs}s)",
            scenario.name(),
            median
        );
    }
    client_rt.block_on(async {
        let stats: Value = reqwest::get(format!("{base}/emulator/stats"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        eprintln!("emulator stats: {} requests in total", stats["total"]);
    });
    server_rt.block_on(handle.shutdown());
}

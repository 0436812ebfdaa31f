//! Load benchmark of the Genesys Cloud emulator: `cargo bench -p genesys-cloud-emulator --bench load`.
//!
//! Starts the emulator in-process on 127.0.0.1:0 (its own 2-worker runtime, rate limit off,
//! 100 000 seeded users) and drives it over keep-alive HTTP/1.1 connections (a minimal raw
//! HTTP/1.1 client, one tokio task per connection) from a second runtime, for a fixed time per
//! run. Prints requests per second for each scenario, the median
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

use std::io::Write as _;

use genesys_cloud_emulator::{self as emulator, EmulatorArgs};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

/// A minimal HTTP/1.1 keep-alive client over one TCP connection: writes a request, reads the
/// status line, the headers and `Content-Length` bytes of body. Much cheaper than a full
/// client, so more of the shared CPU is left to the server.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn connect(addr: std::net::SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(16 * 1024),
        })
    }

    async fn send(&mut self, request: &[u8]) -> std::io::Result<u16> {
        self.stream.write_all(request).await?;
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end]).map_err(std::io::Error::other)?;
                let status: u16 = head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| std::io::Error::other("bad status line"))?;
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                let total = end + 4 + length;
                while self.buf.len() < total {
                    if self.stream.read_buf(&mut self.buf).await? == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                }
                self.buf.drain(..total);
                return Ok(status);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

async fn run(
    scenario: Scenario,
    addr: std::net::SocketAddr,
    token: Arc<String>,
    ids: Arc<Vec<String>>,
    users: u64,
    connections: u64,
    secs: u64,
) -> Run {
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (token, ids) = (token.clone(), ids.clone());
        let (ok, errors, stop) = (ok.clone(), errors.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (c + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
            let mut flip = false;
            let mut conn = None;
            let mut request = Vec::with_capacity(1024);
            while !stop.load(Ordering::Relaxed) {
                if conn.is_none() {
                    conn = Conn::connect(addr).await.ok();
                }
                let Some(c) = conn.as_mut() else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let n = rng.next() % users;
                request.clear();
                match scenario {
                    Scenario::FilterByExternalId => {
                        let _ = write!(
                            request,
                            "GET /api/v2/scim/v2/users?filter=externalId%20eq%20%22EMP-{:06}%22 HTTP/1.1\r\n\
                             Host: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n",
                            n + 1
                        );
                    }
                    Scenario::PatchRoles => {
                        flip = !flip;
                        let roles = if flip {
                            r#"[{"value":"Agent"},{"value":"Queue Member"}]"#
                        } else {
                            r#"[{"value":"Supervisor"}]"#
                        };
                        let body = format!(
                            r#"{{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{{"op":"replace","path":"roles","value":{roles}}}]}}"#
                        );
                        let _ = write!(
                            request,
                            "PATCH /api/v2/scim/v2/users/{} HTTP/1.1\r\nHost: {addr}\r\n\
                             Authorization: Bearer {token}\r\nContent-Type: application/scim+json\r\n\
                             Content-Length: {}\r\n\r\n{body}",
                            ids[n as usize],
                            body.len()
                        );
                    }
                }
                match c.send(&request).await {
                    Ok(status) if (200..300).contains(&status) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        conn = None;
                    }
                }
            }
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    // Count what completed within the window.
    let done = ok.load(Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    Run {
        ok: done,
        errors: errors.load(Ordering::Relaxed),
        elapsed,
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
                handle.addr,
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

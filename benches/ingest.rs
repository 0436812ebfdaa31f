//! Ingestion benchmark: `cargo bench --bench ingest`.
//!
//! Runs the real `rolesync` binary (`serve`, a fresh process per run, so its peak RSS is the
//! run's own) against the real emulator binary, and POSTs generated CSV and NDJSON bodies of
//! 100 000 and 1 000 000 rows, streamed from a file. Prints, per backend, format and size, the
//! rows per second from the first byte of the upload to the `202` (median of the runs) and the
//! server's peak RSS (`VmHWM`) at the `202`. Then, once per backend, a 1 000 000-row CSV runs
//! end to end (a nightly full export: 250 000 users with 4 roles each, 5 % of them changing)
//! and the peak RSS over ingest, planning and sync is printed with the SCIM calls it took.
//! Last, once per backend, a job over 1 000 000 distinct users who all change (one row each,
//! against an emulator seeded with 1 000 000 users): its peak RSS shows whether memory grows
//! with the org.
//!
//! Knobs (environment): `BENCH_ROWS` (default `100000,1000000`), `BENCH_FORMATS` (`csv,ndjson`),
//! `BENCH_BACKENDS` (`sqlite,postgres`), `BENCH_RUNS` (default 3), `BENCH_E2E` (which end-to-end
//! runs: `nightly,org` by default; `0` skips them), `BENCH_ORG_USERS` (default 1000000), `BENCH_DATABASE_URL` (an admin URL of a PostgreSQL server; default the
//! local one on 127.0.0.1:5432; when it cannot be reached the PostgreSQL rows are skipped with
//! the reason printed), `BENCH_DEADLINE_SECS` (how long a job may run before the bench stops
//! with its state; default 7200), `BENCH_SERVER_LOG` (a file the server's log goes to, at
//! `info`; discarded by default).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::*;

use serde_json::{Value, json};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const ROLES: [&str; 4] = ["Agent", "Queue Member", "Wrap Up", "Reporting"];
const TIER: &str = "Supervisor";
/// Rows per user in the generated bodies.
const ROWS_PER_USER: u64 = 4;

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

fn ext_id(user: u64) -> String {
    format!("EMP-{user:06}")
}

/// Writes a body of `rows` rows (users of 4 rows each) and returns its path.
fn body_file(dir: &Path, format: &str, rows: u64) -> PathBuf {
    let path = dir.join(format!("body-{rows}.{format}"));
    if path.exists() {
        return path;
    }
    let mut w = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    if format == "csv" {
        writeln!(w, "external_id,role_template,license_tier").unwrap();
    }
    for i in 0..rows {
        let user = i / ROWS_PER_USER + 1;
        let role = ROLES[(i % ROWS_PER_USER) as usize];
        if format == "csv" {
            writeln!(w, "{},{role},{TIER}", ext_id(user)).unwrap();
        } else {
            writeln!(
                w,
                "{{\"external_id\":\"{}\",\"role_template\":\"{role}\",\"license_tier\":\"{TIER}\"}}",
                ext_id(user)
            )
            .unwrap();
        }
    }
    w.flush().unwrap();
    path
}

/// POSTs the file as a stream; returns the job and the seconds to the answer.
async fn submit(http: &reqwest::Client, server: &str, body: &Path, format: &str) -> (Value, f64) {
    let content_type = if format == "csv" {
        "text/csv"
    } else {
        "application/x-ndjson"
    };
    let file = tokio::fs::File::open(body).await.unwrap();
    let len = file.metadata().await.unwrap().len();
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
    let started = Instant::now();
    let resp = http
        .post(format!("{server}/v1/jobs"))
        .bearer_auth(KEY)
        .header("content-type", content_type)
        .header("content-length", len)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let secs = started.elapsed().as_secs_f64();
    let job: Value = resp.json().await.unwrap();
    assert_eq!(status, 202, "{job}");
    (job, secs)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn scim_calls(http: &reqwest::Client, emulator: &str) -> (u64, u64) {
    let stats: Value = http
        .get(format!("{emulator}/emulator/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut calls = 0;
    let mut patches = 0;
    for r in stats["requests"].as_array().into_iter().flatten() {
        if r["route"] == "/oauth/token" {
            continue;
        }
        let n = r["count"].as_u64().unwrap_or(0);
        calls += n;
        if r["method"] == "PATCH" {
            patches += n;
        }
    }
    (calls, patches)
}

/// Gives 95 % of the emulator's users the roles the body asks for, so 5 % change.
async fn prepare_nightly(http: &reqwest::Client, emulator: &str, users: u64) {
    http.post(format!("{emulator}/emulator/reset"))
        .send()
        .await
        .unwrap();
    let mut batch = Vec::new();
    for u in 1..=users {
        let roles: Vec<Value> = if u % 20 == 0 {
            Vec::new()
        } else {
            ROLES.iter().map(|r| json!({"value": r})).collect()
        };
        batch.push(json!({
            "userName": format!("emp-{u:06}@example.com"),
            "externalId": ext_id(u),
            "roles": roles,
        }));
        if batch.len() == 10_000 || u == users {
            let r = http
                .post(format!("{emulator}/emulator/users"))
                .json(&std::mem::take(&mut batch))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        }
    }
    http.post(format!("{emulator}/emulator/stats/reset"))
        .send()
        .await
        .unwrap();
}

#[tokio::main]
async fn main() {
    let sizes: Vec<u64> = env_list("BENCH_ROWS", "100000,1000000")
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let formats = env_list("BENCH_FORMATS", "csv,ndjson");
    let mut backends = env_list("BENCH_BACKENDS", "sqlite,postgres");
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let e2e = env_list("BENCH_E2E", "nightly,org");
    let org_users: u64 = std::env::var("BENCH_ORG_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let pg_admin = std::env::var("BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    if backends.iter().any(|b| b == "postgres") {
        match sqlx::PgPool::connect(&pg_admin).await {
            Ok(p) => p.close().await,
            Err(e) => {
                println!("PostgreSQL skipped: cannot connect to BENCH_DATABASE_URL ({e})");
                backends.retain(|b| b != "postgres");
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(1800))
        .build()
        .unwrap();
    let emulator = start_emulator(&http, 0).await;

    println!(
        "\nupload to 202 (median of {runs}; rows/s from the first byte sent to the 202; peak RSS of the server at the 202)\n"
    );
    println!(
        "| backend | format | rows | body MiB | seconds to 202 | rows/s | peak RSS MiB |\n|---|---|---:|---:|---:|---:|---:|"
    );
    let mut n = 0;
    for backend in &backends {
        for format in &formats {
            for &rows in &sizes {
                let body = body_file(dir.path(), format, rows);
                let mib = std::fs::metadata(&body).unwrap().len() as f64 / (1 << 20) as f64;
                let mut secs = Vec::new();
                let mut rss = Vec::new();
                for _ in 0..runs {
                    n += 1;
                    let store = fresh_store(backend, dir.path(), &pg_admin, n).await;
                    let server = start_server(&http, dir.path(), &store, &emulator.url, "").await;
                    let (_, s) = submit(&http, &server.url, &body, format).await;
                    secs.push(s);
                    rss.push(server.peak_rss_mib().unwrap_or(f64::NAN));
                    drop(server);
                    drop_store(backend, &store, &pg_admin).await;
                }
                let s = median(secs);
                println!(
                    "| {backend} | {format} | {rows} | {mib:.1} | {s:.2} | {:.0} | {:.0} |",
                    rows as f64 / s,
                    median(rss)
                );
            }
        }
    }

    if e2e.iter().any(|s| s == "nightly") {
        nightly(&http, &emulator, dir.path(), &backends, &pg_admin, &mut n).await;
    }
    drop(emulator);
    if e2e.iter().any(|s| s == "org") {
        whole_org(&http, dir.path(), &backends, &pg_admin, &mut n, org_users).await;
    }
}

/// A nightly full export: 250 000 users with 4 roles each, 5 % of them changing.
async fn nightly(
    http: &reqwest::Client,
    emulator: &Proc,
    dir: &Path,
    backends: &[String],
    pg_admin: &str,
    n: &mut usize,
) {
    let rows = 1_000_000u64;
    let users = rows / ROWS_PER_USER;
    println!(
        "\nend to end: {rows} CSV rows, {users} users (4 roles each), 5 % of them changing; emulator rate limit off\n"
    );
    println!(
        "| backend | seconds to 202 | seconds to finished | status | SCIM calls | PATCHes | peak RSS MiB (ingest + plan + sync) |\n|---|---:|---:|---|---:|---:|---:|"
    );
    let body = body_file(dir, "csv", rows);
    for backend in backends {
        *n += 1;
        prepare_nightly(http, &emulator.url, users).await;
        let store = fresh_store(backend, dir, pg_admin, *n).await;
        let server = start_server(http, dir, &store, &emulator.url, "").await;
        let started = Instant::now();
        let (job, to_202) = submit(http, &server.url, &body, "csv").await;
        let done = wait_finished(http, &server.url, job["job_id"].as_str().unwrap()).await;
        let total = started.elapsed().as_secs_f64();
        let (calls, patches) = scim_calls(http, &emulator.url).await;
        println!(
            "| {backend} | {to_202:.2} | {total:.1} | {} | {calls} | {patches} | {:.0} |",
            done["status"].as_str().unwrap_or("?"),
            server.peak_rss_mib().unwrap_or(f64::NAN)
        );
        assert_eq!(done["counts"]["total"], rows, "{done}");
        drop(server);
        drop_store(backend, &store, pg_admin).await;
    }
}

/// One job over `users` distinct users, all changing: one row each (`Agent`), against an
/// emulator seeded with as many users holding only `Employee`. The directory scan covers the
/// whole org and every user is written, so memory that grew with the job or the org shows here.
async fn whole_org(
    http: &reqwest::Client,
    dir: &Path,
    backends: &[String],
    pg_admin: &str,
    n: &mut usize,
    users: u64,
) {
    let body = dir.join(format!("org-{users}.csv"));
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&body).unwrap());
        writeln!(w, "external_id,role_template,license_tier").unwrap();
        for u in 1..=users {
            writeln!(w, "{},Agent,{TIER}", ext_id(u)).unwrap();
        }
        w.flush().unwrap();
    }
    println!(
        "\nwhole org: {users} distinct users, one row each, all changing (seeded with Employee only); emulator rate limit off\n"
    );
    println!(
        "| backend | seconds to 202 | seconds to finished | status | applied | SCIM calls | PATCHes | peak RSS MiB (ingest + plan + sync) |\n|---|---:|---:|---|---:|---:|---:|---:|"
    );
    for backend in backends {
        *n += 1;
        let emulator = start_emulator(http, users).await;
        let store = fresh_store(backend, dir, pg_admin, *n).await;
        let server = start_server(http, dir, &store, &emulator.url, "").await;
        let started = Instant::now();
        let (job, to_202) = submit(http, &server.url, &body, "csv").await;
        let done = wait_finished(http, &server.url, job["job_id"].as_str().unwrap()).await;
        let total = started.elapsed().as_secs_f64();
        let (calls, patches) = scim_calls(http, &emulator.url).await;
        println!(
            "| {backend} | {to_202:.2} | {total:.1} | {} | {} | {calls} | {patches} | {:.0} |",
            done["status"].as_str().unwrap_or("?"),
            done["counts"]["applied"],
            server.peak_rss_mib().unwrap_or(f64::NAN)
        );
        assert_eq!(done["counts"]["total"], users, "{done}");
        drop(server);
        drop_store(backend, &store, pg_admin).await;
    }
}

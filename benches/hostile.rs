//! Peak memory of the worst bodies: `cargo bench --bench hostile`.
//!
//! For each body, a fresh `rolesync serve` (release build, SQLite, default limits) receives it
//! and the bench prints the answer, the time to it, and the server's peak RSS (`VmHWM`) after
//! the answer (and, for a body that makes a job, after the job ends). The bodies are the worst
//! that fit within the default limits (`server.max_body_bytes` 512 MiB, `[ingest]`), built in a
//! temporary directory and streamed from disk.
//!
//! Knobs (environment): `BENCH_CASES` (comma-separated names, default all).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;
use support::*;

/// Writes `head`, `filler` × `n`, `tail` to a file (gzip-compressed when `gzip`).
fn body(
    dir: &Path,
    name: &str,
    head: &str,
    filler: &str,
    n: u64,
    tail: &str,
    gzip: bool,
) -> PathBuf {
    let path = dir.join(name);
    let file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut w: Box<dyn Write> = if gzip {
        Box::new(GzEncoder::new(file, Compression::best()))
    } else {
        Box::new(file)
    };
    w.write_all(head.as_bytes()).unwrap();
    let chunk = filler.repeat((1 << 20) / filler.len().max(1) + 1);
    let per_chunk = (chunk.len() / filler.len()) as u64;
    let mut left = n;
    while left > 0 {
        let k = left.min(per_chunk);
        w.write_all(&chunk.as_bytes()[..(k as usize * filler.len())])
            .unwrap();
        left -= k;
    }
    w.write_all(tail.as_bytes()).unwrap();
    w.flush().unwrap();
    drop(w);
    path
}

/// Rows of `users` users (`per_user` rows each), CSV.
fn rows(dir: &Path, name: &str, users: u64, per_user: u64) -> PathBuf {
    let path = dir.join(name);
    let mut w = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    writeln!(w, "external_id,role_template,license_tier").unwrap();
    for u in 0..users {
        for _ in 0..per_user {
            writeln!(w, "EMP-{u:07},Agent,Standard Agent").unwrap();
        }
    }
    w.flush().unwrap();
    path
}

struct Case {
    name: &'static str,
    path_and_query: &'static str,
    content_type: &'static str,
    gzip: bool,
    file: PathBuf,
}

async fn post(http: &reqwest::Client, server: &str, case: &Case) -> (u16, String, f64) {
    let file = tokio::fs::File::open(&case.file).await.unwrap();
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
    let started = Instant::now();
    let mut req = http
        .post(format!("{server}{}", case.path_and_query))
        .bearer_auth(KEY)
        .header("content-type", case.content_type)
        .body(reqwest::Body::wrap_stream(stream));
    if case.gzip {
        req = req.header("content-encoding", "gzip");
    }
    match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            (status, text, started.elapsed().as_secs_f64())
        }
        // The server may answer (413, 400) and close before the upload ends.
        Err(e) => (0, e.to_string(), started.elapsed().as_secs_f64()),
    }
}

#[tokio::main]
async fn main() {
    let only: Vec<String> = std::env::var("BENCH_CASES")
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(900))
        .build()
        .unwrap();
    let header = "external_id,role_template,license_tier\n";
    let mb = 1u64 << 20;
    println!("building bodies in a temporary directory...");
    let cases = [
        Case {
            name: "gzip bomb: 300 MB of line breaks in one quoted CSV field",
            path_and_query: "/v1/jobs",
            content_type: "text/csv",
            gzip: true,
            file: body(
                d,
                "bomb.csv.gz",
                &format!("{header}\""),
                "\n",
                300 * mb,
                "\",Agent,X\n",
                true,
            ),
        },
        Case {
            name: "500 MB of line breaks in one quoted CSV field (plain)",
            path_and_query: "/v1/jobs",
            content_type: "text/csv",
            gzip: false,
            file: body(
                d,
                "field.csv",
                &format!("{header}\""),
                "\n",
                500 * mb,
                "\",Agent,X\n",
                false,
            ),
        },
        Case {
            name: "500 MB JSON string in one assignment",
            path_and_query: "/v1/jobs",
            content_type: "application/json",
            gzip: false,
            file: body(
                d,
                "string.json",
                "{\"assignments\":[{\"external_id\":\"",
                "a",
                500 * mb,
                "\"}]}",
                false,
            ),
        },
        Case {
            name: "500 MB NDJSON line, then a good row",
            path_and_query: "/v1/jobs",
            content_type: "application/x-ndjson",
            gzip: false,
            file: body(
                d,
                "line.ndjson",
                "{\"external_id\":\"",
                "a",
                500 * mb,
                "\"}\n{\"external_id\":\"EMP-1\",\"role_template\":\"Agent\",\"license_tier\":\"Standard Agent\"}\n",
                false,
            ),
        },
        Case {
            name: "JSON nested 500 MB deep",
            path_and_query: "/v1/jobs",
            content_type: "application/json",
            gzip: false,
            file: body(
                d,
                "deep.json",
                "{\"assignments\":[",
                "[",
                500 * mb,
                "",
                false,
            ),
        },
        Case {
            name: "one user, 2 000 000 rows (the row limit)",
            path_and_query: "/v1/jobs?dry_run=true",
            content_type: "text/csv",
            gzip: false,
            file: rows(d, "one-user.csv", 1, 2_000_000),
        },
        Case {
            name: "/v1/validate of 2 000 000 rows, 2 000 000 users",
            path_and_query: "/v1/validate",
            content_type: "text/csv",
            gzip: false,
            file: rows(d, "many-users.csv", 2_000_000, 1),
        },
        Case {
            name: "/v1/validate of one user, 2 000 000 rows",
            path_and_query: "/v1/validate",
            content_type: "text/csv",
            gzip: false,
            file: rows(d, "one-user-validate.csv", 1, 2_000_000),
        },
    ];
    println!("| body | bytes sent | answer | seconds | peak RSS (MiB) |");
    println!("|---|---:|---|---:|---:|");
    for (n, case) in cases.iter().enumerate() {
        if !only.is_empty() && !only.iter().any(|o| case.name.contains(o.as_str())) {
            continue;
        }
        let emulator = start_emulator(&http, 0).await;
        let store = format!("sqlite://{}", d.join(format!("run-{n}.db")).display());
        let server = start_server(&http, d, &store, &emulator.url, "").await;
        let (status, text, secs) = post(&http, &server.url, case).await;
        let mut answer = format!("{status}");
        if status == 202
            && let Ok(job) = serde_json::from_str::<Value>(&text)
            && let Some(id) = job["job_id"].as_str()
        {
            let done = wait_finished(&http, &server.url, id).await;
            answer = format!(
                "202, then {} ({} rejected)",
                done["status"].as_str().unwrap_or("?"),
                done["counts"]["rejected"]
            );
        } else if status == 200 {
            let v: Value = serde_json::from_str(&text).unwrap_or_default();
            answer = format!("200, {} rejected rows", v["rejected_rows"]);
        } else if let Ok(p) = serde_json::from_str::<Value>(&text) {
            answer = format!("{status}: {}", p["detail"].as_str().unwrap_or(""));
            answer.truncate(90);
        }
        let bytes = std::fs::metadata(&case.file).map(|m| m.len()).unwrap_or(0);
        println!(
            "| {} | {bytes} | {answer} | {secs:.1} | {:.0} |",
            case.name,
            server.peak_rss_mib().unwrap_or(f64::NAN)
        );
    }
}

//! Hostile input: bounded records, decompression bombs, the per-user cap, `/v1/validate`
//! received like a job, privileged grants waiting for a second look, and a corpus of bad
//! bodies that must each get a 4xx or row rejections, never a 5xx (run on SQLite and, in CI,
//! on PostgreSQL).

use crate::helpers::*;
use flate2::Compression;
use flate2::write::GzEncoder;
use futures::StreamExt;
use serde_json::{Value, json};
use std::io::Write;
use std::time::Duration;

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::best());
    e.write_all(body).unwrap();
    e.finish().unwrap()
}

/// POSTs a body to `path` with the given key, content type and optional encoding.
async fn post_body(
    app: &TestApp,
    path: &str,
    key: &str,
    content_type: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut req = app
        .client
        .post(format!("{}{path}", app.address))
        .bearer_auth(key)
        .header("content-type", content_type)
        .body(body);
    if let Some(e) = encoding {
        req = req.header("content-encoding", e);
    }
    req.send().await.expect("request")
}

/// SCIM writes the emulator has seen.
async fn patches(app: &TestApp) -> u64 {
    let stats = app.emulator_stats().await;
    stats["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["method"] == "PATCH" || r["method"] == "PUT")
        .filter_map(|r| r["count"].as_u64())
        .sum()
}

async fn problem(resp: reqwest::Response, status: u16) -> Value {
    assert_eq!(resp.status(), status);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/problem+json")
    );
    resp.json().await.unwrap()
}

#[tokio::test]
async fn a_gzip_body_expanding_beyond_the_ratio_is_413_on_jobs_and_validate() {
    let app = spawn_app().await;
    // 8 MiB of one byte compresses about a thousand times: past the first MiB, beyond 100×.
    let mut csv = b"external_id,role_template,license_tier\nA,Agent,Standard Agent\n".to_vec();
    csv.extend(std::iter::repeat_n(b' ', 8 << 20));
    let bomb = gzip(&csv);
    assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
    for path in ["/v1/jobs", "/v1/validate"] {
        let resp = post_body(
            &app,
            path,
            WRITER_KEY,
            "text/csv",
            Some("gzip"),
            bomb.clone(),
        )
        .await;
        let p = problem(resp, 413).await;
        let detail = p["detail"].as_str().unwrap();
        assert!(
            detail.contains("ingest.max_expansion_ratio"),
            "{path}: {detail}"
        );
    }
    // A well-compressing body of ordinary size is taken.
    let ok = gzip(csv_for(&["EMP-1".to_owned()], "Agent", "Standard Agent").as_bytes());
    let resp = post_body(&app, "/v1/jobs", WRITER_KEY, "text/csv", Some("gzip"), ok).await;
    assert_eq!(resp.status(), 202);
    let list: Value = app.get("/v1/jobs", READER_KEY).await.json().await.unwrap();
    assert_eq!(list["jobs"].as_array().map(Vec::len), Some(1), "{list}");
}

#[tokio::test]
async fn records_and_fields_beyond_their_bounds_are_that_rows_rejection_or_a_400_naming_the_line() {
    let app = spawn_app_with(TestOptions {
        config: "[ingest]\nmax_record_bytes = 2048\nmax_field_bytes = 100\nmax_fields = 8\n".into(),
        ..TestOptions::default()
    })
    .await;
    app.seed(&[("EMP-1", &["Employee"])]).await;

    // NDJSON: a line too long is rejected as that row; the rest goes on.
    let long = "x".repeat(5000);
    let ndjson = format!(
        "{{\"external_id\":\"EMP-1\",\"role_template\":\"Agent\",\"license_tier\":\"Standard Agent\"}}\n\
         {{\"external_id\":\"EMP-2\",\"role_template\":\"{long}\",\"license_tier\":\"Standard Agent\"}}\n\
         {{\"external_id\":\"EMP-3\",\"role_template\":\"{}\",\"license_tier\":\"Standard Agent\"}}\n\
         {{\"external_id\":\"EMP-4\",\"role_template\":\"Agent\",\"license_tier\":\"Standard Agent\",\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5,\"f\":6}}\n",
        "y".repeat(150)
    );
    let resp = post_body(
        &app,
        "/v1/jobs",
        WRITER_KEY,
        "application/x-ndjson",
        None,
        ndjson.into_bytes(),
    )
    .await;
    assert_eq!(resp.status(), 202);
    let job: Value = resp.json().await.unwrap();
    let id = job["job_id"].as_str().unwrap();
    let done = app.wait_finished(id).await;
    assert_eq!(done["counts"]["applied"], 1, "{done}");
    assert_eq!(done["counts"]["rejected"], 3, "{done}");
    let items = by_line(&app.items(id).await);
    for (line, needle) in [
        (2, "longer than ingest.max_record_bytes (2048 bytes)"),
        (3, "role_template is longer than 100 bytes"),
        (4, "9 keys; at most ingest.max_fields (8)"),
    ] {
        let item = &items[&line];
        assert_eq!(item["reason"]["code"], "malformed_row", "{item}");
        let msg = item["reason"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "line {line}: {msg}");
        // What is stored is bounded too.
        assert!(
            item["role_template"].as_str().unwrap().len() <= 101,
            "{item}"
        );
    }

    // CSV: a field too long is that row's rejection.
    let csv = format!(
        "external_id,role_template,license_tier\nEMP-1,Agent,Standard Agent\nEMP-2,Agent,{}\n",
        "t".repeat(300)
    );
    let job = app.submit_csv(&csv).await;
    let done = app.wait_finished(job["job_id"].as_str().unwrap()).await;
    assert_eq!(done["counts"]["rejected"], 1, "{done}");

    // JSON: an element of `assignments` beyond the record bound is a 400 naming its line,
    // and nothing is stored.
    let body = format!(
        "{{\"assignments\": [\n{{\"external_id\":\"EMP-1\",\"role_template\":\"Agent\",\"license_tier\":\"Standard Agent\"}},\n{{\"external_id\":\"{long}\",\"role_template\":\"Agent\",\"license_tier\":\"Standard Agent\"}}]}}"
    );
    let resp = post_body(
        &app,
        "/v1/jobs",
        WRITER_KEY,
        "application/json",
        None,
        body.into_bytes(),
    )
    .await;
    let p = problem(resp, 400).await;
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("line 3") && detail.contains("ingest.max_record_bytes"),
        "{detail}"
    );
    let list: Value = app.get("/v1/jobs", READER_KEY).await.json().await.unwrap();
    assert_eq!(list["jobs"].as_array().map(Vec::len), Some(2), "{list}");
}

#[tokio::test]
async fn rows_of_one_user_beyond_the_cap_are_rejected_with_their_own_reason_and_the_job_ends() {
    let app = spawn_app_with(TestOptions {
        config: "[ingest]\nmax_rows_per_user = 3\n".into(),
        ..TestOptions::default()
    })
    .await;
    app.seed(&[("EMP-1", &["Employee"]), ("EMP-2", &["Employee"])])
        .await;
    let mut csv = String::from("external_id,role_template,license_tier\n");
    csv.push_str("EMP-1,Agent,Supervisor\n");
    for _ in 0..4000 {
        csv.push_str("EMP-2,Agent,Supervisor\n");
    }
    csv.push_str("EMP-1,Reporting,Supervisor\n");
    // The validation says the same as the job will.
    let resp = post_body(
        &app,
        "/v1/validate",
        WRITER_KEY,
        "text/csv",
        None,
        csv.clone().into_bytes(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let report: Value = resp.json().await.unwrap();
    assert_eq!(report["rows"], 4002, "{report}");
    assert_eq!(report["users"], 2, "{report}");
    let capped: Vec<&Value> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"]["code"] == "too_many_rows_for_user")
        .collect();
    // Listed: the first 1000 rejected rows by line, two duplicates of line 3 among them.
    assert_eq!(capped.len(), 998, "{report}");
    assert_eq!(capped[0]["line"], 6, "{report}");
    assert_eq!(report["errors_truncated"], true);
    assert_eq!(report["rejected_rows"], 3999, "{report}");

    let job = app.submit_csv(&csv).await;
    let id = job["job_id"].as_str().unwrap();
    let done = app.wait_finished(id).await;
    assert_eq!(done["status"], "completed_with_errors", "{done}");
    assert_eq!(done["counts"]["applied"], 3, "{done}");
    assert_eq!(done["counts"]["rejected"], 3999, "{done}");
    let items = app.items(id).await;
    let too_many = items
        .iter()
        .filter(|i| i["reason"]["code"] == "too_many_rows_for_user")
        .count();
    assert_eq!(too_many, 3997, "{done}");
    let emp1 = &app.roles_of("EMP-1").await[0];
    assert!(
        emp1.contains(&"Agent".to_owned()) && emp1.contains(&"Reporting".to_owned()),
        "the user's row after the other's thousands still counts: {emp1:?}"
    );
    assert!(app.roles_of("EMP-2").await[0].contains(&"Agent".to_owned()));
}

/// A policy whose one tier allows both roles of a SoD rule: only the rule stops the batch.
fn sod_policy() -> String {
    r#"
protected_roles = ["Employee"]
[[tiers]]
name = "Ops"
roles = ["Agent", "Auditor"]
[[roles]]
name = "Agent"
[[roles]]
name = "Auditor"
[[sod]]
name = "no-self-audit"
roles = ["Agent", "Auditor"]
reason = "who works the queue does not audit it"
"#
    .into()
}

#[tokio::test]
async fn validate_reports_sod_conflicts_inside_the_batch_and_a_job_rejects_them_without_a_write() {
    let app = spawn_app_with(TestOptions {
        policy: sod_policy(),
        ..TestOptions::default()
    })
    .await;
    app.seed(&[("EMP-1", &["Employee"]), ("EMP-2", &["Employee"])])
        .await;
    let csv = "external_id,role_template,license_tier\nEMP-1,Agent,Ops\nEMP-2,Agent,Ops\nEMP-1,Auditor,Ops\n";
    let resp = post_body(
        &app,
        "/v1/validate",
        WRITER_KEY,
        "text/csv",
        None,
        csv.into(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let report: Value = resp.json().await.unwrap();
    assert_eq!(report["valid"], false);
    let lines: Vec<(i64, String)> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["line"].as_i64().unwrap(),
                e["reason"]["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        vec![(2, "sod_conflict".into()), (4, "sod_conflict".into())]
    );
    assert!(
        report["errors"][0]["reason"]["message"]
            .as_str()
            .unwrap()
            .contains("no-self-audit")
    );

    let before = patches(&app).await;
    let job = app.submit_csv(csv).await;
    let done = app.wait_finished(job["job_id"].as_str().unwrap()).await;
    assert_eq!(done["counts"]["rejected"], 2, "{done}");
    assert_eq!(done["counts"]["applied"], 1, "{done}");
    assert_eq!(patches(&app).await - before, 1, "only EMP-2 is written");
    assert_eq!(
        app.roles_of("EMP-1").await,
        vec![vec!["Employee".to_owned()]]
    );
}

#[tokio::test]
async fn validate_checks_the_scope_before_reading_the_body() {
    let app = spawn_app().await;
    // A body that never ends: an answer proves it was not waited for.
    let endless = futures::stream::iter(vec![Ok::<_, std::io::Error>(bytes::Bytes::from_static(
        b"external_id,role_template,license_tier\n",
    ))])
    .chain(futures::stream::pending());
    let resp = tokio::time::timeout(
        Duration::from_secs(20),
        app.client
            .post(format!("{}/v1/validate", app.address))
            .bearer_auth(READER_KEY)
            .header("content-type", "text/csv")
            .body(reqwest::Body::wrap_stream(endless))
            .send(),
    )
    .await
    .expect("answered without reading the body")
    .expect("request");
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn a_job_granting_a_privileged_role_waits_for_approval_unless_the_key_may_grant_it() {
    let app = spawn_app().await;
    app.seed(&[
        ("EMP-1", &["Employee"]),
        ("EMP-2", &["Employee"]),
        ("EMP-3", &["Employee"]),
    ])
    .await;
    let csv = "external_id,role_template,license_tier\nEMP-1,Agent,Administrator\nEMP-2,System Administrator,Administrator\n";

    // A key without `roles:privileged`: held, in merge mode too, nothing written.
    let resp = post_body(
        &app,
        "/v1/jobs",
        PLAIN_WRITER_KEY,
        "text/csv",
        None,
        csv.into(),
    )
    .await;
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let held = app.wait_for(&id, &["awaiting_approval"]).await;
    assert_eq!(held["mode"], "merge");
    assert_eq!(held["approval"]["required"], true, "{held}");
    assert_eq!(held["approval"]["reasons"], json!(["privileged_roles"]));
    let expected = json!({"roles": ["System Administrator"], "users": 1, "allowed_by_key": false});
    assert_eq!(held["estimate"]["privileged"], expected, "{held}");
    assert_eq!(held["approval"]["privileged"], expected, "{held}");
    assert_eq!(patches(&app).await, 0, "nothing written before approval");

    // An admin takes the second look.
    let resp = app.post(&format!("/v1/jobs/{id}/approve"), ADMIN_KEY).await;
    assert_eq!(resp.status(), 200);
    let done = app.wait_finished(&id).await;
    assert_eq!(done["counts"]["applied"], 2, "{done}");
    assert!(
        app.roles_of("EMP-2").await[0].contains(&"System Administrator".to_owned()),
        "granted after approval"
    );

    // A dry run writes nothing: shown, not held.
    let resp = post_body(
        &app,
        "/v1/jobs?dry_run=true",
        PLAIN_WRITER_KEY,
        "text/csv",
        None,
        "external_id,role_template,license_tier\nEMP-3,System Administrator,Administrator\n".into(),
    )
    .await;
    let id = resp.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = app.wait_finished(&id).await;
    assert_eq!(done["estimate"]["privileged"]["users"], 1, "{done}");
    assert_eq!(done["approval"]["required"], false, "{done}");

    // The HR system's key carries `roles:privileged`: no wait.
    let job = app
        .submit_csv(
            "external_id,role_template,license_tier\nEMP-3,System Administrator,Administrator\n",
        )
        .await;
    let done = app.wait_finished(job["job_id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["estimate"]["privileged"]["allowed_by_key"], true);
}

/// Bodies a broken integration, a leaked key or a corrupt export could send.
fn corpus() -> Vec<(&'static str, &'static str, Option<&'static str>, Vec<u8>)> {
    let header = "external_id,role_template,license_tier\n";
    let mut out: Vec<(&'static str, &'static str, Option<&'static str>, Vec<u8>)> = vec![
        ("nul in csv", "text/csv", None, format!("{header}EMP-\0,Agent,Standard Agent\n").into()),
        ("nul in json", "application/json", None, br#"{"assignments":[{"external_id":"A\u0000","role_template":"Agent","license_tier":"Standard Agent"}]}"#.to_vec()),
        ("controls", "text/csv", None, format!("{header}EMP-\x07\x1b[31m,Ag\x08ent,Standard\x7fAgent\n").into()),
        ("bom only", "text/csv", None, b"\xef\xbb\xbf".to_vec()),
        ("empty", "text/csv", None, Vec::new()),
        ("empty json", "application/json", None, Vec::new()),
        ("invalid utf-8", "text/csv", None, format!("{header}EMP-1,Agent,Standard Agent\n").bytes().chain(*b"\xff\xfe,\xc0\xaf,x\n").collect()),
        ("lone surrogate", "application/json", None, br#"{"assignments":[{"external_id":"\ud800","role_template":"Agent","license_tier":"Standard Agent"}]}"#.to_vec()),
        ("deep json", "application/json", None, format!("{{\"assignments\":[{}{}]}}", "[".repeat(100_000), "]".repeat(100_000)).into()),
        ("deep ndjson", "application/x-ndjson", None, format!("{}\n", "{\"a\":".repeat(50_000)).into()),
        ("numbers", "application/json", None, br#"{"assignments":[{"external_id":1e999999,"role_template":-0,"license_tier":18446744073709551616}]}"#.to_vec()),
        ("wrong envelope", "application/json", None, br#"[{"external_id":"A"}]"#.to_vec()),
        ("mode of another type", "application/json", None, br#"{"mode":["merge"],"assignments":[]}"#.to_vec()),
        ("duplicate key", "application/json", None, br#"{"assignments":[{"external_id":"A","external_id":"B","role_template":"Agent","license_tier":"Standard Agent"}]}"#.to_vec()),
        ("unterminated quote", "text/csv", None, format!("{header}\"EMP-1,Agent,Standard Agent\n").into()),
        ("many columns", "text/csv", None, format!("{}\n", vec!["c"; 5000].join(",")).into()),
        ("header only", "text/csv", None, header.into()),
        ("long id", "text/csv", None, format!("{header}{},Agent,Standard Agent\n", "E".repeat(10_000)).into()),
        ("broken gzip", "text/csv", Some("gzip"), b"\x1f\x8b\x08\x00garbage".to_vec()),
        ("unknown encoding", "text/csv", Some("br"), b"whatever".to_vec()),
        ("gzip of junk", "text/csv", Some("gzip"), gzip(&[0xff; 4096])),
        ("wrong type", "application/xml", None, b"<a/>".to_vec()),
        ("injection", "text/csv", None, format!("{header}\"a' OR 1=1; --\",Agent,Standard Agent\n\"=cmd|' /C calc'!A0\",Agent,Standard Agent\n").into()),
        ("filter injection", "text/csv", None, format!("{header}\"x\"\" or userName pr\",Agent,Standard Agent\n").into()),
    ];
    // One user repeated: bounded by the per-user cap.
    let mut many = String::from(header);
    for _ in 0..5000 {
        many.push_str("EMP-1,Agent,Standard Agent\n");
    }
    out.push(("one user repeated", "text/csv", None, many.into()));
    out
}

#[tokio::test]
async fn a_corpus_of_hostile_bodies_gets_4xx_or_row_rejections_never_a_5xx() {
    let app = spawn_app().await;
    app.seed(&[("EMP-1", &["Employee"])]).await;
    let mut accepted = Vec::new();
    for (name, content_type, encoding, body) in corpus() {
        for path in ["/v1/validate", "/v1/jobs"] {
            let resp =
                post_body(&app, path, WRITER_KEY, content_type, encoding, body.clone()).await;
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            assert!(
                (200..500).contains(&status),
                "{name} on {path}: {status} {text}"
            );
            if status >= 400 {
                let p: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{name} on {path}: not a problem ({e}): {text}"));
                assert!(p["detail"].is_string(), "{name} on {path}: {text}");
            } else if path == "/v1/jobs" {
                let job: Value = serde_json::from_str(&text).unwrap();
                accepted.push((name, job["job_id"].as_str().unwrap().to_owned()));
            }
        }
    }
    // Every accepted body ends, its bad rows rejected with a reason.
    for (name, id) in &accepted {
        let done = app.wait_finished(id).await;
        assert_ne!(done["status"], "failed", "{name}: {done}");
        for item in app.items(id).await {
            if item["outcome"] == "rejected" {
                assert!(item["reason"]["code"].is_string(), "{name}: {item}");
            }
        }
    }
    assert!(
        accepted.len() >= 5,
        "the corpus has bodies with some good rows: {accepted:?}"
    );
    let health = app.get("/healthz", READER_KEY).await;
    assert_eq!(health.status(), 200);
}

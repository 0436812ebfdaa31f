//! High-volume ingestion: streamed bodies, gzip, limits, and jobs larger than a planning page.

use crate::helpers::*;
use flate2::Compression;
use flate2::write::GzEncoder;
use genesys_cloud_emulator::EmulatorArgs;
use serde_json::Value;
use std::io::Write;

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(body).unwrap();
    e.finish().unwrap()
}

async fn submit_gzip(app: &TestApp, content_type: &str, body: &[u8]) -> reqwest::Response {
    app.client
        .post(format!("{}/v1/jobs", app.address))
        .bearer_auth(WRITER_KEY)
        .header("content-type", content_type)
        .header("content-encoding", "gzip")
        .body(gzip(body))
        .send()
        .await
        .unwrap()
}

async fn problem(resp: reqwest::Response, status: u16, detail_contains: &str) -> Value {
    assert_eq!(resp.status(), status);
    assert_eq!(
        resp.headers()["content-type"],
        "application/problem+json",
        "problem+json"
    );
    let body: Value = resp.json().await.unwrap();
    let detail = body["detail"].as_str().unwrap_or("");
    assert!(detail.contains(detail_contains), "{body}");
    body
}

async fn jobs_stored(app: &TestApp) -> usize {
    let list: Value = app.get("/v1/jobs", READER_KEY).await.json().await.unwrap();
    let jobs = list["jobs"].as_array().unwrap().len();
    // Not only no job: no row either (a refused body's rows are rolled back with it).
    let items: i64 = if app.store_url().starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(app.store_url()).await.unwrap();
        let n = sqlx::query_scalar("SELECT COUNT(*) FROM items")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        n
    } else {
        let pool = sqlx::PgPool::connect(app.store_url()).await.unwrap();
        let n = sqlx::query_scalar("SELECT COUNT(*) FROM items")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        n
    };
    if jobs == 0 {
        assert_eq!(items, 0, "rows of a refused body were left in the store");
    }
    jobs
}

#[tokio::test]
async fn a_gzipped_csv_with_quotes_crlf_bom_and_shuffled_columns_is_read_right() {
    let app = spawn_app().await;
    let csv = "\u{feff}license_tier,note,external_id,role_template\r\n\
               Standard Agent,\"plain, with a comma\",EMP-1,Agent\r\n\
               \r\n\
               \"Standard Agent\",\"two\r\nlines\",\"EMP-\"\"2\",\"Wrap Up\"\r\n\
               Standard Agent,x,EMP-3\r\n\
               Standard Agent,,EMP-4,Queue Member\r\n";
    let resp = submit_gzip(&app, "text/csv; charset=utf-8", csv.as_bytes()).await;
    assert_eq!(resp.status(), 202, "{:?}", resp.text().await);
    let job: Value = resp.json().await.unwrap();
    let id = job["job_id"].as_str().unwrap();
    assert_eq!(job["counts"]["total"], 4, "{job}");
    let items = by_line(&app.items(id).await);
    // Line numbers count physical lines of the decoded body: the blank line 3 and the quoted
    // line break inside line 4's record both count.
    assert_eq!(
        items.keys().copied().collect::<Vec<_>>(),
        vec![2, 4, 6, 7],
        "{items:?}"
    );
    assert_eq!(items[&2]["external_id"], "EMP-1");
    assert_eq!(items[&2]["role_template"], "Agent");
    assert_eq!(items[&2]["license_tier"], "Standard Agent");
    assert_eq!(items[&4]["external_id"], "EMP-\"2");
    assert_eq!(items[&4]["role_template"], "Wrap Up");
    assert_eq!(items[&6]["outcome"], "rejected");
    assert_eq!(items[&6]["reason"]["code"], "malformed_row");
    assert_eq!(items[&7]["external_id"], "EMP-4");
    assert_eq!(items[&7]["role_template"], "Queue Member");
}

#[tokio::test]
async fn limits_answer_413_and_store_nothing() {
    let app = spawn_app_with(TestOptions {
        config: "[server]\nmax_body_bytes = 4096\nmax_rows_per_job = 20\n".into(),
        ..Default::default()
    })
    .await;
    let rows = |n: usize| {
        let mut s = String::from("external_id,role_template,license_tier\n");
        for i in 0..n {
            s.push_str(&format!("EMP-{i:06},Agent,Standard Agent\n"));
        }
        s
    };
    // Too many rows: the 21st row is named.
    problem(
        app.submit("text/csv", "", rows(21)).await,
        413,
        "more than 20 rows (line 22)",
    )
    .await;
    // Too many bytes, plain.
    problem(
        app.submit("text/csv", "", "x".repeat(5000)).await,
        413,
        "max_body_bytes",
    )
    .await;
    // Too many bytes once decoded: a small gzip body cannot expand without bound.
    let bomb = format!(
        "external_id,role_template,license_tier\n{}",
        " ".repeat(100_000)
    );
    let resp = submit_gzip(&app, "text/csv", bomb.as_bytes()).await;
    problem(resp, 413, "max_body_bytes").await;
    // A broken gzip stream.
    let resp = app
        .client
        .post(format!("{}/v1/jobs", app.address))
        .bearer_auth(WRITER_KEY)
        .header("content-type", "text/csv")
        .header("content-encoding", "gzip")
        .body("not gzip at all")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "{:?}", resp.text().await);
    assert_eq!(jobs_stored(&app).await, 0, "nothing was stored");
    // Within the limits, the same body is taken.
    let resp = app.submit("text/csv", "", rows(20)).await;
    assert_eq!(resp.status(), 202);
}

#[tokio::test]
async fn a_shape_error_deep_in_a_large_body_stores_nothing() {
    let app = spawn_app().await;
    // 30 000 rows go to the store in several batches before the broken line is read.
    let mut body = String::new();
    for i in 0..30_000 {
        body.push_str(&format!(
            "{{\"external_id\":\"EMP-{i:06}\",\"role_template\":\"Agent\",\"license_tier\":\"Standard Agent\"}}\n"
        ));
    }
    body.push_str("{\"external_id\": \"EMP-X\", \"role_template\": }\n");
    let err = problem(
        app.submit("application/x-ndjson", "", body.clone()).await,
        400,
        "line 30001, column",
    )
    .await;
    assert_eq!(err["errors"][0]["line"], 30001);
    // Invalid UTF-8 late in a CSV body: named by line and column, before any row is stored.
    let mut csv = b"external_id,role_template,license_tier\n".to_vec();
    for i in 0..30_000 {
        csv.extend_from_slice(format!("EMP-{i:06},Agent,Standard Agent\n").as_bytes());
    }
    csv.extend_from_slice(b"EMP-\xc3\x28,Agent,Standard Agent\n");
    problem(
        app.submit("text/csv", "", csv).await,
        400,
        "line 30002, column 5: the body is not valid UTF-8",
    )
    .await;
    // A JSON envelope whose 20 001st element lacks a field.
    let mut json = String::from("{\"mode\":\"merge\",\"assignments\":[");
    for i in 0..20_000 {
        json.push_str(&format!(
            "{{\"external_id\":\"EMP-{i:06}\",\"role_template\":\"Agent\",\"license_tier\":\"Standard Agent\"}},"
        ));
    }
    json.push_str("{\"external_id\":\"EMP-X\",\"role_template\":\"Agent\",\"license_tier\":7}]}");
    problem(
        app.submit("application/json", "", json).await,
        400,
        "assignments[20000].license_tier",
    )
    .await;
    assert_eq!(jobs_stored(&app).await, 0, "nothing was stored");
}

#[tokio::test]
async fn the_envelope_may_name_its_mode_after_the_assignments() {
    let app = spawn_app().await;
    let resp = app
        .submit(
            "application/json",
            "?mode=replace",
            r#"{"assignments":[{"external_id":"EMP-000001","role_template":"Agent","license_tier":"Standard Agent","extra":[1,{"a":2}]}],"dry_run":true,"mode":"replace"}"#,
        )
        .await;
    assert_eq!(resp.status(), 202, "{:?}", resp.text().await);
    let job: Value = resp.json().await.unwrap();
    assert_eq!(job["mode"], "replace", "read after the rows: {job}");
    assert_eq!(job["dry_run"], true);
}

#[tokio::test]
async fn a_job_larger_than_a_planning_page_is_planned_whole() {
    // 4 000 users of 3 rows: the planner reads pages of 5 000 rows, so users straddle page
    // boundaries; one of them (EMP-001667, rows 4 998 to 5 001 in user order) also has a
    // duplicate row, which is only seen as a duplicate if the user is kept whole.
    let app = spawn_app_with(TestOptions {
        emulator: EmulatorArgs {
            users: 4000,
            rate_limit_per_minute: 0,
            ..Default::default()
        },
        config: "[target]\nrequests_per_minute = 600000\n".into(),
        ..Default::default()
    })
    .await;
    let mut csv = String::from("external_id,role_template,license_tier\n");
    for u in 1..=4000 {
        for role in ["Agent", "Queue Member", "Wrap Up"] {
            csv.push_str(&format!("EMP-{u:06},{role},Standard Agent\n"));
        }
    }
    csv.push_str("EMP-001667,Agent,Standard Agent\n");
    let resp = app.submit("text/csv", "?dry_run=true", csv).await;
    assert_eq!(resp.status(), 202);
    let job: Value = resp.json().await.unwrap();
    let id = job["job_id"].as_str().unwrap();
    let done = app.wait_finished(id).await;
    assert_eq!(done["counts"]["total"], 12_001, "{done}");
    assert_eq!(done["counts"]["planned"], 12_000, "{done}");
    assert_eq!(done["counts"]["rejected"], 1, "{done}");
    assert_eq!(done["counts"]["pending"], 0, "{done}");
    assert_eq!(done["users"]["total"], 4000, "{done}");
    let rejected: Value = app
        .get(&format!("/v1/jobs/{id}/items?outcome=rejected"), READER_KEY)
        .await
        .json()
        .await
        .unwrap();
    let rejected = rejected["items"].as_array().unwrap();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0]["line"], 12_002);
    assert_eq!(rejected[0]["reason"]["code"], "duplicate_row");
    // Every user planned once with its three roles: the dry run wrote nothing.
    let stats = app.emulator_stats().await;
    let patches: u64 = stats["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["method"] == "PATCH")
        .map(|r| r["count"].as_u64().unwrap())
        .sum();
    assert_eq!(patches, 0);
}

/// A NUL (or any control character) in an id, a role or a tier, as JSON `\u0000` or raw in a
/// CSV, and an over-long `external_id`: each row is rejected (`malformed_row`, naming the
/// field), the others applied, never a 5xx, on SQLite and on PostgreSQL alike.
#[tokio::test]
async fn control_characters_and_long_ids_reject_the_row_on_every_store() {
    let app = spawn_app().await;
    app.seed(&[("OK1", &[]), ("OK2", &[])]).await;
    let long = "L".repeat(300);
    let json_body = serde_json::json!({"assignments": [
        {"external_id": "OK1", "role_template": "Agent", "license_tier": "Standard Agent"},
        {"external_id": "BAD\u{0}1", "role_template": "Agent", "license_tier": "Standard Agent"},
        {"external_id": "OK1", "role_template": "Agent\u{7}", "license_tier": "Standard Agent"},
        {"external_id": long, "role_template": "Agent", "license_tier": "Standard Agent"},
    ]});
    let job = app.submit_json(json_body).await;
    let done = app.wait_finished(job["job_id"].as_str().unwrap()).await;
    assert_eq!(done["counts"]["applied"], 1, "{done}");
    assert_eq!(done["counts"]["rejected"], 3, "{done}");
    let items = app.items(done["job_id"].as_str().unwrap()).await;
    let reasons: Vec<(String, String)> = items
        .iter()
        .filter(|i| i["outcome"] == "rejected")
        .map(|i| {
            (
                i["reason"]["code"].as_str().unwrap().to_owned(),
                i["reason"]["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(reasons.len(), 3);
    assert!(
        reasons.iter().all(|(c, _)| c == "malformed_row"),
        "{reasons:?}"
    );
    assert!(
        reasons[0]
            .1
            .contains("external_id contains a control character")
    );
    assert!(
        reasons[1]
            .1
            .contains("role_template contains a control character")
    );
    assert!(reasons[2].1.contains("external_id is longer than 256"));
    // Nothing oversized was stored: the id is cut to its limit plus one.
    assert!(
        items
            .iter()
            .all(|i| i["external_id"].as_str().unwrap().chars().count() <= 257)
    );

    // Raw NUL in a CSV.
    let csv = "external_id,role_template,license_tier\nOK2,Agent,Standard Agent\nX\u{0}Y,Agent,Standard Agent\n";
    let resp = app.submit("text/csv", "", csv.as_bytes().to_vec()).await;
    assert_eq!(resp.status(), 202);
    let job: serde_json::Value = resp.json().await.unwrap();
    let done = app.wait_finished(job["job_id"].as_str().unwrap()).await;
    assert_eq!(done["counts"]["applied"], 1, "{done}");
    assert_eq!(done["counts"]["rejected"], 1, "{done}");
}

/// A CSV record is bounded (64 KiB): one quoted field of 20 MB of line breaks, gzipped to a
/// few KiB, is refused with a 400 naming the line it starts on, not buffered, and nothing is
/// stored. (The expansion ratio is lifted here so that the record bound is what answers.)
#[tokio::test]
async fn a_csv_record_larger_than_its_bound_is_refused_naming_its_line() {
    let app = spawn_app_with(TestOptions {
        config: "[ingest]\nmax_expansion_ratio = 100000\n".into(),
        ..TestOptions::default()
    })
    .await;
    let mut body = b"external_id,role_template,license_tier\nOK,Agent,Standard Agent\n\"".to_vec();
    body.extend(std::iter::repeat_n(b'\n', 20 << 20));
    body.extend_from_slice(b"\",Agent,Standard Agent\n");
    let resp = app
        .client
        .post(format!("{}/v1/jobs", app.address))
        .bearer_auth(WRITER_KEY)
        .header("content-type", "text/csv")
        .header("content-encoding", "gzip")
        .body(gzip(&body))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let problem: serde_json::Value = resp.json().await.unwrap();
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("line 3") && detail.contains("65536"),
        "{problem}"
    );
    let list: serde_json::Value = app.get("/v1/jobs", READER_KEY).await.json().await.unwrap();
    assert_eq!(list["jobs"].as_array().unwrap().len(), 0, "nothing stored");
}

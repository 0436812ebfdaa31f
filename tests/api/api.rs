//! The HTTP contract: authentication, scopes, problem+json errors, idempotency.

use crate::helpers::*;
use serde_json::Value;

const CSV: &str = "external_id,role_template,license_tier\nQ1,Agent,Standard Agent\n";

async fn assert_problem(resp: reqwest::Response, status: u16, detail_contains: &str) -> Value {
    assert_eq!(resp.status(), status);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], status);
    let detail = body["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains(detail_contains),
        "detail {detail:?} lacks {detail_contains:?}"
    );
    body
}

#[tokio::test]
async fn v1_needs_a_key_and_the_right_scope() {
    let app = spawn_app().await;
    let resp = app
        .client
        .get(format!("{}/v1/jobs", app.address))
        .send()
        .await
        .unwrap();
    assert_problem(resp, 401, "API key").await;
    assert_problem(app.get("/v1/jobs", "not-a-key").await, 401, "API key").await;
    assert_eq!(app.get("/v1/jobs", READER_KEY).await.status(), 200);

    let resp = app
        .client
        .post(format!("{}/v1/jobs", app.address))
        .bearer_auth(READER_KEY)
        .header("content-type", "text/csv")
        .body(CSV)
        .send()
        .await
        .unwrap();
    assert_problem(resp, 403, "jobs:write").await;
    let job = app.submit_csv(CSV).await;
    let id = job["job_id"].as_str().unwrap();
    assert_problem(
        app.post(&format!("/v1/jobs/{id}/approve"), WRITER_KEY)
            .await,
        403,
        "admin",
    )
    .await;

    // Health, readiness and metrics need no key.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let resp = app
            .client
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn bad_bodies_get_a_clear_4xx_and_store_nothing() {
    let app = spawn_app().await;
    assert_problem(
        app.submit("application/xml", "", "<x/>").await,
        415,
        "not supported",
    )
    .await;
    assert_problem(
        app.submit(
            "application/json",
            "",
            "{\"assignments\": [\n {\"external_id\": }]}",
        )
        .await,
        400,
        "line 2, column",
    )
    .await;
    let body = assert_problem(
        app.submit(
            "application/json",
            "",
            r#"{"assignments":[{"external_id":"A","role_template":"Agent"}]}"#,
        )
        .await,
        400,
        "assignments[0].license_tier",
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "assignments[0].license_tier");
    assert_problem(
        app.submit("text/csv", "", "external_id,role_template\nA,Agent\n")
            .await,
        400,
        "license_tier",
    )
    .await;
    assert_problem(
        app.submit("text/csv", "?mode=sideways", CSV).await,
        400,
        "mode",
    )
    .await;
    assert_problem(
        app.submit(
            "text/csv",
            "",
            b"external_id,role_template,license_tier\n\xff,Agent,X\n".to_vec(),
        )
        .await,
        400,
        "line 2, column 1",
    )
    .await;
    assert_problem(
        app.submit("text/csv", "", "external_id,role_template,license_tier\n")
            .await,
        400,
        "no assignments",
    )
    .await;
    assert_problem(app.get("/v1/jobs/nope", READER_KEY).await, 404, "not found").await;
    assert_problem(app.get("/v1/jobs?limit=0", READER_KEY).await, 400, "limit").await;
    let list: Value = app.get("/v1/jobs", READER_KEY).await.json().await.unwrap();
    assert_eq!(
        list["jobs"].as_array().unwrap().len(),
        0,
        "nothing was stored"
    );
}

#[tokio::test]
async fn an_idempotency_key_returns_the_original_job() {
    let app = spawn_app().await;
    let send = |body: &'static str| {
        app.client
            .post(format!("{}/v1/jobs", app.address))
            .bearer_auth(WRITER_KEY)
            .header("content-type", "text/csv")
            .header("idempotency-key", "nightly-2026-11-28")
            .body(body)
            .send()
    };
    let first = send(CSV).await.unwrap();
    assert_eq!(first.status(), 202);
    assert!(
        first.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/v1/jobs/")
    );
    let first: Value = first.json().await.unwrap();
    let again = send(CSV).await.unwrap();
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["job_id"], first["job_id"]);
    let other = send("external_id,role_template,license_tier\nQ2,Agent,Standard Agent\n")
        .await
        .unwrap();
    assert_problem(other, 422, "different body").await;
    let list: Value = app.get("/v1/jobs", READER_KEY).await.json().await.unwrap();
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1);

    // Idempotency keys are scoped to the API key that used them: another key sending the same
    // Idempotency-Key starts its own job and learns nothing of the first.
    let theirs = app
        .client
        .post(format!("{}/v1/jobs", app.address))
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "text/csv")
        .header("idempotency-key", "nightly-2026-11-28")
        .body("external_id,role_template,license_tier\nQ2,Agent,Standard Agent\n")
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), 202);
    let theirs: Value = theirs.json().await.unwrap();
    assert_ne!(theirs["job_id"], first["job_id"]);
}

#[tokio::test]
async fn a_csv_row_with_too_few_fields_is_rejected_alone() {
    let app = spawn_app().await;
    app.seed(&[("M2", &[])]).await;
    let job = app
        .submit_csv("external_id,role_template,license_tier\nM1,Agent\nM2,Agent,Standard Agent\n")
        .await;
    let id = job["job_id"].as_str().unwrap();
    app.wait_finished(id).await;
    let items = by_line(&app.items(id).await);
    assert_eq!(items[&2]["outcome"], "rejected");
    assert_eq!(items[&2]["reason"]["code"], "malformed_row");
    assert_eq!(items[&3]["outcome"], "applied");
}

#[tokio::test]
async fn metrics_count_jobs_and_scim_calls() {
    let app = spawn_app().await;
    app.seed(&[("P1", &[])]).await;
    let job = app
        .submit_csv("external_id,role_template,license_tier\nP1,Agent,Standard Agent\n")
        .await;
    app.wait_finished(job["job_id"].as_str().unwrap()).await;
    let text = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("rolesync_jobs_total{status=\"succeeded\"} 1"),
        "{text}"
    );
    assert!(text.contains("rolesync_assignments_total{outcome=\"applied\"} 1"));
    assert!(text.contains(
        "rolesync_scim_requests_total{method=\"PATCH\",route=\"/users/{id}\",status=\"200\"} 1"
    ));
    assert!(text.contains(
        "rolesync_http_requests_total{method=\"POST\",route=\"/v1/jobs\",status=\"202\"} 1"
    ));
}

#[tokio::test]
async fn cancel_stops_a_job_and_its_pending_rows() {
    let app = spawn_app_with(TestOptions {
        emulator: genesys_cloud_emulator::EmulatorArgs {
            rate_limit_per_minute: 0,
            latency_ms: 200,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let users: Vec<String> = (0..60).map(|i| format!("C{i}")).collect();
    let seeds: Vec<(&str, &[&str])> = users.iter().map(|u| (u.as_str(), &[][..])).collect();
    app.seed(&seeds).await;
    let csv: String = std::iter::once("external_id,role_template,license_tier".to_owned())
        .chain(users.iter().map(|u| format!("{u},Agent,Standard Agent")))
        .collect::<Vec<_>>()
        .join("\n");
    let job = app.submit_csv(&csv).await;
    let id = job["job_id"].as_str().unwrap();
    app.wait_for(id, &["running"]).await;
    let resp = app.post(&format!("/v1/jobs/{id}/cancel"), WRITER_KEY).await;
    assert_eq!(resp.status(), 200);
    let done = app.wait_finished(id).await;
    assert_eq!(done["status"], "cancelled");
    assert!(done["counts"]["cancelled"].as_i64().unwrap() > 0, "{done}");
    assert_eq!(done["counts"]["pending"], 0);
    assert_eq!(
        app.post(&format!("/v1/jobs/{id}/cancel"), WRITER_KEY)
            .await
            .status(),
        409
    );
}

#[tokio::test]
async fn an_expired_idempotency_key_starts_a_new_job() {
    let app = spawn_app_with(TestOptions {
        config: "[store]\nidempotency_ttl_hours = 0\n".into(),
        ..Default::default()
    })
    .await;
    let send = || {
        app.client
            .post(format!("{}/v1/jobs", app.address))
            .bearer_auth(WRITER_KEY)
            .header("content-type", "text/csv")
            .header("idempotency-key", "k-1")
            .body(CSV)
            .send()
    };
    let first: Value = send().await.unwrap().json().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let again = send().await.unwrap();
    assert_eq!(again.status(), 202, "the key expired, so this is a new job");
    let again: Value = again.json().await.unwrap();
    assert_ne!(again["job_id"], first["job_id"]);
}

#[tokio::test]
async fn too_many_pending_rows_get_503_with_retry_after() {
    let app = spawn_app_with(TestOptions {
        emulator: genesys_cloud_emulator::EmulatorArgs {
            rate_limit_per_minute: 0,
            latency_ms: 300,
            ..Default::default()
        },
        config: "[server]\nmax_pending_rows = 3\nmax_rows_per_job = 3\n".into(),
        ..Default::default()
    })
    .await;
    app.seed(&[("B1", &[]), ("B2", &[])]).await;
    let first = app.submit("text/csv", "", "external_id,role_template,license_tier\nB1,Agent,Standard Agent\nB2,Agent,Standard Agent\n").await;
    assert_eq!(first.status(), 202);
    let second = app.submit("text/csv", "", "external_id,role_template,license_tier\nB3,Agent,Standard Agent\nB4,Agent,Standard Agent\n").await;
    assert_eq!(second.headers()["retry-after"], "30");
    assert_problem(second, 503, "waiting").await;
}

#[tokio::test]
async fn finished_jobs_are_pruned_after_retention() {
    let app = spawn_app().await;
    let job = app
        .submit_csv("external_id,role_template,license_tier\nX1,Janitor,Standard Agent\n")
        .await;
    let id = job["job_id"].as_str().unwrap().to_owned();
    app.wait_finished(&id).await;
    let store = rolesync::store::Store::connect(app.store_url(), 2)
        .await
        .unwrap();
    // Nothing finished before an hour ago: kept.
    assert_eq!(
        store
            .prune(rolesync::store::now_ms() - 3_600_000)
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.prune(rolesync::store::now_ms() + 1).await.unwrap(), 1);
    assert_problem(
        app.get(&format!("/v1/jobs/{id}"), READER_KEY).await,
        404,
        "not found",
    )
    .await;
    assert!(
        store
            .list_items(&id, None, 10, None)
            .await
            .unwrap()
            .is_empty()
    );
}

/// `/v1/validate` checks the caller's scope before it reads the body: a key without
/// `jobs:write` gets its 403 while the body is still arriving (here: never finishing).
#[tokio::test]
async fn validate_refuses_a_key_without_the_scope_before_reading_the_body() {
    let app = spawn_app().await;
    use futures::StreamExt;
    let first = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(
        b"external_id,role_template,license_tier\n",
    ))]);
    let endless = first.chain(futures::stream::pending());
    let sent = app
        .client
        .post(format!("{}/v1/validate", app.address))
        .bearer_auth(READER_KEY)
        .header("content-type", "text/csv")
        .body(reqwest::Body::wrap_stream(endless))
        .send();
    let resp = tokio::time::timeout(std::time::Duration::from_secs(10), sent)
        .await
        .expect("answered before the body ended")
        .unwrap();
    assert_eq!(resp.status(), 403);
}

/// Uploads in progress are bounded per API key (429) and in all (503), with `Retry-After`; a
/// slot is free again once its upload ends.
#[tokio::test]
async fn concurrent_uploads_are_bounded_per_key_and_in_all() {
    use futures::StreamExt;
    let app = spawn_app_with(TestOptions {
        config: "[server]\nmax_ingests_per_key = 2\nmax_ingests = 3\n".into(),
        ..Default::default()
    })
    .await;
    // An upload whose body never ends holds its slot.
    let hold = |key: &'static str| {
        let first = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(
            b"external_id,role_template,license_tier\n",
        ))]);
        let body = reqwest::Body::wrap_stream(first.chain(futures::stream::pending()));
        let req = app
            .client
            .post(format!("{}/v1/jobs", app.address))
            .bearer_auth(key)
            .header("content-type", "text/csv")
            .body(body)
            .send();
        tokio::spawn(req)
    };
    let post = |key: &'static str| {
        app.client
            .post(format!("{}/v1/jobs", app.address))
            .bearer_auth(key)
            .header("content-type", "text/csv")
            .body("external_id,role_template,license_tier\n")
            .send()
    };
    let mut w1 = hold(WRITER_KEY);
    let mut w2 = hold(WRITER_KEY);
    // Wait until both hold their slot: a third from the same key is refused.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let refused = loop {
        let r = post(WRITER_KEY).await.unwrap();
        if r.status() == 429 {
            break r;
        }
        // A probe can take a slot just as a holder arrives: then hold again.
        if w1.is_finished() {
            w1 = hold(WRITER_KEY);
        }
        if w2.is_finished() {
            w2 = hold(WRITER_KEY);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never refused: {}",
            r.status()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(refused.headers()["retry-after"], "5");
    assert_problem(refused, 429, "max_ingests_per_key").await;
    // Another key still gets a slot, until the total (3) is reached.
    let mut a1 = hold(ADMIN_KEY);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let full = loop {
        let r = post(ADMIN_KEY).await.unwrap();
        if r.status() == 503 {
            break r;
        }
        // A probe can take the last slot just as the holder arrives: then hold again.
        if a1.is_finished() {
            a1 = hold(ADMIN_KEY);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never full: {}",
            r.status()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_problem(full, 503, "max_ingests").await;
    // Uploads that end free their slots.
    for h in [w1, w2, a1] {
        h.abort();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = app
            .client
            .post(format!("{}/v1/jobs", app.address))
            .bearer_auth(WRITER_KEY)
            .header("content-type", "text/csv")
            .body("external_id,role_template,license_tier\nS1,Agent,Standard Agent\n")
            .send()
            .await
            .unwrap();
        if r.status() == 202 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "slots never freed: {}",
            r.status()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

//! A job's rows as CSV (`GET /v1/jobs/{id}/items` with `Accept: text/csv`): the columns, paging
//! through the store, formula cells guarded, and the round trip HR makes (download the
//! rejected rows, fix them, send the file back as it is). Also how a batch's options from the
//! query and from a JSON body meet.

use crate::helpers::*;
use serde_json::{Value, json};

const HEADER: &str = "line,external_id,role_template,license_tier,outcome,reason,detail,action";

async fn csv_of(app: &TestApp, id: &str, query: &str) -> String {
    let resp = app
        .client
        .get(format!("{}/v1/jobs/{id}/items{query}", app.address))
        .bearer_auth(READER_KEY)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/csv; charset=utf-8"
    );
    assert!(
        resp.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment; filename=\"job-"),
    );
    resp.text().await.unwrap()
}

fn records(csv: &str) -> Vec<Vec<String>> {
    csv::Reader::from_reader(csv.as_bytes())
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect()
}

#[tokio::test]
async fn rejected_rows_downloaded_as_csv_can_be_fixed_and_resubmitted() {
    let app = spawn_app().await;
    app.seed(&[("R1", &[]), ("R2", &[]), ("R3", &[])]).await;
    let job = app
        .submit_csv(
            "external_id,role_template,license_tier\nR1,Agent,Standard Agent\nR2,Astronaut,Standard Agent\nR3,Agent,Platinum\n",
        )
        .await;
    let id = job["job_id"].as_str().unwrap();
    app.wait_finished(id).await;

    let all = csv_of(&app, id, "").await;
    assert_eq!(all.lines().next(), Some(HEADER));
    assert_eq!(records(&all).len(), 3);
    let rejected = csv_of(&app, id, "?outcome=rejected").await;
    let rows = records(&rejected);
    assert_eq!(rows.len(), 2, "{rejected}");
    assert_eq!(
        rows[0][..6],
        [
            "3",
            "R2",
            "Astronaut",
            "Standard Agent",
            "rejected",
            "unknown_role"
        ]
    );
    assert_eq!(
        rows[1][..6],
        [
            "4",
            "R3",
            "Agent",
            "Platinum",
            "rejected",
            "unknown_license_tier"
        ]
    );
    assert!(!rows[0][6].is_empty(), "the detail says why");

    // HR fixes R2's role in a spreadsheet and sends the file back, extra columns and all.
    let fixed = rejected.replace("R2,Astronaut,", "R2,Agent,");
    assert_ne!(fixed, rejected);
    let again = app.submit_csv(&fixed).await;
    let again_id = again["job_id"].as_str().unwrap();
    let done = app.wait_finished(again_id).await;
    assert_eq!(done["counts"]["total"], 2, "{done}");
    assert_eq!(done["counts"]["applied"], 1, "{done}");
    assert_eq!(done["counts"]["rejected"], 1, "{done}");
    assert_eq!(app.roles_of("R2").await, vec![vec!["Agent", "Employee"]]);
    let items = by_line(&app.items(again_id).await);
    assert_eq!(
        items[&3]["reason"]["code"], "unknown_license_tier",
        "R3 still wrong"
    );
}

#[tokio::test]
async fn cells_a_spreadsheet_would_run_are_neutralised_and_read_back_as_sent() {
    let app = spawn_app().await;
    let nasty = [
        "=HYPERLINK(\"http://evil.example/\",\"click\")",
        "+1+2",
        "-3",
        "@SUM(A1)",
        "'=already",
    ];
    let assignments: Vec<Value> = nasty
        .iter()
        .map(|n| json!({"external_id": n, "role_template": n, "license_tier": n}))
        .collect();
    let job = app.submit_json(json!({"assignments": assignments})).await;
    let id = job["job_id"].as_str().unwrap();
    app.wait_finished(id).await;

    let csv = csv_of(&app, id, "?outcome=rejected").await;
    let rows = records(&csv);
    assert_eq!(rows.len(), nasty.len(), "{csv}");
    for (row, n) in rows.iter().zip(nasty) {
        for cell in &row[1..4] {
            assert_eq!(*cell, format!("'{n}"), "{csv}");
        }
        for cell in row {
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "{cell:?} in {csv}"
            );
        }
    }

    // Sent back as it is, every value is what was first sent.
    let again = app.submit_csv(&csv).await;
    let again_id = again["job_id"].as_str().unwrap();
    app.wait_finished(again_id).await;
    let ids: Vec<Value> = app
        .items(again_id)
        .await
        .iter()
        .map(|i| i["external_id"].clone())
        .collect();
    assert_eq!(ids, nasty.iter().map(|n| json!(n)).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_large_job_is_paged_through_into_one_file() {
    let app = spawn_app().await;
    // 2 500 rows of users the org does not have: a dry run finds them not_found, no writes.
    let users: Vec<String> = (0..2500).map(|i| format!("P{i:05}")).collect();
    let resp = app
        .submit(
            "text/csv",
            "?dry_run=true",
            csv_for(&users, "Agent", "Standard Agent"),
        )
        .await;
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.wait_finished(&id).await;
    let csv = csv_of(&app, &id, "?limit=10").await;
    let rows = records(&csv);
    assert_eq!(rows.len(), 2500, "every row, whatever limit says");
    let lines: Vec<i64> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
    assert_eq!(
        lines,
        (2..=2501).collect::<Vec<i64>>(),
        "by line, each once"
    );

    // JSON stays the default, and the JSON pages are unchanged.
    let page: Value = app
        .get(&format!("/v1/jobs/{id}/items?limit=10"), READER_KEY)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 10);
    let bad = app
        .client
        .get(format!("{}/v1/jobs/{id}/items?outcome=lost", app.address))
        .bearer_auth(READER_KEY)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400, "a bad filter is refused before any CSV");
}

#[tokio::test]
async fn a_dry_run_in_the_query_or_the_body_is_a_dry_run() {
    let app = spawn_app().await;
    app.seed(&[("Q1", &[])]).await;
    let rows =
        json!([{"external_id": "Q1", "role_template": "Agent", "license_tier": "Standard Agent"}]);
    for (query, body) in [
        (
            "?dry_run=true",
            json!({"dry_run": false, "assignments": rows}),
        ),
        (
            "?dry_run=false",
            json!({"dry_run": true, "assignments": rows}),
        ),
        ("?dry_run=true", json!({"assignments": rows})),
        ("?dry_run=true", rows.clone()),
    ] {
        let resp = app
            .submit("application/json", query, body.to_string())
            .await;
        assert_eq!(resp.status(), 202, "{query} {body}");
        let job: Value = resp.json().await.unwrap();
        assert_eq!(job["dry_run"], true, "{query} {body}");
        app.wait_finished(job["job_id"].as_str().unwrap()).await;
    }
    assert_eq!(patches(&app.emulator_stats().await), 0);

    // Two different modes are refused, naming both; the same mode twice is fine.
    let resp = app
        .submit(
            "application/json",
            "?mode=replace",
            json!({"mode": "merge", "assignments": rows}).to_string(),
        )
        .await;
    assert_eq!(resp.status(), 400);
    let problem: Value = resp.json().await.unwrap();
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(fields, ["query.mode", "body.mode"], "{problem}");
    let resp = app
        .submit(
            "application/json",
            "?mode=replace&dry_run=true",
            json!({"mode": "replace", "assignments": rows}).to_string(),
        )
        .await;
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.json::<Value>().await.unwrap()["mode"], "replace");
}

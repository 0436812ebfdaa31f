//! Effective dates (issue 29 item 4): a row dated later (`effective_at`) is held `scheduled`
//! and applied at its time by whichever replica holds the job then, exactly once; a leaver
//! dated the end of a last day is revoked then; a malformed date is that row's rejection at
//! submission.

use crate::helpers::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant, SystemTime};
use time::format_description::well_known::Rfc3339;

/// `secs` from now, as RFC 3339.
fn in_secs(secs: u64) -> (String, SystemTime) {
    let at = SystemTime::now() + Duration::from_secs(secs);
    let text = time::OffsetDateTime::from(at).format(&Rfc3339).unwrap();
    (text, at)
}

/// Every row of job `id`, read from the rolesync at `address`.
async fn items_at(app: &TestApp, address: &str, id: &str) -> Vec<Value> {
    let v: Value = app
        .client
        .get(format!("{address}/v1/jobs/{id}/items?limit=1000"))
        .bearer_auth(READER_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["items"].as_array().cloned().unwrap_or_default()
}

fn outcome_of(items: &[Value], external_id: &str) -> String {
    items
        .iter()
        .find(|i| i["external_id"] == external_id)
        .and_then(|i| i["outcome"].as_str())
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn a_dated_row_is_held_scheduled_and_applied_at_its_time_once_by_another_replica() {
    let mut app = spawn_app().await;
    app.seed(&[("EFF-HIRE", &[]), ("EFF-LEAVER", &["Employee", "Agent"])])
        .await;
    // An org large enough that one leaver stays under the approval bound (20 %).
    seed_n(&app, "EFF-OTHER", 10).await;
    // The horizon: 90 s ahead, long enough to stop one replica and start another before
    // the time comes, whatever else the machine is doing.
    let (at, at_time) = in_secs(90);
    let job = app
        .submit_json(json!({"assignments": [
            {"external_id": "EFF-HIRE", "role_template": "Agent", "license_tier": "Standard Agent", "effective_at": at},
            {"external_id": "EFF-LEAVER", "action": "revoke", "effective_at": at},
            {"external_id": "EFF-TYPO", "role_template": "Agent", "license_tier": "Standard Agent", "effective_at": "2026-13-45T25:00:00Z"},
        ]}))
        .await;
    let id = job["job_id"].as_str().unwrap().to_owned();

    // Held and shown so; the typo is rejected now, naming the field.
    let deadline = Instant::now() + Duration::from_secs(30);
    let items = loop {
        let items = items_at(&app, &app.address, &id).await;
        if outcome_of(&items, "EFF-HIRE") == "scheduled"
            && outcome_of(&items, "EFF-LEAVER") == "scheduled"
            && outcome_of(&items, "EFF-TYPO") == "rejected"
        {
            break items;
        }
        assert!(Instant::now() < deadline, "never scheduled: {items:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let typo = items
        .iter()
        .find(|i| i["external_id"] == "EFF-TYPO")
        .unwrap();
    assert_eq!(typo["reason"]["code"], "malformed_row", "{typo}");
    assert!(
        typo["reason"]["message"]
            .as_str()
            .unwrap()
            .contains("effective_at"),
        "{typo}"
    );
    let hire = items
        .iter()
        .find(|i| i["external_id"] == "EFF-HIRE")
        .unwrap();
    assert!(hire["effective_at"].is_string(), "{hire}");
    // Planned and running: its chunk is held, not done.
    let view = app.wait_for(&id, &["running"]).await;
    assert_eq!(view["counts"]["scheduled"], 2, "{view}");
    let list: Value = app.get("/v1/jobs", READER_KEY).await.json().await.unwrap();
    let listed = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job_id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} not listed: {list}"));
    assert_eq!(listed["counts"]["scheduled"], 2, "{listed}");
    assert_eq!(
        patches(&app.emulator_stats().await),
        0,
        "written before its time"
    );

    // Another replica takes over; the first stops before the time comes.
    let replica = app.replica().await;
    app.stop_service().await;
    assert!(
        SystemTime::now() < at_time,
        "the test was too slow to stop before the time"
    );
    assert_eq!(
        patches(&app.emulator_stats().await),
        0,
        "written before its time"
    );

    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let items = items_at(&app, &replica.address, &id).await;
        let (h, l) = (
            outcome_of(&items, "EFF-HIRE"),
            outcome_of(&items, "EFF-LEAVER"),
        );
        if h == "applied" && l == "applied" {
            break;
        }
        if h == "applied" || l == "applied" || patches(&app.emulator_stats().await) > 0 {
            assert!(
                SystemTime::now() >= at_time,
                "applied before its time: {items:?}"
            );
        }
        assert!(Instant::now() < deadline, "never applied: {items:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(SystemTime::now() >= at_time);
    // Exactly once: one write per user.
    assert_eq!(patches(&app.emulator_stats().await), 2);
    assert_eq!(
        app.roles_of("EFF-HIRE").await,
        vec![vec!["Agent".to_owned(), "Employee".to_owned()]]
    );
    assert_eq!(
        app.roles_of("EFF-LEAVER").await,
        vec![vec!["Employee".to_owned()]]
    );
    replica.stop().await;
}

#[tokio::test]
async fn scheduled_rows_are_cancelled_with_their_job_and_never_written() {
    let app = spawn_app().await;
    app.seed(&[("EFF-LATER", &[])]).await;
    let (at, _) = in_secs(600);
    let job = app
        .submit_json(json!({"assignments": [
            {"external_id": "EFF-LATER", "role_template": "Agent", "license_tier": "Standard Agent", "effective_at": at},
        ]}))
        .await;
    let id = job["job_id"].as_str().unwrap().to_owned();
    app.wait_for(&id, &["running"]).await;
    assert_eq!(outcome_of(&app.items(&id).await, "EFF-LATER"), "scheduled");
    let resp = app.post(&format!("/v1/jobs/{id}/cancel"), WRITER_KEY).await;
    assert!(resp.status().is_success(), "{:?}", resp.text().await);
    let done = app.wait_finished(&id).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    assert_eq!(done["counts"]["cancelled"], 1, "{done}");
    assert_eq!(done["counts"]["scheduled"], 0, "{done}");
    assert_eq!(outcome_of(&app.items(&id).await, "EFF-LATER"), "cancelled");
    assert_eq!(patches(&app.emulator_stats().await), 0);
}

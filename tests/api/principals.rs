//! Who did what: a job records who submitted, approved and cancelled it (`submitted_by`,
//! `approved_by`, `cancelled_by`) and its API answer and the console's pages show them; its
//! audit events carry the submitter as `actor`.

use crate::console::{field, html, signed_in};
use crate::helpers::*;
use serde_json::{Value, json};

const WEBHOOK: &str = "[[webhooks.endpoints]]\nname = \"audit\"\nurl = \"http://127.0.0.1:9/hook\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n";

async fn submit_as(app: &TestApp, key: &str, csv: &str) -> String {
    let resp = app
        .client
        .post(format!("{}/v1/jobs", app.address))
        .bearer_auth(key)
        .header("content-type", "text/csv")
        .body(csv.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "{:?}", resp.text().await);
    resp.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn every_act_on_a_job_names_its_principal_in_the_job_its_events_and_the_console() {
    let app = spawn_app_with(TestOptions {
        config: WEBHOOK.into(),
        ..TestOptions::default()
    })
    .await;
    app.seed(&[("W1", &[]), ("P1", &[])]).await;

    // Submitted by the writer key, run to the end.
    let id = submit_as(
        &app,
        WRITER_KEY,
        "external_id,role_template,license_tier\nW1,Agent,Standard Agent\nW2,Nope,Standard Agent\n",
    )
    .await;
    let done = app.wait_finished(&id).await;
    assert_eq!(
        done["submitted_by"],
        json!({"kind": "api_key", "name": "writer"})
    );
    assert_eq!(done["approved_by"], Value::Null);
    assert_eq!(done["cancelled_by"], Value::Null);
    // Its events carry the submitter as `actor`: the role change, the rejected row, the end.
    for event in ["role_sync.completed", "role_sync.rejected", "job.finished"] {
        let n = app
            .store_count(&format!(
                "SELECT CAST(COUNT(*) AS BIGINT) FROM webhook_outbox WHERE event_type = '{event}' \
                 AND payload LIKE '%\"actor\":{{\"kind\":\"api_key\",\"name\":\"writer\"}}%'"
            ))
            .await;
        assert!(n >= 1, "{event} carries the actor");
    }

    // Held for approval (a privileged role, a key without roles:privileged), approved by the
    // admin key.
    let held = submit_as(
        &app,
        PLAIN_WRITER_KEY,
        "external_id,role_template,license_tier\nP1,System Administrator,Administrator\n",
    )
    .await;
    app.wait_for(&held, &["awaiting_approval"]).await;
    let resp = app
        .post(&format!("/v1/jobs/{held}/approve"), ADMIN_KEY)
        .await;
    assert_eq!(resp.status(), 200);
    let approved: Value = resp.json().await.unwrap();
    assert_eq!(
        approved["approved_by"],
        json!({"kind": "api_key", "name": "admin"})
    );
    assert_eq!(
        approved["submitted_by"],
        json!({"kind": "api_key", "name": "plain-writer"})
    );
    let finished = app.wait_finished(&held).await;
    assert_eq!(finished["approved_by"]["name"], "admin");
    let n = app
        .store_count(&format!(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM webhook_outbox WHERE event_type = 'job.finished' \
             AND payload LIKE '%{held}%' AND payload LIKE '%\"approved_by\":{{\"kind\":\"api_key\",\"name\":\"admin\"}}%'"
        ))
        .await;
    assert_eq!(n, 1, "job.finished names who approved it");

    // Held again, cancelled by the admin key.
    let cancelled = submit_as(
        &app,
        PLAIN_WRITER_KEY,
        "external_id,role_template,license_tier\nP1,System Administrator,Administrator\n",
    )
    .await;
    app.wait_for(&cancelled, &["awaiting_approval"]).await;
    let resp = app
        .post(&format!("/v1/jobs/{cancelled}/cancel"), ADMIN_KEY)
        .await;
    assert_eq!(resp.status(), 200);
    let job: Value = resp.json().await.unwrap();
    assert_eq!(
        job["cancelled_by"],
        json!({"kind": "api_key", "name": "admin"})
    );
    assert_eq!(app.job(&cancelled).await["cancelled_by"]["name"], "admin");

    // The console shows them.
    let cookie = signed_in(&app, READER_KEY).await;
    let page = html(&app, &cookie, &format!("/ui/jobs/{cancelled}")).await;
    assert_eq!(field(&page, "submitted_by"), "api_key:plain-writer");
    assert_eq!(field(&page, "cancelled_by"), "api_key:admin");
    assert_eq!(field(&page, "approved_by"), "—");
    let page = html(&app, &cookie, &format!("/ui/jobs/{held}")).await;
    assert_eq!(field(&page, "approved_by"), "api_key:admin");
    let list = html(&app, &cookie, "/ui/jobs").await;
    assert!(list.contains("api_key:writer"), "{list}");
}

#[tokio::test]
async fn a_revert_and_a_reconcile_name_who_asked_for_them() {
    let app = spawn_app().await;
    app.seed(&[("R1", &[])]).await;
    let id = submit_as(
        &app,
        WRITER_KEY,
        "external_id,role_template,license_tier\nR1,Agent,Standard Agent\n",
    )
    .await;
    app.wait_finished(&id).await;
    let resp = app.post(&format!("/v1/jobs/{id}/revert"), ADMIN_KEY).await;
    assert_eq!(resp.status(), 202, "{:?}", resp.text().await);
    let revert: Value = resp.json().await.unwrap();
    assert_eq!(
        revert["submitted_by"],
        json!({"kind": "api_key", "name": "admin"})
    );
    // (The revert removes a role, so it may wait for approval: its record is what is checked.)
    let revert_id = revert["job_id"].as_str().unwrap().to_owned();
    assert_eq!(app.job(&revert_id).await["submitted_by"]["name"], "admin");
    let resp = app.post("/v1/reconcile", WRITER_KEY).await;
    assert_eq!(resp.status(), 202, "{:?}", resp.text().await);
    let reconcile: Value = resp.json().await.unwrap();
    assert_eq!(reconcile["submitted_by"]["name"], "writer");
}

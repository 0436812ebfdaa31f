//! The policy against the org, before any write: rows whose roles (after the policy's
//! expansion) include a role the org lacks are rejected at planning, `unknown_target_role`,
//! with no call per user; the org's catalog is read once. Counted on `/emulator/stats`.

use crate::doctor::catalog_without;
use crate::helpers::*;
use genesys_cloud_emulator::EmulatorArgs;
use serde_json::Value;

/// Calls the emulator counted for `method route`, whatever their status.
fn calls(stats: &Value, method: &str, route: &str) -> u64 {
    stats["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["method"] == method && r["route"] == route)
        .map(|r| r["count"].as_u64().unwrap())
        .sum()
}

const ROLES: &str = "/api/v2/authorization/roles";
const USERS: &str = "/api/v2/scim/v2/users";

/// An app whose org lacks "Wrap Up", with an audit endpoint (the events stay in the outbox).
async fn spawn_without_wrap_up(dir: &std::path::Path) -> TestApp {
    spawn_app_with(TestOptions {
        emulator: EmulatorArgs {
            rate_limit_per_minute: 0,
            roles_file: Some(catalog_without(dir, "Wrap Up")),
            ..EmulatorArgs::default()
        },
        config: "[[webhooks.endpoints]]\nname = \"audit\"\nurl = \"http://127.0.0.1:9/hook\"\n\
                 secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n"
            .into(),
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn a_thousand_rows_naming_a_role_the_org_lacks_cost_no_call_per_user() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_without_wrap_up(dir.path()).await;
    let users = seed_n(&app, "W", 1000).await;
    let job = app
        .submit_csv(&csv_for(&users, "Wrap Up", "Standard Agent"))
        .await;
    let done = app.wait_finished(job["job_id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed_with_errors", "{done}");
    assert_eq!(done["counts"]["rejected"], 1000, "{done}");
    let items = app.items(job["job_id"].as_str().unwrap()).await;
    assert_eq!(items.len(), 1000);
    for i in &items {
        assert_eq!(i["outcome"], "rejected", "{i}");
        assert_eq!(i["reason"]["code"], "unknown_target_role", "{i}");
        assert!(
            i["reason"]["message"]
                .as_str()
                .unwrap()
                .contains("\"Wrap Up\""),
            "{i}"
        );
    }
    let stats = app.emulator_stats().await;
    eprintln!(
        "1000 rows with a role the org lacks: {} calls in all",
        stats["total"]
    );
    assert_eq!(patches(&stats), 0, "{stats}");
    assert_eq!(calls(&stats, "GET", USERS), 0, "no lookup either: {stats}");
    assert_eq!(calls(&stats, "GET", ROLES), 1, "{stats}");
    // One role_sync.rejected event per row.
    let events = app
        .store_count(
            "SELECT COUNT(*) FROM webhook_outbox WHERE event_type = 'role_sync.rejected' \
             AND payload LIKE '%unknown_target_role%'",
        )
        .await;
    assert_eq!(events, 1000);
}

#[tokio::test]
async fn in_a_mixed_job_only_the_rows_needing_the_missing_role_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_without_wrap_up(dir.path()).await;
    seed_n(&app, "M", 4).await;
    // M0002 asks for Wrap Up and Queue Member: only its Wrap Up row is rejected.
    let csv = "external_id,role_template,license_tier\n\
               M0000,Agent,Standard Agent\n\
               M0001,Wrap Up,Standard Agent\n\
               M0002,Wrap Up,Standard Agent\n\
               M0002,Queue Member,Standard Agent\n\
               M0003,Queue Member,Standard Agent\n";
    let job = app.submit_csv(csv).await;
    let id = job["job_id"].as_str().unwrap();
    let done = app.wait_finished(id).await;
    let outcomes: Vec<(i64, String, String)> = by_line(&app.items(id).await)
        .into_iter()
        .map(|(line, i)| {
            (
                line,
                i["outcome"].as_str().unwrap().to_owned(),
                i["reason"]["code"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            (2, "applied".into(), "".into()),
            (3, "rejected".into(), "unknown_target_role".into()),
            (4, "rejected".into(), "unknown_target_role".into()),
            (5, "applied".into(), "".into()),
            (6, "applied".into(), "".into()),
        ],
        "{done}"
    );
    let stats = app.emulator_stats().await;
    assert_eq!(patches(&stats), 3, "{stats}");
    assert_eq!(
        app.roles_of("M0001").await,
        vec![vec!["Employee".to_owned()]]
    );
    let mut m2 = app.roles_of("M0002").await;
    m2.iter_mut().for_each(|r| r.sort());
    assert_eq!(m2, vec![vec!["Agent", "Employee", "Queue Member"]]);

    // A second job within ten minutes reads no catalog again.
    let again = app
        .submit_csv("external_id,role_template,license_tier\nM0001,Wrap Up,Standard Agent\n")
        .await;
    let again = app.wait_finished(again["job_id"].as_str().unwrap()).await;
    assert_eq!(again["counts"]["rejected"], 1, "{again}");
    assert_eq!(calls(&app.emulator_stats().await, "GET", ROLES), 1);
}

#[tokio::test]
async fn an_unreadable_catalog_rejects_nothing_and_the_job_goes_on_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_without_wrap_up(dir.path()).await;
    seed_n(&app, "U", 2).await;
    app.set_faults(serde_json::json!({"missing_permissions": ["authorization:role:view"]}))
        .await;
    let csv = "external_id,role_template,license_tier\n\
               U0000,Agent,Standard Agent\n\
               U0001,Wrap Up,Standard Agent\n";
    let job = app.submit_csv(csv).await;
    let id = job["job_id"].as_str().unwrap();
    let done = app.wait_finished(id).await;
    let items = by_line(&app.items(id).await);
    assert_eq!(items[&2]["outcome"], "applied", "{done}");
    // Found the old way: the target refused the user's write.
    assert_eq!(items[&3]["outcome"], "failed", "{}", items[&3]);
    assert_ne!(items[&3]["reason"]["code"], "unknown_target_role");
    let stats = app.emulator_stats().await;
    assert_eq!(calls(&stats, "GET", ROLES), 1, "{stats}");
}

//! The policy at work: dry runs, approvals, hot reload, the policy endpoints, catalog import.

use crate::helpers::*;
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test]
async fn a_dry_run_plans_every_row_and_writes_nothing() {
    let app = spawn_app().await;
    app.seed(&[
        ("D1", &["Agent"]),
        ("D2", &["Supervisor", "Agent", "Reporting"]),
    ])
    .await;
    let resp = app
        .submit(
            "text/csv",
            "?dry_run=true&mode=replace",
            "external_id,role_template,license_tier\nD1,Supervisor,Supervisor\nD2,Queue Member,Standard Agent\n",
        )
        .await;
    assert_eq!(resp.status(), 202);
    let job: Value = resp.json().await.unwrap();
    assert_eq!(job["dry_run"], true);
    let id = job["job_id"].as_str().unwrap();
    let done = app.wait_finished(id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["counts"]["planned"], 2);
    assert_eq!(done["estimate"]["writes_max"], 0);
    let items = by_line(&app.items(id).await);
    assert_eq!(items[&2]["outcome"], "planned");
    assert_eq!(
        strs(&items[&2]["roles_added"]),
        vec!["Reporting", "Supervisor"]
    );
    assert!(strs(&items[&2]["permissions_added"]).contains(&"analytics:*:view".to_owned()));
    assert_eq!(
        strs(&items[&3]["roles_removed"]),
        vec!["Reporting", "Supervisor"]
    );
    assert_eq!(strs(&items[&3]["roles_added"]), vec!["Queue Member"]);
    assert!(
        strs(&items[&3]["permissions_removed"]).contains(&"quality:evaluation:view".to_owned())
    );
    assert_eq!(app.roles_of("D1").await, vec![vec!["Agent", "Employee"]]);
    assert_eq!(patches(&app.emulator_stats().await), 0);
}

fn strict_approval_policy() -> String {
    include_str!("../../config/policy.toml")
        .replace("max_removed_users = 500", "max_removed_users = 2")
        .replace("max_removal_fraction = 0.2", "max_removal_fraction = 1.0")
}

#[tokio::test]
async fn a_replace_job_removing_too_much_waits_for_approval() {
    let app = spawn_app_with(TestOptions {
        policy: strict_approval_policy(),
        ..Default::default()
    })
    .await;
    let seeds: Vec<(String, &[&str])> = (0..5)
        .map(|i| (format!("H{i}"), &["Agent", "Wrap Up"][..]))
        .collect();
    let seeds: Vec<(&str, &[&str])> = seeds.iter().map(|(u, r)| (u.as_str(), *r)).collect();
    app.seed(&seeds).await;
    let csv = "external_id,role_template,license_tier\nH0,Agent,Standard Agent\nH1,Agent,Standard Agent\nH2,Agent,Standard Agent\nH3,Agent,Standard Agent\nH4,Agent,Standard Agent\n";
    let resp = app.submit("text/csv", "?mode=replace", csv).await;
    let id = resp.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let held = app.wait_for(&id, &["awaiting_approval"]).await;
    assert_eq!(held["approval"]["required"], true);
    assert_eq!(held["approval"]["users_losing_roles"], 5);
    assert_eq!(held["approval"]["threshold_users"], 2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        patches(&app.emulator_stats().await),
        0,
        "nothing written before approval"
    );
    assert_eq!(
        app.post(&format!("/v1/jobs/{id}/approve"), WRITER_KEY)
            .await
            .status(),
        403
    );
    assert_eq!(
        app.post(&format!("/v1/jobs/{id}/approve"), ADMIN_KEY)
            .await
            .status(),
        200
    );
    let done = app.wait_finished(&id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(app.roles_of("H3").await, vec![vec!["Agent", "Employee"]]);
}

#[tokio::test]
async fn cancelling_a_held_job_discards_it() {
    let app = spawn_app_with(TestOptions {
        policy: strict_approval_policy(),
        ..Default::default()
    })
    .await;
    app.seed(&[
        ("J0", &["Wrap Up"]),
        ("J1", &["Wrap Up"]),
        ("J2", &["Wrap Up"]),
    ])
    .await;
    let csv = "external_id,role_template,license_tier\nJ0,Agent,Standard Agent\nJ1,Agent,Standard Agent\nJ2,Agent,Standard Agent\n";
    let resp = app.submit("text/csv", "?mode=replace", csv).await;
    let id = resp.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.wait_for(&id, &["awaiting_approval"]).await;
    assert_eq!(
        app.post(&format!("/v1/jobs/{id}/cancel"), WRITER_KEY)
            .await
            .status(),
        200
    );
    let done = app.wait_finished(&id).await;
    assert_eq!(done["status"], "cancelled");
    assert_eq!(done["counts"]["cancelled"], 3);
    assert_eq!(app.roles_of("J1").await, vec![vec!["Employee", "Wrap Up"]]);
    assert_eq!(patches(&app.emulator_stats().await), 0);
}

#[tokio::test]
async fn a_small_replace_job_needs_no_read_ahead() {
    let app = spawn_app().await;
    // An org of 10: a bound of 20 % is 2 users, so a 1-user job cannot exceed it.
    app.seed(&[
        ("N0", &["Wrap Up"]),
        ("N1", &[]),
        ("N2", &[]),
        ("N3", &[]),
        ("N4", &[]),
    ])
    .await;
    app.seed(&[
        ("N5", &[]),
        ("N6", &[]),
        ("N7", &[]),
        ("N8", &[]),
        ("N9", &[]),
    ])
    .await;
    let resp = app
        .submit(
            "text/csv",
            "?mode=replace",
            "external_id,role_template,license_tier\nN0,Agent,Standard Agent\n",
        )
        .await;
    let id = resp.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = app.wait_finished(&id).await;
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["approval"]["required"], false);
    // count=0 for the org size, one lookup, one PATCH.
    assert_eq!(done["scim"]["requests"], 3, "{done}");
}

#[tokio::test]
async fn the_policy_endpoints_show_inheritance_and_permissions() {
    let app = spawn_app().await;
    let policy: Value = app
        .get("/v1/policy", READER_KEY)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(policy["tiers"].as_array().unwrap().len(), 4);
    assert!(policy["fingerprint"].as_str().unwrap().len() == 64);
    let role: Value = app
        .get("/v1/policy/roles/Supervisor", READER_KEY)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(strs(&role["ancestors"]), vec!["Agent", "Reporting"]);
    assert!(strs(&role["effective_permissions"]).contains(&"conversation:call:accept".to_owned()));
    assert_eq!(
        app.get("/v1/policy/roles/Nobody", READER_KEY)
            .await
            .status(),
        404
    );
    assert_eq!(
        app.client
            .get(format!("{}/v1/policy", app.address))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

#[tokio::test]
async fn validate_reports_row_errors_without_a_job_or_a_call() {
    let app = spawn_app().await;
    let resp = app
        .client
        .post(format!("{}/v1/validate", app.address))
        .bearer_auth(WRITER_KEY)
        .header("content-type", "application/x-ndjson")
        .body("{\"external_id\":\"V1\",\"role_template\":\"Agent\",\"license_tier\":\"Standard Agent\"}\n{\"external_id\":\"V2\",\"role_template\":\"Supervisor\",\"license_tier\":\"Standard Agent\"}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let report: Value = resp.json().await.unwrap();
    assert_eq!(report["valid"], false);
    assert_eq!(report["errors"][0]["line"], 2);
    assert_eq!(report["errors"][0]["reason"]["code"], "role_not_entitled");
    let list: Value = app.get("/v1/jobs", READER_KEY).await.json().await.unwrap();
    assert!(list["jobs"].as_array().unwrap().is_empty());
    assert_eq!(app.emulator_stats().await["total"], 0);
}

#[tokio::test]
async fn an_invalid_policy_file_is_refused_and_a_valid_one_taken() {
    let app = spawn_app_with(TestOptions {
        policy_file: true,
        ..Default::default()
    })
    .await;
    let path = app.policy_path.clone().unwrap();
    let original = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        original.replace(
            "inherits = [\"Agent\", \"Reporting\"]",
            "inherits = [\"Agent\", \"Nobody\"]",
        ),
    )
    .unwrap();
    let mut ready = Value::Null;
    for _ in 0..100 {
        ready = app
            .client
            .get(format!("{}/readyz", app.address))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if ready["checks"]["policy"]["status"] == "reload_failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        ready["checks"]["policy"]["status"], "reload_failed",
        "{ready}"
    );
    assert!(
        ready["checks"]["policy"]["error"]
            .as_str()
            .unwrap()
            .contains("Nobody")
    );
    let metrics = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("rolesync_policy_valid 0"));
    // The old policy is still in force.
    let role: Value = app
        .get("/v1/policy/roles/Supervisor", READER_KEY)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(strs(&role["ancestors"]), vec!["Agent", "Reporting"]);

    let extended = original.replace(
        "[[sod]]",
        "[[roles]]\nname = \"Night Shift\"\ninherits = [\"Agent\"]\npermissions = [\"routing:queue:join\"]\n\n[[sod]]",
    );
    std::fs::write(&path, extended).unwrap();
    let mut found = false;
    for _ in 0..100 {
        if app
            .get("/v1/policy/roles/Night%20Shift", READER_KEY)
            .await
            .status()
            == 200
        {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(found, "the valid policy was not loaded");
    let ready: Value = app
        .client
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["policy"]["status"], "ok");
}

#[tokio::test]
async fn the_role_catalog_is_imported_from_the_target_and_gaps_reported() {
    let policy = include_str!("../../config/policy.toml").replace(
        "[[sod]]",
        "[[roles]]\nname = \"Night Shift\"\ninherits = [\"Agent\"]\npermissions = [\"routing:queue:join\"]\n\n[[sod]]",
    );
    let app = spawn_app_with(TestOptions {
        policy,
        config: "[policy]\nimport_from_target = true\n".into(),
        ..Default::default()
    })
    .await;
    let summary: Value = app
        .get("/v1/policy", READER_KEY)
        .await
        .json()
        .await
        .unwrap();
    let notes = summary["import"]["notes"].as_array().unwrap();
    assert!(
        notes
            .iter()
            .any(|n| n.as_str().unwrap().contains("Night Shift")),
        "{summary}"
    );
    let stats = app.emulator_stats().await;
    assert!(
        stats["requests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["route"] == "/api/v2/authorization/roles"),
        "{stats}"
    );
    let _ = json!(null);
}

/// The emulator's built-in role catalog is the Genesys org rolesync's default policy describes:
/// `Employee` plus every `[[roles]]`, with the same permissions.
#[test]
fn the_emulators_default_catalog_matches_the_default_policy() {
    #[derive(serde::Deserialize)]
    struct Role {
        name: String,
        #[serde(default)]
        permissions: Vec<String>,
    }
    #[derive(serde::Deserialize)]
    struct PolicyFile {
        roles: Vec<Role>,
    }
    let policy: PolicyFile = toml::from_str(include_str!("../../config/policy.toml")).unwrap();
    let catalog: Vec<Role> =
        serde_json::from_str(genesys_cloud_emulator::DEFAULT_ROLES_JSON).unwrap();
    let mut expected: Vec<String> = policy.roles.iter().map(|r| r.name.clone()).collect();
    expected.push("Employee".into());
    expected.sort();
    let mut served: Vec<String> = catalog.iter().map(|r| r.name.clone()).collect();
    served.sort();
    assert_eq!(served, expected);
    for role in &policy.roles {
        let c = catalog.iter().find(|c| c.name == role.name).unwrap();
        assert_eq!(c.permissions, role.permissions, "{}", role.name);
    }
}

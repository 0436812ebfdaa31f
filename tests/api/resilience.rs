//! Faults injected at the emulator: the sync rides them out.

use crate::helpers::*;
use rolesync::emulator::EmulatorArgs;
use serde_json::json;

fn csv_for(users: &[String], role: &str, tier: &str) -> String {
    std::iter::once("external_id,role_template,license_tier".to_owned())
        .chain(users.iter().map(|u| format!("{u},{role},{tier}")))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn seed_n(app: &TestApp, prefix: &str, n: usize) -> Vec<String> {
    let users: Vec<String> = (0..n).map(|i| format!("{prefix}{i:04}")).collect();
    let seeds: Vec<(&str, &[&str])> = users.iter().map(|u| (u.as_str(), &[][..])).collect();
    app.seed(&seeds).await;
    users
}

#[tokio::test]
async fn errors_and_rate_limits_never_leave_a_user_wrong_or_a_row_failed() {
    let app = spawn_app_with(TestOptions {
        emulator: EmulatorArgs {
            rate_limit_per_minute: 0,
            seed: Some(42),
            ..Default::default()
        },
        config: "[target]\nmax_attempts = 10\n".into(),
        ..Default::default()
    })
    .await;
    let users = seed_n(&app, "F", 120).await;
    app.set_faults(
        json!({"fault_5xx": 0.2, "fault_429": 0.1, "latency_ms": 5, "latency_jitter_ms": 20}),
    )
    .await;
    let job = app
        .submit_csv(&csv_for(&users, "Queue Member", "Standard Agent"))
        .await;
    let done = app.wait_finished(job["job_id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["counts"]["applied"], 120);
    assert!(
        done["scim"]["retries"].as_i64().unwrap() > 0,
        "faults were injected: {done}"
    );
    assert!(done["scim"]["rate_limited"].as_i64().unwrap() > 0, "{done}");
    app.set_faults(
        json!({"fault_5xx": 0.0, "fault_429": 0.0, "latency_ms": 0, "latency_jitter_ms": 0}),
    )
    .await;
    for u in &users {
        assert_eq!(
            app.roles_of(u).await,
            vec![vec!["Agent", "Employee", "Queue Member"]],
            "{u}"
        );
    }
}

#[tokio::test]
async fn an_outage_pauses_the_job_and_it_resumes_by_itself() {
    let app = spawn_app_with(TestOptions {
        emulator: EmulatorArgs {
            rate_limit_per_minute: 0,
            ..Default::default()
        },
        config: "[target]\nmax_attempts = 2\nmax_retry_secs = 1\n".into(),
        ..Default::default()
    })
    .await;
    let users = seed_n(&app, "O", 30).await;
    app.set_faults(json!({"outage_secs": 4})).await;
    let job = app
        .submit_csv(&csv_for(&users, "Agent", "Standard Agent"))
        .await;
    let id = job["job_id"].as_str().unwrap();
    let paused = app.wait_for(id, &["paused"]).await;
    assert_eq!(paused["paused_reason"], "target_unavailable");
    let done = app.wait_finished(id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["counts"]["failed"], 0);
    assert_eq!(done["paused_reason"], serde_json::Value::Null);
    for u in &users {
        assert_eq!(app.roles_of(u).await, vec![vec!["Agent", "Employee"]]);
    }
}

#[tokio::test]
async fn refused_credentials_fail_the_job_once_with_the_reason() {
    let app = spawn_app_with(TestOptions {
        config: "[target]\nclient_secret = \"wrong\"\n".into(),
        ..Default::default()
    })
    .await;
    let users = seed_n(&app, "K", 25).await;
    let job = app
        .submit_csv(&csv_for(&users, "Agent", "Standard Agent"))
        .await;
    let done = app.wait_finished(job["job_id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "failed");
    assert!(
        done["error"].as_str().unwrap().contains("auth_failed"),
        "{done}"
    );
    assert_eq!(done["counts"]["failed"], 25);
    // No SCIM call was spent: the token endpoint refused us first.
    let stats = app.emulator_stats().await;
    let scim: u64 = stats["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["route"].as_str().unwrap_or("").contains("/scim/"))
        .map(|r| r["count"].as_u64().unwrap())
        .sum();
    assert_eq!(scim, 0, "{stats}");
}

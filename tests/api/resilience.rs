//! Faults injected at the emulator: the sync rides them out.

use crate::helpers::*;
use genesys_cloud_emulator::EmulatorArgs;
use serde_json::json;

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

/// Settings for the `error_ratio` tests: a chunk is exactly one window, so the first chunk
/// decides, and the cool-down is short.
const ERROR_RATIO: &str = "[sync]\nchunk_size = 20\nerror_ratio_window = 20\n\
    error_ratio_cooldown_secs = 1\nerror_ratio_cooldown_max_secs = 2\n";

#[tokio::test]
async fn a_target_refusing_most_writes_pauses_the_job_with_error_ratio_until_it_stops() {
    let app = spawn_app_with(TestOptions {
        config: ERROR_RATIO.into(),
        ..Default::default()
    })
    .await;
    let users = seed_n(&app, "E", 60).await;
    app.set_faults(json!({"reject_patch": 1.0})).await;
    let job = app
        .submit_csv(&csv_for(&users, "Agent", "Standard Agent"))
        .await;
    let id = job["job_id"].as_str().unwrap();
    let paused = app.wait_for(id, &["paused"]).await;
    assert_eq!(paused["paused_reason"], "error_ratio", "{paused}");
    // The chunk that tripped it was given back: its rows are pending, not failed.
    assert_eq!(paused["counts"]["failed"], 0, "{paused}");
    assert_eq!(paused["counts"]["pending"], 60, "{paused}");
    app.set_faults(json!({"reject_patch": 0.0})).await;
    // Resumed by the cool-down (the target answered all along: a probe proves nothing here).
    let done = app.wait_finished(id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["counts"]["applied"], 60, "{done}");
    assert_eq!(done["counts"]["failed"], 0, "{done}");
    assert_eq!(done["paused_reason"], serde_json::Value::Null);
    for u in &users {
        assert_eq!(
            app.roles_of(u).await,
            vec![vec!["Agent", "Employee"]],
            "{u}"
        );
    }
    let stats = app.emulator_stats().await;
    let refused: u64 = stats["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["method"] == "PATCH" && r["status"] == 400)
        .map(|r| r["count"].as_u64().unwrap())
        .sum();
    // At least the window that tripped it, and no more than one attempt per user: the chunks
    // running when it tripped stop, no other is claimed while paused.
    assert!((20..=60).contains(&refused), "{refused} PATCHes refused");
}

#[tokio::test]
async fn error_ratio_pauses_are_bounded_then_the_failures_are_committed() {
    let app = spawn_app_with(TestOptions {
        config: format!("{ERROR_RATIO}error_ratio_max_pauses = 2\n"),
        ..Default::default()
    })
    .await;
    let users = seed_n(&app, "B", 40).await;
    app.set_faults(json!({"reject_patch": 1.0})).await;
    let job = app
        .submit_csv(&csv_for(&users, "Agent", "Standard Agent"))
        .await;
    let id = job["job_id"].as_str().unwrap();
    let paused = app.wait_for(id, &["paused"]).await;
    assert_eq!(paused["paused_reason"], "error_ratio", "{paused}");
    // Two pauses (1 s, then 2 s), then the third run commits what the target said.
    let done = app.wait_finished(id).await;
    assert_eq!(done["status"], "completed_with_errors", "{done}");
    assert_eq!(done["counts"]["failed"], 40, "{done}");
    let items = app.items(id).await;
    for item in &items {
        assert_eq!(item["reason"]["code"], "scim_rejected", "{item}");
        let message = item["reason"]["message"].as_str().unwrap();
        assert!(
            message.contains("reject_patch"),
            "the target's detail: {message}"
        );
    }
    let stats = app.emulator_stats().await;
    let refused: u64 = stats["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["method"] == "PATCH" && r["status"] == 400)
        .map(|r| r["count"].as_u64().unwrap())
        .sum();
    // Three runs of the job at most: two that paused, the one that committed.
    assert!(
        (40..=3 * 40).contains(&refused),
        "{refused} PATCHes refused"
    );
    for u in users.iter().take(3) {
        assert_eq!(app.roles_of(u).await, vec![vec!["Employee"]]);
    }
}

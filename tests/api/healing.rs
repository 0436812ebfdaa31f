//! Self-healing: what rolesync does off its designed paths — numbers from the target beyond
//! reason, users that always fail, cancels mid-write, leases, store outages.

use crate::helpers::*;
use genesys_cloud_emulator::EmulatorArgs;
use serde_json::json;
use std::time::{Duration, Instant};

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

/// `inin-ratelimit-reset: 18446744073709551615` with a spent window, a 429 asking for
/// 99999999999 s, and a token whose `expires_in` is u64::MAX: the job still finishes, each
/// wait clamped to `target.max_server_delay_secs`.
#[tokio::test]
async fn numbers_from_the_target_are_clamped_and_the_job_finishes() {
    let app = spawn_app_with(TestOptions {
        emulator: EmulatorArgs {
            rate_limit_per_minute: 0,
            ..Default::default()
        },
        config: "[target]\nmax_server_delay_secs = 2\nmax_concurrency = 2\n".into(),
        ..Default::default()
    })
    .await;
    let users = seed_n(&app, "N", 20).await;
    app.set_faults(json!({
        "token_expires_in": 18446744073709551615u64,
        "override_headers": {"count": 3, "headers": {
            "inin-ratelimit-allowed": "300",
            "inin-ratelimit-count": "300",
            "inin-ratelimit-reset": "18446744073709551615",
        }},
    }))
    .await;
    let started = Instant::now();
    let job = app
        .submit_csv(&csv_for(&users, "Agent", "Standard Agent"))
        .await;
    let id = job["job_id"].as_str().unwrap().to_owned();
    let done = app.wait_finished(&id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["counts"]["applied"], 20, "{done}");
    // The spent window was honoured (at least one clamped hold), but not for ever.
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // A 429 asking for 99999999999 s: waits the cap, then the call goes through.
    let more = seed_n(&app, "M", 5).await;
    app.set_faults(json!({"override_headers": {"count": 2, "status": 429,
        "headers": {"retry-after": "99999999999"}}}))
        .await;
    let job = app
        .submit_csv(&csv_for(&more, "Agent", "Standard Agent"))
        .await;
    let done = app.wait_finished(job["job_id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(
        done["scim"]["rate_limited"].as_i64().unwrap() >= 2,
        "{done}"
    );
    for u in users.iter().chain(&more) {
        assert_eq!(
            app.roles_of(u).await,
            vec![vec!["Agent", "Employee"]],
            "{u}"
        );
    }
}

/// PATCHes answering 503 (`status`) in the emulator's stats.
async fn patches_with_status(app: &TestApp, status: u64) -> u64 {
    let stats = app.emulator_stats().await;
    stats["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["method"] == "PATCH" && r["status"] == status)
        .map(|r| r["count"].as_u64().unwrap())
        .sum()
}

/// One user whose every PATCH answers 503: that user ends `failed` with `retries_exhausted`
/// after `sync.max_user_attempts` chunk runs, its job finishes `completed_with_errors`, nobody
/// else is held up, the job is never paused, and the user's calls stay within
/// `max_user_attempts × target.max_attempts` PATCHes.
#[tokio::test]
async fn a_user_that_always_fails_fails_alone_within_a_bounded_number_of_calls() {
    let app = spawn_app_with(TestOptions {
        emulator: EmulatorArgs {
            rate_limit_per_minute: 0,
            ..Default::default()
        },
        config: "[target]\nmax_attempts = 2\nmax_retry_secs = 2\n\
                 [sync]\nmax_user_attempts = 3\nchunk_size = 10\n"
            .into(),
        ..Default::default()
    })
    .await;
    let users = seed_n(&app, "U", 30).await;
    let bad = users[7].clone();
    app.set_faults(json!({"failing_users": [{"external_id": bad, "writes": true, "status": 503}]}))
        .await;
    let job = app
        .submit_csv(&csv_for(&users, "Agent", "Standard Agent"))
        .await;
    let id = job["job_id"].as_str().unwrap().to_owned();
    // Polled by hand so that a pause, however short, is seen.
    let deadline = Instant::now() + Duration::from_secs(90);
    let done = loop {
        let j = app.job(&id).await;
        assert_ne!(
            j["status"], "paused",
            "one user's failures paused the job: {j}"
        );
        if j["finished_at"].is_string() {
            break j;
        }
        assert!(Instant::now() < deadline, "job stuck: {j}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(done["status"], "completed_with_errors", "{done}");
    assert_eq!(done["counts"]["applied"], 29, "{done}");
    assert_eq!(done["counts"]["failed"], 1, "{done}");
    let items = app.items(&id).await;
    let failed: Vec<_> = items.iter().filter(|i| i["outcome"] == "failed").collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["external_id"], bad.as_str());
    assert_eq!(
        failed[0]["reason"]["code"], "retries_exhausted",
        "{}",
        failed[0]
    );
    let refused = patches_with_status(&app, 503).await;
    let stats = app.emulator_stats().await;
    eprintln!(
        "one always-failing user: {refused} refused PATCHes; the whole job: {} calls for 30 users",
        stats["total"]
    );
    assert!(
        (3..=3 * 2).contains(&refused),
        "the failing user cost {refused} PATCHes (bound: 3 runs × 2 attempts)"
    );
    for u in users.iter().filter(|u| **u != bad) {
        assert_eq!(
            app.roles_of(u).await,
            vec![vec!["Agent", "Employee"]],
            "{u}"
        );
    }
}

/// Several distinct users failing that way within the window is evidence of an outage: the
/// job pauses with `target_unavailable` instead of failing them, and resumes once they answer.
#[tokio::test]
async fn several_users_failing_together_pause_the_job_and_it_resumes() {
    let app = spawn_app_with(TestOptions {
        emulator: EmulatorArgs {
            rate_limit_per_minute: 0,
            ..Default::default()
        },
        config: "[target]\nmax_attempts = 1\nmax_retry_secs = 1\n\
                 [sync]\nmax_user_attempts = 2\noutage_min_users = 3\n"
            .into(),
        ..Default::default()
    })
    .await;
    let users = seed_n(&app, "P", 20).await;
    let failing: Vec<_> = users[..6]
        .iter()
        .map(|u| json!({"external_id": u, "writes": true, "reads": true, "status": 503}))
        .collect();
    app.set_faults(json!({"failing_users": failing})).await;
    let job = app
        .submit_csv(&csv_for(&users, "Agent", "Standard Agent"))
        .await;
    let id = job["job_id"].as_str().unwrap().to_owned();
    let paused = app.wait_for(&id, &["paused"]).await;
    assert_eq!(paused["paused_reason"], "target_unavailable", "{paused}");
    app.set_faults(json!({"failing_users": []})).await;
    let done = app.wait_finished(&id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["counts"]["applied"], 20, "{done}");
}

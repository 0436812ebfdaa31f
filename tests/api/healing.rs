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

//! Fencing (`src/pipeline/fence.rs`): a worker that lost its chunk's lease sends nothing more,
//! and the chunk's new owner records every write that reached the target as `applied`. The
//! first of the two lies the chaos soak found (`tests/chaos`), staged deterministically.

use crate::helpers::*;
use genesys_cloud_emulator::EmulatorArgs;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Replica A runs a 12-user chunk against a slow target, one call at a time. Mid-chunk, its
/// lease runs out in the store (as when a store cut kept it from renewing) and replica B claims
/// the chunk. On d92f75e, A went on writing (its intents were recorded without a look at the
/// lease) while B, which had read the rows before those intents, found A's users already right
/// and recorded them `unchanged`. Now A's next intent is refused, so A sends nothing more, and
/// every user that either replica wrote is `applied`, each written once.
#[tokio::test]
async fn a_lease_lost_mid_chunk_stops_the_old_owner_and_its_writes_are_recorded_applied() {
    let app = spawn_app_with(TestOptions {
        emulator: EmulatorArgs {
            rate_limit_per_minute: 0,
            latency_ms: 150,
            ..EmulatorArgs::default()
        },
        config:
            "[target]\nmax_concurrency = 1\n[sync]\nchunk_size = 20\nread_strategy = \"lookup\"\n"
                .into(),
        ..TestOptions::default()
    })
    .await;
    let users = seed_n(&app, "FENCE-", 12).await;
    let job = app
        .submit_csv(&csv_for(&users, "Wrap Up", "Standard Agent"))
        .await;
    let id = job["job_id"].as_str().expect("job id").to_owned();

    // A is mid-chunk once it has written two users.
    let deadline = Instant::now() + Duration::from_secs(60);
    while app.accepted_writes().await.len() < 2 {
        assert!(Instant::now() < deadline, "replica A never started writing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A's lease runs out (A is not told), and B is there to take the chunk over.
    app.store_exec("UPDATE chunks SET lease_until_ms = 0 WHERE status = 'leased'")
        .await;
    let b = app.replica().await;
    let seen: Value = app
        .client
        .get(format!("{}/v1/jobs/{id}", b.address))
        .bearer_auth(READER_KEY)
        .send()
        .await
        .expect("job from B")
        .json()
        .await
        .expect("job json");
    assert_eq!(seen["job_id"], id.as_str(), "B shares the job");

    let done = app.wait_finished(&id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let items = app.items(&id).await;
    let outcomes: Vec<(String, String)> = items
        .iter()
        .map(|i| {
            (
                i["external_id"].as_str().unwrap_or("").to_owned(),
                i["outcome"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    // Every user lacked `Wrap Up` and holds it now: this job wrote each of them.
    for (user, outcome) in &outcomes {
        assert_eq!(
            outcome, "applied",
            "user {user} of job {id} was written by this job but recorded {outcome}: {outcomes:?}"
        );
        assert_eq!(
            app.roles_of(user).await,
            [vec![
                "Agent".to_owned(),
                "Employee".to_owned(),
                "Wrap Up".to_owned()
            ]]
        );
    }
    // Each user written once, and every write names the claim it was made under: after the
    // takeover, only the new fence writes.
    let writes = app.accepted_writes().await;
    let written: BTreeSet<&str> = writes
        .iter()
        .filter_map(|w| w["external_id"].as_str())
        .collect();
    assert_eq!(writes.len(), users.len(), "one write per user: {writes:?}");
    assert_eq!(written.len(), users.len());
    let fences: BTreeSet<String> = writes.iter().map(fence_of).collect();
    assert!(
        fences.iter().all(|f| f == "1" || f == "2"),
        "writes under the first claim and the takeover only: {fences:?}"
    );
    assert!(
        fences.contains("2"),
        "the new owner wrote the users A left: {fences:?}"
    );
    // The record matches the target write for write: the roles each applied row says the
    // user holds are what the write left.
    for w in &writes {
        let user = w["external_id"].as_str().unwrap_or("");
        let row = items
            .iter()
            .find(|i| i["external_id"] == user)
            .expect("a row for every written user");
        assert_eq!(strs(&row["roles_after"]), strs(&w["roles_after"]), "{user}");
    }
    b.stop().await;
}

/// The fence of the claim a write was made under, from its correlation id `job:chunk:fence`.
fn fence_of(w: &Value) -> String {
    w["correlation_id"]
        .as_str()
        .and_then(|c| c.rsplit(':').next())
        .unwrap_or("none")
        .to_owned()
}

/// Found by the chaos test (seed 1833464250012026071): a job paused for the target stayed
/// `paused` for good when the process that paused it could not lift the pause (its resume met
/// a store cut; or it died, as here, while the target was down). Another process whose circuit
/// is closed lifts a pause that old (two leases), and the job finishes.
#[tokio::test]
async fn a_job_paused_by_a_process_that_is_gone_is_resumed_by_another() {
    let mut app = spawn_app_with(TestOptions {
        config: "[sync]\noutage_min_users = 1\n".into(),
        ..TestOptions::default()
    })
    .await;
    let users = seed_n(&app, "PAUSED-", 5).await;
    app.set_faults(serde_json::json!({"outage_secs": 600}))
        .await;
    let job = app
        .submit_csv(&csv_for(&users, "Wrap Up", "Standard Agent"))
        .await;
    let id = job["job_id"].as_str().expect("job id").to_owned();
    let paused = app.wait_for(&id, &["paused"]).await;
    assert_eq!(paused["paused_reason"], "target_unavailable", "{paused}");
    // The process that paused it goes away while the target is down; the target comes back;
    // a new process starts, whose circuit never opened.
    app.stop_service().await;
    app.set_faults(serde_json::json!({"outage_secs": 0})).await;
    app.restart().await;
    let done = app.wait_finished(&id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["counts"]["applied"], 5, "{done}");
}

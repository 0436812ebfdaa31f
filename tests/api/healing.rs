//! Self-healing: what rolesync does off its designed paths — numbers from the target beyond
//! reason, users that always fail, cancels mid-write, leases, store outages.

use crate::helpers::*;
use crate::process::*;
use axum::http::HeaderMap;
use genesys_cloud_emulator::EmulatorArgs;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod settle;

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

// ----- cancels mid-write -------------------------------------------------------------------

/// Every webhook a receiver got, de-duplicated by `webhook-id`: id → (type, data).
type Hooks = Arc<Mutex<BTreeMap<String, (String, Value)>>>;

async fn start_hooks() -> (String, Hooks) {
    let got: Hooks = Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let sink = sink.clone();
            async move {
                let id = headers
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                let kind = v["type"].as_str().unwrap_or("").to_owned();
                sink.lock().unwrap().insert(id, (kind, v["data"].clone()));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), got)
}

fn hook_toml(url: &str) -> String {
    format!(
        "[[webhooks.endpoints]]\nname = \"audit\"\nurl = \"{url}\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n"
    )
}

/// PATCHes the emulator answered, whatever the status: every write that reached it.
async fn patches_sent(emulator: &str) -> u64 {
    let stats: Value = reqwest::get(format!("{emulator}/emulator/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    stats["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["method"] == "PATCH")
        .map(|r| r["count"].as_u64().unwrap())
        .sum()
}

/// Each user's roles in the emulator, sorted, by external id.
async fn roles_by_user(emulator: &str) -> BTreeMap<String, Vec<String>> {
    let users: Value = reqwest::get(format!("{emulator}/emulator/users"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["externalId"].as_str().unwrap_or("").to_owned(),
                strs(&u["roles"]),
            )
        })
        .collect()
}

/// Watches the emulator's PATCH count every few milliseconds, from before a cancel is sent
/// until `finish`: when each write landed.
struct PatchWatch {
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<Vec<(Instant, u64)>>,
}

impl PatchWatch {
    async fn start(emulator: &str) -> PatchWatch {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, emulator) = (stop.clone(), emulator.to_owned());
        let first = patches_sent(&emulator).await;
        let task = tokio::spawn(async move {
            let mut seen = vec![(Instant::now(), first)];
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let n = patches_sent(&emulator).await;
                if seen.last().is_some_and(|(_, last)| *last != n) {
                    seen.push((Instant::now(), n));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen
        });
        PatchWatch { stop, task }
    }

    /// Once `finished` holds, watches `quiet` more, then tells: the PATCH count when the cancel
    /// answered, the count in the end, and when the last write seen landed relative to the
    /// answer (negative: before it), in milliseconds; None if none landed while watching.
    async fn finish(
        self,
        answered: Instant,
        quiet: Duration,
        mut finished: impl AsyncFnMut() -> bool,
    ) -> (u64, u64, Option<i128>) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while !finished().await {
            assert!(Instant::now() < deadline, "the job never finished");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Not a wait for anything: the window in which no write may appear.
        tokio::time::sleep(quiet).await;
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let seen = self.task.await.unwrap();
        let at_answer = seen
            .iter()
            .take_while(|(t, _)| *t <= answered)
            .last()
            .map_or(0, |(_, n)| *n);
        let (last_at, at_end) = seen[seen.len() - 1];
        let after = if last_at >= answered {
            (last_at - answered).as_millis() as i128
        } else {
            -((answered - last_at).as_millis() as i128)
        };
        (at_answer, at_end, (seen.len() > 1).then_some(after))
    }
}

fn landed(ms: Option<i128>) -> String {
    ms.map_or("(none while watching)".to_owned(), |ms| format!("{ms} ms"))
}

/// The job's record against the target, user by user: a user whose roles changed is
/// `applied` with the roles added, and its `role_sync.completed` went out; every other user is
/// `cancelled`, with no such event. `job.finished` went out once, with the job's final counts.
async fn assert_record_matches_target(
    job: &Value,
    items: &[Value],
    roles: &BTreeMap<String, Vec<String>>,
    hooks: &Hooks,
    wanted: &str,
) {
    let id = job["job_id"].as_str().unwrap();
    let c = &job["counts"];
    assert_eq!(job["status"], "cancelled", "{job}");
    assert_eq!(c["pending"], 0, "{job}");
    let mut changed = BTreeSet::new();
    for item in items {
        let user = item["external_id"].as_str().unwrap();
        if roles[user].iter().any(|r| r == wanted) {
            assert_eq!(item["outcome"], "applied", "{user} was written: {item}");
            assert!(
                strs(&item["roles_added"]).contains(&wanted.to_owned()),
                "{item}"
            );
            changed.insert(user.to_owned());
        } else {
            assert_eq!(
                item["outcome"], "cancelled",
                "{user} was not written: {item}"
            );
            assert_eq!(item["reason"]["code"], "cancelled", "{item}");
        }
    }
    assert_eq!(
        c["applied"].as_u64().unwrap(),
        changed.len() as u64,
        "{job}"
    );
    assert_eq!(
        c["cancelled"].as_u64().unwrap(),
        (items.len() - changed.len()) as u64,
        "{job}"
    );

    // Every change's event, and the job's, arrive.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = hooks.lock().unwrap().clone();
        let completed: BTreeSet<String> = got
            .values()
            .filter(|(t, d)| t == "role_sync.completed" && d["job_id"] == id)
            .map(|(_, d)| d["external_id"].as_str().unwrap().to_owned())
            .collect();
        let finished: Vec<&Value> = got
            .values()
            .filter(|(t, d)| t == "job.finished" && d["job_id"] == id)
            .map(|(_, d)| d)
            .collect();
        if completed.len() >= changed.len() && !finished.is_empty() {
            assert_eq!(
                completed, changed,
                "one role_sync.completed per user written, no other"
            );
            assert_eq!(finished.len(), 1, "one job.finished: {finished:?}");
            assert_eq!(finished[0]["status"], "cancelled");
            assert_eq!(
                finished[0]["counts"], *c,
                "job.finished carries the final counts"
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "events missing: {} of {} role_sync.completed, job.finished {}",
            completed.len(),
            changed.len(),
            finished.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A cancel while users are being written: every write sent is recorded as what it did, with
/// its webhook; every other user is cancelled; no write reaches the target once the cancel has
/// answered (but for the PATCHes already on the wire, answered within the emulator's latency).
#[tokio::test]
async fn a_cancel_mid_write_records_every_write_sent_and_sends_none_after_it() {
    let (hook, hooks) = start_hooks().await;
    let app = spawn_app_with(TestOptions {
        emulator: EmulatorArgs {
            rate_limit_per_minute: 0,
            latency_ms: 30,
            ..Default::default()
        },
        config: format!("[target]\nmax_concurrency = 4\n{}", hook_toml(&hook)),
        ..Default::default()
    })
    .await;
    let users = seed_n(&app, "Q", 300).await;
    let job = app
        .submit_csv(&csv_for(&users, "Agent", "Standard Agent"))
        .await;
    let id = job["job_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let j = app.job(&id).await;
        if j["counts"]["applied"].as_u64().unwrap_or(0) >= 40 {
            break;
        }
        assert!(Instant::now() < deadline, "the job does not move: {j}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let emulator = app.emulator_url();
    let watch = PatchWatch::start(&emulator).await;
    let resp = app.post(&format!("/v1/jobs/{id}/cancel"), WRITER_KEY).await;
    let answered = Instant::now();
    assert_eq!(resp.status(), 200);
    let at_cancel: Value = resp.json().await.unwrap();
    assert_eq!(at_cancel["status"], "cancelled", "{at_cancel}");
    let (at_answer, at_end, last_ms) = watch
        .finish(answered, Duration::from_millis(500), async || {
            !app.job(&id).await["finished_at"].is_null()
        })
        .await;
    eprintln!(
        "cancel: {at_answer} PATCHes when the cancel answered (applied {} then), {at_end} in the \
         end; the last write landed {} after the answer",
        at_cancel["counts"]["applied"],
        landed(last_ms)
    );
    // The PATCHes on the wire at the answer land within the emulator's latency (30 ms); none
    // leaves later. The bound leaves room for a loaded machine.
    assert!(
        last_ms.is_none_or(|ms| ms < 1000),
        "a write reached the target {last_ms:?} ms after the cancel answered"
    );

    let done = app.wait_finished(&id).await;
    let items = app.items(&id).await;
    assert_eq!(items.len(), 300);
    let roles = roles_by_user(&emulator).await;
    assert_record_matches_target(&done, &items, &roles, &hooks, "Agent").await;
    // The writes in flight when the cancel came were recorded after it (the measured bug lost
    // exactly those), and the job is counted once.
    let applied_at_cancel = at_cancel["counts"]["applied"].as_u64().unwrap();
    assert!(
        done["counts"]["applied"].as_u64().unwrap() > applied_at_cancel,
        "no write was in flight at the cancel: {at_cancel}"
    );
    assert_eq!(
        done["counts"]["applied"].as_u64().unwrap(),
        at_end,
        "every PATCH sent is an applied row"
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
    assert!(
        metrics.contains("rolesync_jobs_total{status=\"cancelled\"} 1"),
        "{metrics}"
    );
}

/// Every row of a job, through the API of the service at `url`.
async fn items_at(url: &str, id: &str) -> Vec<Value> {
    let v = api(
        url,
        reqwest::Method::GET,
        &format!("/v1/jobs/{id}/items?limit=1000"),
        None,
    )
    .await;
    assert!(v["next_cursor"].is_null(), "one page holds the job");
    v["items"].as_array().unwrap().clone()
}

/// A target that answers without versions (no `ETag`, no `meta.version`): rolesync reads the
/// user once more, and still without a version refuses to write: no PATCH leaves without
/// `If-Match`. With versions back, the same job applies.
#[tokio::test]
async fn no_write_goes_out_without_if_match() {
    let app = spawn_app_with(TestOptions {
        emulator: EmulatorArgs {
            rate_limit_per_minute: 0,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let users = seed_n(&app, "V", 5).await;
    app.set_faults(json!({"omit_versions": true})).await;
    let job = app
        .submit_csv(&csv_for(&users, "Agent", "Standard Agent"))
        .await;
    let done = app.wait_finished(job["job_id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed_with_errors", "{done}");
    assert_eq!(done["counts"]["failed"], 5, "{done}");
    let items = app.items(done["job_id"].as_str().unwrap()).await;
    for i in &items {
        assert_eq!(i["reason"]["code"], "scim_rejected", "{i}");
        assert!(
            i["reason"]["message"]
                .as_str()
                .unwrap()
                .contains("If-Match"),
            "{i}"
        );
    }
    let stats = app.emulator_stats().await;
    let count = |method: &str, route: &str| -> u64 {
        stats["requests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["method"] == method && r["route"].as_str().unwrap_or("").ends_with(route))
            .map(|r| r["count"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(count("PATCH", "/users/{id}"), 0, "no blind write: {stats}");
    assert_eq!(
        count("GET", "/users/{id}"),
        5,
        "one re-read per user: {stats}"
    );
    for u in &users {
        assert_eq!(app.roles_of(u).await, vec![vec!["Employee"]], "{u}");
    }
    app.set_faults(json!({"omit_versions": false})).await;
    let job = app
        .submit_csv(&csv_for(&users, "Agent", "Standard Agent"))
        .await;
    let done = app.wait_finished(job["job_id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["counts"]["applied"], 5, "{done}");
}

/// Runs of one chunk are bounded too (`sync.max_chunk_attempts`): past the bound, the users
/// still pending fail with `retries_exhausted` without another call, and the job finishes.
#[tokio::test]
async fn a_chunk_is_run_a_bounded_number_of_times() {
    let app = spawn_app_with(TestOptions {
        emulator: EmulatorArgs {
            rate_limit_per_minute: 0,
            ..Default::default()
        },
        config: "[target]\nmax_attempts = 1\nmax_retry_secs = 1\n\
                 [sync]\nmax_user_attempts = 10\nmax_chunk_attempts = 2\n"
            .into(),
        ..Default::default()
    })
    .await;
    let users = seed_n(&app, "K", 4).await;
    let bad = users[1].clone();
    app.set_faults(json!({"failing_users": [{"external_id": bad, "writes": true}]}))
        .await;
    let job = app
        .submit_csv(&csv_for(&users, "Agent", "Standard Agent"))
        .await;
    let done = app.wait_finished(job["job_id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed_with_errors", "{done}");
    assert_eq!(done["counts"]["applied"], 3, "{done}");
    let items = app.items(done["job_id"].as_str().unwrap()).await;
    let failed: Vec<_> = items.iter().filter(|i| i["outcome"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{items:?}");
    assert_eq!(failed[0]["external_id"], bad.as_str());
    assert_eq!(failed[0]["reason"]["code"], "retries_exhausted");
    let message = failed[0]["reason"]["message"].as_str().unwrap();
    assert!(message.contains("run 2 times"), "{message}");
    // Two runs, one PATCH each (max_attempts = 1); none in the third, exhausted run.
    assert_eq!(patches_with_status(&app, 503).await, 2);
}

//! Waits the operator can see: a target asking for a wait beyond its rate-limit window is
//! waited for the window, and a job held by the target says why and until when.

use crate::console::{signed_in, visit};
use crate::helpers::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// `rolesync_target_wait_seconds` as `/metrics` serves it.
async fn wait_gauge(app: &TestApp) -> f64 {
    let text = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("rolesync_target_wait_seconds "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rolesync_target_wait_seconds in /metrics"))
}

/// Three answers with a spent window (`inin-ratelimit-count` at `-allowed`) and
/// `inin-ratelimit-reset: 18446744073709551615`, one call in flight so that each hold follows
/// the last: with `rate_limit_window_secs = 2` each hold is the window, not the 120 s of
/// `max_server_delay_secs` (3 × 120 s before), so the 30-user job ends within 3 windows plus
/// its own work; while held it shows `waiting: {"reason": "rate_limited", "until": …}`, on the
/// API, in the console and in `rolesync_target_wait_seconds`, and `waiting` is null once done.
#[tokio::test]
async fn a_reset_beyond_the_window_holds_one_window_and_the_job_shows_why() {
    const WINDOW: Duration = Duration::from_secs(2);
    let app = spawn_app_with(TestOptions {
        config: "[target]\nrate_limit_window_secs = 2\nmax_concurrency = 1\n".into(),
        ..Default::default()
    })
    .await;
    let cookie = signed_in(&app, READER_KEY).await;
    let users = seed_n(&app, "W", 30).await;
    assert_eq!(wait_gauge(&app).await, 0.0, "no hold before the job");
    app.set_faults(json!({"override_headers": {"count": 3, "headers": {
        "inin-ratelimit-allowed": "300",
        "inin-ratelimit-count": "300",
        "inin-ratelimit-reset": "18446744073709551615",
    }}}))
    .await;
    let started = Instant::now();
    let job = app
        .submit_csv(&csv_for(&users, "Agent", "Standard Agent"))
        .await;
    let id = job["job_id"].as_str().unwrap().to_owned();
    // Polled by hand with a deadline, to see the job while it is held. Far below the 3 × 120 s
    // of the clamp alone.
    let deadline = started + Duration::from_secs(60);
    let mut seen: Option<(Value, time::OffsetDateTime, f64, String)> = None;
    let done = loop {
        let j = app.job(&id).await;
        if seen.is_none() && j["waiting"].is_object() {
            let at = time::OffsetDateTime::now_utc();
            let gauge = wait_gauge(&app).await;
            let page = visit(&app, &cookie, &format!("/ui/jobs/{id}"))
                .await
                .text()
                .await
                .unwrap();
            seen = Some((j.clone(), at, gauge, page));
        }
        if j["finished_at"].is_string() {
            break j;
        }
        assert!(Instant::now() < deadline, "job held too long: {j}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let elapsed = started.elapsed();
    eprintln!("30-user job with 3 resets of u64::MAX, window 2 s: {elapsed:?}");
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["counts"]["applied"], 30, "{done}");
    assert!(done["waiting"].is_null(), "{done}");

    // The hold was real (at least one window), and no longer than the three windows asked
    // plus the job's own work (well under a second here).
    assert!(elapsed >= WINDOW, "{elapsed:?}");
    assert!(
        elapsed <= WINDOW * 3 + Duration::from_secs(4),
        "{elapsed:?}"
    );

    let (held, seen_at, gauge, page) =
        seen.expect("the job never showed `waiting` while it was held");
    assert_eq!(held["waiting"]["reason"], "rate_limited", "{held}");
    assert!(
        matches!(held["status"].as_str(), Some("queued" | "running")),
        "{held}"
    );
    let until = time::OffsetDateTime::parse(
        held["waiting"]["until"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap_or_else(|e| panic!("`until` is not RFC 3339: {e}: {held}"));
    // Ahead of the moment the job was read, by at most the window the hold was placed for.
    let ahead = until - seen_at;
    assert!(
        ahead > time::Duration::ZERO && ahead <= time::Duration::milliseconds(2100),
        "until {until} is not within a window after {seen_at}: {held}"
    );
    assert!(
        gauge > 0.0 && gauge <= 2.0,
        "rolesync_target_wait_seconds {gauge}"
    );
    assert!(
        page.contains("data-field=\"waiting.reason\">rate_limited<"),
        "the console does not show the wait: {page}"
    );
    // Once the holds are over, the gauge is back to 0.
    assert_eq!(wait_gauge(&app).await, 0.0);
}

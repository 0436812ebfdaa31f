//! The feed failing for a while (the audit API refused: `missing_permissions`): full scans are
//! spaced by the doubling backoff (`drift.poll_secs` × 2, × 4, … up to
//! `drift.fallback_backoff_max_secs`), not made every poll, which the emulator's stats show; a
//! successful poll ends the streak, so the next failure scans at once and the wait starts over.

use super::{Hooks, baseline, calls, emulator_post, jobs, metric, names, rolesync_date, start};
use crate::helpers::TestApp;
use serde_json::json;
use std::time::Duration;
use tokio::time::Instant;

const BACKOFF: &str = "rolesync_drift_fallback_backoff_seconds";
const SCANS: &str = "rolesync_drift_fallback_scans_total{cause=\"feed_failed\"}";
const DEFERRED: &str = "rolesync_drift_polls_total{result=\"fallback_deferred\"}";
/// Between a poll's decision and its job's `created_at`: the commit, on a busy machine.
const TOLERANCE_MS: i64 = 500;

/// The fallback scans started so far (`created_at` in epoch ms, oldest first).
async fn fallbacks(app: &TestApp) -> Vec<i64> {
    let mut at: Vec<i64> = jobs(app)
        .await
        .iter()
        .filter(|j| {
            j["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("drift_feed_fallback: feed_failed"))
        })
        .map(|j| rolesync_date(j["created_at"].as_str().unwrap()))
        .collect();
    at.sort_unstable();
    at
}

async fn wait_fallbacks(app: &TestApp, n: usize) -> Vec<i64> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let at = fallbacks(app).await;
        if at.len() >= n {
            return at;
        }
        assert!(
            Instant::now() < deadline,
            "{n} fallback scans expected, {} started",
            at.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_gauge(app: &TestApp, series: &str, value: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = metric(app, series).await;
        if v == value {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} stayed at {v}, not {value}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn refuse_the_feed(app: &TestApp, refuse: bool) {
    let permissions = if refuse {
        json!(["audits:audit:view"])
    } else {
        json!([])
    };
    emulator_post(
        app,
        "/emulator/faults",
        json!({"missing_permissions": permissions}),
    )
    .await;
}

#[tokio::test]
async fn a_feed_that_keeps_failing_backs_off_between_full_scans_and_a_success_starts_over() {
    let hooks = Hooks::start().await;
    // Polls every second; the wait between scans doubles from 2 s up to 4 s.
    let app = start(&hooks, "fallback_backoff_max_secs = 4").await;
    let users = names(3, "B");
    baseline(&app, &users).await;
    app.reset_emulator_stats().await;
    refuse_the_feed(&app, true).await;
    let at = wait_fallbacks(&app, 4).await;
    let stats = app.emulator_stats().await;
    // Each scan waited at least its backoff after the one before: 2 s, then 4 s (the cap).
    let gaps: Vec<i64> = at.windows(2).map(|w| w[1] - w[0]).collect();
    for (gap, wait) in gaps.iter().zip([2_000, 4_000, 4_000]) {
        assert!(*gap >= wait - TOLERANCE_MS, "gaps {gaps:?} ms");
    }
    // The feed was polled every second meanwhile (each refused), the scans far fewer.
    let polls = calls(&stats, "/api/v2/audits/query/realtime");
    let reads =
        calls(&stats, "/api/v2/scim/v2/users") + calls(&stats, "/api/v2/scim/v2/users/{id}");
    eprintln!(
        "backoff: {} scans in {} ms (gaps {gaps:?}), {polls} feed calls, {reads} user reads",
        at.len(),
        at[at.len() - 1] - at[0]
    );
    assert!(
        polls >= 2 * at.len() as u64,
        "{polls} polls, {} scans: {stats}",
        at.len()
    );
    assert!(metric(&app, SCANS).await >= 4.0);
    assert!(metric(&app, DEFERRED).await >= 3.0);
    assert_eq!(metric(&app, BACKOFF).await, 4.0);

    // The feed answers again: a successful poll ends the streak.
    refuse_the_feed(&app, false).await;
    wait_gauge(&app, BACKOFF, 0.0).await;
    // It fails again: the first scan of the new streak starts at the next poll, and the wait
    // starts over at poll_secs × 2.
    let before = fallbacks(&app).await.len();
    refuse_the_feed(&app, true).await;
    let refused_at = super::now_ms();
    let at = wait_fallbacks(&app, before + 1).await;
    assert!(
        at[before] - refused_at < 4_000,
        "the first scan after a success waited for the old backoff"
    );
    wait_gauge(&app, BACKOFF, 2.0).await;
}

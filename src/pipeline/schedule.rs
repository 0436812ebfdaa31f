//! The scheduled reconcile (`[reconcile] schedule`): every replica runs this task, and each
//! occurrence of the schedule fires on exactly one of them.
//!
//! Every replica computes the same occurrences from the cron expression (UTC). At an
//! occurrence each one tries to claim it in the store (`Store::claim_occurrence`): one
//! conditional UPDATE of the schedule's last occurrence, in the same transaction as the
//! reconcile it starts, so the first to commit fires it, the others find it taken, and a replica
//! that dies mid-way claims nothing. The store also refuses a reconcile while another one has
//! not ended (a unique index), so an occurrence that finds one running is skipped. Occurrences
//! missed while no replica ran are not caught up: the next one comes as scheduled.
//!
//! The reconcile is a dry run unless `[reconcile] fix = true`. Its grants of privileged roles do
//! not wait for approval: it only gives back roles a job already gave, under the approval rules
//! in force then (the removal bounds of a `replace` reconcile still apply).

use super::Deps;
use crate::domain::JobKind;
use crate::store::{NewGenerated, OccurrenceClaim, now_ms};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The schedule's name in the store.
const NAME: &str = "reconcile";

pub(crate) async fn run(deps: Deps, cron: croner::Cron, stop: CancellationToken) {
    let mut after_ms = now_ms();
    loop {
        let Some(next) = next_after(&cron, after_ms) else {
            tracing::warn!(schedule = %deps.settings.reconcile.schedule, "the reconcile schedule has no next occurrence; it stops");
            return;
        };
        let wait = Duration::from_millis(u64::try_from(next - now_ms()).unwrap_or(0));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        fire(&deps, next).await;
        after_ms = next;
    }
}

/// The first occurrence strictly after `after_ms` (epoch milliseconds).
fn next_after(cron: &croner::Cron, after_ms: i64) -> Option<i64> {
    let t = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(after_ms)?;
    let next = cron.find_next_occurrence(&t, false).ok()?;
    Some(next.timestamp_millis())
}

/// Claims the occurrence at `at_ms` and, if this replica wins it, starts the reconcile.
async fn fire(deps: &Deps, at_ms: i64) {
    let settings = &deps.settings.reconcile;
    let job = NewGenerated {
        id: uuid::Uuid::now_v7().to_string(),
        kind: JobKind::Reconcile,
        mode: settings.mode,
        dry_run: !settings.fix,
        request_id: None,
        traceparent: None,
        policy_fingerprint: Some(deps.policy.current().fingerprint()),
        privileged_allowed: true,
        revert_force: false,
        submitted_by: crate::domain::Principal::system("reconcile.schedule"),
    };
    let result = match deps
        .store
        .claim_occurrence(NAME, at_ms, &deps.owner, &job)
        .await
    {
        Ok(OccurrenceClaim::Fired { users }) => {
            tracing::info!(
                target: "audit",
                {
                    job.id = %job.id,
                    users,
                    dry_run = job.dry_run,
                    job.mode = job.mode.as_str(),
                    occurrence_ms = at_ms,
                },
                "scheduled reconcile started"
            );
            deps.wake_planner.notify_one();
            "fired"
        }
        Ok(OccurrenceClaim::Taken) => "taken",
        Ok(OccurrenceClaim::Skipped { running }) => {
            tracing::warn!(running = %running, occurrence_ms = at_ms, "scheduled reconcile skipped: another reconcile has not ended");
            "skipped"
        }
        Err(e) => {
            tracing::warn!(error = %e, occurrence_ms = at_ms, "cannot claim the scheduled reconcile; the next occurrence tries again");
            "error"
        }
    };
    deps.metrics
        .reconcile_schedule_runs_total
        .with_label_values(&[result])
        .inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cron(s: &str) -> croner::Cron {
        let settings = crate::configuration::ReconcileSettings {
            schedule: s.to_owned(),
            ..Default::default()
        };
        match settings.cron() {
            Ok(Some(c)) => c,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn occurrences_follow_the_expression_in_utc_with_or_without_seconds() {
        // 2026-01-01T00:00:00Z
        let t0 = 1_767_225_600_000;
        assert_eq!(next_after(&cron("0 3 * * *"), t0), Some(t0 + 3 * 3_600_000));
        assert_eq!(next_after(&cron("*/5 * * * * *"), t0), Some(t0 + 5_000));
        // Strictly after: an occurrence is never fired twice by one replica.
        assert_eq!(
            next_after(&cron("*/5 * * * * *"), t0 + 5_000),
            Some(t0 + 10_000)
        );
    }

    #[test]
    fn an_empty_schedule_is_off_and_a_bad_one_is_refused() {
        let off = crate::configuration::ReconcileSettings::default().cron();
        assert!(matches!(off, Ok(None)));
        let bad = crate::configuration::ReconcileSettings {
            schedule: "every day".into(),
            ..Default::default()
        }
        .cron();
        assert!(bad.is_err());
    }
}

//! The drift feed (`[drift] source = "audit"`): Genesys' audit trail read as a change feed, so
//! that drift is found as it happens, with who made it and when, in calls proportional to what
//! changed rather than to the org (README, Drift).
//!
//! Every replica runs the poller; one at a time holds the feed's lease in the store and polls.
//! A poll reads the role changes between the checkpoint and now (the realtime query within its
//! 14 days, the async query beyond), ignores rolesync's own (its OAuth client), reads back only
//! the users the feed names (one call each), compares them with their desired state, and in one
//! transaction queues a `role_sync.drift_detected` per drifted user (with `changed_by`,
//! `changed_at`), starts the fix (`drift.fix`: a reconcile job over just those users) and moves
//! the checkpoint. Nothing is silent: a feed that fails, or names more users than a poll reads,
//! falls back to a full scan (a reconcile over every managed user, its `reason` saying why),
//! with a metric and a `warn` line; a read-back that fails leaves the checkpoint where it was.
//!
//! A feed that keeps failing does not cost a scan every poll: fallback scans are spaced by a
//! doubling backoff (`backoff.rs`; `drift.fallback_backoff_max_secs`), kept by the replica that
//! polls and ended by a successful poll; a poll that may not scan yet leaves the checkpoint
//! where it was.
//!
//! Pure decisions (what a message says, which query, the latest change per user, the backoff)
//! are in `feed.rs` and `backoff.rs`; this file does the calls and the store.

mod backoff;
mod feed;

pub use feed::ChangedBy;
pub(crate) use feed::Digest;
/// What the sandbox check judges audit messages with: the feed's own reading of them.
pub(crate) use feed::{MemberChange, is_role_entity, made_by_own_client, member_change, subjects};

use super::Deps;
use crate::audit::events::RoleSyncDriftDetected;
use crate::domain::{DriftFallback, DriftPollResult, DriftSource, EventType, JobKind};
use crate::policy::{RoleChange, RoleSet};
use crate::scim::client::QueryState;
use crate::scim::{CallTally, ScimError};
use crate::store::{
    FeedClaim, FeedCommit, JobRecord, NewGenerated, OutboxEvent, PollCommit, PollJob, now_ms,
};
use backoff::{Backoff, Fallback};
use feed::{Change, Route};
use serde_json::Value;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The feed's name in the store.
pub(crate) const FEED: &str = "audit";
/// The `reason` of the reconcile that fixes the users the feed found.
pub(crate) const FIX_REASON: &str = "drift_feed_fix";
/// The `reason` of a fall back to a full scan starts with this.
const FALLBACK_REASON: &str = "drift_feed_fallback";
/// Most realtime pages (500 messages each) or async result pages one poll reads; beyond, the
/// poll falls back to a full scan.
const MAX_PAGES: u64 = 200;
/// How long an async query may take to succeed, and how often its state is read.
const ASYNC_DEADLINE: Duration = Duration::from_secs(300);
const ASYNC_POLL: Duration = Duration::from_millis(500);

/// Whether `job` is the drift feed's fix (its users were reported by the feed already).
pub(crate) fn is_feed_fix(job: &JobRecord) -> bool {
    job.reason
        .as_deref()
        .is_some_and(|r| r.starts_with(FIX_REASON))
}

/// The poller: every `drift.poll_secs` until `stop`.
pub(crate) async fn run(deps: Deps, stop: CancellationToken) {
    let every = Duration::from_secs(deps.settings.drift.poll_secs);
    let mut backoff = Backoff::default();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = poll_once(&deps, &mut backoff) => {}
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
    }
    if let Err(e) = deps.store.release_drift_feed(FEED, &deps.owner).await {
        tracing::warn!(error = %e, "cannot release the drift feed's lease; it expires by itself");
    }
}

/// Why a read of the feed did not give its messages.
enum FeedError {
    Failed(String),
    TooMany,
}

/// One poll, if this replica holds (or takes) the feed's lease; `backoff` spaces its fallback
/// scans.
pub(crate) async fn poll_once(deps: &Deps, backoff: &mut Backoff) {
    let d = &deps.settings.drift;
    let poll_ms = i64::try_from(d.poll_secs).unwrap_or(60) * 1000;
    let lease_ms = deps.lease_ms().max(2 * poll_ms);
    let now = now_ms();
    let checkpoint = match deps
        .store
        .claim_drift_feed(FEED, &deps.owner, lease_ms, now)
        .await
    {
        Ok(FeedClaim::Held { checkpoint_ms }) => checkpoint_ms,
        Ok(FeedClaim::Taken) => return,
        Err(e) => {
            tracing::warn!(error = %e, "drift feed: cannot claim its lease; the next poll tries again");
            return;
        }
    };
    let end = now - i64::try_from(d.lag_secs).unwrap_or(0) * 1000;
    let tally = CallTally::default();
    let messages = match feed::route(checkpoint, end, now) {
        Route::Nothing => return,
        Route::Realtime => read_realtime(deps, checkpoint, end, &tally).await,
        Route::Async => {
            tracing::info!(
                checkpoint_ms = checkpoint,
                "drift feed: the checkpoint is older than the realtime query reaches (14 days); reading through the async query"
            );
            read_async(deps, checkpoint, end, &tally).await
        }
    };
    let result = match messages {
        Ok(messages) => handle(deps, &messages, end, &tally, backoff).await,
        Err(FeedError::Failed(detail)) => {
            fall_back(deps, DriftFallback::FeedFailed, &detail, end, backoff).await
        }
        Err(FeedError::TooMany) => {
            let detail = format!(
                "more than {} audit messages since the checkpoint",
                MAX_PAGES * 500
            );
            fall_back(deps, DriftFallback::TooManyChanges, &detail, end, backoff).await
        }
    };
    if result == DriftPollResult::Ok {
        backoff.reset();
    }
    deps.metrics
        .drift_polls_total
        .with_label_values(&[result.as_str()])
        .inc();
    deps.metrics
        .drift_fallback_backoff_seconds
        .set(backoff.wait_ms(poll_ms, backoff_cap_ms(deps)) / 1000);
    if let Ok(Some(cp)) = deps.store.drift_checkpoint(FEED).await {
        deps.metrics
            .drift_checkpoint_age_seconds
            .set((now_ms() - cp).max(0) / 1000);
    }
}

fn failed(e: &ScimError) -> FeedError {
    FeedError::Failed(e.to_string())
}

/// Every page of the realtime query over `[start, end)`.
async fn read_realtime(
    deps: &Deps,
    start: i64,
    end: i64,
    tally: &CallTally,
) -> Result<Vec<Value>, FeedError> {
    let mut out = Vec::new();
    for page in 1..=MAX_PAGES {
        let p = deps
            .scim
            .audit_realtime(start, end, page, tally)
            .await
            .map_err(|e| failed(&e))?;
        let empty = p.messages.is_empty();
        out.extend(p.messages);
        if empty || page >= p.page_count {
            return Ok(out);
        }
    }
    Err(FeedError::TooMany)
}

/// The async query over `[start, end)`: create, wait for `Succeeded`, read every page.
async fn read_async(
    deps: &Deps,
    start: i64,
    end: i64,
    tally: &CallTally,
) -> Result<Vec<Value>, FeedError> {
    let id = deps
        .scim
        .audit_query_create(start, end, tally)
        .await
        .map_err(|e| failed(&e))?;
    let deadline = tokio::time::Instant::now() + ASYNC_DEADLINE;
    loop {
        match deps
            .scim
            .audit_query_state(&id, tally)
            .await
            .map_err(|e| failed(&e))?
        {
            QueryState::Succeeded => break,
            QueryState::Queued | QueryState::Running => {}
            state @ (QueryState::Failed | QueryState::Cancelled) => {
                return Err(FeedError::Failed(format!(
                    "the async audit query {id} ended {state:?}"
                )));
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(FeedError::Failed(format!(
                "the async audit query {id} did not succeed within {} s",
                ASYNC_DEADLINE.as_secs()
            )));
        }
        tokio::time::sleep(ASYNC_POLL).await;
    }
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let (page, next) = deps
            .scim
            .audit_query_results(&id, cursor.as_deref(), tally)
            .await
            .map_err(|e| failed(&e))?;
        out.extend(page);
        match next {
            Some(c) if Some(&c) != cursor.as_ref() => cursor = Some(c),
            _ => return Ok(out),
        }
    }
    Err(FeedError::TooMany)
}

/// A user the feed named who drifted: their ids, roles and the change that found them.
pub(crate) struct Drifted {
    pub external_id: String,
    pub user_id: String,
    pub current: RoleSet,
    pub desired: RoleSet,
    pub fix: RoleChange,
    pub change: Change,
}

/// Reads back the users `digest` names (one call each) and keeps those whose roles are not
/// what their desired state implies in `[reconcile] mode`. A user deleted since, or without
/// a desired state (not managed), is not drift.
pub(crate) async fn examine(
    deps: &Deps,
    digest: &Digest,
    tally: &CallTally,
) -> Result<Vec<Drifted>, String> {
    let policy = deps.policy.current();
    let mode = deps.settings.reconcile.mode;
    let mut out = Vec::new();
    for (user_id, change) in &digest.latest {
        let user = match deps.scim.get_user(user_id, tally).await {
            Ok(u) => u,
            Err(ScimError::NotFound) => continue,
            Err(e) => return Err(format!("cannot read back user {user_id}: {e}")),
        };
        let Some(external_id) = user.external_id.clone().filter(|e| !e.is_empty()) else {
            continue;
        };
        let desired = match deps.store.desired_state(&external_id).await {
            Ok(Some((Some(roles), _))) => roles.into_iter().collect::<RoleSet>(),
            Ok(_) => continue,
            Err(e) => {
                return Err(format!(
                    "cannot read the desired state of {external_id}: {e}"
                ));
            }
        };
        let current = user.role_names();
        let after = policy.final_roles(mode, &current, &desired);
        let fix = RoleChange::new(current.clone(), after);
        if fix.is_empty() {
            continue;
        }
        out.push(Drifted {
            external_id,
            user_id: user_id.clone(),
            current,
            desired,
            fix,
            change: change.clone(),
        });
    }
    Ok(out)
}

/// The `drift detected` audit line of each drifted user: logged once the poll that found them
/// is committed, never before (a poll whose commit fails or loses the feed's lease is made
/// again, by this replica or another).
pub(crate) fn log_found(drifted: &[Drifted], job_id: Option<&str>, source: &'static str) {
    for d in drifted {
        tracing::info!(
            target: "audit",
            {
                user.external_id = %d.external_id,
                user.id = %d.user_id,
                roles.current = %serde_json::to_string(&d.current).unwrap_or_default(),
                roles.desired = %serde_json::to_string(&d.desired).unwrap_or_default(),
                roles.missing = %serde_json::to_string(&d.fix.added).unwrap_or_default(),
                roles.extra = %serde_json::to_string(&d.fix.removed).unwrap_or_default(),
                changed_by.kind = ?d.change.by.kind,
                changed_by.id = %d.change.by.id,
                changed_at = %d.change.changed_at,
                audit.message_id = %d.change.message_id,
                drift.source = source,
                fix_job.id = job_id.unwrap_or(""),
            },
            "drift detected"
        );
    }
}

/// The `role_sync.drift_detected` event of each drifted user, committed with the poll.
pub(crate) fn report(deps: &Deps, drifted: &[Drifted], job_id: Option<&str>) -> Vec<OutboxEvent> {
    let mode = deps.settings.reconcile.mode;
    let mut events = Vec::new();
    for d in drifted {
        if let Some(e) = deps.events.event(
            EventType::DriftDetected,
            RoleSyncDriftDetected {
                job_id,
                source: DriftSource::Audit,
                changed_by: Some(&d.change.by),
                changed_at: Some(&d.change.changed_at),
                external_id: &d.external_id,
                user_id: &d.user_id,
                mode,
                roles_current: &d.current,
                roles_desired: &d.desired,
                roles_expected: &d.fix.after,
                roles_added: &d.fix.added,
                roles_removed: &d.fix.removed,
                fixed: job_id.is_some(),
            },
        ) {
            events.push(e);
        }
    }
    events
}

/// A reconcile the feed starts (its fix, or its fall back to a scan): an ordinary job.
pub(crate) fn reconcile_job(deps: &Deps, dry_run: bool) -> NewGenerated {
    NewGenerated {
        id: uuid::Uuid::now_v7().to_string(),
        kind: JobKind::Reconcile,
        mode: deps.settings.reconcile.mode,
        dry_run,
        request_id: None,
        traceparent: crate::telemetry::current_traceparent(),
        policy_fingerprint: Some(deps.policy.current().fingerprint()),
        // Its privileged grants wait for approval, as a submitted job's would.
        privileged_allowed: false,
        revert_force: false,
        // No person asked for it: the feed did (its reason says why).
        submitted_by: crate::domain::Principal::system("drift.feed"),
    }
}

/// `drift.fallback_backoff_max_secs` in milliseconds.
fn backoff_cap_ms(deps: &Deps) -> i64 {
    i64::try_from(deps.settings.drift.fallback_backoff_max_secs)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000)
}

/// Handles the messages of `[checkpoint, end)`: the poll's commit.
async fn handle(
    deps: &Deps,
    messages: &[Value],
    end: i64,
    tally: &CallTally,
    backoff: &mut Backoff,
) -> DriftPollResult {
    let mut digest = Digest::default();
    for m in messages {
        digest.add(m, own_client(deps));
    }
    deps.metrics
        .drift_own_changes_ignored_total
        .inc_by(digest.own);
    if digest.latest.len() > deps.settings.drift.max_users_per_poll {
        let detail = format!(
            "{} users changed since the checkpoint (drift.max_users_per_poll = {})",
            digest.latest.len(),
            deps.settings.drift.max_users_per_poll
        );
        return fall_back(deps, DriftFallback::TooManyChanges, &detail, end, backoff).await;
    }
    // A change already pushed (`POST /v1/events/genesys`) was reported then.
    let mut pushed = Vec::new();
    for (user_id, change) in &digest.latest {
        match deps.store.pushed_event_seen(&change.message_id).await {
            Ok(true) => pushed.push(user_id.clone()),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "drift feed: cannot read the pushed events; the next poll tries again");
                return DriftPollResult::Error;
            }
        }
    }
    for user_id in pushed {
        digest.latest.remove(&user_id);
    }
    let drifted = match examine(deps, &digest, tally).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "drift feed: a read back failed; the checkpoint stays, the next poll tries again");
            return DriftPollResult::Error;
        }
    };
    let fix = (deps.settings.drift.fix && !drifted.is_empty()).then(|| reconcile_job(deps, false));
    let fix_id = fix.as_ref().map(|j| j.id.clone());
    let events = report(deps, &drifted, fix_id.as_deref());
    let ids: Vec<String> = drifted.iter().map(|d| d.external_id.clone()).collect();
    let reason = format!(
        "{FIX_REASON}: {} user(s) changed by hand, found in the audit trail",
        ids.len()
    );
    let job = fix
        .as_ref()
        .map(|j| (j, PollJob::Users(&ids), reason.as_str()));
    let result = commit(deps, end, &events, job).await;
    if result == DriftPollResult::Ok {
        log_found(&drifted, fix_id.as_deref(), "audit");
        deps.metrics
            .drift_detected_total
            .with_label_values(&["audit"])
            .inc_by(drifted.len() as u64);
        tracing::info!(
            messages = messages.len(),
            own = digest.own,
            users_named = digest.latest.len(),
            drifted = drifted.len(),
            calls = tally.snapshot().0,
            checkpoint_ms = end,
            "drift feed polled"
        );
    }
    result
}

pub(crate) fn own_client(deps: &Deps) -> &str {
    deps.settings.target.client_id.as_deref().unwrap_or("")
}

/// Commits a poll; wakes the planner when it started a job.
async fn commit(
    deps: &Deps,
    end: i64,
    events: &[OutboxEvent],
    job: Option<(&NewGenerated, PollJob<'_>, &str)>,
) -> DriftPollResult {
    let started = job.as_ref().map(|(j, _, _)| j.id.clone());
    let c = FeedCommit {
        lease: Some((FEED, &deps.owner, end)),
        pushed: &[],
        events,
        job,
    };
    match deps.store.commit_drift(c).await {
        Ok(PollCommit::Committed { users }) => {
            if let Some(id) = started {
                tracing::info!(target: "audit", { job.id = %id, users }, "drift feed started a reconcile");
                deps.wake_planner.notify_one();
            }
            DriftPollResult::Ok
        }
        Ok(PollCommit::LeaseLost) => {
            tracing::info!("drift feed: another replica took the lease; this poll is dropped");
            DriftPollResult::LeaseLost
        }
        Ok(PollCommit::ReconcileRunning(id)) => {
            tracing::warn!(running = %id, "drift feed: another reconcile has not ended; the checkpoint stays, the next poll tries again");
            DriftPollResult::ReconcileRunning
        }
        // Only a push records ids.
        Ok(PollCommit::Duplicate) => DriftPollResult::Error,
        Err(e) => {
            tracing::warn!(error = %e, "drift feed: cannot commit the poll; the next poll tries again");
            DriftPollResult::Error
        }
    }
}

/// The feed cannot cover `[checkpoint, end)`: a full scan instead (a reconcile over every
/// managed user, a dry run unless `drift.fix`), its reason naming the cause; unless the backoff
/// since the last scan of the streak has not passed: then nothing is started and the checkpoint
/// stays.
async fn fall_back(
    deps: &Deps,
    cause: DriftFallback,
    detail: &str,
    end: i64,
    backoff: &mut Backoff,
) -> DriftPollResult {
    let poll_ms = i64::try_from(deps.settings.drift.poll_secs)
        .unwrap_or(60)
        .saturating_mul(1000);
    let cap_ms = backoff_cap_ms(deps);
    let now = now_ms();
    if let Fallback::Wait { until_ms } = backoff.decide(now, poll_ms, cap_ms) {
        tracing::warn!(
            cause = cause.as_str(),
            detail = %detail,
            consecutive_scans = backoff.scans(),
            backoff_secs = backoff.wait_ms(poll_ms, cap_ms) / 1000,
            next_scan_in_secs = ((until_ms - now).max(0) + 999) / 1000,
            "drift feed: the feed still cannot be read; no full scan before the backoff has passed, the checkpoint stays"
        );
        return DriftPollResult::FallbackDeferred;
    }
    tracing::warn!(
        cause = cause.as_str(),
        detail = %detail,
        consecutive_scans = backoff.scans() + 1,
        "drift feed: falling back to a full scan"
    );
    let job = reconcile_job(deps, !deps.settings.drift.fix);
    let reason = format!(
        "{FALLBACK_REASON}: {}: {}",
        cause.as_str(),
        detail.chars().take(500).collect::<String>()
    );
    let result = commit(
        deps,
        end,
        &[],
        Some((&job, PollJob::Everyone, reason.as_str())),
    )
    .await;
    if result == DriftPollResult::Ok {
        backoff.scanned(now);
        deps.metrics
            .drift_fallback_scans_total
            .with_label_values(&[cause.as_str()])
            .inc();
        tracing::info!(
            next_scan_after_secs = backoff.wait_ms(poll_ms, cap_ms) / 1000,
            "drift feed: full scan started; while the feed keeps failing, the next waits for the backoff"
        );
        DriftPollResult::Fallback
    } else {
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_feeds_fix_is_told_apart() {
        let reason = |r: Option<&str>| r.map(str::to_owned);
        let fix = reason(Some(
            "drift_feed_fix: 2 user(s) changed by hand, found in the audit trail",
        ));
        let fallback = reason(Some("drift_feed_fallback: feed_failed: 403"));
        assert!(fix.as_deref().is_some_and(|r| r.starts_with(FIX_REASON)));
        assert!(
            !fallback
                .as_deref()
                .is_some_and(|r| r.starts_with(FIX_REASON))
        );
    }
}

//! What happened to one user, turned into its rows' results, audit events and audit line.

use super::awaiting::{AwaitPolicy, Missing};
use super::*;
use crate::audit::log::{ConflictLine, DriftLine};

/// What a reconcile found of one user: drifted or not, and the event and the audit line saying
/// so (the line is logged once the chunk is committed).
#[derive(Default)]
pub(super) struct Drift {
    found: bool,
    event: Option<OutboxEvent>,
    line: Option<AuditLine>,
}

/// Turns what happened to one user into its rows' results and audit events.
pub(super) struct Report<'a> {
    pub(super) deps: &'a Deps,
    pub(super) policy: &'a Policy,
    pub(super) job: &'a JobRecord,
    pub(super) user: &'a UserRows<ItemRecord>,
}

impl Report<'_> {
    /// The one user of the target with the user's external id; else the user's result.
    pub(super) async fn find_one(
        &self,
        snapshot: Option<&Snapshot>,
        tally: &CallTally,
    ) -> Result<ScimUser, UserResult> {
        let external_id = self.user.external_id.as_str();
        let since = self.awaiting_since();
        // A joiner already awaiting their account is looked up afresh: the job's directory
        // scan predates the account.
        let snapshot = if since.is_some() { None } else { snapshot };
        let found = find_user(self.deps, snapshot, external_id, tally)
            .await
            .map_err(|e| self.call_failed(e))?;
        if found.is_empty() && self.may_await() {
            let policy = AwaitPolicy::of(&self.deps.settings.sync);
            match policy.missing(since, crate::store::now_ms()) {
                Missing::Wait {
                    since_ms,
                    next_at_ms,
                } => {
                    return Err(UserResult::AwaitUser {
                        lines: self.user.lines().collect(),
                        since_ms,
                        next_at_ms,
                    });
                }
                Missing::NotFound { waited_secs } if waited_secs > 0 => {
                    return Err(self.failed(
                        Outcome::NotFound,
                        ReasonCode::UserNotFound,
                        &format!(
                            "no user with externalId \"{external_id}\" in the target after waiting {waited_secs} s for the account (sync.await_user_secs)"
                        ),
                    ));
                }
                Missing::NotFound { .. } => {}
            }
        }
        self.one_user(found)
    }

    /// When the user's wait for their account began, if they are awaiting it.
    fn awaiting_since(&self) -> Option<i64> {
        self.user
            .rows
            .iter()
            .filter_map(|r| r.awaiting_since_ms)
            .min()
    }

    /// Only a sync that writes waits for a joiner's account: a dry run reports what it finds
    /// now, and a revert or reconcile acts on users the target already had.
    fn may_await(&self) -> bool {
        self.job.kind == JobKind::Sync && !self.job.dry_run
    }

    /// The one user found; else the user's result (`not_found`, or `failed` as ambiguous).
    pub(super) fn one_user(&self, found: Vec<ScimUser>) -> Result<ScimUser, UserResult> {
        let external_id = self.user.external_id.as_str();
        let n = found.len();
        let mut found = found.into_iter();
        match (found.next(), found.next()) {
            (Some(user), None) => Ok(user),
            (None, _) => Err(self.failed(
                Outcome::NotFound,
                ReasonCode::UserNotFound,
                &format!("no user with externalId \"{external_id}\" in the target"),
            )),
            (Some(_), Some(_)) => Err(self.failed(
                Outcome::Failed,
                ReasonCode::AmbiguousUser,
                &format!("{n} users have externalId \"{external_id}\"; nothing was written"),
            )),
        }
    }

    /// The rows of a user this job wrote, or found written by an earlier attempt of its
    /// chunk: `applied`, with the `role_sync.completed` event and the audit log line.
    pub(super) fn applied(&self, user_id: &str, change: &RoleChange) -> UserResult {
        let (job, u) = (self.job, self.user);
        let drifted = self.drift(user_id, change);
        let audit = RoleChangeLine::new(
            &job.id,
            job.request_id.as_deref(),
            u.mode(job.mode),
            &u.external_id,
            user_id,
            change,
        )
        .by(job.submitted_by.as_ref());
        let event = self.deps.events.event_as(
            EventType::RoleSyncCompleted,
            RoleSyncCompleted::new(self.policy, &job.id, &u.external_id, user_id, change),
            job.submitted_by.as_ref(),
        );
        let before: Vec<String> = change.before.iter().cloned().collect();
        let after: Vec<String> = change.after.iter().cloned().collect();
        let results = u
            .rows
            .iter()
            .map(|r| RowResult {
                line: r.line,
                outcome: Outcome::Applied,
                reason: None,
                user_id: Some(user_id.to_owned()),
                roles_added: Some(change.added.clone()),
                roles_removed: Some(change.removed.clone()),
                permissions_added: None,
                permissions_removed: None,
                roles_before: Some(before.clone()),
                roles_after: Some(after.clone()),
            })
            .collect();
        UserResult::Rows {
            results,
            events: event.into_iter().chain(drifted.event).collect(),
            changed: Some(true),
            target_error: false,
            desired: self.desired_update().map(Box::new),
            drifted: drifted.found,
            audit: drifted
                .line
                .into_iter()
                .chain([AuditLine::RolesChanged(audit)])
                .collect(),
        }
    }

    /// A write an earlier attempt of this job made, found in conflict with what the user holds
    /// now (`Decision::AppliedWithConflict`): recorded `applied` as it happened, and the
    /// conflict raised on its own (`role_sync.conflict_detected`, a warning in the audit log,
    /// `rolesync_conflicts_after_write_total` once committed). Nothing more is written.
    pub(super) fn applied_with_conflict(
        &self,
        user_id: &str,
        change: &RoleChange,
        reason: ReasonCode,
        message: &str,
    ) -> UserResult {
        let (job, u) = (self.job, self.user);
        let line = ConflictLine::new(
            &job.id,
            &u.external_id,
            user_id,
            &change.after,
            reason,
            message,
        );
        let conflict = self.deps.events.event_as(
            EventType::ConflictDetected,
            RoleSyncConflictDetected {
                job_id: &job.id,
                external_id: &u.external_id,
                user_id,
                roles_current: &change.after,
                reason: crate::audit::events::Reason {
                    code: reason.as_str(),
                    message,
                },
            },
            job.submitted_by.as_ref(),
        );
        let mut result = self.applied(user_id, change);
        if let UserResult::Rows { events, audit, .. } = &mut result {
            events.extend(conflict);
            audit.push(AuditLine::Conflict(line));
        }
        result
    }

    /// How the user's desired state moves when the job applied its change or found it in
    /// place: a sync sets it to the user's desired set; a revert swaps back the state the
    /// reverted job set (`DesiredUpdate`); a reconcile applies it and leaves it. A dry run
    /// never moves it.
    pub(super) fn desired_update(&self) -> Option<DesiredUpdate> {
        let (job, u) = (self.job, self.user);
        if job.dry_run {
            return None;
        }
        match job.kind {
            JobKind::Sync => Some(DesiredUpdate::Set {
                external_id: u.external_id.clone(),
                roles: u.desired(self.policy).into_iter().collect(),
                job_id: job.id.clone(),
            }),
            JobKind::Revert => Some(DesiredUpdate::Revert {
                external_id: u.external_id.clone(),
                original_job_id: job.original_job_id.clone()?,
                job_id: job.id.clone(),
            }),
            JobKind::Reconcile => None,
        }
    }

    /// A reconcile's user whose roles are not what their desired state implies (`change` is
    /// the fix, written or planned): the `role_sync.drift_detected` event and the audit line.
    /// Nothing for other kinds of job.
    pub(super) fn drift(&self, user_id: &str, change: &RoleChange) -> Drift {
        let (job, u) = (self.job, self.user);
        if job.kind != JobKind::Reconcile || change.is_empty() {
            return Drift::default();
        }
        // The drift feed's fix: the feed reported the user already, with who and when.
        if crate::pipeline::drift::is_feed_fix(job) {
            return Drift {
                found: true,
                event: None,
                line: None,
            };
        }
        let desired = u.desired(self.policy);
        let fixed = !job.dry_run;
        let line = DriftLine::new(
            &job.id,
            job.mode,
            &u.external_id,
            user_id,
            &desired,
            change,
            fixed,
        );
        let event = self.deps.events.event_as(
            EventType::DriftDetected,
            RoleSyncDriftDetected {
                job_id: Some(&job.id),
                source: crate::domain::DriftSource::Scan,
                changed_by: None,
                changed_at: None,
                external_id: &u.external_id,
                user_id,
                mode: job.mode,
                roles_current: &change.before,
                roles_desired: &desired,
                roles_expected: &change.after,
                roles_added: &change.added,
                roles_removed: &change.removed,
                fixed,
            },
            job.submitted_by.as_ref(),
        );
        Drift {
            found: true,
            event,
            line: Some(AuditLine::Drift(line)),
        }
    }

    /// The rows of a user nothing was written for: `unchanged` (no change) or `planned` (the
    /// change a dry run would write). A dry run also reports the permissions the change grants
    /// and takes away. No event.
    pub(super) fn unwritten(
        &self,
        user_id: &str,
        outcome: Outcome,
        change: Option<&RoleChange>,
    ) -> UserResult {
        let (added, removed) = change.map_or((Vec::new(), Vec::new()), |c| {
            (c.added.clone(), c.removed.clone())
        });
        let permissions = self.job.dry_run.then(|| match change {
            Some(c) => {
                let before = self.policy.effective_permissions(&c.before);
                let after = self.policy.effective_permissions(&c.after);
                (
                    after.difference(&before).cloned().collect(),
                    before.difference(&after).cloned().collect(),
                )
            }
            None => (Vec::new(), Vec::new()),
        });
        let (perms_added, perms_removed) = permissions.unzip();
        let sets = change.map(|c| {
            (
                c.before.iter().cloned().collect::<Vec<_>>(),
                c.after.iter().cloned().collect::<Vec<_>>(),
            )
        });
        let (before, after) = sets.unzip();
        let results = self
            .user
            .rows
            .iter()
            .map(|r| RowResult {
                line: r.line,
                outcome,
                reason: None,
                user_id: Some(user_id.to_owned()),
                roles_added: Some(added.clone()),
                roles_removed: Some(removed.clone()),
                permissions_added: perms_added.clone(),
                permissions_removed: perms_removed.clone(),
                roles_before: before.clone(),
                roles_after: after.clone(),
            })
            .collect();
        let drifted = change.map(|c| self.drift(user_id, c)).unwrap_or_default();
        UserResult::Rows {
            results,
            events: drifted.event.into_iter().collect(),
            changed: Some(outcome == Outcome::Planned),
            target_error: false,
            // A user found already right holds the desired set as much as one just written.
            desired: (outcome == Outcome::Unchanged)
                .then(|| self.desired_update())
                .flatten()
                .map(Box::new),
            drifted: drifted.found,
            audit: drifted.line.into_iter().collect(),
        }
    }

    /// Every row of the user `rejected` with `reason`, one `role_sync.rejected` event per row.
    pub(super) fn rejected(&self, reason: ReasonCode, message: &str) -> UserResult {
        let job_id = self.job.id.as_str();
        let rows = &self.user.rows;
        let results = rows
            .iter()
            .map(|r| RowResult::rejected(r.line, reason, message))
            .collect();
        let events = rows
            .iter()
            .filter_map(|r| {
                let data = RoleSyncRejected::new(job_id, r.line, reason, message).of_row(
                    &r.external_id,
                    &r.role_template,
                    &r.license_tier,
                );
                self.deps.events.event_as(
                    EventType::RoleSyncRejected,
                    data,
                    self.job.submitted_by.as_ref(),
                )
            })
            .collect();
        UserResult::Rows {
            results,
            events,
            changed: None,
            target_error: false,
            desired: None,
            drifted: false,
            audit: Vec::new(),
        }
    }

    /// Every row of the user with `outcome` and the reason, and one `role_sync.failed` event:
    /// the rows of a user are synced, and fail, together.
    pub(super) fn failed(&self, outcome: Outcome, code: ReasonCode, message: &str) -> UserResult {
        self.fail_rows(outcome, code, message, false)
    }

    /// `failed`, telling whether the target refused this user (counts towards `error_ratio`).
    pub(super) fn fail_rows(
        &self,
        outcome: Outcome,
        code: ReasonCode,
        message: &str,
        target_error: bool,
    ) -> UserResult {
        let u = self.user;
        let results = u
            .rows
            .iter()
            .map(|r| RowResult::outcome(r.line, outcome, Some((code, message.to_owned()))))
            .collect();
        let data = RoleSyncFailed::new(
            &self.job.id,
            &u.external_id,
            u.lines().collect(),
            outcome,
            code,
            message,
        );
        UserResult::Rows {
            results,
            events: self
                .deps
                .events
                .event_as(
                    EventType::RoleSyncFailed,
                    data,
                    self.job.submitted_by.as_ref(),
                )
                .into_iter()
                .collect(),
            changed: None,
            target_error,
            desired: None,
            drifted: false,
            audit: Vec::new(),
        }
    }

    /// Every row of the user `cancelled`: nothing of this job reached the user. No event.
    pub(super) fn cancelled(&self) -> UserResult {
        let results = self
            .user
            .rows
            .iter()
            .map(|r| {
                let reason = (ReasonCode::Cancelled, CANCELLED_MESSAGE.to_owned());
                RowResult::outcome(r.line, Outcome::Cancelled, Some(reason))
            })
            .collect();
        UserResult::Rows {
            results,
            events: Vec::new(),
            changed: None,
            target_error: false,
            desired: None,
            drifted: false,
            audit: Vec::new(),
        }
    }

    /// The user vanished between the read and the write.
    pub(super) fn deleted(&self) -> UserResult {
        self.failed(
            Outcome::NotFound,
            ReasonCode::UserNotFound,
            "the user was deleted during the sync",
        )
    }

    /// A call about the user failed: the chunk stopped (no result), the whole target failed
    /// (the chunk stops), the call failed for a reason that may pass (the user is retried in a
    /// later run of the chunk, up to `sync.max_user_attempts`, unless enough other users fail
    /// too: then the target is down), or the target refused this user only (`scim_rejected`,
    /// which counts towards `error_ratio` when the target itself refused).
    pub(super) fn call_failed(&self, e: ScimError) -> UserResult {
        let sync = &self.deps.settings.sync;
        match e {
            ScimError::Stopped => UserResult::Skipped,
            ScimError::Unavailable { .. } => {
                let window = Duration::from_secs(sync.outage_window_secs);
                let user = self.user.external_id.as_str();
                if self
                    .deps
                    .circuit
                    .user_failed(user, sync.outage_min_users, window)
                {
                    return UserResult::TargetWide(e);
                }
                // Attempts across runs of the chunk: the most any of the user's rows recorded.
                let attempts = self.user.rows.iter().map(|r| r.attempts).max().unwrap_or(0) + 1;
                if attempts >= i64::from(sync.max_user_attempts) {
                    self.fail_rows(
                        Outcome::Failed,
                        ReasonCode::RetriesExhausted,
                        &format!("{e} (in {attempts} attempts)"),
                        true,
                    )
                } else {
                    UserResult::Retry {
                        lines: self.user.lines().collect(),
                    }
                }
            }
            e if e.is_target_wide() => UserResult::TargetWide(e),
            e => self.fail_rows(
                Outcome::Failed,
                ReasonCode::ScimRejected,
                &e.to_string(),
                is_per_user_target_error(&e),
            ),
        }
    }
}

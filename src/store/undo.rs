//! Jobs the store makes itself, from what it recorded: a revert (one row per user another job
//! applied, from that job's roles before and after), a reconcile (one row per managed user, from
//! the desired-state table), the desired state kept up to date as outcomes are committed, and
//! the claim of a schedule's occurrence.
//!
//! A generated job is an ordinary job once stored: the pipeline plans, approves, syncs and ends
//! it like a submitted batch. Its rows are made by one `INSERT … SELECT` in the transaction that
//! stores the job, so a job and its rows exist together or not at all, whatever their number.

use super::{
    Backend, JobRecord, JobRow, Store, StoreError, StoreResult, begin_write, dual, now_ms,
};
use crate::domain::{JobKind, JobStatus, Mode, Principal};
use sqlx::Row;

/// A job the store generates (revert, reconcile): what it needs besides its rows.
#[derive(Debug, Clone)]
pub(crate) struct NewGenerated {
    pub id: String,
    pub kind: JobKind,
    pub mode: Mode,
    pub dry_run: bool,
    pub request_id: Option<String>,
    pub traceparent: Option<String>,
    pub policy_fingerprint: Option<String>,
    /// The key (or the schedule) may grant privileged roles without approval.
    pub privileged_allowed: bool,
    /// A revert: apply the inverse delta to users changed since.
    pub revert_force: bool,
    /// Who asked for it (a key, a token, or rolesync's schedule).
    pub submitted_by: Principal,
}

impl NewGenerated {
    /// A revert that applies the inverse delta to users changed since, too.
    pub(crate) fn with_force(self, revert_force: bool) -> NewGenerated {
        NewGenerated {
            revert_force,
            ..self
        }
    }
}

/// What `create_revert` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RevertCreated {
    /// The revert job, with one row per user to put back.
    Created {
        users: i64,
    },
    NotFound,
    /// The original has not ended: what it changed is not known yet.
    NotEnded(JobStatus),
    /// The original was a dry run: it wrote nothing.
    DryRun,
    /// The original applied no change to any user.
    NothingApplied,
    /// The original applied changes before rolesync kept the roles before and after a write.
    Unrecorded {
        users: i64,
    },
    /// A real revert of the original is still running.
    RevertRunning(String),
}

/// What `create_reconcile` (or a schedule's claim) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReconcileCreated {
    Created {
        users: i64,
    },
    /// Another reconcile has not ended: none is started while one runs.
    Running(String),
}

/// What claiming a schedule's occurrence did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OccurrenceClaim {
    /// This replica claimed it and started the reconcile.
    Fired { users: i64 },
    /// This replica claimed it, but a reconcile was running: none was started.
    Skipped { running: String },
    /// Another replica claimed it first.
    Taken,
}

/// Stores a generated job row with `users` rows already inserted (inside `$tx`).
macro_rules! insert_generated_job {
    ($tx:expr, $job:expr, $users:expr, $original:expr) => {{
        let job: &NewGenerated = $job;
        let original: Option<&str> = $original;
        sqlx::query(
            "INSERT INTO jobs (id, status, mode, dry_run, created_at_ms, updated_at_ms, c_total, c_pending, \
             policy_fingerprint, request_id, privileged_allowed, traceparent, kind, original_job_id, revert_force, submitted_by) \
             VALUES ($1, 'queued', $2, $3, $4, $4, $5, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(&job.id)
        .bind(job.mode.as_str())
        .bind(i64::from(job.dry_run))
        .bind(now_ms())
        .bind($users)
        .bind(&job.policy_fingerprint)
        .bind(&job.request_id)
        .bind(i64::from(job.privileged_allowed))
        .bind(&job.traceparent)
        .bind(job.kind.as_str())
        .bind(original)
        .bind(i64::from(job.revert_force))
        .bind(job.submitted_by.to_json())
        .execute(&mut *$tx)
        .await
    }};
}

/// The reconcile of `job` inside `$tx`: refused while another reconcile is open, else its rows
/// (one per user with a desired state) and the job. Evaluates to `StoreResult<ReconcileCreated>`.
macro_rules! insert_reconcile {
    ($tx:expr, $job:expr) => {{
        let job: &NewGenerated = $job;
        // The statuses of a job not ended, as in the partial unique index of migration 0006.
        let open: Option<String> = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE kind = 'reconcile' \
             AND status IN ('queued', 'running', 'paused', 'awaiting_approval') LIMIT 1",
        )
        .fetch_optional(&mut *$tx)
        .await?;
        match open {
            Some(id) => Ok::<_, StoreError>(ReconcileCreated::Running(id)),
            None => {
                // One row per managed user, numbered in external-id order.
                let users = sqlx::query(
                    "INSERT INTO items (job_id, line, external_id, role_template, license_tier, outcome, desired_roles) \
                     SELECT $1, ROW_NUMBER() OVER (ORDER BY external_id), external_id, '', '', 'pending', roles \
                     FROM desired_state WHERE roles IS NOT NULL",
                )
                .bind(&job.id)
                .execute(&mut *$tx)
                .await?
                .rows_affected() as i64;
                match insert_generated_job!($tx, job, users, None) {
                    Ok(_) => Ok(ReconcileCreated::Created { users }),
                    // Another replica's reconcile committed between the check and here: the
                    // unique index on open reconciles refused this one.
                    Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                        Ok(ReconcileCreated::Running(String::new()))
                    }
                    Err(e) => Err(e.into()),
                }
            }
        }
    }};
}

// The drift feed's jobs (`drift.rs`) are made by the same statements.
pub(super) use {insert_generated_job, insert_reconcile};

impl Store {
    /// Stores a revert of `original_id`: one row per user the original applied a change to
    /// (its first applied row of that user), asking for the roles the original found
    /// (`desired_roles`) where the user still holds the roles it left (`expected_roles`). A real
    /// revert is linked from the original (`reverted_by`). Refused, with nothing stored, when
    /// the original is not found, not ended, a dry run, changed nobody, or is being reverted.
    pub(crate) async fn create_revert(
        &self,
        original_id: &str,
        job: &NewGenerated,
    ) -> StoreResult<RevertCreated> {
        // The original's row is locked for the transaction on PostgreSQL, so two reverts of one
        // job are made one after the other (SQLite's writer lock, taken at BEGIN, does that).
        let lock = match self.backend {
            Backend::Postgres(_) => "SELECT * FROM jobs WHERE id = $1 FOR UPDATE",
            Backend::Sqlite(_) => "SELECT * FROM jobs WHERE id = $1",
        };
        dual!(&self.backend, |p, DB| {
            let mut tx = begin_write(p).await?;
            let row = sqlx::query_as::<_, JobRow>(lock)
                .bind(original_id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = row else {
                tx.rollback().await?;
                return Ok(RevertCreated::NotFound);
            };
            let original = JobRecord::try_from(row)?;
            let refused = if !original.status.is_terminal() || original.finished_at_ms.is_none() {
                Some(RevertCreated::NotEnded(original.status))
            } else if original.dry_run {
                Some(RevertCreated::DryRun)
            } else {
                None
            };
            if let Some(r) = refused {
                tx.rollback().await?;
                return Ok(r);
            }
            if let Some(by) = &original.reverted_by {
                let status: Option<String> = sqlx::query_scalar(
                    "SELECT status FROM jobs WHERE id = $1 \
                         AND status IN ('queued', 'running', 'paused', 'awaiting_approval')",
                )
                .bind(by)
                .fetch_optional(&mut *tx)
                .await?;
                if status.is_some() {
                    tx.rollback().await?;
                    return Ok(RevertCreated::RevertRunning(by.clone()));
                }
            }
            // `outcome <> 'pending'`, implied by `= 'applied'`, is spelled out so that SQLite
            // too uses the partial index by outcome (migration 0007).
            let unrecorded: i64 = sqlx::query(
                "SELECT COUNT(DISTINCT external_id) FROM items WHERE job_id = $1 AND outcome = 'applied' AND outcome <> 'pending' \
                 AND (roles_after IS NULL OR roles_before IS NULL)",
            )
            .bind(original_id)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
            if unrecorded > 0 {
                tx.rollback().await?;
                return Ok(RevertCreated::Unrecorded { users: unrecorded });
            }
            // The rows of a user carry the same write: the first one speaks for them all.
            let users = sqlx::query(
                "INSERT INTO items (job_id, line, external_id, role_template, license_tier, outcome, \
                 desired_roles, expected_roles) \
                 SELECT $1, ROW_NUMBER() OVER (ORDER BY external_id), external_id, '', '', 'pending', \
                 roles_before, roles_after FROM items WHERE job_id = $2 AND outcome = 'applied' AND outcome <> 'pending' \
                 AND line IN (SELECT MIN(line) FROM items WHERE job_id = $2 AND outcome = 'applied' AND outcome <> 'pending' \
                 GROUP BY external_id)",
            )
            .bind(&job.id)
            .bind(original_id)
            .execute(&mut *tx)
            .await?
            .rows_affected() as i64;
            if users == 0 {
                tx.rollback().await?;
                return Ok(RevertCreated::NothingApplied);
            }
            insert_generated_job!(tx, job, users, Some(original_id))?;
            if !job.dry_run {
                sqlx::query("UPDATE jobs SET reverted_by = $1 WHERE id = $2")
                    .bind(&job.id)
                    .bind(original_id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(RevertCreated::Created { users })
        })
    }

    /// Stores a reconcile over every user with a desired state, unless one is open.
    pub(crate) async fn create_reconcile(
        &self,
        job: &NewGenerated,
    ) -> StoreResult<ReconcileCreated> {
        dual!(&self.backend, |p, DB| {
            let mut tx = begin_write(p).await?;
            let created = insert_reconcile!(tx, job)?;
            match created {
                ReconcileCreated::Created { .. } => tx.commit().await?,
                ReconcileCreated::Running(_) => tx.rollback().await?,
            }
            Ok(created)
        })
    }

    /// Claims occurrence `occurrence_ms` of schedule `name` for `owner` and, in the same
    /// transaction, starts the reconcile `job` (unless one is open). The claim is a conditional
    /// UPDATE of the schedule's last occurrence, so whichever replica commits first fires it
    /// and the others find it taken; one that dies mid-way claims nothing.
    pub(crate) async fn claim_occurrence(
        &self,
        name: &str,
        occurrence_ms: i64,
        owner: &str,
        job: &NewGenerated,
    ) -> StoreResult<OccurrenceClaim> {
        let now = now_ms();
        dual!(&self.backend, |p, DB| {
            let mut tx = begin_write(p).await?;
            sqlx::query(
                "INSERT INTO schedules (name, last_occurrence_ms) VALUES ($1, 0) ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .execute(&mut *tx)
            .await?;
            let claimed = sqlx::query(
                "UPDATE schedules SET last_occurrence_ms = $2, owner = $3, claimed_at_ms = $4, job_id = NULL \
                 WHERE name = $1 AND last_occurrence_ms < $2",
            )
            .bind(name)
            .bind(occurrence_ms)
            .bind(owner)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if claimed == 0 {
                tx.rollback().await?;
                return Ok(OccurrenceClaim::Taken);
            }
            match insert_reconcile!(tx, job)? {
                ReconcileCreated::Created { users } => {
                    sqlx::query("UPDATE schedules SET job_id = $1 WHERE name = $2")
                        .bind(&job.id)
                        .bind(name)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(OccurrenceClaim::Fired { users })
                }
                ReconcileCreated::Running(running) if running.is_empty() => {
                    // Refused by the unique index: the transaction is spent on PostgreSQL.
                    // Another reconcile just started; this occurrence is another replica's
                    // to report (it claimed nothing that it started).
                    tx.rollback().await?;
                    Ok(OccurrenceClaim::Taken)
                }
                ReconcileCreated::Running(running) => {
                    tx.commit().await?;
                    Ok(OccurrenceClaim::Skipped { running })
                }
            }
        })
    }

    /// The desired state of a user: the roles and the job that set them (tests, the CLI).
    pub async fn desired_state(
        &self,
        external_id: &str,
    ) -> StoreResult<Option<(Option<Vec<String>>, String)>> {
        let row: Option<(Option<String>, String)> = dual!(&self.backend, |p, DB| {
            sqlx::query_as("SELECT roles, job_id FROM desired_state WHERE external_id = $1")
                .bind(external_id)
                .fetch_optional(p)
                .await?
        });
        Ok(row.map(|(roles, job)| {
            (
                roles.and_then(|r| serde_json::from_str::<Vec<String>>(&r).ok()),
                job,
            )
        }))
    }
}

/// Moves the desired state of the users of a chunk's commit (`ChunkDone::desired`), inside its
/// transaction.
macro_rules! apply_desired {
    ($tx:expr, $updates:expr) => {{
        let now = $crate::store::now_ms();
        let updates: &[$crate::store::DesiredUpdate] = $updates;
        for u in updates {
            match u {
                $crate::store::DesiredUpdate::Set {
                    external_id,
                    roles,
                    job_id,
                } => {
                    // The set it replaces becomes the previous one, unless this job set it
                    // (a re-run of the chunk): then the previous one stays.
                    sqlx::query(
                        "INSERT INTO desired_state (external_id, roles, job_id, updated_at_ms) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (external_id) DO UPDATE SET \
                         prev_roles = CASE WHEN desired_state.job_id = excluded.job_id THEN desired_state.prev_roles ELSE desired_state.roles END, \
                         prev_job_id = CASE WHEN desired_state.job_id = excluded.job_id THEN desired_state.prev_job_id ELSE desired_state.job_id END, \
                         roles = excluded.roles, job_id = excluded.job_id, updated_at_ms = excluded.updated_at_ms",
                    )
                    .bind(external_id)
                    .bind(serde_json::to_string(roles).unwrap_or_default())
                    .bind(job_id)
                    .bind(now)
                    .execute(&mut *$tx)
                    .await?;
                }
                $crate::store::DesiredUpdate::Revert {
                    external_id,
                    original_job_id,
                    job_id,
                } => {
                    // Only where the reverted job set the desired state: a later job's stands.
                    // The right-hand sides read the row as it was (SQL evaluates them first).
                    sqlx::query(
                        "UPDATE desired_state SET roles = prev_roles, job_id = $3, prev_roles = roles, \
                         prev_job_id = job_id, updated_at_ms = $4 WHERE external_id = $1 AND job_id = $2",
                    )
                    .bind(external_id)
                    .bind(original_job_id)
                    .bind(job_id)
                    .bind(now)
                    .execute(&mut *$tx)
                    .await?;
                }
            }
        }
    }};
}

pub(super) use apply_desired;

#[cfg(test)]
mod tests {
    use super::super::test_support::{ok, row, store_with_job};
    use super::*;
    use crate::store::{ChunkDone, DesiredUpdate};

    impl Store {
        /// The desired-state moves of `done`, committed alone.
        async fn apply_desired_for_test(&self, done: &ChunkDone) -> StoreResult<()> {
            dual!(&self.backend, |p, DB| {
                let mut tx = begin_write(p).await?;
                apply_desired!(tx, &done.desired);
                tx.commit().await?;
            });
            Ok(())
        }
    }

    fn generated(id: &str, kind: JobKind) -> NewGenerated {
        NewGenerated {
            id: id.into(),
            kind,
            mode: Mode::Merge,
            dry_run: false,
            request_id: None,
            traceparent: None,
            policy_fingerprint: None,
            privileged_allowed: false,
            revert_force: false,
            submitted_by: crate::domain::Principal::api_key("test"),
        }
    }

    async fn set_desired(store: &Store, user: &str, roles: &[&str], job: &str) {
        let done = ChunkDone {
            desired: vec![DesiredUpdate::Set {
                external_id: user.into(),
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                job_id: job.into(),
            }],
            ..Default::default()
        };
        ok(store.apply_desired_for_test(&done).await);
    }

    fn roles(v: &[&str]) -> Option<Vec<String>> {
        Some(v.iter().map(|r| (*r).to_owned()).collect())
    }

    #[tokio::test]
    async fn a_revert_swaps_the_desired_state_back_and_a_revert_of_it_swaps_again() {
        let (store, _dir) = store_with_job(&[row(1, "a")], Vec::new()).await;
        set_desired(&store, "a", &["Agent"], "j1").await;
        set_desired(&store, "a", &["Supervisor"], "j2").await;
        let revert = |original: &str, job: &str| ChunkDone {
            desired: vec![DesiredUpdate::Revert {
                external_id: "a".into(),
                original_job_id: original.into(),
                job_id: job.into(),
            }],
            ..Default::default()
        };
        // Reverting j1 changes nothing: j2 set the state since.
        ok(store.apply_desired_for_test(&revert("j1", "r0")).await);
        assert_eq!(
            ok(store.desired_state("a").await),
            Some((roles(&["Supervisor"]), "j2".into()))
        );
        ok(store.apply_desired_for_test(&revert("j2", "r1")).await);
        assert_eq!(
            ok(store.desired_state("a").await),
            Some((roles(&["Agent"]), "r1".into()))
        );
        ok(store.apply_desired_for_test(&revert("r1", "r2")).await);
        assert_eq!(
            ok(store.desired_state("a").await),
            Some((roles(&["Supervisor"]), "r2".into()))
        );
        // Reverting the first job that managed a user leaves no desired state.
        set_desired(&store, "b", &["Agent"], "j3").await;
        ok(store
            .apply_desired_for_test(&ChunkDone {
                desired: vec![DesiredUpdate::Revert {
                    external_id: "b".into(),
                    original_job_id: "j3".into(),
                    job_id: "r3".into(),
                }],
                ..Default::default()
            })
            .await);
        assert_eq!(
            ok(store.desired_state("b").await),
            Some((None, "r3".into()))
        );
    }

    #[tokio::test]
    async fn one_reconcile_at_a_time_and_one_claim_per_occurrence() {
        let (store, _dir) = store_with_job(&[row(1, "a")], Vec::new()).await;
        set_desired(&store, "a", &["Agent"], "j1").await;
        set_desired(&store, "b", &["Agent"], "j1").await;
        let created = ok(store
            .create_reconcile(&generated("r1", JobKind::Reconcile))
            .await);
        assert_eq!(created, ReconcileCreated::Created { users: 2 });
        let again = ok(store
            .create_reconcile(&generated("r2", JobKind::Reconcile))
            .await);
        assert_eq!(again, ReconcileCreated::Running("r1".into()));
        // The schedule's occurrence is claimed once; with r1 open it starts nothing.
        let claim = ok(store
            .claim_occurrence(
                "reconcile",
                1000,
                "me",
                &generated("r3", JobKind::Reconcile),
            )
            .await);
        assert_eq!(
            claim,
            OccurrenceClaim::Skipped {
                running: "r1".into()
            }
        );
        let claim = ok(store
            .claim_occurrence(
                "reconcile",
                1000,
                "other",
                &generated("r4", JobKind::Reconcile),
            )
            .await);
        assert_eq!(claim, OccurrenceClaim::Taken);
        let job = ok(store.get_job("r1").await).map(|j| (j.kind, j.counts.total));
        assert_eq!(job, Some((JobKind::Reconcile, 2)));
    }
}

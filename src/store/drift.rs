//! The drift feed's state (migration 0014): its checkpoint and the lease of the one replica
//! polling it, the commit of a poll (its events, the checkpoint, and the reconcile it starts, in
//! one transaction), and the ids of pushed audit events already seen.
//!
//! A poll is at least once: its events are queued in the transaction that moves the checkpoint,
//! and only while the poller still holds the lease, so a replica killed mid-poll leaves the
//! checkpoint where it was and the next holder polls the same interval again.

use super::undo::{insert_generated_job, insert_reconcile};
use super::{
    NewGenerated, OutboxEvent, ReconcileCreated, Store, StoreError, StoreResult, begin_write, dual,
    insert_events, now_ms,
};

/// What claiming the feed's lease gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FeedClaim {
    /// This replica polls; every audit message up to `checkpoint_ms` was handled.
    Held { checkpoint_ms: i64 },
    /// Another replica holds the lease.
    Taken,
}

/// The reconcile a poll starts with its commit.
#[derive(Debug, Clone)]
pub(crate) enum PollJob<'a> {
    /// Over just these users (external ids; those without a desired state are skipped).
    Users(&'a [String]),
    /// Over every managed user: the fall back to a full scan.
    Everyone,
}

/// What committing a poll did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PollCommit {
    /// The events are queued, the checkpoint moved, the job (if any) stored with `users` rows.
    Committed { users: i64 },
    /// Another replica took the lease meanwhile: nothing was stored.
    LeaseLost,
    /// Another reconcile has not ended: nothing was stored (the poll is tried again).
    ReconcileRunning(String),
    /// A pushed event was recorded before: nothing was stored.
    Duplicate,
}

/// What `commit_drift` stores.
pub(crate) struct FeedCommit<'a> {
    /// A poll: (feed, owner, new checkpoint).
    pub lease: Option<(&'a str, &'a str, i64)>,
    /// A push: the ids to record as seen.
    pub pushed: &'a [&'a str],
    pub events: &'a [OutboxEvent],
    pub job: Option<(&'a NewGenerated, PollJob<'a>, &'a str)>,
}

impl Store {
    /// Takes (or renews) the lease of feed `name` for `owner` until `lease_ms` from now, when it
    /// is free, expired or already this owner's. A feed polled for the first time starts at
    /// `start_ms`.
    pub(crate) async fn claim_drift_feed(
        &self,
        name: &str,
        owner: &str,
        lease_ms: i64,
        start_ms: i64,
    ) -> StoreResult<FeedClaim> {
        let now = now_ms();
        let row: Option<i64> = dual!(&self.backend, |p, DB| {
            let mut tx = begin_write(p).await?;
            sqlx::query(
                "INSERT INTO drift_feed (name, checkpoint_ms, owner, lease_until_ms, updated_at_ms) \
                 VALUES ($1, $2, NULL, 0, $3) ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(start_ms)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let row: Option<i64> = sqlx::query_scalar(
                "UPDATE drift_feed SET owner = $2, lease_until_ms = $3 \
                 WHERE name = $1 AND (owner IS NULL OR owner = $2 OR lease_until_ms < $4) \
                 RETURNING checkpoint_ms",
            )
            .bind(name)
            .bind(owner)
            .bind(now + lease_ms)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            tx.commit().await?;
            row
        });
        Ok(match row {
            Some(checkpoint_ms) => FeedClaim::Held { checkpoint_ms },
            None => FeedClaim::Taken,
        })
    }

    /// Gives the lease up (a graceful stop), so another replica polls at once.
    pub(crate) async fn release_drift_feed(&self, name: &str, owner: &str) -> StoreResult<()> {
        dual!(&self.backend, |p, DB| {
            sqlx::query(
                "UPDATE drift_feed SET owner = NULL, lease_until_ms = 0 WHERE name = $1 AND owner = $2",
            )
            .bind(name)
            .bind(owner)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// The checkpoint of feed `name` (tests, the console).
    pub async fn drift_checkpoint(&self, name: &str) -> StoreResult<Option<i64>> {
        Ok(dual!(&self.backend, |p, DB| {
            sqlx::query_scalar("SELECT checkpoint_ms FROM drift_feed WHERE name = $1")
                .bind(name)
                .fetch_optional(p)
                .await?
        }))
    }

    /// Commits what the feed found, in one transaction: moves the checkpoint (`lease`: a poll
    /// of feed `name` by `owner`, only while it holds the lease), records `pushed` event ids
    /// (a push: refused whole as a duplicate when one was recorded already), queues `events`,
    /// and stores `job` (a reconcile, `reason` recorded) over its scope. Nothing is stored when
    /// the lease was lost, the push is a duplicate, or another reconcile is open.
    pub(crate) async fn commit_drift(&self, c: FeedCommit<'_>) -> StoreResult<PollCommit> {
        let now = now_ms();
        let FeedCommit {
            lease,
            pushed,
            events,
            job,
        } = c;
        dual!(&self.backend, |p, DB| {
            let mut tx = begin_write(p).await?;
            if let Some((name, owner, checkpoint_ms)) = lease {
                // Moves only for the lease holder: the row is locked from here to the commit.
                let held = sqlx::query(
                    "UPDATE drift_feed SET checkpoint_ms = $3, updated_at_ms = $4 \
                     WHERE name = $1 AND owner = $2 AND lease_until_ms >= $4",
                )
                .bind(name)
                .bind(owner)
                .bind(checkpoint_ms)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if held == 0 {
                    tx.rollback().await?;
                    return Ok(PollCommit::LeaseLost);
                }
            }
            for id in pushed {
                let new = sqlx::query(
                    "INSERT INTO pushed_events (event_id, received_at_ms) VALUES ($1, $2) \
                     ON CONFLICT (event_id) DO NOTHING",
                )
                .bind(*id)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if new == 0 {
                    tx.rollback().await?;
                    return Ok(PollCommit::Duplicate);
                }
            }
            let mut users = 0;
            if let Some((job, scope, reason)) = job {
                let created = match scope {
                    PollJob::Everyone => insert_reconcile!(tx, job)?,
                    PollJob::Users(ids) => {
                        let open: Option<String> = sqlx::query_scalar(
                            "SELECT id FROM jobs WHERE kind = 'reconcile' \
                             AND status IN ('queued', 'running', 'paused', 'awaiting_approval') LIMIT 1",
                        )
                        .fetch_optional(&mut *tx)
                        .await?;
                        match open {
                            Some(id) => ReconcileCreated::Running(id),
                            None => {
                                let mut line = 0i64;
                                let mut sorted: Vec<&String> = ids.iter().collect();
                                sorted.sort();
                                sorted.dedup();
                                for external_id in sorted {
                                    let added = sqlx::query(
                                        "INSERT INTO items (job_id, line, external_id, role_template, license_tier, outcome, desired_roles) \
                                         SELECT $1, $2, external_id, '', '', 'pending', roles \
                                         FROM desired_state WHERE external_id = $3 AND roles IS NOT NULL",
                                    )
                                    .bind(&job.id)
                                    .bind(line + 1)
                                    .bind(external_id.as_str())
                                    .execute(&mut *tx)
                                    .await?
                                    .rows_affected();
                                    line += added as i64;
                                }
                                match insert_generated_job!(tx, job, line, None) {
                                    Ok(_) => ReconcileCreated::Created { users: line },
                                    Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                                        ReconcileCreated::Running(String::new())
                                    }
                                    Err(e) => return Err(StoreError::from(e)),
                                }
                            }
                        }
                    }
                };
                match created {
                    ReconcileCreated::Created { users: n } => {
                        users = n;
                        sqlx::query("UPDATE jobs SET reason = $1 WHERE id = $2")
                            .bind(reason)
                            .bind(&job.id)
                            .execute(&mut *tx)
                            .await?;
                    }
                    ReconcileCreated::Running(id) => {
                        tx.rollback().await?;
                        return Ok(PollCommit::ReconcileRunning(id));
                    }
                }
            }
            insert_events!(tx, events);
            tx.commit().await?;
            Ok(PollCommit::Committed { users })
        })
    }

    /// Whether audit message `id` was pushed (and handled) already.
    pub(crate) async fn pushed_event_seen(&self, id: &str) -> StoreResult<bool> {
        if id.is_empty() {
            return Ok(false);
        }
        let n: Option<i64> = dual!(&self.backend, |p, DB| {
            sqlx::query_scalar("SELECT received_at_ms FROM pushed_events WHERE event_id = $1")
                .bind(id)
                .fetch_optional(p)
                .await?
        });
        Ok(n.is_some())
    }
}

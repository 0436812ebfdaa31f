//! Jobs once stored: reads, status transitions (pause and resume, approval, cancel, fail,
//! finish) and retention.

use super::{
    ItemRecord, ItemRow, JobGroup, JobRecord, JobRow, OutboxEvent, Store, StoreError, StoreGauges,
    StoreResult, begin_write, dual, insert_events, now_ms, read_job,
};
use crate::domain::PausedReason;
use crate::domain::{JobStatus, Outcome, Principal};
use sqlx::Row;

impl Store {
    /// What the metrics gauges show (`Metrics::refresh_store_gauges`, at scrape time): jobs by
    /// status and paused reason with their pending rows and the oldest creation time, and the
    /// webhook backlog. Two aggregate queries; the jobs one reads every job row, whose number
    /// `store.retention_days` bounds, and the outbox one only pending and dead rows.
    pub(crate) async fn gauges(&self) -> StoreResult<StoreGauges> {
        let jobs = dual!(&self.backend, |p, DB| {
            let rows = sqlx::query(
                "SELECT status, paused_reason, COUNT(*), CAST(COALESCE(SUM(c_pending), 0) AS BIGINT), \
                 MIN(created_at_ms) FROM jobs GROUP BY status, paused_reason",
            )
            .fetch_all(p)
            .await?;
            let mut jobs = Vec::with_capacity(rows.len());
            for row in rows {
                let status: String = row.try_get(0)?;
                let status = JobStatus::parse(&status)
                    .ok_or_else(|| StoreError::Corrupt(format!("job status `{status}`")))?;
                // A reason is kept only for paused jobs; a word this version does not know is
                // not a reason to fail the scrape.
                let paused_reason = row
                    .try_get::<Option<String>, _>(1)?
                    .and_then(|r| PausedReason::parse(r.as_str()));
                jobs.push(JobGroup {
                    status,
                    paused_reason,
                    count: row.try_get(2)?,
                    rows_pending: row.try_get(3)?,
                    oldest_created_ms: row.try_get(4)?,
                });
            }
            jobs
        });
        let outbox = self.outbox_backlog().await?;
        let users_awaiting_account = self.awaiting_users(None).await?;
        Ok(StoreGauges {
            jobs,
            users_awaiting_account,
            outbox_pending: outbox.pending,
            outbox_oldest_pending_created_ms: outbox.oldest_pending_created_ms,
            outbox_dead: outbox.dead,
        })
    }

    pub async fn get_job(&self, id: &str) -> StoreResult<Option<JobRecord>> {
        let row = dual!(&self.backend, |p, DB| {
            sqlx::query_as::<_, JobRow>("SELECT * FROM jobs WHERE id = $1")
                .bind(id)
                .fetch_optional(p)
                .await?
        });
        let mut job = row.map(JobRecord::try_from).transpose()?;
        if let Some(job) = job.as_mut()
            && job.counts.pending > 0
        {
            job.counts.awaiting_user = self.awaiting_users(Some(id)).await?;
            job.counts.scheduled = self.scheduled_rows(id).await?;
        }
        Ok(job)
    }

    /// Pending rows of a job dated later than now (`effective_at`). Served by
    /// `items_scheduled_idx`.
    pub(crate) async fn scheduled_rows(&self, job_id: &str) -> StoreResult<i64> {
        let n: i64 = dual!(&self.backend, |p, DB| {
            sqlx::query_scalar(
                "SELECT CAST(COUNT(*) AS BIGINT) FROM items WHERE job_id = $1 \
                 AND effective_at_ms IS NOT NULL AND outcome = 'pending' AND effective_at_ms > $2",
            )
            .bind(job_id)
            .bind(now_ms())
            .fetch_one(p)
            .await?
        });
        Ok(n)
    }

    /// Users awaiting their account (`sync.await_user_secs`), of one job or of all: pending
    /// rows with `awaiting_since_ms`, counted by user. Served by `items_awaiting_idx`.
    pub(crate) async fn awaiting_users(&self, job_id: Option<&str>) -> StoreResult<i64> {
        let n: i64 = dual!(&self.backend, |p, DB| {
            sqlx::query_scalar(
                "SELECT CAST(COUNT(*) AS BIGINT) FROM (SELECT DISTINCT job_id, external_id FROM items \
                 WHERE awaiting_since_ms IS NOT NULL AND outcome = 'pending' AND ($1 IS NULL OR job_id = $1)) a",
            )
            .bind(job_id)
            .fetch_one(p)
            .await?
        });
        Ok(n)
    }

    /// Newest first; `cursor` is the last id of the previous page.
    pub(crate) async fn list_jobs(
        &self,
        status: Option<JobStatus>,
        limit: i64,
        cursor: Option<&str>,
    ) -> StoreResult<Vec<JobRecord>> {
        let rows = dual!(&self.backend, |p, DB| {
            sqlx::query_as::<_, JobRow>(
                "SELECT * FROM jobs WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR id < $2) \
                 ORDER BY id DESC LIMIT $3",
            )
            .bind(status.map(JobStatus::as_str))
            .bind(cursor)
            .bind(limit)
            .fetch_all(p)
            .await?
        });
        let mut jobs = rows
            .into_iter()
            .map(JobRecord::try_from)
            .collect::<StoreResult<Vec<_>>>()?;
        // The same two counts `get_job` adds, for the jobs of the page that still have pending
        // rows: two indexed counts each, at most a page's worth.
        for job in jobs.iter_mut().filter(|j| j.counts.pending > 0) {
            job.counts.awaiting_user = self.awaiting_users(Some(&job.id)).await?;
            job.counts.scheduled = self.scheduled_rows(&job.id).await?;
        }
        Ok(jobs)
    }

    /// Rows of a job by line; `cursor` is the last line of the previous page.
    pub async fn list_items(
        &self,
        job_id: &str,
        outcome: Option<Outcome>,
        limit: i64,
        cursor: Option<i64>,
    ) -> StoreResult<Vec<ItemRecord>> {
        // A settled outcome repeats the partial index's predicate (migration 0007) so the
        // index by outcome serves it; all rows, or the pending ones, are read by line.
        let sql = match outcome {
            // Not a stored outcome: pending rows whose user awaits their account.
            Some(Outcome::Scheduled) => {
                "SELECT * FROM items WHERE job_id = $1 AND $2 IS NOT NULL AND outcome = 'pending' \
                 AND effective_at_ms IS NOT NULL AND line > $3 ORDER BY line LIMIT $4"
            }
            Some(Outcome::AwaitingUser) => {
                "SELECT * FROM items WHERE job_id = $1 AND $2 IS NOT NULL AND outcome = 'pending' \
                 AND awaiting_since_ms IS NOT NULL AND line > $3 ORDER BY line LIMIT $4"
            }
            Some(o) if o != Outcome::Pending => {
                "SELECT * FROM items WHERE job_id = $1 AND outcome = $2 AND outcome <> 'pending' \
                 AND line > $3 ORDER BY line LIMIT $4"
            }
            _ => {
                "SELECT * FROM items WHERE job_id = $1 AND ($2 IS NULL OR outcome = $2) AND line > $3 \
                 ORDER BY line LIMIT $4"
            }
        };
        let rows = dual!(&self.backend, |p, DB| {
            sqlx::query_as::<_, ItemRow>(sql)
                .bind(job_id)
                .bind(outcome.map(Outcome::as_str))
                .bind(cursor.unwrap_or(0))
                .bind(limit)
                .fetch_all(p)
                .await?
        });
        rows.into_iter().map(ItemRecord::try_from).collect()
    }

    /// Releases a job held in `awaiting_approval`.
    pub(crate) async fn approve_job(&self, job_id: &str, by: &Principal) -> StoreResult<bool> {
        let now = now_ms();
        dual!(&self.backend, |p, DB| {
            let mut tx = begin_write(p).await?;
            let n = sqlx::query(
                "UPDATE jobs SET status = 'running', updated_at_ms = $1, approved_by = $3 WHERE id = $2 AND status = 'awaiting_approval'",
            )
            .bind(now)
            .bind(job_id)
            .bind(by.to_json())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            sqlx::query("UPDATE chunks SET status = 'ready' WHERE job_id = $1 AND status = 'held'")
                .bind(job_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(n == 1)
        })
    }

    /// If no chunk of the job remains open and no row is pending, moves it to its final status
    /// and queues its `job.finished` event: a running or paused job to the status its rows
    /// imply (`succeeded`, `completed_with_errors`), a cancelled one whose last chunk just
    /// settled stays `cancelled` and gets its `finished_at`. The event is built from the job as
    /// the transition left it, read in the same transaction. Returns the finished job only to
    /// the caller that finished it.
    pub(crate) async fn finish_job_if_done(
        &self,
        job_id: &str,
        event: impl Fn(&JobRecord) -> Vec<OutboxEvent>,
    ) -> StoreResult<Option<JobRecord>> {
        let now = now_ms();
        dual!(&self.backend, |p, DB| {
            let mut tx = begin_write(p).await?;
            let open: i64 =
                sqlx::query("SELECT COUNT(*) FROM chunks WHERE job_id = $1 AND status <> 'done'")
                    .bind(job_id)
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get(0)?;
            if open > 0 {
                tx.rollback().await?;
                return Ok(None);
            }
            let row = sqlx::query_as::<_, JobRow>("SELECT * FROM jobs WHERE id = $1")
                .bind(job_id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = row else {
                tx.rollback().await?;
                return Ok(None);
            };
            let job = JobRecord::try_from(row)?;
            let status = match job.status {
                _ if job.counts.pending > 0 => None,
                JobStatus::Running | JobStatus::Paused if job.planned => {
                    Some(job.counts.final_status())
                }
                JobStatus::Cancelled if job.finished_at_ms.is_none() => Some(JobStatus::Cancelled),
                _ => None,
            };
            let Some(status) = status else {
                tx.rollback().await?;
                return Ok(None);
            };
            // `status = $4`: the status read above, so a transition made meanwhile by another
            // transaction (a cancel of a running job) is never overwritten.
            let row = sqlx::query_as::<_, JobRow>(
                "UPDATE jobs SET status = $1, finished_at_ms = $2, updated_at_ms = $2, paused_reason = NULL \
                 WHERE id = $3 AND status = $4 AND finished_at_ms IS NULL RETURNING *",
            )
            .bind(status.as_str())
            .bind(now)
            .bind(job_id)
            .bind(job.status.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                tx.rollback().await?;
                return Ok(None);
            };
            let finished = JobRecord::try_from(row)?;
            insert_events!(tx, &event(&finished));
            tx.commit().await?;
            Ok(Some(finished))
        })
    }

    /// Jobs with no row left pending that are not finished yet: running ones whose last chunk
    /// was committed by a process that died before finishing them, and cancelled ones whose
    /// last chunk settled that way. `finish_job_if_done` finishes them.
    pub(crate) async fn jobs_to_finish(&self) -> StoreResult<Vec<String>> {
        dual!(&self.backend, |p, DB| {
            let rows = sqlx::query(
                "SELECT id FROM jobs WHERE c_pending = 0 AND ((status IN ('running', 'paused') AND planned = 1) \
                 OR (status = 'cancelled' AND finished_at_ms IS NULL)) LIMIT 100",
            )
            .fetch_all(p)
            .await?;
            rows.iter()
                .map(|r| r.try_get::<String, _>(0).map_err(StoreError::from))
                .collect()
        })
    }

    /// Marks a job `paused` (with a reason) or back to `running` (`None`).
    pub(crate) async fn set_paused(
        &self,
        job_id: &str,
        reason: Option<PausedReason>,
    ) -> StoreResult<()> {
        let reason = reason.map(PausedReason::as_str);
        let now = now_ms();
        dual!(&self.backend, |p, DB| {
            match reason {
                Some(r) => {
                    sqlx::query(
                        "UPDATE jobs SET status = 'paused', paused_reason = $1, updated_at_ms = $2 \
                     WHERE id = $3 AND status = 'running'",
                    )
                    .bind(r)
                    .bind(now)
                    .bind(job_id)
                    .execute(p)
                    .await?
                }
                None => sqlx::query(
                    "UPDATE jobs SET status = 'running', paused_reason = NULL, updated_at_ms = $1 \
                     WHERE id = $2 AND status = 'paused'",
                )
                .bind(now)
                .bind(job_id)
                .execute(p)
                .await?,
            };
        });
        Ok(())
    }

    /// Resumes every paused job (the target answers again).
    pub(crate) async fn resume_paused(&self) -> StoreResult<u64> {
        let now = now_ms();
        dual!(&self.backend, |p, DB| {
            Ok(sqlx::query(
                "UPDATE jobs SET status = 'running', paused_reason = NULL, updated_at_ms = $1 WHERE status = 'paused'",
            )
            .bind(now)
            .execute(p)
            .await?
            .rows_affected())
        })
    }

    /// Resumes jobs paused longer ago than their pause can still be meant: paused for the
    /// target (`target_unavailable`, `rate_limited`) before `target_before_ms`, or for an
    /// `error_ratio` cool-down before `cool_down_before_ms`. A pause is lifted by the process
    /// whose circuit opened it, when its probe finds the target again; this sweep lifts the
    /// pauses nobody will (that process died, or its resume met a store cut).
    pub(crate) async fn resume_stale_paused(
        &self,
        target_before_ms: i64,
        cool_down_before_ms: i64,
    ) -> StoreResult<u64> {
        let now = now_ms();
        dual!(&self.backend, |p, DB| {
            Ok(sqlx::query(
                "UPDATE jobs SET status = 'running', paused_reason = NULL, updated_at_ms = $1 \
                 WHERE status = 'paused' AND ( \
                 (paused_reason IN ('target_unavailable', 'rate_limited') AND updated_at_ms < $2) \
                 OR (paused_reason = 'error_ratio' AND updated_at_ms < $3))",
            )
            .bind(now)
            .bind(target_before_ms)
            .bind(cool_down_before_ms)
            .execute(p)
            .await?
            .rows_affected())
        })
    }

    /// Ends a job that cannot run at all: its pending rows become `failed` with `error`, its
    /// chunks `done`. `event` builds `job.finished` from the job as the transition left it
    /// (final status and counts), read in the same transaction. Returns whether this call made
    /// the transition.
    pub(crate) async fn fail_job(
        &self,
        job_id: &str,
        error: &str,
        event: impl Fn(&JobRecord) -> Vec<OutboxEvent>,
    ) -> StoreResult<bool> {
        let now = now_ms();
        dual!(&self.backend, |p, DB| {
            let mut tx = begin_write(p).await?;
            // The job row first, as every transition does (planning, approval, cancel): one
            // lock order, so two transitions of a job wait for each other instead of deadlocking.
            let n = sqlx::query(
                "UPDATE jobs SET status = 'failed', finished_at_ms = $1, updated_at_ms = $1, error = $2, \
                 lease_owner = NULL, lease_until_ms = NULL, planned = 1, paused_reason = NULL \
                 WHERE id = $3 AND status IN ('queued', 'running', 'paused', 'awaiting_approval')",
            )
            .bind(now)
            .bind(error)
            .bind(job_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
            let moved = sqlx::query(
                "UPDATE items SET outcome = 'failed', reason_code = 'job_failed', reason_message = $1 \
                 WHERE job_id = $2 AND outcome = 'pending'",
            )
            .bind(error)
            .bind(job_id)
            .execute(&mut *tx)
            .await?
            .rows_affected() as i64;
            sqlx::query(
                "UPDATE jobs SET c_pending = c_pending - $1, c_failed = c_failed + $1 WHERE id = $2",
            )
            .bind(moved)
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE chunks SET status = 'done', lease_owner = NULL WHERE job_id = $1")
                .bind(job_id)
                .execute(&mut *tx)
                .await?;
            let job = read_job!(tx, job_id);
            insert_events!(tx, &event(&job));
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Cancels a job before it finished, in one transaction that never cancels a row whose
    /// write may have been sent:
    /// - the job becomes `cancelled` (no chunk of it is claimed for writing any more);
    /// - its chunks no one holds (`ready`, `held`, `planning`) become `done`, unless a row of
    ///   theirs carries an intent (an earlier run sent, or was about to send, its write): such
    ///   a chunk stays `ready`, for a run that reads those users back (`pipeline::sync`);
    /// - its pending rows outside the chunks still open (leased ones, and the ones kept above)
    ///   become `cancelled`: rows never planned, and rows of the chunks just closed.
    ///
    /// A leased chunk is left to its run: the run records what it wrote and cancels the rest
    /// (`pipeline::sync`), or, if its owner died, the chunk is claimed again once the lease
    /// expires and settled without a write. When no chunk stays open the job is final now:
    /// `finished_at` is set and `event` (`job.finished`, built from the job as this
    /// transaction left it) is queued. Otherwise `finished_at` stays NULL until the last open
    /// chunk settles (`finish_job_if_done`).
    ///
    /// Returns the job as the transaction left it, or None if it had ended already.
    pub(crate) async fn cancel_job(
        &self,
        job_id: &str,
        by: &Principal,
        event: impl Fn(&JobRecord) -> Vec<OutboxEvent>,
    ) -> StoreResult<Option<JobRecord>> {
        let now = now_ms();
        dual!(&self.backend, |p, DB| {
            let mut tx = begin_write(p).await?;
            // The job row first (see `fail_job`). From its commit on, no chunk of the job is
            // claimed for writing: `claim_chunk` takes cancelled jobs' chunks to settle only.
            let n = sqlx::query(
                "UPDATE jobs SET status = 'cancelled', updated_at_ms = $1, lease_owner = NULL, \
                 lease_until_ms = NULL, planned = 1, paused_reason = NULL, cancelled_by = $3 \
                 WHERE id = $2 AND status IN ('queued', 'running', 'paused', 'awaiting_approval')",
            )
            .bind(now)
            .bind(job_id)
            .bind(by.to_json())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                tx.rollback().await?;
                return Ok(None);
            }
            // Only chunks not leased are closed. On PostgreSQL a chunk being claimed right now
            // is locked by the claim: this UPDATE waits for it, then sees it `leased` and leaves
            // it (and its rows) to the run.
            sqlx::query(
                "UPDATE chunks SET status = 'done', lease_owner = NULL, lease_until_ms = NULL \
                 WHERE job_id = $1 AND status IN ('ready', 'held', 'planning') AND NOT EXISTS ( \
                 SELECT 1 FROM items i WHERE i.job_id = $1 AND i.chunk_no = chunks.chunk_no \
                 AND i.outcome = 'pending' AND i.intent = 1)",
            )
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE chunks SET status = 'ready' WHERE job_id = $1 AND status IN ('held', 'planning')",
            )
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
            let moved = sqlx::query(
                "UPDATE items SET outcome = 'cancelled', reason_code = 'cancelled', reason_message = $2 \
                 WHERE job_id = $1 AND outcome = 'pending' AND (chunk_no IS NULL OR NOT EXISTS ( \
                 SELECT 1 FROM chunks c WHERE c.job_id = $1 AND c.chunk_no = items.chunk_no AND c.status <> 'done'))",
            )
            .bind(job_id)
            .bind(super::CANCELLED_MESSAGE)
            .execute(&mut *tx)
            .await?
            .rows_affected() as i64;
            sqlx::query(
                "UPDATE jobs SET c_pending = c_pending - $1, c_cancelled = c_cancelled + $1 WHERE id = $2",
            )
            .bind(moved)
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
            let open: i64 =
                sqlx::query("SELECT COUNT(*) FROM chunks WHERE job_id = $1 AND status <> 'done'")
                    .bind(job_id)
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get(0)?;
            if open == 0 {
                // Every pending row was in a chunk still open: none is left.
                sqlx::query("UPDATE jobs SET finished_at_ms = $1 WHERE id = $2")
                    .bind(now)
                    .bind(job_id)
                    .execute(&mut *tx)
                    .await?;
            }
            let job = read_job!(tx, job_id);
            if open == 0 {
                insert_events!(tx, &event(&job));
            }
            tx.commit().await?;
            Ok(Some(job))
        })
    }

    /// Deletes finished jobs (and their rows and chunks) older than `before_ms`, delivered and
    /// dead webhook deliveries older than that, the ids of events pushed before it, and
    /// expired idempotency keys.
    pub async fn prune(&self, before_ms: i64) -> StoreResult<u64> {
        let now = now_ms();
        dual!(&self.backend, |p, DB| {
            let mut tx = begin_write(p).await?;
            sqlx::query(
                "DELETE FROM items WHERE job_id IN (SELECT id FROM jobs WHERE finished_at_ms IS NOT NULL AND finished_at_ms < $1)",
            )
            .bind(before_ms)
            .execute(&mut *tx)
            .await?;
            // A read the job's end did not get to delete goes with any finished job; ids
            // not seen within retention are forgotten.
            sqlx::query(
                "DELETE FROM directory_snapshot WHERE job_id IN (SELECT id FROM jobs WHERE finished_at_ms IS NOT NULL)",
            )
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "DELETE FROM directory_grants WHERE job_id IN (SELECT id FROM jobs WHERE finished_at_ms IS NOT NULL)",
            )
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM user_ids WHERE seen_at_ms < $1")
                .bind(before_ms)
                .execute(&mut *tx)
                .await?;
            // Ids of pushed events past retention: redeliveries come within days.
            sqlx::query("DELETE FROM pushed_events WHERE received_at_ms < $1")
                .bind(before_ms)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "DELETE FROM chunks WHERE job_id IN (SELECT id FROM jobs WHERE finished_at_ms IS NOT NULL AND finished_at_ms < $1)",
            )
            .bind(before_ms)
            .execute(&mut *tx)
            .await?;
            let n = sqlx::query(
                "DELETE FROM jobs WHERE finished_at_ms IS NOT NULL AND finished_at_ms < $1",
            )
            .bind(before_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            sqlx::query("DELETE FROM idempotency_keys WHERE expires_at_ms < $1")
                .bind(now)
                .execute(&mut *tx)
                .await?;
            // Settled deliveries past retention; pending ones stay whatever their age.
            sqlx::query(
                "DELETE FROM webhook_outbox WHERE status IN ('delivered', 'dead') AND created_at_ms < $1",
            )
            .bind(before_ms)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(n)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Counts;
    use crate::store::test_support::{ok, row, store_with_job};
    use crate::store::{ChunkDone, JobDeltas, JobPlan, PlanPage, RowResult};

    /// `job.finished` as the tests read it back: the status and counts it was built from.
    fn event(job: &JobRecord) -> Vec<OutboxEvent> {
        vec![OutboxEvent {
            event_id: format!("finished-{}", job.id),
            event_type: "job.finished".into(),
            payload: serde_json::json!({"status": job.status, "counts": job.counts, "finished": job.finished_at_ms.is_some()})
                .to_string(),
            endpoints: vec!["audit".into()],
            traceparent: None,
        }]
    }

    async fn finished_events(store: &Store) -> Vec<serde_json::Value> {
        ok(store.list_deliveries(None, 100).await)
            .iter()
            .filter(|d| d.event_type == "job.finished")
            .filter_map(|d| serde_json::from_str(&d.payload).ok())
            .collect()
    }

    /// job-1: users A (lines 2, 3), B (4), C (5), D (6) in chunks 0 (A), 1 (B), 2 (C), 3 (D),
    /// planned and running.
    async fn running_job() -> (Store, tempfile::TempDir) {
        let rows = [
            row(2, "A"),
            row(3, "A"),
            row(4, "B"),
            row(5, "C"),
            row(6, "D"),
        ];
        let (store, dir) = store_with_job(&rows, Vec::new()).await;
        assert!(ok(store.claim_job_to_plan("planner", 60_000).await).is_some());
        let page = PlanPage {
            first: true,
            chunks: vec![(0, vec![2, 3]), (1, vec![4]), (2, vec![5]), (3, vec![6])],
            ..Default::default()
        };
        assert!(ok(store
            .save_plan_page("job-1", "planner", 60_000, &page)
            .await));
        let plan = JobPlan {
            status: JobStatus::Running,
            users_total: 4,
            estimate: None,
            approval: None,
            deltas: JobDeltas::default(),
        };
        assert!(ok(store.finish_plan("job-1", "planner", &plan).await));
        (store, dir)
    }

    fn outcomes(items: &[ItemRecord]) -> Vec<(i64, Outcome)> {
        items.iter().map(|i| (i.line, i.outcome)).collect()
    }

    /// A cancel never cancels a row whose write may have been sent: the rows of a leased chunk
    /// wait for its run, and a chunk given back with an intent recorded stays open to be read
    /// back. The job is final, with `job.finished` carrying the final counts, only once the
    /// last of them settles.
    #[tokio::test]
    async fn a_cancel_leaves_rows_in_flight_to_their_run_and_finishes_with_the_last_one() {
        let (store, _dir) = running_job().await;
        // Chunk 0 is being run; chunk 3 was run, its write to D sent, then given back.
        let held = ok(store.claim_chunk("w", 60_000).await);
        assert_eq!(held.as_ref().map(|c| c.chunk_no), Some(0));
        let w = held.unwrap_or_else(|| panic!("claim"));
        let mut by_x = Vec::new();
        for no in 1..=3 {
            let c = ok(store.claim_chunk("x", 60_000).await).unwrap_or_else(|| panic!("claim"));
            assert_eq!(c.chunk_no, no);
            by_x.push(c);
        }
        // An intent names the claim it is recorded under: another owner's is refused.
        assert!(!ok(store
            .mark_intent(&by_x[2], "w", 1_000, &[6], &["Agent".into()], &[])
            .await));
        assert!(ok(store
            .mark_intent(&by_x[2], "x", 1_000, &[6], &["Agent".into()], &[])
            .await));
        for c in &by_x {
            ok(store.release_chunk(c, "x", None, true).await);
        }

        let job = ok(store
            .cancel_job("job-1", &Principal::api_key("test"), event)
            .await)
        .unwrap_or_else(|| panic!("cancel"));
        assert_eq!(job.status, JobStatus::Cancelled);
        assert_eq!(job.finished_at_ms, None, "chunk 0 is still being run");
        assert_eq!((job.counts.pending, job.counts.cancelled), (3, 2));
        assert!(finished_events(&store).await.is_empty());
        let items = ok(store.list_items("job-1", None, 100, None).await);
        assert_eq!(
            outcomes(&items),
            [
                (2, Outcome::Pending),
                (3, Outcome::Pending),
                (4, Outcome::Cancelled),
                (5, Outcome::Cancelled),
                (6, Outcome::Pending),
            ]
        );
        assert_eq!(
            items[2].reason.as_ref().map(|r| r.code.as_str()),
            Some("cancelled")
        );
        assert!(
            ok(store
                .cancel_job("job-1", &Principal::api_key("test"), event)
                .await)
            .is_none(),
            "cancelled once"
        );

        // The kept chunk is claimed to be settled; no other chunk is.
        let y = ok(store.claim_chunk("y", 60_000).await).unwrap_or_else(|| panic!("claim"));
        assert_eq!(
            (y.chunk_no, y.fence),
            (3, 2),
            "a second claim takes the next fence"
        );
        assert_eq!(ok(store.claim_chunk("y", 60_000).await), None);
        // The older claim of chunk 3 can neither record an intent nor commit any more.
        assert!(!ok(store
            .mark_intent(&by_x[2], "x", 1_000, &[6], &["Agent".into()], &[])
            .await));
        let applied = |line| RowResult {
            user_id: Some("u".into()),
            roles_added: Some(vec!["Agent".into()]),
            roles_removed: Some(Vec::new()),
            ..RowResult::outcome(line, Outcome::Applied, None)
        };
        // D was read back without the roles: the write did not land.
        let reason = Some((crate::domain::ReasonCode::Cancelled, "cancelled".to_owned()));
        let d = ChunkDone {
            results: vec![RowResult::outcome(6, Outcome::Cancelled, reason)],
            ..Default::default()
        };
        assert!(
            !ok(store.complete_chunk(&by_x[2], "y", &d).await),
            "an old fence"
        );
        assert!(ok(store.complete_chunk(&y, "y", &d).await));
        assert!(ok(store.finish_job_if_done("job-1", event).await).is_none());

        // The run of chunk 0 wrote A's line 2 and 3 before it stopped.
        let d = ChunkDone {
            results: vec![applied(2), applied(3)],
            ..Default::default()
        };
        assert!(ok(store.complete_chunk(&w, "w", &d).await));
        assert_eq!(ok(store.jobs_to_finish().await), ["job-1"]);
        let done = ok(store.finish_job_if_done("job-1", event).await)
            .unwrap_or_else(|| panic!("finished"));
        assert_eq!(done.status, JobStatus::Cancelled);
        assert!(done.finished_at_ms.is_some());
        let want = Counts {
            total: 5,
            applied: 2,
            cancelled: 3,
            ..Default::default()
        };
        assert_eq!(done.counts, want);
        assert!(ok(store.finish_job_if_done("job-1", event).await).is_none());
        assert!(ok(store.jobs_to_finish().await).is_empty());
        let events = finished_events(&store).await;
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0]["status"], "cancelled");
        assert_eq!(events[0]["finished"], true);
        assert_eq!(events[0]["counts"], serde_json::json!(want));
    }

    /// Nothing leased: the cancel is the job's end, and its event carries the final counts.
    #[tokio::test]
    async fn a_cancel_with_nothing_in_flight_is_final_at_once() {
        let (store, _dir) = running_job().await;
        let job = ok(store
            .cancel_job("job-1", &Principal::api_key("test"), event)
            .await)
        .unwrap_or_else(|| panic!("cancel"));
        assert!(job.finished_at_ms.is_some());
        assert_eq!((job.counts.pending, job.counts.cancelled), (0, 5));
        assert_eq!(ok(store.claim_chunk("w", 60_000).await), None);
        let events = finished_events(&store).await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["status"], "cancelled");
        assert_eq!(events[0]["counts"], serde_json::json!(job.counts));
    }

    /// A failed job's event is built after its rows failed: pending 0, failed all.
    #[tokio::test]
    async fn a_failed_jobs_event_carries_its_final_counts() {
        let (store, _dir) = running_job().await;
        assert!(ok(store.fail_job("job-1", "auth_failed: no", event).await));
        assert!(!ok(store.fail_job("job-1", "again", event).await));
        let events = finished_events(&store).await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["status"], "failed");
        assert_eq!(events[0]["counts"]["pending"], 0);
        assert_eq!(events[0]["counts"]["failed"], 5);
    }
}

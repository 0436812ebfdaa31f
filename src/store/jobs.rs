//! Jobs once stored: reads, status transitions (pause and resume, approval, cancel, fail,
//! finish) and retention.

use super::{
    ItemRecord, ItemRow, JobRecord, JobRow, OutboxEvent, Store, StoreError, StoreResult,
    begin_write, dual, insert_events, now_ms,
};
use crate::domain::PausedReason;
use crate::domain::{JobStatus, Outcome};
use sqlx::Row;

impl Store {
    pub async fn get_job(&self, id: &str) -> StoreResult<Option<JobRecord>> {
        let row = dual!(&self.backend, |p, DB| {
            sqlx::query_as::<_, JobRow>("SELECT * FROM jobs WHERE id = $1")
                .bind(id)
                .fetch_optional(p)
                .await?
        });
        row.map(JobRecord::try_from).transpose()
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
        rows.into_iter().map(JobRecord::try_from).collect()
    }

    /// Rows of a job by line; `cursor` is the last line of the previous page.
    pub async fn list_items(
        &self,
        job_id: &str,
        outcome: Option<Outcome>,
        limit: i64,
        cursor: Option<i64>,
    ) -> StoreResult<Vec<ItemRecord>> {
        let rows = dual!(&self.backend, |p, DB| {
            sqlx::query_as::<_, ItemRow>(
                "SELECT * FROM items WHERE job_id = $1 AND ($2 IS NULL OR outcome = $2) AND line > $3 \
                 ORDER BY line LIMIT $4",
            )
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
    pub(crate) async fn approve_job(&self, job_id: &str) -> StoreResult<bool> {
        let now = now_ms();
        dual!(&self.backend, |p, DB| {
            let mut tx = begin_write(p).await?;
            let n = sqlx::query(
                "UPDATE jobs SET status = 'running', updated_at_ms = $1 WHERE id = $2 AND status = 'awaiting_approval'",
            )
            .bind(now)
            .bind(job_id)
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

    /// If no chunk of a running job remains, moves it to its final status and queues its
    /// `job.finished` event. Returns the finished job only to the caller that finished it.
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
            if !job.planned
                || !matches!(job.status, JobStatus::Running | JobStatus::Paused)
                || job.counts.pending > 0
            {
                tx.rollback().await?;
                return Ok(None);
            }
            let status = job.counts.final_status();
            let n = sqlx::query(
                "UPDATE jobs SET status = $1, finished_at_ms = $2, updated_at_ms = $2, paused_reason = NULL \
                 WHERE id = $3 AND status IN ('running', 'paused')",
            )
            .bind(status.as_str())
            .bind(now)
            .bind(job_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                tx.rollback().await?;
                return Ok(None);
            }
            let mut finished = job;
            finished.status = status;
            finished.finished_at_ms = Some(now);
            insert_events!(tx, &event(&finished));
            tx.commit().await?;
            Ok(Some(finished))
        })
    }

    /// Running jobs with no row left pending: their last chunk was committed by a process that
    /// died before finishing the job. `finish_job_if_done` finishes them.
    pub(crate) async fn jobs_to_finish(&self) -> StoreResult<Vec<String>> {
        dual!(&self.backend, |p, DB| {
            let rows = sqlx::query(
                "SELECT id FROM jobs WHERE status IN ('running', 'paused') AND planned = 1 AND c_pending = 0 LIMIT 100",
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

    /// Ends a job that cannot run at all: its pending rows become `failed` with `reason`.
    pub(crate) async fn fail_job(
        &self,
        job_id: &str,
        error: &str,
        events: &[OutboxEvent],
    ) -> StoreResult<bool> {
        self.end_job(
            job_id,
            JobStatus::Failed,
            Outcome::Failed,
            "job_failed",
            error,
            events,
        )
        .await
    }

    /// Cancels a job at any point before it finished: pending rows become `cancelled`.
    pub(crate) async fn cancel_job(
        &self,
        job_id: &str,
        events: &[OutboxEvent],
    ) -> StoreResult<bool> {
        self.end_job(
            job_id,
            JobStatus::Cancelled,
            Outcome::Cancelled,
            "cancelled",
            "the job was cancelled",
            events,
        )
        .await
    }

    async fn end_job(
        &self,
        job_id: &str,
        status: JobStatus,
        outcome: Outcome,
        code: &str,
        message: &str,
        events: &[OutboxEvent],
    ) -> StoreResult<bool> {
        let now = now_ms();
        dual!(&self.backend, |p, DB| {
            let mut tx = begin_write(p).await?;
            let n = sqlx::query(
                "UPDATE jobs SET status = $1, finished_at_ms = $2, updated_at_ms = $2, error = $3, \
                 lease_owner = NULL, lease_until_ms = NULL, planned = 1 \
                 WHERE id = $4 AND status IN ('queued', 'running', 'paused', 'awaiting_approval')",
            )
            .bind(status.as_str())
            .bind(now)
            .bind(if status == JobStatus::Failed {
                Some(message)
            } else {
                None
            })
            .bind(job_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
            let moved = sqlx::query(
                "UPDATE items SET outcome = $1, reason_code = $2, reason_message = $3 \
                 WHERE job_id = $4 AND outcome = 'pending'",
            )
            .bind(outcome.as_str())
            .bind(code)
            .bind(message)
            .bind(job_id)
            .execute(&mut *tx)
            .await?
            .rows_affected() as i64;
            let column = match outcome {
                Outcome::Cancelled => {
                    "UPDATE jobs SET c_pending = c_pending - $1, c_cancelled = c_cancelled + $1 WHERE id = $2"
                }
                _ => {
                    "UPDATE jobs SET c_pending = c_pending - $1, c_failed = c_failed + $1 WHERE id = $2"
                }
            };
            sqlx::query(column)
                .bind(moved)
                .bind(job_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE chunks SET status = 'done', lease_owner = NULL WHERE job_id = $1")
                .bind(job_id)
                .execute(&mut *tx)
                .await?;
            insert_events!(tx, events);
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Deletes finished jobs (and their rows and chunks) older than `before_ms`, delivered and
    /// dead webhook deliveries older than that, and expired idempotency keys.
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

//! Syncing a planned job: workers lease chunks, record a write's intent before sending it,
//! and commit a chunk's outcomes while they still hold its lease.

use super::undo::apply_desired;
use super::{
    Backend, ChunkClaim, ChunkDone, HeldChunk, ItemRecord, ItemRow, JobDeltas, LeaseRenewal, Store,
    StoreResult, add_counts, apply_results, begin_write, dual, insert_events, now_ms,
};
use sqlx::{QueryBuilder, Row};

impl Store {
    /// Claims one chunk that is ready, or whose lease expired (its owner died), of a running job
    /// (not before its backoff, `not_before_ms`). A cancelled job's open chunk is claimed too,
    /// to be settled without a write (`pipeline::sync`): its owner died mid-run (lease
    /// expired), or it holds rows whose write may have been sent (`cancel_job` kept it
    /// `ready`), and what was written must still be recorded.
    pub(crate) async fn claim_chunk(
        &self,
        owner: &str,
        lease_ms: i64,
    ) -> StoreResult<Option<ChunkClaim>> {
        let confirmed = tokio::time::Instant::now();
        let now = now_ms();
        let row = dual!(&self.backend, |p, DB| {
            // Two texts: only PostgreSQL locks the rows it picks (`SKIP LOCKED`); see `dual!`.
            let sql = match self.backend {
                Backend::Postgres(_) => {
                    "UPDATE chunks SET status = 'leased', lease_owner = $1, lease_until_ms = $2, attempts = attempts + 1, fence = fence + 1 \
                     WHERE (job_id, chunk_no) = (SELECT c.job_id, c.chunk_no FROM chunks c JOIN jobs j ON j.id = c.job_id \
                     WHERE j.status IN ('running', 'cancelled') \
                     AND (c.status = 'ready' OR (c.status = 'leased' AND c.lease_until_ms < $3)) \
                     AND COALESCE(c.not_before_ms, 0) <= $3 \
                     ORDER BY c.job_id, c.chunk_no LIMIT 1 FOR UPDATE OF c SKIP LOCKED) RETURNING job_id, chunk_no, attempts, fence"
                }
                Backend::Sqlite(_) => {
                    "UPDATE chunks SET status = 'leased', lease_owner = $1, lease_until_ms = $2, attempts = attempts + 1, fence = fence + 1 \
                     WHERE rowid = (SELECT c.rowid FROM chunks c JOIN jobs j ON j.id = c.job_id \
                     WHERE j.status IN ('running', 'cancelled') \
                     AND (c.status = 'ready' OR (c.status = 'leased' AND c.lease_until_ms < $3)) \
                     AND COALESCE(c.not_before_ms, 0) <= $3 \
                     ORDER BY c.job_id, c.chunk_no LIMIT 1) RETURNING job_id, chunk_no, attempts, fence"
                }
            };
            match sqlx::query(sql)
                .bind(owner)
                .bind(now + lease_ms)
                .bind(now)
                .fetch_optional(p)
                .await?
            {
                None => None,
                Some(r) => Some(ChunkClaim {
                    job_id: r.try_get(0)?,
                    chunk_no: r.try_get(1)?,
                    attempts: r.try_get(2)?,
                    fence: r.try_get(3)?,
                    confirmed,
                }),
            }
        });
        Ok(row)
    }

    /// Pending rows of a chunk, by user then line.
    pub(crate) async fn chunk_items(
        &self,
        job_id: &str,
        chunk_no: i64,
    ) -> StoreResult<Vec<ItemRecord>> {
        // No ORDER BY: with one, SQLite prefers the index that gives the order
        // (`items_user_idx`) and walks every row of the job for each chunk, which made a
        // million-row job quadratic. The chunk's rows are sorted here instead.
        let rows = dual!(&self.backend, |p, DB| {
            sqlx::query_as::<_, ItemRow>(
                "SELECT * FROM items WHERE job_id = $1 AND chunk_no = $2 AND outcome = 'pending'",
            )
            .bind(job_id)
            .bind(chunk_no)
            .fetch_all(p)
            .await?
        });
        let mut items = rows
            .into_iter()
            .map(ItemRecord::try_from)
            .collect::<StoreResult<Vec<_>>>()?;
        items.sort_by(|a, b| (&a.external_id, a.line).cmp(&(&b.external_id, b.line)));
        Ok(items)
    }

    /// Records, before a write is sent, that this job is about to change the rows' user and
    /// how; a re-run after a crash then reports the user `applied`, with this diff.
    ///
    /// Fenced (`pipeline::fence`): recorded only if `owner` still holds the chunk's lease under
    /// `claim`'s fence with at least `margin_ms` of it left, in the same statement that
    /// records it. Returns false when not: the write must not be sent.
    pub(crate) async fn mark_intent(
        &self,
        claim: &ChunkClaim,
        owner: &str,
        margin_ms: i64,
        lines: &[i64],
        added: &[String],
        removed: &[String],
    ) -> StoreResult<bool> {
        let added = serde_json::to_string(added).unwrap_or_default();
        let removed = serde_json::to_string(removed).unwrap_or_default();
        let job_id = claim.job_id.as_str();
        let recorded = dual!(&self.backend, |p, DB| {
            let mut qb = QueryBuilder::<DB>::new("UPDATE items SET intent = 1, roles_added = ");
            qb.push_bind(&added)
                .push(", roles_removed = ")
                .push_bind(&removed);
            qb.push(" WHERE outcome = 'pending' AND job_id = ")
                .push_bind(job_id)
                .push(" AND line IN (");
            let mut sep = qb.separated(", ");
            for line in lines {
                sep.push_bind(*line);
            }
            qb.push(") AND EXISTS (SELECT 1 FROM chunks WHERE job_id = ")
                .push_bind(job_id)
                .push(" AND chunk_no = ")
                .push_bind(claim.chunk_no)
                .push(" AND status = 'leased' AND lease_owner = ")
                .push_bind(owner)
                .push(" AND fence = ")
                .push_bind(claim.fence)
                .push(" AND lease_until_ms > ")
                .push_bind(now_ms().saturating_add(margin_ms))
                .push(")");
            qb.build().execute(p).await?.rows_affected()
        });
        Ok(recorded > 0)
    }

    /// Takes back the intent of `lines` (the rows of one user) whose write the target refused,
    /// under the same fence as `mark_intent`. Returns false when the lease is not held.
    pub(crate) async fn withdraw_intent(
        &self,
        claim: &ChunkClaim,
        owner: &str,
        lines: &[i64],
    ) -> StoreResult<bool> {
        let job_id = claim.job_id.as_str();
        let done = dual!(&self.backend, |p, DB| {
            let mut qb = QueryBuilder::<DB>::new(
                "UPDATE items SET intent = 0, roles_added = NULL, roles_removed = NULL \
                 WHERE outcome = 'pending' AND job_id = ",
            );
            qb.push_bind(job_id).push(" AND line IN (");
            let mut sep = qb.separated(", ");
            for line in lines {
                sep.push_bind(*line);
            }
            qb.push(") AND EXISTS (SELECT 1 FROM chunks WHERE job_id = ")
                .push_bind(job_id)
                .push(" AND chunk_no = ")
                .push_bind(claim.chunk_no)
                .push(" AND status = 'leased' AND lease_owner = ")
                .push_bind(owner)
                .push(" AND fence = ")
                .push_bind(claim.fence)
                .push(")");
            qb.build().execute(p).await?.rows_affected()
        });
        Ok(done > 0)
    }

    /// The intent recorded for any of `lines` (the rows of one user), read fresh: by this run,
    /// or by an earlier owner of the chunk after this run read the rows.
    pub(crate) async fn intent_of(
        &self,
        job_id: &str,
        lines: &[i64],
    ) -> StoreResult<Option<(Vec<String>, Vec<String>)>> {
        let row: Option<(Option<String>, Option<String>)> = dual!(&self.backend, |p, DB| {
            let mut qb = QueryBuilder::<DB>::new(
                "SELECT roles_added, roles_removed FROM items WHERE intent = 1 AND job_id = ",
            );
            qb.push_bind(job_id).push(" AND line IN (");
            let mut sep = qb.separated(", ");
            for line in lines {
                sep.push_bind(*line);
            }
            qb.push(") LIMIT 1");
            qb.build_query_as().fetch_optional(p).await?
        });
        let list = |v: Option<String>| -> Vec<String> {
            v.and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default()
        };
        Ok(row.map(|(a, r)| (list(a), list(r))))
    }

    /// Heartbeat for live work only: extends the leases of the chunks `owner` is running now
    /// (`chunks`) and of the jobs it is planning now (`plans`). Returns the chunks whose lease
    /// was lost (someone else holds it now) and the jobs among `chunks` that are no longer
    /// running (cancelled or failed), whose runs should stop.
    pub(crate) async fn renew_leases(
        &self,
        owner: &str,
        chunks: &[HeldChunk],
        plans: &[String],
        lease_ms: i64,
    ) -> StoreResult<LeaseRenewal> {
        let until = now_ms() + lease_ms;
        let mut out = LeaseRenewal::default();
        dual!(&self.backend, |p, DB| {
            for (job_id, chunk_no, fence) in chunks {
                let held = sqlx::query(
                    "UPDATE chunks SET lease_until_ms = $1 WHERE job_id = $2 AND chunk_no = $3 \
                     AND lease_owner = $4 AND status = 'leased' AND fence = $5",
                )
                .bind(until)
                .bind(job_id)
                .bind(*chunk_no)
                .bind(owner)
                .bind(*fence)
                .execute(p)
                .await?
                .rows_affected();
                let chunk = (job_id.clone(), *chunk_no, *fence);
                if held == 0 {
                    out.lost.push(chunk);
                } else {
                    out.held.push(chunk);
                }
                let status: Option<String> =
                    sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1")
                        .bind(job_id)
                        .fetch_optional(p)
                        .await?;
                if status.as_deref() != Some("running") && !out.stopped_jobs.contains(job_id) {
                    out.stopped_jobs.push(job_id.clone());
                }
            }
            for job_id in plans {
                sqlx::query(
                    "UPDATE jobs SET lease_until_ms = $1 WHERE id = $2 AND lease_owner = $3 AND planned = 0",
                )
                .bind(until)
                .bind(job_id)
                .bind(owner)
                .execute(p)
                .await?;
            }
        });
        Ok(out)
    }

    /// Gives back every lease `owner` holds, so another worker or replica resumes at once.
    pub(crate) async fn release_leases(&self, owner: &str) -> StoreResult<()> {
        dual!(&self.backend, |p, DB| {
            sqlx::query(
                "UPDATE chunks SET status = 'ready', lease_owner = NULL, lease_until_ms = NULL \
                 WHERE lease_owner = $1 AND status = 'leased'",
            )
            .bind(owner)
            .execute(p)
            .await?;
            sqlx::query(
                "UPDATE jobs SET lease_owner = NULL, lease_until_ms = NULL WHERE lease_owner = $1",
            )
            .bind(owner)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Gives back one chunk without results. `retry_at_ms`: not claimable before then (a
    /// backoff after an error). `counted`: whether this run counts towards the chunk's attempts
    /// (a pause of the whole target does not).
    pub(crate) async fn release_chunk(
        &self,
        claim: &ChunkClaim,
        owner: &str,
        retry_at_ms: Option<i64>,
        counted: bool,
    ) -> StoreResult<()> {
        dual!(&self.backend, |p, DB| {
            sqlx::query(
                "UPDATE chunks SET status = 'ready', lease_owner = NULL, lease_until_ms = NULL, \
                 not_before_ms = $4, attempts = attempts - $5 \
                 WHERE job_id = $1 AND chunk_no = $2 AND lease_owner = $3 AND status = 'leased' AND fence = $6",
            )
            .bind(&claim.job_id)
            .bind(claim.chunk_no)
            .bind(owner)
            .bind(retry_at_ms)
            .bind(i64::from(!counted))
            .bind(claim.fence)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Commits a chunk's outcomes, the job's counters and the audit events in one transaction,
    /// provided `owner` still holds the chunk's lease. Returns false if the lease was lost.
    pub(crate) async fn complete_chunk(
        &self,
        claim: &ChunkClaim,
        owner: &str,
        done: &ChunkDone,
    ) -> StoreResult<bool> {
        let now = now_ms();
        dual!(&self.backend, |p, DB| {
            let mut tx = begin_write(p).await?;
            // Rows left pending for a retry keep the chunk claimable (after its backoff).
            let waiting = !done.await_lines.is_empty() || !done.held_lines.is_empty();
            let status = if done.retry_lines.is_empty() && !waiting {
                "done"
            } else {
                "ready"
            };
            // A run that leaves only joiners awaiting their account is not a failed run: it
            // does not count towards `sync.max_chunk_attempts` (the wait has its own bound).
            let uncounted = i64::from(done.retry_lines.is_empty() && waiting);
            let held = sqlx::query(
                "UPDATE chunks SET status = $4, lease_owner = NULL, lease_until_ms = NULL, not_before_ms = $5, \
                 attempts = attempts - $7 \
                 WHERE job_id = $1 AND chunk_no = $2 AND lease_owner = $3 AND status = 'leased' AND fence = $6",
            )
            .bind(&claim.job_id)
            .bind(claim.chunk_no)
            .bind(owner)
            .bind(status)
            .bind(done.retry_at_ms)
            .bind(claim.fence)
            .bind(uncounted)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if held == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
            let mut counts = crate::domain::Counts::default();
            let mut moved = apply_results!(tx, DB, claim.job_id.as_str(), &done.results);
            for r in &done.results {
                // Each line counts once, however often it appears.
                if moved.remove(&r.line) {
                    counts.add(r.outcome, 1);
                }
            }
            for line in &done.retry_lines {
                sqlx::query(
                    "UPDATE items SET attempts = attempts + 1 WHERE job_id = $1 AND line = $2 AND outcome = 'pending'",
                )
                .bind(&claim.job_id)
                .bind(*line)
                .execute(&mut *tx)
                .await?;
            }
            for (line, since) in &done.await_lines {
                sqlx::query(
                    "UPDATE items SET awaiting_since_ms = COALESCE(awaiting_since_ms, $3) WHERE job_id = $1 AND line = $2 AND outcome = 'pending'",
                )
                .bind(&claim.job_id)
                .bind(*line)
                .bind(*since)
                .execute(&mut *tx)
                .await?;
            }
            add_counts!(tx, &claim.job_id, &counts, &done.deltas, now);
            insert_events!(tx, &done.events);
            apply_desired!(tx, &done.desired);
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Adds SCIM call counters to a job outside a chunk commit (reads spent on a released chunk).
    pub(crate) async fn add_job_deltas(&self, job_id: &str, deltas: &JobDeltas) -> StoreResult<()> {
        let now = now_ms();
        dual!(&self.backend, |p, DB| {
            let mut tx = begin_write(p).await?;
            add_counts!(tx, job_id, &crate::domain::Counts::default(), deltas, now);
            tx.commit().await?;
            Ok(())
        })
    }
}

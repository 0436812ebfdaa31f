//! Planning a job: one planner at a time holds the job's planning lease, reads its pending
//! rows page by page, and commits each page of the plan (rejected rows, rows assigned to
//! chunks) before the next; `finish_plan` then makes the chunks claimable.

use super::{
    Backend, INSERT_BATCH, JobPlan, JobRecord, JobRow, PlanPage, Store, StoreResult, add_counts,
    apply_results, begin_write, dual, insert_events, now_ms,
};
use super::{OutboxEvent, RowResult};
use crate::domain::{Action, Assignment, JobStatus, ReasonCode};
use sqlx::QueryBuilder;

/// A page of a job's pending rows (`pending_rows_page`).
#[derive(Debug)]
pub(crate) struct RowsPage {
    /// Whole users, by external id then line.
    pub(crate) rows: Vec<Assignment>,
    /// Whether rows may follow.
    pub(crate) more: bool,
    /// Users with more pending rows than `max_user_rows`: the page holds their first ones.
    pub(crate) overflow: Vec<Overflow>,
}

/// Keeps at most `cap` rows of each user of a page (rows by user then line); names each user
/// cut short with the last line kept.
fn cap_users(rows: Vec<Assignment>, cap: usize) -> (Vec<Assignment>, Vec<Overflow>) {
    let mut kept: Vec<Assignment> = Vec::with_capacity(rows.len());
    let mut overflow: Vec<Overflow> = Vec::new();
    let mut run = 0usize;
    for row in rows {
        let same = kept
            .last()
            .is_some_and(|k| k.external_id == row.external_id)
            || overflow
                .last()
                .is_some_and(|o| o.external_id == row.external_id && run >= cap);
        run = if same { run + 1 } else { 1 };
        if run <= cap {
            kept.push(row);
        } else if run == cap + 1 {
            overflow.push(Overflow {
                external_id: row.external_id.clone(),
                last_kept_line: kept.last().map_or(0, |k| k.line as i64),
            });
        }
    }
    (kept, overflow)
}

/// The user whose rows beyond a line are too many.
#[derive(Debug, Clone)]
pub(crate) struct Overflow {
    pub(crate) external_id: String,
    pub(crate) last_kept_line: i64,
}

/// A pending row of a generated job (revert, reconcile): one per user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GeneratedRow {
    pub(crate) line: i64,
    pub(crate) external_id: String,
    /// The roles to reach (see `ItemRecord::desired_roles`).
    pub(crate) desired_roles: Vec<String>,
    /// A revert: the roles the reverted job left.
    pub(crate) expected_roles: Vec<String>,
}

/// Tables whose statistics the pipeline refreshes after it filled them in bulk
/// (`Store::refresh_statistics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Analyzed {
    /// A job's rows, after a large ingest.
    Items,
    /// A job's read of the directory, after a scan or a read of grants.
    DirectorySnapshot,
}

impl Analyzed {
    fn statement(self) -> &'static str {
        match self {
            Analyzed::Items => "ANALYZE items",
            Analyzed::DirectorySnapshot => "ANALYZE directory_snapshot",
        }
    }
}

/// Rows a job must hold for the planner to refresh the statistics of `items` before planning
/// it: below this, stale statistics cost little.
pub(crate) const ANALYZE_JOB_ROWS: i64 = 10_000;

impl Store {
    /// One page of a generated job's pending rows, by external id after `after` (keyset
    /// paging on `items_user_idx`); and whether more may follow. Its users have one row each.
    pub(crate) async fn generated_rows_page(
        &self,
        job_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<(Vec<GeneratedRow>, bool)> {
        let limit = limit.max(1);
        let rows: Vec<(i64, String, Option<String>, Option<String>)> = dual!(
            &self.backend,
            |p, DB| {
                sqlx::query_as(
                    "SELECT line, external_id, desired_roles, expected_roles FROM items \
                     WHERE job_id = $1 AND outcome = 'pending' AND ($2 IS NULL OR external_id > $2) \
                     ORDER BY external_id, line LIMIT $3",
                )
                .bind(job_id)
                .bind(after)
                .bind(limit as i64)
                .fetch_all(p)
                .await?
            }
        );
        let more = rows.len() == limit;
        let list = |s: Option<String>| {
            s.and_then(|s| serde_json::from_str::<Vec<String>>(&s).ok())
                .unwrap_or_default()
        };
        let rows = rows
            .into_iter()
            .map(|(line, external_id, desired, expected)| GeneratedRow {
                line,
                external_id,
                desired_roles: list(desired),
                expected_roles: list(expected),
            })
            .collect();
        Ok((rows, more))
    }

    /// Brings the planner statistics of `table` up to date, on PostgreSQL (`ANALYZE`, a sample of
    /// 30 000 rows: a fraction of a second whatever the table). Without it, a table that just
    /// took a million rows is still planned as the handful it held before until autovacuum
    /// (if it is on at all) analyzes it: the scan's `EXISTS` probes into `items` became a hash
    /// join over the whole job, 0.6 s per page saved, 2 000 times for a million users.
    /// SQLite plans by its indexes without statistics and has nothing to refresh.
    pub(crate) async fn refresh_statistics(&self, table: Analyzed) -> StoreResult<()> {
        if let Backend::Postgres(p) = &self.backend {
            sqlx::query(table.statement()).execute(p).await?;
        }
        Ok(())
    }

    /// Gives back a planning that hit an error: the job may be planned again (by any
    /// planner) from `retry_at_ms`, a backoff, not at once and not only when the lease runs out.
    pub(crate) async fn release_plan(
        &self,
        job_id: &str,
        owner: &str,
        retry_at_ms: i64,
    ) -> StoreResult<()> {
        dual!(&self.backend, |p, DB| {
            sqlx::query(
                "UPDATE jobs SET lease_owner = NULL, lease_until_ms = $3 \
                     WHERE id = $1 AND lease_owner = $2 AND planned = 0",
            )
            .bind(job_id)
            .bind(owner)
            .bind(retry_at_ms)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Claims one job that needs planning: a new one, or one whose planner died (lease expired).
    pub(crate) async fn claim_job_to_plan(
        &self,
        owner: &str,
        lease_ms: i64,
    ) -> StoreResult<Option<JobRecord>> {
        let now = now_ms();
        let row = dual!(&self.backend, |p, DB| {
            // Two texts: only PostgreSQL locks the rows it picks (`SKIP LOCKED`); see `dual!`.
            let sql = match self.backend {
                Backend::Postgres(_) => {
                    "UPDATE jobs SET lease_owner = $1, lease_until_ms = $2, updated_at_ms = $3 WHERE id = ( \
                     SELECT id FROM jobs WHERE planned = 0 AND status IN ('queued', 'running') \
                     AND (lease_until_ms IS NULL OR lease_until_ms < $3) ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) \
                     RETURNING *"
                }
                Backend::Sqlite(_) => {
                    "UPDATE jobs SET lease_owner = $1, lease_until_ms = $2, updated_at_ms = $3 WHERE id = ( \
                     SELECT id FROM jobs WHERE planned = 0 AND status IN ('queued', 'running') \
                     AND (lease_until_ms IS NULL OR lease_until_ms < $3) ORDER BY id LIMIT 1) \
                     RETURNING *"
                }
            };
            sqlx::query_as::<_, JobRow>(sql)
                .bind(owner)
                .bind(now + lease_ms)
                .bind(now)
                .fetch_optional(p)
                .await?
        });
        row.map(JobRecord::try_from).transpose()
    }

    /// One page of a job's pending rows, by user then line, of the users after `after`
    /// (keyset paging on `items_user_idx`). Never splits a user: when the page is full, the
    /// last user's rows are left for the next page, unless the page holds one user only, in
    /// which case it grows until that user is whole, or until it holds `max_user_rows` rows of
    /// that user: then the page stops there and `overflow` names the user and its last row
    /// kept; the caller rejects the rest (`reject_rows_beyond`). A page holds at most
    /// `max(limit, max_user_rows)` rows, whatever one user sent.
    pub(crate) async fn pending_rows_page(
        &self,
        job_id: &str,
        after: Option<&str>,
        limit: usize,
        max_user_rows: usize,
    ) -> StoreResult<RowsPage> {
        let max_user_rows = max_user_rows.max(1);
        let mut limit = limit.max(2);
        loop {
            // The first page has no lower bound: an empty external id (rejected when
            // validated) sorts first.
            let sql = if after.is_some() {
                "SELECT line, external_id, role_template, license_tier, action FROM items \
                 WHERE job_id = $1 AND outcome = 'pending' AND external_id > $2 \
                 ORDER BY external_id, line LIMIT $3"
            } else {
                "SELECT line, external_id, role_template, license_tier, action FROM items \
                 WHERE job_id = $1 AND outcome = 'pending' AND $2 = '' \
                 ORDER BY external_id, line LIMIT $3"
            };
            let rows: Vec<(i64, String, String, String, String)> = dual!(&self.backend, |p, DB| {
                sqlx::query_as(sql)
                    .bind(job_id)
                    .bind(after.unwrap_or(""))
                    .bind(limit as i64)
                    .fetch_all(p)
                    .await?
            });
            let full = rows.len() == limit;
            let mut rows: Vec<Assignment> = rows
                .into_iter()
                .map(|(line, external_id, role_template, license_tier, action)| {
                    // Stored by `Ingest` from a parsed `Action`: any other word is a row
                    // no parser made, refused rather than guessed.
                    let parsed = Action::parse(&action);
                    Assignment {
                        line: line as u64,
                        external_id,
                        role_template,
                        license_tier,
                        action: parsed.unwrap_or_default(),
                        // Judged at submission (`ingest`); the validator does not need it.
                        effective_at_ms: None,
                        defect: parsed.is_none().then(|| {
                            format!("action \"{action}\" is not one of: {}", Action::expected())
                        }),
                    }
                })
                .collect();
            if full {
                let last = rows
                    .last()
                    .map(|r| r.external_id.clone())
                    .unwrap_or_default();
                match rows.iter().rposition(|r| r.external_id != last) {
                    // The last user may go on in the next page: left for it.
                    Some(i) => rows.truncate(i + 1),
                    // One user only, already over the cap: capped below.
                    None if rows.len() > max_user_rows => {}
                    None => {
                        limit = (limit * 4).min(max_user_rows + 1).max(limit + 1);
                        continue;
                    }
                }
            }
            let (rows, overflow) = cap_users(rows, max_user_rows);
            return Ok(RowsPage {
                rows,
                more: full,
                overflow,
            });
        }
    }

    /// Rejects the pending rows of one user of a job after `last_kept_line`
    /// (`too_many_rows_for_user`), with the job's counters, in one transaction, and the event
    /// `event(first line, rows)` gives (one for them all, so the cost does not grow with what
    /// one user sent). Returns how many rows it rejected and the first `list` (at least one) of
    /// their lines. Doing it twice is harmless.
    pub(crate) async fn reject_rows_beyond(
        &self,
        job_id: &str,
        overflow: &Overflow,
        message: &str,
        event: &(dyn Fn(i64, u64) -> Option<OutboxEvent> + Sync),
        list: usize,
    ) -> StoreResult<(u64, Vec<i64>)> {
        let list = list.max(1);
        dual!(&self.backend, |p, DB| {
            let mut tx = begin_write(p).await?;
            let lines: Vec<(i64,)> = sqlx::query_as(
                "SELECT line FROM items WHERE job_id = $1 AND external_id = $2 AND line > $3 \
                 AND outcome = 'pending' ORDER BY line LIMIT $4",
            )
            .bind(job_id)
            .bind(&overflow.external_id)
            .bind(overflow.last_kept_line)
            .bind(list as i64)
            .fetch_all(&mut *tx)
            .await?;
            let moved = sqlx::query(
                "UPDATE items SET outcome = 'rejected', reason_code = $1, reason_message = $2 \
                 WHERE job_id = $3 AND external_id = $4 AND line > $5 AND outcome = 'pending'",
            )
            .bind(ReasonCode::TooManyRowsForUser.as_str())
            .bind(message)
            .bind(job_id)
            .bind(&overflow.external_id)
            .bind(overflow.last_kept_line)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if moved > 0 {
                sqlx::query(
                    "UPDATE jobs SET c_pending = c_pending - $1, c_rejected = c_rejected + $1 WHERE id = $2",
                )
                .bind(moved as i64)
                .bind(job_id)
                .execute(&mut *tx)
                .await?;
                let first = lines.first().map_or(overflow.last_kept_line + 1, |(l,)| *l);
                if let Some(e) = event(first, moved) {
                    insert_events!(tx, std::slice::from_ref(&e));
                }
            }
            tx.commit().await?;
            Ok((moved, lines.into_iter().map(|(l,)| l).collect()))
        })
    }

    /// Stores rows found invalid, with the job's counters, outside any planning: for a batch
    /// judged without a job (`/v1/validate` keeps its rows in a scratch store).
    pub(crate) async fn reject_rows(&self, job_id: &str, rows: &[RowResult]) -> StoreResult<()> {
        dual!(&self.backend, |p, DB| {
            let mut tx = begin_write(p).await?;
            let moved = apply_results!(tx, DB, job_id, rows).len() as i64;
            sqlx::query(
                "UPDATE jobs SET c_pending = c_pending - $1, c_rejected = c_rejected + $1 WHERE id = $2",
            )
            .bind(moved)
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Commits one page of a job's plan: its rejected rows (with counters and events), the
    /// chunk of each of its rows, and those chunks, still `planning` (not claimable). Only the
    /// planner holding the lease may, and doing so extends the lease. `first` clears what an
    /// earlier, abandoned planning of the job left. Writing a page twice is harmless: rows
    /// leave `pending` once, chunk numbers are assigned again.
    pub(crate) async fn save_plan_page(
        &self,
        job_id: &str,
        owner: &str,
        lease_ms: i64,
        page: &PlanPage,
    ) -> StoreResult<bool> {
        let now = now_ms();
        dual!(&self.backend, |p, DB| {
            let mut tx = begin_write(p).await?;
            let held = sqlx::query(
                "UPDATE jobs SET lease_until_ms = $1, updated_at_ms = $2 \
                 WHERE id = $3 AND lease_owner = $4 AND planned = 0",
            )
            .bind(now + lease_ms)
            .bind(now)
            .bind(job_id)
            .bind(owner)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if held == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
            if page.first {
                sqlx::query("DELETE FROM chunks WHERE job_id = $1 AND status = 'planning'")
                    .bind(job_id)
                    .execute(&mut *tx)
                    .await?;
                // An earlier planning's read: this one reads the directory again.
                sqlx::query("DELETE FROM directory_snapshot WHERE job_id = $1")
                    .bind(job_id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM directory_grants WHERE job_id = $1")
                    .bind(job_id)
                    .execute(&mut *tx)
                    .await?;
            }
            let moved = apply_results!(tx, DB, job_id, &page.rejected).len() as i64;
            if moved > 0 {
                sqlx::query(
                    "UPDATE jobs SET c_pending = c_pending - $1, c_rejected = c_rejected + $1 WHERE id = $2",
                )
                .bind(moved)
                .bind(job_id)
                .execute(&mut *tx)
                .await?;
            }
            for (chunk_no, lines) in &page.chunks {
                for batch in lines.chunks(INSERT_BATCH) {
                    let mut qb = QueryBuilder::<DB>::new("UPDATE items SET chunk_no = ");
                    qb.push_bind(*chunk_no);
                    qb.push(" WHERE job_id = ")
                        .push_bind(job_id)
                        .push(" AND line IN (");
                    let mut sep = qb.separated(", ");
                    for line in batch {
                        sep.push_bind(*line);
                    }
                    qb.push(")");
                    qb.build().execute(&mut *tx).await?;
                }
            }
            let numbers: Vec<i64> = page.chunks.iter().map(|(n, _)| *n).collect();
            for batch in numbers.chunks(INSERT_BATCH) {
                let mut qb =
                    QueryBuilder::<DB>::new("INSERT INTO chunks (job_id, chunk_no, status) ");
                qb.push_values(batch, |mut b, n| {
                    b.push_bind(job_id).push_bind(*n).push_bind("planning");
                });
                qb.push(" ON CONFLICT (job_id, chunk_no) DO NOTHING");
                qb.build().execute(&mut *tx).await?;
            }
            insert_events!(tx, &page.events);
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Ends a job's planning in one transaction: its status, estimate and approval, and its
    /// chunks made claimable (`ready`, or `held` while it awaits approval). Only the planner
    /// holding the lease may.
    pub(crate) async fn finish_plan(
        &self,
        job_id: &str,
        owner: &str,
        plan: &JobPlan,
    ) -> StoreResult<bool> {
        let now = now_ms();
        dual!(&self.backend, |p, DB| {
            let mut tx = begin_write(p).await?;
            let held = sqlx::query(
                "UPDATE jobs SET planned = 1, status = $1, started_at_ms = COALESCE(started_at_ms, $2), \
                 updated_at_ms = $2, users_total = $3, estimate = $4, approval = $5, lease_owner = NULL, \
                 lease_until_ms = NULL WHERE id = $6 AND lease_owner = $7 AND planned = 0",
            )
            .bind(plan.status.as_str())
            .bind(now)
            .bind(plan.users_total)
            .bind(plan.estimate.as_ref().and_then(|e| serde_json::to_string(e).ok()))
            .bind(plan.approval.as_ref().and_then(|a| serde_json::to_string(a).ok()))
            .bind(job_id)
            .bind(owner)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if held == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
            let chunk_status = if plan.status == JobStatus::AwaitingApproval {
                "held"
            } else {
                "ready"
            };
            sqlx::query("UPDATE chunks SET status = $1 WHERE job_id = $2 AND status = 'planning'")
                .bind(chunk_status)
                .bind(job_id)
                .execute(&mut *tx)
                .await?;
            add_counts!(
                tx,
                job_id,
                &crate::domain::Counts::default(),
                &plan.deltas,
                now
            );
            tx.commit().await?;
            Ok(true)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::JobDeltas;
    use crate::store::test_support::{ok, row, store_with_job};
    use std::time::Duration;

    fn plan() -> JobPlan {
        JobPlan {
            status: JobStatus::Running,
            users_total: 3,
            estimate: None,
            approval: None,
            deltas: JobDeltas::default(),
        }
    }

    /// A planner that dies halfway leaves chunks no one can claim; the next planner's first
    /// page clears them, and only its own plan becomes claimable.
    #[tokio::test]
    async fn an_abandoned_planning_leaves_nothing_claimable_and_is_cleared() {
        let rows = [row(2, "A"), row(3, "A"), row(4, "B"), row(5, "C")];
        let (store, _dir) = store_with_job(&rows, Vec::new()).await;

        // Pages: users never split, and the flag says more may follow.
        let page = ok(store.pending_rows_page("job-1", None, 3, 100).await);
        assert_eq!(
            page.rows.iter().map(|r| r.line).collect::<Vec<_>>(),
            vec![2, 3]
        );
        assert!(page.more);
        let page = ok(store.pending_rows_page("job-1", Some("A"), 3, 100).await);
        assert_eq!(
            page.rows.iter().map(|r| r.line).collect::<Vec<_>>(),
            vec![4, 5]
        );
        assert!(!page.more);
        // A page too small for one user grows until the user is whole.
        let page = ok(store.pending_rows_page("job-1", None, 1, 100).await);
        assert!(page.rows.iter().filter(|r| r.external_id == "A").count() == 2);
        assert!(page.overflow.is_empty());
        // ... but not beyond the cap per user: the rest is named for rejection.
        let page = ok(store.pending_rows_page("job-1", None, 1, 1).await);
        assert_eq!(
            page.rows.iter().map(|r| r.line).collect::<Vec<_>>(),
            vec![2]
        );
        assert_eq!(page.overflow.first().map(|o| o.last_kept_line), Some(2));
        // The cap holds for every user of a page, not only one that fills it.
        let page = ok(store.pending_rows_page("job-1", None, 100, 1).await);
        let users: Vec<&str> = page
            .overflow
            .iter()
            .map(|o| o.external_id.as_str())
            .collect();
        assert_eq!(users, vec!["A"]);
        assert_eq!(
            page.rows.iter().map(|r| r.line).collect::<Vec<_>>(),
            vec![2, 4, 5]
        );

        // Planner `a` writes a first page of three chunks, then stops answering.
        assert!(ok(store.claim_job_to_plan("a", 1).await).is_some());
        let first = PlanPage {
            first: true,
            chunks: vec![(0, vec![2, 3]), (1, vec![4]), (2, vec![5])],
            ..Default::default()
        };
        assert!(ok(store.save_plan_page("job-1", "a", 1, &first).await));
        assert!(
            ok(store.claim_chunk("w", 60_000).await).is_none(),
            "a plan in progress is not claimable"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;

        // Planner `b` takes the job over; `a` can no longer write.
        assert!(ok(store.claim_job_to_plan("b", 60_000).await).is_some());
        assert!(!ok(store
            .save_plan_page("job-1", "a", 60_000, &first)
            .await));
        assert!(!ok(store.finish_plan("job-1", "a", &plan()).await));
        let only = PlanPage {
            first: true,
            chunks: vec![(0, vec![2, 3, 4, 5])],
            ..Default::default()
        };
        assert!(ok(store.save_plan_page("job-1", "b", 60_000, &only).await));
        assert!(ok(store.finish_plan("job-1", "b", &plan()).await));
        let claimed = ok(store.claim_chunk("w", 60_000).await);
        assert_eq!(claimed.map(|c| c.chunk_no), Some(0));
        assert!(
            ok(store.claim_chunk("w", 60_000).await).is_none(),
            "the abandoned plan's chunks were cleared"
        );
        assert_eq!(ok(store.chunk_items("job-1", 0).await).len(), 4);
    }
}

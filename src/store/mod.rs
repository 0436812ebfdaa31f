//! Durable state: jobs, rows, work leases, idempotency keys and the webhook outbox.
//!
//! One interface, two backends on sqlx runtime queries: SQLite (embedded default; WAL, busy
//! timeout) and PostgreSQL (several replicas; chunks claimed with `FOR UPDATE SKIP LOCKED`).
//! The schema keeps times as epoch milliseconds and flags as 0/1 so almost every statement is
//! the same text on both; `dual!` expands one body for each pool type.
//!
//! Invariants:
//! - a job and all its rows are committed in one transaction, or nothing is;
//! - a row leaves `pending` at most once (`… WHERE outcome = 'pending'`), and the job's counters
//!   move in the same transaction, so counts always add up to `total`;
//! - a chunk's results are committed only while its lease is held by the committer, so a chunk
//!   re-claimed after its owner died is never committed twice.

mod records;

pub use ingest::Ingest;
pub use records::*;

use crate::domain::{Assignment, JobStatus, Outcome};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, QueryBuilder, Row, SqlitePool};
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Clone, Debug)]
enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Cheap to clone: a handle on a connection pool.
#[derive(Clone, Debug)]
pub struct Store {
    backend: Backend,
}

/// Runs `$body` once per backend with `$pool` bound to the concrete pool and `$db` to the
/// sqlx database type, so one statement text serves both.
macro_rules! dual {
    ($self:expr, |$pool:ident, $db:ident| $body:expr) => {
        match &$self.backend {
            Backend::Sqlite($pool) => {
                #[allow(dead_code)]
                type $db = sqlx::Sqlite;
                $body
            }
            Backend::Postgres($pool) => {
                #[allow(dead_code)]
                type $db = sqlx::Postgres;
                $body
            }
        }
    };
}

/// Rows waiting to be synced across unfinished jobs (the backpressure bound).
const QUEUED_ROWS_SQL: &str = "SELECT CAST(COALESCE(SUM(c_pending), 0) AS BIGINT) FROM jobs \
     WHERE status IN ('queued', 'running', 'paused', 'awaiting_approval')";

/// Rows per multi-row INSERT: 8 binds a row stays far below both backends' parameter limits.
const INSERT_BATCH: usize = 1000;

/// Moves one row out of `pending` inside a transaction; evaluates to whether it moved.
macro_rules! apply_result {
    ($tx:expr, $job_id:expr, $r:expr) => {{
        let r: &RowResult = $r;
        let n = sqlx::query(
            "UPDATE items SET outcome = $1, reason_code = $2, reason_message = $3, user_id = $4, roles_added = $5, \
             roles_removed = $6, permissions_added = $7, permissions_removed = $8 \
             WHERE job_id = $9 AND line = $10 AND outcome = 'pending'",
        )
        .bind(r.outcome.as_str())
        .bind(r.reason.as_ref().map(|(c, _)| c.as_str()))
        .bind(r.reason.as_ref().map(|(_, m)| m.clone()))
        .bind(r.user_id.clone())
        .bind(json_list(&r.roles_added))
        .bind(json_list(&r.roles_removed))
        .bind(json_list(&r.permissions_added))
        .bind(json_list(&r.permissions_removed))
        .bind($job_id)
        .bind(r.line)
        .execute(&mut *$tx)
        .await?
        .rows_affected();
        n == 1
    }};
}

/// Moves a job's counters by the rows that left `pending` and the chunk's deltas.
macro_rules! add_counts {
    ($tx:expr, $job_id:expr, $c:expr, $d:expr, $now:expr) => {{
        let c: &crate::domain::Counts = $c;
        let d: &JobDeltas = $d;
        sqlx::query(
            "UPDATE jobs SET c_pending = c_pending - $1, c_rejected = c_rejected + $2, c_applied = c_applied + $3, \
             c_unchanged = c_unchanged + $4, c_not_found = c_not_found + $5, c_failed = c_failed + $6, \
             c_planned = c_planned + $7, users_changed = users_changed + $8, users_unchanged = users_unchanged + $9, \
             scim_requests = scim_requests + $10, scim_retries = scim_retries + $11, \
             scim_rate_limited = scim_rate_limited + $12, updated_at_ms = $13 WHERE id = $14",
        )
        .bind(c.total)
        .bind(c.rejected)
        .bind(c.applied)
        .bind(c.unchanged)
        .bind(c.not_found)
        .bind(c.failed)
        .bind(c.planned)
        .bind(d.users_changed)
        .bind(d.users_unchanged)
        .bind(d.scim_requests)
        .bind(d.scim_retries)
        .bind(d.scim_rate_limited)
        .bind($now)
        .bind($job_id)
        .execute(&mut *$tx)
        .await?;
    }};
}

/// Queues events in the outbox, one delivery per endpoint; a replayed event id is ignored.
macro_rules! insert_events {
    ($tx:expr, $events:expr) => {{
        let now = now_ms();
        let events: &[OutboxEvent] = $events;
        for e in events {
            for endpoint in &e.endpoints {
                sqlx::query(
                    "INSERT INTO webhook_outbox (event_id, endpoint, event_type, payload, status, next_attempt_at_ms, created_at_ms) \
                     VALUES ($1, $2, $3, $4, 'pending', $5, $5) ON CONFLICT (event_id, endpoint) DO NOTHING",
                )
                .bind(e.event_id.as_str())
                .bind(endpoint.as_str())
                .bind(e.event_type.as_str())
                .bind(e.payload.as_str())
                .bind(now)
                .execute(&mut *$tx)
                .await?;
            }
        }
    }};
}

/// Every transaction here writes. On SQLite it starts `IMMEDIATE`, taking the write lock at
/// BEGIN: a deferred transaction that reads first and writes later fails at once with
/// SQLITE_BUSY_SNAPSHOT when another connection committed in between (busy_timeout does not
/// apply), which left jobs unfinished when the webhook dispatcher committed at that moment.
/// Taking the lock first makes it wait, bounded by busy_timeout, instead.
async fn begin_write<DB: sqlx::Database>(
    p: &sqlx::Pool<DB>,
) -> Result<sqlx::Transaction<'static, DB>, sqlx::Error> {
    if DB::NAME == <sqlx::Sqlite as sqlx::Database>::NAME {
        p.begin_with("BEGIN IMMEDIATE").await
    } else {
        p.begin().await
    }
}

// After the macros above, which it uses.
mod ingest;

pub fn now_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000
}

impl Store {
    /// Opens (creating if needed) the database at `url` and applies its migrations.
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Store> {
        let backend = if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(30))
                .foreign_keys(true);
            if let Some(parent) = sqlite_parent_dir(url) {
                let _ = std::fs::create_dir_all(parent);
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections.max(2))
                .connect_with(opts)
                .await?;
            sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
            Backend::Sqlite(pool)
        } else {
            let opts = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(max_connections.max(2))
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await?;
            sqlx::migrate!("./migrations/postgres").run(&pool).await?;
            Backend::Postgres(pool)
        };
        Ok(Store { backend })
    }

    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    pub async fn close(&self) {
        dual!(self, |p, DB| p.close().await)
    }

    /// Readiness probe.
    pub async fn ping(&self) -> StoreResult<()> {
        dual!(self, |p, DB| {
            sqlx::query("SELECT 1").execute(p).await?;
        });
        Ok(())
    }

    // ----- ingest -------------------------------------------------------------------------

    /// Stores a job and all its rows in one transaction (see `Ingest` for the streamed form).
    /// With an idempotency key, a key seen before returns the original job (same body) or a
    /// conflict (other body) instead.
    pub async fn create_job(&self, job: &NewJob, rows: &[Assignment]) -> StoreResult<CreateJob> {
        let mut ingest = self.begin_ingest(&job.id).await?;
        for batch in rows.chunks(INSERT_BATCH) {
            ingest.add_rows(batch, &[]).await?;
        }
        ingest.commit(job, None).await
    }

    /// The job an unexpired idempotency key names, with the hash of the body it was used for.
    pub async fn find_idempotency_key(&self, key: &str) -> StoreResult<Option<(String, String)>> {
        let now = now_ms();
        dual!(self, |p, DB| {
            let row = sqlx::query(
                "SELECT body_sha256, job_id FROM idempotency_keys WHERE key = $1 AND expires_at_ms >= $2",
            )
            .bind(key)
            .bind(now)
            .fetch_optional(p)
            .await?;
            match row {
                Some(r) => Ok(Some((r.try_get(0)?, r.try_get(1)?))),
                None => Ok(None),
            }
        })
    }

    // ----- reads --------------------------------------------------------------------------

    pub async fn get_job(&self, id: &str) -> StoreResult<Option<JobRecord>> {
        let row = dual!(self, |p, DB| {
            sqlx::query_as::<_, JobRow>("SELECT * FROM jobs WHERE id = $1")
                .bind(id)
                .fetch_optional(p)
                .await?
        });
        row.map(JobRecord::try_from).transpose()
    }

    /// Newest first; `cursor` is the last id of the previous page.
    pub async fn list_jobs(
        &self,
        status: Option<JobStatus>,
        limit: i64,
        cursor: Option<&str>,
    ) -> StoreResult<Vec<JobRecord>> {
        let rows = dual!(self, |p, DB| {
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
        let rows = dual!(self, |p, DB| {
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

    /// Rows waiting across unfinished jobs: the backpressure signal for ingest.
    pub async fn pending_rows(&self) -> StoreResult<i64> {
        dual!(self, |p, DB| {
            let row = sqlx::query(QUEUED_ROWS_SQL).fetch_one(p).await?;
            Ok(row.try_get::<i64, _>(0)?)
        })
    }

    // ----- planning -----------------------------------------------------------------------

    /// Claims one job that needs planning: a new one, or one whose planner died (lease expired).
    pub async fn claim_job_to_plan(
        &self,
        owner: &str,
        lease_ms: i64,
    ) -> StoreResult<Option<JobRecord>> {
        let now = now_ms();
        let row = dual!(self, |p, DB| {
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
    /// which case it grows until that user is whole. The flag says whether rows may follow.
    pub async fn pending_rows_page(
        &self,
        job_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<(Vec<Assignment>, bool)> {
        let mut limit = limit.max(2);
        loop {
            // The first page has no lower bound: an empty external id (rejected when
            // validated) sorts first.
            let sql = if after.is_some() {
                "SELECT line, external_id, role_template, license_tier FROM items \
                 WHERE job_id = $1 AND outcome = 'pending' AND external_id > $2 \
                 ORDER BY external_id, line LIMIT $3"
            } else {
                "SELECT line, external_id, role_template, license_tier FROM items \
                 WHERE job_id = $1 AND outcome = 'pending' AND $2 = '' \
                 ORDER BY external_id, line LIMIT $3"
            };
            let rows: Vec<(i64, String, String, String)> = dual!(self, |p, DB| {
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
                .map(
                    |(line, external_id, role_template, license_tier)| Assignment {
                        line: line as u64,
                        external_id,
                        role_template,
                        license_tier,
                        defect: None,
                    },
                )
                .collect();
            if !full {
                return Ok((rows, false));
            }
            let last = rows
                .last()
                .map(|r| r.external_id.clone())
                .unwrap_or_default();
            let keep = rows.iter().rposition(|r| r.external_id != last);
            match keep {
                Some(i) => {
                    rows.truncate(i + 1);
                    return Ok((rows, true));
                }
                None => limit *= 4,
            }
        }
    }

    /// Commits one page of a job's plan: its rejected rows (with counters and events), the
    /// chunk of each of its rows, and those chunks, still `planning` (not claimable). Only the
    /// planner holding the lease may, and doing so extends the lease. `first` clears what an
    /// earlier, abandoned planning of the job left. Writing a page twice is harmless: rows
    /// leave `pending` once, chunk numbers are assigned again.
    pub async fn save_plan_page(
        &self,
        job_id: &str,
        owner: &str,
        lease_ms: i64,
        page: &PlanPage,
    ) -> StoreResult<bool> {
        let now = now_ms();
        dual!(self, |p, DB| {
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
            }
            let mut moved = 0i64;
            for r in &page.rejected {
                moved += i64::from(apply_result!(tx, job_id, r));
            }
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
    pub async fn finish_plan(
        &self,
        job_id: &str,
        owner: &str,
        plan: &JobPlan,
    ) -> StoreResult<bool> {
        let now = now_ms();
        dual!(self, |p, DB| {
            let mut tx = begin_write(p).await?;
            let held = sqlx::query(
                "UPDATE jobs SET planned = 1, status = $1, started_at_ms = COALESCE(started_at_ms, $2), \
                 updated_at_ms = $2, users_total = $3, estimate = $4, approval = $5, lease_owner = NULL, \
                 lease_until_ms = NULL WHERE id = $6 AND lease_owner = $7 AND planned = 0",
            )
            .bind(plan.status.as_str())
            .bind(now)
            .bind(plan.users_total)
            .bind(&plan.estimate)
            .bind(&plan.approval)
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

    /// Releases a job held in `awaiting_approval`.
    pub async fn approve_job(&self, job_id: &str) -> StoreResult<bool> {
        let now = now_ms();
        dual!(self, |p, DB| {
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

    // ----- syncing ------------------------------------------------------------------------

    /// Claims one chunk that is ready, or whose lease expired (its owner died), of a running job.
    pub async fn claim_chunk(&self, owner: &str, lease_ms: i64) -> StoreResult<Option<ChunkClaim>> {
        let now = now_ms();
        let row = dual!(self, |p, DB| {
            let sql = match self.backend {
                Backend::Postgres(_) => {
                    "UPDATE chunks SET status = 'leased', lease_owner = $1, lease_until_ms = $2, attempts = attempts + 1 \
                     WHERE (job_id, chunk_no) = (SELECT c.job_id, c.chunk_no FROM chunks c JOIN jobs j ON j.id = c.job_id \
                     WHERE j.status = 'running' AND (c.status = 'ready' OR (c.status = 'leased' AND c.lease_until_ms < $3)) \
                     ORDER BY c.job_id, c.chunk_no LIMIT 1 FOR UPDATE OF c SKIP LOCKED) RETURNING job_id, chunk_no, attempts"
                }
                Backend::Sqlite(_) => {
                    "UPDATE chunks SET status = 'leased', lease_owner = $1, lease_until_ms = $2, attempts = attempts + 1 \
                     WHERE rowid = (SELECT c.rowid FROM chunks c JOIN jobs j ON j.id = c.job_id \
                     WHERE j.status = 'running' AND (c.status = 'ready' OR (c.status = 'leased' AND c.lease_until_ms < $3)) \
                     ORDER BY c.job_id, c.chunk_no LIMIT 1) RETURNING job_id, chunk_no, attempts"
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
                }),
            }
        });
        Ok(row)
    }

    /// Pending rows of a chunk, by user then line.
    pub async fn chunk_items(&self, job_id: &str, chunk_no: i64) -> StoreResult<Vec<ItemRecord>> {
        // No ORDER BY: with one, SQLite prefers the index that gives the order
        // (`items_user_idx`) and walks every row of the job for each chunk, which made a
        // million-row job quadratic. The chunk's rows are sorted here instead.
        let rows = dual!(self, |p, DB| {
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
    pub async fn mark_intent(
        &self,
        job_id: &str,
        lines: &[i64],
        added: &[String],
        removed: &[String],
    ) -> StoreResult<()> {
        let added = serde_json::to_string(added).unwrap_or_default();
        let removed = serde_json::to_string(removed).unwrap_or_default();
        dual!(self, |p, DB| {
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
            qb.push(")");
            qb.build().execute(p).await?;
        });
        Ok(())
    }

    /// Heartbeat: extends every lease `owner` holds (chunks and planning).
    pub async fn extend_leases(&self, owner: &str, lease_ms: i64) -> StoreResult<()> {
        let until = now_ms() + lease_ms;
        dual!(self, |p, DB| {
            sqlx::query("UPDATE chunks SET lease_until_ms = $1 WHERE lease_owner = $2 AND status = 'leased'")
                .bind(until)
                .bind(owner)
                .execute(p)
                .await?;
            sqlx::query(
                "UPDATE jobs SET lease_until_ms = $1 WHERE lease_owner = $2 AND planned = 0",
            )
            .bind(until)
            .bind(owner)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Gives back every lease `owner` holds, so another worker or replica resumes at once.
    pub async fn release_leases(&self, owner: &str) -> StoreResult<()> {
        dual!(self, |p, DB| {
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

    /// Gives back one chunk without results (e.g. the target is down).
    pub async fn release_chunk(&self, claim: &ChunkClaim, owner: &str) -> StoreResult<()> {
        dual!(self, |p, DB| {
            sqlx::query(
                "UPDATE chunks SET status = 'ready', lease_owner = NULL, lease_until_ms = NULL \
                 WHERE job_id = $1 AND chunk_no = $2 AND lease_owner = $3 AND status = 'leased'",
            )
            .bind(&claim.job_id)
            .bind(claim.chunk_no)
            .bind(owner)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Commits a chunk's outcomes, the job's counters and the audit events in one transaction,
    /// provided `owner` still holds the chunk's lease. Returns false if the lease was lost.
    pub async fn complete_chunk(
        &self,
        claim: &ChunkClaim,
        owner: &str,
        done: &ChunkDone,
    ) -> StoreResult<bool> {
        let now = now_ms();
        dual!(self, |p, DB| {
            let mut tx = begin_write(p).await?;
            let held = sqlx::query(
                "UPDATE chunks SET status = 'done', lease_owner = NULL, lease_until_ms = NULL \
                 WHERE job_id = $1 AND chunk_no = $2 AND lease_owner = $3 AND status = 'leased'",
            )
            .bind(&claim.job_id)
            .bind(claim.chunk_no)
            .bind(owner)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if held == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
            let mut counts = crate::domain::Counts::default();
            for r in &done.results {
                if apply_result!(tx, &claim.job_id, r) {
                    counts.add(r.outcome, 1);
                }
            }
            add_counts!(tx, &claim.job_id, &counts, &done.deltas, now);
            insert_events!(tx, &done.events);
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Adds SCIM call counters to a job outside a chunk commit (reads spent on a released chunk).
    pub async fn add_job_deltas(&self, job_id: &str, deltas: &JobDeltas) -> StoreResult<()> {
        let now = now_ms();
        dual!(self, |p, DB| {
            let mut tx = begin_write(p).await?;
            add_counts!(tx, job_id, &crate::domain::Counts::default(), deltas, now);
            tx.commit().await?;
            Ok(())
        })
    }

    /// If no chunk of a running job remains, moves it to its final status and queues its
    /// `job.finished` event. Returns the finished job only to the caller that finished it.
    pub async fn finish_job_if_done(
        &self,
        job_id: &str,
        event: impl Fn(&JobRecord) -> Vec<OutboxEvent>,
    ) -> StoreResult<Option<JobRecord>> {
        let now = now_ms();
        dual!(self, |p, DB| {
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
    pub async fn jobs_to_finish(&self) -> StoreResult<Vec<String>> {
        dual!(self, |p, DB| {
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
    pub async fn set_paused(&self, job_id: &str, reason: Option<&str>) -> StoreResult<()> {
        let now = now_ms();
        dual!(self, |p, DB| {
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
    pub async fn resume_paused(&self) -> StoreResult<u64> {
        let now = now_ms();
        dual!(self, |p, DB| {
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
    pub async fn fail_job(
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
    pub async fn cancel_job(&self, job_id: &str, events: &[OutboxEvent]) -> StoreResult<bool> {
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
        dual!(self, |p, DB| {
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
        dual!(self, |p, DB| {
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

    // ----- webhook outbox -----------------------------------------------------------------
    //
    // A row is one event for one endpoint, keyed by (event_id, endpoint); `event_id` is the
    // `webhook-id`. With batching, a batch is a row of its own (`event_type = 'batch'`) and the
    // rows it carries point at it through `batch_id`: they are never sent alone, and every
    // update of the batch row is applied to them in the same statement, so a batch and its
    // events always show the same status.

    /// Claims up to `limit` deliveries to `endpoint` that are due, leasing them so that a second
    /// dispatcher (another replica) does not send them at the same time. With `batches_only`,
    /// only batch rows (events not yet in a batch wait for `form_batch`).
    pub async fn claim_due_deliveries(
        &self,
        endpoint: &str,
        limit: i64,
        lease_ms: i64,
        batches_only: bool,
    ) -> StoreResult<Vec<OutboxRecord>> {
        let now = now_ms();
        let rows = dual!(self, |p, DB| {
            let sql = match self.backend {
                Backend::Postgres(_) => {
                    "UPDATE webhook_outbox SET lease_until_ms = $1 WHERE (event_id, endpoint) IN ( \
                     SELECT event_id, endpoint FROM webhook_outbox WHERE endpoint = $4 AND status = 'pending' \
                     AND batch_id IS NULL AND ($5 = 0 OR event_type = 'batch') AND next_attempt_at_ms <= $2 \
                     AND (lease_until_ms IS NULL OR lease_until_ms < $2) ORDER BY next_attempt_at_ms LIMIT $3 \
                     FOR UPDATE SKIP LOCKED) RETURNING *"
                }
                Backend::Sqlite(_) => {
                    "UPDATE webhook_outbox SET lease_until_ms = $1 WHERE rowid IN ( \
                     SELECT rowid FROM webhook_outbox WHERE endpoint = $4 AND status = 'pending' \
                     AND batch_id IS NULL AND ($5 = 0 OR event_type = 'batch') AND next_attempt_at_ms <= $2 \
                     AND (lease_until_ms IS NULL OR lease_until_ms < $2) ORDER BY next_attempt_at_ms LIMIT $3) \
                     RETURNING *"
                }
            };
            sqlx::query_as::<_, OutboxRow>(sql)
                .bind(now + lease_ms)
                .bind(now)
                .bind(limit)
                .bind(endpoint)
                .bind(i64::from(batches_only))
                .fetch_all(p)
                .await?
        });
        Ok(rows.into_iter().map(OutboxRecord::from).collect())
    }

    /// Puts up to `max_events` due events of `endpoint` that are in no batch yet into a new
    /// batch `batch_id`, whose body `body` builds from them (oldest first), in one transaction.
    /// Returns how many events it took (0: nothing was due, and no batch was made).
    pub async fn form_batch(
        &self,
        endpoint: &str,
        max_events: i64,
        batch_id: &str,
        body: impl FnOnce(&[OutboxRecord]) -> String,
    ) -> StoreResult<usize> {
        let now = now_ms();
        dual!(self, |p, DB| {
            let mut tx = begin_write(p).await?;
            let sql = match self.backend {
                Backend::Postgres(_) => {
                    "UPDATE webhook_outbox SET batch_id = $1 WHERE (event_id, endpoint) IN ( \
                     SELECT event_id, endpoint FROM webhook_outbox WHERE endpoint = $2 AND status = 'pending' \
                     AND batch_id IS NULL AND event_type <> 'batch' AND next_attempt_at_ms <= $3 \
                     AND (lease_until_ms IS NULL OR lease_until_ms < $3) ORDER BY created_at_ms, event_id \
                     LIMIT $4 FOR UPDATE SKIP LOCKED) RETURNING *"
                }
                Backend::Sqlite(_) => {
                    "UPDATE webhook_outbox SET batch_id = $1 WHERE rowid IN ( \
                     SELECT rowid FROM webhook_outbox WHERE endpoint = $2 AND status = 'pending' \
                     AND batch_id IS NULL AND event_type <> 'batch' AND next_attempt_at_ms <= $3 \
                     AND (lease_until_ms IS NULL OR lease_until_ms < $3) ORDER BY created_at_ms, event_id \
                     LIMIT $4) RETURNING *"
                }
            };
            let rows = sqlx::query_as::<_, OutboxRow>(sql)
                .bind(batch_id)
                .bind(endpoint)
                .bind(now)
                .bind(max_events)
                .fetch_all(&mut *tx)
                .await?;
            if rows.is_empty() {
                tx.rollback().await?;
                return Ok(0);
            }
            let mut members: Vec<OutboxRecord> = rows.into_iter().map(OutboxRecord::from).collect();
            // RETURNING gives no order; the body lists events oldest first.
            members.sort_by(|a, b| {
                (a.created_at_ms, &a.event_id).cmp(&(b.created_at_ms, &b.event_id))
            });
            sqlx::query(
                "INSERT INTO webhook_outbox (event_id, endpoint, event_type, payload, status, next_attempt_at_ms, created_at_ms) \
                 VALUES ($1, $2, 'batch', $3, 'pending', $4, $4)",
            )
            .bind(batch_id)
            .bind(endpoint)
            .bind(body(&members))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(members.len())
        })
    }

    /// Records the result of one attempt of a delivery, and of the events of a batch with it.
    pub async fn mark_delivery(
        &self,
        event_id: &str,
        endpoint: &str,
        result: &DeliveryResult,
    ) -> StoreResult<()> {
        let now = now_ms();
        dual!(self, |p, DB| {
            match result {
                DeliveryResult::Delivered => sqlx::query(
                    "UPDATE webhook_outbox SET status = 'delivered', delivered_at_ms = $1, attempts = attempts + 1, \
                     lease_until_ms = NULL, last_error = NULL WHERE endpoint = $3 AND (event_id = $2 OR batch_id = $2)",
                )
                .bind(now)
                .bind(event_id)
                .bind(endpoint)
                .execute(p)
                .await?,
                DeliveryResult::Retry { next_attempt_at_ms, error } => sqlx::query(
                    "UPDATE webhook_outbox SET attempts = attempts + 1, next_attempt_at_ms = $1, last_error = $2, \
                     lease_until_ms = NULL WHERE endpoint = $4 AND (event_id = $3 OR batch_id = $3)",
                )
                .bind(next_attempt_at_ms)
                .bind(error)
                .bind(event_id)
                .bind(endpoint)
                .execute(p)
                .await?,
                DeliveryResult::Dead { error } => sqlx::query(
                    "UPDATE webhook_outbox SET status = 'dead', attempts = attempts + 1, last_error = $1, \
                     lease_until_ms = NULL WHERE endpoint = $3 AND (event_id = $2 OR batch_id = $2)",
                )
                .bind(error)
                .bind(event_id)
                .bind(endpoint)
                .execute(p)
                .await?,
            };
        });
        Ok(())
    }

    /// Gives back the lease of deliveries this process stopped sending (shutdown), so the next
    /// start or another replica sends them at once instead of when the lease runs out.
    pub async fn release_deliveries(&self, keys: &[(String, String)]) -> StoreResult<()> {
        dual!(self, |p, DB| {
            for (event_id, endpoint) in keys {
                sqlx::query(
                    "UPDATE webhook_outbox SET lease_until_ms = NULL WHERE event_id = $1 AND endpoint = $2 \
                     AND status = 'pending'",
                )
                .bind(event_id)
                .bind(endpoint)
                .execute(p)
                .await?;
            }
        });
        Ok(())
    }

    /// Oldest first; `status` filters.
    pub async fn list_deliveries(
        &self,
        status: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<OutboxRecord>> {
        let rows = dual!(self, |p, DB| {
            sqlx::query_as::<_, OutboxRow>(
                "SELECT * FROM webhook_outbox WHERE ($1 IS NULL OR status = $1) ORDER BY created_at_ms, event_id LIMIT $2",
            )
            .bind(status)
            .bind(limit)
            .fetch_all(p)
            .await?
        });
        Ok(rows.into_iter().map(OutboxRecord::from).collect())
    }

    /// Queues a delivery (dead or delivered) to be sent again now, with a fresh retry schedule.
    /// It keeps its `webhook-id`; an event sent in a batch is sent again in that same batch
    /// (same id, same body), and so is every other event of the batch.
    pub async fn redeliver(&self, event_id: &str, endpoint: Option<&str>) -> StoreResult<u64> {
        let now = now_ms();
        dual!(self, |p, DB| {
            Ok(sqlx::query(
                "UPDATE webhook_outbox SET status = 'pending', next_attempt_at_ms = $1, attempts = 0, lease_until_ms = NULL \
                 WHERE ($3 IS NULL OR endpoint = $3) AND (event_id = $2 OR batch_id = $2 \
                 OR event_id IN (SELECT batch_id FROM webhook_outbox WHERE event_id = $2 AND batch_id IS NOT NULL) \
                 OR batch_id IN (SELECT batch_id FROM webhook_outbox WHERE event_id = $2 AND batch_id IS NOT NULL))",
            )
            .bind(now)
            .bind(event_id)
            .bind(endpoint)
            .execute(p)
            .await?
            .rows_affected())
        })
    }

    /// (events waiting for delivery, creation time of the oldest one). Batch rows are not
    /// events: their events are counted instead.
    pub async fn outbox_backlog(&self) -> StoreResult<(i64, Option<i64>)> {
        dual!(self, |p, DB| {
            let row = sqlx::query(
                "SELECT COUNT(*), MIN(created_at_ms) FROM webhook_outbox WHERE status = 'pending' \
                 AND event_type <> 'batch'",
            )
            .fetch_one(p)
            .await?;
            Ok((row.try_get::<i64, _>(0)?, row.try_get::<Option<i64>, _>(1)?))
        })
    }

    /// Pending deliveries per endpoint name, to find those whose endpoint is not configured.
    pub async fn pending_by_endpoint(&self) -> StoreResult<Vec<(String, i64)>> {
        dual!(self, |p, DB| {
            let rows = sqlx::query(
                "SELECT endpoint, COUNT(*) FROM webhook_outbox WHERE status = 'pending' GROUP BY endpoint",
            )
            .fetch_all(p)
            .await?;
            rows.iter()
                .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?)))
                .collect()
        })
    }
}

fn json_list(v: &Option<Vec<String>>) -> Option<String> {
    v.as_ref().and_then(|v| serde_json::to_string(v).ok())
}

fn sqlite_parent_dir(url: &str) -> Option<&std::path::Path> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = path.split('?').next()?;
    if path.is_empty() || path == ":memory:" {
        return None;
    }
    std::path::Path::new(path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
}

#[cfg(test)]
mod outbox_tests {
    use super::*;
    use crate::domain::Mode;

    fn event(id: &str, endpoints: &[&str]) -> OutboxEvent {
        OutboxEvent {
            event_id: id.to_owned(),
            event_type: "job.finished".to_owned(),
            payload: format!(r#"{{"type":"job.finished","data":{{"n":"{id}"}}}}"#),
            endpoints: endpoints.iter().map(|e| (*e).to_owned()).collect(),
        }
    }

    /// Outbox rows enter with a job (as the rows of an unreadable line's events do).
    async fn store_with(events: Vec<OutboxEvent>) -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::connect(&url, 2)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let job = NewJob {
            id: "job-1".into(),
            mode: Mode::Merge,
            dry_run: false,
            request_id: None,
            policy_fingerprint: None,
            idempotency: None,
            events,
        };
        store
            .create_job(&job, &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        (store, dir)
    }

    fn ok<T>(r: StoreResult<T>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn a_batch_and_its_events_move_together_and_redeliver_together() {
        let events = (0..3)
            .map(|i| event(&format!("msg_{i}"), &["a", "b"]))
            .collect();
        let (store, _dir) = store_with(events).await;
        assert_eq!(ok(store.outbox_backlog().await).0, 6);

        let n = ok(store
            .form_batch("a", 2, "msg_batch1", |m| format!("{}", m.len()))
            .await);
        assert_eq!(n, 2);
        // Endpoint `a`: the batch and the one event left; with batches only, just the batch.
        let only_batches = ok(store.claim_due_deliveries("a", 10, 60_000, true).await);
        assert_eq!(only_batches.len(), 1);
        assert_eq!(only_batches[0].event_id, "msg_batch1");
        assert_eq!(only_batches[0].payload, "2");
        // Leased: not claimed twice.
        assert!(ok(store.claim_due_deliveries("a", 10, 60_000, true).await).is_empty());
        // Batch rows are not events: the backlog still counts 6 events.
        assert_eq!(ok(store.outbox_backlog().await).0, 6);

        let dead = DeliveryResult::Dead {
            error: "receiver answered 400".into(),
        };
        ok(store.mark_delivery("msg_batch1", "a", &dead).await);
        let rows = ok(store.list_deliveries(Some("dead"), 100).await);
        let mut ids: Vec<&str> = rows.iter().map(|r| r.event_id.as_str()).collect();
        ids.sort();
        assert_eq!(
            ids,
            vec!["msg_0", "msg_1", "msg_batch1"],
            "endpoint b untouched"
        );
        assert!(rows.iter().all(|r| r.attempts == 1));

        // Redelivering one event of the batch requeues the whole batch on that endpoint.
        assert_eq!(ok(store.redeliver("msg_1", Some("a")).await), 3);
        let again = ok(store.claim_due_deliveries("a", 10, 60_000, true).await);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].event_id, "msg_batch1");
        ok(store
            .mark_delivery("msg_batch1", "a", &DeliveryResult::Delivered)
            .await);
        assert_eq!(
            ok(store.list_deliveries(Some("delivered"), 100).await).len(),
            3
        );

        // Endpoint `b` sends singly; give a lease back at shutdown and it is claimable again.
        let singles = ok(store.claim_due_deliveries("b", 10, 60_000, false).await);
        assert_eq!(singles.len(), 3);
        let keys: Vec<(String, String)> = singles
            .iter()
            .map(|d| (d.event_id.clone(), d.endpoint.clone()))
            .collect();
        ok(store.release_deliveries(&keys).await);
        assert_eq!(
            ok(store.claim_due_deliveries("b", 10, 60_000, false).await).len(),
            3
        );

        // Pruning drops settled deliveries past retention and keeps the waiting ones.
        ok(store.prune(now_ms() + 1).await);
        let left = ok(store.list_deliveries(None, 100).await);
        assert_eq!(left.len(), 4, "msg_2 on a, and the three of b");
        assert!(left.iter().all(|r| r.status == "pending"));
    }
}

#[cfg(test)]
mod plan_tests {
    use super::*;
    use crate::domain::Mode;

    fn ok<T>(r: StoreResult<T>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    fn row(line: u64, user: &str) -> Assignment {
        Assignment {
            line,
            external_id: user.into(),
            role_template: "Agent".into(),
            license_tier: "Standard Agent".into(),
            defect: None,
        }
    }

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
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = ok(Store::connect(&url, 2).await);
        let job = NewJob {
            id: "job-1".into(),
            mode: Mode::Merge,
            dry_run: false,
            request_id: None,
            policy_fingerprint: None,
            idempotency: None,
            events: Vec::new(),
        };
        let rows = [row(2, "A"), row(3, "A"), row(4, "B"), row(5, "C")];
        ok(store.create_job(&job, &rows).await);

        // Pages: users never split, and the flag says more may follow.
        let (page, more) = ok(store.pending_rows_page("job-1", None, 3).await);
        assert_eq!(page.iter().map(|r| r.line).collect::<Vec<_>>(), vec![2, 3]);
        assert!(more);
        let (page, more) = ok(store.pending_rows_page("job-1", Some("A"), 3).await);
        assert_eq!(page.iter().map(|r| r.line).collect::<Vec<_>>(), vec![4, 5]);
        assert!(!more);
        // A page too small for one user grows until the user is whole.
        let (page, _) = ok(store.pending_rows_page("job-1", None, 1).await);
        assert!(page.iter().filter(|r| r.external_id == "A").count() == 2);

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

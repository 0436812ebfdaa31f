//! Durable state: jobs, rows, work leases, idempotency keys and the webhook outbox.
//!
//! One interface, two backends on sqlx runtime queries: SQLite (embedded default; WAL, busy
//! timeout) and PostgreSQL (several replicas; chunks claimed with `FOR UPDATE SKIP LOCKED`).
//! The schema keeps times as epoch milliseconds and flags as 0/1 so almost every statement is
//! the same text on both; `dual!` runs one body on whichever backend a pool or a transaction
//! belongs to.
//!
//! This file holds the `Store` handle, connecting and migrating, errors, `dual!`, the one way
//! to open a transaction (`begin_write`) and the statements several concerns share. The
//! methods are split by concern:
//! - `ingest`: a job received (its rows, its idempotency key, the backpressure bound);
//! - `jobs`: reads, status transitions (pause, approve, cancel, fail, finish) and retention;
//! - `planning`: the planning lease, pages of pending rows, and the plan committed page by page;
//! - `snapshot`: a job's directory scan, saved page by page and read back by chunk;
//! - `syncing`: chunk leases, write intents, and a chunk's outcomes committed;
//! - `outbox`: webhook deliveries;
//! - `records`: the rows and records all of them read and write.
//!
//! Invariants:
//! - a job and all its rows are committed in one transaction, or nothing is;
//! - a row leaves `pending` at most once (`… WHERE outcome = 'pending'`), and the job's counters
//!   move in the same transaction, so counts always add up to `total`;
//! - a chunk's results are committed only while its lease is held by the committer, so a chunk
//!   re-claimed after its owner died is never committed twice.

mod drift;
mod ingest;
mod jobs;
mod outbox;
mod planning;
mod records;
mod snapshot;
mod syncing;
mod undo;

pub(crate) use records::{
    ChunkClaim, ChunkDone, CreateJob, DeliveryResult, DesiredUpdate, HeldChunk, IdempotencyClaim,
    JobDeltas, JobPlan, LeaseRenewal, NewJob, OutboxRecord, PlanPage,
};
// Public: read outside the crate (`get_job`, `list_items` in tests/) or named by public
// functions of other modules (`job_view`, `validate_rows`, `EventFactory::event`).
pub(crate) use drift::{FeedClaim, FeedCommit, PollCommit, PollJob};
pub(crate) use ingest::Ingest;
pub(crate) use planning::{ANALYZE_JOB_ROWS, Analyzed, GeneratedRow, Overflow};
pub use records::{ItemRecord, JobGroup, JobRecord, OutboxEvent, Reason, RowResult, StoreGauges};
use records::{ItemRow, JobRow, OutboxRow};
pub(crate) use snapshot::ScannedUser;
pub(crate) use undo::{NewGenerated, OccurrenceClaim, ReconcileCreated, RevertCreated};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};
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

impl StoreError {
    /// A failure that passes by itself, so the API answers 503 with `Retry-After`: SQLite busy or
    /// locked, PostgreSQL connection exceptions (class 08), server shutdown or start-up
    /// (57P01-57P03), serialization failures and deadlocks (40001, 40P01), too many connections
    /// (53300), lock not available (55P03); and pool time-outs, I/O and protocol errors (a
    /// connection cut mid-message) on either.
    pub fn is_transient(&self) -> bool {
        let StoreError::Sqlx(e) = self else {
            return false;
        };
        match e {
            // `Protocol`: a connection cut during its handshake or a message (seen when a
            // PostgreSQL server goes away: "unexpected response from SSLRequest").
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => {
                let code = db.code().unwrap_or_default();
                let code = code.as_ref();
                // SQLite's primary result code is the low byte of the extended one.
                let sqlite_busy = code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6));
                sqlite_busy
                    || code.starts_with("08")
                    || matches!(
                        code,
                        "57P01" | "57P02" | "57P03" | "40001" | "40P01" | "53300" | "55P03"
                    )
            }
            _ => false,
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The reason message of a row cancelled with its job (reason code `cancelled`), wherever the
/// row is cancelled: by the cancel itself or by the run that settles its chunk.
pub(crate) const CANCELLED_MESSAGE: &str = "the job was cancelled";

/// One value per backend: a `Store`'s pool (`Pools`) or an open transaction (`ingest::Tx`).
/// `dual!` opens it.
#[derive(Clone, Debug)]
enum Backend<S, P> {
    Sqlite(S),
    Postgres(P),
}

type Pools = Backend<SqlitePool, PgPool>;

/// Cheap to clone: a handle on a connection pool.
#[derive(Clone, Debug)]
pub struct Store {
    backend: Pools,
}

/// `dual!(on, |x, DB| body)` runs `body` on the backend `on` (a `Backend`: pools, a
/// transaction, or a reference to either) belongs to, with `x` bound to what it holds and `DB`
/// to that backend's sqlx database type (for `QueryBuilder::<DB>`). The body is compiled once
/// per backend, so it must hold for both.
///
/// Invariant: a statement is one SQL text for both backends, with `$n` placeholders (on
/// SQLite too, sqlx binds `$n` to the n-th argument), epoch-millisecond integers for times and
/// 0/1 for flags.
/// Where the text has to differ, the statement says why; so far that is:
/// - the claims (`claim_job_to_plan`, `claim_chunk`, `claim_due_deliveries`, `form_batch`):
///   PostgreSQL locks the rows it picks with `FOR UPDATE SKIP LOCKED`, so that replicas claiming
///   at once take different rows instead of waiting on each other; SQLite has no row locks and
///   needs none, its single writer makes each claim atomic. PostgreSQL has no `rowid`, so its
///   text names the picked rows by key where SQLite's uses `rowid`;
/// - adding a job's rows (`Ingest::add_rows`, `Ingest::add_stream`): `COPY` on PostgreSQL (one
///   `COPY` open for the whole body), multi-row INSERTs on SQLite.
macro_rules! dual {
    ($on:expr, |$x:ident, $db:ident| $body:expr) => {
        match $on {
            $crate::store::Backend::Sqlite($x) => {
                #[allow(dead_code)]
                type $db = sqlx::Sqlite;
                $body
            }
            $crate::store::Backend::Postgres($x) => {
                #[allow(dead_code)]
                type $db = sqlx::Postgres;
                $body
            }
        }
    };
}

/// Rows per multi-row INSERT: 8 binds a row stays far below both backends' parameter limits.
const INSERT_BATCH: usize = 1000;

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

// ----- statements several concerns run inside their transactions ------------------------
//
// Macros rather than functions: `$tx` is a transaction of either backend, as `dual!` binds it.

/// Results settled by one `UPDATE` (11 parameters a result: well under either backend's limit).
pub(crate) const RESULTS_PER_UPDATE: usize = 100;

/// Moves rows out of `pending` inside a transaction, `RESULTS_PER_UPDATE` to a statement; evaluates
/// to the lines that moved (a row no longer pending is left as it is). One statement per row
/// was a round trip to the store per row, made under SQLite's write lock: most of a chunk's
/// commit, and the chunks' commits queue on that lock.
macro_rules! apply_results {
    ($tx:expr, $db:ty, $job_id:expr, $results:expr) => {{
        let results: &[$crate::store::RowResult] = $results;
        let mut moved = std::collections::HashSet::<i64>::new();
        for batch in results.chunks($crate::store::RESULTS_PER_UPDATE) {
            // `VALUES` names its columns column1…column11 on both backends.
            let mut qb = sqlx::QueryBuilder::<$db>::new(
                "UPDATE items SET outcome = v.column1, reason_code = v.column2, \
                 reason_message = v.column3, user_id = v.column4, roles_added = v.column5, \
                 roles_removed = v.column6, permissions_added = v.column7, \
                 permissions_removed = v.column8, roles_before = v.column9, roles_after = v.column10 \
                 FROM (",
            );
            qb.push_values(batch, |mut b, r| {
                b.push_bind(r.outcome.as_str())
                    .push_bind(r.reason.as_ref().map(|(c, _)| c.as_str()))
                    .push_bind(r.reason.as_ref().map(|(_, m)| m.as_str()))
                    .push_bind(r.user_id.as_deref())
                    .push_bind($crate::store::json_list(&r.roles_added))
                    .push_bind($crate::store::json_list(&r.roles_removed))
                    .push_bind($crate::store::json_list(&r.permissions_added))
                    .push_bind($crate::store::json_list(&r.permissions_removed))
                    .push_bind($crate::store::json_list(&r.roles_before))
                    .push_bind($crate::store::json_list(&r.roles_after))
                    .push_bind(r.line);
            });
            qb.push(") AS v WHERE items.job_id = ")
                .push_bind($job_id)
                .push(" AND items.line = v.column11 AND items.outcome = 'pending' RETURNING line");
            for row in qb.build().fetch_all(&mut *$tx).await? {
                moved.insert(sqlx::Row::try_get::<i64, _>(&row, 0)?);
            }
        }
        moved
    }};
}

/// Moves a job's counters by the rows that left `pending` and the chunk's deltas.
macro_rules! add_counts {
    ($tx:expr, $job_id:expr, $c:expr, $d:expr, $now:expr) => {{
        let c: &$crate::domain::Counts = $c;
        let d: &$crate::store::JobDeltas = $d;
        sqlx::query(
            "UPDATE jobs SET c_pending = c_pending - $1, c_rejected = c_rejected + $2, c_applied = c_applied + $3, \
             c_unchanged = c_unchanged + $4, c_not_found = c_not_found + $5, c_failed = c_failed + $6, \
             c_planned = c_planned + $7, users_changed = users_changed + $8, users_unchanged = users_unchanged + $9, \
             scim_requests = scim_requests + $10, scim_retries = scim_retries + $11, \
             scim_rate_limited = scim_rate_limited + $12, updated_at_ms = $13, c_cancelled = c_cancelled + $15 \
             WHERE id = $14",
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
        .bind(c.cancelled)
        .execute(&mut *$tx)
        .await?;
    }};
}

/// Queues events in the outbox, one delivery per endpoint; a replayed event id is ignored.
macro_rules! insert_events {
    ($tx:expr, $events:expr) => {{
        let now = $crate::store::now_ms();
        let events: &[$crate::store::OutboxEvent] = $events;
        for e in events {
            for endpoint in &e.endpoints {
                sqlx::query(
                    "INSERT INTO webhook_outbox (event_id, endpoint, event_type, payload, status, next_attempt_at_ms, created_at_ms, traceparent) \
                     VALUES ($1, $2, $3, $4, 'pending', $5, $5, $6) ON CONFLICT (event_id, endpoint) DO NOTHING",
                )
                .bind(e.event_id.as_str())
                .bind(endpoint.as_str())
                .bind(e.event_type.as_str())
                .bind(e.payload.as_str())
                .bind(now)
                .bind(e.traceparent.as_deref())
                .execute(&mut *$tx)
                .await?;
            }
        }
    }};
}

/// The job as it stands inside a transaction (after the transaction's own updates), as a
/// `JobRecord`; a job that vanished is a corrupt store.
macro_rules! read_job {
    ($tx:expr, $job_id:expr) => {{
        let job_id: &str = $job_id;
        let row = sqlx::query_as::<_, $crate::store::JobRow>("SELECT * FROM jobs WHERE id = $1")
            .bind(job_id)
            .fetch_optional(&mut *$tx)
            .await?
            .ok_or_else(|| $crate::store::StoreError::Corrupt(format!("job {job_id} vanished")))?;
        $crate::store::JobRecord::try_from(row)?
    }};
}

// The files of this module import these by path (`use super::{dual, insert_events}`), so the
// order of the `mod` lines above does not matter.
use {add_counts, apply_results, dual, insert_events, read_job};

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

    pub(crate) fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    pub async fn close(&self) {
        dual!(&self.backend, |p, DB| p.close().await)
    }

    /// Readiness probe.
    pub(crate) async fn ping(&self) -> StoreResult<()> {
        dual!(&self.backend, |p, DB| {
            sqlx::query("SELECT 1").execute(p).await?;
        });
        Ok(())
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
mod test_support {
    use super::*;
    use crate::domain::{Assignment, Mode};

    /// One valid row: `user` asks for `Agent` as a `Standard Agent`.
    pub(super) fn row(line: u64, user: &str) -> Assignment {
        Assignment {
            line,
            external_id: user.into(),
            role_template: "Agent".into(),
            license_tier: "Standard Agent".into(),
            action: crate::domain::Action::Assign,
            effective_at_ms: None,
            defect: None,
        }
    }

    pub(super) fn ok<T>(r: StoreResult<T>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    /// A store in a fresh directory holding one job, `job-1`, with `rows` and `events`, stored
    /// the way a request body is: through `Ingest`.
    pub(super) async fn store_with_job(
        rows: &[Assignment],
        events: Vec<OutboxEvent>,
    ) -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = ok(Store::connect(&url, 2).await);
        let job = NewJob {
            id: "job-1".into(),
            mode: Mode::Merge,
            dry_run: false,
            roster: crate::domain::Roster::Partial,
            request_id: None,
            traceparent: None,
            policy_fingerprint: None,
            idempotency: None,
            privileged_allowed: false,
            events,
            submitted_by: None,
        };
        let mut ingest = ok(store.begin_ingest(&job.id).await);
        ok(ingest.add_rows(rows, &[]).await);
        assert_eq!(ok(ingest.commit(&job, None).await), CreateJob::Created);
        (store, dir)
    }
}

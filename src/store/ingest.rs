//! A job being received: its rows go into one open transaction batch by batch, as they are
//! parsed; the job row and its idempotency key go in last, at `commit`. Dropping an `Ingest`
//! without committing rolls everything back, so a body refused halfway (a shape error at line
//! 900 000, too many rows, a client gone) leaves nothing behind.
//!
//! On SQLite the transaction holds the write lock while the body is parsed (about five
//! seconds for a million rows); the body is spooled to disk first, so this never waits for a
//! slow client.

use super::{
    Backend, CreateJob, INSERT_BATCH, NewJob, OutboxEvent, Store, StoreResult, begin_write, now_ms,
};
use crate::domain::{Assignment, ReasonCode};
use sqlx::{QueryBuilder, Row};

enum Tx {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

/// Runs `$body` with `$tx` bound to the open transaction and `$db` to its database type.
macro_rules! in_tx {
    ($tx:expr, |$t:ident, $db:ident| $body:expr) => {
        match $tx {
            Tx::Sqlite($t) => {
                #[allow(dead_code)]
                type $db = sqlx::Sqlite;
                $body
            }
            Tx::Postgres($t) => {
                #[allow(dead_code)]
                type $db = sqlx::Postgres;
                $body
            }
        }
    };
}

pub struct Ingest {
    tx: Tx,
    job_id: String,
    total: i64,
    defective: i64,
}

impl Store {
    /// Opens the transaction a new job's rows go into.
    pub async fn begin_ingest(&self, job_id: &str) -> StoreResult<Ingest> {
        let tx = match &self.backend {
            Backend::Sqlite(p) => Tx::Sqlite(begin_write(p).await?),
            Backend::Postgres(p) => Tx::Postgres(begin_write(p).await?),
        };
        Ok(Ingest {
            tx,
            job_id: job_id.to_owned(),
            total: 0,
            defective: 0,
        })
    }
}

impl Ingest {
    /// Rows stored so far.
    pub fn rows(&self) -> i64 {
        self.total
    }

    /// Adds rows (a row with a `defect` is stored `rejected` with `malformed_row`) and the
    /// events that go with them.
    pub async fn add_rows(
        &mut self,
        rows: &[Assignment],
        events: &[OutboxEvent],
    ) -> StoreResult<()> {
        let job_id = self.job_id.as_str();
        in_tx!(&mut self.tx, |tx, DB| {
            let conn = &mut **tx;
            for batch in rows.chunks(INSERT_BATCH) {
                let mut qb = QueryBuilder::<DB>::new(
                    "INSERT INTO items (job_id, line, external_id, role_template, license_tier, outcome, \
                     reason_code, reason_message) ",
                );
                qb.push_values(batch, |mut b, r| {
                    b.push_bind(job_id)
                        .push_bind(r.line as i64)
                        .push_bind(r.external_id.as_str())
                        .push_bind(r.role_template.as_str())
                        .push_bind(r.license_tier.as_str())
                        .push_bind(if r.defect.is_some() {
                            "rejected"
                        } else {
                            "pending"
                        })
                        .push_bind(r.defect.as_ref().map(|_| ReasonCode::MalformedRow.as_str()))
                        .push_bind(r.defect.as_deref());
                });
                qb.build().execute(&mut *conn).await?;
            }
            insert_events!(conn, events);
        });
        self.total += rows.len() as i64;
        self.defective += rows.iter().filter(|r| r.defect.is_some()).count() as i64;
        Ok(())
    }

    /// Stores the job row and its idempotency key, and commits. With `max_pending`, refuses
    /// (rolls back, `Backpressure`) when the rows queued in the store, these included, would
    /// exceed it.
    pub async fn commit(
        mut self,
        job: &NewJob,
        max_pending: Option<i64>,
    ) -> StoreResult<CreateJob> {
        let now = now_ms();
        let (total, defective) = (self.total, self.defective);
        let outcome = in_tx!(&mut self.tx, |tx, DB| {
            if let Some(idem) = &job.idempotency {
                // Expired keys are forgotten first, so the same key may start a new job.
                sqlx::query("DELETE FROM idempotency_keys WHERE key = $1 AND expires_at_ms < $2")
                    .bind(&idem.key)
                    .bind(now)
                    .execute(&mut **tx)
                    .await?;
                let inserted = sqlx::query(
                    "INSERT INTO idempotency_keys (key, body_sha256, job_id, expires_at_ms) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO NOTHING",
                )
                .bind(&idem.key)
                .bind(&idem.body_sha256)
                .bind(&job.id)
                .bind(idem.expires_at_ms)
                .execute(&mut **tx)
                .await?
                .rows_affected();
                if inserted == 0 {
                    let row = sqlx::query(
                        "SELECT body_sha256, job_id FROM idempotency_keys WHERE key = $1",
                    )
                    .bind(&idem.key)
                    .fetch_one(&mut **tx)
                    .await?;
                    let hash: String = row.try_get(0)?;
                    let job_id: String = row.try_get(1)?;
                    Some(if hash == idem.body_sha256 {
                        CreateJob::Existing { job_id }
                    } else {
                        CreateJob::KeyConflict { job_id }
                    })
                } else {
                    None
                }
            } else {
                None
            }
        });
        if let Some(outcome) = outcome {
            self.rollback().await?;
            return Ok(outcome);
        }
        if let Some(max) = max_pending {
            let queued: i64 = in_tx!(&mut self.tx, |tx, DB| {
                sqlx::query(
                    "SELECT CAST(COALESCE(SUM(c_pending), 0) AS BIGINT) FROM jobs \
                     WHERE status IN ('queued', 'running', 'paused', 'awaiting_approval')",
                )
                .fetch_one(&mut **tx)
                .await?
                .try_get(0)?
            });
            if queued + (total - defective) > max {
                self.rollback().await?;
                return Ok(CreateJob::Backpressure { queued });
            }
        }
        in_tx!(&mut self.tx, |tx, DB| {
            sqlx::query(
                "INSERT INTO jobs (id, status, mode, dry_run, created_at_ms, updated_at_ms, c_total, c_pending, \
                 c_rejected, policy_fingerprint, request_id) VALUES ($1, 'queued', $2, $3, $4, $4, $5, $8, $9, $6, $7)",
            )
            .bind(&job.id)
            .bind(job.mode.as_str())
            .bind(i64::from(job.dry_run))
            .bind(now)
            .bind(total)
            .bind(&job.policy_fingerprint)
            .bind(&job.request_id)
            .bind(total - defective)
            .bind(defective)
            .execute(&mut **tx)
            .await?;
            let conn = &mut **tx;
            insert_events!(conn, &job.events);
        });
        match self.tx {
            Tx::Sqlite(tx) => tx.commit().await?,
            Tx::Postgres(tx) => tx.commit().await?,
        }
        Ok(CreateJob::Created)
    }

    /// Discards every row added.
    pub async fn rollback(self) -> StoreResult<()> {
        match self.tx {
            Tx::Sqlite(tx) => tx.rollback().await?,
            Tx::Postgres(tx) => tx.rollback().await?,
        }
        Ok(())
    }
}

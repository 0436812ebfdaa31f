//! A job being received: its rows go into one open transaction batch by batch, as they are
//! parsed; the job row and its idempotency key go in last, at `commit`. Dropping an `Ingest`
//! without committing rolls everything back, so a body refused halfway (a shape error at line
//! 900 000, too many rows, a client gone) leaves nothing behind.
//!
//! On SQLite the transaction holds the write lock while the body is parsed (about five
//! seconds for a million rows); the body is spooled to disk first, so this never waits for a
//! slow client.

use super::{
    Backend, CreateJob, INSERT_BATCH, NewJob, OutboxEvent, Store, StoreResult, begin_write, dual,
    insert_events, now_ms,
};
use crate::domain::{Assignment, Principal, ReasonCode, Roster};
use sqlx::{QueryBuilder, Row};

/// Rows waiting to be synced across unfinished jobs (the backpressure bound): read by
/// `pending_rows`, the pre-check, and by `Ingest::commit`, inside the job's transaction.
const QUEUED_ROWS_SQL: &str = "SELECT CAST(COALESCE(SUM(c_pending), 0) AS BIGINT) FROM jobs \
     WHERE status IN ('queued', 'running', 'paused', 'awaiting_approval')";

/// The open transaction of an `Ingest`.
type Tx =
    Backend<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Transaction<'static, sqlx::Postgres>>;

pub(crate) struct Ingest {
    tx: Tx,
    job_id: String,
    total: i64,
    defective: i64,
}

impl Store {
    /// Opens the transaction a new job's rows go into.
    pub(crate) async fn begin_ingest(&self, job_id: &str) -> StoreResult<Ingest> {
        let tx = match &self.backend {
            Backend::Sqlite(p) => Backend::Sqlite(begin_write(p).await?),
            Backend::Postgres(p) => Backend::Postgres(begin_write(p).await?),
        };
        Ok(Ingest {
            tx,
            job_id: job_id.to_owned(),
            total: 0,
            defective: 0,
        })
    }

    /// The job an unexpired idempotency key names, with the hash of the body it was used for.
    pub(crate) async fn find_idempotency_key(
        &self,
        key: &str,
    ) -> StoreResult<Option<(String, String)>> {
        let now = now_ms();
        dual!(&self.backend, |p, DB| {
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

    /// Rows waiting across unfinished jobs: the backpressure signal for ingest.
    pub(crate) async fn pending_rows(&self) -> StoreResult<i64> {
        dual!(&self.backend, |p, DB| {
            let row = sqlx::query(QUEUED_ROWS_SQL).fetch_one(p).await?;
            Ok(row.try_get::<i64, _>(0)?)
        })
    }
}

impl Ingest {
    /// Rows stored so far.
    pub(crate) fn rows(&self) -> i64 {
        self.total
    }

    /// Adds rows (a row with a `defect` is stored `rejected` with `malformed_row`) and the
    /// events that go with them.
    pub(crate) async fn add_rows(
        &mut self,
        rows: &[Assignment],
        events: &[OutboxEvent],
    ) -> StoreResult<()> {
        let job_id = self.job_id.as_str();
        // Not `dual!`: each backend loads rows its fastest way, so the statements differ.
        match &mut self.tx {
            Backend::Sqlite(tx) => {
                let conn = &mut **tx;
                for batch in rows.chunks(INSERT_BATCH) {
                    let mut qb = QueryBuilder::<sqlx::Sqlite>::new(
                        "INSERT INTO items (job_id, line, external_id, role_template, license_tier, outcome, \
                         reason_code, reason_message, action, effective_at_ms) ",
                    );
                    qb.push_values(batch, |mut b, r| {
                        b.push_bind(job_id)
                            .push_bind(r.line as i64)
                            .push_bind(r.external_id.as_str())
                            .push_bind(r.role_template.as_str())
                            .push_bind(r.license_tier.as_str())
                            .push_bind(outcome_of(r))
                            .push_bind(r.defect.as_ref().map(|_| ReasonCode::MalformedRow.as_str()))
                            .push_bind(r.defect.as_deref())
                            .push_bind(r.action.as_str())
                            .push_bind(r.effective_at_ms);
                    });
                    qb.build().execute(&mut *conn).await?;
                }
                insert_events!(conn, events);
            }
            Backend::Postgres(tx) => {
                let conn = &mut **tx;
                let mut data = Vec::with_capacity(rows.len() * 96);
                for r in rows {
                    copy_row(&mut data, job_id, r);
                }
                let copy = conn.copy_in_raw(COPY_ITEMS).await?;
                send_copy(copy, &data).await?.finish().await?;
                insert_events!(conn, events);
            }
        }
        self.total += rows.len() as i64;
        self.defective += rows.iter().filter(|r| r.defect.is_some()).count() as i64;
        Ok(())
    }

    /// Adds every batch `batches` yields until it closes, with the events `events` gives for
    /// each (as `add_rows` would, batch by batch). On PostgreSQL the batches stream into one
    /// open `COPY`, so the server stores rows while the body is still being parsed: one `COPY`
    /// per batch ends each with a small `CopyDone` that waits for the server's delayed ACK of
    /// the data before it (Nagle; the driver cannot set `TCP_NODELAY`), about 40 ms a batch,
    /// which was two thirds of a million-row ingest. Events (rows of another table) cannot be
    /// written while a `COPY` is open: they are held, at most `EVENTS_PER_COPY`, and written
    /// between `COPY`s.
    pub(crate) async fn add_stream(
        &mut self,
        batches: &mut tokio::sync::mpsc::Receiver<Vec<Assignment>>,
        events: &(dyn Fn(&[Assignment]) -> Vec<OutboxEvent> + Sync),
    ) -> StoreResult<()> {
        if let Backend::Sqlite(_) = self.tx {
            while let Some(batch) = batches.recv().await {
                self.add_rows(&batch, &events(&batch)).await?;
            }
            return Ok(());
        }
        let Ingest {
            tx,
            job_id,
            total,
            defective,
        } = self;
        let Backend::Postgres(tx) = tx else {
            return Ok(());
        };
        let conn = &mut **tx;
        let mut held = Vec::new();
        let mut counts = (0i64, 0i64);
        loop {
            let more =
                copy_until_events(&mut *conn, job_id, batches, events, &mut held, &mut counts)
                    .await?;
            insert_events!(conn, &held);
            held.clear();
            *total += counts.0;
            *defective += counts.1;
            counts = (0, 0);
            if !more {
                return Ok(());
            }
        }
    }

    /// Stores the job row and its idempotency key, and commits. With `max_pending`, refuses
    /// (rolls back, `Backpressure`) when the rows queued in the store, these included, would
    /// exceed it.
    pub(crate) async fn commit(
        mut self,
        job: &NewJob,
        max_pending: Option<i64>,
    ) -> StoreResult<CreateJob> {
        let now = now_ms();
        let (total, defective) = (self.total, self.defective);
        let outcome = dual!(&mut self.tx, |tx, DB| {
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
        // A roster `full`: every managed user the batch does not name is a leaver. Their rows
        // are made here, by one `INSERT … SELECT` from `desired_state` in the job's
        // transaction (as a revert's or a reconcile's are), numbered after the batch's last
        // line. Managed: a desired state with at least one role (a leaver's is `[]`, and one
        // whose setting job was reverted is NULL: neither is a leaver again).
        let leavers = if job.roster == Roster::Full {
            let job_id = self.job_id.clone();
            dual!(&mut self.tx, |tx, DB| {
                let last: i64 = sqlx::query_scalar(
                    "SELECT CAST(COALESCE(MAX(line), 0) AS BIGINT) FROM items WHERE job_id = $1",
                )
                .bind(&job_id)
                .fetch_one(&mut **tx)
                .await?;
                sqlx::query(
                    "INSERT INTO items (job_id, line, external_id, role_template, license_tier, outcome, action) \
                     SELECT $1, $2 + ROW_NUMBER() OVER (ORDER BY d.external_id), d.external_id, '', '', \
                     'pending', 'revoke' FROM desired_state d \
                     WHERE d.roles IS NOT NULL AND d.roles <> '[]' \
                     AND NOT EXISTS (SELECT 1 FROM items i WHERE i.job_id = $1 AND i.external_id = d.external_id)",
                )
                .bind(&job_id)
                .bind(last)
                .execute(&mut **tx)
                .await?
                .rows_affected() as i64
            })
        } else {
            0
        };
        let total = total + leavers;
        if let Some(max) = max_pending {
            let queued: i64 = dual!(&mut self.tx, |tx, DB| {
                sqlx::query(QUEUED_ROWS_SQL)
                    .fetch_one(&mut **tx)
                    .await?
                    .try_get(0)?
            });
            if queued + (total - defective) > max {
                self.rollback().await?;
                return Ok(CreateJob::Backpressure { queued });
            }
        }
        dual!(&mut self.tx, |tx, DB| {
            sqlx::query(
                "INSERT INTO jobs (id, status, mode, dry_run, created_at_ms, updated_at_ms, c_total, c_pending, \
                 c_rejected, policy_fingerprint, request_id, privileged_allowed, traceparent, submitted_by) \
                 VALUES ($1, 'queued', $2, $3, $4, $4, $5, $8, $9, $6, $7, $10, $11, $12)",
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
            .bind(i64::from(job.privileged_allowed))
            .bind(&job.traceparent)
            .bind(job.submitted_by.as_ref().map(Principal::to_json))
            .execute(&mut **tx)
            .await?;
            let conn = &mut **tx;
            insert_events!(conn, &job.events);
        });
        dual!(self.tx, |tx, DB| tx.commit().await?);
        Ok(CreateJob::Created)
    }

    /// Discards every row added.
    pub(crate) async fn rollback(self) -> StoreResult<()> {
        dual!(self.tx, |tx, DB| tx.rollback().await?);
        Ok(())
    }
}

fn outcome_of(r: &Assignment) -> &'static str {
    if r.defect.is_some() {
        "rejected"
    } else {
        "pending"
    }
}

/// Events held while one `COPY` is open before it is ended to write them (`add_stream`).
const EVENTS_PER_COPY: usize = 1000;

const COPY_ITEMS: &str = "COPY items (job_id, line, external_id, role_template, license_tier, outcome, \
     reason_code, reason_message, action, effective_at_ms) FROM STDIN";

/// One `COPY` of the batches `batches` yields, until it closes (returns false) or the events of
/// the batches sent reach `EVENTS_PER_COPY` (returns true: more may follow). The events go to
/// `held`, the rows and defective rows sent are added to `counts`.
async fn copy_until_events(
    conn: &mut sqlx::PgConnection,
    job_id: &str,
    batches: &mut tokio::sync::mpsc::Receiver<Vec<Assignment>>,
    events: &(dyn Fn(&[Assignment]) -> Vec<OutboxEvent> + Sync),
    held: &mut Vec<OutboxEvent>,
    counts: &mut (i64, i64),
) -> StoreResult<bool> {
    let Some(mut batch) = batches.recv().await else {
        return Ok(false);
    };
    let mut copy = conn.copy_in_raw(COPY_ITEMS).await?;
    let mut data = Vec::with_capacity(batch.len() * 96);
    loop {
        data.clear();
        for r in &batch {
            copy_row(&mut data, job_id, r);
        }
        copy = send_copy(copy, &data).await?;
        counts.0 += batch.len() as i64;
        counts.1 += batch.iter().filter(|r| r.defect.is_some()).count() as i64;
        held.extend(events(&batch));
        if held.len() >= EVENTS_PER_COPY {
            copy.finish().await?;
            return Ok(true);
        }
        match batches.recv().await {
            Some(next) => batch = next,
            None => {
                copy.finish().await?;
                return Ok(false);
            }
        }
    }
}

/// Sends `COPY` data; on failure ends the `COPY` (`CopyFail`) so the connection stays usable,
/// and the caller's transaction is rolled back.
async fn send_copy<'c>(
    mut copy: sqlx::postgres::PgCopyIn<&'c mut sqlx::PgConnection>,
    data: &[u8],
) -> StoreResult<sqlx::postgres::PgCopyIn<&'c mut sqlx::PgConnection>> {
    match copy.send(data).await {
        Ok(_) => Ok(copy),
        Err(e) => {
            let _ = copy.abort(e.to_string()).await;
            Err(e.into())
        }
    }
}

/// One row in `COPY … FROM STDIN` text format: tab-separated, `\N` for NULL, and backslash,
/// tab, newline and carriage return escaped in values (the body's fields may hold any of them).
fn copy_row(out: &mut Vec<u8>, job_id: &str, r: &Assignment) {
    fn field(out: &mut Vec<u8>, v: Option<&str>) {
        match v {
            None => out.extend_from_slice(b"\\N"),
            Some(v) => {
                for &b in v.as_bytes() {
                    match b {
                        b'\\' => out.extend_from_slice(b"\\\\"),
                        b'\t' => out.extend_from_slice(b"\\t"),
                        b'\n' => out.extend_from_slice(b"\\n"),
                        b'\r' => out.extend_from_slice(b"\\r"),
                        _ => out.push(b),
                    }
                }
            }
        }
    }
    let line = r.line.to_string();
    let effective = r.effective_at_ms.map(|ms| ms.to_string());
    let values = [
        Some(job_id),
        Some(line.as_str()),
        Some(r.external_id.as_str()),
        Some(r.role_template.as_str()),
        Some(r.license_tier.as_str()),
        Some(outcome_of(r)),
        r.defect.as_ref().map(|_| ReasonCode::MalformedRow.as_str()),
        r.defect.as_deref(),
        Some(r.action.as_str()),
        effective.as_deref(),
    ];
    for (i, v) in values.into_iter().enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        field(out, v);
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_rows_escape_what_the_text_format_reserves() {
        let mut out = Vec::new();
        let row = Assignment {
            line: 7,
            external_id: "a\tb\\c\nd\re".into(),
            role_template: "Agent".into(),
            license_tier: "Standard Agent".into(),
            action: crate::domain::Action::Assign,
            effective_at_ms: None,
            defect: Some("the row has 2 fields".into()),
        };
        copy_row(&mut out, "j", &row);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "j\t7\ta\\tb\\\\c\\nd\\re\tAgent\tStandard Agent\trejected\tmalformed_row\tthe row has 2 fields\tassign\t\\N\n"
        );
        out.clear();
        copy_row(
            &mut out,
            "j",
            &Assignment {
                action: crate::domain::Action::Assign,
                defect: None,
                ..row
            },
        );
        assert!(String::from_utf8_lossy(&out).ends_with("\tpending\t\\N\t\\N\tassign\t\\N\n"));
    }
}

//! The webhook outbox.
//!
//! A row is one event for one endpoint, keyed by (event_id, endpoint); `event_id` is the
//! `webhook-id`. With batching, a batch is a row of its own (`event_type = 'batch'`) and the
//! rows it carries point at it through `batch_id`: they are never sent alone, and every
//! update of the batch row is applied to them in the same statement, so a batch and its
//! events always show the same status.

use super::{
    Backend, DeliveryResult, OutboxRecord, OutboxRow, Store, StoreResult, begin_write, dual, now_ms,
};
use sqlx::Row;

/// What `outbox_backlog` counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OutboxBacklog {
    pub pending: i64,
    pub oldest_pending_created_ms: Option<i64>,
    pub dead: i64,
}

impl Store {
    /// Claims up to `limit` deliveries to `endpoint` that are due, leasing them so that a second
    /// dispatcher (another replica) does not send them at the same time. With `batches_only`,
    /// only batch rows (events not yet in a batch wait for `form_batch`).
    pub(crate) async fn claim_due_deliveries(
        &self,
        endpoint: &str,
        limit: i64,
        lease_ms: i64,
        batches_only: bool,
    ) -> StoreResult<Vec<OutboxRecord>> {
        let now = now_ms();
        let rows = dual!(&self.backend, |p, DB| {
            // Two texts: only PostgreSQL locks the rows it picks (`SKIP LOCKED`); see `dual!`.
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
    pub(crate) async fn form_batch(
        &self,
        endpoint: &str,
        max_events: i64,
        batch_id: &str,
        body: impl FnOnce(&[OutboxRecord]) -> String,
    ) -> StoreResult<usize> {
        let now = now_ms();
        dual!(&self.backend, |p, DB| {
            let mut tx = begin_write(p).await?;
            // Two texts: only PostgreSQL locks the rows it picks (`SKIP LOCKED`); see `dual!`.
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
                "INSERT INTO webhook_outbox (event_id, endpoint, event_type, payload, status, next_attempt_at_ms, created_at_ms, traceparent) \
                 VALUES ($1, $2, 'batch', $3, 'pending', $4, $4, $5)",
            )
            .bind(batch_id)
            .bind(endpoint)
            .bind(body(&members))
            .bind(now)
            // A batch joins the trace of its oldest event.
            .bind(members.first().and_then(|m| m.traceparent.as_deref()))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(members.len())
        })
    }

    /// Records the result of one attempt of a delivery, and of the events of a batch with it.
    pub(crate) async fn mark_delivery(
        &self,
        event_id: &str,
        endpoint: &str,
        result: &DeliveryResult,
    ) -> StoreResult<()> {
        let now = now_ms();
        dual!(&self.backend, |p, DB| {
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
    pub(crate) async fn release_deliveries(&self, keys: &[(String, String)]) -> StoreResult<()> {
        dual!(&self.backend, |p, DB| {
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
    pub(crate) async fn list_deliveries(
        &self,
        status: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<OutboxRecord>> {
        let rows = dual!(&self.backend, |p, DB| {
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
    pub(crate) async fn redeliver(
        &self,
        event_id: &str,
        endpoint: Option<&str>,
    ) -> StoreResult<u64> {
        let now = now_ms();
        dual!(&self.backend, |p, DB| {
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

    /// The webhook backlog for the gauges: events waiting for delivery, the creation time of the
    /// oldest of them, and dead events. Batch rows are not events: their events are counted
    /// instead. One aggregate over the `status` index (delivered rows are not read).
    pub(crate) async fn outbox_backlog(&self) -> StoreResult<OutboxBacklog> {
        dual!(&self.backend, |p, DB| {
            let rows = sqlx::query(
                "SELECT status, COUNT(*), MIN(created_at_ms) FROM webhook_outbox \
                 WHERE status IN ('pending', 'dead') AND event_type <> 'batch' GROUP BY status",
            )
            .fetch_all(p)
            .await?;
            let mut backlog = OutboxBacklog::default();
            for row in rows {
                let (status, n): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
                match status.as_str() {
                    "pending" => {
                        backlog.pending = n;
                        backlog.oldest_pending_created_ms = row.try_get::<Option<i64>, _>(2)?;
                    }
                    _ => backlog.dead = n,
                }
            }
            Ok(backlog)
        })
    }

    /// Pending deliveries per endpoint name, to find those whose endpoint is not configured.
    pub(crate) async fn pending_by_endpoint(&self) -> StoreResult<Vec<(String, i64)>> {
        dual!(&self.backend, |p, DB| {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{ok, store_with_job};
    use crate::store::{OutboxEvent, now_ms};

    fn event(id: &str, endpoints: &[&str]) -> OutboxEvent {
        OutboxEvent {
            event_id: id.to_owned(),
            event_type: "job.finished".to_owned(),
            payload: format!(r#"{{"type":"job.finished","data":{{"n":"{id}"}}}}"#),
            endpoints: endpoints.iter().map(|e| (*e).to_owned()).collect(),
            traceparent: None,
        }
    }

    #[tokio::test]
    async fn a_batch_and_its_events_move_together_and_redeliver_together() {
        let events = (0..3)
            .map(|i| event(&format!("msg_{i}"), &["a", "b"]))
            .collect();
        // Outbox rows enter with a job (as the rows of an unreadable line's events do).
        let (store, _dir) = store_with_job(&[], events).await;
        assert_eq!(ok(store.outbox_backlog().await).pending, 6);

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
        assert_eq!(ok(store.outbox_backlog().await).pending, 6);

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
        // Dead letters are the batch's two events (the batch row is not an event); the rest
        // of endpoint b's events and a's third one still wait.
        let backlog = ok(store.outbox_backlog().await);
        assert_eq!((backlog.dead, backlog.pending), (2, 4));

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

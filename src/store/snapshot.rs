//! What a job read of the directory (migration 0008), written page by page as it is read and
//! kept only for the users the job names, then read back chunk by chunk: a SCIM scan
//! (`directory_snapshot`), or the home division's grants of users whose ids are known
//! (`user_ids`, `directory_grants`).

use super::{INSERT_BATCH, Store, StoreResult, begin_write, dual, now_ms};
use sqlx::{QueryBuilder, Row};

/// Records `(external_id, user_id)` pairs as seen at `$now` in `user_ids`, inside `$tx`.
macro_rules! upsert_ids {
    ($tx:expr, $pairs:expr, $now:expr) => {{
        let pairs: Vec<(&str, &str)> = $pairs.collect();
        for batch in pairs.chunks(INSERT_BATCH) {
            let mut qb =
                QueryBuilder::<DB>::new("INSERT INTO user_ids (external_id, user_id, seen_at_ms) ");
            qb.push_values(batch, |mut b, (e, id)| {
                b.push_bind(*e).push_bind(*id).push_bind($now);
            });
            qb.push(
                " ON CONFLICT (external_id, user_id) DO UPDATE SET seen_at_ms = excluded.seen_at_ms",
            );
            qb.build().execute(&mut *$tx).await?;
        }
    }};
}

/// The job's users (`$1`) whose id is trusted: exactly one id seen for their externalId since
/// `$2`. Columns `external_id`, `user_id`. A macro so that it can be `concat!`ed.
macro_rules! known_ids {
    () => {
        "SELECT j.external_id, MIN(u.user_id) AS user_id FROM (SELECT DISTINCT external_id \
         FROM items WHERE job_id = $1 AND outcome = 'pending') j JOIN user_ids u \
         ON u.external_id = j.external_id WHERE u.seen_at_ms >= $2 \
         GROUP BY j.external_id HAVING COUNT(*) = 1"
    };
}

/// A user as the directory scan saw them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScannedUser {
    pub(crate) external_id: String,
    pub(crate) user_id: String,
    pub(crate) version: Option<String>,
    /// Role names.
    pub(crate) roles: Vec<String>,
}

impl Store {
    /// Keeps the users of `users` whose externalId the job's pending rows name (a user seen
    /// twice, as pages shift during a scan, is kept once), and with `remember_ids` the id of
    /// every one of them in `user_ids`. Returns how many were new to the job's scan.
    pub(crate) async fn save_scanned(
        &self,
        job_id: &str,
        users: &[ScannedUser],
        remember_ids: bool,
    ) -> StoreResult<u64> {
        if users.is_empty() {
            return Ok(0);
        }
        let now = now_ms();
        let rows: Vec<(&ScannedUser, String)> = users
            .iter()
            .map(|u| {
                (
                    u,
                    serde_json::to_string(&u.roles).unwrap_or_else(|_| "[]".into()),
                )
            })
            .collect();
        dual!(&self.backend, |p, DB| {
            let mut tx = begin_write(p).await?;
            let mut kept = 0;
            for batch in rows.chunks(INSERT_BATCH) {
                // `VALUES` names its columns column1…column4 on both backends.
                let mut qb = QueryBuilder::<DB>::new(
                    "INSERT INTO directory_snapshot (job_id, external_id, user_id, version, roles, \
                     seen_at_ms) SELECT ",
                );
                qb.push_bind(job_id)
                    .push(", v.column1, v.column2, v.column3, v.column4, ")
                    .push_bind(now)
                    .push(" FROM (");
                qb.push_values(batch, |mut b, (u, roles)| {
                    b.push_bind(u.external_id.as_str())
                        .push_bind(u.user_id.as_str())
                        .push_bind(u.version.as_deref())
                        .push_bind(roles.as_str());
                });
                qb.push(") AS v WHERE EXISTS (SELECT 1 FROM items i WHERE i.job_id = ")
                    .push_bind(job_id)
                    .push(
                        " AND i.external_id = v.column1 AND i.outcome = 'pending') \
                         ON CONFLICT (job_id, external_id, user_id) DO NOTHING",
                    );
                kept += qb.build().execute(&mut *tx).await?.rows_affected();
                if remember_ids {
                    upsert_ids!(
                        tx,
                        batch
                            .iter()
                            .map(|(u, _)| (u.external_id.as_str(), u.user_id.as_str())),
                        now
                    );
                }
            }
            tx.commit().await?;
            Ok(kept)
        })
    }

    /// Users the job still has to sync whom the scan did not see (each costs a lookup).
    pub(crate) async fn unscanned_users(&self, job_id: &str) -> StoreResult<i64> {
        dual!(&self.backend, |p, DB| {
            let row = sqlx::query(
                "SELECT COUNT(DISTINCT external_id) FROM items i WHERE i.job_id = $1 \
                 AND i.outcome = 'pending' AND NOT EXISTS (SELECT 1 FROM directory_snapshot d \
                 WHERE d.job_id = $1 AND d.external_id = i.external_id)",
            )
            .bind(job_id)
            .fetch_one(p)
            .await?;
            Ok(row.try_get::<i64, _>(0)?)
        })
    }

    /// What the job's read saw of these users, if it saw them at or after `seen_since_ms`;
    /// with `grants`, their roles are the job's division grants.
    pub(crate) async fn scanned(
        &self,
        job_id: &str,
        external_ids: &[&str],
        seen_since_ms: i64,
        grants: bool,
    ) -> StoreResult<Vec<ScannedUser>> {
        let mut out = Vec::new();
        for batch in external_ids.chunks(INSERT_BATCH) {
            let rows = dual!(&self.backend, |p, DB| {
                let mut qb = QueryBuilder::<DB>::new(
                    "SELECT external_id, user_id, version, roles FROM directory_snapshot \
                     WHERE job_id = ",
                );
                qb.push_bind(job_id)
                    .push(" AND seen_at_ms >= ")
                    .push_bind(seen_since_ms)
                    .push(" AND external_id IN (");
                let mut sep = qb.separated(", ");
                for e in batch {
                    sep.push_bind(*e);
                }
                qb.push(")");
                let mut rows = Vec::new();
                for r in qb.build().fetch_all(p).await? {
                    let roles: String = r.try_get(3)?;
                    rows.push(ScannedUser {
                        external_id: r.try_get(0)?,
                        user_id: r.try_get(1)?,
                        version: r.try_get(2)?,
                        roles: serde_json::from_str(&roles).map_err(|e| {
                            super::StoreError::Corrupt(format!("directory_snapshot roles: {e}"))
                        })?,
                    });
                }
                rows
            });
            out.extend(rows);
        }
        if grants && !out.is_empty() {
            let mut roles: std::collections::HashMap<String, Vec<String>> = Default::default();
            let ids: Vec<&str> = out.iter().map(|u| u.user_id.as_str()).collect();
            for batch in ids.chunks(INSERT_BATCH) {
                let found: Vec<(String, String)> = dual!(&self.backend, |p, DB| {
                    let mut qb = QueryBuilder::<DB>::new(
                        "SELECT user_id, role FROM directory_grants WHERE job_id = ",
                    );
                    qb.push_bind(job_id).push(" AND user_id IN (");
                    let mut sep = qb.separated(", ");
                    for id in batch {
                        sep.push_bind(*id);
                    }
                    qb.push(") ORDER BY user_id, role");
                    let mut found = Vec::new();
                    for r in qb.build().fetch_all(p).await? {
                        found.push((r.try_get(0)?, r.try_get(1)?));
                    }
                    found
                });
                for (id, role) in found {
                    roles.entry(id).or_default().push(role);
                }
            }
            for u in &mut out {
                if let Some(r) = roles.remove(&u.user_id) {
                    u.roles = r;
                }
            }
        }
        Ok(out)
    }

    /// The job's users (with pending rows) whose id is trusted (`known_ids!`).
    pub(crate) async fn users_with_known_ids(
        &self,
        job_id: &str,
        seen_since_ms: i64,
    ) -> StoreResult<i64> {
        dual!(&self.backend, |p, DB| {
            let row = sqlx::query(concat!("SELECT COUNT(*) FROM (", known_ids!(), ") t"))
                .bind(job_id)
                .bind(seen_since_ms)
                .fetch_one(p)
                .await?;
            Ok(row.try_get::<i64, _>(0)?)
        })
    }

    /// Starts the job's read of grants: every user of the job whose id is trusted, holding no
    /// role until `save_grants` says otherwise (a user holding none in the home division
    /// has no grant to list). Returns how many.
    pub(crate) async fn snapshot_known_ids(
        &self,
        job_id: &str,
        seen_since_ms: i64,
    ) -> StoreResult<u64> {
        let now = now_ms();
        dual!(&self.backend, |p, DB| {
            let n = sqlx::query(concat!(
                "INSERT INTO directory_snapshot (job_id, external_id, user_id, version, roles, \
                 seen_at_ms) SELECT $1, t.external_id, t.user_id, NULL, '[]', $3 FROM (",
                known_ids!(),
                // `WHERE true`: SQLite would read `ON` as a join's constraint without it.
                ") t WHERE true ON CONFLICT (job_id, external_id, user_id) DO NOTHING"
            ))
            .bind(job_id)
            .bind(seen_since_ms)
            .bind(now)
            .execute(p)
            .await?
            .rows_affected();
            Ok(n)
        })
    }

    /// Keeps the grants `(user id, role name)` of the job's users (`snapshot_known_ids`).
    pub(crate) async fn save_grants(
        &self,
        job_id: &str,
        grants: &[(String, String)],
    ) -> StoreResult<()> {
        if grants.is_empty() {
            return Ok(());
        }
        dual!(&self.backend, |p, DB| {
            let mut tx = begin_write(p).await?;
            for batch in grants.chunks(INSERT_BATCH) {
                let mut qb = QueryBuilder::<DB>::new(
                    "INSERT INTO directory_grants (job_id, user_id, role) SELECT ",
                );
                qb.push_bind(job_id).push(", v.column1, v.column2 FROM (");
                qb.push_values(batch, |mut b, (id, role)| {
                    b.push_bind(id.as_str()).push_bind(role.as_str());
                });
                qb.push(
                    ") AS v WHERE EXISTS (SELECT 1 FROM directory_snapshot d WHERE d.job_id = ",
                )
                .push_bind(job_id)
                .push(
                    " AND d.user_id = v.column1) \
                         ON CONFLICT (job_id, user_id, role) DO NOTHING",
                );
                qb.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// What a lookup found for `external_id`: replaces every id known for it.
    pub(crate) async fn replace_ids(&self, external_id: &str, ids: &[&str]) -> StoreResult<()> {
        let now = now_ms();
        dual!(&self.backend, |p, DB| {
            let mut tx = begin_write(p).await?;
            sqlx::query("DELETE FROM user_ids WHERE external_id = $1")
                .bind(external_id)
                .execute(&mut *tx)
                .await?;
            upsert_ids!(tx, ids.iter().map(|id| (external_id, *id)), now);
            tx.commit().await?;
        });
        Ok(())
    }

    /// An id the target refused for `external_id`: no longer trusted, and out of the job's
    /// read, so that the user's next run looks them up.
    pub(crate) async fn forget_id(
        &self,
        job_id: &str,
        external_id: &str,
        user_id: &str,
    ) -> StoreResult<()> {
        dual!(&self.backend, |p, DB| {
            let mut tx = begin_write(p).await?;
            sqlx::query("DELETE FROM user_ids WHERE external_id = $1 AND user_id = $2")
                .bind(external_id)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM directory_snapshot WHERE job_id = $1 AND external_id = $2")
                .bind(job_id)
                .bind(external_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Forgets the job's read (the job ended).
    pub(crate) async fn drop_scan(&self, job_id: &str) -> StoreResult<()> {
        dual!(&self.backend, |p, DB| {
            sqlx::query("DELETE FROM directory_snapshot WHERE job_id = $1")
                .bind(job_id)
                .execute(p)
                .await?;
            sqlx::query("DELETE FROM directory_grants WHERE job_id = $1")
                .bind(job_id)
                .execute(p)
                .await?;
        });
        Ok(())
    }
}

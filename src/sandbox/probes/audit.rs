//! The audit-trail probes of `sandbox-check` (README, Drift): the realtime audit query over the
//! check's own role changes of the test user, and the delay before its last change is
//! queryable, for the pure judgements of `sandbox::audit`.
//!
//! 1. Before the first write: one query, the permission's answer, and the messages already
//!    naming the test user (left out of everything below, e.g. those of an earlier run).
//! 2. After the other probes (the test role granted through SCIM, taken away and granted again
//!    through the Authorization API): queries until those three changes are queryable, at most
//!    `AUDIT_WAIT` plus `drift.lag_secs` (at once, then after 0.1, 0.2, 0.4, 0.8 s, then once a
//!    second).
//! 3. One more change, the one the check already makes (`users/remove` of the test role, or a
//!    grant when it is not held), then queries the same way, within the same bound, until its
//!    message is queryable: the delay is this host's time then, less the message's `eventDate`
//!    (so it holds the clocks' difference too, as the feed's polls do).
//!
//! The queries read what the feed reads (service `PeoplePermissions`), but without its filter on
//! the entity type, so that another entity type is seen (and refutes) rather than missed.

use super::Ctx;
use crate::configuration::Settings;
use crate::pipeline::drift::MemberChange;
use crate::sandbox::assumptions::Seen;
use crate::sandbox::audit::{self as judge, AuditSeen, Delay};
use crate::sandbox::http::enc;
use crate::scim::client::{AUDIT_SERVICE, audit_interval};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::time::Instant;

const ROUTE: &str = "/api/v2/audits/query/realtime";
/// Most pages of 500 messages one query reads.
const MAX_PAGES: u64 = 4;
/// How far before the check's start its queries reach: room for this host's clock being ahead
/// of the org's (doctor's `clock` allows 30 s).
const WINDOW_MARGIN_MS: i64 = 120_000;
/// How long the check waits for its changes to be queryable, beyond `drift.lag_secs`.
const AUDIT_WAIT: Duration = Duration::from_secs(60);
/// The pause before the `n`-th query of a wait (0-based, after the first): 0.1 s, 0.2 s, 0.4 s,
/// 0.8 s, then one a second (the measurement's resolution).
fn pause(n: u32) -> Duration {
    let ms = 100_u64.saturating_mul(1 << n.min(10));
    Duration::from_millis(ms.min(judge::RESOLUTION_MS.unsigned_abs()))
}

/// What the audit probes keep from the first query to the last.
#[derive(Debug, Default)]
pub(super) struct AuditState {
    /// From when the queries read (this host's clock, less the margin).
    start_ms: i64,
    /// The keys of the messages naming the test user before the first write; None when the
    /// first query was not answered 2xx (the permission's finding says why).
    before: Option<BTreeSet<String>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A message's key: its id, or the whole message when it has none.
fn key(m: &Value) -> String {
    m.get("id")
        .and_then(Value::as_str)
        .map_or_else(|| m.to_string(), str::to_owned)
}

fn event_ms(m: &Value) -> Option<i64> {
    let s = m.get("eventDate")?.as_str()?;
    let t = time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

impl Ctx {
    /// The realtime query over `[start, now)`: the answer that decides (the first page, or the
    /// first that failed) and the messages naming `user_id`, oldest first.
    async fn audit_query(&mut self, user_id: &str) -> Result<(Seen, Vec<Value>), String> {
        let (start, end) = (self.audit.start_ms, now_ms());
        let mut decisive: Option<Seen> = None;
        let mut out = Vec::new();
        for page in 1..=MAX_PAGES {
            let body = json!({
                "interval": audit_interval(start, end.max(start + 1)),
                "serviceName": AUDIT_SERVICE,
                "sort": [{"name": "Timestamp", "sortOrder": "ascending"}],
                "pageNumber": page,
                "pageSize": 500,
            });
            let answer = self.api(Method::POST, ROUTE, ROUTE, Some(body)).await?;
            let seen = answer.seen();
            if !seen.ok() {
                return Ok((seen, out));
            }
            let entities = answer
                .body
                .get("entities")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let pages = answer
                .body
                .get("pageCount")
                .and_then(Value::as_u64)
                .unwrap_or(page);
            decisive.get_or_insert(seen);
            let empty = entities.is_empty();
            out.extend(
                entities
                    .into_iter()
                    .filter(|m| m.to_string().contains(user_id)),
            );
            if empty || page >= pages {
                break;
            }
        }
        // Oldest first, whatever order the org answered in (stable: ties keep it).
        out.sort_by_key(|m| event_ms(m).unwrap_or(i64::MAX));
        Ok((decisive.unwrap_or_default(), out))
    }

    /// Before the first write: the permission, and what already names the test user.
    pub(super) async fn audit_before(&mut self, user_id: &str) -> Result<(), String> {
        self.audit.start_ms = now_ms() - WINDOW_MARGIN_MS;
        let (seen, messages) = self.audit_query(user_id).await?;
        self.findings.push(judge::permitted(&seen));
        if seen.ok() {
            self.audit.before = Some(messages.iter().map(key).collect());
        } else {
            self.findings.extend(judge::not_testable(&format!(
                "the audit query answered {}",
                seen.summary()
            )));
        }
        Ok(())
    }

    /// After the other probes, which changed the test role `so_far.0` times and left it held
    /// (`so_far.1`) or not: waits for those changes, makes the last one, measures its delay and
    /// judges what was seen.
    pub(super) async fn audit_after(
        &mut self,
        settings: &Settings,
        user_id: &str,
        role: (&str, &str),
        home_id: &str,
        so_far: (usize, bool),
    ) -> Result<(), String> {
        let Some(before) = self.audit.before.clone() else {
            return Ok(());
        };
        let (role_id, role_name) = role;
        // The changes so far (as the org answered: granted through SCIM, removed and granted
        // through the Authorization API), then the last.
        let (earlier_changes, held) = so_far;
        let changes = earlier_changes + 1;
        let wait = AUDIT_WAIT + Duration::from_secs(settings.drift.lag_secs);
        let deadline = Instant::now() + wait;
        let mut n = 0;
        let earlier: BTreeSet<String> = loop {
            let (seen, messages) = self.audit_query(user_id).await?;
            if !seen.ok() {
                self.findings.extend(judge::not_testable(&format!(
                    "the audit query answered {}",
                    seen.summary()
                )));
                return Ok(());
            }
            let new: BTreeSet<String> = messages
                .iter()
                .map(key)
                .filter(|k| !before.contains(k))
                .collect();
            if new.len() >= earlier_changes || Instant::now() >= deadline {
                break new;
            }
            tokio::time::sleep(pause(n)).await;
            n += 1;
        };
        let (last, answer) = if held {
            let path = format!("/api/v2/authorization/roles/{}/users/remove", enc(role_id));
            let route = "/api/v2/authorization/roles/{roleId}/users/remove";
            let a = self
                .api(Method::PUT, route, &path, Some(json!([user_id])))
                .await?;
            (MemberChange::Remove, a)
        } else {
            let path = format!(
                "/api/v2/authorization/roles/{}?subjectType=PC_USER",
                enc(role_id)
            );
            let body = json!({"subjectIds": [user_id], "divisionIds": [home_id]});
            let a = self
                .api(
                    Method::POST,
                    "/api/v2/authorization/roles/{roleId}",
                    &path,
                    Some(body),
                )
                .await?;
            (MemberChange::Add, a)
        };
        if !answer.seen().ok() {
            self.findings.extend(judge::not_testable(&format!(
                "the check's last role change was refused: {}",
                answer.seen().summary()
            )));
            return Ok(());
        }
        let started = Instant::now();
        let deadline = started + wait;
        let mut n = 0;
        let (found_after_ms, messages) = loop {
            let (seen, all) = self.audit_query(user_id).await?;
            let answered_ms = now_ms();
            if !seen.ok() {
                self.findings.extend(judge::not_testable(&format!(
                    "the audit query answered {}",
                    seen.summary()
                )));
                return Ok(());
            }
            let messages: Vec<Value> = all
                .into_iter()
                .filter(|m| !before.contains(&key(m)))
                .collect();
            let newest = messages
                .iter()
                .filter(|m| !earlier.contains(&key(m)))
                .filter_map(event_ms)
                .max();
            if let Some(at) = newest {
                break (Some(answered_ms - at), messages);
            }
            if Instant::now() >= deadline {
                break (None, messages);
            }
            tokio::time::sleep(pause(n)).await;
            n += 1;
        };
        let own_client = match settings.target.bearer_token {
            Some(_) => None,
            None => settings.target.client_id.as_deref(),
        };
        let seen = AuditSeen {
            messages: &messages,
            changes,
            last,
            test_user_id: user_id,
            role_id,
            role_name,
            own_client,
        };
        let delay = Delay {
            found_after_ms,
            waited_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
            lag_secs: settings.drift.lag_secs,
        };
        self.findings.extend(judge::judge(&seen, &delay));
        Ok(())
    }
}

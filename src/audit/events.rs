//! Audit events as outbox entries, one delivery per interested endpoint, and the typed `data`
//! of each event type.
//!
//! The wire shape of every payload is a contract with webhook consumers (docs/webhooks.md):
//! a field is renamed or removed only with them. Payloads go through `serde_json::Value` before
//! they are written, so an object's keys come out sorted, whatever the order of a struct's
//! fields: the bytes stay those of the `json!` payloads that came before the structs.

use crate::configuration::WebhookSettings;
use crate::domain::{Counts, EventType, JobStatus, Outcome, Principal, ReasonCode};
use crate::policy::{PermissionSet, Policy, RoleChange, RoleSet};
use crate::store::{JobRecord, OutboxEvent};
use serde::Serialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// The type of a batch body; never the type of an event, so an outbox row of this type is a
/// batch of other rows.
pub const BATCH: &str = "batch";

#[derive(Clone, Debug, Default)]
pub struct EventFactory {
    /// (endpoint name, event types it wants; all when empty)
    endpoints: Vec<(String, Vec<EventType>)>,
}

impl EventFactory {
    pub fn new(settings: &WebhookSettings) -> EventFactory {
        EventFactory {
            endpoints: settings
                .endpoints
                .iter()
                .map(|e| (e.display_name(), e.events.clone()))
                .collect(),
        }
    }

    /// An event for every endpoint that wants `event_type`; None when no endpoint does.
    ///
    /// `data` is one of the payload types below (a reference to one does too).
    pub fn event(&self, event_type: EventType, data: impl Serialize) -> Option<OutboxEvent> {
        self.event_as(event_type, data, None)
    }

    /// `event`, for an act of `actor` (a job's events: the principal that submitted the job):
    /// its `data` gains `actor` (`{"kind", "name", "issuer"?, "subject"?}`).
    pub fn event_as(
        &self,
        event_type: EventType,
        data: impl Serialize,
        actor: Option<&Principal>,
    ) -> Option<OutboxEvent> {
        let endpoints: Vec<String> = self
            .endpoints
            .iter()
            .filter(|(_, types)| types.is_empty() || types.contains(&event_type))
            .map(|(name, _)| name.clone())
            .collect();
        if endpoints.is_empty() {
            return None;
        }
        let data = match serde_json::to_value(data) {
            Ok(mut data) => {
                if let (Some(actor), Some(object)) = (actor, data.as_object_mut())
                    && let Ok(a) = serde_json::to_value(actor)
                {
                    object.insert("actor".into(), a);
                }
                data
            }
            // Only a map with non-string keys fails, and no payload type has one.
            Err(e) => {
                tracing::error!(event.type = event_type.as_str(), error = %e, "cannot serialise an audit event");
                return None;
            }
        };
        let payload =
            json!({"type": event_type.as_str(), "timestamp": now_rfc3339(), "data": data})
                .to_string();
        Some(OutboxEvent {
            event_id: new_message_id(),
            event_type: event_type.as_str().to_owned(),
            payload,
            endpoints,
            // Its delivery joins the trace of the work that made it.
            traceparent: crate::telemetry::current_traceparent(),
        })
    }
}

/// Why a row or a user did not succeed: `{"code", "message"}`.
#[derive(Debug, Clone, Serialize)]
pub struct Reason<'a> {
    pub code: &'a str,
    pub message: &'a str,
}

/// `role_sync.completed`: a user's roles were written, by this job.
#[derive(Debug, Serialize)]
pub struct RoleSyncCompleted<'a> {
    pub job_id: &'a str,
    pub external_id: &'a str,
    pub user_id: &'a str,
    pub roles_before: &'a RoleSet,
    pub roles_after: &'a RoleSet,
    pub roles_added: &'a [String],
    pub roles_removed: &'a [String],
    /// Of `roles_after`, normalised (see `Policy::effective_permissions`); shared with the
    /// policy's memo.
    #[serde(serialize_with = "shared_set")]
    pub effective_permissions: Arc<PermissionSet>,
    /// Plain set differences of the effective permissions before and after.
    pub permissions_added: Vec<String>,
    pub permissions_removed: Vec<String>,
}

impl<'a> RoleSyncCompleted<'a> {
    /// The change of `external_id` (target id `user_id`), with the permissions it grants and
    /// takes away under `policy`.
    pub(crate) fn new(
        policy: &Policy,
        job_id: &'a str,
        external_id: &'a str,
        user_id: &'a str,
        change: &'a RoleChange,
    ) -> RoleSyncCompleted<'a> {
        let before = policy.effective_permissions(&change.before);
        let after = policy.effective_permissions(&change.after);
        RoleSyncCompleted {
            job_id,
            external_id,
            user_id,
            roles_before: &change.before,
            roles_after: &change.after,
            roles_added: &change.added,
            roles_removed: &change.removed,
            permissions_added: after.difference(&before).cloned().collect(),
            permissions_removed: before.difference(&after).cloned().collect(),
            effective_permissions: after,
        }
    }
}

/// Serialises the set behind the `Arc` (serde's own `Arc` support needs its `rc` feature).
fn shared_set<S: serde::Serializer>(set: &Arc<PermissionSet>, s: S) -> Result<S::Ok, S::Error> {
    set.as_ref().serialize(s)
}

/// `role_sync.drift_detected`: a reconcile found a user whose roles are not what their desired
/// state (the last role set a job applied to them) implies in the reconcile's mode.
#[derive(Debug, Serialize)]
pub struct RoleSyncDriftDetected<'a> {
    /// The reconcile that found the user, or that fixes them (the drift feed with
    /// `drift.fix`); null when the feed found them and reports only.
    pub job_id: Option<&'a str>,
    /// `scan` (a reconcile read every user) or `audit` (the audit trail named the user).
    pub source: crate::domain::DriftSource,
    /// Who made the change, when the audit trail says (null for a scan).
    pub changed_by: Option<&'a crate::pipeline::ChangedBy>,
    /// When the change was made (ISO 8601, as the audit trail gives it; null for a scan).
    pub changed_at: Option<&'a str>,
    pub external_id: &'a str,
    pub user_id: &'a str,
    pub mode: crate::domain::Mode,
    /// What the user holds.
    pub roles_current: &'a RoleSet,
    /// The user's desired state (expanded).
    pub roles_desired: &'a RoleSet,
    /// What the desired state implies in this mode: what the fix writes.
    pub roles_expected: &'a RoleSet,
    /// The fix: roles missing from the user, and roles to take away (`replace` only).
    pub roles_added: &'a [String],
    pub roles_removed: &'a [String],
    /// Whether the reconcile writes the fix (false in a dry run).
    pub fixed: bool,
}

/// `role_sync.conflict_detected`: a re-run of a chunk found that the write an earlier attempt of
/// its job made to the user (recorded `applied`, with `role_sync.completed`) is in conflict
/// with what the user holds now. Nothing more was written: a person decides.
#[derive(Debug, Serialize)]
pub struct RoleSyncConflictDetected<'a> {
    pub job_id: &'a str,
    pub external_id: &'a str,
    pub user_id: &'a str,
    /// What the user holds now.
    pub roles_current: &'a RoleSet,
    /// `sod_conflict` or `changed_since`, with its message.
    pub reason: Reason<'a>,
}

/// `role_sync.failed`: a user could not be synced. One event per user: the rows of a user are
/// synced, and fail, together.
#[derive(Debug, Serialize)]
pub struct RoleSyncFailed<'a> {
    pub job_id: &'a str,
    pub external_id: &'a str,
    pub lines: Vec<i64>,
    pub outcome: Outcome,
    pub reason: Reason<'a>,
}

impl<'a> RoleSyncFailed<'a> {
    pub fn new(
        job_id: &'a str,
        external_id: &'a str,
        lines: Vec<i64>,
        outcome: Outcome,
        code: ReasonCode,
        message: &'a str,
    ) -> RoleSyncFailed<'a> {
        RoleSyncFailed {
            job_id,
            external_id,
            lines,
            outcome,
            reason: Reason {
                code: code.as_str(),
                message,
            },
        }
    }
}

/// `role_sync.rejected`: one row refused by the policy or the ingest; nothing was written.
/// The row's fields are empty strings when the row itself is not at hand.
#[derive(Debug, Serialize)]
pub struct RoleSyncRejected<'a> {
    pub job_id: &'a str,
    pub line: i64,
    pub external_id: &'a str,
    pub role_template: &'a str,
    pub license_tier: &'a str,
    pub reason: Reason<'a>,
}

impl<'a> RoleSyncRejected<'a> {
    pub fn new(
        job_id: &'a str,
        line: i64,
        code: ReasonCode,
        message: &'a str,
    ) -> RoleSyncRejected<'a> {
        RoleSyncRejected {
            job_id,
            line,
            external_id: "",
            role_template: "",
            license_tier: "",
            reason: Reason {
                code: code.as_str(),
                message,
            },
        }
    }

    /// The row as it was submitted.
    pub fn of_row(
        self,
        external_id: &'a str,
        role_template: &'a str,
        license_tier: &'a str,
    ) -> RoleSyncRejected<'a> {
        RoleSyncRejected {
            external_id,
            role_template,
            license_tier,
            ..self
        }
    }
}

/// `job.finished`: a job reached a final status.
#[derive(Debug, Serialize)]
pub struct JobFinished<'a> {
    pub job_id: &'a str,
    /// Who released the job from approval, and who cancelled it (absent when nobody did).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<&'a Principal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancelled_by: Option<&'a Principal>,
    pub status: JobStatus,
    pub counts: &'a Counts,
    pub users: JobUsers,
    pub scim: JobScim,
}

/// The users of a finished job.
#[derive(Debug, Serialize)]
pub struct JobUsers {
    pub total: i64,
    pub changed: i64,
    pub unchanged: i64,
}

/// The calls a finished job spent on the target.
#[derive(Debug, Serialize)]
pub struct JobScim {
    pub requests: i64,
    pub retries: i64,
    pub rate_limited: i64,
}

impl<'a> JobFinished<'a> {
    /// `job` as its final transition left it: read inside the transition's transaction, so
    /// status and counts are the final ones.
    pub fn new(job: &'a JobRecord) -> JobFinished<'a> {
        JobFinished {
            job_id: &job.id,
            approved_by: job.approved_by.as_ref(),
            cancelled_by: job.cancelled_by.as_ref(),
            status: job.status,
            counts: &job.counts,
            users: JobUsers {
                total: job.users_total,
                changed: job.users_changed,
                unchanged: job.users_unchanged,
            },
            scim: JobScim {
                requests: job.scim_requests,
                retries: job.scim_retries,
                rate_limited: job.scim_rate_limited,
            },
        }
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The body of a batch: `{"type":"batch","timestamp":…,"events":[…]}`, each event being the
/// body it has when sent alone plus its `id` (the `webhook-id` it has alone), so a receiver can
/// de-duplicate events across batches and single deliveries.
pub fn batch_body(members: &[(&str, &str)]) -> String {
    let events: Vec<Value> = members
        .iter()
        .map(|(id, payload)| {
            // Payloads are JSON objects this process wrote; anything else is carried as text.
            match serde_json::from_str::<Value>(payload) {
                Ok(Value::Object(mut map)) => {
                    map.insert("id".to_owned(), Value::String((*id).to_owned()));
                    Value::Object(map)
                }
                _ => json!({"id": id, "payload": payload}),
            }
        })
        .collect();
    json!({"type": BATCH, "timestamp": now_rfc3339(), "events": events}).to_string()
}

/// A new `webhook-id`.
pub fn new_message_id() -> String {
    format!("msg_{}", uuid::Uuid::now_v7().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `data` of an event as the factory writes it.
    fn written(data: impl Serialize) -> String {
        serde_json::to_value(data)
            .map(|v| v.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn a_batch_carries_each_event_with_its_id() {
        let a =
            json!({"type": "job.finished", "timestamp": "t", "data": {"job_id": "j"}}).to_string();
        let body = batch_body(&[("msg_a", &a), ("msg_b", "not json")]);
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(v["type"], BATCH);
        assert_eq!(v["events"][0]["id"], "msg_a");
        assert_eq!(v["events"][0]["data"]["job_id"], "j");
        assert_eq!(v["events"][1]["id"], "msg_b");
        assert_eq!(v["events"][1]["payload"], "not json");
    }

    #[test]
    fn endpoints_get_only_the_types_they_asked_for() {
        let settings: WebhookSettings = WebhookSettings {
            endpoints: vec![
                endpoint("all", &[]),
                endpoint("jobs", &[EventType::JobFinished]),
            ],
            ..Default::default()
        };
        let f = EventFactory::new(&settings);
        let e = f
            .event(EventType::JobFinished, json!({}))
            .map(|e| e.endpoints);
        assert_eq!(e, Some(vec!["all".to_owned(), "jobs".to_owned()]));
        let e = f
            .event(EventType::RoleSyncFailed, json!({}))
            .map(|e| e.endpoints);
        assert_eq!(e, Some(vec!["all".to_owned()]));
        let e = f.event(EventType::RoleSyncFailed, json!({}));
        assert_eq!(e.map(|e| e.event_type), Some("role_sync.failed".to_owned()));
    }

    #[test]
    fn no_endpoint_no_event() {
        let f = EventFactory::new(&WebhookSettings::default());
        assert!(f.event(EventType::JobFinished, json!({})).is_none());
    }

    #[test]
    fn the_envelope_is_type_timestamp_and_data() {
        let f = EventFactory::new(&WebhookSettings {
            endpoints: vec![endpoint("all", &[])],
            ..Default::default()
        });
        let payload = f
            .event(
                EventType::RoleSyncRejected,
                RoleSyncRejected::new("j", 3, ReasonCode::UnknownRole, "m"),
            )
            .map(|e| e.payload)
            .unwrap_or_default();
        let v: Value = serde_json::from_str(&payload).unwrap_or_default();
        assert_eq!(v["type"], "role_sync.rejected");
        assert!(v["timestamp"].is_string());
        assert_eq!(v["data"]["line"], 3);
        // Keys sorted, as `json!` always wrote them.
        assert!(
            payload.starts_with(r#"{"data":{"external_id":"","job_id":"j","#),
            "{payload}"
        );
    }

    // The payloads below are compared, byte for byte, with the `json!` they replaced.

    #[test]
    fn completed_has_the_shape_it_always_had() {
        let policy = match Policy::from_toml_str(include_str!("../../config/policy.toml")) {
            Ok(p) => p,
            Err(e) => panic!("default policy must load: {e}"),
        };
        let set = |r: &[&str]| -> RoleSet { r.iter().map(|s| (*s).to_owned()).collect() };
        let change = RoleChange::new(
            set(&["Employee", "Supervisor"]),
            set(&["Agent", "Employee"]),
        );
        let data = RoleSyncCompleted::new(&policy, "j", "e1", "u1", &change);
        let before = policy.effective_permissions(&change.before);
        let after = policy.effective_permissions(&change.after);
        let perms_added: Vec<String> = after.difference(&before).cloned().collect();
        let perms_removed: Vec<String> = before.difference(&after).cloned().collect();
        let old = json!({
            "job_id": "j",
            "external_id": "e1",
            "user_id": "u1",
            "roles_before": change.before,
            "roles_after": change.after,
            "roles_added": change.added,
            "roles_removed": change.removed,
            "effective_permissions": *after,
            "permissions_added": perms_added,
            "permissions_removed": perms_removed,
        });
        assert_eq!(written(&data), old.to_string());
        assert_eq!(data.roles_added, ["Agent".to_owned()]);
        assert_eq!(data.roles_removed, ["Supervisor".to_owned()]);
    }

    #[test]
    fn failed_has_the_shape_it_always_had() {
        let data = RoleSyncFailed::new(
            "j",
            "e1",
            vec![2, 5],
            Outcome::NotFound,
            ReasonCode::UserNotFound,
            "gone",
        );
        let old = json!({
            "job_id": "j",
            "external_id": "e1",
            "lines": [2, 5],
            "outcome": "not_found",
            "reason": {"code": "user_not_found", "message": "gone"},
        });
        assert_eq!(written(&data), old.to_string());
    }

    #[test]
    fn rejected_has_the_shape_it_always_had() {
        let data = RoleSyncRejected::new("j", 7, ReasonCode::SodConflict, "no").of_row(
            "e1",
            "Agent",
            "Standard Agent",
        );
        let old = json!({
            "job_id": "j",
            "line": 7,
            "external_id": "e1",
            "role_template": "Agent",
            "license_tier": "Standard Agent",
            "reason": {"code": "sod_conflict", "message": "no"},
        });
        assert_eq!(written(&data), old.to_string());
        let bare = RoleSyncRejected::new("j", 7, ReasonCode::MalformedRow, "no");
        let old_bare = json!({
            "job_id": "j",
            "line": 7,
            "external_id": "",
            "role_template": "",
            "license_tier": "",
            "reason": {"code": "malformed_row", "message": "no"},
        });
        assert_eq!(written(&bare), old_bare.to_string());
    }

    #[test]
    fn job_finished_has_the_shape_it_always_had() {
        let job = JobRecord {
            id: "j".to_owned(),
            status: JobStatus::Cancelled,
            mode: crate::domain::Mode::Replace,
            dry_run: false,
            created_at_ms: 1,
            started_at_ms: Some(2),
            finished_at_ms: None,
            updated_at_ms: 3,
            planned: true,
            counts: Counts {
                total: 10,
                pending: 1,
                applied: 5,
                ..Default::default()
            },
            users_total: 4,
            users_changed: 3,
            users_unchanged: 1,
            scim_requests: 12,
            scim_retries: 2,
            scim_rate_limited: 1,
            paused_reason: None,
            error: None,
            estimate: None,
            approval: None,
            policy_fingerprint: None,
            request_id: None,
            privileged_allowed: false,
            traceparent: None,
            kind: crate::domain::JobKind::Sync,
            original_job_id: None,
            reverted_by: None,
            revert_force: false,
            reason: None,
            submitted_by: None,
            approved_by: None,
            cancelled_by: None,
        };
        let old = json!({
            "job_id": job.id,
            "status": "cancelled",
            "counts": job.counts,
            "users": {"total": job.users_total, "changed": job.users_changed, "unchanged": job.users_unchanged},
            "scim": {"requests": job.scim_requests, "retries": job.scim_retries, "rate_limited": job.scim_rate_limited},
        });
        assert_eq!(written(JobFinished::new(&job)), old.to_string());
    }

    fn endpoint(name: &str, events: &[EventType]) -> crate::configuration::WebhookEndpointSettings {
        crate::configuration::WebhookEndpointSettings {
            name: Some(name.to_owned()),
            url: "http://127.0.0.1:1/".to_owned(),
            secret: None,
            secret_file: None,
            previous_secrets: Vec::new(),
            events: events.to_vec(),
        }
    }
}

//! Builds audit events (SPEC §7) as outbox entries, one delivery per interested endpoint.

use crate::configuration::WebhookSettings;
use crate::store::OutboxEvent;
use serde_json::{Value, json};

pub const ROLE_SYNC_COMPLETED: &str = "role_sync.completed";
pub const ROLE_SYNC_REJECTED: &str = "role_sync.rejected";
pub const ROLE_SYNC_FAILED: &str = "role_sync.failed";
pub const JOB_FINISHED: &str = "job.finished";
/// The type of a batch body; never the type of an event, so an outbox row of this type is a
/// batch of other rows.
pub const BATCH: &str = "batch";

/// Every event type an endpoint may subscribe to.
pub const ALL_TYPES: [&str; 4] = [
    ROLE_SYNC_COMPLETED,
    ROLE_SYNC_REJECTED,
    ROLE_SYNC_FAILED,
    JOB_FINISHED,
];

#[derive(Clone, Debug, Default)]
pub struct EventFactory {
    /// (endpoint name, event types it wants; all when empty)
    endpoints: Vec<(String, Vec<String>)>,
}

impl EventFactory {
    pub fn new(settings: &WebhookSettings) -> EventFactory {
        EventFactory {
            endpoints: settings
                .endpoints
                .iter()
                .map(|e| {
                    let types = e.events.iter().map(|t| t.as_str().to_owned()).collect();
                    (e.display_name(), types)
                })
                .collect(),
        }
    }

    /// An event for every endpoint that wants `event_type`; None when no endpoint does.
    pub fn event(&self, event_type: &str, data: Value) -> Option<OutboxEvent> {
        let endpoints: Vec<String> = self
            .endpoints
            .iter()
            .filter(|(_, types)| types.is_empty() || types.iter().any(|t| t == event_type))
            .map(|(name, _)| name.clone())
            .collect();
        if endpoints.is_empty() {
            return None;
        }
        let payload =
            json!({"type": event_type, "timestamp": now_rfc3339(), "data": data}).to_string();
        Some(OutboxEvent {
            event_id: new_message_id(),
            event_type: event_type.to_owned(),
            payload,
            endpoints,
        })
    }
}

/// `role_sync.rejected` data: one row the policy (or the ingest) refused; nothing was written.
pub fn rejected_data(
    job_id: &str,
    line: i64,
    row: Option<(&str, &str, &str)>,
    code: &str,
    message: &str,
) -> Value {
    let (external_id, role_template, license_tier) = row.unwrap_or(("", "", ""));
    json!({
        "job_id": job_id,
        "line": line,
        "external_id": external_id,
        "role_template": role_template,
        "license_tier": license_tier,
        "reason": {"code": code, "message": message},
    })
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

    #[test]
    fn a_batch_carries_each_event_with_its_id() {
        let a =
            json!({"type": JOB_FINISHED, "timestamp": "t", "data": {"job_id": "j"}}).to_string();
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
            endpoints: vec![endpoint("all", &[]), endpoint("jobs", &[JOB_FINISHED])],
            ..Default::default()
        };
        let f = EventFactory::new(&settings);
        let e = f.event(JOB_FINISHED, json!({})).map(|e| e.endpoints);
        assert_eq!(e, Some(vec!["all".to_owned(), "jobs".to_owned()]));
        let e = f.event(ROLE_SYNC_FAILED, json!({})).map(|e| e.endpoints);
        assert_eq!(e, Some(vec!["all".to_owned()]));
    }

    fn endpoint(name: &str, events: &[&str]) -> crate::configuration::WebhookEndpointSettings {
        crate::configuration::WebhookEndpointSettings {
            name: Some(name.to_owned()),
            url: "http://127.0.0.1:1/".to_owned(),
            secret: None,
            secret_file: None,
            previous_secrets: Vec::new(),
            events: events
                .iter()
                .filter_map(|s| crate::domain::EventType::parse(s))
                .collect(),
        }
    }
}

//! Builds audit events (SPEC §7) as outbox entries, one delivery per interested endpoint.

use crate::configuration::WebhookSettings;
use crate::store::OutboxEvent;
use serde_json::{Value, json};

pub const ROLE_SYNC_COMPLETED: &str = "role_sync.completed";
pub const ROLE_SYNC_REJECTED: &str = "role_sync.rejected";
pub const ROLE_SYNC_FAILED: &str = "role_sync.failed";
pub const JOB_FINISHED: &str = "job.finished";

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
                .map(|e| (e.display_name(), e.events.clone()))
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
        let timestamp = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let payload = json!({"type": event_type, "timestamp": timestamp, "data": data}).to_string();
        Some(OutboxEvent {
            event_id: format!("msg_{}", uuid::Uuid::now_v7().simple()),
            event_type: event_type.to_owned(),
            payload,
            endpoints,
        })
    }
}

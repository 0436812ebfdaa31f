//! Audit trail: events (their format for receivers: `docs/webhooks.md`) written to the durable outbox in the same transaction as the
//! outcome they describe, a dispatcher that delivers them signed per Standard Webhooks, and one
//! structured log line per role change (tracing target `audit`).

pub mod dispatcher;
pub mod events;
pub(crate) mod log;
pub mod signature;

pub use dispatcher::{Dispatcher, Endpoint};
pub use events::EventFactory;

//! Pure domain types: no IO. Each type validates once, in its constructor.

#[macro_use]
mod vocabulary;
mod assignment;
mod job;
mod webhook_secret;

pub use assignment::{Action, Assignment, ExternalId, Mode, Roster};
pub use job::{
    Approval, Counts, Estimate, JobKind, JobStatus, Leavers, Outcome, PrivilegedGrants, ReasonCode,
};
pub use vocabulary::{
    ApprovalReason, CheckId, CheckStatus, DeliveryStatus, DriftFallback, DriftPollResult,
    DriftSource, EventType, LogFormat, PausedReason, ReadMethod, ScimCallOutcome, ScimRetryReason,
    Scope, WriteApi,
};
pub use webhook_secret::WebhookSecret;

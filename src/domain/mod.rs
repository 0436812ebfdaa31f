//! Pure domain types: no IO. Each type validates once, in its constructor.

#[macro_use]
mod vocabulary;
mod assignment;
mod job;
mod principal;
mod webhook_secret;

pub use assignment::{Action, Assignment, ExternalId, Mode, Roster};
pub use job::{
    Approval, Counts, Estimate, JobKind, JobStatus, Leavers, Outcome, PrivilegedGrants, ReasonCode,
};
pub use principal::{MAX_PRINCIPAL_FIELD, Principal};
pub use vocabulary::{
    ApprovalReason, AuthFailure, CheckId, CheckStatus, DeliveryStatus, DriftFallback,
    DriftPollResult, DriftSource, EventType, JwtAlgorithm, LogFormat, PausedReason, PrincipalKind,
    ReadMethod, ScimCallOutcome, ScimRetryReason, Scope, TokenClaim, WriteApi,
};
pub use webhook_secret::WebhookSecret;

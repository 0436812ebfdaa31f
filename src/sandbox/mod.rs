//! `rolesync sandbox-check`: runs every assumption rolesync's SCIM and Authorization paths, and
//! its drift feed (the audit trail), rest on against a sandbox org, touching only one test user,
//! and puts that user back as it was.
//!
//! Invariants:
//! - the only user written is the test user (found by its externalId, exactly one); other
//!   users are at most read (the listings of the page-size and inactive checks, and the home
//!   division's grants);
//! - the test user's `active` and `roles` are recorded before the first write, and restored
//!   after the last one, also when the run is interrupted (`interrupt` resolves: the probes are
//!   dropped at their next await, then the restore runs) or a probe fails. A restore that does
//!   not end with the user as recorded says exactly what to set by hand;
//! - every call is made once (no retry), counted, and kept for the redacted trace; every wait
//!   (for the audit trail to answer the check's changes) is bounded.
//!
//! The judgements are pure (`assumptions`), the redaction too (`redact`); the calls are in
//! `http` and their sequence in `probes`.

pub mod assumptions;
pub mod audit;
mod http;
mod probes;
pub mod redact;
mod report;

pub use assumptions::{AssumptionId, Finding, Verdict};
pub use report::{Options, Report, Restore, RestoreStatus};

use crate::configuration::Settings;
use std::future::Future;

/// Runs the check. `interrupt` resolving (Ctrl-C, SIGTERM) stops the probes; the test user is
/// restored either way before this returns.
pub async fn run(
    settings: &Settings,
    options: &Options,
    interrupt: impl Future<Output = ()>,
) -> Report {
    probes::run(settings, options, interrupt).await
}

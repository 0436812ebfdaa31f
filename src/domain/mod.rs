//! Pure domain types: no IO. Each type validates once, in its constructor.

#[macro_use]
mod vocabulary;
mod assignment;
mod job;

pub use assignment::{Assignment, ExternalId, Mode};
pub use job::{Counts, JobStatus, Outcome, ReasonCode};
pub use vocabulary::{EventType, LogFormat, PausedReason, Scope};

//! Pure domain types: no IO. Each type validates once, in its constructor.

mod assignment;
mod job;

pub use assignment::{Assignment, ExternalId, Mode};
pub use job::{Counts, JobStatus, Outcome, ReasonCode};

//! rolesync: keeps Genesys Cloud user roles in step with an HR system.
//!
//! The public modules are what the binary, the tests and the benchmarks use; the rest is
//! internal. How the parts fit: `docs/architecture.md`.

pub mod audit;
pub mod configuration;
pub mod doctor;
pub mod domain;
pub(crate) mod error;
pub mod http;
pub mod ingest;
pub(crate) mod metrics;
pub(crate) mod pipeline;
pub mod policy;
pub(crate) mod scim;
pub mod startup;
pub mod store;
pub mod telemetry;

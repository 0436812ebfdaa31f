//! rolesync: keeps Genesys Cloud user roles in step with an HR system.

pub mod audit;
pub mod configuration;
pub mod domain;
pub mod error;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod pipeline;
pub mod policy;
pub mod scim;
pub mod startup;
pub mod store;
pub mod telemetry;

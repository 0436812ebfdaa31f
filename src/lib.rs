//! rolesync: keeps Genesys Cloud user roles in step with an HR system.

pub mod audit;
pub mod cli;
pub mod configuration;
pub mod demo;
pub mod domain;
pub mod emulator;
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

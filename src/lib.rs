//! rolesync: keeps Genesys Cloud user roles in step with an HR system.

pub mod cli;
pub mod domain;
pub mod emulator;
pub mod policy;

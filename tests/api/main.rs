//! One integration-test binary: real HTTP on 127.0.0.1 against a real rolesync, a real
//! emulator and a real SQLite file (PostgreSQL when `TEST_DATABASE_URL` is set).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;
mod bulk;
mod cli;
mod console;
mod doctor;
mod drift;
mod durability;
mod effective_dates;
mod fencing;
mod healing;
mod helpers;
mod hostile;
mod ingest;
mod items_csv;
mod joiners;
mod layout;
mod leavers;
mod observability;
mod openapi;
mod org_roles;
mod policy;
mod process;
mod proxy;
mod reads;
mod resilience;
mod sandbox_check;
mod serve_target;
mod sync;
mod traces;
mod undo;
mod waits;
mod webhooks;

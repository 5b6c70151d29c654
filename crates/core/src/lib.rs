//! soarjobd-core: what every other crate of soarjobd shares, and nothing that runs.
//!
//! The grammar of the config ([`config`]) and of job files ([`definition`]), the schedule math
//! ([`schedule`]), the [`job::Job`]/[`job::JobContext`] and [`platform::Platform`] traits a job
//! or a platform plugs in with, the store traits and row types ([`store`]; the backends are
//! `soarjobd-store`), the hooks observers are fed through ([`observe`]), alert notifications
//! ([`alerts`]), redaction ([`redact`]), errors ([`error`], [`exit`]).
//!
//! It depends on no database driver, file watcher, libc or HTTP crate, and on no other
//! soarjobd crate: the clients and the jobs build on it alone. What runs jobs (scheduler,
//! runner, daemon) is `soarjobd-engine`. See `ARCHITECTURE.md`.

pub mod alerts;
pub mod config;
pub mod definition;
pub mod error;
pub mod exec_policy;
pub mod exit;
pub mod job;
pub mod observe;
pub mod platform;
pub mod redact;
pub mod schedule;
pub mod store;

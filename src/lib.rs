//! soarjobd: a daemon that runs scheduled SOAR jobs.
//!
//! This crate is the program put together: the composition root ([`app`]), the CLI ([`cli`],
//! [`inspect`], [`demo`]). The rest lives in the workspace's member crates and is re-exported
//! here under the paths it always had:
//! - `soarjobd-core`: [`definition`] -> [`scheduler`] -> [`runner`] -> [`job`] -> [`store`] / logs,
//!   the config grammar, the [`platform`] plugin trait (knows no platform);
//! - `soarjobd-clients`: [`http`], [`soar`], [`threatconnect`];
//! - `soarjobd-jobs`: [`jobs`] (the built-in jobs and the platform plugins);
//! - `soarjobd-sim` (cargo feature `sim`, on by default): `sim`, the simulators.
//!
//! See `ARCHITECTURE.md` for the map and the invariants each crate boundary enforces.

pub mod admin;
pub mod app;
pub mod cli;
pub mod demo;
pub mod inspect;
pub mod ops_cli;
pub mod replicas;

pub use soarjobd_clients::{http, soar, threatconnect};
pub use soarjobd_core::{
    clock, config, containment, daemon, definition, exec_policy, exit, job, observe, ops, platform,
    redact, runner, schedule, scheduler, store, systemd, telemetry, timer, watch,
};
pub use soarjobd_jobs as jobs;
#[cfg(feature = "sim")]
pub use soarjobd_sim as sim;

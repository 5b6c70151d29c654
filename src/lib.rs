//! soarjobd: a daemon that runs scheduled SOAR jobs.
//!
//! This crate is the program put together: the composition root ([`app`]), the CLI ([`cli`],
//! [`inspect`], [`demo`]). The rest lives in the workspace's member crates and is re-exported
//! here under the paths it always had:
//! - `soarjobd-core`: [`config`], [`definition`], [`schedule`], [`job`], [`platform`], the
//!   store traits, [`observe`] hooks, [`redact`] (knows no platform and no database driver);
//! - `soarjobd-engine`: [`scheduler`], [`runner`], [`watch`], [`daemon`], [`control`],
//!   [`ops`], ...; `soarjobd-store`: the SQLite and PostgreSQL backends ([`store`] holds
//!   both halves); `soarjobd-containment`: [`containment`];
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
pub use soarjobd_containment as containment;
pub use soarjobd_core::{
    alerts, config, definition, error, exec_policy, exit, job, observe, platform, redact, schedule,
};
pub use soarjobd_engine::{
    clock, cluster, control, daemon, ops, overload, runner, scheduler, systemd, telemetry, timer,
    watch,
};

/// The store: the core's traits and row types, and the backends of `soarjobd-store`, under
/// the one path they had before the split.
pub mod store {
    pub use soarjobd_core::store::*;
    pub use soarjobd_store::*;
}
pub use soarjobd_jobs as jobs;
#[cfg(feature = "sim")]
pub use soarjobd_sim as sim;

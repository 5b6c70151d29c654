//! soarjobd-engine: what runs jobs.
//!
//! Data flows one way: files -> `definition` -> [`scheduler`] -> [`runner`] -> `job` ->
//! `store` / logs. This crate holds the moving parts: the [`scheduler`] loop (on its
//! [`clock`] and [`timer`]), the [`runner`] of one run, the jobs-folder [`watch`]er, the
//! [`daemon`] that wires them, [`cluster`] reactions, the admin server's [`control`],
//! operations ([`ops`]: pauses, run logs, alert tasks), [`systemd`] and [`telemetry`]. What it
//! runs and with which grammar is `soarjobd-core`; the store backends are `soarjobd-store`
//! (the daemon opens one); a run's child processes are `soarjobd-containment`'s.

pub mod clock;
pub mod cluster;
pub mod control;
pub mod daemon;
pub mod ops;
pub mod overload;
pub mod runner;
pub mod scheduler;
pub mod systemd;
pub mod telemetry;
pub mod timer;
pub mod watch;

// The core's modules, under the names the engine's modules use (`crate::definition`,
// `crate::store`): this crate's code reads as the one flow it is part of. Not re-exported:
// other crates name them `soarjobd_core::...`.
use soarjobd_core::{config, definition, error, exec_policy, exit, job, observe, redact, store};

//! soarjobd-engine: what runs jobs.
//!
//! Data flows one way: files -> `definition` -> `scheduler` -> `runner` -> `job` ->
//! `store` / logs. This crate holds the moving parts: the [`Scheduler`] loop (on its
//! `clock` and `timer`), the [`Runner`] of one run, the jobs-folder `watch`er, the
//! [`Daemon`] that wires them, `cluster` reactions, the admin server's [`Control`],
//! operations (`ops`: pauses, run logs, alert tasks), `systemd` and [`telemetry`]. What it
//! runs and with which grammar is `soarjobd-core`; the store backends are `soarjobd-store`
//! (the daemon opens one); a run's child processes are `soarjobd-containment`'s.

// One public module, `telemetry` (the log setup: `telemetry::init`, `telemetry::subscriber`,
// names that read right only under it). Everything else is private, and what the root, the
// admin server, the tests and the benches use is re-exported here.
pub mod telemetry;

mod clock;
mod cluster;
mod control;
mod daemon;
mod ops;
mod overload;
mod runner;
mod scheduler;
mod systemd;
mod timer;
mod watch;

pub use control::{Control, ReadStore};
pub use daemon::{Daemon, DaemonBuilder, DaemonError, RunningDaemon};
pub use ops::runlog::{FLUSH_EVERY as RUN_LOG_FLUSH_EVERY, format_line as format_run_log_line};
pub use ops::{OpsError, PauseControl, RunLogs};
pub use runner::{RunControl, RunRequest, Runner, StopReason, TickClaim};
pub use scheduler::{RunningRuns, Scheduler, SchedulerOptions};

// The core's modules, under the names the engine's modules use (`crate::definition`,
// `crate::store`): this crate's code reads as the one flow it is part of. Not re-exported:
// other crates name them `soarjobd_core::...`.
use soarjobd_core::{config, definition, exit, store};

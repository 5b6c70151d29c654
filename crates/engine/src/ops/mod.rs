//! Steering the daemon like a production service: pausing and resuming jobs ([`pause`]), the
//! log lines of each run kept with the run ([`runlog`]), and alerts on failing jobs
//! ([`alerts`]). The admin HTTP server and the CLI call these; the state lives in the store
//! ([`crate::store::OpsStore`]).

pub mod alerts;
pub mod pause;
pub mod runlog;

pub use pause::{OpsError, PauseControl};
pub use runlog::{RunLogLayer, RunLogs};

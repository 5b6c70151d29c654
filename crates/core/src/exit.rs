//! The process exit-code policy, in one place.
//!
//! Job outcomes follow ThreatConnect TcEx apps (0 success, 3 partial, 1 failure); usage and
//! configuration errors are 2, as for most Unix tools.

use crate::store::RunStatus;

/// Everything worked.
pub const SUCCESS: i32 = 0;
/// A run failed or timed out, or `check` found errors.
pub const FAILURE: i32 = 1;
/// Bad command line or configuration.
pub const USAGE: i32 = 2;
/// A run partially succeeded.
pub const PARTIAL: i32 = 3;

/// The exit code for a finished run.
pub fn for_run(status: RunStatus) -> i32 {
    match status {
        RunStatus::Succeeded => SUCCESS,
        RunStatus::Partial => PARTIAL,
        _ => FAILURE,
    }
}

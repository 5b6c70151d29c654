//! Built-in job implementations, and the platforms (config section, client, jobs) they use.
//!
//! soarjobd-jobs. Nothing here is known to the core: the composition root (`app`) registers [`exec::Exec`]
//! and installs [`SoarPlatform`] and [`ThreatConnectPlatform`], which build their clients and
//! hand them to their jobs.

mod cases;
pub mod comment_on_tagged_cases;
pub mod exec;
mod platforms;
mod process;
pub mod push_case_iocs;
pub mod secops_script;
pub mod tcex_app;

pub use platforms::{SecopsPlatform, SoarPlatform, TcexPlatform, ThreatConnectPlatform};

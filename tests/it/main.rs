//! Integration tests, in one binary so they link once.

mod app;
mod cluster;
mod config;
mod containment;
mod deploy;
mod example;
mod exec;
mod exec_output;
mod limits;
mod overlap;
mod process;
mod redaction;
mod reload;
mod runtime;
// These two drive the simulators (`soarjobd::sim`, the default feature `sim`).
#[cfg(feature = "sim")]
mod soar;
mod store_faults;
mod support;
#[cfg(feature = "sim")]
mod threatconnect;

//! Integration tests, in one binary so they link once.

mod admin;
mod alert_sinks;
mod alerts;
mod app;
mod browser;
mod cluster;
mod config;
mod containment;
mod deploy;
mod example;
mod exec;
mod exec_output;
mod hardening;
mod limits;
mod ops;
mod overlap;
mod process;
mod redaction;
mod reload;
mod runtime;
#[cfg(feature = "sim")]
mod secops;
#[cfg(feature = "sim")]
mod secops_migration;
// These two drive the simulators (`soarjobd_sim`, the default feature `sim`).
#[cfg(feature = "sim")]
mod soar;
mod store_faults;
mod support;
mod systemd;
#[cfg(feature = "sim")]
mod tcex;
#[cfg(feature = "sim")]
mod threatconnect;

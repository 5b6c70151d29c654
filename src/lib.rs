//! soarjobd: a daemon that runs scheduled SOAR jobs.
//!
//! Data flows one way: files -> [`definition`] -> [`scheduler`] -> [`runner`] -> [`job`] ->
//! [`store`] / logs. See `ARCHITECTURE.md` for the map and the invariants each module keeps.

pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod containment;
pub mod daemon;
pub mod definition;
pub mod demo;
pub mod exit;
pub mod http;
pub mod inspect;
pub mod job;
pub mod jobs;
pub mod platform;
pub mod redact;
pub mod runner;
pub mod schedule;
pub mod scheduler;
pub mod sim;
pub mod soar;
pub mod store;
pub mod telemetry;
pub mod threatconnect;
pub mod timer;
pub mod watch;

//! soarjobd-core: what runs jobs, knowing no platform.
//!
//! Data flows one way: files -> [`definition`] -> [`scheduler`] -> [`runner`] -> [`job`] ->
//! [`store`] / logs. Platforms plug in through [`platform::Platform`]; this crate depends on no
//! client, built-in job or simulator crate (the workspace enforces it: see `ARCHITECTURE.md`).

pub mod clock;
pub mod cluster;
pub mod config;
pub mod containment;
pub mod daemon;
pub mod definition;
pub mod exec_policy;
pub mod exit;
pub mod job;
pub mod observe;
pub mod ops;
pub mod overload;
pub mod platform;
pub mod redact;
pub mod runner;
pub mod schedule;
pub mod scheduler;
pub mod store;
pub mod systemd;
pub mod telemetry;
pub mod timer;
pub mod watch;

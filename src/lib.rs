//! soarjobd: a daemon that runs scheduled SOAR jobs.
//!
//! Data flows one way: files -> [`definition`] -> [`scheduler`] -> [`runner`] -> [`job`] ->
//! [`store`] / logs. See `ARCHITECTURE.md` for the map and the invariants each module keeps.

pub mod schedule;
pub mod sim;
pub mod soar;
pub mod store;
pub mod threatconnect;

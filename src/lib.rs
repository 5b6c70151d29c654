//! soarjobd: a daemon that runs scheduled SOAR jobs.
//!
//! This crate is the program put together: the composition root ([`app`]), the CLI ([`cli`],
//! [`inspect`], [`demo`]). The rest lives in the workspace's member crates, used (by this
//! crate, its tests, benches and examples) by their own paths:
//! - `soarjobd_core`: `config`, `definition`, `schedule`, `job`, `platform`, the store traits
//!   and row types (`store`), `observe` hooks, `redact` (knows no platform and no database
//!   driver);
//! - `soarjobd_engine`: `scheduler`, `runner`, `watch`, `daemon`, `control`, `ops`, ...;
//!   `soarjobd_store`: the SQLite and PostgreSQL backends (`open`, `sqlite`, `postgres`);
//!   `soarjobd_containment`: the processes of runs;
//! - `soarjobd_clients`: `http`, `soar`, `threatconnect`;
//! - `soarjobd_jobs`: the built-in jobs and the platform plugins;
//! - `soarjobd_sim` (cargo feature `sim`, on by default): the simulators.
//!
//! See `ARCHITECTURE.md` for the map and the invariants each crate boundary enforces.

pub mod admin;
pub mod app;
pub mod cli;
pub mod demo;
pub mod inspect;
pub mod ops_cli;
pub mod replicas;
pub mod secops_cli;

//! ThreatConnect: authentication, the Batch API V2 client, and the TcEx-style batch writer.
//!
//! * [`auth`]: HMAC and `TC-Token` request signing.
//! * [`config`]: the `threatconnect` config section.
//! * [`client`]: batch jobs (create, upload, poll, errors) and the group lookup, all through
//!   [`crate::http`].
//! * [`types`]: indicator and group types and the checks run before anything is sent.
//! * [`batch`]: the TcEx-style [`BatchWriter`] (queue, then `process(owner)`), built on
//!   `plan` (validation, merging, xids, job splitting, error mapping; no I/O) and
//!   [`report`] (the [`BatchReport`] and its exit code).

mod auth;
mod batch;
mod client;
mod config;
mod items;
mod plan;
mod report;
mod types;

pub use auth::Auth;
pub use batch::BatchWriter;
pub use client::{
    AttributeWriteType, BatchAction, BatchErrorEntry, BatchSettings, BatchStatus, Forwarded,
    GroupRef, TagWriteType, TcError, ThreatConnectClient,
};
pub use config::ThreatConnectConfig;
pub use items::{Attribute, FileOccurrence, Group, GroupAssociation, Indicator};
pub use plan::{CRITICAL_ERROR_PATTERNS, group_xid, sha256_hex};
pub use report::{BatchOutcome, BatchReport, FailedItem, JobReport, KindReport};
pub use types::{GroupType, IndicatorType};

#[cfg(test)]
mod tests;

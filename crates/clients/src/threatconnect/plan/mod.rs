//! The batch writer's client-side work, free of I/O: validate and merge the queue, give groups
//! their xids, resolve associations, split the work into batch jobs within the platform's
//! limits, serialize each job's file, and map the server's error entries back to items.
//!
//! [`Plan`] keeps one row per distinct queued item with its state; the network side
//! ([`crate::threatconnect::batch`]) only moves rows from `Pending` to `Saved` or `Failed`.
//!
//! By phase: `stage` (validate and merge, with the checks in `validate` and the merge rules
//! in `merge`), `associate` (associations, file occurrences, group lookups), `split` (jobs
//! within the limits), `file` (each job's input file, in the shapes of `wire`), `errors` (the
//! server's error entries mapped back to items) and `outcome` (failures, saves, the report).

mod associate;
mod errors;
mod file;
mod merge;
mod outcome;
mod split;
mod stage;
mod validate;
mod wire;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::items::Attribute;
use super::types::{GroupType, IndicatorType};

/// `errorReason` texts that mean the whole job failed (spec §3.1, both tcex generations).
pub const CRITICAL_ERROR_PATTERNS: [&str; 2] = [
    "Encountered an unexpected Exception while processing batch job",
    "would exceed the number of allowed indicators",
];

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &str) -> String {
    Sha256::digest(data.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The deterministic xid of a group: SHA-256 hex of `owner NUL type NUL name`. The owner is
/// part of it because xids are unique across the whole instance; NUL cannot occur in a valid
/// name, so different triples never share an input.
pub fn group_xid(owner: &str, group_type: GroupType, name: &str) -> String {
    sha256_hex(&format!("{owner}\0{}\0{name}", group_type.as_str()))
}

/// Where an item stands.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum State {
    /// Not confirmed saved (yet): ends in `not_saved` if nothing else happens.
    Pending,
    Saved,
    Failed(String),
}

/// One distinct queued item. `item` is `None` for an item refused by validation.
#[derive(Debug)]
pub(super) struct Row<T> {
    pub label: String,
    pub state: State,
    pub item: Option<T>,
    /// Created by the writer (a File carrying occurrences of a hash not queued as an
    /// indicator): sent, but not reported as an indicator.
    pub implicit: bool,
}

impl<T> Row<T> {
    fn valid(label: String, item: T) -> Row<T> {
        Row {
            label,
            state: State::Pending,
            item: Some(item),
            implicit: false,
        }
    }

    fn invalid(label: String, reason: String) -> Row<T> {
        Row {
            label,
            state: State::Failed(reason),
            item: None,
            implicit: false,
        }
    }

    fn is_pending(&self) -> bool {
        self.state == State::Pending
    }

    /// Fails the row if it is still pending (a first failure reason is kept).
    fn fail(&mut self, reason: impl Into<String>) {
        if self.is_pending() {
            self.state = State::Failed(reason.into());
        }
    }
}

#[derive(Debug)]
pub(super) struct PGroup {
    group_type: GroupType,
    name: String,
    xid: String,
    tags: Vec<String>,
    attributes: Vec<Attribute>,
    fields: Map<String, Value>,
}

#[derive(Debug)]
pub(super) struct PIndicator {
    indicator_type: IndicatorType,
    summary: String,
    rating: Option<f64>,
    confidence: Option<u32>,
    tags: Vec<String>,
    attributes: Vec<Attribute>,
    fields: Map<String, Value>,
    /// Associations to groups of this batch, sent as this indicator's `associatedGroups`.
    carried: Vec<usize>,
    occurrences: Vec<usize>,
}

/// The group side of an association.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum GroupTarget {
    /// A group of this batch (index into `groups`).
    InBatch(usize),
    /// A group not in the batch, to be looked up by name.
    Named(GroupType, String),
    /// A group found by the lookup.
    Existing(u64),
}

/// The indicator side of an association.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum IndicatorTarget {
    InBatch(usize),
    /// Not queued: referenced by summary, so it must exist in the owner.
    External(IndicatorType, String),
}

#[derive(Debug)]
pub(super) struct PAssociation {
    group: GroupTarget,
    indicator: IndicatorTarget,
}

impl PAssociation {
    /// Carried by its indicator (`associatedGroups`) when both sides are in the batch;
    /// otherwise an entry of the file's `association` array.
    fn is_carried(&self) -> bool {
        matches!(
            (&self.group, &self.indicator),
            (GroupTarget::InBatch(_), IndicatorTarget::InBatch(_))
        )
    }
}

#[derive(Debug)]
pub(super) struct POccurrence {
    file_name: Option<String>,
    path: Option<String>,
    date: Option<String>,
}

/// The items of one batch job (indices into the plan's rows).
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct JobPlan {
    pub groups: Vec<usize>,
    pub indicators: Vec<usize>,
    /// `association` array entries (associations not carried by an indicator).
    pub associations: Vec<usize>,
    /// Estimated file size (an upper bound of what [`Plan::build_file`] produces).
    pub bytes: usize,
}

impl JobPlan {
    fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.indicators.is_empty() && self.associations.is_empty()
    }
}

/// Every distinct item of one `process` call and its state.
#[derive(Debug, Default)]
pub(super) struct Plan {
    pub owner: String,
    pub groups: Vec<Row<PGroup>>,
    pub indicators: Vec<Row<PIndicator>>,
    pub associations: Vec<Row<PAssociation>>,
    pub occurrences: Vec<Row<POccurrence>>,
    /// Duplicates merged, per kind: groups, indicators, associations, occurrences.
    pub merged: [usize; 4],
    /// Server errors not tied to an item, and notes on what could not be confirmed.
    pub unattributed: Vec<String>,
}

#[cfg(test)]
mod tests;

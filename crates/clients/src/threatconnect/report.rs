//! What [`crate::threatconnect::BatchWriter::process`] returns: per-kind buckets, counters of
//! what was *saved*, and the outcome with its exit code.
//!
//! Every distinct submitted item ends in exactly one bucket: `saved`, `failed` (with the
//! reason) or `not_saved` (never sent, or its fate is unknown because the batch failed).

use std::fmt;
use std::time::Duration;

/// An item that failed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedItem {
    /// The item's label (see [`KindReport`]).
    pub item: String,
    pub reason: String,
}

/// The buckets of one kind of item. Labels: groups `Type:name`, indicators `Type:summary`
/// (canonical summary when valid), associations `GroupType:name -> IndicatorType:value`,
/// file occurrences `hash|file name|path|date`. A label shows up twice only when a later copy
/// of a queued item was refused by validation (the copy fails; the first one goes on).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KindReport {
    /// Distinct items queued (duplicates merged count once), in queue order.
    pub submitted: Vec<String>,
    pub saved: Vec<String>,
    pub failed: Vec<FailedItem>,
    pub not_saved: Vec<String>,
    /// Queued items that were merged into an earlier identical one.
    pub duplicates_merged: usize,
}

impl KindReport {
    /// The reason `item` failed, if it did.
    pub fn failure(&self, item: &str) -> Option<&str> {
        self.failed
            .iter()
            .find(|f| f.item == item)
            .map(|f| f.reason.as_str())
    }

    /// The failed labels, in order.
    pub fn failed_items(&self) -> Vec<&str> {
        self.failed.iter().map(|f| f.item.as_str()).collect()
    }
}

/// How a batch went, TcEx style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Everything submitted was saved (exit code 0).
    Success,
    /// Some items failed or were not saved; the rest was saved (exit code 3).
    Partial,
    /// The batch itself failed: a job could not be created or uploaded, the server reported a
    /// critical error, polling timed out, or the run was cancelled (exit code 1).
    Failed,
}

impl BatchOutcome {
    pub fn exit_code(self) -> i32 {
        match self {
            BatchOutcome::Success => 0,
            BatchOutcome::Partial => 3,
            BatchOutcome::Failed => 1,
        }
    }
}

/// One batch job as sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobReport {
    /// The server's id (none if creation failed).
    pub batch_id: Option<u64>,
    pub groups: usize,
    pub indicators: usize,
    /// Entries of the file's `association` array (associations not carried by an indicator).
    pub associations: usize,
    /// Size of the uploaded file.
    pub bytes: usize,
    /// Last status seen (`Completed`, ...).
    pub status: Option<String>,
    pub success_count: u64,
    pub error_count: u64,
    pub unprocess_count: u64,
}

/// The result of [`crate::threatconnect::BatchWriter::process`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchReport {
    pub owner: String,
    pub groups: KindReport,
    pub indicators: KindReport,
    pub group_associations: KindReport,
    pub file_occurrences: KindReport,
    /// The batch jobs, in the order they were sent.
    pub jobs: Vec<JobReport>,
    /// Server errors that could not be tied to an item (they make the outcome partial).
    pub unattributed_errors: Vec<String>,
    /// Why the batch failed as a whole (creation, upload, critical error, poll timeout).
    pub fatal: Option<String>,
    /// Client-side time to validate, merge, plan and serialize.
    pub prepare_time: Duration,
    /// Wall-clock time of the whole `process` call.
    pub total_time: Duration,
    /// Requests this `process` call sent.
    pub requests: usize,
}

impl BatchReport {
    /// Groups saved (the original counted queued groups; this counts saved ones).
    pub fn group_len(&self) -> usize {
        self.groups.saved.len()
    }

    /// Indicators saved.
    pub fn indicator_len(&self) -> usize {
        self.indicators.saved.len()
    }

    /// Group associations saved.
    pub fn group_association_len(&self) -> usize {
        self.group_associations.saved.len()
    }

    /// File occurrences saved.
    pub fn file_occurrence_len(&self) -> usize {
        self.file_occurrences.saved.len()
    }

    fn kinds(&self) -> [(&'static str, &KindReport); 4] {
        [
            ("group", &self.groups),
            ("indicator", &self.indicators),
            ("group association", &self.group_associations),
            ("file occurrence", &self.file_occurrences),
        ]
    }

    /// Success when everything was saved; failed on a fatal error; partial otherwise.
    pub fn outcome(&self) -> BatchOutcome {
        if self.fatal.is_some() {
            return BatchOutcome::Failed;
        }
        let incomplete = self
            .kinds()
            .iter()
            .any(|(_, k)| !k.failed.is_empty() || !k.not_saved.is_empty());
        if incomplete || !self.unattributed_errors.is_empty() {
            BatchOutcome::Partial
        } else {
            BatchOutcome::Success
        }
    }

    /// 0 (success), 3 (partial) or 1 (failed).
    pub fn exit_code(&self) -> i32 {
        self.outcome().exit_code()
    }

    /// A one-paragraph summary for a run's message: what was saved, what failed (with the
    /// first reason), and the fatal reason if any.
    pub fn message(&self) -> String {
        let mut parts = Vec::new();
        if let Some(fatal) = &self.fatal {
            parts.push(format!("batch failed: {fatal}"));
        }
        parts.push(format!(
            "saved {} group(s), {} indicator(s), {} group association(s), {} file occurrence(s) in {} batch job(s)",
            self.group_len(),
            self.indicator_len(),
            self.group_association_len(),
            self.file_occurrence_len(),
            self.jobs.len()
        ));
        for (name, k) in self.kinds() {
            if let Some(first) = k.failed.first() {
                parts.push(format!(
                    "{} {name}(s) failed (first: {}: {})",
                    k.failed.len(),
                    first.item,
                    first.reason
                ));
            }
            if !k.not_saved.is_empty() {
                parts.push(format!("{} {name}(s) not saved", k.not_saved.len()));
            }
        }
        if let Some(first) = self.unattributed_errors.first() {
            parts.push(format!(
                "{} server error(s) not tied to an item (first: {first})",
                self.unattributed_errors.len()
            ));
        }
        parts.join("; ")
    }
}

impl fmt::Display for BatchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_follows_buckets_and_fatal() {
        let mut r = BatchReport::default();
        r.indicators.submitted = vec!["Address:1.1.1.1".into()];
        r.indicators.saved = vec!["Address:1.1.1.1".into()];
        assert_eq!(r.outcome(), BatchOutcome::Success);
        assert_eq!(r.exit_code(), 0);
        assert_eq!(r.indicator_len(), 1);

        r.groups.failed.push(FailedItem {
            item: "Incident:x".into(),
            reason: "bad".into(),
        });
        assert_eq!(r.exit_code(), 3);
        assert!(
            r.message()
                .contains("1 group(s) failed (first: Incident:x: bad)")
        );

        r.fatal = Some("critical".into());
        assert_eq!(r.exit_code(), 1);
        assert!(r.message().starts_with("batch failed: critical"));
    }

    #[test]
    fn unattributed_errors_alone_make_it_partial() {
        let r = BatchReport {
            unattributed_errors: vec!["something".into()],
            ..BatchReport::default()
        };
        assert_eq!(r.outcome(), BatchOutcome::Partial);
    }
}

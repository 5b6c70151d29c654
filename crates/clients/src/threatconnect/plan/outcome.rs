//! Outcome: failing an item with what depends on it, saving a completed job's items, and the
//! report (every item in exactly one bucket, in queue order).

use super::{GroupTarget, IndicatorTarget, JobPlan, Plan, Row, State};
use crate::threatconnect::report::{BatchReport, FailedItem, KindReport};

impl Plan {
    /// Fails a group and every pending association to it.
    pub fn fail_group(&mut self, g: usize, reason: String) {
        let label = self.groups[g].label.clone();
        self.groups[g].fail(reason.clone());
        for row in &mut self.associations {
            if matches!(row.item.as_ref().map(|a| &a.group), Some(GroupTarget::InBatch(x)) if *x == g)
            {
                row.fail(format!("group {label} was not saved: {reason}"));
            }
        }
    }

    /// Fails an indicator and every pending association and occurrence that needs it.
    pub fn fail_indicator(&mut self, i: usize, reason: String) {
        let label = self.indicators[i].label.clone();
        let implicit = self.indicators[i].implicit;
        self.indicators[i].fail(reason.clone());
        let why = |r: &str| {
            if implicit {
                r.to_string()
            } else {
                format!("indicator {label} was not saved: {r}")
            }
        };
        for row in &mut self.associations {
            if matches!(row.item.as_ref().map(|a| &a.indicator), Some(IndicatorTarget::InBatch(x)) if *x == i)
            {
                row.fail(why(&reason));
            }
        }
        if let Some(ind) = self.indicators[i].item.as_ref() {
            for &o in &ind.occurrences {
                self.occurrences[o].fail(why(&reason));
            }
        }
    }

    /// After a job completed: its items still pending are saved, unless the server left some
    /// unprocessed (it does not say which, so they stay not saved).
    pub fn finish_job(&mut self, job: &JobPlan, unprocessed: u64) {
        if unprocessed > 0 {
            return;
        }
        for &g in &job.groups {
            saved(&mut self.groups[g]);
        }
        for &i in &job.indicators {
            saved(&mut self.indicators[i]);
            let (carried, occurrences) = match self.indicators[i].item.as_ref() {
                Some(x) => (x.carried.clone(), x.occurrences.clone()),
                None => continue,
            };
            // Carried associations and occurrences went out with this indicator only if it
            // was saved; a failed indicator already failed them.
            for a in carried {
                saved(&mut self.associations[a]);
            }
            for o in occurrences {
                saved(&mut self.occurrences[o]);
            }
        }
        for &a in &job.associations {
            saved(&mut self.associations[a]);
        }
    }

    /// The buckets, in queue order. Implicit File indicators are not reported as indicators.
    pub fn report(&self) -> BatchReport {
        BatchReport {
            owner: self.owner.clone(),
            groups: kind_report(&self.groups, self.merged[0]),
            indicators: kind_report(&self.indicators, self.merged[1]),
            group_associations: kind_report(&self.associations, self.merged[2]),
            file_occurrences: kind_report(&self.occurrences, self.merged[3]),
            unattributed_errors: self.unattributed.clone(),
            ..BatchReport::default()
        }
    }
}

fn saved<T>(row: &mut Row<T>) {
    if row.is_pending() {
        row.state = State::Saved;
    }
}

fn kind_report<T>(rows: &[Row<T>], merged: usize) -> KindReport {
    let mut k = KindReport {
        duplicates_merged: merged,
        ..KindReport::default()
    };
    for row in rows.iter().filter(|r| !r.implicit) {
        k.submitted.push(row.label.clone());
        match &row.state {
            State::Pending => k.not_saved.push(row.label.clone()),
            State::Saved => k.saved.push(row.label.clone()),
            State::Failed(reason) => k.failed.push(FailedItem {
                item: row.label.clone(),
                reason: reason.clone(),
            }),
        }
    }
    k
}

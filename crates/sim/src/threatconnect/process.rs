//! Running a job's file against its owner: groups, then indicators, then associations, with
//! per-item errors, `haltOnError`, the indicator limit and the critical errors of the spec.
//! The per-item checks and upserts are in `upsert`.

use serde_json::{Value, json};

use super::Behaviour;
use super::state::{Inner, JobSettings, JobStatus, KindCounts, Owner, SimState};

const CRITICAL_EXCEPTION: &str = "Encountered an unexpected Exception while processing batch job";

/// Runs a job's file against its owner: groups, then indicators, then associations (so
/// references inside one file resolve). Marks the job `Completed`.
pub(super) fn process_job(inner: &mut Inner, st: &SimState, id: u64, body: &[u8]) {
    let Some(settings) = inner.jobs.get(&id).map(|j| j.settings.clone()) else {
        return;
    };
    let mut run = Run::default();
    match serde_json::from_slice::<Value>(body) {
        Err(e) => run.critical(format!(
            "{CRITICAL_EXCEPTION}. com.google.gson.JsonSyntaxException: {e}"
        )),
        Ok(file) => {
            let list = |k: &str| {
                file.get(k)
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            };
            let (groups, indicators, associations) =
                (list("group"), list("indicator"), list("association"));
            inner.stats.groups_received += groups.len() as u64;
            inner.stats.indicators_received += indicators.len() as u64;
            let total = (groups.len() + indicators.len() + associations.len()) as u64;
            if indicators.len() > st.max_indicators {
                run.critical(format!(
                    "Batch job would exceed the number of allowed indicators ({} > {})",
                    indicators.len(),
                    st.max_indicators
                ));
                run.unprocessed = total;
            } else {
                let behaviour = inner.behaviour.clone();
                let next_id = &mut inner.next_id;
                let owner = inner.owners.entry(settings.owner.clone()).or_default();
                let mut ctx = Ctx {
                    owner,
                    settings: &settings,
                    behaviour: &behaviour,
                    next_id,
                    run: &mut run,
                };
                ctx.process(&groups, &indicators, &associations);
                let done = run.success + run.counted_errors;
                run.unprocessed = total.saturating_sub(done);
            }
        }
    }
    if let Some(job) = inner.jobs.get_mut(&id) {
        job.status = JobStatus::Completed;
        job.errors = run.errors;
        job.success = run.success;
        job.unprocessed = run.unprocessed;
        job.counts = run.counts;
    }
}

/// The outcome of one job run.
#[derive(Default)]
pub(super) struct Run {
    pub(super) errors: Vec<Value>,
    pub(super) success: u64,
    /// Items that failed (an item may have several error entries, e.g. association errors).
    pub(super) counted_errors: u64,
    pub(super) unprocessed: u64,
    pub(super) counts: KindCounts,
    /// Set by a critical error or `haltOnError`: nothing more is processed.
    pub(super) stopped: bool,
}

impl Run {
    fn critical(&mut self, reason: String) {
        self.errors
            .push(json!({"errorReason": reason, "errorSource": null, "code": "0x1004"}));
        self.stopped = true;
    }
}

pub(super) struct Ctx<'a> {
    pub(super) owner: &'a mut Owner,
    pub(super) settings: &'a JobSettings,
    pub(super) behaviour: &'a Behaviour,
    pub(super) next_id: &'a mut u64,
    pub(super) run: &'a mut Run,
}

impl Ctx<'_> {
    pub(super) fn id(&mut self) -> u64 {
        *self.next_id += 1;
        *self.next_id
    }

    fn process(&mut self, groups: &[Value], indicators: &[Value], associations: &[Value]) {
        for (n, g) in groups.iter().enumerate() {
            if self.run.stopped {
                return;
            }
            if self.trigger_hit(g.get("name")) {
                self.run.critical(format!(
                    "{CRITICAL_EXCEPTION}. Last known JSON path: '$.group[{n}]'"
                ));
                return;
            }
            match self.group(g) {
                Ok(()) => {
                    self.run.success += 1;
                    self.run.counts.success_group_count += 1;
                }
                Err(entry) => {
                    self.run.counts.error_group_count += 1;
                    self.item_failed(entry);
                }
            }
        }
        for (n, i) in indicators.iter().enumerate() {
            if self.run.stopped {
                return;
            }
            if self.trigger_hit(i.get("summary")) {
                self.run.critical(format!(
                    "{CRITICAL_EXCEPTION}. Last known JSON path: '$.indicator[{n}]'"
                ));
                return;
            }
            match self.indicator(i) {
                Ok(()) => {
                    self.run.success += 1;
                    self.run.counts.success_indicator_count += 1;
                }
                Err(entry) => {
                    self.run.counts.error_indicator_count += 1;
                    self.item_failed(entry);
                }
            }
        }
        for a in associations {
            if self.run.stopped {
                return;
            }
            match self.association(a) {
                Ok(()) => {
                    self.run.success += 1;
                    self.run.counts.success_association_count += 1;
                }
                Err(entry) => {
                    self.run.counts.error_association_count += 1;
                    self.item_failed(entry);
                }
            }
        }
    }

    fn trigger_hit(&self, v: Option<&Value>) -> bool {
        match (&self.behaviour.critical_trigger, v.and_then(Value::as_str)) {
            (Some(t), Some(s)) => t == s,
            _ => false,
        }
    }

    pub(super) fn item_failed(&mut self, entry: Value) {
        self.run.errors.push(entry);
        self.run.counted_errors += 1;
        if self.settings.halt_on_error {
            self.run.stopped = true;
        }
    }
}

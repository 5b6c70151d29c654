//! What the scheduler publishes for the rest of the daemon: the [`Status`] (heartbeat,
//! readiness and the jobs view the admin server and the watchdog read), the loaded
//! definitions (`PauseControl`, the admin API) and the job files that fail to load (alerts,
//! admin).
//!
//! Each publication replaces the last whole (a `watch` channel or the status' own slot), off
//! the loop's hot path: only loads publish, and the heartbeat is one atomic store.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

use crate::definition::{JobDefinition, LoadedJobs};
use crate::ops::alerts::evaluate::InvalidFiles;
use soarjobd_core::{JobsView, Status};

/// The scheduler's three publishers (each optional but the status, whose default nobody
/// reads).
#[derive(Default)]
pub(super) struct Publishers {
    /// Heartbeat, readiness and the jobs view the admin server reads.
    status: Status,
    /// Where the loaded definitions are published.
    loaded: Option<watch::Sender<LoadedJobs>>,
    /// Where the job files that fail to load are published (alerts, admin).
    invalid: Option<watch::Sender<InvalidFiles>>,
}

impl Publishers {
    pub(super) fn set_status(&mut self, status: Status) {
        self.status = status;
    }

    pub(super) fn set_loaded(&mut self, tx: watch::Sender<LoadedJobs>) {
        self.loaded = Some(tx);
    }

    pub(super) fn set_invalid(&mut self, tx: watch::Sender<InvalidFiles>) {
        self.invalid = Some(tx);
    }

    /// The status: the loop beats its heartbeat and reports readiness and overload here.
    pub(super) fn status(&self) -> &Status {
        &self.status
    }

    /// Publishes the loaded jobs (`defs`) and the files that failed to the status' jobs view.
    pub(super) fn jobs_view<'a>(
        &self,
        defs: impl Iterator<Item = &'a Arc<JobDefinition>>,
        broken: &HashMap<PathBuf, String>,
    ) {
        let mut jobs: Vec<Arc<JobDefinition>> = defs.cloned().collect();
        jobs.sort_by(|a, b| a.id.cmp(&b.id));
        let mut invalid: Vec<(PathBuf, String)> =
            broken.iter().map(|(f, e)| (f.clone(), e.clone())).collect();
        invalid.sort();
        self.status.set_jobs(JobsView { jobs, invalid });
    }

    /// Publishes the loaded definitions (`defs`) by id.
    pub(super) fn loaded<'a>(&self, defs: impl Iterator<Item = &'a Arc<JobDefinition>>) {
        if let Some(tx) = &self.loaded {
            let jobs: BTreeMap<_, _> = defs.map(|d| (d.id.clone(), d.clone())).collect();
            tx.send_replace(Arc::new(jobs));
        }
    }

    /// Publishes the files that fail to load, with their errors; only a change wakes the
    /// readers (a reload of unchanged files is no news).
    pub(super) fn invalid(&self, broken: &HashMap<PathBuf, String>) {
        if let Some(tx) = &self.invalid {
            let files: BTreeMap<PathBuf, String> =
                broken.iter().map(|(f, e)| (f.clone(), e.clone())).collect();
            tx.send_if_modified(|cur| {
                if **cur == files {
                    false
                } else {
                    *cur = Arc::new(files);
                    true
                }
            });
        }
    }
}

//! The alert tasks: the evaluator ([`evaluate`]) and the delivery to the sinks ([`dispatch`]).
//! The settings, [`Notification`] and the [`Notifier`] trait are the core's
//! (`soarjobd_core::{AlertSettings, Notification, Notifier}`), re-exported here.

pub mod dispatch;
pub mod evaluate;

use std::collections::HashMap;

use soarjobd_core::store::RunStatus;
use std::sync::Mutex;

use tokio::sync::Notify;

pub use dispatch::Dispatcher;
pub use evaluate::Evaluator;
pub use soarjobd_core::{AlertSettings, AlertState, Notification, Notifier};

/// Run ends, as the runner signals them to the evaluator: the ids of jobs whose runs ended
/// since the evaluator last looked (with whether one of those runs failed), and a wake-up.
/// Bounded by the number of jobs, and the runner never waits on it.
#[derive(Default)]
pub struct RunEnded {
    /// Job id -> a run that ended failed, timed out or was interrupted.
    jobs: Mutex<HashMap<String, bool>>,
    notify: Notify,
}

impl RunEnded {
    /// A run of `job_id` ended with `status` (called by the runner after recording it).
    pub fn ended(&self, job_id: &str, status: RunStatus) {
        let failed = matches!(
            status,
            RunStatus::Failed | RunStatus::TimedOut | RunStatus::Interrupted
        );
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        match jobs.get_mut(job_id) {
            Some(f) => *f |= failed,
            None => {
                jobs.insert(job_id.to_string(), failed);
            }
        }
        drop(jobs);
        self.notify.notify_one();
    }

    pub(crate) fn take(&self) -> HashMap<String, bool> {
        std::mem::take(&mut *self.jobs.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub(crate) async fn wait(&self) {
        self.notify.notified().await
    }
}

//! [`Control`]: what the admin server may do to a running daemon. It holds the scheduler's
//! command channel and the daemon's running runs, so it sits above the scheduler and the
//! runner; what it shows ([`Status`]) is `observe`, below them.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::runner::StopReason;
use crate::scheduler::{Command, RunningRuns};
use crate::store::ops::{AlertEpisode, EndedPause, RunLogLine};
use crate::store::{NodeInfo, RunMark, RunRecord, Store, StoreResult};
use soarjobd_core::{RunNowError, Status};

/// What the admin server may do to a running daemon: read its state, start a manual run
/// (through the scheduler, so the claim, overlap and shutdown rules of every run apply) and
/// cancel one of its runs.
#[derive(Clone)]
pub struct Control {
    pub status: Status,
    /// The store, read-only: history, runs and their logs. Writes go through the scheduler
    /// (`run_now`), the runs (`cancel`) and `pauses`.
    pub store: ReadStore,
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) running: RunningRuns,
    /// Pause and resume (persisted; the scheduler reacts at once).
    pub pauses: crate::ops::PauseControl,
}

impl Control {
    /// Starts a manual run of `job_id` now; answers its run id.
    pub async fn run_now(&self, job_id: &str) -> Result<i64, RunNowError> {
        if self.status.is_stopping() {
            return Err(RunNowError::Stopping);
        }
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::RunNow {
                job_id: job_id.to_string(),
                reply,
            })
            .await
            .map_err(|_| RunNowError::Stopping)?;
        answer.await.map_err(|_| RunNowError::Stopping)?
    }

    /// Asks a run of this daemon to stop (it ends `cancelled`); false when this daemon is
    /// not running it.
    pub fn cancel(&self, run_id: i64) -> bool {
        self.running.stop_run(run_id, StopReason::Operator)
    }

    /// The ids of this daemon's runs in progress.
    pub fn running_count(&self) -> usize {
        self.running.len()
    }
}

/// The read side of a daemon's store: what the admin server shows (the history, a run, its
/// log lines). It cannot claim, finish or interrupt a run, nor write a job's state: the
/// admin server changes a daemon only through [`Control`]'s commands.
#[derive(Clone)]
pub struct ReadStore(Arc<dyn Store>);

impl ReadStore {
    pub fn new(store: Arc<dyn Store>) -> ReadStore {
        ReadStore(store)
    }

    /// One run, if it exists.
    pub async fn run(&self, run_id: i64) -> StoreResult<Option<RunRecord>> {
        self.0.run(run_id).await
    }

    /// The job's runs, newest first.
    pub async fn history(&self, job_id: &str, limit: u32) -> StoreResult<Vec<RunRecord>> {
        self.0.history(job_id, limit).await
    }

    /// The newest run of every job that has one.
    pub async fn last_runs(&self) -> StoreResult<Vec<RunRecord>> {
        self.0.last_runs().await
    }

    /// The processes registered on a clustered database; `None` on a single-node one.
    pub async fn nodes(&self) -> StoreResult<Option<Vec<NodeInfo>>> {
        self.0.nodes().await
    }

    /// The node that schedules `job_id` (rendezvous hashing over the live replicas, as this
    /// replica sees them); `None` on a single-node database.
    pub fn owner_of(&self, job_id: &str) -> Option<i64> {
        self.0.owner_of(job_id)
    }

    /// The newest `per_job` runs of each of `job_ids`, in one read.
    pub async fn recent_runs(&self, job_ids: &[String], per_job: u32) -> StoreResult<Vec<RunMark>> {
        self.0.recent_runs(job_ids, per_job).await
    }

    /// The alert episodes of `subject` (a job id), newest first.
    pub async fn alert_history(&self, subject: &str, limit: u32) -> StoreResult<Vec<AlertEpisode>> {
        self.0.alert_history(subject, limit).await
    }

    /// The job's last ended pause, if any (the store keeps the pause in force and the last
    /// ended one).
    pub async fn last_resume(&self, job_id: &str) -> StoreResult<Option<EndedPause>> {
        self.0.last_resume(job_id).await
    }

    /// A run's log lines with `seq > after_seq`, in order, at most `limit`.
    pub async fn run_logs(
        &self,
        run_id: i64,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<RunLogLine>> {
        self.0.run_logs(run_id, after_seq, limit).await
    }
}

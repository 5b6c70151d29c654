//! [`Control`]: what the admin server may do to a running daemon. It holds the scheduler's
//! command channel and the daemon's running runs, so it sits above the scheduler and the
//! runner; what it shows ([`Status`]) is `observe`, below them.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::observe::{RunNowError, Status};
use crate::runner::StopReason;
use crate::scheduler::{Command, RunningRuns};
use crate::store::Store;

/// What the admin server may do to a running daemon: read its state, start a manual run
/// (through the scheduler, so the claim, overlap and shutdown rules of every run apply) and
/// cancel one of its runs.
#[derive(Clone)]
pub struct Control {
    pub status: Status,
    pub store: Arc<dyn Store>,
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

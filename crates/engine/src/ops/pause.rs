//! Pause and resume: the one entry point for the CLI and the admin API.
//!
//! A pause is a row in the store, not a flag in memory: it survives restarts, applies to every
//! process on the database (the CLI next to a running daemon, other replicas), and the
//! scheduler re-reads the pauses periodically ([`crate::scheduler::PAUSE_REFRESH`]). A
//! [`PauseControl`] made by the daemon also wakes its scheduler, so a pause through the admin
//! API applies at once rather than at the next refresh.

use std::sync::Arc;

use chrono::Utc;
use tokio::sync::Notify;

use crate::store::StoreError;
use crate::store::ops::{EndedPause, JobPause, OpsStore, PauseOutcome};

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// No loaded job has this id.
    #[error("no job with id `{0}` is loaded")]
    UnknownJob(String),
    #[error("state store error")]
    Store(#[from] StoreError),
}

/// Tells whether a job id names a loaded job.
pub type KnownJobs = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Pauses and resumes jobs; cheap to clone.
#[derive(Clone)]
pub struct PauseControl {
    store: Arc<dyn OpsStore>,
    known: KnownJobs,
    /// The scheduler's wake-up (a daemon's control); `None` for the CLI, whose change the
    /// daemon picks up at its next refresh.
    wake: Option<Arc<Notify>>,
}

impl PauseControl {
    /// A control on `store`; `known` rejects ids that name no job.
    pub fn new(store: Arc<dyn OpsStore>, known: KnownJobs) -> PauseControl {
        PauseControl {
            store,
            known,
            wake: None,
        }
    }

    /// Also wakes a scheduler after each change (the daemon's own control).
    pub fn waking(mut self, wake: Arc<Notify>) -> PauseControl {
        self.wake = Some(wake);
        self
    }

    fn check(&self, job_id: &str) -> Result<(), OpsError> {
        if (self.known)(job_id) {
            Ok(())
        } else {
            Err(OpsError::UnknownJob(job_id.to_string()))
        }
    }

    fn wake(&self) {
        if let Some(w) = &self.wake {
            w.notify_one();
        }
    }

    /// Pauses a job: it claims no ticks until resumed (manual runs still run). `actor` names
    /// who asked (`cli:<user>`, an admin token's name); it and the reason go to the audit log.
    pub async fn pause(
        &self,
        job_id: &str,
        reason: Option<&str>,
        actor: &str,
    ) -> Result<PauseOutcome, OpsError> {
        self.check(job_id)?;
        let outcome = self
            .store
            .pause_job(job_id, reason, actor, Utc::now())
            .await?;
        let already = matches!(outcome, PauseOutcome::AlreadyPaused(_));
        tracing::info!(
            target: "soarjobd::audit",
            actor,
            action = "pause",
            job_id,
            reason = reason.unwrap_or(""),
            already_paused = already,
            "job paused"
        );
        self.wake();
        Ok(outcome)
    }

    /// Resumes a job. Without `catch_up` the ticks that fell inside the pause are simply
    /// skipped (not counted as missed); with it, one catch-up run is made for the latest of
    /// them. `None` if the job was not paused.
    pub async fn resume(
        &self,
        job_id: &str,
        catch_up: bool,
        actor: &str,
    ) -> Result<Option<EndedPause>, OpsError> {
        self.check(job_id)?;
        let ended = self
            .store
            .resume_job(job_id, catch_up, actor, Utc::now())
            .await?;
        tracing::info!(
            target: "soarjobd::audit",
            actor,
            action = "resume",
            job_id,
            catch_up,
            was_paused = ended.is_some(),
            paused_since = ended.as_ref().map(|e| e.pause.since.to_rfc3339()).unwrap_or_default(),
            "job resumed"
        );
        self.wake();
        Ok(ended)
    }

    /// Every pause in force.
    pub async fn pauses(&self) -> Result<Vec<JobPause>, OpsError> {
        Ok(self.store.pauses().await?)
    }
}

//! Pauses as the scheduler sees them: the pauses in force (re-read from the store every
//! [`PAUSE_REFRESH`] and when the daemon's `PauseControl` wakes the loop), the catch-up runs
//! `resume --catch-up` asked for, and where missed ticks start counting after a pause.
//!
//! Only the scheduler task holds a [`Pauses`], so it needs no lock; what the scheduler does
//! about a pause (releasing the ticks claimed ahead, claiming the catch-ups) stays in the
//! scheduler, which owns the claims.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::definition::JobDefinition;
use crate::store::ops::{JobPause, OpsStore};
use soarjobd_core::error_chain;

/// How often the pauses are re-read from the store, so that a pause made by the CLI or another
/// replica applies here too (the daemon's own `PauseControl` wakes the loop at once).
pub const PAUSE_REFRESH: Duration = Duration::from_secs(3);

/// What the scheduler needs for pauses: the store and a wake-up from the daemon's control.
pub struct PauseWiring {
    pub store: Arc<dyn OpsStore>,
    pub wake: Arc<tokio::sync::Notify>,
}

/// The pauses in force, as last read (none without a [`PauseWiring`], as in the scheduler's
/// unit tests).
#[derive(Default)]
pub(super) struct Pauses {
    /// Pauses are read from here (`None`: no pauses).
    wiring: Option<PauseWiring>,
    /// The pauses in force, as last read: these jobs claim no ticks.
    paused: HashMap<String, JobPause>,
    /// The last read of the pauses failed (logged once until a read works).
    unreadable: bool,
}

impl Pauses {
    pub(super) fn new(wiring: PauseWiring) -> Pauses {
        Pauses {
            wiring: Some(wiring),
            ..Pauses::default()
        }
    }

    /// Whether pauses are read at all (the loop re-reads them every [`PAUSE_REFRESH`]).
    pub(super) fn is_wired(&self) -> bool {
        self.wiring.is_some()
    }

    /// What wakes the loop when the daemon's own `PauseControl` pauses or resumes a job.
    pub(super) fn wake(&self) -> Option<Arc<tokio::sync::Notify>> {
        self.wiring.as_ref().map(|w| w.wake.clone())
    }

    /// The job is paused (as last read): it claims no ticks.
    pub(super) fn is_paused(&self, job_id: &str) -> bool {
        self.paused.contains_key(job_id)
    }

    /// Reads the pauses in force and logs the jobs paused and resumed since the last read.
    /// False without wiring or when the store fails: the pauses last read stay in force.
    pub(super) async fn read(&mut self) -> bool {
        let Some(wiring) = &self.wiring else {
            return false;
        };
        let store = wiring.store.clone();
        let list = match store.pauses().await {
            Ok(l) => {
                self.unreadable = false;
                l
            }
            Err(e) => {
                // Once per outage: the claims' own failures are logged already.
                if !self.unreadable {
                    tracing::warn!(error = %error_chain(&e), effect = "the pauses last read stay in force", "cannot read the paused jobs");
                }
                self.unreadable = true;
                return false;
            }
        };
        let now_paused: HashMap<String, JobPause> =
            list.into_iter().map(|p| (p.job_id.clone(), p)).collect();
        for (id, p) in &now_paused {
            if !self.paused.contains_key(id) {
                tracing::info!(job_id = %id, since = %p.since.to_rfc3339(), actor = %p.actor, reason = p.reason.as_deref().unwrap_or(""), "job paused: no ticks until resumed");
            }
        }
        for id in self.paused.keys() {
            if !now_paused.contains_key(id) {
                tracing::info!(job_id = %id, "job resumed");
            }
        }
        self.paused = now_paused;
        true
    }

    /// The one catch-up run each `resume --catch-up` asked for (taking the request, so
    /// another replica does not make it too): the job and the tick to run, for the jobs
    /// `loaded` finds (a request for a job that is not loaded is dropped). `None`: no wiring,
    /// or the requests cannot be read.
    pub(super) async fn catch_ups(
        &self,
        loaded: impl Fn(&str) -> Option<Arc<JobDefinition>>,
    ) -> Option<Vec<(Arc<JobDefinition>, DateTime<Utc>)>> {
        let wiring = self.wiring.as_ref()?;
        let store = wiring.store.clone();
        let taken = match store.take_catch_ups().await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "cannot read the catch-up requests of resumed jobs");
                return None;
            }
        };
        let mut due = Vec::new();
        for ended in taken {
            let Some(def) = loaded(&ended.pause.job_id) else {
                continue;
            };
            if !def.enabled || self.is_paused(&def.id) {
                continue;
            }
            // The latest tick inside the pause, if any fell in it.
            match def.schedule.last_tick_at_or_before(ended.resumed_at) {
                Some(t) if t > ended.pause.since => {
                    tracing::info!(job_id = %def.id, tick = %t.to_rfc3339(), "catch-up run for the ticks inside the pause");
                    due.push((def.clone(), t));
                }
                _ => {
                    tracing::info!(job_id = %def.id, "no tick fell inside the pause: no catch-up run")
                }
            }
        }
        Some(due)
    }

    /// Where a job's missed ticks start counting after its last tick `last`: ticks inside a
    /// pause were not missed, so from the end of its last pause if that is later.
    pub(super) async fn count_missed_from(
        &self,
        job_id: &str,
        last: DateTime<Utc>,
    ) -> DateTime<Utc> {
        match &self.wiring {
            Some(w) => match w.store.last_resume(job_id).await {
                Ok(Some(r)) if r.resumed_at > last => r.resumed_at,
                _ => last,
            },
            None => last,
        }
    }
}

//! What the daemon shows to an operator while it runs: the scheduler loop's heartbeat, the
//! readiness flags, the loaded jobs, and the [`Observer`] hooks metrics are fed through.
//! What the admin server may *do* to a daemon is `soarjobd_engine::Control`, above
//! the scheduler it sends commands to.
//!
//! The core defines only these small seams; the admin server (`soarjobd-admin`) implements
//! the metrics and serves the views. They are built to cost nothing on the scheduler's hot
//! path: the heartbeat is one atomic store per loop turn, the observer calls are plain method
//! calls (no lock is held across an await anywhere here), and the jobs view is replaced
//! (never edited in place) only when the jobs folder is loaded.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use crate::definition::JobDefinition;
use crate::store::RunStatus;
use chrono::{DateTime, Utc};

/// Hooks the scheduler and the runner call as runs happen. Every method has an empty default,
/// so an observer implements only what it counts. Implementations must be cheap and must not
/// block: they are called on the scheduler's task and at the end of every run.
pub trait Observer: Send + Sync + 'static {
    /// A claimed tick fired `lateness` after its planned instant (jitter included).
    fn tick_fired(&self, job_id: &str, lateness: Duration) {
        let _ = (job_id, lateness);
    }
    /// Ticks of a job passed without running (a stalled loop, the daemon down at restart).
    fn ticks_missed(&self, job_id: &str, count: u64) {
        let _ = (job_id, count);
    }
    /// A run's job started.
    fn run_started(&self, job_id: &str) {
        let _ = job_id;
    }
    /// A run ended with `status` after `duration`, at `finished_at`.
    fn run_finished(
        &self,
        job_id: &str,
        status: RunStatus,
        duration: Duration,
        finished_at: DateTime<Utc>,
    ) {
        let _ = (job_id, status, duration, finished_at);
    }
}

/// The observer that counts nothing.
pub struct NoObserver;
impl Observer for NoObserver {}

/// Hooks the platform clients' transport calls after every request attempt.
pub trait HttpObserver: Send + Sync + 'static {
    /// One attempt of a request to `platform` ended with `status` (`None`: no answer: a
    /// connect failure or a timeout) after `duration`.
    fn platform_request(
        &self,
        platform: &str,
        method: &str,
        status: Option<u16>,
        duration: Duration,
    );
}

/// The HTTP observers of this process. Platform clients are built before (and outlive) any
/// daemon, and a process has one metrics endpoint, so the hook is process-wide: each observer
/// registers itself (weakly: a dropped one simply stops being called). Reading it costs a
/// read lock per request attempt, nothing next to the request itself.
static HTTP_OBSERVERS: RwLock<Vec<Weak<dyn HttpObserver>>> = RwLock::new(Vec::new());

/// Adds `observer` to the process-wide list every platform request is reported to.
pub fn add_http_observer(observer: &Arc<dyn HttpObserver>) {
    let mut list = HTTP_OBSERVERS.write().unwrap_or_else(|p| p.into_inner());
    list.retain(|w| w.strong_count() > 0);
    list.push(Arc::downgrade(observer));
}

/// Reports one platform request attempt to every registered observer.
pub fn platform_request(platform: &str, method: &str, status: Option<u16>, duration: Duration) {
    let list = HTTP_OBSERVERS.read().unwrap_or_else(|p| p.into_inner());
    for o in list.iter().filter_map(Weak::upgrade) {
        o.platform_request(platform, method, status, duration);
    }
}

/// The scheduler loop's heartbeat: the wall-clock instant (unix ms) of its last turn. The loop
/// sleeps at most [`MAX_SLEEP`], so a heartbeat older than that (plus slack) means
/// the loop is stuck. `/livez` and the systemd watchdog read it; neither touches the database.
#[derive(Clone, Default)]
pub struct Heartbeat {
    last_ms: Arc<AtomicI64>,
}

impl Heartbeat {
    /// Records a turn of the loop (one relaxed atomic store).
    pub fn beat(&self) {
        self.last_ms
            .store(Utc::now().timestamp_millis(), Ordering::Relaxed);
    }

    /// The last turn, if the loop ever turned.
    pub fn last(&self) -> Option<DateTime<Utc>> {
        match self.last_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => DateTime::from_timestamp_millis(ms),
        }
    }

    /// True when the loop turned within `within` of `now`.
    pub fn fresh(&self, now: DateTime<Utc>, within: Duration) -> bool {
        self.last().is_some_and(|t| {
            (now - t).to_std().unwrap_or_default() <= within
            // A wall clock set back makes the last beat look in the future: still alive.
        })
    }
}

/// The longest the scheduler loop sleeps before looking at the wall clock again, so the
/// longest a healthy loop goes between heartbeats. Defined here, under the heartbeat that
/// relies on it; the scheduler re-exports it.
pub const MAX_SLEEP: Duration = Duration::from_secs(30);

/// The slack `/livez` and the watchdog allow past the loop's longest sleep.
pub const HEARTBEAT_SLACK: Duration = Duration::from_secs(15);

/// The longest a healthy loop goes without a heartbeat.
pub fn heartbeat_limit() -> Duration {
    MAX_SLEEP + HEARTBEAT_SLACK
}

/// The loaded jobs as the scheduler last saw them, replaced whole at each load.
#[derive(Clone, Default)]
pub struct JobsView {
    /// Every loaded job, sorted by id (enabled or not).
    pub jobs: Vec<Arc<JobDefinition>>,
    /// Job files that failed to load, with their errors (never a secret: load errors name
    /// keys and positions, not values).
    pub invalid: Vec<(std::path::PathBuf, String)>,
}

/// Readiness and views of a running daemon, shared by the scheduler, the daemon and the admin
/// server.
#[derive(Clone, Default)]
pub struct Status {
    pub heartbeat: Heartbeat,
    /// The first load of the jobs folder was scheduled.
    scheduled: Arc<AtomicBool>,
    /// The scheduler loop is running (false before it starts and after it stopped).
    running: Arc<AtomicBool>,
    /// Shutdown has begun.
    stopping: Arc<AtomicBool>,
    jobs: Arc<RwLock<Arc<JobsView>>>,
    ready_tx: Arc<tokio::sync::Notify>,
    /// Overload episodes (written by the scheduler's detector, read by `/readyz`, `/metrics`).
    overload: Arc<std::sync::Mutex<OverloadView>>,
}

impl Status {
    pub fn jobs(&self) -> Arc<JobsView> {
        self.jobs.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    #[doc(hidden)] // the engine's: the scheduler and the daemon set these
    pub fn set_jobs(&self, view: JobsView) {
        *self.jobs.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(view);
    }

    /// Whether the scheduler is overloaded now, the episodes so far, and the figures.
    pub fn overload(&self) -> OverloadView {
        self.overload
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    #[doc(hidden)] // the engine's scheduler publishes it
    pub fn update_overload(&self, f: impl FnOnce(&mut OverloadView)) {
        f(&mut self.overload.lock().unwrap_or_else(|p| p.into_inner()));
    }

    #[doc(hidden)] // the engine's: the scheduler and the daemon set these
    pub fn set_scheduled(&self) {
        self.scheduled.store(true, Ordering::Release);
        self.running.store(true, Ordering::Release);
        self.ready_tx.notify_waiters();
    }

    #[doc(hidden)] // the engine's: the scheduler and the daemon set these
    pub fn set_loop_stopped(&self) {
        self.running.store(false, Ordering::Release);
    }

    #[doc(hidden)] // the engine's: the scheduler and the daemon set these
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    pub fn is_scheduled(&self) -> bool {
        self.scheduled.load(Ordering::Acquire)
    }

    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Waits until the first schedule is loaded.
    pub async fn scheduled(&self) {
        loop {
            let notified = self.ready_tx.notified();
            if self.is_scheduled() {
                return;
            }
            notified.await;
        }
    }
}

/// Why a manual run did not start.
#[derive(Debug, thiserror::Error)]
pub enum RunNowError {
    #[error("no job {0:?} is loaded")]
    NoSuchJob(String),
    #[error("the job is already running ({0}) and its overlap policy does not allow another run")]
    Busy(String),
    #[error("the run could not be claimed: {0}")]
    Store(String),
    #[error("the daemon is shutting down")]
    Stopping,
}

/// What an operator sees of overload (`/readyz`, `/metrics`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct OverloadView {
    /// An episode is in progress.
    pub overloaded: bool,
    /// Episodes since the daemon started.
    pub episodes: u64,
    /// The current episode's figures (the last one's once it ended).
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    pub late_ticks: u64,
    pub on_time_ticks: u64,
    pub max_lateness_ms: u64,
    pub ticks_missed: u64,
}

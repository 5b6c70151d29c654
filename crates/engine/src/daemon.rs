//! Wires the store, the scheduler, the watcher and the signals together, and shuts down
//! gracefully.
//!
//! One [`CancellationToken`] is the shutdown signal every long-lived task watches (scheduler,
//! watcher, pruner). Runs are not children of it: on shutdown they are first given
//! `shutdown_grace` to finish on their own, and only then asked to stop, so a job in the
//! middle of its work is not interrupted by a routine restart.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Settings;
use crate::control::Control;
use crate::definition::{self, LoadedJobs};
use crate::ops::PauseControl;
use crate::ops::alerts::evaluate::InvalidFiles;
use crate::ops::alerts::{Dispatcher, Evaluator, Notifier, RunEnded};
use crate::runner::{Runner, StopReason};
use crate::scheduler::{PauseWiring, RunningRuns, Scheduler, SchedulerOptions};
use crate::store::{Retention, RunStore, Store, StoreError};
use soarjobd_core::error_chain;
use soarjobd_core::{Job, Registry};
use soarjobd_core::{Observer, Status};
use soarjobd_store::{self as store, DaemonLock, LockError};

use soarjobd_core::redact_url;

/// How often `running` rows of dead processes (a `run-once` killed with SIGKILL) are marked
/// `interrupted`. A claim of the same job finds them sooner.
const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// How long shutdown leaves queued alert notifications to go out.
const ALERTS_GRACE: Duration = Duration::from_millis(200);
/// After a second signal: how long the runs get to be recorded before the process exits.
const FORCED_EXIT_RECORD: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot open the state store")]
    Store(#[from] StoreError),
    /// Another daemon uses the database (or its lock file cannot be taken).
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("cannot listen for SIGTERM/SIGINT")]
    Signals(#[source] std::io::Error),
    #[error("stopped by SIGTERM/SIGINT while loading the jobs folder")]
    StoppedDuringStart,
    /// `exec.user` names no user, or the daemon cannot switch to it (it is not root).
    #[error("{0}")]
    Exec(String),
}

/// Builds a daemon: the registry of jobs, settings and options. The registry comes from the
/// composition root (`soarjobd::app::App::daemon`, which builds the platform clients and the
/// jobs holding them; its documentation shows the daemon started from the settings);
/// `Daemon::builder()` alone knows no job.
pub struct Daemon;

impl Daemon {
    pub fn builder() -> DaemonBuilder {
        DaemonBuilder {
            registry: Registry::new(),
            settings: Settings::default(),
            options: SchedulerOptions::default(),
            notifiers: Vec::new(),
            observer: None,
        }
    }
}

pub struct DaemonBuilder {
    registry: Registry,
    settings: Settings,
    options: SchedulerOptions,
    notifiers: Vec<Arc<dyn Notifier>>,
    observer: Option<Arc<dyn Observer>>,
}

impl DaemonBuilder {
    /// Uses these job implementations (and their platform secrets), replacing any registered
    /// before.
    pub fn with_registry(mut self, registry: Registry) -> DaemonBuilder {
        self.registry = registry;
        self
    }

    /// Adds a job implementation (a later one with the same id replaces an earlier one).
    pub fn register(mut self, job: impl Job) -> DaemonBuilder {
        self.registry.register(job);
        self
    }

    pub fn settings(mut self, settings: Settings) -> DaemonBuilder {
        self.settings = settings;
        self
    }

    /// Runs every enabled job once right after start.
    pub fn run_at_start(mut self, yes: bool) -> DaemonBuilder {
        self.options.run_at_start = yes;
        self
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Sends alert notifications to these sinks (the composition root builds them from
    /// `alerts:`; see [`crate::ops::alerts`]).
    pub fn notifiers(mut self, notifiers: Vec<Arc<dyn Notifier>>) -> DaemonBuilder {
        self.notifiers = notifiers;
        self
    }

    /// Reports ticks and runs to `observer` (the admin server's metrics).
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> DaemonBuilder {
        self.observer = Some(observer);
        self
    }

    /// Opens the store, recovers from a previous crash, loads the jobs and starts every task.
    pub async fn start(self) -> Result<RunningDaemon, DaemonError> {
        // Listen for SIGTERM/SIGINT before anything else: once `daemon started` is logged a
        // supervisor may stop us at any moment, and a signal that arrives before its handler
        // is registered kills the process without a graceful shutdown.
        let mut signals = Signals::new().map_err(DaemonError::Signals)?;
        let settings = self.settings;
        // Before the store: a daemon that cannot start job processes as configured must not
        // start at all (running them as its own user instead would expose its credentials).
        let exec = soarjobd_containment::exec_policy(&settings.exec)
            .and_then(|p| soarjobd_containment::check_exec_user(&p).map(|()| p))
            .map_err(DaemonError::Exec)?;
        let clustered = crate::store::is_postgres_url(&settings.database_url);
        let store = store::open_with(
            &settings.database_url,
            &crate::store::OpenOptions {
                role: "daemon",
                heartbeat: settings.cluster.heartbeat,
                dead_after: settings.cluster.dead_after,
            },
        )
        .await?;
        // One daemon per SQLite file, before anything is changed in it: a second daemon
        // would mark the first one's live runs interrupted and run its ticks. `list`,
        // `history` and `run-once` do not take this lock. On PostgreSQL several daemons
        // (replicas) share the database by design: there is no lock.
        let lock = match store::lock_daemon(&settings.database_url) {
            Ok(l) => l,
            Err(e) => {
                store.close().await;
                return Err(e.into());
            }
        };
        // Kill what crashed runs left running before their rows are marked interrupted, so a
        // new run never meets an old copy of itself.
        soarjobd_containment::recover(store.as_ref()).await;
        // Only rows whose process is gone: a `run-once` running next to us keeps its run.
        let interrupted = store.interrupt_running(Utc::now()).await?;
        for r in &interrupted {
            tracing::warn!(
                job_id = %r.job_id, run_id = r.id, scheduled_at = %r.scheduled_at.to_rfc3339(),
                "run interrupted by the previous shutdown or crash"
            );
        }
        let registry = Arc::new(self.registry);
        let run_logs = crate::ops::RunLogs::start(store.clone(), settings.run_logs.max_bytes);
        let ended = Arc::new(RunEnded::default());
        let mut runner = Runner::new(store.clone(), registry.clone())
            .with_exec_policy(Arc::new(exec))
            .with_run_logs(run_logs.clone(), settings.run_logs.mode)
            .with_run_ended(ended.clone());
        if let Some(o) = self.observer {
            runner = runner.with_observer(o);
        }
        let status = Status::default();
        // The loop gets the usual allowance from now to start turning: `/livez` is healthy
        // while the first schedule loads, and fails if the loop never starts.
        status.heartbeat.beat();
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let running = RunningRuns::default();

        let jobs_dir = settings.jobs_dir.clone();
        let load_options = settings.load_options(soarjobd_containment::open_nonblocking);
        let initial = {
            let (d, r, o) = (jobs_dir.clone(), registry.clone(), load_options.clone());
            let load =
                tokio::task::spawn_blocking(move || definition::load_dir_with(&d, r.as_ref(), &o));
            // The load is bounded by the job-file limits, but not a read that hangs (a dead
            // NFS server): a signal must not wait for it. Nothing has run yet.
            tokio::select! {
                r = load => r.unwrap_or_default(),
                _ = signals.recv() => {
                    store.close().await;
                    return Err(DaemonError::StoppedDuringStart);
                }
            }
        };
        let baseline = crate::watch::Snapshot::of(&initial);
        tracing::info!(
            jobs_dir = %jobs_dir.display(),
            database = %redact_url(&settings.database_url),
            jobs = initial.jobs.len(),
            errors = initial.errors.len(),
            "daemon started"
        );

        // The channel is small on purpose: reloads are whole-folder snapshots, so a backlog
        // would only hold stale ones.
        let (tx, rx) = mpsc::channel(4);
        let takeover_tx = tx.clone();
        let wake = Arc::new(tokio::sync::Notify::new());
        let (jobs_tx, jobs) = tokio::sync::watch::channel(LoadedJobs::default());
        let (invalid_tx, invalid) = tokio::sync::watch::channel(InvalidFiles::default());
        let scheduler = Scheduler::new(runner, running.clone(), tracker.clone())
            .with_pauses(PauseWiring {
                store: store.clone(),
                wake: wake.clone(),
            })
            .publishing(jobs_tx)
            .publishing_invalid(invalid_tx)
            .with_status(status.clone());
        let pauses = {
            let jobs = jobs.clone();
            PauseControl::new(
                store.clone(),
                Arc::new(move |id: &str| jobs.borrow().contains_key(id)),
            )
            .waking(wake)
        };
        let control = Control {
            status: status.clone(),
            store: crate::control::ReadStore::new(store.clone()),
            commands: tx.clone(),
            running: running.clone(),
            pauses: pauses.clone(),
        };
        let mut options = self.options;
        if clustered {
            options.claim_ahead = Some(settings.cluster.claim_ahead);
        }
        let scheduler_task = tokio::spawn(scheduler.run(initial, options, rx, shutdown.clone()));
        let watcher_task = tokio::spawn(crate::watch::watch(
            jobs_dir,
            registry.clone(),
            settings.reload_poll,
            load_options,
            baseline,
            tx,
            shutdown.clone(),
        ));
        let pruner_task = tokio::spawn(prune_loop(
            store.clone(),
            settings.history.clone(),
            settings.run_logs.clone(),
            shutdown.clone(),
        ));
        // On PostgreSQL the sweep is the takeover: it runs every heartbeat, so a dead
        // replica's runs are taken over soon after it reaches `dead_after`.
        let sweep = if clustered {
            Sweep {
                // Ten times per heartbeat: a dead replica is noticed within 0.2 s (defaults)
                // of reaching `dead_after`, so with the defaults (2 s, 6 s) its runs are taken
                // over 4-6.2 s after the kill, not up to one more whole heartbeat later. The
                // same statement reads the live replicas (who schedules which job), so a
                // replica that joins or leaves moves work within a tenth of a heartbeat. It
                // finds no stale node almost always: one cheap query per sweep.
                every: (settings.cluster.heartbeat / 10).max(Duration::from_millis(100)),
                take_over: Some(takeover_tx),
            }
        } else {
            Sweep {
                every: SWEEP_EVERY,
                take_over: None,
            }
        };
        let sweeper_task = tokio::spawn(sweep_loop(store.clone(), sweep, shutdown.clone()));
        // Alerts: the dispatcher outlives the evaluator a little (see `shutdown`), so an
        // episode that opened just before a stop is still sent if the sink answers.
        let alerts_stop = CancellationToken::new();
        let dispatcher =
            Dispatcher::start(self.notifiers, settings.alerts.queue, alerts_stop.clone());
        let evaluator_task = tokio::spawn(
            Evaluator {
                store: store.clone(),
                settings: settings.alerts.clone(),
                jobs: jobs.clone(),
                invalid: invalid.clone(),
                ended,
                dispatcher: dispatcher.clone(),
                known_open: Default::default(),
            }
            .run(shutdown.clone()),
        );
        let systemd_task = tokio::spawn(crate::systemd::notify_loop(
            status.clone(),
            shutdown.clone(),
        ));
        let mut tasks = vec![
            scheduler_task,
            watcher_task,
            pruner_task,
            sweeper_task,
            evaluator_task,
            systemd_task,
        ];
        if let Some(events) = store.cluster_events() {
            tasks.push(tokio::spawn(crate::cluster::follow_events(
                events,
                running.clone(),
                shutdown.clone(),
            )));
        }
        Ok(RunningDaemon {
            shutdown,
            tracker,
            running,
            store,
            jobs,
            pauses,
            run_logs,
            grace: settings.shutdown_grace,
            tasks,
            invalid,
            dispatcher,
            alerts_stop,
            control,
            signals,
            _lock: lock,
        })
    }
}

/// A started daemon.
pub struct RunningDaemon {
    shutdown: CancellationToken,
    tracker: TaskTracker,
    running: RunningRuns,
    store: Arc<dyn Store>,
    /// The loaded definitions, as the scheduler publishes them.
    jobs: tokio::sync::watch::Receiver<LoadedJobs>,
    pauses: PauseControl,
    run_logs: crate::ops::RunLogs,
    /// The job files that fail to load, as the scheduler publishes them.
    invalid: tokio::sync::watch::Receiver<InvalidFiles>,
    dispatcher: Dispatcher,
    alerts_stop: CancellationToken,
    grace: Duration,
    tasks: Vec<JoinHandle<()>>,
    signals: Signals,
    control: Control,
    /// Held until the daemon is dropped (after the store is closed at shutdown). `None` on
    /// PostgreSQL, where several daemons share the database.
    _lock: Option<DaemonLock>,
}

impl RunningDaemon {
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// What the admin server reads and does (status, manual runs, cancellation).
    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// The loaded job definitions by id (updated after every reload).
    pub fn jobs(&self) -> tokio::sync::watch::Receiver<LoadedJobs> {
        self.jobs.clone()
    }

    /// The job files that fail to load, with their errors (updated after every reload).
    pub fn invalid_jobs(&self) -> tokio::sync::watch::Receiver<InvalidFiles> {
        self.invalid.clone()
    }

    /// Alert notifications dropped by a full sink queue so far, by sink name.
    pub fn alerts_dropped(&self) -> Vec<(String, u64)> {
        self.dispatcher.dropped()
    }

    /// Pauses and resumes jobs; the scheduler reacts at once (see [`crate::ops::pause`]).
    pub fn pauses(&self) -> PauseControl {
        self.pauses.clone()
    }

    /// The token that stops the daemon when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Number of runs in progress.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Waits for SIGTERM or SIGINT, then shuts down gracefully. A second signal during the
    /// grace period exits the process at once.
    pub async fn run_until_signal(mut self) {
        self.signals.recv().await;
        tracing::info!(
            grace_s = self.grace.as_secs(),
            "shutdown requested; waiting for running jobs"
        );
        // A second signal means "now": the process exits without waiting, and the next
        // start marks the runs it left as interrupted.
        let mut signals = std::mem::replace(&mut self.signals, Signals::none());
        let (running, tracker) = (self.running.clone(), self.tracker.clone());
        // Set once the second signal is in: the graceful path below may then finish first
        // (the killed runs end, so its wait ends), and must not return a clean exit.
        let forced = CancellationToken::new();
        let forcing = forced.clone();
        tokio::spawn(async move {
            signals.recv().await;
            forcing.cancel();
            tracing::warn!(
                running = running.len(),
                "second signal: killing the runs' processes and exiting"
            );
            // The runs learn why they end (so they are recorded `cancelled` with the
            // reason, not as failures of their killed programs)...
            running.stop_all(StopReason::ForcedExit);
            // ...then their processes die, whatever the store does: an exit must not leave
            // them running (a `setsid` grandchild included: cgroup and token, not only the
            // group).
            let (runs, survivors) =
                tokio::task::spawn_blocking(soarjobd_containment::kill_all_live)
                    .await
                    .unwrap_or_default();
            if survivors {
                tracing::error!(?runs, "some processes of the runs could not be killed");
            }
            // Then the rows are recorded, if the store answers quickly. Rows it could not
            // record become `interrupted` at the next start, as after a crash.
            if tokio::time::timeout(FORCED_EXIT_RECORD, tracker.wait())
                .await
                .is_err()
            {
                tracing::warn!(
                    running = running.len(),
                    "exiting without recording every run (the next start marks them interrupted)"
                );
            }
            std::process::exit(crate::exit::FAILURE);
        });
        self.shutdown().await;
        if forced.is_cancelled() {
            // The forced exit's task ends the process with a failure code.
            std::future::pending::<()>().await;
        }
    }

    /// Stops firing, waits up to the grace period for running jobs, cancels the rest, and
    /// closes the store.
    pub async fn shutdown(self) {
        // Not ready from here on (`/readyz` answers 503), and systemd is told.
        self.control.status.set_stopping();
        crate::systemd::stopping();
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(self.grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                running = self.running.len(),
                "grace period over; cancelling running jobs"
            );
            self.running.stop_all(StopReason::Shutdown);
            self.tracker.wait().await;
        }
        for t in self.tasks {
            let _ = t.await;
        }
        // The runs are over: their last log lines go to the store before it closes.
        self.run_logs.close().await;
        // Queued notifications get a moment to go out; a dead sink does not hold the exit.
        if self.dispatcher.has_sinks() {
            tokio::time::sleep(ALERTS_GRACE).await;
        }
        self.alerts_stop.cancel();
        self.store.close().await;
        tracing::info!("daemon stopped");
    }
}

/// SIGTERM and SIGINT, registered once.
struct Signals {
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            streams: Some((
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            )),
        })
    }

    /// A placeholder after the streams moved elsewhere; never resolves.
    fn none() -> Signals {
        Signals { streams: None }
    }

    async fn recv(&mut self) {
        match self.streams.as_mut() {
            Some((term, int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            None => std::future::pending().await,
        }
    }
}

/// The retention in force at `now` under `history` and `run_logs` settings (0 turns a bound
/// off).
pub fn retention(
    history: &crate::config::HistorySettings,
    logs: &crate::config::RunLogSettings,
    now: chrono::DateTime<Utc>,
) -> Retention {
    let before = |days: u32| {
        if days == 0 {
            chrono::DateTime::<Utc>::MIN_UTC
        } else {
            now - chrono::Duration::days(i64::from(days))
        }
    };
    let count = |n: u32| if n == 0 { u32::MAX } else { n };
    Retention {
        keep_runs: count(history.keep_runs),
        older_than: before(history.keep_days),
        keep_failed_runs: count(history.keep_failed_runs),
        failed_older_than: before(history.keep_failed_days),
        logs_older_than: before(logs.keep_days),
    }
}

/// Rows deleted per prune step: a few short write transactions, which ticks interleave with.
const PRUNE_LIMIT: u32 = 500;

/// How often at most the database-size warning repeats while the size stays above the bound.
const SIZE_WARNING_EVERY: Duration = Duration::from_secs(3600);

/// Prunes in small steps every `history.prune_every` (and step after step while a step
/// deletes a full batch), off the scheduler's path; gives the freed pages back to the file
/// system and warns while the database is larger than `history.warn_db_mb`.
async fn prune_loop(
    store: Arc<dyn RunStore>,
    history: crate::config::HistorySettings,
    logs: crate::config::RunLogSettings,
    shutdown: CancellationToken,
) {
    let mut timer = tokio::time::interval(history.prune_every);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned: Option<tokio::time::Instant> = None;
    let mut failing = crate::store::failing::FailureLog::new("cannot prune old runs");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = timer.tick() => {}
        }
        let mut total = crate::store::Pruned::default();
        loop {
            let r = retention(&history, &logs, Utc::now());
            match store.prune_step(&r, PRUNE_LIMIT).await {
                Ok(p) => {
                    failing.ok();
                    total.runs += p.runs;
                    total.log_rows += p.log_rows;
                    if p.runs < u64::from(PRUNE_LIMIT) && p.log_rows < u64::from(PRUNE_LIMIT) {
                        break;
                    }
                }
                Err(e) => {
                    failing.failed(&error_chain(&e));
                    break;
                }
            }
            if shutdown.is_cancelled() {
                return;
            }
            // A backlog is worked off step by step, each a few short transactions apart.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if total.runs > 0 || total.log_rows > 0 {
            tracing::debug!(
                runs = total.runs,
                log_rows = total.log_rows,
                "old runs pruned"
            );
        }
        let size = match store.reclaim().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %error_chain(&e), "cannot reclaim free pages");
                None
            }
        };
        let limit = history.warn_db_mb.saturating_mul(1024 * 1024);
        if let Some(bytes) = size
            && limit > 0
            && bytes > limit
            && warned.is_none_or(|at| at.elapsed() >= SIZE_WARNING_EVERY)
        {
            warned = Some(tokio::time::Instant::now());
            tracing::warn!(
                size_mb = bytes / (1024 * 1024),
                warn_db_mb = history.warn_db_mb,
                keep_runs = history.keep_runs,
                keep_days = history.keep_days,
                "the database is larger than history.warn_db_mb; lower the retention \
                 (history.keep_runs, keep_days, run_logs.keep_days) or raise the bound"
            );
        }
    }
}

/// How the sweeper runs: how often, and (clustered) where to ask for catch-up runs of the
/// runs it took over from dead replicas.
struct Sweep {
    every: Duration,
    take_over: Option<mpsc::Sender<crate::scheduler::Command>>,
}

/// Marks `running` rows of dead processes `interrupted` every `sweep.every` (the startup
/// sweep is done in `start`). On PostgreSQL this is the takeover of dead replicas' runs: of
/// several replicas sweeping at once exactly one gets each row back, and asks its scheduler
/// for the catch-up run `misfire: run_once` wants.
async fn sweep_loop(store: Arc<dyn RunStore>, sweep: Sweep, shutdown: CancellationToken) {
    let mut timer = tokio::time::interval(sweep.every);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    timer.tick().await;
    // The sweep runs ten times per heartbeat on PostgreSQL: during an outage its failures are
    // logged once, then at most once a minute.
    let mut failing =
        crate::store::failing::FailureLog::new("cannot look for runs of dead processes");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = timer.tick() => {}
        }
        match store.interrupt_running(Utc::now()).await {
            Ok(runs) => {
                failing.ok();
                // One catch-up per job, for its newest tick taken over: a dead replica may
                // leave two rows of a job `running` (the run going and the next tick, claimed
                // ahead), and they are one loss.
                let mut newest: HashMap<String, DateTime<Utc>> = HashMap::new();
                for r in runs {
                    tracing::warn!(
                        job_id = %r.job_id, run_id = r.id, scheduled_at = %r.scheduled_at.to_rfc3339(),
                        reason = r.message.as_deref().unwrap_or(""),
                        "run interrupted: the process running it is gone"
                    );
                    let tick = newest.entry(r.job_id).or_insert(r.scheduled_at);
                    *tick = (*tick).max(r.scheduled_at);
                }
                if let Some(tx) = &sweep.take_over {
                    for (job_id, tick) in newest {
                        let _ = tx
                            .send(crate::scheduler::Command::TakenOver { job_id, tick })
                            .await;
                    }
                }
            }
            Err(e) => failing.failed(&error_chain(&e)),
        }
    }
}

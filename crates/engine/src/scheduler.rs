//! The timer loop: holds every enabled job's next fire instant and hands due ticks to the
//! runner.
//!
//! One task owns all schedule state (a min-heap of `(fire_at, job)` entries), so there is no
//! lock around it and no two ticks of a job are ever computed concurrently. It sleeps until
//! the earliest entry, and after each fire computes the next instant from the schedule *and
//! the wall clock*: drift never accumulates, and a stalled runtime delays ticks but never
//! stops a job (the next tick is simply the first one after "now").
//!
//! Sleeps are capped at [`MAX_SLEEP`] so that a wall-clock jump (NTP, a suspended VM) is
//! noticed within that time rather than after a long monotonic sleep computed before the jump.
//!
//! Every tick is claimed in the store before it runs (ticks due at the same instant are
//! claimed in one transaction); a tick the store already holds is not run again, which is
//! what makes restarts and several replicas safe.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::definition::{JobDefinition, LoadReport, Misfire, Overlap};
use crate::runner::{RunControl, RunRequest, Runner, StopReason, TickClaim};
use crate::store::{Claim, RunRecord, RunStatus, Trigger};
use soarjobd_core::error_chain;
use soarjobd_core::{Observer, RunNowError, Status};

pub use pauses::{PAUSE_REFRESH, PauseWiring};
pub use soarjobd_core::MAX_SLEEP;

mod pauses;
mod publish;

use pauses::Pauses;
use publish::Publishers;
/// The most missed ticks counted after a restart (only for the log line).
const MISSED_CAP: u64 = 1_000_000;
/// How long before its instant a tick is claimed. Claiming is a database write; doing it
/// ahead of time, for every tick due in the window in one transaction, leaves only the spawn
/// at the tick itself, so a thousand jobs due at the same second all start within a few
/// milliseconds of it. A crash inside this window leaves the row to be marked `interrupted`.
pub const CLAIM_AHEAD: Duration = Duration::from_millis(250);
/// A run that fires this much later than the start its claim recorded (the runtime stalled,
/// or the process was stopped with SIGSTOP, between claim and fire) gets its real start
/// written before it is spawned. Below it the claimed start stands: that spares a write per
/// run, and `history` shows seconds.
pub const START_SLACK: Duration = Duration::from_millis(100);
/// While the store fails, a failing claim is logged at most this often (the first failure is
/// logged at once, at `error`).
pub const STORE_FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);
/// While the store fails and ticks wait for a catch-up, the claim is retried this often, so
/// that recovery does not wait for the next tick of some job (which may be a day away).
pub const STORE_RETRY: Duration = Duration::from_secs(2);
pub use crate::definition::LoadedJobs;

/// Messages to the scheduler task.
pub enum Command {
    /// A fresh load of the jobs folder.
    Reload(LoadReport),
    /// A manual run of a loaded job, now (the admin API); answers the claimed run id.
    RunNow {
        job_id: String,
        reply: tokio::sync::oneshot::Sender<Result<i64, soarjobd_core::RunNowError>>,
    },
    /// A run of the job (its tick `tick`) was taken over from a dead replica and marked
    /// `interrupted`; `misfire: run_once` makes one catch-up run for it.
    TakenOver { job_id: String, tick: DateTime<Utc> },
}

/// Runs currently in progress, by job. Indexed by job so the overlap check at each tick costs
/// O(runs of that job), not O(all running runs): with a thousand jobs due at once, a flat map
/// made firing quadratic.
#[derive(Clone, Default)]
pub struct RunningRuns {
    inner: Arc<Mutex<HashMap<String, HashMap<i64, RunControl>>>>,
}

impl RunningRuns {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<i64, RunControl>>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, run_id: i64, job_id: &str, control: RunControl) {
        self.lock()
            .entry(job_id.to_string())
            .or_default()
            .insert(run_id, control);
    }

    fn remove(&self, job_id: &str, run_id: i64) {
        let mut map = self.lock();
        if let Some(runs) = map.get_mut(job_id) {
            runs.remove(&run_id);
            if runs.is_empty() {
                map.remove(job_id);
            }
        }
    }

    /// The controls of a job's running runs.
    pub fn of_job(&self, job_id: &str) -> Vec<(i64, RunControl)> {
        self.lock()
            .get(job_id)
            .map(|runs| runs.iter().map(|(id, c)| (*id, c.clone())).collect())
            .unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.lock().values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Asks one run to stop; false when it is not running here.
    pub fn stop_run(&self, run_id: i64, reason: StopReason) -> bool {
        let found = self
            .lock()
            .values()
            .find_map(|runs| runs.get(&run_id).cloned());
        // Stopped outside the lock: `stop` takes the control's own lock.
        found.map(|c| c.stop(reason)).is_some()
    }

    /// Asks every running run to stop.
    pub fn stop_all(&self, reason: StopReason) {
        for runs in self.lock().values() {
            for c in runs.values() {
                c.stop(reason);
            }
        }
    }
}

/// Options that are not part of any job definition.
#[derive(Debug, Clone, Default)]
pub struct SchedulerOptions {
    /// Run every enabled job once right after start (the demo uses this).
    pub run_at_start: bool,
    /// When lateness is an overload (see [`crate::overload`]).
    pub overload: crate::overload::OverloadOptions,
    /// How long before its instant a tick is claimed (`None`: [`CLAIM_AHEAD`]; on
    /// PostgreSQL `cluster.claim_ahead`).
    pub claim_ahead: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    fire_at: DateTime<Utc>,
    job_id: String,
    tick: DateTime<Utc>,
    generation: u64,
}

/// A tick to claim: the job, its nominal instant, what caused it, and when to fire it
/// (`None`: as soon as it is claimed).
struct Due {
    def: Arc<JobDefinition>,
    tick: DateTime<Utc>,
    trigger: Trigger,
    fire_at: Option<DateTime<Utc>>,
}

impl Due {
    fn now(def: Arc<JobDefinition>, tick: DateTime<Utc>, trigger: Trigger) -> Due {
        Due {
            def,
            tick,
            trigger,
            fire_at: None,
        }
    }
}

/// A tick claimed in the store and waiting for its instant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Claimed {
    fire_at: DateTime<Utc>,
    run_id: i64,
    job_id: String,
    tick: DateTime<Utc>,
    trigger: Trigger,
    /// The start the claim recorded.
    claimed_start: DateTime<Utc>,
    /// Runs of other processes that held the job when the tick was claimed
    /// ([`Claim::Contended`]): the tick runs only if none of them is still running when it
    /// fires (`replace`: they are asked to stop, and it runs).
    holders: Vec<i64>,
}

/// The store failed to claim ticks and has not worked since. Those ticks did not run (a tick
/// runs only once its claim is committed, so nothing can run twice); they are counted per job,
/// logged as missed when the store recovers, and `misfire: run_once` jobs get one catch-up run
/// for them then, exactly as for ticks missed while the daemon was down.
struct Outage {
    since: DateTime<Utc>,
    failures: u64,
    last_logged: std::time::Instant,
    /// Per job: the latest tick whose claim failed, and how many failed.
    lost: HashMap<String, (DateTime<Utc>, u64)>,
}

struct Slot {
    def: Arc<JobDefinition>,
    generation: u64,
}

/// The scheduler task's state.
pub struct Scheduler {
    runner: Runner,
    slots: HashMap<String, Slot>,
    heap: BinaryHeap<Reverse<Entry>>,
    /// Ticks claimed ahead of their instant, earliest first.
    pending: BinaryHeap<Reverse<Claimed>>,
    /// The time source (the runner's): the wall clock with its precise timer thread in the
    /// daemon, a virtual clock in tests.
    clock: Arc<dyn Clock>,
    next_generation: u64,
    running: RunningRuns,
    tracker: TaskTracker,
    /// Files whose last load failed, with the error text last logged (to log changes only).
    broken: HashMap<PathBuf, String>,
    /// Set while claims fail (see [`Outage`]).
    outage: Option<Outage>,
    /// The status, the loaded definitions and the invalid files, published after loads.
    publish: Publishers,
    /// Lateness and missed ticks are reported here (the runner's observer).
    observer: Arc<dyn Observer>,
    /// The pauses in force (none in the scheduler's unit tests).
    pauses: Pauses,
    /// The store's membership epoch when ownership was last looked at (several replicas:
    /// each schedules only the jobs it owns, see `RunStore::owns`).
    owned_epoch: u64,
    /// Jobs whose ticks were left to another replica: when one of them becomes ours (its
    /// replica left or died), the ticks missed meanwhile are found and `misfire` decides.
    /// (The latest tick left to the other replica, by job.)
    not_owned: HashMap<String, DateTime<Utc>>,
    /// Sustained lateness, told once per episode (see [`crate::overload`]).
    overload: crate::overload::OverloadDetector,
    /// How long before its instant a tick is claimed (see [`SchedulerOptions::claim_ahead`]).
    claim_ahead: chrono::Duration,
    /// Claims that outlasted the claim-ahead window (their ticks fired late), logged once and
    /// then at most every [`STORE_FAILURE_LOG_EVERY`].
    slow_claims: SlowClaims,
}

/// Claims slower than the claim-ahead window: counted, and logged rate-limited.
#[derive(Default)]
struct SlowClaims {
    count: u64,
    last_logged: Option<std::time::Instant>,
}

impl Scheduler {
    pub fn new(runner: Runner, running: RunningRuns, tracker: TaskTracker) -> Scheduler {
        // The scheduler reads the runner's clock, so ticks and the runs they start agree on
        // the time (and a test drives both with one `VirtualClock`).
        Scheduler {
            clock: runner.clock().clone(),
            observer: runner.observer().clone(),
            runner,
            slots: HashMap::new(),
            heap: BinaryHeap::new(),
            pending: BinaryHeap::new(),
            next_generation: 0,
            running,
            tracker,
            broken: HashMap::new(),
            outage: None,
            publish: Publishers::default(),
            pauses: Pauses::default(),
            overload: Default::default(),
            owned_epoch: 0,
            not_owned: HashMap::new(),
            claim_ahead: chrono::Duration::from_std(CLAIM_AHEAD).unwrap_or_default(),
            slow_claims: SlowClaims::default(),
        }
    }

    /// Publishes the job files that fail to load (with their errors) after every load.
    pub fn publishing_invalid(
        mut self,
        tx: tokio::sync::watch::Sender<crate::ops::alerts::evaluate::InvalidFiles>,
    ) -> Scheduler {
        self.publish.set_invalid(tx);
        self
    }

    /// Reports heartbeat, readiness and the loaded jobs to `status`.
    pub fn with_status(mut self, status: Status) -> Scheduler {
        self.publish.set_status(status);
        self
    }

    /// Honours the pauses in this store (re-read every [`PAUSE_REFRESH`] and on `wake`).
    pub fn with_pauses(mut self, wiring: PauseWiring) -> Scheduler {
        self.pauses = Pauses::new(wiring);
        self
    }

    /// Publishes the loaded definitions to `tx` after every load.
    pub fn publishing(mut self, tx: tokio::sync::watch::Sender<LoadedJobs>) -> Scheduler {
        self.publish.set_loaded(tx);
        self
    }

    /// A manual run requested through the admin API: claimed now like `run-once` (so overlap
    /// with other processes is decided atomically with the insert), then fired through the
    /// same path as ticks, where overlap with this daemon's own runs applies.
    async fn run_now(&mut self, job_id: &str) -> Result<i64, RunNowError> {
        let def = match self.slots.get(job_id) {
            Some(slot) => slot.def.clone(),
            None => return Err(RunNowError::NoSuchJob(job_id.to_string())),
        };
        if def.overlap == Overlap::Skip
            && let Some((id, _)) = self.running.of_job(job_id).first()
        {
            return Err(RunNowError::Busy(format!("run {id}")));
        }
        let now = self.clock.now();
        let claim = TickClaim {
            definition: &def,
            scheduled_at: now,
            trigger: Trigger::Manual,
            started_at: now,
        };
        let claimed = self.runner.claim(&[claim]).await;
        match claimed.map(|mut c| c.pop()) {
            Ok(Some(Claim::Claimed(run_id))) => {
                self.pending.push(Reverse(Claimed {
                    fire_at: now,
                    run_id,
                    job_id: def.id.clone(),
                    tick: now,
                    trigger: Trigger::Manual,
                    claimed_start: now,
                    holders: Vec::new(),
                }));
                self.fire_pending().await;
                Ok(run_id)
            }
            Ok(Some(Claim::Busy { holder, .. })) => Err(RunNowError::Busy(holder.to_string())),
            Ok(_) => Err(RunNowError::Store("the claim was not recorded".into())),
            Err(e) => Err(RunNowError::Store(error_chain(&e))),
        }
    }

    /// Re-reads the pauses: releases the claims of newly paused jobs and makes the catch-up
    /// runs that `resume --catch-up` asked for.
    async fn refresh_pauses(&mut self) {
        if self.read_pauses().await {
            self.resume_catch_ups().await;
        }
    }

    /// Reads the pauses in force and releases the claims of newly paused jobs. A store
    /// failure keeps the pauses last read (and answers false).
    async fn read_pauses(&mut self) -> bool {
        if !self.pauses.read().await {
            return false;
        }
        // Ticks claimed ahead for a job that is paused now do not run: released, not skipped,
        // so they leave no row (a paused job records nothing).
        let (keep, release): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|Reverse(c)| {
                c.trigger == Trigger::Manual || !self.pauses.is_paused(&c.job_id)
            });
        self.pending = keep.into_iter().collect();
        for Reverse(c) in release {
            if let Err(e) = self.runner.release(c.run_id).await {
                tracing::error!(job_id = %c.job_id, run_id = c.run_id, error = %error_chain(&e), "cannot release a claimed tick");
            }
        }
        true
    }

    /// Claims the one catch-up run each `resume --catch-up` asked for (see
    /// [`Pauses::catch_ups`]).
    async fn resume_catch_ups(&mut self) {
        let slots = &self.slots;
        let loaded = |id: &str| slots.get(id).map(|s| s.def.clone());
        if let Some(ticks) = self.pauses.catch_ups(loaded).await {
            let due = ticks
                .into_iter()
                .map(|(def, tick)| Due::now(def, tick, Trigger::CatchUp))
                .collect();
            self.claim(due).await;
        }
    }

    /// The start: logs the files that failed, reads the pauses, schedules the initial jobs,
    /// makes the catch-up runs (`misfire: run_once`, `run_at_start`, resumes) and tells the
    /// other replicas that this one schedules.
    async fn start(&mut self, initial: LoadReport, options: SchedulerOptions) {
        self.log_errors(&initial);
        self.overload = crate::overload::OverloadDetector::new(options.overload);
        if let Some(ahead) = options.claim_ahead {
            self.claim_ahead = chrono::Duration::from_std(ahead).unwrap_or(self.claim_ahead);
        }
        // Pauses before the jobs are added (a paused job neither catches up nor counts missed
        // ticks); the catch-ups a resume asked for after them, once the jobs are known.
        self.read_pauses().await;
        let now = self.clock.now();
        let mut catch_up = Vec::new();
        self.owned_epoch = self.runner.membership_epoch();
        for def in initial.jobs {
            let def = Arc::new(def);
            log_loaded(&def, false);
            // A paused job neither catches up nor counts the ticks of its pause as missed.
            // A job another replica schedules is its business (until it becomes ours).
            if def.enabled && !self.runner.owns(&def.id) {
                self.not_owned.insert(def.id.clone(), now);
            } else if def.enabled && !self.pauses.is_paused(&def.id) {
                if options.run_at_start {
                    catch_up.push(Due::now(def.clone(), now, Trigger::Manual));
                } else if let Some(t) = self.missed_ticks(&def, now).await {
                    catch_up.push(Due::now(def.clone(), t, Trigger::CatchUp));
                }
            }
            self.add(def, now);
        }
        self.publish.loaded(self.slots.values().map(|s| &s.def));
        self.claim(catch_up).await;
        self.resume_catch_ups().await;
        self.fire_pending().await;
        self.publish
            .jobs_view(self.slots.values().map(|s| &s.def), &self.broken);
        self.publish.status().set_scheduled();
        // From now on the other replicas leave this one its share of the jobs (a failure is
        // repaired by the next heartbeat, which writes the role too).
        if let Err(e) = self.runner.scheduling().await {
            tracing::warn!(error = %error_chain(&e), "cannot tell the other replicas that this one schedules");
        }
    }

    /// Loads the initial jobs, makes the catch-up runs `misfire: run_once` asks for, and runs
    /// the loop until `shutdown` fires. Returns when the loop stopped firing; runs still in
    /// progress are tracked by the tracker, which the caller waits on.
    pub async fn run(
        mut self,
        initial: LoadReport,
        options: SchedulerOptions,
        mut commands: mpsc::Receiver<Command>,
        shutdown: CancellationToken,
    ) {
        self.start(initial, options).await;

        let pause_wake = self.pauses.wake();
        let mut refresh = tokio::time::interval(PAUSE_REFRESH);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        refresh.tick().await;
        loop {
            // One relaxed atomic store per turn: what `/livez` and the watchdog look at.
            self.publish.status().heartbeat.beat();
            let now = self.clock.now();
            self.overload.turn(self.publish.status(), now);
            let claim_at = self
                .heap
                .peek()
                .map(|Reverse(e)| e.fire_at - self.claim_ahead);
            let fire_at = self.pending.peek().map(|Reverse(c)| c.fire_at);
            let retry_at = self
                .catch_up_waiting()
                .then(|| now + chrono::Duration::from_std(STORE_RETRY).unwrap_or_default());
            let wake = [claim_at, fire_at, retry_at].into_iter().flatten().min();
            let sleep_for = wake
                .map(|w| (w - now).to_std().unwrap_or(Duration::ZERO))
                .unwrap_or(MAX_SLEEP)
                .min(MAX_SLEEP);
            let deadline = now + chrono::Duration::from_std(sleep_for).unwrap_or_default();
            let clock = self.clock.clone();
            // `biased`: shutdown first, so no tick fires after the signal; then reloads, so a
            // changed schedule applies before its old tick fires.
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                cmd = commands.recv() => match cmd {
                    Some(Command::Reload(report)) => {
                        self.reload(report);
                        self.publish
            .jobs_view(self.slots.values().map(|s| &s.def), &self.broken);
                    }
                    Some(Command::RunNow { job_id, reply }) => {
                        let answer = self.run_now(&job_id).await;
                        let _ = reply.send(answer);
                    }
                    Some(Command::TakenOver { job_id, tick }) => {
                        // The sweep sends a kill's runs one by one: taken over together.
                        let mut taken = vec![(job_id, tick)];
                        let mut other = Vec::new();
                        while let Ok(cmd) = commands.try_recv() {
                            match cmd {
                                Command::TakenOver { job_id, tick } => taken.push((job_id, tick)),
                                cmd => other.push(cmd),
                            }
                        }
                        self.take_over(taken).await;
                        for cmd in other {
                            match cmd {
                                Command::Reload(report) => {
                                    self.reload(report);
                                    self.publish.jobs_view(
                                        self.slots.values().map(|s| &s.def),
                                        &self.broken,
                                    );
                                }
                                Command::RunNow { job_id, reply } => {
                                    let answer = self.run_now(&job_id).await;
                                    let _ = reply.send(answer);
                                }
                                Command::TakenOver { .. } => {}
                            }
                        }
                    }
                    None => break,
                },
                _ = async {
                    match &pause_wake {
                        Some(w) => w.notified().await,
                        None => std::future::pending().await,
                    }
                } => self.refresh_pauses().await,
                _ = refresh.tick(), if self.pauses.is_wired() => {
                    self.refresh_pauses().await;
                    // Jobs of a replica that left are taken on here even if none is due soon.
                    let acquired = self.acquire_jobs().await;
                    self.claim(acquired).await;
                    self.fire_pending().await;
                }
                _ = clock.sleep_until(deadline) => {
                    // Due claims fire before the next ones are claimed: a claim is a database
                    // transaction, and ticks due now must not wait for it (with one-second
                    // jobs and a claim-ahead of a second, the next claim and the fire are due
                    // at the same instant).
                    self.fire_pending().await;
                    self.claim_due().await;
                    self.fire_pending().await;
                }
            }
        }
        // Ticks claimed ahead of their instant will not run: release their claims, so they
        // count as missed at the next start (and `misfire` decides) instead of as taken.
        while let Some(Reverse(c)) = self.pending.pop() {
            if let Err(e) = self.runner.release(c.run_id).await {
                tracing::error!(job_id = %c.job_id, run_id = c.run_id, error = %error_chain(&e), "cannot release a claimed tick");
            }
        }
        // Then the other replicas take this one's jobs within a sweep (a tenth of a
        // heartbeat), not when its node row goes once its last runs ended; its runs stay its
        // own meanwhile (it heartbeats until the store closes). After the releases, so the
        // ticks released are free for the new owners to claim.
        if let Err(e) = self.runner.stopped_scheduling().await {
            tracing::warn!(error = %error_chain(&e), "cannot tell the other replicas that this one stopped scheduling");
        }
        self.publish.status().set_loop_stopped();
        tracing::info!(running = self.running.len(), "scheduler stopped firing");
    }

    /// The catch-up runs for runs taken over from a dead replica (one per job: its newest
    /// tick taken over), for the jobs whose misfire is `run_once`. A catch-up's claim key is
    /// the interrupted tick plus 1 ms: interval and cron ticks are whole seconds, so it can
    /// meet no real tick, and the job's new owner uses the same key if it takes the job on
    /// (see [`Scheduler::acquired_catch_up`]), so the two make one catch-up between them.
    /// All in one read and one claim: a kill hands over many runs at once, and this loop
    /// must not fall behind its ticks meanwhile.
    async fn take_over(&mut self, taken: Vec<(String, DateTime<Utc>)>) {
        let taken: Vec<(Arc<JobDefinition>, DateTime<Utc>)> = taken
            .into_iter()
            .filter_map(|(job_id, tick)| {
                let def = &self.slots.get(&job_id)?.def;
                (def.enabled && def.misfire == Misfire::RunOnce).then(|| (def.clone(), tick))
            })
            .collect();
        if taken.is_empty() {
            return;
        }
        let ids: Vec<String> = taken.iter().map(|(d, _)| d.id.clone()).collect();
        let last: HashMap<String, RunRecord> = match self.runner.last_ticks(&ids).await {
            Ok(rows) => rows.into_iter().map(|r| (r.job_id.clone(), r)).collect(),
            // The claim keys still make each catch-up once.
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "cannot read the jobs' last ticks");
                HashMap::new()
            }
        };
        let mut due = Vec::new();
        for (def, tick) in taken {
            let key = tick + chrono::Duration::milliseconds(1);
            // A later tick of the job ran or is about to (not `skipped`, not `interrupted`):
            // a live replica schedules the job and ran on (the dead one was finishing an old
            // run of it), or its new owner took it on and claimed this catch-up's key already.
            // Either way the interrupted run's work is covered. (A later catch-up skipped
            // because the dead replica's run still counted as running covers nothing.)
            if let Some(r) = last.get(&def.id)
                && r.scheduled_at > key
                && !matches!(r.status, RunStatus::Skipped | RunStatus::Interrupted)
            {
                tracing::info!(
                    job_id = %def.id,
                    tick = %tick.to_rfc3339(),
                    "run taken over from a dead replica: later ticks ran, no catch-up"
                );
                continue;
            }
            tracing::info!(
                job_id = %def.id,
                tick = %tick.to_rfc3339(),
                "catch-up run for a run taken over from a dead replica"
            );
            due.push(Due::now(def, key, Trigger::CatchUp));
        }
        self.claim(due).await;
        self.fire_pending().await;
    }

    /// Logs missed ticks after a restart and returns the catch-up tick, if one should run.
    async fn missed_ticks(&self, def: &JobDefinition, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let last = match self.runner.last_scheduled_at(&def.id).await {
            Ok(l) => l?,
            Err(e) => {
                tracing::error!(job_id = %def.id, error = %error_chain(&e), "cannot read the last tick");
                return None;
            }
        };
        self.missed_ticks_since(def, last, now).await
    }

    /// [`Scheduler::missed_ticks`] with the job's last claimed tick already read.
    async fn missed_ticks_since(
        &self,
        def: &JobDefinition,
        last: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        // Ticks inside a pause were not missed: count from the end of the last pause.
        let last = self.pauses.count_missed_from(&def.id, last).await;
        let missed = def.schedule.count_ticks_between(last, now, MISSED_CAP);
        if missed == 0 {
            return None;
        }
        self.observer.ticks_missed(&def.id, missed);
        let action = match def.misfire {
            Misfire::RunOnce => "one catch-up run now",
            Misfire::Skip => "waiting for the next tick",
        };
        tracing::warn!(
            job_id = %def.id,
            missed,
            last_tick = %last.to_rfc3339(),
            misfire = ?def.misfire,
            action,
            "ticks missed"
        );
        match def.misfire {
            Misfire::RunOnce => def.schedule.last_tick_at_or_before(now),
            Misfire::Skip => None,
        }
    }

    /// Schedules a job's next tick after `now`.
    fn add(&mut self, def: Arc<JobDefinition>, now: DateTime<Utc>) {
        let generation = self.next_generation;
        self.next_generation += 1;
        let id = def.id.clone();
        if def.enabled {
            self.push_next(&def, generation, now);
        }
        self.slots.insert(id, Slot { def, generation });
    }

    fn push_next(&mut self, def: &JobDefinition, generation: u64, after: DateTime<Utc>) {
        if let Some(tick) = def.schedule.next_tick_after(after) {
            self.heap.push(Reverse(Entry {
                fire_at: def.schedule.fire_at(&def.id, tick),
                job_id: def.id.clone(),
                tick,
                generation,
            }));
        } else {
            tracing::info!(job_id = %def.id, "the schedule has no future ticks");
        }
    }

    /// Applies a fresh load of the jobs folder.
    fn reload(&mut self, report: LoadReport) {
        self.log_errors(&report);
        let now = self.clock.now();
        let failed: HashSet<&PathBuf> = report.failed_files.iter().collect();
        let mut present = HashSet::new();
        for def in report.jobs {
            present.insert(def.id.clone());
            match self.slots.get(&def.id) {
                Some(slot) if slot.def.fingerprint == def.fingerprint => {}
                Some(_) => {
                    let def = Arc::new(def);
                    log_loaded(&def, true);
                    self.add(def, now);
                }
                None => {
                    let def = Arc::new(def);
                    log_loaded(&def, false);
                    self.add(def, now);
                }
            }
        }
        let removed: Vec<String> = self
            .slots
            .iter()
            .filter(|(id, slot)| !present.contains(*id) && !failed.contains(&slot.def.source))
            .map(|(id, _)| id.clone())
            .collect();
        for id in removed {
            self.slots.remove(&id);
            let running = self.running.of_job(&id).len();
            tracing::info!(job_id = %id, running, "job removed");
        }
        self.publish.loaded(self.slots.values().map(|s| &s.def));
    }

    fn log_errors(&mut self, report: &LoadReport) {
        let mut by_file: HashMap<PathBuf, Vec<String>> = HashMap::new();
        for e in &report.errors {
            by_file
                .entry(e.file.clone())
                .or_default()
                .push(e.to_string());
        }
        let now_broken: HashSet<PathBuf> = by_file.keys().cloned().collect();
        for (file, errors) in by_file {
            let text = errors.join("\n");
            if self.broken.get(&file) == Some(&text) {
                continue;
            }
            let kept = self
                .slots
                .values()
                .find(|s| s.def.source == file)
                .map(|s| s.def.id.clone());
            tracing::error!(
                file = %file.display(),
                errors = %text,
                kept_previous = kept.is_some(),
                "job invalid"
            );
            self.broken.insert(file, text);
        }
        self.broken.retain(|f, _| now_broken.contains(f));
        self.publish.invalid(&self.broken);
    }

    /// After the replicas changed: the jobs that became ours, with the catch-up run each
    /// one's `misfire` asks for if ticks were missed while nobody scheduled it (its replica
    /// was being declared dead, or had just left). Ticks another replica did claim are not
    /// missed (`last_scheduled_at`), and a catch-up shares its tick's claim key, so a tick is
    /// never run twice.
    async fn acquire_jobs(&mut self) -> Vec<Due> {
        let epoch = self.runner.membership_epoch();
        if epoch == self.owned_epoch {
            return Vec::new();
        }
        self.owned_epoch = epoch;
        let acquired: Vec<(String, DateTime<Utc>)> = self
            .not_owned
            .iter()
            .filter(|(id, _)| self.runner.owns(id))
            .map(|(id, t)| (id.clone(), *t))
            .collect();
        if acquired.is_empty() {
            return Vec::new();
        }
        tracing::info!(
            jobs = acquired.len(),
            "jobs of a replica that left or died are scheduled here now"
        );
        let now = self.clock.now();
        let ids: Vec<String> = acquired.iter().map(|(id, _)| id.clone()).collect();
        // One read for all of them: a replica that dies hands over a share of the jobs at
        // once, and this loop must not fall behind its ticks meanwhile.
        let mut last: HashMap<String, RunRecord> = match self.runner.last_ticks(&ids).await {
            Ok(rows) => rows.into_iter().map(|r| (r.job_id.clone(), r)).collect(),
            Err(e) => {
                tracing::error!(error = %error_chain(&e), "cannot read the last ticks of the jobs taken on");
                for id in &ids {
                    self.not_owned.remove(id);
                }
                return Vec::new();
            }
        };
        let mut due = Vec::new();
        for (id, left) in acquired {
            self.not_owned.remove(&id);
            let Some(slot) = self.slots.get(&id) else {
                continue;
            };
            let def = slot.def.clone();
            if !def.enabled || self.pauses.is_paused(&id) {
                continue;
            }
            if left > now {
                // A tick due within the claim-ahead window that was left to the other replica
                // a moment ago (our views of the replicas differed): claimed here as the tick
                // it is; if the other one claimed it after all, the claim key says so.
                let fire_at = def.schedule.fire_at(&def.id, left);
                due.push(Due {
                    def,
                    tick: left,
                    trigger: Trigger::Schedule,
                    fire_at: Some(fire_at),
                });
            } else if let Some(d) = self.acquired_late(&def, left, now, last.remove(&id)).await {
                due.push(d);
            }
        }
        due
    }

    /// What to claim for a job that just became ours, whose ticks since `left` nobody claimed.
    ///
    /// Its previous owner died or left; the replica that takes a dead owner's running rows
    /// over (any replica's sweep, see [`Scheduler::take_over`]) may be another one, and
    /// both must make *one* catch-up between them, whichever comes first:
    ///
    /// * the job's last tick was taken over (`interrupted`): the catch-up's key is that tick
    ///   plus 1 ms, the key [`Scheduler::take_over`] claims, so the one that claims second
    ///   finds it taken;
    /// * the last row is a catch-up (the takeover's, made a moment ago): it covered the ticks
    ///   missed until it started, so only ticks after its start count;
    /// * otherwise the ticks missed since the last tick count, as after a restart.
    ///
    /// A job handed over by a replica that stopped gracefully (it released the tick it had
    /// claimed ahead) has missed at most the one tick `left` to it a moment ago: that tick is
    /// claimed as the tick it is and fires now (late, not missed), as one node runs a tick
    /// it wakes up late for, whatever `misfire` says.
    async fn acquired_late(
        &self,
        def: &Arc<JobDefinition>,
        left: DateTime<Utc>,
        now: DateTime<Utc>,
        last: Option<RunRecord>,
    ) -> Option<Due> {
        if let Some(r) = &last
            && r.status != RunStatus::Interrupted
            && r.scheduled_at < left
            && def.schedule.count_ticks_between(r.scheduled_at, now, 2) == 1
            && def.schedule.count_ticks_between(left, now, 1) == 0
        {
            return Some(Due {
                def: def.clone(),
                tick: left,
                trigger: Trigger::Schedule,
                fire_at: Some(def.schedule.fire_at(&def.id, left)),
            });
        }
        self.acquired_catch_up(def, last, now)
            .await
            .map(|t| Due::now(def.clone(), t, Trigger::CatchUp))
    }

    /// See [`Scheduler::acquired_late`]: the catch-up tick, given the job's last tick.
    async fn acquired_catch_up(
        &self,
        def: &JobDefinition,
        last: Option<RunRecord>,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        match last {
            Some(r) if r.status == RunStatus::Interrupted && def.misfire == Misfire::RunOnce => {
                tracing::warn!(
                    job_id = %def.id,
                    last_tick = %r.scheduled_at.to_rfc3339(),
                    action = "one catch-up run now",
                    "the job's last run was taken over from a dead replica"
                );
                Some(r.scheduled_at + chrono::Duration::milliseconds(1))
            }
            Some(r) if r.trigger == Trigger::CatchUp => {
                let missed = def.schedule.count_ticks_between(
                    r.started_at.max(r.scheduled_at),
                    now,
                    MISSED_CAP,
                );
                if missed == 0 {
                    return None;
                }
                self.missed_ticks_since(def, r.scheduled_at, now).await
            }
            Some(r) => self.missed_ticks_since(def, r.scheduled_at, now).await,
            None => None,
        }
    }

    /// Claims, in one transaction, every tick due within the claim-ahead window of the jobs
    /// this process schedules.
    async fn claim_due(&mut self) {
        let now = self.clock.now();
        let horizon = now + self.claim_ahead;
        let mut due = self.acquire_jobs().await;
        while let Some(Reverse(e)) = self.heap.peek() {
            if e.fire_at > horizon {
                break;
            }
            let Some(Reverse(e)) = self.heap.pop() else {
                break;
            };
            let Some(slot) = self.slots.get(&e.job_id) else {
                continue;
            };
            if slot.generation != e.generation {
                continue; // Superseded by a reload.
            }
            let def = slot.def.clone();
            let generation = slot.generation;
            if self.pauses.is_paused(&def.id) {
                // Paused: the tick is neither claimed nor missed; the job moves on to its
                // next tick, so a resume starts from the future, never with a burst.
                let after = if now > e.tick { now } else { e.tick };
                self.push_next(&def, generation, after);
                continue;
            }
            if !self.runner.owns(&def.id) {
                // Another replica schedules this job: no claim, no missed tick here.
                self.not_owned.insert(def.id.clone(), e.tick);
                let after = if now > e.tick { now } else { e.tick };
                self.push_next(&def, generation, after);
                continue;
            }
            // The next tick comes from the wall clock, not from the previous tick: after a
            // stall the job resumes at the first tick after now instead of replaying a burst.
            let after = if now > e.tick { now } else { e.tick };
            let skipped = def.schedule.count_ticks_between(e.tick, now, MISSED_CAP);
            if skipped > 0 {
                self.observer.ticks_missed(&def.id, skipped);
                self.overload
                    .ticks_missed(self.publish.status(), now, skipped);
                tracing::warn!(job_id = %def.id, missed = skipped, "ticks missed");
            }
            self.push_next(&def, generation, after);
            due.push(Due {
                def,
                tick: e.tick,
                trigger: Trigger::Schedule,
                fire_at: Some(e.fire_at),
            });
        }
        if !due.is_empty() || self.catch_up_waiting() {
            self.claim(due).await;
        }
    }

    /// True while the store fails and a lost tick waits for its catch-up run.
    fn catch_up_waiting(&self) -> bool {
        self.outage.as_ref().is_some_and(|o| {
            o.lost.keys().any(|id| {
                self.slots
                    .get(id)
                    .is_some_and(|s| s.def.enabled && s.def.misfire == Misfire::RunOnce)
            })
        })
    }

    /// The catch-up runs for ticks lost while the store failed (`misfire: run_once` jobs
    /// that are still loaded and enabled), one per job, at its latest lost tick. They share the
    /// claim key of that tick, so a claim that did commit after all is not run twice.
    fn lost_catch_ups(&self) -> Vec<Due> {
        let Some(outage) = &self.outage else {
            return Vec::new();
        };
        outage
            .lost
            .iter()
            .filter_map(|(id, (tick, _))| {
                let slot = self.slots.get(id)?;
                (slot.def.enabled && slot.def.misfire == Misfire::RunOnce)
                    .then(|| Due::now(slot.def.clone(), *tick, Trigger::CatchUp))
            })
            .collect()
    }

    /// A claim failed: nothing of it runs. Logs the first failure at `error`, then at most
    /// every [`STORE_FAILURE_LOG_EVERY`], and counts the lost ticks.
    fn claim_failed(&mut self, due: &[Due], error: &crate::store::StoreError) {
        let now = self.clock.now();
        let first = self.outage.is_none();
        let outage = self.outage.get_or_insert_with(|| Outage {
            since: now,
            failures: 0,
            last_logged: std::time::Instant::now(),
            lost: HashMap::new(),
        });
        outage.failures += 1;
        for d in due.iter().filter(|d| d.trigger != Trigger::CatchUp) {
            let lost = outage.lost.entry(d.def.id.clone()).or_insert((d.tick, 0));
            lost.0 = lost.0.max(d.tick);
            lost.1 += 1;
        }
        if first {
            // One line when it starts; the scheduler goes on trying at every tick.
            tracing::error!(
                error = %error_chain(error),
                ticks = due.len(),
                effect = "ticks are not claimed, so they do not run, until the store works again",
                "store failing"
            );
        } else if outage.last_logged.elapsed() >= STORE_FAILURE_LOG_EVERY {
            outage.last_logged = std::time::Instant::now();
            let ticks_lost: u64 = outage.lost.values().map(|l| l.1).sum();
            tracing::warn!(
                error = %error_chain(error),
                failing_since = %outage.since.to_rfc3339(),
                failures = outage.failures,
                ticks_lost,
                "store still failing"
            );
        }
    }

    /// Logs claims that outlast the claim-ahead window (their ticks fire late by the excess):
    /// the first at once, then at most every [`STORE_FAILURE_LOG_EVERY`] with the count.
    fn claim_took(&mut self, took: Duration, ticks: usize) {
        if took <= self.claim_ahead.to_std().unwrap_or_default() {
            return;
        }
        let slow = &mut self.slow_claims;
        slow.count += 1;
        if slow
            .last_logged
            .is_some_and(|t| t.elapsed() < STORE_FAILURE_LOG_EVERY)
        {
            return;
        }
        slow.last_logged = Some(std::time::Instant::now());
        tracing::warn!(
            took_ms = took.as_millis() as u64,
            ticks,
            claim_ahead_ms = self.claim_ahead.num_milliseconds(),
            slow_claims = slow.count,
            effect = "the ticks of such a claim fire late by the excess",
            hint = "a loaded database server: see cluster.claim_ahead",
            "a claim took longer than the claim-ahead window"
        );
    }

    /// A claim succeeded after failures: logs the recovery and the ticks lost per job.
    fn store_recovered(&mut self) {
        let Some(outage) = self.outage.take() else {
            return;
        };
        let failed_for_ms = (self.clock.now() - outage.since).num_milliseconds();
        let ticks_missed: u64 = outage.lost.values().map(|l| l.1).sum();
        tracing::info!(
            failed_for_ms,
            failures = outage.failures,
            ticks_missed,
            "store recovered"
        );
        for (job_id, (last_tick, missed)) in &outage.lost {
            let run_once = self
                .slots
                .get(job_id)
                .is_some_and(|s| s.def.enabled && s.def.misfire == Misfire::RunOnce);
            tracing::warn!(
                job_id = %job_id,
                missed,
                last_tick = %last_tick.to_rfc3339(),
                reason = "the state store was failing",
                action = if run_once { "one catch-up run now" } else { "waiting for the next tick" },
                "ticks missed"
            );
        }
    }

    /// Claims ticks (one transaction) and queues the claimed ones to fire at their instant
    /// (`None`: now). Catch-ups for ticks lost while the store failed go in the same claim.
    async fn claim(&mut self, mut due: Vec<Due>) {
        due.extend(self.lost_catch_ups());
        if due.is_empty() {
            return;
        }
        let now = self.clock.now();
        let claims: Vec<TickClaim<'_>> = due
            .iter()
            .map(|d| TickClaim {
                definition: &d.def,
                scheduled_at: d.tick,
                trigger: d.trigger,
                started_at: d.fire_at.unwrap_or(now).max(now),
            })
            .collect();
        // Overlap across processes (a `run-once` of the same job) is decided by the runner's
        // claim, atomically with the insert; overlap with this daemon's own runs is decided
        // when the tick fires, because a run may end between claim and fire.
        let timer = std::time::Instant::now();
        let claimed = self.runner.claim(&claims).await;
        self.claim_took(timer.elapsed(), claims.len());
        let starts: Vec<DateTime<Utc>> = claims.iter().map(|c| c.started_at).collect();
        let results = match claimed {
            Ok(r) => r,
            Err(e) => {
                // Without a claim nothing may run (it could run twice).
                self.claim_failed(&due, &e);
                return;
            }
        };
        self.store_recovered();
        for ((d, claimed_start), result) in due.into_iter().zip(starts).zip(results) {
            let (run_id, holders) = match result {
                Claim::Claimed(run_id) => (run_id, Vec::new()),
                Claim::Contended {
                    run_id,
                    holder,
                    holders,
                } => {
                    tracing::debug!(job_id = %d.def.id, run_id, holder = %holder, "tick claimed while another process runs the job: decided when it fires");
                    (run_id, holders)
                }
                Claim::Taken => {
                    tracing::debug!(job_id = %d.def.id, tick = %d.tick.to_rfc3339(), "tick already claimed");
                    continue;
                }
                // Only manual claims are refused outright (see `run_now`).
                Claim::Busy { holder } => {
                    tracing::warn!(
                        job_id = %d.def.id,
                        scheduled_at = %d.tick.to_rfc3339(),
                        reason = "another process is running the job",
                        holder = %holder,
                        "run skipped"
                    );
                    continue;
                }
            };
            self.pending.push(Reverse(Claimed {
                fire_at: d.fire_at.unwrap_or(now),
                run_id,
                job_id: d.def.id.clone(),
                tick: d.tick,
                trigger: d.trigger,
                claimed_start,
                holders,
            }));
        }
    }

    /// Starts every claimed run whose instant has come, applying the overlap policy.
    async fn fire_pending(&mut self) {
        let now = self.clock.now();
        let mut firing = Vec::new();
        while let Some(Reverse(c)) = self.pending.peek() {
            if c.fire_at > now {
                break;
            }
            let Some(Reverse(c)) = self.pending.pop() else {
                break;
            };
            firing.push(c);
        }
        // Claims record a nominal start (the tick's instant); a run fired well after it (the
        // process was stopped or starved in between) gets its real start recorded first, before
        // it is spawned, so the row never shows a start the run did not have. One write for
        // all of them, and none in the normal case.
        // The same call fences the claims: on PostgreSQL a replica that was frozen or cut off
        // after claiming may have been declared dead meanwhile and its claims taken over; those
        // must not start (checked with the database only for claims not vouched for by a
        // fresh lease, so the normal case costs no query).
        if firing.is_empty() {
            return;
        }
        let slack = chrono::Duration::from_std(START_SLACK).unwrap_or_default();
        let starts: Vec<(i64, Option<DateTime<Utc>>)> = firing
            .iter()
            .map(|c| (c.run_id, (now - c.claimed_start > slack).then_some(now)))
            .collect();
        let check = self.runner.mark_started(&starts).await;
        let lost: HashSet<i64> = check.lost.iter().copied().collect();
        let unconfirmed: HashSet<i64> = check.unconfirmed.iter().copied().collect();
        if let Some(e) = &check.error {
            tracing::warn!(error = %e, runs = unconfirmed.len(), "cannot check that claimed runs are still this replica's: they do not start");
        }

        for c in firing {
            if lost.contains(&c.run_id) {
                // Its row is the replicas' that took it over (they decided the tick per
                // `misfire`); nothing of it is written here.
                tracing::warn!(
                    job_id = %c.job_id, run_id = c.run_id, scheduled_at = %c.tick.to_rfc3339(),
                    reason = "another replica took the claim over (this one was declared dead while it was stopped or cut off)",
                    "claimed run not started"
                );
                continue;
            }
            if unconfirmed.contains(&c.run_id) {
                self.finish_unrun(
                    &c,
                    RunStatus::Skipped,
                    "this replica could not check with the database that the claim was still its own",
                    now,
                )
                .await;
                continue;
            }
            if c.trigger != Trigger::Manual && self.pauses.is_paused(&c.job_id) {
                if let Err(e) = self.runner.release(c.run_id).await {
                    tracing::error!(job_id = %c.job_id, run_id = c.run_id, error = %error_chain(&e), "cannot release a claimed tick");
                }
                continue;
            }
            if c.trigger == Trigger::Schedule {
                let lateness = (now - c.fire_at).to_std().unwrap_or_default();
                self.observer.tick_fired(&c.job_id, lateness);
                self.overload
                    .tick_fired(self.publish.status(), now, lateness);
            }
            // The job may have changed since the claim: run the current definition, or record
            // why the tick did not run.
            let def = match self.slots.get(&c.job_id) {
                Some(slot) if slot.def.enabled || c.trigger == Trigger::Manual => slot.def.clone(),
                _ => {
                    self.finish_unrun(
                        &c,
                        RunStatus::Skipped,
                        "the job was removed or disabled before its tick",
                        now,
                    )
                    .await;
                    continue;
                }
            };
            // Overlap with other processes' runs (another replica, a `run-once`) that held the
            // job at claim time, decided now as for this process's own runs: they may have
            // ended since the claim.
            if !c.holders.is_empty() && !self.other_holders_allow(&def, &c, now).await {
                continue;
            }
            let running = self.running.of_job(&def.id);
            if !running.is_empty() {
                match def.overlap {
                    Overlap::Skip => {
                        tracing::warn!(
                            job_id = %def.id, run_id = c.run_id, scheduled_at = %c.tick.to_rfc3339(),
                            reason = "previous run still running", "run skipped"
                        );
                        self.finish_unrun(
                            &c,
                            RunStatus::Skipped,
                            "previous run still running",
                            now,
                        )
                        .await;
                        continue;
                    }
                    Overlap::Replace => {
                        for (old, control) in running {
                            tracing::info!(job_id = %def.id, run_id = old, replaced_by = c.run_id, "replacing the running run");
                            control.stop(StopReason::Replaced);
                        }
                    }
                    Overlap::Allow => {}
                }
            }
            self.spawn_run(def, c.run_id, c.tick, c.trigger);
        }
    }

    /// Whether a contended tick may run now: none of the runs that held the job at claim time
    /// is still running, or (`replace`) they were asked to stop. Otherwise its row is finished
    /// as `skipped` with the holder named. One query, only for contended ticks.
    async fn other_holders_allow(
        &self,
        def: &JobDefinition,
        c: &Claimed,
        now: DateTime<Utc>,
    ) -> bool {
        let why = match self.runner.holding(&c.holders).await {
            Ok(None) => return true,
            Ok(Some(holder)) if def.overlap == Overlap::Replace => {
                let mut asked = false;
                for id in &c.holders {
                    match self.runner.request_cancel(*id).await {
                        Ok(a) => asked |= a,
                        Err(e) => {
                            tracing::warn!(job_id = %def.id, error = %error_chain(&e), "cannot ask the other replica to cancel its run")
                        }
                    }
                }
                if asked {
                    tracing::info!(job_id = %def.id, run_id = c.run_id, holder = %holder, "asked the other replica to cancel its run (overlap: replace)");
                    return true;
                }
                // No channel to the holder (single node): it keeps the job.
                format!("another process is running this job: {holder}")
            }
            Ok(Some(holder)) => format!("another process is running this job: {holder}"),
            // Unknown: not running is the safe side.
            Err(e) => format!(
                "cannot tell whether another process still runs this job: {}",
                error_chain(&e)
            ),
        };
        tracing::warn!(
            job_id = %def.id, run_id = c.run_id, scheduled_at = %c.tick.to_rfc3339(),
            reason = %why, overlap = ?def.overlap, "run skipped"
        );
        self.finish_unrun(c, RunStatus::Skipped, &why, now).await;
        false
    }

    /// Finishes the row of a claimed tick that did not run (through the runner, the only
    /// code that finishes run rows).
    async fn finish_unrun(&self, c: &Claimed, status: RunStatus, why: &str, now: DateTime<Utc>) {
        self.runner
            .finish_unrun(&c.job_id, c.run_id, status, why, now)
            .await;
    }

    fn spawn_run(
        &self,
        def: Arc<JobDefinition>,
        run_id: i64,
        tick: DateTime<Utc>,
        trigger: Trigger,
    ) {
        let control = RunControl::new();
        self.running.insert(run_id, &def.id, control.clone());
        let runner = self.runner.clone();
        let running = self.running.clone();
        let job_id = def.id.clone();
        // Runs are tracked so shutdown can wait for them; the scheduler never awaits a run.
        self.tracker.spawn(async move {
            runner
                .execute(RunRequest {
                    definition: def,
                    params: None,
                    run_id,
                    scheduled_at: tick,
                    trigger,
                    control,
                })
                .await;
            running.remove(&job_id, run_id);
        });
    }
}

fn log_loaded(def: &JobDefinition, changed: bool) {
    tracing::info!(
        job_id = %def.id,
        name = %def.name,
        job = %def.implementation,
        enabled = def.enabled,
        schedule = %def.schedule.describe(),
        changed,
        "job loaded"
    );
}

#[cfg(test)]
mod tests;

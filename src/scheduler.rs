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

use crate::definition::{JobDefinition, LoadReport, Misfire, Overlap};
use crate::job::error_chain;
use crate::runner::{RunControl, RunRequest, Runner, StopReason};
use crate::store::{NewRun, RunFinish, RunStatus, Trigger};
use crate::timer::PreciseTimer;

/// The longest the loop sleeps before looking at the wall clock again.
pub const MAX_SLEEP: Duration = Duration::from_secs(30);
/// The most missed ticks counted after a restart (only for the log line).
const MISSED_CAP: u64 = 1_000_000;
/// How long before its instant a tick is claimed. Claiming is a database write; doing it
/// ahead of time, for every tick due in the window in one transaction, leaves only the spawn
/// at the tick itself, so a thousand jobs due at the same second all start within a few
/// milliseconds of it. A crash inside this window leaves the row to be marked `interrupted`.
pub const CLAIM_AHEAD: Duration = Duration::from_millis(250);

/// Messages to the scheduler task.
pub enum Command {
    /// A fresh load of the jobs folder.
    Reload(LoadReport),
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
    timer: PreciseTimer,
    next_generation: u64,
    running: RunningRuns,
    tracker: TaskTracker,
    /// Files whose last load failed, with the error text last logged (to log changes only).
    broken: HashMap<PathBuf, String>,
}

impl Scheduler {
    pub fn new(
        runner: Runner,
        running: RunningRuns,
        tracker: TaskTracker,
    ) -> std::io::Result<Scheduler> {
        let timer = PreciseTimer::new()?;
        Ok(Scheduler {
            runner,
            slots: HashMap::new(),
            heap: BinaryHeap::new(),
            pending: BinaryHeap::new(),
            timer,
            next_generation: 0,
            running,
            tracker,
            broken: HashMap::new(),
        })
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
        self.log_errors(&initial);
        let now = Utc::now();
        let mut catch_up = Vec::new();
        for def in initial.jobs {
            let def = Arc::new(def);
            log_loaded(&def, false);
            if def.enabled {
                if options.run_at_start {
                    catch_up.push(Due::now(def.clone(), now, Trigger::Manual));
                } else if let Some(t) = self.missed_ticks(&def, now).await {
                    catch_up.push(Due::now(def.clone(), t, Trigger::CatchUp));
                }
            }
            self.add(def, now);
        }
        self.claim(catch_up).await;
        self.fire_pending().await;

        loop {
            let now = Utc::now();
            let claim_at = self.heap.peek().map(|Reverse(e)| {
                e.fire_at - chrono::Duration::from_std(CLAIM_AHEAD).unwrap_or_default()
            });
            let fire_at = self.pending.peek().map(|Reverse(c)| c.fire_at);
            let wake = match (claim_at, fire_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let sleep_for = wake
                .map(|w| (w - now).to_std().unwrap_or(Duration::ZERO))
                .unwrap_or(MAX_SLEEP)
                .min(MAX_SLEEP);
            let deadline = std::time::Instant::now() + sleep_for;
            // `biased`: shutdown first, so no tick fires after the signal; then reloads, so a
            // changed schedule applies before its old tick fires.
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                cmd = commands.recv() => match cmd {
                    Some(Command::Reload(report)) => self.reload(report),
                    None => break,
                },
                _ = self.timer.sleep_until(deadline) => {
                    self.claim_due().await;
                    self.fire_pending().await;
                }
            }
        }
        // Ticks claimed ahead of their instant will not run: release their claims, so they
        // count as missed at the next start (and `misfire` decides) instead of as taken.
        while let Some(Reverse(c)) = self.pending.pop() {
            if let Err(e) = self.runner.store().unclaim(c.run_id).await {
                tracing::error!(job_id = %c.job_id, run_id = c.run_id, error = %error_chain(&e), "cannot release a claimed tick");
            }
        }
        tracing::info!(running = self.running.len(), "scheduler stopped firing");
    }

    /// Logs missed ticks after a restart and returns the catch-up tick, if one should run.
    async fn missed_ticks(&self, def: &JobDefinition, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let last = match self.runner.store().last_scheduled_at(&def.id).await {
            Ok(l) => l?,
            Err(e) => {
                tracing::error!(job_id = %def.id, error = %error_chain(&e), "cannot read the last tick");
                return None;
            }
        };
        let missed = def.schedule.count_ticks_between(last, now, MISSED_CAP);
        if missed == 0 {
            return None;
        }
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
        let now = Utc::now();
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
    }

    /// Claims, in one transaction, every tick due within [`CLAIM_AHEAD`].
    async fn claim_due(&mut self) {
        let now = Utc::now();
        let horizon = now + chrono::Duration::from_std(CLAIM_AHEAD).unwrap_or_default();
        let mut due = Vec::new();
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
            // The next tick comes from the wall clock, not from the previous tick: after a
            // stall the job resumes at the first tick after now instead of replaying a burst.
            let after = if now > e.tick { now } else { e.tick };
            let skipped = def.schedule.count_ticks_between(e.tick, now, MISSED_CAP);
            if skipped > 0 {
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
        if !due.is_empty() {
            self.claim(due).await;
        }
    }

    /// Claims ticks (one transaction) and queues the claimed ones to fire at their instant
    /// (`None`: now).
    async fn claim(&mut self, due: Vec<Due>) {
        if due.is_empty() {
            return;
        }
        let now = Utc::now();
        let claims: Vec<NewRun> = due
            .iter()
            .map(|d| NewRun {
                job_id: d.def.id.clone(),
                scheduled_at: d.tick,
                trigger: d.trigger,
                status: RunStatus::Running,
                started_at: d.fire_at.unwrap_or(now).max(now),
                message: None,
            })
            .collect();
        let ids = match self.runner.store().claim_runs(&claims).await {
            Ok(ids) => ids,
            Err(e) => {
                // Without a claim nothing may run (it could run twice); the next tick retries.
                tracing::error!(error = %error_chain(&e), ticks = claims.len(), "cannot claim ticks");
                return;
            }
        };
        for (
            Due {
                def,
                tick,
                trigger,
                fire_at,
            },
            id,
        ) in due.into_iter().zip(ids)
        {
            match id {
                Some(run_id) => self.pending.push(Reverse(Claimed {
                    fire_at: fire_at.unwrap_or(now),
                    run_id,
                    job_id: def.id.clone(),
                    tick,
                    trigger,
                })),
                None => {
                    tracing::debug!(job_id = %def.id, tick = %tick.to_rfc3339(), "tick already claimed")
                }
            }
        }
    }

    /// Starts every claimed run whose instant has come, applying the overlap policy.
    async fn fire_pending(&mut self) {
        let now = Utc::now();

        while let Some(Reverse(c)) = self.pending.peek() {
            if c.fire_at > now {
                break;
            }
            let Some(Reverse(c)) = self.pending.pop() else {
                break;
            };
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

    /// Finishes the row of a claimed tick that did not run.
    async fn finish_unrun(&self, c: &Claimed, status: RunStatus, why: &str, now: DateTime<Utc>) {
        let finish = RunFinish {
            status,
            finished_at: now,
            message: Some(why.to_string()),
            error: None,
            stats: serde_json::Value::Object(Default::default()),
        };
        if let Err(e) = self.runner.store().finish_run(c.run_id, &finish).await {
            tracing::error!(job_id = %c.job_id, run_id = c.run_id, error = %error_chain(&e), "cannot record an unrun tick");
        }
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

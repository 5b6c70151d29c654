//! The scheduler and the runner on a [`VirtualClock`]: schedules, misfire, overlap, timeouts and
//! shutdown that span minutes to hours of schedule time, run in milliseconds of real time.
//!
//! The harness moves time only when everything it drives is idle: the scheduler loop asleep
//! and every run in progress asleep on its timeout (or grace period). Then it moves the clock
//! to the earliest sleeper's deadline, so every task sees every instant in order, exactly as on
//! the wall clock, but without waiting for it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Command, RunningRuns, Scheduler, SchedulerOptions};
use crate::clock::VirtualClock;
use crate::definition::{self, JobDefinition, JobSpec, LoadReport};
use crate::runner::{CANCEL_GRACE, Runner, StopReason};
use crate::store::{NewRun, RunFinish, RunRecord, RunStatus, Store, Trigger};
use soarjobd_core::{Job, JobContext, JobError, Outcome, Registry};

/// The test job. By id prefix: `hold-*` runs until it is asked to stop, `stubborn-*` never
/// returns (ignores its token), anything else succeeds at once.
struct TestJob;

impl JobSpec for TestJob {}

#[async_trait]
impl Job for TestJob {
    fn id(&self) -> &'static str {
        "test"
    }

    async fn run(&self, ctx: &mut JobContext) -> Result<Outcome, JobError> {
        if ctx.job_id().starts_with("hold") {
            ctx.cancelled().await;
            return Err(JobError::Cancelled);
        }
        if ctx.job_id().starts_with("stubborn") {
            std::future::pending::<()>().await;
        }
        Ok(Outcome::succeeded("done"))
    }
}

fn registry() -> Arc<Registry> {
    let mut r = Registry::new();
    r.register(TestJob);
    Arc::new(r)
}

/// An instant that is a multiple of every period used here (10 s, 10 min, 1 h).
fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(500_000 * 3600, 0).expect("instant")
}

fn secs(s: i64) -> TimeDelta {
    TimeDelta::seconds(s)
}

fn job(registry: &Registry, id: &str, body: &str) -> JobDefinition {
    let text = format!("name: {id}\njob: test\n{body}");
    definition::load_str(
        Path::new(&format!("/nonexistent/{id}.yaml")),
        &text,
        registry,
        soarjobd_containment::open_nonblocking,
    )
    .unwrap_or_else(|e| panic!("{id}: {e:?}"))
}

struct Harness {
    clock: Arc<VirtualClock>,
    store: Arc<dyn Store>,
    running: RunningRuns,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    commands: mpsc::Sender<Command>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// Starts the scheduler at `start` with jobs given as `(id, yaml body)`; `prepare` may
    /// write rows first (an earlier life of the daemon).
    async fn start(
        start: DateTime<Utc>,
        jobs: &[(&str, &str)],
        prepare: Vec<NewRun>,
        options: SchedulerOptions,
    ) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite:{}", dir.path().join("state.db").display());
        let store = soarjobd_store::open(&url).await.expect("store");
        for run in prepare {
            let id = store
                .claim_runs(std::slice::from_ref(&run))
                .await
                .expect("claim")[0]
                .expect("new");
            let finish = RunFinish {
                status: RunStatus::Succeeded,
                finished_at: run.started_at,
                message: None,
                error: None,
                stats: serde_json::json!({}),
            };
            store.finish_run(id, &finish).await.expect("finish");
        }
        let registry = registry();
        let clock = VirtualClock::new(start);
        let runner =
            Runner::new(store.clone(), registry.clone()).with_clock(Arc::new(clock.clone()));
        let running = RunningRuns::default();
        let tracker = TaskTracker::new();
        let scheduler = Scheduler::new(runner, running.clone(), tracker.clone());
        let report = LoadReport {
            jobs: jobs
                .iter()
                .map(|(id, body)| job(&registry, id, body))
                .collect(),
            ..LoadReport::default()
        };
        let (commands, rx) = mpsc::channel(4);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(scheduler.run(report, options, rx, shutdown.clone()));
        let h = Harness {
            clock,
            store,
            running,
            tracker,
            shutdown,
            commands,
            task: Some(task),
            _dir: dir,
        };
        h.settle().await;
        h
    }

    /// Waits (real time) until the scheduler sleeps and every run in progress sleeps too.
    async fn settle(&self) {
        let give_up = std::time::Instant::now() + Duration::from_secs(20);
        let mut stable = 0;
        loop {
            let idle = self.clock.sleepers() == 1 + self.running.len();
            stable = if idle { stable + 1 } else { 0 };
            // Idle twice in a row, a yield apart: nothing was in between two states.
            if stable >= 3 {
                return;
            }
            assert!(
                std::time::Instant::now() < give_up,
                "the scheduler did not settle: {} sleepers, {} running",
                self.clock.sleepers(),
                self.running.len()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Moves virtual time to `to`, stopping at every wake-up on the way.
    async fn advance_to(&self, to: DateTime<Utc>) {
        loop {
            self.settle().await;
            match self.clock.next_deadline() {
                Some(next) if next <= to => {
                    self.clock.advance_to(next);
                }
                _ => break,
            }
        }
        self.clock.advance_to(to);
        self.settle().await;
    }

    async fn runs(&self, job_id: &str) -> Vec<RunRecord> {
        let mut runs = self.store.history(job_id, 1000).await.expect("history");
        runs.reverse();
        runs
    }

    /// Stops the scheduler the way the daemon does; returns after every run ended.
    async fn shutdown(&mut self) {
        self.shutdown.cancel();
        let task = self.task.take().expect("running");
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("scheduler stopped")
            .expect("no panic");
        // The loop stopped firing; runs still in progress are asked to stop.
        self.running.stop_all(StopReason::Shutdown);
        self.tracker.close();
        tokio::time::timeout(Duration::from_secs(20), self.tracker.wait())
            .await
            .expect("runs ended");
    }
}

fn ticks(runs: &[RunRecord]) -> Vec<(i64, Trigger, RunStatus)> {
    runs.iter()
        .map(|r| ((r.scheduled_at - t0()).num_seconds(), r.trigger, r.status))
        .collect()
}

#[tokio::test]
async fn interval_ticks_run_on_the_epoch_grid_at_their_instant() {
    let mut h = Harness::start(
        t0() + secs(3),
        &[("quick", "schedule: {every: 10s}")],
        vec![],
        SchedulerOptions::default(),
    )
    .await;
    h.advance_to(t0() + secs(35)).await;
    let runs = h.runs("quick").await;
    use {RunStatus::Succeeded as S, Trigger::Schedule as Sch};
    assert_eq!(ticks(&runs), [(10, Sch, S), (20, Sch, S), (30, Sch, S)]);
    for r in &runs {
        assert_eq!(
            r.started_at, r.scheduled_at,
            "started at its instant: {r:?}"
        );
        assert_eq!(r.duration_ms, Some(0));
    }
    h.shutdown().await;
}

#[tokio::test]
async fn cron_ticks_follow_the_expression() {
    let mut h = Harness::start(
        t0() + secs(1),
        &[("quick", "schedule: {cron: \"*/5 * * * *\"}")],
        vec![],
        SchedulerOptions::default(),
    )
    .await;
    h.advance_to(t0() + secs(16 * 60)).await;
    let got: Vec<i64> = ticks(&h.runs("quick").await).iter().map(|t| t.0).collect();
    assert_eq!(got, [300, 600, 900]);
    h.shutdown().await;
}

/// An earlier life of the daemon ran the tick at `t0`; the daemon starts again 2h later.
fn earlier_life() -> Vec<NewRun> {
    vec![NewRun {
        job_id: "quick".into(),
        scheduled_at: t0(),
        trigger: Trigger::Schedule,
        status: RunStatus::Running,
        started_at: t0(),
        message: None,
    }]
}

#[tokio::test]
async fn misfire_run_once_makes_one_catch_up_run_for_the_gap() {
    let mut h = Harness::start(
        t0() + secs(2 * 3600 + 5),
        &[("quick", "schedule: {every: 10m}\nmisfire: run_once")],
        earlier_life(),
        SchedulerOptions::default(),
    )
    .await;
    h.advance_to(t0() + secs(2 * 3600 + 11 * 60)).await;
    use RunStatus::Succeeded as S;
    assert_eq!(
        ticks(&h.runs("quick").await),
        [
            (0, Trigger::Schedule, S),
            // One run for the twelve missed ticks, at the latest of them, right away.
            (7200, Trigger::CatchUp, S),
            (7800, Trigger::Schedule, S),
        ]
    );
    h.shutdown().await;
}

#[tokio::test]
async fn misfire_skip_waits_for_the_next_tick() {
    let mut h = Harness::start(
        t0() + secs(2 * 3600 + 5),
        &[("quick", "schedule: {every: 10m}\nmisfire: skip")],
        earlier_life(),
        SchedulerOptions::default(),
    )
    .await;
    h.advance_to(t0() + secs(2 * 3600 + 11 * 60)).await;
    use RunStatus::Succeeded as S;
    assert_eq!(
        ticks(&h.runs("quick").await),
        [(0, Trigger::Schedule, S), (7800, Trigger::Schedule, S)]
    );
    h.shutdown().await;
}

#[tokio::test]
async fn overlap_skip_records_the_tick_as_skipped() {
    let mut h = Harness::start(
        t0() + secs(1),
        &[("hold", "schedule: {every: 10s}\ntimeout: 1h\noverlap: skip")],
        vec![],
        SchedulerOptions::default(),
    )
    .await;
    h.advance_to(t0() + secs(25)).await;
    let runs = h.runs("hold").await;
    assert_eq!(
        ticks(&runs),
        [
            (10, Trigger::Schedule, RunStatus::Running),
            (20, Trigger::Schedule, RunStatus::Skipped),
        ]
    );
    assert_eq!(
        runs[1].message.as_deref(),
        Some("previous run still running")
    );
    h.shutdown().await;
    let runs = h.runs("hold").await;
    assert_eq!(runs[0].status, RunStatus::Cancelled, "{runs:?}");
}

#[tokio::test]
async fn overlap_replace_cancels_the_running_run() {
    let mut h = Harness::start(
        t0() + secs(1),
        &[(
            "hold",
            "schedule: {every: 10s}\ntimeout: 1h\noverlap: replace",
        )],
        vec![],
        SchedulerOptions::default(),
    )
    .await;
    h.advance_to(t0() + secs(25)).await;
    let runs = h.runs("hold").await;
    assert_eq!(
        ticks(&runs),
        [
            (10, Trigger::Schedule, RunStatus::Cancelled),
            (20, Trigger::Schedule, RunStatus::Running),
        ]
    );
    assert!(
        runs[0]
            .message
            .as_deref()
            .unwrap_or("")
            .contains("replaced"),
        "{runs:?}"
    );
    assert_eq!(runs[0].finished_at, Some(t0() + secs(20)));
    h.shutdown().await;
}

#[tokio::test]
async fn overlap_allow_runs_side_by_side() {
    let mut h = Harness::start(
        t0() + secs(1),
        &[(
            "hold",
            "schedule: {every: 10s}\ntimeout: 1h\noverlap: allow",
        )],
        vec![],
        SchedulerOptions::default(),
    )
    .await;
    h.advance_to(t0() + secs(35)).await;
    assert_eq!(h.running.len(), 3);
    let statuses: Vec<RunStatus> = h.runs("hold").await.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [RunStatus::Running; 3]);
    h.shutdown().await;
}

#[tokio::test]
async fn a_run_that_outlives_its_timeout_is_timed_out() {
    let mut h = Harness::start(
        t0() + secs(1),
        &[("hold", "schedule: {every: 1h}\ntimeout: 5m")],
        vec![],
        SchedulerOptions {
            run_at_start: true,
            ..Default::default()
        },
    )
    .await;
    h.advance_to(t0() + secs(4 * 60)).await;
    assert_eq!(h.runs("hold").await[0].status, RunStatus::Running);
    h.advance_to(t0() + secs(6 * 60)).await;
    let run = &h.runs("hold").await[0];
    assert_eq!(run.status, RunStatus::TimedOut, "{run:?}");
    assert_eq!(run.trigger, Trigger::Manual);
    assert_eq!(run.finished_at, Some(t0() + secs(1 + 5 * 60)));
    h.shutdown().await;
}

#[tokio::test]
async fn a_job_that_ignores_its_timeout_is_abandoned_after_the_grace() {
    let mut h = Harness::start(
        t0() + secs(1),
        &[("stubborn", "schedule: {every: 1h}\ntimeout: 5m")],
        vec![],
        SchedulerOptions {
            run_at_start: true,
            ..Default::default()
        },
    )
    .await;
    let grace = CANCEL_GRACE.as_secs() as i64;
    h.advance_to(t0() + secs(1 + 5 * 60 + grace - 1)).await;
    assert_eq!(h.runs("stubborn").await[0].status, RunStatus::Running);
    h.advance_to(t0() + secs(1 + 5 * 60 + grace)).await;
    let run = &h.runs("stubborn").await[0];
    assert_eq!(run.status, RunStatus::TimedOut, "{run:?}");
    assert_eq!(run.finished_at, Some(t0() + secs(1 + 5 * 60 + grace)));
    assert!(h.running.is_empty());
    h.shutdown().await;
}

#[tokio::test]
async fn shutdown_releases_claims_ahead_and_cancels_runs_in_progress() {
    let mut h = Harness::start(
        t0() + secs(1),
        &[
            ("hold", "schedule: {every: 10s}\ntimeout: 1h"),
            ("quick", "schedule: {every: 1h}"),
        ],
        vec![],
        SchedulerOptions::default(),
    )
    .await;
    // Inside the claim-ahead window of both jobs' next ticks (t0+20s and t0+1h): the tick at
    // t0+20s of `hold` is claimed, not yet fired.
    h.advance_to(t0() + secs(20) - TimeDelta::milliseconds(100))
        .await;
    assert_eq!(
        h.runs("hold").await.len(),
        2,
        "the tick at 20s is claimed ahead"
    );
    h.shutdown().await;
    let runs = h.runs("hold").await;
    assert_eq!(
        ticks(&runs),
        [(10, Trigger::Schedule, RunStatus::Cancelled)],
        "the claim ahead was released"
    );
    assert!(
        runs[0]
            .message
            .as_deref()
            .unwrap_or("")
            .contains("shut down"),
        "{runs:?}"
    );
    assert!(h.runs("quick").await.is_empty());
}

#[tokio::test]
async fn a_reload_applies_the_new_schedule_before_the_old_tick() {
    let mut h = Harness::start(
        t0() + secs(1),
        &[("quick", "schedule: {every: 1h}")],
        vec![],
        SchedulerOptions::default(),
    )
    .await;
    let registry = registry();
    let report = LoadReport {
        jobs: vec![job(&registry, "quick", "schedule: {every: 10s}")],
        ..LoadReport::default()
    };
    h.commands
        .send(Command::Reload(report))
        .await
        .expect("send");
    h.advance_to(t0() + secs(25)).await;
    let got: Vec<i64> = ticks(&h.runs("quick").await).iter().map(|t| t.0).collect();
    assert_eq!(got, [10, 20]);
    h.shutdown().await;
}

/// Overlap with another process's run (a `run-once`; on PostgreSQL another replica) is
/// decided when the tick fires, not when it is claimed 250 ms ahead: a run that ends between
/// the claim and the tick does not cost the tick (issue 22: three replicas lost 159 of 400
/// ticks that one node ran), and one still going at the tick makes it `skipped`, naming it.
#[tokio::test]
async fn overlap_with_another_process_is_decided_when_the_tick_fires() {
    let mut h = Harness::start(
        t0() + secs(1),
        &[("quick", "schedule: {every: 10s}\noverlap: skip")],
        vec![],
        SchedulerOptions::default(),
    )
    .await;
    let url = format!("sqlite:{}", h._dir.path().join("state.db").display());
    let other = soarjobd_store::open(&url)
        .await
        .expect("a second process's store");
    let manual = |at: DateTime<Utc>| NewRun {
        job_id: "quick".into(),
        scheduled_at: at,
        trigger: Trigger::Manual,
        status: RunStatus::Running,
        started_at: at,
        message: None,
    };
    let done = |at: DateTime<Utc>| RunFinish {
        status: RunStatus::Succeeded,
        finished_at: at,
        message: None,
        error: None,
        stats: serde_json::json!({}),
    };
    // The other process's run holds the job when tick 10 is claimed (at 9.75 s)...
    let first = other.claim_runs(&[manual(t0() + secs(5))]).await.unwrap()[0].unwrap();
    h.advance_to(t0() + TimeDelta::milliseconds(9_900)).await;
    let claimed = h.runs("quick").await;
    assert_eq!(
        ticks(&claimed)[1..],
        [(10, Trigger::Schedule, RunStatus::Running)],
        "claimed ahead, not skipped at claim: {claimed:?}"
    );
    // ...and ends before the tick: the tick runs.
    other
        .finish_run(first, &done(t0() + TimeDelta::milliseconds(9_950)))
        .await
        .unwrap();
    h.advance_to(t0() + secs(15)).await;
    // A run of the other process still going at tick 20: that tick is skipped.
    let second = other.claim_runs(&[manual(t0() + secs(16))]).await.unwrap()[0].unwrap();
    h.advance_to(t0() + secs(25)).await;
    let runs: Vec<RunRecord> = h
        .runs("quick")
        .await
        .into_iter()
        .filter(|r| r.trigger != Trigger::Manual)
        .collect();
    assert_eq!(
        ticks(&runs),
        [
            (10, Trigger::Schedule, RunStatus::Succeeded),
            (20, Trigger::Schedule, RunStatus::Skipped),
        ]
    );
    let why = runs[1].message.as_deref().unwrap_or("");
    assert!(
        why.contains(&format!(
            "another process is running this job: run {second} (manual"
        )),
        "{why}"
    );
    h.shutdown().await;
    other.close().await;
}

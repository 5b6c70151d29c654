//! Store faults: a full disk (a real tmpfs, and a size-limited SQLite file), a store that fails
//! N times and then recovers. The scheduler must stop claiming while the store fails, never run
//! a tick twice, and resume on its own (saying so in the log) when the store works again.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use soarjobd_core::store::ops::{
    AlertEpisode, AlertRule, EndedPause, JobPause, OpsStore, PauseOutcome, RunLogLine,
};
use soarjobd_core::store::{
    Claim, JobStateStore, NewRun, RunFinish, RunProcess, RunRecord, RunStatus, RunStore, SeenEntry,
    SeenState, Store, StoreError, StoreResult, Trigger,
};
use soarjobd_engine::Runner;
use soarjobd_engine::{RunningRuns, Scheduler, SchedulerOptions};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::support::*;

/// A tmpfs mounted for one test, unmounted on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "4m") at `path`. The fault suite runs as root (CI runs
    /// as root on this project's machines); a machine where mounting is refused fails the test
    /// loudly instead of skipping it, so the disk-full path is never silently untested.
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .output()
            .expect("the `mount` command must exist for the disk-full fault test");
        assert!(
            out.status.success(),
            "cannot mount a tmpfs at {} (this fault test needs root, as CI has): {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            path: path.to_path_buf(),
        }
    }

    /// Writes zeros to `fill` until the filesystem is full.
    fn fill(&self) -> PathBuf {
        let fill = self.path.join("fill");
        let mut f = std::fs::File::create(&fill).unwrap();
        let block = vec![0u8; 4096];
        loop {
            match f.write_all(&block) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        let _ = f.sync_all();
        fill
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy, so a file the daemon still holds open cannot keep the mount busy.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// The reproduction: the database on a small tmpfs, filled for a few seconds, then
/// freed. Before the fix a write transaction whose COMMIT failed went back to the pool still
/// open, and every later claim failed with "attempted to call begin_with at non-zero
/// transaction depth" for as long as the process lived.
#[tokio::test]
async fn a_full_disk_stops_claims_and_scheduling_resumes_when_space_returns() {
    let mut app = TestApp::new();
    let fs = Tmpfs::mount(&app.path("db"), "4m");
    app.settings.database_url = format!("sqlite:{}", fs.path.join("state.db").display());
    app.write_job("tick", &sleep_job("Tick", "{every: 1s}", 0, ""));
    // Runs of `long` are in progress when the disk fills, and end while it is full.
    app.write_job(
        "long",
        &sleep_job("Long", "{every: 1s}", 1_500, "overlap: allow\n"),
    );
    let (logs, _g) = capture_logs();
    let d = app.start().await;
    let store = d.store().clone();
    assert!(
        eventually(Duration::from_secs(10), || async {
            count(&runs(&store, "tick").await, RunStatus::Succeeded) >= 2
        })
        .await,
        "the job never ran before the fault"
    );

    let fill = fs.fill();
    assert!(
        eventually(Duration::from_secs(15), || async {
            logs.text().contains("database or disk is full")
        })
        .await,
        "filling the disk caused no store error: {}",
        logs.text()
    );
    // Stay full for a few ticks: every claim in this window fails.
    tokio::time::sleep(Duration::from_secs(3)).await;
    std::fs::remove_file(&fill).unwrap();
    let freed = Utc::now();

    assert!(
        eventually(Duration::from_secs(20), || async {
            runs(&store, "tick")
                .await
                .iter()
                .any(|r| r.status == RunStatus::Succeeded && r.started_at > freed)
        })
        .await,
        "scheduling did not resume after the disk was freed: {}",
        logs.text()
    );
    let text = logs.text();
    assert!(
        !text.contains("non-zero transaction depth"),
        "a connection went back to the pool with an open transaction: {text}"
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            logs.text().contains("\"message\":\"store recovered\"")
        })
        .await,
        "no recovery was logged: {}",
        logs.text()
    );
    // A run whose end could not be written while the disk was full is recorded once the store
    // works again: it does not stay `running` (and block `overlap: skip` across processes)
    // until the next start.
    let filled_until = freed - chrono::Duration::seconds(2);
    assert!(
        eventually(Duration::from_secs(10), || async {
            !runs(&store, "long")
                .await
                .iter()
                .any(|r| r.status == RunStatus::Running && r.started_at < filled_until)
        })
        .await,
        "a run that ended during the outage is still `running`: {:?}",
        runs(&store, "long").await
    );
    assert!(
        logs.text()
            .contains("run end recorded after the store recovered"),
        "no run ended during the outage, the test proves nothing: {}",
        logs.text()
    );
    // The failure is logged once at error level when it starts, not once per tick.
    let failing = text.matches("\"message\":\"store failing\"").count();
    assert_eq!(failing, 1, "{text}");
    d.shutdown().await;

    // No tick ran twice and nothing is left running.
    let store = app.store().await;
    let all = runs(&store, "tick").await;
    assert_eq!(count(&all, RunStatus::Running), 0, "{all:?}");
    let long = runs(&store, "long").await;
    assert_eq!(count(&long, RunStatus::Running), 0, "{long:?}");
    let mut ticks: Vec<_> = all
        .iter()
        .filter(|r| r.status != RunStatus::Skipped)
        .map(|r| r.scheduled_at)
        .collect();
    let n = ticks.len();
    ticks.sort();
    ticks.dedup();
    assert_eq!(ticks.len(), n, "a tick ran twice: {all:?}");
    drop(fs);
}

/// A store that fails every claim while `failing` is set, and otherwise is the real SQLite store.
struct FlakyStore {
    inner: std::sync::Arc<dyn Store>,
    failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
    failures: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl FlakyStore {
    fn check(&self) -> StoreResult<()> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            self.failures
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err(StoreError::Db(Box::new(sqlx::Error::PoolTimedOut)))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl RunStore for FlakyStore {
    async fn claim_runs(&self, runs: &[NewRun]) -> StoreResult<Vec<Option<i64>>> {
        self.check()?;
        self.inner.claim_runs(runs).await
    }
    async fn claim_runs_exclusive(
        &self,
        runs: &[NewRun],
        exclusive: &[bool],
    ) -> StoreResult<Vec<Claim>> {
        self.check()?;
        self.inner.claim_runs_exclusive(runs, exclusive).await
    }
    async fn mark_started(
        &self,
        runs: &[(i64, Option<DateTime<Utc>>)],
    ) -> soarjobd_core::store::StartCheck {
        self.inner.mark_started(runs).await
    }
    async fn finish_run(&self, run_id: i64, finish: &RunFinish) -> StoreResult<bool> {
        self.inner.finish_run(run_id, finish).await
    }
    async fn unclaim(&self, run_id: i64) -> StoreResult<bool> {
        self.inner.unclaim(run_id).await
    }
    async fn interrupt_running(&self, now: DateTime<Utc>) -> StoreResult<Vec<RunRecord>> {
        self.inner.interrupt_running(now).await
    }
    async fn last_scheduled_at(&self, job_id: &str) -> StoreResult<Option<DateTime<Utc>>> {
        self.inner.last_scheduled_at(job_id).await
    }
    async fn run(&self, run_id: i64) -> StoreResult<Option<RunRecord>> {
        self.inner.run(run_id).await
    }
    async fn history(&self, job_id: &str, limit: u32) -> StoreResult<Vec<RunRecord>> {
        self.inner.history(job_id, limit).await
    }
    async fn last_runs(&self) -> StoreResult<Vec<RunRecord>> {
        self.inner.last_runs().await
    }
    async fn recent_runs(
        &self,
        job_ids: &[String],
        per_job: u32,
    ) -> StoreResult<Vec<soarjobd_core::store::RunMark>> {
        self.inner.recent_runs(job_ids, per_job).await
    }
    async fn prune(&self, keep_runs: u32, older_than: DateTime<Utc>) -> StoreResult<u64> {
        self.inner.prune(keep_runs, older_than).await
    }
    async fn record_run_process(&self, process: &RunProcess) -> StoreResult<()> {
        self.inner.record_run_process(process).await
    }
    async fn run_processes(&self) -> StoreResult<Vec<RunProcess>> {
        self.inner.run_processes().await
    }
    async fn forget_run_process(&self, run_id: i64) -> StoreResult<bool> {
        self.inner.forget_run_process(run_id).await
    }
    async fn close(&self) {
        self.inner.close().await
    }
}

#[async_trait]
impl JobStateStore for FlakyStore {
    async fn get_timestamp(&self, job_id: &str, key: &str) -> StoreResult<Option<i64>> {
        self.inner.get_timestamp(job_id, key).await
    }
    async fn set_timestamp(&self, job_id: &str, key: &str, unix_ms: i64) -> StoreResult<()> {
        self.inner.set_timestamp(job_id, key, unix_ms).await
    }
    async fn all_timestamps(&self) -> StoreResult<Vec<(String, String, i64)>> {
        self.inner.all_timestamps().await
    }
    async fn context_get(&self, job_id: &str, key: &str) -> StoreResult<Option<serde_json::Value>> {
        self.inner.context_get(job_id, key).await
    }
    async fn context_set(
        &self,
        job_id: &str,
        key: &str,
        value: &serde_json::Value,
    ) -> StoreResult<()> {
        self.inner.context_set(job_id, key, value).await
    }
    async fn context_delete(&self, job_id: &str, key: &str) -> StoreResult<bool> {
        self.inner.context_delete(job_id, key).await
    }
    async fn context_all(
        &self,
        job_id: &str,
    ) -> StoreResult<serde_json::Map<String, serde_json::Value>> {
        self.inner.context_all(job_id).await
    }
    async fn seen_get(
        &self,
        job_id: &str,
        scope: &str,
        item: &str,
    ) -> StoreResult<Option<SeenEntry>> {
        self.inner.seen_get(job_id, scope, item).await
    }
    async fn seen_mark(
        &self,
        job_id: &str,
        scope: &str,
        item: &str,
        state: SeenState,
        run_id: Option<i64>,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.inner
            .seen_mark(job_id, scope, item, state, run_id, now)
            .await
    }
    async fn seen_list(
        &self,
        job_id: &str,
        scope: &str,
        state: SeenState,
    ) -> StoreResult<Vec<SeenEntry>> {
        self.inner.seen_list(job_id, scope, state).await
    }
    async fn seen_remove(&self, job_id: &str, scope: &str, item: &str) -> StoreResult<bool> {
        self.inner.seen_remove(job_id, scope, item).await
    }
}

/// A store that fails N claims and then works: the scheduler logs the failure once, the
/// recovery once, counts the lost ticks, makes the `misfire: run_once` catch-up for them, and
/// runs on schedule again. Driven through the scheduler itself, with the real SQLite store
/// behind the wrapper.
#[tokio::test]
async fn the_scheduler_recovers_by_itself_when_a_failing_store_works_again() {
    let app = TestApp::new();
    app.write_job("flaky", &sleep_job("Flaky", "{every: 1s}", 0, ""));
    let inner = app.store().await;
    let failing = Arc::new(AtomicBool::new(true));
    let failures = Arc::new(AtomicU64::new(0));
    let store: Arc<dyn Store> = Arc::new(FlakyStore {
        inner: inner.clone(),
        failing: failing.clone(),
        failures: failures.clone(),
    });
    let mut registry = app.app().registry().as_ref().clone();
    registry.register(Sleep::default());
    let registry = Arc::new(registry);
    let report = soarjobd_core::definition::load_dir(
        app.jobs_dir(),
        registry.as_ref(),
        soarjobd_containment::open_nonblocking,
    );
    assert_eq!(report.jobs.len(), 1, "{:?}", report.errors);
    let runner = Runner::new(store.clone(), registry);
    let tracker = TaskTracker::new();
    let scheduler = Scheduler::new(runner, RunningRuns::default(), tracker.clone());
    let shutdown = CancellationToken::new();
    let (_tx, rx) = tokio::sync::mpsc::channel(1);
    let (logs, _g) = capture_logs();
    let task =
        tokio::spawn(scheduler.run(report, SchedulerOptions::default(), rx, shutdown.clone()));

    // Three failed claims (three ticks lost), then the store works again.
    assert!(
        eventually(Duration::from_secs(15), || async {
            failures.load(Ordering::SeqCst) >= 3
        })
        .await
    );
    failing.store(false, Ordering::SeqCst);
    let back = Utc::now();
    assert!(
        eventually(Duration::from_secs(15), || async {
            let runs = runs(&inner, "flaky").await;
            runs.iter()
                .filter(|r| r.status == RunStatus::Succeeded && r.trigger == Trigger::Schedule)
                .any(|r| r.started_at > back)
        })
        .await,
        "no scheduled run after the store recovered: {}",
        logs.text()
    );
    shutdown.cancel();
    task.await.unwrap();
    tracker.close();
    tracker.wait().await;

    let text = logs.text();
    assert_eq!(
        text.matches("\"message\":\"store failing\"").count(),
        1,
        "{text}"
    );
    assert_eq!(
        text.matches("\"message\":\"store recovered\"").count(),
        1,
        "{text}"
    );
    assert!(
        text.contains("\"reason\":\"the state store was failing\""),
        "lost ticks are reported: {text}"
    );
    // `misfire: run_once` (the default): one catch-up run for the lost ticks, at the latest
    // lost tick, and no tick twice.
    let all = runs(&inner, "flaky").await;
    assert_eq!(
        all.iter().filter(|r| r.trigger == Trigger::CatchUp).count(),
        1,
        "{all:?}"
    );
    let mut ticks: Vec<_> = all.iter().map(|r| r.scheduled_at).collect();
    let n = ticks.len();
    ticks.sort();
    ticks.dedup();
    assert_eq!(ticks.len(), n, "a tick was claimed twice: {all:?}");
    inner.close().await;
}

/// The disk-full stall without root, with the real binary: the daemon's file-size limit
/// (`RLIMIT_FSIZE`, lowered from outside with `prlimit`) stops the WAL from growing, so
/// COMMIT fails (EFBIG: SQLite's "disk I/O error") and SQLite rolls the transaction back by
/// itself, exactly as on a full disk; raising the limit again is the disk being freed.
#[tokio::test]
async fn a_file_size_limit_on_the_real_daemon_stalls_nothing_once_lifted() {
    use std::os::unix::process::CommandExt;
    let app = TestApp::new();
    app.write_job(
        "tick",
        "name: Tick\njob: exec\nschedule: {every: 1s}\ncommand: [/bin/true]\n",
    );
    let log_path = app.path("daemon.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_soarjobd"));
    cmd.args(["run", "--log-format", "json"])
        .current_dir(app.dir.path())
        .env_remove("RUST_LOG")
        .env("SOARJOBD__JOBS_DIR", app.jobs_dir())
        .env("SOARJOBD__DATABASE_URL", &app.settings.database_url)
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    // SAFETY: only async-signal-safe calls between fork and exec. An ignored SIGXFSZ survives
    // exec, so a write beyond the limit fails with EFBIG instead of killing the daemon.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let set_limit = |soft: libc::rlim_t| {
        let limit = libc::rlimit {
            rlim_cur: soft,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: prlimit on our own child with a valid struct.
        let r = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &limit, std::ptr::null_mut()) };
        assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
    };
    let text = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let store = app.store().await;
    assert!(
        eventually(Duration::from_secs(15), || async {
            count(&runs(&store, "tick").await, RunStatus::Succeeded) >= 2
        })
        .await,
        "{}",
        text()
    );

    let wal = PathBuf::from(format!("{}-wal", app.path("state.db").display()));
    let size = std::fs::metadata(&wal).unwrap().len();
    set_limit(size as libc::rlim_t);
    assert!(
        eventually(Duration::from_secs(15), || async {
            text().contains("disk I/O error")
        })
        .await,
        "the limit caused no store error: {}",
        text()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    set_limit(libc::RLIM_INFINITY);
    let freed = Utc::now();
    assert!(
        eventually(Duration::from_secs(20), || async {
            runs(&store, "tick")
                .await
                .iter()
                .any(|r| r.status == RunStatus::Succeeded && r.started_at > freed)
        })
        .await,
        "scheduling did not resume after the limit was lifted: {}",
        text()
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            text().contains("\"message\":\"store recovered\"")
        })
        .await,
        "{}",
        text()
    );
    assert!(!text().contains("non-zero transaction depth"), "{}", text());
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon did not stop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0), "{}", text());
    assert_eq!(count(&runs(&store, "tick").await, RunStatus::Running), 0);
}

/// Pauses, run logs and alert episodes go straight to the real store (only claims fail).
#[async_trait]
impl OpsStore for FlakyStore {
    async fn pause_job(
        &self,
        job_id: &str,
        reason: Option<&str>,
        actor: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<PauseOutcome> {
        self.inner.pause_job(job_id, reason, actor, at).await
    }
    async fn resume_job(
        &self,
        job_id: &str,
        catch_up: bool,
        actor: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<EndedPause>> {
        self.inner.resume_job(job_id, catch_up, actor, at).await
    }
    async fn pauses(&self) -> StoreResult<Vec<JobPause>> {
        self.inner.pauses().await
    }
    async fn last_resume(&self, job_id: &str) -> StoreResult<Option<EndedPause>> {
        self.inner.last_resume(job_id).await
    }
    async fn take_catch_ups(&self) -> StoreResult<Vec<EndedPause>> {
        self.inner.take_catch_ups().await
    }
    async fn append_run_logs(&self, lines: &[RunLogLine]) -> StoreResult<()> {
        self.inner.append_run_logs(lines).await
    }
    async fn run_logs(
        &self,
        run_id: i64,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<RunLogLine>> {
        self.inner.run_logs(run_id, after_seq, limit).await
    }
    async fn open_alert(
        &self,
        rule: AlertRule,
        subject: &str,
        detail: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<AlertEpisode>> {
        self.inner.open_alert(rule, subject, detail, at).await
    }
    async fn resolve_alert(
        &self,
        rule: AlertRule,
        subject: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<AlertEpisode>> {
        self.inner.resolve_alert(rule, subject, at).await
    }
    async fn open_alerts(&self) -> StoreResult<Vec<AlertEpisode>> {
        self.inner.open_alerts().await
    }
    async fn alert_history(&self, subject: &str, limit: u32) -> StoreResult<Vec<AlertEpisode>> {
        self.inner.alert_history(subject, limit).await
    }
    async fn last_successes(&self) -> StoreResult<Vec<(String, DateTime<Utc>)>> {
        self.inner.last_successes().await
    }
}

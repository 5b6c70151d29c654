//! One run's lifecycle: context, timeout, cancellation, panic isolation, outcome, record.
//!
//! The run row was claimed (inserted as `running`) before the runner is called; the runner is
//! the only code that finishes it. Invariant: every claimed row is finished exactly once by
//! this process, or, if the process dies first, marked `interrupted` by the next start.
//!
//! Each run is its own spawned task (the scheduler spawns it), and the job's future is polled
//! inside `catch_unwind`: a panic becomes a `failed` run with the panic message instead of
//! unwinding through the scheduler, and a job that ignores its cancellation token is dropped
//! (abandoned at its next await point) after a grace period.
//!
//! Before a run's message, error and stats are stored or logged, the run's secrets (password
//! parameters, platform credentials) are redacted from them (see [`crate::redact`]); the same
//! redactor is handed to the job (`JobContext::redactor`) for what it logs itself.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use secrecy::ExposeSecret;

use crate::clock::{Clock, RealClock};
use crate::definition::Overlap;
use crate::definition::params::ParamValue;
use crate::definition::{JobDefinition, Parameters};
use crate::store::{
    Claim, JobStateStore, NewRun, RunFinish, RunProcessLog, RunStatus, RunStore, Store,
    StoreResult, Trigger,
};
use soarjobd_core::Redactor;
use soarjobd_core::error_chain;
use soarjobd_core::{JobContext, JobContextParts, JobError, OutcomeStatus, Registry, Stats};
use soarjobd_core::{NoObserver, Observer};

/// How long a job gets to return after its token fired, before it is abandoned. Longer
/// than `exec`'s SIGTERM-to-SIGKILL grace, so a script's process group is always reaped by the
/// job itself.
pub const CANCEL_GRACE: Duration = Duration::from_secs(8);

/// Why a run is being asked to stop; decides the status it ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `overlap: replace` started a newer run.
    Replaced,
    /// The daemon is shutting down and the grace period ran out.
    Shutdown,
    /// An operator cancelled the run (the admin API).
    Operator,
    /// A second SIGTERM/SIGINT: the daemon exits at once, its runs' processes killed.
    ForcedExit,
}

/// A handle to stop a running run.
#[derive(Clone)]
pub struct RunControl {
    token: CancellationToken,
    reason: Arc<std::sync::Mutex<Option<StopReason>>>,
}

impl RunControl {
    pub fn new() -> RunControl {
        RunControl {
            token: CancellationToken::new(),
            reason: Arc::new(std::sync::Mutex::new(None)),
        }
    }

    /// Asks the run to stop; the first reason given wins.
    pub fn stop(&self, reason: StopReason) {
        let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        r.get_or_insert(reason);
        self.token.cancel();
    }

    fn cause(&self) -> StopCause {
        match *self.reason.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(StopReason::Replaced) => StopCause::Replaced,
            Some(StopReason::Operator) => StopCause::Operator,
            Some(StopReason::ForcedExit) => StopCause::ForcedExit,
            _ => StopCause::Shutdown,
        }
    }
}

impl Default for RunControl {
    fn default() -> Self {
        Self::new()
    }
}

/// A claimed run, ready to execute.
pub struct RunRequest {
    pub definition: Arc<JobDefinition>,
    /// Parameters overriding the definition's (`run-once --param`); `None` uses the
    /// definition's own, without copying them for every run.
    pub params: Option<Parameters>,
    pub run_id: i64,
    pub scheduled_at: DateTime<Utc>,
    pub trigger: Trigger,
    pub control: RunControl,
}

/// One run to claim with [`Runner::claim`].
#[derive(Debug, Clone, Copy)]
pub struct TickClaim<'a> {
    pub definition: &'a JobDefinition,
    /// The nominal tick instant (before jitter); for a manual run, the request time.
    pub scheduled_at: DateTime<Utc>,
    pub trigger: Trigger,
    /// The start the row records (the fire instant for a tick claimed ahead of it).
    pub started_at: DateTime<Utc>,
}

/// The recorded result of a run.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub run_id: i64,
    pub status: RunStatus,
    pub message: Option<String>,
    pub error: Option<String>,
    pub stats: Value,
    pub duration: Duration,
}

/// Executes runs. Cheap to clone.
#[derive(Clone)]
pub struct Runner {
    /// Run rows: claimed, started, finished and released only through this runner.
    runs: Arc<dyn RunStore>,
    /// What jobs get in their `JobContext`: the same backend, seen through the narrow trait.
    state: Arc<dyn JobStateStore>,
    registry: Arc<Registry>,
    /// Each job's redactor, built once per loaded definition (compiling it for every run
    /// would cost more than the run's own bookkeeping). The `Weak` both identifies the
    /// definition (a reload makes a new `Arc`) and keeps its address from being reused.
    redactors: Arc<std::sync::Mutex<RedactorCache>>,
    /// Run starts, ends, timeouts and grace periods; the scheduler reads the same clock.
    clock: Arc<dyn Clock>,
    /// Run starts and ends are reported here (metrics); the scheduler reports to it too.
    observer: Arc<dyn Observer>,
    /// Where each run's log lines are kept, and the mode of jobs that set none (`None`: only
    /// the process log has them).
    run_logs: Option<(crate::ops::RunLogs, crate::definition::RunLogMode)>,
    /// Told of every recorded run end (the alert evaluator).
    ended: Option<Arc<crate::ops::alerts::RunEnded>>,
    /// How job processes start (`exec:`), handed to every run.
    exec: Arc<soarjobd_core::ExecPolicy>,
}

/// Job id -> (the definition the redactor was built for, the redactor).
type RedactorCache = HashMap<String, (Weak<JobDefinition>, Redactor)>;

impl Runner {
    pub fn new(store: Arc<dyn Store>, registry: Arc<Registry>) -> Runner {
        Runner {
            runs: store.clone(),
            state: store,
            registry,
            redactors: Arc::default(),
            clock: Arc::new(RealClock::new()),
            observer: Arc::new(NoObserver),
            run_logs: None,
            ended: None,
            exec: Arc::default(),
        }
    }

    /// Runs start their processes under `policy` (`exec.user`, `exec.max_concurrent`).
    pub fn with_exec_policy(mut self, policy: Arc<soarjobd_core::ExecPolicy>) -> Runner {
        self.exec = policy;
        self
    }

    /// Tells `ended` of every run end once it is recorded (see [`crate::ops::alerts`]).
    pub fn with_run_ended(mut self, ended: Arc<crate::ops::alerts::RunEnded>) -> Runner {
        self.ended = Some(ended);
        self
    }

    /// The same runner reporting runs to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Runner {
        self.observer = observer;
        self
    }

    /// Where runs are reported.
    pub fn observer(&self) -> &Arc<dyn Observer> {
        &self.observer
    }

    /// Keeps runs' log lines with the run (see [`crate::ops::runlog`]), as each job's
    /// `run_logs` says, or as `default` says for jobs that do not.
    pub fn with_run_logs(
        mut self,
        logs: crate::ops::RunLogs,
        default: crate::definition::RunLogMode,
    ) -> Runner {
        self.run_logs = Some((logs, default));
        self
    }

    /// The same runner on another clock (tests: a `VirtualClock`).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Runner {
        self.clock = clock;
        self
    }

    /// The clock runs are timed by; the scheduler uses it too.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Claims ticks and manual runs in one transaction: the one claim path of the scheduler
    /// and of `run-once`. A run whose job's overlap is not `allow` is claimed exclusively,
    /// atomically with the insert: a manual run is refused ([`Claim::Busy`]) while another
    /// live process (a daemon, a replica, a `run-once`) has a `running` row of the job; a tick
    /// is claimed with those holders ([`Claim::Contended`]) and the scheduler decides when it
    /// fires, as for this process's own runs, because a run may end between claim and fire.
    pub async fn claim(&self, ticks: &[TickClaim<'_>]) -> StoreResult<Vec<Claim>> {
        let runs: Vec<NewRun> = ticks
            .iter()
            .map(|t| NewRun {
                job_id: t.definition.id.clone(),
                scheduled_at: t.scheduled_at,
                trigger: t.trigger,
                status: RunStatus::Running,
                started_at: t.started_at,
                message: None,
            })
            .collect();
        let exclusive: Vec<bool> = ticks
            .iter()
            .map(|t| t.definition.overlap != Overlap::Allow)
            .collect();
        let claims = self.runs.claim_runs_exclusive(&runs, &exclusive).await?;
        // `replace` and a manual run: the manual run cannot start while the other process's
        // run holds the job, but that run is asked to stop (on PostgreSQL its replica sees the
        // request within one heartbeat). Ticks ask at fire time (`Scheduler::fire_pending`).
        for (t, c) in ticks.iter().zip(&claims) {
            if let (Overlap::Replace, Claim::Busy { holder, .. }) = (t.definition.overlap, c) {
                match self.runs.request_cancel(holder.run_id).await {
                    Ok(true) => tracing::info!(
                        job_id = %t.definition.id, holder = %holder,
                        "asked the other replica to cancel its run (overlap: replace)"
                    ),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(
                        job_id = %t.definition.id, error = %error_chain(&e),
                        "cannot ask the other replica to cancel its run"
                    ),
                }
            }
        }
        Ok(claims)
    }

    /// The first of these runs of other processes still running under a live owner: the
    /// fire-time overlap check of a [`Claim::Contended`] tick.
    pub async fn holding(&self, run_ids: &[i64]) -> StoreResult<Option<crate::store::RunHolder>> {
        self.runs.holding(run_ids).await
    }

    /// Announces that this process's scheduler runs (see [`RunStore::scheduling`]).
    pub async fn scheduling(&self) -> StoreResult<()> {
        self.runs.scheduling().await
    }

    /// Announces that this process's scheduler stopped (see [`RunStore::stopped_scheduling`]).
    pub async fn stopped_scheduling(&self) -> StoreResult<()> {
        self.runs.stopped_scheduling().await
    }

    /// Whether this process schedules the job's ticks (see [`RunStore::owns`]).
    pub fn owns(&self, job_id: &str) -> bool {
        self.runs.owns(job_id)
    }

    /// Changes whenever [`Runner::owns`] may answer differently.
    pub fn membership_epoch(&self) -> u64 {
        self.runs.membership_epoch()
    }

    /// Asks the process running `run_id` to cancel it (`overlap: replace` across replicas);
    /// false when the backend has no such channel (single node) or the run ended.
    pub async fn request_cancel(&self, run_id: i64) -> StoreResult<bool> {
        self.runs.request_cancel(run_id).await
    }

    /// Claimed runs about to start: which must not (fencing, see [`RunStore::mark_started`]),
    /// and the real start of those that fire noticeably after the start their claim recorded
    /// (see `scheduler::START_SLACK`).
    pub async fn mark_started(
        &self,
        runs: &[(i64, Option<DateTime<Utc>>)],
    ) -> crate::store::StartCheck {
        self.runs.mark_started(runs).await
    }

    /// Releases a claim that never started (shutdown before its instant), so the tick counts
    /// as missed, not taken, at the next start. Returns whether a row was deleted.
    pub async fn release(&self, run_id: i64) -> StoreResult<bool> {
        self.runs.unclaim(run_id).await
    }

    /// The newest claimed schedule or catch-up tick of a job (for misfire after a restart).
    pub async fn last_scheduled_at(&self, job_id: &str) -> StoreResult<Option<DateTime<Utc>>> {
        self.runs.last_scheduled_at(job_id).await
    }

    /// The rows of the jobs' newest claimed schedule or catch-up ticks (see
    /// [`RunStore::last_ticks`]).
    pub async fn last_ticks(
        &self,
        job_ids: &[String],
    ) -> StoreResult<Vec<crate::store::RunRecord>> {
        self.runs.last_ticks(job_ids).await
    }

    /// Finishes the row of a claimed run that will not run (overlap `skip`, a job removed or
    /// disabled before its tick) with `status` and the reason. Failures are logged: the row
    /// stays `running` and the next start marks it interrupted.
    pub async fn finish_unrun(
        &self,
        job_id: &str,
        run_id: i64,
        status: RunStatus,
        why: &str,
        now: DateTime<Utc>,
    ) {
        let finish = RunFinish {
            status,
            finished_at: now,
            message: Some(why.to_string()),
            error: None,
            stats: serde_json::Value::Object(Default::default()),
        };
        if let Err(e) = self.runs.finish_run(run_id, &finish).await {
            tracing::error!(job_id = %job_id, run_id, error = %error_chain(&e), "cannot record an unrun tick");
        }
    }

    /// Runs the job to the end and records the outcome. Never panics and never returns an
    /// error: whatever happens becomes the run's status.
    pub async fn execute(&self, req: RunRequest) -> RunSummary {
        let def = req.definition.clone();
        let redactor = self.redactor(&req);
        // The run's log buffer rides on its span: every event inside it is kept with the run.
        // `off` opens no buffer; `problems` holds the lines until the run's end decides.
        let log = self.run_logs.as_ref().and_then(|(l, default)| {
            l.open(
                req.run_id,
                redactor.clone(),
                def.run_logs.unwrap_or(*default),
            )
        });
        // The span's fields are formatted only if a layer records them (the scheduled
        // instant as text was built for every run, logged or not).
        let span = crate::ops::runlog::capture_into(log.as_ref(), || {
            tracing::info_span!(
                "run",
                job_id = %def.id,
                run_id = req.run_id,
                scheduled_at = %Rfc3339(req.scheduled_at),
                trigger = req.trigger.as_str(),
            )
        });
        let started_at = self.clock.now();
        self.observer.run_started(&def.id);
        let stats = Stats::default();
        let (status, mut message, mut error) = self
            .drive(
                &req,
                started_at,
                stats.clone(),
                redactor.clone(),
                span.clone(),
            )
            .instrument(span.clone())
            .await;
        let finished_at = self.clock.now();
        let mut stats_value = stats.snapshot();
        // Whatever the job reports may quote a secret it was given (a script's stderr in the
        // message, an error body, a stats string): redact before anything is stored or logged.
        redactor.redact_opt(&mut message);
        redactor.redact_opt(&mut error);
        redactor.redact_json(&mut stats_value);
        let finish = RunFinish {
            status,
            finished_at,
            message: message.clone(),
            error: error.clone(),
            stats: stats_value.clone(),
        };
        let duration = (finished_at - started_at).to_std().unwrap_or_default();
        self.observer
            .run_finished(&def.id, status, duration, finished_at);
        // The record is written inside the run's span as an instrumented future: an entered
        // guard held across the await would leave the span entered on this worker thread
        // while it polls other tasks, and their events would be logged under this run.
        let recorded = self
            .runs
            .finish_run(req.run_id, &finish)
            .instrument(span.clone())
            .await;
        let _e = span.enter();
        if let Err(e) = recorded {
            // The run happened; only its record failed. Both backends keep the end and write
            // it when the database answers again (on PostgreSQL under the run's fencing
            // token); if this process dies first, the row ends `interrupted`.
            tracing::error!(
                error = %error_chain(&e),
                effect = "the end is kept and written when the database answers again",
                "cannot record the end of the run"
            );
        }
        let duration_ms = duration.as_millis() as u64;
        match status {
            RunStatus::Succeeded => tracing::info!(
                status = status.as_str(), duration_ms, stats = %stats_value,
                outcome = message.as_deref().unwrap_or(""), "run finished"
            ),
            RunStatus::Partial | RunStatus::Cancelled => tracing::warn!(
                status = status.as_str(), duration_ms, stats = %stats_value,
                outcome = message.as_deref().unwrap_or(""), "run finished"
            ),
            _ => tracing::error!(
                status = status.as_str(), duration_ms, stats = %stats_value,
                outcome = message.as_deref().unwrap_or(""),
                error = error.as_deref().unwrap_or(""), "run finished"
            ),
        }
        if let Some(log) = log {
            log.close(status);
        }
        if let Some(ended) = &self.ended {
            ended.ended(&def.id, status);
        }
        RunSummary {
            run_id: req.run_id,
            status,
            message,
            error,
            stats: stats_value,
            duration,
        }
    }

    /// The run's redactor: its password parameters and the platform credentials.
    fn redactor(&self, req: &RunRequest) -> Redactor {
        let build = |params: &Parameters| {
            let passwords = params.iter().filter_map(|p| match &p.value {
                ParamValue::Secret(s) => Some(s.expose_secret()),
                _ => None,
            });
            let platform = self
                .registry
                .redacted_secrets()
                .iter()
                .map(|s| s.expose_secret());
            Redactor::new(passwords.chain(platform))
        };
        if let Some(overrides) = &req.params {
            return build(overrides);
        }
        let def = &req.definition;
        let mut cache = self.redactors.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((weak, r)) = cache.get(&def.id)
            && std::ptr::eq(weak.as_ptr(), Arc::as_ptr(def))
        {
            return r.clone();
        }
        let r = build(&def.parameters);
        cache.insert(def.id.clone(), (Arc::downgrade(def), r.clone()));
        r
    }

    async fn drive(
        &self,
        req: &RunRequest,
        started_at: DateTime<Utc>,
        stats: Stats,
        redactor: Redactor,
        span: tracing::Span,
    ) -> (RunStatus, Option<String>, Option<String>) {
        let def = &req.definition;
        tracing::info!(job = %def.implementation, "run started");
        let Some(job) = self.registry.get(&def.implementation) else {
            let msg = format!("unknown job implementation `{}`", def.implementation);
            return (RunStatus::Failed, Some(msg.clone()), Some(msg));
        };
        // The job's own token: a child of the run's control token, fired on timeout too.
        let token = req.control.token.child_token();
        let mut ctx = JobContext::from_parts(JobContextParts {
            definition: def.clone(),
            params: req.params.clone(),
            run_id: req.run_id,
            scheduled_at: req.scheduled_at,
            trigger: req.trigger,
            started_at,
            // On a backend with run leases (PostgreSQL) the job's writes are fenced by this
            // run's lease: a replica that lost the run cannot write over the new owner's state.
            store: self
                .state
                .for_run(req.run_id)
                .unwrap_or_else(|| self.state.clone()),
            processes: RunProcessLog::new(self.runs.clone(), req.run_id),
            cancel: token.clone(),
            stats,
            span: span.clone(),
            redactor,
            exec: self.exec.clone(),
        });
        // The job's future is polled right here, inside the run's own task (the scheduler
        // spawned it), rather than in a second spawned task: a thousand runs due at once then
        // cost a thousand spawns, not two thousand. `catch_unwind` turns a panic into a failed
        // run, and dropping the future is the abort.
        let task = std::panic::AssertUnwindSafe(
            async move {
                let r = job.run(&mut ctx).await;
                drop(ctx);
                r
            }
            .instrument(span),
        )
        .catch_unwind();
        tokio::pin!(task);

        // Phase 1: wait for the job, its timeout, or a stop request.
        let timed_out = tokio::select! {
            // The job may notice a stop request and return before this select sees the
            // token: its result is still a stop, with the reason the control recorded.
            res = &mut task => {
                let stopped = req.control.token.is_cancelled().then(|| req.control.cause());
                return map_result(res, stopped);
            }
            _ = self.clock.sleep(def.timeout) => true,
            _ = req.control.token.cancelled() => false,
        };
        let why = if timed_out {
            tracing::warn!(
                timeout_s = def.timeout.as_secs(),
                "run timed out; cancelling it"
            );
            StopCause::Timeout
        } else {
            req.control.cause()
        };
        token.cancel();

        // Phase 2: the job was asked to stop; give it a grace period to return, then abort.
        let res = tokio::select! {
            res = &mut task => Some(res),
            _ = self.clock.sleep(CANCEL_GRACE) => None,
        };
        match res {
            Some(res) => map_result(res, Some(why)),
            None => {
                tracing::warn!(
                    grace_s = CANCEL_GRACE.as_secs(),
                    "the job did not stop within its grace period; it was abandoned"
                );
                let (status, msg) = why.status_and_message();
                (status, Some(msg), None)
            }
        }
    }
}

/// An instant shown as RFC 3339 when (and only when) it is formatted.
struct Rfc3339(DateTime<Utc>);

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.to_rfc3339())
    }
}

/// Why phase 1 ended without a result.
#[derive(Debug, Clone, Copy)]
enum StopCause {
    Timeout,
    Replaced,
    Shutdown,
    Operator,
    ForcedExit,
}

impl StopCause {
    fn status_and_message(self) -> (RunStatus, String) {
        match self {
            StopCause::Timeout => (RunStatus::TimedOut, "the run exceeded its timeout".into()),
            StopCause::Replaced => (
                RunStatus::Cancelled,
                "cancelled: a newer run replaced it (overlap: replace)".into(),
            ),
            StopCause::Shutdown => (
                RunStatus::Cancelled,
                "cancelled: the daemon shut down before the run finished".into(),
            ),
            StopCause::Operator => (RunStatus::Cancelled, "cancelled by an operator".into()),
            StopCause::ForcedExit => (
                RunStatus::Cancelled,
                "cancelled: a second stop signal made the daemon exit at once; the run's \
                 processes were killed"
                    .into(),
            ),
        }
    }
}

/// Maps the job task's result to a run status. `stopped` is set when the job returned after
/// being asked to stop.
fn map_result(
    res: Result<Result<soarjobd_core::Outcome, JobError>, Box<dyn std::any::Any + Send>>,
    stopped: Option<StopCause>,
) -> (RunStatus, Option<String>, Option<String>) {
    match res {
        // A forced exit killed the run's processes: a failure it reports then is that kill.
        Ok(Ok(outcome))
            if matches!(stopped, Some(StopCause::ForcedExit))
                && outcome.status == OutcomeStatus::Failed =>
        {
            let (status, msg) = StopCause::ForcedExit.status_and_message();
            (status, Some(msg), Some(outcome.message))
        }
        Ok(Ok(outcome)) => {
            let status = match outcome.status {
                OutcomeStatus::Succeeded => RunStatus::Succeeded,
                OutcomeStatus::Partial => RunStatus::Partial,
                OutcomeStatus::Failed => RunStatus::Failed,
                OutcomeStatus::TimedOut => RunStatus::TimedOut,
            };
            // A job that finished its work while being stopped still gets its real status;
            // only a job that gave up because of the stop is timed_out / cancelled.
            (status, Some(outcome.message), None)
        }
        Ok(Err(JobError::Cancelled)) => {
            let (status, msg) = stopped.unwrap_or(StopCause::Shutdown).status_and_message();
            (status, Some(msg), None)
        }
        Ok(Err(e)) => {
            if let Some(cause) = stopped {
                let (status, msg) = cause.status_and_message();
                return (status, Some(msg), Some(error_chain(&e)));
            }
            (
                RunStatus::Failed,
                Some(e.to_string()),
                Some(error_chain(&e)),
            )
        }
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string panic payload".into());
            (
                RunStatus::Failed,
                Some(format!("the job panicked: {msg}")),
                Some(format!("panic: {msg}")),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition;
    use crate::definition::JobSpec;
    use crate::store::{RunStatus, Store};
    use soarjobd_core::Registry;
    use soarjobd_core::{Job, JobContext, Outcome};

    /// A job that does nothing (these tests claim; they do not run).
    struct Noop;

    impl JobSpec for Noop {}

    #[async_trait::async_trait]
    impl Job for Noop {
        fn id(&self) -> &'static str {
            "noop"
        }

        async fn run(&self, _ctx: &mut JobContext) -> Result<Outcome, JobError> {
            Ok(Outcome::succeeded("nothing"))
        }
    }

    fn registry() -> Registry {
        let mut r = Registry::new();
        r.register(Noop);
        r
    }

    async fn runner_on(url: &str) -> (Runner, Arc<dyn Store>) {
        let store = soarjobd_store::open(url).await.expect("store");
        let runner = Runner::new(store.clone(), Arc::new(registry()));
        (runner, store)
    }

    fn def(overlap: &str) -> JobDefinition {
        let text = format!("name: Job\njob: noop\nschedule: {{every: 1m}}\noverlap: {overlap}\n");
        definition::load_str(
            std::path::Path::new("/nonexistent/job-a.yaml"),
            &text,
            &registry(),
            soarjobd_containment::open_nonblocking,
        )
        .expect("valid")
    }

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).expect("instant")
    }

    /// The one claim path: a manual run (run-once) and a scheduled tick are exclusive exactly
    /// when the job's overlap is not `allow`, against the live runs of another process.
    #[tokio::test]
    async fn claims_are_exclusive_unless_overlap_allows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite:{}", dir.path().join("s.db").display());
        let (daemon, daemon_store) = runner_on(&url).await;
        let (cli, cli_store) = runner_on(&url).await;
        let skip = def("skip");
        let claim = |d, s, trigger| TickClaim {
            definition: d,
            scheduled_at: at(s),
            trigger,
            started_at: at(s),
        };
        let manual = cli
            .claim(&[claim(&skip, 100, Trigger::Manual)])
            .await
            .expect("claim");
        let Claim::Claimed(manual) = manual[0] else {
            panic!("{manual:?}")
        };
        let got = daemon
            .claim(&[claim(&skip, 120, Trigger::Schedule)])
            .await
            .expect("claim");
        assert!(
            matches!(&got[0], Claim::Contended { holder, holders, .. }
                if holder.run_id == manual && holders == &[manual]),
            "{got:?}"
        );
        let allow = def("allow");
        let got = daemon
            .claim(&[claim(&allow, 180, Trigger::Schedule)])
            .await
            .expect("claim");
        assert!(matches!(got[0], Claim::Claimed(_)), "{got:?}");
        // The same tick again: taken.
        let again = daemon
            .claim(&[claim(&allow, 180, Trigger::Schedule)])
            .await
            .expect("claim");
        assert_eq!(again, [Claim::Taken]);
        cli_store.close().await;
        daemon_store.close().await;
    }

    /// A claimed tick that will not run is finished by the runner, once, with the reason; a
    /// claim released before its instant is gone.
    #[tokio::test]
    async fn unrun_claims_are_finished_or_released_by_the_runner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite:{}", dir.path().join("s.db").display());
        let (runner, store) = runner_on(&url).await;
        let d = def("skip");
        let claim = |s| TickClaim {
            definition: &d,
            scheduled_at: at(s),
            trigger: Trigger::Schedule,
            started_at: at(s),
        };
        let got = runner.claim(&[claim(60), claim(120)]).await.expect("claim");
        let (Claim::Claimed(a), Claim::Claimed(b)) = (&got[0], &got[1]) else {
            panic!("{got:?}")
        };
        runner
            .finish_unrun(
                "job-a",
                *a,
                RunStatus::Skipped,
                "previous run still running",
                at(61),
            )
            .await;
        // A second finish changes nothing.
        runner
            .finish_unrun("job-a", *a, RunStatus::Failed, "again", at(62))
            .await;
        let row = store.run(*a).await.expect("run").expect("row");
        assert_eq!(row.status, RunStatus::Skipped);
        assert_eq!(row.message.as_deref(), Some("previous run still running"));
        assert_eq!(row.finished_at, Some(at(61)));
        assert!(runner.release(*b).await.expect("release"));
        assert!(store.run(*b).await.expect("run").is_none());
        assert_eq!(
            runner.last_scheduled_at("job-a").await.expect("last"),
            Some(at(60))
        );
        store.close().await;
    }
}

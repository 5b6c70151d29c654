//! The operator's side of the store: paused jobs, the log lines of each run, alert episodes.
//!
//! A trait of its own ([`OpsStore`], part of [`super::Store`]) so that the run and job-state
//! halves stay as they are; the SQLite implementation is `sqlite/ops.rs`, the schema
//! `migrations/sqlite/0020_job_pauses.sql` .. `0022_alert_episodes.sql`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::StoreResult;

/// A pause in force: the job claims no ticks until it is resumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobPause {
    pub job_id: String,
    /// When the pause began.
    pub since: DateTime<Utc>,
    pub reason: Option<String>,
    /// Who paused it (`cli:<user>`, an admin token's name, ...).
    pub actor: String,
}

/// The answer to [`OpsStore::pause_job`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PauseOutcome {
    /// The job was running and is paused now.
    Paused(JobPause),
    /// The job was already paused: the earlier pause stands unchanged.
    AlreadyPaused(JobPause),
}

impl PauseOutcome {
    pub fn pause(&self) -> &JobPause {
        match self {
            PauseOutcome::Paused(p) | PauseOutcome::AlreadyPaused(p) => p,
        }
    }
}

/// A pause that ended ([`OpsStore::resume_job`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndedPause {
    pub pause: JobPause,
    pub resumed_at: DateTime<Utc>,
    pub resumed_by: String,
    /// A catch-up run for the ticks inside the pause was asked for.
    pub catch_up: bool,
}

/// The log level of a stored line.
pub type LogLevel = String;

/// One log line of a run, to store.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunLogLine {
    pub run_id: i64,
    /// 1, 2, ... in the order the run logged them; a cut leaves a gap (see the marker line).
    pub seq: i64,
    pub at: DateTime<Utc>,
    /// `ERROR`, `WARN`, `INFO`, `DEBUG`, `TRACE`.
    pub level: LogLevel,
    /// The tracing target (`soarjobd_jobs::exec`, ...).
    pub target: String,
    pub message: String,
    /// The event's other fields, as a JSON object (secrets redacted).
    pub fields: serde_json::Value,
}

/// The alert rules whose episodes are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertRule {
    FailedRunsInARow,
    NoSuccessFor,
    JobInvalid,
}

impl AlertRule {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertRule::FailedRunsInARow => "failed_runs_in_a_row",
            AlertRule::NoSuccessFor => "no_success_for",
            AlertRule::JobInvalid => "job_invalid",
        }
    }

    pub fn parse(s: &str) -> Option<AlertRule> {
        Some(match s {
            "failed_runs_in_a_row" => AlertRule::FailedRunsInARow,
            "no_success_for" => AlertRule::NoSuccessFor,
            "job_invalid" => AlertRule::JobInvalid,
            _ => return None,
        })
    }
}

/// One alert episode: a rule firing for a subject (a job id; a job file for `job_invalid`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertEpisode {
    pub id: i64,
    pub rule: AlertRule,
    pub subject: String,
    pub opened_at: DateTime<Utc>,
    /// What made it fire (redacted text for people).
    pub detail: String,
    pub resolved_at: Option<DateTime<Utc>>,
}

/// Paused jobs, run logs and alert episodes. All times are stored with millisecond precision.
#[async_trait]
pub trait OpsStore: Send + Sync + 'static {
    // --- Pause and resume. ---

    /// Pauses a job (any id: the caller checks that the job exists). Pausing a paused job
    /// changes nothing and answers [`PauseOutcome::AlreadyPaused`].
    async fn pause_job(
        &self,
        job_id: &str,
        reason: Option<&str>,
        actor: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<PauseOutcome>;

    /// Ends a job's pause; `catch_up` asks the scheduler for one catch-up run for the ticks
    /// that fell inside the pause. `None` if the job was not paused.
    async fn resume_job(
        &self,
        job_id: &str,
        catch_up: bool,
        actor: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<EndedPause>>;

    /// Every pause in force, by job id.
    async fn pauses(&self) -> StoreResult<Vec<JobPause>>;

    /// The job's last ended pause (for missed-tick counting after a restart), if any.
    async fn last_resume(&self, job_id: &str) -> StoreResult<Option<EndedPause>>;

    /// The job's ended pauses, newest first, at most `limit` (the newest 100 are kept).
    async fn pause_history(&self, job_id: &str, limit: u32) -> StoreResult<Vec<EndedPause>>;

    /// Takes the catch-up request of every ended pause that has one (each is answered once,
    /// by whichever scheduler takes it).
    async fn take_catch_ups(&self) -> StoreResult<Vec<EndedPause>>;

    // --- Run logs. ---

    /// Appends lines (of one or several runs). A line whose `(run_id, seq)` exists is
    /// ignored; a line of a run that does not exist (pruned meanwhile) is dropped.
    async fn append_run_logs(&self, lines: &[RunLogLine]) -> StoreResult<()>;

    /// A run's lines with `seq > after_seq`, in order, at most `limit`.
    async fn run_logs(
        &self,
        run_id: i64,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<RunLogLine>>;

    // --- Alert episodes. ---

    /// Opens an episode unless one of `(rule, subject)` is open; returns the new one, or
    /// `None` when one was open already.
    async fn open_alert(
        &self,
        rule: AlertRule,
        subject: &str,
        detail: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<AlertEpisode>>;

    /// Resolves the open episode of `(rule, subject)`; returns it, or `None` if none was open.
    async fn resolve_alert(
        &self,
        rule: AlertRule,
        subject: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<AlertEpisode>>;

    /// Every open episode.
    async fn open_alerts(&self) -> StoreResult<Vec<AlertEpisode>>;

    /// The episodes of `subject` (a job id), open and resolved, newest first (by when they
    /// opened, then id), at most `limit`.
    async fn alert_history(&self, subject: &str, limit: u32) -> StoreResult<Vec<AlertEpisode>>;

    /// The newest `succeeded` finish of every job that has one: `(job_id, finished_at)`.
    async fn last_successes(&self) -> StoreResult<Vec<(String, DateTime<Utc>)>>;
}

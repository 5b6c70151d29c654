//! The [`Job`] trait, the [`JobContext`] a run gets, the [`Outcome`] it returns, and the
//! [`Registry`] of implementations.
//!
//! This is TIPCommon's `Job` lifecycle, typed: parameters arrive already validated (at load
//! time), API clients are held by the job itself (handed over when it was built, see
//! [`crate::platform`]), the job performs its work and says how it went. Nothing is saved
//! implicitly, as in SecOps: a job that wants its window to move calls
//! [`JobContext::save_timestamp`]. Invariant: a job changes durable state only through its
//! context, and every context write reaches the store at once, so a crash keeps what was
//! recorded.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::definition::{Catalog, JobDefinition, JobSpec, Parameters, params::ParamError};
use crate::store::{JobStateStore, RunProcessLog, SeenEntry, SeenState, StoreError, Trigger};

/// The SecOps context key under which the last-success timestamp is stored.
pub const DEFAULT_TIMESTAMP_KEY: &str = "timestamp";

/// How a run went, as the job sees it. Exit codes follow ThreatConnect TcEx apps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeStatus {
    /// Everything worked (exit code 0).
    Succeeded,
    /// Some items failed; the others took effect (exit code 3).
    Partial,
    /// The run did not do its work (exit code 1).
    Failed,
    /// The job itself says it ran out of time (a SecOps script's `ExecutionState` 3).
    TimedOut,
}

/// What a job returns.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: OutcomeStatus,
    pub message: String,
}

impl Outcome {
    pub fn succeeded(message: impl Into<String>) -> Outcome {
        Outcome {
            status: OutcomeStatus::Succeeded,
            message: message.into(),
        }
    }
    pub fn partial(message: impl Into<String>) -> Outcome {
        Outcome {
            status: OutcomeStatus::Partial,
            message: message.into(),
        }
    }
    pub fn failed(message: impl Into<String>) -> Outcome {
        Outcome {
            status: OutcomeStatus::Failed,
            message: message.into(),
        }
    }
    pub fn timed_out(message: impl Into<String>) -> Outcome {
        Outcome {
            status: OutcomeStatus::TimedOut,
            message: message.into(),
        }
    }
}

/// A run that could not complete. The runner records it as `failed` with the full cause chain.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Param(#[from] ParamError),
    #[error("state store error")]
    Store(#[from] StoreError),
    #[error("the run was cancelled")]
    Cancelled,
    #[error("{0}")]
    Message(String),
    #[error("{message}")]
    Other {
        message: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl JobError {
    pub fn msg(message: impl Into<String>) -> JobError {
        JobError::Message(message.into())
    }

    /// Wraps an error with a sentence of context; the cause chain is kept.
    pub fn context(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> JobError {
        JobError::Other {
            message: message.into(),
            source: Box::new(source),
        }
    }
}

/// A job implementation.
#[async_trait]
pub trait Job: JobSpec + Send + Sync + 'static {
    /// The implementation id used in job files (`job: <id>`).
    fn id(&self) -> &'static str;

    /// Performs one run. Long loops should watch [`JobContext::cancelled`]: on timeout,
    /// `overlap: replace` or shutdown the token fires, and after a short grace the run's future
    /// is dropped.
    async fn run(&self, ctx: &mut JobContext) -> Result<Outcome, JobError>;
}

/// Counters a job reports; recorded in the run's history row and in `run finished`.
#[derive(Clone, Default)]
pub struct Stats {
    inner: Arc<Mutex<Map<String, Value>>>,
}

impl Stats {
    /// Adds `n` to a counter (creating it at 0).
    pub fn add(&self, name: &str, n: i64) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let cur = m.get(name).and_then(Value::as_i64).unwrap_or(0);
        m.insert(name.to_string(), Value::from(cur + n));
    }

    pub fn incr(&self, name: &str) {
        self.add(name, 1);
    }

    /// Sets a value (any JSON).
    pub fn set(&self, name: &str, v: impl Into<Value>) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        m.insert(name.to_string(), v.into());
    }

    pub fn get(&self, name: &str) -> Option<Value> {
        let m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        m.get(name).cloned()
    }

    pub fn snapshot(&self) -> Value {
        let m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Value::Object(m.clone())
    }
}

/// Everything a run may use. All methods take `&self`, so a job can share the context across
/// concurrent futures of one run.
pub struct JobContext {
    pub(crate) definition: Arc<JobDefinition>,
    /// Overrides of the definition's parameters, if any.
    pub(crate) params: Option<Parameters>,
    pub(crate) run_id: i64,
    pub(crate) scheduled_at: DateTime<Utc>,
    pub(crate) trigger: Trigger,
    pub(crate) started_at: DateTime<Utc>,
    /// Timestamps, context and seen-sets: the only durable state a job may change. Run rows
    /// are out of its reach (only the runner finishes them).
    pub(crate) store: Arc<dyn JobStateStore>,
    /// The process record of this run (process containment of `exec`).
    pub(crate) processes: RunProcessLog,
    pub(crate) cancel: CancellationToken,
    pub(crate) stats: Stats,
    pub(crate) span: tracing::Span,
    /// Redacts the run's secrets (its password parameters and the platform credentials).
    pub(crate) redactor: crate::redact::Redactor,
    /// How job processes start: the user, the slots (`exec:`).
    pub(crate) exec: Arc<crate::exec_policy::ExecPolicy>,
}

/// What the runner (`soarjobd-engine`) builds a [`JobContext`] from. Not for jobs: a job gets
/// its context from the runner, and reaches state only through its methods.
#[doc(hidden)]
pub struct JobContextParts {
    pub definition: Arc<JobDefinition>,
    /// Overrides of the definition's parameters, if any.
    pub params: Option<Parameters>,
    pub run_id: i64,
    pub scheduled_at: DateTime<Utc>,
    pub trigger: Trigger,
    pub started_at: DateTime<Utc>,
    /// Timestamps, context and seen-sets: the only durable state a job may change. Run rows
    /// are out of its reach (only the runner finishes them).
    pub store: Arc<dyn JobStateStore>,
    /// The process record of this run (process containment of `exec`).
    pub processes: RunProcessLog,
    pub cancel: CancellationToken,
    pub stats: Stats,
    pub span: tracing::Span,
    /// Redacts the run's secrets (its password parameters and the platform credentials).
    pub redactor: crate::redact::Redactor,
    /// How job processes start: the default user and the slots (`exec:` in the config).
    pub exec: Arc<crate::exec_policy::ExecPolicy>,
}

impl JobContext {
    #[doc(hidden)] // the runner's
    pub fn from_parts(p: JobContextParts) -> JobContext {
        JobContext {
            definition: p.definition,
            params: p.params,
            run_id: p.run_id,
            scheduled_at: p.scheduled_at,
            trigger: p.trigger,
            started_at: p.started_at,
            store: p.store,
            processes: p.processes,
            cancel: p.cancel,
            stats: p.stats,
            span: p.span,
            redactor: p.redactor,
            exec: p.exec,
        }
    }
}

impl JobContext {
    pub fn job_id(&self) -> &str {
        &self.definition.id
    }

    pub fn definition(&self) -> &JobDefinition {
        &self.definition
    }

    pub fn params(&self) -> &Parameters {
        self.params.as_ref().unwrap_or(&self.definition.parameters)
    }

    pub fn run_id(&self) -> i64 {
        self.run_id
    }

    /// The nominal tick this run belongs to (the request time for manual runs).
    pub fn scheduled_at(&self) -> DateTime<Utc> {
        self.scheduled_at
    }

    pub fn trigger(&self) -> Trigger {
        self.trigger
    }

    /// When the run started (TIPCommon's `job_start_time`): the value a successful run
    /// normally saves as its timestamp, so the next window starts where this one did.
    pub fn job_start_time(&self) -> DateTime<Utc> {
        self.started_at
    }

    /// The run's span (carries `job_id` and `run_id`); events logged inside the job's future
    /// are already in it.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Redacts this run's secrets (password parameters, platform credentials) from text: apply
    /// it to anything from outside (a script's output, a server's error body) before logging
    /// or storing it. The runner applies it to the run's message, error and stats as well.
    pub fn redactor(&self) -> &crate::redact::Redactor {
        &self.redactor
    }

    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Resolves when the run is asked to stop (timeout, replace, shutdown).
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Returns `Err(JobError::Cancelled)` once the run was asked to stop; call it between
    /// items of a long loop.
    pub fn check_cancelled(&self) -> Result<(), JobError> {
        if self.cancel.is_cancelled() {
            Err(JobError::Cancelled)
        } else {
            Ok(())
        }
    }

    /// SecOps `_get_job_last_success_time`: `max(now - offset, stored)`, or `now - offset` when
    /// nothing is stored. When the stored value is older than the offset allows, the gap in
    /// between is skipped, and that is logged so nobody wonders why items were never handled.
    pub async fn last_success_time(&self, offset: Duration) -> Result<DateTime<Utc>, JobError> {
        self.last_success_time_by_key(DEFAULT_TIMESTAMP_KEY, offset)
            .await
    }

    pub async fn last_success_time_by_key(
        &self,
        key: &str,
        offset: Duration,
    ) -> Result<DateTime<Utc>, JobError> {
        let now = Utc::now();
        let floor = now
            - chrono::Duration::from_std(offset).unwrap_or_else(|_| chrono::Duration::days(36500));
        let stored = self.store.get_timestamp(self.job_id(), key).await?;
        Ok(
            match stored.and_then(DateTime::<Utc>::from_timestamp_millis) {
                Some(ts) if ts >= floor => ts,
                Some(ts) => {
                    tracing::warn!(
                        key,
                        stored = %ts.to_rfc3339(),
                        since = %floor.to_rfc3339(),
                        "last success is older than the look-back window; the gap is skipped"
                    );
                    floor
                }
                None => floor,
            },
        )
    }

    /// The timestamp stored under `key` (epoch milliseconds), as stored: no look-back window
    /// applied (`exec` hands it to its command unchanged).
    pub async fn stored_timestamp(&self, key: &str) -> Result<Option<i64>, JobError> {
        Ok(self.store.get_timestamp(self.job_id(), key).await?)
    }

    /// How job processes start: the default user and the slots (`exec:` in the config).
    pub fn exec_policy(&self) -> &crate::exec_policy::ExecPolicy {
        &self.exec
    }

    /// The process record of this run (the process containment of `exec`).
    pub fn processes(&self) -> &RunProcessLog {
        &self.processes
    }

    /// Stores the last-success timestamp (normally `job_start_time()` at the end of a fully
    /// successful run).
    pub async fn save_timestamp(&self, ts: DateTime<Utc>) -> Result<(), JobError> {
        self.save_timestamp_by_key(DEFAULT_TIMESTAMP_KEY, ts).await
    }

    pub async fn save_timestamp_by_key(
        &self,
        key: &str,
        ts: DateTime<Utc>,
    ) -> Result<(), JobError> {
        self.store
            .set_timestamp(self.job_id(), key, ts.timestamp_millis())
            .await?;
        tracing::debug!(key, timestamp = %ts.to_rfc3339(), "timestamp saved");
        Ok(())
    }

    /// A value of the job's JSON context.
    pub async fn context_get(&self, key: &str) -> Result<Option<Value>, JobError> {
        Ok(self.store.context_get(self.job_id(), key).await?)
    }

    pub async fn context_set(&self, key: &str, value: &Value) -> Result<(), JobError> {
        Ok(self.store.context_set(self.job_id(), key, value).await?)
    }

    pub async fn context_delete(&self, key: &str) -> Result<bool, JobError> {
        Ok(self.store.context_delete(self.job_id(), key).await?)
    }

    pub async fn context_all(&self) -> Result<Map<String, Value>, JobError> {
        Ok(self.store.context_all(self.job_id()).await?)
    }

    /// The state of `item` in the seen-set `scope`, if any.
    pub async fn seen(&self, scope: &str, item: &str) -> Result<Option<SeenState>, JobError> {
        Ok(self
            .store
            .seen_get(self.job_id(), scope, item)
            .await?
            .map(|e| e.state))
    }

    /// Marks `item` as being attempted: call it *before* applying the item's effect, so a
    /// crash in between leaves it findable with [`JobContext::in_doubt`].
    pub async fn mark_attempting(&self, scope: &str, item: &str) -> Result<(), JobError> {
        self.mark(scope, item, SeenState::Attempting).await
    }

    /// Marks `item` as done: its effect is known to have happened.
    pub async fn mark_seen(&self, scope: &str, item: &str) -> Result<(), JobError> {
        self.mark(scope, item, SeenState::Done).await
    }

    async fn mark(&self, scope: &str, item: &str, state: SeenState) -> Result<(), JobError> {
        Ok(self
            .store
            .seen_mark(
                self.job_id(),
                scope,
                item,
                state,
                Some(self.run_id),
                Utc::now(),
            )
            .await?)
    }

    /// Items left `attempting` (by a crash, a timeout or an in-doubt write), oldest first.
    pub async fn in_doubt(&self, scope: &str) -> Result<Vec<SeenEntry>, JobError> {
        Ok(self
            .store
            .seen_list(self.job_id(), scope, SeenState::Attempting)
            .await?)
    }

    /// Removes `item` from the seen-set (its effect is known not to have happened).
    pub async fn forget(&self, scope: &str, item: &str) -> Result<bool, JobError> {
        Ok(self.store.seen_remove(self.job_id(), scope, item).await?)
    }
}

/// The implementations this daemon knows, by id, and the secrets their clients hold.
///
/// Built by the composition root (`app`): the platforms register their jobs (each holding its
/// client) and their credentials, which every run redacts from what it logs or stores.
#[derive(Clone, Default)]
pub struct Registry {
    jobs: BTreeMap<String, Arc<dyn Job>>,
    secrets: Arc<Vec<secrecy::SecretString>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds an implementation; a later one with the same id replaces the earlier.
    pub fn register(&mut self, job: impl Job) -> &mut Registry {
        self.jobs.insert(job.id().to_string(), Arc::new(job));
        self
    }

    pub fn get(&self, id: &str) -> Option<Arc<dyn Job>> {
        self.jobs.get(id).cloned()
    }

    /// Adds every implementation of `other` (replacing those with the same ids) and its
    /// secrets.
    pub fn extend(&mut self, other: Registry) -> &mut Registry {
        self.jobs.extend(other.jobs);
        self.add_redacted_secrets(other.secrets.iter().cloned());
        self
    }

    /// Adds secrets every run redacts from its output (platform credentials).
    pub fn add_redacted_secrets(
        &mut self,
        secrets: impl IntoIterator<Item = secrecy::SecretString>,
    ) -> &mut Registry {
        Arc::make_mut(&mut self.secrets).extend(secrets);
        self
    }

    /// The secrets every run redacts, besides its own password parameters.
    pub fn redacted_secrets(&self) -> &[secrecy::SecretString] {
        &self.secrets
    }
}

impl Catalog for Registry {
    fn ids(&self) -> Vec<String> {
        self.jobs.keys().cloned().collect()
    }

    fn spec(&self, id: &str) -> Option<&dyn JobSpec> {
        self.jobs.get(id).map(|j| j.as_ref() as &dyn JobSpec)
    }
}

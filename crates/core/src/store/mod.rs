//! Durable state: run history, last-success timestamps, per-job context and seen-sets.
//!
//! The [`RunStore`], [`JobStateStore`] and [`OpsStore`] traits (together: [`Store`]) and their
//! row types are the only way the rest of the daemon touches the database. The backends (SQLite,
//! and PostgreSQL for several replicas) are the `soarjobd-store` crate; this module names no
//! driver. The invariant that makes a
//! tick run at most once is the unique key on `(job_id, scheduled_at)` for non-manual runs:
//! [`RunStore::claim_runs`] inserts the row *before* anything runs, and a conflicting insert means
//! another process (or an earlier life of this one) already took the tick.

pub mod failing;
pub mod ops;

pub use ops::OpsStore;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What caused a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A regular tick of the job's schedule.
    Schedule,
    /// The single run that `misfire: run_once` makes at startup for ticks missed while down.
    CatchUp,
    /// `soarjobd run-once` or an admin request.
    Manual,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::CatchUp => "catch_up",
            Trigger::Manual => "manual",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "schedule" => Trigger::Schedule,
            "catch_up" => Trigger::CatchUp,
            "manual" => Trigger::Manual,
            _ => return None,
        })
    }
}

/// The life-cycle state of one run row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Partial,
    Failed,
    TimedOut,
    Cancelled,
    Interrupted,
    Skipped,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Partial => "partial",
            RunStatus::Failed => "failed",
            RunStatus::TimedOut => "timed_out",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => RunStatus::Running,
            "succeeded" => RunStatus::Succeeded,
            "partial" => RunStatus::Partial,
            "failed" => RunStatus::Failed,
            "timed_out" => RunStatus::TimedOut,
            "cancelled" => RunStatus::Cancelled,
            "interrupted" => RunStatus::Interrupted,
            "skipped" => RunStatus::Skipped,
            _ => return None,
        })
    }

    /// True for every status except `running`.
    pub fn is_final(self) -> bool {
        self != RunStatus::Running
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A run to be claimed. `status` is `Running` for a run about to start, or `Skipped` for a tick
/// that is recorded but not run (overlap policy `skip`); a skipped row is inserted already
/// finished (`finished_at = started_at`).
#[derive(Debug, Clone)]
pub struct NewRun {
    pub job_id: String,
    /// The nominal tick instant (before jitter). For manual runs, the request time.
    pub scheduled_at: DateTime<Utc>,
    pub trigger: Trigger,
    pub status: RunStatus,
    pub started_at: DateTime<Utc>,
    pub message: Option<String>,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunFinish {
    pub status: RunStatus,
    pub finished_at: DateTime<Utc>,
    pub message: Option<String>,
    /// The error with its full cause chain, one cause per line.
    pub error: Option<String>,
    /// JSON object of counters the job reported.
    pub stats: serde_json::Value,
}

/// One row of `job_runs`.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub id: i64,
    pub job_id: String,
    pub scheduled_at: DateTime<Utc>,
    pub trigger: Trigger,
    pub status: RunStatus,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub message: Option<String>,
    pub error: Option<String>,
    pub stats: serde_json::Value,
    /// The process that claimed the row (`None` for rows written before owners were recorded).
    pub owner: Option<RunOwner>,
}

/// One run as a history strip draws it: a [`RunRecord`] without its message, error, stats
/// and owner (what [`RunStore::recent_runs`] reads for many jobs at once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunMark {
    pub id: i64,
    pub job_id: String,
    pub scheduled_at: DateTime<Utc>,
    pub trigger: Trigger,
    pub status: RunStatus,
    pub started_at: DateTime<Utc>,
    pub duration_ms: Option<i64>,
}

/// The store instance (and its process) that claimed a run row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunOwner {
    /// For people: which process it was.
    pub pid: i64,
    pub host: String,
    /// The owner's identity: the name of its lock file. 32 lowercase hex digits.
    #[serde(skip)]
    pub nonce: String,
}

/// The answer to one claim of [`RunStore::claim_runs_exclusive`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The row was inserted with this id: the run may start.
    Claimed(i64),
    /// The tick was claimed before (by this process, an earlier life of it, or another
    /// process): it must not run again.
    Taken,
    /// A manual run's claim was exclusive and another live process has a `running` row of
    /// the job, so the run does not start and records nothing; its caller is told.
    Busy { holder: RunHolder },
    /// A scheduled or catch-up tick's claim was exclusive and other live processes had
    /// `running` rows of the job (`holders`, the first one in `holder`). The row is claimed
    /// (`running`, so later claims see it as a holder in turn), but whether it runs is decided
    /// when it fires, as on one node: it runs if none of `holders` is still running then
    /// ([`RunStore::holding`]), and is finished as `skipped` otherwise.
    Contended {
        run_id: i64,
        holder: RunHolder,
        holders: Vec<i64>,
    },
}

/// What [`RunStore::mark_started`] found about claimed runs about to start. Runs in neither
/// list start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartCheck {
    /// Runs whose rows are no longer this process's (another replica declared it dead and
    /// took them over): they must not start, and their rows are the new owner's.
    pub lost: Vec<i64>,
    /// Runs whose ownership could not be checked (the database failed): they do not start
    /// (they might have been taken over), and their rows are finished as not run under
    /// their fencing tokens.
    pub unconfirmed: Vec<i64>,
    /// Why the check failed, for the log.
    pub error: Option<String>,
}

/// The live run of another process that made an exclusive claim [`Claim::Busy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunHolder {
    pub run_id: i64,
    pub trigger: Trigger,
    pub owner: Option<RunOwner>,
}

impl std::fmt::Display for RunHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "run {} ({}", self.run_id, self.trigger.as_str())?;
        if let Some(o) = &self.owner {
            write!(f, ", soarjobd pid {} on host {}", o.pid, o.host)?;
        }
        f.write_str(")")
    }
}

/// The state of one item in a job's seen-set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeenState {
    /// The job is about to apply (or applied, without hearing back) the item's effect. An item
    /// still in this state at the start of a later run is "in doubt": its effect may or may not
    /// have happened, and the job must check the remote side before applying it again.
    Attempting,
    /// The effect is known to have happened.
    Done,
}

impl SeenState {
    pub fn as_str(self) -> &'static str {
        match self {
            SeenState::Attempting => "attempting",
            SeenState::Done => "done",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "attempting" => Some(SeenState::Attempting),
            "done" => Some(SeenState::Done),
            _ => None,
        }
    }
}

/// One seen-set entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeenEntry {
    pub item: String,
    pub state: SeenState,
    /// The run that last changed the entry.
    pub run_id: Option<i64>,
    pub updated_at: DateTime<Utc>,
}

/// Where the processes of a run in progress are (one row of `run_processes`); see
/// `soarjobd-containment`. Nothing in it is secret: the token only identifies the run's processes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunProcess {
    pub run_id: i64,
    /// The host name of the machine the processes run on.
    pub host: String,
    /// `/proc/sys/kernel/random/boot_id` of that machine's current boot.
    pub boot_id: String,
    /// The daemon or `run-once` process that started the run, and its start time (clock ticks
    /// since boot, `/proc/<pid>/stat` field 22): together they identify it across pid reuse.
    pub owner_pid: i32,
    pub owner_start_ticks: u64,
    /// The run's process group (its leader's pid), once the program started.
    pub pgid: Option<i32>,
    pub leader_start_ticks: Option<u64>,
    /// The value of `SOARJOBD_RUN_TOKEN` in the program's environment.
    pub token: String,
    /// The run's own cgroup v2 directory, if one was created.
    pub cgroup: Option<String>,
    pub recorded_at: DateTime<Utc>,
}

/// An error of the database driver behind a store, with its chain of causes. The core names
/// no driver: the backends (`soarjobd-store`) box theirs (`sqlx::Error`), and code that must
/// tell one apart downcasts it.
pub type DbError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {url}")]
    Open {
        url: String,
        #[source]
        source: DbError,
    },
    #[error("cannot apply database migrations")]
    Migrate(#[source] DbError),
    #[error("database error")]
    Db(#[source] DbError),
    #[error("corrupt value in column {column}: {value:?}")]
    Corrupt { column: &'static str, value: String },
    #[error("run {0} does not exist")]
    NoSuchRun(i64),
    #[error("unsupported database url {0:?} (expected sqlite:PATH or postgres://...)")]
    UnsupportedUrl(String),
    /// The database has a migration this build does not know: it was used by a newer
    /// soarjobd. Starting would run old code on a schema it does not understand.
    #[error(
        "the database schema is newer than this soarjobd: it has migration {version}, which \
         this build does not know; run a soarjobd at least as new as the one that upgraded it"
    )]
    SchemaTooNew { version: i64 },
    /// A write on behalf of a run whose lease was lost (another replica declared this one dead
    /// and took the run over): it was rejected by the run's fencing token, not applied.
    #[error("run {run_id} lost its lease to another replica; the write was not applied")]
    LeaseLost { run_id: i64 },
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The run rows and what belongs to them: what the scheduler, the runner, the daemon's
/// recovery and the CLI's reads use. Jobs never see it (they get a [`JobStateStore`]): only
/// the runner finishes run rows. All times are stored with millisecond precision.
#[async_trait]
pub trait RunStore: Send + Sync + 'static {
    /// Inserts every run in one transaction. For each input, returns `Some(run_id)` when the row
    /// was inserted, or `None` when a non-manual run with the same `(job_id, scheduled_at)`
    /// already exists (the tick was claimed before and must not run again).
    async fn claim_runs(&self, runs: &[NewRun]) -> StoreResult<Vec<Option<i64>>>;

    /// [`RunStore::claim_runs`] with the overlap check across processes, in the same
    /// transaction: a run with `exclusive[i]` set (its job's overlap is not `allow`) does not
    /// start while another *live* process (a daemon or a `run-once`) has a `running` row of
    /// the same job; see [`Claim::Busy`] and [`Claim::Contended`]. Rows of this store's own process are not looked at
    /// (the scheduler applies overlap to its own runs when they fire), and `running` rows of
    /// the job whose process is dead are marked `interrupted` on the way.
    ///
    /// The default implementation has no cross-process check: it claims like `claim_runs`.
    async fn claim_runs_exclusive(
        &self,
        runs: &[NewRun],
        exclusive: &[bool],
    ) -> StoreResult<Vec<Claim>> {
        let _ = exclusive;
        Ok(self
            .claim_runs(runs)
            .await?
            .into_iter()
            .map(|id| id.map_or(Claim::Taken, Claim::Claimed))
            .collect())
    }

    /// The first of `run_ids` (rows of other processes) that is still `running` under a live
    /// owner, if any: the fire-time overlap check of a [`Claim::Contended`] tick. The default
    /// reads the rows one by one and counts every `running` row as live.
    async fn holding(&self, run_ids: &[i64]) -> StoreResult<Option<RunHolder>> {
        for id in run_ids {
            if let Some(r) = self.run(*id).await?
                && r.status == RunStatus::Running
            {
                return Ok(Some(RunHolder {
                    run_id: r.id,
                    trigger: r.trigger,
                    owner: r.owner,
                }));
            }
        }
        Ok(None)
    }

    /// Called when claimed runs are about to start: says which of them must not start, and
    /// sets the real start time of those given one (claimed ahead with their nominal start
    /// and firing noticeably later, after a stall or SIGSTOP). Only rows still `running`
    /// change.
    ///
    /// On PostgreSQL this is the fencing of claims: a replica that was frozen (SIGSTOP) or cut
    /// off after claiming ticks ahead may have been declared dead meanwhile, its rows
    /// `interrupted` and its jobs moved; such runs come back in [`StartCheck::lost`] and must
    /// not start (the replicas that took them over decide them per `misfire`). A run claimed
    /// less than half of `dead_after` ago under the node that is still this handle's is
    /// vouched for without a query (its claim renewed the node's heartbeat, so nobody can
    /// have declared it dead yet); the others are checked, and their node's heartbeat renewed,
    /// in one statement. Runs it could not check (database error) come back in
    /// [`StartCheck::unconfirmed`].
    ///
    /// The default implementation (single-node backends: nobody else can take a claim over)
    /// starts every run and keeps the claimed start.
    async fn mark_started(&self, runs: &[(i64, Option<DateTime<Utc>>)]) -> StartCheck {
        let _ = runs;
        StartCheck::default()
    }

    /// Records how a run ended. Only a row still `running` is changed; finishing a row twice
    /// is a no-op that returns `false`.
    async fn finish_run(&self, run_id: i64, finish: &RunFinish) -> StoreResult<bool>;

    /// Deletes a claimed row that never started (status still `running`), so its tick counts
    /// as not taken. The scheduler uses it at shutdown for ticks it claimed ahead of their
    /// instant. Returns whether a row was deleted.
    async fn unclaim(&self, run_id: i64) -> StoreResult<bool>;

    /// Marks every row still `running` whose owner process is gone as `interrupted` (finished
    /// now, or at its start if that is later, with a message explaining that its process
    /// stopped while the run was in progress). Rows of live processes (another daemon's, a
    /// `run-once` next to this daemon, this store's own) are left alone; rows of another host
    /// cannot be checked and are left alone too. Called at startup, before the scheduler
    /// starts, and periodically by the daemon. Returns the rows that were changed.
    async fn interrupt_running(&self, now: DateTime<Utc>) -> StoreResult<Vec<RunRecord>>;

    /// The newest `scheduled_at` among the job's `schedule` and `catch_up` rows, if any.
    async fn last_scheduled_at(&self, job_id: &str) -> StoreResult<Option<DateTime<Utc>>>;

    /// For each of the jobs that has one, the row of its newest `schedule` or `catch_up` tick
    /// (the one [`RunStore::last_scheduled_at`] names). The default reads job by job.
    async fn last_ticks(&self, job_ids: &[String]) -> StoreResult<Vec<RunRecord>> {
        let mut rows = Vec::new();
        for job_id in job_ids {
            let Some(last) = self.last_scheduled_at(job_id).await? else {
                continue;
            };
            // It is among the newest rows (history is ordered by start).
            if let Some(r) = self
                .history(job_id, 16)
                .await?
                .into_iter()
                .find(|r| r.trigger != Trigger::Manual && r.scheduled_at == last)
            {
                rows.push(r);
            }
        }
        Ok(rows)
    }

    /// One run by id.
    async fn run(&self, run_id: i64) -> StoreResult<Option<RunRecord>>;

    /// The job's runs, newest first (by `started_at`, then id).
    async fn history(&self, job_id: &str, limit: u32) -> StoreResult<Vec<RunRecord>>;

    /// The newest run of every job that has one, keyed by job id.
    async fn last_runs(&self) -> StoreResult<Vec<RunRecord>>;

    /// The newest `per_job` runs of each job of `job_ids`, in one read (one index probe per
    /// job, never a scan of the whole history): grouped by job id in byte order, each job's
    /// newest first (by `started_at`, then id), as [`RunStore::history`] orders them. Ids
    /// without runs, and repeated ids, add nothing.
    async fn recent_runs(&self, job_ids: &[String], per_job: u32) -> StoreResult<Vec<RunMark>>;

    /// Deletes finished runs beyond the newest `keep_runs` per job *and* older than
    /// `older_than` (a run is kept if either rule keeps it). Never deletes a `running` row.
    /// Returns the number of rows deleted.
    async fn prune(&self, keep_runs: u32, older_than: DateTime<Utc>) -> StoreResult<u64>;

    /// One small step of pruning under `retention` (see [`Retention`]): deletes at most
    /// `limit` run rows and at most `limit` run-log rows, oldest first. The daemon calls it
    /// every `history.prune_every` and again at once while a step deleted a full batch, so a
    /// database bloated by a burst shrinks in many short write transactions that ticks
    /// interleave with. Never deletes a `running` row.
    ///
    /// The default implementation prunes runs with [`RunStore::prune`] (both bounds must
    /// agree before a run goes) and no run-log lines.
    async fn prune_step(&self, retention: &Retention, limit: u32) -> StoreResult<Pruned> {
        let _ = limit;
        let runs = self
            .prune(retention.keep_runs, retention.older_than)
            .await?;
        Ok(Pruned { runs, log_rows: 0 })
    }

    /// Gives the space of deleted rows back to the file system (SQLite: an incremental
    /// vacuum of a bounded number of pages) and returns the database's size in bytes, if
    /// the backend knows it.
    async fn reclaim(&self) -> StoreResult<Option<u64>> {
        Ok(None)
    }

    /// Flushes and closes the database (checkpointing the SQLite WAL).
    async fn close(&self);

    // --- The processes of runs in progress (process containment, `exec`). ---

    /// Records (or updates: it is keyed by `run_id`) where a run's processes are, so that a
    /// later start can kill what is left of them if the owner dies. `run_id` must name an
    /// existing run.
    async fn record_run_process(&self, process: &RunProcess) -> StoreResult<()>;

    /// Every recorded run process, by run id.
    async fn run_processes(&self) -> StoreResult<Vec<RunProcess>>;

    /// Forgets a run's processes (they are all gone). Returns whether a row was deleted.
    async fn forget_run_process(&self, run_id: i64) -> StoreResult<bool>;

    // --- Several replicas (PostgreSQL); single-node backends keep the defaults. ---

    /// The processes registered on the database (replicas and CLI processes), or `None` for a
    /// single-node backend.
    async fn nodes(&self) -> StoreResult<Option<Vec<NodeInfo>>> {
        Ok(None)
    }

    /// Asks the owner of a `running` run in another process to cancel it (overlap `replace`
    /// across replicas): the owner polls the request at its next heartbeat. Returns whether a
    /// request was recorded; `false` on single-node backends, which have no such channel.
    async fn request_cancel(&self, run_id: i64) -> StoreResult<bool> {
        let _ = run_id;
        Ok(false)
    }

    /// Tells the other replicas that this daemon's scheduler runs, so that they leave it
    /// its share of the jobs (until then they keep scheduling them: a starting replica
    /// makes no gap). A no-op on single-node backends.
    async fn scheduling(&self) -> StoreResult<()> {
        Ok(())
    }

    /// Tells the other replicas that this daemon's scheduler stopped (a graceful stop: its
    /// runs may still be finishing), so that they take its jobs over at once instead of when
    /// its node row goes at close. Its runs stay its own: it keeps heartbeating until then.
    /// A no-op on single-node backends.
    async fn stopped_scheduling(&self) -> StoreResult<()> {
        Ok(())
    }

    /// Whether this process schedules `job_id`'s ticks. On PostgreSQL the jobs are spread
    /// over the live replicas (rendezvous hashing), so each tick is claimed by one replica
    /// only; single-node backends schedule every job.
    fn owns(&self, job_id: &str) -> bool {
        let _ = job_id;
        true
    }

    /// The node id of the replica that schedules `job_id`, as this handle sees the
    /// membership (the same function [`RunStore::owns`] answers with); `None` on single-node
    /// backends.
    fn owner_of(&self, job_id: &str) -> Option<i64> {
        let _ = job_id;
        None
    }

    /// A number that changes whenever [`RunStore::owns`] may answer differently (a replica
    /// joined, left or was declared dead). Always 0 on single-node backends.
    fn membership_epoch(&self) -> u64 {
        0
    }

    /// The events of this handle's membership in a cluster (lease lost, cancel requests),
    /// once: the first call takes the receiver. `None` on single-node backends.
    fn cluster_events(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<ClusterEvent>> {
        None
    }
}

/// The bounds of stored history ([`RunStore::prune_step`]): a run is deleted as soon as one
/// rule no longer keeps it (the newest `keep_runs` *or* the last days, whichever is fewer).
/// Failed runs (failed, timed out, interrupted) are counted and aged on their own rules.
#[derive(Debug, Clone)]
pub struct Retention {
    /// The newest this many finished runs of a job (of any status) are kept, at most.
    pub keep_runs: u32,
    /// Runs that started before this are deleted.
    pub older_than: DateTime<Utc>,
    /// The newest this many failed runs of a job are kept, at most.
    pub keep_failed_runs: u32,
    /// Failed runs that started before this are deleted.
    pub failed_older_than: DateTime<Utc>,
    /// Run-log lines logged before this are deleted (their run stays).
    pub logs_older_than: DateTime<Utc>,
}

/// What one [`RunStore::prune_step`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub runs: u64,
    pub log_rows: u64,
}

/// The statuses [`Retention`] counts as failed.
pub const FAILED_STATUSES: [RunStatus; 3] = [
    RunStatus::Failed,
    RunStatus::TimedOut,
    RunStatus::Interrupted,
];

/// One registered process of a clustered database (`soarjobd nodes`).
#[derive(Debug, Clone, Serialize)]
pub struct NodeInfo {
    pub id: i64,
    pub host: String,
    pub pid: i64,
    pub version: String,
    /// `daemon` (a replica) or `client` (`list`, `history`, `run-once`).
    pub role: String,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    /// Whether the heartbeat is younger than the reader's `cluster.dead_after`.
    pub alive: bool,
    /// This handle's own node.
    pub this: bool,
}

/// What a clustered store tells the daemon about its membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent {
    /// Another replica declared this one dead (its heartbeat was older than `dead_after`,
    /// e.g. after a SIGSTOP or a network partition) and took its runs over. The store has
    /// registered again under a new node id; the runs still going here must be cancelled,
    /// and nothing they write is applied any more (fencing).
    LeaseLost { old_node: i64, new_node: i64 },
    /// Another replica asked (overlap `replace`) that these runs of this node be cancelled.
    CancelRequested(Vec<i64>),
}

/// How a store handle takes part in a cluster (PostgreSQL; ignored by SQLite).
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Recorded in `nodes` for people: `daemon` or `client`.
    pub role: &'static str,
    /// How often the handle's node row is refreshed (and cancel requests are polled).
    pub heartbeat: std::time::Duration,
    /// A node whose heartbeat is older than this is dead.
    pub dead_after: std::time::Duration,
}

impl Default for OpenOptions {
    fn default() -> OpenOptions {
        OpenOptions {
            role: "client",
            heartbeat: std::time::Duration::from_secs(2),
            dead_after: std::time::Duration::from_secs(6),
        }
    }
}

/// The state a job may read and change through its `JobContext`: last-success timestamps,
/// its JSON context and its seen-sets. Nothing in it reaches run rows.
#[async_trait]
pub trait JobStateStore: Send + Sync + 'static {
    /// A stored timestamp (unix ms) under `key` (`"timestamp"` is the SecOps default key).
    async fn get_timestamp(&self, job_id: &str, key: &str) -> StoreResult<Option<i64>>;
    async fn set_timestamp(&self, job_id: &str, key: &str, unix_ms: i64) -> StoreResult<()>;
    /// Every stored timestamp of every job: (job_id, key, unix_ms).
    async fn all_timestamps(&self) -> StoreResult<Vec<(String, String, i64)>>;

    /// The job's JSON key/value context.
    async fn context_get(&self, job_id: &str, key: &str) -> StoreResult<Option<serde_json::Value>>;
    async fn context_set(
        &self,
        job_id: &str,
        key: &str,
        value: &serde_json::Value,
    ) -> StoreResult<()>;
    async fn context_delete(&self, job_id: &str, key: &str) -> StoreResult<bool>;
    /// The whole context as one JSON object.
    async fn context_all(
        &self,
        job_id: &str,
    ) -> StoreResult<serde_json::Map<String, serde_json::Value>>;

    /// One entry of the job's seen-set `scope`.
    async fn seen_get(
        &self,
        job_id: &str,
        scope: &str,
        item: &str,
    ) -> StoreResult<Option<SeenEntry>>;
    /// Creates or updates an entry.
    async fn seen_mark(
        &self,
        job_id: &str,
        scope: &str,
        item: &str,
        state: SeenState,
        run_id: Option<i64>,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Entries of a scope in a given state, oldest first.
    async fn seen_list(
        &self,
        job_id: &str,
        scope: &str,
        state: SeenState,
    ) -> StoreResult<Vec<SeenEntry>>;
    async fn seen_remove(&self, job_id: &str, scope: &str, item: &str) -> StoreResult<bool>;

    /// The view a run's `JobContext` gets, if the backend fences writes by run lease: every
    /// write through it is applied only while `run_id` is still `running` under this handle's
    /// lease, checked in the same statement, and is refused ([`StoreError::LeaseLost`])
    /// otherwise. `None`: the backend has no leases (SQLite: one daemon per file), and the
    /// store itself is handed over.
    fn for_run(&self, run_id: i64) -> Option<std::sync::Arc<dyn JobStateStore>> {
        let _ = run_id;
        None
    }
}

/// A whole backend: both halves on one database. `store::open` returns one, and the daemon
/// hands each part only what it needs (an `Arc<dyn Store>` coerces to `Arc<dyn RunStore>` and
/// to `Arc<dyn JobStateStore>`). Implemented for every type that implements both halves.
///
/// One object rather than a struct of two `Arc`s: a backend is one pool and one run owner (the
/// process whose rows it claims), and both halves must share them; closing it closes both.
/// The split is in what each part is handed: the runner keeps the `RunStore` view, a job's
/// `JobContext` gets only the `JobStateStore` view.
///
/// [`OpsStore`] (paused jobs, run logs, alert episodes) is the operator's third part.
pub trait Store: RunStore + JobStateStore + OpsStore {}

impl<T: RunStore + JobStateStore + OpsStore + ?Sized> Store for T {}

/// The one slice of [`RunStore`] a running job may use: the process record of its own run
/// (process containment, `soarjobd-containment`). It cannot read or change any run row, nor the
/// process record of another run.
#[derive(Clone)]
pub struct RunProcessLog {
    store: std::sync::Arc<dyn RunStore>,
    run_id: i64,
}

impl RunProcessLog {
    pub fn new(store: std::sync::Arc<dyn RunStore>, run_id: i64) -> RunProcessLog {
        RunProcessLog { store, run_id }
    }

    /// The run whose processes this records.
    pub fn run_id(&self) -> i64 {
        self.run_id
    }

    /// [`RunStore::record_run_process`] for this run; a record of another run is refused.
    pub async fn record(&self, process: &RunProcess) -> StoreResult<()> {
        if process.run_id != self.run_id {
            return Err(StoreError::NoSuchRun(process.run_id));
        }
        self.store.record_run_process(process).await
    }

    /// [`RunStore::forget_run_process`] for this run.
    pub async fn forget(&self) -> StoreResult<bool> {
        self.store.forget_run_process(self.run_id).await
    }
}

/// Whether a database URL names PostgreSQL.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

//! The PostgreSQL implementation of [`super::Store`]: several replicas on one database.
//!
//! Every opened handle is a *node* (a row in `nodes`, see [`node`]) that heartbeats; a
//! `running` row is live while its owner node's heartbeat is fresh (younger than
//! `cluster.dead_after`, on the server's clock). That replaces SQLite's owner flocks, which
//! cannot work across hosts.
//!
//! * **Claims**: the unique `(job_id, scheduled_at)` index makes a tick exactly-once across
//!   replicas (`ON CONFLICT DO NOTHING`: the loser gets nothing back and logs nothing). Rows of
//!   one claim are inserted in `(job_id, scheduled_at)` order, the same order on every
//!   replica, so two replicas claiming the same ticks wait on each other instead of
//!   deadlocking; a deadlock or serialization failure is retried anyway.
//! * **Overlap across replicas**: an exclusive claim takes a transaction-scoped advisory lock
//!   per job (in job order) before it looks for a live `running` row of the job, so the check
//!   and the insert are atomic with respect to every other exclusive claim of that job.
//! * **Leases and fencing**: each claimed run records its owner node and a fencing token (the
//!   `run_fence` sequence). A finish, and every context/timestamp/seen-set write of the run's
//!   job (through [`fenced::FencedState`]), is applied only while the row is still `running`
//!   with that token, checked in the same statement; after another replica took the run over
//!   (the row is `interrupted`) the write is refused and logged, never applied.
//! * **Takeover**: [`RunStore::interrupt_running`] deletes nodes whose heartbeat is too old
//!   and marks their `running` rows `interrupted`, in one statement, so exactly one replica
//!   takes over each run (it gets the rows back and makes the catch-up run).

mod fenced;
mod members;
mod node;
mod ops;
#[cfg(any(test, feature = "test-db"))]
pub mod testdb;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Row};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    Claim, ClusterEvent, JobStateStore, NewRun, NodeInfo, OpenOptions, Pruned, Retention,
    RunFinish, RunHolder, RunMark, RunProcess, RunRecord, RunStatus, RunStore, SeenEntry,
    SeenState, StartCheck, StoreError, StoreResult, Trigger,
};
use crate::Db;
use crate::rows::{
    from_millis, marks_from_rows, millis, owner_from_row, parse_json, parse_trigger,
    process_from_row, run_from_row, runs_from_rows, seen_from_row, ticks_to_db,
};

/// The migrations in `migrations/postgres/`, embedded at compile time. sqlx's migrator holds
/// a PostgreSQL advisory lock while it applies them, so replicas starting at once apply each
/// migration once and the others wait, then find it applied.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// The database server's clock in unix milliseconds (the heartbeat and liveness clock).
macro_rules! NOW_MS {
    () => {
        "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT"
    };
}
pub(crate) use NOW_MS;

/// The columns of `job_runs` that [`run_from_row`] reads.
macro_rules! run_columns {
    () => {
        "id, job_id, scheduled_at, \"trigger\", status, started_at, finished_at, duration_ms, \
         message, error, stats, owner_pid, owner_host, owner_node"
    };
}

const MAX_CONNECTIONS: u32 = 10;
/// How long an operation waits for a connection. sqlx retries a refused connection until
/// this passes (and then reports only a pool timeout), so it is short: during an outage
/// claims, finishes and heartbeats fail within seconds instead of hanging for 30 s.
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// The most run ends kept for a retry while the database fails (as on SQLite); beyond it the
/// oldest is dropped (its row is taken over as a dead replica's once this one is gone).
const MAX_UNRECORDED: usize = 10_000;
/// Attempts at a claim that failed on a deadlock or serialization failure.
const CLAIM_ATTEMPTS: u32 = 5;

/// The message of a `running` row whose process closed the database or is otherwise gone.
const GONE_MESSAGE: &str =
    "the process running it (daemon or run-once) stopped while this run was in progress";
/// The message of a `running` row taken over from a replica that stopped heartbeating.
const DEAD_MESSAGE: &str = "its replica stopped heartbeating for longer than cluster.dead_after \
                            (killed, frozen or cut off); another replica took the run over";

/// A run this handle claimed: its fencing token, and what vouches for the claim.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lease {
    fence: i64,
    /// The node the run was claimed under.
    node: i64,
    /// When the statement that last renewed the node's heartbeat together with this run's
    /// claim (the claim itself, or a start check) was sent, on this host's monotonic clock.
    /// Nobody can declare the node dead until `dead_after` after it.
    renewed: std::time::Instant,
}

/// [`Store`](super::Store) on a PostgreSQL database. Cheap to clone (one shared handle).
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

pub(super) struct Inner {
    pool: PgPool,
    /// This handle's current node id (it changes when the handle registers again).
    node: AtomicI64,
    host: String,
    pid: i64,
    role: &'static str,
    /// A daemon's scheduler runs (see [`RunStore::scheduling`]): until then its node row says
    /// `starting` and the other replicas keep scheduling the jobs it will own.
    scheduling: std::sync::atomic::AtomicBool,
    /// A daemon's scheduler stopped (graceful stop): its node row says `stopping`, so the
    /// other replicas take its jobs while its last runs finish.
    stopped: std::sync::atomic::AtomicBool,
    dead_after_ms: i64,
    /// The runs this handle claimed and has not finished, with their fencing tokens.
    leases: std::sync::Mutex<HashMap<i64, Lease>>,
    /// When this handle last registered again after being declared dead (the database
    /// server's clock, unix ms; 0: never). Scheduled ticks due before it were the business
    /// of the replicas that held its jobs meanwhile: its claims of them are refused.
    reregistered_ms: AtomicI64,
    /// Run ends that could not be written (the database was down), retried under their
    /// fencing tokens after every successful heartbeat and sweep, and at close.
    unrecorded: std::sync::Mutex<Vec<(i64, RunFinish)>>,
    /// Since when this handle has reached the database without a failure (`None` while it
    /// fails). Another node is declared dead only once this is older than `dead_after`: after
    /// an outage every heartbeat is stale, and a replica that got its connection back first
    /// must give the others `dead_after` to beat again before it takes their runs over.
    healthy_since: std::sync::Mutex<Option<std::time::Instant>>,
    /// The live replicas, as the last sweep read them: who schedules which job.
    members: members::Membership,
    events: mpsc::UnboundedSender<ClusterEvent>,
    events_rx: std::sync::Mutex<Option<mpsc::UnboundedReceiver<ClusterEvent>>>,
    reregistering: tokio::sync::Mutex<()>,
    stop: CancellationToken,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("node", &self.node_id())
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects, applies pending migrations (refusing a schema newer than this build),
    /// registers this handle as a node and starts its heartbeat.
    pub async fn open(url: &str, options: &OpenOptions) -> StoreResult<PgStore> {
        let open_error = |source: sqlx::Error| StoreError::Open {
            url: soarjobd_core::redact_url(url),
            source: Box::new(source),
        };
        // PostgreSQL's notices ("relation ... already exists, skipping" from the migrator's
        // `CREATE TABLE IF NOT EXISTS` at every start) would be logged at info: only
        // warnings and worse are worth a line.
        let connect = PgConnectOptions::from_str(url)
            .map_err(open_error)?
            .options([("client_min_messages", "warning")]);
        migrate(&connect).await?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(connect)
            .await
            .map_err(open_error)?;
        let host = super::owner::this_host().to_owned();
        let pid = i64::from(std::process::id());
        let first_role = if options.role == "daemon" {
            "starting"
        } else {
            options.role
        };
        let id = match node::register(&pool, &host, pid, first_role).await {
            Ok((id, _)) => id,
            Err(e) => {
                pool.close().await;
                return Err(e);
            }
        };
        let (events, events_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            pool,
            node: AtomicI64::new(id),
            host,
            pid,
            role: options.role,
            scheduling: std::sync::atomic::AtomicBool::new(false),
            stopped: std::sync::atomic::AtomicBool::new(false),
            dead_after_ms: i64::try_from(options.dead_after.as_millis()).unwrap_or(i64::MAX),
            leases: Default::default(),
            reregistered_ms: AtomicI64::new(0),
            unrecorded: Default::default(),
            // At open the other nodes' heartbeats are judged as usual: this handle did not
            // see an outage.
            healthy_since: std::sync::Mutex::new(Some(
                std::time::Instant::now()
                    .checked_sub(options.dead_after)
                    .unwrap_or_else(std::time::Instant::now),
            )),
            members: members::Membership::default(),
            events,
            events_rx: std::sync::Mutex::new(Some(events_rx)),
            reregistering: tokio::sync::Mutex::new(()),
            stop: CancellationToken::new(),
        });
        if options.role == "daemon" {
            match read_members(&inner.pool, inner.dead_after_ms).await {
                Ok(nodes) => inner.members.set(nodes),
                // The first sweep reads them; until then this replica schedules every job.
                Err(e) => tracing::warn!(error = %e, "cannot read the live replicas"),
            }
        }
        tokio::spawn(node::heartbeat_loop(
            Arc::downgrade(&inner),
            options.heartbeat,
            inner.stop.clone(),
        ));
        Ok(PgStore { inner })
    }

    /// The connection pool, for tests and `migrate-state`.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// This handle's current node id.
    pub fn node_id(&self) -> i64 {
        self.inner.node.load(Ordering::SeqCst)
    }

    fn me(&self) -> i64 {
        self.node_id()
    }

    fn lease(&self, run_id: i64) -> Option<i64> {
        self.inner
            .leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&run_id)
            .map(|l| l.fence)
    }

    fn drop_lease(&self, run_id: i64) -> Option<i64> {
        self.inner
            .leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&run_id)
            .map(|l| l.fence)
    }

    /// Writes the run ends kept while the database failed, each under its run's fencing
    /// token: a run taken over meanwhile (the outage outlasted `dead_after` and another
    /// replica declared this one dead) has its late end refused and logged by `finish_run`.
    /// Stops at the first database error (the rest stay kept).
    pub(super) async fn retry_unrecorded(&self) {
        let mut queued: std::collections::VecDeque<(i64, RunFinish)> = std::mem::take(
            &mut *self
                .inner
                .unrecorded
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
        .into();
        while let Some((run_id, finish)) = queued.pop_front() {
            match self.finish_once(run_id, &finish).await {
                Ok(true) => tracing::info!(
                    run_id,
                    status = finish.status.as_str(),
                    "run end recorded after the database came back"
                ),
                // Refused by fencing (logged there) or finished by someone else.
                Ok(false) => {}
                Err(StoreError::Db(_)) => {
                    queued.push_front((run_id, finish));
                    let mut kept = self
                        .inner
                        .unrecorded
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    // Older ends first, then any that failed meanwhile.
                    let newer = std::mem::take(&mut *kept);
                    kept.extend(queued);
                    kept.extend(newer);
                    return;
                }
                Err(e) => {
                    tracing::warn!(run_id, error = %e, "cannot record the end of a run");
                }
            }
        }
    }

    /// One attempt at [`RunStore::finish_run`]. The lease is kept until the outcome is
    /// known, so a retry after a database error is still fenced.
    async fn finish_once(&self, run_id: i64, finish: &RunFinish) -> StoreResult<bool> {
        let fence = self.lease(run_id);
        let changed = sqlx::query(
            "UPDATE job_runs SET status = $1, finished_at = $2, \
                 duration_ms = GREATEST($2 - started_at, 0), message = COALESCE($3, message), \
                 error = $4, stats = $5 \
             WHERE id = $6 AND status = 'running' AND ($7::BIGINT IS NULL OR fence = $7)",
        )
        .bind(finish.status.as_str())
        .bind(millis(finish.finished_at))
        .bind(finish.message.as_deref())
        .bind(finish.error.as_deref())
        .bind(finish.stats.to_string())
        .bind(run_id)
        .bind(fence)
        .execute(&self.inner.pool)
        .await
        .db()?
        .rows_affected();
        if changed > 0 {
            self.drop_lease(run_id);
            return Ok(true);
        }
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM job_runs WHERE id = $1")
                .bind(run_id)
                .fetch_optional(&self.inner.pool)
                .await
                .db()?;
        self.drop_lease(run_id);
        match status {
            None => Err(StoreError::NoSuchRun(run_id)),
            Some(status) => {
                if fence.is_some() && status == RunStatus::Interrupted.as_str() {
                    tracing::warn!(
                        run_id,
                        fence,
                        status = finish.status.as_str(),
                        "run end rejected by its fencing token: another replica took the run \
                         over while it was going here; the row keeps the interrupted status"
                    );
                }
                Ok(false)
            }
        }
    }
}

impl Inner {
    /// The role written in this handle's node row: a daemon is `starting` until its scheduler
    /// runs, and only `daemon` rows share the jobs (see [`members`]).
    pub(super) fn node_role(&self) -> &'static str {
        if self.role != "daemon" {
            self.role
        } else if self.stopped.load(Ordering::SeqCst) {
            "stopping"
        } else if !self.scheduling.load(Ordering::SeqCst) {
            "starting"
        } else {
            self.role
        }
    }

    /// An operation reached the database.
    pub(super) fn db_ok(&self) {
        let mut h = self.healthy_since.lock().unwrap_or_else(|p| p.into_inner());
        if h.is_none() {
            *h = Some(std::time::Instant::now());
        }
    }

    /// An operation failed on the database.
    pub(super) fn db_failed(&self) {
        *self.healthy_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The heartbeat age (ms) beyond which another node counts as dead, for this handle now:
    /// `dead_after`, unless this handle has not reached the database for that long without a
    /// failure (an outage made every heartbeat stale: nobody is judged dead until everyone had
    /// `dead_after` to beat again).
    pub(super) fn judged_dead_after_ms(&self) -> i64 {
        let healthy = *self.healthy_since.lock().unwrap_or_else(|p| p.into_inner());
        match healthy {
            Some(t) if t.elapsed().as_millis() >= self.dead_after_ms.max(0) as u128 => {
                self.dead_after_ms
            }
            _ => i64::MAX / 4,
        }
    }
}

/// Applies pending migrations through a pool of one connection of its own. sqlx's migrator
/// takes a session advisory lock and does not release it when it fails (a schema newer than
/// this build): closing that connection releases it, where a connection of the store's pool
/// would keep it and block the next replica's start.
async fn migrate(connect: &PgConnectOptions) -> StoreResult<()> {
    let open_error = |source: sqlx::Error| StoreError::Open {
        url: format!(
            "postgres://{}:{}/{}",
            connect.get_host(),
            connect.get_port(),
            connect.get_database().unwrap_or("")
        ),
        source: Box::new(source),
    };
    // First one plain connection: a pool retries a refused connection until its acquire
    // timeout and then says only "pool timed out"; a connection reports at once why it
    // failed ("Connection refused", an unknown database, a refused login).
    PgConnection::connect_with(connect)
        .await
        .map_err(open_error)?
        .close()
        .await
        .map_err(open_error)?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(connect.clone())
        .await
        .map_err(open_error)?;
    let result = MIGRATOR.run(&pool).await;
    pool.close().await;
    result.map_err(crate::from_migrate)
}

/// The live daemon nodes (heartbeat younger than `dead_after`).
async fn read_members(pool: &PgPool, dead_after_ms: i64) -> StoreResult<Vec<i64>> {
    sqlx::query_scalar(concat!(
        "SELECT id FROM nodes WHERE role = 'daemon' AND heartbeat_at > ",
        NOW_MS!(),
        " - $1 ORDER BY id"
    ))
    .bind(dead_after_ms)
    .fetch_all(pool)
    .await
    .db()
}

/// `(started_at, finished_at, duration_ms)` of a row being claimed; a skipped tick ends as it
/// starts.
fn claim_times(run: &NewRun) -> (i64, Option<i64>, Option<i64>) {
    let started_at = millis(run.started_at);
    if run.status.is_final() {
        (started_at, Some(started_at), Some(0))
    } else {
        (started_at, None, None)
    }
}

/// Whether an error is worth retrying the whole transaction for.
fn is_transient(e: &StoreError) -> bool {
    match e {
        StoreError::Db(e) => match e.downcast_ref::<sqlx::Error>() {
            Some(sqlx::Error::Database(d)) => {
                matches!(d.code().as_deref(), Some("40P01" | "40001"))
            }
            _ => false,
        },
        _ => false,
    }
}

impl PgStore {
    /// Inserts claimed rows; each gets `Some(id)` or `None` when its tick was taken.
    async fn insert_runs(
        &self,
        conn: &mut PgConnection,
        runs: &[NewRun],
        me: i64,
    ) -> StoreResult<Vec<Option<(i64, i64)>>> {
        let mut ids = vec![None; runs.len()];
        let insert_one = |run: &NewRun| {
            let (started_at, finished_at, duration_ms) = claim_times(run);
            sqlx::query(
                "INSERT INTO job_runs (job_id, scheduled_at, \"trigger\", status, started_at, \
                     finished_at, duration_ms, message, owner_pid, owner_host, owner_node, fence) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, nextval('run_fence')) \
                 ON CONFLICT DO NOTHING RETURNING id, fence",
            )
            .bind(run.job_id.clone())
            .bind(millis(run.scheduled_at))
            .bind(run.trigger.as_str())
            .bind(run.status.as_str())
            .bind(started_at)
            .bind(finished_at)
            .bind(duration_ms)
            .bind(run.message.clone())
            .bind(self.inner.pid)
            .bind(self.inner.host.clone())
            .bind(me)
        };
        // Manual runs are not unique by instant, so they cannot be matched back from a
        // multi-row RETURNING: a slice with one goes row by row, in order.
        if runs.iter().any(|r| r.trigger == Trigger::Manual) {
            for (i, run) in runs.iter().enumerate() {
                let row = insert_one(run).fetch_optional(&mut *conn).await.db()?;
                ids[i] = row
                    .map(|r| Ok::<_, sqlx::Error>((r.try_get("id")?, r.try_get("fence")?)))
                    .transpose()
                    .db()?;
            }
            return Ok(ids);
        }
        // One statement for all: ticks due together cost one round trip. Sorted by the claim
        // key, the same order on every replica (see the module docs: no deadlock cycles).
        let mut keyed: HashMap<(&str, i64), usize> = HashMap::new();
        let mut order: Vec<usize> = Vec::new();
        for (i, run) in runs.iter().enumerate() {
            if let std::collections::hash_map::Entry::Vacant(slot) =
                keyed.entry((run.job_id.as_str(), millis(run.scheduled_at)))
            {
                slot.insert(i);
                order.push(i);
            }
        }
        order.sort_by_key(|&i| (runs[i].job_id.as_str(), millis(runs[i].scheduled_at)));
        let n = order.len();
        let mut job_ids: Vec<String> = Vec::with_capacity(n);
        let mut ticks: Vec<i64> = Vec::with_capacity(n);
        let mut triggers: Vec<&str> = Vec::with_capacity(n);
        let mut statuses: Vec<&str> = Vec::with_capacity(n);
        let mut starts: Vec<i64> = Vec::with_capacity(n);
        let mut finishes: Vec<Option<i64>> = Vec::with_capacity(n);
        let mut durations: Vec<Option<i64>> = Vec::with_capacity(n);
        let mut messages: Vec<Option<String>> = Vec::with_capacity(n);
        for &i in &order {
            let run = &runs[i];
            let (started_at, finished_at, duration_ms) = claim_times(run);
            job_ids.push(run.job_id.clone());
            ticks.push(millis(run.scheduled_at));
            triggers.push(run.trigger.as_str());
            statuses.push(run.status.as_str());
            starts.push(started_at);
            finishes.push(finished_at);
            durations.push(duration_ms);
            messages.push(run.message.clone());
        }
        let rows = sqlx::query(
            "INSERT INTO job_runs (job_id, scheduled_at, \"trigger\", status, started_at, \
                 finished_at, duration_ms, message, owner_pid, owner_host, owner_node, fence) \
             SELECT j, s, t, st, sa, fa, d, m, $9, $10, $11, nextval('run_fence') \
             FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::BIGINT[], \
                         $6::BIGINT[], $7::BIGINT[], $8::TEXT[]) \
                  WITH ORDINALITY AS u(j, s, t, st, sa, fa, d, m, n) \
             ORDER BY n \
             ON CONFLICT DO NOTHING RETURNING id, job_id, scheduled_at, fence",
        )
        .bind(job_ids)
        .bind(ticks)
        .bind(triggers)
        .bind(statuses)
        .bind(starts)
        .bind(finishes)
        .bind(durations)
        .bind(messages)
        .bind(self.inner.pid)
        .bind(self.inner.host.clone())
        .bind(me)
        .fetch_all(&mut *conn)
        .await
        .db()?;
        for row in rows {
            let job_id: String = row.try_get("job_id").db()?;
            let at: i64 = row.try_get("scheduled_at").db()?;
            if let Some(&i) = keyed.get(&(job_id.as_str(), at)) {
                ids[i] = Some((row.try_get("id").db()?, row.try_get("fence").db()?));
            }
        }
        Ok(ids)
    }

    /// Marks the given rows `interrupted` (those still `running`) with `message`.
    async fn interrupt_ids(
        conn: &mut PgConnection,
        ids: &[i64],
        now: DateTime<Utc>,
        message: &str,
    ) -> StoreResult<Vec<RunRecord>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(concat!(
            "UPDATE job_runs SET status = 'interrupted', \
                 finished_at = GREATEST(started_at, $1), \
                 duration_ms = GREATEST($1 - started_at, 0), message = $2 \
             WHERE id = ANY($3) AND status = 'running' RETURNING ",
            run_columns!()
        ))
        .bind(millis(now))
        .bind(message)
        .bind(ids)
        .fetch_all(&mut *conn)
        .await
        .db()?;
        let mut runs = runs_from_rows(&rows)?;
        runs.sort_by_key(|r| r.id);
        Ok(runs)
    }

    /// One attempt at a claim, in its own transaction.
    async fn claim_once(&self, runs: &[NewRun], exclusive: &[bool]) -> StoreResult<Vec<Claim>> {
        let is_exclusive = |i: usize| exclusive.get(i).copied().unwrap_or(false);
        let mut jobs: Vec<&str> = runs
            .iter()
            .enumerate()
            .filter(|(i, _)| is_exclusive(*i))
            .map(|(_, r)| r.job_id.as_str())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        jobs.sort_unstable();
        // This node must still exist: a handle declared dead (after a SIGSTOP) registers
        // again before it claims, or its rows would belong to a deleted node. The claim
        // renews the node's heartbeat: its row lock keeps another replica from deleting the
        // node until this claim commits, and nobody can declare it dead until `dead_after`
        // after `sent`, which is what lets `mark_started` vouch for a fresh claim without a
        // query (the claim's lease).
        //
        // The same statement takes the advisory locks of the exclusive jobs: they serialise
        // exclusive claims of a job across processes until commit (taken in job order, so two
        // claimers cannot deadlock; PostgreSQL evaluates a volatile function of the select list
        // after the ORDER BY). The running rows are read in the next statement, whose snapshot
        // is taken after the locks are held. One round trip for both: on a loaded server every
        // round trip of the claim transaction waits for a CPU, and the claim's length decides
        // whether its ticks fire on time.
        let mut me = self.me();
        let mut attempts = 0;
        let (mut tx, sent) = loop {
            attempts += 1;
            let sent = std::time::Instant::now();
            let mut tx = self.inner.pool.begin().await.db()?;
            let alive: Option<i64> = sqlx::query_scalar(concat!(
                "WITH me AS (UPDATE nodes SET heartbeat_at = ",
                NOW_MS!(),
                " WHERE id = $1 RETURNING id) \
                 SELECT (SELECT id FROM me) AS id, \
                        (SELECT COUNT(*) FROM ( \
                             SELECT pg_advisory_xact_lock(hashtextextended(j, 7201)) \
                             FROM UNNEST($2::TEXT[]) WITH ORDINALITY AS u(j, n) ORDER BY n \
                         ) l) AS locked"
            ))
            .bind(me)
            .bind(&jobs)
            .fetch_one(&mut *tx)
            .await
            .db()?;
            if alive.is_some() || attempts > 1 {
                break (tx, sent);
            }
            tx.rollback().await.db()?;
            me = self.inner.reregister(me).await?;
        };
        // Scheduled ticks due before this handle registered again were its jobs' ticks while
        // it was dead (frozen or cut off): the replicas that took the jobs over claimed them
        // or decided them per `misfire`. Claiming them now (a stalled scheduler catching up)
        // would run a tick twice over, or a second catch-up: refused, as taken.
        let reregistered = self.inner.reregistered_ms.load(Ordering::SeqCst);
        let stale = |run: &NewRun| {
            reregistered > 0
                && run.trigger == Trigger::Schedule
                && millis(run.scheduled_at) < reregistered
        };
        let refused = runs.iter().filter(|r| stale(r)).count();
        if refused > 0 {
            tracing::warn!(
                ticks = refused,
                "ticks due while this replica was declared dead not claimed: the replicas \
                 that took its jobs over decided them"
            );
        }
        let mut holders: HashMap<String, Vec<RunHolder>> = HashMap::new();
        // (A tick another replica claimed first is not inserted again: `ON CONFLICT DO
        // NOTHING` answers it `Taken`, and nothing is recorded or logged for it.)
        if !jobs.is_empty() {
            let rows = sqlx::query(concat!(
                "SELECT r.id, r.job_id, r.\"trigger\", r.owner_pid, r.owner_host, r.owner_node, \
                        n.id IS NOT NULL AS registered, \
                        (n.id IS NOT NULL AND n.heartbeat_at > ",
                NOW_MS!(),
                " - $2) AS live \
                 FROM job_runs r LEFT JOIN nodes n ON n.id = r.owner_node \
                 WHERE r.status = 'running' AND r.job_id = ANY($1) \
                   AND r.owner_node IS DISTINCT FROM $3 \
                 ORDER BY r.id"
            ))
            .bind(&jobs)
            .bind(self.inner.judged_dead_after_ms())
            .bind(me)
            .fetch_all(&mut *tx)
            .await
            .db()?;
            // Rows of a node that stopped heartbeating (killed, frozen) and of a node that
            // is gone (closed with the run still running): told apart in their message.
            let (mut dead, mut gone) = (Vec::new(), Vec::new());
            for row in &rows {
                let id: i64 = row.try_get("id").db()?;
                if row.try_get::<bool, _>("live").db()? {
                    let job_id: String = row.try_get("job_id").db()?;
                    holders.entry(job_id).or_default().push(RunHolder {
                        run_id: id,
                        trigger: parse_trigger(row.try_get("trigger").db()?)?,
                        owner: owner_from_row(row)?,
                    });
                } else if row.try_get::<bool, _>("registered").db()? {
                    dead.push(id);
                } else {
                    gone.push(id);
                }
            }
            let mut interrupted =
                Self::interrupt_ids(&mut tx, &dead, Utc::now(), DEAD_MESSAGE).await?;
            interrupted
                .extend(Self::interrupt_ids(&mut tx, &gone, Utc::now(), GONE_MESSAGE).await?);
            for r in interrupted {
                tracing::warn!(
                    job_id = %r.job_id, run_id = r.id, scheduled_at = %r.scheduled_at.to_rfc3339(),
                    "run interrupted: the process running it is gone"
                );
            }
        }
        let mut plan: Vec<(usize, &NewRun)> = Vec::with_capacity(runs.len());
        let mut claims: Vec<Claim> = vec![Claim::Taken; runs.len()];
        for (i, run) in runs.iter().enumerate() {
            if stale(run) {
                continue;
            }
            let held = is_exclusive(i)
                .then(|| holders.get(&run.job_id).and_then(|h| h.first()))
                .flatten();
            match held {
                // A manual run that may not start records nothing: its caller is told.
                Some(h) if run.trigger == Trigger::Manual => {
                    claims[i] = Claim::Busy { holder: h.clone() }
                }
                // A tick is claimed all the same: whether it runs is decided when it fires
                // (the holder may have ended by then), as on one node.
                _ => plan.push((i, run)),
            }
        }
        let rows: Vec<NewRun> = plan.iter().map(|(_, r)| (*r).clone()).collect();
        let ids = self.insert_runs(&mut tx, &rows, me).await?;
        tx.commit().await.db()?;

        let mut leases = self.inner.leases.lock().unwrap_or_else(|p| p.into_inner());
        for ((i, run), id) in plan.iter().zip(ids) {
            let Some((id, fence)) = id else {
                continue;
            };
            if run.status == RunStatus::Running {
                leases.insert(
                    id,
                    Lease {
                        fence,
                        node: me,
                        renewed: sent,
                    },
                );
            }
            let held = is_exclusive(*i)
                .then(|| holders.get(&run.job_id))
                .flatten()
                .filter(|h| !h.is_empty());
            claims[*i] = match held {
                Some(h) => Claim::Contended {
                    run_id: id,
                    holder: h[0].clone(),
                    holders: h.iter().map(|h| h.run_id).collect(),
                },
                None => Claim::Claimed(id),
            };
        }
        Ok(claims)
    }
}

#[async_trait]
impl RunStore for PgStore {
    async fn claim_runs(&self, runs: &[NewRun]) -> StoreResult<Vec<Option<i64>>> {
        let none = vec![false; runs.len()];
        Ok(self
            .claim_runs_exclusive(runs, &none)
            .await?
            .into_iter()
            .map(|c| match c {
                Claim::Claimed(id) | Claim::Contended { run_id: id, .. } => Some(id),
                Claim::Taken | Claim::Busy { .. } => None,
            })
            .collect())
    }

    async fn claim_runs_exclusive(
        &self,
        runs: &[NewRun],
        exclusive: &[bool],
    ) -> StoreResult<Vec<Claim>> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        let mut attempt = 1;
        loop {
            match self.claim_once(runs, exclusive).await {
                Err(e) if attempt < CLAIM_ATTEMPTS && is_transient(&e) => {
                    tracing::debug!(error = %e, attempt, "claim conflicted with another replica, retrying");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// A holder counts while its row is `running` and its node is live (judged as a claim
    /// judges it: after an outage, stale heartbeats do not count as dead yet).
    async fn holding(&self, run_ids: &[i64]) -> StoreResult<Option<RunHolder>> {
        if run_ids.is_empty() {
            return Ok(None);
        }
        let row = sqlx::query(concat!(
            "SELECT r.id, r.\"trigger\", r.owner_pid, r.owner_host, r.owner_node \
             FROM job_runs r JOIN nodes n ON n.id = r.owner_node \
             WHERE r.id = ANY($1) AND r.status = 'running' AND n.heartbeat_at > ",
            NOW_MS!(),
            " - $2 ORDER BY r.id LIMIT 1"
        ))
        .bind(run_ids)
        .bind(self.inner.judged_dead_after_ms())
        .fetch_optional(&self.inner.pool)
        .await
        .db()?;
        row.map(|row| {
            Ok(RunHolder {
                run_id: row.try_get("id").db()?,
                trigger: parse_trigger(row.try_get("trigger").db()?)?,
                owner: owner_from_row(&row)?,
            })
        })
        .transpose()
    }

    /// The fencing of claims (see [`RunStore::mark_started`]): fresh claims are vouched for
    /// by their lease, the others checked in one statement that also renews the heartbeat, so
    /// a run confirmed here cannot be taken over for `dead_after` either.
    async fn mark_started(&self, runs: &[(i64, Option<DateTime<Utc>>)]) -> StartCheck {
        let me = self.me();
        let fresh = std::time::Duration::from_millis(
            u64::try_from(self.inner.dead_after_ms / 2).unwrap_or(0),
        );
        let mut check = StartCheck::default();
        let mut ask: Vec<(i64, Option<i64>, i64)> = Vec::new();
        {
            let leases = self.inner.leases.lock().unwrap_or_else(|p| p.into_inner());
            for (id, start) in runs {
                match leases.get(id) {
                    Some(l) if start.is_none() && l.node == me && l.renewed.elapsed() < fresh => {}
                    Some(l) if l.node == me => ask.push((*id, start.map(millis), l.fence)),
                    // Claimed under a node this handle no longer is (it was declared dead and
                    // registered again): the new owner interrupted the row.
                    Some(_) | None => check.lost.push(*id),
                }
            }
        }
        if !ask.is_empty() {
            let ids: Vec<i64> = ask.iter().map(|a| a.0).collect();
            let starts: Vec<Option<i64>> = ask.iter().map(|a| a.1).collect();
            let fences: Vec<i64> = ask.iter().map(|a| a.2).collect();
            let sent = std::time::Instant::now();
            let result = sqlx::query(concat!(
                "WITH me AS ( \
                     UPDATE nodes SET heartbeat_at = ",
                NOW_MS!(),
                " WHERE id = $1 RETURNING id \
                 ), started AS ( \
                     UPDATE job_runs r SET started_at = COALESCE(u.s, r.started_at) \
                     FROM UNNEST($2::BIGINT[], $3::BIGINT[], $4::BIGINT[]) AS u(id, s, f) \
                     WHERE r.id = u.id AND r.status = 'running' AND r.owner_node = $1 \
                       AND r.fence = u.f AND EXISTS (SELECT 1 FROM me) \
                     RETURNING r.id \
                 ) \
                 SELECT EXISTS (SELECT 1 FROM me) AS alive, \
                        ARRAY(SELECT id FROM started) AS ids"
            ))
            .bind(me)
            .bind(&ids)
            .bind(&starts)
            .bind(&fences)
            .fetch_one(&self.inner.pool)
            .await
            .and_then(|row| {
                Ok((
                    row.try_get::<bool, _>("alive")?,
                    row.try_get::<Vec<i64>, _>("ids")?,
                ))
            });
            match result {
                Ok((alive, confirmed)) => {
                    self.inner.db_ok();
                    let confirmed: HashSet<i64> = confirmed.into_iter().collect();
                    {
                        let mut leases =
                            self.inner.leases.lock().unwrap_or_else(|p| p.into_inner());
                        for id in ids {
                            if confirmed.contains(&id) {
                                if let Some(l) = leases.get_mut(&id) {
                                    l.renewed = sent;
                                }
                            } else {
                                check.lost.push(id);
                            }
                        }
                    }
                    if !alive {
                        // Declared dead: register again now (the heartbeat would within a
                        // beat), which stops the runs still going here.
                        if let Err(e) = self.inner.reregister(me).await {
                            tracing::warn!(error = %e, "cannot register this replica again");
                        }
                    }
                }
                Err(e) => {
                    self.inner.db_failed();
                    check.error = Some(soarjobd_core::error_chain(&e));
                    check.unconfirmed = ids;
                }
            }
        }
        if !check.lost.is_empty() {
            let mut leases = self.inner.leases.lock().unwrap_or_else(|p| p.into_inner());
            for id in &check.lost {
                leases.remove(id);
            }
        }
        check
    }

    /// Fenced: a run this handle claimed is finished only while its row is still `running`
    /// with the run's token. A finish refused because another replica took the run over is
    /// logged and returns `false`; the row keeps what the new owner wrote. A finish that fails
    /// on a database error is kept and retried (see [`PgStore::retry_unrecorded`]); the error
    /// is still returned, so the runner logs it.
    async fn finish_run(&self, run_id: i64, finish: &RunFinish) -> StoreResult<bool> {
        if !finish.status.is_final() {
            return Err(StoreError::Corrupt {
                column: "status",
                value: finish.status.as_str().to_owned(),
            });
        }
        let result = self.finish_once(run_id, finish).await;
        if let Err(StoreError::Db(_)) = &result {
            // Kept with its lease, and retried after the next successful heartbeat or sweep:
            // an outage shorter than `dead_after` loses no run end, and the row does not stay
            // `running` (which would hold `overlap: skip` and look like a dead replica's run).
            let mut kept = self
                .inner
                .unrecorded
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if kept.len() >= MAX_UNRECORDED {
                kept.remove(0);
            }
            kept.push((run_id, finish.clone()));
        }
        result
    }

    async fn unclaim(&self, run_id: i64) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM job_runs WHERE id = $1 AND status = 'running'")
            .bind(run_id)
            .execute(&self.inner.pool)
            .await
            .db()?;
        self.drop_lease(run_id);
        Ok(done.rows_affected() > 0)
    }

    /// Deletes the nodes whose heartbeat is older than `dead_after` and marks `running`
    /// rows of dead or gone nodes `interrupted`, in one statement: of several replicas
    /// sweeping at once, exactly one gets each row back (and makes its catch-up run). The same
    /// statement reads the live replicas, which decide who schedules which job
    /// ([`members`]): the sweep (ten times per heartbeat) costs one round trip.
    async fn interrupt_running(&self, now: DateTime<Utc>) -> StoreResult<Vec<RunRecord>> {
        let me = self.me();
        // The main SELECT sees `nodes` as it was before the CTE's DELETE: the nodes deleted
        // now are left out by hand. At least one row comes back (the LEFT JOIN), carrying the
        // members; run columns are NULL when no run was interrupted.
        let result = sqlx::query(concat!(
            "WITH gone AS ( \
                 DELETE FROM nodes WHERE id <> $1 AND heartbeat_at < ",
            NOW_MS!(),
            " - $2 RETURNING id \
             ), \
             taken AS ( \
             UPDATE job_runs SET status = 'interrupted', \
                 finished_at = GREATEST(started_at, $3), \
                 duration_ms = GREATEST($3 - started_at, 0), \
                 message = CASE WHEN owner_node IN (SELECT id FROM gone) THEN $4 ELSE $5 END \
             WHERE status = 'running' AND ( \
                 owner_node IS NULL \
                 OR owner_node IN (SELECT id FROM gone) \
                 OR (owner_node <> $1 \
                     AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.id = job_runs.owner_node))) \
             RETURNING ",
            run_columns!(),
            ") \
             SELECT m.members, t.* FROM ( \
                 SELECT ARRAY(SELECT id FROM nodes WHERE role = 'daemon' AND heartbeat_at > ",
            NOW_MS!(),
            " - $6 AND id NOT IN (SELECT id FROM gone) ORDER BY id) AS members \
             ) m LEFT JOIN taken t ON TRUE"
        ))
        .bind(me)
        .bind(self.inner.judged_dead_after_ms())
        .bind(millis(now))
        .bind(DEAD_MESSAGE)
        .bind(GONE_MESSAGE)
        .bind(self.inner.dead_after_ms)
        .fetch_all(&self.inner.pool)
        .await;
        let rows = match result {
            Ok(rows) => {
                self.inner.db_ok();
                rows
            }
            Err(e) => {
                self.inner.db_failed();
                return Err(crate::db(e));
            }
        };
        if self.inner.role == "daemon"
            && let Some(row) = rows.first()
        {
            self.inner.members.set(row.try_get("members").db()?);
        }
        self.retry_unrecorded().await;
        let mut runs = Vec::new();
        for row in &rows {
            if row.try_get::<Option<i64>, _>("id").db()?.is_some() {
                runs.push(run_from_row(row)?);
            }
        }
        runs.sort_by_key(|r| r.id);
        Ok(runs)
    }

    async fn scheduling(&self) -> StoreResult<()> {
        self.inner.scheduling.store(true, Ordering::SeqCst);
        sqlx::query("UPDATE nodes SET role = $2 WHERE id = $1")
            .bind(self.me())
            .bind(self.inner.node_role())
            .execute(&self.inner.pool)
            .await
            .db()?;
        Ok(())
    }

    async fn stopped_scheduling(&self) -> StoreResult<()> {
        self.inner.stopped.store(true, Ordering::SeqCst);
        sqlx::query("UPDATE nodes SET role = $2 WHERE id = $1")
            .bind(self.me())
            .bind(self.inner.node_role())
            .execute(&self.inner.pool)
            .await
            .db()?;
        Ok(())
    }

    fn owns(&self, job_id: &str) -> bool {
        let me = self.me();
        self.inner.members.get().owner(job_id, me) == me
    }

    fn owner_of(&self, job_id: &str) -> Option<i64> {
        Some(self.inner.members.get().owner(job_id, self.me()))
    }

    fn membership_epoch(&self) -> u64 {
        self.inner.members.get().epoch
    }

    async fn last_scheduled_at(&self, job_id: &str) -> StoreResult<Option<DateTime<Utc>>> {
        let ms: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(scheduled_at) FROM job_runs WHERE job_id = $1 AND \"trigger\" <> 'manual'",
        )
        .bind(job_id)
        .fetch_one(&self.inner.pool)
        .await
        .db()?;
        ms.map(|ms| from_millis("scheduled_at", ms)).transpose()
    }

    async fn last_ticks(&self, job_ids: &[String]) -> StoreResult<Vec<RunRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT DISTINCT ON (job_id) ",
            run_columns!(),
            " FROM job_runs WHERE job_id = ANY($1) AND \"trigger\" <> 'manual' \
             ORDER BY job_id, scheduled_at DESC, id DESC"
        ))
        .bind(job_ids)
        .fetch_all(&self.inner.pool)
        .await
        .db()?;
        runs_from_rows(&rows)
    }

    async fn run(&self, run_id: i64) -> StoreResult<Option<RunRecord>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM job_runs WHERE id = $1"
        ))
        .bind(run_id)
        .fetch_optional(&self.inner.pool)
        .await
        .db()?;
        row.as_ref().map(run_from_row).transpose()
    }

    async fn history(&self, job_id: &str, limit: u32) -> StoreResult<Vec<RunRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM job_runs WHERE job_id = $1 ORDER BY started_at DESC, id DESC LIMIT $2"
        ))
        .bind(job_id)
        .bind(i64::from(limit))
        .fetch_all(&self.inner.pool)
        .await
        .db()?;
        runs_from_rows(&rows)
    }

    async fn last_runs(&self) -> StoreResult<Vec<RunRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT DISTINCT ON (job_id) ",
            run_columns!(),
            " FROM job_runs ORDER BY job_id, started_at DESC, id DESC"
        ))
        .fetch_all(&self.inner.pool)
        .await
        .db()?;
        runs_from_rows(&rows)
    }

    async fn recent_runs(&self, job_ids: &[String], per_job: u32) -> StoreResult<Vec<RunMark>> {
        if job_ids.is_empty() || per_job == 0 {
            return Ok(Vec::new());
        }
        // One lateral index probe per distinct id (the history index, newest first). Sorted
        // by the ids' bytes (`COLLATE "C"`), as SQLite sorts them, whatever the database's
        // collation.
        let rows = sqlx::query(
            "SELECT r.id, r.job_id, r.scheduled_at, r.\"trigger\", r.status, r.started_at, \
                    r.duration_ms \
             FROM (SELECT DISTINCT unnest($1::text[]) AS job_id) j \
             CROSS JOIN LATERAL ( \
                 SELECT x.id, x.job_id, x.scheduled_at, x.\"trigger\", x.status, x.started_at, \
                        x.duration_ms \
                 FROM job_runs x WHERE x.job_id = j.job_id \
                 ORDER BY x.started_at DESC, x.id DESC LIMIT $2) r \
             ORDER BY r.job_id COLLATE \"C\", r.started_at DESC, r.id DESC",
        )
        .bind(job_ids)
        .bind(i64::from(per_job))
        .fetch_all(&self.inner.pool)
        .await
        .db()?;
        marks_from_rows(&rows)
    }

    async fn prune(&self, keep_runs: u32, older_than: DateTime<Utc>) -> StoreResult<u64> {
        let deleted = sqlx::query(
            "DELETE FROM job_runs WHERE id IN ( \
                 SELECT id FROM ( \
                     SELECT id, status, started_at, \
                            ROW_NUMBER() OVER (PARTITION BY job_id \
                                               ORDER BY started_at DESC, id DESC) AS rn \
                     FROM job_runs \
                 ) ranked \
                 WHERE rn > $1 AND started_at < $2 AND status <> 'running' \
             ) AND status <> 'running'",
        )
        .bind(i64::from(keep_runs))
        .bind(millis(older_than))
        .execute(&self.inner.pool)
        .await
        .db()?
        .rows_affected();
        Ok(deleted)
    }

    /// One statement for the runs (ranked per job, and per job among its failed or other
    /// runs), one for the oldest run-log lines; several replicas pruning at once delete each
    /// row once.
    async fn prune_step(&self, r: &Retention, limit: u32) -> StoreResult<Pruned> {
        let runs = sqlx::query(
            "DELETE FROM job_runs WHERE id IN ( \
                 SELECT id FROM ( \
                     SELECT id, status, started_at, \
                            ROW_NUMBER() OVER (PARTITION BY job_id \
                                               ORDER BY started_at DESC, id DESC) AS rn, \
                            ROW_NUMBER() OVER (PARTITION BY job_id, \
                                               status IN ('failed', 'timed_out', 'interrupted') \
                                               ORDER BY started_at DESC, id DESC) AS crn \
                     FROM job_runs \
                 ) ranked \
                 WHERE status <> 'running' AND rn > 1 AND CASE \
                     WHEN status IN ('failed', 'timed_out', 'interrupted') \
                     THEN crn > $3 OR started_at < $4 \
                     ELSE rn > $1 OR started_at < $2 END \
                 ORDER BY started_at, id LIMIT $5 \
             ) AND status <> 'running'",
        )
        .bind(i64::from(r.keep_runs))
        .bind(millis(r.older_than))
        .bind(i64::from(r.keep_failed_runs))
        .bind(millis(r.failed_older_than))
        .bind(i64::from(limit))
        .execute(&self.inner.pool)
        .await
        .db()?
        .rows_affected();
        let log_rows = sqlx::query(
            "DELETE FROM run_logs WHERE ctid IN ( \
                 SELECT ctid FROM run_logs WHERE at < $1 LIMIT $2)",
        )
        .bind(millis(r.logs_older_than))
        .bind(i64::from(limit))
        .execute(&self.inner.pool)
        .await
        .db()?
        .rows_affected();
        Ok(Pruned { runs, log_rows })
    }

    async fn reclaim(&self) -> StoreResult<Option<u64>> {
        // PostgreSQL's autovacuum reuses the space of deleted rows; the size is what it is.
        let bytes: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
            .fetch_one(&self.inner.pool)
            .await
            .db()?;
        Ok(u64::try_from(bytes).ok())
    }

    /// Stops the heartbeat and deletes this node's row, so another replica does not wait for
    /// `dead_after` to take over whatever this handle left `running`; then closes the pool.
    async fn close(&self) {
        self.inner.stop.cancel();
        self.retry_unrecorded().await;
        if let Err(e) = sqlx::query("DELETE FROM nodes WHERE id = $1")
            .bind(self.me())
            .execute(&self.inner.pool)
            .await
        {
            tracing::warn!(error = %e, "cannot remove this node from the cluster at close");
        }
        self.inner.pool.close().await;
    }

    async fn record_run_process(&self, p: &RunProcess) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO run_processes (run_id, host, boot_id, owner_pid, owner_start_ticks, \
                                        pgid, leader_start_ticks, token, cgroup, recorded_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (run_id) DO UPDATE SET host = excluded.host, \
                 boot_id = excluded.boot_id, owner_pid = excluded.owner_pid, \
                 owner_start_ticks = excluded.owner_start_ticks, pgid = excluded.pgid, \
                 leader_start_ticks = excluded.leader_start_ticks, token = excluded.token, \
                 cgroup = excluded.cgroup, recorded_at = excluded.recorded_at",
        )
        .bind(p.run_id)
        .bind(&p.host)
        .bind(&p.boot_id)
        .bind(p.owner_pid)
        .bind(ticks_to_db(p.owner_start_ticks))
        .bind(p.pgid)
        .bind(p.leader_start_ticks.map(ticks_to_db))
        .bind(&p.token)
        .bind(p.cgroup.as_deref())
        .bind(millis(p.recorded_at))
        .execute(&self.inner.pool)
        .await
        .db()?;
        Ok(())
    }

    async fn run_processes(&self) -> StoreResult<Vec<RunProcess>> {
        let rows = sqlx::query(
            "SELECT run_id, host, boot_id, owner_pid, owner_start_ticks, pgid, \
                    leader_start_ticks, token, cgroup, recorded_at \
             FROM run_processes ORDER BY run_id",
        )
        .fetch_all(&self.inner.pool)
        .await
        .db()?;
        rows.iter().map(process_from_row).collect()
    }

    async fn forget_run_process(&self, run_id: i64) -> StoreResult<bool> {
        let deleted = sqlx::query("DELETE FROM run_processes WHERE run_id = $1")
            .bind(run_id)
            .execute(&self.inner.pool)
            .await
            .db()?
            .rows_affected();
        Ok(deleted > 0)
    }

    async fn nodes(&self) -> StoreResult<Option<Vec<NodeInfo>>> {
        let me = self.me();
        let rows = sqlx::query(concat!(
            "SELECT id, host, pid, version, role, started_at, heartbeat_at, \
                    heartbeat_at > ",
            NOW_MS!(),
            " - $1 AS alive FROM nodes ORDER BY id"
        ))
        .bind(self.inner.dead_after_ms)
        .fetch_all(&self.inner.pool)
        .await
        .db()?;
        rows.iter()
            .map(|row| {
                let id: i64 = row.try_get("id").db()?;
                Ok(NodeInfo {
                    id,
                    host: row.try_get("host").db()?,
                    pid: row.try_get("pid").db()?,
                    version: row.try_get("version").db()?,
                    role: row.try_get("role").db()?,
                    started_at: from_millis("started_at", row.try_get("started_at").db()?)?,
                    heartbeat_at: from_millis("heartbeat_at", row.try_get("heartbeat_at").db()?)?,
                    alive: row.try_get("alive").db()?,
                    this: id == me,
                })
            })
            .collect::<StoreResult<Vec<_>>>()
            .map(Some)
    }

    async fn request_cancel(&self, run_id: i64) -> StoreResult<bool> {
        let n = sqlx::query(
            "UPDATE job_runs SET cancel_requested = TRUE WHERE id = $1 AND status = 'running'",
        )
        .bind(run_id)
        .execute(&self.inner.pool)
        .await
        .db()?
        .rows_affected();
        Ok(n > 0)
    }

    fn cluster_events(&self) -> Option<mpsc::UnboundedReceiver<ClusterEvent>> {
        self.inner
            .events_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

#[async_trait]
impl JobStateStore for PgStore {
    async fn get_timestamp(&self, job_id: &str, key: &str) -> StoreResult<Option<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT value_ms FROM job_timestamps WHERE job_id = $1 AND \"key\" = $2",
        )
        .bind(job_id)
        .bind(key)
        .fetch_optional(&self.inner.pool)
        .await
        .db()?)
    }

    async fn set_timestamp(&self, job_id: &str, key: &str, unix_ms: i64) -> StoreResult<()> {
        fenced::set_timestamp(&self.inner.pool, None, job_id, key, unix_ms).await
    }

    async fn all_timestamps(&self) -> StoreResult<Vec<(String, String, i64)>> {
        sqlx::query_as(
            "SELECT job_id, \"key\", value_ms FROM job_timestamps ORDER BY job_id, \"key\"",
        )
        .fetch_all(&self.inner.pool)
        .await
        .db()
    }

    async fn context_get(&self, job_id: &str, key: &str) -> StoreResult<Option<serde_json::Value>> {
        let text: Option<String> = sqlx::query_scalar(
            "SELECT \"value\" FROM job_context WHERE job_id = $1 AND \"key\" = $2",
        )
        .bind(job_id)
        .bind(key)
        .fetch_optional(&self.inner.pool)
        .await
        .db()?;
        text.map(|t| parse_json("value", t)).transpose()
    }

    async fn context_set(
        &self,
        job_id: &str,
        key: &str,
        value: &serde_json::Value,
    ) -> StoreResult<()> {
        fenced::context_set(&self.inner.pool, None, job_id, key, value).await
    }

    async fn context_delete(&self, job_id: &str, key: &str) -> StoreResult<bool> {
        fenced::context_delete(&self.inner.pool, None, job_id, key).await
    }

    async fn context_all(
        &self,
        job_id: &str,
    ) -> StoreResult<serde_json::Map<String, serde_json::Value>> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT \"key\", \"value\" FROM job_context WHERE job_id = $1 ORDER BY \"key\"",
        )
        .bind(job_id)
        .fetch_all(&self.inner.pool)
        .await
        .db()?;
        rows.into_iter()
            .map(|(key, value)| Ok((key, parse_json("value", value)?)))
            .collect()
    }

    async fn seen_get(
        &self,
        job_id: &str,
        scope: &str,
        item: &str,
    ) -> StoreResult<Option<SeenEntry>> {
        let row = sqlx::query(
            "SELECT item, state, run_id, updated_at FROM job_seen \
             WHERE job_id = $1 AND scope = $2 AND item = $3",
        )
        .bind(job_id)
        .bind(scope)
        .bind(item)
        .fetch_optional(&self.inner.pool)
        .await
        .db()?;
        row.as_ref().map(seen_from_row).transpose()
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
        fenced::seen_mark(
            &self.inner.pool,
            None,
            (job_id, scope, item),
            state,
            run_id,
            now,
        )
        .await
    }

    async fn seen_list(
        &self,
        job_id: &str,
        scope: &str,
        state: SeenState,
    ) -> StoreResult<Vec<SeenEntry>> {
        let rows = sqlx::query(
            "SELECT item, state, run_id, updated_at FROM job_seen \
             WHERE job_id = $1 AND scope = $2 AND state = $3 ORDER BY updated_at, item",
        )
        .bind(job_id)
        .bind(scope)
        .bind(state.as_str())
        .fetch_all(&self.inner.pool)
        .await
        .db()?;
        rows.iter().map(seen_from_row).collect()
    }

    async fn seen_remove(&self, job_id: &str, scope: &str, item: &str) -> StoreResult<bool> {
        fenced::seen_remove(&self.inner.pool, None, (job_id, scope, item)).await
    }

    fn for_run(&self, run_id: i64) -> Option<Arc<dyn JobStateStore>> {
        let fence = self.lease(run_id)?;
        Some(Arc::new(fenced::FencedState::new(
            self.clone(),
            run_id,
            fence,
        )))
    }
}

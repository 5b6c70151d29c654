//! The SQLite implementation of [`super::Store`] (both [`RunStore`] and [`JobStateStore`]).
//!
//! The database runs in WAL mode so that the CLI (`history`, `list`) can read while the daemon
//! writes, with `synchronous = NORMAL` (a commit survives a process crash; only an OS crash can
//! lose the last commits) and a busy timeout for writers in other processes.
//!
//! Writers inside this process take an async write gate before they touch the database. SQLite
//! allows one writer at a time; without the gate two connections of the pool would find out by
//! polling the file lock (the busy handler sleeps 1, 2, 5, 10 ms ...), which shows up as tick
//! lateness. With it, writers queue in FIFO order and each one finds the database free.
//!
//! The SQL sticks to forms PostgreSQL accepts too (`ON CONFLICT`, `RETURNING`, window functions,
//! quoted `"trigger"` / `"key"` / `"value"`), so the later backend is a transliteration.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fs::{DirBuilder, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite};
use tokio::sync::{Mutex, MutexGuard};

use super::owner::{Liveness, OwnerExt, OwnerGuard, owners_dir};
use super::{
    Claim, JobStateStore, NewRun, Pruned, Retention, RunFinish, RunHolder, RunMark, RunOwner,
    RunProcess, RunRecord, RunStatus, RunStore, SeenEntry, SeenState, StoreError, StoreResult,
    Trigger,
};
use crate::Db;
use crate::rows::{
    from_millis, millis, opt_from_millis, owner_from_row, parse_json, process_from_row,
    run_from_row, runs_from_rows, seen_from_row, ticks_to_db,
};

mod ops;

/// The migrations in `migrations/sqlite/`, embedded at compile time.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a writer waits for another process's write transaction before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Readers (CLI queries, history) and writers each need a connection; writers are serialised
/// by the write gate, so a few connections are plenty.
const MAX_CONNECTIONS: u32 = 4;

/// Two processes opening a fresh database at once can both try to apply a migration; the loser
/// fails and, on retry, finds it applied.
const MIGRATE_ATTEMPTS: u32 = 3;
/// Attempts at opening the pool while another process switches a new file to WAL.
const CONNECT_ATTEMPTS: u32 = 10;
const CONNECT_RETRY_DELAY: Duration = Duration::from_millis(100);
const MIGRATE_RETRY_DELAY: Duration = Duration::from_millis(200);

/// Rows deleted per write transaction while pruning. Small, so that a tick waiting for the write
/// gate is delayed by well under a millisecond.
const PRUNE_BATCH: usize = 100;

/// Pages an incremental vacuum frees at a time (4 KiB each): a few milliseconds of work.
const RECLAIM_PAGES: u32 = 2000;

/// The message of a `running` row whose process is gone.
const INTERRUPTED_MESSAGE: &str =
    "the process running it (daemon or run-once) stopped while this run was in progress";

/// The columns of `job_runs` in the order [`run_from_row`] reads them by name.
macro_rules! run_columns {
    () => {
        "id, job_id, scheduled_at, \"trigger\", status, started_at, finished_at, duration_ms, \
         message, error, stats, owner_pid, owner_host, owner_nonce"
    };
}

/// `duration_ms` computed from the row's `started_at` and a bound finish time (twice, because
/// positional parameters cannot be reused), never negative if the clock stepped back.
macro_rules! duration_from_started {
    () => {
        "CASE WHEN ? > started_at THEN ? - started_at ELSE 0 END"
    };
}

/// The columns a claim inserts, in the order both claim paths bind them.
macro_rules! claim_columns {
    () => {
        "(job_id, scheduled_at, \"trigger\", status, started_at, finished_at, duration_ms, message, \
          owner_pid, owner_host, owner_nonce)"
    };
}

/// The placeholders of one claimed row.
macro_rules! claim_row {
    () => {
        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    };
}

/// The most run ends kept for a retry while the database fails; beyond it the oldest is
/// dropped (its row is marked `interrupted` at the next start).
const MAX_UNRECORDED: usize = 10_000;

/// Rows per multi-row claim INSERT: 11 parameters each stays far below SQLite's limit.
const CLAIM_CHUNK: usize = 500;

/// `(started_at, finished_at, duration_ms)` of a row being claimed. A row that is final on
/// arrival (a skipped tick) never ran: it ends as it starts.
fn claim_times(run: &NewRun) -> (i64, Option<i64>, Option<i64>) {
    let started_at = millis(run.started_at);
    if run.status.is_final() {
        (started_at, Some(started_at), Some(0))
    } else {
        (started_at, None, None)
    }
}

/// Claims one run (manual runs, which are not unique by instant).
async fn insert_one(
    tx: &mut SqliteConnection,
    run: &NewRun,
    owner: &RunOwner,
) -> StoreResult<Option<i64>> {
    let (started_at, finished_at, duration_ms) = claim_times(run);
    sqlx::query_scalar(concat!(
        "INSERT INTO job_runs ",
        claim_columns!(),
        " VALUES ",
        claim_row!(),
        " ON CONFLICT DO NOTHING RETURNING id"
    ))
    .bind(&run.job_id)
    .bind(millis(run.scheduled_at))
    .bind(run.trigger.as_str())
    .bind(run.status.as_str())
    .bind(started_at)
    .bind(finished_at)
    .bind(duration_ms)
    .bind(run.message.as_deref())
    .bind(owner.pid)
    .bind(&owner.host)
    .bind(&owner.nonce)
    .fetch_optional(&mut *tx)
    .await
    .db()
}

/// One write transaction (`BEGIN IMMEDIATE` ... `COMMIT`) on a pooled connection, holding the
/// write gate for its whole life.
///
/// Invariant: a connection goes back to the pool only after a COMMIT that succeeded. On any
/// other path (BEGIN, a statement or COMMIT failed, or the future was dropped half-way) the
/// connection is closed instead, and closing a SQLite connection rolls back whatever it had
/// open. sqlx's own `Transaction` cannot give this guarantee: when SQLite has already rolled
/// the transaction back by itself (it does so on SQLITE_FULL and SQLITE_IOERR at COMMIT), the
/// ROLLBACK that `Transaction` queues on drop fails, sqlx's transaction depth stays at 1, and
/// the connection returns to the pool looking healthy; every later `begin_with` on it then
/// fails with "attempted to call begin_with at non-zero transaction depth", forever. That is
/// how a few seconds of full disk used to stop all scheduling.
struct WriteTx<'a> {
    conn: PoolConnection<Sqlite>,
    committed: bool,
    _gate: MutexGuard<'a, ()>,
}

impl<'a> WriteTx<'a> {
    async fn begin(store: &'a SqliteStore) -> StoreResult<WriteTx<'a>> {
        let gate = store.write_lock().await;
        let conn = store.pool.acquire().await.db()?;
        let mut tx = WriteTx {
            conn,
            committed: false,
            _gate: gate,
        };
        // IMMEDIATE takes the write lock up front, so a writer in another process makes this
        // wait (busy timeout) instead of failing half-way through the transaction. Issued as a
        // plain statement: sqlx's transaction bookkeeping is what went wrong (see above).
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *tx.conn)
            .await
            .db()?;
        Ok(tx)
    }

    fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }

    /// Commits; on failure the connection is rolled back and closed (never reused).
    async fn commit(mut self) -> StoreResult<()> {
        match sqlx::query("COMMIT").execute(&mut *self.conn).await {
            Ok(_) => {
                self.committed = true;
                Ok(())
            }
            Err(e) => {
                self.abort().await;
                Err(crate::db(e))
            }
        }
    }

    /// Gives up: rolls back while still holding the write gate (so the file lock is free for
    /// the next writer at once), and closes the connection on drop. The ROLLBACK's own error
    /// ("no transaction is active" after SQLite rolled back by itself) does not matter: the
    /// connection is closed either way.
    async fn abort(mut self) {
        let _ = sqlx::query("ROLLBACK").execute(&mut *self.conn).await;
        self.committed = false;
    }

    /// Runs `body` and commits, or aborts when `body` fails.
    async fn finish<T>(self, body: StoreResult<T>) -> StoreResult<T> {
        match body {
            Ok(v) => {
                self.commit().await?;
                Ok(v)
            }
            Err(e) => {
                self.abort().await;
                Err(e)
            }
        }
    }
}

impl Drop for WriteTx<'_> {
    fn drop(&mut self) {
        if !self.committed {
            self.conn.close_on_drop();
        }
    }
}

/// [`Store`] on a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The database file.
    path: PathBuf,
    /// Serialises this process's write transactions (see the module docs).
    write_gate: Arc<Mutex<()>>,
    /// Who this store is, written into every row it claims; registered as open until the
    /// store is closed or its last clone dropped.
    owner: Arc<OwnerGuard>,
    /// Run ends that could not be written (see [`SqliteStore::retry_unrecorded`]).
    unrecorded: Arc<std::sync::Mutex<Vec<(i64, RunFinish)>>>,
    /// Run ends waiting for the next group write (see [`SqliteStore::finish_grouped`]).
    ends: Arc<std::sync::Mutex<Vec<PendingEnd>>>,
    /// Run-process writes waiting for the next group write (see [`SqliteStore::proc_grouped`]).
    procs: Arc<std::sync::Mutex<Vec<PendingProc>>>,
    /// The job the last prune step looked at last (see [`RunStore::prune_step`]).
    prune_cursor: Arc<std::sync::Mutex<String>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url_or_path` — `sqlite:PATH`,
    /// `sqlite://PATH` or a bare path — and applies pending migrations.
    ///
    /// A new database file is created with mode 0600, and missing parent directories with 0700;
    /// an existing file keeps its permissions.
    pub async fn open(url_or_path: &str) -> StoreResult<SqliteStore> {
        Self::open_with(url_or_path, |o| o).await
    }

    /// [`SqliteStore::open`] with changed connection options (tests: a size limit).
    async fn open_with(
        url_or_path: &str,
        adjust: impl FnOnce(SqliteConnectOptions) -> SqliteConnectOptions,
    ) -> StoreResult<SqliteStore> {
        let path = database_path(url_or_path)?;
        let open_error = |source: sqlx::Error| StoreError::Open {
            url: url_or_path.to_owned(),
            source: Box::new(source),
        };
        create_private_file(&path).map_err(|e| open_error(sqlx::Error::Io(e)))?;
        let fresh = std::fs::metadata(&path).is_ok_and(|m| m.len() == 0);

        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(false)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let options = adjust(options);
        let pool = connect(options).await.map_err(open_error)?;

        if fresh && let Err(e) = incremental_vacuum_on(&pool).await {
            pool.close().await;
            return Err(open_error(e));
        }
        if let Err(e) = migrate(&pool).await {
            pool.close().await;
            return Err(e);
        }
        let owner = match OwnerGuard::new(&owners_dir(&path)) {
            Ok(o) => o,
            Err(e) => {
                pool.close().await;
                return Err(open_error(sqlx::Error::Io(e)));
            }
        };
        Ok(SqliteStore {
            pool,
            path,
            write_gate: Arc::new(Mutex::new(())),
            owner: Arc::new(owner),
            unrecorded: Arc::default(),
            ends: Arc::default(),
            procs: Arc::default(),
            prune_cursor: Arc::default(),
        })
    }

    /// The connection pool, for tests and diagnostics.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn write_lock(&self) -> MutexGuard<'_, ()> {
        self.write_gate.lock().await
    }

    /// Every job id with runs: a skip scan of the history index (one probe per job), not a
    /// read of every row.
    async fn job_ids(&self) -> StoreResult<Vec<String>> {
        sqlx::query_scalar(
            "WITH RECURSIVE j (id) AS ( \
                 SELECT MIN(job_id) FROM job_runs \
                 UNION ALL \
                 SELECT (SELECT MIN(job_id) FROM job_runs WHERE job_id > j.id) FROM j \
                 WHERE j.id IS NOT NULL) \
             SELECT id FROM j WHERE id IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await
        .db()
    }

    /// The oldest (at most `limit`) runs of `job` that `r` no longer keeps. Reads only: the
    /// two cut-offs are walks of the newest `keep` entries of an index, and the candidates a
    /// range of the history index below the newest bound.
    async fn prune_ids(&self, job: &str, r: &Retention, limit: usize) -> StoreResult<Vec<i64>> {
        let cut = |failed: bool, keep: u32| {
            let sql = if failed {
                "SELECT started_at, id FROM job_runs INDEXED BY job_runs_failed \
                 WHERE job_id = ? AND status IN ('failed', 'timed_out', 'interrupted') \
                 ORDER BY started_at DESC, id DESC LIMIT 1 OFFSET ?"
            } else {
                "SELECT started_at, id FROM job_runs WHERE job_id = ? \
                 ORDER BY started_at DESC, id DESC LIMIT 1 OFFSET ?"
            };
            sqlx::query_as::<_, (i64, i64)>(sql)
                .bind(job)
                .bind(i64::from(keep))
                .fetch_optional(&self.pool)
        };
        // No cut-off: fewer runs than kept; (i64::MIN, i64::MIN) matches no row.
        let none = (i64::MIN, i64::MIN);
        let (cs, ci) = cut(false, r.keep_runs).await.db()?.unwrap_or(none);
        let (fs, fi) = cut(true, r.keep_failed_runs).await.db()?.unwrap_or(none);
        // A job's newest run is always kept, whatever its age: it is the job's last tick
        // (misfire catch-up at start and the status page's last run read it).
        let (_, newest) = cut(false, 0).await.db()?.unwrap_or(none);
        let older = millis(r.older_than);
        let failed_older = millis(r.failed_older_than);
        // Every candidate started at or before the newest of the four bounds.
        let upper = cs.max(fs).max(older).max(failed_older);
        let ids = sqlx::query_scalar(
            "SELECT id FROM job_runs WHERE job_id = ? AND started_at <= ? AND status <> 'running' \
             AND id <> ? AND CASE WHEN status IN ('failed', 'timed_out', 'interrupted') \
                 THEN started_at < ? OR (started_at = ? AND id <= ?) OR started_at < ? \
                 ELSE started_at < ? OR (started_at = ? AND id <= ?) OR started_at < ? END \
             ORDER BY started_at, id LIMIT ?",
        )
        .bind(job)
        .bind(upper)
        .bind(newest)
        .bind(fs)
        .bind(fs)
        .bind(fi)
        .bind(failed_older)
        .bind(cs)
        .bind(cs)
        .bind(ci)
        .bind(older)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .db()?;
        Ok(ids)
    }

    /// The ids of the runs [`RunStore::prune`] may delete. A read only: it takes no write lock.
    async fn prune_candidates(&self, keep_runs: u32, older_than: i64) -> StoreResult<Vec<i64>> {
        let ids = sqlx::query_scalar(
            "SELECT id FROM ( \
                 SELECT id, status, started_at, \
                        ROW_NUMBER() OVER (PARTITION BY job_id \
                                           ORDER BY started_at DESC, id DESC) AS rn \
                 FROM job_runs \
             ) ranked \
             WHERE rn > ? AND started_at < ? AND status <> 'running' \
             ORDER BY id",
        )
        .bind(i64::from(keep_runs))
        .bind(older_than)
        .fetch_all(&self.pool)
        .await
        .db()?;
        Ok(ids)
    }

    /// Deletes one batch of runs in one short write transaction. The status guard repeats the
    /// candidate rule, so a row is never deleted while running even in theory.
    async fn delete_runs(&self, ids: &[i64]) -> StoreResult<u64> {
        let mut deleted = 0;
        for chunk in ids.chunks(PRUNE_BATCH) {
            let sql = format!(
                "DELETE FROM job_runs WHERE status <> 'running' AND id IN ({})",
                vec!["?"; chunk.len()].join(", ")
            );
            // Only placeholders are built dynamically; every value is bound.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
            for id in chunk {
                q = q.bind(id);
            }
            let mut tx = WriteTx::begin(self).await?;
            let body = q.execute(tx.conn()).await.db().map(|r| r.rows_affected());
            deleted += tx.finish(body).await?;
        }
        Ok(deleted)
    }
}

/// Makes a new, empty file give deleted pages back to the file system (`reclaim`): the
/// setting must be made before the first table exists, and is kept in the file from then on.
/// Not a connect option: on an existing file the pragma waits for another process's write
/// transaction (reads must not). A file made before keeps its setting (see the README's
/// "Bounded storage").
async fn incremental_vacuum_on(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    let mut conn = pool.acquire().await?;
    sqlx::query("PRAGMA auto_vacuum = INCREMENTAL")
        .execute(&mut *conn)
        .await?;
    // Writes the header with the setting (a no-op if another process made tables meanwhile).
    sqlx::query("VACUUM").execute(&mut *conn).await?;
    Ok(())
}

/// Applies pending migrations, retrying when another process applied them at the same time.
/// Opens the pool. Switching a new file to WAL needs an exclusive lock, and SQLite answers
/// SQLITE_BUSY at once (without its busy handler, to avoid a deadlock) when two processes make
/// that switch at the same moment; the loser retries, a bounded number of times.
async fn connect(options: SqliteConnectOptions) -> Result<SqlitePool, sqlx::Error> {
    let mut attempt = 1;
    loop {
        match SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options.clone())
            .await
        {
            // SQLITE_BUSY (5) or SQLITE_LOCKED (6), in any of their extended forms.
            Err(sqlx::Error::Database(e))
                if attempt < CONNECT_ATTEMPTS
                    && e.code()
                        .and_then(|c| c.parse::<i32>().ok())
                        .is_some_and(|c| matches!(c & 0xff, 5 | 6)) =>
            {
                tracing::debug!(error = %e, attempt, "database busy while opening, retrying");
                tokio::time::sleep(CONNECT_RETRY_DELAY).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn migrate(pool: &SqlitePool) -> StoreResult<()> {
    let mut attempt = 1;
    loop {
        match MIGRATOR.run(pool).await {
            Ok(()) => return Ok(()),
            Err(e @ (MigrateError::Execute(_) | MigrateError::ExecuteMigration(..)))
                if attempt < MIGRATE_ATTEMPTS =>
            {
                tracing::debug!(error = %e, attempt, "database migration failed, retrying");
                tokio::time::sleep(MIGRATE_RETRY_DELAY).await;
                attempt += 1;
            }
            Err(e) => return Err(crate::from_migrate(e)),
        }
    }
}

/// What a read-only look at an existing SQLite file found (`migrate-state`'s source).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SourceSchema {
    /// soarjobd's schema, every migration of this build applied.
    Current,
    /// Not a soarjobd database: no migration table, or not a SQLite file at all.
    Foreign(String),
    /// A soarjobd database that an older build last opened (`applied` of `known` migrations).
    Older { applied: usize, known: usize },
    /// A soarjobd database a newer build upgraded.
    Newer { version: i64 },
}

/// Opens an existing SQLite file read-only, never creating it or anything beside it, and
/// never migrating it: a pool for reading, and what its schema is. `None` when the file does
/// not exist.
pub(crate) async fn open_read_only(
    url_or_path: &str,
) -> StoreResult<Option<(SqlitePool, SourceSchema)>> {
    let path = database_path(url_or_path)?;
    if !path.is_file() {
        return Ok(None);
    }
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(false)
        .read_only(true)
        .busy_timeout(BUSY_TIMEOUT);
    let pool = SqlitePoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .map_err(|source| StoreError::Open {
            url: url_or_path.to_owned(),
            source: Box::new(source),
        })?;
    let applied: Result<Vec<i64>, sqlx::Error> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&pool)
            .await;
    let schema = match applied {
        // SQLITE_NOTADB (26), or no migration table: not ours.
        Err(sqlx::Error::Database(e)) => SourceSchema::Foreign(e.message().to_owned()),
        Err(e) => {
            pool.close().await;
            return Err(crate::db(e));
        }
        Ok(applied) => {
            let known: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
            if let Some(v) = applied.iter().find(|v| !known.contains(v)) {
                SourceSchema::Newer { version: *v }
            } else if applied.is_empty() {
                SourceSchema::Foreign("no soarjobd migration was ever applied".into())
            } else if applied.len() < known.len() {
                SourceSchema::Older {
                    applied: applied.len(),
                    known: known.len(),
                }
            } else {
                SourceSchema::Current
            }
        }
    };
    Ok(Some((pool, schema)))
}

/// The file path named by a `sqlite:` URL or a bare path.
pub fn database_path(url_or_path: &str) -> StoreResult<PathBuf> {
    let unsupported = || StoreError::UnsupportedUrl(url_or_path.to_owned());
    let path = match url_or_path
        .strip_prefix("sqlite://")
        .or_else(|| url_or_path.strip_prefix("sqlite:"))
    {
        Some(rest) => rest,
        // Any other scheme (postgres://, file://, ...) is not a path we should create a file at.
        None if url_or_path.contains("://") => return Err(unsupported()),
        None => url_or_path,
    };
    // Query options (`?mode=ro`) and in-memory databases would silently drop the guarantees
    // `open` documents (file mode, durability), so they are refused rather than half-honoured.
    if path.is_empty() || path.starts_with(":memory:") || path.contains('?') {
        return Err(unsupported());
    }
    Ok(PathBuf::from(path))
}

/// Creates the database file with mode 0600 (and its missing parents with 0700) before SQLite
/// opens it, so there is no window in which the file is readable by others. SQLite gives the
/// `-wal` and `-shm` files the permissions of the database file.
fn create_private_file(path: &Path) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            warn_if_shared(path);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Logs when an existing database file is readable by group or others. It is left alone: the
/// operator may have chosen that on purpose.
fn warn_if_shared(path: &Path) {
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:o}"),
                "the database file is accessible to other users; 0600 is recommended"
            );
        }
    }
}

/// Whether a `running` row's owner is alive (`dir`: the database's owners folder); rows from
/// before owners were recorded count as dead (every `running` row found at startup did,
/// before).
fn row_is_live(owner: Option<&RunOwner>, dir: &Path) -> bool {
    owner.is_some_and(|o| o.liveness(dir) != Liveness::Dead)
}

/// Inserts claimed rows, returning each one's id or `None` when its tick was already taken.
async fn insert_runs(
    conn: &mut SqliteConnection,
    runs: &[Cow<'_, NewRun>],
    owner: &RunOwner,
) -> StoreResult<Vec<Option<i64>>> {
    let mut ids: Vec<Option<i64>> = vec![None; runs.len()];
    // Scheduled and catch-up ticks go in as multi-row INSERTs: a thousand ticks due at the
    // same instant cost a few statements instead of a thousand round trips to SQLite's
    // worker thread, which is what keeps tick lateness in the low milliseconds. Manual runs
    // are not unique by (job, instant), so they cannot be matched back from RETURNING and
    // are inserted one by one.
    let mut keyed: HashMap<(&str, i64), usize> = HashMap::new();
    let mut batch: Vec<usize> = Vec::new();
    // Ids follow the slice's order, so a slice with a manual run goes row by row.
    let row_by_row = runs.iter().any(|r| r.trigger == Trigger::Manual);
    for (i, run) in runs.iter().enumerate() {
        if row_by_row {
            ids[i] = insert_one(conn, run, owner).await?;
        } else if let std::collections::hash_map::Entry::Vacant(slot) =
            keyed.entry((run.job_id.as_str(), millis(run.scheduled_at)))
        {
            slot.insert(i);
            batch.push(i);
        }
        // A second copy of the same tick in one slice stays `None`: it is the same claim.
    }
    for chunk in batch.chunks(CLAIM_CHUNK) {
        let mut sql = String::from(concat!(
            "INSERT INTO job_runs ",
            claim_columns!(),
            " VALUES "
        ));
        for (n, _) in chunk.iter().enumerate() {
            if n > 0 {
                sql.push_str(", ");
            }
            sql.push_str(claim_row!());
        }
        sql.push_str(" ON CONFLICT DO NOTHING RETURNING id, job_id, scheduled_at");
        // Only placeholders are built dynamically; every value is bound.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for &i in chunk {
            let run = &runs[i];
            let (started_at, finished_at, duration_ms) = claim_times(run);
            q = q
                .bind(run.job_id.as_str())
                .bind(millis(run.scheduled_at))
                .bind(run.trigger.as_str())
                .bind(run.status.as_str())
                .bind(started_at)
                .bind(finished_at)
                .bind(duration_ms)
                .bind(run.message.as_deref())
                .bind(owner.pid)
                .bind(owner.host.as_str())
                .bind(owner.nonce.as_str());
        }
        for row in q.fetch_all(&mut *conn).await.db()? {
            let id: i64 = row.try_get("id").db()?;
            let job_id: String = row.try_get("job_id").db()?;
            let at: i64 = row.try_get("scheduled_at").db()?;
            if let Some(&i) = keyed.get(&(job_id.as_str(), at)) {
                ids[i] = Some(id);
            }
        }
    }
    Ok(ids)
}

/// Marks rows `interrupted` (only those still `running`), finished at `now` or at their start
/// if that is later (a tick claimed ahead of its instant), and returns them.
async fn interrupt_ids(
    conn: &mut SqliteConnection,
    ids: &[i64],
    now: DateTime<Utc>,
) -> StoreResult<Vec<RunRecord>> {
    let now = millis(now);
    let mut runs = Vec::new();
    for id in ids {
        let row = sqlx::query(concat!(
            "UPDATE job_runs SET status = 'interrupted', \
             finished_at = CASE WHEN started_at > ? THEN started_at ELSE ? END, \
             duration_ms = ",
            duration_from_started!(),
            ", message = ? WHERE id = ? AND status = 'running' RETURNING ",
            run_columns!()
        ))
        .bind(now)
        .bind(now)
        .bind(now)
        .bind(now)
        .bind(INTERRUPTED_MESSAGE)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .db()?;
        if let Some(row) = row {
            runs.push(run_from_row(&row)?);
        }
    }
    Ok(runs)
}

/// The `running` rows whose owner is dead, and the live ones of other owners, of the jobs
/// `jobs` selects (all jobs for `None`). Rows of `me` are neither.
async fn running_rows(
    conn: &mut SqliteConnection,
    me: &OwnerGuard,
    jobs: Option<&HashSet<&str>>,
) -> StoreResult<(Vec<i64>, Vec<(String, RunHolder)>)> {
    // The partial index on status makes this a scan of the few running rows only.
    let rows = sqlx::query(
        "SELECT id, job_id, \"trigger\", owner_pid, owner_host, owner_nonce \
         FROM job_runs WHERE status = 'running' ORDER BY id",
    )
    .fetch_all(&mut *conn)
    .await
    .db()?;
    let (mut dead, mut live) = (Vec::new(), Vec::new());
    for row in &rows {
        let job_id: String = row.try_get("job_id").db()?;
        if jobs.is_some_and(|j| !j.contains(job_id.as_str())) {
            continue;
        }
        let owner = owner_from_row(row)?;
        if owner.as_ref().is_some_and(|o| o.nonce == me.owner().nonce) {
            continue;
        }
        let id: i64 = row.try_get("id").db()?;
        if row_is_live(owner.as_ref(), me.dir()) {
            let trigger: String = row.try_get("trigger").db()?;
            let trigger = Trigger::parse(&trigger).ok_or(StoreError::Corrupt {
                column: "trigger",
                value: trigger,
            })?;
            live.push((
                job_id,
                RunHolder {
                    run_id: id,
                    trigger,
                    owner,
                },
            ));
        } else {
            dead.push(id);
        }
    }
    Ok((dead, live))
}

/// Writes a group of run ends inside a write transaction: one multi-row UPDATE per
/// [`END_CHUNK`] ends, and one SELECT for the ends that changed nothing (to tell a finished row
/// from a missing one). Returns each end's answer, in order. A run finished twice in one group
/// is answered as two calls one after the other: the first end wins.
async fn finish_batch(
    conn: &mut SqliteConnection,
    batch: &[PendingEnd],
) -> StoreResult<Vec<StoreResult<bool>>> {
    let mut first: HashMap<i64, usize> = HashMap::with_capacity(batch.len());
    let mut unique: Vec<usize> = Vec::with_capacity(batch.len());
    for (i, p) in batch.iter().enumerate() {
        if let std::collections::hash_map::Entry::Vacant(e) = first.entry(p.run_id) {
            e.insert(i);
            unique.push(i);
        }
    }
    let mut changed: HashSet<i64> = HashSet::with_capacity(unique.len());
    for chunk in unique.chunks(END_CHUNK) {
        let mut sql = String::with_capacity(200 + chunk.len() * 20);
        sql.push_str("WITH v (id, status, finished_at, message, error, stats) AS (VALUES ");
        for n in 0..chunk.len() {
            sql.push_str(if n == 0 {
                "(?, ?, ?, ?, ?, ?)"
            } else {
                ", (?, ?, ?, ?, ?, ?)"
            });
        }
        sql.push_str(
            ") UPDATE job_runs SET status = v.status, finished_at = v.finished_at, \
             duration_ms = CASE WHEN v.finished_at > job_runs.started_at \
                           THEN v.finished_at - job_runs.started_at ELSE 0 END, \
             message = COALESCE(v.message, job_runs.message), error = v.error, \
             stats = v.stats \
             FROM v WHERE job_runs.id = v.id AND job_runs.status = 'running' \
             RETURNING job_runs.id",
        );
        // Only placeholders are built dynamically; every value is bound. Not kept in the
        // connection's statement cache: each group size is another text, and a cached
        // statement of hundreds of rows costs hundreds of kilobytes per connection.
        let mut q = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql)).persistent(false);
        for &i in chunk {
            let p = &batch[i];
            q = q
                .bind(p.run_id)
                .bind(p.finish.status.as_str())
                .bind(millis(p.finish.finished_at))
                .bind(p.finish.message.as_deref())
                .bind(p.finish.error.as_deref())
                .bind(p.finish.stats.to_string());
        }
        changed.extend(q.fetch_all(&mut *conn).await.db()?);
    }
    // The ends that changed nothing: already finished (a no-op) or no such run (a bug).
    let unchanged: Vec<i64> = unique
        .iter()
        .map(|&i| batch[i].run_id)
        .filter(|id| !changed.contains(id))
        .collect();
    let mut existing: HashSet<i64> = HashSet::new();
    for chunk in unchanged.chunks(END_CHUNK) {
        let sql = format!(
            "SELECT id FROM job_runs WHERE id IN ({})",
            vec!["?"; chunk.len()].join(", ")
        );
        let mut q = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql)).persistent(false);
        for id in chunk {
            q = q.bind(id);
        }
        existing.extend(q.fetch_all(&mut *conn).await.db()?);
    }
    Ok(batch
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let id = p.run_id;
            if !changed.contains(&id) && !existing.contains(&id) {
                Err(StoreError::NoSuchRun(id))
            } else {
                // Only the first end of a run in the group can be the one that finished it.
                Ok(changed.contains(&id) && first.get(&id) == Some(&i))
            }
        })
        .collect())
}

impl SqliteStore {
    /// The body of a claim, inside its write transaction.
    async fn claim_in(
        &self,
        conn: &mut SqliteConnection,
        runs: &[NewRun],
        exclusive: &[bool],
    ) -> StoreResult<Vec<Claim>> {
        let me = &*self.owner;
        let is_exclusive = |i: usize| exclusive.get(i).copied().unwrap_or(false);
        // The overlap check across processes, atomic with the inserts: this transaction holds
        // SQLite's write lock, so no other process can claim or finish a run of these jobs
        // between the check and the insert.
        let mut holders: HashMap<String, Vec<RunHolder>> = HashMap::new();
        let jobs: HashSet<&str> = runs
            .iter()
            .enumerate()
            .filter(|(i, _)| is_exclusive(*i))
            .map(|(_, r)| r.job_id.as_str())
            .collect();
        if !jobs.is_empty() {
            let (dead, live) = running_rows(conn, me, Some(&jobs)).await?;
            for r in interrupt_ids(conn, &dead, Utc::now()).await? {
                tracing::warn!(
                    job_id = %r.job_id, run_id = r.id, scheduled_at = %r.scheduled_at.to_rfc3339(),
                    "run interrupted: the process running it is gone"
                );
            }
            for (job_id, holder) in live {
                holders.entry(job_id).or_default().push(holder);
            }
        }
        let mut plan: Vec<(usize, &NewRun)> = Vec::with_capacity(runs.len());
        let mut claims: Vec<Claim> = vec![Claim::Taken; runs.len()];
        for (i, run) in runs.iter().enumerate() {
            let held = if is_exclusive(i) {
                holders.get(&run.job_id).and_then(|h| h.first())
            } else {
                None
            };
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
        let rows: Vec<Cow<'_, NewRun>> = plan.iter().map(|(_, r)| Cow::Borrowed(*r)).collect();
        let ids = insert_runs(conn, &rows, me.owner()).await?;
        for ((i, run), id) in plan.iter().zip(ids) {
            let held = is_exclusive(*i).then(|| holders.get(&run.job_id)).flatten();
            claims[*i] = match (id, held) {
                (None, _) => Claim::Taken,
                (Some(id), Some(h)) if !h.is_empty() => Claim::Contended {
                    run_id: id,
                    holder: h[0].clone(),
                    holders: h.iter().map(|h| h.run_id).collect(),
                },
                (Some(id), _) => Claim::Claimed(id),
            };
        }
        Ok(claims)
    }
}

/// A run-process write ([`RunStore::record_run_process`], [`RunStore::forget_run_process`])
/// waiting for a group write.
#[derive(Debug, Clone)]
enum ProcOp {
    Record(RunProcess),
    Forget(i64),
}

struct PendingProc {
    op: ProcOp,
    /// The answer: `None` asks the caller to write alone (the group write failed).
    reply: tokio::sync::oneshot::Sender<Option<StoreResult<bool>>>,
}

impl std::fmt::Debug for PendingProc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.op.fmt(f)
    }
}

const RECORD_PROCESS_SQL: &str = "INSERT INTO run_processes (run_id, host, boot_id, owner_pid, owner_start_ticks, \
                                pgid, leader_start_ticks, token, cgroup, recorded_at) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
     ON CONFLICT (run_id) DO UPDATE SET host = excluded.host, \
         boot_id = excluded.boot_id, owner_pid = excluded.owner_pid, \
         owner_start_ticks = excluded.owner_start_ticks, pgid = excluded.pgid, \
         leader_start_ticks = excluded.leader_start_ticks, token = excluded.token, \
         cgroup = excluded.cgroup, recorded_at = excluded.recorded_at";

/// One run-process write on `conn` (inside a group's transaction, or alone).
async fn proc_write(conn: &mut SqliteConnection, op: &ProcOp) -> StoreResult<bool> {
    match op {
        ProcOp::Record(p) => {
            sqlx::query(RECORD_PROCESS_SQL)
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
                .execute(&mut *conn)
                .await
                .db()?;
            Ok(true)
        }
        ProcOp::Forget(run_id) => Ok(sqlx::query("DELETE FROM run_processes WHERE run_id = ?")
            .bind(run_id)
            .execute(&mut *conn)
            .await
            .db()?
            .rows_affected()
            > 0),
    }
}

/// One run end waiting for the next group write (see [`SqliteStore::finish_grouped`]).
#[derive(Debug)]
struct PendingEnd {
    run_id: i64,
    finish: RunFinish,
    /// The answer: `None` asks the caller to write its end alone (the group write failed).
    reply: tokio::sync::oneshot::Sender<Option<StoreResult<bool>>>,
}

/// Run ends per UPDATE statement of a group write (6 parameters each).
const END_CHUNK: usize = 400;

impl SqliteStore {
    /// One attempt at [`RunStore::finish_run`], alone: one UPDATE (and, when nothing changed,
    /// one SELECT telling an already finished row from a missing one).
    async fn finish_once(&self, run_id: i64, finish: &RunFinish) -> StoreResult<bool> {
        let finished_at = millis(finish.finished_at);
        let changed = {
            let _gate = self.write_lock().await;
            sqlx::query(concat!(
                "UPDATE job_runs SET status = ?, finished_at = ?, duration_ms = ",
                duration_from_started!(),
                ", message = COALESCE(?, message), error = ?, stats = ? \
                 WHERE id = ? AND status = 'running'"
            ))
            .bind(finish.status.as_str())
            .bind(finished_at)
            .bind(finished_at)
            .bind(finished_at)
            .bind(finish.message.as_deref())
            .bind(finish.error.as_deref())
            .bind(finish.stats.to_string())
            .bind(run_id)
            .execute(&self.pool)
            .await
            .db()?
            .rows_affected()
        };
        if changed > 0 {
            return Ok(true);
        }
        // Nothing changed: either already finished (a legitimate no-op) or a bad id (a bug).
        let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM job_runs WHERE id = ?")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await
            .db()?;
        match exists {
            Some(_) => Ok(false),
            None => Err(StoreError::NoSuchRun(run_id)),
        }
    }

    /// [`RunStore::finish_run`] as a group commit. The profile of 1,000 no-op runs a second
    /// showed one autocommit UPDATE per run end, each a round trip to sqlx's SQLite worker
    /// thread (a futex wait and wake on each side) and a WAL commit of its own. Here a run end
    /// joins a queue and then waits for the write gate; whoever gets the gate first writes
    /// every end queued so far in one transaction of a few multi-row statements and answers
    /// each of them. The others, woken by their answer, drop their place in the gate's queue
    /// without touching the database. A thousand runs ending together cost one transaction.
    ///
    /// Concurrency: the queue is a plain mutex held only to push or take; the leader is
    /// whoever holds the write gate (FIFO), so there is never more than one group write, and a
    /// caller whose end was taken by a leader always gets its answer before that leader lets
    /// the gate go. `biased` makes a caller whose answer and gate turn arrive together take the
    /// answer and give the gate to the next one.
    async fn finish_grouped(&self, run_id: i64, finish: &RunFinish) -> StoreResult<bool> {
        let (reply, mut answer) = tokio::sync::oneshot::channel();
        self.ends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(PendingEnd {
                run_id,
                finish: finish.clone(),
                reply,
            });
        let tx = tokio::select! {
            biased;
            a = &mut answer => return self.answered(run_id, finish, a.ok().flatten()).await,
            tx = WriteTx::begin(self) => tx,
        };
        let batch = std::mem::take(&mut *self.ends.lock().unwrap_or_else(|p| p.into_inner()));
        let mut tx = match tx {
            Ok(tx) => tx,
            Err(e) => {
                // Nobody wrote the queued ends: each writes its own (and gets its own error).
                for p in batch {
                    let _ = p.reply.send(None);
                }
                if let Ok(a) = answer.try_recv() {
                    return self.answered(run_id, finish, a).await;
                }
                return Err(e);
            }
        };
        if batch.is_empty() {
            // A leader took this end and answered it before letting the gate go.
            drop(tx.commit().await);
            let a = answer.try_recv().ok().flatten();
            return self.answered(run_id, finish, a).await;
        }
        let body = finish_batch(tx.conn(), &batch).await;
        let results = match tx.finish(body).await {
            Ok(r) => r,
            Err(_) => {
                // The group write failed as a whole (nothing of it was applied): every end is
                // written again alone, so each caller sees its own error and keeps its end
                // for a retry.
                for p in batch {
                    let _ = p.reply.send(None);
                }
                let a = answer.try_recv().ok().flatten();
                return self.answered(run_id, finish, a).await;
            }
        };
        for (p, r) in batch.into_iter().zip(results) {
            let _ = p.reply.send(Some(r));
        }
        let a = answer.try_recv().ok().flatten();
        self.answered(run_id, finish, a).await
    }

    /// The answer a group write gave, or (`None`: the group write failed) the end written
    /// alone.
    async fn answered(
        &self,
        run_id: i64,
        finish: &RunFinish,
        answer: Option<StoreResult<bool>>,
    ) -> StoreResult<bool> {
        match answer {
            Some(r) => r,
            None => self.finish_once(run_id, finish).await,
        }
    }

    /// [`RunStore::record_run_process`] and [`RunStore::forget_run_process`] as a group
    /// commit, like [`SqliteStore::finish_grouped`]. Profile (perf, release, 100 `exec` jobs
    /// every second, 20 s): each `exec` run wrote its process record twice (before the start,
    /// then with its pid) and deleted it at the end, three autocommit statements, each a round
    /// trip to sqlx's SQLite worker thread (futex wait/wake on both sides) and a WAL commit of
    /// its own; the worker thread was a quarter of the daemon's CPU. Runs of one instant start
    /// together, so their writes now share one transaction. Each caller still returns only
    /// once its own write is committed (the record must be durable before the program
    /// starts), and a write that fails in a group is retried alone so that each caller sees
    /// its own error. Concurrency as in `finish_grouped`: the queue's mutex is held only to
    /// push or take, and the leader is whoever holds the write gate.
    async fn proc_grouped(&self, op: ProcOp) -> StoreResult<bool> {
        let (reply, mut answer) = tokio::sync::oneshot::channel();
        self.procs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(PendingProc {
                op: op.clone(),
                reply,
            });
        let tx = tokio::select! {
            biased;
            a = &mut answer => return self.proc_answered(&op, a.ok().flatten()).await,
            tx = WriteTx::begin(self) => tx,
        };
        let batch = std::mem::take(&mut *self.procs.lock().unwrap_or_else(|p| p.into_inner()));
        let mut tx = match tx {
            Ok(tx) => tx,
            Err(e) => {
                for p in batch {
                    let _ = p.reply.send(None);
                }
                if let Ok(a) = answer.try_recv() {
                    return self.proc_answered(&op, a).await;
                }
                return Err(e);
            }
        };
        if batch.is_empty() {
            // A leader took this write and answered it before letting the gate go.
            drop(tx.commit().await);
            let a = answer.try_recv().ok().flatten();
            return self.proc_answered(&op, a).await;
        }
        let body = async {
            let mut results = Vec::with_capacity(batch.len());
            for p in &batch {
                results.push(proc_write(tx.conn(), &p.op).await?);
            }
            Ok(results)
        }
        .await;
        match tx.finish(body).await {
            Ok(results) => {
                for (p, r) in batch.into_iter().zip(results) {
                    let _ = p.reply.send(Some(Ok(r)));
                }
            }
            Err(_) => {
                for p in batch {
                    let _ = p.reply.send(None);
                }
            }
        }
        let a = answer.try_recv().ok().flatten();
        self.proc_answered(&op, a).await
    }

    /// The answer a group write gave, or (`None`) the write done alone.
    async fn proc_answered(
        &self,
        op: &ProcOp,
        answer: Option<StoreResult<bool>>,
    ) -> StoreResult<bool> {
        match answer {
            Some(r) => r,
            None => {
                let _gate = self.write_lock().await;
                let mut conn = self.pool.acquire().await.db()?;
                proc_write(&mut conn, op).await
            }
        }
    }

    /// Records the ends of runs whose finish failed on a database error (a full disk): the
    /// row would otherwise stay `running`, owned by this live process, until the next start,
    /// and across processes `overlap: skip` would refuse the job for that long. Those that
    /// fail again stay queued.
    async fn retry_unrecorded(&self) {
        let queued =
            std::mem::take(&mut *self.unrecorded.lock().unwrap_or_else(|p| p.into_inner()));
        for (run_id, finish) in queued {
            match self.finish_run(run_id, &finish).await {
                Ok(_) => tracing::info!(
                    run_id,
                    status = finish.status.as_str(),
                    "run end recorded after the store recovered"
                ),
                Err(StoreError::Db(_)) => {}
                Err(e) => tracing::warn!(run_id, error = %e, "cannot record the end of a run"),
            }
        }
    }
}

/// One mark packed by [`RunStore::recent_runs`]'s query: `id,scheduled_at,trigger,status,
/// started_at,duration_ms` (the last one empty when NULL).
fn unpack_mark(job_id: &str, packed: &str) -> StoreResult<RunMark> {
    let corrupt = || StoreError::Corrupt {
        column: "job_runs",
        value: packed.to_string(),
    };
    let f: Vec<&str> = packed.split(',').collect();
    let [id, scheduled, trigger, status, started, duration] = f[..] else {
        return Err(corrupt());
    };
    let int = |s: &str| s.parse::<i64>().map_err(|_| corrupt());
    Ok(RunMark {
        id: int(id)?,
        job_id: job_id.to_string(),
        scheduled_at: from_millis("scheduled_at", int(scheduled)?)?,
        trigger: Trigger::parse(trigger).ok_or_else(corrupt)?,
        status: RunStatus::parse(status).ok_or_else(corrupt)?,
        started_at: from_millis("started_at", int(started)?)?,
        duration_ms: if duration.is_empty() {
            None
        } else {
            Some(int(duration)?)
        },
    })
}

#[async_trait]
impl RunStore for SqliteStore {
    async fn claim_runs(&self, runs: &[NewRun]) -> StoreResult<Vec<Option<i64>>> {
        let none = vec![false; runs.len()];
        let claims = self.claim_runs_exclusive(runs, &none).await?;
        Ok(claims
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
        let mut tx = WriteTx::begin(self).await?;
        let body = self.claim_in(tx.conn(), runs, exclusive).await;
        let claims = tx.finish(body).await?;
        self.retry_unrecorded().await;
        Ok(claims)
    }

    async fn mark_started(&self, runs: &[(i64, DateTime<Utc>)]) -> StoreResult<()> {
        if runs.is_empty() {
            return Ok(());
        }
        let mut tx = WriteTx::begin(self).await?;
        let body = async {
            for (id, at) in runs {
                sqlx::query(
                    "UPDATE job_runs SET started_at = ? WHERE id = ? AND status = 'running'",
                )
                .bind(millis(*at))
                .bind(id)
                .execute(tx.conn())
                .await
                .db()?;
            }
            Ok(())
        }
        .await;
        tx.finish(body).await
    }

    /// A `None` message keeps the message the run was claimed with. `finish.status` must be
    /// final; `running` is refused (as a `Corrupt` status) because it would leave a row that
    /// looks finished and running at once. A finish that fails on a database error is also
    /// kept and retried after the next successful claim, at each sweep and at close (see
    /// [`SqliteStore::retry_unrecorded`]); the error is still returned, so the runner logs it.
    async fn finish_run(&self, run_id: i64, finish: &RunFinish) -> StoreResult<bool> {
        if !finish.status.is_final() {
            return Err(StoreError::Corrupt {
                column: "status",
                value: finish.status.as_str().to_owned(),
            });
        }
        let result = self.finish_grouped(run_id, finish).await;
        if let Err(StoreError::Db(_)) = &result {
            let mut unrecorded = self.unrecorded.lock().unwrap_or_else(|p| p.into_inner());
            if unrecorded.len() >= MAX_UNRECORDED {
                unrecorded.remove(0);
            }
            unrecorded.push((run_id, finish.clone()));
        }
        result
    }

    async fn unclaim(&self, run_id: i64) -> StoreResult<bool> {
        let _gate = self.write_lock().await;
        let done = sqlx::query("DELETE FROM job_runs WHERE id = ? AND status = 'running'")
            .bind(run_id)
            .execute(&self.pool)
            .await
            .db()?;
        Ok(done.rows_affected() > 0)
    }

    async fn interrupt_running(&self, now: DateTime<Utc>) -> StoreResult<Vec<RunRecord>> {
        self.retry_unrecorded().await;
        let mut tx = WriteTx::begin(self).await?;
        let body = async {
            let (dead, _live) = running_rows(tx.conn(), &self.owner, None).await?;
            interrupt_ids(tx.conn(), &dead, now).await
        }
        .await;
        let mut runs = tx.finish(body).await?;
        runs.sort_by_key(|r| r.id);
        Ok(runs)
    }

    async fn last_scheduled_at(&self, job_id: &str) -> StoreResult<Option<DateTime<Utc>>> {
        // The condition matches the claim index's, so this is an index lookup.
        let ms: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(scheduled_at) FROM job_runs WHERE job_id = ? AND \"trigger\" <> 'manual'",
        )
        .bind(job_id)
        .fetch_one(&self.pool)
        .await
        .db()?;
        opt_from_millis("scheduled_at", ms)
    }

    async fn run(&self, run_id: i64) -> StoreResult<Option<RunRecord>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM job_runs WHERE id = ?"
        ))
        .bind(run_id)
        .fetch_optional(&self.pool)
        .await
        .db()?;
        row.as_ref().map(run_from_row).transpose()
    }

    async fn history(&self, job_id: &str, limit: u32) -> StoreResult<Vec<RunRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM job_runs WHERE job_id = ? ORDER BY started_at DESC, id DESC LIMIT ?"
        ))
        .bind(job_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .db()?;
        runs_from_rows(&rows)
    }

    /// Ordered by job id.
    async fn last_runs(&self) -> StoreResult<Vec<RunRecord>> {
        // One index probe per job instead of ranking every row: the history index gives each
        // job's newest run directly.
        let rows = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM job_runs WHERE id IN ( \
                 SELECT (SELECT r.id FROM job_runs r WHERE r.job_id = j.job_id \
                         ORDER BY r.started_at DESC, r.id DESC LIMIT 1) \
                 FROM (SELECT DISTINCT job_id FROM job_runs) j \
             ) ORDER BY job_id"
        ))
        .fetch_all(&self.pool)
        .await
        .db()?;
        runs_from_rows(&rows)
    }

    async fn recent_runs(&self, job_ids: &[String], per_job: u32) -> StoreResult<Vec<RunMark>> {
        if job_ids.is_empty() || per_job == 0 {
            return Ok(Vec::new());
        }
        // The ids travel as one JSON array (no limit on bound parameters); for each distinct
        // id, the correlated `LIMIT` walks the history index from the job's newest run, so the
        // read costs `per_job` index entries per job however long the kept history is. Each
        // job's marks come back as one row (packed by SQLite, in its order): sqlx hands SQLite
        // rows over one at a time between threads, which for 1,000 jobs x 30 runs cost 4x
        // more than reading them (measured with benches/jobs_page.rs).
        let ids = serde_json::to_string(job_ids).map_err(|e| StoreError::Db(Box::new(e)))?;
        let rows: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT j.job_id, ( \
                 SELECT group_concat(x.id || ',' || x.scheduled_at || ',' || x.\"trigger\" || ',' \
                        || x.status || ',' || x.started_at || ',' || IFNULL(x.duration_ms, ''), \
                        ';' ORDER BY x.started_at DESC, x.id DESC) \
                 FROM (SELECT id, scheduled_at, \"trigger\", status, started_at, duration_ms \
                       FROM job_runs WHERE job_id = j.job_id \
                       ORDER BY started_at DESC, id DESC LIMIT ?) x) \
             FROM (SELECT DISTINCT value AS job_id FROM json_each(?)) j ORDER BY j.job_id",
        )
        .bind(i64::from(per_job))
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .db()?;
        let mut marks = Vec::new();
        for (job_id, packed) in rows {
            for m in packed
                .as_deref()
                .unwrap_or("")
                .split(';')
                .filter(|m| !m.is_empty())
            {
                marks.push(unpack_mark(&job_id, m)?);
            }
        }
        Ok(marks)
    }

    /// Finds the candidates with one read, then deletes them in small write transactions so
    /// that claims and finishes interleave with a large prune.
    async fn prune(&self, keep_runs: u32, older_than: DateTime<Utc>) -> StoreResult<u64> {
        let ids = self.prune_candidates(keep_runs, millis(older_than)).await?;
        let mut deleted = 0;
        for batch in ids.chunks(PRUNE_BATCH) {
            deleted += self.delete_runs(batch).await?;
            tokio::task::yield_now().await;
        }
        Ok(deleted)
    }

    /// Checkpoints the WAL into the database file and truncates it, then closes the pool.
    /// A checkpoint that cannot complete (another process is reading) is logged, not fatal:
    /// the WAL stays valid and the next writer checkpoints it.
    async fn prune_step(&self, r: &Retention, limit: u32) -> StoreResult<Pruned> {
        let mut pruned = Pruned::default();
        let mut left = usize::try_from(limit).unwrap_or(usize::MAX);
        // Each step goes on from the job after the last one the previous step looked at: a
        // step that fills its limit early must not make the next one query the same first
        // jobs again (the soak measured ~3 queries per run with a thousand jobs that way).
        let mut jobs = self.job_ids().await?;
        let cursor = self
            .prune_cursor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let start = jobs.partition_point(|j| *j <= cursor);
        jobs.rotate_left(start);
        for job in jobs {
            if left == 0 {
                break;
            }
            job.clone_into(&mut self.prune_cursor.lock().unwrap_or_else(|p| p.into_inner()));
            let ids = self.prune_ids(&job, r, left).await?;
            if ids.is_empty() {
                continue;
            }
            left = left.saturating_sub(ids.len());
            pruned.runs += self.delete_runs(&ids).await?;
        }
        // Run-log lines by age, oldest rows first (rowids grow with time): a bounded look at
        // the oldest `limit` rows, never a scan of the whole table.
        let _gate = self.write_lock().await;
        pruned.log_rows = sqlx::query(
            "DELETE FROM run_logs WHERE rowid IN ( \
                 SELECT rowid FROM (SELECT rowid, at FROM run_logs ORDER BY rowid LIMIT ?) \
                 WHERE at < ?)",
        )
        .bind(i64::from(limit))
        .bind(millis(r.logs_older_than))
        .execute(&self.pool)
        .await
        .db()?
        .rows_affected();
        Ok(pruned)
    }

    /// Frees up to [`RECLAIM_PAGES`] pages of deleted rows, when at least a quarter of the
    /// file is free (databases created with
    /// `auto_vacuum = INCREMENTAL`, which this store does for new files) and returns the size
    /// of the database file and its WAL.
    async fn reclaim(&self) -> StoreResult<Option<u64>> {
        // Only when a large part of the file is free (after a burst, or a lowered bound): in
        // the steady state a prune frees about what the next inserts need, and moving pages to
        // shorten the file, only for it to grow again, cost more CPU than the runs (the 10-minute
        // soak measured +300 us per run once pruning began with a vacuum every round).
        let free: i64 = sqlx::query_scalar("PRAGMA freelist_count")
            .fetch_one(&self.pool)
            .await
            .db()?;
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
            .fetch_one(&self.pool)
            .await
            .db()?;
        if free > 0 && free * 4 >= pages {
            let _gate = self.write_lock().await;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "PRAGMA incremental_vacuum({RECLAIM_PAGES})"
            )))
            .execute(&self.pool)
            .await
            .db()?;
        }
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        Ok(Some(size(&self.path) + size(Path::new(&wal))))
    }

    async fn close(&self) {
        self.retry_unrecorded().await;
        let _gate = self.write_lock().await;
        match sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&self.pool)
            .await
        {
            // The first column is 1 when the checkpoint was blocked by a reader or writer.
            Ok(row) if row.try_get::<i64, _>(0).unwrap_or(0) != 0 => {
                tracing::debug!("WAL checkpoint at close was incomplete (database in use)");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint at close failed"),
        }
        self.pool.close().await;
        // From now on this store's `running` rows (if any were left) count as dead.
        self.owner.release();
    }

    // --- The processes of runs in progress (process containment). ---

    async fn record_run_process(&self, p: &RunProcess) -> StoreResult<()> {
        self.proc_grouped(ProcOp::Record(p.clone()))
            .await
            .map(|_| ())
    }

    async fn run_processes(&self) -> StoreResult<Vec<RunProcess>> {
        let rows = sqlx::query(
            "SELECT run_id, host, boot_id, owner_pid, owner_start_ticks, pgid, \
                    leader_start_ticks, token, cgroup, recorded_at \
             FROM run_processes ORDER BY run_id",
        )
        .fetch_all(&self.pool)
        .await
        .db()?;
        rows.iter().map(process_from_row).collect()
    }

    async fn forget_run_process(&self, run_id: i64) -> StoreResult<bool> {
        self.proc_grouped(ProcOp::Forget(run_id)).await
    }
}

#[async_trait]
impl JobStateStore for SqliteStore {
    async fn get_timestamp(&self, job_id: &str, key: &str) -> StoreResult<Option<i64>> {
        let value = sqlx::query_scalar(
            "SELECT value_ms FROM job_timestamps WHERE job_id = ? AND \"key\" = ?",
        )
        .bind(job_id)
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .db()?;
        Ok(value)
    }

    async fn set_timestamp(&self, job_id: &str, key: &str, unix_ms: i64) -> StoreResult<()> {
        let _gate = self.write_lock().await;
        sqlx::query(
            "INSERT INTO job_timestamps (job_id, \"key\", value_ms, updated_at) \
             VALUES (?, ?, ?, ?) \
             ON CONFLICT (job_id, \"key\") \
             DO UPDATE SET value_ms = excluded.value_ms, updated_at = excluded.updated_at",
        )
        .bind(job_id)
        .bind(key)
        .bind(unix_ms)
        .bind(millis(Utc::now()))
        .execute(&self.pool)
        .await
        .db()?;
        Ok(())
    }

    async fn all_timestamps(&self) -> StoreResult<Vec<(String, String, i64)>> {
        sqlx::query_as(
            "SELECT job_id, \"key\", value_ms FROM job_timestamps ORDER BY job_id, \"key\"",
        )
        .fetch_all(&self.pool)
        .await
        .db()
    }

    async fn context_get(&self, job_id: &str, key: &str) -> StoreResult<Option<serde_json::Value>> {
        let text: Option<String> = sqlx::query_scalar(
            "SELECT \"value\" FROM job_context WHERE job_id = ? AND \"key\" = ?",
        )
        .bind(job_id)
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .db()?;
        text.map(|text| parse_json("value", text)).transpose()
    }

    async fn context_set(
        &self,
        job_id: &str,
        key: &str,
        value: &serde_json::Value,
    ) -> StoreResult<()> {
        let _gate = self.write_lock().await;
        sqlx::query(
            "INSERT INTO job_context (job_id, \"key\", \"value\", updated_at) \
             VALUES (?, ?, ?, ?) \
             ON CONFLICT (job_id, \"key\") \
             DO UPDATE SET \"value\" = excluded.\"value\", updated_at = excluded.updated_at",
        )
        .bind(job_id)
        .bind(key)
        .bind(value.to_string())
        .bind(millis(Utc::now()))
        .execute(&self.pool)
        .await
        .db()?;
        Ok(())
    }

    async fn context_delete(&self, job_id: &str, key: &str) -> StoreResult<bool> {
        let _gate = self.write_lock().await;
        let deleted = sqlx::query("DELETE FROM job_context WHERE job_id = ? AND \"key\" = ?")
            .bind(job_id)
            .bind(key)
            .execute(&self.pool)
            .await
            .db()?
            .rows_affected();
        Ok(deleted > 0)
    }

    async fn context_all(
        &self,
        job_id: &str,
    ) -> StoreResult<serde_json::Map<String, serde_json::Value>> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT \"key\", \"value\" FROM job_context WHERE job_id = ? ORDER BY \"key\"",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
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
             WHERE job_id = ? AND scope = ? AND item = ?",
        )
        .bind(job_id)
        .bind(scope)
        .bind(item)
        .fetch_optional(&self.pool)
        .await
        .db()?;
        row.as_ref().map(seen_from_row).transpose()
    }

    /// `run_id`, when given, must name an existing run (it is a foreign key; pruning the run
    /// later sets it to `None`).
    async fn seen_mark(
        &self,
        job_id: &str,
        scope: &str,
        item: &str,
        state: SeenState,
        run_id: Option<i64>,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let _gate = self.write_lock().await;
        sqlx::query(
            "INSERT INTO job_seen (job_id, scope, item, state, run_id, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (job_id, scope, item) \
             DO UPDATE SET state = excluded.state, run_id = excluded.run_id, \
                           updated_at = excluded.updated_at",
        )
        .bind(job_id)
        .bind(scope)
        .bind(item)
        .bind(state.as_str())
        .bind(run_id)
        .bind(millis(now))
        .execute(&self.pool)
        .await
        .db()?;
        Ok(())
    }

    async fn seen_list(
        &self,
        job_id: &str,
        scope: &str,
        state: SeenState,
    ) -> StoreResult<Vec<SeenEntry>> {
        let rows = sqlx::query(
            "SELECT item, state, run_id, updated_at FROM job_seen \
             WHERE job_id = ? AND scope = ? AND state = ? \
             ORDER BY updated_at, item",
        )
        .bind(job_id)
        .bind(scope)
        .bind(state.as_str())
        .fetch_all(&self.pool)
        .await
        .db()?;
        rows.iter().map(seen_from_row).collect()
    }

    async fn seen_remove(&self, job_id: &str, scope: &str, item: &str) -> StoreResult<bool> {
        let _gate = self.write_lock().await;
        let deleted =
            sqlx::query("DELETE FROM job_seen WHERE job_id = ? AND scope = ? AND item = ?")
                .bind(job_id)
                .bind(scope)
                .bind(item)
                .execute(&self.pool)
                .await
                .db()?
                .rows_affected();
        Ok(deleted > 0)
    }
}

/// Clock-tick counts fit in an `i64` for ~10^9 years of uptime; saturate rather than wrap.
#[cfg(test)]
mod tests {
    /// The store contract (`super::super::contract`) against SQLite: each handle is a
    /// `SqliteStore` of its own (its own pool and run owner) on one temporary file.
    mod contract {
        use std::sync::Arc;

        use async_trait::async_trait;

        use super::super::SqliteStore;
        use crate::contract::{self, Database, StoreFactory};
        use soarjobd_core::store::Store;

        struct SqliteDb {
            _dir: tempfile::TempDir,
            url: String,
        }

        #[async_trait]
        impl Database for SqliteDb {
            async fn open(&self) -> Arc<dyn Store> {
                Arc::new(SqliteStore::open(&self.url).await.expect("open"))
            }
        }

        struct Sqlite;

        #[async_trait]
        impl StoreFactory for Sqlite {
            async fn create(&self) -> Box<dyn Database> {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite:{}", dir.path().join("soarjobd.db").display());
                Box::new(SqliteDb { _dir: dir, url })
            }
        }

        macro_rules! contract_tests {
            ($($name:ident),* $(,)?) => {$(
                #[tokio::test]
                async fn $name() {
                    contract::$name(&Sqlite).await;
                }
            )*};
        }

        contract::each_contract_test!(contract_tests);
    }

    use super::*;
    use soarjobd_core::store::RunStatus;
    use tempfile::TempDir;

    async fn temp_store() -> (TempDir, PathBuf, SqliteStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state").join("soarjobd.db");
        let store = SqliteStore::open(path.to_str().expect("utf-8 path"))
            .await
            .expect("open");
        (dir, path, store)
    }

    use crate::contract::{at, finish, new_run};

    async fn claim_one(store: &SqliteStore, run: NewRun) -> i64 {
        let ids = store.claim_runs(&[run]).await.expect("claim");
        ids[0].expect("claimed")
    }

    /// Run-process writes of many runs at once share group writes: every caller gets its own
    /// answer once its write is committed, and a write that fails in a group (a record of a
    /// run that does not exist) fails alone without taking the others down with it.
    #[tokio::test]
    async fn concurrent_process_records_are_grouped_and_each_gets_its_own_answer() {
        let (_dir, _path, store) = temp_store().await;
        let mut ids = Vec::new();
        for i in 0..40 {
            ids.push(claim_one(&store, new_run(&format!("j{i}"), 1_000, Trigger::Manual)).await);
        }
        let record = |run_id: i64, pgid: Option<i32>| RunProcess {
            run_id,
            host: "h".into(),
            boot_id: "b".into(),
            owner_pid: 1,
            owner_start_ticks: 2,
            pgid,
            leader_start_ticks: pgid.map(|p| p as u64),
            token: format!("t{run_id}"),
            cgroup: None,
            recorded_at: at(5_000),
        };
        let mut tasks = tokio::task::JoinSet::new();
        for &id in &ids {
            let s = store.clone();
            let p = record(id, None);
            tasks.spawn(async move { (id, s.record_run_process(&p).await) });
        }
        let bad = ids.iter().max().unwrap() + 1_000;
        let s = store.clone();
        let p = record(bad, None);
        tasks.spawn(async move { (bad, s.record_run_process(&p).await) });
        while let Some(r) = tasks.join_next().await {
            let (id, res) = r.unwrap();
            assert_eq!(res.is_ok(), id != bad, "run {id}: {res:?}");
        }
        let rows = store.run_processes().await.unwrap();
        assert_eq!(rows.iter().map(|p| p.run_id).collect::<Vec<_>>(), ids);

        // The second write of each (with the pid), and forgetting half of them, at once.
        let mut tasks = tokio::task::JoinSet::new();
        for (n, &id) in ids.iter().enumerate() {
            let s = store.clone();
            let p = record(id, Some(100 + n as i32));
            tasks.spawn(async move {
                s.record_run_process(&p).await.unwrap();
                if n % 2 == 0 {
                    assert!(s.forget_run_process(p.run_id).await.unwrap());
                    assert!(!s.forget_run_process(p.run_id).await.unwrap());
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        let rows = store.run_processes().await.unwrap();
        let kept: Vec<(i64, Option<i32>)> = rows.iter().map(|p| (p.run_id, p.pgid)).collect();
        let want: Vec<(i64, Option<i32>)> = ids
            .iter()
            .enumerate()
            .filter(|(n, _)| n % 2 == 1)
            .map(|(n, &id)| (id, Some(100 + n as i32)))
            .collect();
        assert_eq!(kept, want);
    }

    #[test]
    fn database_path_accepts_urls_and_bare_paths() {
        let expect = |input: &str, path: &str| {
            assert_eq!(database_path(input).expect(input), PathBuf::from(path));
        };
        expect("sqlite:state.db", "state.db");
        expect("sqlite://state.db", "state.db");
        expect(
            "sqlite:///var/lib/soarjobd/state.db",
            "/var/lib/soarjobd/state.db",
        );
        expect("/var/lib/soarjobd/state.db", "/var/lib/soarjobd/state.db");
        expect("state.db", "state.db");
        for bad in [
            "",
            "sqlite:",
            "sqlite::memory:",
            "postgres://db/soarjobd",
            "sqlite:x.db?mode=ro",
        ] {
            assert!(
                matches!(database_path(bad), Err(StoreError::UnsupportedUrl(_))),
                "{bad:?} should be refused"
            );
        }
    }

    /// The SQLite side of the owner rule (live and dead owners, and finishing never before
    /// the start, are the contract's `interrupt_running_spares_live_owners`): a row written
    /// before owners were recorded counts as dead, and a claim records the owner's pid.
    #[tokio::test]
    async fn rows_without_an_owner_are_dead_and_claims_record_the_owner() {
        let (_dir, _path, daemon) = temp_store().await;
        let legacy = claim_one(&daemon, new_run("job-c", 2_000, Trigger::Schedule)).await;
        sqlx::query("UPDATE job_runs SET owner_pid = NULL, owner_host = NULL WHERE id = ?")
            .bind(legacy)
            .execute(daemon.pool())
            .await
            .expect("clear owner");
        let own = claim_one(&daemon, new_run("job-d", 3_000, Trigger::Schedule)).await;
        let owner = daemon
            .run(own)
            .await
            .unwrap()
            .unwrap()
            .owner
            .expect("owner");
        assert_eq!(owner.pid, i64::from(std::process::id()));

        let interrupted = daemon.interrupt_running(at(10_000)).await.expect("sweep");
        let ids: Vec<i64> = interrupted.iter().map(|r| r.id).collect();
        assert_eq!(ids, [legacy]);
        let r = daemon.run(own).await.expect("run").expect("exists");
        assert_eq!(r.status, RunStatus::Running);
    }

    /// A size-limited database (`PRAGMA max_page_count` on every connection, no root needed):
    /// while it is full every claim fails, and once space is freed every connection of the
    /// pool claims again; none was left with a transaction open.
    #[tokio::test]
    async fn a_full_database_recovers_on_every_connection_when_space_is_freed() {
        let (_dir, path, store) = temp_store().await;
        sqlx::query("CREATE TABLE filler (b BLOB NOT NULL)")
            .execute(store.pool())
            .await
            .expect("filler table");
        claim_one(&store, new_run("job-a", 0, Trigger::Schedule)).await;
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
            .fetch_one(store.pool())
            .await
            .expect("page count");
        store.close().await;
        let limit = pages + 40;
        let store = SqliteStore::open_with(path.to_str().expect("utf-8"), |o| {
            o.pragma("max_page_count", limit.to_string())
        })
        .await
        .expect("open limited");

        // Fill it (from several connections: the writes go through the pool).
        let blob = vec![7u8; 16 * 1024];
        let mut full = None;
        for _ in 0..1_000 {
            let r = sqlx::query("INSERT INTO filler (b) VALUES (?)")
                .bind(&blob)
                .execute(store.pool())
                .await;
            if let Err(e) = r {
                full = Some(e.to_string());
                break;
            }
        }
        let full = full.expect("the database never filled up");
        assert!(full.contains("full"), "{full}");
        // Claims are bigger than what is left: each one fails, on every connection in turn.
        let big = "x".repeat(64 * 1024);
        for i in 0..(2 * MAX_CONNECTIONS as i64) {
            let run = NewRun {
                message: Some(big.clone()),
                ..new_run("job-a", 1_000 * (i + 1), Trigger::Schedule)
            };
            let err = store
                .claim_runs(&[run])
                .await
                .expect_err("the disk is full");
            assert!(error_text(&err).contains("full"), "{}", error_text(&err));
        }

        sqlx::query("DELETE FROM filler")
            .execute(store.pool())
            .await
            .expect("free space");
        for i in 0..(3 * MAX_CONNECTIONS as i64) {
            let run = NewRun {
                message: Some(big.clone()),
                ..new_run("job-a", 100_000 + i, Trigger::Schedule)
            };
            let ids = store
                .claim_runs(&[run])
                .await
                .unwrap_or_else(|e| panic!("claim {i} after recovery: {}", error_text(&e)));
            assert!(ids[0].is_some());
            // Deleted again so the next claim has room too.
            sqlx::query("UPDATE job_runs SET message = NULL")
                .execute(store.pool())
                .await
                .expect("shrink");
        }
        store.close().await;
    }

    fn error_text(e: &StoreError) -> String {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }

    #[tokio::test]
    async fn new_files_are_private_and_existing_ones_are_left_alone() {
        let (dir, path, store) = temp_store().await;
        claim_one(&store, new_run("job-a", 0, Trigger::Schedule)).await;
        let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        let wal = PathBuf::from(format!("{}-wal", path.display()));
        assert_eq!(mode(&wal), 0o600, "SQLite copies the database file's mode");
        assert_eq!(mode(path.parent().expect("parent")), 0o700);
        store.close().await;

        let shared = dir.path().join("shared.db");
        std::fs::write(&shared, b"").expect("create");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let store = SqliteStore::open(&format!("sqlite:{}", shared.display()))
            .await
            .expect("open");
        assert_eq!(mode(&shared), 0o640);
        store.close().await;
    }

    #[tokio::test]
    async fn reopening_keeps_data_and_applies_migrations_once() {
        let (_dir, path, store) = temp_store().await;
        let id = claim_one(&store, new_run("job-a", 0, Trigger::Schedule)).await;
        store
            .set_timestamp("job-a", "timestamp", 42)
            .await
            .expect("set");
        store.close().await;
        assert!(
            std::fs::metadata(format!("{}-wal", path.display())).map_or(true, |m| m.len() == 0),
            "close checkpoints and truncates the WAL"
        );

        for _ in 0..2 {
            let store = SqliteStore::open(path.to_str().expect("utf-8"))
                .await
                .expect("reopen");
            assert!(store.run(id).await.expect("run").is_some());
            assert_eq!(
                store
                    .get_timestamp("job-a", "timestamp")
                    .await
                    .expect("get"),
                Some(42)
            );
            let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
                .fetch_one(store.pool())
                .await
                .expect("count");
            assert_eq!(
                applied,
                i64::try_from(MIGRATOR.iter().count()).expect("count")
            );
            let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(store.pool())
                .await
                .expect("pragma");
            assert_eq!(journal, "wal");
            let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
                .fetch_one(store.pool())
                .await
                .expect("pragma");
            assert_eq!(fk, 1);
            store.close().await;
        }
    }

    /// A database a newer soarjobd migrated refuses to open, with an error that says so.
    #[tokio::test]
    async fn a_schema_newer_than_this_build_refuses_to_start() {
        let (_dir, path, store) = temp_store().await;
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, \
                                           execution_time) \
             VALUES (9999, 'from the future', 1, x'00', 1)",
        )
        .execute(store.pool())
        .await
        .expect("a future migration");
        store.close().await;
        let err = SqliteStore::open(path.to_str().expect("utf-8"))
            .await
            .expect_err("newer schema");
        assert!(
            matches!(err, StoreError::SchemaTooNew { version: 9999 }),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("newer than this soarjobd"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn stores_opened_concurrently_on_a_new_file_both_succeed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite:{}", dir.path().join("new.db").display());
        let (a, b) = tokio::join!(SqliteStore::open(&url), SqliteStore::open(&url));
        let (a, b) = (a.expect("first open"), b.expect("second open"));
        claim_one(&a, new_run("job-a", 0, Trigger::Schedule)).await;
        assert_eq!(b.history("job-a", 1).await.expect("history").len(), 1);
    }

    /// A new file gives the pages of pruned rows back: after a prune and `reclaim` it is
    /// smaller than before.
    #[tokio::test]
    async fn a_new_file_shrinks_after_pruning() {
        let (_dir, path, store) = temp_store().await;
        let mode: i64 = sqlx::query_scalar("PRAGMA auto_vacuum")
            .fetch_one(store.pool())
            .await
            .expect("pragma");
        assert_eq!(mode, 2, "incremental");
        let runs: Vec<NewRun> = (0..3000)
            .map(|i| {
                let mut r = new_run("job-a", i * 1000, Trigger::Schedule);
                r.message = Some("x".repeat(200));
                r
            })
            .collect();
        store.claim_runs(&runs).await.expect("claim");
        let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM job_runs")
            .fetch_all(store.pool())
            .await
            .expect("ids");
        for id in &ids {
            store
                .finish_run(*id, &finish(RunStatus::Succeeded, 1))
                .await
                .expect("finish");
        }
        let file = |p: &Path| std::fs::metadata(p).expect("size").len();
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(store.pool())
            .await
            .expect("checkpoint");
        let before = file(&path);
        let r = Retention {
            keep_runs: 10,
            older_than: DateTime::<Utc>::MIN_UTC,
            keep_failed_runs: 10,
            failed_older_than: DateTime::<Utc>::MIN_UTC,
            logs_older_than: DateTime::<Utc>::MIN_UTC,
        };
        let mut deleted = 0;
        loop {
            let p = store.prune_step(&r, 500).await.expect("prune");
            deleted += p.runs;
            if p.runs == 0 {
                break;
            }
        }
        assert_eq!(deleted, 2990);
        store.reclaim().await.expect("reclaim");
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(store.pool())
            .await
            .expect("checkpoint");
        let after = file(&path);
        assert!(after < before / 2, "{before} -> {after}");
        store.close().await;
    }

    #[tokio::test]
    async fn reads_proceed_while_another_process_holds_the_write_lock() {
        let (_dir, path, daemon) = temp_store().await;
        let id = claim_one(&daemon, new_run("job-a", 0, Trigger::Schedule)).await;
        let cli = SqliteStore::open(path.to_str().expect("utf-8"))
            .await
            .expect("open");

        // The "daemon" sits in an exclusive write transaction with an uncommitted row.
        let mut tx = daemon
            .pool()
            .begin_with("BEGIN EXCLUSIVE")
            .await
            .expect("begin");
        sqlx::query(
            "INSERT INTO job_runs (job_id, scheduled_at, \"trigger\", status, started_at) \
             VALUES ('job-a', 1000, 'schedule', 'running', 1000)",
        )
        .execute(&mut *tx)
        .await
        .expect("insert");

        // WAL lets the reader see the last commit at once; a rollback journal would make it wait
        // for the busy timeout (5 s) and fail.
        let read = tokio::time::timeout(Duration::from_secs(2), async {
            (cli.history("job-a", 10).await, cli.last_runs().await)
        })
        .await
        .expect("reads must not wait for the writer");
        let history = read.0.expect("history");
        assert_eq!(history.iter().map(|r| r.id).collect::<Vec<_>>(), [id]);
        assert_eq!(read.1.expect("last runs").len(), 1);
        tx.rollback().await.expect("rollback");
    }

    #[tokio::test]
    async fn throughput_smoke_claim_and_finish() {
        let (_dir, _path, store) = temp_store().await;
        for i in 0..1_000_i64 {
            let tick = i * 1_000;
            let id = claim_one(&store, new_run("bench", tick, Trigger::Schedule)).await;
            let done = finish(RunStatus::Succeeded, tick + 5);
            assert!(store.finish_run(id, &done).await.expect("finish"));
        }
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM job_runs WHERE status = 'succeeded'")
                .fetch_one(store.pool())
                .await
                .expect("count");
        assert_eq!(count, 1_000);
        store.close().await;
    }
}

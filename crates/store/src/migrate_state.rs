//! `soarjobd migrate-state`: copies a SQLite state database into an empty PostgreSQL one, so
//! a team moving to several replicas keeps its history, last-success timestamps, job context
//! and seen-sets (and no job re-comments every case it already handled).
//!
//! * The source must not be in use: the copy takes the SQLite daemon lock, so a daemon still
//!   running on the file makes it refuse (its writes during the copy would be lost).
//! * The target must hold no state: copying twice, or over a cluster that already ran, would
//!   mix two histories; it is refused with the counts found.
//! * Everything is copied in one PostgreSQL transaction: a failure leaves the target empty.
//! * Run ids are kept (seen-set entries name runs by id), and the id sequence is moved past
//!   the highest id SQLite ever gave, so no id is reused. Rows left `running` by a crashed
//!   daemon arrive `interrupted`. Process records (`run_processes`) are host-local and not
//!   copied.
//! * The operator's state comes along too: pauses (a paused job stays paused on the cluster),
//!   every run's stored log lines, and alert episodes (an open episode is neither re-sent nor
//!   forgotten), episode ids kept.

use sqlx::{Postgres, Row, Transaction};

use sqlx::SqlitePool;

use super::postgres::PgStore;
use super::sqlite::{SourceSchema, open_read_only};
use super::{OpenOptions, RunStore, StoreError};

/// What was copied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Copied {
    pub runs: u64,
    pub timestamps: u64,
    pub context: u64,
    pub seen: u64,
    pub pauses: u64,
    pub run_log_lines: u64,
    pub alert_episodes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateStateError {
    #[error("--from must be a SQLite URL (sqlite:PATH), got {0:?}")]
    From(String),
    #[error("--to must be a PostgreSQL URL (postgres://...)")]
    To,
    #[error("the SQLite database {0} does not exist (check the path; nothing was copied)")]
    SourceMissing(String),
    #[error(
        "{path} is not a soarjobd state database ({why}); nothing was copied and the file was \
         not changed"
    )]
    SourceForeign { path: String, why: String },
    #[error(
        "{path} was last opened by an older soarjobd ({applied} of {known} schema migrations): \
         start this version's daemon on it once (or run `soarjobd list` with its \
         database_url) to upgrade it, then migrate"
    )]
    SourceOlder {
        path: String,
        applied: usize,
        known: usize,
    },
    #[error("cannot take the SQLite database for the copy (stop the daemon using it first)")]
    Locked(#[source] super::LockError),
    #[error(
        "the target database already holds state ({runs} runs, {other} timestamps, context \
         keys and seen-set entries); migrate-state copies into an empty database only"
    )]
    NotEmpty { runs: i64, other: i64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for MigrateStateError {
    fn from(e: sqlx::Error) -> Self {
        MigrateStateError::Store(crate::db(e))
    }
}

/// Rows per INSERT.
const CHUNK: usize = 2_000;

/// The message of a run that was `running` in the source (its daemon crashed).
const LEFT_RUNNING: &str =
    "the run was in progress when its daemon stopped (found running by migrate-state)";

/// Copies `from` (`sqlite:PATH`) into `to` (`postgres://...`, migrated here if new).
pub async fn migrate_state(from: &str, to: &str) -> Result<Copied, MigrateStateError> {
    if !from.starts_with("sqlite:") {
        return Err(MigrateStateError::From(from.to_owned()));
    }
    if !super::is_postgres_url(to) {
        return Err(MigrateStateError::To);
    }
    // The source is opened read-only and never created: a typo'd path must not become an
    // empty database that "migrates" nothing, and a foreign file must not get our tables.
    // Both are checked before the daemon lock, whose `.lock` file would be left behind.
    let Some((src, schema)) = open_read_only(from).await? else {
        return Err(MigrateStateError::SourceMissing(from.to_owned()));
    };
    let refused = match schema {
        SourceSchema::Current => None,
        SourceSchema::Foreign(why) => Some(MigrateStateError::SourceForeign {
            path: from.to_owned(),
            why,
        }),
        SourceSchema::Older { applied, known } => Some(MigrateStateError::SourceOlder {
            path: from.to_owned(),
            applied,
            known,
        }),
        SourceSchema::Newer { version } => {
            Some(MigrateStateError::Store(StoreError::SchemaTooNew {
                version,
            }))
        }
    };
    if let Some(e) = refused {
        src.close().await;
        return Err(e);
    }
    let _lock = match super::lock_daemon(from) {
        Ok(l) => l,
        Err(e) => {
            src.close().await;
            return Err(MigrateStateError::Locked(e));
        }
    };
    let result = match PgStore::open(to, &OpenOptions::default()).await {
        Ok(target) => {
            let r = copy(&src, &target).await;
            target.close().await;
            r
        }
        Err(e) => Err(e.into()),
    };
    src.close().await;
    result
}

async fn copy(src: &SqlitePool, target: &PgStore) -> Result<Copied, MigrateStateError> {
    let mut tx = target.pool().begin().await?;
    // Two copies at once would both find the target empty: the second waits here, then
    // finds the first one's rows.
    sqlx::query(
        "LOCK TABLE job_runs, job_timestamps, job_context, job_seen, job_pauses, \
         job_pause_history, run_logs, alert_episodes IN EXCLUSIVE MODE",
    )
    .execute(&mut *tx)
    .await?;
    let runs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM job_runs")
        .fetch_one(&mut *tx)
        .await?;
    let other: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM job_timestamps) + (SELECT COUNT(*) FROM job_context) \
              + (SELECT COUNT(*) FROM job_seen) + (SELECT COUNT(*) FROM job_pauses) \
              + (SELECT COUNT(*) FROM alert_episodes)",
    )
    .fetch_one(&mut *tx)
    .await?;
    if runs + other > 0 {
        return Err(MigrateStateError::NotEmpty { runs, other });
    }
    let mut copied = Copied::default();

    let rows = sqlx::query(
        "SELECT id, job_id, scheduled_at, \"trigger\", status, started_at, finished_at, \
                duration_ms, message, error, stats, owner_pid, owner_host \
         FROM job_runs ORDER BY id",
    )
    .fetch_all(src)
    .await?;
    for chunk in rows.chunks(CHUNK) {
        copied.runs += insert_runs(&mut tx, chunk).await?;
    }
    // Past every id SQLite ever gave (AUTOINCREMENT remembers pruned ones too).
    let seq: Option<i64> =
        sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = 'job_runs'")
            .fetch_optional(src)
            .await?;
    let max_id: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM job_runs")
        .fetch_one(src)
        .await?;
    let next = seq.unwrap_or(0).max(max_id.unwrap_or(0));
    if next > 0 {
        sqlx::query("SELECT setval(pg_get_serial_sequence('job_runs', 'id'), $1)")
            .bind(next)
            .execute(&mut *tx)
            .await?;
    }

    let timestamps: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT job_id, \"key\", value_ms FROM job_timestamps ORDER BY job_id, \"key\"",
    )
    .fetch_all(src)
    .await?;
    for (job, key, value) in timestamps {
        let updated: i64 = sqlx::query_scalar(
            "SELECT updated_at FROM job_timestamps WHERE job_id = ? AND \"key\" = ?",
        )
        .bind(&job)
        .bind(&key)
        .fetch_one(src)
        .await?;
        sqlx::query(
            "INSERT INTO job_timestamps (job_id, \"key\", value_ms, updated_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(job)
        .bind(key)
        .bind(value)
        .bind(updated)
        .execute(&mut *tx)
        .await?;
        copied.timestamps += 1;
    }

    let rows = sqlx::query("SELECT job_id, \"key\", \"value\", updated_at FROM job_context")
        .fetch_all(src)
        .await?;
    for r in &rows {
        sqlx::query(
            "INSERT INTO job_context (job_id, \"key\", \"value\", updated_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(r.try_get::<String, _>("job_id")?)
        .bind(r.try_get::<String, _>("key")?)
        .bind(r.try_get::<String, _>("value")?)
        .bind(r.try_get::<i64, _>("updated_at")?)
        .execute(&mut *tx)
        .await?;
        copied.context += 1;
    }

    let rows = sqlx::query("SELECT job_id, scope, item, state, run_id, updated_at FROM job_seen")
        .fetch_all(src)
        .await?;
    for chunk in rows.chunks(CHUNK) {
        let mut cols: (Vec<String>, Vec<String>, Vec<String>, Vec<String>) = Default::default();
        let mut rest: (Vec<Option<i64>>, Vec<i64>) = Default::default();
        for r in chunk {
            cols.0.push(r.try_get("job_id")?);
            cols.1.push(r.try_get("scope")?);
            cols.2.push(r.try_get("item")?);
            cols.3.push(r.try_get("state")?);
            rest.0.push(r.try_get("run_id")?);
            rest.1.push(r.try_get("updated_at")?);
        }
        copied.seen += sqlx::query(
            "INSERT INTO job_seen (job_id, scope, item, state, run_id, updated_at) \
             SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], \
                                  $5::BIGINT[], $6::BIGINT[])",
        )
        .bind(cols.0)
        .bind(cols.1)
        .bind(cols.2)
        .bind(cols.3)
        .bind(rest.0)
        .bind(rest.1)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    copy_ops(src, &mut tx, &mut copied).await?;
    tx.commit().await?;
    Ok(copied)
}

/// Pauses, run log lines and alert episodes (the `OpsStore` tables), in the same transaction.
async fn copy_ops(
    src: &sqlx::SqlitePool,
    tx: &mut Transaction<'_, Postgres>,
    copied: &mut Copied,
) -> Result<(), MigrateStateError> {
    let rows = sqlx::query(
        "SELECT job_id, since, reason, actor, resumed_at, resumed_by, catch_up FROM job_pauses",
    )
    .fetch_all(src)
    .await?;
    for r in &rows {
        sqlx::query(
            "INSERT INTO job_pauses (job_id, since, reason, actor, resumed_at, resumed_by, \
                 catch_up) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(r.try_get::<String, _>("job_id")?)
        .bind(r.try_get::<i64, _>("since")?)
        .bind(r.try_get::<Option<String>, _>("reason")?)
        .bind(r.try_get::<String, _>("actor")?)
        .bind(r.try_get::<Option<i64>, _>("resumed_at")?)
        .bind(r.try_get::<Option<String>, _>("resumed_by")?)
        .bind(r.try_get::<i64, _>("catch_up")?)
        .execute(&mut **tx)
        .await?;
        copied.pauses += 1;
    }
    // The ended pauses (the job page's history), oldest first so the ids keep their order.
    let rows = sqlx::query(
        "SELECT job_id, since, reason, actor, resumed_at, resumed_by, catch_up \
         FROM job_pause_history ORDER BY id",
    )
    .fetch_all(src)
    .await?;
    for r in &rows {
        sqlx::query(
            "INSERT INTO job_pause_history (job_id, since, reason, actor, resumed_at, \
                 resumed_by, catch_up) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(r.try_get::<String, _>("job_id")?)
        .bind(r.try_get::<i64, _>("since")?)
        .bind(r.try_get::<Option<String>, _>("reason")?)
        .bind(r.try_get::<String, _>("actor")?)
        .bind(r.try_get::<i64, _>("resumed_at")?)
        .bind(r.try_get::<String, _>("resumed_by")?)
        .bind(r.try_get::<i64, _>("catch_up")?)
        .execute(&mut **tx)
        .await?;
    }

    // Run logs can be large (up to `run_logs.max_bytes` per run): read them a page at a time
    // in key order instead of all at once.
    let mut after: (i64, i64) = (i64::MIN, i64::MIN);
    loop {
        let rows = sqlx::query(
            "SELECT run_id, seq, at, level, target, message, fields FROM run_logs \
             WHERE (run_id, seq) > (?, ?) ORDER BY run_id, seq LIMIT ?",
        )
        .bind(after.0)
        .bind(after.1)
        .bind(CHUNK as i64)
        .fetch_all(src)
        .await?;
        let Some(last) = rows.last() else { break };
        after = (last.try_get("run_id")?, last.try_get("seq")?);
        let mut ids: (Vec<i64>, Vec<i64>, Vec<i64>) = Default::default();
        let mut text: (Vec<String>, Vec<String>, Vec<String>, Vec<String>) = Default::default();
        for r in &rows {
            ids.0.push(r.try_get("run_id")?);
            ids.1.push(r.try_get("seq")?);
            ids.2.push(r.try_get("at")?);
            text.0.push(r.try_get("level")?);
            text.1.push(r.try_get("target")?);
            text.2.push(r.try_get("message")?);
            text.3.push(r.try_get("fields")?);
        }
        copied.run_log_lines += sqlx::query(
            "INSERT INTO run_logs (run_id, seq, at, level, target, message, fields) \
             SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::BIGINT[], $4::TEXT[], \
                                  $5::TEXT[], $6::TEXT[], $7::TEXT[])",
        )
        .bind(ids.0)
        .bind(ids.1)
        .bind(ids.2)
        .bind(text.0)
        .bind(text.1)
        .bind(text.2)
        .bind(text.3)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    }

    let rows = sqlx::query(
        "SELECT id, rule, subject, opened_at, detail, resolved_at FROM alert_episodes ORDER BY id",
    )
    .fetch_all(src)
    .await?;
    for r in &rows {
        sqlx::query(
            "INSERT INTO alert_episodes (id, rule, subject, opened_at, detail, resolved_at) \
             OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(r.try_get::<i64, _>("id")?)
        .bind(r.try_get::<String, _>("rule")?)
        .bind(r.try_get::<String, _>("subject")?)
        .bind(r.try_get::<i64, _>("opened_at")?)
        .bind(r.try_get::<String, _>("detail")?)
        .bind(r.try_get::<Option<i64>, _>("resolved_at")?)
        .execute(&mut **tx)
        .await?;
        copied.alert_episodes += 1;
    }
    if let Some(max) = rows.last() {
        // Episode ids were kept: new episodes continue after them.
        sqlx::query("SELECT setval(pg_get_serial_sequence('alert_episodes', 'id'), $1)")
            .bind(max.try_get::<i64, _>("id")?)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

async fn insert_runs(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[sqlx::sqlite::SqliteRow],
) -> Result<u64, MigrateStateError> {
    let mut id = Vec::new();
    let mut job = Vec::new();
    let mut scheduled = Vec::new();
    let mut trigger = Vec::new();
    let mut status = Vec::new();
    let mut started = Vec::new();
    let mut finished: Vec<Option<i64>> = Vec::new();
    let mut duration: Vec<Option<i64>> = Vec::new();
    let mut message: Vec<Option<String>> = Vec::new();
    let mut error: Vec<Option<String>> = Vec::new();
    let mut stats: Vec<String> = Vec::new();
    let mut pid: Vec<Option<i64>> = Vec::new();
    let mut host: Vec<Option<String>> = Vec::new();
    for r in rows {
        let s: String = r.try_get("status")?;
        let start: i64 = r.try_get("started_at")?;
        id.push(r.try_get::<i64, _>("id")?);
        job.push(r.try_get::<String, _>("job_id")?);
        scheduled.push(r.try_get::<i64, _>("scheduled_at")?);
        trigger.push(r.try_get::<String, _>("trigger")?);
        started.push(start);
        if s == "running" {
            status.push("interrupted".to_owned());
            finished.push(Some(start));
            duration.push(Some(0));
            message.push(Some(LEFT_RUNNING.to_owned()));
        } else {
            status.push(s);
            finished.push(r.try_get("finished_at")?);
            duration.push(r.try_get("duration_ms")?);
            message.push(r.try_get("message")?);
        }
        error.push(r.try_get("error")?);
        stats.push(r.try_get("stats")?);
        pid.push(r.try_get("owner_pid")?);
        host.push(r.try_get("owner_host")?);
    }
    let n = sqlx::query(
        "INSERT INTO job_runs (id, job_id, scheduled_at, \"trigger\", status, started_at, \
             finished_at, duration_ms, message, error, stats, owner_pid, owner_host) \
         SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::BIGINT[], $4::TEXT[], $5::TEXT[], \
                              $6::BIGINT[], $7::BIGINT[], $8::BIGINT[], $9::TEXT[], $10::TEXT[], \
                              $11::TEXT[], $12::BIGINT[], $13::TEXT[])",
    )
    .bind(id)
    .bind(job)
    .bind(scheduled)
    .bind(trigger)
    .bind(status)
    .bind(started)
    .bind(finished)
    .bind(duration)
    .bind(message)
    .bind(error)
    .bind(stats)
    .bind(pid)
    .bind(host)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(n)
}

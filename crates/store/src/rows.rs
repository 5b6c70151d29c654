//! One decoder per row type, for both backends: a raw row struct (`sqlx::FromRow`, generic
//! over the backend's row, so SQLite and PostgreSQL decode the same columns with the same
//! code) and one conversion into the core's row type, which checks what the column types
//! cannot (timestamps in range, JSON that parses, enum words the core knows) and reports a
//! bad value as [`StoreError::Corrupt`] with its column.
//!
//! Both schemas store times as Unix milliseconds (`INTEGER` / `BIGINT`), JSON as text and
//! enums as their words, so one raw struct fits both; the one difference, the run owner's
//! identity (`owner_nonce` text on SQLite, the `owner_node` id on PostgreSQL), is two optional
//! columns of which each backend selects its own.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, Row};

use crate::Db;
use soarjobd_core::store::ops::{AlertEpisode, AlertRule, EndedPause, JobPause, RunLogLine};
use soarjobd_core::store::{
    RunMark, RunOwner, RunProcess, RunRecord, RunStatus, SeenEntry, SeenState, StoreError,
    StoreResult, Trigger,
};

pub(crate) fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_millis(column: &'static str, ms: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| StoreError::Corrupt {
        column,
        value: ms.to_string(),
    })
}

pub(crate) fn opt_from_millis(
    column: &'static str,
    ms: Option<i64>,
) -> StoreResult<Option<DateTime<Utc>>> {
    ms.map(|ms| from_millis(column, ms)).transpose()
}

pub(crate) fn parse_json(column: &'static str, text: String) -> StoreResult<serde_json::Value> {
    serde_json::from_str(&text).map_err(|_| StoreError::Corrupt {
        column,
        value: text,
    })
}

pub(crate) fn parse_trigger(s: String) -> StoreResult<Trigger> {
    Trigger::parse(&s).ok_or(StoreError::Corrupt {
        column: "trigger",
        value: s,
    })
}

/// A raw row struct and its conversion into the core's row type.
pub(crate) trait Raw {
    type Core;
    fn into_core(self) -> StoreResult<Self::Core>;
}

/// Decodes one row of any backend into the core type of `T` (a raw row struct).
fn decode<'r, R: Row, T: FromRow<'r, R> + Raw>(row: &'r R) -> StoreResult<T::Core> {
    T::from_row(row).db()?.into_core()
}

/// `decoder!(name: RawType)`: `name(&row)`, a row of either backend as `RawType`'s core type
/// (a plain function, so it also serves `rows.iter().map(name)`).
macro_rules! decoder {
    ($name:ident: $raw:ty) => {
        pub(crate) fn $name<'r, R: Row>(row: &'r R) -> StoreResult<<$raw as Raw>::Core>
        where
            $raw: FromRow<'r, R>,
        {
            decode::<R, $raw>(row)
        }
    };
}

/// The owner columns of `job_runs`.
#[derive(FromRow)]
pub(crate) struct RawOwner {
    owner_pid: Option<i64>,
    owner_host: Option<String>,
    /// SQLite: the owner's lock-file name.
    #[sqlx(default)]
    owner_nonce: Option<String>,
    /// PostgreSQL: the owner's node id (a node is one store instance).
    #[sqlx(default)]
    owner_node: Option<i64>,
}

impl RawOwner {
    fn owner(self) -> Option<RunOwner> {
        let nonce = match (self.owner_node, self.owner_nonce) {
            (Some(node), _) => node.to_string(),
            (None, nonce) => nonce.unwrap_or_default(),
        };
        match (self.owner_pid, self.owner_host) {
            (Some(pid), Some(host)) => Some(RunOwner { pid, host, nonce }),
            _ => None,
        }
    }
}

impl Raw for RawOwner {
    type Core = Option<RunOwner>;

    fn into_core(self) -> StoreResult<Option<RunOwner>> {
        Ok(self.owner())
    }
}

decoder!(owner_from_row: RawOwner);

/// A `job_runs` row.
#[derive(FromRow)]
pub(crate) struct RawRun {
    id: i64,
    job_id: String,
    scheduled_at: i64,
    trigger: String,
    status: String,
    started_at: i64,
    finished_at: Option<i64>,
    duration_ms: Option<i64>,
    message: Option<String>,
    error: Option<String>,
    stats: String,
    #[sqlx(flatten)]
    owner: RawOwner,
}

impl Raw for RawRun {
    type Core = RunRecord;

    fn into_core(self) -> StoreResult<RunRecord> {
        let status = RunStatus::parse(&self.status).ok_or(StoreError::Corrupt {
            column: "status",
            value: self.status.clone(),
        })?;
        Ok(RunRecord {
            id: self.id,
            job_id: self.job_id,
            scheduled_at: from_millis("scheduled_at", self.scheduled_at)?,
            trigger: parse_trigger(self.trigger)?,
            status,
            started_at: from_millis("started_at", self.started_at)?,
            finished_at: opt_from_millis("finished_at", self.finished_at)?,
            duration_ms: self.duration_ms,
            message: self.message,
            error: self.error,
            stats: parse_json("stats", self.stats)?,
            owner: self.owner.owner(),
        })
    }
}

decoder!(run_from_row: RawRun);

pub(crate) fn runs_from_rows<R: Row>(rows: &[R]) -> StoreResult<Vec<RunRecord>>
where
    for<'r> RawRun: FromRow<'r, R>,
{
    rows.iter().map(run_from_row).collect()
}

/// A `job_runs` row as a history strip reads it ([`RunMark`]).
#[derive(FromRow)]
pub(crate) struct RawMark {
    id: i64,
    job_id: String,
    scheduled_at: i64,
    trigger: String,
    status: String,
    started_at: i64,
    duration_ms: Option<i64>,
}

impl Raw for RawMark {
    type Core = RunMark;

    fn into_core(self) -> StoreResult<RunMark> {
        let status = RunStatus::parse(&self.status).ok_or(StoreError::Corrupt {
            column: "status",
            value: self.status.clone(),
        })?;
        Ok(RunMark {
            id: self.id,
            job_id: self.job_id,
            scheduled_at: from_millis("scheduled_at", self.scheduled_at)?,
            trigger: parse_trigger(self.trigger)?,
            status,
            started_at: from_millis("started_at", self.started_at)?,
            duration_ms: self.duration_ms,
        })
    }
}

decoder!(mark_from_row: RawMark);

pub(crate) fn marks_from_rows<R: Row>(rows: &[R]) -> StoreResult<Vec<RunMark>>
where
    for<'r> RawMark: FromRow<'r, R>,
{
    rows.iter().map(mark_from_row).collect()
}

/// Process start times in clock ticks (`u64`) as the schema's signed integer.
pub(crate) fn ticks_to_db(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

fn ticks_from_db(t: i64) -> u64 {
    u64::try_from(t).unwrap_or(0)
}

/// A `run_processes` row.
#[derive(FromRow)]
pub(crate) struct RawProcess {
    run_id: i64,
    host: String,
    boot_id: String,
    owner_pid: i32,
    owner_start_ticks: i64,
    pgid: Option<i32>,
    leader_start_ticks: Option<i64>,
    token: String,
    cgroup: Option<String>,
    recorded_at: i64,
}

impl Raw for RawProcess {
    type Core = RunProcess;

    fn into_core(self) -> StoreResult<RunProcess> {
        Ok(RunProcess {
            run_id: self.run_id,
            host: self.host,
            boot_id: self.boot_id,
            owner_pid: self.owner_pid,
            owner_start_ticks: ticks_from_db(self.owner_start_ticks),
            pgid: self.pgid,
            leader_start_ticks: self.leader_start_ticks.map(ticks_from_db),
            token: self.token,
            cgroup: self.cgroup,
            recorded_at: from_millis("recorded_at", self.recorded_at)?,
        })
    }
}

decoder!(process_from_row: RawProcess);

/// A `job_seen` row.
#[derive(FromRow)]
pub(crate) struct RawSeen {
    item: String,
    state: String,
    run_id: Option<i64>,
    updated_at: i64,
}

impl Raw for RawSeen {
    type Core = SeenEntry;

    fn into_core(self) -> StoreResult<SeenEntry> {
        let state = SeenState::parse(&self.state).ok_or(StoreError::Corrupt {
            column: "state",
            value: self.state.clone(),
        })?;
        Ok(SeenEntry {
            item: self.item,
            state,
            run_id: self.run_id,
            updated_at: from_millis("updated_at", self.updated_at)?,
        })
    }
}

decoder!(seen_from_row: RawSeen);

/// The pause columns of a `job_pauses` row.
#[derive(FromRow)]
pub(crate) struct RawPause {
    job_id: String,
    since: i64,
    reason: Option<String>,
    actor: String,
}

impl Raw for RawPause {
    type Core = JobPause;

    fn into_core(self) -> StoreResult<JobPause> {
        Ok(JobPause {
            job_id: self.job_id,
            since: from_millis("since", self.since)?,
            reason: self.reason,
            actor: self.actor,
        })
    }
}

decoder!(pause_from_row: RawPause);

/// A whole `job_pauses` row: `None` while the pause is in force.
#[derive(FromRow)]
pub(crate) struct RawEnded {
    #[sqlx(flatten)]
    pause: RawPause,
    resumed_at: Option<i64>,
    resumed_by: Option<String>,
    catch_up: i64,
}

impl Raw for RawEnded {
    type Core = Option<EndedPause>;

    fn into_core(self) -> StoreResult<Option<EndedPause>> {
        let Some(resumed_at) = opt_from_millis("resumed_at", self.resumed_at)? else {
            return Ok(None);
        };
        Ok(Some(EndedPause {
            pause: self.pause.into_core()?,
            resumed_at,
            resumed_by: self.resumed_by.unwrap_or_default(),
            catch_up: self.catch_up != 0,
        }))
    }
}

decoder!(ended_from_row: RawEnded);

/// An `alert_episodes` row.
#[derive(FromRow)]
pub(crate) struct RawEpisode {
    id: i64,
    rule: String,
    subject: String,
    opened_at: i64,
    detail: String,
    resolved_at: Option<i64>,
}

impl Raw for RawEpisode {
    type Core = AlertEpisode;

    fn into_core(self) -> StoreResult<AlertEpisode> {
        Ok(AlertEpisode {
            id: self.id,
            rule: AlertRule::parse(&self.rule).ok_or(StoreError::Corrupt {
                column: "rule",
                value: self.rule.clone(),
            })?,
            subject: self.subject,
            opened_at: from_millis("opened_at", self.opened_at)?,
            detail: self.detail,
            resolved_at: opt_from_millis("resolved_at", self.resolved_at)?,
        })
    }
}

decoder!(episode_from_row: RawEpisode);

/// A `run_logs` row.
#[derive(FromRow)]
pub(crate) struct RawLogLine {
    run_id: i64,
    seq: i64,
    at: i64,
    level: String,
    target: String,
    message: String,
    fields: String,
}

impl Raw for RawLogLine {
    type Core = RunLogLine;

    fn into_core(self) -> StoreResult<RunLogLine> {
        Ok(RunLogLine {
            run_id: self.run_id,
            seq: self.seq,
            at: from_millis("at", self.at)?,
            level: self.level,
            target: self.target,
            message: self.message,
            fields: parse_json("fields", self.fields)?,
        })
    }
}

decoder!(log_line_from_row: RawLogLine);

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection;

    /// A `job_runs` row as a SELECT of literals: `status`, `scheduled_at`, `stats` and the
    /// owner columns given, the rest valid.
    fn run_select(status: &str, scheduled_at: &str, stats: &str, owner: &str) -> String {
        format!(
            "SELECT CAST(7 AS BIGINT) AS id, 'j' AS job_id, {scheduled_at} AS scheduled_at, \
             'manual' AS \"trigger\", '{status}' AS status, CAST(1000 AS BIGINT) AS started_at, \
             CAST(NULL AS BIGINT) AS finished_at, CAST(NULL AS BIGINT) AS duration_ms, \
             CAST(NULL AS TEXT) AS message, CAST(NULL AS TEXT) AS error, '{stats}' AS stats, \
             {owner}"
        )
    }

    fn corrupt_column(r: StoreResult<RunRecord>) -> &'static str {
        match r {
            Err(StoreError::Corrupt { column, .. }) => column,
            other => panic!("expected a corrupt column, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn sqlite_rows_decode_and_name_the_corrupt_column() {
        let mut c = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .unwrap();
        let owner = "CAST(42 AS BIGINT) AS owner_pid, 'h' AS owner_host, 'ab' AS owner_nonce";
        let row = sqlx::query(sqlx::AssertSqlSafe(run_select(
            "running",
            "CAST(1000 AS BIGINT)",
            "{}",
            owner,
        )))
        .fetch_one(&mut c)
        .await
        .unwrap();
        let run = run_from_row(&row).unwrap();
        assert_eq!(
            (run.id, run.status, run.trigger),
            (7, RunStatus::Running, Trigger::Manual)
        );
        assert_eq!(run.scheduled_at.timestamp_millis(), 1000);
        let o = run.owner.unwrap();
        assert_eq!((o.pid, o.host.as_str(), o.nonce.as_str()), (42, "h", "ab"));

        for (sql, column) in [
            (run_select("bogus", "1000", "{}", owner), "status"),
            (
                run_select("running", "9223372036854775807", "{}", owner),
                "scheduled_at",
            ),
            (run_select("running", "1000", "{not json", owner), "stats"),
        ] {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .fetch_one(&mut c)
                .await
                .unwrap();
            assert_eq!(corrupt_column(run_from_row(&row)), column, "{sql}");
        }
        // A row without an owner (written before owners were recorded).
        let none = "CAST(NULL AS BIGINT) AS owner_pid, CAST(NULL AS TEXT) AS owner_host, \
                    CAST(NULL AS TEXT) AS owner_nonce";
        let row = sqlx::query(sqlx::AssertSqlSafe(run_select(
            "running", "1000", "{}", none,
        )))
        .fetch_one(&mut c)
        .await
        .unwrap();
        assert_eq!(run_from_row(&row).unwrap().owner, None);
    }

    #[tokio::test]
    async fn postgres_rows_decode_with_the_node_as_owner_identity() {
        let db = crate::postgres::testdb::TestDb::create().await;
        let mut c = sqlx::PgConnection::connect(db.url()).await.unwrap();
        let owner = "CAST(42 AS BIGINT) AS owner_pid, 'h' AS owner_host, \
                     CAST(5 AS BIGINT) AS owner_node";
        let row = sqlx::query(sqlx::AssertSqlSafe(run_select(
            "running",
            "CAST(1000 AS BIGINT)",
            "{}",
            owner,
        )))
        .fetch_one(&mut c)
        .await
        .unwrap();
        let o = run_from_row(&row).unwrap().owner.unwrap();
        assert_eq!((o.pid, o.host.as_str(), o.nonce.as_str()), (42, "h", "5"));
        let row = sqlx::query(sqlx::AssertSqlSafe(run_select(
            "bogus",
            "CAST(1000 AS BIGINT)",
            "{}",
            owner,
        )))
        .fetch_one(&mut c)
        .await
        .unwrap();
        assert_eq!(corrupt_column(run_from_row(&row)), "status");
        c.close().await.unwrap();
    }
}

//! [`OpsStore`] on SQLite: paused jobs, run logs, alert episodes. A child module of `sqlite`
//! so it shares its write gate and write transactions; the SQL stays portable (`ON CONFLICT`,
//! `RETURNING`, no SQLite-only functions), so the PostgreSQL port is a transliteration.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{SqliteStore, WriteTx};
use crate::Db;
use crate::rows::{
    ended_from_row, episode_from_row, from_millis, log_line_from_row, millis, pause_from_row,
};
use soarjobd_core::store::StoreResult;
use soarjobd_core::store::ops::{
    AlertEpisode, AlertRule, EndedPause, JobPause, OpsStore, PauseOutcome, RunLogLine,
};

/// Log lines per INSERT statement (7 parameters each, far below SQLite's limit) and per write
/// transaction: small, so a tick waiting for the write gate is not held up by a chatty run.
const LOG_CHUNK: usize = 100;

const PAUSE_COLUMNS: &str = "job_id, since, reason, actor, resumed_at, resumed_by, catch_up";
const EPISODE_COLUMNS: &str = "id, rule, subject, opened_at, detail, resolved_at";

#[async_trait]
impl OpsStore for SqliteStore {
    async fn pause_job(
        &self,
        job_id: &str,
        reason: Option<&str>,
        actor: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<PauseOutcome> {
        let mut tx = WriteTx::begin(self).await?;
        let body = async {
            // Only a row without a pause in force is (re)written: a second pause keeps the
            // first one's start, so the ticks it covers stay covered.
            let changed = sqlx::query(
                "INSERT INTO job_pauses (job_id, since, reason, actor, catch_up) \
                 VALUES (?, ?, ?, ?, 0) \
                 ON CONFLICT (job_id) DO UPDATE SET since = excluded.since, \
                     reason = excluded.reason, actor = excluded.actor, resumed_at = NULL, \
                     resumed_by = NULL, catch_up = 0 \
                 WHERE job_pauses.resumed_at IS NOT NULL",
            )
            .bind(job_id)
            .bind(millis(at))
            .bind(reason)
            .bind(actor)
            .execute(tx.conn())
            .await
            .db()?
            .rows_affected()
                > 0;
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {PAUSE_COLUMNS} FROM job_pauses WHERE job_id = ?"
            )))
            .bind(job_id)
            .fetch_one(tx.conn())
            .await
            .db()?;
            let pause = pause_from_row(&row)?;
            Ok(if changed {
                PauseOutcome::Paused(pause)
            } else {
                PauseOutcome::AlreadyPaused(pause)
            })
        }
        .await;
        tx.finish(body).await
    }

    async fn resume_job(
        &self,
        job_id: &str,
        catch_up: bool,
        actor: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<EndedPause>> {
        let _gate = self.write_lock().await;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE job_pauses SET resumed_at = ?, resumed_by = ?, catch_up = ? \
             WHERE job_id = ? AND resumed_at IS NULL RETURNING {PAUSE_COLUMNS}"
        )))
        .bind(millis(at))
        .bind(actor)
        .bind(i64::from(catch_up))
        .bind(job_id)
        .fetch_optional(&self.pool)
        .await
        .db()?;
        match row {
            Some(r) => ended_from_row(&r),
            None => Ok(None),
        }
    }

    async fn pauses(&self) -> StoreResult<Vec<JobPause>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {PAUSE_COLUMNS} FROM job_pauses WHERE resumed_at IS NULL ORDER BY job_id"
        )))
        .fetch_all(&self.pool)
        .await
        .db()?;
        rows.iter().map(pause_from_row).collect()
    }

    async fn last_resume(&self, job_id: &str) -> StoreResult<Option<EndedPause>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {PAUSE_COLUMNS} FROM job_pauses WHERE job_id = ? AND resumed_at IS NOT NULL"
        )))
        .bind(job_id)
        .fetch_optional(&self.pool)
        .await
        .db()?;
        match row {
            Some(r) => ended_from_row(&r),
            None => Ok(None),
        }
    }

    async fn pause_history(&self, job_id: &str, limit: u32) -> StoreResult<Vec<EndedPause>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {PAUSE_COLUMNS} FROM job_pause_history WHERE job_id = ? \
             ORDER BY id DESC LIMIT ?"
        )))
        .bind(job_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .db()?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.extend(ended_from_row(r)?);
        }
        Ok(out)
    }

    async fn take_catch_ups(&self) -> StoreResult<Vec<EndedPause>> {
        // The scheduler asks every few seconds and there is almost never a request: a read
        // first, so the usual answer takes no write lock (which a claim would wait for).
        let any: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM job_pauses WHERE catch_up <> 0 LIMIT 1")
                .fetch_optional(&self.pool)
                .await
                .db()?;
        if any.is_none() {
            return Ok(Vec::new());
        }
        let _gate = self.write_lock().await;
        // One statement: of two schedulers taking at once, each request goes to one.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE job_pauses SET catch_up = 0 \
             WHERE catch_up <> 0 AND resumed_at IS NOT NULL RETURNING {PAUSE_COLUMNS}"
        )))
        .fetch_all(&self.pool)
        .await
        .db()?;
        let mut taken = Vec::new();
        for r in &rows {
            if let Some(mut e) = ended_from_row(r)? {
                // RETURNING shows the row after the update; the request was there before it.
                e.catch_up = true;
                taken.push(e);
            }
        }
        Ok(taken)
    }

    async fn append_run_logs(&self, lines: &[RunLogLine]) -> StoreResult<()> {
        for chunk in lines.chunks(LOG_CHUNK) {
            let mut sql = String::from(
                "INSERT INTO run_logs (run_id, seq, at, level, target, message, fields) \
                 SELECT v.run_id, v.seq, v.at, v.level, v.target, v.message, v.fields FROM (",
            );
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(" UNION ALL ");
                }
                // Aliased columns on the first row name the derived table's columns.
                sql.push_str(if i == 0 {
                    "SELECT ? AS run_id, ? AS seq, ? AS at, ? AS level, ? AS target, \
                     ? AS message, ? AS fields"
                } else {
                    "SELECT ?, ?, ?, ?, ?, ?, ?"
                });
            }
            // Only lines of runs that still exist (a pruned run takes its lines with it).
            sql.push_str(
                ") v WHERE EXISTS (SELECT 1 FROM job_runs r WHERE r.id = v.run_id) \
                 ON CONFLICT (run_id, seq) DO NOTHING",
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for l in chunk {
                q = q
                    .bind(l.run_id)
                    .bind(l.seq)
                    .bind(millis(l.at))
                    .bind(&l.level)
                    .bind(&l.target)
                    .bind(&l.message)
                    .bind(l.fields.to_string());
            }
            let _gate = self.write_lock().await;
            q.execute(&self.pool).await.db()?;
        }
        Ok(())
    }

    async fn run_logs(
        &self,
        run_id: i64,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<RunLogLine>> {
        let rows = sqlx::query(
            "SELECT run_id, seq, at, level, target, message, fields FROM run_logs \
             WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(run_id)
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .db()?;
        rows.iter().map(log_line_from_row).collect()
    }

    async fn open_alert(
        &self,
        rule: AlertRule,
        subject: &str,
        detail: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<AlertEpisode>> {
        let _gate = self.write_lock().await;
        // The partial unique index refuses a second open episode of (rule, subject).
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO alert_episodes (rule, subject, opened_at, detail) VALUES (?, ?, ?, ?) \
             ON CONFLICT DO NOTHING RETURNING {EPISODE_COLUMNS}"
        )))
        .bind(rule.as_str())
        .bind(subject)
        .bind(millis(at))
        .bind(detail)
        .fetch_optional(&self.pool)
        .await
        .db()?;
        row.as_ref().map(episode_from_row).transpose()
    }

    async fn resolve_alert(
        &self,
        rule: AlertRule,
        subject: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<AlertEpisode>> {
        let _gate = self.write_lock().await;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE alert_episodes SET resolved_at = ? \
             WHERE rule = ? AND subject = ? AND resolved_at IS NULL RETURNING {EPISODE_COLUMNS}"
        )))
        .bind(millis(at))
        .bind(rule.as_str())
        .bind(subject)
        .fetch_optional(&self.pool)
        .await
        .db()?;
        row.as_ref().map(episode_from_row).transpose()
    }

    async fn open_alerts(&self) -> StoreResult<Vec<AlertEpisode>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EPISODE_COLUMNS} FROM alert_episodes WHERE resolved_at IS NULL ORDER BY id"
        )))
        .fetch_all(&self.pool)
        .await
        .db()?;
        rows.iter().map(episode_from_row).collect()
    }

    async fn alert_history(&self, subject: &str, limit: u32) -> StoreResult<Vec<AlertEpisode>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EPISODE_COLUMNS} FROM alert_episodes WHERE subject = ? \
             ORDER BY opened_at DESC, id DESC LIMIT ?"
        )))
        .bind(subject)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .db()?;
        rows.iter().map(episode_from_row).collect()
    }

    async fn last_successes(&self) -> StoreResult<Vec<(String, DateTime<Utc>)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT job_id, MAX(finished_at) AS at FROM job_runs \
             WHERE status = 'succeeded' AND finished_at IS NOT NULL GROUP BY job_id ORDER BY job_id",
        )
        .fetch_all(&self.pool)
        .await
        .db()?;
        rows.into_iter()
            .map(|(job_id, at)| Ok((job_id, from_millis("at", at)?)))
            .collect()
    }
}

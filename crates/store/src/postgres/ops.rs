//! [`OpsStore`] on PostgreSQL: paused jobs, run logs, alert episodes (the schema is
//! `migrations/postgres/0002_ops.sql`).
//!
//! MERGE NOTE: `OpsStore` comes from the branch that adds pause/resume, run logs and alerts
//! (i11-ops), which this branch (i10-pg) does not have, so this file is NOT compiled here
//! (`postgres/mod.rs` does not declare it). After merging both, add `mod ops;` to
//! `postgres/mod.rs`; it is a transliteration of `store/sqlite/ops.rs` (same statements,
//! `$n` placeholders, no write gate: PostgreSQL serialises the conflicting writes itself).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::PgStore;
use crate::Db;
use crate::rows::{
    ended_from_row, episode_from_row, from_millis, log_line_from_row, millis, pause_from_row,
};
use soarjobd_core::store::StoreResult;
use soarjobd_core::store::ops::{
    AlertEpisode, AlertRule, EndedPause, JobPause, OpsStore, PauseOutcome, RunLogLine,
};

macro_rules! pause_columns {
    () => {
        "job_id, since, reason, actor, resumed_at, resumed_by, catch_up"
    };
}
macro_rules! episode_columns {
    () => {
        "id, rule, subject, opened_at, detail, resolved_at"
    };
}

#[async_trait]
impl OpsStore for PgStore {
    async fn pause_job(
        &self,
        job_id: &str,
        reason: Option<&str>,
        actor: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<PauseOutcome> {
        let mut tx = self.pool().begin().await.db()?;
        // Only a row without a pause in force is (re)written: a second pause keeps the first
        // one's start.
        let changed = sqlx::query(
            "INSERT INTO job_pauses (job_id, since, reason, actor, catch_up) \
             VALUES ($1, $2, $3, $4, 0) \
             ON CONFLICT (job_id) DO UPDATE SET since = excluded.since, \
                 reason = excluded.reason, actor = excluded.actor, resumed_at = NULL, \
                 resumed_by = NULL, catch_up = 0 \
             WHERE job_pauses.resumed_at IS NOT NULL",
        )
        .bind(job_id)
        .bind(millis(at))
        .bind(reason)
        .bind(actor)
        .execute(&mut *tx)
        .await
        .db()?
        .rows_affected()
            > 0;
        let row = sqlx::query(concat!(
            "SELECT ",
            pause_columns!(),
            " FROM job_pauses WHERE job_id = $1"
        ))
        .bind(job_id)
        .fetch_one(&mut *tx)
        .await
        .db()?;
        tx.commit().await.db()?;
        let pause = pause_from_row(&row)?;
        Ok(if changed {
            PauseOutcome::Paused(pause)
        } else {
            PauseOutcome::AlreadyPaused(pause)
        })
    }

    async fn resume_job(
        &self,
        job_id: &str,
        catch_up: bool,
        actor: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<EndedPause>> {
        let row = sqlx::query(concat!(
            "UPDATE job_pauses SET resumed_at = $1, resumed_by = $2, catch_up = $3 \
             WHERE job_id = $4 AND resumed_at IS NULL RETURNING ",
            pause_columns!()
        ))
        .bind(millis(at))
        .bind(actor)
        .bind(i64::from(catch_up))
        .bind(job_id)
        .fetch_optional(self.pool())
        .await
        .db()?;
        match row {
            Some(r) => ended_from_row(&r),
            None => Ok(None),
        }
    }

    async fn pauses(&self) -> StoreResult<Vec<JobPause>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            pause_columns!(),
            " FROM job_pauses WHERE resumed_at IS NULL ORDER BY job_id"
        ))
        .fetch_all(self.pool())
        .await
        .db()?;
        rows.iter().map(pause_from_row).collect()
    }

    async fn last_resume(&self, job_id: &str) -> StoreResult<Option<EndedPause>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            pause_columns!(),
            " FROM job_pauses WHERE job_id = $1 AND resumed_at IS NOT NULL"
        ))
        .bind(job_id)
        .fetch_optional(self.pool())
        .await
        .db()?;
        match row {
            Some(r) => ended_from_row(&r),
            None => Ok(None),
        }
    }

    /// One statement: of several replicas' schedulers taking at once, each request goes to
    /// exactly one (the row lock of the UPDATE decides).
    async fn pause_history(&self, job_id: &str, limit: u32) -> StoreResult<Vec<EndedPause>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            pause_columns!(),
            " FROM job_pause_history WHERE job_id = $1 ORDER BY id DESC LIMIT $2"
        ))
        .bind(job_id)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await
        .db()?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.extend(ended_from_row(r)?);
        }
        Ok(out)
    }

    async fn take_catch_ups(&self) -> StoreResult<Vec<EndedPause>> {
        let rows = sqlx::query(concat!(
            "UPDATE job_pauses SET catch_up = 0 \
             WHERE catch_up <> 0 AND resumed_at IS NOT NULL RETURNING ",
            pause_columns!()
        ))
        .fetch_all(self.pool())
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
        if lines.is_empty() {
            return Ok(());
        }
        let mut run_ids = Vec::with_capacity(lines.len());
        let mut seqs = Vec::with_capacity(lines.len());
        let mut ats = Vec::with_capacity(lines.len());
        let mut levels = Vec::with_capacity(lines.len());
        let mut targets = Vec::with_capacity(lines.len());
        let mut messages = Vec::with_capacity(lines.len());
        let mut fields = Vec::with_capacity(lines.len());
        for l in lines {
            run_ids.push(l.run_id);
            seqs.push(l.seq);
            ats.push(millis(l.at));
            levels.push(l.level.clone());
            targets.push(l.target.clone());
            messages.push(l.message.clone());
            fields.push(l.fields.to_string());
        }
        // Only lines of runs that still exist (a pruned run takes its lines with it).
        sqlx::query(
            "INSERT INTO run_logs (run_id, seq, at, level, target, message, fields) \
             SELECT v.run_id, v.seq, v.at, v.level, v.target, v.message, v.fields \
             FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::BIGINT[], $4::TEXT[], $5::TEXT[], \
                         $6::TEXT[], $7::TEXT[]) \
                  AS v(run_id, seq, at, level, target, message, fields) \
             WHERE EXISTS (SELECT 1 FROM job_runs r WHERE r.id = v.run_id) \
             ON CONFLICT (run_id, seq) DO NOTHING",
        )
        .bind(run_ids)
        .bind(seqs)
        .bind(ats)
        .bind(levels)
        .bind(targets)
        .bind(messages)
        .bind(fields)
        .execute(self.pool())
        .await
        .db()?;
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
             WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(run_id)
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
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
        // The partial unique index refuses a second open episode of (rule, subject), from any
        // replica.
        let row = sqlx::query(concat!(
            "INSERT INTO alert_episodes (rule, subject, opened_at, detail) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING ",
            episode_columns!()
        ))
        .bind(rule.as_str())
        .bind(subject)
        .bind(millis(at))
        .bind(detail)
        .fetch_optional(self.pool())
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
        let row = sqlx::query(concat!(
            "UPDATE alert_episodes SET resolved_at = $1 \
             WHERE rule = $2 AND subject = $3 AND resolved_at IS NULL RETURNING ",
            episode_columns!()
        ))
        .bind(millis(at))
        .bind(rule.as_str())
        .bind(subject)
        .fetch_optional(self.pool())
        .await
        .db()?;
        row.as_ref().map(episode_from_row).transpose()
    }

    async fn open_alerts(&self) -> StoreResult<Vec<AlertEpisode>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            episode_columns!(),
            " FROM alert_episodes WHERE resolved_at IS NULL ORDER BY id"
        ))
        .fetch_all(self.pool())
        .await
        .db()?;
        rows.iter().map(episode_from_row).collect()
    }

    async fn alert_history(&self, subject: &str, limit: u32) -> StoreResult<Vec<AlertEpisode>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            episode_columns!(),
            " FROM alert_episodes WHERE subject = $1 ORDER BY opened_at DESC, id DESC LIMIT $2"
        ))
        .bind(subject)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await
        .db()?;
        rows.iter().map(episode_from_row).collect()
    }

    async fn last_successes(&self) -> StoreResult<Vec<(String, DateTime<Utc>)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT job_id, MAX(finished_at) AS at FROM job_runs \
             WHERE status = 'succeeded' AND finished_at IS NOT NULL GROUP BY job_id \
             ORDER BY job_id",
        )
        .fetch_all(self.pool())
        .await
        .db()?;
        rows.into_iter()
            .map(|(job_id, at)| Ok((job_id, from_millis("at", at)?)))
            .collect()
    }
}

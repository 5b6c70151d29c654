//! Job state writes, optionally fenced by a run's lease.
//!
//! A run's `JobContext` gets a [`FencedState`]: each of its writes carries the run id and the
//! fencing token the claim got, and the statement applies the write only if the run's row is
//! still `running` with that token. The check and the write are one statement, and the check
//! reads the run row `FOR SHARE`: a replica taking the run over (`UPDATE ... SET status =
//! 'interrupted'`) either waits for this write to commit (the write came first and stands) or
//! commits first, and then this statement re-reads the row, finds it interrupted and writes
//! nothing. A late write from a replica that lost its lease can never land over the new
//! owner's work.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};

use super::PgStore;
use crate::Db;
use soarjobd_core::store::{JobStateStore, SeenEntry, SeenState, StoreError, StoreResult};

/// `$1`, `$2`: the run id and its fencing token (both NULL for an unfenced write). `ok.leased`
/// is true when the write may go ahead.
macro_rules! lease_cte {
    () => {
        "WITH lease AS (SELECT id FROM job_runs \
                        WHERE id = $1 AND status = 'running' AND fence = $2 FOR SHARE), \
              ok AS (SELECT ($1::BIGINT IS NULL OR EXISTS (SELECT 1 FROM lease)) AS leased), "
    };
}

/// The outcome of a fenced write: whether the lease held, and how many rows changed.
async fn run_fenced(
    query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    pool: &PgPool,
    lease: Option<(i64, i64)>,
    what: &'static str,
) -> StoreResult<u64> {
    let row = query.fetch_one(pool).await.db()?;
    let leased: bool = row.try_get("leased").db()?;
    if !leased {
        let (run_id, fence) = lease.unwrap_or_default();
        tracing::warn!(
            run_id,
            fence,
            write = what,
            "state write rejected by the run's fencing token: another replica took the run \
             over; the new owner's state is kept"
        );
        return Err(StoreError::LeaseLost { run_id });
    }
    let n: i64 = row.try_get("n").db()?;
    Ok(u64::try_from(n).unwrap_or(0))
}

fn binds(lease: Option<(i64, i64)>) -> (Option<i64>, Option<i64>) {
    (lease.map(|l| l.0), lease.map(|l| l.1))
}

pub(super) async fn set_timestamp(
    pool: &PgPool,
    lease: Option<(i64, i64)>,
    job_id: &str,
    key: &str,
    unix_ms: i64,
) -> StoreResult<()> {
    let (run, fence) = binds(lease);
    let q = sqlx::query(concat!(
        lease_cte!(),
        "w AS (INSERT INTO job_timestamps (job_id, \"key\", value_ms, updated_at) \
               SELECT $3, $4, $5, $6 FROM ok WHERE ok.leased \
               ON CONFLICT (job_id, \"key\") \
               DO UPDATE SET value_ms = excluded.value_ms, updated_at = excluded.updated_at \
               RETURNING 1) \
         SELECT leased, (SELECT COUNT(*) FROM w) AS n FROM ok"
    ))
    .bind(run)
    .bind(fence)
    .bind(job_id)
    .bind(key)
    .bind(unix_ms)
    .bind(Utc::now().timestamp_millis());
    run_fenced(q, pool, lease, "timestamp").await.map(drop)
}

pub(super) async fn context_set(
    pool: &PgPool,
    lease: Option<(i64, i64)>,
    job_id: &str,
    key: &str,
    value: &serde_json::Value,
) -> StoreResult<()> {
    let (run, fence) = binds(lease);
    let q = sqlx::query(concat!(
        lease_cte!(),
        "w AS (INSERT INTO job_context (job_id, \"key\", \"value\", updated_at) \
               SELECT $3, $4, $5, $6 FROM ok WHERE ok.leased \
               ON CONFLICT (job_id, \"key\") \
               DO UPDATE SET \"value\" = excluded.\"value\", updated_at = excluded.updated_at \
               RETURNING 1) \
         SELECT leased, (SELECT COUNT(*) FROM w) AS n FROM ok"
    ))
    .bind(run)
    .bind(fence)
    .bind(job_id)
    .bind(key)
    .bind(value.to_string())
    .bind(Utc::now().timestamp_millis());
    run_fenced(q, pool, lease, "context").await.map(drop)
}

pub(super) async fn context_delete(
    pool: &PgPool,
    lease: Option<(i64, i64)>,
    job_id: &str,
    key: &str,
) -> StoreResult<bool> {
    let (run, fence) = binds(lease);
    let q = sqlx::query(concat!(
        lease_cte!(),
        "w AS (DELETE FROM job_context WHERE job_id = $3 AND \"key\" = $4 \
               AND (SELECT leased FROM ok) RETURNING 1) \
         SELECT leased, (SELECT COUNT(*) FROM w) AS n FROM ok"
    ))
    .bind(run)
    .bind(fence)
    .bind(job_id)
    .bind(key);
    Ok(run_fenced(q, pool, lease, "context").await? > 0)
}

pub(super) async fn seen_mark(
    pool: &PgPool,
    lease: Option<(i64, i64)>,
    (job_id, scope, item): (&str, &str, &str),
    state: SeenState,
    run_id: Option<i64>,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let (run, fence) = binds(lease);
    let q = sqlx::query(concat!(
        lease_cte!(),
        "w AS (INSERT INTO job_seen (job_id, scope, item, state, run_id, updated_at) \
               SELECT $3, $4, $5, $6, $7, $8 FROM ok WHERE ok.leased \
               ON CONFLICT (job_id, scope, item) \
               DO UPDATE SET state = excluded.state, run_id = excluded.run_id, \
                             updated_at = excluded.updated_at \
               RETURNING 1) \
         SELECT leased, (SELECT COUNT(*) FROM w) AS n FROM ok"
    ))
    .bind(run)
    .bind(fence)
    .bind(job_id)
    .bind(scope)
    .bind(item)
    .bind(state.as_str())
    .bind(run_id)
    .bind(now.timestamp_millis());
    run_fenced(q, pool, lease, "seen-set").await.map(drop)
}

pub(super) async fn seen_remove(
    pool: &PgPool,
    lease: Option<(i64, i64)>,
    (job_id, scope, item): (&str, &str, &str),
) -> StoreResult<bool> {
    let (run, fence) = binds(lease);
    let q = sqlx::query(concat!(
        lease_cte!(),
        "w AS (DELETE FROM job_seen WHERE job_id = $3 AND scope = $4 AND item = $5 \
               AND (SELECT leased FROM ok) RETURNING 1) \
         SELECT leased, (SELECT COUNT(*) FROM w) AS n FROM ok"
    ))
    .bind(run)
    .bind(fence)
    .bind(job_id)
    .bind(scope)
    .bind(item);
    Ok(run_fenced(q, pool, lease, "seen-set").await? > 0)
}

/// The [`JobStateStore`] one run's `JobContext` gets on PostgreSQL: reads as the store,
/// writes fenced by the run's lease.
pub(super) struct FencedState {
    store: PgStore,
    lease: (i64, i64),
}

impl FencedState {
    pub(super) fn new(store: PgStore, run_id: i64, fence: i64) -> FencedState {
        FencedState {
            store,
            lease: (run_id, fence),
        }
    }

    fn pool(&self) -> &PgPool {
        self.store.pool()
    }
}

#[async_trait]
impl JobStateStore for FencedState {
    async fn get_timestamp(&self, job_id: &str, key: &str) -> StoreResult<Option<i64>> {
        self.store.get_timestamp(job_id, key).await
    }

    async fn set_timestamp(&self, job_id: &str, key: &str, unix_ms: i64) -> StoreResult<()> {
        set_timestamp(self.pool(), Some(self.lease), job_id, key, unix_ms).await
    }

    async fn all_timestamps(&self) -> StoreResult<Vec<(String, String, i64)>> {
        self.store.all_timestamps().await
    }

    async fn context_get(&self, job_id: &str, key: &str) -> StoreResult<Option<serde_json::Value>> {
        self.store.context_get(job_id, key).await
    }

    async fn context_set(
        &self,
        job_id: &str,
        key: &str,
        value: &serde_json::Value,
    ) -> StoreResult<()> {
        context_set(self.pool(), Some(self.lease), job_id, key, value).await
    }

    async fn context_delete(&self, job_id: &str, key: &str) -> StoreResult<bool> {
        context_delete(self.pool(), Some(self.lease), job_id, key).await
    }

    async fn context_all(
        &self,
        job_id: &str,
    ) -> StoreResult<serde_json::Map<String, serde_json::Value>> {
        self.store.context_all(job_id).await
    }

    async fn seen_get(
        &self,
        job_id: &str,
        scope: &str,
        item: &str,
    ) -> StoreResult<Option<SeenEntry>> {
        self.store.seen_get(job_id, scope, item).await
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
        seen_mark(
            self.pool(),
            Some(self.lease),
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
        self.store.seen_list(job_id, scope, state).await
    }

    async fn seen_remove(&self, job_id: &str, scope: &str, item: &str) -> StoreResult<bool> {
        seen_remove(self.pool(), Some(self.lease), (job_id, scope, item)).await
    }

    fn for_run(&self, run_id: i64) -> Option<Arc<dyn JobStateStore>> {
        self.store.for_run(run_id)
    }
}

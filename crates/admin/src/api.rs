//! The JSON API under `/api/v1` (documented in `docs/openapi.yaml`).
//!
//! Reads need a token when tokens are configured (either one); calls that change something need
//! the operator token and are logged as audit events. A job's parameters are never shown (a
//! password parameter is a secret); run messages and errors were redacted by the runner before
//! they were stored.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use soarjobd_core::RunNowError;
use soarjobd_core::ScheduleKind;
use soarjobd_core::definition::JobDefinition;
use soarjobd_core::store::ops::{JobPause, PauseOutcome, RunLogLine};
use soarjobd_core::store::{RunRecord, RunStatus};
use soarjobd_engine::OpsError;

use crate::Shared;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{Operator, Reader};

/// How many upcoming fires a job answer lists.
const NEXT_FIRES: usize = 3;
/// The most runs one page of a job's history holds.
pub const MAX_LIMIT: u32 = 500;

/// The optional body of a mutating call.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    pub reason: Option<String>,
    /// `resume` only: one catch-up run for the ticks inside the pause.
    #[serde(default)]
    pub catch_up: bool,
}

/// The actor an audit event names: `admin:` and the token's name (never the token).
pub fn actor(caller: &Caller) -> String {
    format!("admin:{}", caller.name)
}

/// Records a mutating call: who, what, on which job/run, why, and how it went. The target is
/// the one every audit event of the daemon uses (`soarjobd::audit`, also the CLI's pause and
/// resume), so one filter routes them all to an audit log.
pub fn audit(
    caller: &Caller,
    action: &str,
    job_id: Option<&str>,
    run_id: Option<i64>,
    reason: Option<&str>,
    outcome: &str,
) {
    tracing::info!(
        target: "soarjobd::audit",
        actor = %actor(caller),
        action,
        job_id = job_id.unwrap_or(""),
        run_id,
        reason = reason.unwrap_or(""),
        outcome,
        "audit"
    );
}

pub fn job_json(
    shared: &Shared,
    def: &JobDefinition,
    last: Option<&RunRecord>,
    pause: Option<&JobPause>,
    now: DateTime<Utc>,
) -> Value {
    let runs = shared.metrics.job_runs(&def.id);
    let paused = pause.is_some();
    let next: Vec<String> = if def.enabled && !paused {
        def.schedule
            .ticks_after(now, NEXT_FIRES)
            .into_iter()
            .map(|t| def.schedule.fire_at(&def.id, t).to_rfc3339())
            .collect()
    } else {
        Vec::new()
    };
    let schedule = match def.schedule.kind() {
        ScheduleKind::Every(p) => {
            json!({"text": def.schedule.describe(), "every_seconds": p.as_secs()})
        }
        ScheduleKind::Cron { expr, tz, .. } => {
            json!({"text": def.schedule.describe(), "cron": expr, "timezone": tz.name()})
        }
    };
    json!({
        "id": def.id,
        "name": def.name,
        "job": def.implementation,
        "description": def.description,
        "enabled": def.enabled,
        "paused": paused,
        "pause": pause,
        "schedule": schedule,
        "timeout_seconds": def.timeout.as_secs(),
        "overlap": def.overlap,
        "misfire": def.misfire,
        "source": def.source.display().to_string(),
        "next_fires": next,
        "last_run": last,
        "last_success_at": runs.last_success.map(|t| t.to_rfc3339()),
        "consecutive_failures": runs.consecutive_failures,
    })
}

pub async fn jobs(State(s): State<Arc<Shared>>, _: Reader) -> Result<Json<Value>, ApiError> {
    let view = s.control.status.jobs();
    let last = s.control.store.last_runs().await.map_err(ApiError::store)?;
    let pauses = s.pauses().await?;
    let now = Utc::now();
    let jobs: Vec<Value> = view
        .jobs
        .iter()
        .map(|d| {
            let last = last.iter().find(|r| r.job_id == d.id);
            job_json(&s, d, last, pauses.get(&d.id), now)
        })
        .collect();
    let invalid: Vec<Value> = view
        .invalid
        .iter()
        .map(|(f, e)| json!({"file": f.display().to_string(), "errors": e}))
        .collect();
    Ok(Json(json!({"jobs": jobs, "invalid": invalid})))
}

pub fn find_job(s: &Shared, id: &str) -> Result<Arc<JobDefinition>, ApiError> {
    s.control
        .status
        .jobs()
        .jobs
        .iter()
        .find(|d| d.id == id)
        .cloned()
        .ok_or_else(|| ApiError::no_job(id))
}

pub async fn job(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    _: Reader,
) -> Result<Json<Value>, ApiError> {
    let def = find_job(&s, &id)?;
    let last = s
        .control
        .store
        .history(&id, 1)
        .await
        .map_err(ApiError::store)?;
    let pauses = s.pauses().await?;
    Ok(Json(job_json(
        &s,
        &def,
        last.first(),
        pauses.get(&id),
        Utc::now(),
    )))
}

#[derive(Debug, Deserialize)]
pub struct RunsQuery {
    pub limit: Option<u32>,
    /// Only runs with a smaller id (the previous page's last id).
    pub before: Option<i64>,
}

/// A page of a job's runs, newest first.
pub async fn job_runs_page(
    s: &Shared,
    id: &str,
    q: &RunsQuery,
) -> Result<Vec<RunRecord>, ApiError> {
    let limit = q.limit.unwrap_or(50).clamp(1, MAX_LIMIT);
    match q.before {
        None => s
            .control
            .store
            .history(id, limit)
            .await
            .map_err(ApiError::store),
        Some(before) => {
            // The store pages by count only; a cursor deeper than the kept history (pruned
            // to `history.keep_runs`) reads that history once.
            let all = s
                .control
                .store
                .history(id, limit.saturating_add(10_000))
                .await
                .map_err(ApiError::store)?;
            Ok(all
                .into_iter()
                .filter(|r| r.id < before)
                .take(limit as usize)
                .collect())
        }
    }
}

pub async fn job_runs(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): Query<RunsQuery>,
    _: Reader,
) -> Result<Json<Value>, ApiError> {
    find_job(&s, &id)?;
    let runs = job_runs_page(&s, &id, &q).await?;
    let next_before = runs.last().map(|r| r.id);
    Ok(Json(json!({"runs": runs, "next_before": next_before})))
}

pub async fn get_run(s: &Shared, run_id: i64) -> Result<RunRecord, ApiError> {
    s.control
        .store
        .run(run_id)
        .await
        .map_err(ApiError::store)?
        .ok_or_else(|| ApiError::no_run(run_id))
}

pub async fn run(
    State(s): State<Arc<Shared>>,
    Path(run_id): Path<i64>,
    _: Reader,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(get_run(&s, run_id).await?)))
}

/// Parses an optional JSON body (empty is allowed).
pub fn action_body(body: &[u8]) -> Result<ActionBody, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ActionBody::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))
}

/// Starts a manual run; shared by the API and the status page.
pub async fn start_run(
    s: &Shared,
    caller: &Caller,
    id: &str,
    reason: Option<&str>,
) -> Result<i64, ApiError> {
    find_job(s, id)?;
    match s.control.run_now(id).await {
        Ok(run_id) => {
            audit(caller, "run", Some(id), Some(run_id), reason, "started");
            Ok(run_id)
        }
        Err(e) => {
            audit(caller, "run", Some(id), None, reason, "refused");
            Err(match e {
                RunNowError::NoSuchJob(_) => ApiError::no_job(id),
                RunNowError::Busy(_) => ApiError::new(StatusCode::CONFLICT, "busy", e.to_string()),
                RunNowError::Store(_) => ApiError::store(e),
                RunNowError::Stopping => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "shutting_down",
                    e.to_string(),
                ),
            })
        }
    }
}

pub async fn run_job(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    Operator { caller, .. }: Operator,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = action_body(&body)?;
    let run_id = start_run(&s, &caller, &id, body.reason.as_deref()).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"run_id": run_id, "job_id": id})),
    ))
}

/// Cancels a run of this daemon; shared by the API and the status page.
pub async fn cancel_run(
    s: &Shared,
    caller: &Caller,
    run_id: i64,
    reason: Option<&str>,
) -> Result<(), ApiError> {
    let run = get_run(s, run_id).await?;
    if s.control.cancel(run_id) {
        audit(
            caller,
            "cancel",
            Some(&run.job_id),
            Some(run_id),
            reason,
            "cancelling",
        );
        return Ok(());
    }
    audit(
        caller,
        "cancel",
        Some(&run.job_id),
        Some(run_id),
        reason,
        "refused",
    );
    if run.status != RunStatus::Running {
        Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_running",
            format!("run {run_id} already ended ({})", run.status),
        ))
    } else {
        Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_this_daemon",
            format!("run {run_id} is not run by this daemon (a `run-once` or another replica)"),
        ))
    }
}

pub async fn cancel(
    State(s): State<Arc<Shared>>,
    Path(run_id): Path<i64>,
    Operator { caller, .. }: Operator,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = action_body(&body)?;
    cancel_run(&s, &caller, run_id, body.reason.as_deref()).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"run_id": run_id, "cancelling": true})),
    ))
}

fn ops_error(e: OpsError, id: &str) -> ApiError {
    match e {
        OpsError::UnknownJob(_) => ApiError::no_job(id),
        OpsError::Store(e) => ApiError::store(e),
    }
}

/// Pauses a job (persisted; the scheduler stops claiming its ticks at once). The pause is
/// audited by the core's `PauseControl`, with the caller as actor.
pub async fn pause_job(
    s: &Shared,
    caller: &Caller,
    id: &str,
    reason: Option<&str>,
) -> Result<PauseOutcome, ApiError> {
    find_job(s, id)?;
    s.control
        .pauses
        .pause(id, reason, &actor(caller))
        .await
        .map_err(|e| ops_error(e, id))
}

/// Resumes a job; `catch_up` asks for one run for the ticks inside the pause.
pub async fn resume_job(
    s: &Shared,
    caller: &Caller,
    id: &str,
    catch_up: bool,
    reason: Option<&str>,
) -> Result<Value, ApiError> {
    find_job(s, id)?;
    let ended = s
        .control
        .pauses
        .resume(id, catch_up, &actor(caller))
        .await
        .map_err(|e| ops_error(e, id))?;
    // The core's event has no reason; this one records it.
    if reason.is_some() {
        audit(
            caller,
            "resume",
            Some(id),
            None,
            reason,
            if ended.is_some() {
                "resumed"
            } else {
                "was not paused"
            },
        );
    }
    Ok(
        json!({"job_id": id, "was_paused": ended.is_some(), "catch_up": catch_up, "ended_pause": ended.map(|e| e.pause)}),
    )
}

pub async fn pause(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    Operator { caller, .. }: Operator,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let body = action_body(&body)?;
    let outcome = pause_job(&s, &caller, &id, body.reason.as_deref()).await?;
    let already = matches!(outcome, PauseOutcome::AlreadyPaused(_));
    Ok(Json(
        json!({"job_id": id, "already_paused": already, "pause": outcome.pause()}),
    ))
}

pub async fn resume(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    Operator { caller, .. }: Operator,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let body = action_body(&body)?;
    Ok(Json(
        resume_job(&s, &caller, &id, body.catch_up, body.reason.as_deref()).await?,
    ))
}

#[derive(Debug, Deserialize)]
pub struct LogsQuery {
    /// Only lines after this sequence number (the last one seen: follow by polling).
    pub after: Option<i64>,
    pub limit: Option<u32>,
}

/// The most log lines one call returns.
pub const MAX_LOG_LINES: u32 = 5000;

/// A page of a run's stored log lines (secrets were redacted when they were stored).
pub async fn log_lines(
    s: &Shared,
    run_id: i64,
    after: i64,
    limit: u32,
) -> Result<Vec<RunLogLine>, ApiError> {
    s.control
        .store
        .run_logs(run_id, after, limit.clamp(1, MAX_LOG_LINES))
        .await
        .map_err(ApiError::store)
}

pub async fn logs(
    State(s): State<Arc<Shared>>,
    Path(run_id): Path<i64>,
    Query(q): Query<LogsQuery>,
    _: Reader,
) -> Result<Json<Value>, ApiError> {
    let run = get_run(&s, run_id).await?;
    let lines = log_lines(&s, run_id, q.after.unwrap_or(0), q.limit.unwrap_or(1000)).await?;
    let last_seq = lines.last().map(|l| l.seq);
    Ok(Json(json!({
        "run_id": run_id,
        "status": run.status,
        "lines": lines,
        "last_seq": last_seq,
    })))
}

//! The Batch API V2 endpoints: create a job (settings), upload its file (size-limited, then
//! processed in the background over `processing_delay_ms`), its status, and its errors as
//! gzip JSON.

use std::collections::HashMap;
use std::io::Write as _;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Shared;
use super::process::process_job;
use super::state::{Job, JobStatus, KindCounts};
use super::wire::{failure, parse_settings, success};

pub(super) async fn create_job(State(st): State<Shared>, body: Bytes) -> Response {
    let mut inner = st.lock();
    if inner.behaviour.fail_batch_create {
        return failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "Batch job api is not available. Please enable the Batch API and document storage.",
        );
    }
    let settings = match parse_settings(&body) {
        Ok(s) => s,
        Err(e) => return failure(StatusCode::BAD_REQUEST, &e),
    };
    let id = inner.id();
    inner.stats.jobs_created += 1;
    inner.jobs.insert(
        id,
        Job {
            settings,
            status: JobStatus::Created,
            errors: Vec::new(),
            success: 0,
            unprocessed: 0,
            counts: KindCounts::default(),
        },
    );
    success(StatusCode::CREATED, json!({"batchId": id}))
}

pub(super) async fn upload(State(st): State<Shared>, Path(id): Path<u64>, body: Bytes) -> Response {
    let (delay, stall) = {
        let mut inner = st.lock();
        if body.len() > st.max_upload {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({
                    "status": "Invalid",
                    "description": format!("File size greater than allowable limit of {}", st.max_upload)
                })),
            )
                .into_response();
        }
        inner.stats.uploads += 1;
        inner.stats.upload_bytes += body.len() as u64;
        let delay = Duration::from_millis(inner.behaviour.processing_delay_ms);
        let stall = inner.behaviour.stall_jobs;
        let Some(job) = inner.jobs.get_mut(&id) else {
            return failure(StatusCode::NOT_FOUND, "Batch job not found");
        };
        if job.status != JobStatus::Created {
            return failure(StatusCode::BAD_REQUEST, "Batch job already has data");
        }
        job.status = JobStatus::Queued;
        (delay, stall)
    };
    let state = st.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay / 2).await;
        if let Some(job) = state.lock().jobs.get_mut(&id) {
            job.status = JobStatus::Running;
        }
        if stall {
            return;
        }
        tokio::time::sleep(delay / 2).await;
        let mut inner = state.lock();
        process_job(&mut inner, &state, id, &body);
    });
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({"status": "Queued"})),
    )
        .into_response()
}

pub(super) async fn job_status(
    State(st): State<Shared>,
    Path(id): Path<u64>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let inner = st.lock();
    let Some(job) = inner.jobs.get(&id) else {
        return failure(StatusCode::NOT_FOUND, "Batch job not found");
    };
    let mut status = json!({
        "id": id,
        "status": job.status,
        "errorCount": job.errors.len(),
        "successCount": job.success,
        "unprocessCount": job.unprocessed,
    });
    if q.get("includeAdditional").map(String::as_str) == Some("true")
        && let (Some(obj), Ok(Value::Object(extra))) =
            (status.as_object_mut(), serde_json::to_value(&job.counts))
    {
        obj.extend(extra);
    }
    success(StatusCode::OK, json!({"batchStatus": status}))
}

pub(super) async fn job_errors(State(st): State<Shared>, Path(id): Path<u64>) -> Response {
    let inner = st.lock();
    let Some(job) = inner.jobs.get(&id) else {
        return failure(StatusCode::NOT_FOUND, "Batch job not found");
    };
    if job.status != JobStatus::Completed {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"status": "Invalid", "description": "Batch still in Running state"})),
        )
            .into_response();
    }
    if job.errors.is_empty() {
        return failure(StatusCode::NOT_FOUND, "No errors found");
    }
    let json = serde_json::to_vec(&job.errors).unwrap_or_default();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    if gz.write_all(&json).is_err() {
        return failure(StatusCode::INTERNAL_SERVER_ERROR, "compression failed");
    }
    let Ok(body) = gz.finish() else {
        return failure(StatusCode::INTERNAL_SERVER_ERROR, "compression failed");
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    (StatusCode::OK, headers, body).into_response()
}

//! What a TcEx 3 app calls besides the classic batch endpoints (`specs/tcex-job-app-launch.md`
//! §4): the indicator type catalogue, and `POST /v2/batch/createAndUpload` (a multipart form
//! with a `config` part, the job settings, and a `content` part, the V2 file).
//!
//! Decided here (the spec leaves it to the instance's `synchronousBatchSaveLimit`): a file of
//! at most [`SYNC_ITEMS`] items is processed inline and answered with a `batchStatus` without
//! `id`; a larger one is queued like an uploaded job and answered with its `id`.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::Shared;
use super::process::process_job;
use super::rules::indicator_types;
use super::state::{Job, JobStatus, KindCounts};
use super::wire::{failure, parse_settings, success};

/// Most groups + indicators processed inline by `createAndUpload`.
pub(super) const SYNC_ITEMS: usize = 1000;

/// `GET /v2/types/indicatorTypes`.
pub(super) async fn indicator_type_list() -> Response {
    let list: Vec<Value> = indicator_types()
        .iter()
        .map(|(name, branch, entity, labels)| {
            let mut t = json!({
                "name": name,
                "custom": "false",
                "parsable": "true",
                "apiBranch": branch,
                "apiEntity": entity,
                "casePreference": "sensitive",
            });
            for (i, l) in labels.iter().enumerate() {
                t[format!("value{}Label", i + 1)] = json!(l);
            }
            t
        })
        .collect();
    success(
        StatusCode::OK,
        json!({"resultCount": list.len(), "indicatorType": list}),
    )
}

/// The parts of a `multipart/form-data` body: (name, bytes).
pub(super) fn multipart_parts(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<(String, Vec<u8>)>, String> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("multipart/form-data") {
        return Err("Content-Type must be multipart/form-data".into());
    }
    let boundary = ct
        .split(';')
        .filter_map(|p| p.trim().strip_prefix("boundary="))
        .next()
        .map(|b| b.trim_matches('"').to_string())
        .ok_or("the multipart boundary is missing")?;
    let delim = format!("--{boundary}").into_bytes();
    let mut parts = Vec::new();
    let mut rest = body;
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let Some(first) = find(rest, &delim) else {
        return Err("no multipart boundary in the body".into());
    };
    rest = &rest[first + delim.len()..];
    loop {
        if rest.starts_with(b"--") {
            break;
        }
        let rest_after_crlf = rest
            .strip_prefix(b"\r\n")
            .ok_or("malformed multipart body")?;
        let head_end = find(rest_after_crlf, b"\r\n\r\n").ok_or("malformed part headers")?;
        let head = String::from_utf8_lossy(&rest_after_crlf[..head_end]).into_owned();
        let content = &rest_after_crlf[head_end + 4..];
        let mut end_delim = b"\r\n".to_vec();
        end_delim.extend_from_slice(&delim);
        let end = find(content, &end_delim).ok_or("unterminated multipart part")?;
        let name = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition"))
            .and_then(|l| {
                l.split(';')
                    .filter_map(|p| p.trim().strip_prefix("name="))
                    .next()
                    .map(|n| n.trim_matches('"').to_string())
            })
            .unwrap_or_default();
        parts.push((name, content[..end].to_vec()));
        rest = &content[end + end_delim.len()..];
    }
    Ok(parts)
}

/// `POST /v2/batch/createAndUpload[?includeAdditional=true]`.
pub(super) async fn create_and_upload(
    State(st): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parts = match multipart_parts(&headers, &body) {
        Ok(p) => p,
        Err(e) => return failure(StatusCode::BAD_REQUEST, &e),
    };
    let part = |n: &str| {
        parts
            .iter()
            .find(|(name, _)| name == n)
            .map(|(_, b)| b.clone())
    };
    let (Some(config), Some(content)) = (part("config"), part("content")) else {
        return failure(
            StatusCode::BAD_REQUEST,
            "createAndUpload needs the parts `config` and `content`",
        );
    };
    if content.len() > st.max_upload {
        return failure(
            StatusCode::BAD_REQUEST,
            &format!(
                "File size greater than allowable limit of {}",
                st.max_upload
            ),
        );
    }
    let settings = match parse_settings(&config) {
        Ok(s) => s,
        Err(e) => return failure(StatusCode::BAD_REQUEST, &e),
    };
    let items = serde_json::from_slice::<Value>(&content)
        .map(|v| {
            ["group", "indicator"]
                .iter()
                .map(|k| v.get(k).and_then(Value::as_array).map_or(0, Vec::len))
                .sum::<usize>()
        })
        .unwrap_or(0);
    let mut inner = st.lock();
    if inner.behaviour.fail_batch_create {
        return failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "Batch job api is not available. Please enable the Batch API and document storage.",
        );
    }
    let id = inner.id();
    inner.stats.jobs_created += 1;
    inner.stats.uploads += 1;
    inner.stats.upload_bytes += content.len() as u64;
    inner.jobs.insert(
        id,
        Job {
            settings,
            status: JobStatus::Queued,
            errors: Vec::new(),
            success: 0,
            unprocessed: 0,
            counts: KindCounts::default(),
        },
    );
    if items <= SYNC_ITEMS {
        process_job(&mut inner, &st, id, &content);
        let Some(job) = inner.jobs.get(&id) else {
            return failure(StatusCode::INTERNAL_SERVER_ERROR, "the job vanished");
        };
        let mut status = json!({
            "status": job.status,
            "errorCount": job.errors.len(),
            "successCount": job.success,
            "unprocessCount": job.unprocessed,
        });
        if let (Some(obj), Ok(Value::Object(extra))) =
            (status.as_object_mut(), serde_json::to_value(&job.counts))
        {
            obj.extend(extra);
        }
        return success(StatusCode::OK, json!({"batchStatus": status}));
    }
    let delay = Duration::from_millis(inner.behaviour.processing_delay_ms);
    drop(inner);
    let state = st.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let mut inner = state.lock();
        process_job(&mut inner, &state, id, &content);
    });
    success(
        StatusCode::OK,
        json!({"batchStatus": {"id": id, "status": "Queued"}}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_form_parts() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            "multipart/form-data; boundary=xyz".parse().unwrap(),
        );
        let body = b"--xyz\r\nContent-Disposition: form-data; name=\"config\"\r\n\r\n{\"a\":1}\r\n--xyz\r\nContent-Disposition: form-data; name=\"content\"; filename=\"content\"\r\nContent-Type: application/json\r\n\r\n{}\r\n--xyz--\r\n";
        let parts = multipart_parts(&h, body).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], ("config".to_string(), b"{\"a\":1}".to_vec()));
        assert_eq!(parts[1], ("content".to_string(), b"{}".to_vec()));
    }
}

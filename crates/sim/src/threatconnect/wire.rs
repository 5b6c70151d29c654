//! Wire shapes written from the spec: the `{"status": "Success" | "Failure", ...}` envelopes,
//! the batch job settings body, and an entry of a job's error file.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::state::{AttrWrite, JobSettings};

pub(super) fn failure(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"status": "Failure", "message": message})),
    )
        .into_response()
}

pub(super) fn success(status: StatusCode, data: Value) -> Response {
    (
        status,
        axum::Json(json!({"status": "Success", "data": data})),
    )
        .into_response()
}

/// Reads a boolean sent as JSON or as a string (the newer client sends `"true"`).
fn flag(v: Option<&Value>) -> Option<bool> {
    match v? {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

pub(super) fn parse_settings(body: &[u8]) -> Result<JobSettings, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let text = |k: &str| v.get(k).and_then(Value::as_str);
    let owner = text("owner")
        .filter(|o| !o.is_empty())
        .ok_or("owner is required")?;
    let halt_on_error = flag(v.get("haltOnError")).ok_or("haltOnError is required")?;
    let delete = match text("action") {
        Some("Create") => false,
        Some("Delete") => true,
        _ => return Err("action must be Create or Delete".into()),
    };
    let attr_write = match text("attributeWriteType") {
        Some("Append") => AttrWrite::Append,
        Some("Replace") => AttrWrite::Replace,
        Some("Singleton") => AttrWrite::Singleton,
        Some("Static") => AttrWrite::Static,
        _ => return Err("attributeWriteType must be Append, Replace, Singleton or Static".into()),
    };
    let replace_tags = match text("tagWriteType") {
        None | Some("Replace") => true,
        Some("Append") => false,
        Some(_) => return Err("tagWriteType must be Append or Replace".into()),
    };
    // V1 jobs (no version) take a bare indicator array; only V2 files are modelled.
    if text("version") != Some("V2") {
        return Err("only version V2 batch jobs are supported by the simulator".into());
    }
    Ok(JobSettings {
        owner: owner.to_string(),
        halt_on_error,
        delete,
        attr_write,
        replace_tags,
    })
}

/// An error entry as the error file lists it.
pub(super) fn error_entry(reason: impl Into<String>, source: Option<String>) -> Value {
    json!({"errorReason": reason.into(), "errorSource": source})
}

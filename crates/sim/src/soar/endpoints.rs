//! The endpoints' logic, shared by the legacy and the one-platform routes: parse the request
//! strictly, act on the state, answer with the spec's shapes or a `400`/`404` with the reason.

use std::collections::HashMap;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::filter::parse_filter;
use super::state::{SimComment, SimState, distinct_ticket_ids};
use super::wire::{case_json, comment_json};

/// A refused request: status and reason. Handlers return `Result<Response, Reject>` so `?`
/// works, and [`answer`] turns the rejection into a response.
pub(super) struct Reject(StatusCode, String);

pub(super) type Answer = Result<Response, Reject>;

pub(super) fn bad(msg: impl Into<String>) -> Reject {
    Reject(StatusCode::BAD_REQUEST, msg.into())
}

pub(super) fn missing(what: impl std::fmt::Display) -> Reject {
    Reject(StatusCode::NOT_FOUND, format!("{what} not found"))
}

/// The response for `a`; client mistakes (400/415) are counted so tests can assert that a
/// client sent none.
pub(super) fn answer(st: &SimState, a: Answer) -> Response {
    match a {
        Ok(r) => r,
        Err(Reject(status, msg)) => {
            if status == StatusCode::BAD_REQUEST || status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
                st.bump(|s| s.bad_requests += 1);
            }
            (status, msg).into_response()
        }
    }
}

pub(super) fn bad_request(st: &SimState, msg: impl Into<String>) -> Response {
    answer(st, Err(bad(msg)))
}

pub(super) fn parse_case_id(raw: &str) -> Result<u64, Reject> {
    raw.parse()
        .map_err(|_| bad(format!("case id must be an integer, got {raw:?}")))
}

fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, Reject> {
    let json_ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json_ct {
        return Err(Reject(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json".into(),
        ));
    }
    serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON body: {e}")))
}

pub(super) fn op_cases_by_filter(st: &SimState, headers: &HeaderMap, body: &[u8]) -> Answer {
    let f = parse_filter(&parse_body(headers, body)?).map_err(bad)?;
    let d = st.data();
    let mut hits: Vec<(i64, u64)> = d
        .cases
        .values()
        .filter(|c| f.matches(c))
        .map(|c| (f.sort_key(c), c.id))
        .collect();
    drop(d);
    // Ties break on the id in the same direction, so paging by time is deterministic.
    hits.sort_unstable();
    if !f.ascending {
        hits.reverse();
    }
    let ids: Vec<u64> = hits.into_iter().take(f.max_results).map(|h| h.1).collect();
    Ok(axum::Json(ids).into_response())
}

pub(super) fn op_ticket_ids(st: &SimState, case_id: u64) -> Answer {
    let d = st.data();
    let c = d
        .cases
        .get(&case_id)
        .ok_or_else(|| missing(format_args!("case {case_id}")))?;
    Ok(axum::Json(distinct_ticket_ids(c)).into_response())
}

pub(super) fn op_full_details(st: &SimState, case_id: u64, populate: &str) -> Answer {
    if populate != "True" && populate != "False" {
        return Err(bad(format!(
            "populate_original_file must be True or False, got {populate:?}"
        )));
    }
    let d = st.data();
    let c = d
        .cases
        .get(&case_id)
        .ok_or_else(|| missing(format_args!("case {case_id}")))?;
    Ok(axum::Json(case_json(c)).into_response())
}

/// `since`: (time filter type 0 = creation / 1 = modification, from ms).
fn comments_of(st: &SimState, case_id: u64, since: Option<(u8, i64)>) -> Answer {
    let d = st.data();
    if !d.cases.contains_key(&case_id) {
        return Err(missing(format_args!("case {case_id}")));
    }
    let list: Vec<Value> = d
        .comments
        .iter()
        .filter(|c| c.case_id == case_id)
        .filter(|c| match since {
            None => true,
            Some((0, from)) => c.creation_time_unix_time_in_ms >= from,
            Some((_, from)) => c.modification_time_unix_time_in_ms >= from,
        })
        .map(comment_json)
        .collect();
    Ok(axum::Json(list).into_response())
}

pub(super) fn op_get_case_comments(
    st: &SimState,
    case_id: u64,
    q: &HashMap<String, String>,
) -> Answer {
    match q.get("fetchUpdates").map(String::as_str) {
        Some("False" | "True") => comments_of(st, case_id, None),
        _ => Err(bad("fetchUpdates must be True or False")),
    }
}

pub(super) fn op_fetch_comments(st: &SimState, q: &HashMap<String, String>) -> Answer {
    let case_id = parse_case_id(q.get("caseId").ok_or_else(|| bad("caseId is required"))?)?;
    let since = match q.get("spec.fromTimestamp") {
        None => None,
        Some(from) => {
            let kind = match q.get("spec.timeFilterType").map(String::as_str) {
                None | Some("0") => 0,
                Some("1") => 1,
                Some(other) => {
                    return Err(bad(format!("spec.timeFilterType must be 0 or 1: {other}")));
                }
            };
            let ms = from
                .parse::<i64>()
                .map_err(|_| bad("spec.fromTimestamp must be an integer"))?;
            Some((kind, ms))
        }
    };
    comments_of(st, case_id, since)
}

/// `case_id` as sent by the SDK: a number, or a string of digits (ids are passed through).
fn body_case_id(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

pub(super) fn op_add_comment(st: &SimState, headers: &HeaderMap, body: &[u8]) -> Answer {
    let v = parse_body(headers, body)?;
    let obj = v
        .as_object()
        .ok_or_else(|| bad("the body must be a JSON object"))?;
    // The SDK sends exactly these three keys.
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    if keys != ["alert_identifier", "case_id", "comment"] {
        return Err(bad(format!(
            "body keys must be exactly case_id, alert_identifier, comment; got {keys:?}"
        )));
    }
    let case_id = body_case_id(&obj["case_id"]).ok_or_else(|| bad("case_id must be an integer"))?;
    let alert_identifier = match &obj["alert_identifier"] {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        _ => return Err(bad("alert_identifier must be a string or null")),
    };
    let text = obj["comment"]
        .as_str()
        .ok_or_else(|| bad("comment must be a string"))?;

    let now = st.now_ms();
    let mut d = st.data();
    let case = d
        .cases
        .get_mut(&case_id)
        .ok_or_else(|| missing(format_args!("case {case_id}")))?;
    // As on the real platform, commenting touches the case.
    case.modification_time = case.modification_time.max(now);
    let comment = SimComment {
        comment_id: d.next_comment_id,
        case_id,
        alert_identifier,
        comment: text.to_string(),
        creation_time_unix_time_in_ms: now,
        modification_time_unix_time_in_ms: now,
    };
    d.next_comment_id += 1;
    d.stats.comments_added += 1;
    let out = comment_json(&comment);
    d.comments.push(comment);
    Ok(axum::Json(out).into_response())
}

pub(super) fn op_add_tag(st: &SimState, headers: &HeaderMap, body: &[u8]) -> Answer {
    let v = parse_body(headers, body)?;
    let case_id = v
        .get("case_id")
        .and_then(body_case_id)
        .ok_or_else(|| bad("case_id must be an integer"))?;
    let tag = v
        .get("tag")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| bad("tag must be a non-empty string"))?;
    let now = st.now_ms();
    let mut d = st.data();
    let case = d
        .cases
        .get_mut(&case_id)
        .ok_or_else(|| missing(format_args!("case {case_id}")))?;
    if !case.tags.iter().any(|t| t == tag) {
        case.tags.push(tag.to_string());
        case.modification_time = case.modification_time.max(now);
    }
    Ok(StatusCode::OK.into_response())
}

/// `POST .../sdk/{Get,Set,TrySet}ContextProperty` (soar-api.md §3.8): PascalCase bodies, no
/// `?format=snake`; Get answers `204` when not set, else `200` and the value as stored.
pub(super) fn op_context_property(st: &SimState, op: &str, body: &[u8]) -> Answer {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("the body is not JSON: {e}")))?;
    let ty = v["ContextType"]
        .as_i64()
        .ok_or_else(|| bad("ContextType must be an integer"))?;
    let text = |k: &str| match &v[k] {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        _ => Err(bad(format!("{k} must be a string"))),
    };
    let (identifier, key) = (text("Identifier")?, text("PropertyKey")?);
    let json = |status: StatusCode, body: String| {
        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    };
    match op {
        "GetContextProperty" => Ok(match st.context_property(ty, &identifier, &key) {
            Some(value) => json(StatusCode::OK, value.to_string()),
            None => StatusCode::NO_CONTENT.into_response(),
        }),
        "SetContextProperty" => {
            st.set_context_property(ty, &identifier, &key, v["PropertyValue"].clone());
            Ok(json(StatusCode::OK, "true".into()))
        }
        _ => {
            let set = st.context_property(ty, &identifier, &key).is_none();
            if set {
                st.set_context_property(ty, &identifier, &key, v["PropertyValue"].clone());
            }
            Ok(json(StatusCode::OK, set.to_string()))
        }
    }
}

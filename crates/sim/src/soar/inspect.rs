//! Inspection routes under `/_sim/` (no auth): comments, cases, stats, and the test hooks to
//! add or alter cases, override the next answers of an endpoint and change faults at run time.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::Shared;
use super::state::{CasePatch, Override};

#[derive(Deserialize)]
struct CommentQuery {
    case_id: Option<u64>,
}

async fn sim_comments(State(st): State<Shared>, Query(q): Query<CommentQuery>) -> Response {
    axum::Json(st.comments(q.case_id)).into_response()
}

async fn sim_cases(State(st): State<Shared>) -> Response {
    axum::Json(st.cases()).into_response()
}

async fn sim_stats(State(st): State<Shared>) -> Response {
    axum::Json(st.stats()).into_response()
}

async fn sim_upsert_case(State(st): State<Shared>, body: Bytes) -> Response {
    let patch: CasePatch = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    match st.upsert_case(patch) {
        Ok(s) => axum::Json(s).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}

async fn sim_add_override(State(st): State<Shared>, body: Bytes) -> Response {
    match serde_json::from_slice::<Override>(&body) {
        Ok(ov) => {
            st.add_override(ov);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn sim_clear_overrides(State(st): State<Shared>) -> Response {
    st.clear_overrides();
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Tuning {
    fault_rate: Option<f64>,
    latency_ms: Option<u64>,
    slow_ms: Option<u64>,
}

async fn sim_config(State(st): State<Shared>, body: Bytes) -> Response {
    match serde_json::from_slice::<Tuning>(&body) {
        Ok(t) => {
            if let Some(r) = t.fault_rate {
                st.set_fault_rate(r);
            }
            if let Some(l) = t.latency_ms {
                st.set_latency_ms(l);
            }
            if let Some(s) = t.slow_ms {
                st.set_slow_ms(s);
            }
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

/// The `/_sim/` routes (the caller adds the state).
pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route("/_sim/comments", get(sim_comments))
        .route("/_sim/cases", get(sim_cases).post(sim_upsert_case))
        .route("/_sim/stats", get(sim_stats))
        .route(
            "/_sim/overrides",
            post(sim_add_override).delete(sim_clear_overrides),
        )
        .route("/_sim/config", post(sim_config))
}

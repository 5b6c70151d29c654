//! Inspection routes under `/_sim/` (no auth): an owner's groups, indicators, associations
//! and their counts, request statistics, and the behaviour settings.

use std::collections::BTreeMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::state::{SimGroup, SimIndicator};
use super::wire::failure;
use super::{Behaviour, Shared};

async fn sim_groups(State(st): State<Shared>, Path(owner): Path<String>) -> Response {
    let inner = st.lock();
    let list: Vec<&SimGroup> = inner
        .owners
        .get(&owner)
        .map(|o| o.groups.values().collect())
        .unwrap_or_default();
    axum::Json(json!(list)).into_response()
}

async fn sim_indicators(State(st): State<Shared>, Path(owner): Path<String>) -> Response {
    let inner = st.lock();
    let list: Vec<&SimIndicator> = inner
        .owners
        .get(&owner)
        .map(|o| o.indicators.values().collect())
        .unwrap_or_default();
    axum::Json(json!(list)).into_response()
}

async fn sim_associations(State(st): State<Shared>, Path(owner): Path<String>) -> Response {
    let inner = st.lock();
    let Some(o) = inner.owners.get(&owner) else {
        return axum::Json(json!([])).into_response();
    };
    let list: Vec<Value> = o
        .associations
        .iter()
        .map(|(gid, t, k)| {
            let g = o.groups.values().find(|g| g.id == *gid);
            let summary = o
                .indicators
                .get(&(t.clone(), k.clone()))
                .map(|i| i.summary.as_str());
            json!({
                "groupId": gid,
                "groupXid": g.map(|g| g.xid.as_str()),
                "groupName": g.map(|g| g.name.as_str()),
                "groupType": g.map(|g| g.kind.as_str()),
                "indicatorType": t,
                "indicator": summary.unwrap_or(k),
            })
        })
        .collect();
    axum::Json(json!(list)).into_response()
}

/// How many groups, indicators and associations an owner holds (cheap, for large tests).
async fn sim_counts(State(st): State<Shared>, Path(owner): Path<String>) -> Response {
    let inner = st.lock();
    let (g, i, a) = inner
        .owners
        .get(&owner)
        .map(|o| (o.groups.len(), o.indicators.len(), o.associations.len()))
        .unwrap_or_default();
    axum::Json(json!({"groups": g, "indicators": i, "associations": a})).into_response()
}

async fn sim_stats(State(st): State<Shared>) -> Response {
    let inner = st.lock();
    let jobs: BTreeMap<String, Value> = inner
        .jobs
        .iter()
        .map(|(id, j)| {
            (
                id.to_string(),
                json!({"status": j.status, "errors": j.errors.len(), "success": j.success,
                       "unprocessed": j.unprocessed, "owner": j.settings.owner}),
            )
        })
        .collect();
    let mut v = json!(inner.stats);
    v["jobs"] = json!(jobs);
    axum::Json(v).into_response()
}

async fn sim_get_behaviour(State(st): State<Shared>) -> Response {
    axum::Json(json!(st.lock().behaviour)).into_response()
}

async fn sim_put_behaviour(State(st): State<Shared>, body: Bytes) -> Response {
    match serde_json::from_slice::<Behaviour>(&body) {
        Ok(b) => {
            st.lock().behaviour = b;
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => failure(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

/// The `/_sim/` routes (the caller adds the state).
pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route("/_sim/owners/{owner}/groups", get(sim_groups))
        .route("/_sim/owners/{owner}/indicators", get(sim_indicators))
        .route("/_sim/owners/{owner}/associations", get(sim_associations))
        .route("/_sim/owners/{owner}/counts", get(sim_counts))
        .route("/_sim/stats", get(sim_stats))
        .route(
            "/_sim/behaviour",
            get(sim_get_behaviour).put(sim_put_behaviour),
        )
}

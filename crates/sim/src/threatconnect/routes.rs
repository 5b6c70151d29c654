//! The other API routes (`GET /v2/owners`, the group lookup by name) and the router that puts
//! the batch endpoints, these, the gate and the inspection routes together.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::Shared;
use super::batch::{create_job, job_errors, job_status, upload};
use super::gate::gate;
use super::inspect;
use super::rules::group_type_of_branch;
use super::state::SimGroup;
use super::tcex::{create_and_upload, indicator_type_list};
use super::wire::{failure, success};

async fn owners(State(st): State<Shared>) -> Response {
    let inner = st.lock();
    let list: Vec<Value> = inner
        .owners
        .keys()
        .enumerate()
        .map(|(n, name)| json!({"id": n + 1, "name": name, "type": "Organization"}))
        .collect();
    success(
        StatusCode::OK,
        json!({"resultCount": list.len(), "owner": list}),
    )
}

/// `GET /v2/groups/{branch}?owner=…&filters=name=…&resultLimit=…&resultStart=…`.
async fn list_groups(
    State(st): State<Shared>,
    Path(branch): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some((kind, entity)) = group_type_of_branch(&branch) else {
        return failure(StatusCode::NOT_FOUND, "Unknown group type");
    };
    let name_filter = match q.get("filters") {
        None => None,
        Some(f) => match f.split_once('=') {
            Some(("name", v)) => Some(v.to_string()),
            _ => {
                return failure(
                    StatusCode::BAD_REQUEST,
                    "Only the name= filter is simulated",
                );
            }
        },
    };
    let limit: usize = q
        .get("resultLimit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
        .min(500);
    let start: usize = q
        .get("resultStart")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let inner = st.lock();
    let Some(owner) = q.get("owner").and_then(|o| inner.owners.get(o)) else {
        return success(StatusCode::OK, json!({"resultCount": 0, entity: []}));
    };
    let matching: Vec<&SimGroup> = owner
        .groups
        .values()
        .filter(|g| g.kind == kind)
        .filter(|g| name_filter.as_ref().is_none_or(|n| &g.name == n))
        .collect();
    let page: Vec<Value> = matching
        .iter()
        .skip(start)
        .take(limit)
        .map(|g| json!({"id": g.id, "name": g.name, "xid": g.xid, "ownerName": q.get("owner")}))
        .collect();
    success(
        StatusCode::OK,
        json!({"resultCount": matching.len(), entity: page}),
    )
}

pub(super) fn router(state: Shared) -> Router {
    let p = state.api_prefix.clone();
    let api = Router::new()
        .route(&format!("{p}/v2/owners"), get(owners))
        .route(&format!("{p}/v2/batch"), post(create_job))
        .route(
            &format!("{p}/v2/batch/createAndUpload"),
            post(create_and_upload),
        )
        .route(
            &format!("{p}/v2/types/indicatorTypes"),
            get(indicator_type_list),
        )
        .route(
            &format!("{p}/v2/batch/{{id}}"),
            post(upload).get(job_status),
        )
        .route(&format!("{p}/v2/batch/{{id}}/errors"), get(job_errors))
        .route(&format!("{p}/v2/groups/{{branch}}"), get(list_groups))
        // `route_layer`: the gate sees the matched route (for stats) and unknown paths 404.
        .route_layer(middleware::from_fn_with_state(state.clone(), gate))
        // The upload size is checked against the configured limit, not axum's default.
        .layer(DefaultBodyLimit::disable());
    inspect::routes().merge(api).with_state(state)
}

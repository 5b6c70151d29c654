//! The axum handlers of the API routes (the legacy `/api/external/v1/...` form and the
//! one-platform `/v1alpha/...` form, which share the endpoints' logic) and the router that puts
//! them, the gate and the inspection routes together.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method};
use axum::middleware;
use axum::response::Response;
use axum::routing::{get, post};

use super::endpoints::{
    answer, bad, missing, op_add_comment, op_add_tag, op_cases_by_filter, op_context_property,
    op_fetch_comments, op_full_details, op_get_case_comments, op_ticket_ids, parse_case_id,
};
use super::gate::gate;
use super::inspect;
use super::{Shared, SimState};

type Q = Query<HashMap<String, String>>;

async fn legacy_filter(State(st): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    answer(&st, op_cases_by_filter(&st, &headers, &body))
}

async fn legacy_ticket_ids(State(st): State<Shared>, Path(id): Path<String>) -> Response {
    answer(
        &st,
        parse_case_id(&id).and_then(|id| op_ticket_ids(&st, id)),
    )
}

async fn legacy_full_details(
    State(st): State<Shared>,
    Path((id, populate)): Path<(String, String)>,
) -> Response {
    let a = parse_case_id(&id).and_then(|id| op_full_details(&st, id, &populate));
    answer(&st, a)
}

async fn legacy_get_comments(
    State(st): State<Shared>,
    Path(id): Path<String>,
    Query(q): Q,
) -> Response {
    let a = parse_case_id(&id).and_then(|id| op_get_case_comments(&st, id, &q));
    answer(&st, a)
}

async fn legacy_add_tag(State(st): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    answer(&st, op_add_tag(&st, &headers, &body))
}

async fn context_property(
    State(st): State<Shared>,
    Path(op): Path<String>,
    body: Bytes,
) -> Response {
    let a = match op.as_str() {
        "GetContextProperty" | "SetContextProperty" | "TrySetContextProperty" => {
            op_context_property(&st, &op, &body)
        }
        _ => Err(missing(&op)),
    };
    answer(&st, a)
}

async fn comments_post(State(st): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    answer(&st, op_add_comment(&st, &headers, &body))
}

async fn comments_get(State(st): State<Shared>, Query(q): Q) -> Response {
    answer(&st, op_fetch_comments(&st, &q))
}

/// `.../instances/{i}/legacySdk:legacy{Endpoint}` — the 1P form; path parameters of the legacy
/// form become query parameters.
async fn one_platform(
    State(st): State<Shared>,
    method: Method,
    Path((_p, _l, _i, name)): Path<(String, String, String, String)>,
    Query(q): Q,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let case_id = || parse_case_id(q.get("caseId").ok_or_else(|| bad("caseId is required"))?);
    let ep = name.strip_prefix("legacySdk:legacy").unwrap_or_default();
    let a = match (ep, &method) {
        ("GetCasesIdByFilter", &Method::POST) => op_cases_by_filter(&st, &headers, &body),
        ("AddTag", &Method::POST) => op_add_tag(&st, &headers, &body),
        ("AlertsTicketIdsByCaseId", &Method::GET) => {
            case_id().and_then(|id| op_ticket_ids(&st, id))
        }
        ("CaseFullDetails", &Method::GET) => case_id().and_then(|id| {
            let populate = q.get("populateOriginalFile").map_or("", String::as_str);
            op_full_details(&st, id, populate)
        }),
        ("GetCaseComments", &Method::GET) => {
            case_id().and_then(|id| op_get_case_comments(&st, id, &q))
        }
        _ => Err(missing(&name)),
    };
    answer(&st, a)
}

/// `.../legacySdk:legacyGetCaseComments/{case_id}` — the path form the SDK's code builds.
async fn one_platform_with_id(
    State(st): State<Shared>,
    Path((_p, _l, _i, name, id)): Path<(String, String, String, String, String)>,
    Query(q): Q,
) -> Response {
    let a = if name == "legacySdk:legacyGetCaseComments" {
        parse_case_id(&id).and_then(|id| op_get_case_comments(&st, id, &q))
    } else {
        Err(missing(&name))
    };
    answer(&st, a)
}

/// The whole simulator as an axum router (for embedding; [`super::start`] serves it).
pub fn router(state: Arc<SimState>) -> Router {
    const OP: &str = "/v1alpha/projects/{p}/locations/{l}/instances/{i}/{name}";
    let api = Router::new()
        .route(
            "/api/external/v1/sdk/GetCasesIdByFilter",
            post(legacy_filter),
        )
        .route(
            "/api/external/v1/sdk/AlertsTicketIdsByCaseId/{id}",
            get(legacy_ticket_ids),
        )
        .route(
            "/api/external/v1/sdk/CaseFullDetails/{id}/{populate}",
            get(legacy_full_details),
        )
        .route(
            "/api/external/v1/sdk/GetCaseComments/{id}",
            get(legacy_get_comments),
        )
        .route("/api/external/v1/sdk/AddTag", post(legacy_add_tag))
        .route("/api/external/v1/sdk/{op}", post(context_property))
        .route(
            "/api/external/v1/cases/comments",
            post(comments_post).get(comments_get),
        )
        .route(OP, get(one_platform).post(one_platform))
        .route(&format!("{OP}/{{id}}"), get(one_platform_with_id))
        .layer(middleware::from_fn_with_state(state.clone(), gate));
    inspect::routes().merge(api).with_state(state)
}

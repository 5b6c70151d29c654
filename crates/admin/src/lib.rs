//! soarjobd-admin: the admin HTTP server of a running daemon.
//!
//! * `GET /livez`: the scheduler loop turned recently (its heartbeat); never the database or
//!   the platforms, so their outage does not become a restart loop.
//! * `GET /readyz`: the jobs folder was loaded, the scheduler runs, the database answers.
//! * `GET /metrics`: Prometheus/OpenMetrics text ([`metrics`]).
//! * `/api/v1/...`: the JSON API ([`api`], `docs/openapi.yaml`).
//! * `/`: the status page: the jobs ([`jobs_page`]), a job ([`job_page`]), a run with its
//!   live log ([`run_page`]); sign-in and the forms' actions ([`page`]).
//!
//! The server depends on the core only: it sees the daemon through
//! [`soarjobd_engine::Control`], and feeds metrics through the core's observer hooks.
//!
//! Before any handler, every request passes [`guard`] (its `Host`, its origin, credential
//! guessing, its body); every connection is capped and timed out by [`conn`]. A protected
//! route names the caller it needs as an argument ([`extract::Reader`], [`extract::Operator`]).

mod api;
mod auth;
mod cluster_page;
pub mod config;
mod conn;
mod error;
mod extract;
mod guard;
mod html;
mod job_page;
mod jobs_page;
mod limit;
mod metrics;
mod page;
mod run_page;
mod svg;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use serde_json::json;
use soarjobd_core::heartbeat_limit;
use soarjobd_core::store::ops::JobPause;
use soarjobd_engine::Control;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use auth::{Auth, Sessions, Tokens};
pub use config::AdminSettings;
pub use conn::Limits;
pub use guard::{Hosts, Refusals};
pub use metrics::Metrics;

use crate::error::ApiError;
use crate::extract::Reader;

/// The largest request body accepted (the bodies are a reason or a login form).
pub const BODY_LIMIT: usize = 16 * 1024;
/// How long `/readyz` waits for the database.
const READY_DB_TIMEOUT: Duration = Duration::from_secs(2);

/// What every handler shares.
pub struct Shared {
    pub control: Control,
    pub metrics: Arc<Metrics>,
    pub auth: Auth,
    /// The names this server answers to.
    pub hosts: Hosts,
    /// The status page is reached over HTTPS (`admin.public_url`): its cookie is `Secure`.
    pub https: bool,
    pub limits: Limits,
    pub refusals: Refusals,
    limiter: limit::Limiter,
}

impl Shared {
    /// What the server at `addr` (the bound address: its real port) shares, from its settings.
    pub fn new(
        control: Control,
        metrics: Arc<Metrics>,
        settings: &AdminSettings,
        addr: SocketAddr,
    ) -> Shared {
        Shared {
            control,
            refusals: Refusals::new(metrics.clone()),
            metrics,
            auth: Auth {
                tokens: Tokens {
                    read: settings.read_token.clone(),
                    operator: settings.operator_token.clone(),
                },
                sessions: Sessions::new(settings.session_lifetime),
            },
            hosts: Hosts::new(
                addr,
                &settings.allowed_hosts,
                settings.public_url.as_deref(),
            ),
            https: settings.https(),
            limits: Limits {
                max_connections: settings.max_connections,
                header_read_timeout: settings.header_read_timeout,
                idle_timeout: settings.idle_timeout,
            },
            limiter: limit::Limiter::default(),
        }
    }

    /// The pauses in force, by job id.
    pub async fn pauses(&self) -> Result<HashMap<String, JobPause>, ApiError> {
        let list = self
            .control
            .pauses
            .pauses()
            .await
            .map_err(ApiError::store)?;
        Ok(list.into_iter().map(|p| (p.job_id.clone(), p)).collect())
    }
}

/// The router of the admin server.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/jobs", get(api::jobs))
        .route("/api/v1/jobs/{id}", get(api::job))
        .route("/api/v1/jobs/{id}/runs", get(api::job_runs))
        .route("/api/v1/jobs/{id}/run", post(api::run_job))
        .route("/api/v1/runs/{run_id}", get(api::run))
        .route("/api/v1/runs/{run_id}/cancel", post(api::cancel))
        .route("/api/v1/jobs/{id}/pause", post(api::pause))
        .route("/api/v1/jobs/{id}/resume", post(api::resume))
        .route("/api/v1/runs/{run_id}/logs", get(api::logs))
        .route("/", get(jobs_page::index))
        .route("/login", get(page::login_form).post(page::login))
        .route("/logout", post(page::logout))
        .route("/jobs/{id}", get(job_page::job))
        .route("/cluster", get(cluster_page::cluster))
        .route("/jobs/{id}/run", post(page::run_now))
        .route("/runs/{run_id}", get(run_page::run))
        .route("/runs/{run_id}/events", get(run_page::events))
        .route("/runs/{run_id}/cancel", post(page::cancel))
        .route("/jobs/{id}/pause", post(page::pause))
        .route("/jobs/{id}/resume", post(page::resume))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(shared.clone(), guard::check))
        .layer(middleware::from_fn(guard::headers))
        .with_state(shared)
}

async fn livez(State(s): State<Arc<Shared>>) -> Response {
    let hb = &s.control.status.heartbeat;
    let last = hb.last().map(|t| t.to_rfc3339());
    if hb.fresh(Utc::now(), heartbeat_limit()) {
        (
            StatusCode::OK,
            axum::Json(json!({"status": "ok", "last_tick": last})),
        )
            .into_response()
    } else {
        let reason = if last.is_none() {
            "the scheduler loop has not started"
        } else {
            "the scheduler loop has not turned in time"
        };
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "unhealthy", "reason": reason, "last_tick": last})),
        )
            .into_response()
    }
}

async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    let status = &s.control.status;
    let not_ready = |code: &str, reason: String| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "not_ready", "code": code, "reason": reason})),
        )
            .into_response()
    };
    if status.is_stopping() {
        return not_ready("shutting_down", "the daemon is shutting down".into());
    }
    if !status.is_scheduled() {
        return not_ready(
            "jobs_not_loaded",
            "the jobs folder was not loaded yet".into(),
        );
    }
    if !status.is_running() {
        return not_ready("scheduler_stopped", "the scheduler is not running".into());
    }
    // A lookup by primary key: the cheapest question the store answers.
    match tokio::time::timeout(READY_DB_TIMEOUT, s.control.store.run(0)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return not_ready("database", format!("the database fails: {e}")),
        Err(_) => return not_ready("database", "the database does not answer".into()),
    }
    // Overloaded is still ready (the daemon works, late): said in a detail field.
    let overload = status.overload();
    let mut body = json!({"status": "ready", "overloaded": overload.overloaded});
    if overload.overloaded {
        body["overload"] = json!(overload);
    }
    (StatusCode::OK, axum::Json(body)).into_response()
}

async fn metrics_text(State(s): State<Arc<Shared>>, _: Reader) -> Result<Response, ApiError> {
    // One query per scrape; a failing store leaves the paused gauge at 0 rather than failing
    // the whole scrape (`/readyz` reports the store).
    let pauses = s.pauses().await.unwrap_or_default();
    let text = s.metrics.encode(&s.control, &|id| pauses.contains_key(id));
    let mut r = text.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    Ok(r)
}

/// A running admin server.
pub struct Server {
    pub addr: SocketAddr,
    pub task: JoinHandle<()>,
}

/// Starts the server on `listener` (whose address `shared` was made for); it stops when
/// `shutdown` fires. The per-job metrics are seeded from the run history once the first
/// schedule is loaded.
pub fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> std::io::Result<Server> {
    let addr = listener.local_addr()?;
    let seed = shared.clone();
    tokio::spawn(async move {
        seed.control.status.scheduled().await;
        seed.metrics.seed(&seed.control).await;
    });
    let app = router(shared.clone());
    let task = tokio::spawn(conn::accept_loop(listener, app, shared, shutdown));
    Ok(Server { addr, task })
}

#[cfg(test)]
mod tests {
    /// Every API route of the router is documented in `docs/openapi.yaml`.
    #[test]
    fn the_openapi_file_documents_every_route() {
        let spec = include_str!("../../../docs/openapi.yaml");
        let routes: Vec<&str> = include_str!("lib.rs")
            .lines()
            .filter_map(|l| l.trim().strip_prefix(".route(\""))
            .filter_map(|l| l.split('"').next())
            .filter(|p| p.starts_with("/api/") || ["/livez", "/readyz", "/metrics"].contains(p))
            .collect();
        assert!(routes.len() >= 12, "{routes:?}");
        for r in routes {
            assert!(
                spec.contains(&format!("\n  {r}:\n")),
                "{r} is not in docs/openapi.yaml"
            );
        }
    }
}

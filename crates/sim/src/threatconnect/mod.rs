//! A ThreatConnect simulator: HMAC / token auth and the Batch API V2 of
//! `specs/threatconnect-api.md`, served by axum, for tests, benchmarks and `soarjobd demo`.
//!
//! Written from the spec on its own: nothing here comes from `soarjobd_clients::threatconnect`, so a
//! misreading of the wire format in the client is caught here instead of being shared.
//!
//! What it models:
//! * auth exactly as the server checks it: `Authorization: TC {id}:{sig}` over the
//!   request-target as received (path and raw query), the method and the `Timestamp` header,
//!   which must be within 5 minutes of the clock; or `Authorization: TC-Token {token}`;
//! * batch jobs: `POST /v2/batch` (settings), `POST /v2/batch/{id}` (the file, size-limited),
//!   then `Queued` -> `Running` -> `Completed` over `processing_delay_ms` in the background;
//!   per-item validation, upserts per owner (groups by xid, indicators by type + summary, File
//!   indicators merged on any shared hash, associations as a set), so a re-run never
//!   duplicates; `GET /v2/batch/{id}` status with per-kind counts, `GET …/errors` as gzip JSON
//!   (`400` while running, `404` when there are none);
//! * the 25 000-indicator limit and the critical-error texts of the spec;
//! * `GET /v2/groups/{branch}?owner=…&filters=name=…` and `GET /v2/owners`;
//! * what a TcEx 3 app calls (`tcex`): `GET /v2/types/indicatorTypes` and the multipart
//!   `POST /v2/batch/createAndUpload` (inline up to a size, else queued);
//! * latency, injected statuses for the next requests, stalled jobs, a failing job creation,
//!   a critical-error trigger and per-summary rejections, all changeable at run time;
//! * inspection routes under `/_sim/` (no auth): an owner's groups, indicators, associations
//!   and their counts, request statistics, and the behaviour settings.
//!
//! Semantics the spec leaves open are decided here and documented where they are used.
//!
//! The parts: `state` (jobs, owners, statistics), `wire` (the spec's envelopes and bodies),
//! `gate` (statistics, latency, injected statuses, auth), `batch` (the batch endpoints),
//! `process` and `upsert` (running a job's file), `rules` (the spec's type and summary rules),
//! `routes` (the other API routes and the router) and `inspect` (the `/_sim/` routes). The
//! fault knobs' mechanics are `sim::faults`, shared with the SOAR simulator.

mod batch;
mod gate;
mod inspect;
mod process;
mod routes;
mod rules;
mod state;
mod tcex;
mod upsert;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use state::SimState;

type Shared = Arc<SimState>;

/// Settings that may change while the simulator runs ([`TcSimHandle::set_behaviour`],
/// `PUT /_sim/behaviour`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Behaviour {
    /// Time a job takes from upload to `Completed` (half queued, half running).
    pub processing_delay_ms: u64,
    /// Added to every API request before it is handled.
    pub latency_ms: u64,
    /// Statuses answered to the next API requests, one each, before anything else (`429`
    /// comes with `Retry-After: 0`; `0` lets that request through, to aim at a later one).
    pub fail_next: Vec<u16>,
    /// `POST /v2/batch` answers `503 Batch job api is not available`.
    pub fail_batch_create: bool,
    /// Jobs never leave `Running` (for poll-timeout tests).
    pub stall_jobs: bool,
    /// An indicator summary or group name that makes its job fail with the critical
    /// "unexpected Exception" error.
    pub critical_trigger: Option<String>,
    /// Indicator summaries refused with a per-item error (as the platform does for, e.g.,
    /// excluded indicators).
    pub reject_summaries: Vec<String>,
}

impl Default for Behaviour {
    fn default() -> Behaviour {
        Behaviour {
            processing_delay_ms: 200,
            latency_ms: 0,
            fail_next: Vec::new(),
            fail_batch_create: false,
            stall_jobs: false,
            critical_trigger: None,
            reject_summaries: Vec::new(),
        }
    }
}

/// How to build a simulator.
#[derive(Clone)]
pub struct TcSimConfig {
    /// Path prefix of the API (`/api`, as on the cloud).
    pub api_prefix: String,
    /// HMAC credentials the simulator accepts.
    pub access_id: String,
    pub secret_key: String,
    /// `TC-Token` tokens the simulator accepts.
    pub tokens: Vec<String>,
    /// Most indicators in one batch job.
    pub max_indicators_per_job: usize,
    /// Largest accepted upload, in bytes.
    pub max_upload_bytes: usize,
    pub behaviour: Behaviour,
}

impl Default for TcSimConfig {
    fn default() -> TcSimConfig {
        TcSimConfig {
            api_prefix: "/api".into(),
            access_id: "sim-access-id".into(),
            secret_key: "sim-secret-key".into(),
            tokens: Vec::new(),
            max_indicators_per_job: 25_000,
            max_upload_bytes: 2_000_000,
            behaviour: Behaviour::default(),
        }
    }
}

/// By hand, so the secret key and tokens stay out of logs even in a simulator.
impl std::fmt::Debug for TcSimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcSimConfig")
            .field("api_prefix", &self.api_prefix)
            .field("access_id", &self.access_id)
            .field("secret_key", &"[REDACTED]")
            .field("tokens", &format!("[{} REDACTED]", self.tokens.len()))
            .field("max_indicators_per_job", &self.max_indicators_per_job)
            .field("max_upload_bytes", &self.max_upload_bytes)
            .field("behaviour", &self.behaviour)
            .finish()
    }
}

/// A running ThreatConnect simulator.
pub type TcSimHandle = super::Handle<SimState>;

impl TcSimHandle {
    /// `http://{addr}/api`: what `threatconnect.url` should be set to.
    pub fn api_url(&self) -> String {
        format!("http://{}{}", self.addr(), self.state().api_prefix)
    }

    /// The behaviour in effect.
    pub fn behaviour(&self) -> Behaviour {
        self.state().lock().behaviour.clone()
    }

    /// Changes the behaviour from now on (jobs already uploaded keep their delay).
    pub fn set_behaviour(&self, b: Behaviour) {
        self.state().lock().behaviour = b;
    }
}

/// Serves the simulator on `listen` (port 0 picks a free port).
pub async fn start(cfg: TcSimConfig, listen: SocketAddr) -> std::io::Result<TcSimHandle> {
    let state = Arc::new(SimState::new(&cfg));
    let handle = super::Handle::start(state.clone(), routes::router(state), listen).await?;
    let addr = handle.addr();
    tracing::info!(%addr, "ThreatConnect simulator listening");
    Ok(handle)
}

#[cfg(test)]
mod tests;

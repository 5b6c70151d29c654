//! A Google SecOps SOAR simulator: the SDK endpoints of `specs/soar-api.md`, served by axum,
//! for tests, benchmarks and `soarjobd demo`.
//!
//! Written from the spec on its own: nothing here comes from `soarjobd_clients::soar`, so a misreading of
//! the wire format in the client is caught here instead of being shared. The simulator is
//! deliberately strict where the client must be exact (all 13 filter keys, `?format=snake`,
//! `True`/`False` in URLs, the exact AddComment body) and answers `400` with the reason.
//!
//! What it models:
//! * deterministic cases from `(cases, seed)`: alerts with ticket ids, tags, environments,
//!   open/closed, start/update times in the 48 h before `base_time`, entities of common types;
//! * `AppKey` check (`401`), one-platform routes additionally need `Authorization: Bearer`;
//! * latency, a requests-per-second limit (`429` + `Retry-After`), and injected faults: `500`
//!   (a write is then either fully applied or not at all), `429`, and slow replies whose write
//!   completes even when the client has given up (the "in doubt" case);
//! * inspection routes under `/_sim/` (no auth): comments, cases, stats, and test hooks to add
//!   or alter cases, change faults at run time, and override the next answers of an endpoint.
//!
//! Semantics the spec leaves open are decided here and documented at the point of use
//! (`operator: null` = OR; the update-time range applies only when a bound is given; the close
//! range only with status CLOSE).
//!
//! The parts: [`state`](SimState) (cases, comments, counters, hooks), `generate` (seeding),
//! `wire` (the spec's JSON shapes), `filter` (the case filter), `endpoints` (the endpoints'
//! logic), `routes` (axum handlers and the router), `gate` (auth, format, overrides, faults;
//! the knobs themselves are `sim::faults`, shared with the ThreatConnect simulator)
//! and `inspect` (the `/_sim/` routes).

mod endpoints;
mod filter;
mod gate;
mod generate;
mod inspect;
mod routes;
mod state;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

pub use generate::{ENVIRONMENTS, TAGS};
pub use routes::router;
pub use state::{CasePatch, CaseSummary, Override, SimComment, SimState, SimStats};

type Shared = Arc<SimState>;

/// How to build and run a simulator.
#[derive(Clone)]
pub struct SoarSimConfig {
    /// Number of generated cases (ids `1..=cases`).
    pub cases: usize,
    /// Seed of the generated cases: same `(cases, seed)`, same cases.
    pub seed: u64,
    /// The `AppKey` every API request must carry.
    pub app_key: String,
    /// Added to every API request before it is handled.
    pub latency_ms: u64,
    /// API requests per second; beyond it `429` with `Retry-After`.
    pub rate_limit: Option<u32>,
    /// Fraction (0..=1) of API requests answered with a fault: `500`, `429`, or slow.
    pub fault_rate: f64,
    /// Seed of the fault sequence.
    pub fault_seed: u64,
    /// How long a "slow" fault delays its reply (and, for a write, the write itself).
    pub slow_ms: u64,
    /// "Now" at start, unix ms; `None` = the real clock. The simulated clock then advances in
    /// real time from it (comments are stamped with it).
    pub base_time_ms: Option<i64>,
}

impl Default for SoarSimConfig {
    fn default() -> SoarSimConfig {
        SoarSimConfig {
            cases: 100,
            seed: 1,
            app_key: "sim-app-key".into(),
            latency_ms: 0,
            rate_limit: None,
            fault_rate: 0.0,
            fault_seed: 7,
            slow_ms: 2_000,
            base_time_ms: None,
        }
    }
}

/// By hand, so the API key stays out of logs even in a simulator.
impl std::fmt::Debug for SoarSimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoarSimConfig")
            .field("cases", &self.cases)
            .field("seed", &self.seed)
            .field("app_key", &"[REDACTED]")
            .field("latency_ms", &self.latency_ms)
            .field("rate_limit", &self.rate_limit)
            .field("fault_rate", &self.fault_rate)
            .field("fault_seed", &self.fault_seed)
            .field("slow_ms", &self.slow_ms)
            .field("base_time_ms", &self.base_time_ms)
            .finish()
    }
}

/// A running SOAR simulator; [`url`](super::Handle::url) is what `soar.url` should be set to.
pub type SimHandle = super::Handle<SimState>;

/// Generates the cases and serves the simulator on `listen` (port 0 picks a free port).
pub async fn start(cfg: SoarSimConfig, listen: SocketAddr) -> std::io::Result<SimHandle> {
    let state = Arc::new(SimState::new(&cfg));
    let handle = super::Handle::start(state.clone(), router(state), listen).await?;
    let addr = handle.addr();
    tracing::info!(%addr, cases = cfg.cases, seed = cfg.seed, "SOAR simulator listening");
    Ok(handle)
}

#[cfg(test)]
mod tests;

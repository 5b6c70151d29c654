//! The simulated platform's data and the state the handlers share: cases, comments, counters,
//! test hooks (case upserts, overrides, slow calls) and the fault knobs.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::SoarSimConfig;
use super::generate::{generate_alert, generate_case};
use crate::faults::{Delay, Fault, FaultDice, NextCalls, RateLimit};
use crate::rng::Rng;

#[derive(Debug, Clone)]
pub(super) struct SimEntity {
    pub(super) identifier: String,
    pub(super) entity_type: &'static str,
    pub(super) is_internal: bool,
    pub(super) is_suspicious: bool,
}

#[derive(Debug, Clone)]
pub(super) struct SimAlert {
    pub(super) identifier: String,
    pub(super) ticket_id: String,
    pub(super) name: String,
    pub(super) product: String,
    pub(super) vendor: String,
    pub(super) rule_generator: String,
    pub(super) severity: i64,
    pub(super) creation_time: i64,
    pub(super) entities: Vec<SimEntity>,
}

#[derive(Debug, Clone)]
pub(super) struct SimCase {
    pub(super) id: u64,
    pub(super) title: String,
    pub(super) open: bool,
    pub(super) environment: String,
    pub(super) tags: Vec<String>,
    pub(super) priority: i64,
    pub(super) stage: String,
    pub(super) assigned_user: String,
    pub(super) creation_time: i64,
    pub(super) modification_time: i64,
    pub(super) close_time: Option<i64>,
    pub(super) alerts: Vec<SimAlert>,
}

/// A stored comment, as the inspection API and in-process tests see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimComment {
    pub comment_id: u64,
    pub case_id: u64,
    pub alert_identifier: Option<String>,
    pub comment: String,
    pub creation_time_unix_time_in_ms: i64,
    pub modification_time_unix_time_in_ms: i64,
}

/// One case as `/_sim/cases` reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaseSummary {
    pub id: u64,
    pub title: String,
    /// `OPEN` or `CLOSE`.
    pub status: String,
    pub environment: String,
    pub tags: Vec<String>,
    pub priority: i64,
    pub creation_time: i64,
    pub modification_time: i64,
    pub close_time: Option<i64>,
    pub alert_identifiers: Vec<String>,
    pub ticket_ids: Vec<String>,
    pub comment_count: usize,
}

/// Counters of what the simulator saw and did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SimStats {
    /// API requests by endpoint name (`AddComment`, `GetCasesIdByFilter`, ...).
    pub requests: BTreeMap<String, u64>,
    pub unauthorized: u64,
    pub rate_limited: u64,
    pub bad_requests: u64,
    pub faults_500: u64,
    /// `500` faults on writes whose write was applied before the error was returned.
    pub faults_500_applied: u64,
    pub faults_429: u64,
    pub faults_slow: u64,
    pub overrides_served: u64,
    pub comments_added: u64,
}

/// Add or change a case (`POST /_sim/cases`, [`SimState::upsert_case`]). Unset fields keep
/// their value (or the generated one for a new case).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CasePatch {
    /// Existing id to alter, or a new id; `None` = next free id.
    pub id: Option<u64>,
    pub title: Option<String>,
    /// `OPEN` or `CLOSE`.
    pub status: Option<String>,
    pub environment: Option<String>,
    pub tags: Option<Vec<String>>,
    pub creation_time: Option<i64>,
    pub modification_time: Option<i64>,
    /// Replace the alerts with this many generated ones (0 = a case with no alerts).
    pub alerts: Option<usize>,
}

/// A canned answer for the next calls to an endpoint (`POST /_sim/overrides`): to test how a
/// client copes with malformed bodies or odd statuses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    /// Endpoint name as in [`SimStats::requests`].
    pub endpoint: String,
    pub status: u16,
    pub body: String,
    /// How many calls get it; `None` = until cleared.
    #[serde(default)]
    pub times: Option<u32>,
}

#[derive(Debug)]
pub(super) struct Data {
    pub(super) cases: BTreeMap<u64, SimCase>,
    pub(super) comments: Vec<SimComment>,
    pub(super) next_comment_id: u64,
    pub(super) stats: SimStats,
    /// Canned answers (status, body) for the next calls of an endpoint.
    overrides: NextCalls<(u16, String)>,
    /// Endpoints whose next calls get a slow fault.
    slow_next: NextCalls<()>,
    /// Context properties (`SetContextProperty`), by (context type, identifier, key).
    pub(super) context: BTreeMap<(i64, String, String), serde_json::Value>,
}

/// The simulator's state, shared by the handlers and reachable from in-process tests.
pub struct SimState {
    data: Mutex<Data>,
    pub(super) app_key: String,
    seed: u64,
    base_time_ms: i64,
    started: Instant,
    pub(super) latency: Delay,
    pub(super) rate_limit: RateLimit,
    faults: FaultDice,
    pub(super) slow: Delay,
}

impl std::fmt::Debug for SimState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimState")
            .field("base_time_ms", &self.base_time_ms)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

impl SimState {
    /// Generates the cases of `cfg` (for embedding with [`super::router`]; [`super::start`]
    /// does this itself).
    pub fn new(cfg: &SoarSimConfig) -> SimState {
        // The simulated clock is `base + started.elapsed()`: both are taken together, before
        // the (slow, for many cases) generation, so the clock does not lag the real one.
        let started = Instant::now();
        let base = cfg
            .base_time_ms
            .unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
        let cases = (1..=cfg.cases as u64)
            .map(|id| (id, generate_case(cfg.seed, id, base)))
            .collect();
        SimState {
            data: Mutex::new(Data {
                cases,
                comments: Vec::new(),
                next_comment_id: 1,
                stats: SimStats::default(),
                overrides: NextCalls::default(),
                slow_next: NextCalls::default(),
                context: BTreeMap::new(),
            }),
            app_key: cfg.app_key.clone(),
            seed: cfg.seed,
            base_time_ms: base,
            started,
            latency: Delay::new(cfg.latency_ms),
            rate_limit: RateLimit::new(cfg.rate_limit),
            faults: FaultDice::new(cfg.fault_rate, cfg.fault_seed),
            slow: Delay::new(cfg.slow_ms),
        }
    }

    /// A context property as the platform stores it (`None`: not set).
    pub fn context_property(
        &self,
        context_type: i64,
        identifier: &str,
        key: &str,
    ) -> Option<serde_json::Value> {
        self.data()
            .context
            .get(&(context_type, identifier.to_string(), key.to_string()))
            .cloned()
    }

    /// Sets a context property, as a platform run of the job did.
    pub fn set_context_property(
        &self,
        context_type: i64,
        identifier: &str,
        key: &str,
        value: serde_json::Value,
    ) {
        self.data().context.insert(
            (context_type, identifier.to_string(), key.to_string()),
            value,
        );
    }

    /// A poisoned lock only means a handler panicked mid-request; the data is still usable.
    pub(super) fn data(&self) -> MutexGuard<'_, Data> {
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The simulated clock: `base_time` plus real time elapsed since start.
    pub fn now_ms(&self) -> i64 {
        self.base_time_ms + self.started.elapsed().as_millis() as i64
    }

    /// "Now" at start: generated cases lie in the 48 h before it.
    pub fn base_time_ms(&self) -> i64 {
        self.base_time_ms
    }

    /// Comments, all or of one case, in the order they were added.
    pub fn comments(&self, case_id: Option<u64>) -> Vec<SimComment> {
        self.data()
            .comments
            .iter()
            .filter(|c| case_id.is_none_or(|id| c.case_id == id))
            .cloned()
            .collect()
    }

    pub fn cases(&self) -> Vec<CaseSummary> {
        let d = self.data();
        let mut counts: HashMap<u64, usize> = HashMap::new();
        for c in &d.comments {
            *counts.entry(c.case_id).or_default() += 1;
        }
        d.cases
            .values()
            .map(|c| summary(c, counts.get(&c.id).copied().unwrap_or(0)))
            .collect()
    }

    pub fn stats(&self) -> SimStats {
        self.data().stats.clone()
    }

    pub fn set_fault_rate(&self, rate: f64) {
        self.faults.set_rate(rate);
    }

    pub fn set_latency_ms(&self, ms: u64) {
        self.latency.set_ms(ms);
    }

    pub fn set_slow_ms(&self, ms: u64) {
        self.slow.set_ms(ms);
    }

    /// Answers the next `ov.times` calls of `ov.endpoint` with `ov.status` / `ov.body`.
    pub fn add_override(&self, ov: Override) {
        self.data()
            .overrides
            .push(ov.endpoint, ov.times, (ov.status, ov.body));
    }

    pub fn clear_overrides(&self) {
        self.data().overrides.clear();
    }

    /// The next `times` calls of `endpoint` get a slow fault, whatever the fault rate: the
    /// reply comes `slow_ms` late and a write still lands, even when the client gave up
    /// (counted in `faults_slow`). A deterministic way to put one write in doubt.
    pub fn slow_next(&self, endpoint: &str, times: u32) {
        if times > 0 {
            self.data()
                .slow_next
                .push(endpoint.to_string(), Some(times), ());
        }
    }

    pub(super) fn take_slow(&self, endpoint: &str) -> bool {
        self.data().slow_next.take(endpoint).is_some()
    }

    /// Adds or alters a case; returns its summary.
    pub fn upsert_case(&self, patch: CasePatch) -> Result<CaseSummary, String> {
        let open = match patch.status.as_deref() {
            None => None,
            Some("OPEN") => Some(true),
            Some("CLOSE") => Some(false),
            Some(other) => return Err(format!("status must be OPEN or CLOSE, got {other}")),
        };
        let now = self.now_ms();
        let mut d = self.data();
        let id = patch
            .id
            .unwrap_or_else(|| d.cases.keys().next_back().map_or(1, |m| m + 1));
        let seed = self.seed;
        let base = self.base_time_ms;
        let case = d
            .cases
            .entry(id)
            .or_insert_with(|| generate_case(seed, id, base));
        if let Some(t) = patch.title {
            case.title = t;
        }
        if let Some(open) = open {
            case.open = open;
            case.close_time = if open {
                None
            } else {
                Some(case.close_time.unwrap_or(now))
            };
        }
        if let Some(e) = patch.environment {
            case.environment = e;
        }
        if let Some(t) = patch.tags {
            case.tags = t;
        }
        if let Some(t) = patch.creation_time {
            case.creation_time = t;
        }
        if let Some(t) = patch.modification_time {
            case.modification_time = t;
        }
        if let Some(n) = patch.alerts {
            let mut rng = Rng::new(seed ^ id.wrapping_mul(0xA24B_AED4_963E_E407) ^ 0x5A5A);
            case.alerts = (0..n)
                .map(|_| generate_alert(&mut rng, id, case.creation_time))
                .collect();
        }
        let count = d.comments.iter().filter(|c| c.case_id == id).count();
        Ok(summary(&d.cases[&id], count))
    }

    pub(super) fn count_request(&self, endpoint: &str) {
        *self
            .data()
            .stats
            .requests
            .entry(endpoint.to_string())
            .or_default() += 1;
    }

    pub(super) fn bump(&self, f: impl FnOnce(&mut SimStats)) {
        f(&mut self.data().stats);
    }

    /// The fault for the next request, from a deterministic sequence.
    pub(super) fn roll_fault(&self) -> Option<Fault> {
        self.faults.roll()
    }

    pub(super) fn take_override(&self, endpoint: &str) -> Option<(u16, String)> {
        let mut d = self.data();
        let answer = d.overrides.take(endpoint)?;
        d.stats.overrides_served += 1;
        Some(answer)
    }
}

pub(super) fn summary(c: &SimCase, comment_count: usize) -> CaseSummary {
    CaseSummary {
        id: c.id,
        title: c.title.clone(),
        status: if c.open { "OPEN" } else { "CLOSE" }.into(),
        environment: c.environment.clone(),
        tags: c.tags.clone(),
        priority: c.priority,
        creation_time: c.creation_time,
        modification_time: c.modification_time,
        close_time: c.close_time,
        alert_identifiers: c.alerts.iter().map(|a| a.identifier.clone()).collect(),
        ticket_ids: distinct_ticket_ids(c),
        comment_count,
    }
}

pub(super) fn distinct_ticket_ids(c: &SimCase) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for a in &c.alerts {
        if !out.contains(&a.ticket_id) {
            out.push(a.ticket_id.clone());
        }
    }
    out
}

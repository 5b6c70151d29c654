//! A Google SecOps SOAR simulator: the SDK endpoints of `specs/soar-api.md`, served by axum,
//! for tests, benchmarks and `soarjobd demo`.
//!
//! Written from the spec on its own: nothing here comes from [`crate::soar`], so a misreading of
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

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The platform's cap on GetCasesIdByFilter results.
const MAX_RESULTS_CAP: i64 = 10_000;
/// How far back generated cases start.
const WINDOW_MS: i64 = 48 * 3600 * 1000;

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

// ---------------------------------------------------------------------------------------------
// Deterministic randomness
// ---------------------------------------------------------------------------------------------

/// SplitMix64: tiny, fast, and stable across dependency upgrades, so a seed means the same cases
/// forever (a benchmark or a bug report can name its seed).
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
    fn hex(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b"0123456789abcdef"[self.below(16) as usize]))
            .collect()
    }
    fn uuid(&mut self) -> String {
        format!(
            "{}-{}-4{}-{}-{}",
            self.hex(8),
            self.hex(4),
            self.hex(3),
            self.hex(4),
            self.hex(12)
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The simulated platform's data
// ---------------------------------------------------------------------------------------------

/// Tags cases are drawn from.
pub const TAGS: &[&str] = &[
    "Phishing",
    "Malware",
    "Currency",
    "Ransomware",
    "Exfiltration",
    "Brute Force",
    "Insider Threat",
    "Lateral Movement",
];
/// Environments cases are drawn from.
pub const ENVIRONMENTS: &[&str] = &["Default Environment", "Prod", "Lab"];

/// (alert name, product, vendor, rule generator)
const ALERT_KINDS: &[(&str, &str, &str, &str)] = &[
    (
        "SUSPICIOUS PHISHING EMAIL",
        "Phishing detector",
        "Email server",
        "Phishing",
    ),
    ("MALWARE DETECTED", "Endpoint Protection", "EDR", "Malware"),
    ("DATA EXFILTRATION", "DLP", "Network DLP", "Exfiltration"),
    (
        "BRUTE FORCE LOGIN",
        "Identity Provider",
        "IdP",
        "Brute Force",
    ),
    (
        "RANSOMWARE BEHAVIOUR",
        "Endpoint Protection",
        "EDR",
        "Ransomware",
    ),
    ("CRYPTO MINING ACTIVITY", "Firewall", "NGFW", "Currency"),
];

#[derive(Debug, Clone)]
struct SimEntity {
    identifier: String,
    entity_type: &'static str,
    is_internal: bool,
    is_suspicious: bool,
}

#[derive(Debug, Clone)]
struct SimAlert {
    identifier: String,
    ticket_id: String,
    name: String,
    product: String,
    vendor: String,
    rule_generator: String,
    severity: i64,
    creation_time: i64,
    entities: Vec<SimEntity>,
}

#[derive(Debug, Clone)]
struct SimCase {
    id: u64,
    title: String,
    open: bool,
    environment: String,
    tags: Vec<String>,
    priority: i64,
    stage: String,
    assigned_user: String,
    creation_time: i64,
    modification_time: i64,
    close_time: Option<i64>,
    alerts: Vec<SimAlert>,
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
struct Data {
    cases: BTreeMap<u64, SimCase>,
    comments: Vec<SimComment>,
    next_comment_id: u64,
    stats: SimStats,
    overrides: Vec<Override>,
    /// Endpoints whose next calls get a slow fault, with how many calls are left.
    slow_next: Vec<(String, u32)>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The simulator's state, shared by the handlers and reachable from in-process tests.
pub struct SimState {
    data: Mutex<Data>,
    app_key: String,
    seed: u64,
    base_time_ms: i64,
    started: Instant,
    latency_ms: AtomicU64,
    /// `f64` bits, so tests can change the rate while the server runs.
    fault_rate: AtomicU64,
    fault_seed: u64,
    fault_counter: AtomicU64,
    slow_ms: AtomicU64,
    rate_limit: Option<u32>,
    bucket: Mutex<Bucket>,
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
    /// Generates the cases of `cfg` (for embedding with [`router`]; [`start`] does this itself).
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
                overrides: Vec::new(),
                slow_next: Vec::new(),
            }),
            app_key: cfg.app_key.clone(),
            seed: cfg.seed,
            base_time_ms: base,
            started,
            latency_ms: AtomicU64::new(cfg.latency_ms),
            fault_rate: AtomicU64::new(cfg.fault_rate.clamp(0.0, 1.0).to_bits()),
            fault_seed: cfg.fault_seed,
            fault_counter: AtomicU64::new(0),
            slow_ms: AtomicU64::new(cfg.slow_ms),
            rate_limit: cfg.rate_limit.filter(|r| *r > 0),
            bucket: Mutex::new(Bucket {
                tokens: f64::from(cfg.rate_limit.unwrap_or(0)),
                last: Instant::now(),
            }),
        }
    }

    /// A poisoned lock only means a handler panicked mid-request; the data is still usable.
    fn data(&self) -> MutexGuard<'_, Data> {
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
        self.fault_rate
            .store(rate.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
    }

    pub fn set_latency_ms(&self, ms: u64) {
        self.latency_ms.store(ms, Ordering::Relaxed);
    }

    pub fn set_slow_ms(&self, ms: u64) {
        self.slow_ms.store(ms, Ordering::Relaxed);
    }

    /// Answers the next `ov.times` calls of `ov.endpoint` with `ov.status` / `ov.body`.
    pub fn add_override(&self, ov: Override) {
        self.data().overrides.push(ov);
    }

    pub fn clear_overrides(&self) {
        self.data().overrides.clear();
    }

    /// The next `times` calls of `endpoint` get a slow fault, whatever the fault rate: the
    /// reply comes `slow_ms` late and a write still lands, even when the client gave up
    /// (counted in `faults_slow`). A deterministic way to put one write in doubt.
    pub fn slow_next(&self, endpoint: &str, times: u32) {
        if times > 0 {
            self.data().slow_next.push((endpoint.to_string(), times));
        }
    }

    fn take_slow(&self, endpoint: &str) -> bool {
        let mut d = self.data();
        let Some(i) = d.slow_next.iter().position(|(e, _)| e == endpoint) else {
            return false;
        };
        d.slow_next[i].1 -= 1;
        if d.slow_next[i].1 == 0 {
            d.slow_next.remove(i);
        }
        true
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

    fn count_request(&self, endpoint: &str) {
        *self
            .data()
            .stats
            .requests
            .entry(endpoint.to_string())
            .or_default() += 1;
    }

    fn bump(&self, f: impl FnOnce(&mut SimStats)) {
        f(&mut self.data().stats);
    }

    /// Takes a token; `Some(wait)` when none is left.
    fn rate_limit_check(&self) -> Option<Duration> {
        let rate = f64::from(self.rate_limit?);
        let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * rate).min(rate);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            None
        } else {
            Some(Duration::from_secs_f64((1.0 - b.tokens) / rate))
        }
    }

    /// The fault for the next request, from a deterministic sequence.
    fn roll_fault(&self) -> Option<Fault> {
        let rate = f64::from_bits(self.fault_rate.load(Ordering::Relaxed));
        if rate <= 0.0 {
            return None;
        }
        let n = self.fault_counter.fetch_add(1, Ordering::Relaxed);
        let mut rng = Rng::new(self.fault_seed ^ n.wrapping_mul(0xD6E8_FEB8_6659_FD93));
        if !rng.chance(rate) {
            return None;
        }
        Some(match rng.below(3) {
            0 => Fault::ServerError {
                apply: rng.chance(0.5),
            },
            1 => Fault::TooMany,
            _ => Fault::Slow,
        })
    }

    fn take_override(&self, endpoint: &str) -> Option<(u16, String)> {
        let mut d = self.data();
        let i = d.overrides.iter().position(|o| o.endpoint == endpoint)?;
        let ov = &mut d.overrides[i];
        let answer = (ov.status, ov.body.clone());
        match &mut ov.times {
            Some(1) => {
                d.overrides.remove(i);
            }
            Some(n) => *n = n.saturating_sub(1),
            None => {}
        }
        d.stats.overrides_served += 1;
        Some(answer)
    }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// `500`; for a write, `apply` says whether the write happened first.
    ServerError {
        apply: bool,
    },
    TooMany,
    Slow,
}

fn summary(c: &SimCase, comment_count: usize) -> CaseSummary {
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

fn distinct_ticket_ids(c: &SimCase) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for a in &c.alerts {
        if !out.contains(&a.ticket_id) {
            out.push(a.ticket_id.clone());
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Case generation
// ---------------------------------------------------------------------------------------------

/// Case `id` of seed `seed`: its own random stream, so adding cases never changes others.
fn generate_case(seed: u64, id: u64, base: i64) -> SimCase {
    let mut rng = Rng::new(seed ^ id.wrapping_mul(0xA24B_AED4_963E_E407));
    let creation_time = base - rng.below(WINDOW_MS as u64) as i64;
    let modification_time = creation_time + rng.below((base - creation_time) as u64 + 1) as i64;
    let open = rng.chance(0.7);
    let environment = if rng.chance(0.5) {
        ENVIRONMENTS[0]
    } else {
        rng.pick(&ENVIRONMENTS[1..])
    };
    let mut tags: Vec<String> = Vec::new();
    for _ in 0..rng.below(3) {
        let t = rng.pick(TAGS).to_string();
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    // About one case in 20 has no alerts (a manually created case).
    let alert_count = if rng.chance(0.05) {
        0
    } else {
        1 + rng.below(3) as usize
    };
    let alerts: Vec<SimAlert> = (0..alert_count)
        .map(|_| generate_alert(&mut rng, id, creation_time))
        .collect();
    let title = alerts.first().map_or_else(
        || "Manually created case".to_string(),
        |a| title_case(&a.name),
    );
    SimCase {
        id,
        title,
        open,
        environment: environment.to_string(),
        tags,
        priority: *rng.pick(&[-1, 0, 40, 60, 80, 100]),
        stage: rng
            .pick(&["Triage", "Investigation", "Incident", "Research"])
            .to_string(),
        assigned_user: rng.pick(&["Admin", "@Tier1", "@Tier2"]).to_string(),
        creation_time,
        modification_time,
        close_time: (!open).then_some(modification_time),
        alerts,
    }
}

fn generate_alert(rng: &mut Rng, case_id: u64, case_time: i64) -> SimAlert {
    let (name, product, vendor, rule) = *rng.pick(ALERT_KINDS);
    let identifier = format!("{name}_{}", rng.uuid().to_uppercase());
    let entities = (0..1 + rng.below(4))
        .map(|_| generate_entity(rng, case_id))
        .collect();
    SimAlert {
        identifier,
        ticket_id: rng.uuid(),
        name: name.to_string(),
        product: product.to_string(),
        vendor: vendor.to_string(),
        rule_generator: rule.to_string(),
        severity: *rng.pick(&[20, 40, 60, 80, 100]),
        creation_time: case_time,
        entities,
    }
}

/// An entity of a common type; identifiers upper-cased, as the platform normalises them.
fn generate_entity(rng: &mut Rng, case_id: u64) -> SimEntity {
    let n = rng.below(250) + 1;
    let (entity_type, identifier, internal) = match rng.below(12) {
        0 => ("ADDRESS", format!("10.1.{}.{n}", case_id % 250), true),
        1 => ("ADDRESS", format!("203.0.113.{n}"), false),
        2 => (
            "HOSTNAME",
            format!("WKS-{:04}.CORP.EXAMPLE.COM", rng.below(10_000)),
            true,
        ),
        3 => (
            "DestinationURL",
            format!("HTTPS://MALICIOUS-{n}.EXAMPLE.NET/LOGIN/{}", rng.hex(6)),
            false,
        ),
        4 => ("FILEHASH", rng.hex(32), false),
        5 => ("FILEHASH", rng.hex(40), false),
        6 => ("FILEHASH", rng.hex(64), false),
        7 => (
            "EMAILSUBJECT",
            format!("URGENT: INVOICE {} OVERDUE", rng.below(100_000)),
            false,
        ),
        8 => (
            "USERUNIQNAME",
            format!(
                "{}@EXAMPLE.COM",
                rng.pick(&["JDOE", "ASMITH", "BLEE", "MKHAN"])
            ),
            true,
        ),
        9 => (
            "USERUNIQNAME",
            format!("CORP\\{}", rng.pick(&["SVC-BACKUP", "ADMIN2"])),
            true,
        ),
        10 => ("DOMAIN", format!("BAD-DOMAIN-{n}.EXAMPLE.ORG"), false),
        _ => (
            *rng.pick(&["FILENAME", "PROCESS", "CVE", "MacAddress"]),
            String::new(),
            true,
        ),
    };
    let identifier = match (entity_type, identifier.is_empty()) {
        ("FILENAME", true) => "INVOICE.PDF.EXE".to_string(),
        ("PROCESS", true) => "POWERSHELL.EXE".to_string(),
        ("CVE", true) => format!("CVE-2024-{:04}", rng.below(10_000)),
        ("MacAddress", true) => format!("00:1A:2B:3C:4D:{:02X}", rng.below(256)),
        _ => identifier.to_uppercase(),
    };
    SimEntity {
        identifier,
        entity_type,
        is_internal: internal,
        is_suspicious: !internal || rng.chance(0.2),
    }
}

fn title_case(s: &str) -> String {
    let lower = s.to_lowercase();
    let mut c = lower.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Wire shapes (spec §3), built as JSON directly
// ---------------------------------------------------------------------------------------------

fn case_json(c: &SimCase) -> Value {
    let id = c.id.to_string();
    json!({
        "identifier": id,
        "creation_time": c.creation_time,
        "modification_time": c.modification_time,
        "alert_count": c.alerts.len(),
        "priority": c.priority,
        "is_touched": false,
        "is_merged": false,
        "is_important": c.priority >= 80,
        "environment": c.environment,
        "assigned_user": c.assigned_user,
        "title": c.title,
        "description": "",
        "status": if c.open { "OPEN" } else { "CLOSE" },
        "is_incident": false,
        "stage": c.stage,
        "has_suspicious_entity": c.alerts.iter().any(|a| a.entities.iter().any(|e| e.is_suspicious)),
        "high_risk_products": [],
        "is_locked": false,
        "has_workflow": false,
        "sla_expiration_unix_time": null,
        "additional_properties": {},
        "cyber_alerts": c.alerts.iter().map(|a| alert_json(c, a)).collect::<Vec<_>>(),
    })
}

fn alert_json(c: &SimCase, a: &SimAlert) -> Value {
    let case_id = c.id.to_string();
    json!({
        "identifier": a.identifier,
        "alert_group_identifier": format!("{}_{}", a.rule_generator, c.id),
        "creation_time": a.creation_time,
        "modification_time": a.creation_time,
        "case_identifier": case_id,
        "reporting_vendor": a.vendor,
        "reporting_product": a.product,
        "environment": c.environment,
        "name": a.name,
        "description": "",
        "external_id": a.ticket_id,
        "severity": a.severity,
        "rule_generator": a.rule_generator,
        "tags": [],
        "detected_time": a.creation_time - 10_000,
        "security_events": [],
        "domain_relations": [],
        "additional_data": null,
        "additional_properties": {
            "TicketId": a.ticket_id,
            "DeviceProduct": a.product,
            "IsTestCase": "False",
            "AlertGroupIdentifier": format!("{}_{}", a.rule_generator, c.id),
        },
        "domain_entities": a.entities.iter().map(|e| json!({
            "identifier": e.identifier,
            "creation_time": a.creation_time,
            "modification_time": a.creation_time,
            "case_identifier": case_id,
            "alert_identifier": a.identifier,
            "entity_type": e.entity_type,
            "is_internal": e.is_internal,
            "is_suspicious": e.is_suspicious,
            "is_artifact": false,
            "is_enriched": false,
            "is_vulnerable": false,
            "is_pivot": false,
            "additional_properties": {
                "IsSuspicious": if e.is_suspicious { "True" } else { "False" },
                "IsInternalAsset": if e.is_internal { "True" } else { "False" },
                "Type": e.entity_type,
                "Environment": c.environment,
            },
        })).collect::<Vec<_>>(),
    })
}

fn comment_json(c: &SimComment) -> Value {
    json!({
        "comment": c.comment,
        "comment_id": c.comment_id,
        "comment_type": 5,
        "case_id": c.case_id,
        "alert_identifier": c.alert_identifier,
        "creator_user_id": "77bdb7a4-8484-481d-9482-2449e33f9518",
        "creator_full_name": "API",
        "is_favorite": false,
        "is_deleted": false,
        "creation_time_unix_time_in_ms": c.creation_time_unix_time_in_ms,
        "modification_time_unix_time_in_ms": c.modification_time_unix_time_in_ms,
        "last_editor": null,
        "last_editor_full_name": null,
        "comment_for_client": null,
        "modification_time_unix_time_in_ms_for_client": null,
    })
}

// ---------------------------------------------------------------------------------------------
// Endpoint logic (shared by the legacy and one-platform routes)
// ---------------------------------------------------------------------------------------------

type Shared = Arc<SimState>;

/// A refused request: status and reason. Handlers return `Result<Response, Reject>` so `?`
/// works, and [`answer`] turns the rejection into a response.
struct Reject(StatusCode, String);

type Answer = Result<Response, Reject>;

fn bad(msg: impl Into<String>) -> Reject {
    Reject(StatusCode::BAD_REQUEST, msg.into())
}

fn missing(what: impl std::fmt::Display) -> Reject {
    Reject(StatusCode::NOT_FOUND, format!("{what} not found"))
}

/// The response for `a`; client mistakes (400/415) are counted so tests can assert that a
/// client sent none.
fn answer(st: &SimState, a: Answer) -> Response {
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

fn bad_request(st: &SimState, msg: impl Into<String>) -> Response {
    answer(st, Err(bad(msg)))
}

fn parse_case_id(raw: &str) -> Result<u64, Reject> {
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

/// The 13 keys of a GetCasesIdByFilter body, all required (the SDK always sends them).
const FILTER_KEYS: [&str; 13] = [
    "start_time_from_unix_time_in_ms",
    "start_time_to_unix_time_in_ms",
    "close_time_from_unix_time_in_ms",
    "close_time_to_unix_time_in_ms",
    "update_time_from_unix_time_in_ms",
    "update_time_to_unix_time_in_ms",
    "status",
    "operator",
    "sort_by",
    "sort_order",
    "max_results",
    "environments",
    "tags",
];

/// A parsed case filter.
struct Filter {
    start: (Option<i64>, Option<i64>),
    close: (Option<i64>, Option<i64>),
    update: (Option<i64>, Option<i64>),
    status: String,
    and: bool,
    sort_by: String,
    ascending: bool,
    max_results: usize,
    environments: Option<Vec<String>>,
    tags: Option<Vec<String>>,
}

fn parse_filter(v: &Value) -> Result<Filter, String> {
    let obj = v.as_object().ok_or("the body must be a JSON object")?;
    for k in FILTER_KEYS {
        if !obj.contains_key(k) {
            return Err(format!("missing key {k}"));
        }
    }
    if let Some(extra) = obj.keys().find(|k| !FILTER_KEYS.contains(&k.as_str())) {
        return Err(format!("unknown key {extra}"));
    }
    let time = |k: &str| -> Result<Option<i64>, String> {
        match &obj[k] {
            Value::Null => Ok(None),
            Value::Number(n) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| format!("{k} must be an integer")),
            _ => Err(format!("{k} must be an integer or null")),
        }
    };
    let enum_str = |k: &str, allowed: &[&str], null_as: Option<&str>| -> Result<String, String> {
        match (&obj[k], null_as) {
            (Value::Null, Some(d)) => Ok(d.to_string()),
            (Value::String(s), _) if allowed.contains(&s.as_str()) => Ok(s.clone()),
            (other, _) => Err(format!("{k} must be one of {allowed:?}, got {other}")),
        }
    };
    let names = |k: &str| -> Result<Option<Vec<String>>, String> {
        match &obj[k] {
            Value::Null => Ok(None),
            Value::Array(items) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| format!("{k} must hold strings"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            _ => Err(format!("{k} must be a list of strings or null")),
        }
    };
    let max_results = obj["max_results"]
        .as_i64()
        .ok_or("max_results must be an integer")?;
    if max_results <= 0 {
        return Err("max_results must be positive".into());
    }
    Ok(Filter {
        start: (
            time("start_time_from_unix_time_in_ms")?,
            time("start_time_to_unix_time_in_ms")?,
        ),
        close: (
            time("close_time_from_unix_time_in_ms")?,
            time("close_time_to_unix_time_in_ms")?,
        ),
        update: (
            time("update_time_from_unix_time_in_ms")?,
            time("update_time_to_unix_time_in_ms")?,
        ),
        status: enum_str("status", &["OPEN", "CLOSE", "BOTH"], None)?,
        // `operator: null` is unverified on the real server; treated as OR.
        and: enum_str("operator", &["OR", "AND"], Some("OR"))? == "AND",
        sort_by: enum_str(
            "sort_by",
            &["START_TIME", "CLOSE_TIME", "UPDATE_TIME"],
            Some("START_TIME"),
        )?,
        ascending: enum_str("sort_order", &["ASC", "DESC"], Some("DESC"))? == "ASC",
        max_results: max_results.min(MAX_RESULTS_CAP) as usize,
        environments: names("environments")?,
        tags: names("tags")?,
    })
}

fn in_range(t: i64, (from, to): (Option<i64>, Option<i64>)) -> bool {
    from.is_none_or(|f| t >= f) && to.is_none_or(|x| t <= x)
}

impl Filter {
    fn matches(&self, c: &SimCase) -> bool {
        let status_ok = match self.status.as_str() {
            "OPEN" => c.open,
            "CLOSE" => !c.open,
            _ => true,
        };
        let nonempty = |v: &Option<Vec<String>>| v.as_ref().filter(|v| !v.is_empty()).cloned();
        let env_ok = nonempty(&self.environments).is_none_or(|e| e.contains(&c.environment));
        let tags_ok = nonempty(&self.tags).is_none_or(|t| c.tags.iter().any(|x| t.contains(x)));
        status_ok && env_ok && tags_ok && self.times_match(c)
    }

    /// The time ranges that apply, combined with the operator. The start range always applies
    /// (the SDK always fills it); the update range only when one of its bounds is given; the
    /// close range only with status CLOSE (the SDK says the server ignores it otherwise).
    fn times_match(&self, c: &SimCase) -> bool {
        let mut checks = vec![in_range(c.creation_time, self.start)];
        if self.update.0.is_some() || self.update.1.is_some() {
            checks.push(in_range(c.modification_time, self.update));
        }
        if self.status == "CLOSE" && self.close.0.is_some() {
            checks.push(c.close_time.is_some_and(|t| in_range(t, self.close)));
        }
        if self.and {
            checks.iter().all(|b| *b)
        } else {
            checks.iter().any(|b| *b)
        }
    }

    fn sort_key(&self, c: &SimCase) -> i64 {
        match self.sort_by.as_str() {
            "UPDATE_TIME" => c.modification_time,
            // Open cases have no close time; they sort as the earliest.
            "CLOSE_TIME" => c.close_time.unwrap_or(i64::MIN),
            _ => c.creation_time,
        }
    }
}

fn op_cases_by_filter(st: &SimState, headers: &HeaderMap, body: &[u8]) -> Answer {
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

fn op_ticket_ids(st: &SimState, case_id: u64) -> Answer {
    let d = st.data();
    let c = d
        .cases
        .get(&case_id)
        .ok_or_else(|| missing(format_args!("case {case_id}")))?;
    Ok(axum::Json(distinct_ticket_ids(c)).into_response())
}

fn op_full_details(st: &SimState, case_id: u64, populate: &str) -> Answer {
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

fn op_get_case_comments(st: &SimState, case_id: u64, q: &HashMap<String, String>) -> Answer {
    match q.get("fetchUpdates").map(String::as_str) {
        Some("False" | "True") => comments_of(st, case_id, None),
        _ => Err(bad("fetchUpdates must be True or False")),
    }
}

fn op_fetch_comments(st: &SimState, q: &HashMap<String, String>) -> Answer {
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

fn op_add_comment(st: &SimState, headers: &HeaderMap, body: &[u8]) -> Answer {
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

fn op_add_tag(st: &SimState, headers: &HeaderMap, body: &[u8]) -> Answer {
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

// ---------------------------------------------------------------------------------------------
// Routes
// ---------------------------------------------------------------------------------------------

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

/// The endpoint name of an API path (for stats, overrides and fault handling), and whether it
/// writes.
fn classify(method: &Method, path: &str) -> Option<(&'static str, bool, bool)> {
    const NAMES: [(&str, bool); 5] = [
        ("GetCasesIdByFilter", false),
        ("AlertsTicketIdsByCaseId", false),
        ("CaseFullDetails", false),
        ("GetCaseComments", false),
        ("AddTag", true),
    ];
    if let Some(rest) = path.strip_prefix("/api/external/v1/") {
        if rest == "cases/comments" {
            return Some(if method == Method::POST {
                ("AddComment", true, false)
            } else {
                ("FetchCaseComments", false, false)
            });
        }
        let name = rest.strip_prefix("sdk/")?.split('/').next()?;
        return NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(n, w)| (*n, *w, false));
    }
    if path.starts_with("/v1alpha/") {
        let tail = path.split("legacySdk:legacy").nth(1)?;
        let name = tail.split('/').next()?;
        return NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(n, w)| (*n, *w, true));
    }
    None
}

fn retry_after(wait: Duration) -> HeaderValue {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    HeaderValue::from(secs)
}

/// Applied to every API route: latency, rate limit, auth, `?format=snake`, overrides, faults.
async fn gate(State(st): State<Shared>, req: Request, next: Next) -> Response {
    let Some((endpoint, writes, one_platform)) = classify(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    st.count_request(endpoint);

    let latency = st.latency_ms.load(Ordering::Relaxed);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if let Some(wait) = st.rate_limit_check() {
        st.bump(|s| s.rate_limited += 1);
        let mut r = (StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded").into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, retry_after(wait));
        return r;
    }

    let key_ok = req
        .headers()
        .get("appkey")
        .is_some_and(|v| v.as_bytes() == st.app_key.as_bytes());
    let bearer_ok = !one_platform
        || req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| !t.trim().is_empty());
    if !key_ok || !bearer_ok {
        st.bump(|s| s.unauthorized += 1);
        let msg = if key_ok {
            "missing or invalid bearer token"
        } else {
            "invalid or missing AppKey"
        };
        return (StatusCode::UNAUTHORIZED, msg).into_response();
    }

    let snake = req.uri().query().is_some_and(|q| {
        url::form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "format" && v == "snake")
    });
    if !snake {
        return bad_request(
            &st,
            "this simulator only speaks ?format=snake (without it the platform answers PascalCase)",
        );
    }

    if let Some((status, body)) = st.take_override(endpoint) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    }

    let fault = if st.take_slow(endpoint) {
        Some(Fault::Slow)
    } else {
        st.roll_fault()
    };
    match fault {
        None => next.run(req).await,
        Some(Fault::TooMany) => {
            st.bump(|s| s.faults_429 += 1);
            let mut r = (StatusCode::TOO_MANY_REQUESTS, "injected fault").into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        Some(Fault::ServerError { apply }) => {
            // A write is applied whole or not at all; either way the client sees a 500.
            if writes && apply {
                let _ = next.run(req).await;
                st.bump(|s| s.faults_500_applied += 1);
            }
            st.bump(|s| s.faults_500 += 1);
            (StatusCode::INTERNAL_SERVER_ERROR, "injected fault").into_response()
        }
        Some(Fault::Slow) => {
            st.bump(|s| s.faults_slow += 1);
            let slow = Duration::from_millis(st.slow_ms.load(Ordering::Relaxed));
            // Spawned, so the write still lands when the client gives up and disconnects:
            // the server was slow, not dead.
            let task = tokio::spawn(async move {
                tokio::time::sleep(slow).await;
                next.run(req).await
            });
            task.await.unwrap_or_else(|_| {
                (StatusCode::INTERNAL_SERVER_ERROR, "handler failed").into_response()
            })
        }
    }
}

// ---- inspection routes ----

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

/// The whole simulator as an axum router (for embedding; [`start`] serves it).
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
        .route(
            "/api/external/v1/cases/comments",
            post(comments_post).get(comments_get),
        )
        .route(OP, get(one_platform).post(one_platform))
        .route(&format!("{OP}/{{id}}"), get(one_platform_with_id))
        .layer(middleware::from_fn_with_state(state.clone(), gate));
    Router::new()
        .route("/_sim/comments", get(sim_comments))
        .route("/_sim/cases", get(sim_cases).post(sim_upsert_case))
        .route("/_sim/stats", get(sim_stats))
        .route(
            "/_sim/overrides",
            post(sim_add_override).delete(sim_clear_overrides),
        )
        .route("/_sim/config", post(sim_config))
        .merge(api)
        .with_state(state)
}

/// A running simulator.
#[derive(Debug)]
pub struct SimHandle {
    server: super::Server,
    state: Shared,
}

impl SimHandle {
    /// The bound address (the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://{addr}`: what `soar.url` should be set to.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// The state, for in-process tests.
    pub fn state(&self) -> &Arc<SimState> {
        &self.state
    }

    /// Stops accepting, lets in-flight requests finish (up to 5 s), and stops.
    pub async fn shutdown(self) -> std::io::Result<()> {
        self.server.shutdown().await
    }

    /// Serves until `signal` completes, then shuts down (for `soarjobd sim soar`).
    pub async fn serve_until(
        self,
        signal: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        signal.await;
        self.shutdown().await
    }
}

/// Generates the cases and serves the simulator on `listen` (port 0 picks a free port).
pub async fn start(cfg: SoarSimConfig, listen: SocketAddr) -> std::io::Result<SimHandle> {
    let state = Arc::new(SimState::new(&cfg));
    let app = router(state.clone());
    let server = super::Server::start(app, listen).await?;
    let addr = server.addr();
    tracing::info!(%addr, cases = cfg.cases, seed = cfg.seed, "SOAR simulator listening");
    Ok(SimHandle { server, state })
}

#[cfg(test)]
mod tests {
    //! The simulator on its own, driven with raw HTTP (not the crate's client, which is tested
    //! against the simulator in `crate::soar`).
    use super::*;

    const KEY: &str = "test-key";
    const BASE: i64 = 1_719_592_000_000;

    fn cfg(cases: usize) -> SoarSimConfig {
        SoarSimConfig {
            cases,
            seed: 42,
            app_key: KEY.into(),
            base_time_ms: Some(BASE),
            ..SoarSimConfig::default()
        }
    }

    async fn sim(c: SoarSimConfig) -> SimHandle {
        start(c, "127.0.0.1:0".parse().unwrap()).await.unwrap()
    }

    fn http() -> reqwest::Client {
        reqwest::Client::new()
    }

    /// A filter body with all 13 keys; `over` replaces some.
    fn filter(over: Value) -> Value {
        let mut f = json!({
            "start_time_from_unix_time_in_ms": BASE - WINDOW_MS - 1,
            "start_time_to_unix_time_in_ms": BASE,
            "close_time_from_unix_time_in_ms": null, "close_time_to_unix_time_in_ms": null,
            "update_time_from_unix_time_in_ms": null, "update_time_to_unix_time_in_ms": null,
            "status": "BOTH", "operator": null, "sort_by": "START_TIME", "sort_order": "DESC",
            "max_results": 10000, "environments": null, "tags": null
        });
        for (k, v) in over.as_object().unwrap() {
            f[k] = v.clone();
        }
        f
    }

    async fn search(h: &SimHandle, body: &Value) -> (StatusCode, Value) {
        let r = http()
            .post(format!(
                "{}/api/external/v1/sdk/GetCasesIdByFilter?format=snake",
                h.url()
            ))
            .header("AppKey", KEY)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    fn ids(v: &Value) -> Vec<u64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect()
    }

    #[test]
    fn debug_output_hides_the_key() {
        let c = SoarSimConfig {
            app_key: "sim-secret-123".into(),
            ..cfg(1)
        };
        assert!(!format!("{c:?}").contains("sim-secret-123"));
        assert!(!format!("{:?}", SimState::new(&c)).contains("sim-secret-123"));
    }

    #[test]
    fn generation_is_deterministic_and_varied() {
        let a = SimState::new(&cfg(300)).cases();
        let b = SimState::new(&cfg(300)).cases();
        assert_eq!(a, b);
        let other = SimState::new(&SoarSimConfig {
            seed: 43,
            ..cfg(300)
        })
        .cases();
        assert_ne!(a, other);
        // A longer run keeps the first cases unchanged.
        assert_eq!(SimState::new(&cfg(400)).cases()[..300], a[..]);

        assert!(a.iter().any(|c| c.alert_identifiers.is_empty()));
        assert!(a.iter().any(|c| c.status == "OPEN") && a.iter().any(|c| c.status == "CLOSE"));
        for env in ENVIRONMENTS {
            assert!(a.iter().any(|c| c.environment == *env), "{env}");
        }
        for tag in ["Phishing", "Malware", "Currency"] {
            assert!(a.iter().any(|c| c.tags.iter().any(|t| t == tag)), "{tag}");
        }
        for c in &a {
            assert!(c.creation_time > BASE - WINDOW_MS && c.creation_time <= BASE);
            assert!(c.modification_time >= c.creation_time && c.modification_time <= BASE);
            assert_eq!(c.ticket_ids.len(), c.alert_identifiers.len());
        }
    }

    #[tokio::test]
    async fn filter_matches_status_tags_environments_and_times() {
        let h = sim(cfg(500)).await;
        let cases = h.state().cases();
        let since = BASE - 12 * 3600 * 1000;
        let body = filter(json!({
            "status": "OPEN", "tags": ["Phishing", "Currency"],
            "environments": ["Prod", "Default Environment"],
            "start_time_from_unix_time_in_ms": since,
            "update_time_from_unix_time_in_ms": since, "operator": "OR",
            "sort_by": "UPDATE_TIME", "sort_order": "ASC"
        }));
        let (status, v) = search(&h, &body).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let mut want: Vec<&CaseSummary> = cases
            .iter()
            .filter(|c| c.status == "OPEN")
            .filter(|c| c.tags.iter().any(|t| t == "Phishing" || t == "Currency"))
            .filter(|c| c.environment != "Lab")
            .filter(|c| c.creation_time >= since || c.modification_time >= since)
            .collect();
        want.sort_by_key(|c| (c.modification_time, c.id));
        let want: Vec<u64> = want.iter().map(|c| c.id).collect();
        assert!(!want.is_empty());
        assert_eq!(ids(&v), want);

        // AND narrows to cases that both started and were updated since.
        let (_, v) = search(
            &h,
            &filter(json!({
                "status": "OPEN", "start_time_from_unix_time_in_ms": since,
                "update_time_from_unix_time_in_ms": since + 3_600_000, "operator": "AND"
            })),
        )
        .await;
        let want: Vec<u64> = {
            let mut w: Vec<&CaseSummary> = cases
                .iter()
                .filter(|c| c.status == "OPEN" && c.creation_time >= since)
                .filter(|c| c.modification_time >= since + 3_600_000)
                .collect();
            w.sort_by_key(|c| std::cmp::Reverse((c.creation_time, c.id)));
            w.iter().map(|c| c.id).collect()
        };
        assert_eq!(ids(&v), want);

        // max_results truncates after sorting.
        let (_, v) = search(&h, &filter(json!({"max_results": 3, "sort_order": "ASC"}))).await;
        let mut all: Vec<&CaseSummary> = cases.iter().collect();
        all.sort_by_key(|c| (c.creation_time, c.id));
        assert_eq!(
            ids(&v),
            all.iter().take(3).map(|c| c.id).collect::<Vec<_>>()
        );
        h.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn filter_body_is_checked_strictly() {
        let h = sim(cfg(5)).await;
        let mut body = filter(json!({}));
        body.as_object_mut().unwrap().remove("tags");
        let (status, v) = search(&h, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(v.as_str().unwrap().contains("missing key tags"));
        let (status, _) = search(&h, &filter(json!({"status": "open"}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = search(&h, &filter(json!({"max_results": 0}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        // Without ?format=snake.
        let r = http()
            .post(format!(
                "{}/api/external/v1/sdk/GetCasesIdByFilter",
                h.url()
            ))
            .header("AppKey", KEY)
            .json(&filter(json!({})))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(h.state().stats().bad_requests, 4);
    }

    #[tokio::test]
    async fn wrong_or_missing_app_key_is_401() {
        let h = sim(cfg(5)).await;
        let url = format!(
            "{}/api/external/v1/sdk/AlertsTicketIdsByCaseId/1?format=snake",
            h.url()
        );
        let r = http()
            .get(&url)
            .header("AppKey", "nope")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let r = http().get(&url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let r = http().get(&url).header("AppKey", KEY).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(h.state().stats().unauthorized, 2);
    }

    #[tokio::test]
    async fn comment_lands_and_touches_the_case() {
        let h = sim(cfg(5)).await;
        let before = h.state().cases()[1].modification_time;
        let url = format!("{}/api/external/v1/cases/comments?format=snake", h.url());
        let r = http()
            .post(&url)
            .header("AppKey", KEY)
            .json(&json!({"case_id": 2, "alert_identifier": null, "comment": "hello"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let c = h.state().comments(Some(2));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].comment, "hello");
        let after = h.state().cases()[1].modification_time;
        assert!(after > before && after >= BASE);

        // An extra key is refused (the SDK sends exactly three).
        let r = http()
            .post(&url)
            .header("AppKey", KEY)
            .json(&json!({"case_id": 2, "alert_identifier": null, "comment": "x", "extra": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);

        // Fetch, with the time filter.
        let list: Value = http()
            .get(format!(
                "{url}&caseId=2&spec.timeFilterType=1&spec.fromTimestamp={}",
                after + 1
            ))
            .header("AppKey", KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(list, json!([]));
        let list: Value = http()
            .get(format!("{url}&caseId=2"))
            .header("AppKey", KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(list[0]["comment"], "hello");
        assert_eq!(list[0]["case_id"], 2);

        // Inspection route.
        let v: Value = http()
            .get(format!("{}/_sim/comments?case_id=2", h.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v.as_array().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn faulted_writes_are_all_or_nothing() {
        let h = sim(SoarSimConfig {
            fault_rate: 1.0,
            slow_ms: 1,
            ..cfg(3)
        })
        .await;
        let url = format!("{}/api/external/v1/cases/comments?format=snake", h.url());
        let mut ok = 0;
        for i in 0..60 {
            let r = http()
                .post(&url)
                .header("AppKey", KEY)
                .json(&json!({"case_id": 1, "alert_identifier": null, "comment": format!("c{i}")}))
                .send()
                .await
                .unwrap();
            if r.status() == StatusCode::OK {
                ok += 1;
            }
        }
        let s = h.state().stats();
        assert_eq!(s.faults_500 + s.faults_429 + s.faults_slow, 60);
        assert!(
            s.faults_500 > 0 && s.faults_429 > 0 && s.faults_slow > 0,
            "{s:?}"
        );
        assert!(
            s.faults_500_applied > 0 && s.faults_500_applied < s.faults_500,
            "{s:?}"
        );
        // Every stored comment is either a slow success or an applied 500; nothing else.
        assert_eq!(ok, s.faults_slow);
        assert_eq!(
            h.state().comments(Some(1)).len() as u64,
            s.faults_slow + s.faults_500_applied
        );
    }

    #[tokio::test]
    async fn slow_write_lands_after_the_client_gave_up() {
        let h = sim(SoarSimConfig {
            fault_rate: 1.0,
            // Find a fault seed whose first fault is "slow".
            fault_seed: (0..1000)
                .find(|s| {
                    let st = SimState::new(&SoarSimConfig {
                        fault_rate: 1.0,
                        fault_seed: *s,
                        ..cfg(1)
                    });
                    matches!(st.roll_fault(), Some(Fault::Slow))
                })
                .unwrap(),
            slow_ms: 300,
            ..cfg(2)
        })
        .await;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(50))
            .build()
            .unwrap();
        let r = client
            .post(format!(
                "{}/api/external/v1/cases/comments?format=snake",
                h.url()
            ))
            .header("AppKey", KEY)
            .json(&json!({"case_id": 1, "alert_identifier": null, "comment": "late"}))
            .send()
            .await;
        assert!(r.unwrap_err().is_timeout());
        assert!(h.state().comments(Some(1)).is_empty());
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(h.state().comments(Some(1)).len(), 1);
    }

    #[tokio::test]
    async fn rate_limit_answers_429_with_retry_after() {
        let h = sim(SoarSimConfig {
            rate_limit: Some(2),
            ..cfg(2)
        })
        .await;
        let url = format!(
            "{}/api/external/v1/sdk/AlertsTicketIdsByCaseId/1?format=snake",
            h.url()
        );
        let mut limited = 0;
        for _ in 0..6 {
            let r = http().get(&url).header("AppKey", KEY).send().await.unwrap();
            if r.status() == StatusCode::TOO_MANY_REQUESTS {
                assert!(r.headers().get("retry-after").is_some());
                limited += 1;
            }
        }
        assert!(limited >= 3, "{limited}");
        assert_eq!(h.state().stats().rate_limited, limited);
    }

    #[tokio::test]
    async fn one_platform_routes_need_a_bearer_token() {
        let h = sim(cfg(3)).await;
        let base = format!(
            "{}/v1alpha/projects/p/locations/l/instances/i/legacySdk:legacy",
            h.url()
        );
        let url = format!("{base}CaseFullDetails?caseId=1&populateOriginalFile=False&format=snake");
        let r = http().get(&url).header("AppKey", KEY).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let v: Value = http()
            .get(&url)
            .header("AppKey", KEY)
            .bearer_auth("t")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["identifier"], "1");
        let r = http()
            .get(format!(
                "{base}GetCaseComments/1?fetchUpdates=False&format=snake"
            ))
            .header("AppKey", KEY)
            .bearer_auth("t")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(h.state().stats().requests["GetCaseComments"], 1);
    }

    #[tokio::test]
    async fn overrides_and_case_upserts() {
        let h = sim(cfg(3)).await;
        h.state().add_override(Override {
            endpoint: "AlertsTicketIdsByCaseId".into(),
            status: 200,
            body: "[{\"oops\":1}]".into(),
            times: Some(1),
        });
        let url = format!(
            "{}/api/external/v1/sdk/AlertsTicketIdsByCaseId/1?format=snake",
            h.url()
        );
        let t1 = http().get(&url).header("AppKey", KEY).send().await.unwrap();
        assert_eq!(t1.text().await.unwrap(), "[{\"oops\":1}]");
        let t2: Value = http()
            .get(&url)
            .header("AppKey", KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(t2.is_array() && t2.as_array().unwrap().iter().all(Value::is_string));

        let s: CaseSummary = {
            let v: Value = http()
                .post(format!("{}/_sim/cases", h.url()))
                .json(&json!({"id": 77, "status": "OPEN", "tags": ["Currency"], "alerts": 0}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(v["id"], 77);
            h.state().cases().into_iter().find(|c| c.id == 77).unwrap()
        };
        assert_eq!(s.tags, vec!["Currency".to_string()]);
        assert!(s.alert_identifiers.is_empty());
        let v: Value = http()
            .get(format!("{}/_sim/stats", h.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["overrides_served"], 1);
    }
}

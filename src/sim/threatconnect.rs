//! A ThreatConnect simulator: HMAC / token auth and the Batch API V2 of
//! `specs/threatconnect-api.md`, served by axum, for tests, benchmarks and `soarjobd demo`.
//!
//! Written from the spec on its own: nothing here comes from [`crate::threatconnect`], so a
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
//! * latency, injected statuses for the next requests, stalled jobs, a failing job creation,
//!   a critical-error trigger and per-summary rejections, all changeable at run time;
//! * inspection routes under `/_sim/` (no auth): an owner's groups, indicators, associations
//!   and their counts, request statistics, and the behaviour settings.
//!
//! Semantics the spec leaves open are decided here and documented where they are used.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::Sha256;

/// How far the `Timestamp` header may be from the server clock.
const TIMESTAMP_WINDOW_SECS: i64 = 300;

const CRITICAL_EXCEPTION: &str = "Encountered an unexpected Exception while processing batch job";

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

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
enum JobStatus {
    Created,
    Queued,
    Running,
    Completed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AttrWrite {
    Append,
    Replace,
    Singleton,
    Static,
}

#[derive(Debug, Clone)]
struct JobSettings {
    owner: String,
    halt_on_error: bool,
    delete: bool,
    attr_write: AttrWrite,
    replace_tags: bool,
}

/// Per-kind success / error counts of a job.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct KindCounts {
    success_group_count: u64,
    error_group_count: u64,
    success_indicator_count: u64,
    error_indicator_count: u64,
    success_association_count: u64,
    error_association_count: u64,
}

#[derive(Debug)]
struct Job {
    settings: JobSettings,
    status: JobStatus,
    errors: Vec<Value>,
    success: u64,
    unprocessed: u64,
    counts: KindCounts,
}

#[derive(Debug, Clone, Serialize)]
struct Attr {
    #[serde(rename = "type")]
    kind: String,
    value: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct SimGroup {
    id: u64,
    xid: String,
    name: String,
    #[serde(rename = "type")]
    kind: String,
    tags: BTreeSet<String>,
    attributes: Vec<Attr>,
    fields: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct SimIndicator {
    id: u64,
    #[serde(rename = "type")]
    kind: String,
    summary: String,
    rating: Option<f64>,
    confidence: Option<u64>,
    tags: BTreeSet<String>,
    attributes: Vec<Attr>,
    file_occurrences: Vec<Value>,
    fields: Map<String, Value>,
}

/// One owner's data. Indicators are keyed by `type` + normalized summary; File indicators
/// also by each hash, because the platform merges files sharing a hash.
#[derive(Debug, Default)]
struct Owner {
    groups: BTreeMap<String, SimGroup>,
    indicators: BTreeMap<(String, String), SimIndicator>,
    file_hashes: HashMap<String, (String, String)>,
    /// (group id, indicator type, indicator key).
    associations: BTreeSet<(u64, String, String)>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Stats {
    /// API requests received (inspection routes not counted).
    requests: u64,
    /// Per `METHOD /route`.
    routes: BTreeMap<String, u64>,
    auth_failures: u64,
    faults_injected: u64,
    jobs_created: u64,
    uploads: u64,
    upload_bytes: u64,
    groups_received: u64,
    indicators_received: u64,
}

#[derive(Debug, Default)]
struct Inner {
    behaviour: Behaviour,
    next_id: u64,
    jobs: HashMap<u64, Job>,
    owners: BTreeMap<String, Owner>,
    stats: Stats,
}

impl Inner {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

/// The simulator's state, shared by its handlers.
#[derive(Debug)]
struct SimState {
    api_prefix: String,
    access_id: String,
    secret_key: String,
    tokens: Vec<String>,
    max_indicators: usize,
    max_upload: usize,
    inner: Mutex<Inner>,
}

type Shared = Arc<SimState>;

impl SimState {
    fn new(cfg: &TcSimConfig) -> SimState {
        SimState {
            api_prefix: cfg.api_prefix.trim_end_matches('/').to_string(),
            access_id: cfg.access_id.clone(),
            secret_key: cfg.secret_key.clone(),
            tokens: cfg.tokens.clone(),
            max_indicators: cfg.max_indicators_per_job,
            max_upload: cfg.max_upload_bytes,
            inner: Mutex::new(Inner {
                behaviour: cfg.behaviour.clone(),
                next_id: 1000,
                ..Inner::default()
            }),
        }
    }

    /// A poisoned lock only means a handler panicked; the data is still usable for a sim.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

fn failure(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"status": "Failure", "message": message})),
    )
        .into_response()
}

fn success(status: StatusCode, data: Value) -> Response {
    (
        status,
        axum::Json(json!({"status": "Success", "data": data})),
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// Middleware: stats, latency, injected faults, auth
// ---------------------------------------------------------------------------------------------

async fn gate(State(st): State<Shared>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string());
    let (latency, fault) = {
        let mut inner = st.lock();
        inner.stats.requests += 1;
        *inner
            .stats
            .routes
            .entry(format!("{} {route}", req.method()))
            .or_default() += 1;
        let fault = if inner.behaviour.fail_next.is_empty() {
            None
        } else {
            inner.stats.faults_injected += 1;
            Some(inner.behaviour.fail_next.remove(0))
        };
        (inner.behaviour.latency_ms, fault)
    };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if let Some(code) = fault.filter(|c| *c != 0) {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = failure(status, "injected fault");
        if code == 429 {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("0"));
        }
        return resp;
    }
    if let Err(message) = check_auth(&st, &req) {
        st.lock().stats.auth_failures += 1;
        return failure(StatusCode::UNAUTHORIZED, message);
    }
    next.run(req).await
}

/// The server's check: token, or HMAC over the request-target exactly as received.
fn check_auth(st: &SimState, req: &Request) -> Result<(), &'static str> {
    let header_str = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let Some(auth) = header_str("authorization") else {
        return Err("Access Denied");
    };
    if let Some(token) = auth.strip_prefix("TC-Token ") {
        return if st.tokens.iter().any(|t| t == token) {
            Ok(())
        } else {
            Err("Unauthorized")
        };
    }
    let Some((id, signature)) = auth.strip_prefix("TC ").and_then(|r| r.rsplit_once(':')) else {
        return Err("Access Denied");
    };
    let timestamp: i64 = header_str("timestamp")
        .and_then(|t| t.trim().parse().ok())
        .ok_or("Access Denied")?;
    if (chrono::Utc::now().timestamp() - timestamp).abs() > TIMESTAMP_WINDOW_SECS {
        return Err("Timestamp out of acceptable time range");
    }
    let target = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    let message = format!("{target}:{}:{timestamp}", req.method().as_str());
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(st.secret_key.as_bytes()) else {
        return Err("Access Denied");
    };
    mac.update(message.as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    if id == st.access_id && signature == expected {
        Ok(())
    } else {
        Err("Access Denied")
    }
}

// ---------------------------------------------------------------------------------------------
// Batch endpoints
// ---------------------------------------------------------------------------------------------

/// Reads a boolean sent as JSON or as a string (the newer client sends `"true"`).
fn flag(v: Option<&Value>) -> Option<bool> {
    match v? {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

fn parse_settings(body: &[u8]) -> Result<JobSettings, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let text = |k: &str| v.get(k).and_then(Value::as_str);
    let owner = text("owner")
        .filter(|o| !o.is_empty())
        .ok_or("owner is required")?;
    let halt_on_error = flag(v.get("haltOnError")).ok_or("haltOnError is required")?;
    let delete = match text("action") {
        Some("Create") => false,
        Some("Delete") => true,
        _ => return Err("action must be Create or Delete".into()),
    };
    let attr_write = match text("attributeWriteType") {
        Some("Append") => AttrWrite::Append,
        Some("Replace") => AttrWrite::Replace,
        Some("Singleton") => AttrWrite::Singleton,
        Some("Static") => AttrWrite::Static,
        _ => return Err("attributeWriteType must be Append, Replace, Singleton or Static".into()),
    };
    let replace_tags = match text("tagWriteType") {
        None | Some("Replace") => true,
        Some("Append") => false,
        Some(_) => return Err("tagWriteType must be Append or Replace".into()),
    };
    // V1 jobs (no version) take a bare indicator array; only V2 files are modelled.
    if text("version") != Some("V2") {
        return Err("only version V2 batch jobs are supported by the simulator".into());
    }
    Ok(JobSettings {
        owner: owner.to_string(),
        halt_on_error,
        delete,
        attr_write,
        replace_tags,
    })
}

async fn create_job(State(st): State<Shared>, body: Bytes) -> Response {
    let mut inner = st.lock();
    if inner.behaviour.fail_batch_create {
        return failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "Batch job api is not available. Please enable the Batch API and document storage.",
        );
    }
    let settings = match parse_settings(&body) {
        Ok(s) => s,
        Err(e) => return failure(StatusCode::BAD_REQUEST, &e),
    };
    let id = inner.id();
    inner.stats.jobs_created += 1;
    inner.jobs.insert(
        id,
        Job {
            settings,
            status: JobStatus::Created,
            errors: Vec::new(),
            success: 0,
            unprocessed: 0,
            counts: KindCounts::default(),
        },
    );
    success(StatusCode::CREATED, json!({"batchId": id}))
}

async fn upload(State(st): State<Shared>, Path(id): Path<u64>, body: Bytes) -> Response {
    let (delay, stall) = {
        let mut inner = st.lock();
        if body.len() > st.max_upload {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({
                    "status": "Invalid",
                    "description": format!("File size greater than allowable limit of {}", st.max_upload)
                })),
            )
                .into_response();
        }
        inner.stats.uploads += 1;
        inner.stats.upload_bytes += body.len() as u64;
        let delay = Duration::from_millis(inner.behaviour.processing_delay_ms);
        let stall = inner.behaviour.stall_jobs;
        let Some(job) = inner.jobs.get_mut(&id) else {
            return failure(StatusCode::NOT_FOUND, "Batch job not found");
        };
        if job.status != JobStatus::Created {
            return failure(StatusCode::BAD_REQUEST, "Batch job already has data");
        }
        job.status = JobStatus::Queued;
        (delay, stall)
    };
    let state = st.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay / 2).await;
        if let Some(job) = state.lock().jobs.get_mut(&id) {
            job.status = JobStatus::Running;
        }
        if stall {
            return;
        }
        tokio::time::sleep(delay / 2).await;
        let mut inner = state.lock();
        process_job(&mut inner, &state, id, &body);
    });
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({"status": "Queued"})),
    )
        .into_response()
}

async fn job_status(
    State(st): State<Shared>,
    Path(id): Path<u64>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let inner = st.lock();
    let Some(job) = inner.jobs.get(&id) else {
        return failure(StatusCode::NOT_FOUND, "Batch job not found");
    };
    let mut status = json!({
        "id": id,
        "status": job.status,
        "errorCount": job.errors.len(),
        "successCount": job.success,
        "unprocessCount": job.unprocessed,
    });
    if q.get("includeAdditional").map(String::as_str) == Some("true")
        && let (Some(obj), Ok(Value::Object(extra))) =
            (status.as_object_mut(), serde_json::to_value(&job.counts))
    {
        obj.extend(extra);
    }
    success(StatusCode::OK, json!({"batchStatus": status}))
}

async fn job_errors(State(st): State<Shared>, Path(id): Path<u64>) -> Response {
    let inner = st.lock();
    let Some(job) = inner.jobs.get(&id) else {
        return failure(StatusCode::NOT_FOUND, "Batch job not found");
    };
    if job.status != JobStatus::Completed {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"status": "Invalid", "description": "Batch still in Running state"})),
        )
            .into_response();
    }
    if job.errors.is_empty() {
        return failure(StatusCode::NOT_FOUND, "No errors found");
    }
    let json = serde_json::to_vec(&job.errors).unwrap_or_default();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    if gz.write_all(&json).is_err() {
        return failure(StatusCode::INTERNAL_SERVER_ERROR, "compression failed");
    }
    let Ok(body) = gz.finish() else {
        return failure(StatusCode::INTERNAL_SERVER_ERROR, "compression failed");
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    (StatusCode::OK, headers, body).into_response()
}

// ---------------------------------------------------------------------------------------------
// Batch processing
// ---------------------------------------------------------------------------------------------

/// An error entry as the error file lists it.
fn error_entry(reason: impl Into<String>, source: Option<String>) -> Value {
    json!({"errorReason": reason.into(), "errorSource": source})
}

/// Runs a job's file against its owner: groups, then indicators, then associations (so
/// references inside one file resolve). Marks the job `Completed`.
fn process_job(inner: &mut Inner, st: &SimState, id: u64, body: &[u8]) {
    let Some(settings) = inner.jobs.get(&id).map(|j| j.settings.clone()) else {
        return;
    };
    let mut run = Run::default();
    match serde_json::from_slice::<Value>(body) {
        Err(e) => run.critical(format!(
            "{CRITICAL_EXCEPTION}. com.google.gson.JsonSyntaxException: {e}"
        )),
        Ok(file) => {
            let list = |k: &str| {
                file.get(k)
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            };
            let (groups, indicators, associations) =
                (list("group"), list("indicator"), list("association"));
            inner.stats.groups_received += groups.len() as u64;
            inner.stats.indicators_received += indicators.len() as u64;
            let total = (groups.len() + indicators.len() + associations.len()) as u64;
            if indicators.len() > st.max_indicators {
                run.critical(format!(
                    "Batch job would exceed the number of allowed indicators ({} > {})",
                    indicators.len(),
                    st.max_indicators
                ));
                run.unprocessed = total;
            } else {
                let behaviour = inner.behaviour.clone();
                let next_id = &mut inner.next_id;
                let owner = inner.owners.entry(settings.owner.clone()).or_default();
                let mut ctx = Ctx {
                    owner,
                    settings: &settings,
                    behaviour: &behaviour,
                    next_id,
                    run: &mut run,
                };
                ctx.process(&groups, &indicators, &associations);
                let done = run.success + run.counted_errors;
                run.unprocessed = total.saturating_sub(done);
            }
        }
    }
    if let Some(job) = inner.jobs.get_mut(&id) {
        job.status = JobStatus::Completed;
        job.errors = run.errors;
        job.success = run.success;
        job.unprocessed = run.unprocessed;
        job.counts = run.counts;
    }
}

/// The outcome of one job run.
#[derive(Default)]
struct Run {
    errors: Vec<Value>,
    success: u64,
    /// Items that failed (an item may have several error entries, e.g. association errors).
    counted_errors: u64,
    unprocessed: u64,
    counts: KindCounts,
    /// Set by a critical error or `haltOnError`: nothing more is processed.
    stopped: bool,
}

impl Run {
    fn critical(&mut self, reason: String) {
        self.errors
            .push(json!({"errorReason": reason, "errorSource": null, "code": "0x1004"}));
        self.stopped = true;
    }
}

struct Ctx<'a> {
    owner: &'a mut Owner,
    settings: &'a JobSettings,
    behaviour: &'a Behaviour,
    next_id: &'a mut u64,
    run: &'a mut Run,
}

impl Ctx<'_> {
    fn id(&mut self) -> u64 {
        *self.next_id += 1;
        *self.next_id
    }

    fn process(&mut self, groups: &[Value], indicators: &[Value], associations: &[Value]) {
        for (n, g) in groups.iter().enumerate() {
            if self.run.stopped {
                return;
            }
            if self.trigger_hit(g.get("name")) {
                self.run.critical(format!(
                    "{CRITICAL_EXCEPTION}. Last known JSON path: '$.group[{n}]'"
                ));
                return;
            }
            match self.group(g) {
                Ok(()) => {
                    self.run.success += 1;
                    self.run.counts.success_group_count += 1;
                }
                Err(entry) => {
                    self.run.counts.error_group_count += 1;
                    self.item_failed(entry);
                }
            }
        }
        for (n, i) in indicators.iter().enumerate() {
            if self.run.stopped {
                return;
            }
            if self.trigger_hit(i.get("summary")) {
                self.run.critical(format!(
                    "{CRITICAL_EXCEPTION}. Last known JSON path: '$.indicator[{n}]'"
                ));
                return;
            }
            match self.indicator(i) {
                Ok(()) => {
                    self.run.success += 1;
                    self.run.counts.success_indicator_count += 1;
                }
                Err(entry) => {
                    self.run.counts.error_indicator_count += 1;
                    self.item_failed(entry);
                }
            }
        }
        for a in associations {
            if self.run.stopped {
                return;
            }
            match self.association(a) {
                Ok(()) => {
                    self.run.success += 1;
                    self.run.counts.success_association_count += 1;
                }
                Err(entry) => {
                    self.run.counts.error_association_count += 1;
                    self.item_failed(entry);
                }
            }
        }
    }

    fn trigger_hit(&self, v: Option<&Value>) -> bool {
        match (&self.behaviour.critical_trigger, v.and_then(Value::as_str)) {
            (Some(t), Some(s)) => t == s,
            _ => false,
        }
    }

    fn item_failed(&mut self, entry: Value) {
        self.run.errors.push(entry);
        self.run.counted_errors += 1;
        if self.settings.halt_on_error {
            self.run.stopped = true;
        }
    }

    /// Validates and upserts a group by xid (or deletes it).
    fn group(&mut self, g: &Value) -> Result<(), Value> {
        let name = g.get("name").and_then(Value::as_str).unwrap_or_default();
        let kind = g.get("type").and_then(Value::as_str).unwrap_or_default();
        let xid = g.get("xid").and_then(Value::as_str).unwrap_or_default();
        let invalid = |what: &str| {
            error_entry(
                format!("{kind} {name} has an invalid {what}."),
                Some(format!("{name} is not valid.")),
            )
        };
        if name.trim().is_empty() || name.chars().count() > 100 {
            return Err(invalid("name"));
        }
        if xid.is_empty() {
            return Err(invalid("xid"));
        }
        if group_branch(kind).is_none() {
            return Err(invalid("type"));
        }
        let required: &[&str] = match kind {
            "Signature" => &["fileName", "fileText", "fileType"],
            "Email" => &["subject", "header", "body"],
            "Document" | "Report" => &["fileName"],
            _ => &[],
        };
        if let Some(f) = required
            .iter()
            .find(|f| g.get(**f).is_none_or(Value::is_null))
        {
            return Err(invalid(f));
        }
        if let Some(status) = g.get("status").and_then(Value::as_str) {
            let allowed: &[&str] = match kind {
                "Incident" => INCIDENT_STATUSES,
                "Event" => EVENT_STATUSES,
                _ => &[],
            };
            if !allowed.is_empty() && !allowed.contains(&status) {
                return Err(invalid("status"));
            }
        }
        if self.settings.delete {
            if let Some(old) = self.owner.groups.remove(xid) {
                self.owner.associations.retain(|(gid, _, _)| *gid != old.id);
            }
            return Ok(());
        }
        let tags = tag_names(g);
        let attributes = attributes(g);
        let fields = extra_fields(
            g,
            &[
                "name",
                "type",
                "xid",
                "tag",
                "attribute",
                "associatedGroupXid",
                "associatedIndicators",
            ],
        );
        let (attr_write, replace_tags) = (self.settings.attr_write, self.settings.replace_tags);
        let id = match self.owner.groups.get(xid) {
            Some(existing) => existing.id,
            None => self.id(),
        };
        let entry = self
            .owner
            .groups
            .entry(xid.to_string())
            .or_insert_with(|| SimGroup {
                id,
                xid: xid.to_string(),
                name: name.to_string(),
                kind: kind.to_string(),
                tags: BTreeSet::new(),
                attributes: Vec::new(),
                fields: Map::new(),
            });
        // A matching xid overwrites the group (spec §3.3).
        entry.name = name.to_string();
        entry.kind = kind.to_string();
        entry.fields.extend(fields);
        write_tags(&mut entry.tags, tags, replace_tags);
        write_attributes(&mut entry.attributes, attributes, attr_write);
        Ok(())
    }

    /// Validates and upserts an indicator by type + summary, with its associated groups and
    /// file occurrences.
    fn indicator(&mut self, i: &Value) -> Result<(), Value> {
        let kind = i.get("type").and_then(Value::as_str).unwrap_or_default();
        let raw = i.get("summary").and_then(Value::as_str).unwrap_or_default();
        let source = Some(raw.to_string());
        let summary = match validate_summary(kind, raw) {
            Ok(s) => s,
            Err(why) => {
                return Err(error_entry(
                    format!("Indicator {raw} of type {kind} is invalid: {why}"),
                    source,
                ));
            }
        };
        if self.behaviour.reject_summaries.iter().any(|r| r == raw) {
            return Err(error_entry(
                format!("Indicator {raw} was rejected by an indicator exclusion list"),
                source,
            ));
        }
        if let Some(r) = i.get("rating")
            && !r.as_f64().is_some_and(|r| (0.0..=5.0).contains(&r))
        {
            return Err(error_entry(
                format!("Indicator {raw} has an invalid rating"),
                source,
            ));
        }
        if let Some(c) = i.get("confidence")
            && c.as_u64().is_none_or(|c| c > 100)
        {
            return Err(error_entry(
                format!("Indicator {raw} has an invalid confidence"),
                source,
            ));
        }
        let occurrences = i
            .get("fileOccurrence")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if !occurrences.is_empty() && kind != "File" {
            return Err(error_entry(
                format!("Indicator {raw}: file occurrences are only valid on File indicators"),
                source,
            ));
        }
        let key = self.indicator_key(kind, &summary);
        if self.settings.delete {
            self.owner.indicators.remove(&key);
            self.owner
                .associations
                .retain(|(_, t, k)| (t, k) != (&key.0, &key.1));
            return Ok(());
        }
        self.upsert_indicator(kind, &summary, key.clone(), i, occurrences);

        // Associations: the indicator is saved even if one fails, and the error names it.
        let xids: Vec<String> = i
            .get("associatedGroups")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|g| {
                        g.get("groupXid")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default();
        for xid in xids {
            match self.owner.groups.get(&xid) {
                Some(g) => {
                    self.owner
                        .associations
                        .insert((g.id, key.0.clone(), key.1.clone()));
                }
                None => {
                    self.run.errors.push(error_entry(
                        format!("Association failed: no group with xid {xid} in this owner"),
                        Some(raw.to_string()),
                    ));
                    self.run.counts.error_association_count += 1;
                }
            }
        }
        Ok(())
    }

    /// The key an indicator is stored under: an existing File sharing a hash, else type plus
    /// normalized summary.
    fn indicator_key(&self, kind: &str, summary: &str) -> (String, String) {
        if kind == "File" {
            for hash in summary.split(" : ") {
                if let Some(k) = self.owner.file_hashes.get(hash) {
                    return k.clone();
                }
            }
        }
        (kind.to_string(), summary.to_string())
    }

    fn upsert_indicator(
        &mut self,
        kind: &str,
        summary: &str,
        key: (String, String),
        i: &Value,
        occurrences: Vec<Value>,
    ) {
        let id = match self.owner.indicators.get(&key) {
            Some(existing) => existing.id,
            None => self.id(),
        };
        let (attr_write, replace_tags) = (self.settings.attr_write, self.settings.replace_tags);
        let entry = self
            .owner
            .indicators
            .entry(key.clone())
            .or_insert_with(|| SimIndicator {
                id,
                kind: kind.to_string(),
                summary: summary.to_string(),
                rating: None,
                confidence: None,
                tags: BTreeSet::new(),
                attributes: Vec::new(),
                file_occurrences: Vec::new(),
                fields: Map::new(),
            });
        if kind == "File" {
            entry.summary = merge_hashes(&entry.summary, summary);
            for hash in entry.summary.split(" : ") {
                self.owner.file_hashes.insert(hash.to_string(), key.clone());
            }
        }
        if let Some(r) = i.get("rating").and_then(Value::as_f64) {
            entry.rating = Some(r);
        }
        if let Some(c) = i.get("confidence").and_then(Value::as_u64) {
            entry.confidence = Some(c);
        }
        entry.fields.extend(extra_fields(
            i,
            &[
                "summary",
                "type",
                "rating",
                "confidence",
                "tag",
                "attribute",
                "associatedGroups",
                "associatedIndicators",
                "fileOccurrence",
                "xid",
            ],
        ));
        write_tags(&mut entry.tags, tag_names(i), replace_tags);
        write_attributes(&mut entry.attributes, attributes(i), attr_write);
        for o in occurrences {
            if !entry.file_occurrences.contains(&o) {
                entry.file_occurrences.push(o);
            }
        }
    }

    /// An `association` entry between a group and an indicator, by ref (xid / summary) or id.
    fn association(&mut self, a: &Value) -> Result<(), Value> {
        let side = |n: u8| -> Result<Side, String> {
            let ty = a.get(format!("type_{n}")).and_then(Value::as_str);
            if let Some(id) = a.get(format!("id_{n}")).and_then(Value::as_u64) {
                return Ok(Side::Id(id));
            }
            match a.get(format!("ref_{n}")).and_then(Value::as_str) {
                Some(r) => Ok(Side::Ref(r.to_string(), ty.map(str::to_string))),
                None => Err(format!("association needs ref_{n} or id_{n}")),
            }
        };
        let source = a
            .get("ref_1")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| a.get("id_1").map(Value::to_string));
        let fail = |why: String| error_entry(format!("Association failed: {why}"), source.clone());
        let (s1, s2) = (side(1).map_err(&fail)?, side(2).map_err(&fail)?);
        let group = self.find_group(&s1).or_else(|| self.find_group(&s2));
        let indicator = self
            .find_indicator(&s1)
            .or_else(|| self.find_indicator(&s2));
        match (group, indicator) {
            (Some(gid), Some((t, k))) => {
                self.owner.associations.insert((gid, t, k));
                Ok(())
            }
            (None, _) => Err(fail("the group side was not found in this owner".into())),
            (_, None) => Err(fail(
                "the indicator side was not found in this owner".into(),
            )),
        }
    }

    fn find_group(&self, s: &Side) -> Option<u64> {
        match s {
            Side::Ref(xid, None) => self.owner.groups.get(xid).map(|g| g.id),
            Side::Id(id) => self
                .owner
                .groups
                .values()
                .find(|g| g.id == *id)
                .map(|g| g.id),
            Side::Ref(_, Some(_)) => None,
        }
    }

    fn find_indicator(&self, s: &Side) -> Option<(String, String)> {
        match s {
            Side::Ref(summary, Some(kind)) => {
                let normalized = validate_summary(kind, summary).ok()?;
                let key = self.indicator_key(kind, &normalized);
                self.owner.indicators.contains_key(&key).then_some(key)
            }
            Side::Id(id) => self
                .owner
                .indicators
                .iter()
                .find(|(_, i)| i.id == *id)
                .map(|(k, _)| k.clone()),
            Side::Ref(_, None) => None,
        }
    }
}

/// One side of an `association` entry: a ref (with `type_*` for an indicator) or an id.
enum Side {
    Ref(String, Option<String>),
    Id(u64),
}

const INCIDENT_STATUSES: &[&str] = &[
    "New",
    "Open",
    "Stalled",
    "Containment Achieved",
    "Restoration Achieved",
    "Incident Reported",
    "Closed",
    "Rejected",
    "Deleted",
];

const EVENT_STATUSES: &[&str] = &[
    "Needs Review",
    "False Positive",
    "No Further Action",
    "Escalated",
];

/// Group type -> (v2 branch, entity name in list answers).
fn group_branch(kind: &str) -> Option<(&'static str, &'static str)> {
    Some(match kind {
        "Adversary" => ("adversaries", "adversary"),
        "Attack Pattern" => ("attackPatterns", "attackPattern"),
        "Campaign" => ("campaigns", "campaign"),
        "Course of Action" => ("coursesOfAction", "courseOfAction"),
        "Document" => ("documents", "document"),
        "Email" => ("emails", "email"),
        "Event" => ("events", "event"),
        "Incident" => ("incidents", "incident"),
        "Intrusion Set" => ("intrusionSets", "intrusionSet"),
        "Malware" => ("malware", "malware"),
        "Report" => ("reports", "report"),
        "Signature" => ("signatures", "signature"),
        "Tactic" => ("tactics", "tactic"),
        "Threat" => ("threats", "threat"),
        "Tool" => ("tools", "tool"),
        "Vulnerability" => ("vulnerabilities", "vulnerability"),
        _ => return None,
    })
}

fn group_type_of_branch(branch: &str) -> Option<(&'static str, &'static str)> {
    const TYPES: &[&str] = &[
        "Adversary",
        "Attack Pattern",
        "Campaign",
        "Course of Action",
        "Document",
        "Email",
        "Event",
        "Incident",
        "Intrusion Set",
        "Malware",
        "Report",
        "Signature",
        "Tactic",
        "Threat",
        "Tool",
        "Vulnerability",
    ];
    TYPES.iter().find_map(|t| {
        let (b, entity) = group_branch(t)?;
        (b == branch).then_some((*t, entity))
    })
}

/// The server's summary rules (spec §5.1), returning the stored form: the platform is strict
/// where the spec says so (a URL's domain must be lower case) and normalizes case otherwise.
fn validate_summary(kind: &str, s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("empty summary".into());
    }
    if s != s.trim() {
        return Err("leading or trailing white space".into());
    }
    match kind {
        "Address" => match s.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) => Ok(v4.to_string()),
            Ok(IpAddr::V6(v6)) => Ok(v6
                .segments()
                .iter()
                .map(|g| format!("{g:x}"))
                .collect::<Vec<_>>()
                .join(":")),
            Err(_) => Err("not an IP address".into()),
        },
        "Host" => {
            let ok = s.split('.').all(|l| {
                !l.is_empty()
                    && l.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            });
            if ok {
                Ok(s.to_ascii_lowercase())
            } else {
                Err("not a host name".into())
            }
        }
        "EmailAddress" => match s.split_once('@') {
            Some((l, d)) if !l.is_empty() && d.contains('.') && !d.contains('@') => {
                Ok(s.to_ascii_lowercase())
            }
            _ => Err("not an email address".into()),
        },
        "URL" => {
            let (_, rest) = s.split_once("://").ok_or("no scheme")?;
            let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
            let host = host.rsplit('@').next().unwrap_or_default();
            if host.is_empty() {
                Err("no host".into())
            } else if host.chars().any(|c| c.is_ascii_uppercase()) {
                Err("the domain part of a URL must be lower case".into())
            } else {
                Ok(s.to_string())
            }
        }
        "File" => {
            let hashes: Vec<String> = s
                .split(':')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_ascii_uppercase)
                .collect();
            let ok = !hashes.is_empty()
                && hashes.len() <= 3
                && hashes.iter().all(|h| {
                    matches!(h.len(), 32 | 40 | 64) && h.chars().all(|c| c.is_ascii_hexdigit())
                });
            if ok {
                Ok(merge_hashes("", &hashes.join(" : ")))
            } else {
                Err("not md5 / sha1 / sha256 hashes".into())
            }
        }
        "ASN" => {
            let upper = s.to_ascii_uppercase();
            match upper.strip_prefix("ASN").map(str::parse::<u32>) {
                Some(Ok(_)) => Ok(upper),
                _ => Err("not an ASN".into()),
            }
        }
        "CIDR" => {
            let (ip, len) = s.split_once('/').ok_or("no prefix length")?;
            let len: u8 = len.parse().map_err(|_| "bad prefix length")?;
            let max = match ip.parse::<IpAddr>().map_err(|_| "bad address")? {
                IpAddr::V4(_) => 32,
                IpAddr::V6(_) => 128,
            };
            if len <= max {
                Ok(s.to_ascii_lowercase())
            } else {
                Err("prefix too long".into())
            }
        }
        "Registry Key" => {
            let parts: Vec<&str> = s.split(" : ").collect();
            match parts.as_slice() {
                [key, _, kind] if !key.is_empty() && kind.starts_with("REG_") => Ok(s.to_string()),
                _ => Err("expected `key : value name : value type`".into()),
            }
        }
        "Mutex" | "User Agent" | "Email Subject" | "Hashtag" => Ok(s.to_string()),
        _ => Err(format!("unknown indicator type {kind}")),
    }
}

/// Unites two File summaries: hashes by kind (length), md5 : sha1 : sha256 order.
fn merge_hashes(a: &str, b: &str) -> String {
    let mut slots: [Option<String>; 3] = [None, None, None];
    for h in a.split(" : ").chain(b.split(" : ")).map(str::trim) {
        let slot = match h.len() {
            32 => 0,
            40 => 1,
            64 => 2,
            _ => continue,
        };
        slots[slot].get_or_insert_with(|| h.to_ascii_uppercase());
    }
    slots.into_iter().flatten().collect::<Vec<_>>().join(" : ")
}

fn tag_names(v: &Value) -> Vec<String> {
    v.get("tag")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|t| t.get("name").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn attributes(v: &Value) -> Vec<Attr> {
    v.get("attribute")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| {
                    Some(Attr {
                        kind: x.get("type")?.as_str()?.to_string(),
                        value: x.get("value")?.as_str()?.to_string(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn extra_fields(v: &Value, known: &[&str]) -> Map<String, Value> {
    v.as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| !known.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Tags are case-insensitive: an incoming tag matching an existing one in another case is the
/// same tag.
fn write_tags(existing: &mut BTreeSet<String>, incoming: Vec<String>, replace: bool) {
    if replace {
        existing.clear();
    }
    for t in incoming {
        if !existing.iter().any(|e| e.eq_ignore_ascii_case(&t)) {
            existing.insert(t);
        }
    }
}

fn write_attributes(existing: &mut Vec<Attr>, incoming: Vec<Attr>, mode: AttrWrite) {
    match mode {
        AttrWrite::Append => existing.extend(incoming),
        AttrWrite::Replace => *existing = incoming,
        AttrWrite::Singleton => {
            existing.retain(|e| !incoming.iter().any(|i| i.kind == e.kind));
            existing.extend(incoming);
        }
        AttrWrite::Static => {
            if existing.is_empty() {
                *existing = incoming;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Other API routes
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Inspection routes
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

fn router(state: Shared) -> Router {
    let p = state.api_prefix.clone();
    let api = Router::new()
        .route(&format!("{p}/v2/owners"), get(owners))
        .route(&format!("{p}/v2/batch"), post(create_job))
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
        .merge(api)
        .with_state(state)
}

/// A running simulator.
#[derive(Debug)]
pub struct TcSimHandle {
    server: super::Server,
    state: Shared,
}

impl TcSimHandle {
    /// The bound address (the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://{addr}`: the root (inspection routes live under `/_sim/`).
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// `http://{addr}/api`: what `threatconnect.url` should be set to.
    pub fn api_url(&self) -> String {
        format!("http://{}{}", self.server.addr(), self.state.api_prefix)
    }

    /// The behaviour in effect.
    pub fn behaviour(&self) -> Behaviour {
        self.state.lock().behaviour.clone()
    }

    /// Changes the behaviour from now on (jobs already uploaded keep their delay).
    pub fn set_behaviour(&self, b: Behaviour) {
        self.state.lock().behaviour = b;
    }

    /// Stops accepting, lets in-flight requests finish (up to 5 s), and stops.
    pub async fn shutdown(self) -> std::io::Result<()> {
        self.server.shutdown().await
    }

    /// Serves until `signal` completes, then shuts down (for `soarjobd sim threatconnect`).
    pub async fn serve_until(
        self,
        signal: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        signal.await;
        self.shutdown().await
    }
}

/// Serves the simulator on `listen` (port 0 picks a free port).
pub async fn start(cfg: TcSimConfig, listen: SocketAddr) -> std::io::Result<TcSimHandle> {
    let state = Arc::new(SimState::new(&cfg));
    let app = router(state.clone());
    let server = super::Server::start(app, listen).await?;
    let addr = server.addr();
    tracing::info!(%addr, "ThreatConnect simulator listening");
    Ok(TcSimHandle { server, state })
}

#[cfg(test)]
mod tests {
    //! The simulator on its own, driven with raw HTTP and its own signing (not the crate's
    //! client, which is tested against the simulator in `crate::threatconnect`).
    use super::*;

    const ID: &str = "12345678901234567890";
    const SECRET: &str = "tc-test-secret-key-0123456789abcdefghijklmnopqrstuvwxyz";

    fn cfg() -> TcSimConfig {
        TcSimConfig {
            access_id: ID.into(),
            secret_key: SECRET.into(),
            tokens: vec!["APIV2:1:tok".into()],
            max_indicators_per_job: 3,
            max_upload_bytes: 4_000,
            behaviour: Behaviour {
                processing_delay_ms: 40,
                ..Behaviour::default()
            },
            ..TcSimConfig::default()
        }
    }

    async fn sim(c: TcSimConfig) -> TcSimHandle {
        start(c, "127.0.0.1:0".parse().unwrap()).await.unwrap()
    }

    fn signature(target: &str, method: &str, ts: i64) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(format!("{target}:{method}:{ts}").as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    }

    /// Sends `method target` signed over `signed_target` at `ts`.
    async fn call_as(
        h: &TcSimHandle,
        method: &str,
        target: &str,
        signed_target: &str,
        ts: i64,
        body: Option<Vec<u8>>,
    ) -> (StatusCode, Vec<u8>, HeaderMap) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = reqwest::Client::new()
            .request(m, format!("{}{target}", h.url()))
            .header(
                "Authorization",
                format!("TC {ID}:{}", signature(signed_target, method, ts)),
            )
            .header("Timestamp", ts.to_string());
        if let Some(b) = body {
            req = req.body(b);
        }
        let r = req.send().await.unwrap();
        let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
        let headers = r.headers().clone();
        (status, r.bytes().await.unwrap().to_vec(), headers)
    }

    async fn call(
        h: &TcSimHandle,
        method: &str,
        target: &str,
        body: Option<Vec<u8>>,
    ) -> (StatusCode, Value) {
        let now = chrono::Utc::now().timestamp();
        let (s, b, _) = call_as(h, method, target, target, now, body).await;
        (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
    }

    async fn inspect(h: &TcSimHandle, path: &str) -> Value {
        reqwest::get(format!("{}{path}", h.url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Creates a job, uploads `file`, and waits for `Completed`; returns the job id and status.
    async fn run_job(h: &TcSimHandle, owner: &str, file: Value) -> (u64, Value) {
        let settings = json!({"version": "V2", "owner": owner, "haltOnError": "false",
                              "action": "Create", "attributeWriteType": "Replace"});
        let (s, v) = call(
            h,
            "POST",
            "/api/v2/batch",
            Some(settings.to_string().into_bytes()),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let id = v["data"]["batchId"].as_u64().unwrap();
        let (s, v) = call(
            h,
            "POST",
            &format!("/api/v2/batch/{id}"),
            Some(file.to_string().into_bytes()),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        assert_eq!(v["status"], "Queued");
        for _ in 0..200 {
            let (_, v) = call(
                h,
                "GET",
                &format!("/api/v2/batch/{id}?includeAdditional=true"),
                None,
            )
            .await;
            if v["data"]["batchStatus"]["status"] == "Completed" {
                return (id, v["data"]["batchStatus"].clone());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("job {id} never completed");
    }

    #[test]
    fn debug_output_hides_secrets() {
        let c = cfg();
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains(SECRET) && !dbg.contains("APIV2:1:tok"),
            "{dbg}"
        );
    }

    #[tokio::test]
    async fn hmac_is_checked_over_the_target_as_received() {
        let h = sim(cfg()).await;
        let now = chrono::Utc::now().timestamp();
        let (s, _, _) = call_as(&h, "GET", "/api/v2/owners", "/api/v2/owners", now, None).await;
        assert_eq!(s, StatusCode::OK);
        // `+` and `%20` are different request-targets: signing one and sending the other fails.
        let plus = "/api/v2/groups/incidents?owner=Common+Community";
        let pct = "/api/v2/groups/incidents?owner=Common%20Community";
        assert_eq!(
            call_as(&h, "GET", plus, plus, now, None).await.0,
            StatusCode::OK
        );
        assert_eq!(
            call_as(&h, "GET", pct, pct, now, None).await.0,
            StatusCode::OK
        );
        let (s, body, _) = call_as(&h, "GET", plus, pct, now, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert!(String::from_utf8_lossy(&body).contains("Access Denied"));
        // The method is signed too.
        assert_eq!(
            call_as(&h, "POST", "/api/v2/owners", "/api/v2/owners", now, None)
                .await
                .0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        let (s, body, _) = call_as(
            &h,
            "GET",
            "/api/v2/owners",
            "/api/v2/owners",
            now - 301,
            None,
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert!(String::from_utf8_lossy(&body).contains("Timestamp out of acceptable time range"));
        assert_eq!(
            call_as(
                &h,
                "GET",
                "/api/v2/owners",
                "/api/v2/owners",
                now - 290,
                None
            )
            .await
            .0,
            StatusCode::OK
        );
        // Tokens.
        for (token, want) in [("APIV2:1:tok", 200), ("APIV2:1:nope", 401)] {
            let r = reqwest::Client::new()
                .get(format!("{}/api/v2/owners", h.url()))
                .header("Authorization", format!("TC-Token {token}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), want);
        }
        let stats = inspect(&h, "/_sim/stats").await;
        assert_eq!(stats["authFailures"], 3);
        h.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn batch_jobs_process_asynchronously_with_per_item_errors() {
        let h = sim(cfg()).await;
        let file = json!({
            "indicator": [
                {"summary": "10.0.0.1", "type": "Address", "rating": 3, "tag": [{"name": "a"}],
                 "associatedGroups": [{"groupXid": "x-1"}, {"groupXid": "missing"}]},
                {"summary": "http://Evil.example/", "type": "URL"},
            ],
            "group": [
                {"name": "Case 1", "type": "Incident", "xid": "x-1", "status": "Open"},
                {"name": "Case 2", "type": "Incident", "xid": "x-2", "status": "Sleeping"},
            ],
            "association": [{"ref_1": "10.0.0.1", "type_1": "Address", "ref_2": "x-2"}],
        });
        // Errors are not readable while the job runs.
        let settings = json!({"version": "V2", "owner": "Org", "haltOnError": false,
                              "action": "Create", "attributeWriteType": "Replace"});
        let (_, v) = call(
            &h,
            "POST",
            "/api/v2/batch",
            Some(settings.to_string().into_bytes()),
        )
        .await;
        let id = v["data"]["batchId"].as_u64().unwrap();
        assert_eq!(
            call(&h, "GET", &format!("/api/v2/batch/{id}"), None)
                .await
                .1["data"]["batchStatus"]["status"],
            "Created"
        );
        h.set_behaviour(Behaviour {
            processing_delay_ms: 400,
            ..h.behaviour()
        });
        call(
            &h,
            "POST",
            &format!("/api/v2/batch/{id}"),
            Some(file.to_string().into_bytes()),
        )
        .await;
        let (s, v) = call(&h, "GET", &format!("/api/v2/batch/{id}/errors"), None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(v["description"], "Batch still in Running state");
        h.set_behaviour(Behaviour {
            processing_delay_ms: 40,
            ..h.behaviour()
        });

        let (id2, status) = run_job(&h, "Org", file).await;
        assert_eq!(status["errorCount"], 4, "{status}");
        assert_eq!(status["successCount"], 2, "{status}");
        assert_eq!(status["errorGroupCount"], 1, "{status}");
        let now = chrono::Utc::now().timestamp();
        let target = format!("/api/v2/batch/{id2}/errors");
        let (s, body, headers) = call_as(&h, "GET", &target, &target, now, None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(headers["content-encoding"], "gzip");
        let mut json = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut json)
            .unwrap();
        let errors: Vec<Value> = serde_json::from_slice(&json).unwrap();
        let pairs: Vec<(String, String)> = errors
            .iter()
            .map(|e| {
                (
                    e["errorSource"].as_str().unwrap_or("").to_string(),
                    e["errorReason"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            pairs[0],
            (
                "Case 2 is not valid.".into(),
                "Incident Case 2 has an invalid status.".into()
            )
        );
        assert_eq!(pairs[1].0, "10.0.0.1");
        assert!(pairs[1].1.contains("missing"), "{pairs:?}");
        assert_eq!(pairs[2].0, "http://Evil.example/");
        assert!(pairs[2].1.contains("lower case"), "{pairs:?}");
        // The `association` entry to the refused group fails, named by its indicator side.
        assert_eq!(pairs[3].0, "10.0.0.1");
        assert!(pairs[3].1.starts_with("Association failed"), "{pairs:?}");
        // The association to the invalid group did not land; the one to x-1 did.
        let assocs = inspect(&h, "/_sim/owners/Org/associations").await;
        assert_eq!(assocs.as_array().unwrap().len(), 1, "{assocs}");
        assert_eq!(assocs[0]["groupName"], "Case 1");

        // A job with no errors answers 404 on /errors.
        let (id3, status) = run_job(
            &h,
            "Org",
            json!({"indicator": [{"summary": "10.0.0.1", "type": "Address"}]}),
        )
        .await;
        assert_eq!(status["errorCount"], 0);
        assert_eq!(
            call(&h, "GET", &format!("/api/v2/batch/{id3}/errors"), None)
                .await
                .0,
            StatusCode::NOT_FOUND
        );
        h.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn reruns_upsert_and_files_merge_on_shared_hashes() {
        let h = sim(cfg()).await;
        let md5 = "BE7DE2F0CF48294400C714C9E28ECD01";
        let sha256 = "B".repeat(64);
        let file = json!({
            "indicator": [
                {"summary": "evil.example", "type": "Host", "tag": [{"name": "x"}]},
                {"summary": md5, "type": "File", "fileOccurrence": [{"fileName": "a.exe"}],
                 "associatedGroups": [{"groupXid": "g"}]},
            ],
            "group": [{"name": "G", "type": "Adversary", "xid": "g"}],
        });
        run_job(&h, "Org", file.clone()).await;
        run_job(&h, "Org", file).await;
        run_job(&h, "Org", json!({"indicator": [
            {"summary": format!("{md5} : {sha256}"), "type": "File", "fileOccurrence": [{"fileName": "a.exe"}]}
        ]}))
        .await;
        let groups = inspect(&h, "/_sim/owners/Org/groups").await;
        assert_eq!(groups.as_array().unwrap().len(), 1);
        let inds = inspect(&h, "/_sim/owners/Org/indicators").await;
        assert_eq!(inds.as_array().unwrap().len(), 2, "{inds}");
        let file = inds
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["type"] == "File")
            .unwrap();
        assert_eq!(file["summary"], format!("{md5} : {sha256}"));
        assert_eq!(file["fileOccurrences"].as_array().unwrap().len(), 1);
        assert_eq!(
            inspect(&h, "/_sim/owners/Org/associations")
                .await
                .as_array()
                .unwrap()
                .len(),
            1
        );
        // Another owner is separate.
        assert_eq!(
            inspect(&h, "/_sim/owners/Other/indicators").await,
            json!([])
        );

        // The name lookup finds the group.
        let (s, v) = call(
            &h,
            "GET",
            "/api/v2/groups/adversaries?owner=Org&filters=name%3DG",
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["data"]["resultCount"], 1);
        assert_eq!(v["data"]["adversary"][0]["name"], "G");
        h.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn limits_and_critical_errors() {
        let h = sim(cfg()).await;
        let many: Vec<Value> = (1..=4)
            .map(|n| json!({"summary": format!("10.0.0.{n}"), "type": "Address"}))
            .collect();
        let (id, status) = run_job(&h, "Org", json!({"indicator": many})).await;
        assert_eq!(status["unprocessCount"], 4);
        let (_, v) = call(&h, "GET", &format!("/api/v2/batch/{id}"), None).await;
        assert_eq!(v["data"]["batchStatus"]["errorCount"], 1);
        assert_eq!(inspect(&h, "/_sim/owners/Org/indicators").await, json!([]));

        h.set_behaviour(Behaviour {
            critical_trigger: Some("boom.example".into()),
            ..h.behaviour()
        });
        let (_, status) = run_job(
            &h,
            "Org",
            json!({"indicator": [
                {"summary": "ok.example", "type": "Host"},
                {"summary": "boom.example", "type": "Host"},
                {"summary": "late.example", "type": "Host"},
            ]}),
        )
        .await;
        assert_eq!(status["successCount"], 1);
        assert_eq!(status["unprocessCount"], 2);

        // Too big an upload is refused up front.
        let settings = json!({"version": "V2", "owner": "Org", "haltOnError": false,
                              "action": "Create", "attributeWriteType": "Replace"});
        let (_, v) = call(
            &h,
            "POST",
            "/api/v2/batch",
            Some(settings.to_string().into_bytes()),
        )
        .await;
        let id = v["data"]["batchId"].as_u64().unwrap();
        let (s, v) = call(
            &h,
            "POST",
            &format!("/api/v2/batch/{id}"),
            Some(vec![b' '; 4_001]),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(
            v["description"],
            "File size greater than allowable limit of 4000"
        );

        // Settings are checked.
        let (s, _) = call(
            &h,
            "POST",
            "/api/v2/batch",
            Some(br#"{"owner":"Org"}"#.to_vec()),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        h.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn injected_faults_and_behaviour_route() {
        let h = sim(cfg()).await;
        h.set_behaviour(Behaviour {
            fail_next: vec![503, 429],
            ..h.behaviour()
        });
        assert_eq!(
            call(&h, "GET", "/api/v2/owners", None).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        let now = chrono::Utc::now().timestamp();
        let (s, _, headers) =
            call_as(&h, "GET", "/api/v2/owners", "/api/v2/owners", now, None).await;
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(headers["retry-after"], "0");
        assert_eq!(
            call(&h, "GET", "/api/v2/owners", None).await.0,
            StatusCode::OK
        );

        let r = reqwest::Client::new()
            .put(format!("{}/_sim/behaviour", h.url()))
            .json(&json!({"failBatchCreate": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 204);
        assert!(h.behaviour().fail_batch_create);
        let settings = json!({"version": "V2", "owner": "Org", "haltOnError": false,
                              "action": "Create", "attributeWriteType": "Replace"});
        let (s, _) = call(
            &h,
            "POST",
            "/api/v2/batch",
            Some(settings.to_string().into_bytes()),
        )
        .await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        let stats = inspect(&h, "/_sim/stats").await;
        assert_eq!(stats["faultsInjected"], 2);
        assert_eq!(stats["routes"]["GET /api/v2/owners"], 3);
        assert_eq!(stats["requests"], 4);
        h.shutdown().await.unwrap();
    }
}

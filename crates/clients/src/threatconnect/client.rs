//! The ThreatConnect API client: Batch API V2 (create, upload, poll, errors) and the filtered
//! group lookup, all sent through the shared transport ([`crate::http`]).
//!
//! Each request is signed just before it is handed to the transport, over the exact URL the
//! transport sends. The transport may resend it (connect failures, 429, idempotent 5xx) with
//! the same `Timestamp`; its retries last well under the server's five-minute window.

use std::io::Read as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::auth::{Auth, AuthError};
use super::config::{ConfigError, ThreatConnectConfig};
use super::types::GroupType;
use crate::http::{self, BuildError, HttpClient, HttpConfig, HttpError, Request, Response};

/// Why a ThreatConnect call failed. No variant carries a secret: transport errors name the
/// method and path only, and server descriptions never echo credentials.
#[derive(Debug, thiserror::Error)]
pub enum TcError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("cannot build the ThreatConnect HTTP client: {0}")]
    Build(#[from] BuildError),
    #[error(transparent)]
    Http(#[from] HttpError),
    /// A 2xx answer whose envelope says something other than success.
    #[error("{operation}: ThreatConnect answered status {status:?}: {message}")]
    Api {
        operation: &'static str,
        status: String,
        message: String,
    },
    /// The batch job did not complete in time; it may still complete later.
    #[error(
        "batch job {batch_id} did not complete within {}s (last status: {last_status})",
        waited.as_secs()
    )]
    PollTimeout {
        batch_id: u64,
        waited: Duration,
        last_status: String,
    },
    #[error("batch job {batch_id}: cannot read the error file: {reason}")]
    ErrorFile { batch_id: u64, reason: String },
    #[error("cancelled while waiting for ThreatConnect")]
    Cancelled,
}

/// What to do with the data of a batch job (`action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub enum BatchAction {
    /// Create new items and update existing ones.
    #[default]
    Create,
    /// Delete the matching items.
    Delete,
}

/// How incoming attributes combine with existing ones (`attributeWriteType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub enum AttributeWriteType {
    /// Add all incoming attributes (re-runs duplicate them).
    Append,
    /// Replace all attributes with the incoming ones.
    Replace,
    /// Replace only attributes of the incoming types: re-runs do not duplicate, and an item
    /// sent without attributes keeps the ones it has. The writer's default.
    #[default]
    Singleton,
    /// Keep existing attributes, ignore incoming ones.
    Static,
}

/// How incoming tags combine with existing ones (`tagWriteType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub enum TagWriteType {
    /// Add incoming tags to existing ones (tags are a set, so re-runs do not duplicate). The
    /// writer's default: an item sent without tags keeps the ones it has.
    #[default]
    Append,
    /// Replace all tags with the incoming ones.
    Replace,
}

/// The settings of a batch job (body of `POST /v2/batch`). Always `V2`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchSettings {
    version: &'static str,
    pub owner: String,
    /// Off by default: one bad item must not stop the others (the writer reports per item).
    pub halt_on_error: bool,
    pub action: BatchAction,
    pub attribute_write_type: AttributeWriteType,
    pub tag_write_type: TagWriteType,
}

impl BatchSettings {
    pub fn new(owner: impl Into<String>) -> BatchSettings {
        BatchSettings {
            version: "V2",
            owner: owner.into(),
            halt_on_error: false,
            action: BatchAction::Create,
            attribute_write_type: AttributeWriteType::default(),
            tag_write_type: TagWriteType::default(),
        }
    }
}

/// A batch job's state (`data.batchStatus`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchStatus {
    #[serde(default)]
    pub id: Option<u64>,
    /// `Created`, `Queued`, `Running` or `Completed`.
    pub status: String,
    #[serde(default)]
    pub error_count: u64,
    #[serde(default)]
    pub success_count: u64,
    #[serde(default)]
    pub unprocess_count: u64,
    /// The per-kind counts of `includeAdditional=true` (names vary by version).
    #[serde(flatten)]
    pub additional: serde_json::Map<String, Value>,
}

impl BatchStatus {
    pub fn is_completed(&self) -> bool {
        self.status.eq_ignore_ascii_case("Completed")
    }
}

/// One entry of a job's error file. Both fields may be missing or `null`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct BatchErrorEntry {
    #[serde(default)]
    pub error_reason: Option<String>,
    #[serde(default)]
    pub error_source: Option<String>,
    /// Some versions carry the detail here (`/results` items do).
    #[serde(default)]
    pub error_message: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
}

/// A group found by [`ThreatConnectClient::find_groups`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GroupRef {
    pub id: u64,
    pub name: String,
}

/// The answer of `GET /v2/batch/{id}/errors`.
#[derive(Debug, Clone, PartialEq)]
enum ErrorFile {
    Entries(Vec<BatchErrorEntry>),
    /// 404: the job has no errors.
    None,
    /// 400 "still in Running state": ask again later.
    StillRunning,
}

/// Poll pacing for batch jobs.
#[derive(Debug, Clone, Copy)]
struct PollSettings {
    initial: Duration,
    interval_max: Duration,
    max: Duration,
}

/// The answer to a forwarded request ([`ThreatConnectClient::forward`]), as the server gave it.
#[derive(Debug, Clone)]
pub struct Forwarded {
    pub status: u16,
    pub content_type: Option<HeaderValue>,
    pub content_encoding: Option<HeaderValue>,
    pub body: Bytes,
}

/// The ThreatConnect client. Cheap to clone; clones share the transport and its limits.
#[derive(Clone)]
pub struct ThreatConnectClient {
    http: HttpClient,
    base: Url,
    auth: Arc<Auth>,
    poll: PollSettings,
    max_indicators_per_job: usize,
    max_upload_bytes: usize,
    requests: Arc<AtomicUsize>,
}

impl std::fmt::Debug for ThreatConnectClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreatConnectClient")
            .field("base", &self.base.as_str())
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl ThreatConnectClient {
    /// Builds a client from a checked config (reads secret files now, so a missing file fails
    /// at start-up, not at the first request).
    pub fn new(cfg: &ThreatConnectConfig) -> Result<ThreatConnectClient, TcError> {
        cfg.validate()?;
        let base = cfg.base_url()?;
        let auth = cfg.auth()?;
        let mut default_headers = reqwest::header::HeaderMap::new();
        default_headers.insert(
            reqwest::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        let http = HttpClient::new(HttpConfig {
            timeout: cfg.timeout,
            verify_tls: cfg.verify_tls,
            max_concurrency: cfg.max_concurrency,
            rate_limit: cfg.rate_limit,
            default_headers,
            platform: "threatconnect",
            ..HttpConfig::default()
        })?;
        Ok(ThreatConnectClient {
            http,
            base,
            auth: Arc::new(auth),
            poll: PollSettings {
                initial: cfg.poll_initial,
                interval_max: cfg.poll_interval_max.max(cfg.poll_initial),
                max: cfg.poll_max,
            },
            max_indicators_per_job: cfg.max_indicators_per_job,
            max_upload_bytes: cfg.max_upload_bytes,
            requests: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Most indicators per batch job (configured).
    pub fn max_indicators_per_job(&self) -> usize {
        self.max_indicators_per_job
    }

    /// Largest upload in bytes (configured).
    pub fn max_upload_bytes(&self) -> usize {
        self.max_upload_bytes
    }

    /// How long a batch job may take before it is given up (configured `poll_max`).
    pub fn poll_max(&self) -> Duration {
        self.poll.max
    }

    /// Logical requests sent by this client and its clones (transport retries not counted).
    pub fn requests_sent(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    /// `POST /v2/batch`: creates a batch job and returns its id.
    pub async fn create_batch(&self, settings: &BatchSettings) -> Result<u64, TcError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Created {
            batch_id: u64,
        }
        let url = self.url("/v2/batch", &[]);
        let path = url.path().to_string();
        let req = Request::json(Method::POST, url, settings)?;
        let resp = self.send(req).await?;
        let created: Created = envelope_data(&resp, &Method::POST, &path, "create batch job")?;
        Ok(created.batch_id)
    }

    /// `POST /v2/batch/{id}`: uploads the job's input file (plain JSON as octet-stream).
    pub async fn upload_batch(&self, batch_id: u64, content: Bytes) -> Result<(), TcError> {
        let url = self.url(&format!("/v2/batch/{batch_id}"), &[]);
        let mut req = Request::new(Method::POST, url);
        req.headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        req.body = Some(content);
        let resp = self.send(req).await?;
        // The docs answer `{"status":"Queued"}`; a 2xx that says Invalid/Failure is a refusal.
        let v: Option<Value> = resp.json().unwrap_or(None);
        match v
            .as_ref()
            .and_then(|v| v.get("status"))
            .and_then(Value::as_str)
        {
            Some(s) if is_refusal(s) => Err(TcError::Api {
                operation: "upload batch file",
                status: s.to_string(),
                message: description(v.as_ref()),
            }),
            _ => Ok(()),
        }
    }

    /// `GET /v2/batch/{id}?includeAdditional=true`. An answer without `batchStatus` (the docs'
    /// bare `{"status":"Running"}`) is read as that status.
    pub async fn batch_status(&self, batch_id: u64) -> Result<BatchStatus, TcError> {
        let url = self.url(
            &format!("/v2/batch/{batch_id}"),
            &[("includeAdditional", "true")],
        );
        let path = url.path().to_string();
        let resp = self.send(Request::get(url)).await?;
        let mut v: Value = resp.json()?;
        if let Some(status) = v.pointer_mut("/data/batchStatus") {
            return decode_value(status.take(), &Method::GET, &path, "data.batchStatus");
        }
        match v.get("status").and_then(Value::as_str) {
            Some(s) if !is_refusal(s) && !s.eq_ignore_ascii_case("Success") => Ok(BatchStatus {
                id: Some(batch_id),
                status: s.to_string(),
                error_count: 0,
                success_count: 0,
                unprocess_count: 0,
                additional: serde_json::Map::new(),
            }),
            s => Err(TcError::Api {
                operation: "batch status",
                status: s.unwrap_or("<none>").to_string(),
                message: description(Some(&v)),
            }),
        }
    }

    /// Polls a job until it is `Completed`, waiting `poll_initial` first and then longer and
    /// longer (x1.5, up to `poll_interval_max`). Gives up once `poll_max` has passed since
    /// `started` (wall-clock, request time included). Transient poll failures are tolerated
    /// until then; auth and "not found" answers are not.
    pub async fn wait_for_batch(
        &self,
        batch_id: u64,
        started: Instant,
        cancel: &CancellationToken,
    ) -> Result<BatchStatus, TcError> {
        let deadline = started + self.poll.max;
        let mut delay = self.poll.initial;
        let mut last_status = String::from("not polled yet");
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(TcError::PollTimeout {
                    batch_id,
                    waited: now - started,
                    last_status,
                });
            }
            // The last wait is cut so one final poll happens right at the deadline.
            sleep_or_cancel(delay.min(deadline - now), cancel).await?;
            match self.batch_status(batch_id).await {
                Ok(s) if s.is_completed() => return Ok(s),
                Ok(s) => {
                    tracing::debug!(batch_id, status = %s.status, "batch job not completed yet");
                    last_status = s.status;
                }
                Err(TcError::Http(e)) if is_transient(&e) => {
                    tracing::warn!(batch_id, error = %e, "batch status poll failed; polling on");
                    last_status = format!("poll failed: {e}");
                }
                Err(e) => return Err(e),
            }
            delay = delay.mul_f64(1.5).min(self.poll.interval_max);
        }
    }

    /// Fetches a completed job's error entries (empty if it has none). A "still running" answer
    /// is asked again at the poll pace until `deadline`.
    pub async fn batch_errors(
        &self,
        batch_id: u64,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<Vec<BatchErrorEntry>, TcError> {
        let mut delay = self.poll.initial;
        loop {
            match self.error_file(batch_id).await? {
                ErrorFile::Entries(e) => return Ok(e),
                ErrorFile::None => return Ok(Vec::new()),
                ErrorFile::StillRunning => {}
            }
            let now = Instant::now();
            if now + delay > deadline {
                return Err(TcError::ErrorFile {
                    batch_id,
                    reason: "the server still reports the job as running".into(),
                });
            }
            sleep_or_cancel(delay, cancel).await?;
            delay = delay.mul_f64(1.5).min(self.poll.interval_max);
        }
    }

    /// One `GET /v2/batch/{id}/errors`. The body is gzip JSON (whatever the content type says),
    /// or plain JSON if a proxy already decoded it.
    async fn error_file(&self, batch_id: u64) -> Result<ErrorFile, TcError> {
        let url = self.url(&format!("/v2/batch/{batch_id}/errors"), &[]);
        let path = url.path().to_string();
        let resp = match self.send(Request::get(url)).await {
            Ok(r) => r,
            Err(TcError::Http(HttpError::NotFound { .. })) => return Ok(ErrorFile::None),
            Err(TcError::Http(HttpError::Rejected { status, body, .. }))
                if status == StatusCode::BAD_REQUEST && body.to_lowercase().contains("running") =>
            {
                return Ok(ErrorFile::StillRunning);
            }
            Err(e) => return Err(e),
        };
        let raw = gunzip_if_needed(&resp.body).map_err(|e| TcError::ErrorFile {
            batch_id,
            reason: format!("bad gzip data: {e}"),
        })?;
        let entries: Option<Vec<BatchErrorEntry>> = http::decode_json(&Method::GET, &path, &raw)
            .map_err(|e| TcError::ErrorFile {
                batch_id,
                reason: e.to_string(),
            })?;
        Ok(ErrorFile::Entries(entries.unwrap_or_default()))
    }

    /// `GET /v2/groups/{branch}?owner=…&filters=name=…`: the groups of `group_type` in `owner`
    /// named exactly `name` (the server filter is a hint; names are compared again here).
    pub async fn find_groups(
        &self,
        owner: &str,
        group_type: GroupType,
        name: &str,
    ) -> Result<Vec<GroupRef>, TcError> {
        let filter = format!("name={name}");
        let url = self.url(
            &format!("/v2/groups/{}", group_type.branch()),
            &[
                ("owner", owner),
                ("filters", &filter),
                ("resultLimit", "500"),
                ("createActivityLog", "false"),
            ],
        );
        let path = url.path().to_string();
        let resp = self.send(Request::get(url)).await?;
        let mut data: serde_json::Map<String, Value> =
            envelope_data(&resp, &Method::GET, &path, "find groups")?;
        // The list sits under the type's entity name (`incident`, `adversary`, ...): take the
        // one array in `data` rather than keep a second table of entity names.
        let Some((key, list)) = data.iter_mut().find(|(_, v)| v.is_array()) else {
            return Ok(Vec::new());
        };
        let json_path = format!("data.{key}");
        let groups: Vec<GroupRef> = decode_value(list.take(), &Method::GET, &path, &json_path)?;
        Ok(groups.into_iter().filter(|g| g.name == name).collect())
    }

    /// `{base}{path}?{query}`: the base's own path (`/api`) is kept.
    fn url(&self, path: &str, query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        let joined = format!("{}{path}", self.base.path().trim_end_matches('/'));
        url.set_path(&joined);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// Sends a request a TcEx app made (`path` after the API root, e.g. `/v2/batch/createAndUpload`,
    /// `query` as it came, byte for byte), with this client's credentials, through the
    /// transport policy: the concurrency cap and rate limit, and retries of reads only (a write
    /// is never resent blindly). Every answer comes back as it is (status, `Content-Type`,
    /// `Content-Encoding`, body); `Err` only when there was none.
    pub async fn forward(
        &self,
        method: Method,
        path: &str,
        query: Option<&str>,
        content_type: Option<HeaderValue>,
        body: Bytes,
    ) -> Result<Forwarded, TcError> {
        let mut url = self.base.clone();
        url.set_path(&format!("{}{path}", self.base.path().trim_end_matches('/')));
        url.set_query(query);
        let idempotent = matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
        let mut req = Request::new(method, url).idempotent(idempotent);
        if let Some(ct) = content_type {
            req.headers.insert(CONTENT_TYPE, ct);
        }
        if !body.is_empty() {
            req.body = Some(body);
        }
        let timestamp = chrono::Utc::now().timestamp();
        let auth = self.auth.headers(&req.method, &req.url, timestamp)?;
        req.headers.extend(auth);
        self.requests.fetch_add(1, Ordering::Relaxed);
        let resp = self.http.send_answered(req).await?;
        let header = |n: reqwest::header::HeaderName| resp.headers.get(n).cloned();
        Ok(Forwarded {
            status: resp.status.as_u16(),
            content_type: header(CONTENT_TYPE),
            content_encoding: header(reqwest::header::CONTENT_ENCODING),
            body: resp.body.clone(),
        })
    }

    /// Signs `req` over its final URL and sends it through the shared transport.
    async fn send(&self, mut req: Request) -> Result<Response, TcError> {
        let timestamp = chrono::Utc::now().timestamp();
        let auth = self.auth.headers(&req.method, &req.url, timestamp)?;
        req.headers.extend(auth);
        self.requests.fetch_add(1, Ordering::Relaxed);
        Ok(self.http.send(req).await?)
    }
}

/// `data` of a v2 envelope `{"status":"Success","data":{…}}`.
fn envelope_data<T: serde::de::DeserializeOwned>(
    resp: &Response,
    method: &Method,
    path: &str,
    operation: &'static str,
) -> Result<T, TcError> {
    let mut v: Value = resp.json()?;
    let status = v.get("status").and_then(Value::as_str).unwrap_or("<none>");
    if !status.eq_ignore_ascii_case("Success") {
        return Err(TcError::Api {
            operation,
            status: status.to_string(),
            message: description(Some(&v)),
        });
    }
    let data = v.get_mut("data").map(Value::take).unwrap_or(Value::Null);
    decode_value(data, method, path, "data")
}

/// Decodes part of an answer, naming the JSON path (under `at`) of the first mismatch.
fn decode_value<T: serde::de::DeserializeOwned>(
    v: Value,
    method: &Method,
    path: &str,
    at: &str,
) -> Result<T, TcError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let inner = e.path().to_string();
        TcError::Http(HttpError::BadResponse {
            method: method.clone(),
            path: path.to_string(),
            json_path: if inner == "." {
                at.to_string()
            } else {
                format!("{at}.{inner}")
            },
            reason: e.into_inner().to_string(),
        })
    })
}

fn is_refusal(status: &str) -> bool {
    ["Invalid", "Failure", "Error"]
        .iter()
        .any(|r| status.eq_ignore_ascii_case(r))
}

/// The server's explanation in an envelope (`description` or `message`).
fn description(v: Option<&Value>) -> String {
    v.and_then(|v| v.get("description").or_else(|| v.get("message")))
        .and_then(Value::as_str)
        .unwrap_or("no description")
        .to_string()
}

/// Failures worth polling past: the job's state is unaffected by a lost status request.
fn is_transient(e: &HttpError) -> bool {
    matches!(
        e,
        HttpError::Transport { .. } | HttpError::Server { .. } | HttpError::RateLimited { .. }
    )
}

async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) -> Result<(), TcError> {
    tokio::select! {
        _ = tokio::time::sleep(d) => Ok(()),
        _ = cancel.cancelled() => Err(TcError::Cancelled),
    }
}

/// Decodes gzip data (magic `1f 8b`); anything else is returned as it is.
fn gunzip_if_needed(body: &[u8]) -> std::io::Result<Vec<u8>> {
    if body.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(body).read_to_end(&mut out)?;
        Ok(out)
    } else {
        Ok(body.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn urls_keep_the_base_path_and_encode_queries() {
        let mut cfg = ThreatConnectConfig::new("https://tc.example/api/");
        cfg.token = Some("t".to_string().into());
        let c = ThreatConnectClient::new(&cfg).unwrap();
        assert_eq!(
            c.url("/v2/batch/7", &[]).as_str(),
            "https://tc.example/api/v2/batch/7"
        );
        let u = c.url(
            "/v2/groups/incidents",
            &[("owner", "My Org"), ("filters", "name=A&B")],
        );
        assert_eq!(u.path(), "/api/v2/groups/incidents");
        assert_eq!(u.query(), Some("owner=My+Org&filters=name%3DA%26B"));
    }

    #[test]
    fn settings_serialize_as_v2() {
        let s = serde_json::to_value(BatchSettings::new("Org")).unwrap();
        assert_eq!(
            s,
            serde_json::json!({"version":"V2","owner":"Org","haltOnError":false,
                "action":"Create","attributeWriteType":"Singleton","tagWriteType":"Append"})
        );
    }

    #[test]
    fn gzip_and_plain_error_files_decode() {
        let json = br#"[{"errorReason":"r","errorSource":"s"}]"#;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(json).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(gunzip_if_needed(&gz).unwrap(), json);
        assert_eq!(gunzip_if_needed(json).unwrap(), json);
        assert!(gunzip_if_needed(&[0x1f, 0x8b, 0, 1]).is_err());
    }

    #[test]
    fn debug_hides_credentials() {
        let mut cfg = ThreatConnectConfig::new("https://tc.example/api");
        cfg.access_id = Some("my-access-id".into());
        cfg.secret_key = Some("very-secret-key".to_string().into());
        let c = ThreatConnectClient::new(&cfg).unwrap();
        let dbg = format!("{c:?}");
        assert!(
            dbg.contains("my-access-id") && !dbg.contains("very-secret-key"),
            "{dbg}"
        );
    }
}

//! [`SoarClient`]: the SDK calls a job needs, over the shared [`crate::http`] policy.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use reqwest::Method;
use reqwest::header::{AUTHORIZATION, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use url::Url;

use super::SoarError;
use super::config::{ApiFlavor, SoarConfig, read_secret_file, roots};
use super::filter::CaseFilter;
use super::model::{CaseComment, CaseDetails, CaseIdWire, IdText};
use crate::http::{self, HttpClient, HttpConfig, Request, RetryPolicy};

/// The header carrying the SOAR API key. HTTP header names are case-insensitive and HTTP/1
/// clients send them lower-cased, so `appkey` on the wire is the SDK's `AppKey`.
pub const APP_KEY_HEADER: &str = "appkey";

/// Python's spelling of a boolean, as the SDK puts it into URLs.
fn py_bool(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

/// Which time a comment filter looks at (`spec.timeFilterType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommentTimeField {
    /// `0`
    Creation,
    /// `1` (what TIPCommon's sync jobs use)
    Modification,
}

/// Only comments created/modified at or after `from_ms` (FetchCaseComments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommentsSince {
    pub field: CommentTimeField,
    pub from_ms: i64,
}

/// The endpoints this client calls; [`SoarClient::url`] maps each to its legacy or 1P URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    GetCasesIdByFilter,
    AlertsTicketIdsByCaseId {
        case_id: u64,
    },
    CaseFullDetails {
        case_id: u64,
        populate_original_file: bool,
    },
    GetCaseComments {
        case_id: u64,
    },
    AddTag,
    /// Always the legacy URL, also in 1P mode (the SDK has no 1P mapping).
    AddComment,
    /// Always the legacy URL, also in 1P mode.
    FetchCaseComments {
        case_id: u64,
        since: Option<CommentsSince>,
    },
}

/// Where the 1P bearer token comes from when it is not a fixed value.
struct BearerFile {
    path: PathBuf,
    /// The file's modification time and the header built from it, so the file is re-read only
    /// when an external refresher rewrote it.
    cache: Mutex<Option<(Option<SystemTime>, HeaderValue)>>,
}

impl BearerFile {
    fn header(&self) -> Result<HeaderValue, SoarError> {
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((seen, value)) = cache.as_ref()
            && *seen == mtime
            && mtime.is_some()
        {
            return Ok(value.clone());
        }
        let token = read_secret_file("bearer_token", &self.path)?;
        let value = bearer_header(&token)?;
        *cache = Some((mtime, value.clone()));
        Ok(value)
    }
}

fn bearer_header(token: &SecretString) -> Result<HeaderValue, SoarError> {
    let full = SecretString::from(format!("Bearer {}", token.expose_secret()));
    http::sensitive_header(&full).map_err(|e| SoarError::Config(format!("soar.bearer_token: {e}")))
}

struct Inner {
    http: HttpClient,
    /// `soar.timeout`: the longest one request attempt may take.
    request_timeout: std::time::Duration,
    /// `soar.max_concurrency`: requests in flight through this client, all jobs together.
    max_concurrency: usize,
    api: ApiFlavor,
    /// `{url}/api/` — legacy SDK controller and the comments endpoints.
    api_root: Url,
    /// `{1p root}/v1alpha/projects/{p}/locations/{l}/instances/{i}/` in 1P mode.
    op_base: Option<Url>,
    bearer_file: Option<BearerFile>,
}

/// The SecOps SOAR client. Cheap to clone: clones share the connection pool, the concurrency
/// cap and the rate limit, so one client per platform bounds all jobs together.
#[derive(Clone)]
pub struct SoarClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for SoarClient {
    /// Only the public parts: secrets live in the HTTP client's headers and are never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoarClient")
            .field("api", &self.inner.api)
            .field("api_root", &self.inner.api_root.as_str())
            .finish_non_exhaustive()
    }
}

impl SoarClient {
    /// Validates the config, reads secret files, and builds the transport.
    pub fn new(cfg: &SoarConfig) -> Result<SoarClient, SoarError> {
        SoarClient::with_retry(cfg, RetryPolicy::default())
    }

    /// As [`SoarClient::new`] with a custom retry policy (tests use tiny delays).
    pub fn with_retry(cfg: &SoarConfig, retry: RetryPolicy) -> Result<SoarClient, SoarError> {
        let (api_root, op_root) = roots(cfg)?;
        let app_key = cfg.resolve_app_key()?;

        let mut headers = http::json_headers();
        if let Some(key) = &app_key {
            let v = http::sensitive_header(key)
                .map_err(|e| SoarError::Config(format!("soar.app_key: {e}")))?;
            headers.insert(HeaderName::from_static(APP_KEY_HEADER), v);
        }

        let mut op_base = None;
        let mut bearer_file = None;
        match cfg.api {
            ApiFlavor::Legacy => {
                // A bearer token is ignored here: the SDK sends it only in 1P mode.
                if app_key.is_none() {
                    return Err(SoarError::Config(
                        "soar.app_key or soar.app_key_file is required (the legacy API \
                         authenticates with the AppKey header)"
                            .into(),
                    ));
                }
            }
            ApiFlavor::OnePlatform => {
                op_base = Some(one_platform_base(cfg, &op_root)?);
                match (&cfg.bearer_token, &cfg.bearer_token_file) {
                    (Some(_), Some(_)) => {
                        return Err(SoarError::Config(
                            "set soar.bearer_token or soar.bearer_token_file, not both".into(),
                        ));
                    }
                    (Some(t), None) => {
                        headers.insert(AUTHORIZATION, bearer_header(t)?);
                    }
                    (None, Some(path)) => {
                        let f = BearerFile {
                            path: path.clone(),
                            cache: Mutex::new(None),
                        };
                        // Fail at startup, not on the first call, if the file is unreadable.
                        f.header()?;
                        bearer_file = Some(f);
                    }
                    (None, None) => {
                        return Err(SoarError::Config(
                            "soar.bearer_token or soar.bearer_token_file is required for \
                             api: one_platform"
                                .into(),
                        ));
                    }
                }
            }
        }

        let http = HttpClient::new(HttpConfig {
            connect_timeout: cfg.connect_timeout,
            timeout: cfg.timeout,
            verify_tls: cfg.verify_tls,
            max_concurrency: cfg.max_concurrency,
            rate_limit: cfg.rate_limit,
            retry,
            default_headers: headers,
            platform: "soar",
        })
        .map_err(|e| SoarError::Config(e.to_string()))?;

        Ok(SoarClient {
            inner: Arc::new(Inner {
                http,
                request_timeout: cfg.timeout,
                max_concurrency: cfg.max_concurrency,
                api: cfg.api,
                api_root,
                op_base,
                bearer_file,
            }),
        })
    }

    pub fn api(&self) -> ApiFlavor {
        self.inner.api
    }

    /// The longest one request attempt may take (`soar.timeout`).
    pub fn request_timeout(&self) -> std::time::Duration {
        self.inner.request_timeout
    }

    /// The most requests in flight through this client, shared by every job
    /// (`soar.max_concurrency`): a job handling more cases at once than this only queues.
    pub fn max_concurrency(&self) -> usize {
        self.inner.max_concurrency
    }

    /// The full URL of `ep` in this client's API flavor (spec §2).
    pub fn url(&self, ep: Endpoint) -> Url {
        build_url(&self.inner.api_root, self.inner.op_base.as_ref(), ep)
    }

    /// GetCasesIdByFilter: ids of the cases matching `filter` (at most 10,000 per call). The
    /// filter is validated as the SDK does before anything is sent.
    pub async fn get_cases_ids_by_filter(
        &self,
        filter: &CaseFilter,
    ) -> Result<Vec<u64>, SoarError> {
        let body = filter.to_body(chrono::Utc::now().timestamp_millis())?;
        // A search: safe to resend, so it is retried like a GET.
        let ids: Vec<CaseIdWire> = self
            .post(Endpoint::GetCasesIdByFilter, &body, true)
            .await?
            .json()?;
        Ok(ids.into_iter().map(|c| c.0).collect())
    }

    /// AlertsTicketIdsByCaseId: the case's distinct alert ticket ids (numbers become text).
    pub async fn get_alerts_ticket_ids_by_case_id(
        &self,
        case_id: u64,
    ) -> Result<Vec<String>, SoarError> {
        let ids: Vec<IdText> = self
            .get(Endpoint::AlertsTicketIdsByCaseId { case_id })
            .await?
            .json()?;
        Ok(ids.into_iter().map(|i| i.0).collect())
    }

    /// CaseFullDetails: the case with its alerts and their entities.
    pub async fn get_case_full_details(
        &self,
        case_id: u64,
        populate_original_file: bool,
    ) -> Result<CaseDetails, SoarError> {
        Ok(self
            .get(Endpoint::CaseFullDetails {
                case_id,
                populate_original_file,
            })
            .await?
            .json()?)
    }

    /// AddComment. Not idempotent: a timeout after sending or a 5xx gives
    /// [`SoarError::is_in_doubt`], and the caller must read the case's comments before trying
    /// again; [`SoarError::write_fate`] says whether that read is conclusive at once (the
    /// server answered `500`) or only after the write had time to settle (no answer).
    pub async fn add_comment(
        &self,
        case_id: u64,
        alert_identifier: Option<&str>,
        comment: &str,
    ) -> Result<(), SoarError> {
        #[derive(Serialize)]
        struct Body<'a> {
            case_id: u64,
            alert_identifier: Option<&'a str>,
            comment: &'a str,
        }
        let body = Body {
            case_id,
            alert_identifier,
            comment,
        };
        self.post(Endpoint::AddComment, &body, false).await?;
        Ok(())
    }

    /// FetchCaseComments (`GET external/v1/cases/comments`), optionally only recent ones.
    pub async fn fetch_case_comments(
        &self,
        case_id: u64,
        since: Option<CommentsSince>,
    ) -> Result<Vec<CaseComment>, SoarError> {
        let v: Option<Vec<CaseComment>> = self
            .get(Endpoint::FetchCaseComments { case_id, since })
            .await?
            .json()?;
        Ok(v.unwrap_or_default())
    }

    /// GetCaseComments (SDK controller).
    pub async fn get_case_comments(&self, case_id: u64) -> Result<Vec<CaseComment>, SoarError> {
        let v: Option<Vec<CaseComment>> = self
            .get(Endpoint::GetCaseComments { case_id })
            .await?
            .json()?;
        Ok(v.unwrap_or_default())
    }

    /// AddTag. Adding a tag the case already has changes nothing, so it is retried like a read.
    pub async fn add_tag(
        &self,
        case_id: u64,
        alert_identifier: Option<&str>,
        tag: &str,
    ) -> Result<(), SoarError> {
        #[derive(Serialize)]
        struct Body<'a> {
            case_id: u64,
            alert_identifier: Option<&'a str>,
            tag: &'a str,
        }
        let body = Body {
            case_id,
            alert_identifier,
            tag,
        };
        self.post(Endpoint::AddTag, &body, true).await?;
        Ok(())
    }

    async fn get(&self, ep: Endpoint) -> Result<http::Response, SoarError> {
        self.send(Request::get(self.url(ep))).await
    }

    async fn post<B: Serialize>(
        &self,
        ep: Endpoint,
        body: &B,
        idempotent: bool,
    ) -> Result<http::Response, SoarError> {
        let req = Request::json(Method::POST, self.url(ep), body)?.idempotent(idempotent);
        self.send(req).await
    }

    async fn send(&self, mut req: Request) -> Result<http::Response, SoarError> {
        if let Some(f) = &self.inner.bearer_file {
            req.headers.insert(AUTHORIZATION, f.header()?);
        }
        tracing::debug!(method = %req.method, path = req.url.path(), "soar request");
        Ok(self.inner.http.send(req).await?)
    }
}

/// The answer to a forwarded request, whatever its status: the script sees what the platform
/// said (or a 502 naming why there was no answer).
#[derive(Debug, Clone)]
pub struct Forwarded {
    pub status: u16,
    pub body: bytes::Bytes,
}

impl SoarClient {
    /// Sends a request a SecOps script made (`path_and_query` after `/api/`, e.g.
    /// `external/v1/sdk/AddTag?format=snake`) with this client's credentials, through the
    /// transport policy. In one-platform mode the SDK controller paths are translated to their
    /// 1P form (spec §2); the comments endpoints stay legacy, as in the SDK. Reads (GET, the
    /// case search) are retried; other writes are not, except AddTag (idempotent).
    pub async fn forward(
        &self,
        method: Method,
        path_and_query: &str,
        body: bytes::Bytes,
    ) -> Forwarded {
        self.forward_as(method, path_and_query, body, None).await
    }

    /// `GetContextProperty` (soar-api.md §3.8) as the platform answers it: `204` when not
    /// set, `200` with the value as stored (JSON), any other status as it came.
    pub async fn get_context_property(
        &self,
        context_type: i64,
        identifier: &str,
        key: &str,
    ) -> Forwarded {
        let body = serde_json::json!({
            "ContextType": context_type,
            "Identifier": identifier,
            "PropertyKey": key,
        });
        let body = bytes::Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
        self.forward(Method::POST, "external/v1/sdk/GetContextProperty", body)
            .await
    }

    /// [`forward`](Self::forward), with the script's own `Authorization` (a bearer token it
    /// obtained by logging in through the gateway) sent as it came, in addition to the
    /// client's credentials. Path segments arrive percent-encoded (as on the wire) and are
    /// sent encoded once: `x%20y` stays `x%20y`. Whatever the platform answered is handed on
    /// as it came (status and body, a `500` included); a `502` only when no answer came.
    pub async fn forward_as(
        &self,
        method: Method,
        path_and_query: &str,
        body: bytes::Bytes,
        authorization: Option<HeaderValue>,
    ) -> Forwarded {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let decoded: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(percent_decode)
            .collect();
        let segs: Vec<&str> = decoded.iter().map(String::as_str).collect();
        if segs.len() < 2
            || segs[..2] != ["external", "v1"]
            || segs.iter().any(|s| *s == ".." || *s == "." || s.is_empty())
        {
            return Forwarded {
                status: 404,
                body: bytes::Bytes::from_static(b"not an external/v1 path"),
            };
        }
        let url = match (&self.inner.op_base, segs.get(2)) {
            (Some(base), Some(&"sdk")) if segs.len() >= 4 => {
                one_platform_url(base, &segs[3..], query)
            }
            _ => {
                let mut u = self.inner.api_root.clone();
                push_segments(&mut u, &segs);
                u.set_query(query);
                u
            }
        };
        let name = segs.get(3).copied().unwrap_or("");
        let idempotent = method == Method::GET
            || matches!(name, "GetCasesIdByFilter" | "AddTag" | "GetContextProperty");
        let mut req = Request::new(method.clone(), url).idempotent(idempotent);
        if !body.is_empty() {
            req.headers.insert(
                reqwest::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            req.body = Some(body);
        }
        if let Some(mut auth) = authorization {
            auth.set_sensitive(true);
            req.headers.insert(AUTHORIZATION, auth);
        } else if let Some(f) = &self.inner.bearer_file {
            match f.header() {
                Ok(h) => {
                    req.headers.insert(AUTHORIZATION, h);
                }
                Err(e) => {
                    return Forwarded {
                        status: 502,
                        body: bytes::Bytes::from(e.to_string()),
                    };
                }
            }
        }
        tracing::debug!(method = %req.method, path = req.url.path(), "soar request (forwarded)");
        match self.inner.http.send_answered(req).await {
            Ok(resp) => Forwarded {
                status: resp.status.as_u16(),
                body: resp.body,
            },
            // No answer came: the script learns why, as a gateway would say it.
            Err(e) => Forwarded {
                status: 502,
                body: bytes::Bytes::from(e.to_string()),
            },
        }
    }
}

/// `%XX` escapes of a path segment decoded (lossily as UTF-8); anything else as it is.
fn percent_decode(seg: &str) -> String {
    let b = seg.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A legacy SDK controller path (`<Name>/<path params...>`) in its 1P form: the path
/// parameters become the query parameters spec §2 names.
fn one_platform_url(base: &Url, sdk: &[&str], query: Option<&str>) -> Url {
    let name = sdk[0];
    let mut params: Vec<String> = Vec::new();
    match (name, &sdk[1..]) {
        ("AlertsTicketIdsByCaseId" | "GetCaseComments", [id, ..]) => {
            params.push(format!("caseId={id}"));
        }
        ("CaseFullDetails", [id, populate, ..]) => {
            params.push(format!("caseId={id}"));
            params.push(format!("populateOriginalFile={populate}"));
        }
        _ => {}
    }
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        params.push(q.to_string());
    }
    let mut u = base.clone();
    push_segments(&mut u, &[&format!("legacySdk:legacy{name}")]);
    u.set_query((!params.is_empty()).then(|| params.join("&")).as_deref());
    u
}

fn one_platform_base(cfg: &SoarConfig, op_root: &Url) -> Result<Url, SoarError> {
    let need = |key: &str, v: &Option<String>| -> Result<String, SoarError> {
        match v.as_deref().map(str::trim) {
            Some(s) if !s.is_empty() => Ok(s.to_string()),
            _ => Err(SoarError::Config(format!(
                "soar.{key} is required for api: one_platform"
            ))),
        }
    };
    let (p, l, i) = (
        need("project", &cfg.project)?,
        need("location", &cfg.location)?,
        need("instance", &cfg.instance)?,
    );
    let mut base = op_root.clone();
    push_segments(
        &mut base,
        &[
            "v1alpha",
            "projects",
            &p,
            "locations",
            &l,
            "instances",
            &i,
            "",
        ],
    );
    Ok(base)
}

/// Appends path segments (percent-encoding each) to a base whose path ends in `/`.
fn push_segments(url: &mut Url, segs: &[&str]) {
    // Cannot fail: the roots are http(s) URLs, which always have a path.
    if let Ok(mut p) = url.path_segments_mut() {
        p.pop_if_empty().extend(segs);
    }
}

/// The URL of `ep`: legacy paths under `api_root`, 1P paths under `op_base` (spec §2).
fn build_url(api_root: &Url, op_base: Option<&Url>, ep: Endpoint) -> Url {
    use Endpoint::*;
    let sdk = |segs: &[&str], query: String| {
        let mut u = api_root.clone();
        let mut all = vec!["external", "v1", "sdk"];
        all.extend_from_slice(segs);
        push_segments(&mut u, &all);
        u.set_query(Some(&query));
        u
    };
    let comments = |query: String| {
        let mut u = api_root.clone();
        push_segments(&mut u, &["external", "v1", "cases", "comments"]);
        u.set_query(Some(&query));
        u
    };
    let one_p = |base: &Url, name: &str, extra: &[&str], query: String| {
        let mut u = base.clone();
        let last = format!("legacySdk:legacy{name}");
        let mut segs = vec![last.as_str()];
        segs.extend_from_slice(extra);
        push_segments(&mut u, &segs);
        u.set_query(Some(&query));
        u
    };
    let snake = || "format=snake".to_string();

    match (ep, op_base) {
        (AddComment, _) => comments(snake()),
        (FetchCaseComments { case_id, since }, _) => {
            let mut q = format!("format=snake&caseId={case_id}");
            if let Some(s) = since {
                let t = match s.field {
                    CommentTimeField::Creation => 0,
                    CommentTimeField::Modification => 1,
                };
                q.push_str(&format!(
                    "&spec.timeFilterType={t}&spec.fromTimestamp={}",
                    s.from_ms
                ));
            }
            comments(q)
        }
        (GetCasesIdByFilter, None) => sdk(&["GetCasesIdByFilter"], snake()),
        (AlertsTicketIdsByCaseId { case_id }, None) => {
            sdk(&["AlertsTicketIdsByCaseId", &case_id.to_string()], snake())
        }
        (
            CaseFullDetails {
                case_id,
                populate_original_file,
            },
            None,
        ) => sdk(
            &[
                "CaseFullDetails",
                &case_id.to_string(),
                py_bool(populate_original_file),
            ],
            snake(),
        ),
        (GetCaseComments { case_id }, None) => sdk(
            &["GetCaseComments", &case_id.to_string()],
            "fetchUpdates=False&format=snake".into(),
        ),
        (AddTag, None) => sdk(&["AddTag"], snake()),
        (GetCasesIdByFilter, Some(b)) => one_p(b, "GetCasesIdByFilter", &[], snake()),
        (AlertsTicketIdsByCaseId { case_id }, Some(b)) => one_p(
            b,
            "AlertsTicketIdsByCaseId",
            &[],
            format!("caseId={case_id}&format=snake"),
        ),
        (
            CaseFullDetails {
                case_id,
                populate_original_file,
            },
            Some(b),
        ) => one_p(
            b,
            "CaseFullDetails",
            &[],
            format!(
                "caseId={case_id}&populateOriginalFile={}&format=snake",
                py_bool(populate_original_file)
            ),
        ),
        // The SDK's code (not its test) builds this path form; which one the platform serves is
        // unverified (spec §2).
        (GetCaseComments { case_id }, Some(b)) => one_p(
            b,
            "GetCaseComments",
            &[&case_id.to_string()],
            "fetchUpdates=False&format=snake".into(),
        ),
        (AddTag, Some(b)) => one_p(b, "AddTag", &[], snake()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy() -> SoarClient {
        SoarClient::new(&SoarConfig::legacy("https://soar.example.com:8443", "k")).unwrap()
    }

    fn one_platform() -> SoarClient {
        let mut cfg = SoarConfig::legacy("https://soar.example.com:8443", "k");
        cfg.api = ApiFlavor::OnePlatform;
        cfg.one_platform_url = Some("https://us-chronicle.googleapis.com".into());
        cfg.bearer_token = Some(SecretString::from("tok".to_string()));
        cfg.project = Some("my-proj".into());
        cfg.location = Some("us".into());
        cfg.instance = Some("abc-123".into());
        SoarClient::new(&cfg).unwrap()
    }

    #[test]
    fn legacy_urls_match_the_spec() {
        let c = legacy();
        let r = "https://soar.example.com:8443/api/external/v1/";
        let cases = [
            (
                Endpoint::GetCasesIdByFilter,
                "sdk/GetCasesIdByFilter?format=snake",
            ),
            (
                Endpoint::AlertsTicketIdsByCaseId { case_id: 1201 },
                "sdk/AlertsTicketIdsByCaseId/1201?format=snake",
            ),
            (
                Endpoint::CaseFullDetails {
                    case_id: 42,
                    populate_original_file: false,
                },
                "sdk/CaseFullDetails/42/False?format=snake",
            ),
            (
                Endpoint::CaseFullDetails {
                    case_id: 42,
                    populate_original_file: true,
                },
                "sdk/CaseFullDetails/42/True?format=snake",
            ),
            (
                Endpoint::GetCaseComments { case_id: 7 },
                "sdk/GetCaseComments/7?fetchUpdates=False&format=snake",
            ),
            (Endpoint::AddTag, "sdk/AddTag?format=snake"),
            (Endpoint::AddComment, "cases/comments?format=snake"),
            (
                Endpoint::FetchCaseComments {
                    case_id: 7,
                    since: None,
                },
                "cases/comments?format=snake&caseId=7",
            ),
            (
                Endpoint::FetchCaseComments {
                    case_id: 7,
                    since: Some(CommentsSince {
                        field: CommentTimeField::Modification,
                        from_ms: 1686040471269,
                    }),
                },
                "cases/comments?format=snake&caseId=7&spec.timeFilterType=1&spec.fromTimestamp=1686040471269",
            ),
        ];
        for (ep, want) in cases {
            assert_eq!(c.url(ep).as_str(), format!("{r}{want}"), "{ep:?}");
        }
    }

    #[test]
    fn one_platform_urls_match_the_spec() {
        let c = one_platform();
        let r = "https://us-chronicle.googleapis.com/v1alpha/projects/my-proj/locations/us/instances/abc-123/legacySdk:legacy";
        let cases = [
            (
                Endpoint::GetCasesIdByFilter,
                "GetCasesIdByFilter?format=snake",
            ),
            (
                Endpoint::AlertsTicketIdsByCaseId { case_id: 1201 },
                "AlertsTicketIdsByCaseId?caseId=1201&format=snake",
            ),
            (
                Endpoint::CaseFullDetails {
                    case_id: 42,
                    populate_original_file: false,
                },
                "CaseFullDetails?caseId=42&populateOriginalFile=False&format=snake",
            ),
            (
                Endpoint::GetCaseComments { case_id: 7 },
                "GetCaseComments/7?fetchUpdates=False&format=snake",
            ),
            (Endpoint::AddTag, "AddTag?format=snake"),
        ];
        for (ep, want) in cases {
            assert_eq!(c.url(ep).as_str(), format!("{r}{want}"), "{ep:?}");
        }
        // The comments endpoints stay on the legacy root.
        assert_eq!(
            c.url(Endpoint::AddComment).as_str(),
            "https://soar.example.com:8443/api/external/v1/cases/comments?format=snake"
        );
    }

    #[test]
    fn one_platform_root_defaults_to_the_legacy_host() {
        let mut cfg = SoarConfig::legacy("http://127.0.0.1:8443/api", "k");
        cfg.api = ApiFlavor::OnePlatform;
        cfg.bearer_token = Some(SecretString::from("t".to_string()));
        cfg.project = Some("p".into());
        cfg.location = Some("l".into());
        cfg.instance = Some("i".into());
        let c = SoarClient::new(&cfg).unwrap();
        assert_eq!(
            c.url(Endpoint::AddTag).as_str(),
            "http://127.0.0.1:8443/v1alpha/projects/p/locations/l/instances/i/legacySdk:legacyAddTag?format=snake"
        );
    }

    #[test]
    fn config_errors_are_clear() {
        let mut cfg = SoarConfig::legacy("http://h", "k");
        cfg.app_key = None;
        let e = SoarClient::new(&cfg).unwrap_err();
        assert!(e.to_string().contains("soar.app_key"), "{e}");

        let mut cfg = SoarConfig::legacy("http://h", "k");
        cfg.api = ApiFlavor::OnePlatform;
        cfg.bearer_token = Some(SecretString::from("t".to_string()));
        let e = SoarClient::new(&cfg).unwrap_err();
        assert!(e.to_string().contains("soar.project"), "{e}");

        let mut cfg = SoarConfig::legacy("http://h", "k");
        cfg.api = ApiFlavor::OnePlatform;
        cfg.project = Some("p".into());
        cfg.location = Some("l".into());
        cfg.instance = Some("i".into());
        let e = SoarClient::new(&cfg).unwrap_err();
        assert!(e.to_string().contains("bearer_token"), "{e}");
    }

    #[test]
    fn debug_hides_secrets() {
        let c = SoarClient::new(&SoarConfig::legacy("http://h", "very-secret-app-key")).unwrap();
        assert!(!format!("{c:?}").contains("very-secret-app-key"));
    }

    #[test]
    fn bearer_file_is_reread_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "one\n").unwrap();
        let f = BearerFile {
            path: path.clone(),
            cache: Mutex::new(None),
        };
        assert_eq!(f.header().unwrap().to_str().unwrap(), "Bearer one");
        std::fs::write(&path, "two").unwrap();
        // Force a distinct mtime even on coarse-grained filesystems.
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        let h = f.header().unwrap();
        assert!(h.is_sensitive());
        assert_eq!(h.to_str().unwrap(), "Bearer two");
    }
}

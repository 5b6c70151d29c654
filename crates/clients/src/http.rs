//! The one transport policy every outbound request goes through.
//!
//! Every platform client (SecOps SOAR, ThreatConnect) sends through an [`HttpClient`], so one
//! place decides timeouts, TLS verification, how many requests may be in flight, how fast they
//! may go out, what is retried and what counts as *in doubt*:
//!
//! * Retried (exponential backoff with jitter, [`RetryPolicy`]): connection failures (the request
//!   never reached the server, so even a POST is safe to resend), `429 Too Many Requests`
//!   (honouring `Retry-After`, capped), and for idempotent requests also `502/503/504` and
//!   transport failures after sending (timeouts, resets).
//! * Never retried: a non-idempotent request whose outcome is unknown — a timeout or reset after
//!   the request was sent, or a `500/502/503/504` answer. It fails with [`HttpError::InDoubt`] so
//!   the caller can check the remote state before writing again; blindly resending a POST could
//!   write twice. A `500` is marked as the server's own answer (`answered`): the server is done
//!   with the request, so its remote state can be read at once; the others may still land.
//!
//! Errors carry the method and the request *path* only: never the query string (some APIs put
//! credentials there) and never headers. Secret header values are marked sensitive
//! ([`sensitive_header`]) so `reqwest`/`hyper` debug output hides them too.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant;
use url::Url;

/// How many characters of an error body are kept in [`HttpError::Server`] / [`HttpError::Rejected`].
const BODY_EXCERPT_CHARS: usize = 300;

/// When and how long to wait before resending a request.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Resends after the first attempt (0 = never retry).
    pub max_retries: usize,
    /// The first backoff delay; each further one doubles (plus jitter).
    pub base_delay: Duration,
    /// The longest computed backoff delay.
    pub max_delay: Duration,
    /// The longest wait a server's `Retry-After` may impose; longer values are cut to this so a
    /// misbehaving server cannot park a job for an hour.
    pub max_retry_after: Duration,
    /// Add random jitter to each delay, so many clients that failed together do not retry together.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(30),
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries (useful for probes and tests).
    pub fn none() -> RetryPolicy {
        RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        }
    }

    fn backoff(&self) -> ExponentialBuilder {
        let b = ExponentialBuilder::default()
            .with_min_delay(self.base_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_retries);
        if self.jitter { b.with_jitter() } else { b }
    }
}

/// Settings of one [`HttpClient`] (usually one per platform).
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Time allowed to establish a TCP/TLS connection.
    pub connect_timeout: Duration,
    /// Time allowed for a whole attempt: connect, send, and read the full response.
    pub timeout: Duration,
    /// Verify server certificates. Only a config that says so explicitly turns this off.
    pub verify_tls: bool,
    /// Most requests in flight at once through this client (at least 1).
    pub max_concurrency: usize,
    /// Most requests started per second (`None` = unlimited). Requests are paced evenly.
    pub rate_limit: Option<f64>,
    pub retry: RetryPolicy,
    /// Headers sent with every request (auth, content negotiation). Mark secrets with
    /// [`sensitive_header`].
    pub default_headers: HeaderMap,
    /// The platform's name, the `platform` label of the request metrics
    /// (`soarjobd_core::platform_request`).
    pub platform: &'static str,
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            verify_tls: true,
            max_concurrency: 8,
            rate_limit: None,
            retry: RetryPolicy::default(),
            default_headers: HeaderMap::new(),
            platform: "unknown",
        }
    }
}

/// Why an [`HttpClient`] could not be built (a configuration problem, no request involved).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("invalid HTTP client setting: {0}")]
    Invalid(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// Why a request failed. Every request error names the method and the URL path (no query, no
/// headers), so a log line says which call broke without leaking credentials.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// 401 or 403: the credentials are missing, wrong, or lack permission.
    #[error("{method} {path}: authentication failed (HTTP {status}); check the API key or token")]
    Auth {
        method: Method,
        path: String,
        status: StatusCode,
    },
    #[error("{method} {path}: not found (HTTP 404)")]
    NotFound { method: Method, path: String },
    /// Still 429 after every retry.
    #[error("{method} {path}: rate limited (HTTP 429) after {attempts} attempts")]
    RateLimited {
        method: Method,
        path: String,
        attempts: usize,
        retry_after: Option<Duration>,
    },
    /// A 5xx the policy does not treat as in doubt (an idempotent request out of retries, or a
    /// status such as 501).
    #[error("{method} {path}: server error HTTP {status}: {body}")]
    Server {
        method: Method,
        path: String,
        status: StatusCode,
        body: String,
    },
    /// Any other non-2xx answer (400, 409, 422, ...): the server refused the request as sent.
    #[error("{method} {path}: request rejected with HTTP {status}: {body}")]
    Rejected {
        method: Method,
        path: String,
        status: StatusCode,
        body: String,
    },
    /// The request could not be completed and was not (or no longer) retried.
    #[error("{method} {path}: transport error: {cause}")]
    Transport {
        method: Method,
        path: String,
        /// The error chain as text, without the URL.
        cause: String,
        #[source]
        source: Option<reqwest::Error>,
    },
    /// A non-idempotent request was sent but its outcome is unknown: it may or may not have been
    /// applied. Check the remote state before sending it again.
    #[error(
        "{method} {path}: outcome unknown ({reason}); the write may or may not have been applied"
    )]
    InDoubt {
        method: Method,
        path: String,
        reason: String,
        /// The server's own error answer (`500`), if one ended the request: the server is done
        /// with it, so its effect (or absence) can be read at once. `None` when no answer came
        /// (a timeout or reset after sending) or a gateway answered for it (`502/503/504`): the
        /// server may still be working on it, so the write can land later.
        answered: Option<StatusCode>,
    },
    /// A 2xx answer whose body does not have the expected shape.
    #[error("{method} {path}: unexpected response at JSON path `{json_path}`: {reason}")]
    BadResponse {
        method: Method,
        path: String,
        json_path: String,
        reason: String,
    },
    /// The request body could not be encoded (a programming error, never a network one).
    #[error("{method} {path}: cannot encode the request body: {reason}")]
    Encode {
        method: Method,
        path: String,
        reason: String,
    },
}

impl HttpError {
    /// The HTTP status the server answered with, if the failure came from one.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            HttpError::Auth { status, .. }
            | HttpError::Server { status, .. }
            | HttpError::Rejected { status, .. } => Some(*status),
            HttpError::NotFound { .. } => Some(StatusCode::NOT_FOUND),
            HttpError::RateLimited { .. } => Some(StatusCode::TOO_MANY_REQUESTS),
            _ => None,
        }
    }

    /// The path of the request that failed.
    pub fn path(&self) -> &str {
        match self {
            HttpError::Auth { path, .. }
            | HttpError::NotFound { path, .. }
            | HttpError::RateLimited { path, .. }
            | HttpError::Server { path, .. }
            | HttpError::Rejected { path, .. }
            | HttpError::Transport { path, .. }
            | HttpError::InDoubt { path, .. }
            | HttpError::BadResponse { path, .. }
            | HttpError::Encode { path, .. } => path,
        }
    }

    /// True for [`HttpError::InDoubt`]: the write may have landed.
    pub fn is_in_doubt(&self) -> bool {
        matches!(self, HttpError::InDoubt { .. })
    }

    /// For [`HttpError::InDoubt`]: the status of the server's own error answer that ended the
    /// request (see `answered`); `None` for every other error and for writes with no answer.
    pub fn in_doubt_answer(&self) -> Option<StatusCode> {
        match self {
            HttpError::InDoubt { answered, .. } => *answered,
            _ => None,
        }
    }
}

/// The body of a request: already-encoded bytes, so a retry resends exactly the same thing.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub url: Url,
    /// Headers for this request only, on top of [`HttpConfig::default_headers`].
    pub headers: HeaderMap,
    pub body: Option<Bytes>,
    /// Safe to send more than once. GET/HEAD/OPTIONS/PUT/DELETE are idempotent by default; set
    /// this on a POST that is a pure query (a search endpoint) so it is retried like a GET.
    pub idempotent: bool,
}

impl Request {
    /// A request with no body; idempotency follows the method.
    pub fn new(method: Method, url: Url) -> Request {
        let idempotent = matches!(
            method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
        );
        Request {
            method,
            url,
            headers: HeaderMap::new(),
            body: None,
            idempotent,
        }
    }

    pub fn get(url: Url) -> Request {
        Request::new(Method::GET, url)
    }

    /// A request whose body is `body` as JSON (with `Content-Type: application/json`).
    pub fn json<B: Serialize + ?Sized>(
        method: Method,
        url: Url,
        body: &B,
    ) -> Result<Request, HttpError> {
        let bytes = serde_json::to_vec(body).map_err(|e| HttpError::Encode {
            method: method.clone(),
            path: url.path().to_string(),
            reason: e.to_string(),
        })?;
        let mut req = Request::new(method, url);
        req.headers
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        req.body = Some(Bytes::from(bytes));
        Ok(req)
    }

    /// Marks the request as safe (or not) to send more than once.
    pub fn idempotent(mut self, idempotent: bool) -> Request {
        self.idempotent = idempotent;
        self
    }

    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Request {
        self.headers.insert(name, value);
        self
    }
}

/// An answer: a successful (2xx) one from [`HttpClient::send`], any from
/// [`HttpClient::send_answered`].
#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    method: Method,
    path: String,
}

impl Response {
    /// Decodes the body as JSON, naming the JSON path of the first mismatch. An empty body (204)
    /// decodes as `null`, so `Option<T>` reads it as `None`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, HttpError> {
        decode_json(&self.method, &self.path, &self.body)
    }
}

/// Decodes `body` as `T`, reporting where in the document it went wrong (`[3].cyber_alerts[0]`).
pub fn decode_json<T: DeserializeOwned>(
    method: &Method,
    path: &str,
    body: &[u8],
) -> Result<T, HttpError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"null"
    } else {
        body
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let json_path = e.path().to_string();
        HttpError::BadResponse {
            method: method.clone(),
            path: path.to_string(),
            json_path,
            reason: e.into_inner().to_string(),
        }
    })?;
    de.end().map_err(|e| HttpError::BadResponse {
        method: method.clone(),
        path: path.to_string(),
        json_path: ".".into(),
        reason: e.to_string(),
    })?;
    Ok(value)
}

/// A header value built from a secret and marked sensitive, so `Debug` output of headers (ours,
/// reqwest's, hyper's) shows `Sensitive` instead of the value.
pub fn sensitive_header(secret: &SecretString) -> Result<HeaderValue, BuildError> {
    let mut v = HeaderValue::from_str(secret.expose_secret()).map_err(|_| {
        BuildError::Invalid("a secret contains characters not allowed in an HTTP header".into())
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// `application/json` for both `Content-Type` and `Accept`, as most JSON APIs expect.
pub fn json_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(ACCEPT, HeaderValue::from_static("application/json"));
    h
}

/// Evenly spaces request starts: each caller takes the next free slot `interval` after the
/// previous one. Simpler than a token bucket and has no burst, which is what a strict
/// per-second API quota wants.
#[derive(Debug)]
struct Pacer {
    interval: Duration,
    next: Mutex<Instant>,
}

impl Pacer {
    async fn wait(&self) {
        let slot = {
            let mut next = self.next.lock().await;
            let slot = (*next).max(Instant::now());
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

#[derive(Debug)]
struct Inner {
    client: reqwest::Client,
    permits: Semaphore,
    pacer: Option<Pacer>,
    retry: RetryPolicy,
    platform: &'static str,
}

/// The shared transport: cheap to clone (an `Arc` inside); all clones share the connection pool,
/// the concurrency cap and the rate limit.
#[derive(Debug, Clone)]
pub struct HttpClient {
    inner: Arc<Inner>,
}

/// One failed attempt and what the policy says about it.
struct Failure {
    error: HttpError,
    retry: bool,
    retry_after: Option<Duration>,
    /// The server's answer, when one came (a non-2xx status): [`HttpClient::send_answered`]
    /// hands it on as it came.
    answer: Option<Response>,
}

impl HttpClient {
    pub fn new(cfg: HttpConfig) -> Result<HttpClient, BuildError> {
        if cfg.max_concurrency == 0 {
            return Err(BuildError::Invalid(
                "max_concurrency must be at least 1".into(),
            ));
        }
        let pacer = match cfg.rate_limit {
            None => None,
            Some(r) if r.is_finite() && r > 0.0 => Some(Pacer {
                interval: Duration::from_secs_f64(1.0 / r),
                next: Mutex::new(Instant::now()),
            }),
            Some(r) => {
                return Err(BuildError::Invalid(format!(
                    "rate_limit must be a positive number of requests per second, got {r}"
                )));
            }
        };
        let client = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.timeout)
            .tls_danger_accept_invalid_certs(!cfg.verify_tls)
            .default_headers(cfg.default_headers)
            .user_agent(concat!("soarjobd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(BuildError::Client)?;
        Ok(HttpClient {
            inner: Arc::new(Inner {
                client,
                permits: Semaphore::new(cfg.max_concurrency),
                pacer,
                retry: cfg.retry,
                platform: cfg.platform,
            }),
        })
    }

    /// Sends `req` under the policy; `Ok` only for a 2xx answer.
    pub async fn send(&self, req: Request) -> Result<Response, HttpError> {
        self.send_policy(&req).await.map_err(|f| f.error)
    }

    /// Sends `req` under the same policy (retries, backoff, rate limit), but hands on the
    /// server's last answer whatever its status (a `500` stays a `500`, with its body): `Err`
    /// only when no answer came (connection refused, a timeout, a reset), so the caller can
    /// say "no answer" exactly then. For a proxy that must be faithful to the upstream.
    pub async fn send_answered(&self, req: Request) -> Result<Response, HttpError> {
        self.send_policy(&req)
            .await
            .or_else(|f| f.answer.ok_or(f.error))
    }

    async fn send_policy(&self, req: &Request) -> Result<Response, Failure> {
        let policy = &self.inner.retry;
        let mut attempts = 0usize;
        let result = (|| {
            attempts += 1;
            self.attempt(req)
        })
        .retry(policy.backoff())
        .when(|f: &Failure| f.retry)
        .adjust(|f, delay| {
            // Out of retries stays out of retries; otherwise the server's Retry-After wins over
            // our own backoff, within the cap.
            delay.map(|d| f.retry_after.map_or(d, |ra| ra.min(policy.max_retry_after)))
        })
        .notify(|f, delay| {
            tracing::warn!(
                method = %req.method,
                path = req.url.path(),
                delay_ms = delay.as_millis() as u64,
                error = %f.error,
                "retrying request"
            );
        })
        .await;
        result.map_err(|mut f| {
            if let HttpError::RateLimited {
                method,
                path,
                retry_after,
                ..
            } = f.error
            {
                f.error = HttpError::RateLimited {
                    method,
                    path,
                    attempts,
                    retry_after,
                };
            }
            f
        })
    }

    /// Sends a GET and decodes the JSON answer.
    pub async fn get_json<T: DeserializeOwned>(&self, url: Url) -> Result<T, HttpError> {
        self.send(Request::get(url)).await?.json()
    }

    /// POSTs `body` as JSON and decodes the JSON answer. `idempotent` says whether the POST is a
    /// pure query that may be resent (see [`Request::idempotent`]).
    pub async fn post_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        url: Url,
        body: &B,
        idempotent: bool,
    ) -> Result<T, HttpError> {
        let req = Request::json(Method::POST, url, body)?.idempotent(idempotent);
        self.send(req).await?.json()
    }

    /// One attempt: wait for a rate slot and a concurrency permit, send, read, classify.
    async fn attempt(&self, req: &Request) -> Result<Response, Failure> {
        if let Some(pacer) = &self.inner.pacer {
            pacer.wait().await;
        }
        // The permit is held until the body is read, so the cap counts real in-flight requests;
        // it is released before any backoff sleep so a retrying call does not block others.
        let _permit = self
            .inner
            .permits
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let method = req.method.clone();
        let path = req.url.path().to_string();

        let mut builder = self
            .inner
            .client
            .request(req.method.clone(), req.url.clone())
            .headers(req.headers.clone());
        if let Some(body) = &req.body {
            builder = builder.body(body.clone());
        }
        // Every attempt is reported (not only the last of a retried request), so the metrics
        // show the rate limits and failures the retries hid.
        let sent = Instant::now();
        let observe = |status: Option<StatusCode>| {
            soarjobd_core::platform_request(
                self.inner.platform,
                method.as_str(),
                status.map(|s| s.as_u16()),
                sent.elapsed(),
            )
        };
        let resp = match builder.send().await {
            Ok(r) => r,
            Err(e) => {
                observe(None);
                return Err(transport_failure(method, path, e, req.idempotent));
            }
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                observe(None);
                return Err(transport_failure(method, path, e, req.idempotent));
            }
        };
        observe(Some(status));
        if status.is_success() {
            return Ok(Response {
                status,
                headers,
                body,
                method,
                path,
            });
        }
        let mut failure = status_failure(
            method.clone(),
            path.clone(),
            status,
            &headers,
            &body,
            req.idempotent,
        );
        failure.answer = Some(Response {
            status,
            headers,
            body,
            method,
            path,
        });
        Err(failure)
    }
}

/// Classifies a reqwest error. A connect failure means nothing was sent, so any request may be
/// resent; anything later may have reached the server, which only an idempotent request survives.
fn transport_failure(method: Method, path: String, e: reqwest::Error, idempotent: bool) -> Failure {
    // The URL (with its query) is dropped from the error so it cannot leak into logs.
    let e = e.without_url();
    let cause = error_chain(&e);
    // A request that could not even be built was never sent: not in doubt, and resending the
    // same thing cannot help.
    if e.is_builder() {
        return Failure {
            error: HttpError::Transport {
                method,
                path,
                cause,
                source: Some(e),
            },
            retry: false,
            retry_after: None,
            answer: None,
        };
    }
    if e.is_connect() {
        return Failure {
            error: HttpError::Transport {
                method,
                path,
                cause,
                source: Some(e),
            },
            retry: true,
            retry_after: None,
            answer: None,
        };
    }
    if idempotent {
        Failure {
            error: HttpError::Transport {
                method,
                path,
                cause,
                source: Some(e),
            },
            retry: true,
            retry_after: None,
            answer: None,
        }
    } else {
        let reason = if e.is_timeout() {
            format!("timed out after sending: {cause}")
        } else {
            format!("connection failed after sending: {cause}")
        };
        Failure {
            error: HttpError::InDoubt {
                method,
                path,
                reason,
                answered: None,
            },
            retry: false,
            retry_after: None,
            answer: None,
        }
    }
}

/// Classifies a non-2xx answer.
fn status_failure(
    method: Method,
    path: String,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    idempotent: bool,
) -> Failure {
    let retry_after = parse_retry_after(headers);
    let fail = |error, retry| Failure {
        error,
        retry,
        retry_after,
        answer: None,
    };
    match status.as_u16() {
        401 | 403 => fail(
            HttpError::Auth {
                method,
                path,
                status,
            },
            false,
        ),
        404 => fail(HttpError::NotFound { method, path }, false),
        // A 429 means the request was refused before processing, so resending is safe for any
        // method.
        429 => fail(
            HttpError::RateLimited {
                method,
                path,
                attempts: 1,
                retry_after,
            },
            true,
        ),
        // An idempotent request changes nothing however often it is sent, so any transient
        // server error (a 500 included: many servers answer 500 to an overloaded read) is
        // worth another attempt.
        500 | 502..=504 if idempotent => fail(
            HttpError::Server {
                method,
                path,
                status,
                body: excerpt(body),
            },
            true,
        ),
        // A write answered 500 (or a gateway error) may have been applied before the failure.
        // A 500 is the server's own answer: it is done with the request. A 502/503/504 usually
        // comes from a gateway in front of it, which says nothing about whether the server
        // behind is still working on the request, so it counts as no answer.
        500 | 502..=504 => fail(
            HttpError::InDoubt {
                method,
                path,
                reason: format!("HTTP {status}: {}", excerpt(body)),
                answered: (status == StatusCode::INTERNAL_SERVER_ERROR).then_some(status),
            },
            false,
        ),
        500..=599 => fail(
            HttpError::Server {
                method,
                path,
                status,
                body: excerpt(body),
            },
            false,
        ),
        _ => fail(
            HttpError::Rejected {
                method,
                path,
                status,
                body: excerpt(body),
            },
            false,
        ),
    }
}

/// `Retry-After` as delay-seconds or an HTTP date; `None` if absent or unreadable.
fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let raw = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = raw.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(raw).ok()?;
    let delta = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

/// The start of an error body, lossily decoded and cut on a character boundary.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(BODY_EXCERPT_CHARS) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// `outer: inner: innermost`, so one log line shows the root cause (e.g. "connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        let msg = inner.to_string();
        if !s.contains(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        cur = inner.source();
    }
    s
}

/// Parses a transport duration from configuration: `500ms`, `30s`, `15m`, `1h`, or a bare
/// number of seconds. Shared by the platform clients' config sections (timeouts, poll
/// intervals); job schedules use the stricter [`soarjobd_core::parse_duration`].
pub fn parse_config_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("expected a duration such as 30s, 500ms or 15m, got {s:?}"))?;
    let per_unit = match unit.trim() {
        "" | "s" => Duration::from_secs(1),
        "ms" => Duration::from_millis(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        other => return Err(format!("unknown duration unit {other:?} in {s:?}")),
    };
    per_unit
        .checked_mul(u32::try_from(n).map_err(|_| format!("duration {s:?} is too long"))?)
        .ok_or_else(|| format!("duration {s:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_durations() {
        assert_eq!(parse_config_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_config_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_config_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_config_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(
            parse_config_duration("250ms"),
            Ok(Duration::from_millis(250))
        );
        assert!(parse_config_duration("1d").is_err());
        assert!(parse_config_duration("soon").is_err());
        assert!(parse_config_duration("").is_err());
    }
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::extract::{Path, State};
    use axum::http::HeaderMap as AxHeaders;
    use axum::response::IntoResponse;
    use axum::routing::{get, post};

    /// Per-route hit counters and in-flight tracking shared with the test server.
    #[derive(Default)]
    struct Counters {
        hits: std::sync::Mutex<HashMap<String, usize>>,
        in_flight: AtomicUsize,
        max_in_flight: AtomicUsize,
    }

    impl Counters {
        fn hit(&self, key: &str) -> usize {
            let mut m = self.hits.lock().unwrap();
            let n = m.entry(key.to_string()).or_default();
            *n += 1;
            *n
        }
        fn count(&self, key: &str) -> usize {
            self.hits.lock().unwrap().get(key).copied().unwrap_or(0)
        }
    }

    type S = State<Arc<Counters>>;

    async fn flaky(State(c): S, Path(n): Path<usize>) -> impl IntoResponse {
        // Fails with 503 for the first `n` hits, then answers.
        if c.hit("flaky") <= n {
            (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response()
        } else {
            axum::Json(serde_json::json!({"ok": true})).into_response()
        }
    }

    async fn always(State(c): S, Path(code): Path<u16>) -> impl IntoResponse {
        c.hit(&format!("always{code}"));
        StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT)
    }

    async fn limited(State(c): S, Path(secs): Path<u64>) -> impl IntoResponse {
        if c.hit("limited") == 1 {
            let mut h = AxHeaders::new();
            h.insert("retry-after", secs.to_string().parse().unwrap());
            (StatusCode::TOO_MANY_REQUESTS, h, "slow down").into_response()
        } else {
            axum::Json(serde_json::json!({"ok": true})).into_response()
        }
    }

    async fn malformed() -> impl IntoResponse {
        (
            [(CONTENT_TYPE, "application/json")],
            r#"{"items":[{"id":1},{"id":"two"}]}"#,
        )
    }

    async fn slow(State(c): S) -> impl IntoResponse {
        c.hit("slow");
        tokio::time::sleep(Duration::from_millis(600)).await;
        "late"
    }

    async fn tracked(State(c): S) -> impl IntoResponse {
        let now = c.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        c.max_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(150)).await;
        c.in_flight.fetch_sub(1, Ordering::SeqCst);
        "[]"
    }

    async fn start() -> (Url, Arc<Counters>) {
        let c = Arc::new(Counters::default());
        let app = Router::new()
            .route("/flaky/{n}", get(flaky))
            .route("/always/{code}", get(always).post(always))
            .route("/limited/{secs}", get(limited).post(limited))
            .route("/malformed", get(malformed))
            .route("/slow", post(slow).get(slow))
            .route("/tracked", get(tracked))
            .with_state(c.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (Url::parse(&format!("http://{addr}/")).unwrap(), c)
    }

    fn fast_policy() -> RetryPolicy {
        RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            max_retry_after: Duration::from_secs(5),
            jitter: true,
        }
    }

    fn client(cfg: impl FnOnce(&mut HttpConfig)) -> HttpClient {
        let mut c = HttpConfig {
            retry: fast_policy(),
            ..HttpConfig::default()
        };
        cfg(&mut c);
        HttpClient::new(c).unwrap()
    }

    #[tokio::test]
    async fn get_is_retried_on_503_until_it_succeeds() {
        let (base, c) = start().await;
        let v: serde_json::Value = client(|_| {})
            .get_json(base.join("flaky/2").unwrap())
            .await
            .unwrap();
        assert_eq!(v["ok"], true);
        assert_eq!(c.count("flaky"), 3);
    }

    /// Records what the transport reports for one platform name.
    struct Seen {
        platform: &'static str,
        calls: std::sync::Mutex<Vec<(String, Option<u16>)>>,
    }

    impl soarjobd_core::HttpObserver for Seen {
        fn platform_request(&self, platform: &str, method: &str, status: Option<u16>, _: Duration) {
            if platform == self.platform {
                self.calls
                    .lock()
                    .unwrap()
                    .push((method.to_string(), status));
            }
        }
    }

    #[tokio::test]
    async fn every_attempt_is_reported_to_the_metrics_hook() {
        let (base, _) = start().await;
        let seen = Arc::new(Seen {
            platform: "hook-test",
            calls: Default::default(),
        });
        let hook: Arc<dyn soarjobd_core::HttpObserver> = seen.clone();
        soarjobd_core::add_http_observer(&hook);
        let http = client(|c| c.platform = "hook-test");
        let _: serde_json::Value = http.get_json(base.join("flaky/2").unwrap()).await.unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = Url::parse(&format!("http://127.0.0.1:{port}/x")).unwrap();
        let req = Request::json(Method::POST, url, &1).unwrap();
        let _ = client(|c| {
            c.platform = "hook-test";
            c.retry = RetryPolicy::none();
        })
        .send(req)
        .await;
        // Two 503s, the success, then a refused connection: no status.
        let calls = seen.calls.lock().unwrap().clone();
        let get = |s: Option<u16>| ("GET".to_string(), s);
        assert_eq!(
            calls,
            [
                get(Some(503)),
                get(Some(503)),
                get(Some(200)),
                ("POST".to_string(), None)
            ]
        );
    }

    #[tokio::test]
    async fn get_gives_up_after_max_retries_with_server_error() {
        let (base, c) = start().await;
        let err = client(|_| {})
            .send(Request::get(base.join("always/503?secret=x").unwrap()))
            .await
            .unwrap_err();
        assert!(
            matches!(err, HttpError::Server { status, .. } if status == 503),
            "{err:?}"
        );
        assert_eq!(c.count("always503"), 4);
        // The path is named, the query is not.
        let msg = err.to_string();
        assert!(msg.contains("GET /always/503"), "{msg}");
        assert!(!msg.contains("secret"), "{msg}");
    }

    #[tokio::test]
    async fn post_answered_500_is_in_doubt_and_not_retried() {
        let (base, c) = start().await;
        let req = Request::json(Method::POST, base.join("always/500").unwrap(), &[1]).unwrap();
        let err = client(|_| {}).send(req).await.unwrap_err();
        assert!(err.is_in_doubt(), "{err:?}");
        assert_eq!(
            err.in_doubt_answer(),
            Some(StatusCode::INTERNAL_SERVER_ERROR)
        );
        assert_eq!(c.count("always500"), 1);
        assert!(err.to_string().contains("POST /always/500"));
    }

    #[tokio::test]
    async fn post_503_is_in_doubt_but_idempotent_post_is_retried() {
        let (base, c) = start().await;
        let url = base.join("always/503").unwrap();
        let err = client(|_| {})
            .send(Request::json(Method::POST, url.clone(), &1).unwrap())
            .await
            .unwrap_err();
        assert!(err.is_in_doubt(), "{err:?}");
        // A gateway's answer is no answer from the server behind it.
        assert_eq!(err.in_doubt_answer(), None);
        assert_eq!(c.count("always503"), 1);
        let req = Request::json(Method::POST, url, &1)
            .unwrap()
            .idempotent(true);
        let err = client(|_| {}).send(req).await.unwrap_err();
        assert!(matches!(err, HttpError::Server { .. }), "{err:?}");
        assert_eq!(c.count("always503"), 5);
    }

    #[tokio::test]
    async fn post_timing_out_after_sending_is_in_doubt() {
        let (base, c) = start().await;
        let cl = client(|c| c.timeout = Duration::from_millis(100));
        let req = Request::json(Method::POST, base.join("slow").unwrap(), &1).unwrap();
        let err = cl.send(req).await.unwrap_err();
        assert!(err.is_in_doubt(), "{err:?}");
        assert_eq!(err.in_doubt_answer(), None);
        assert_eq!(c.count("slow"), 1);
    }

    #[tokio::test]
    async fn get_timing_out_is_retried_then_transport_error() {
        let (base, c) = start().await;
        let cl = client(|c| {
            c.timeout = Duration::from_millis(100);
            c.retry.max_retries = 1;
        });
        let err = cl
            .send(Request::get(base.join("slow").unwrap()))
            .await
            .unwrap_err();
        assert!(matches!(err, HttpError::Transport { .. }), "{err:?}");
        assert_eq!(c.count("slow"), 2);
    }

    #[tokio::test]
    async fn connection_refused_is_transport_even_for_post() {
        // Bind and drop a listener to get a port nothing listens on.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = Url::parse(&format!("http://127.0.0.1:{port}/x")).unwrap();
        let req = Request::json(Method::POST, url, &1).unwrap();
        let err = client(|_| {}).send(req).await.unwrap_err();
        assert!(matches!(err, HttpError::Transport { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn retry_after_is_honoured_on_429() {
        let (base, c) = start().await;
        let started = std::time::Instant::now();
        let req = Request::json(Method::POST, base.join("limited/1").unwrap(), &1).unwrap();
        let resp = client(|_| {}).send(req).await.unwrap();
        assert_eq!(resp.status, StatusCode::OK);
        assert_eq!(c.count("limited"), 2);
        // Our own backoff is at most 5 ms here, so waiting ~1 s can only come from Retry-After.
        assert!(started.elapsed() >= Duration::from_millis(950));
    }

    #[tokio::test]
    async fn retry_after_is_capped() {
        let (base, c) = start().await;
        let cl = client(|c| c.retry.max_retry_after = Duration::from_millis(10));
        let resp = cl
            .send(Request::get(base.join("limited/3600").unwrap()))
            .await
            .unwrap();
        assert_eq!(resp.status, StatusCode::OK);
        assert_eq!(c.count("limited"), 2);
    }

    #[tokio::test]
    async fn persistent_429_is_rate_limited_after_retries() {
        let (base, c) = start().await;
        let err = client(|_| {})
            .send(Request::get(base.join("always/429").unwrap()))
            .await
            .unwrap_err();
        assert!(
            matches!(err, HttpError::RateLimited { attempts: 4, .. }),
            "{err:?}"
        );
        assert_eq!(c.count("always429"), 4);
    }

    #[tokio::test]
    async fn unauthorized_and_not_found_are_typed_and_not_retried() {
        let (base, c) = start().await;
        let cl = client(|_| {});
        let err = cl
            .send(Request::get(base.join("always/401").unwrap()))
            .await
            .unwrap_err();
        assert!(matches!(err, HttpError::Auth { .. }), "{err:?}");
        assert!(err.to_string().contains("authentication failed"));
        let err = cl
            .send(Request::get(base.join("always/403").unwrap()))
            .await
            .unwrap_err();
        assert!(matches!(err, HttpError::Auth { .. }), "{err:?}");
        let err = cl
            .send(Request::get(base.join("nowhere").unwrap()))
            .await
            .unwrap_err();
        assert!(matches!(err, HttpError::NotFound { .. }), "{err:?}");
        let err = cl
            .send(Request::get(base.join("always/400").unwrap()))
            .await
            .unwrap_err();
        assert!(matches!(err, HttpError::Rejected { .. }), "{err:?}");
        assert_eq!(
            c.count("always401") + c.count("always403") + c.count("always400"),
            3
        );
    }

    #[tokio::test]
    async fn malformed_json_names_the_json_path() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Item {
            id: u64,
        }
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Doc {
            items: Vec<Item>,
        }
        let (base, _) = start().await;
        let err = client(|_| {})
            .get_json::<Doc>(base.join("malformed").unwrap())
            .await
            .unwrap_err();
        match &err {
            HttpError::BadResponse {
                json_path, path, ..
            } => {
                assert_eq!(json_path, "items[1].id");
                assert_eq!(path, "/malformed");
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("items[1].id"));
    }

    #[test]
    fn empty_body_decodes_as_null_and_trailing_garbage_is_rejected() {
        let v: Option<u32> = decode_json(&Method::GET, "/p", b"").unwrap();
        assert_eq!(v, None);
        let err = decode_json::<u32>(&Method::GET, "/p", b"1 2").unwrap_err();
        assert!(matches!(err, HttpError::BadResponse { .. }));
    }

    #[tokio::test]
    async fn concurrency_cap_is_respected() {
        let (base, c) = start().await;
        let cl = client(|c| c.max_concurrency = 3);
        let url = base.join("tracked").unwrap();
        let calls = (0..12).map(|_| cl.send(Request::get(url.clone())));
        for r in futures::future::join_all(calls).await {
            r.unwrap();
        }
        assert_eq!(c.max_in_flight.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn rate_limit_paces_requests() {
        let (base, _) = start().await;
        let cl = client(|c| c.rate_limit = Some(20.0));
        let url = base.join("always/200").unwrap();
        let started = std::time::Instant::now();
        let calls = (0..5).map(|_| cl.send(Request::get(url.clone())));
        for r in futures::future::join_all(calls).await {
            r.unwrap();
        }
        // Five starts 50 ms apart span at least 200 ms.
        assert!(started.elapsed() >= Duration::from_millis(195));
    }

    #[test]
    fn sensitive_header_is_hidden_in_debug() {
        let v = sensitive_header(&SecretString::from("top-secret-key")).unwrap();
        let mut h = HeaderMap::new();
        h.insert("appkey", v);
        assert!(!format!("{h:?}").contains("top-secret-key"));
        let client = HttpClient::new(HttpConfig {
            default_headers: h,
            ..HttpConfig::default()
        })
        .unwrap();
        assert!(!format!("{client:?}").contains("top-secret-key"));
    }

    #[test]
    fn invalid_settings_are_rejected() {
        let bad = HttpConfig {
            max_concurrency: 0,
            ..HttpConfig::default()
        };
        assert!(HttpClient::new(bad).is_err());
        let bad = HttpConfig {
            rate_limit: Some(0.0),
            ..HttpConfig::default()
        };
        assert!(HttpClient::new(bad).is_err());
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(parse_retry_after(&h), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(parse_retry_after(&h), None);
    }
}

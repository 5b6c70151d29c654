//! The loopback SDK gateway: what a SecOps script's `APP_IP`/`APP_PORT` point at.
//!
//! One per daemon (started by the first `secops-script` run), bound to 127.0.0.1 only. Each
//! run gets a session: a random per-run token the script receives as its API key (`argv[1]`),
//! revoked when the run ends ([`SessionGuard`] drop). A request is matched to its session by
//! its `AppKey` header, compared in constant time; an unknown or revoked token gets 401 and a
//! warning. Job context properties (`ContextType` 3) are served from soarjobd's own state: the
//! request is handed to the run's own task, which owns the run's `JobContext` (a job changes
//! durable state only through its context). Every other `/api/external/v1/...` request is
//! forwarded to the configured SOAR with the tenant's credentials, through the client's
//! transport policy, and counted per run. The tenant key never reaches the script.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use soarjobd_clients::soar::SoarClient;
use soarjobd_core::Configured;

use super::settings::Integrations;

/// A job context property request, answered by the run's task.
pub(crate) struct ContextOp {
    pub kind: OpKind,
    pub identifier: String,
    pub key: String,
    pub value: Option<Value>,
    /// Status and JSON body of the answer.
    pub reply: oneshot::Sender<(u16, Vec<u8>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    Get,
    Set,
    TrySet,
}

/// One run's session.
pub(crate) struct Session {
    token: String,
    ops: mpsc::Sender<ContextOp>,
    /// Requests forwarded to SOAR for this run.
    pub requests: AtomicU64,
    /// The run's span, so the gateway's events about a run are in its log.
    span: tracing::Span,
    /// The answer to `GET external/v1/jobs/GetInstalledJobs`: this job instance, where
    /// TIPCommon's `Job` reads its parameter list.
    installed: Value,
    /// Bearer tokens the platform gave this run's logins (`accounts/Login` through the
    /// gateway): accepted instead of the `AppKey` until the run ends, and forwarded.
    bearers: Mutex<Vec<String>>,
}

struct Shared {
    sessions: Mutex<HashMap<u64, Arc<Session>>>,
    next: AtomicU64,
    soar: Configured<SoarClient>,
    /// Integration instances answered locally (`secops.integrations`).
    integrations: Integrations,
}

/// The running gateway.
pub(crate) struct Gateway {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

/// A run's registration; dropping it revokes the token.
pub(crate) struct SessionGuard {
    id: u64,
    shared: Arc<Shared>,
    pub session: Arc<Session>,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let mut map = self
            .shared
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.remove(&self.id);
    }
}

impl Gateway {
    /// Binds 127.0.0.1 on a free port and serves on the current runtime.
    pub async fn start(
        soar: Configured<SoarClient>,
        integrations: Integrations,
    ) -> std::io::Result<Gateway> {
        let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            sessions: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            soar,
            integrations,
        });
        let app = Router::new()
            .route("/{*rest}", any(handle))
            .with_state(shared.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the SecOps SDK gateway stopped");
            }
        });
        tracing::debug!(%addr, "SecOps SDK gateway listening");
        Ok(Gateway { addr, shared })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A new session with a fresh random token; its context requests arrive on the receiver.
    pub fn open(
        &self,
        span: tracing::Span,
        installed: Value,
    ) -> (SessionGuard, mpsc::Receiver<ContextOp>) {
        use rand::Rng;
        let bytes: [u8; 32] = rand::rng().random();
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let (tx, rx) = mpsc::channel(16);
        let session = Arc::new(Session {
            token,
            ops: tx,
            requests: AtomicU64::new(0),
            span,
            installed,
            bearers: Mutex::new(Vec::new()),
        });
        let id = self.shared.next.fetch_add(1, Ordering::Relaxed);
        self.shared
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, session.clone());
        (
            SessionGuard {
                id,
                shared: self.shared.clone(),
                session,
            },
            rx,
        )
    }
}

impl Session {
    /// The token the script gets as its API key.
    pub fn token(&self) -> &str {
        &self.token
    }
}

/// Equal in time independent of where the inputs differ (only their lengths leak, and every
/// token has the same length).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// How a request was matched to its run.
enum Auth {
    /// By the run's token in `AppKey`.
    Key,
    /// By a bearer token this run obtained by logging in: forwarded as it came.
    Bearer(HeaderValue),
}

fn bearer_of(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn find(shared: &Shared, headers: &HeaderMap) -> Option<(Arc<Session>, Auth)> {
    let given = headers.get("appkey").map(|v| v.as_bytes());
    let bearer = bearer_of(headers);
    // Lock order: `sessions`, then a session's `bearers` (the login path takes `bearers`
    // alone, never `sessions` while holding it), so the two cannot deadlock.
    let map = shared.sessions.lock().unwrap_or_else(|p| p.into_inner());
    // Every session (and every bearer) is compared, with no early exit, so timing says
    // nothing about which matched.
    let mut by_key = None;
    let mut by_bearer = None;
    for s in map.values() {
        if let Some(given) = given
            && ct_eq(s.token.as_bytes(), given)
        {
            by_key = Some(s.clone());
        }
        if let Some(b) = bearer {
            let bearers = s.bearers.lock().unwrap_or_else(|p| p.into_inner());
            for known in bearers.iter() {
                if ct_eq(known.as_bytes(), b.as_bytes()) {
                    by_bearer = Some(s.clone());
                }
            }
        }
    }
    let auth_header = || headers.get(header::AUTHORIZATION).cloned();
    match (by_key, by_bearer) {
        // The SDK's session and a login token of the same run: the token goes on.
        (Some(k), Some(b)) if Arc::ptr_eq(&k, &b) => auth_header().map(|h| (k, Auth::Bearer(h))),
        (Some(k), _) => Some((k, Auth::Key)),
        (None, Some(b)) => auth_header().map(|h| (b, Auth::Bearer(h))),
        (None, None) => None,
    }
}

fn json(status: u16, body: Vec<u8>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A refusal the gateway made itself (not the platform's answer): in the run's stored log with
/// its reason, and the answer the script gets.
fn refuse(
    session: &Session,
    status: StatusCode,
    method: &Method,
    path: &str,
    reason: &str,
) -> Response {
    tracing::warn!(parent: &session.span, %method, path, status = status.as_u16(), reason, "SecOps SDK gateway: refused a request");
    (status, reason.to_string()).into_response()
}

/// The integration identifier of a configuration request: legacy
/// `external/v1/sdk/configuration/<identifier>`, or the one-platform form's
/// `IntegrationConfiguration?identifier=<identifier>`.
fn configuration_identifier(route: &str, query: Option<&str>) -> Option<String> {
    if let Some(id) = route.strip_prefix("external/v1/sdk/configuration/")
        && !id.is_empty()
        && !id.contains('/')
    {
        return Some(percent_decode(id));
    }
    if route == "external/v1/sdk/IntegrationConfiguration" {
        return query?
            .split('&')
            .find_map(|kv| kv.strip_prefix("identifier="))
            .map(|v| percent_decode(&v.replace('+', " ")));
    }
    None
}

/// `%XX` escapes decoded (lossily as UTF-8).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
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

/// The token in a login answer: the body itself when it is a JSON string, else the first
/// string under a token-like key (`token`, `accessToken`, `access_token`, `bearerToken`).
fn login_token(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    if let Value::String(s) = &v {
        return Some(s.clone()).filter(|s| !s.is_empty());
    }
    let obj = v.as_object()?;
    obj.iter()
        .find(|(k, v)| {
            let k = k.to_ascii_lowercase().replace('_', "");
            matches!(k.as_str(), "token" | "accesstoken" | "bearertoken") && v.is_string()
        })
        .and_then(|(_, v)| v.as_str().map(str::to_string))
        .filter(|s| !s.is_empty())
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    let Some((session, auth)) = find(&shared, &headers) else {
        let reason = if headers.contains_key("appkey") {
            "unknown or expired API key"
        } else if bearer_of(&headers).is_some() {
            "unknown or expired bearer token (log in through the gateway first)"
        } else {
            "no AppKey header"
        };
        tracing::warn!(
            %method,
            path,
            reason,
            "SecOps SDK gateway: refused a request with an unknown or expired token"
        );
        // Which run sent it is unknown (its token matched none): every run open now gets the
        // refusal in its stored log, so the run that sent it has it.
        let open: Vec<Arc<Session>> = shared
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for s in &open {
            tracing::warn!(parent: &s.span, %method, path, status = 401u16, reason, open_runs = open.len(), "SecOps SDK gateway: refused a request (token of no open run; shown in every run open now)");
        }
        return (StatusCode::UNAUTHORIZED, reason).into_response();
    };
    let Some(rest) = path.strip_prefix("/api/") else {
        return refuse(
            &session,
            StatusCode::NOT_FOUND,
            &method,
            path,
            "not an /api/ path",
        );
    };
    let route = rest.trim_end_matches('/');
    let kind = match route {
        "external/v1/sdk/GetContextProperty" => Some(OpKind::Get),
        "external/v1/sdk/SetContextProperty" => Some(OpKind::Set),
        "external/v1/sdk/TrySetContextProperty" => Some(OpKind::TrySet),
        _ => None,
    };
    if let (Some(kind), &Method::POST) = (kind, &method)
        && let Ok(req) = serde_json::from_slice::<Value>(&body)
        // Job context (3) is the job's own state; case, alert, global and connector context
        // belong to the platform and are forwarded.
        && req.get("ContextType").and_then(Value::as_i64) == Some(3)
    {
        let text = |k: &str| match req.get(k) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(v) => v.to_string(),
        };
        let (reply, answer) = oneshot::channel();
        let op = ContextOp {
            kind,
            identifier: text("Identifier"),
            key: text("PropertyKey"),
            value: req.get("PropertyValue").cloned(),
            reply,
        };
        if session.ops.send(op).await.is_err() {
            return refuse(
                &session,
                StatusCode::SERVICE_UNAVAILABLE,
                &method,
                path,
                "the run is over",
            );
        }
        return match answer.await {
            Ok((status, body)) => json(status, body),
            Err(_) => refuse(
                &session,
                StatusCode::SERVICE_UNAVAILABLE,
                &method,
                path,
                "the run is over",
            ),
        };
    }
    if method == Method::GET && route == "external/v1/jobs/GetInstalledJobs" {
        // The platform does not know soarjobd's job instances: answered from the job's own
        // definition.
        return json(
            200,
            serde_json::to_vec(&session.installed).unwrap_or_default(),
        );
    }
    if method == Method::GET
        && let Some(identifier) = configuration_identifier(route, uri.query())
    {
        // The SDK's (and TIPCommon's) `get_configuration`: a locally configured instance is
        // answered here, so the integration need not be configured on the tenant.
        if let Some(params) = shared.integrations.get(&identifier) {
            tracing::debug!(parent: &session.span, integration = %identifier, "SecOps SDK gateway: integration configuration answered locally");
            return json(200, serde_json::to_vec(params).unwrap_or_default());
        }
    }
    session.requests.fetch_add(1, Ordering::Relaxed);
    let client = match shared.soar.get() {
        Ok(c) => c,
        Err(e) => {
            return refuse(
                &session,
                StatusCode::BAD_GATEWAY,
                &method,
                path,
                &format!("no SOAR to forward to: {e}"),
            );
        }
    };
    let target = match uri.query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_string(),
    };
    let login = method == Method::POST && route.eq_ignore_ascii_case("external/v1/accounts/Login");
    let authorization = match auth {
        Auth::Bearer(h) => Some(h),
        Auth::Key => None,
    };
    let answer = client
        .forward_as(method.clone(), &target, body, authorization)
        .await;
    if login && (200..300).contains(&answer.status) {
        match login_token(&answer.body) {
            Some(token) => {
                session
                    .bearers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(token);
                tracing::info!(parent: &session.span, "SecOps SDK gateway: a login's bearer token is accepted for the rest of this run");
            }
            None => {
                tracing::warn!(parent: &session.span, "SecOps SDK gateway: a login answer carried no token the gateway recognises");
            }
        }
    }
    if answer.status == 502 || answer.status >= 400 {
        tracing::info!(parent: &session.span, %method, path, status = answer.status, "SDK request forwarded; the platform (or no answer) refused it");
    } else {
        tracing::debug!(parent: &session.span, %method, path, status = answer.status, "SDK request forwarded");
    }
    json(answer.status, answer.body.to_vec())
}

#[cfg(test)]
mod tests {
    #[test]
    fn login_tokens_and_configuration_identifiers_are_read() {
        assert_eq!(
            super::login_token(br#"{"token":"t1"}"#).as_deref(),
            Some("t1")
        );
        assert_eq!(
            super::login_token(br#"{"access_token":"t2","x":1}"#).as_deref(),
            Some("t2")
        );
        assert_eq!(super::login_token(br#""t3""#).as_deref(), Some("t3"));
        assert_eq!(super::login_token(br#"{"token":""}"#), None);
        assert_eq!(super::login_token(b"not json"), None);
        assert_eq!(
            super::configuration_identifier("external/v1/sdk/configuration/Virus%20Total", None)
                .as_deref(),
            Some("Virus Total")
        );
        assert_eq!(
            super::configuration_identifier(
                "external/v1/sdk/IntegrationConfiguration",
                Some("identifier=VT%2Dv3&x=1")
            )
            .as_deref(),
            Some("VT-v3")
        );
        assert_eq!(
            super::configuration_identifier("external/v1/sdk/configuration/a/properties/b", None),
            None
        );
    }

    #[test]
    fn constant_time_equality() {
        assert!(super::ct_eq(b"abc", b"abc"));
        assert!(!super::ct_eq(b"abc", b"abd"));
        assert!(!super::ct_eq(b"abc", b"ab"));
    }
}

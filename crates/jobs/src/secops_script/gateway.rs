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
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use soarjobd_clients::soar::SoarClient;
use soarjobd_core::Configured;

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
}

struct Shared {
    sessions: Mutex<HashMap<u64, Arc<Session>>>,
    next: AtomicU64,
    soar: Configured<SoarClient>,
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
    pub async fn start(soar: Configured<SoarClient>) -> std::io::Result<Gateway> {
        let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            sessions: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            soar,
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

fn find(shared: &Shared, headers: &HeaderMap) -> Option<Arc<Session>> {
    let given = headers.get("appkey")?.as_bytes();
    let map = shared.sessions.lock().unwrap_or_else(|p| p.into_inner());
    // Every session is compared (no early exit), so timing says nothing about which matched.
    let mut found = None;
    for s in map.values() {
        if ct_eq(s.token.as_bytes(), given) {
            found = Some(s.clone());
        }
    }
    found
}

fn json(status: u16, body: Vec<u8>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    let Some(session) = find(&shared, &headers) else {
        tracing::warn!(
            %method,
            path,
            "SecOps SDK gateway: refused a request with an unknown or expired token"
        );
        return (StatusCode::UNAUTHORIZED, "unknown or expired API key").into_response();
    };
    let Some(rest) = path.strip_prefix("/api/") else {
        return (StatusCode::NOT_FOUND, "not an /api/ path").into_response();
    };
    let kind = match rest.trim_end_matches('/') {
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
            return (StatusCode::SERVICE_UNAVAILABLE, "the run is over").into_response();
        }
        return match answer.await {
            Ok((status, body)) => json(status, body),
            Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "the run is over").into_response(),
        };
    }
    if method == Method::GET && rest.trim_end_matches('/') == "external/v1/jobs/GetInstalledJobs" {
        // The platform does not know soarjobd's job instances: answered from the job's own
        // definition.
        return json(
            200,
            serde_json::to_vec(&session.installed).unwrap_or_default(),
        );
    }
    session.requests.fetch_add(1, Ordering::Relaxed);
    let client = match shared.soar.get() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(parent: &session.span, path, error = %e, "SecOps SDK gateway: no SOAR to forward to");
            return (StatusCode::BAD_GATEWAY, e.to_string()).into_response();
        }
    };
    let target = match uri.query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_string(),
    };
    let answer = client.forward(method.clone(), &target, body).await;
    tracing::debug!(parent: &session.span, %method, path, status = answer.status, "SDK request forwarded");
    json(answer.status, answer.body.to_vec())
}

#[cfg(test)]
mod tests {
    #[test]
    fn constant_time_equality() {
        assert!(super::ct_eq(b"abc", b"abc"));
        assert!(!super::ct_eq(b"abc", b"abd"));
        assert!(!super::ct_eq(b"abc", b"ab"));
    }
}

//! The loopback TC gateway: what a TcEx app's `tc_api_path` points at (spec §8).
//!
//! One per daemon (started by the first `tcex-app` run), bound to 127.0.0.1 on a free port.
//! Each run gets a session: a random per-run token the app receives as its `tc_token`, with
//! the run's deadline as its expiry, revoked when the run ends ([`SessionGuard`] drop). A
//! request is matched to its session by `Authorization: TC-Token <token>`, compared in
//! constant time against every live session; anything else gets 401 and a warning (without
//! the token). `/api/appAuth` renews a live token without moving its expiry past the run's
//! deadline. `/api/v2/...` and `/api/v3/...` are forwarded byte for byte to the configured
//! ThreatConnect, signed with the daemon's credentials through the client's transport policy,
//! and counted per run; everything else is refused, as a warning in the run's log. The real
//! credentials never reach the app.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use soarjobd_clients::threatconnect::ThreatConnectClient;
use soarjobd_core::Configured;

use crate::secops_script::ct_eq;

/// The smallest request body limit (and the room added to the client's upload limit).
const MIN_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// One run's session.
pub(crate) struct Session {
    token: String,
    /// The run's deadline (epoch seconds): the token never lives longer.
    deadline: i64,
    /// Requests forwarded to ThreatConnect for this run.
    pub requests: AtomicU64,
    /// Requests refused for this run.
    pub refused: AtomicU64,
    /// The run's span, so the gateway's events about a run are in its stored log.
    span: tracing::Span,
}

impl Session {
    pub fn token(&self) -> &str {
        &self.token
    }
}

struct Shared {
    sessions: Mutex<HashMap<u64, Arc<Session>>>,
    next: AtomicU64,
    tc: Configured<ThreatConnectClient>,
    addr: SocketAddr,
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
    pub async fn start(tc: Configured<ThreatConnectClient>) -> std::io::Result<Gateway> {
        let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            sessions: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            tc,
            addr,
        });
        // A batch upload is one body (tcex sends up to ~75 MB per createAndUpload): the
        // limit follows the ThreatConnect client's configured upload size, with room for the
        // multipart framing and the settings part.
        let limit = shared
            .tc
            .get()
            .map(|c| c.max_upload_bytes().saturating_add(MIN_BODY_LIMIT))
            .unwrap_or(MIN_BODY_LIMIT);
        let app = Router::new()
            .fallback(handle)
            .layer(axum::extract::DefaultBodyLimit::max(limit))
            .with_state(shared.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the TC gateway stopped");
            }
        });
        tracing::debug!(%addr, "TC gateway listening");
        Ok(Gateway { addr, shared })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A new session with a fresh random token (64 hex characters) living until `deadline`.
    pub fn open(&self, span: tracing::Span, deadline: i64) -> SessionGuard {
        use rand::Rng;
        let bytes: [u8; 32] = rand::rng().random();
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let session = Arc::new(Session {
            token,
            deadline,
            requests: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            span,
        });
        let id = self.shared.next.fetch_add(1, Ordering::Relaxed);
        self.shared
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, session.clone());
        SessionGuard {
            id,
            shared: self.shared.clone(),
            session,
        }
    }
}

/// The live session whose token is `given`, compared in constant time with every one (no
/// early exit, so timing says nothing about which matched).
fn find(shared: &Shared, given: &[u8]) -> Option<Arc<Session>> {
    let map = shared.sessions.lock().unwrap_or_else(|p| p.into_inner());
    let mut found = None;
    for s in map.values() {
        if ct_eq(s.token.as_bytes(), given) {
            found = Some(s.clone());
        }
    }
    found
}

fn json_answer(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn unauthorized() -> Response {
    json_answer(
        StatusCode::UNAUTHORIZED,
        json!({"status": "Failure", "message": "Unauthorized"}),
    )
}

fn refused(status: StatusCode, why: &str) -> Response {
    json_answer(status, json!({"status": "Failure", "message": why}))
}

/// Whether a raw path has a `.` or `..` segment, raw or percent-encoded (also when an encoded
/// slash or backslash would make one on the other side).
pub(crate) fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|seg| {
        let decoded = percent_decode(seg);
        decoded
            .split(['/', '\\'])
            .any(|part| part == "." || part == "..")
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or(""), 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of `name` in a raw query string (not decoded: a token is hex).
fn query_value<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    // Token renewal, as tcex sends it: no Authorization header, the token in the query.
    if path == "/api/appAuth" && uri.scheme().is_none() {
        let given = uri
            .query()
            .and_then(|q| query_value(q, "expiredToken"))
            .unwrap_or("");
        return match find(&shared, given.as_bytes()) {
            Some(s) => {
                tracing::debug!(parent: &s.span, "TC gateway: token renewed (expiry stays the run's deadline)");
                json_answer(
                    StatusCode::OK,
                    json!({"apiToken": s.token, "apiTokenExpires": s.deadline}),
                )
            }
            None => {
                tracing::warn!("TC gateway: refused a token renewal for an unknown or ended run");
                unauthorized()
            }
        };
    }
    let session = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"TC-Token "))
        .and_then(|t| find(&shared, t));
    let Some(session) = session else {
        let scheme = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_whitespace().next())
            .unwrap_or("none");
        tracing::warn!(
            %method,
            path,
            authorization = scheme,
            "TC gateway: refused a request without a live run's token"
        );
        return unauthorized();
    };
    let refuse = |status: StatusCode, why: &str| {
        session.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(parent: &session.span, %method, path, reason = why, "TC gateway: request refused");
        refused(status, why)
    };
    if uri.scheme().is_some() || uri.authority().is_some() {
        return refuse(
            StatusCode::BAD_REQUEST,
            "absolute-form request targets are not forwarded",
        );
    }
    let host_ok = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| {
            h == shared.addr.to_string() || h == format!("localhost:{}", shared.addr.port())
        });
    if !host_ok {
        return refuse(StatusCode::BAD_REQUEST, "the Host is not the TC gateway");
    }
    if has_dot_segment(path) {
        return refuse(StatusCode::BAD_REQUEST, "`.` and `..` segments are refused");
    }
    let Some(rest) = path.strip_prefix("/api") else {
        return refuse(
            StatusCode::NOT_FOUND,
            "only /api/v2/ and /api/v3/ are forwarded",
        );
    };
    if !(rest.starts_with("/v2/") || rest.starts_with("/v3/")) {
        return refuse(
            StatusCode::NOT_FOUND,
            "only /api/v2/ and /api/v3/ are forwarded",
        );
    }
    let client = match shared.tc.get() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(parent: &session.span, path, error = %e, "TC gateway: no ThreatConnect to forward to");
            return refused(StatusCode::BAD_GATEWAY, &e.to_string());
        }
    };
    session.requests.fetch_add(1, Ordering::Relaxed);
    let content_type = headers.get(header::CONTENT_TYPE).cloned();
    match client
        .forward(method.clone(), rest, uri.query(), content_type, body)
        .await
    {
        Ok(answer) => {
            tracing::debug!(parent: &session.span, %method, path, status = answer.status, "TC request forwarded");
            let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut resp = (status, answer.body).into_response();
            let h = resp.headers_mut();
            h.remove(header::CONTENT_TYPE);
            if let Some(ct) = answer.content_type {
                h.insert(header::CONTENT_TYPE, ct);
            }
            if let Some(ce) = answer.content_encoding {
                h.insert(header::CONTENT_ENCODING, ce);
            }
            resp
        }
        Err(e) => {
            tracing::warn!(parent: &session.span, %method, path, error = %e, "TC gateway: the request got no answer from ThreatConnect");
            refused(StatusCode::BAD_GATEWAY, &e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_raw_or_encoded() {
        assert!(has_dot_segment("/api/v2/../internal"));
        assert!(has_dot_segment("/api/v2/%2e%2E/internal"));
        assert!(has_dot_segment("/api/v2/./x"));
        assert!(has_dot_segment("/api/v2/x%2f..%2fy"));
        assert!(has_dot_segment("/api/v2/%2E"));
        assert!(!has_dot_segment(
            "/api/v2/indicators/urls/http%3A%2F%2Fexample.com%2Fa.b"
        ));
        assert!(!has_dot_segment("/api/v2/types/indicatorTypes"));
        assert_eq!(
            query_value("a=1&expiredToken=abc", "expiredToken"),
            Some("abc")
        );
    }
}

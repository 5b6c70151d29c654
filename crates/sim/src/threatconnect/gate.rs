//! The middleware in front of every API route: counts the request (per matched route), then
//! applies latency, the next injected status, and auth (HMAC over the request-target as
//! received, or `TC-Token`), in that order.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::Shared;
use super::state::SimState;
use super::wire::failure;
use crate::faults;

/// How far the `Timestamp` header may be from the server clock.
const TIMESTAMP_WINDOW_SECS: i64 = 300;

pub(super) async fn gate(State(st): State<Shared>, req: Request, next: Next) -> Response {
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
    faults::sleep_ms(latency).await;
    // `0` in `fail_next` lets its request through, to aim at a later one.
    if let Some(code) = fault.filter(|c| *c != 0) {
        let resp = failure(faults::status(code), "injected fault");
        return if code == 429 {
            faults::with_retry_after(resp, HeaderValue::from_static("0"))
        } else {
            resp
        };
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

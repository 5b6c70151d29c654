//! The middleware in front of every API route: counts the request, then applies latency, the
//! rate limit, auth (`AppKey`; one-platform routes also need `Authorization: Bearer`),
//! `?format=snake`, overrides and injected faults, in that order.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::Shared;
use super::endpoints::bad_request;
use crate::faults::{self, Fault};

/// The endpoint name of an API path (for stats, overrides and fault handling), and whether it
/// writes.
fn classify(method: &Method, path: &str) -> Option<(&'static str, bool, bool)> {
    const NAMES: [(&str, bool); 8] = [
        ("GetCasesIdByFilter", false),
        ("AlertsTicketIdsByCaseId", false),
        ("CaseFullDetails", false),
        ("GetCaseComments", false),
        ("AddTag", true),
        ("GetContextProperty", false),
        ("SetContextProperty", true),
        ("TrySetContextProperty", true),
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

/// Applied to every API route: latency, rate limit, auth, `?format=snake`, overrides, faults.
pub(super) async fn gate(State(st): State<Shared>, req: Request, next: Next) -> Response {
    let Some((endpoint, writes, one_platform)) = classify(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    st.count_request(endpoint);

    st.latency.wait().await;
    if let Some(wait) = st.rate_limit.check() {
        st.bump(|s| s.rate_limited += 1);
        return faults::with_retry_after(
            (StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded").into_response(),
            faults::retry_after(wait),
        );
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

    // The context property endpoints are the SDK's exception: PascalCase, no `format`.
    let pascal = endpoint.ends_with("ContextProperty");
    let snake = pascal
        || req.uri().query().is_some_and(|q| {
            url::form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "format" && v == "snake")
        });
    if !snake {
        return bad_request(
            &st,
            "this simulator only speaks ?format=snake (without it the platform answers PascalCase)",
        );
    }

    if let Some((status, body)) = st.take_override(endpoint) {
        let status = faults::status(status);
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
            faults::with_retry_after(
                (StatusCode::TOO_MANY_REQUESTS, "injected fault").into_response(),
                HeaderValue::from_static("1"),
            )
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
            faults::slow(st.slow.get(), req, next).await
        }
    }
}

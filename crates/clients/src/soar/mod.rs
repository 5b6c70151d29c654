//! The Google SecOps SOAR (Siemplify) API client: the SDK calls a scheduled job needs, in the
//! legacy (`AppKey`) or one-platform (bearer token) form, following
//! `specs/soar-api.md` to the key and the query string so the same client works against a
//! real tenant and against the simulator `soarjobd_sim::soar` (a dev-dependency).
//!
//! Every request goes through [`crate::http`], which owns retries, the concurrency cap, the rate
//! limit and the in-doubt rule for writes.

mod client;
mod config;
mod filter;
mod model;

#[cfg(test)]
mod tests;

use reqwest::{Method, StatusCode};

use crate::http::HttpError;

pub use client::{
    APP_KEY_HEADER, CommentTimeField, CommentsSince, Endpoint, Forwarded, SoarClient,
};
pub use config::{ApiFlavor, SoarConfig};
pub use filter::{
    CASE_FILTER_MAX_RESULTS, CaseFilter, CaseFilterBody, CaseStatusFilter, DEFAULT_MAX_RESULTS,
    DEFAULT_START_WINDOW_MS, FilterOperator, SortBy, SortOrder,
};
pub use model::{Alert, CaseComment, CaseDetails, Entity, entity_types};

/// What a failed write tells about its effect on the platform.
///
/// The spec (§1.4) promises no more than "any non-2xx status is an error"; this is the reading
/// the jobs rely on, chosen to be safe on the real platform, not only on the simulator:
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteFate {
    /// Not applied: refused before processing (`429`, `4xx`) or never sent (a connection that
    /// failed). Sending it again cannot write twice.
    NotApplied,
    /// Ended by the server's own error answer (`500`, or another 5xx that is not a gateway's)
    /// after it received the request: its work on the request is over, but the write may have
    /// been applied before the error (the simulator applies such a write whole or not at
    /// all). Read the remote state now, then write again only if the effect is absent.
    Answered,
    /// No answer: a timeout or reset after sending, or a gateway's `502/503/504` for a server
    /// that may still be working on it. The write can still land later, so the remote state
    /// is only conclusive once it had time to settle.
    Unanswered,
}

/// What went wrong talking to SecOps SOAR. Messages name the method and path of the failed
/// call, never the API key, token or query string.
#[derive(Debug, thiserror::Error)]
pub enum SoarError {
    /// The `soar` config section is incomplete or wrong.
    #[error("soar config: {0}")]
    Config(String),
    /// The case filter failed the SDK's client-side validation; nothing was sent.
    #[error("invalid case filter: {0}")]
    InvalidFilter(String),
    /// The platform refused the credentials (401/403).
    #[error(
        "{method} {path}: SecOps SOAR refused the credentials (HTTP {status}); check soar.app_key \
         (and soar.bearer_token with api: one_platform)"
    )]
    Auth {
        method: Method,
        path: String,
        status: StatusCode,
    },
    /// Every other transport outcome: not found, rate limited, server error, in doubt, bad
    /// response (with its JSON path), transport failure.
    #[error(transparent)]
    Http(HttpError),
}

impl From<HttpError> for SoarError {
    fn from(e: HttpError) -> SoarError {
        match e {
            HttpError::Auth {
                method,
                path,
                status,
            } => SoarError::Auth {
                method,
                path,
                status,
            },
            other => SoarError::Http(other),
        }
    }
}

impl SoarError {
    /// A write was sent but its outcome is unknown: read the case before writing again.
    pub fn is_in_doubt(&self) -> bool {
        matches!(self, SoarError::Http(e) if e.is_in_doubt())
    }

    /// What this error says about a write (AddComment) that failed: see [`WriteFate`].
    pub fn write_fate(&self) -> WriteFate {
        match self {
            SoarError::Http(e) if e.is_in_doubt() => match e.in_doubt_answer() {
                Some(_) => WriteFate::Answered,
                None => WriteFate::Unanswered,
            },
            // Another 5xx of the server's own (501, 507...): the transport does not call it
            // in doubt, but nothing promises the write was not applied before it; reading
            // first costs one request.
            SoarError::Http(HttpError::Server { .. }) => WriteFate::Answered,
            _ => WriteFate::NotApplied,
        }
    }

    /// For a write that was [`WriteFate::NotApplied`]: whether sending it again may succeed
    /// where this attempt did not (a rate limit outlasting the transport's retries, a server
    /// error, a connection that never reached the server). A refused request (400, 404,
    /// 409...) would be refused again.
    pub fn is_transient(&self) -> bool {
        match self {
            SoarError::Http(e) => matches!(
                e,
                HttpError::RateLimited { .. }
                    | HttpError::Server { .. }
                    | HttpError::Transport { .. }
            ),
            _ => false,
        }
    }

    pub fn is_auth(&self) -> bool {
        matches!(self, SoarError::Auth { .. })
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, SoarError::Http(HttpError::NotFound { .. }))
    }

    /// The transport error underneath, if any.
    pub fn http(&self) -> Option<&HttpError> {
        match self {
            SoarError::Http(e) => Some(e),
            _ => None,
        }
    }
}

//! The reader/operator check of every protected route, once: axum extractors that resolve the
//! caller ([`crate::auth::Auth::caller`]: bearer token or session) before the handler runs.
//!
//! [`Reader`] needs either token (or a session), [`Operator`] the operator's; without tokens
//! configured every caller is the local operator. What a refusal looks like is the route's
//! face: [`Api`] answers with the JSON error (401 with `WWW-Authenticate`, or 403), the status
//! page's `Page` (in `page`, which implements [`Face`] for it) sends a reader to the login form and shows an operator's refusal as an error page, with
//! the same status. The refusal counting and rate limiting of failed credentials stay in
//! `guard`, which sees these answers' statuses like any other.

use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::IntoResponse;

use crate::Shared;
use crate::auth::{Caller, Role};
use crate::error::ApiError;

/// How a route answers a caller it refuses.
pub trait Face: 'static {
    type Rejection: IntoResponse;
    /// The answer to a caller refused `e` on a route that needs `need`.
    fn refuse(e: ApiError, need: Role) -> Self::Rejection;
}

/// The JSON API: the error as JSON.
pub struct Api;

impl Face for Api {
    type Rejection = ApiError;

    fn refuse(e: ApiError, _need: Role) -> ApiError {
        e
    }
}

/// A caller allowed to read (any token or session).
pub struct Reader<F: Face = Api> {
    pub caller: Caller,
    face: PhantomData<fn() -> F>,
}

/// A caller allowed to act: run, cancel, pause, resume (the operator token or session).
pub struct Operator<F: Face = Api> {
    pub caller: Caller,
    face: PhantomData<fn() -> F>,
}

impl<F: Face> FromRequestParts<Arc<Shared>> for Reader<F> {
    type Rejection = F::Rejection;

    async fn from_request_parts(parts: &mut Parts, s: &Arc<Shared>) -> Result<Self, F::Rejection> {
        match s.auth.caller(&parts.headers) {
            Ok(caller) => Ok(Reader {
                caller,
                face: PhantomData,
            }),
            Err(e) => Err(F::refuse(e, Role::Read)),
        }
    }
}

impl<F: Face> FromRequestParts<Arc<Shared>> for Operator<F> {
    type Rejection = F::Rejection;

    async fn from_request_parts(parts: &mut Parts, s: &Arc<Shared>) -> Result<Self, F::Rejection> {
        match s.auth.operator(&parts.headers) {
            Ok(caller) => Ok(Operator {
                caller,
                face: PhantomData,
            }),
            Err(e) => Err(F::refuse(e, Role::Operator)),
        }
    }
}

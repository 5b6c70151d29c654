//! The status page: server-rendered HTML, readable without JavaScript (a few lines of it
//! reload the page every few seconds). Every value is escaped.
//!
//! With tokens configured, the page is read with a session the login form starts (its cookie:
//! HttpOnly, SameSite=Strict, `Secure` behind an HTTPS front; see `auth`), ended by the
//! Sign out button; its buttons are plain forms (an operator's session, or none needed on a
//! loopback server without tokens).
//!
//! Its only inline style and script are allowed by hash in the Content-Security-Policy every
//! response carries ([`crate::html::csp`]): nothing injected could run, and no other site may
//! frame it. The jobs list is [`crate::jobs_page`].

use std::sync::Arc;
use std::time::Instant;

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::Shared;
use crate::api;
use crate::auth::{COOKIE_NAME, Role};
use crate::error::ApiError;
use crate::extract::{Face, Operator};
use crate::html::{esc, layout, seg};

/// An error as a page (the status stays the error's).
/// The status page: a reader without a session goes to the login form; a refused action is
/// an error page.
pub struct Page;

impl Face for Page {
    type Rejection = Response;

    fn refuse(e: ApiError, need: Role) -> Response {
        match need {
            Role::Read => Redirect::to("/login").into_response(),
            Role::Operator => error_page(e),
        }
    }
}

pub(crate) fn error_page(e: ApiError) -> Response {
    let body = format!("<h1>{}</h1><p>{}</p>", e.status.as_u16(), esc(&e.message));
    (e.status, layout("Error", &body, false, false)).into_response()
}

pub async fn run_now(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    Operator { caller, .. }: Operator<Page>,
) -> Response {
    match api::start_run(&s, &caller, &id, Some("status page")).await {
        Ok(run_id) => Redirect::to(&format!("/runs/{run_id}")).into_response(),
        Err(e) => error_page(e),
    }
}

pub async fn cancel(
    State(s): State<Arc<Shared>>,
    Path(run_id): Path<i64>,
    Operator { caller, .. }: Operator<Page>,
) -> Response {
    match api::cancel_run(&s, &caller, run_id, Some("status page")).await {
        Ok(()) => Redirect::to(&format!("/runs/{run_id}")).into_response(),
        Err(e) => error_page(e),
    }
}

pub async fn login_form() -> Html<String> {
    layout(
        "Sign in",
        "<h1>Sign in</h1><form method=\"post\" action=\"/login\"><label>Token \
         <input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"current-password\"></label> \
         <button type=\"submit\" id=\"sign-in\">Sign in</button></form>\
         <p class=\"muted\">The read token shows the page; the operator token also runs and cancels jobs.</p>",
        false,
        false,
    )
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
}

pub async fn login(State(s): State<Arc<Shared>>, Form(f): Form<LoginForm>) -> Response {
    let Some(caller) = s.auth.tokens.login(&f.token) else {
        let body = "<h1>Sign in</h1><p>That token is not valid.</p><p><a href=\"/login\">Try again</a></p>";
        return (
            StatusCode::UNAUTHORIZED,
            layout("Sign in", body, false, false),
        )
            .into_response();
    };
    let id = s.auth.sessions.start(caller, Instant::now());
    let cookie = session_cookie(&s, &id, s.auth.sessions.lifetime().as_secs());
    let mut r = Redirect::to("/").into_response();
    r.headers_mut().insert(header::SET_COOKIE, cookie);
    r
}

/// Ends the session of the request (if any), clears its cookie and goes to the login form.
pub async fn logout(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(id) = crate::auth::session_cookie(&headers) {
        s.auth.sessions.end(&id);
    }
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&s, "", 0));
    r
}

/// The session cookie: HttpOnly (no script reads it), SameSite=Strict (no other site's request
/// carries it), `Secure` behind an HTTPS front, gone after `max_age` seconds (0: at once).
fn session_cookie(s: &Shared, id: &str, max_age: u64) -> HeaderValue {
    let secure = if s.https { "; Secure" } else { "" };
    let v =
        format!("{COOKIE_NAME}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}");
    // The id is hex: always a valid header value.
    HeaderValue::from_str(&v).expect("a cookie of hex digits")
}

pub async fn pause(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    Operator { caller, .. }: Operator<Page>,
) -> Response {
    match api::pause_job(&s, &caller, &id, Some("status page")).await {
        Ok(_) => Redirect::to(&format!("/jobs/{}", seg(&id))).into_response(),
        Err(e) => error_page(e),
    }
}

pub async fn resume(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    Operator { caller, .. }: Operator<Page>,
) -> Response {
    match api::resume_job(&s, &caller, &id, false, None).await {
        Ok(_) => Redirect::to(&format!("/jobs/{}", seg(&id))).into_response(),
        Err(e) => error_page(e),
    }
}

//! The status page: server-rendered HTML, readable without JavaScript (a few lines of it
//! reload the page every few seconds). Every value is escaped.
//!
//! With tokens configured, the page is read with a session the login form starts (its cookie:
//! HttpOnly, SameSite=Strict, `Secure` behind an HTTPS front; see `auth`), ended by the
//! Sign out button; its buttons are plain forms (an operator's session, or none needed on a
//! loopback server without tokens).
//!
//! Its only inline style and script are allowed by hash in the Content-Security-Policy every
//! response carries ([`csp`]): nothing injected could run, and no other site may frame it.

use std::fmt::Write as _;
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use soarjobd_core::definition::JobDefinition;
use soarjobd_core::store::{RunRecord, RunStatus};
use soarjobd_engine::format_run_log_line as format_line;

use crate::Shared;
use crate::api::{self, RunsQuery};
use crate::auth::{COOKIE_NAME, Role};
use crate::error::ApiError;
use crate::extract::{Face, Operator, Reader};

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A path segment (a job id) for a link.
fn seg(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1d2430}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.35rem .6rem;\
border-bottom:1px solid #dde2ea;vertical-align:top}th{background:#f3f5f8}\
.s-succeeded{color:#17803d}.s-failed,.s-timed_out,.s-interrupted{color:#b42318;font-weight:600}\
.s-running{color:#175cd3}.s-partial,.s-cancelled,.s-skipped{color:#b54708}\
form{display:inline}button{cursor:pointer}pre{background:#f6f8fa;padding:.6rem;overflow:auto}\
code{font-size:.9em}.muted{color:#667085}";

/// Reloads the page every 5 s while the tab is visible; the page works the same without it.
const SCRIPT: &str = "setInterval(function(){if(document.visibilityState==='visible')\
                      location.reload()},5000)";

/// The Content-Security-Policy of every response: nothing but the page's own style and script
/// (by hash), forms posting to this server only, never framed.
pub fn csp() -> HeaderValue {
    static CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
        use base64::Engine as _;
        use sha2::Digest as _;
        let hash = |s: &str| {
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(s.as_bytes()))
        };
        let policy = format!(
            "default-src 'none'; style-src 'sha256-{}'; script-src 'sha256-{}'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            hash(STYLE),
            hash(SCRIPT)
        );
        HeaderValue::from_str(&policy).expect("a header value")
    });
    CSP.clone()
}

/// A page; `sign_out`: show the Sign out button (tokens are configured).
fn layout(title: &str, body: &str, refresh: bool, sign_out: bool) -> Html<String> {
    let script = if refresh {
        format!("<script>{SCRIPT}</script>")
    } else {
        String::new()
    };
    let sign_out = if sign_out {
        " · <form method=\"post\" action=\"/logout\"><button type=\"submit\" id=\"sign-out\">Sign out</button></form>"
    } else {
        ""
    };
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} · soarjobd</title>\
         <meta name=\"viewport\" content=\"width=device-width\"><style>{STYLE}</style></head><body>\
         <p class=\"muted\"><a href=\"/\">soarjobd</a> {} · <a href=\"/metrics\">metrics</a> · \
         <a href=\"/api/v1/jobs\">API</a>{sign_out}</p>{body}{script}</body></html>",
        esc(title),
        esc(env!("CARGO_PKG_VERSION")),
    ))
}

fn when(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "<span class=\"muted\">never</span>".into(),
        |t| {
            format!(
                "<time datetime=\"{0}\">{1}</time>",
                esc(&t.to_rfc3339()),
                esc(&t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            )
        },
    )
}

fn status_cell(s: RunStatus) -> String {
    format!("<span class=\"s-{0}\">{0}</span>", s.as_str())
}

fn duration(r: &RunRecord) -> String {
    r.duration_ms.map_or_else(String::new, |ms| {
        if ms < 10_000 {
            format!("{ms} ms")
        } else {
            format!("{:.1} s", ms as f64 / 1000.0)
        }
    })
}

/// The job's buttons: Run now, and Pause or Resume (operators only).
fn buttons(def: &JobDefinition, role: Role, paused: bool) -> String {
    if role != Role::Operator {
        return String::new();
    }
    let id = seg(&def.id);
    let toggle = if paused {
        format!(
            "<form method=\"post\" action=\"/jobs/{id}/resume\"><button type=\"submit\" class=\"resume\">Resume</button></form>"
        )
    } else {
        format!(
            "<form method=\"post\" action=\"/jobs/{id}/pause\"><button type=\"submit\" class=\"pause\">Pause</button></form>"
        )
    };
    format!(
        "<form method=\"post\" action=\"/jobs/{id}/run\"><button type=\"submit\" class=\"run-now\">Run now</button></form> {toggle}"
    )
}

pub async fn index(State(s): State<Arc<Shared>>, reader: Reader<Page>) -> Response {
    let role = reader.caller.role;
    let view = s.control.status.jobs();
    let last = s.control.store.last_runs().await.unwrap_or_default();
    let pauses = s.pauses().await.unwrap_or_default();
    let now = Utc::now();
    let mut rows = String::new();
    for def in &view.jobs {
        let runs = s.metrics.job_runs(&def.id);
        let last = last.iter().find(|r| r.job_id == def.id);
        let paused = pauses.contains_key(&def.id);
        let state = match (def.enabled, paused) {
            (false, _) => "disabled",
            (true, true) => "paused",
            (true, false) => "enabled",
        };
        let next = (def.enabled && !paused)
            .then(|| {
                def.schedule
                    .next_tick_after(now)
                    .map(|t| def.schedule.fire_at(&def.id, t))
            })
            .flatten();
        let _ = write!(
            rows,
            "<tr data-job=\"{id}\"><td><a href=\"/jobs/{seg}\">{name}</a><br><code class=\"muted\">{id}</code></td>\
             <td>{schedule}</td><td>{state}</td><td>{last_status}</td><td>{last_duration}</td>\
             <td>{last_success}</td><td>{next}</td><td>{failures}</td><td>{button}</td></tr>",
            id = esc(&def.id),
            seg = seg(&def.id),
            name = esc(&def.name),
            schedule = esc(&def.schedule.describe()),
            last_status = last.map_or_else(
                || "<span class=\"muted\">none</span>".into(),
                |r| format!("<a href=\"/runs/{}\">{}</a>", r.id, status_cell(r.status))
            ),
            last_duration = last.map(duration).unwrap_or_default(),
            last_success = when(runs.last_success),
            next = when(next),
            failures = runs.consecutive_failures,
            button = buttons(def, role, paused),
        );
    }
    let mut invalid = String::new();
    if !view.invalid.is_empty() {
        invalid.push_str("<h2>Invalid job files</h2><ul>");
        for (f, e) in &view.invalid {
            let _ = write!(
                invalid,
                "<li><code>{}</code><pre>{}</pre></li>",
                esc(&f.display().to_string()),
                esc(e)
            );
        }
        invalid.push_str("</ul>");
    }
    let body = format!(
        "<h1>Jobs</h1><p class=\"muted\">{} loaded · {} running · as of {}</p><table id=\"jobs\"><thead><tr>\
         <th>Job</th><th>Schedule</th><th>State</th><th>Last run</th><th>Duration</th>\
         <th>Last success</th><th>Next fire</th><th>Failures in a row</th><th></th></tr></thead>\
         <tbody>{rows}</tbody></table>{invalid}",
        view.jobs.len(),
        s.control.running_count(),
        when(Some(now)),
    );
    layout("Jobs", &body, true, s.auth.required()).into_response()
}

pub async fn job(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    reader: Reader<Page>,
) -> Response {
    let role = reader.caller.role;
    let def = match api::find_job(&s, &id) {
        Ok(d) => d,
        Err(e) => return error_page(e),
    };
    let runs = match api::job_runs_page(
        &s,
        &id,
        &RunsQuery {
            limit: Some(100),
            before: None,
        },
    )
    .await
    {
        Ok(r) => r,
        Err(e) => return error_page(e),
    };
    let mut rows = String::new();
    for r in &runs {
        let _ = write!(
            rows,
            "<tr data-run=\"{id}\"><td><a href=\"/runs/{id}\">{id}</a></td><td>{status}</td><td>{trigger}</td>\
             <td>{scheduled}</td><td>{started}</td><td>{duration}</td><td>{message}</td></tr>",
            id = r.id,
            status = status_cell(r.status),
            trigger = r.trigger.as_str(),
            scheduled = when(Some(r.scheduled_at)),
            started = when(Some(r.started_at)),
            duration = duration(r),
            message = esc(r.message.as_deref().unwrap_or("")),
        );
    }
    let info = s.metrics.job_runs(&def.id);
    let pauses = s.pauses().await.unwrap_or_default();
    let pause = pauses.get(&def.id);
    let paused = pause.is_some();
    let pause_note = pause.map_or_else(String::new, |p| {
        format!(
            "<p id=\"pause\">Paused since {} by <code>{}</code>: {}</p>",
            when(Some(p.since)),
            esc(&p.actor),
            esc(p.reason.as_deref().unwrap_or("no reason given"))
        )
    });
    let body = format!(
        "<h1>{name}</h1><p>{desc}</p><p><code>{id}</code> · job <code>{imp}</code> · {schedule} · \
         overlap {overlap:?} · timeout {timeout} s · {enabled} · failures in a row: {failures} · \
         last success: {success}</p>{pause_note}<p>{button}</p><h2>Runs</h2><table id=\"runs\"><thead><tr><th>Run</th>\
         <th>Status</th><th>Trigger</th><th>Tick</th><th>Started</th><th>Duration</th><th>Message</th>\
         </tr></thead><tbody>{rows}</tbody></table>",
        name = esc(&def.name),
        desc = esc(&def.description),
        id = esc(&def.id),
        imp = esc(&def.implementation),
        schedule = esc(&def.schedule.describe()),
        overlap = def.overlap,
        timeout = def.timeout.as_secs(),
        enabled = if !def.enabled {
            "disabled"
        } else if paused {
            "paused"
        } else {
            "enabled"
        },
        failures = info.consecutive_failures,
        success = when(info.last_success),
        button = buttons(&def, role, paused),
    );
    layout(&def.name, &body, true, s.auth.required()).into_response()
}

pub async fn run(
    State(s): State<Arc<Shared>>,
    Path(run_id): Path<i64>,
    reader: Reader<Page>,
) -> Response {
    let role = reader.caller.role;
    let r = match api::get_run(&s, run_id).await {
        Ok(r) => r,
        Err(e) => return error_page(e),
    };
    let cancel = if r.status == RunStatus::Running && role == Role::Operator {
        format!(
            "<form method=\"post\" action=\"/runs/{}/cancel\"><button type=\"submit\">Cancel</button></form>",
            r.id
        )
    } else {
        String::new()
    };
    let logs = match api::log_lines(&s, r.id, 0, api::MAX_LOG_LINES).await {
        Ok(lines) if lines.is_empty() => {
            "<p class=\"muted\" id=\"logs\">No log lines stored (yet).</p>".to_string()
        }
        Ok(lines) => {
            let text: Vec<String> = lines.iter().map(format_line).collect();
            format!("<pre id=\"logs\">{}</pre>", esc(&text.join("\n")))
        }
        Err(e) => format!(
            "<p id=\"logs\">Cannot read the logs: {}</p>",
            esc(&e.message)
        ),
    };
    let body = format!(
        "<h1>Run {id} of <a href=\"/jobs/{seg}\">{job}</a></h1><p id=\"run-status\">{status} {cancel}</p>\
         <table><tr><th>Trigger</th><td>{trigger}</td></tr><tr><th>Tick</th><td>{scheduled}</td></tr>\
         <tr><th>Started</th><td>{started}</td></tr><tr><th>Finished</th><td>{finished}</td></tr>\
         <tr><th>Duration</th><td>{duration}</td></tr><tr><th>Message</th><td>{message}</td></tr>\
         <tr><th>Error</th><td><pre>{error}</pre></td></tr><tr><th>Stats</th><td><code>{stats}</code></td></tr></table>\
         <h2>Logs</h2>{logs}",
        id = r.id,
        seg = seg(&r.job_id),
        job = esc(&r.job_id),
        status = status_cell(r.status),
        trigger = r.trigger.as_str(),
        scheduled = when(Some(r.scheduled_at)),
        started = when(Some(r.started_at)),
        finished = when(r.finished_at),
        duration = duration(&r),
        message = esc(r.message.as_deref().unwrap_or("")),
        error = esc(r.error.as_deref().unwrap_or("")),
        stats = esc(&r.stats.to_string()),
    );
    layout(
        &format!("Run {}", r.id),
        &body,
        r.status == RunStatus::Running,
        s.auth.required(),
    )
    .into_response()
}

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

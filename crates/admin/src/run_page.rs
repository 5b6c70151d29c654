//! The run page (`/runs/{id}`): the run's facts, its stats as a table, its stored log with the
//! levels coloured, a search within the log, and Cancel while it runs (the operator's, as the
//! API's cancel: a plain form).
//!
//! While the run goes on, the log follows live: the page's script opens a server-sent events
//! stream (`/runs/{id}/events`, [`events`]) that sends each new stored line as it is written
//! and one `end` event once the run has ended and its last lines are in; the script then
//! reloads the page once (final stats). Without JavaScript or `EventSource`, the page reloads
//! every few seconds instead. The search is a GET parameter (`q`, answered by the server);
//! with the script it also filters as one types, new lines included.
//!
//! The stream is read from the store (the run-log writer flushes every
//! [`soarjobd_engine::ops::runlog::FLUSH_EVERY`]), so it shows exactly what the API and a
//! later visit show, secrets redacted as stored; it works for a run of another replica too.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use soarjobd_core::store::RunStatus;
use soarjobd_core::store::ops::RunLogLine;
use soarjobd_engine::{RUN_LOG_FLUSH_EVERY as FLUSH_EVERY, format_run_log_line as format_line};
use tokio::time::Instant;

use crate::Shared;
use crate::api;
use crate::auth::Role;
use crate::extract::Reader;
use crate::html::{Script, esc, layout_with, millis, seg, when, when_in};
use crate::page::{Page, error_page};

/// How often a stream looks for new lines and for the run's end.
const POLL: Duration = Duration::from_millis(250);
/// After the run's row is final, how long a stream keeps reading lines the writer may still
/// flush (its last batch) before it sends `end`.
const TAIL: Duration = Duration::from_millis(3 * FLUSH_EVERY.as_millis() as u64);
/// A stream ends after this long; the browser's `EventSource` reconnects by itself with
/// `Last-Event-ID` and the stream goes on from there.
const MAX_STREAM: Duration = Duration::from_secs(600);
/// Lines read per store query.
const BATCH: u32 = 500;

#[derive(Debug, Default, Deserialize)]
pub struct RunQuery {
    /// Show only the log lines containing this text (case-insensitive).
    pub q: Option<String>,
}

/// A level as a class name: letters only.
fn level_class(level: &str) -> String {
    level
        .chars()
        .filter(char::is_ascii_alphabetic)
        .collect::<String>()
        .to_ascii_uppercase()
}

/// One log line as the page shows it (and as the script builds it from an event).
fn line_html(out: &mut String, l: &RunLogLine) {
    let _ = write!(
        out,
        "<div class=\"l l-{}\" data-seq=\"{}\">{}</div>",
        level_class(&l.level),
        l.seq,
        esc(&format_line(l))
    );
}

/// The stats object as a table (nested values as JSON).
fn stats_table(stats: &Value) -> String {
    let Value::Object(m) = stats else {
        return format!("<code>{}</code>", esc(&stats.to_string()));
    };
    if m.is_empty() {
        return "<span class=\"muted\">none</span>".into();
    }
    let mut out = String::from(
        "<table id=\"stats\" class=\"kv\"><thead><tr><th scope=\"col\">Counter</th><th scope=\"col\">Value</th></tr></thead><tbody>",
    );
    for (k, v) in m {
        let v = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let _ = write!(
            out,
            "<tr><th scope=\"row\">{}</th><td>{}</td></tr>",
            esc(k),
            esc(&v)
        );
    }
    out.push_str("</tbody></table>");
    out
}

pub async fn run(
    State(s): State<Arc<Shared>>,
    Path(run_id): Path<i64>,
    Query(query): Query<RunQuery>,
    reader: Reader<Page>,
) -> Response {
    let role = reader.caller.role;
    let r = match api::get_run(&s, run_id).await {
        Ok(r) => r,
        Err(e) => return error_page(e),
    };
    let running = r.status == RunStatus::Running;
    // Times in UTC, the job's zone on hover (when the job is still loaded).
    let def = api::find_job(&s, &r.job_id).ok();
    let at = |t| match &def {
        Some(d) => when_in(t, &d.schedule),
        None => when(t),
    };
    let cancel = if running && role == Role::Operator {
        format!(
            "<form method=\"post\" action=\"/runs/{}/cancel\"><button type=\"submit\" id=\"cancel\">Cancel</button></form>",
            r.id
        )
    } else {
        String::new()
    };
    let needle = query.q.as_deref().unwrap_or("").trim().to_string();
    let lower = needle.to_lowercase();
    let (logs, last_seq) = match api::log_lines(&s, r.id, 0, api::MAX_LOG_LINES).await {
        Ok(lines) => {
            let mut html = String::with_capacity(lines.len() * 120);
            let mut shown = 0;
            for l in &lines {
                if lower.is_empty() || format_line(l).to_lowercase().contains(&lower) {
                    line_html(&mut html, l);
                    shown += 1;
                }
            }
            let mut note = String::new();
            if lines.is_empty() {
                html.push_str(
                    "<div id=\"no-logs\" class=\"muted\">No log lines stored (yet).</div>",
                );
            } else if !lower.is_empty() {
                let _ = write!(
                    note,
                    "<p class=\"muted\" id=\"log-matches\">{shown} of {} lines contain “{}”.</p>",
                    lines.len(),
                    esc(&needle)
                );
            }
            if lines.len() as u32 >= api::MAX_LOG_LINES {
                let _ = write!(
                    note,
                    "<p class=\"muted\">The first {} lines; the API pages the rest \
                     (<code>/api/v1/runs/{}/logs?after=…</code>).</p>",
                    api::MAX_LOG_LINES,
                    r.id
                );
            }
            (format!("{note}{html}"), lines.last().map_or(0, |l| l.seq))
        }
        Err(e) => (
            format!(
                "<div id=\"no-logs\">Cannot read the logs: {}</div>",
                esc(&e.message)
            ),
            0,
        ),
    };
    let events = if running {
        format!(" data-events=\"/runs/{}/events?after={last_seq}\"", r.id)
    } else {
        String::new()
    };
    let live_note = if running {
        "<p class=\"muted\" id=\"live-note\">The log follows the run as it is written.</p>"
    } else {
        ""
    };
    let body = format!(
        "<h1>Run {id} of <a href=\"/jobs/{seg}\">{job}</a></h1>\
         <p id=\"run-status\"><span id=\"status-word\" class=\"s-{status}\">{status}</span> {cancel}</p>\
         <table class=\"kv\"><tr><th scope=\"row\">Trigger</th><td>{trigger}</td></tr>\
         <tr><th scope=\"row\">Tick</th><td>{scheduled}</td></tr>\
         <tr><th scope=\"row\">Started</th><td>{started}</td></tr><tr><th scope=\"row\">Finished</th><td>{finished}</td></tr>\
         <tr><th scope=\"row\">Duration</th><td>{duration}</td></tr><tr><th scope=\"row\">Message</th><td>{message}</td></tr>\
         <tr><th scope=\"row\">Error</th><td><pre>{error}</pre></td></tr><tr><th scope=\"row\">Owner</th><td>{owner}</td></tr></table>\
         <h2>Stats</h2>{stats}\
         <h2>Logs</h2>{live_note}<form method=\"get\" action=\"/runs/{id}\" role=\"search\" class=\"filters\">\
         <label>Search the log <input type=\"search\" name=\"q\" id=\"log-q\" value=\"{q}\"></label> \
         <button type=\"submit\">Search</button></form>\
         <div id=\"logs\" class=\"log\" role=\"log\" aria-live=\"polite\"{events}>{logs}</div>",
        id = r.id,
        seg = seg(&r.job_id),
        job = esc(&r.job_id),
        status = r.status.as_str(),
        trigger = r.trigger.as_str(),
        scheduled = at(Some(r.scheduled_at)),
        started = at(Some(r.started_at)),
        finished = at(r.finished_at),
        duration = r.duration_ms.map(millis).unwrap_or_default(),
        message = esc(r.message.as_deref().unwrap_or("")),
        error = esc(r.error.as_deref().unwrap_or("")),
        owner = r.owner.as_ref().map_or_else(String::new, |o| format!(
            "pid {} on <code>{}</code>",
            o.pid,
            esc(&o.host)
        )),
        stats = stats_table(&r.stats),
        q = esc(&needle),
    );
    layout_with(
        &format!("Run {}", r.id),
        &body,
        if running { Script::Live } else { Script::None },
        s.auth.required(),
    )
    .into_response()
}

#[derive(Debug, Default, Deserialize)]
pub struct EventsQuery {
    /// Only lines after this sequence number (the last one the page shows).
    pub after: Option<i64>,
}

/// Where one stream is.
struct Follow {
    s: Arc<Shared>,
    run_id: i64,
    after: i64,
    pending: VecDeque<Event>,
    /// When the run's row was first seen final.
    ended_at: Option<Instant>,
    until: Instant,
    done: bool,
}

impl Follow {
    /// The next event: queued lines first, then the store is polled until something comes,
    /// the run has ended (then `end`, and the stream closes), or the stream's time is up.
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Follow)> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some((Ok(ev), self));
            }
            if self.done || Instant::now() >= self.until || self.s.control.status.is_stopping() {
                return None;
            }
            // A failing store is retried at the next poll: the page keeps what it has.
            if let Ok(lines) = api::log_lines(&self.s, self.run_id, self.after, BATCH).await {
                for l in &lines {
                    let data = json!({
                        "seq": l.seq,
                        "level": level_class(&l.level),
                        "text": format_line(l),
                    });
                    self.pending.push_back(
                        Event::default()
                            .event("line")
                            .id(l.seq.to_string())
                            .data(data.to_string()),
                    );
                    self.after = l.seq;
                }
                if !lines.is_empty() {
                    continue;
                }
            }
            match self.ended_at {
                None => {
                    if let Ok(Some(r)) = self.s.control.store.run(self.run_id).await
                        && r.status.is_final()
                    {
                        self.ended_at = Some(Instant::now());
                    }
                }
                // The writer's last batch had its time: the run is over.
                Some(at) if at.elapsed() >= TAIL => {
                    let status = match self.s.control.store.run(self.run_id).await {
                        Ok(Some(r)) => r.status.as_str(),
                        _ => "unknown",
                    };
                    self.pending.push_back(
                        Event::default()
                            .event("end")
                            .data(json!({"status": status}).to_string()),
                    );
                    self.done = true;
                    continue;
                }
                Some(_) => {}
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// `GET /runs/{id}/events`: the run's log lines after `after` (or the `Last-Event-ID` a
/// reconnecting `EventSource` sends) as server-sent events `line` (id: the line's `seq`;
/// data: JSON `seq`, `level`, `text`), then `end` (data: JSON `status`) once the run has
/// ended. Comments keep the connection busy well within `admin.idle_timeout`.
pub async fn events(
    State(s): State<Arc<Shared>>,
    Path(run_id): Path<i64>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
    _: Reader<Page>,
) -> Response {
    if let Err(e) = api::get_run(&s, run_id).await {
        return e.into_response();
    }
    let resumed = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let after = resumed.or(q.after).unwrap_or(0).max(0);
    let keep_alive =
        (s.limits.idle_timeout / 3).clamp(Duration::from_millis(100), Duration::from_secs(15));
    let follow = Follow {
        s,
        run_id,
        after,
        pending: VecDeque::new(),
        ended_at: None,
        until: Instant::now() + MAX_STREAM,
        done: false,
    };
    let stream = futures::stream::unfold(follow, Follow::next);
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(keep_alive))
        .into_response()
}

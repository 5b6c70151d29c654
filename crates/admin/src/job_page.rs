//! The job page (`/jobs/{id}`): the definition as loaded (parameters with secrets masked, the
//! file it came from and the marketplace definition it uses), the next fires in the job's
//! time zone and in UTC, its pause in force and pause history, its alert episodes (open and past), a duration chart of
//! its last [`CHART_RUNS`] runs, and its runs, paged (`?before=<run id>`, as the API pages).
//!
//! Secrets never reach the page: password parameters show as `********`, the values of an
//! `env` mapping are masked whole, and every other implementation key is passed through the
//! job's redactor (its password values) before it is shown.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::Value;
use soarjobd_core::Redactor;
use soarjobd_core::Schedule;
use soarjobd_core::definition::{JobDefinition, ParamValue};

use crate::Shared;
use crate::api::{self, RunsQuery};
use crate::extract::Reader;
use crate::html::{buttons, esc, layout, millis, seg, status_cell, when, when_in};
use crate::jobs_page::{STRIP_RUNS, job_states};
use crate::page::{Page, error_page};
use crate::svg;

/// How many runs the duration chart draws.
pub const CHART_RUNS: u32 = 200;
/// Runs per page of the run table.
const RUNS_PER_PAGE: u32 = 50;
/// Upcoming fires listed.
const NEXT_FIRES: usize = 5;
/// Ended pauses listed.
const PAUSES: u32 = 50;
/// Alert episodes listed.
const EPISODES: u32 = 20;
/// What a masked value shows.
const MASK: &str = "********";

#[derive(Debug, Default, Deserialize)]
pub struct JobQuery {
    /// Only runs older than this run id (the previous page's last).
    pub before: Option<String>,
}

/// The implementation's own keys as shown: `env` values masked, everything through the
/// redactor of the job's password values.
pub fn masked_extra(def: &JobDefinition) -> String {
    let secrets: Vec<String> = def
        .parameters
        .iter()
        .filter_map(|p| match &p.value {
            ParamValue::Secret(s) => Some(s.expose_secret().to_string()),
            _ => None,
        })
        .collect();
    let redactor = Redactor::new(secrets.iter().map(String::as_str));
    let mut extra = def.extra.clone();
    if let Some(Value::Object(env)) = extra.get_mut("env") {
        for v in env.values_mut() {
            *v = Value::String(MASK.into());
        }
    }
    let text = serde_json::to_string_pretty(&Value::Object(extra)).unwrap_or_default();
    redactor.redact(&text).into_owned()
}

/// A row of the definition table.
fn fact(out: &mut String, name: &str, value_html: &str) {
    let _ = write!(
        out,
        "<tr><th scope=\"row\">{name}</th><td>{value_html}</td></tr>"
    );
}

/// `t` on the wall clock of the schedule's zone.
fn zoned(t: DateTime<Utc>, schedule: &Schedule) -> String {
    t.with_timezone(&schedule.timezone())
        .format("%Y-%m-%d %H:%M:%S %Z")
        .to_string()
}

pub async fn job(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(query): Query<JobQuery>,
    reader: Reader<Page>,
) -> Response {
    let role = reader.caller.role;
    let def = match api::find_job(&s, &id) {
        Ok(d) => d,
        Err(e) => return error_page(e),
    };
    let before = query.before.as_deref().and_then(|b| b.parse::<i64>().ok());
    let runs = match api::job_runs_page(
        &s,
        &id,
        &RunsQuery {
            limit: Some(RUNS_PER_PAGE),
            before,
        },
    )
    .await
    {
        Ok(r) => r,
        Err(e) => return error_page(e),
    };
    let ids = [def.id.clone()];
    let marks = s
        .control
        .store
        .recent_runs(&ids, CHART_RUNS)
        .await
        .unwrap_or_default();
    let pauses = s.pauses().await.unwrap_or_default();
    let pause = pauses.get(&def.id);
    let paused = pause.is_some();
    let ended = s.control.store.last_resume(&def.id).await.ok().flatten();
    let episodes = s.control.store.alert_history(&def.id, EPISODES).await;
    let info = s.metrics.job_runs(&def.id);
    let now = Utc::now();
    let strip_marks = &marks[..marks.len().min(STRIP_RUNS as usize)];
    let states = job_states(&def, paused, strip_marks, now);

    // The definition as loaded.
    let mut facts = String::new();
    fact(&mut facts, "Id", &format!("<code>{}</code>", esc(&def.id)));
    fact(
        &mut facts,
        "Implementation",
        &format!("<code>{}</code>", esc(&def.implementation)),
    );
    if let Some(i) = &def.integration {
        fact(&mut facts, "Integration", &esc(i));
    }
    if !def.description.is_empty() {
        fact(&mut facts, "Description", &esc(&def.description));
    }
    fact(&mut facts, "Schedule", &esc(&def.schedule.describe()));
    fact(
        &mut facts,
        "Time zone",
        &esc(def.schedule.timezone().name()),
    );
    if !def.schedule.jitter().is_zero() {
        fact(
            &mut facts,
            "Jitter",
            &format!("up to {} s", def.schedule.jitter().as_secs()),
        );
    }
    fact(
        &mut facts,
        "Timeout",
        &format!("{} s", def.timeout.as_secs()),
    );
    fact(
        &mut facts,
        "Overlap",
        &format!("{:?}", def.overlap).to_lowercase(),
    );
    fact(
        &mut facts,
        "Misfire",
        &format!("{:?}", def.misfire).to_lowercase(),
    );
    fact(
        &mut facts,
        "Enabled",
        if def.enabled {
            "yes"
        } else {
            "no (disabled in its file)"
        },
    );
    fact(
        &mut facts,
        "Loaded from",
        &format!(
            "<code id=\"source\">{}</code>",
            esc(&def.source.display().to_string())
        ),
    );
    if let Some(u) = &def.uses {
        fact(
            &mut facts,
            "Instance of",
            &format!(
                "<code id=\"uses\">{}</code> (marketplace definition)",
                esc(&u.display().to_string())
            ),
        );
    }
    if let Some(c) = &def.creator {
        fact(&mut facts, "Creator", &esc(c));
    }
    fact(&mut facts, "Version", &esc(&def.version.to_string()));
    if let Some(link) = &def.documentation_link {
        fact(
            &mut facts,
            "Documentation",
            &format!("<code>{}</code>", esc(link)),
        );
    }
    for w in &def.warnings {
        fact(&mut facts, "Warning", &esc(&w.to_string()));
    }

    let mut params = String::new();
    for p in def.parameters.iter() {
        let value = p.value.to_redacted_json();
        let shown = match &value {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        let _ = write!(
            params,
            "<tr><th scope=\"row\">{}</th><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
            esc(&p.name),
            p.ty.as_str(),
            esc(&shown),
            if p.mandatory { "yes" } else { "" },
        );
    }
    let params = if params.is_empty() {
        "<p class=\"muted\">No parameters.</p>".to_string()
    } else {
        format!(
            "<table id=\"params\" class=\"kv\"><thead><tr><th scope=\"col\">Parameter</th><th scope=\"col\">Type</th>\
             <th scope=\"col\">Value</th><th scope=\"col\">Mandatory</th></tr></thead><tbody>{params}</tbody></table>"
        )
    };
    let extra = if def.extra.is_empty() {
        String::new()
    } else {
        format!(
            "<h3>Implementation keys</h3><pre id=\"extra\">{}</pre>",
            esc(&masked_extra(&def))
        )
    };

    // The next fires.
    let mut fires = String::new();
    if def.enabled && !paused {
        for t in def.schedule.ticks_after(now, NEXT_FIRES) {
            let at = def.schedule.fire_at(&def.id, t);
            let _ = write!(
                fires,
                "<tr><td>{}</td><td>{}</td></tr>",
                when(Some(at)),
                esc(&zoned(at, &def.schedule))
            );
        }
    }
    let fires = if fires.is_empty() {
        format!(
            "<p class=\"muted\" id=\"fires\">None: the job is {}.</p>",
            if paused { "paused" } else { "disabled" }
        )
    } else {
        format!(
            "<table id=\"fires\" class=\"kv\"><thead><tr><th scope=\"col\">UTC</th>\
             <th scope=\"col\">{}</th></tr></thead><tbody>{fires}</tbody></table>",
            esc(def.schedule.timezone().name())
        )
    };

    // Pauses: the one in force and the last ended one (what the store keeps).
    let mut pause_html = String::new();
    if let Some(p) = pause {
        let _ = write!(
            pause_html,
            "<p id=\"pause\">Paused since {} by <code>{}</code>: {}</p>",
            when_in(Some(p.since), &def.schedule),
            esc(&p.actor),
            esc(p.reason.as_deref().unwrap_or("no reason given"))
        );
    }
    // Every ended pause, newest first (the store keeps the last 100 of a job).
    let history = s
        .control
        .store
        .pause_history(&def.id, PAUSES)
        .await
        .unwrap_or_default();
    if !history.is_empty() {
        let mut rows = String::new();
        for e in &history {
            let _ = write!(
                rows,
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
                when_in(Some(e.pause.since), &def.schedule),
                esc(&e.pause.actor),
                esc(e.pause.reason.as_deref().unwrap_or("")),
                when_in(Some(e.resumed_at), &def.schedule),
                esc(&e.resumed_by),
                if e.catch_up { "yes" } else { "" },
            );
        }
        let _ = write!(
            pause_html,
            "<table id=\"pause-history\"><caption class=\"muted\">Ended pauses, newest first</caption>\
             <thead><tr><th scope=\"col\">Paused</th><th scope=\"col\">By</th><th scope=\"col\">Reason</th>\
             <th scope=\"col\">Resumed</th><th scope=\"col\">By</th><th scope=\"col\">Catch-up run</th></tr></thead>\
             <tbody>{rows}</tbody></table>"
        );
    } else if let Some(e) = &ended {
        // The history could not be read: the last ended pause, as `job_pauses` keeps it.
        let _ = write!(
            pause_html,
            "<p id=\"last-pause\" class=\"muted\">Last pause: {} by <code>{}</code>, resumed {} by <code>{}</code>.</p>",
            when_in(Some(e.pause.since), &def.schedule),
            esc(&e.pause.actor),
            when_in(Some(e.resumed_at), &def.schedule),
            esc(&e.resumed_by),
        );
    }
    if pause_html.is_empty() {
        pause_html.push_str("<p class=\"muted\">Never paused.</p>");
    }

    // Alert episodes.
    let episodes = match episodes {
        Ok(list) if list.is_empty() => "<p class=\"muted\">No alert episodes.</p>".to_string(),
        Ok(list) => {
            let mut rows = String::new();
            for e in &list {
                let _ = write!(
                    rows,
                    "<tr data-episode=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    e.id,
                    e.rule.as_str(),
                    when_in(Some(e.opened_at), &def.schedule),
                    e.resolved_at.map_or_else(
                        || "<b class=\"s-failed\">open</b>".to_string(),
                        |t| when_in(Some(t), &def.schedule)
                    ),
                    esc(&e.detail)
                );
            }
            format!(
                "<table id=\"episodes\"><thead><tr><th scope=\"col\">Rule</th><th scope=\"col\">Opened</th>\
                 <th scope=\"col\">Resolved</th><th scope=\"col\">Detail</th></tr></thead><tbody>{rows}</tbody></table>"
            )
        }
        Err(e) => format!(
            "<p>Cannot read the alert episodes: {}</p>",
            esc(&e.to_string())
        ),
    };

    // The run table, paged by id.
    let mut rows = String::new();
    for r in &runs {
        let _ = write!(
            rows,
            "<tr data-run=\"{id}\"><td><a href=\"/runs/{id}\">{id}</a></td><td>{status}</td><td>{trigger}</td>\
             <td>{scheduled}</td><td>{started}</td><td>{duration}</td><td>{message}</td></tr>",
            id = r.id,
            status = status_cell(r.status),
            trigger = r.trigger.as_str(),
            scheduled = when_in(Some(r.scheduled_at), &def.schedule),
            started = when_in(Some(r.started_at), &def.schedule),
            duration = r.duration_ms.map(millis).unwrap_or_default(),
            message = esc(r.message.as_deref().unwrap_or("")),
        );
    }
    let mut pager = String::from("<p class=\"pager\" id=\"runs-pager\">");
    if before.is_some() {
        let _ = write!(
            pager,
            "<a href=\"/jobs/{}\" id=\"newest\">newest runs</a>",
            seg(&def.id)
        );
    }
    if runs.len() as u32 == RUNS_PER_PAGE
        && let Some(last) = runs.last()
    {
        let _ = write!(
            pager,
            "<a href=\"/jobs/{}?before={}\" rel=\"next\" id=\"older\">older runs →</a>",
            seg(&def.id),
            last.id
        );
    }
    pager.push_str("</p>");

    let mut badges = String::new();
    for st in &states {
        let _ = write!(
            badges,
            "<span class=\"badge b-{0}\">{0}</span>",
            st.as_str()
        );
    }
    let body = format!(
        "<h1>{name}</h1><p>{badges} failures in a row: {failures} · last success: {success}</p>\
         <p>{buttons}</p>\
         <h2>History</h2>{strip}<h3>Duration of the last {chart_n} runs</h3>{chart}\
         <h2>Next fires</h2>{fires}\
         <h2>Pauses</h2>{pause_html}\
         <h2>Alert episodes</h2>{episodes}\
         <h2>Definition</h2><table id=\"definition\" class=\"kv\">{facts}</table><h3>Parameters</h3>{params}{extra}\
         <h2>Runs</h2><table id=\"runs\"><thead><tr><th scope=\"col\">Run</th>\
         <th scope=\"col\">Status</th><th scope=\"col\">Trigger</th><th scope=\"col\">Tick</th><th scope=\"col\">Started</th>\
         <th scope=\"col\">Duration</th><th scope=\"col\">Message</th></tr></thead><tbody>{rows}</tbody></table>{pager}",
        name = esc(&def.name),
        failures = info.consecutive_failures,
        success = when_in(info.last_success, &def.schedule),
        buttons = buttons(&def, role, paused),
        strip = svg::strip(strip_marks, STRIP_RUNS as usize),
        chart_n = marks.len(),
        chart = svg::duration_chart(&marks),
    );
    layout(&def.name, &body, before.is_none(), s.auth.required()).into_response()
}

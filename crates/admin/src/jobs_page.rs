//! The jobs page (`/`): built for thousands of jobs. Failing, late, paused and running jobs
//! come first; the counts per state are at the top; a GET form filters by state, platform and
//! text (query parameters `state`, `platform`, `q`, so every view is a link and works without
//! JavaScript); the rows are paged (`page`, `per`). Each row has the job's run-history strip
//! (its last [`STRIP_RUNS`] runs) and duration sparkline, drawn on the server ([`crate::svg`]).
//!
//! The store is read once per page: the last [`STRIP_RUNS`] runs of every job that passes the
//! platform and text filters, in one query ([`soarjobd_engine::control::ReadStore::recent_runs`]);
//! the states, the counts, the order and the rows all come from that read, the pauses
//! (one more query) and the loaded definitions. The answer carries its server time in
//! `Server-Timing` (`page;dur=` milliseconds).

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use soarjobd_core::definition::JobDefinition;
use soarjobd_core::store::{RunMark, RunStatus, Trigger};

use crate::Shared;
use crate::auth::Role;
use crate::extract::Reader;
use crate::html::{STATUS_COLOURS, buttons, esc, layout, millis, seg, status_cell, when, when_in};
use crate::metrics::is_failure;
use crate::page::Page;
use crate::svg;

/// How many runs a row's strip shows.
pub const STRIP_RUNS: u32 = 30;
/// Rows per page unless `per` says otherwise, and the bounds of `per`.
pub const DEFAULT_PER_PAGE: usize = 50;
const MAX_PER_PAGE: usize = 500;
/// A job is late when the fire after its last scheduled run is this much overdue and nothing
/// ran since (jitter is part of the fire instant already).
pub const LATE_AFTER: Duration = Duration::from_secs(60);

/// The states a job can be in, in the page's order: a job is listed under the first that
/// applies to it, and may carry several (a job running again after a failure is both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum JobState {
    /// Its newest run that counts (not cancelled, skipped or still running) failed, timed
    /// out or was interrupted.
    Failing,
    /// The fire after its last scheduled run is more than [`LATE_AFTER`] overdue, and it is
    /// not paused, disabled or running (ticks missed while the daemon was down also show).
    Late,
    Paused,
    /// One of its runs is in progress (on any replica).
    Running,
    /// None of the above.
    Ok,
    Disabled,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        JobState::Failing,
        JobState::Late,
        JobState::Paused,
        JobState::Running,
        JobState::Ok,
        JobState::Disabled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Failing => "failing",
            JobState::Late => "late",
            JobState::Paused => "paused",
            JobState::Running => "running",
            JobState::Ok => "ok",
            JobState::Disabled => "disabled",
        }
    }

    fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// The states of one job, from its newest runs (newest first).
pub fn job_states(
    def: &JobDefinition,
    paused: bool,
    runs: &[RunMark],
    now: DateTime<Utc>,
) -> Vec<JobState> {
    if !def.enabled {
        return vec![JobState::Disabled];
    }
    let mut states = Vec::new();
    let counted = runs.iter().find(|r| {
        r.status.is_final() && !matches!(r.status, RunStatus::Cancelled | RunStatus::Skipped)
    });
    if counted.is_some_and(|r| is_failure(r.status)) {
        states.push(JobState::Failing);
    }
    let running = runs.iter().any(|r| r.status == RunStatus::Running);
    let late = !paused
        && !running
        && runs
            .iter()
            .find(|r| r.trigger != Trigger::Manual)
            .and_then(|r| def.schedule.next_tick_after(r.scheduled_at))
            .is_some_and(|tick| def.schedule.fire_at(&def.id, tick) + LATE_AFTER < now);
    if late {
        states.push(JobState::Late);
    }
    if paused {
        states.push(JobState::Paused);
    }
    if running {
        states.push(JobState::Running);
    }
    if states.is_empty() {
        states.push(JobState::Ok);
    }
    states
}

/// A job's platform for the filter: its integration, else its implementation.
fn platform(def: &JobDefinition) -> &str {
    def.integration.as_deref().unwrap_or(&def.implementation)
}

/// The query of the jobs page; anything unparsable is ignored (the page shows everything).
#[derive(Debug, Default, Deserialize)]
pub struct JobsQuery {
    pub state: Option<String>,
    pub platform: Option<String>,
    pub q: Option<String>,
    pub page: Option<String>,
    pub per: Option<String>,
}

struct Row<'a> {
    def: &'a Arc<JobDefinition>,
    states: Vec<JobState>,
    runs: &'a [RunMark],
    paused: bool,
}

/// `?` and the filters, with `page` (the other links keep the filters).
fn link(state: Option<JobState>, platform: &str, q: &str, page: usize, per: usize) -> String {
    let mut parts = Vec::new();
    if let Some(s) = state {
        parts.push(format!("state={}", s.as_str()));
    }
    if !platform.is_empty() {
        parts.push(format!("platform={}", seg(platform)));
    }
    if !q.is_empty() {
        parts.push(format!("q={}", seg(q)));
    }
    if page > 1 {
        parts.push(format!("page={page}"));
    }
    if per != DEFAULT_PER_PAGE {
        parts.push(format!("per={per}"));
    }
    if parts.is_empty() {
        "/".into()
    } else {
        esc(&format!("/?{}", parts.join("&")))
    }
}

pub async fn index(
    State(s): State<Arc<Shared>>,
    Query(query): Query<JobsQuery>,
    reader: Reader<Page>,
) -> Response {
    let started = Instant::now();
    let role = reader.caller.role;
    let view = s.control.status.jobs();
    let pauses = s.pauses().await.unwrap_or_default();
    let now = Utc::now();

    let state = query.state.as_deref().and_then(JobState::parse);
    let plat = query.platform.as_deref().unwrap_or("").trim().to_string();
    let text = query.q.as_deref().unwrap_or("").trim().to_string();
    let needle = text.to_lowercase();
    let per = query
        .per
        .as_deref()
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(DEFAULT_PER_PAGE)
        .clamp(1, MAX_PER_PAGE);

    let platforms: BTreeSet<&str> = view.jobs.iter().map(|d| platform(d)).collect();
    let candidates: Vec<&Arc<JobDefinition>> = view
        .jobs
        .iter()
        .filter(|d| plat.is_empty() || platform(d).eq_ignore_ascii_case(&plat))
        .filter(|d| {
            needle.is_empty()
                || d.id.to_lowercase().contains(&needle)
                || d.name.to_lowercase().contains(&needle)
                || platform(d).to_lowercase().contains(&needle)
        })
        .collect();

    // One read for every candidate's strip, states and counts.
    let ids: Vec<String> = candidates.iter().map(|d| d.id.clone()).collect();
    let (marks, store_note) = match s.control.store.recent_runs(&ids, STRIP_RUNS).await {
        Ok(m) => (m, String::new()),
        Err(e) => (
            Vec::new(),
            format!(
                "<p id=\"store-error\" class=\"s-failed\">Cannot read the run history: {}</p>",
                esc(&e.to_string())
            ),
        ),
    };
    // Until the scheduler has loaded the jobs folder once (`/readyz` says `jobs_not_loaded`
    // meanwhile), the view is empty: say so, rather than show a daemon with no jobs.
    let store_note = if s.control.status.is_scheduled() {
        store_note
    } else {
        format!(
            "<p id=\"starting\" class=\"s-skipped\">The daemon is starting: its jobs folder \
             is not loaded yet. <a href=\"\">Reload</a> in a moment.</p>{store_note}"
        )
    };
    // The marks come grouped by job: each job's slice of them.
    let mut by_job: HashMap<&str, &[RunMark]> = HashMap::with_capacity(ids.len());
    let mut start = 0;
    while start < marks.len() {
        let job = marks[start].job_id.as_str();
        let end = start
            + marks[start..]
                .iter()
                .position(|m| m.job_id != job)
                .unwrap_or(marks.len() - start);
        by_job.insert(job, &marks[start..end]);
        start = end;
    }

    let mut counts: HashMap<JobState, usize> = HashMap::new();
    let mut rows: Vec<Row<'_>> = Vec::with_capacity(candidates.len());
    for def in candidates {
        let runs = by_job.get(def.id.as_str()).copied().unwrap_or(&[]);
        let paused = pauses.contains_key(&def.id);
        let states = job_states(def, paused, runs, now);
        for st in &states {
            *counts.entry(*st).or_default() += 1;
        }
        if state.is_none_or(|want| states.contains(&want)) {
            rows.push(Row {
                def,
                states,
                runs,
                paused,
            });
        }
    }
    let total = rows.len();
    rows.sort_by(|a, b| {
        (a.states[0], &a.def.name, &a.def.id).cmp(&(b.states[0], &b.def.name, &b.def.id))
    });
    let pages = total.div_ceil(per).max(1);
    let page = query
        .page
        .as_deref()
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .clamp(1, pages);
    let shown = &rows[((page - 1) * per).min(total)..(page * per).min(total)];

    let mut table = String::with_capacity(shown.len() * 2600);
    for row in shown {
        render_row(&mut table, &s, row, role, now);
    }

    // The counts: each a link to its state (keeping the other filters).
    let mut tabs = format!(
        "<a href=\"{}\"{}>all <b>{}</b></a>",
        link(None, &plat, &text, 1, per),
        if state.is_none() { " class=\"on\"" } else { "" },
        ids.len()
    );
    for st in JobState::ALL {
        let _ = write!(
            tabs,
            "<a href=\"{}\" id=\"count-{name}\" class=\"b-{name}{on}\">{name} <b>{n}</b></a>",
            link(Some(st), &plat, &text, 1, per),
            name = st.as_str(),
            on = if state == Some(st) { " on" } else { "" },
            n = counts.get(&st).copied().unwrap_or(0),
        );
    }
    let mut state_options = String::from("<option value=\"\">any</option>");
    for st in JobState::ALL {
        let _ = write!(
            state_options,
            "<option value=\"{0}\"{1}>{0}</option>",
            st.as_str(),
            if state == Some(st) { " selected" } else { "" },
        );
    }
    let mut platform_options = String::from("<option value=\"\">any</option>");
    for p in &platforms {
        let _ = write!(
            platform_options,
            "<option value=\"{0}\"{1}>{0}</option>",
            esc(p),
            if p.eq_ignore_ascii_case(&plat) {
                " selected"
            } else {
                ""
            },
        );
    }
    let per_field = if per == DEFAULT_PER_PAGE {
        String::new()
    } else {
        format!("<input type=\"hidden\" name=\"per\" value=\"{per}\">")
    };
    let filters = format!(
        "<form class=\"filters\" method=\"get\" action=\"/\" role=\"search\">\
         <label>State <select name=\"state\" id=\"f-state\">{state_options}</select></label>\
         <label>Platform <select name=\"platform\" id=\"f-platform\">{platform_options}</select></label>\
         <label>Search <input type=\"search\" name=\"q\" id=\"f-q\" value=\"{q}\" placeholder=\"id, name or platform\"></label>\
         {per_field}<button type=\"submit\" id=\"f-go\">Filter</button> <a href=\"/\">clear</a></form>",
        q = esc(&text),
    );
    let mut pager = format!(
        "<p class=\"pager\" id=\"pager\"><span>{} of {total} jobs</span>",
        if total == 0 {
            "0".to_string()
        } else {
            format!(
                "{}–{}",
                (page - 1) * per + 1,
                (page - 1) * per + shown.len()
            )
        }
    );
    if page > 1 {
        let _ = write!(
            pager,
            "<a href=\"{}\" rel=\"prev\" id=\"prev\">← previous</a>",
            link(state, &plat, &text, page - 1, per)
        );
    }
    if page < pages {
        let _ = write!(
            pager,
            "<a href=\"{}\" rel=\"next\" id=\"next\">next →</a>",
            link(state, &plat, &text, page + 1, per)
        );
    }
    let _ = write!(
        pager,
        "<span class=\"muted\">page {page} of {pages}</span></p>"
    );
    let mut legend = String::from("<p class=\"legend muted\">");
    for (st, _) in STATUS_COLOURS {
        let _ = write!(
            legend,
            "<span>{} {}</span>",
            svg::key(st),
            st.as_str().replace('_', " ")
        );
    }
    legend.push_str("</p>");

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
        "<h1>Jobs</h1><p class=\"muted\">{loaded} loaded · {running} running here · as of {now}</p>\
         {store_note}<nav class=\"counts\" aria-label=\"jobs by state\">{tabs}</nav>{filters}{legend}{pager_top}\
         <table id=\"jobs\"><thead><tr><th scope=\"col\">Job</th><th scope=\"col\">State</th>\
         <th scope=\"col\">Last {STRIP_RUNS} runs</th><th scope=\"col\" class=\"wide\">Duration</th>\
         <th scope=\"col\">Last run</th><th scope=\"col\" class=\"wide\">Schedule</th>\
         <th scope=\"col\" class=\"wide\">Last success</th><th scope=\"col\" class=\"wide\">Next fire</th>\
         <th scope=\"col\" class=\"wide\">Failures in a row</th><th scope=\"col\"><span class=\"muted\">Actions</span></th>\
         </tr></thead><tbody>{table}</tbody></table>{pager}{invalid}",
        loaded = view.jobs.len(),
        running = s.control.running_count(),
        now = when(Some(now)),
        pager_top = pager
            .replace(" id=\"pager\"", "")
            .replace(" id=\"prev\"", "")
            .replace(" id=\"next\"", ""),
    );
    let mut r = layout("Jobs", &body, true, s.auth.required()).into_response();
    let took = started.elapsed().as_secs_f64() * 1000.0;
    if let Ok(v) = HeaderValue::from_str(&format!("page;dur={took:.2}")) {
        r.headers_mut().insert("server-timing", v);
    }
    r
}

fn render_row(out: &mut String, s: &Shared, row: &Row<'_>, role: Role, now: DateTime<Utc>) {
    let def = row.def;
    let info = s.metrics.job_runs(&def.id);
    let next = (def.enabled && !row.paused)
        .then(|| {
            def.schedule
                .next_tick_after(now)
                .map(|t| def.schedule.fire_at(&def.id, t))
        })
        .flatten();
    let mut badges = String::new();
    for st in &row.states {
        let _ = write!(
            badges,
            "<span class=\"badge b-{0}\">{0}</span>",
            st.as_str()
        );
    }
    let last = row.runs.first();
    let _ = write!(
        out,
        "<tr data-job=\"{id}\" data-state=\"{state}\"><td><a href=\"/jobs/{seg}\">{name}</a><br>\
         <code class=\"muted\">{id}</code> <span class=\"muted\">{platform}</span></td><td>{badges}</td>\
         <td>{strip}</td><td class=\"wide\">{spark}</td><td>{last_status}<br><span class=\"muted\">{last_duration}</span></td>\
         <td class=\"wide\">{schedule}</td><td class=\"wide\">{last_success}</td><td class=\"wide\">{next}</td>\
         <td class=\"wide\">{failures}</td><td>{buttons}</td></tr>",
        id = esc(&def.id),
        state = row.states[0].as_str(),
        seg = seg(&def.id),
        name = esc(&def.name),
        platform = esc(platform(def)),
        strip = svg::strip(row.runs, STRIP_RUNS as usize),
        spark = svg::sparkline(row.runs),
        last_status = last.map_or_else(
            || "<span class=\"muted\">none</span>".into(),
            |r| format!("<a href=\"/runs/{}\">{}</a>", r.id, status_cell(r.status))
        ),
        last_duration = last
            .and_then(|r| r.duration_ms)
            .map(millis)
            .unwrap_or_default(),
        schedule = esc(&def.schedule.describe()),
        last_success = when_in(info.last_success, &def.schedule),
        next = when_in(next, &def.schedule),
        failures = info.consecutive_failures,
        buttons = buttons(def, role, row.paused),
    );
}

#[cfg(test)]
mod tests {
    use soarjobd_core::definition::{self, Catalog, JobSpec};

    use super::*;

    struct Noop;
    impl JobSpec for Noop {}
    struct One;
    impl Catalog for One {
        fn ids(&self) -> Vec<String> {
            vec!["noop".into()]
        }
        fn spec(&self, id: &str) -> Option<&dyn JobSpec> {
            (id == "noop").then_some(&Noop as &dyn JobSpec)
        }
    }

    fn def(extra: &str) -> JobDefinition {
        let text = format!("name: Job\njob: noop\nschedule: {{every: 10m}}\n{extra}");
        definition::load_str(
            std::path::Path::new("/nonexistent/job-a.yaml"),
            &text,
            &One,
            |p| std::fs::File::open(p),
        )
        .expect("valid")
    }

    /// An instant on the 10-minute grid (no jitter configured).
    fn t(min: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + min * 60, 0).expect("instant")
    }

    fn mark(id: i64, status: RunStatus, trigger: Trigger, at: DateTime<Utc>) -> RunMark {
        RunMark {
            id,
            job_id: "job-a".into(),
            scheduled_at: at,
            trigger,
            status,
            started_at: at,
            duration_ms: Some(5),
        }
    }

    #[test]
    fn a_job_is_failing_until_a_counted_run_succeeds() {
        use RunStatus::*;
        let d = def("");
        let now = t(31);
        let runs = |s: &[RunStatus]| -> Vec<RunMark> {
            s.iter()
                .enumerate()
                .map(|(i, st)| mark(100 - i as i64, *st, Trigger::Manual, t(30)))
                .collect()
        };
        assert_eq!(job_states(&d, false, &runs(&[]), now), [JobState::Ok]);
        assert_eq!(
            job_states(&d, false, &runs(&[Failed, Succeeded]), now),
            [JobState::Failing]
        );
        // Cancelled and skipped runs neither end nor start a failure; partial ends it.
        for newest in [Cancelled, Skipped] {
            assert_eq!(
                job_states(&d, false, &runs(&[newest, TimedOut]), now),
                [JobState::Failing]
            );
        }
        assert_eq!(
            job_states(&d, false, &runs(&[Partial, Interrupted]), now),
            [JobState::Ok]
        );
        // Running again after a failure: both, failing first; paused too.
        assert_eq!(
            job_states(&d, true, &runs(&[Running, Failed]), now),
            [JobState::Failing, JobState::Paused, JobState::Running]
        );
        assert_eq!(
            job_states(&def("enabled: false\n"), true, &runs(&[Failed]), now),
            [JobState::Disabled]
        );
    }

    #[test]
    fn a_job_is_late_when_the_fire_after_its_last_scheduled_run_is_overdue() {
        let d = def("");
        let last = |trigger| vec![mark(1, RunStatus::Succeeded, trigger, t(30))];
        // The next tick (t(40)) is not yet LATE_AFTER past.
        assert_eq!(
            job_states(&d, false, &last(Trigger::Schedule), t(41)),
            [JobState::Ok]
        );
        assert_eq!(
            job_states(&d, false, &last(Trigger::Schedule), t(42)),
            [JobState::Late]
        );
        // Manual runs say nothing about the schedule; a paused or running job is not late.
        assert_eq!(
            job_states(&d, false, &last(Trigger::Manual), t(42)),
            [JobState::Ok]
        );
        assert_eq!(
            job_states(&d, true, &last(Trigger::Schedule), t(42)),
            [JobState::Paused]
        );
        let mut running = last(Trigger::Schedule);
        running.insert(0, mark(2, RunStatus::Running, Trigger::Manual, t(41)));
        assert_eq!(job_states(&d, false, &running, t(42)), [JobState::Running]);
        // A newer scheduled run (even a skipped tick) is what counts.
        let mut caught_up = last(Trigger::Schedule);
        caught_up.insert(0, mark(2, RunStatus::Skipped, Trigger::Schedule, t(40)));
        assert_eq!(job_states(&d, false, &caught_up, t(42)), [JobState::Ok]);
    }
}

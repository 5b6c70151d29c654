//! What every page of the status page is made of: escaping, the layout with its one inline
//! style sheet and scripts, times, durations and statuses, and the Content-Security-Policy that
//! allows exactly that style and those scripts (by hash).

use std::fmt::Write as _;
use std::sync::LazyLock;

use axum::http::HeaderValue;
use axum::response::Html;
use chrono::{DateTime, Utc};
use soarjobd_core::definition::JobDefinition;
use soarjobd_core::store::RunStatus;

use crate::auth::Role;

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

/// A path segment (a job id) or a query value for a link.
pub fn seg(s: &str) -> String {
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

/// The colour of each run status in history strips, legends and status words. One table, so a
/// strip and its legend cannot disagree.
pub const STATUS_COLOURS: [(RunStatus, &str); 8] = [
    (RunStatus::Succeeded, "#12b76a"),
    (RunStatus::Partial, "#f79009"),
    (RunStatus::Failed, "#d92d20"),
    (RunStatus::TimedOut, "#7a2e0e"),
    (RunStatus::Skipped, "#98a2b3"),
    (RunStatus::Interrupted, "#c11574"),
    (RunStatus::Cancelled, "#475467"),
    (RunStatus::Running, "#2e90fa"),
];

/// The page's one style sheet (its hash is in the CSP). Strip marks are sized by CSS
/// (SVG 2 geometry properties), so each mark is a few bytes of markup.
static STYLE: LazyLock<String> = LazyLock::new(|| {
    let mut s = String::from(
        "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1d2430}\
         table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.35rem .6rem;\
         border-bottom:1px solid #dde2ea;vertical-align:top}th{background:#f3f5f8}\
         .s-succeeded{color:#17803d}.s-failed,.s-timed_out,.s-interrupted{color:#b42318;font-weight:600}\
         .s-running{color:#175cd3}.s-partial,.s-cancelled,.s-skipped{color:#b54708}\
         form{display:inline}button{cursor:pointer}pre{background:#f6f8fa;padding:.6rem;overflow:auto}\
         code{font-size:.9em}.muted{color:#667085}\
         .strip rect{width:5px;height:14px}.key rect{width:10px;height:10px}\
         .spark polyline{fill:none;stroke:#475467;stroke-width:1.2}\
         .counts a{margin-right:.9rem;text-decoration:none}.counts a.on{font-weight:700;text-decoration:underline}\
         .badge{display:inline-block;padding:0 .4rem;border-radius:.6rem;font-size:.85em;margin:0 .2rem .2rem 0}\
         .b-failing{background:#fee4e2;color:#b42318}.b-late{background:#fef0c7;color:#b54708}\
         .b-paused{background:#eaecf0;color:#344054}.b-running{background:#d1e9ff;color:#175cd3}\
         .b-ok{background:#d1fadf;color:#05603a}.b-disabled{background:#f2f4f7;color:#667085}\
         .filters{margin:.6rem 0}.filters label{margin-right:.6rem}.pager a,.pager span{margin-right:.8rem}\
         .legend{font-size:.85em}.legend span{margin-right:.7rem}\
         .log{font-family:ui-monospace,monospace;font-size:.85em;white-space:pre-wrap;\
         background:#f6f8fa;padding:.6rem;max-height:70vh;overflow:auto}\
         .l-ERROR{color:#b42318;font-weight:600}.l-WARN{color:#b54708}.l-DEBUG,.l-TRACE{color:#667085}\
         table.kv{width:auto}table.kv th{background:none;font-weight:600}\
         @media (max-width:700px){.wide{display:none}body{margin:.6rem}}",
    );
    for (status, colour) in STATUS_COLOURS {
        let _ = write!(s, ".m-{}{{fill:{colour}}}", status.as_str());
    }
    s
});

/// Reloads the page every 5 s while the tab is visible and no form field has the focus (a
/// filter being typed is not thrown away); the page works the same without it.
const SCRIPT: &str = "setInterval(function(){var a=document.activeElement;\
                      if(document.visibilityState==='visible'&&!(a&&/^(INPUT|SELECT)$/.test(a.tagName)))\
                      location.reload()},5000)";

/// The run page's script while the run goes on: follows the log over server-sent events
/// (`data-events` of `#logs`), filters the lines as the search box is typed in, and reloads
/// the page once the run has ended; without `EventSource`, or once the stream is given up,
/// it reloads every 5 s instead. Lines are added as text (`textContent`), never as markup.
const LIVE_SCRIPT: &str = "(function(){var log=document.getElementById('logs'),\
box=document.getElementById('log-q'),word=document.getElementById('status-word');\
function fit(el){var q=box?box.value.toLowerCase():'';\
el.hidden=q!==''&&el.textContent.toLowerCase().indexOf(q)<0}\
if(box)box.addEventListener('input',function(){var ls=log.children;\
for(var i=0;i<ls.length;i++)if(ls[i].classList.contains('l'))fit(ls[i])});\
var url=log&&log.getAttribute('data-events');if(!url)return;\
function later(){setTimeout(function(){location.reload()},5000)}\
if(!window.EventSource){later();return}\
var es=new EventSource(url);\
es.addEventListener('line',function(e){var d=JSON.parse(e.data),el=document.createElement('div');\
el.className='l l-'+d.level;el.setAttribute('data-seq',d.seq);el.textContent=d.text;fit(el);\
var none=document.getElementById('no-logs');if(none)none.remove();log.appendChild(el);\
if(log.scrollHeight-log.scrollTop-log.clientHeight<80)log.scrollTop=log.scrollHeight});\
es.addEventListener('end',function(e){es.close();var d=JSON.parse(e.data);\
word.textContent=d.status;word.className='s-'+d.status;\
setTimeout(function(){location.reload()},1000)});\
es.onerror=function(){if(es.readyState===2)later()}})()";

/// The script a page carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    None,
    /// Reload every few seconds ([`SCRIPT`]).
    Reload,
    /// Follow a running run's log ([`LIVE_SCRIPT`]).
    Live,
}

/// The Content-Security-Policy of every response: nothing but the page's own style and
/// scripts (by hash), connections (the log stream) and forms to this server only, never
/// framed.
pub fn csp() -> HeaderValue {
    static CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
        use base64::Engine as _;
        use sha2::Digest as _;
        let hash = |s: &str| {
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(s.as_bytes()))
        };
        let policy = format!(
            "default-src 'none'; style-src 'sha256-{}'; script-src 'sha256-{}' 'sha256-{}'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            hash(&STYLE),
            hash(SCRIPT),
            hash(LIVE_SCRIPT)
        );
        HeaderValue::from_str(&policy).expect("a header value")
    });
    CSP.clone()
}

/// A page; `refresh`: reload it every few seconds; `sign_out`: show the Sign out button
/// (tokens are configured).
pub fn layout(title: &str, body: &str, refresh: bool, sign_out: bool) -> Html<String> {
    let script = if refresh {
        Script::Reload
    } else {
        Script::None
    };
    layout_with(title, body, script, sign_out)
}

/// A page with `script`; `sign_out`: show the Sign out button (tokens are configured).
pub fn layout_with(title: &str, body: &str, script: Script, sign_out: bool) -> Html<String> {
    let script = match script {
        Script::None => String::new(),
        Script::Reload => format!("<script>{SCRIPT}</script>"),
        Script::Live => format!("<script>{LIVE_SCRIPT}</script>"),
    };
    let sign_out = if sign_out {
        " · <form method=\"post\" action=\"/logout\"><button type=\"submit\" id=\"sign-out\">Sign out</button></form>"
    } else {
        ""
    };
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} · soarjobd</title>\
         <meta name=\"viewport\" content=\"width=device-width\"><style>{}</style></head><body>\
         <p class=\"muted\"><a href=\"/\">soarjobd</a> {} · <a href=\"/cluster\">cluster</a> · <a href=\"/metrics\">metrics</a> · \
         <a href=\"/api/v1/jobs\">API</a>{sign_out}</p>{body}{script}</body></html>",
        esc(title),
        *STYLE,
        esc(env!("CARGO_PKG_VERSION")),
    ))
}

/// A time in UTC (`never` when absent).
pub fn when(t: Option<DateTime<Utc>>) -> String {
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

/// A run status as a coloured word.
pub fn status_cell(s: RunStatus) -> String {
    format!("<span class=\"s-{0}\">{0}</span>", s.as_str())
}

/// A duration in milliseconds as people read it.
pub fn millis(ms: i64) -> String {
    if ms < 10_000 {
        format!("{ms} ms")
    } else if ms < 600_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{:.1} min", ms as f64 / 60_000.0)
    }
}

/// The job's buttons: Run now, and Pause or Resume (operators only).
pub fn buttons(def: &JobDefinition, role: Role, paused: bool) -> String {
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

//! The cluster page (`/cluster`): the processes registered on a PostgreSQL database (replicas
//! and CLI clients), their heartbeats, whether each is alive or dead, the runs each is running
//! and the jobs each replica schedules.
//!
//! Ownership is not computed here: it is the store's rendezvous hashing (`owner_of`, the
//! function `owns` answers with), read as this replica sees the membership; the replicas agree
//! within one sweep. On SQLite there is one daemon and the page says so.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use soarjobd_core::store::{NodeInfo, RunRecord, RunStatus};

use crate::Shared;
use crate::extract::Reader;
use crate::html::{esc, layout, seg, when};
use crate::page::Page;

/// Owned jobs listed by name per replica before the rest is folded away.
const OWNED_SHOWN: usize = 20;

pub async fn cluster(State(s): State<Arc<Shared>>, _reader: Reader<Page>) -> Response {
    let nodes = match s.control.store.nodes().await {
        Ok(Some(n)) => n,
        Ok(None) => {
            let body = "<h1>Cluster</h1><p id=\"single\">This daemon keeps its state in SQLite: it \
                        is the only replica, and it schedules every job. Several replicas share a \
                        PostgreSQL database (README: Several replicas on PostgreSQL).</p>";
            return layout("Cluster", body, true, s.auth.required()).into_response();
        }
        Err(e) => {
            let body = format!(
                "<h1>Cluster</h1><p id=\"store-error\" class=\"s-failed\">Cannot read the \
                 replicas: {}</p>",
                esc(&e.to_string())
            );
            return layout("Cluster", &body, true, s.auth.required()).into_response();
        }
    };
    let running: Vec<RunRecord> = s
        .control
        .store
        .last_runs()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.status == RunStatus::Running)
        .collect();
    // Which jobs each replica schedules: the store's own answer, job by job.
    let mut owned: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for def in s.control.status.jobs().jobs.iter().filter(|d| d.enabled) {
        if let Some(node) = s.control.store.owner_of(&def.id) {
            owned.entry(node).or_default().push(def.id.clone());
        }
    }
    let body = render(&nodes, &running, &owned);
    layout("Cluster", &body, true, s.auth.required()).into_response()
}

/// The page's body.
fn render(nodes: &[NodeInfo], running: &[RunRecord], owned: &BTreeMap<i64, Vec<String>>) -> String {
    let now = Utc::now();
    let daemons = nodes.iter().filter(|n| n.role != "client").count();
    let alive = nodes
        .iter()
        .filter(|n| n.role != "client" && n.alive)
        .count();
    let mut rows = String::new();
    for n in nodes {
        let age = (now - n.heartbeat_at).num_milliseconds().max(0) as f64 / 1000.0;
        let state = if n.alive {
            "<span class=\"badge b-ok\">alive</span>"
        } else {
            "<span class=\"badge b-failing\">dead</span>"
        };
        let this = if n.this {
            " <span class=\"badge b-running\">this replica</span>"
        } else {
            ""
        };
        let runs: Vec<String> = running
            .iter()
            .filter(|r| {
                r.owner
                    .as_ref()
                    .is_some_and(|o| o.pid == n.pid && o.host == n.host)
            })
            .map(|r| {
                format!(
                    "<a href=\"/runs/{0}\">#{0}</a> <a href=\"/jobs/{1}\">{2}</a>",
                    r.id,
                    seg(&r.job_id),
                    esc(&r.job_id)
                )
            })
            .collect();
        let runs = if runs.is_empty() {
            "<span class=\"muted\">nothing</span>".to_string()
        } else {
            runs.join("<br>")
        };
        let jobs = owned.get(&n.id).map(Vec::as_slice).unwrap_or_default();
        let jobs_html = if !n.alive || n.role == "client" {
            "<span class=\"muted\">none</span>".to_string()
        } else if jobs.is_empty() {
            "<span class=\"muted\">none yet</span>".to_string()
        } else {
            let link = |j: &String| format!("<a href=\"/jobs/{}\">{}</a>", seg(j), esc(j));
            let first: Vec<String> = jobs.iter().take(OWNED_SHOWN).map(link).collect();
            let mut out = format!(
                "<span class=\"owned-count\">{}</span> job{}: {}",
                jobs.len(),
                if jobs.len() == 1 { "" } else { "s" },
                first.join(", ")
            );
            if jobs.len() > OWNED_SHOWN {
                let rest: Vec<String> = jobs.iter().skip(OWNED_SHOWN).map(link).collect();
                let _ = write!(
                    out,
                    " <details><summary>{} more</summary>{}</details>",
                    rest.len(),
                    rest.join(", ")
                );
            }
            out
        };
        let _ = write!(
            rows,
            "<tr class=\"node{}\" data-node=\"{}\" data-alive=\"{}\"><td>{}{this}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td class=\"wide\">{}</td><td>{} <span class=\"muted\">({:.1} s ago)</span></td>\
             <td>{state}</td><td class=\"running\">{runs}</td><td class=\"owned\">{jobs_html}</td></tr>",
            if n.alive { "" } else { " dead" },
            n.id,
            n.alive,
            n.id,
            esc(&n.host),
            n.pid,
            esc(&n.role),
            esc(&n.version),
            when(Some(n.heartbeat_at)),
            age,
        );
    }
    format!(
        "<h1>Cluster</h1><p id=\"summary\">{alive} of {daemons} replica{} alive; jobs are spread \
         over the live ones by rendezvous hashing, as this replica sees them.</p>\
         <table id=\"nodes\"><caption class=\"muted\">Processes registered on the database \
         (replicas, and CLI clients while they run)</caption><thead><tr>\
         <th scope=\"col\">Node</th><th scope=\"col\">Host</th><th scope=\"col\">PID</th>\
         <th scope=\"col\">Role</th><th scope=\"col\" class=\"wide\">Version</th>\
         <th scope=\"col\">Heartbeat</th><th scope=\"col\">State</th>\
         <th scope=\"col\">Running</th><th scope=\"col\">Schedules</th></tr></thead>\
         <tbody>{rows}</tbody></table>",
        if daemons == 1 { "" } else { "s" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use soarjobd_core::store::{RunOwner, Trigger};

    fn node(id: i64, alive: bool) -> NodeInfo {
        NodeInfo {
            id,
            host: "h".into(),
            pid: 100 + id,
            version: "0.1.0".into(),
            role: "daemon".into(),
            started_at: Utc::now() - Duration::minutes(5),
            heartbeat_at: Utc::now() - Duration::seconds(if alive { 1 } else { 60 }),
            alive,
            this: id == 1,
        }
    }

    #[test]
    fn a_dead_replica_shows_as_dead_and_owns_nothing() {
        let nodes = [node(1, true), node(2, false)];
        let mut owned = BTreeMap::new();
        owned.insert(1, vec!["a".to_string(), "b<".to_string()]);
        let run = RunRecord {
            owner: Some(RunOwner {
                pid: 101,
                host: "h".into(),
                nonce: String::new(),
            }),
            id: 7,
            job_id: "a".into(),
            scheduled_at: Utc::now(),
            trigger: Trigger::Schedule,
            status: RunStatus::Running,
            started_at: Utc::now(),
            finished_at: None,
            duration_ms: None,
            message: None,
            error: None,
            stats: serde_json::Value::Null,
        };
        let html = render(&nodes, &[run], &owned);
        assert!(html.contains("1 of 2 replicas alive"), "{html}");
        assert!(
            html.contains("class=\"node dead\" data-node=\"2\""),
            "{html}"
        );
        assert!(html.contains("<a href=\"/runs/7\">#7</a>"), "{html}");
        assert!(html.contains("b&lt;"), "escaped: {html}");
    }
}

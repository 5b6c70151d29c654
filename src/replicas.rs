//! The commands about replicas on one PostgreSQL database: `nodes` (who is there) and
//! `migrate-state` (moving a SQLite state database to PostgreSQL).

use std::io::Write;

use chrono::{SecondsFormat, Utc};
use serde_json::json;

use crate::app::App;
use soarjobd_core::error_chain;
use soarjobd_core::exit;

/// `soarjobd nodes`: the processes registered on the database, with their last heartbeat.
/// On SQLite, says that the database is single-node.
pub async fn nodes(app: &App, json_out: bool) -> i32 {
    let store = match app.open_store().await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            return exit::FAILURE;
        }
    };
    let nodes = store.nodes().await;
    store.close().await;
    let nodes = match nodes {
        Ok(Some(n)) => n,
        Ok(None) => {
            if json_out {
                println!("{}", json!({"clustered": false, "nodes": []}));
            } else {
                println!(
                    "single-node: this is a SQLite database, used by one daemon at a time \
                     (several replicas need PostgreSQL; see `migrate-state`)"
                );
            }
            return exit::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            return exit::FAILURE;
        }
    };
    // This command's own registration is not a replica: it is left out.
    let nodes: Vec<_> = nodes.into_iter().filter(|n| !n.this).collect();
    let now = Utc::now();
    if json_out {
        println!("{}", json!({"clustered": true, "nodes": nodes}));
        return exit::SUCCESS;
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{:<6} {:<7} {:<24} {:>8} {:<9} {:<21} {:<14} STATE",
        "NODE", "ROLE", "HOST", "PID", "VERSION", "STARTED", "LAST HEARTBEAT"
    );
    for n in &nodes {
        let ago = (now - n.heartbeat_at).num_milliseconds().max(0) as f64 / 1000.0;
        let _ = writeln!(
            out,
            "{:<6} {:<7} {:<24} {:>8} {:<9} {:<21} {:<14} {}",
            n.id,
            n.role,
            n.host,
            n.pid,
            n.version,
            n.started_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            format!("{ago:.1}s ago"),
            if n.alive { "alive" } else { "dead" }
        );
    }
    if nodes.is_empty() {
        let _ = writeln!(out, "(no replica is registered)");
    }
    exit::SUCCESS
}

/// `soarjobd migrate-state --from sqlite:... --to postgres://...`.
pub async fn migrate_state(from: &str, to: &str) -> i32 {
    use soarjobd_store::{MigrateStateError, migrate_state};
    match migrate_state(from, to).await {
        Ok(c) => {
            println!(
                "copied {} runs, {} timestamps, {} context keys, {} seen-set entries, {} \
                 pauses, {} run log lines and {} alert episodes from {from} to {}",
                c.runs,
                c.timestamps,
                c.context,
                c.seen,
                c.pauses,
                c.run_log_lines,
                c.alert_episodes,
                soarjobd_core::redact_url(to)
            );
            exit::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            match e {
                MigrateStateError::From(_)
                | MigrateStateError::To
                | MigrateStateError::NotEmpty { .. }
                | MigrateStateError::Locked(_)
                | MigrateStateError::SourceMissing(_)
                | MigrateStateError::SourceForeign { .. }
                | MigrateStateError::SourceOlder { .. }
                | MigrateStateError::Store(soarjobd_core::store::StoreError::SchemaTooNew {
                    ..
                }) => exit::USAGE,
                MigrateStateError::Store(_) => exit::FAILURE,
            }
        }
    }
}

//! The commands that read or use the store next to a running daemon: `list`, `history` and
//! `run-once`. SQLite in WAL mode lets them work while the daemon runs.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;

use crate::app::App;
use soarjobd_core::definition::Overlap;
use soarjobd_core::error_chain;
use soarjobd_core::exit;
use soarjobd_core::store::{Claim, RunRecord, Store, Trigger};
use soarjobd_engine::{RunControl, RunRequest, TickClaim};

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

async fn open_store(app: &App) -> Result<Arc<dyn Store>, i32> {
    app.open_store().await.map_err(|e| {
        eprintln!("error: {}", error_chain(&e));
        exit::FAILURE
    })
}

/// `soarjobd list`.
pub async fn list(app: &App, json_out: bool) -> i32 {
    let report = app.load_jobs();
    let store = match open_store(app).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let (last_runs, stamps) = match (store.last_runs().await, store.all_timestamps().await) {
        (Ok(r), Ok(t)) => (r, t),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {}", error_chain(&e));
            return exit::FAILURE;
        }
    };
    let pauses = match store.pauses().await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            return exit::FAILURE;
        }
    };
    let successes = match store.last_successes().await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            return exit::FAILURE;
        }
    };
    store.close().await;
    let paused: HashMap<&str, &soarjobd_core::store::ops::JobPause> =
        pauses.iter().map(|p| (p.job_id.as_str(), p)).collect();
    let last: HashMap<&str, &RunRecord> =
        last_runs.iter().map(|r| (r.job_id.as_str(), r)).collect();
    // LAST SUCCESS is the job's newest succeeded run; TIMESTAMP the job's saved timestamp
    // (`timestamp`, or the newest `<identifier>/timestamp` a SecOps script saved).
    let success: HashMap<&str, DateTime<Utc>> =
        successes.iter().map(|(j, at)| (j.as_str(), *at)).collect();
    let mut saved: HashMap<&str, i64> = HashMap::new();
    for (j, k, v) in &stamps {
        let key = soarjobd_core::DEFAULT_TIMESTAMP_KEY;
        if k == key || k.strip_suffix(key).is_some_and(|p| p.ends_with('/')) {
            let e = saved.entry(j.as_str()).or_insert(*v);
            *e = (*e).max(*v);
        }
    }
    let now = Utc::now();
    let rows: Vec<serde_json::Value> = report
        .jobs
        .iter()
        .map(|d| {
            let pause = paused.get(d.id.as_str());
            let next = (d.enabled && pause.is_none())
                .then(|| d.schedule.next_tick_after(now))
                .flatten()
                .map(|t| ts(d.schedule.fire_at(&d.id, t)));
            let lr = last.get(d.id.as_str());
            json!({
                "id": d.id,
                "name": d.name,
                "job": d.implementation,
                "enabled": d.enabled,
                "schedule": d.schedule.describe(),
                "last_run": lr.map(|r| json!({
                    "run_id": r.id,
                    "status": r.status,
                    "started_at": ts(r.started_at),
                })),
                "last_success": success.get(d.id.as_str()).map(|at| ts(*at)),
                "timestamp": saved
                    .get(d.id.as_str())
                    .and_then(|ms| DateTime::from_timestamp_millis(*ms))
                    .map(ts),
                "paused": pause.map(|p| json!({
                    "since": ts(p.since),
                    "reason": p.reason,
                    "actor": p.actor,
                })),
                "next": next,
            })
        })
        .collect();
    let mut out = std::io::stdout().lock();
    if json_out {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
    } else {
        let _ = writeln!(
            out,
            "{:<32} {:<8} {:<34} {:<32} {:<21} {:<21} {:<21}",
            "JOB", "ENABLED", "SCHEDULE", "LAST RUN", "LAST SUCCESS", "TIMESTAMP", "NEXT"
        );
        for r in &rows {
            let last_run = r["last_run"]
                .as_object()
                .map(|o| {
                    format!(
                        "{} {}",
                        o["status"].as_str().unwrap_or("?"),
                        o["started_at"].as_str().unwrap_or("")
                    )
                })
                .unwrap_or_else(|| "-".into());
            let _ = writeln!(
                out,
                "{:<32} {:<8} {:<34} {:<32} {:<21} {:<21} {:<21}",
                r["id"].as_str().unwrap_or(""),
                if r["paused"].is_object() {
                    "paused"
                } else if r["enabled"].as_bool().unwrap_or(false) {
                    "yes"
                } else {
                    "no"
                },
                r["schedule"].as_str().unwrap_or(""),
                last_run,
                r["last_success"].as_str().unwrap_or("-"),
                r["timestamp"].as_str().unwrap_or("-"),
                r["next"].as_str().unwrap_or("-"),
            );
        }
    }
    for p in pauses.iter().filter(|_| !json_out) {
        let _ = writeln!(
            out,
            "paused: {} since {} by {}{}",
            p.job_id,
            ts(p.since),
            p.actor,
            p.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
    }
    for e in &report.errors {
        eprintln!("{e}");
    }
    exit::SUCCESS
}

/// `soarjobd history`. A job that has runs shows them even if its file was removed since; a
/// job with neither a file nor runs is a usage error (exit 2), most likely a typo.
pub async fn history(app: &App, job_id: &str, limit: u32, json_out: bool) -> i32 {
    let settings = app.settings();
    let store = match open_store(app).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    // One row is enough to know whether the job has history at all (`--limit 0` too).
    let runs = store.history(job_id, limit.max(1)).await;
    store.close().await;
    let mut runs = match runs {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            return exit::FAILURE;
        }
    };
    if runs.is_empty() {
        let known = app.known_jobs();
        if !known.contains(job_id) {
            eprintln!(
                "error: no job `{job_id}` in {} and no runs recorded for it (known jobs: {known})",
                settings.jobs_dir.display()
            );
            return exit::USAGE;
        }
    }
    runs.truncate(limit as usize);
    let mut out = std::io::stdout().lock();
    if json_out {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&runs).unwrap_or_default()
        );
        return exit::SUCCESS;
    }
    if runs.is_empty() {
        let _ = writeln!(out, "no runs recorded for `{job_id}`");
        return exit::SUCCESS;
    }
    let _ = writeln!(
        out,
        "{:<8} {:<12} {:<9} {:<21} {:<21} {:>9}  MESSAGE / STATS",
        "RUN", "STATUS", "TRIGGER", "SCHEDULED", "STARTED", "DURATION"
    );
    for r in &runs {
        let duration = r
            .duration_ms
            .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
            .unwrap_or_else(|| "-".into());
        let stats = if r.stats.as_object().is_some_and(|m| !m.is_empty()) {
            format!(" {}", r.stats)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "{:<8} {:<12} {:<9} {:<21} {:<21} {:>9}  {}{}",
            r.id,
            r.status.as_str(),
            r.trigger.as_str(),
            ts(r.scheduled_at),
            ts(r.started_at),
            duration,
            r.message.as_deref().unwrap_or("").replace('\n', " | "),
            stats
        );
    }
    exit::SUCCESS
}

/// `soarjobd run-once`: one run of `job_id` with `app`'s jobs, in the foreground.
pub async fn run_once(app: &App, job_id: &str, overrides: &[String]) -> i32 {
    let settings = app.settings();
    let report = app.load_jobs();
    let Some(def) = report.jobs.into_iter().find(|d| d.id == job_id) else {
        let own: Vec<_> = report
            .errors
            .iter()
            .filter(|e| e.file.file_stem().and_then(|s| s.to_str()) == Some(job_id))
            .collect();
        if own.is_empty() {
            eprintln!(
                "error: no job `{job_id}` in {}",
                settings.jobs_dir.display()
            );
        } else {
            for e in own {
                eprintln!("{e}");
            }
        }
        return exit::USAGE;
    };
    let mut params = def.parameters.clone();
    for o in overrides {
        let Some((name, value)) = o.split_once('=') else {
            eprintln!("error: --param `{o}` must look like \"Name=value\"");
            return exit::USAGE;
        };
        if let Err(e) = params.override_value(name.trim(), value) {
            eprintln!("error: --param {}: {e}", name.trim());
            return exit::USAGE;
        }
    }
    let store = match open_store(app).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    // The run's log lines are kept with it, as the daemon's are (`soarjobd logs RUN_ID`).
    let run_logs = soarjobd_engine::RunLogs::start(store.clone(), settings.run_logs.max_bytes);
    let runner = app
        .runner(store.clone())
        .with_run_logs(run_logs.clone(), settings.run_logs.mode);
    let now = runner.clock().now();
    // The daemon's claim path (`Runner::claim`), with the same overlap rule across processes:
    // with `overlap: skip` (or `replace`, which cannot cancel another process's run) the claim
    // is refused while the daemon or another run-once has a live run of the job, atomically
    // with the insert. The daemon then records its ticks as skipped while this run is live.
    let claim = TickClaim {
        definition: &def,
        scheduled_at: now,
        trigger: Trigger::Manual,
        started_at: now,
    };
    let claimed = runner.claim(&[claim]).await;
    let run_id = match claimed.map(|c| c.into_iter().next()) {
        Ok(Some(Claim::Claimed(id))) => id,
        Ok(Some(Claim::Busy { holder, .. })) => {
            store.close().await;
            eprintln!(
                "error: job `{}` is already running: {holder}; its overlap policy ({}) forbids a \
                 second run at the same time. Try again when it has finished.",
                def.id,
                match def.overlap {
                    Overlap::Skip => "skip",
                    Overlap::Replace => "replace, which cannot cancel a run of another process",
                    Overlap::Allow => "allow",
                }
            );
            return exit::FAILURE;
        }
        Ok(_) => {
            store.close().await;
            eprintln!("error: the run could not be recorded");
            return exit::FAILURE;
        }
        Err(e) => {
            store.close().await;
            eprintln!("error: {}", error_chain(&e));
            return exit::FAILURE;
        }
    };
    let control = RunControl::new();
    // Ctrl-C stops the run the way a daemon shutdown would, so the row is finished properly.
    let stopper = {
        let control = control.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                control.stop(soarjobd_engine::StopReason::Shutdown);
            }
        })
    };
    let summary = runner
        .execute(RunRequest {
            definition: Arc::new(def),
            params: Some(params),
            run_id,
            scheduled_at: now,
            trigger: Trigger::Manual,
            control,
        })
        .await;
    stopper.abort();
    run_logs.close().await;
    store.close().await;
    println!(
        "run {} {}{}",
        summary.run_id,
        summary.status,
        summary
            .message
            .as_deref()
            .map(|m| format!(": {m}"))
            .unwrap_or_default()
    );
    exit::for_run(summary.status)
}

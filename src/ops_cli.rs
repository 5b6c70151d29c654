//! `soarjobd pause`, `resume` and `logs`: steering and reading a daemon through its database,
//! next to it (SQLite in WAL mode). A running daemon picks a pause up within
//! `scheduler::PAUSE_REFRESH`.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use crate::app::{App, KnownJobs};
use soarjobd_core::error_chain;
use soarjobd_core::exit;
use soarjobd_core::store::ops::PauseOutcome;
use soarjobd_core::store::{RunStore, Store};
use soarjobd_engine::format_run_log_line as format_line;
use soarjobd_engine::{OpsError, PauseControl};

/// How often `logs --follow` polls for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(500);
/// Lines per read.
const PAGE: u32 = 1000;
/// Once the run is final, `--follow` waits this long for its last lines (written in batches).
const FOLLOW_SETTLE: Duration = Duration::from_secs(2);

/// Who did it, for the audit log: the local user (`cli:<user>`).
fn cli_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

async fn open(app: &App) -> Result<Arc<dyn Store>, i32> {
    app.open_store().await.map_err(|e| {
        eprintln!("error: {}", error_chain(&e));
        exit::FAILURE
    })
}

/// A control that accepts the jobs of the jobs folder (valid or not: a broken file still
/// names a job one may want paused until it is fixed).
fn control(app: &App, store: Arc<dyn Store>) -> (PauseControl, KnownJobs) {
    let known = app.known_jobs();
    let ids = known.clone();
    let control = PauseControl::new(store, Arc::new(move |id: &str| ids.contains(id)));
    (control, known)
}

fn report_error(app: &App, e: OpsError, known: &KnownJobs) -> i32 {
    match e {
        OpsError::UnknownJob(id) => {
            eprintln!(
                "error: no job `{id}` in {} (known jobs: {known})",
                app.settings().jobs_dir.display()
            );
            exit::USAGE
        }
        OpsError::Store(e) => {
            eprintln!("error: {}", error_chain(&e));
            exit::FAILURE
        }
    }
}

/// `soarjobd pause JOB [--reason R]`.
pub async fn pause(app: &App, job_id: &str, reason: Option<&str>) -> i32 {
    let store = match open(app).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let (control, known) = control(app, store.clone());
    let result = control.pause(job_id, reason, &cli_actor()).await;
    store.close().await;
    match result {
        Ok(PauseOutcome::Paused(p)) => {
            println!(
                "job `{}` paused{}: it claims no ticks until `soarjobd resume {}`",
                p.job_id,
                p.reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default(),
                p.job_id
            );
            exit::SUCCESS
        }
        Ok(PauseOutcome::AlreadyPaused(p)) => {
            println!(
                "job `{}` was already paused since {} by {}{}",
                p.job_id,
                p.since.to_rfc3339(),
                p.actor,
                p.reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            );
            exit::SUCCESS
        }
        Err(e) => report_error(app, e, &known),
    }
}

/// `soarjobd resume JOB [--catch-up]`.
pub async fn resume(app: &App, job_id: &str, catch_up: bool) -> i32 {
    let store = match open(app).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let (control, known) = control(app, store.clone());
    let result = control.resume(job_id, catch_up, &cli_actor()).await;
    store.close().await;
    match result {
        Ok(Some(e)) => {
            println!(
                "job `{}` resumed (paused since {}){}",
                e.pause.job_id,
                e.pause.since.to_rfc3339(),
                if catch_up {
                    "; one catch-up run for the ticks inside the pause"
                } else {
                    "; the ticks inside the pause are skipped"
                }
            );
            exit::SUCCESS
        }
        Ok(None) => {
            println!("job `{job_id}` was not paused");
            exit::SUCCESS
        }
        Err(e) => report_error(app, e, &known),
    }
}

/// `soarjobd logs RUN_ID [--follow] [--json]`.
pub async fn logs(app: &App, run_id: i64, follow: bool, json: bool) -> i32 {
    let store = match open(app).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let code = print_logs(store.as_ref(), run_id, follow, json).await;
    store.close().await;
    code
}

async fn print_logs(store: &dyn Store, run_id: i64, follow: bool, json: bool) -> i32 {
    let fail = |e: soarjobd_core::store::StoreError| {
        eprintln!("error: {}", error_chain(&e));
        exit::FAILURE
    };
    match RunStore::run(store, run_id).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            eprintln!("error: no run {run_id} (it may have been pruned)");
            return exit::USAGE;
        }
        Err(e) => return fail(e),
    }
    let mut after = 0;
    let mut settled_since: Option<std::time::Instant> = None;
    loop {
        let lines = match store.run_logs(run_id, after, PAGE).await {
            Ok(l) => l,
            Err(e) => return fail(e),
        };
        let got = lines.len();
        {
            let mut out = std::io::stdout().lock();
            for l in &lines {
                let text = if json {
                    serde_json::to_string(l).unwrap_or_default()
                } else {
                    format_line(l)
                };
                if writeln!(out, "{text}").is_err() {
                    return exit::SUCCESS; // The reader went away (`| head`).
                }
                after = l.seq;
            }
            let _ = out.flush();
        }
        if got as u32 == PAGE {
            continue;
        }
        if !follow {
            return exit::SUCCESS;
        }
        // Following: stop once the run is final and no line came for FOLLOW_SETTLE.
        let finished = match RunStore::run(store, run_id).await {
            Ok(r) => r.is_none_or(|r| r.status.is_final()),
            Err(e) => return fail(e),
        };
        if finished && got == 0 {
            let since = *settled_since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() >= FOLLOW_SETTLE {
                return exit::SUCCESS;
            }
        } else {
            settled_since = None;
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

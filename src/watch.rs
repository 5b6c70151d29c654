//! Hot reload: turns changes of the `jobs/` folder into fresh loads for the scheduler.
//!
//! Three triggers, because none is enough alone: filesystem events (debounced, so an editor's
//! save-as-rename-dance is one reload), SIGHUP (the Unix convention, and what `systemctl
//! reload` sends), and a slow poll (network filesystems often deliver no events). Each trigger
//! reloads the whole folder off the async runtime (`spawn_blocking`: file I/O and YAML parsing
//! are blocking work) and sends the report; the scheduler diffs it by fingerprint, so a reload
//! that changes nothing costs nothing downstream.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify_debouncer_full::notify::RecursiveMode;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::definition::{self, Catalog};
use crate::scheduler::Command;

/// How long file events are collected before one reload.
const DEBOUNCE: Duration = Duration::from_millis(250);

/// Watches `dir` until `shutdown` fires, sending a [`Command::Reload`] on every trigger.
pub async fn watch<C: Catalog + Send + Sync + 'static>(
    dir: PathBuf,
    catalog: Arc<C>,
    poll: Duration,
    tx: mpsc::Sender<Command>,
    shutdown: CancellationToken,
) {
    let (ev_tx, mut ev_rx) = mpsc::channel::<()>(16);
    // The debouncer calls back on its own thread; a full channel means a reload is already
    // pending, so dropping the event loses nothing.
    let debouncer = notify_debouncer_full::new_debouncer(DEBOUNCE, None, move |res| {
        if let Ok(events) = res {
            let events: Vec<notify_debouncer_full::DebouncedEvent> = events;
            if events.iter().any(|e| {
                e.paths
                    .iter()
                    .any(|p| definition::is_job_file(p) || p.extension().is_none())
            }) {
                let _ = ev_tx.try_send(());
            }
        }
    });
    let _debouncer = match debouncer {
        Ok(mut d) => match d.watch(&dir, RecursiveMode::NonRecursive) {
            Ok(()) => Some(d),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the jobs folder; relying on SIGHUP and polling");
                None
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the file watcher; relying on SIGHUP and polling");
            None
        }
    };
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP");
            None
        }
    };
    let mut poll_timer = tokio::time::interval(poll);
    poll_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll_timer.tick().await; // The first tick is immediate; the initial load happened already.

    loop {
        let reason = tokio::select! {
            _ = shutdown.cancelled() => return,
            Some(()) = ev_rx.recv() => "file change",
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "SIGHUP",
            _ = poll_timer.tick() => "poll",
        };
        let d = dir.clone();
        let c = catalog.clone();
        let report =
            match tokio::task::spawn_blocking(move || definition::load_dir(&d, c.as_ref())).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "reloading the jobs folder failed");
                    continue;
                }
            };
        if reason != "poll" {
            tracing::info!(
                reason,
                jobs = report.jobs.len(),
                errors = report.errors.len(),
                "jobs folder reloaded"
            );
        }
        if tx.send(Command::Reload(report)).await.is_err() {
            return;
        }
    }
}

//! Hot reload: turns changes of the `jobs/` folder into fresh loads for the scheduler.
//!
//! Three triggers, because none is enough alone: filesystem events (debounced, so an editor's
//! save-as-rename-dance is one reload), SIGHUP (the Unix convention, and what `systemctl
//! reload` sends), and a slow poll (network filesystems often deliver no events). Each trigger
//! reloads the whole folder off the async runtime (`spawn_blocking`: file I/O and YAML parsing
//! are blocking work).
//!
//! What may trigger a reload, and what a reload says:
//!
//! * Only events that change something count: create, modify (content or name) and remove,
//!   never open/access/close or metadata-only changes (`touch`). The daemon's own reads of the
//!   folder are access events, so a reload can never trigger the next one.
//! * Only paths that matter count: job files (`*.yaml`, `*.yml`), the folder itself, the
//!   `..data`-style entries of Kubernetes' atomic volume updates, the `value_from_file`
//!   targets that live directly in the folder, and the app manifests instance files use
//!   (their folders are watched too). Other files a job reads elsewhere (a secrets folder,
//!   a subfolder) are picked up by the slow poll: their content is part of each job's
//!   fingerprint, so the poll sees the change. Scripts that `exec` jobs run are read at run
//!   time and need no reload.
//! * Each load is compared with the last one the scheduler got (job fingerprints, errors): an
//!   identical one is not sent and is logged at `debug` only, so `info` shows one
//!   `jobs folder reloaded` per real change. A SIGHUP is acknowledged at `info` either way (an
//!   operator asked for it).
//!
//! A folder that cannot be read (removed, unmounted, an NFS blip) is not an empty folder: the
//! scheduler keeps the last good jobs, one warning is logged (not one per poll), and the
//! folder's identity is checked every [`FOLDER_CHECK`] so that when it comes back (or is
//! replaced by a new folder of the same name) the file watch is re-armed on it at once and the
//! folder reloaded, without waiting for the slow poll.
//!
//! Shutdown never waits for a load in progress: the watcher stops awaiting it (the blocking
//! thread finishes on its own, bounded by the job-file limits, and the runtime does not wait
//! for it at exit).

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify_debouncer_full::notify::event::ModifyKind;
use notify_debouncer_full::notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::definition::{self, Catalog, LoadOptions, LoadReport};
use crate::scheduler::Command;

/// How long file events are collected before one reload.
const DEBOUNCE: Duration = Duration::from_millis(250);
/// How often the folder's identity is checked (one `stat`), to notice that it vanished or
/// came back.
pub const FOLDER_CHECK: Duration = Duration::from_secs(1);

/// What a load amounts to, for telling whether the next one changed anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    digest: u64,
    inputs: Vec<PathBuf>,
    /// The app manifests instance files use: their folders are watched too.
    manifests: Vec<PathBuf>,
}

impl Snapshot {
    pub fn of(report: &LoadReport) -> Snapshot {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for d in &report.jobs {
            (&d.id, d.fingerprint, &d.source).hash(&mut h);
        }
        for e in &report.errors {
            e.to_string().hash(&mut h);
        }
        report.failed_files.hash(&mut h);
        report.folder_unreadable.hash(&mut h);
        Snapshot {
            digest: h.finish(),
            inputs: report.inputs.clone(),
            manifests: report.manifests.clone(),
        }
    }
}

/// True for event kinds that change a file: never reads, opens, closes or metadata.
fn changes_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(_) | EventKind::Any | EventKind::Other => false,
    }
}

/// The paths that matter: see the module documentation.
fn relevant_path(p: &Path, dir: &Path, inputs: &HashSet<PathBuf>) -> bool {
    let k8s = p
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(".."));
    definition::is_job_file(p) || p == dir || k8s || inputs.contains(p)
}

/// A folder's identity (device, inode): a new folder of the same name is another folder.
fn identity(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir)
        .ok()
        .filter(|m| m.is_dir())
        .map(|m| (m.dev(), m.ino()))
}

/// The file watch on the folder.
type Armed = Debouncer<RecommendedWatcher, RecommendedCache>;

/// Watches the folder as it is now. `None` (after one warning per failure streak) when it
/// cannot: SIGHUP and the poll still work.
fn arm(
    dir: &Path,
    manifests: &[PathBuf],
    inputs: &Arc<Mutex<HashSet<PathBuf>>>,
    ev_tx: &mpsc::Sender<()>,
    warned: &mut bool,
) -> Option<Armed> {
    // Watch the canonical path, so event paths compare equal to the (canonical) inputs.
    let watched = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let (w, inputs, tx) = (watched.clone(), inputs.clone(), ev_tx.clone());
    // The debouncer calls back on its own thread; a full channel means a reload is already
    // pending, so dropping the event loses nothing.
    let debouncer =
        notify_debouncer_full::new_debouncer(DEBOUNCE, None, move |res: DebounceEventResult| {
            let Ok(events) = res else { return };
            let inputs = inputs.lock().unwrap_or_else(|e| e.into_inner());
            if events.iter().any(|e| {
                changes_content(&e.kind) && e.paths.iter().any(|p| relevant_path(p, &w, &inputs))
            }) {
                let _ = tx.try_send(());
            }
        });
    let result = debouncer.and_then(|mut d| {
        d.watch(&watched, RecursiveMode::NonRecursive)?;
        // The folders of the app manifests instance files use (an app folder beside the jobs
        // folder): an edit of a manifest is an edit of its jobs. Each folder is best effort
        // (the slow poll still sees a change where a watch cannot be set).
        let mut folders: Vec<&Path> = manifests.iter().filter_map(|m| m.parent()).collect();
        folders.sort();
        folders.dedup();
        for f in folders.into_iter().filter(|f| *f != watched) {
            if let Err(e) = d.watch(f, RecursiveMode::NonRecursive) {
                tracing::debug!(folder = %f.display(), error = %e, "cannot watch an app manifest's folder; the poll covers it");
            }
        }
        Ok(d)
    });
    match result {
        Ok(d) => {
            *warned = false;
            Some(d)
        }
        Err(e) => {
            if !*warned {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the jobs folder; relying on SIGHUP and polling");
                *warned = true;
            }
            None
        }
    }
}

/// Watches `dir` until `shutdown` fires, sending a [`Command::Reload`] for every load that
/// differs from the last one sent (`baseline`: the daemon's initial load).
pub async fn watch<C: Catalog + Send + Sync + 'static>(
    dir: PathBuf,
    catalog: Arc<C>,
    poll: Duration,
    options: LoadOptions,
    baseline: Snapshot,
    tx: mpsc::Sender<Command>,
    shutdown: CancellationToken,
) {
    let (ev_tx, mut ev_rx) = mpsc::channel::<()>(16);
    let inputs: Arc<Mutex<HashSet<PathBuf>>> =
        Arc::new(Mutex::new(baseline.inputs.iter().cloned().collect()));
    let mut last = baseline;
    let mut watch_warned = false;
    // The folder last seen, by identity; the watch is (re-)armed whenever it changes.
    let mut known = identity(&dir);
    // Held for its `Drop`: dropping the debouncer ends the watch.
    let mut _armed: Option<Armed> = None;
    if known.is_some() {
        _armed = arm(&dir, &last.manifests, &inputs, &ev_tx, &mut watch_warned);
    }
    // Whether the folder is known to be gone (and that was logged, once).
    let mut vanished = false;
    if known.is_none() {
        vanished = true;
        tracing::warn!(dir = %dir.display(), "the jobs folder does not exist or cannot be read; watching for it");
    }
    let options = Arc::new(options);
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
    let mut folder_timer = tokio::time::interval(FOLDER_CHECK);
    folder_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    folder_timer.tick().await;

    loop {
        let reason = tokio::select! {
            _ = shutdown.cancelled() => return,
            Some(()) = ev_rx.recv() => "file change",
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "SIGHUP",
            _ = poll_timer.tick() => "poll",
            _ = folder_timer.tick() => {
                let now = identity(&dir);
                if now == known {
                    continue;
                }
                known = now;
                // Gone: drop the dead watch (the load below logs the one warning). Back, or
                // replaced by another folder: watch the one that is there now.
                _armed = None;
                if now.is_some() {
                    _armed = arm(&dir, &last.manifests, &inputs, &ev_tx, &mut watch_warned);
                }
                "jobs folder changed"
            }
        };
        let before = identity(&dir);
        let (d, c, o) = (dir.clone(), catalog.clone(), options.clone());
        let load = tokio::task::spawn_blocking(move || {
            definition::load_dir_with(&d, c.as_ref(), o.as_ref())
        });
        // Shutdown does not wait for a load in progress: dropping the handle detaches it.
        let report = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = load => match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "reloading the jobs folder failed");
                    continue;
                }
            },
        };
        if !report.folder_unreadable && identity(&dir) != before {
            // The folder was replaced or removed while it was read: the listing may be of a
            // folder being emptied. The folder check (which still knows the old identity)
            // reloads the one that is there now.
            continue;
        }
        if report.folder_unreadable {
            // Not an empty folder: keep every job as it is and say so once.
            if !vanished {
                vanished = true;
                let error = report
                    .errors
                    .first()
                    .map(|e| e.message.clone())
                    .unwrap_or_default();
                tracing::warn!(
                    dir = %dir.display(),
                    error,
                    jobs_kept = true,
                    "the jobs folder is gone or unreadable; keeping the last good jobs until it returns"
                );
            }
            // The folder check now waits for another folder (or none) to be there; a folder
            // that exists but cannot be listed is retried by the poll and SIGHUP.
            _armed = None;
            known = identity(&dir);
            continue;
        }
        if vanished {
            vanished = false;
            tracing::info!(dir = %dir.display(), "the jobs folder is back; watching it again");
        }
        let now = identity(&dir);
        if now != known || _armed.is_none() {
            known = now;
            _armed = None;
            if now.is_some() {
                _armed = arm(&dir, &last.manifests, &inputs, &ev_tx, &mut watch_warned);
            }
        }
        let snapshot = Snapshot::of(&report);
        if snapshot == last {
            if reason == "SIGHUP" {
                tracing::info!(reason, changed = false, "jobs folder reloaded");
            } else {
                tracing::debug!(reason, "jobs folder rescanned; nothing changed");
            }
            continue;
        }
        *inputs.lock().unwrap_or_else(|e| e.into_inner()) =
            snapshot.inputs.iter().cloned().collect();
        let rearm = snapshot.manifests != last.manifests && known.is_some();
        last = snapshot;
        if rearm {
            _armed = None;
            _armed = arm(&dir, &last.manifests, &inputs, &ev_tx, &mut watch_warned);
        }
        tracing::info!(
            reason,
            jobs = report.jobs.len(),
            errors = report.errors.len(),
            "jobs folder reloaded"
        );
        if tx.send(Command::Reload(report)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify_debouncer_full::notify::event::{
        AccessKind, AccessMode, CreateKind, DataChange, MetadataKind, RemoveKind, RenameMode,
    };

    #[test]
    fn only_changes_count() {
        assert!(changes_content(&EventKind::Create(CreateKind::File)));
        assert!(changes_content(&EventKind::Remove(RemoveKind::Any)));
        assert!(changes_content(&EventKind::Modify(ModifyKind::Data(
            DataChange::Any
        ))));
        assert!(changes_content(&EventKind::Modify(ModifyKind::Name(
            RenameMode::Both
        ))));
        assert!(!changes_content(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!changes_content(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(!changes_content(&EventKind::Modify(ModifyKind::Metadata(
            MetadataKind::WriteTime
        ))));
    }

    #[test]
    fn only_job_files_the_folder_and_inputs_count() {
        let dir = Path::new("/srv/jobs");
        let inputs: HashSet<PathBuf> = [PathBuf::from("/srv/jobs/api-key")].into();
        assert!(relevant_path(Path::new("/srv/jobs/a.yaml"), dir, &inputs));
        assert!(relevant_path(Path::new("/srv/jobs/a.yml"), dir, &inputs));
        assert!(relevant_path(dir, dir, &inputs));
        assert!(relevant_path(Path::new("/srv/jobs/..data"), dir, &inputs));
        assert!(relevant_path(Path::new("/srv/jobs/api-key"), dir, &inputs));
        assert!(!relevant_path(
            Path::new("/srv/jobs/notes.txt"),
            dir,
            &inputs
        ));
        assert!(!relevant_path(
            Path::new("/srv/jobs/.a.yaml.swp"),
            dir,
            &inputs
        ));
    }
}

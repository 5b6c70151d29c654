//! The evaluator task: decides when an episode opens and when it resolves, and keeps the
//! episodes in the store ([`OpsStore::open_alert`] opens at most one per rule and subject, so
//! a restart, or two evaluators, never notify twice).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::AlertSettings;
use super::{AlertState, Dispatcher, Notification, RunEnded};
use crate::definition::LoadedJobs;
use crate::store::ops::{AlertEpisode, AlertRule};
use crate::store::{RunRecord, RunStatus, Store, StoreResult};
use soarjobd_core::error_chain;

/// The job files that failed to load, with their errors, as the scheduler publishes them.
pub type InvalidFiles = Arc<BTreeMap<PathBuf, String>>;

/// Runs that count in a streak, newest first: failures until the first success. `running`,
/// `skipped` and `cancelled` runs neither count nor break it.
pub fn consecutive_failures(history: &[RunRecord]) -> u32 {
    let mut n = 0;
    for r in history {
        match r.status {
            RunStatus::Failed | RunStatus::TimedOut | RunStatus::Interrupted => n += 1,
            RunStatus::Succeeded | RunStatus::Partial => break,
            RunStatus::Running | RunStatus::Skipped | RunStatus::Cancelled => {}
        }
    }
    n
}

/// The newest run that decides a streak (not running, skipped or cancelled).
fn last_decisive(history: &[RunRecord]) -> Option<&RunRecord> {
    history.iter().find(|r| {
        !matches!(
            r.status,
            RunStatus::Running | RunStatus::Skipped | RunStatus::Cancelled
        )
    })
}

/// The first line of a run's message or error, cut to a reasonable length.
fn run_text(r: &RunRecord) -> String {
    let text = r
        .error
        .as_deref()
        .or(r.message.as_deref())
        .unwrap_or("")
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    if text.chars().count() > 300 {
        let cut: String = text.chars().take(300).collect();
        format!("{cut}…")
    } else {
        text
    }
}

fn human(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// The evaluator (see the module docs); [`Evaluator::run`] is the task.
pub struct Evaluator {
    pub store: Arc<dyn Store>,
    pub settings: AlertSettings,
    pub jobs: watch::Receiver<LoadedJobs>,
    pub invalid: watch::Receiver<InvalidFiles>,
    pub ended: Arc<RunEnded>,
    pub dispatcher: Dispatcher,
    /// The episodes known to be open, `(rule, subject)`: read at every sweep and kept up to
    /// date by this evaluator's own opens and resolves; `None` until the first sweep. A run
    /// end that cannot change anything (no failure, no open episode of its job) then costs
    /// no query: at a thousand runs a second, the history read and the two resolve UPDATEs
    /// per run end were a third of the daemon's CPU. An episode another replica opened is
    /// learnt at the next sweep (`alerts.check_every`), so its resolution may wait that long.
    pub known_open: std::sync::Mutex<Option<HashSet<(AlertRule, String)>>>,
}

fn log_err(failing: &mut crate::store::failing::FailureLog, r: StoreResult<()>) {
    match r {
        Ok(()) => failing.ok(),
        Err(e) => failing.failed(&error_chain(&e)),
    }
}

impl Evaluator {
    /// Evaluates everything once, then on every run end, every change of the invalid files and
    /// every `check_every`, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let started = Utc::now();
        // Nothing to judge before the scheduler published its first load (an empty map would
        // read as "every job was removed").
        let mut jobs = self.jobs.clone();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = jobs.changed() => if r.is_err() { return },
        }
        let ended = self.ended.clone();
        // Evaluations fail together while the database is down: logged once a minute at most.
        let mut failing = crate::store::failing::FailureLog::new("cannot evaluate alerts");
        let mut invalid = self.invalid.clone();
        let mut sweep = tokio::time::interval(self.settings.check_every);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first sweep (at once) looks at every job, so a restart catches up on state.
        let mut first = true;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                _ = ended.wait() => {
                    let jobs = ended.take();
                    for (id, failed) in jobs {
                        if failed || self.may_resolve(&id) {
                            log_err(&mut failing, self.on_run_end(&id).await);
                        }
                    }
                }
                r = invalid.changed() => {
                    if r.is_err() {
                        return; // The scheduler is gone: shutting down.
                    }
                    log_err(&mut failing, self.on_invalid().await);
                }
                _ = sweep.tick() => {
                    if first {
                        first = false;
                        let ids: Vec<String> = self.jobs.borrow().keys().cloned().collect();
                        for id in ids {
                            log_err(&mut failing, self.on_run_end(&id).await);
                        }
                        log_err(&mut failing, self.on_invalid().await);
                    }
                    log_err(&mut failing, self.on_sweep(started).await);
                }
            }
        }
    }

    /// Whether a run end without failures may resolve an episode of `job_id`: one of its
    /// episodes is open, or which are open is not known yet.
    fn may_resolve(&self, job_id: &str) -> bool {
        let known = self.known_open.lock().unwrap_or_else(|p| p.into_inner());
        let Some(open) = known.as_ref() else {
            return true;
        };
        [AlertRule::FailedRunsInARow, AlertRule::NoSuccessFor]
            .into_iter()
            .any(|rule| open.contains(&(rule, job_id.to_string())))
    }

    /// Keeps [`Evaluator::known_open`] up to date with an open (`true`) or a resolve.
    fn know(&self, rule: AlertRule, subject: &str, open: bool) {
        let mut known = self.known_open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(set) = known.as_mut() {
            if open {
                set.insert((rule, subject.to_string()));
            } else {
                set.remove(&(rule, subject.to_string()));
            }
        }
    }

    fn notify(&self, state: AlertState, ep: &AlertEpisode, summary: String) {
        let n = Notification {
            state,
            rule: ep.rule,
            subject: ep.subject.clone(),
            summary,
            episode_id: ep.id,
            opened_at: ep.opened_at,
            resolved_at: ep.resolved_at,
        };
        match state {
            AlertState::Firing => {
                tracing::warn!(rule = ep.rule.as_str(), subject = %ep.subject, episode = ep.id, summary = %n.summary, "alert firing")
            }
            AlertState::Resolved => {
                tracing::info!(rule = ep.rule.as_str(), subject = %ep.subject, episode = ep.id, summary = %n.summary, "alert resolved")
            }
        }
        self.dispatcher.send(&n);
    }

    async fn open(&self, rule: AlertRule, subject: &str, summary: String) -> StoreResult<()> {
        if let Some(ep) = self
            .store
            .open_alert(rule, subject, &summary, Utc::now())
            .await?
        {
            self.notify(AlertState::Firing, &ep, summary);
        }
        // Open now, by this call or an earlier one.
        self.know(rule, subject, true);
        Ok(())
    }

    async fn resolve(&self, rule: AlertRule, subject: &str, summary: String) -> StoreResult<()> {
        if let Some(ep) = self.store.resolve_alert(rule, subject, Utc::now()).await? {
            self.notify(AlertState::Resolved, &ep, summary);
        }
        self.know(rule, subject, false);
        Ok(())
    }

    /// `failed_runs_in_a_row` after a run of `job_id` ended; a success also ends a
    /// `no_success_for` episode.
    async fn on_run_end(&self, job_id: &str) -> StoreResult<()> {
        let Some(def) = self.jobs.borrow().get(job_id).cloned() else {
            return Ok(());
        };
        let rules = self.settings.for_job(&def);
        let history = self
            .store
            .history(job_id, rules.failed_runs_in_a_row.max(1) + 10)
            .await?;
        let streak = consecutive_failures(&history);
        let Some(last) = last_decisive(&history) else {
            return Ok(());
        };
        if rules.failed_runs_in_a_row > 0 && streak >= rules.failed_runs_in_a_row {
            let summary = format!(
                "job `{job_id}` ({}) failed {streak} runs in a row; last: run {} {}: {}",
                def.name,
                last.id,
                last.status,
                run_text(last)
            );
            self.open(AlertRule::FailedRunsInARow, job_id, summary)
                .await?;
        } else if streak == 0 {
            let summary = format!(
                "job `{job_id}` ({}) runs again: run {} {}",
                def.name, last.id, last.status
            );
            self.resolve(AlertRule::FailedRunsInARow, job_id, summary.clone())
                .await?;
            if last.status == RunStatus::Succeeded {
                self.resolve(AlertRule::NoSuccessFor, job_id, summary)
                    .await?;
            }
        }
        Ok(())
    }

    /// `job_invalid`: an episode per job file that does not load; resolved when it loads again
    /// or is removed.
    async fn on_invalid(&self) -> StoreResult<()> {
        let files = self.invalid.borrow().clone();
        let subjects: HashSet<String> = files.keys().map(|f| f.display().to_string()).collect();
        if self.settings.job_invalid {
            for (file, errors) in files.iter() {
                let summary = format!("job file {} does not load: {errors}", file.display());
                self.open(AlertRule::JobInvalid, &file.display().to_string(), summary)
                    .await?;
            }
        }
        for ep in self.store.open_alerts().await? {
            if ep.rule == AlertRule::JobInvalid && !subjects.contains(&ep.subject) {
                let summary = format!("job file {} loads again (or was removed)", ep.subject);
                self.resolve(AlertRule::JobInvalid, &ep.subject, summary)
                    .await?;
            }
        }
        Ok(())
    }

    /// `no_success_for` for every loaded, enabled, unpaused job; episodes of jobs no longer
    /// loaded are resolved.
    async fn on_sweep(&self, started: DateTime<Utc>) -> StoreResult<()> {
        let now = Utc::now();
        let jobs = self.jobs.borrow().clone();
        let successes: HashMap<String, DateTime<Utc>> =
            self.store.last_successes().await?.into_iter().collect();
        let paused: HashSet<String> = self
            .store
            .pauses()
            .await?
            .into_iter()
            .map(|p| p.job_id)
            .collect();
        for (id, def) in jobs.iter() {
            if !def.enabled || paused.contains(id) {
                continue;
            }
            let Some(limit) = self.settings.for_job(def).no_success_for else {
                continue;
            };
            // A job that never succeeded is measured from this daemon's start.
            let since = successes.get(id).copied().unwrap_or(started);
            let quiet = (now - since).to_std().unwrap_or_default();
            if quiet > limit {
                let last = successes
                    .get(id)
                    .map(|t| format!("last success {}", t.to_rfc3339()))
                    .unwrap_or_else(|| "no success recorded".into());
                let summary = format!(
                    "job `{id}` ({}) has not succeeded for more than {} ({last})",
                    def.name,
                    human(limit)
                );
                self.open(AlertRule::NoSuccessFor, id, summary).await?;
            }
        }
        let open = self.store.open_alerts().await?;
        *self.known_open.lock().unwrap_or_else(|p| p.into_inner()) = Some(
            open.iter()
                .map(|ep| (ep.rule, ep.subject.clone()))
                .collect(),
        );
        for ep in open {
            if ep.rule != AlertRule::JobInvalid && !jobs.contains_key(&ep.subject) {
                let summary = format!("job `{}` was removed", ep.subject);
                self.resolve(ep.rule, &ep.subject, summary).await?;
            }
        }
        Ok(())
    }
}

//! Alerts: a job that keeps failing, a job that has not succeeded for too long, a job file
//! that does not load. One notification when an episode starts and one when it resolves,
//! never one per run.
//!
//! This module is what the config, the job files and the sinks share: [`rules`] (the settings:
//! `alerts:` in the config, `alerts:` in a job file, and the rule arithmetic), [`Notification`]
//! and the [`Notifier`] trait the sinks implement. The tasks are `soarjobd-engine`'s
//! `ops::alerts`:
//!
//! * `evaluate`: the evaluator task. It is driven by run ends (`RunEnded`, which the runner
//!   signals), by changes of the invalid job files (which the scheduler publishes) and by a
//!   periodic sweep (for `no_success_for`); it reads everything else from the store, and keeps
//!   the episodes there (`alert_episodes`), so a restart neither re-sends nor forgets one.
//! * `dispatch`: a bounded queue and a task per sink. Sending is the [`Notifier`]'s business
//!   (the HTTP sinks live in `soarjobd-clients`: the core knows no HTTP client); a dead sink
//!   fills its queue, whose oldest entries are then dropped and counted, and nothing else waits.

pub mod rules;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

pub use rules::{
    AlertRetry, AlertSettings, EmailSettings, JobAlerts, NoSuccessFor, PAGERDUTY_URL,
    PagerDutySettings, SmtpTls,
};

use crate::store::ops::AlertRule;

/// Whether a notification opens or closes an episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Firing,
    Resolved,
}

/// One notification: the start or the end of an episode. Its text is for people; nothing in it
/// is secret (run messages are redacted before they are stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notification {
    pub state: AlertState,
    pub rule: AlertRule,
    /// The job id, or the job file for `job_invalid`.
    pub subject: String,
    /// What happened, one line or a few.
    pub summary: String,
    pub episode_id: i64,
    pub opened_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
}

impl Notification {
    /// The one-line text of chat sinks: `[FIRING] ...` / `[RESOLVED] ...`.
    pub fn text(&self) -> String {
        let state = match self.state {
            AlertState::Firing => "FIRING",
            AlertState::Resolved => "RESOLVED",
        };
        format!(
            "[{state}] soarjobd {}: {}",
            self.rule.as_str(),
            self.summary
        )
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotifyError(pub String);

/// Delivers notifications somewhere (a webhook). Retries with backoff are its own business;
/// an error it returns is logged and the notification is dropped.
#[async_trait]
pub trait Notifier: Send + Sync + 'static {
    /// A name for logs (`webhook`, `slack`); never the URL, which is often a credential.
    fn name(&self) -> &str;
    async fn notify(&self, n: &Notification) -> Result<(), NotifyError>;
}

//! soarjobd-core: what every other crate of soarjobd shares, and nothing that runs.
//!
//! The grammar of the config ([`config`]) and of job files ([`definition`]), the schedule math
//! ([`Schedule`]), the [`Job`]/[`JobContext`] and [`Platform`] traits a job or a platform plugs
//! in with, the store traits and row types ([`store`]; the backends are `soarjobd-store`), the
//! hooks observers are fed through ([`Observer`], [`HttpObserver`]), alert notifications
//! ([`Notifier`]), redaction ([`Redactor`]), errors ([`error_chain`], [`exit`]).
//!
//! It depends on no database driver, file watcher, libc or HTTP crate, and on no other
//! soarjobd crate: the clients and the jobs build on it alone. What runs jobs (scheduler,
//! runner, daemon) is `soarjobd-engine`. See `ARCHITECTURE.md`.

// Three namespaces stay public modules: each is a language of its own with many names that
// read right only under it (`config::Settings`, `config::grammar::Section`;
// `definition::load_dir`, `definition::params`, `definition::secrets`; `store::RunStatus`,
// `store::ops::JobPause`), and each is used across most crates. `exit` is a table of exit
// codes (`exit::USAGE`, `exit::for_run`), which a bare `USAGE` would not name. Everything
// else is private, and what other crates use is re-exported below.
pub mod config;
pub mod definition;
pub mod exit;
pub mod store;

mod alerts;
mod error;
mod exec_policy;
mod job;
mod observe;
mod platform;
mod redact;
mod schedule;

pub use alerts::{
    AlertRetry, AlertSettings, AlertState, EmailSettings, JobAlerts, NoSuccessFor, Notification,
    Notifier, NotifyError, PAGERDUTY_URL, PagerDutySettings, SmtpTls,
};
pub use error::error_chain;
pub use exec_policy::{ExecPolicy, ExecSettings, ExecSlot, RunAs};
pub use job::{
    DEFAULT_TIMESTAMP_KEY, Job, JobContext, JobContextParts, JobError, Outcome, OutcomeStatus,
    Registry, Stats,
};
pub use observe::{
    HEARTBEAT_SLACK, Heartbeat, HttpObserver, JobsView, MAX_SLEEP, NoObserver, Observer,
    OverloadView, RunNowError, Status, add_http_observer, heartbeat_limit, platform_request,
};
pub use platform::{Configured, Installer, Platform, has_url, section_secrets};
pub use redact::{
    MARKER, MIN_SECRET_LEN, Redactor, display_name_problem, escape_controls, is_bidi_or_invisible,
    redact_url,
};
pub use schedule::{
    Schedule, ScheduleError, ScheduleKind, format_duration, parse_duration, parse_timezone,
};

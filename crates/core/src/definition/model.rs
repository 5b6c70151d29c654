//! The job model: what a validated job file is ([`JobDefinition`]), its policies, the located
//! [`LoadError`], and the traits through which the loader sees the job implementations
//! ([`JobSpec`], [`Catalog`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::alerts;
use super::params::{ParamSpec, Parameters};
use super::secrets::{OpenFile, SecretsPolicy};
use crate::schedule::Schedule;

/// The SecOps platform's run time limit, our default `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// SecOps' default `run_interval_in_seconds`.
pub const DEFAULT_INTERVAL_SECS: u64 = 900;

/// What to do when a tick comes while the previous run of the same job is still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Record a `skipped` run and leave the running one alone (the default).
    Skip,
    /// Run concurrently.
    Allow,
    /// Cancel the running one and start the new one.
    Replace,
}

/// What to do about ticks missed while the daemon was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Misfire {
    /// One catch-up run at startup, however many ticks were missed (the default).
    RunOnce,
    /// Wait for the next tick.
    Skip,
}

/// Which of a run's log lines are stored with it (`run_logs:` in a job file, and the global
/// default `run_logs.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunLogMode {
    /// Every line at info or above.
    All,
    /// A succeeded run's lines only if it logged a warning or worse; every line of a run that
    /// did not succeed. The lines are held until the run ends (`logs --follow` shows them then).
    Problems,
    /// None.
    Off,
}

impl RunLogMode {
    pub fn parse(s: &str) -> Option<RunLogMode> {
        Some(match s {
            "all" => RunLogMode::All,
            "problems" => RunLogMode::Problems,
            "off" => RunLogMode::Off,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunLogMode::All => "all",
            RunLogMode::Problems => "problems",
            RunLogMode::Off => "off",
        }
    }
}

/// The loaded job definitions by id, as the scheduler last published them (after the first
/// load and every reload); the admin API and `PauseControl` read it.
pub type LoadedJobs = std::sync::Arc<BTreeMap<String, std::sync::Arc<JobDefinition>>>;

/// A validated job instance, ready to be scheduled.
#[derive(Debug, Clone)]
pub struct JobDefinition {
    /// The file stem; the key of the job's history and state.
    pub id: String,
    /// The display name (unique across files).
    pub name: String,
    /// The registered implementation id (`job:` key).
    pub implementation: String,
    pub description: String,
    pub integration: Option<String>,
    pub creator: Option<String>,
    pub documentation_link: Option<String>,
    pub version: f64,
    pub is_custom: bool,
    pub enabled: bool,
    pub schedule: Schedule,
    pub timeout: Duration,
    pub overlap: Overlap,
    pub misfire: Misfire,
    /// The job's `run_logs` mode; `None` follows the global `run_logs.mode`.
    pub run_logs: Option<RunLogMode>,
    /// The job's own alert rules (`alerts:`), over the config's.
    pub alerts: alerts::JobAlerts,
    pub parameters: Parameters,
    /// The implementation's own keys (already validated by it), as JSON.
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// The file the job came from.
    pub source: PathBuf,
    /// A hash of the file's bytes (and of the environment/file values it read), so a reload can
    /// tell whether anything changed.
    pub fingerprint: u64,
    /// The marketplace definition an instance file `uses:`, if any.
    pub uses: Option<PathBuf>,
    /// SecOps-only keys the file carries and soarjobd has no use for (`check --verbose`).
    pub ignored_keys: Vec<String>,
    /// Problems that do not stop the job from loading (a template default of the wrong type).
    pub warnings: Vec<LoadError>,
}

/// A located problem in a job file or the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Line 0: a problem with the file as a whole (its type, its name), not a place in it.
        if self.line == 0 {
            return write!(f, "{}: {}", self.file.display(), self.message);
        }
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

impl std::error::Error for LoadError {}

/// A problem an implementation found in its own keys or in parameter values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// A key path in the file (`command`, `command[0]`, `env.FOO`), or `parameters.<Name>` for
    /// a parameter by its display name.
    pub path: String,
    pub message: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// What the loader needs to know about a job implementation.
pub trait JobSpec: Send + Sync {
    /// One line for `check` and error messages.
    fn summary(&self) -> &'static str {
        ""
    }
    /// Parameters the implementation reads. A declared parameter missing from the file gets
    /// its declared default; its type in the file must match.
    fn parameters(&self) -> Vec<ParamSpec> {
        Vec::new()
    }
    /// Extra top-level keys the implementation accepts.
    fn extra_keys(&self) -> &'static [&'static str] {
        &[]
    }
    /// The extension of the scripts this implementation runs when a definition without `job:`
    /// has a script of its stem beside it (a SecOps marketplace `<Name>.yaml` + `<Name>.py`).
    /// The loader then puts the script's path under the `script` key.
    fn script_extension(&self) -> Option<&'static str> {
        None
    }
    /// The file name of a manifest this implementation reads as a job definition (an app's
    /// own description of itself, e.g. a packaged app's manifest), which an instance file may
    /// `uses:` like a marketplace definition. The loader hands the manifest's text to
    /// [`JobSpec::manifest_definition`]; its path is part of the job (a change reloads it).
    fn manifest_name(&self) -> Option<&'static str> {
        None
    }
    /// The job definition a manifest (see [`JobSpec::manifest_name`]) describes, as a document
    /// of the job-file grammar (`name`, `job`, `parameters`, the implementation's keys), or the
    /// manifest's problems (whole-file messages, all of them).
    fn manifest_definition(
        &self,
        _path: &Path,
        _text: &str,
    ) -> Result<serde_json::Value, Vec<String>> {
        Err(vec!["this implementation reads no manifest".into()])
    }
    /// Whether `password` parameters of an instance file must come from `value_from_env` or
    /// `value_from_file` (an inline value is an error).
    fn passwords_from_secrets_only(&self) -> bool {
        false
    }
    /// Checks the extra keys and parameter values (ranges, cross-field rules).
    fn validate(
        &self,
        _params: &Parameters,
        _extra: &serde_json::Map<String, serde_json::Value>,
    ) -> Vec<FieldError> {
        Vec::new()
    }
    /// [`JobSpec::validate`] with the job file's path, for checks of paths relative to it
    /// (the loader calls this one; by default it calls `validate`).
    fn validate_file(
        &self,
        _file: &Path,
        params: &Parameters,
        extra: &serde_json::Map<String, serde_json::Value>,
    ) -> Vec<FieldError> {
        self.validate(params, extra)
    }
}

/// The set of known implementations, as the loader sees it.
pub trait Catalog {
    fn ids(&self) -> Vec<String>;
    fn spec(&self, id: &str) -> Option<&dyn JobSpec>;
}

/// The result of loading a folder: the good jobs and every error of the bad files.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub jobs: Vec<JobDefinition>,
    pub errors: Vec<LoadError>,
    /// Files that had errors (so a reload can keep their last good version).
    pub failed_files: Vec<PathBuf>,
    /// Warnings of the loaded jobs (also in each [`JobDefinition::warnings`]).
    pub warnings: Vec<LoadError>,
    /// Files the definitions read besides themselves (`value_from_file` targets, symbolic
    /// links resolved where they exist), sorted: a change to one of them changes a job.
    pub inputs: Vec<PathBuf>,
    /// The app manifests instance files use (a subset of `inputs`, see
    /// [`JobSpec::manifest_name`]), wherever they are: the watcher watches their folders, so
    /// an edit of a manifest reloads its jobs at once.
    pub manifests: Vec<PathBuf>,
    /// The folder itself could not be read (missing, unmounted): `jobs` and `failed_files`
    /// say nothing about the jobs, and a reload must not act on them.
    pub folder_unreadable: bool,
}

/// How job files are loaded: what they may read besides themselves, and how they are opened.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub secrets: SecretsPolicy,
    /// How job and secret files are opened: without blocking (see [`OpenFile`]).
    pub open: OpenFile,
}

impl LoadOptions {
    /// The defaults for a jobs folder (see [`SecretsPolicy::default_for`]), opening files
    /// with `open`.
    pub fn for_jobs_dir(dir: &Path, open: OpenFile) -> LoadOptions {
        LoadOptions {
            secrets: SecretsPolicy::default_for(dir),
            open,
        }
    }
}

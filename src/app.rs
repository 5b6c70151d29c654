//! The composition root: the one place where the program is put together.
//!
//! An [`App`] is built from the settings: the platforms (config section -> client -> jobs),
//! the jobs registered by the binary, the registry they form, and the store. Every command
//! (`run`, `check`, `list`, `history`, `run-once`, `demo`) goes through it, so a custom binary
//! that hands its builder to [`crate::cli::main_with`] gets the whole CLI with its own jobs:
//!
//! ```no_run
//! use soarjobd::app::App;
//! # use soarjobd_jobs::exec::Exec as MyJob;
//! fn main() {
//!     std::process::exit(soarjobd::cli::main_with(App::builder().register(MyJob)));
//! }
//! ```
//!
//! Building collects EVERY problem (unknown keys and invalid values of every platform section)
//! before giving up; [`AppBuilder::assemble`] returns them next to an app that still knows
//! every job (for `check`, `list` and `history`, which must work with a broken section).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use soarjobd_core::Notifier;
use soarjobd_core::config::{SectionSpec, Settings};
use soarjobd_core::definition;
use soarjobd_core::definition::LoadReport;
use soarjobd_core::{Installer, Platform};
use soarjobd_core::{Job, Registry};
use soarjobd_engine::{Daemon, DaemonBuilder, Runner};

use soarjobd_core::store::{Store, StoreError};

/// Every problem found while building the app from the settings.
#[derive(Debug, thiserror::Error)]
#[error("invalid API client configuration: {}", .problems.join("; "))]
pub struct AppError {
    pub problems: Vec<String>,
}

/// The assembled program: settings and the registry of jobs (each holding its clients).
#[derive(Clone)]
pub struct App {
    settings: Settings,
    registry: Arc<Registry>,
    /// The alert sinks of `alerts:` (HTTP webhooks from `soarjobd-clients`).
    notifiers: Vec<Arc<dyn Notifier>>,
}

/// Collects platforms, jobs and settings; see [`App::builder`].
pub struct AppBuilder {
    platforms: Vec<Box<dyn Platform>>,
    jobs: Registry,
    settings: Settings,
}

impl App {
    /// The built-in jobs and platforms: `exec`, SecOps SOAR (`comment-on-tagged-cases`),
    /// ThreatConnect (`push-case-iocs-to-threatconnect`), SecOps scripts (`secops-script`) and TcEx job apps (`tcex-app`). Add your own with
    /// [`AppBuilder::register`] (a job with a built-in's id replaces it) and
    /// [`AppBuilder::platform`].
    pub fn builder() -> AppBuilder {
        App::bare()
            .register(soarjobd_jobs::exec::Exec)
            .platform(soarjobd_jobs::SoarPlatform)
            .platform(soarjobd_jobs::ThreatConnectPlatform)
            // After SoarPlatform: its scripts' requests go through the SOAR client.
            .platform(soarjobd_jobs::SecopsPlatform)
            // After ThreatConnectPlatform: its apps' requests go through the TC client.
            .platform(soarjobd_jobs::TcexPlatform)
    }

    /// No job and no platform.
    pub fn bare() -> AppBuilder {
        AppBuilder {
            platforms: Vec::new(),
            jobs: Registry::new(),
            settings: Settings::default(),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Every job implementation, with the platform secrets runs redact.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Loads the jobs folder with this app's jobs and the settings' `secrets` policy.
    pub fn load_jobs(&self) -> LoadReport {
        definition::load_dir_with(
            &self.settings.jobs_dir,
            self.registry.as_ref(),
            &self
                .settings
                .load_options(soarjobd_containment::open_nonblocking),
        )
    }

    /// The ids of every job file in the jobs folder, valid or not: a file with errors still
    /// names a job one may ask about (its history) or want paused until it is fixed.
    pub fn known_jobs(&self) -> KnownJobs {
        let report = self.load_jobs();
        let mut ids: Vec<String> = report
            .jobs
            .iter()
            .map(|d| d.id.clone())
            .chain(report.errors.iter().filter_map(|e| {
                e.file
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .map(str::to_owned)
            }))
            .collect();
        ids.sort();
        ids.dedup();
        KnownJobs(ids)
    }

    /// Opens the state store the settings name (as a client of a cluster: `list`, `history`,
    /// `run-once` and `nodes` judge liveness with the settings' `cluster.*` timings).
    pub async fn open_store(&self) -> Result<Arc<dyn Store>, StoreError> {
        let cluster = &self.settings.cluster;
        let options = soarjobd_core::store::OpenOptions {
            role: "client",
            heartbeat: cluster.heartbeat,
            dead_after: cluster.dead_after,
        };
        soarjobd_store::open_with(&self.settings.database_url, &options).await
    }

    /// A runner over `store` with this app's jobs (for `run-once`).
    pub fn runner(&self, store: Arc<dyn Store>) -> Runner {
        // An unknown `exec.user` is a problem `build` reported; each run re-checks the switch.
        let exec = soarjobd_containment::exec_policy(&self.settings.exec).unwrap_or_default();
        Runner::new(store, self.registry.clone()).with_exec_policy(Arc::new(exec))
    }

    /// The daemon of this app; start it with [`DaemonBuilder::start`].
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// use soarjobd::app::App;
    /// let settings = soarjobd_core::config::load(&Default::default())?;
    /// let app = App::builder().settings(settings).build()?;
    /// let daemon = app.daemon().start().await?;
    /// daemon.run_until_signal().await;
    /// # Ok(()) }
    /// ```
    pub fn daemon(&self) -> DaemonBuilder {
        Daemon::builder()
            .with_registry(self.registry.as_ref().clone())
            .settings(self.settings.clone())
            .notifiers(self.notifiers.clone())
    }
}

impl AppBuilder {
    /// Adds a platform. Platforms are installed in the order they were added (a platform may
    /// use what an earlier one shared).
    pub fn platform(mut self, platform: impl Platform) -> AppBuilder {
        self.platforms.push(Box::new(platform));
        self
    }

    /// Adds a job implementation; it replaces a platform's or built-in job with the same id.
    pub fn register(mut self, job: impl Job) -> AppBuilder {
        self.jobs.register(job);
        self
    }

    pub fn settings(mut self, settings: Settings) -> AppBuilder {
        self.settings = settings;
        self
    }

    /// The config sections of the platforms, in installation order (what the config grammar
    /// must accept besides its own keys).
    pub fn sections(&self) -> Vec<&'static str> {
        self.platforms.iter().map(|p| p.section()).collect()
    }

    /// The platforms' section declarations, for [`soarjobd_core::config::load_with`], so a config
    /// file is checked whole (its own keys and every platform section) at once.
    pub fn section_specs(&self) -> Vec<SectionSpec> {
        let mut specs: Vec<SectionSpec> = self.platforms.iter().map(|p| p.spec()).collect();
        // The admin server's section is the root's own (not a platform's).
        specs.push(soarjobd_admin::config::spec());
        specs
    }

    /// Builds the app, or fails with every problem found.
    pub fn build(self) -> Result<App, AppError> {
        let (app, problems) = self.assemble();
        if problems.is_empty() {
            Ok(app)
        } else {
            Err(AppError { problems })
        }
    }

    /// Builds the app and returns every problem next to it. Jobs of a platform whose section
    /// has problems are registered anyway (so job files using them still load), and fail
    /// with the problem if they run.
    pub fn assemble(self) -> (App, Vec<String>) {
        let mut registry = Registry::new();
        let mut provided: HashMap<TypeId, Box<dyn Any + Send + Sync>> = HashMap::new();
        let mut problems = Vec::new();
        for p in &self.platforms {
            let section = platform_section(&self.settings, p.as_ref());
            let mut cx = Installer::new(&self.settings, &mut registry, &mut provided);
            problems.extend(p.install(&section, &mut cx));
        }
        // The binary's own jobs last: they replace platform jobs with the same id.
        registry.extend(self.jobs);
        if let Err(e) = soarjobd_containment::exec_policy(&self.settings.exec) {
            problems.push(e);
        }
        let notifiers = soarjobd_clients::sinks(&self.settings.alerts).unwrap_or_else(|e| {
            problems.push(e);
            Vec::new()
        });
        (
            App {
                settings: self.settings,
                registry: Arc::new(registry),
                notifiers,
            },
            problems,
        )
    }
}

/// The platform's section (an empty mapping when absent).
fn platform_section(settings: &Settings, p: &dyn Platform) -> Value {
    match settings.section(p.section()) {
        Value::Null => Value::Object(Map::new()),
        other => other.clone(),
    }
}

/// The job ids of the jobs folder ([`App::known_jobs`]), sorted; shown as a list in errors
/// (`none` when there is none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownJobs(pub Vec<String>);

impl KnownJobs {
    pub fn contains(&self, id: &str) -> bool {
        self.0.iter().any(|k| k == id)
    }
}

impl std::fmt::Display for KnownJobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&self.0.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_problem_of_every_platform_is_reported_at_once() {
        let mut settings = Settings::default();
        settings.set_section("soar", json!({ "url": "not a url", "app_kee": "k" }));
        settings.set_section(
            "threatconnect",
            json!({ "url": "http://tc/api", "timeot": "1s" }),
        );
        let (app, problems) = App::builder().settings(settings).assemble();
        assert!(
            problems
                .iter()
                .any(|p| p == "unknown key `soar.app_kee` (did you mean `app_key`?)"),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p == "unknown key `threatconnect.timeot` (did you mean `timeout`?)"),
            "{problems:?}"
        );
        // The url and the missing app key of `soar`, the missing credentials of
        // `threatconnect`: every problem, not the first of each section.
        assert!(problems.iter().any(|p| p.contains("soar")), "{problems:?}");
        assert!(
            problems.iter().any(|p| p.contains("credentials")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("`soar.app_key` or")),
            "{problems:?}"
        );
        assert_eq!(problems.len(), 5, "{problems:?}");
        // The jobs are known anyway, so `check` can still validate the files using them.
        let ids = definition::Catalog::ids(app.registry().as_ref());
        assert_eq!(
            ids,
            [
                "comment-on-tagged-cases",
                "exec",
                "push-case-iocs-to-threatconnect",
                "secops-script",
                "tcex-app"
            ]
        );
    }

    #[test]
    fn no_platform_section_is_no_problem_and_the_secrets_are_collected() {
        assert_eq!(
            App::builder().sections(),
            ["soar", "threatconnect", "secops", "tcex"]
        );
        assert!(App::builder().build().is_ok());
        let mut settings = Settings::default();
        settings.set_section(
            "soar",
            json!({ "url": "http://soar", "app_key": "the-app-key" }),
        );
        let app = App::builder().settings(settings).build().unwrap();
        let secrets: Vec<&str> = app
            .registry()
            .redacted_secrets()
            .iter()
            .map(secrecy::ExposeSecret::expose_secret)
            .collect();
        assert_eq!(secrets, ["the-app-key"]);
    }

    #[test]
    fn a_bare_app_has_only_what_it_is_given() {
        let app = App::bare()
            .register(soarjobd_jobs::exec::Exec)
            .platform(soarjobd_jobs::SoarPlatform)
            .build()
            .unwrap();
        assert!(app.registry().get("comment-on-tagged-cases").is_some());
        assert!(
            app.registry()
                .get("push-case-iocs-to-threatconnect")
                .is_none()
        );
    }
}

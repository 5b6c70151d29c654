//! Platforms as plugins: how an external system (a SOAR, a threat-intelligence platform...)
//! joins the daemon without the core knowing its name.
//!
//! A [`Platform`] declares its config section and the keys it accepts, builds its API client
//! from that section (reporting every problem it finds, not only the first), names the
//! credentials every run must redact, and registers the jobs that use it. Each job is handed
//! its client when it is built, as a [`Configured`] value: the client, or the sentence telling
//! the user which keys to set, returned as the run's error if the job runs anyway.
//!
//! Invariant: nothing in the core (this module included) names a platform. The composition
//! root (`app`) decides which platforms a binary has; adding one touches only its own module
//! and the root.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

use secrecy::SecretString;
use serde_json::Value;

use crate::config::grammar::{read_secret_file, trim_one_newline};
use crate::config::{SectionSpec, Settings};
use crate::job::{Job, JobError, Registry};

/// An external system the daemon talks to, as a plugin.
pub trait Platform: Send + Sync + 'static {
    /// The platform's config section, declared in the one config grammar: its name
    /// (`SOARJOBD__<SECTION>__<KEY>` in the environment) and the check that reports every
    /// problem of it (unknown keys with a suggestion, invalid values), located at
    /// `file:line:col` or at the environment variable that set it.
    fn spec(&self) -> SectionSpec;

    /// The config section's name.
    fn section(&self) -> &'static str {
        self.spec().name
    }

    /// Builds the client from the section (an empty mapping when it is absent), registers the
    /// platform's jobs and the secrets runs must redact, and returns every problem found in
    /// the section. The jobs are registered even when there are problems, so `check` still
    /// validates the job files that use them.
    fn install(&self, section: &Value, cx: &mut Installer<'_>) -> Vec<String>;
}

/// What a platform may do while it is installed.
pub struct Installer<'a> {
    settings: &'a Settings,
    registry: &'a mut Registry,
    provided: &'a mut HashMap<TypeId, Box<dyn Any + Send + Sync>>,
}

impl<'a> Installer<'a> {
    /// An installer adding to `registry`. `provided` holds what earlier platforms shared
    /// ([`Installer::provide`]), so the order platforms are installed in matters.
    pub fn new(
        settings: &'a Settings,
        registry: &'a mut Registry,
        provided: &'a mut HashMap<TypeId, Box<dyn Any + Send + Sync>>,
    ) -> Installer<'a> {
        Installer {
            settings,
            registry,
            provided,
        }
    }

    /// The whole daemon configuration (the platform's own section is given to `install`).
    pub fn settings(&self) -> &Settings {
        self.settings
    }

    /// Adds a job (a later one with the same id replaces an earlier one).
    pub fn register(&mut self, job: impl Job) -> &mut Self {
        self.registry.register(job);
        self
    }

    /// Secrets every run redacts from what it logs or stores (the platform's credentials).
    pub fn redact(&mut self, secrets: impl IntoIterator<Item = SecretString>) -> &mut Self {
        self.registry.add_redacted_secrets(secrets);
        self
    }

    /// Shares a value (typically a [`Configured`] client) with the platforms installed after
    /// this one, for jobs that use two platforms.
    pub fn provide<T: Any + Send + Sync + Clone>(&mut self, value: T) -> &mut Self {
        self.provided.insert(TypeId::of::<T>(), Box::new(value));
        self
    }

    /// A value an earlier platform shared.
    pub fn get<T: Any + Send + Sync + Clone>(&self) -> Option<T> {
        self.provided
            .get(&TypeId::of::<T>())
            .and_then(|v| v.downcast_ref::<T>())
            .cloned()
    }
}

/// A platform client as a job holds it: ready, or why not (which keys to set, or that the
/// section is broken). Cheap to clone if `T` is.
#[derive(Clone)]
pub struct Configured<T> {
    inner: Result<T, Arc<str>>,
}

impl<T> Configured<T> {
    pub fn ready(client: T) -> Configured<T> {
        Configured { inner: Ok(client) }
    }

    /// No client; `why` is the run's error if a job needs it (e.g. "platform not configured:
    /// set soar.url and soar.app_key").
    pub fn missing(why: impl Into<String>) -> Configured<T> {
        Configured {
            inner: Err(Arc::from(why.into())),
        }
    }

    /// The client, or the error a run that needs it fails with.
    pub fn get(&self) -> Result<&T, JobError> {
        self.inner
            .as_ref()
            .map_err(|why| JobError::Message(why.to_string()))
    }

    pub fn is_ready(&self) -> bool {
        self.inner.is_ok()
    }
}

/// Whether a platform section is configured at all: it has a non-empty `url`. A platform
/// without one is not configured, and its jobs fail with a message saying which keys to set.
pub fn has_url(section: &Value) -> bool {
    section
        .get("url")
        .and_then(|u| u.as_str())
        .is_some_and(|u| !u.is_empty())
}

/// The current values of the secret keys of a section (inline values and the contents of
/// their `<key>_file`s, by the grammar's one secret rule: one trailing newline removed), so
/// that runs redact them. A file that cannot be read is skipped here: the section's check
/// reports it.
pub fn section_secrets(section: &Value, keys: &[&str]) -> Vec<SecretString> {
    let mut out = Vec::new();
    for key in keys {
        if let Some(v) = section.get(*key).and_then(|v| v.as_str()) {
            out.push(SecretString::from(trim_one_newline(v).to_string()));
        }
        let file = section.get(format!("{key}_file")).and_then(|v| v.as_str());
        if let Some(f) = file.and_then(|f| read_secret_file(f.as_ref()).ok()) {
            out.push(f.secret);
        }
    }
    out.retain(|s| !secrecy::ExposeSecret::expose_secret(s).trim().is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_client_fails_the_run_with_its_reason() {
        let c: Configured<u8> = Configured::missing("platform not configured: set x.url");
        assert!(!c.is_ready());
        let e = c.get().unwrap_err();
        assert_eq!(e.to_string(), "platform not configured: set x.url");
        assert_eq!(*Configured::ready(7u8).get().unwrap(), 7);
    }

    #[test]
    fn platforms_share_values_with_later_ones() {
        let settings = Settings::default();
        let mut registry = Registry::new();
        let mut provided = HashMap::new();
        let mut cx = Installer::new(&settings, &mut registry, &mut provided);
        assert!(cx.get::<Configured<u8>>().is_none());
        cx.provide(Configured::ready(3u8));
        assert_eq!(*cx.get::<Configured<u8>>().unwrap().get().unwrap(), 3);
    }

    #[test]
    fn section_secrets_reads_inline_values_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k");
        std::fs::write(&f, "from-file\n").unwrap();
        let section = serde_json::json!({
            "key": "inline\n",
            "token_file": f.display().to_string(),
            "empty": "",
        });
        let got: Vec<String> = section_secrets(&section, &["key", "token", "empty"])
            .iter()
            .map(|s| secrecy::ExposeSecret::expose_secret(s).to_string())
            .collect();
        assert_eq!(got, ["inline", "from-file"]);
    }
}

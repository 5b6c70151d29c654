//! The `threatconnect` section of the daemon configuration, read through the one
//! configuration grammar ([`soarjobd_core::config::grammar`]): every problem at once, each at its
//! `file:line:col` (or its `SOARJOBD__THREATCONNECT__*` variable).

use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde_json::Value;
use url::Url;

use super::auth::Auth;
use soarjobd_core::config::grammar::{self, Origins, Problem, SecretSource, Section, SectionSpec};

/// Settings of the ThreatConnect client and its batch jobs. `Debug` shows no secret (they are
/// [`SecretString`]s, which print as `[REDACTED]`).
#[derive(Debug, Clone)]
pub struct ThreatConnectConfig {
    /// API base including `/api`, e.g. `https://app.threatconnect.com/api`.
    pub url: String,
    /// HMAC auth: the Access ID, with `secret_key` or `secret_key_file`.
    pub access_id: Option<String>,
    pub secret_key: Option<SecretString>,
    /// A file holding the secret key (one trailing newline ignored).
    pub secret_key_file: Option<PathBuf>,
    /// Token auth (`TC-Token`), instead of HMAC.
    pub token: Option<SecretString>,
    pub token_file: Option<PathBuf>,
    /// Verify the server's TLS certificate.
    pub verify_tls: bool,
    /// Time allowed for one HTTP request (connect, upload, answer).
    pub timeout: Duration,
    /// Most requests in flight at once.
    pub max_concurrency: usize,
    /// Most requests started per second (unlimited when absent).
    pub rate_limit: Option<f64>,
    /// First wait after an upload before the first status poll.
    pub poll_initial: Duration,
    /// Longest wait between two status polls (waits grow from `poll_initial` up to this).
    pub poll_interval_max: Duration,
    /// Give up on a batch job that has not completed this long after its upload (wall-clock,
    /// request time included).
    pub poll_max: Duration,
    /// Most indicators in one batch job (the platform's limit is 25 000).
    pub max_indicators_per_job: usize,
    /// Largest upload in bytes. The platform's limit is instance-configured; the documented
    /// example is 2 000 000.
    pub max_upload_bytes: usize,
}

/// The section's top-level key.
pub const SECTION_NAME: &str = "threatconnect";

/// Why the `threatconnect` section is unusable. Never quotes a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("threatconnect config: {0}")]
    Invalid(String),
    #[error("threatconnect config: cannot read {what} file {path}: {source}")]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ThreatConnectConfig {
    /// A config for `url` with every other setting at its default and no credentials.
    pub fn new(url: impl Into<String>) -> ThreatConnectConfig {
        ThreatConnectConfig {
            url: url.into(),
            access_id: None,
            secret_key: None,
            secret_key_file: None,
            token: None,
            token_file: None,
            verify_tls: true,
            timeout: default_timeout(),
            max_concurrency: default_concurrency(),
            rate_limit: None,
            poll_initial: default_poll_initial(),
            poll_interval_max: default_poll_interval_max(),
            poll_max: default_poll_max(),
            max_indicators_per_job: default_max_indicators(),
            max_upload_bytes: default_max_upload(),
        }
    }

    /// How the config loader checks this section ([`soarjobd_core::config::load_with`]).
    pub const SECTION: SectionSpec = SectionSpec {
        name: SECTION_NAME,
        check: |value, origins| {
            ThreatConnectConfig::read(value, origins)
                .err()
                .unwrap_or_default()
        },
    };

    /// Reads the section, reporting every problem at once. `Ok(None)`: no `url`, so the
    /// platform is not configured (its other keys are still checked: a typo is a typo).
    pub fn read(
        value: Option<&Value>,
        origins: &Origins,
    ) -> Result<Option<ThreatConnectConfig>, Vec<Problem>> {
        let mut s = Section::new(SECTION_NAME, value, origins);
        let configured = s
            .value("url")
            .is_some_and(|u| u.as_str().is_none_or(|u| !u.trim().is_empty()));
        let url = if configured {
            s.http_url("url", "https://app.threatconnect.com/api")
        } else {
            None
        };
        let mut cfg = ThreatConnectConfig::new(url.clone().unwrap_or_default());
        cfg.access_id = s.string("access_id").filter(|a| !a.trim().is_empty());
        let secret_key = s.secret("secret_key", "secret_key_file");
        let token = s.secret("token", "token_file");
        let secret_key_set = secret_key.is_some() || s.is_set("secret_key_file");
        let token_set = token.is_some() || s.is_set("token_file");
        (cfg.secret_key, cfg.secret_key_file) = split_secret(secret_key);
        (cfg.token, cfg.token_file) = split_secret(token);
        cfg.verify_tls = s.bool("verify_tls", true);
        cfg.timeout = s.positive_duration("timeout", default_timeout());
        cfg.max_concurrency = s.uint("max_concurrency", default_concurrency(), 1);
        cfg.rate_limit = s.positive_f64("rate_limit");
        cfg.poll_initial = s.duration("poll_initial", default_poll_initial());
        cfg.poll_interval_max = s.duration("poll_interval_max", default_poll_interval_max());
        cfg.poll_max = s.positive_duration("poll_max", default_poll_max());
        cfg.max_indicators_per_job = s.uint("max_indicators_per_job", default_max_indicators(), 1);
        cfg.max_upload_bytes = s.uint("max_upload_bytes", default_max_upload(), 1024);
        if configured {
            match (secret_key_set, token_set) {
                (true, true) => s.section_problem(
                    "set HMAC credentials (`threatconnect.secret_key`) or a token \
                     (`threatconnect.token`), not both",
                ),
                (false, false) => s.section_problem(
                    "no credentials: set `threatconnect.access_id` with \
                     `secret_key`/`secret_key_file`, or `token`/`token_file`",
                ),
                (true, false) if cfg.access_id.is_none() => {
                    s.section_problem("`threatconnect.access_id` is required with a secret key")
                }
                _ => {}
            }
        }
        let problems = s.finish();
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(url.map(|_| cfg))
    }

    /// Reads the section from a config tree built in code (no positions); `url` is required.
    pub fn from_value(value: &Value) -> Result<ThreatConnectConfig, ConfigError> {
        match ThreatConnectConfig::read(Some(value), &Origins::default()) {
            Ok(Some(cfg)) => Ok(cfg),
            Ok(None) => Err(ConfigError::Invalid(
                "missing required key `threatconnect.url`".into(),
            )),
            Err(problems) => Err(ConfigError::Invalid(grammar::join(&problems))),
        }
    }

    /// Checks what serde cannot: the URL, numeric ranges, and that exactly one way to
    /// authenticate is configured.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.base_url()?;
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if self.max_concurrency == 0 {
            return invalid("`max_concurrency` must be at least 1");
        }
        if self.max_indicators_per_job == 0 {
            return invalid("`max_indicators_per_job` must be at least 1");
        }
        if self.max_upload_bytes < 1024 {
            return invalid("`max_upload_bytes` must be at least 1024");
        }
        if self.timeout.is_zero() || self.poll_max.is_zero() {
            return invalid("`timeout` and `poll_max` must be longer than 0s");
        }
        if let Some(r) = self.rate_limit
            && !(r.is_finite() && r > 0.0)
        {
            return invalid("`rate_limit` must be a positive number of requests per second");
        }
        let hmac = self.secret_key.is_some() || self.secret_key_file.is_some();
        let token = self.token.is_some() || self.token_file.is_some();
        if self.secret_key.is_some() && self.secret_key_file.is_some() {
            return invalid("set `secret_key` or `secret_key_file`, not both");
        }
        if self.token.is_some() && self.token_file.is_some() {
            return invalid("set `token` or `token_file`, not both");
        }
        match (hmac, token) {
            (true, true) => invalid("set HMAC credentials or a token, not both"),
            (false, false) => invalid(
                "no credentials: set `access_id` with `secret_key`/`secret_key_file`, or `token`/`token_file`",
            ),
            (true, false) if self.access_id.as_deref().is_none_or(str::is_empty) => {
                invalid("`access_id` is required with a secret key")
            }
            _ => Ok(()),
        }
    }

    /// The API base as a URL (http or https, no query).
    pub fn base_url(&self) -> Result<Url, ConfigError> {
        let url = Url::parse(self.url.trim())
            .map_err(|e| ConfigError::Invalid(format!("`url` {:?} is not a URL: {e}", self.url)))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(ConfigError::Invalid(format!(
                "`url` {:?} must be an http(s) URL such as https://app.threatconnect.com/api",
                self.url
            )));
        }
        if url.query().is_some() {
            return Err(ConfigError::Invalid(
                "`url` must not have a query string".into(),
            ));
        }
        Ok(url)
    }

    /// The credentials, reading `secret_key_file` / `token_file` if that is where they are.
    pub fn auth(&self) -> Result<Auth, ConfigError> {
        if let Some(token) = &self.token {
            return Ok(Auth::Token(token.clone()));
        }
        if let Some(path) = &self.token_file {
            return Ok(Auth::Token(read_secret("token", path)?));
        }
        let secret_key = match (&self.secret_key, &self.secret_key_file) {
            (Some(k), _) => k.clone(),
            (None, Some(path)) => read_secret("secret key", path)?,
            (None, None) => return Err(ConfigError::Invalid("no credentials configured".into())),
        };
        let access_id = self
            .access_id
            .clone()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| ConfigError::Invalid("`access_id` is required".into()))?;
        Ok(Auth::Hmac {
            access_id,
            secret_key,
        })
    }
}

fn split_secret(s: Option<SecretSource>) -> (Option<SecretString>, Option<PathBuf>) {
    match s {
        Some(SecretSource::Inline(v)) => (Some(v), None),
        Some(SecretSource::File(p)) => (None, Some(p)),
        None => (None, None),
    }
}

/// Reads a secret file by the grammar's secret-file rule (one trailing newline removed).
fn read_secret(what: &'static str, path: &Path) -> Result<SecretString, ConfigError> {
    // The grammar's reader checks size and type first; an I/O error keeps its kind here.
    if let Err(source) = std::fs::metadata(path) {
        return Err(ConfigError::ReadFile {
            what,
            path: path.to_path_buf(),
            source,
        });
    }
    grammar::read_secret_file(path)
        .map(|f| f.secret)
        .map_err(|e| ConfigError::Invalid(format!("the {what} file: {e}")))
}

fn default_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_concurrency() -> usize {
    4
}
fn default_poll_initial() -> Duration {
    Duration::from_secs(3)
}
fn default_poll_interval_max() -> Duration {
    Duration::from_secs(20)
}
fn default_poll_max() -> Duration {
    Duration::from_secs(3600)
}
fn default_max_indicators() -> usize {
    25_000
}
fn default_max_upload() -> usize {
    2_000_000
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_env_strings() {
        let cfg = ThreatConnectConfig::from_value(&json!({
            "url": "https://tc.example/api",
            "access_id": "123",
            "secret_key": "s3cr3t-value",
            "verify_tls": "false",
            "max_concurrency": "2",
            "poll_max": "90m",
            "timeout": 30,
            "rate_limit": "2.5",
        }))
        .unwrap();
        assert!(!cfg.verify_tls);
        assert_eq!(cfg.max_concurrency, 2);
        assert_eq!(cfg.poll_max, Duration::from_secs(5400));
        assert_eq!(cfg.timeout, Duration::from_secs(30));
        assert_eq!(cfg.rate_limit, Some(2.5));
        assert_eq!(cfg.max_indicators_per_job, 25_000);
        assert!(!format!("{cfg:?}").contains("s3cr3t-value"));
        assert!(matches!(cfg.auth().unwrap(), Auth::Hmac { .. }));

        let d =
            ThreatConnectConfig::from_value(&json!({"url": "http://x/api", "token": "t"})).unwrap();
        assert!(d.verify_tls);
        assert_eq!(d.poll_max, Duration::from_secs(3600));
        assert!(matches!(d.auth().unwrap(), Auth::Token(_)));
    }

    #[test]
    fn problems_name_the_key_and_never_the_secret() {
        let e = ThreatConnectConfig::from_value(&json!({
            "url": "https://tc.example/api", "token": "t", "verify_tsl": true
        }))
        .unwrap_err();
        assert!(e.to_string().contains("verify_tsl"), "{e}");

        let e = ThreatConnectConfig::from_value(&json!({
            "url": "https://tc.example/api", "token": "tok-secret", "max_concurrency": "many"
        }))
        .unwrap_err();
        assert!(e.to_string().contains("max_concurrency"), "{e}");
        assert!(!e.to_string().contains("tok-secret"), "{e}");

        for bad in [
            json!({"url": "https://tc.example/api"}),
            json!({"url": "https://tc.example/api", "secret_key": "k"}),
            json!({"url": "https://tc.example/api", "access_id": "a", "secret_key": "k", "token": "t"}),
            json!({"url": "ftp://tc.example/api", "token": "t"}),
            json!({"url": "https://tc.example/api", "token": "t", "max_concurrency": 0}),
        ] {
            let e = ThreatConnectConfig::from_value(&bad).unwrap_err();
            assert!(!e.to_string().contains("\"k\""), "{e}");
        }
    }

    #[test]
    fn secrets_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "file-secret\n").unwrap();
        let cfg = ThreatConnectConfig::from_value(&json!({
            "url": "https://tc.example/api", "access_id": "a",
            "secret_key_file": key.display().to_string(),
        }))
        .unwrap();
        match cfg.auth().unwrap() {
            Auth::Hmac { secret_key, .. } => {
                assert_eq!(
                    secrecy::ExposeSecret::expose_secret(&secret_key),
                    "file-secret"
                )
            }
            other => panic!("{other:?}"),
        }
        let missing = ThreatConnectConfig {
            token_file: Some(dir.path().join("nope")),
            ..ThreatConnectConfig::new("https://tc.example/api")
        };
        assert!(matches!(
            missing.auth().unwrap_err(),
            ConfigError::ReadFile { .. }
        ));
    }
}

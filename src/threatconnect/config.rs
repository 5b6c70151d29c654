//! The `threatconnect` section of the daemon configuration.
//!
//! Values may come from YAML (typed) or from the environment (`SOARJOBD__THREATCONNECT__…`,
//! always strings), so numbers, booleans and durations accept both forms.

use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Deserializer};
use url::Url;

use super::auth::Auth;

/// Settings of the ThreatConnect client and its batch jobs. `Debug` shows no secret (they are
/// [`SecretString`]s, which print as `[REDACTED]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreatConnectConfig {
    /// API base including `/api`, e.g. `https://app.threatconnect.com/api`.
    pub url: String,
    /// HMAC auth: the Access ID, with `secret_key` or `secret_key_file`.
    #[serde(default)]
    pub access_id: Option<String>,
    #[serde(default, deserialize_with = "opt_secret")]
    pub secret_key: Option<SecretString>,
    /// A file holding the secret key (trailing white space ignored).
    #[serde(default)]
    pub secret_key_file: Option<PathBuf>,
    /// Token auth (`TC-Token`), instead of HMAC.
    #[serde(default, deserialize_with = "opt_secret")]
    pub token: Option<SecretString>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Verify the server's TLS certificate. Only an explicit `false` turns it off.
    #[serde(default = "default_true", deserialize_with = "flex_bool")]
    pub verify_tls: bool,
    /// Time allowed for one HTTP request (connect, upload, answer).
    #[serde(default = "default_timeout", deserialize_with = "flex_duration")]
    pub timeout: Duration,
    /// Most requests in flight at once.
    #[serde(default = "default_concurrency", deserialize_with = "flex_usize")]
    pub max_concurrency: usize,
    /// Most requests started per second (unlimited when absent).
    #[serde(default, deserialize_with = "opt_flex_f64")]
    pub rate_limit: Option<f64>,
    /// First wait after an upload before the first status poll.
    #[serde(default = "default_poll_initial", deserialize_with = "flex_duration")]
    pub poll_initial: Duration,
    /// Longest wait between two status polls (waits grow from `poll_initial` up to this).
    #[serde(
        default = "default_poll_interval_max",
        deserialize_with = "flex_duration"
    )]
    pub poll_interval_max: Duration,
    /// Give up on a batch job that has not completed this long after its upload (wall-clock,
    /// request time included).
    #[serde(default = "default_poll_max", deserialize_with = "flex_duration")]
    pub poll_max: Duration,
    /// Most indicators in one batch job (the platform's limit is 25 000).
    #[serde(default = "default_max_indicators", deserialize_with = "flex_usize")]
    pub max_indicators_per_job: usize,
    /// Largest upload in bytes. The platform's limit is instance-configured; the documented
    /// example is 2 000 000.
    #[serde(default = "default_max_upload", deserialize_with = "flex_usize")]
    pub max_upload_bytes: usize,
}

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

    /// Reads the section as the daemon's config loader hands it over (a JSON value), naming the
    /// offending key on error, then checks it.
    pub fn from_value(value: &serde_json::Value) -> Result<ThreatConnectConfig, ConfigError> {
        let cfg: ThreatConnectConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            ConfigError::Invalid(format!("`{path}`: {}", e.into_inner()))
        })?;
        cfg.validate()?;
        Ok(cfg)
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

/// Reads a secret from a file, without the trailing newline editors add.
fn read_secret(what: &'static str, path: &Path) -> Result<SecretString, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    let trimmed = text.trim_end();
    if trimmed.is_empty() {
        return Err(ConfigError::Invalid(format!(
            "the {what} file {} is empty",
            path.display()
        )));
    }
    Ok(SecretString::from(trimmed.to_string()))
}

fn default_true() -> bool {
    true
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

/// A number or a string, as YAML and the environment give them.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Bool(bool),
    Int(u64),
    Float(f64),
    Text(String),
}

fn opt_secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
    // An empty value (e.g. an unset variable expanded to "") means "not set".
    let s: Option<String> = Option::deserialize(d)?;
    Ok(s.filter(|s| !s.is_empty()).map(SecretString::from))
}

fn flex_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    use serde::de::Error;
    match Scalar::deserialize(d)? {
        Scalar::Bool(b) => Ok(b),
        Scalar::Text(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Ok(true),
            "false" | "no" | "0" => Ok(false),
            _ => Err(D::Error::custom(format!(
                "expected true or false, got {s:?}"
            ))),
        },
        _ => Err(D::Error::custom("expected true or false")),
    }
}

fn flex_usize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    use serde::de::Error;
    match Scalar::deserialize(d)? {
        Scalar::Int(n) => usize::try_from(n).map_err(D::Error::custom),
        Scalar::Text(s) => s
            .trim()
            .parse()
            .map_err(|_| D::Error::custom(format!("expected a whole number, got {s:?}"))),
        _ => Err(D::Error::custom("expected a whole number")),
    }
}

fn opt_flex_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    use serde::de::Error;
    match Option::<Scalar>::deserialize(d)? {
        None => Ok(None),
        Some(Scalar::Int(n)) => Ok(Some(n as f64)),
        Some(Scalar::Float(f)) => Ok(Some(f)),
        Some(Scalar::Text(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| D::Error::custom(format!("expected a number, got {s:?}"))),
        Some(Scalar::Bool(_)) => Err(D::Error::custom("expected a number")),
    }
}

fn flex_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    use serde::de::Error;
    match Scalar::deserialize(d)? {
        Scalar::Int(n) => Ok(Duration::from_secs(n)),
        Scalar::Text(s) => crate::http::parse_config_duration(&s).map_err(D::Error::custom),
        _ => Err(D::Error::custom(
            "expected a duration such as 30s, 500ms, 15m or 1h",
        )),
    }
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

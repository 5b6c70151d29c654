//! The `soar` config section.
//!
//! Values may come from YAML (typed) or from `SOARJOBD__SOAR__*` environment variables (always
//! strings), so every scalar key accepts both forms: `verify_tls: false` and `"false"`,
//! `max_concurrency: 8` and `"8"`, `timeout: 30` (seconds) and `"30s"`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use url::Url;

use super::SoarError;

/// Which URL scheme and auth the platform speaks (spec §1.1–1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiFlavor {
    /// `{url}/api/external/v1/sdk/{Endpoint}/...` with the `AppKey` header.
    #[default]
    Legacy,
    /// `{one_platform_url}/v1alpha/projects/{p}/locations/{l}/instances/{i}/legacySdk:legacy{Endpoint}`
    /// with `Authorization: Bearer` (and `AppKey` when configured).
    OnePlatform,
}

/// The `soar` section of the daemon config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoarConfig {
    /// The platform root, `{scheme}://{host}:{port}` (a trailing `/api` is accepted too). The
    /// comments endpoints always use it, even in one-platform mode, as the SDK does.
    pub url: String,
    #[serde(default)]
    pub api: ApiFlavor,
    #[serde(default, deserialize_with = "de_secret")]
    pub app_key: Option<SecretString>,
    #[serde(default)]
    pub app_key_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "de_secret")]
    pub bearer_token: Option<SecretString>,
    /// Re-read whenever the file changes, so an external refresher can rotate a short-lived
    /// GCP access token under a long-running daemon.
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    #[serde(default = "default_true", deserialize_with = "de_bool")]
    pub verify_tls: bool,
    /// Time allowed for one request attempt (connect, send, read).
    #[serde(default = "default_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    #[serde(default = "default_connect_timeout", deserialize_with = "de_duration")]
    pub connect_timeout: Duration,
    #[serde(default = "default_concurrency", deserialize_with = "de_usize")]
    pub max_concurrency: usize,
    /// Requests per second to this platform, all jobs together (`None` = unlimited).
    #[serde(default, deserialize_with = "de_opt_f64")]
    pub rate_limit: Option<f64>,
    /// One-platform API host (`ONE_PLATFORM_URL_DOMAIN`), e.g. `https://us-chronicle.googleapis.com`.
    /// Unset: the `url` root is used, as the SDK does.
    #[serde(default)]
    pub one_platform_url: Option<String>,
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub instance: Option<String>,
}

fn default_true() -> bool {
    true
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_concurrency() -> usize {
    8
}

impl SoarConfig {
    /// A legacy-API config for `url` with an inline key and every other setting at its default.
    pub fn legacy(url: impl Into<String>, app_key: impl Into<String>) -> SoarConfig {
        SoarConfig {
            url: url.into(),
            api: ApiFlavor::Legacy,
            app_key: Some(SecretString::from(app_key.into())),
            app_key_file: None,
            bearer_token: None,
            bearer_token_file: None,
            verify_tls: true,
            timeout: default_timeout(),
            connect_timeout: default_connect_timeout(),
            max_concurrency: default_concurrency(),
            rate_limit: None,
            one_platform_url: None,
            project: None,
            location: None,
            instance: None,
        }
    }

    /// Reads the section from the loaded config tree (`Settings::soar`).
    pub fn from_value(v: &serde_json::Value) -> Result<SoarConfig, SoarError> {
        serde_path_to_error::deserialize(v).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." {
                SoarError::Config(inner.to_string())
            } else {
                SoarError::Config(format!("soar.{path}: {inner}"))
            }
        })
    }

    /// The API key, inline or read from its file; `Ok(None)` if neither is set.
    pub(crate) fn resolve_app_key(&self) -> Result<Option<SecretString>, SoarError> {
        resolve_secret("app_key", &self.app_key, &self.app_key_file)
    }
}

/// `{name}` or `{name}_file`, never both; a file's content is trimmed of surrounding whitespace
/// (editors add a final newline).
fn resolve_secret(
    name: &str,
    inline: &Option<SecretString>,
    file: &Option<PathBuf>,
) -> Result<Option<SecretString>, SoarError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(SoarError::Config(format!(
            "set soar.{name} or soar.{name}_file, not both"
        ))),
        (Some(s), None) => Ok(Some(s.clone())),
        (None, Some(path)) => read_secret_file(name, path).map(Some),
        (None, None) => Ok(None),
    }
}

pub(crate) fn read_secret_file(name: &str, path: &Path) -> Result<SecretString, SoarError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        SoarError::Config(format!(
            "cannot read soar.{name}_file {}: {e}",
            path.display()
        ))
    })?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(SoarError::Config(format!(
            "soar.{name}_file {} is empty",
            path.display()
        )));
    }
    Ok(SecretString::from(trimmed.to_string()))
}

/// The platform's `API_ROOT` (`.../api`) and the one-platform root (scheme, host, port only).
pub(crate) fn roots(cfg: &SoarConfig) -> Result<(Url, Url), SoarError> {
    let api_root = api_root(&cfg.url)?;
    let op_root = match &cfg.one_platform_url {
        Some(u) => host_root("one_platform_url", u)?,
        None => host_root("url", &cfg.url)?,
    };
    Ok((api_root, op_root))
}

fn parse_http_url(key: &str, raw: &str) -> Result<Url, SoarError> {
    let url = Url::parse(raw.trim())
        .map_err(|e| SoarError::Config(format!("soar.{key} `{raw}` is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(SoarError::Config(format!(
            "soar.{key} must be an http(s) URL such as https://soar.example.com, got `{raw}`"
        )));
    }
    if url.query().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(SoarError::Config(format!(
            "soar.{key} must not carry a query or credentials"
        )));
    }
    Ok(url)
}

/// `https://h:8443` or `https://h:8443/api/` -> `https://h:8443/api/` (with a trailing slash, so
/// relative joins append).
fn api_root(raw: &str) -> Result<Url, SoarError> {
    let mut url = parse_http_url("url", raw)?;
    let path = url.path().trim_end_matches('/').to_string();
    let path = if path.ends_with("/api") {
        format!("{path}/")
    } else {
        format!("{path}/api/")
    };
    url.set_path(&path);
    Ok(url)
}

fn host_root(key: &str, raw: &str) -> Result<Url, SoarError> {
    let mut url = parse_http_url(key, raw)?;
    url.set_path("/");
    Ok(url)
}

// ---- lenient scalar deserializers (YAML types or environment strings) ----

/// A scalar as YAML gives it or as an environment variable spells it.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Bool(bool),
    U64(u64),
    F64(f64),
    Str(String),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::U64(n) => write!(f, "{n}"),
            Scalar::F64(n) => write!(f, "{n}"),
            Scalar::Str(s) => write!(f, "`{s}`"),
        }
    }
}

fn de_secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
    // An empty value (`SOARJOBD__SOAR__APP_KEY=`) means "not set", so a file can take over.
    let s: Option<String> = Option::deserialize(d)?;
    Ok(s.filter(|s| !s.trim().is_empty())
        .map(|s| SecretString::from(s.trim().to_string())))
}

fn de_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match Scalar::deserialize(d)? {
        Scalar::Bool(b) => Ok(b),
        Scalar::Str(s) if s.trim().eq_ignore_ascii_case("true") => Ok(true),
        Scalar::Str(s) if s.trim().eq_ignore_ascii_case("false") => Ok(false),
        other => Err(de::Error::custom(format!(
            "expected true or false, got {other}"
        ))),
    }
}

fn de_usize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = match Scalar::deserialize(d)? {
        Scalar::U64(n) => usize::try_from(n).ok(),
        Scalar::Str(s) => s.trim().parse::<usize>().ok(),
        _ => None,
    };
    match n {
        Some(n) if n >= 1 => Ok(n),
        _ => Err(de::Error::custom("expected a whole number of at least 1")),
    }
}

fn de_opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let v: Option<Scalar> = Option::deserialize(d)?;
    let n = match v {
        None => return Ok(None),
        Some(Scalar::Str(s)) if s.trim().is_empty() => return Ok(None),
        Some(Scalar::U64(n)) => Some(n as f64),
        Some(Scalar::F64(n)) => Some(n),
        Some(Scalar::Str(s)) => s.trim().parse::<f64>().ok(),
        Some(Scalar::Bool(_)) => None,
    };
    match n {
        Some(n) if n.is_finite() && n > 0.0 => Ok(Some(n)),
        _ => Err(de::Error::custom(
            "expected a positive number of requests per second",
        )),
    }
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let parsed = match Scalar::deserialize(d)? {
        Scalar::U64(n) => Some(Duration::from_secs(n)),
        Scalar::Str(s) => crate::http::parse_config_duration(&s).ok(),
        _ => None,
    };
    match parsed {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(de::Error::custom(
            "expected a duration such as 30s, 500ms or 2m (or a whole number of seconds)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use serde_json::json;

    #[test]
    fn defaults_and_env_strings() {
        let c = SoarConfig::from_value(&json!({"url": "http://127.0.0.1:8443", "app_key": "k"}))
            .unwrap();
        assert_eq!(c.api, ApiFlavor::Legacy);
        assert!(c.verify_tls);
        assert_eq!(c.timeout, Duration::from_secs(30));
        assert_eq!(c.max_concurrency, 8);
        assert_eq!(c.rate_limit, None);
        // What environment variables produce: strings everywhere.
        let c = SoarConfig::from_value(&json!({
            "url": "https://soar.example.com", "app_key": "k", "verify_tls": "false",
            "timeout": "1500ms", "max_concurrency": "3", "rate_limit": "2.5",
            "api": "one_platform"
        }))
        .unwrap();
        assert!(!c.verify_tls);
        assert_eq!(c.timeout, Duration::from_millis(1500));
        assert_eq!(c.max_concurrency, 3);
        assert_eq!(c.rate_limit, Some(2.5));
        assert_eq!(c.api, ApiFlavor::OnePlatform);
    }

    #[test]
    fn unknown_and_bad_keys_are_named() {
        let e = SoarConfig::from_value(&json!({"url": "http://x", "app_kee": "k"})).unwrap_err();
        assert!(e.to_string().contains("app_kee"), "{e}");
        let e = SoarConfig::from_value(&json!({"url": "http://x", "timeout": "soon"})).unwrap_err();
        assert!(e.to_string().contains("soar.timeout"), "{e}");
        let e =
            SoarConfig::from_value(&json!({"url": "http://x", "max_concurrency": 0})).unwrap_err();
        assert!(e.to_string().contains("soar.max_concurrency"), "{e}");
        let e = SoarConfig::from_value(&json!({"app_key": "k"})).unwrap_err();
        assert!(e.to_string().contains("url"), "{e}");
    }

    #[test]
    fn secret_is_not_in_debug_and_file_is_trimmed() {
        let c = SoarConfig::legacy("http://x", "super-secret-key");
        assert!(!format!("{c:?}").contains("super-secret-key"));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("key");
        std::fs::write(&f, "from-file\n").unwrap();
        let k = resolve_secret("app_key", &None, &Some(f.clone()))
            .unwrap()
            .unwrap();
        assert_eq!(k.expose_secret(), "from-file");
        let both = resolve_secret("app_key", &Some(SecretString::from("a")), &Some(f));
        assert!(both.is_err());
    }

    #[test]
    fn api_root_normalisation() {
        for raw in [
            "http://h:8443",
            "http://h:8443/",
            "http://h:8443/api",
            "http://h:8443/api/",
        ] {
            assert_eq!(
                api_root(raw).unwrap().as_str(),
                "http://h:8443/api/",
                "{raw}"
            );
        }
        assert_eq!(
            api_root("https://h/prefix").unwrap().as_str(),
            "https://h/prefix/api/"
        );
        assert!(api_root("ftp://h").is_err());
        assert!(api_root("http://h/?k=v").is_err());
    }
}

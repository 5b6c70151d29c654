//! The `soar` config section, read through the one configuration grammar
//! ([`soarjobd_core::config::grammar`]): every problem at once, each at its `file:line:col` (or its
//! `SOARJOBD__SOAR__*` variable), the same durations, booleans and secret files as every
//! other section.

use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use super::SoarError;
use soarjobd_core::config::grammar::{self, Origins, Problem, SecretSource, Section, SectionSpec};

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
#[derive(Debug, Clone)]
pub struct SoarConfig {
    /// The platform root, `{scheme}://{host}:{port}` (a trailing `/api` is accepted too). The
    /// comments endpoints always use it, even in one-platform mode, as the SDK does.
    pub url: String,
    pub api: ApiFlavor,
    pub app_key: Option<SecretString>,
    pub app_key_file: Option<PathBuf>,
    pub bearer_token: Option<SecretString>,
    /// Re-read whenever the file changes, so an external refresher can rotate a short-lived
    /// GCP access token under a long-running daemon.
    pub bearer_token_file: Option<PathBuf>,
    pub verify_tls: bool,
    /// Time allowed for one request attempt (connect, send, read).
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub max_concurrency: usize,
    /// Requests per second to this platform, all jobs together (`None` = unlimited).
    pub rate_limit: Option<f64>,
    /// One-platform API host (`ONE_PLATFORM_URL_DOMAIN`), e.g. `https://us-chronicle.googleapis.com`.
    /// Unset: the `url` root is used, as the SDK does.
    pub one_platform_url: Option<String>,
    pub project: Option<String>,
    pub location: Option<String>,
    pub instance: Option<String>,
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

/// The section's top-level key.
pub const SECTION_NAME: &str = "soar";

impl SoarConfig {
    /// How the config loader checks this section ([`soarjobd_core::config::load_with`]).
    pub const SECTION: SectionSpec = SectionSpec {
        name: SECTION_NAME,
        check: |value, origins| SoarConfig::read(value, origins).err().unwrap_or_default(),
    };

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

    /// Reads the section, reporting every problem at once. `Ok(None)`: no `url`, so the
    /// platform is not configured (its other keys are still checked: a typo is a typo).
    pub fn read(
        value: Option<&Value>,
        origins: &Origins,
    ) -> Result<Option<SoarConfig>, Vec<Problem>> {
        let mut s = Section::new(SECTION_NAME, value, origins);
        let configured = s
            .value("url")
            .is_some_and(|u| u.as_str().is_none_or(|u| !u.trim().is_empty()));
        let url = if configured {
            s.http_url("url", "https://soar.example.com")
        } else {
            None
        };
        let api = s.choice(
            "api",
            &[
                ("legacy", ApiFlavor::Legacy),
                ("one_platform", ApiFlavor::OnePlatform),
            ],
            ApiFlavor::Legacy,
        );
        let app_key = s.secret("app_key", "app_key_file");
        let bearer = s.secret("bearer_token", "bearer_token_file");
        let mut cfg = SoarConfig::legacy(url.clone().unwrap_or_default(), "");
        cfg.api = api;
        (cfg.app_key, cfg.app_key_file) = split_secret(app_key.clone());
        (cfg.bearer_token, cfg.bearer_token_file) = split_secret(bearer.clone());
        cfg.verify_tls = s.bool("verify_tls", true);
        cfg.timeout = s.positive_duration("timeout", default_timeout());
        cfg.connect_timeout = s.positive_duration("connect_timeout", default_connect_timeout());
        cfg.max_concurrency = s.uint("max_concurrency", default_concurrency(), 1);
        cfg.rate_limit = s.positive_f64("rate_limit");
        cfg.one_platform_url = if s.is_set("one_platform_url") {
            s.http_url("one_platform_url", "https://us-chronicle.googleapis.com")
        } else {
            None
        };
        cfg.project = s.string("project");
        cfg.location = s.string("location");
        cfg.instance = s.string("instance");
        if configured {
            match api {
                ApiFlavor::Legacy if app_key.is_none() && !s.is_set("app_key_file") => {
                    s.section_problem(
                        "`soar.app_key` or `soar.app_key_file` is required (the legacy API \
                         authenticates with the AppKey header)",
                    );
                }
                ApiFlavor::OnePlatform => {
                    if bearer.is_none() && !s.is_set("bearer_token_file") {
                        s.section_problem(
                            "`soar.bearer_token` or `soar.bearer_token_file` is required for \
                             api: one_platform",
                        );
                    }
                    for (key, v) in [
                        ("project", &cfg.project),
                        ("location", &cfg.location),
                        ("instance", &cfg.instance),
                    ] {
                        if v.as_deref().is_none_or(|v| v.trim().is_empty()) {
                            s.section_problem(format!(
                                "`soar.{key}` is required for api: one_platform"
                            ));
                        }
                    }
                }
                ApiFlavor::Legacy => {}
            }
        }
        let problems = s.finish();
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(url.map(|_| cfg))
    }

    /// Reads the section from a config tree built in code (no positions); `url` is required.
    pub fn from_value(v: &Value) -> Result<SoarConfig, SoarError> {
        let origins = Origins::default();
        match SoarConfig::read(Some(v), &origins) {
            Ok(Some(cfg)) => Ok(cfg),
            Ok(None) => Err(SoarError::Config(
                "missing required key `soar.url`".to_string(),
            )),
            Err(problems) => Err(SoarError::Config(grammar::join(&problems))),
        }
    }

    /// The API key, inline or read from its file; `Ok(None)` if neither is set.
    pub(crate) fn resolve_app_key(&self) -> Result<Option<SecretString>, SoarError> {
        resolve_secret("app_key", &self.app_key, &self.app_key_file)
    }
}

fn split_secret(s: Option<SecretSource>) -> (Option<SecretString>, Option<PathBuf>) {
    match s {
        Some(SecretSource::Inline(v)) => (Some(v), None),
        Some(SecretSource::File(p)) => (None, Some(p)),
        None => (None, None),
    }
}

/// `{name}` or `{name}_file`, never both; a file is read by the grammar's secret-file rule.
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

/// Reads `soar.{name}_file` by the grammar's secret-file rule (one trailing newline removed).
pub(crate) fn read_secret_file(name: &str, path: &Path) -> Result<SecretString, SoarError> {
    grammar::read_secret_file(path)
        .map(|f| f.secret)
        .map_err(|e| SoarError::Config(format!("soar.{name}_file: {e}")))
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
            "api": "one_platform", "bearer_token": "t", "project": "p", "location": "l",
            "instance": "i"
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

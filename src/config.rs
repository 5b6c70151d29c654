//! The daemon's typed, layered configuration.
//!
//! Layers, later wins: built-in defaults <- the YAML file (`--config`, env `SOARJOBD_CONFIG`,
//! default `config/soarjobd.yaml`) <- environment variables `SOARJOBD__SECTION__KEY`
//! (`SOARJOBD__JOBS_DIR`, `SOARJOBD__SOAR__URL`, ...). A relative path written in the file is
//! relative to the file's folder (so a config can be moved with its jobs); a relative path from
//! the environment is relative to the working directory, as a shell user expects.
//!
//! Validation never stops at the first problem: [`load`] returns every error at once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::schedule::parse_duration;

/// The default config file, relative to the working directory.
pub const DEFAULT_CONFIG_PATH: &str = "config/soarjobd.yaml";
/// The environment variable prefix for overrides (`SOARJOBD__KEY`).
pub const ENV_PREFIX: &str = "SOARJOBD";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

impl LogFormat {
    pub fn parse(s: &str) -> Option<LogFormat> {
        match s {
            "pretty" | "text" => Some(LogFormat::Pretty),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    /// An `EnvFilter` directive such as `info` or `soarjobd=debug,info`.
    pub level: String,
}

/// What job files may read besides themselves (see [`crate::definition::secrets`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretsSettings {
    /// Variables `value_from_env` may read: names, or prefixes ending in `*`. Default none.
    pub env_allow: Vec<String>,
    /// Folders `value_from_file` may read inside; `None`: the jobs folder and `/run/secrets`.
    pub dirs: Option<Vec<PathBuf>>,
}

#[derive(Debug, Clone)]
pub struct HistorySettings {
    /// Keep at least the newest this many runs per job.
    pub keep_runs: u32,
    /// Keep every run younger than this many days.
    pub keep_days: u32,
}

/// The whole daemon configuration, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The file the settings came from, if one was read.
    pub file: Option<PathBuf>,
    pub jobs_dir: PathBuf,
    pub database_url: String,
    pub log: LogSettings,
    pub shutdown_grace: Duration,
    pub history: HistorySettings,
    /// How often to rescan `jobs/` when file events may be missed (network filesystems).
    pub reload_poll: Duration,
    /// The `soar` section, validated by its platform plugin when the app is built.
    pub soar: Value,
    /// The `threatconnect` section, validated by its platform plugin.
    pub threatconnect: Value,
    /// The `secrets` section: what job files may read.
    pub secrets: SecretsSettings,
}

impl Settings {
    /// How job files are loaded under these settings (the `secrets` policy).
    pub fn load_options(&self) -> crate::definition::LoadOptions {
        let mut opts = crate::definition::LoadOptions::for_jobs_dir(&self.jobs_dir);
        opts.secrets.env_allow = self.secrets.env_allow.clone();
        if let Some(dirs) = &self.secrets.dirs {
            opts.secrets.dirs = dirs.clone();
        }
        opts
    }

    /// A platform's config section by name, as loaded; `None` for a section this grammar does
    /// not hold. Platforms (`crate::platform::Platform`) read their section through this.
    pub fn section(&self, name: &str) -> Option<&Value> {
        match name {
            "soar" => Some(&self.soar),
            "threatconnect" => Some(&self.threatconnect),
            _ => None,
        }
    }
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            file: None,
            jobs_dir: PathBuf::from("jobs"),
            database_url: "sqlite:data/soarjobd.db".into(),
            log: LogSettings {
                format: LogFormat::Pretty,
                level: "info".into(),
            },
            shutdown_grace: Duration::from_secs(30),
            history: HistorySettings {
                keep_runs: 1000,
                keep_days: 30,
            },
            reload_poll: Duration::from_secs(30),
            soar: Value::Object(Map::new()),
            threatconnect: Value::Object(Map::new()),
            secrets: SecretsSettings::default(),
        }
    }
}

/// Every problem found in the configuration.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration{}:\n  {}", file_suffix(.file), .problems.join("\n  "))]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    pub problems: Vec<String>,
}

fn file_suffix(file: &Option<PathBuf>) -> String {
    file.as_ref()
        .map(|f| format!(" in {}", f.display()))
        .unwrap_or_default()
}

/// Where to read from.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// An explicit config file (must exist), or `None` for the default path (optional).
    pub file: Option<PathBuf>,
    /// Environment variables to use instead of the process environment (tests).
    pub env: Option<HashMap<String, String>>,
}

const TOP_KEYS: &[&str] = &[
    "jobs_dir",
    "database_url",
    "log",
    "shutdown_grace",
    "history",
    "reload_poll",
    "soar",
    "threatconnect",
    "secrets",
];

/// Keys holding paths, resolved against the config file's folder when written in the file.
const PATH_KEYS: &[&[&str]] = &[
    &["jobs_dir"],
    &["soar", "app_key_file"],
    &["soar", "bearer_token_file"],
    &["threatconnect", "secret_key_file"],
    &["threatconnect", "token_file"],
];

/// Loads and validates the configuration.
pub fn load(sources: &Sources) -> Result<Settings, ConfigError> {
    let (file, explicit) = match &sources.file {
        Some(f) => (f.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    let env: HashMap<String, String> = match &sources.env {
        Some(e) => e.clone(),
        None => std::env::vars().collect(),
    };
    let file_exists = file.is_file();
    if explicit && !file_exists {
        return Err(ConfigError {
            file: Some(file.clone()),
            problems: vec![format!("the config file {} does not exist", file.display())],
        });
    }
    let mut file_value = Value::Object(Map::new());
    if file_exists {
        let built = config::Config::builder()
            .add_source(config::File::from(file.as_path()).format(config::FileFormat::Yaml))
            .build()
            .and_then(|c| c.try_deserialize::<Value>());
        match built {
            Ok(Value::Null) => {}
            Ok(v) => file_value = v,
            Err(e) => {
                return Err(ConfigError {
                    file: Some(file),
                    problems: vec![e.to_string()],
                });
            }
        }
        let base = file.parent().unwrap_or(Path::new(".")).to_path_buf();
        resolve_relative_paths(&mut file_value, &base);
    }
    let env_value = env_layer(&env).map_err(|e| ConfigError {
        file: None,
        problems: vec![e],
    })?;
    let mut merged = file_value;
    merge(&mut merged, env_value);
    validate(&merged, file_exists.then_some(file))
}

/// The `SOARJOBD__A__B=v` variables as a nested JSON object `{a: {b: "v"}}`.
fn env_layer(env: &HashMap<String, String>) -> Result<Value, String> {
    let source: config::Map<String, String> = env
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    config::Config::builder()
        .add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .source(Some(source)),
        )
        .build()
        .and_then(|c| c.try_deserialize::<Value>())
        .map(|v| {
            if v.is_null() {
                Value::Object(Map::new())
            } else {
                v
            }
        })
        .map_err(|e| e.to_string())
}

fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

fn resolve_relative_paths(v: &mut Value, base: &Path) {
    for path in PATH_KEYS {
        let target = path.iter().try_fold(&mut *v, |cur, seg| cur.get_mut(*seg));
        if let Some(Value::String(s)) = target {
            let p = Path::new(s.as_str());
            if p.is_relative() {
                *s = base.join(p).to_string_lossy().into_owned();
            }
        }
    }
    // `secrets.dirs` written in the file, as a list or a comma-separated string.
    if let Some(dirs) = v.get_mut("secrets").and_then(|s| s.get_mut("dirs")) {
        let resolve = |s: &str| {
            let p = Path::new(s.trim());
            if p.is_relative() {
                base.join(p).to_string_lossy().into_owned()
            } else {
                s.trim().to_string()
            }
        };
        match dirs {
            Value::Array(items) => {
                for item in items {
                    if let Value::String(s) = item {
                        *s = resolve(s);
                    }
                }
            }
            Value::String(s) => *s = s.split(',').map(resolve).collect::<Vec<_>>().join(","),
            _ => {}
        }
    }
    if let Some(Value::String(url)) = v.get_mut("database_url") {
        *url = resolve_sqlite_url(url, base);
    }
}

/// `sqlite:relative.db` -> `sqlite:<base>/relative.db`; other URLs are left alone.
fn resolve_sqlite_url(url: &str, base: &Path) -> String {
    let (prefix, rest) = if let Some(r) = url.strip_prefix("sqlite://") {
        ("sqlite://", r)
    } else if let Some(r) = url.strip_prefix("sqlite:") {
        ("sqlite:", r)
    } else {
        return url.to_string();
    };
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    if path.is_empty() || path == ":memory:" || Path::new(path).is_absolute() {
        return url.to_string();
    }
    let joined = base.join(path).to_string_lossy().into_owned();
    match query {
        Some(q) => format!("{prefix}{joined}?{q}"),
        None => format!("{prefix}{joined}"),
    }
}

/// Type-checks every key, collecting all problems.
fn validate(v: &Value, file: Option<PathBuf>) -> Result<Settings, ConfigError> {
    let mut s = Settings {
        file: file.clone(),
        ..Settings::default()
    };
    let mut problems = Vec::new();
    let Some(map) = v.as_object() else {
        return Err(ConfigError {
            file,
            problems: vec!["the config must be a mapping".into()],
        });
    };
    for k in map.keys() {
        if !TOP_KEYS.contains(&k.as_str()) {
            let hint = crate::definition::suggest(k, TOP_KEYS)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            problems.push(format!("unknown key `{k}`{hint}"));
        }
    }
    if let Some(x) = map.get("jobs_dir") {
        match x.as_str() {
            Some(p) if !p.is_empty() => s.jobs_dir = PathBuf::from(p),
            _ => problems.push("`jobs_dir` must be a path".into()),
        }
    }
    if let Some(x) = map.get("database_url") {
        match x.as_str() {
            Some(u) => match check_database_url(u) {
                Ok(()) => s.database_url = u.to_string(),
                Err(e) => problems.push(e),
            },
            None => problems
                .push("`database_url` must be a SQLite URL such as sqlite:data/soarjobd.db".into()),
        }
    }
    if let Some(x) = map.get("shutdown_grace") {
        match duration(x) {
            Ok(d) => s.shutdown_grace = d,
            Err(e) => problems.push(format!("`shutdown_grace`: {e}")),
        }
    }
    if let Some(x) = map.get("reload_poll") {
        match duration(x) {
            Ok(d) if !d.is_zero() => s.reload_poll = d,
            Ok(_) => problems.push("`reload_poll` must be longer than 0s".into()),
            Err(e) => problems.push(format!("`reload_poll`: {e}")),
        }
    }
    section(map, "log", &mut problems, |m, problems| {
        for k in m.keys() {
            if !["format", "level"].contains(&k.as_str()) {
                problems.push(format!("unknown key `log.{k}` (expected format or level)"));
            }
        }
        if let Some(f) = m.get("format") {
            match f.as_str().and_then(LogFormat::parse) {
                Some(f) => s.log.format = f,
                None => problems.push("`log.format` must be pretty or json".into()),
            }
        }
        if let Some(l) = m.get("level") {
            match l.as_str() {
                Some(l) if tracing_subscriber::EnvFilter::try_new(l).is_ok() => {
                    s.log.level = l.to_string();
                }
                _ => problems.push(format!(
                    "`log.level` must be a level or filter such as info or soarjobd=debug, got {l}"
                )),
            }
        }
    });
    section(map, "history", &mut problems, |m, problems| {
        for k in m.keys() {
            if !["keep_runs", "keep_days"].contains(&k.as_str()) {
                problems.push(format!(
                    "unknown key `history.{k}` (expected keep_runs or keep_days)"
                ));
            }
        }
        if let Some(x) = m.get("keep_runs") {
            match uint(x) {
                Some(n) => s.history.keep_runs = n,
                None => problems.push("`history.keep_runs` must be a whole number".into()),
            }
        }
        if let Some(x) = m.get("keep_days") {
            match uint(x) {
                Some(n) => s.history.keep_days = n,
                None => problems.push("`history.keep_days` must be a whole number".into()),
            }
        }
    });
    section(map, "secrets", &mut problems, |m, problems| {
        for k in m.keys() {
            if !["env_allow", "dirs"].contains(&k.as_str()) {
                problems.push(format!(
                    "unknown key `secrets.{k}` (expected env_allow or dirs)"
                ));
            }
        }
        if let Some(x) = m.get("env_allow") {
            match string_list(x) {
                Some(list) => {
                    for name in &list {
                        let body = name.strip_suffix('*').unwrap_or(name);
                        if !body.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                            || (body.is_empty() && !name.ends_with('*'))
                        {
                            problems.push(format!(
                                "`secrets.env_allow`: `{name}` is not a variable name or a \
                                 prefix ending in `*`"
                            ));
                        } else if crate::definition::secrets::is_daemon_var(body)
                            || crate::definition::secrets::DAEMON_ENV_PREFIX
                                .starts_with(&body.to_ascii_uppercase())
                                && name.ends_with('*')
                                && !body.is_empty()
                        {
                            problems.push(format!(
                                "`secrets.env_allow`: `{name}` would expose the daemon's own \
                                 SOARJOBD__* variables, which job files can never read"
                            ));
                        }
                    }
                    s.secrets.env_allow = list;
                }
                None => problems.push(
                    "`secrets.env_allow` must be a list of variable names or prefixes ending in `*`"
                        .into(),
                ),
            }
        }
        if let Some(x) = m.get("dirs") {
            match string_list(x) {
                Some(list) if list.iter().all(|d| !d.is_empty()) => {
                    s.secrets.dirs = Some(list.into_iter().map(PathBuf::from).collect());
                }
                _ => problems.push("`secrets.dirs` must be a list of folders".into()),
            }
        }
    });
    for key in ["soar", "threatconnect"] {
        match map.get(key) {
            None | Some(Value::Null) => {}
            Some(v @ Value::Object(_)) => {
                if key == "soar" {
                    s.soar = v.clone();
                } else {
                    s.threatconnect = v.clone();
                }
            }
            Some(_) => problems.push(format!("`{key}` must be a mapping")),
        }
    }
    if problems.is_empty() {
        Ok(s)
    } else {
        Err(ConfigError { file, problems })
    }
}

fn section(
    map: &Map<String, Value>,
    key: &str,
    problems: &mut Vec<String>,
    mut f: impl FnMut(&Map<String, Value>, &mut Vec<String>),
) {
    match map.get(key) {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => f(m, problems),
        Some(_) => problems.push(format!("`{key}` must be a mapping")),
    }
}

/// A duration: `30s`, `15m`, or a whole number of seconds (environment values are strings).
fn duration(v: &Value) -> Result<Duration, String> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .map(Duration::from_secs)
            .ok_or_else(|| "must be a whole number of seconds".to_string()),
        Value::String(s) => match s.parse::<u64>() {
            Ok(n) => Ok(Duration::from_secs(n)),
            Err(_) => parse_duration(s).map_err(|e| e.to_string()),
        },
        _ => Err("must be a duration such as 30s or 15m".into()),
    }
}

/// A list of strings: a YAML list, or a comma-separated string (as environment values are).
fn string_list(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(|s| s.trim().to_string()))
            .collect(),
        Value::String(s) => Some(
            s.split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect(),
        ),
        Value::Null => Some(Vec::new()),
        _ => None,
    }
}

/// The SQLite URLs the store opens: `sqlite:PATH` or `sqlite://PATH` (or a bare path), with
/// no in-memory database and no query options, which would silently drop what the store
/// guarantees (a private file, durability). This is the rule of the store's own URL check
/// (`store::sqlite`), so `check` rejects exactly what `run` would; a test holds them together.
pub fn check_database_url(url: &str) -> Result<(), String> {
    let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return Err(format!(
            "`database_url` must be a SQLite URL such as sqlite:data/soarjobd.db, got `{url}`"
        ));
    };
    if path.is_empty() {
        return Err("`database_url` names no file (expected sqlite:PATH)".into());
    }
    if path.starts_with(":memory:") {
        return Err(
            "`database_url` must name a file: an in-memory database would lose every run at \
             exit"
                .into(),
        );
    }
    if path.contains('?') {
        return Err(format!(
            "`database_url` must not carry query options (`{}`): the daemon sets the SQLite \
             options itself",
            &path[path.find('?').unwrap_or(0)..]
        ));
    }
    Ok(())
}

fn uint(v: &Value) -> Option<u32> {
    match v {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn defaults_without_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = load(&Sources {
            file: None,
            env: env(&[]),
        });
        // The default path is relative to the working directory, which may hold the repo's
        // config; only check what holds either way.
        let s = s.unwrap();
        assert!(s.history.keep_runs > 0);
        drop(dir);
    }

    #[test]
    fn file_then_env_layers_and_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("conf").join("soarjobd.yaml");
        std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
        std::fs::write(
            &cfg,
            "jobs_dir: ../jobs\ndatabase_url: sqlite:state/x.db\nshutdown_grace: 10s\n\
             log: {format: json}\nhistory: {keep_runs: 5}\nsoar: {url: 'http://file', app_key_file: key.txt}\n",
        )
        .unwrap();
        let s = load(&Sources {
            file: Some(cfg.clone()),
            env: env(&[
                ("SOARJOBD__SOAR__URL", "http://127.0.0.1:8443"),
                ("SOARJOBD__HISTORY__KEEP_DAYS", "7"),
                ("SOARJOBD__LOG__LEVEL", "debug"),
                ("OTHER__X", "ignored"),
            ]),
        })
        .unwrap();
        let base = cfg.parent().unwrap();
        assert_eq!(s.jobs_dir, base.join("../jobs"));
        assert_eq!(
            s.database_url,
            format!("sqlite:{}", base.join("state/x.db").display())
        );
        assert_eq!(s.shutdown_grace, Duration::from_secs(10));
        assert_eq!(s.log.format, LogFormat::Json);
        assert_eq!(s.log.level, "debug");
        assert_eq!(s.history.keep_runs, 5);
        assert_eq!(s.history.keep_days, 7);
        assert_eq!(s.soar["url"], "http://127.0.0.1:8443");
        assert_eq!(
            s.soar["app_key_file"],
            base.join("key.txt").display().to_string()
        );
    }

    #[test]
    fn every_problem_is_listed() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.yaml");
        std::fs::write(
            &cfg,
            "jobs_dri: x\nshutdown_grace: soon\nlog: {format: xml}\nhistory: {keep_runs: -1}\n",
        )
        .unwrap();
        let e = load(&Sources {
            file: Some(cfg),
            env: env(&[]),
        })
        .unwrap_err();
        assert_eq!(e.problems.len(), 4, "{e}");
        assert!(e.problems[0].contains("did you mean `jobs_dir`"), "{e}");
        let text = e.to_string();
        assert!(text.contains("shutdown_grace"), "{text}");
        assert!(text.contains("log.format"), "{text}");
        assert!(text.contains("history.keep_runs"), "{text}");
    }

    #[test]
    fn secrets_section() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.yaml");
        std::fs::write(
            &cfg,
            "jobs_dir: jobs\nsecrets: {env_allow: [TICKETS_API_KEY, 'MYJOB_*'], dirs: [keys, /run/secrets]}\n",
        )
        .unwrap();
        let s = load(&Sources {
            file: Some(cfg.clone()),
            env: env(&[]),
        })
        .unwrap();
        assert_eq!(s.secrets.env_allow, vec!["TICKETS_API_KEY", "MYJOB_*"]);
        let o = s.load_options();
        assert_eq!(
            o.secrets.dirs,
            vec![dir.path().join("keys"), PathBuf::from("/run/secrets")]
        );
        // Defaults: nothing from the environment, the jobs folder and /run/secrets.
        let o = Settings::default().load_options();
        assert!(o.secrets.env_allow.is_empty());
        assert_eq!(
            o.secrets.dirs,
            vec![PathBuf::from("jobs"), PathBuf::from("/run/secrets")]
        );
        // From the environment, comma-separated.
        let s = load(&Sources {
            file: Some(cfg.clone()),
            env: env(&[("SOARJOBD__SECRETS__ENV_ALLOW", "A_KEY, B_*")]),
        })
        .unwrap();
        assert_eq!(s.secrets.env_allow, vec!["A_KEY", "B_*"]);
        // The daemon's own variables cannot be allowed.
        for bad in [
            "SOARJOBD__SOAR__APP_KEY",
            "SOARJOBD_*",
            "SOAR*",
            "*X",
            "A-B",
        ] {
            std::fs::write(&cfg, format!("secrets: {{env_allow: ['{bad}']}}\n")).unwrap();
            let e = load(&Sources {
                file: Some(cfg.clone()),
                env: env(&[]),
            })
            .unwrap_err();
            assert!(e.to_string().contains("secrets.env_allow"), "{bad}: {e}");
        }
    }

    /// `check` validates the URL with `check_database_url`; `run` opens the store. They must
    /// agree on every URL.
    #[tokio::test]
    async fn database_url_check_agrees_with_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().display();
        let urls = [
            format!("sqlite:{p}/a.db"),
            format!("sqlite://{p}/b.db"),
            "sqlite::memory:".to_string(),
            "sqlite://:memory:".to_string(),
            format!("sqlite:{p}/c.db?mode=ro"),
            format!("sqlite://{p}/d.db?cache=shared"),
            "sqlite:".to_string(),
            "sqlite://".to_string(),
            "postgres://u:p@h/db".to_string(),
        ];
        for url in &urls {
            let checked = check_database_url(url).is_ok();
            let opened = match crate::store::open(url).await {
                Ok(s) => {
                    s.close().await;
                    true
                }
                Err(crate::store::StoreError::UnsupportedUrl(_)) => false,
                Err(e) => panic!("{url}: unexpected store error {e}"),
            };
            assert_eq!(
                checked, opened,
                "{url}: check says {checked}, run says {opened}"
            );
        }
        // And through the whole config load.
        let e = load(&Sources {
            file: None,
            env: env(&[("SOARJOBD__DATABASE_URL", "sqlite::memory:")]),
        })
        .unwrap_err();
        assert!(e.to_string().contains("in-memory"), "{e}");
        let e = load(&Sources {
            file: None,
            env: env(&[("SOARJOBD__DATABASE_URL", "sqlite:x.db?mode=ro")]),
        })
        .unwrap_err();
        assert!(e.to_string().contains("mode=ro"), "{e}");
    }

    #[test]
    fn explicit_missing_file_is_an_error() {
        let e = load(&Sources {
            file: Some("/nonexistent/soarjobd.yaml".into()),
            env: env(&[]),
        })
        .unwrap_err();
        assert!(e.to_string().contains("does not exist"));
    }
}

//! The daemon's typed, layered configuration.
//!
//! Layers, later wins: built-in defaults <- the YAML file (`--config`, env `SOARJOBD_CONFIG`,
//! default `config/soarjobd.yaml`) <- environment variables `SOARJOBD__SECTION__KEY`
//! (`SOARJOBD__JOBS_DIR`, `SOARJOBD__SOAR__URL`, ...). A relative path written in the file is
//! relative to the file's folder (so a config can be moved with its jobs); a relative path from
//! the environment is relative to the working directory, as a shell user expects.
//!
//! Validation never stops at the first problem: [`load`] returns every error at once, each
//! at its `file:line:col` (or naming the environment variable that set it). Every value is
//! read by the one grammar of [`grammar`] (durations, booleans, secrets, "did you mean"), and
//! platform sections are declared by their platforms ([`grammar::SectionSpec`]): this module
//! names none of them.

pub mod grammar;
pub mod located;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

pub use grammar::{Origin, Origins, Problem, Section, SectionSpec};

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

/// The `cluster` section: how replicas on one PostgreSQL database watch each other
/// (ignored on SQLite, which is single-node).
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// How often a replica refreshes its row in `nodes` (and polls cancel requests).
    pub heartbeat: Duration,
    /// A replica whose heartbeat is older than this is dead; its running runs are taken over.
    /// Default: three heartbeats.
    pub dead_after: Duration,
    /// How long before its instant a tick is claimed. A claim is a transaction on the
    /// database server; claiming further ahead than SQLite's 250 ms lets a slow claim (a
    /// loaded server) finish before its ticks are due. Default: 1 s.
    pub claim_ahead: Duration,
}

impl Default for ClusterSettings {
    fn default() -> ClusterSettings {
        ClusterSettings {
            heartbeat: Duration::from_secs(2),
            dead_after: Duration::from_secs(6),
            claim_ahead: Duration::from_secs(1),
        }
    }
}

/// `history:` — how long run rows are kept. Whichever bound is reached first deletes a run:
/// a job that runs every second keeps its newest `keep_runs`, a daily job its last
/// `keep_days` days. Failed runs (failed, timed out, interrupted) are counted and aged on
/// their own, so a stream of successes never pushes the last failures out.
#[derive(Debug, Clone)]
pub struct HistorySettings {
    /// The newest this many runs per job are kept (at most).
    pub keep_runs: u32,
    /// Runs older than this many days are deleted.
    pub keep_days: u32,
    /// The newest this many failed runs per job are kept (at most).
    pub keep_failed_runs: u32,
    /// Failed runs older than this many days are deleted.
    pub keep_failed_days: u32,
    /// How often a small batch of old rows is pruned.
    pub prune_every: Duration,
    /// A warning is logged (once an hour at most) while the database file is larger than
    /// this many MiB; 0: never.
    pub warn_db_mb: u64,
}

/// The default bound on a run's stored log (`run_logs.max_bytes`).
pub const DEFAULT_RUN_LOG_MAX_BYTES: usize = 1024 * 1024;

/// `run_logs:` — the log lines kept with each run.
#[derive(Debug, Clone)]
pub struct RunLogSettings {
    /// The most bytes of log kept per run (`max_bytes`, default 1 MiB); beyond it the first and
    /// last halves are kept.
    pub max_bytes: usize,
    /// Which runs keep their lines, for jobs that do not say (`mode`, default `all`).
    pub mode: crate::definition::RunLogMode,
    /// Lines older than this many days are deleted (their run stays): `keep_days`, default 7.
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
    pub run_logs: RunLogSettings,
    /// `alerts:` (rules and sinks; see `crate::ops::alerts`).
    pub alerts: crate::alerts::AlertSettings,
    /// Replicas on PostgreSQL (`cluster.heartbeat`, `cluster.dead_after`).
    pub cluster: ClusterSettings,
    /// How often to rescan `jobs/` when file events may be missed (network filesystems).
    pub reload_poll: Duration,
    /// The `secrets` section: what job files may read.
    pub secrets: SecretsSettings,
    /// The `exec` section: the user job processes run as, and how many at once.
    pub exec: crate::exec_policy::ExecSettings,
    /// The platform sections by top-level key (`soar`, ...), raw: each platform reads its own
    /// through the grammar ([`grammar::Section`]) with [`Settings::origins`].
    pub sections: BTreeMap<String, Value>,
    /// Where the loaded values were written, so that platform problems found later (when
    /// clients are built) are located too. Empty for settings built in code.
    pub origins: Arc<Origins>,
}

impl Settings {
    /// How job files are loaded under these settings (the `secrets` policy), opened with
    /// `open` (see [`crate::definition::OpenFile`]).
    pub fn load_options(
        &self,
        open: crate::definition::OpenFile,
    ) -> crate::definition::LoadOptions {
        let mut opts = crate::definition::LoadOptions::for_jobs_dir(&self.jobs_dir, open);
        opts.secrets.env_allow = self.secrets.env_allow.clone();
        if let Some(dirs) = &self.secrets.dirs {
            opts.secrets.dirs = dirs.clone();
        }
        opts
    }

    /// The platform section `name` (`Null` when it is not configured).
    pub fn section(&self, name: &str) -> &Value {
        self.sections.get(name).unwrap_or(&Value::Null)
    }

    /// Sets the platform section `name` (settings built in code: tests, `demo`).
    pub fn set_section(&mut self, name: &str, value: Value) {
        self.sections.insert(name.to_string(), value);
    }

    /// Every problem of the declared platform sections (see [`load_with`]).
    pub fn check_sections(&self, specs: &[SectionSpec]) -> Vec<Problem> {
        specs
            .iter()
            .flat_map(|s| (s.check)(self.sections.get(s.name), &self.origins))
            .collect()
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
                keep_failed_runs: 1000,
                keep_failed_days: 90,
                prune_every: Duration::from_secs(10),
                warn_db_mb: 1024,
            },
            alerts: Default::default(),
            run_logs: RunLogSettings {
                max_bytes: DEFAULT_RUN_LOG_MAX_BYTES,
                mode: crate::definition::RunLogMode::All,
                keep_days: 7,
            },
            cluster: ClusterSettings::default(),
            reload_poll: Duration::from_secs(30),
            secrets: SecretsSettings::default(),
            exec: Default::default(),
            sections: BTreeMap::new(),
            origins: Arc::new(Origins::default()),
        }
    }
}

/// Every problem found in the configuration.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration{}:\n  {}", file_suffix(.file), grammar::join(.problems))]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    pub problems: Vec<Problem>,
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

/// The keys this module reads itself; every other top-level key is a platform section.
const CORE_KEYS: &[&str] = &[
    "jobs_dir",
    "database_url",
    "log",
    "shutdown_grace",
    "history",
    "run_logs",
    "alerts",
    "reload_poll",
    "secrets",
    "cluster",
    "exec",
];

/// Loads and validates the configuration. Top-level mappings this module does not know are
/// kept as platform sections ([`Settings::sections`]) without being checked: the platform
/// checks its own when its client is built. [`load_with`] checks them now, with the rest.
pub fn load(sources: &Sources) -> Result<Settings, ConfigError> {
    load_inner(sources, None)
}

/// Loads and validates the configuration and the platform sections `specs` declare, reporting
/// every problem of every section at once; a top-level key that is neither the core's nor
/// declared is an unknown key.
pub fn load_with(sources: &Sources, specs: &[SectionSpec]) -> Result<Settings, ConfigError> {
    load_inner(sources, Some(specs))
}

fn load_inner(sources: &Sources, specs: Option<&[SectionSpec]>) -> Result<Settings, ConfigError> {
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
            problems: vec![Problem::new(
                None,
                format!("the config file {} does not exist", file.display()),
            )],
        });
    }
    let mut problems = Vec::new();
    let mut file_value = Value::Object(Map::new());
    let mut text = None;
    if file_exists {
        let t = std::fs::read_to_string(&file).map_err(|e| ConfigError {
            file: Some(file.clone()),
            problems: vec![Problem::new(
                None,
                format!("cannot read {}: {e}", file.display()),
            )],
        })?;
        match yaml_serde::from_str::<Value>(&t) {
            Ok(Value::Null) => {}
            Ok(v) => file_value = v,
            Err(e) => {
                // Located like a job file's syntax error; a duplicate key at its second use.
                let dups = Origins::new(Some((file.clone(), &t)), HashMap::new()).duplicates();
                let problems = if dups.is_empty() {
                    let pos = e
                        .location()
                        .map(|l| crate::definition::limits::yaml_pos(&t, &l))
                        .unwrap_or(located::Pos { line: 1, column: 1 });
                    vec![Problem::new(
                        Some(Origin::File {
                            file: file.clone(),
                            pos,
                        }),
                        format!("invalid YAML: {e}"),
                    )]
                } else {
                    dups
                };
                return Err(ConfigError {
                    file: Some(file.clone()),
                    problems,
                });
            }
        }
        text = Some(t);
        let base = file.parent().unwrap_or(Path::new(".")).to_path_buf();
        resolve_relative_paths(&mut file_value, &base);
    }
    let (env_value, env_origins) = env_layer(&env, &mut problems);
    let origins = Arc::new(Origins::new(
        text.as_deref().map(|t| (file.clone(), t)),
        env_origins,
    ));
    problems.extend(origins.duplicates());
    let mut merged = file_value;
    merge(&mut merged, env_value);
    let file = file_exists.then_some(file);
    let mut settings = validate(&merged, &origins, specs, &mut problems);
    settings.file = file.clone();
    settings.origins = origins;
    if problems.is_empty() {
        Ok(settings)
    } else {
        Problem::sort(&mut problems);
        Err(ConfigError { file, problems })
    }
}

/// The `SOARJOBD__A__B=v` variables as a nested object `{a: {b: "v"}}` (keys lower-cased,
/// values always texts), and which variable set which key path.
fn env_layer(
    env: &HashMap<String, String>,
    problems: &mut Vec<Problem>,
) -> (Value, HashMap<String, String>) {
    let prefix = format!("{ENV_PREFIX}__");
    let mut vars: Vec<(&String, &String)> =
        env.iter().filter(|(k, _)| k.starts_with(&prefix)).collect();
    // Parents before children, so `SOARJOBD__LOG__FORMAT` lands in the mapping it names.
    vars.sort();
    let mut root = Map::new();
    let mut origins = HashMap::new();
    for (var, value) in vars {
        let segments: Vec<String> = var[prefix.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if segments.iter().any(String::is_empty) {
            problems.push(Problem::new(
                Some(Origin::Env { var: var.clone() }),
                "not a configuration key (expected SOARJOBD__KEY or SOARJOBD__SECTION__KEY)",
            ));
            continue;
        }
        let mut cur = &mut root;
        for seg in &segments[..segments.len() - 1] {
            let slot = cur
                .entry(seg.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            let Value::Object(m) = slot else {
                unreachable!("made a mapping above")
            };
            cur = m;
        }
        let last = &segments[segments.len() - 1];
        cur.insert(last.clone(), Value::String(value.clone()));
        origins.insert(segments.join("."), var.clone());
    }
    (Value::Object(root), origins)
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

/// Makes the relative paths written in the file relative to its folder: `jobs_dir`,
/// `database_url`, `secrets.dirs`, and in every platform section each key ending in `_file`.
fn resolve_relative_paths(v: &mut Value, base: &Path) {
    let resolve = |s: &str| {
        let p = Path::new(s.trim());
        if p.is_relative() {
            base.join(p).to_string_lossy().into_owned()
        } else {
            s.trim().to_string()
        }
    };
    if let Some(Value::String(s)) = v.get_mut("jobs_dir") {
        *s = resolve(s);
    }
    if let Value::Object(top) = v {
        for (name, section) in top.iter_mut() {
            // `alerts` is the core's, but its `*_file` keys are relative to the file too.
            if CORE_KEYS.contains(&name.as_str()) && name != "alerts" {
                continue;
            }
            if let Value::Object(m) = section {
                for (k, val) in m.iter_mut() {
                    // `alerts.pagerduty`, `alerts.email`: their `*_file` keys too.
                    if let (true, Value::Object(inner)) = (name == "alerts", &mut *val) {
                        for (k, val) in inner.iter_mut() {
                            if let (true, Value::String(s)) = (k.ends_with("_file"), val)
                                && !s.trim().is_empty()
                            {
                                *s = resolve(s);
                            }
                        }
                    }
                    if let (true, Value::String(s)) = (k.ends_with("_file"), val)
                        && !s.trim().is_empty()
                    {
                        *s = resolve(s);
                    }
                }
            }
        }
    }
    // `secrets.dirs` written in the file, as a list or a comma-separated string.
    if let Some(dirs) = v.get_mut("secrets").and_then(|s| s.get_mut("dirs")) {
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

/// Reads every key through the grammar, collecting all problems into `problems`.
fn validate(
    v: &Value,
    origins: &Origins,
    specs: Option<&[SectionSpec]>,
    problems: &mut Vec<Problem>,
) -> Settings {
    let mut s = Settings::default();
    let Some(map) = v.as_object() else {
        problems.push(Problem::new(
            origins.of_value(""),
            "the config must be a mapping",
        ));
        return s;
    };
    let mut top = Section::new("", Some(v), origins);
    if let Some(p) = top.path("jobs_dir") {
        s.jobs_dir = p;
    }
    if let Some(u) = top.string("database_url") {
        match check_database_url(&u) {
            Ok(()) => s.database_url = u,
            Err(e) => top.problem("database_url", e),
        }
    } else if top.is_set("database_url") {
        top.problem(
            "database_url",
            "`database_url` must be a SQLite URL such as sqlite:data/soarjobd.db or a \
             PostgreSQL URL such as postgres://soarjobd@db/soarjobd",
        );
    }
    s.shutdown_grace = top.duration("shutdown_grace", s.shutdown_grace);
    s.reload_poll = top.positive_duration("reload_poll", s.reload_poll);

    let mut log = top.section("log");
    s.log.format = log.choice(
        "format",
        &[
            ("pretty", LogFormat::Pretty),
            ("text", LogFormat::Pretty),
            ("json", LogFormat::Json),
        ],
        s.log.format,
    );
    if let Some(l) = log.string("level") {
        if tracing_subscriber::EnvFilter::try_new(&l).is_ok() {
            s.log.level = l;
        } else {
            log.problem(
                "level",
                format!(
                    "`log.level` must be a level or filter such as info or soarjobd=debug, got `{l}`"
                ),
            );
        }
    }
    let log = log.finish();
    top.absorb(log);

    let mut history = top.section("history");
    s.history.keep_runs = history.uint("keep_runs", s.history.keep_runs, 0);
    s.history.keep_days = history.uint("keep_days", s.history.keep_days, 0);
    s.history.keep_failed_runs = history.uint("keep_failed_runs", s.history.keep_failed_runs, 0);
    s.history.keep_failed_days = history.uint("keep_failed_days", s.history.keep_failed_days, 0);
    s.history.prune_every = history.positive_duration("prune_every", s.history.prune_every);
    s.history.warn_db_mb = history.uint("warn_db_mb", s.history.warn_db_mb, 0);
    let history = history.finish();
    top.absorb(history);

    let mut run_logs = top.section("run_logs");
    s.run_logs.max_bytes = run_logs.uint("max_bytes", s.run_logs.max_bytes, 1024);
    {
        use crate::definition::RunLogMode as M;
        s.run_logs.mode = run_logs.choice(
            "mode",
            &[("all", M::All), ("problems", M::Problems), ("off", M::Off)],
            s.run_logs.mode,
        );
    }
    s.run_logs.keep_days = run_logs.uint("keep_days", s.run_logs.keep_days, 0);
    let run_logs = run_logs.finish();
    top.absorb(run_logs);

    let mut alerts = top.section("alerts");
    s.alerts = crate::alerts::AlertSettings::read(&mut alerts);
    let alerts = alerts.finish();
    top.absorb(alerts);
    let mut cluster = top.section("cluster");
    s.cluster.heartbeat = cluster.positive_duration("heartbeat", s.cluster.heartbeat);
    let dead_after_set = cluster.is_set("dead_after");
    s.cluster.dead_after = cluster.positive_duration("dead_after", s.cluster.heartbeat * 3);
    if dead_after_set && s.cluster.dead_after <= s.cluster.heartbeat {
        cluster.problem(
            "dead_after",
            "`cluster.dead_after` must be longer than `cluster.heartbeat` (three heartbeats \
             is the default): a live replica would be declared dead between two heartbeats",
        );
    }
    s.cluster.claim_ahead = cluster.positive_duration("claim_ahead", s.cluster.claim_ahead);
    let cluster = cluster.finish();
    top.absorb(cluster);

    let mut secrets = top.section("secrets");
    if let Some(list) = secrets.string_list("env_allow") {
        for name in &list {
            let body = name.strip_suffix('*').unwrap_or(name);
            if !body.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                || (body.is_empty() && !name.ends_with('*'))
            {
                secrets.problem(
                    "env_allow",
                    format!(
                        "`secrets.env_allow`: `{name}` is not a variable name or a prefix \
                         ending in `*`"
                    ),
                );
            } else if crate::definition::secrets::is_daemon_var(body)
                || crate::definition::secrets::DAEMON_ENV_PREFIX
                    .starts_with(&body.to_ascii_uppercase())
                    && name.ends_with('*')
                    && !body.is_empty()
            {
                secrets.problem(
                    "env_allow",
                    format!(
                        "`secrets.env_allow`: `{name}` would expose the daemon's own \
                         SOARJOBD__* variables, which job files can never read"
                    ),
                );
            }
        }
        s.secrets.env_allow = list;
    }
    if let Some(list) = secrets.string_list("dirs") {
        if list.iter().all(|d| !d.is_empty()) {
            s.secrets.dirs = Some(list.into_iter().map(PathBuf::from).collect());
        } else {
            secrets.problem("dirs", "`secrets.dirs` must be a list of folders");
        }
    }
    let secrets = secrets.finish();
    top.absorb(secrets);

    let mut exec = top.section("exec");
    if let Some(u) = exec.string("user") {
        let u = u.trim().to_string();
        if u.is_empty() {
            exec.problem("user", "`exec.user` must name a user");
        } else {
            s.exec.user = Some(u);
        }
    }
    s.exec.max_concurrent = exec.uint("max_concurrent", s.exec.max_concurrent, 0);
    let exec = exec.finish();
    top.absorb(exec);

    // Platform sections: declared ones are checked by their platform; without declarations
    // (`load`), every other top-level mapping is kept for its platform to check later.
    for (name, value) in map {
        if CORE_KEYS.contains(&name.as_str()) {
            continue;
        }
        let declared = specs.map(|specs| specs.iter().find(|sp| sp.name == name.as_str()));
        match declared {
            Some(Some(spec)) => {
                top.absorb((spec.check)(Some(value), origins));
                if value.is_object() {
                    s.sections.insert(name.clone(), value.clone());
                }
            }
            None if value.is_object() => {
                s.sections.insert(name.clone(), value.clone());
            }
            // Undeclared: left for `finish` to report as unknown, with a suggestion.
            _ => {}
        }
    }
    if let Some(specs) = specs {
        for spec in specs {
            // Declared but absent: the platform may still require something.
            if !map.contains_key(spec.name) {
                top.absorb((spec.check)(None, origins));
            }
        }
    }
    // Declare what the top level knows, so unknown keys get a suggestion among them.
    for k in CORE_KEYS {
        let _ = top.value(k);
    }
    match specs {
        Some(specs) => {
            for sp in specs {
                let _ = top.value(sp.name);
            }
        }
        None => {
            for (k, v) in map {
                if v.is_object() || v.is_null() {
                    top.accept(k);
                }
            }
        }
    }
    problems.extend(top.finish());
    s
}

/// The SQLite URLs the store opens: `sqlite:PATH` or `sqlite://PATH` (or a bare path), with
/// no in-memory database and no query options, which would silently drop what the store
/// guarantees (a private file, durability). This is the rule of the store's own URL check
/// (`store::sqlite`), so `check` rejects exactly what `run` would; a test holds them together.
pub fn check_database_url(url: &str) -> Result<(), String> {
    if crate::store::is_postgres_url(url) {
        return url::Url::parse(url)
            .map(drop)
            .map_err(|e| format!("`database_url` is not a valid PostgreSQL URL: {e}"));
    }
    let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return Err(format!(
            "`database_url` must be a SQLite URL such as sqlite:data/soarjobd.db or a \
             PostgreSQL URL such as postgres://soarjobd@db/soarjobd, got `{url}`"
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
        assert_eq!(s.section("soar")["url"], "http://127.0.0.1:8443");
        assert_eq!(
            s.section("soar")["app_key_file"],
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
        assert!(
            e.problems[0].message.contains("did you mean `jobs_dir`"),
            "{e}"
        );
        let text = e.to_string();
        assert!(text.contains("shutdown_grace"), "{text}");
        assert!(text.contains("log.format"), "{text}");
        assert!(text.contains("history.keep_runs"), "{text}");
    }

    #[test]
    fn alerts_and_run_logs_sections() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.yaml");
        std::fs::write(dir.path().join("hook"), "https://hooks.example/T/B/x\n").unwrap();
        std::fs::write(
            &cfg,
            "run_logs: {max_bytes: 65536}\nalerts:\n  failed_runs_in_a_row: 5\n  no_success_for: 2h\n  slack_url_file: hook\n  queue: 10\n",
        )
        .unwrap();
        let s = load(&Sources {
            file: Some(cfg.clone()),
            env: env(&[("SOARJOBD__ALERTS__JOB_INVALID", "off")]),
        })
        .unwrap();
        assert_eq!(s.run_logs.max_bytes, 65536);
        assert_eq!(s.alerts.failed_runs_in_a_row, 5);
        assert_eq!(
            s.alerts.no_success_for,
            crate::alerts::NoSuccessFor::After(Duration::from_secs(7200))
        );
        assert!(!s.alerts.job_invalid);
        assert_eq!(s.alerts.queue, 10);
        // The file is relative to the config's folder.
        assert!(matches!(
            &s.alerts.slack_url,
            Some(grammar::SecretSource::File(p)) if p == &dir.path().join("hook")
        ));
        std::fs::write(
            &cfg,
            "alerts:\n  failed_runs_in_a_row: -1\n  no_success_for: soon\n  slak_url: x\nrun_logs: {max_bytes: 10}\n",
        )
        .unwrap();
        let e = load(&Sources {
            file: Some(cfg),
            env: env(&[]),
        })
        .unwrap_err();
        let text = e.to_string();
        assert_eq!(e.problems.len(), 4, "{text}");
        assert!(text.contains("c.yaml:2:"), "{text}");
        assert!(text.contains("alerts.no_success_for"), "{text}");
        assert!(text.contains("did you mean `slack_url`"), "{text}");
        assert!(text.contains("run_logs.max_bytes"), "{text}");
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
        let o = s.load_options(crate::definition::secrets::test_open);
        assert_eq!(
            o.secrets.dirs,
            vec![dir.path().join("keys"), PathBuf::from("/run/secrets")]
        );
        // Defaults: nothing from the environment, the jobs folder and /run/secrets.
        let o = Settings::default().load_options(crate::definition::secrets::test_open);
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

    /// The `cluster` timings: a shorter heartbeat moves the default `dead_after` with it, and
    /// a `dead_after` not longer than the heartbeat is a located problem. PostgreSQL URLs are
    /// accepted as they are (no path resolution).
    #[test]
    fn cluster_timings_are_read_and_checked() {
        let s = load(&Sources {
            file: None,
            env: env(&[
                ("SOARJOBD__CLUSTER__HEARTBEAT", "500ms"),
                (
                    "SOARJOBD__DATABASE_URL",
                    "postgres://soarjobd@db:5432/soarjobd",
                ),
            ]),
        })
        .expect("valid");
        assert_eq!(s.cluster.heartbeat, Duration::from_millis(500));
        assert_eq!(s.cluster.dead_after, Duration::from_millis(1500));
        assert_eq!(s.database_url, "postgres://soarjobd@db:5432/soarjobd");
        let d = Settings::default().cluster;
        assert_eq!(
            (d.heartbeat, d.dead_after),
            (Duration::from_secs(2), Duration::from_secs(6))
        );
        let e = load(&Sources {
            file: None,
            env: env(&[
                ("SOARJOBD__CLUSTER__HEARTBEAT", "5s"),
                ("SOARJOBD__CLUSTER__DEAD_AFTER", "2s"),
                ("SOARJOBD__CLUSTER__HEARTBEET", "1s"),
            ]),
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("cluster.dead_after") && e.contains("longer than"),
            "{e}"
        );
        assert!(e.contains("heartbeet"), "unknown keys reported too: {e}");
    }

    /// `check_database_url` rejects what the store would refuse, through the whole config
    /// load too. (That it agrees with the store on every URL is tested in `soarjobd-store`.)
    #[test]
    fn database_url_check_runs_in_the_config_load() {
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

    /// A platform section as a platform declares it (the core knows none by name).
    const PLAT: SectionSpec = SectionSpec {
        name: "plat",
        check: |v, o| {
            let mut s = Section::new("plat", v, o);
            let _ = s.duration("timeout", Duration::from_secs(30));
            let _ = s.bool("verify_tls", true);
            s.finish()
        },
    };

    /// Mistakes in the top level, a core section and a platform section come back together,
    /// each at its line and column; environment mistakes name their variable.
    #[test]
    fn every_section_at_once_with_positions() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.yaml");
        std::fs::write(
            &cfg,
            "shutdown_grace: 1h30m\njobs_dri: x\nlog:\n  format: xml\nplat:\n  timeout: 500ms\n  verify_tls: yes\n  verfy_tls: no\n",
        )
        .unwrap();
        let e = load_with(
            &Sources {
                file: Some(cfg.clone()),
                env: env(&[("SOARJOBD__PLAT__TIMEOUT", "soon")]),
            },
            &[PLAT],
        )
        .unwrap_err();
        let f = cfg.display();
        let text: Vec<String> = e.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            vec![
                format!("{f}:2:1: unknown key `jobs_dri` (did you mean `jobs_dir`?)"),
                format!("{f}:4:11: `log.format` must be one of pretty, text, json, got `xml`"),
                format!("{f}:8:3: unknown key `plat.verfy_tls` (did you mean `verify_tls`?)"),
                format!(
                    "SOARJOBD__PLAT__TIMEOUT: `plat.timeout`: {}",
                    grammar::parse_duration("soon").unwrap_err()
                ),
            ]
        );
        // Without the variable, the same file's platform values are fine, and an undeclared
        // top-level key is unknown, with a suggestion among the declared sections.
        std::fs::write(
            &cfg,
            "shutdown_grace: 500ms\nreload_poll: 1h30m\nplat: {timeout: 1h30m, verify_tls: yes}\npalt: {}\n",
        )
        .unwrap();
        let sources = Sources {
            file: Some(cfg.clone()),
            env: env(&[]),
        };
        let e = load_with(&sources, &[PLAT]).unwrap_err();
        assert_eq!(e.problems.len(), 1, "{e}");
        assert_eq!(
            e.problems[0].to_string(),
            format!("{f}:4:1: unknown key `palt` (did you mean `plat`?)")
        );
        // `load` (no declarations) keeps undeclared mappings for their platforms.
        let s = load(&sources).unwrap();
        assert_eq!(s.shutdown_grace, Duration::from_millis(500));
        assert_eq!(s.reload_poll, Duration::from_secs(5400));
        assert_eq!(s.section("plat")["verify_tls"], "yes");
        assert!(s.section("palt").is_object());
        assert!(s.check_sections(&[PLAT]).is_empty());
    }

    #[test]
    fn env_values_follow_the_same_grammar() {
        let s = load(&Sources {
            file: None,
            env: env(&[
                ("SOARJOBD__SHUTDOWN_GRACE", "1h30m"),
                ("SOARJOBD__RELOAD_POLL", "500ms"),
                ("SOARJOBD__HISTORY__KEEP_RUNS", "12"),
                ("SOARJOBD__LOG__FORMAT", "JSON"),
            ]),
        })
        .unwrap();
        assert_eq!(s.shutdown_grace, Duration::from_secs(5400));
        assert_eq!(s.reload_poll, Duration::from_millis(500));
        assert_eq!(s.history.keep_runs, 12);
        assert_eq!(s.log.format, LogFormat::Json);
        let e = load(&Sources {
            file: None,
            env: env(&[("SOARJOBD__RELOAD_POLL", "0s"), ("SOARJOBD____X", "1")]),
        })
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("SOARJOBD__RELOAD_POLL: `reload_poll` must be longer than 0s"),
            "{text}"
        );
        assert!(
            text.contains("SOARJOBD____X: not a configuration key"),
            "{text}"
        );
    }

    #[test]
    fn duplicate_keys_are_located() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.yaml");
        std::fs::write(&cfg, "log:\n  level: info\n  level: debug\n").unwrap();
        let e = load(&Sources {
            file: Some(cfg.clone()),
            env: env(&[]),
        })
        .unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("{}:3:3: duplicate key `level`", cfg.display())),
            "{e}"
        );
        // A syntax error is located too.
        std::fs::write(&cfg, "log:\n  level: info\nhistory: [1,\n").unwrap();
        let e = load(&Sources {
            file: Some(cfg.clone()),
            env: env(&[]),
        })
        .unwrap_err();
        assert_eq!(e.problems.len(), 1, "{e}");
        assert!(
            matches!(e.problems[0].origin, Some(Origin::File { pos, .. }) if pos.line >= 3),
            "{e}"
        );
    }

    /// An unknown section only the environment wrote is reported with the variable's name,
    /// not at `<config file>:1:1`; a bad webhook URL is located at its value, and a second one
    /// in the same file is reported in the same pass (every problem at once).
    #[test]
    fn env_sections_and_webhook_urls_are_located() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.yaml");
        std::fs::write(
            &cfg,
            "jobs_dir: jobs\nalerts:\n  webhook_url: \"not a url\"\n  slack_url: \"javascript:alert(1)\"\n",
        )
        .unwrap();
        let e = load_with(
            &Sources {
                file: Some(cfg.clone()),
                env: env(&[("SOARJOBD__NOPE__X", "1"), ("SOARJOBD__NOPE__A", "2")]),
            },
            &[PLAT],
        )
        .unwrap_err();
        let f = cfg.display();
        let text: Vec<String> = e.problems.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 3, "{text:#?}");
        assert!(
            text[0].starts_with(&format!(
                "{f}:3:16: `alerts.webhook_url` must be an http(s) URL"
            )),
            "{text:#?}"
        );
        assert!(
            text[1].starts_with(&format!(
                "{f}:4:14: `alerts.slack_url` must be an http(s) URL"
            )),
            "{text:#?}"
        );
        assert!(
            text[2].starts_with("SOARJOBD__NOPE__A: unknown key `nope`"),
            "{text:#?}"
        );
        // The credential is never quoted.
        for t in &text {
            assert!(!t.contains("not a url") && !t.contains("javascript"), "{t}");
        }
        // A URL read from a file is located at the `_file` key; a good one passes.
        std::fs::write(dir.path().join("hook"), "ftp://hooks.example/x\n").unwrap();
        std::fs::write(
            &cfg,
            "alerts:\n  webhook_url_file: hook\n  slack_url: https://hooks.example/T/B/x\n",
        )
        .unwrap();
        let e = load(&Sources {
            file: Some(cfg.clone()),
            env: env(&[]),
        })
        .unwrap_err();
        assert_eq!(e.problems.len(), 1, "{e}");
        assert!(
            e.problems[0]
                .to_string()
                .starts_with(&format!("{f}:2:21: `alerts.webhook_url_file` must be")),
            "{e}"
        );
    }

    /// PagerDuty, Teams, email and retry: read (secrets from files relative to the config, or
    /// from the environment), and their mistakes all located at once, no secret quoted.
    #[test]
    fn pagerduty_teams_email_and_retry_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.yaml");
        std::fs::write(dir.path().join("pw"), "smtp-pass\n").unwrap();
        std::fs::write(
            &cfg,
            "alerts:\n  teams_url: https://example.webhook.office.com/webhookb2/x\n  pagerduty:\n    severity: critical\n  email:\n    host: smtp.example.com\n    username: soar\n    password_file: pw\n    from: soarjobd@example.com\n    to: [soc@example.com, oncall@example.com]\n  retry: {attempts: 20, base_delay: 2s, max_delay: 1m}\n",
        )
        .unwrap();
        let s = load(&Sources {
            file: Some(cfg.clone()),
            env: env(&[("SOARJOBD__ALERTS__PAGERDUTY__ROUTING_KEY", "rk-123")]),
        })
        .unwrap();
        let pd = s.alerts.pagerduty.as_ref().expect("pagerduty");
        assert_eq!(pd.severity, "critical");
        assert_eq!(pd.url, crate::alerts::PAGERDUTY_URL);
        assert!(matches!(&pd.routing_key, grammar::SecretSource::Inline(_)));
        let email = s.alerts.email.as_ref().expect("email");
        assert_eq!(
            (email.port, email.tls),
            (587, crate::alerts::SmtpTls::StartTls)
        );
        assert_eq!(email.to.len(), 2);
        assert!(matches!(
            &email.password,
            Some(grammar::SecretSource::File(p)) if p == &dir.path().join("pw")
        ));
        assert!(s.alerts.teams_url.is_some());
        assert_eq!(s.alerts.retry.attempts, 20);
        assert_eq!(s.alerts.retry.max_delay, Duration::from_secs(60));
        assert!(s.alerts.has_sinks());

        std::fs::write(
            &cfg,
            "alerts:\n  teams_url: not-a-url-secret\n  pagerduty: {severity: loud}\n  email:\n    host: smtp.example.com\n    tls: ssl\n    username: soar\n    from: nobody\n    to: []\n  retry: {attempts: 0, base_delay: 5s, max_delay: 1s}\n",
        )
        .unwrap();
        let e = load(&Sources {
            file: Some(cfg),
            env: env(&[]),
        })
        .unwrap_err();
        let text = e.to_string();
        for part in [
            "alerts.teams_url` must be an http(s) URL",
            "alerts.pagerduty.routing_key` (or `alerts.pagerduty.routing_key_file`) is required",
            "alerts.pagerduty.severity` must be one of",
            "alerts.email.tls` must be one of",
            "set both `alerts.email.username`",
            "`nobody` in `alerts.email.from` is not an email address",
            "alerts.email.to` must list at least one address",
            "alerts.retry.attempts` must be a whole number of at least 1",
            "alerts.retry.max_delay` must not be shorter",
        ] {
            assert!(text.contains(part), "missing {part:?} in:\n{text}");
        }
        assert!(!text.contains("not-a-url-secret"), "{text}");
    }
}

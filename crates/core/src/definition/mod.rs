//! Job definition files -> validated [`JobDefinition`]s, with every error located.
//!
//! A job file is the Google SecOps SOAR job YAML (`name`, `parameters`, `description`,
//! `integration`, `creator`, `run_interval_in_seconds`, ...) plus scheduling keys (`job`,
//! `schedule`, `timeout`, `overlap`, `misfire`) and the keys its implementation declares
//! (`command`, `working_dir`, `env` for `exec`). Loading is all-or-nothing per file, but never
//! stops at the first problem: every error of every file is collected, each naming
//! `path:line:column` and what was expected, so `check` can list them all at once.
//!
//! Invariant: this module never names a concrete job. The binary assembles the registry and
//! passes it in as a [`Catalog`].

pub mod alerts;
pub mod limits;
mod marketplace;
pub use crate::config::located;
pub mod params;
pub mod secrets;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use yaml_serde::Value as Yaml;

use crate::schedule::{self, Schedule};
use located::{Pos, Positions};
pub use marketplace::{SECOPS_ONLY_KEYS, job_id_from_stem};
pub use params::{ParamSpec, ParamType, ParamValue, Parameter, Parameters, RawValue};
pub use secrets::SecretsPolicy;

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
    /// The folder itself could not be read (missing, unmounted): `jobs` and `failed_files`
    /// say nothing about the jobs, and a reload must not act on them.
    pub folder_unreadable: bool,
}

/// How job files are loaded: what they may read besides themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    pub secrets: SecretsPolicy,
}

impl LoadOptions {
    /// The defaults for a jobs folder: see [`SecretsPolicy::default_for`].
    pub fn for_jobs_dir(dir: &Path) -> LoadOptions {
        LoadOptions {
            secrets: SecretsPolicy::default_for(dir),
        }
    }
}

/// True for the file names the daemon loads from `jobs/`.
pub fn is_job_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

/// Loads every `*.yaml` / `*.yml` file of `dir` (not recursive), sorted by name, and checks
/// what spans files: unique ids and unique names. Uses the default [`LoadOptions`] for `dir`.
pub fn load_dir(dir: &Path, catalog: &dyn Catalog) -> LoadReport {
    load_dir_with(dir, catalog, &LoadOptions::for_jobs_dir(dir))
}

/// [`load_dir`] with explicit options (the daemon's `secrets` settings).
///
/// Entries with a job file's name that are not loadable files (folders, FIFOs, sockets,
/// broken or looping symbolic links, names that are not UTF-8) are reported as errors rather
/// than skipped, so `check` and the log say why a job is missing. Nothing here blocks on a
/// FIFO: types are checked, and files are opened non-blocking.
pub fn load_dir_with(dir: &Path, catalog: &dyn Catalog, opts: &LoadOptions) -> LoadReport {
    let mut report = LoadReport::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            report.errors.push(LoadError {
                file: dir.to_path_buf(),
                line: 0,
                column: 0,
                message: format!("cannot read the jobs folder: {e}"),
            });
            report.folder_unreadable = true;
            return report;
        }
    };
    let mut files: Vec<PathBuf> = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                report
                    .errors
                    .push(file_error(dir, format!("cannot list the jobs folder: {e}")));
                report.folder_unreadable = true;
                return report;
            }
        };
        let path = entry.path();
        if let Some(message) = entry_problem(&path) {
            report.errors.push(file_error(&path, message));
            report.failed_files.push(path);
        } else if is_job_file(&path) {
            files.push(path);
        }
    }
    files.sort();
    // Marketplace definitions that instance files of this folder `uses:` are templates, not
    // jobs of their own.
    let used = marketplace::used_definitions(&files);
    files.retain(|f| !used.contains(&marketplace::canonical(f)));
    report.errors.sort_by(|a, b| a.file.cmp(&b.file));
    let mut inputs = std::collections::BTreeSet::new();
    let mut by_id: HashMap<String, PathBuf> = HashMap::new();
    let mut by_name: HashMap<String, PathBuf> = HashMap::new();
    for file in files {
        let (result, read) = load_file_inner(&file, catalog, opts);
        inputs.extend(read);
        match result {
            Ok(def) => {
                let mut errs = Vec::new();
                if let Some(first) = by_id.get(&def.id) {
                    errs.push(format!(
                        "job id `{}` is already used by {}",
                        def.id,
                        first.display()
                    ));
                }
                if let Some(first) = by_name.get(&def.name) {
                    errs.push(format!(
                        "job name `{}` is already used by {} (names must be unique)",
                        def.name,
                        first.display()
                    ));
                }
                if errs.is_empty() {
                    by_id.insert(def.id.clone(), file.clone());
                    by_name.insert(def.name.clone(), file.clone());
                    report.warnings.extend(def.warnings.iter().cloned());
                    report.jobs.push(def);
                } else {
                    let pos = std::fs::read_to_string(&file)
                        .ok()
                        .and_then(|t| Positions::scan(&t).key("name"))
                        .unwrap_or(Pos { line: 1, column: 1 });
                    for message in errs {
                        report.errors.push(LoadError {
                            file: file.clone(),
                            line: pos.line,
                            column: pos.column,
                            message,
                        });
                    }
                    report.failed_files.push(file);
                }
            }
            Err(errs) => {
                report.errors.extend(errs);
                report.failed_files.push(file);
            }
        }
    }
    report.inputs = inputs.into_iter().collect();
    report
}

fn file_error(file: &Path, message: String) -> LoadError {
    LoadError {
        file: file.to_path_buf(),
        line: 0,
        column: 0,
        message,
    }
}

/// Why a folder entry named like a job file cannot be loaded, if it cannot.
fn entry_problem(path: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let name = path.file_name()?.as_bytes();
    if name.starts_with(b".") || !(name.ends_with(b".yaml") || name.ends_with(b".yml")) {
        return None;
    }
    if std::str::from_utf8(name).is_err() {
        return Some(
            "the file name is not valid UTF-8, so it cannot name a job; rename the file".into(),
        );
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => None,
        Ok(m) => Some(format!(
            "this is a {}, not a job file; job files must be regular files",
            secrets::file_kind(&m)
        )),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            Some("this is a symbolic link loop; it names no file".into())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Some("this is a symbolic link to a file that does not exist".into())
        }
        Err(e) => Some(format!("cannot read the file: {e}")),
    }
}

/// Loads one job file, with the default [`LoadOptions`] for its folder.
pub fn load_file(path: &Path, catalog: &dyn Catalog) -> Result<JobDefinition, Vec<LoadError>> {
    let dir = path.parent().unwrap_or(Path::new("."));
    load_file_with(path, catalog, &LoadOptions::for_jobs_dir(dir))
}

/// [`load_file`] with explicit options.
pub fn load_file_with(
    path: &Path,
    catalog: &dyn Catalog,
    opts: &LoadOptions,
) -> Result<JobDefinition, Vec<LoadError>> {
    load_file_inner(path, catalog, opts).0
}

/// Loads one file; also returns the files its definition read.
fn load_file_inner(
    path: &Path,
    catalog: &dyn Catalog,
    opts: &LoadOptions,
) -> (Result<JobDefinition, Vec<LoadError>>, Vec<PathBuf>) {
    match read_job_file(path) {
        Ok(text) => load_text(path, &text, catalog, opts),
        Err(e) => (Err(vec![e]), Vec::new()),
    }
}

/// Reads a job file: regular files only, at most [`limits::MAX_FILE_BYTES`], UTF-8. Each
/// refusal is located (the limit at the byte where it is crossed, bad UTF-8 at its byte).
fn read_job_file(path: &Path) -> Result<String, LoadError> {
    let max = limits::MAX_FILE_BYTES as u64;
    let bytes = secrets::read_regular_prefix(path, max)
        .map_err(|e| file_error(path, format!("cannot read the file: {e}")))?;
    let located = |pos: Pos, message: String| LoadError {
        file: path.to_path_buf(),
        line: pos.line,
        column: pos.column,
        message,
    };
    let valid = match std::str::from_utf8(&bytes) {
        Ok(t) => t,
        Err(e) => {
            let good = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default();
            // A multi-byte character cut by the size limit is not an encoding error.
            let cut = bytes.len() as u64 > max && e.error_len().is_none();
            if !cut && e.valid_up_to() < limits::MAX_FILE_BYTES {
                return Err(located(
                    limits::pos_of(good, good.len()),
                    format!(
                        "the file is not UTF-8 text (byte 0x{:02x}); job files are YAML text",
                        bytes[e.valid_up_to()]
                    ),
                ));
            }
            good
        }
    };
    if bytes.len() as u64 > max {
        let mut at = valid.len().min(limits::MAX_FILE_BYTES);
        while !valid.is_char_boundary(at) {
            at -= 1;
        }
        let e = limits::too_large(limits::pos_of(valid, at));
        return Err(located(e.pos, e.message));
    }
    Ok(valid.to_string())
}

/// Loads a job from `text`, as if read from `path` (whose stem is the job id), with the
/// default [`LoadOptions`] for its folder.
pub fn load_str(
    path: &Path,
    text: &str,
    catalog: &dyn Catalog,
) -> Result<JobDefinition, Vec<LoadError>> {
    let dir = path.parent().unwrap_or(Path::new("."));
    load_str_with(path, text, catalog, &LoadOptions::for_jobs_dir(dir))
}

/// [`load_str`] with explicit options.
pub fn load_str_with(
    path: &Path,
    text: &str,
    catalog: &dyn Catalog,
    opts: &LoadOptions,
) -> Result<JobDefinition, Vec<LoadError>> {
    load_text(path, text, catalog, opts).0
}

fn load_text(
    path: &Path,
    text: &str,
    catalog: &dyn Catalog,
    opts: &LoadOptions,
) -> (Result<JobDefinition, Vec<LoadError>>, Vec<PathBuf>) {
    load_text_as(path, text, catalog, opts, false)
}

/// [`load_text`]; `template`: a marketplace definition an instance file uses.
fn load_text_as(
    path: &Path,
    text: &str,
    catalog: &dyn Catalog,
    opts: &LoadOptions,
    template: bool,
) -> (Result<JobDefinition, Vec<LoadError>>, Vec<PathBuf>) {
    let located = |pos: Pos, message: String| {
        vec![LoadError {
            file: path.to_path_buf(),
            line: pos.line,
            column: pos.column,
            message,
        }]
    };
    // Bounded input before the parser runs (its cost grows faster than the input's size).
    if let Err(e) = limits::prescan(text) {
        return (Err(located(e.pos, e.message)), Vec::new());
    }
    // Only aliases (`*name`, which need an `&name` anchor) can make the parsed document
    // larger than the pre-scan's count, so only a file that may hold both pays for the exact
    // walk (a second parse); a cron expression's `*` alone does not.
    if text.contains('&')
        && text.contains('*')
        && let Err((pos, message)) = limits::count_nodes(text)
    {
        let pos = pos.unwrap_or(Pos { line: 1, column: 1 });
        return (Err(located(pos, message)), Vec::new());
    }
    let mut cx = Cx {
        file: path.to_path_buf(),
        pos: Positions::scan(text),
        errors: Vec::new(),
        fingerprint: std::collections::hash_map::DefaultHasher::new(),
        opts,
        inputs: Vec::new(),
        warnings: Vec::new(),
        template,
        instance: None,
    };
    text.hash(&mut cx.fingerprint);
    let doc: Yaml = match yaml_serde::from_str(text) {
        Ok(v) => v,
        Err(e) => return (Err(vec![yaml_error(path, text, &cx.pos, &e)]), Vec::new()),
    };
    let def = cx.definition(path, &doc, catalog);
    let inputs = std::mem::take(&mut cx.inputs);
    if cx.errors.is_empty() {
        (def.ok_or_else(Vec::new), inputs)
    } else {
        // Report in file order, as an editor would list them.
        cx.errors.sort_by_key(|e| (e.line, e.column));
        (Err(cx.errors), inputs)
    }
}

/// A parser error, located. A duplicate key is reported at its second occurrence (the parser
/// only knows the mapping it is in).
fn yaml_error(path: &Path, source: &str, pos: &Positions, e: &yaml_serde::Error) -> LoadError {
    let text = e.to_string();
    // Reader errors (control characters, bad encodings) carry a byte offset, not a mark
    let offset = text.rfind(" at position ").and_then(|i| {
        let n: usize = text[i + 13..].trim().parse().ok()?;
        Some((i, n))
    });
    // (and a mark of 1:1 that means nothing), so the offset wins.
    let at = offset
        .map(|(_, n)| limits::pos_at_byte(source, n))
        .or_else(|| e.location().map(|l| limits::yaml_pos(source, &l)))
        .unwrap_or(Pos { line: 1, column: 1 });
    if text.contains("duplicate entry")
        && let Some(d) = pos.duplicates().iter().find(|d| d.second.line >= at.line)
    {
        return LoadError {
            file: path.to_path_buf(),
            line: d.second.line,
            column: d.second.column,
            message: format!(
                "duplicate key `{}` (first defined at line {})",
                d.key, d.first.line
            ),
        };
    }
    // The parser writes its own " at line L column C" (counted its way) or " at position
    // N"; the location is ours to print.
    let message = match offset {
        Some((i, _)) => text[..i].to_string(),
        None => strip_location(&text),
    };
    LoadError {
        file: path.to_path_buf(),
        line: at.line,
        column: at.column,
        message: format!("invalid YAML: {message}"),
    }
}

/// `msg at line 3 column 1, while scanning` -> `msg, while scanning`.
fn strip_location(text: &str) -> String {
    let Some(i) = text.find(" at line ") else {
        return text.to_string();
    };
    let rest = &text[i + " at line ".len()..];
    let digits = |s: &str| s.len() - s.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let n = digits(rest);
    let Some(after) = rest[n..].strip_prefix(" column ") else {
        return text.to_string();
    };
    let m = digits(after);
    format!("{}{}", &text[..i], &after[m..])
}

const TOP_KEYS: &[&str] = &[
    "name",
    "job",
    "description",
    "integration",
    "creator",
    "documentation_link",
    "version",
    "is_custom",
    "enabled",
    "is_enabled",
    "schedule",
    "run_interval_in_seconds",
    "timeout",
    "overlap",
    "misfire",
    "parameters",
    "alerts",
];
const SCHEDULE_KEYS: &[&str] = &["every", "cron", "timezone", "jitter"];
const PARAM_KEYS: &[&str] = &[
    "name",
    "type",
    "default_value",
    "is_mandatory",
    "description",
    "value",
    "value_from_env",
    "value_from_file",
];

/// The loading context of one file: positions and the errors found so far.
struct Cx<'o> {
    file: PathBuf,
    pos: Positions,
    errors: Vec<LoadError>,
    fingerprint: std::collections::hash_map::DefaultHasher,
    opts: &'o LoadOptions,
    /// Files read besides the job file.
    inputs: Vec<PathBuf>,
    /// Warnings (located): they do not stop the job from loading.
    warnings: Vec<LoadError>,
    /// Loading a marketplace definition for an instance file: mandatory values may be missing
    /// (the instance gives them) and the implementation's checks wait for the instance.
    template: bool,
    /// Loading the merge of an instance file and its definition (see `marketplace`).
    instance: Option<marketplace::InstanceCx>,
}

impl Cx<'_> {
    /// An error about the key at `path`.
    fn key_err(&mut self, path: &str, message: impl Into<String>) {
        let message = match self.instance_place(path, message.into(), false) {
            Ok((p, message)) => return self.push(p, message),
            Err(message) => message,
        };
        let p = self.pos.key(path).unwrap_or(Pos { line: 1, column: 1 });
        self.push(p, message);
    }

    /// An error about the value at `path`.
    fn val_err(&mut self, path: &str, message: impl Into<String>) {
        let message = match self.instance_place(path, message.into(), true) {
            Ok((p, message)) => return self.push(p, message),
            Err(message) => message,
        };
        let p = self.pos.value(path).unwrap_or(Pos { line: 1, column: 1 });
        self.push(p, message);
    }

    fn push(&mut self, p: Pos, message: String) {
        self.errors.push(LoadError {
            file: self.file.clone(),
            line: p.line,
            column: p.column,
            message,
        });
    }

    /// Checks a mapping's keys against `known`, reporting unknown ones with a suggestion.
    fn check_keys(&mut self, prefix: &str, map: &yaml_serde::Mapping, known: &[&str]) {
        for k in map.keys() {
            let Some(k) = k.as_str() else {
                self.key_err(prefix, "keys must be strings");
                continue;
            };
            if !known.contains(&k) {
                let path = join(prefix, k);
                let hint = suggest(k, known)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_else(|| format!(" (expected one of: {})", known.join(", ")));
                self.key_err(&path, format!("unknown key `{k}`{hint}"));
            }
        }
    }

    fn definition(
        &mut self,
        path: &Path,
        doc: &Yaml,
        catalog: &dyn Catalog,
    ) -> Option<JobDefinition> {
        let Some(map) = doc.as_mapping() else {
            self.push(
                Pos { line: 1, column: 1 },
                "a job file must be a YAML mapping (`name: ...`, `job: ...`, ...)".into(),
            );
            return None;
        };

        if self.instance.is_none() && map.contains_key("uses") {
            if self.template {
                self.key_err(
                    "uses",
                    "a definition used by an instance file cannot itself `uses:` another",
                );
                return None;
            }
            return self.instance_file(path, map, catalog);
        }

        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let id = job_id_from_stem(stem);
        if !valid_id(&id) {
            self.push(
                Pos { line: 1, column: 1 },
                format!(
                    "the file name `{stem}` gives no job id (it needs at least one letter or \
                     digit)"
                ),
            );
        }

        // Which implementation? Its extra keys decide what else is allowed. Without `job:`, a
        // script of the file's stem beside it names it (a SecOps marketplace definition).
        let mut inferred_script = None;
        let implementation = match map.get("job") {
            None | Some(Yaml::Null) => match marketplace::script_beside(path, catalog) {
                Some((job, script)) => {
                    inferred_script = Some(script);
                    Some(job)
                }
                None => {
                    let msg = marketplace::missing_job_message(path, catalog);
                    self.push(Pos { line: 1, column: 1 }, msg);
                    None
                }
            },
            Some(_) => self.req_str(map, "job"),
        };
        let spec = match &implementation {
            Some(j) => match catalog.spec(j) {
                Some(s) => Some(s),
                None => {
                    self.val_err(
                        "job",
                        format!(
                            "unknown job implementation `{j}` (known: {})",
                            catalog.ids().join(", ")
                        ),
                    );
                    None
                }
            },
            None => None,
        };
        let mut known: Vec<&str> = TOP_KEYS.to_vec();
        known.extend_from_slice(SECOPS_ONLY_KEYS);
        if let Some(s) = spec {
            known.extend_from_slice(s.extra_keys());
        }
        if self.instance.is_none() {
            self.check_keys("", map, &known);
        }
        let ignored_keys: Vec<String> = map
            .keys()
            .filter_map(Yaml::as_str)
            .filter(|k| SECOPS_ONLY_KEYS.contains(k))
            .map(str::to_string)
            .collect();

        let name = self.req_str(map, "name");
        if let Some(n) = &name {
            if n.trim().is_empty() {
                self.val_err("name", "`name` must not be empty");
            } else if n.chars().count() > 150 {
                self.val_err("name", "`name` must be at most 150 characters");
            } else if let Some(why) = crate::redact::display_name_problem(n) {
                // Raw control characters are refused by the YAML reader; escapes (`"\u0007"`,
                // `"\u202e"`) reach here.
                self.val_err("name", format!("`name` {why}"));
            }
        }
        let description = self.opt_str(map, "description").unwrap_or_default();
        if description.chars().count() > 2050 {
            self.val_err(
                "description",
                "`description` must be at most 2050 characters",
            );
        }
        // Free text over several lines: line breaks and tabs are fine, the rest is not.
        if let Some(why) =
            crate::redact::display_name_problem(&description.replace(['\n', '\r', '\t'], " "))
        {
            self.val_err("description", format!("`description` {why}"));
        }
        // Free text: marketplace files carry display names (`Google Chronicle`).
        let integration = self.opt_str(map, "integration");
        if let Some(i) = &integration
            && i.chars().count() > 150
        {
            self.val_err(
                "integration",
                "`integration` must be at most 150 characters",
            );
        }
        if let Some(i) = &integration
            && let Some(why) = crate::redact::display_name_problem(i)
        {
            self.val_err("integration", format!("`integration` {why}"));
        }
        let creator = self.opt_str(map, "creator");
        if let Some(c) = &creator
            && let Some(why) = crate::redact::display_name_problem(c)
        {
            self.val_err("creator", format!("`creator` {why}"));
        }
        let documentation_link = self.opt_str(map, "documentation_link");
        if let Some(link) = &documentation_link
            && url::Url::parse(link).is_err()
        {
            self.val_err("documentation_link", "`documentation_link` must be a URL");
        }
        let version = match map.get("version") {
            None | Some(Yaml::Null) => 1.0,
            Some(v) => match v.as_f64() {
                Some(x) if x >= 1.0 => x,
                _ => {
                    self.val_err("version", "`version` must be a number >= 1.0");
                    1.0
                }
            },
        };
        let is_custom = self.opt_bool(map, "is_custom").unwrap_or(false);
        let enabled = match (map.contains_key("enabled"), map.contains_key("is_enabled")) {
            (true, true) => {
                self.key_err(
                    "is_enabled",
                    "use either `enabled` or its alias `is_enabled`, not both",
                );
                true
            }
            (false, true) => self.opt_bool(map, "is_enabled").unwrap_or(true),
            _ => self.opt_bool(map, "enabled").unwrap_or(true),
        };

        let schedule = self.schedule(map);
        let timeout = match map.get("timeout") {
            None | Some(Yaml::Null) => Some(DEFAULT_TIMEOUT),
            Some(_) => self.duration(map, "timeout"),
        };
        if timeout.is_some_and(|t| t.is_zero()) {
            self.val_err("timeout", "`timeout` must be longer than 0s");
        }
        let overlap = match self.opt_str(map, "overlap").as_deref() {
            None | Some("skip") => Overlap::Skip,
            Some("allow") => Overlap::Allow,
            Some("replace") => Overlap::Replace,
            Some(o) => {
                self.val_err(
                    "overlap",
                    format!("invalid overlap `{o}` (expected skip, allow or replace)"),
                );
                Overlap::Skip
            }
        };
        let misfire = match self.opt_str(map, "misfire").as_deref() {
            None | Some("run_once") => Misfire::RunOnce,
            Some("skip") => Misfire::Skip,
            Some(m) => {
                self.val_err(
                    "misfire",
                    format!("invalid misfire `{m}` (expected run_once or skip)"),
                );
                Misfire::RunOnce
            }
        };

        let alerts = match map.get("alerts") {
            None => Default::default(),
            Some(v) => {
                let (a, problems) = alerts::JobAlerts::from_json(&yaml_to_json(v));
                for (p, m) in problems {
                    self.val_err(&p, m);
                }
                a
            }
        };
        let parameters = self.parameters(path, map, spec);

        let mut extra = serde_json::Map::new();
        if let Some(s) = spec {
            for key in s.extra_keys() {
                if let Some(v) = map.get(*key) {
                    extra.insert((*key).to_string(), yaml_to_json(v));
                }
            }
            if let Some(script) = inferred_script
                && !extra.contains_key("script")
            {
                extra.insert(
                    "script".into(),
                    serde_json::Value::String(script.display().to_string()),
                );
            }
            if let Some(p) = &parameters
                && !self.template
            {
                for fe in s.validate_file(path, p, &extra) {
                    let path = self.param_path(map, &fe.path);
                    self.val_err(&path, fe.message);
                }
            }
        }

        Some(JobDefinition {
            id,
            name: name?,
            implementation: implementation?,
            description,
            integration,
            creator,
            documentation_link,
            version,
            is_custom,
            enabled,
            schedule: schedule?,
            timeout: timeout?,
            overlap,
            misfire,
            alerts,
            parameters: parameters?,
            extra,
            source: path.to_path_buf(),
            fingerprint: self.fingerprint.finish(),
            uses: None,
            ignored_keys,
            warnings: std::mem::take(&mut self.warnings),
        })
    }

    /// Maps `parameters.<Display Name>` to the parameter's `value` path in the file.
    fn param_path(&self, map: &yaml_serde::Mapping, path: &str) -> String {
        let Some(name) = path.strip_prefix("parameters.") else {
            return path.to_string();
        };
        let list = map.get("parameters").and_then(Yaml::as_sequence);
        for (i, item) in list.into_iter().flatten().enumerate() {
            let item_name = item.get("name").and_then(Yaml::as_str).unwrap_or_default();
            if item_name.eq_ignore_ascii_case(name) || params::snake_case(item_name) == name {
                for k in [
                    "value",
                    "value_from_env",
                    "value_from_file",
                    "default_value",
                ] {
                    if item.get(k).is_some() {
                        return format!("parameters[{i}].{k}");
                    }
                }
                return format!("parameters[{i}]");
            }
        }
        "parameters".to_string()
    }

    fn schedule(&mut self, map: &yaml_serde::Mapping) -> Option<Schedule> {
        match (map.get("schedule"), map.get("run_interval_in_seconds")) {
            (Some(_), Some(_)) => {
                self.key_err(
                    "run_interval_in_seconds",
                    "use either `schedule` or `run_interval_in_seconds`, not both",
                );
                None
            }
            (None, None) => Schedule::every(Duration::from_secs(DEFAULT_INTERVAL_SECS)).ok(),
            (None, Some(v)) => match v.as_u64() {
                Some(s) if s >= 1 => match Schedule::every(Duration::from_secs(s)) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        self.val_err("run_interval_in_seconds", e.to_string());
                        None
                    }
                },
                _ => {
                    self.val_err(
                        "run_interval_in_seconds",
                        "`run_interval_in_seconds` must be a whole number of seconds >= 1",
                    );
                    None
                }
            },
            (Some(s), None) => {
                let Some(sm) = s.as_mapping() else {
                    self.val_err(
                        "schedule",
                        "`schedule` must be a mapping with `every` or `cron` \
                         (and optional `timezone`, `jitter`)",
                    );
                    return None;
                };
                self.check_keys("schedule", sm, SCHEDULE_KEYS);
                let tz = match sm.get("timezone") {
                    None | Some(Yaml::Null) => Some(chrono_tz::UTC),
                    Some(v) => match v.as_str() {
                        Some(name) => match schedule::parse_timezone(name) {
                            Ok(tz) => Some(tz),
                            Err(e) => {
                                self.val_err("schedule.timezone", e.to_string());
                                None
                            }
                        },
                        None => {
                            self.val_err("schedule.timezone", "`timezone` must be a string");
                            None
                        }
                    },
                };
                let jitter = match sm.get("jitter") {
                    None | Some(Yaml::Null) => Some(Duration::ZERO),
                    Some(_) => self.duration(sm, "schedule.jitter"),
                };
                let base = match (sm.get("every"), sm.get("cron")) {
                    (Some(_), Some(_)) => {
                        self.key_err("schedule.cron", "use either `every` or `cron`, not both");
                        None
                    }
                    (None, None) => {
                        self.key_err("schedule", "`schedule` needs `every` or `cron`");
                        None
                    }
                    (Some(_), None) => {
                        let d = self.duration(sm, "schedule.every")?;
                        match Schedule::every(d) {
                            Ok(s) => Some(s),
                            Err(e) => {
                                self.val_err("schedule.every", e.to_string());
                                None
                            }
                        }
                    }
                    (None, Some(c)) => {
                        let Some(expr) = c.as_str() else {
                            self.val_err("schedule.cron", "`cron` must be a string");
                            return None;
                        };
                        let tz = tz?;
                        match Schedule::cron(expr, tz) {
                            Ok(s) => Some(s),
                            Err(e) => {
                                self.val_err("schedule.cron", e.to_string());
                                None
                            }
                        }
                    }
                };
                let (base, jitter) = (base?, jitter?);
                if let schedule::ScheduleKind::Every(period) = base.kind()
                    && !jitter.is_zero()
                    && jitter >= *period
                {
                    // A jitter as long as the period would let a tick fire after the next one.
                    self.val_err(
                        "schedule.jitter",
                        format!(
                            "`jitter` must be shorter than the interval ({})",
                            schedule::format_duration(*period)
                        ),
                    );
                    return None;
                }
                Some(base.with_jitter(jitter))
            }
        }
    }

    /// A duration value at `path` (the last segment is the key in `map`): `15m`, `1h30m`, or
    /// a whole number of seconds.
    fn duration(&mut self, map: &yaml_serde::Mapping, path: &str) -> Option<Duration> {
        let key = path.rsplit('.').next().unwrap_or(path);
        match map.get(key) {
            Some(Yaml::Number(n)) => match n.as_u64() {
                Some(s) => Some(Duration::from_secs(s)),
                None => {
                    self.val_err(path, format!("`{key}` must be a whole number of seconds"));
                    None
                }
            },
            Some(Yaml::String(s)) => match schedule::parse_duration(s) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.val_err(path, e.to_string());
                    None
                }
            },
            _ => {
                self.val_err(
                    path,
                    format!("`{key}` must be a duration such as 30s, 15m, 1h30m or 2d"),
                );
                None
            }
        }
    }

    fn req_str(&mut self, map: &yaml_serde::Mapping, key: &str) -> Option<String> {
        match map.get(key) {
            None | Some(Yaml::Null) => {
                self.push(
                    Pos { line: 1, column: 1 },
                    format!("missing required key `{key}`"),
                );
                None
            }
            Some(_) => self.opt_str(map, key),
        }
    }

    fn opt_str(&mut self, map: &yaml_serde::Mapping, key: &str) -> Option<String> {
        match map.get(key)? {
            Yaml::Null => None,
            Yaml::String(s) => Some(s.clone()),
            Yaml::Number(n) => Some(n.to_string()),
            _ => {
                self.val_err(key, format!("`{key}` must be a string"));
                None
            }
        }
    }

    fn opt_bool(&mut self, map: &yaml_serde::Mapping, key: &str) -> Option<bool> {
        match map.get(key)? {
            Yaml::Bool(b) => Some(*b),
            Yaml::Null => None,
            _ => {
                self.val_err(key, format!("`{key}` must be true or false"));
                None
            }
        }
    }

    /// Resolves the file's parameters merged with the implementation's declared ones.
    fn parameters(
        &mut self,
        path: &Path,
        map: &yaml_serde::Mapping,
        spec: Option<&dyn JobSpec>,
    ) -> Option<Parameters> {
        let declared: Vec<ParamSpec> = spec.map(|s| s.parameters()).unwrap_or_default();
        let items = match map.get("parameters") {
            None | Some(Yaml::Null) => Vec::new(),
            Some(Yaml::Sequence(s)) => s.clone(),
            Some(_) => {
                self.val_err("parameters", "`parameters` must be a list");
                return None;
            }
        };
        if items.len() > 50 {
            self.val_err("parameters", "a job can have at most 50 parameters");
        }
        let before = self.errors.len();
        let mut out = Parameters::default();
        let base_dir = path.parent().unwrap_or(Path::new("."));
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (i, item) in items.iter().enumerate() {
            let p = format!("parameters[{i}]");
            let Some(m) = item.as_mapping() else {
                self.val_err(
                    &p,
                    "each parameter must be a mapping with `name` and `type`",
                );
                continue;
            };
            self.check_keys(&p, m, PARAM_KEYS);
            let name = match m.get("name").and_then(Yaml::as_str) {
                Some(n) if !n.trim().is_empty() => n.trim().to_string(),
                _ => {
                    self.key_err(&p, "a parameter needs a `name`");
                    continue;
                }
            };
            if name.chars().count() > 150 || name.split_whitespace().count() > 13 {
                self.val_err(
                    &format!("{p}.name"),
                    "a parameter name must be at most 150 characters and 13 words",
                );
            }
            if let Some(why) = crate::redact::display_name_problem(&name) {
                self.val_err(&format!("{p}.name"), format!("a parameter name {why}"));
                continue;
            }
            if let Some(first) = seen.insert(name.to_lowercase(), i) {
                self.val_err(
                    &format!("{p}.name"),
                    format!("parameter `{name}` is already defined at parameters[{first}]"),
                );
                continue;
            }
            let declared_spec = declared.iter().find(|d| d.name.eq_ignore_ascii_case(&name));
            let ty = match m.get("type") {
                Some(t) => {
                    let text = match t {
                        Yaml::String(s) => s.clone(),
                        Yaml::Number(n) => n.to_string(),
                        _ => String::new(),
                    };
                    match ParamType::parse(&text) {
                        Ok(t) => t,
                        Err(e) => {
                            self.val_err(&format!("{p}.type"), e);
                            continue;
                        }
                    }
                }
                None => match declared_spec {
                    Some(d) => d.ty,
                    None => {
                        self.key_err(&p, format!("parameter `{name}` needs a `type`"));
                        continue;
                    }
                },
            };
            if let Some(d) = declared_spec
                && !compatible(d.ty, ty)
            {
                self.val_err(
                    &format!("{p}.type"),
                    format!(
                        "parameter `{name}` must have type {} for job `{}`",
                        d.ty,
                        map.get("job").and_then(Yaml::as_str).unwrap_or("?")
                    ),
                );
                continue;
            }
            let mandatory = match m.get("is_mandatory") {
                None | Some(Yaml::Null) => declared_spec.is_some_and(|d| d.mandatory),
                Some(Yaml::Bool(b)) => *b,
                Some(_) => {
                    self.val_err(
                        &format!("{p}.is_mandatory"),
                        "`is_mandatory` must be true or false",
                    );
                    false
                }
            };
            let description = m
                .get("description")
                .and_then(Yaml::as_str)
                .map(str::to_string)
                .or_else(|| declared_spec.map(|d| d.description.clone()))
                .unwrap_or_default();
            let Some((raw, from)) = self.raw_value(&p, m, base_dir, declared_spec) else {
                continue;
            };
            // A template's default of the wrong type (SecOps does not check them): a warning,
            // and the value stays text, so it fails only where a job reads it typed.
            if from == Some("default_value")
                && let Err(e) = params::resolve(&name, ty, false, &raw)
            {
                self.warn(&format!("{p}.default_value"), format!("{e}; kept as text"));
                out.push(Parameter {
                    snake_name: params::snake_case(&name),
                    name,
                    ty,
                    mandatory,
                    description,
                    value: ParamValue::Str(raw.as_text().unwrap_or_default()),
                });
                continue;
            }
            match params::resolve(&name, ty, mandatory && !self.template, &raw) {
                Ok(value) => out.push(Parameter {
                    snake_name: params::snake_case(&name),
                    name,
                    ty,
                    mandatory,
                    description,
                    value,
                }),
                Err(e) => match from {
                    Some(k) => self.val_err(&format!("{p}.{k}"), e),
                    // No value anywhere: point at the parameter itself.
                    None => self.key_err(&format!("{p}.name"), e),
                },
            }
        }
        // Declared parameters the file does not mention get their declared defaults.
        for d in &declared {
            if seen.contains_key(&d.name.to_lowercase()) {
                continue;
            }
            let raw = d.default.clone().unwrap_or(RawValue::Null);
            match params::resolve(&d.name, d.ty, d.mandatory, &raw) {
                Ok(value) => out.push(Parameter {
                    name: d.name.clone(),
                    snake_name: params::snake_case(&d.name),
                    ty: d.ty,
                    mandatory: d.mandatory,
                    description: d.description.clone(),
                    value,
                }),
                Err(e) => self.key_err("parameters", e),
            }
        }
        (self.errors.len() == before).then_some(out)
    }

    /// The first of `value`, `value_from_env`, `value_from_file`, `default_value` (and the
    /// declared default), with the key it came from.
    fn raw_value(
        &mut self,
        p: &str,
        m: &yaml_serde::Mapping,
        base_dir: &Path,
        declared: Option<&ParamSpec>,
    ) -> Option<(RawValue, Option<&'static str>)> {
        let sources = ["value", "value_from_env", "value_from_file"]
            .iter()
            .filter(|k| m.get(**k).is_some_and(|v| !v.is_null()))
            .count();
        if sources > 1 {
            self.key_err(
                p,
                "use only one of `value`, `value_from_env` and `value_from_file`",
            );
            return None;
        }
        if let Some(v) = m.get("value").filter(|v| !v.is_null()) {
            return Some((yaml_to_raw(v), Some("value")));
        }
        if let Some(v) = m.get("value_from_env").filter(|v| !v.is_null()) {
            let Some(var) = v.as_str() else {
                self.val_err(
                    &format!("{p}.value_from_env"),
                    "`value_from_env` must be a variable name",
                );
                return None;
            };
            if let Err(e) = self.opts.secrets.check_env(var) {
                self.val_err(&format!("{p}.value_from_env"), e);
                return None;
            }
            return match std::env::var(var) {
                Ok(val) => {
                    val.hash(&mut self.fingerprint);
                    Some((RawValue::Str(val), Some("value_from_env")))
                }
                Err(_) => {
                    self.val_err(
                        &format!("{p}.value_from_env"),
                        format!("environment variable `{var}` is not set"),
                    );
                    None
                }
            };
        }
        if let Some(v) = m.get("value_from_file").filter(|v| !v.is_null()) {
            let Some(f) = v.as_str() else {
                self.val_err(
                    &format!("{p}.value_from_file"),
                    "`value_from_file` must be a path",
                );
                return None;
            };
            let file = match self.opts.secrets.resolve_file(base_dir, f) {
                Ok(file) => file,
                Err(e) => {
                    self.val_err(&format!("{p}.value_from_file"), e);
                    return None;
                }
            };
            self.inputs.push(file.clone());
            let read = secrets::read_regular(&file, secrets::MAX_SECRET_BYTES).and_then(|b| {
                String::from_utf8(b).map_err(|_| {
                    secrets::ReadError::Io(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "the file is not UTF-8 text",
                    ))
                })
            });
            return match read {
                Ok(val) => {
                    // A trailing newline is an artefact of how secret files are written.
                    let val = val.strip_suffix('\n').unwrap_or(&val);
                    let val = val.strip_suffix('\r').unwrap_or(val).to_string();
                    val.hash(&mut self.fingerprint);
                    Some((RawValue::Str(val), Some("value_from_file")))
                }
                Err(e) => {
                    self.val_err(
                        &format!("{p}.value_from_file"),
                        format!("cannot read {}: {e}", file.display()),
                    );
                    None
                }
            };
        }
        if let Some(v) = m.get("default_value").filter(|v| !v.is_null()) {
            return Some((yaml_to_raw(v), Some("default_value")));
        }
        let declared_default = declared.and_then(|d| d.default.clone());
        Some((declared_default.unwrap_or(RawValue::Null), None))
    }
}

/// A file may declare a string-like type where the implementation wants a csv (SecOps has no
/// csv type, so a SecOps file says `string` for `Tags`), and vice versa.
fn compatible(declared: ParamType, file: ParamType) -> bool {
    declared == file || matches!((declared, file), (ParamType::Csv, ParamType::String))
}

pub(crate) fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn yaml_to_raw(v: &Yaml) -> RawValue {
    match v {
        Yaml::Bool(b) => RawValue::Bool(*b),
        Yaml::Number(n) => n
            .as_i64()
            .map(RawValue::Int)
            .or_else(|| n.as_f64().map(RawValue::Float))
            .unwrap_or(RawValue::Null),
        Yaml::String(s) => RawValue::Str(s.clone()),
        Yaml::Null => RawValue::Null,
        // Lists and maps have no SecOps parameter type; their text form makes the type check
        // fail with a clear message instead of silently dropping the value.
        other => RawValue::Str(yaml_serde::to_string(other).unwrap_or_default()),
    }
}

/// Converts a YAML value to JSON (for implementation keys). Non-string keys become strings.
pub fn yaml_to_json(v: &Yaml) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Yaml::Null => J::Null,
        Yaml::Bool(b) => J::Bool(*b),
        Yaml::Number(n) => {
            if let Some(i) = n.as_i64() {
                J::from(i)
            } else if let Some(u) = n.as_u64() {
                J::from(u)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map(J::Number)
                    .unwrap_or(J::Null)
            }
        }
        Yaml::String(s) => J::String(s.clone()),
        Yaml::Sequence(s) => J::Array(s.iter().map(yaml_to_json).collect()),
        Yaml::Mapping(m) => J::Object(
            m.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        other => yaml_serde::to_string(other)
                            .unwrap_or_default()
                            .trim()
                            .to_string(),
                    };
                    (key, yaml_to_json(v))
                })
                .collect(),
        ),
        Yaml::Tagged(t) => yaml_to_json(&t.value),
    }
}

pub use crate::config::grammar::suggest;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;

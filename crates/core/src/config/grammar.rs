//! The one configuration grammar: how every configuration value is spelled, wherever it is
//! written (the config file, a `SOARJOBD__*` environment variable, a job file), and how a
//! section is read with every problem reported at once, each at its `file:line:col` (or named
//! by its environment variable).
//!
//! This module is a leaf: it names no platform and depends on nothing else in the crate but
//! [`super::located`], so the core (job files) and every platform section share it.
//!
//! * **Durations**: a whole number of seconds (`90`), or numbers with units `d`, `h`, `m`, `s`,
//!   `ms`, largest first, each at most once: `500ms`, `30s`, `15m`, `1h30m`, `2d`, `1m30s500ms`.
//!   No fractions, no signs; surrounding white space is ignored. See [`parse_duration`].
//! * **Booleans**: YAML `true`/`false`, or the text (case-insensitive, trimmed) `true`, `yes`,
//!   `on`, `1` / `false`, `no`, `off`, `0` (the same for a YAML number 1 or 0). See
//!   [`parse_bool`].
//! * **Secrets**: `key` inline, or `key_file` naming a file, never both. A file is read whole
//!   (at most 64 KiB) and exactly one trailing newline (`\n` or `\r\n`) is removed, as editors
//!   and `echo` add one; an empty file is an error. An inline value loses one trailing newline
//!   the same way, and an empty one means "not set". See [`read_secret_file`].
//! * **Unknown keys** are errors with a "did you mean" ([`suggest`]) in every section.

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde_json::{Map, Value};

use super::located::{Pos, Positions};

// ---------------------------------------------------------------------------------------------
// Durations

/// What a duration looks like, for error messages.
pub const DURATION_HINT: &str = "expected a whole number of seconds or numbers with units \
                                 d, h, m, s, ms, e.g. 500ms, 30s or 1h30m";

/// A duration that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration `{input}`: {reason}; {DURATION_HINT}")]
pub struct DurationError {
    pub input: String,
    pub reason: String,
}

/// Parses a duration: `90` (seconds), `500ms`, `30s`, `15m`, `1h30m`, `2d`, `1d12h`.
///
/// Units are `d`, `h`, `m`, `s` and `ms`, largest first, each at most once. A bare whole
/// number is seconds, as a YAML number is. `0`/`0s` is allowed (each key decides its range).
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let err = |reason: String| DurationError {
        input: s.to_string(),
        reason,
    };
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(err("it is empty".to_string()));
    }
    if rest.bytes().all(|b| b.is_ascii_digit()) {
        return rest
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| err("it is too large".to_string()));
    }
    let mut total_ms: u64 = 0;
    let mut previous_rank: Option<u8> = None;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(err(unexpected_at(rest, "a number")));
        }
        let (number, tail) = rest.split_at(digits);
        let unit_len = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
        if unit_len == 0 {
            return Err(err(if tail.is_empty() {
                format!("`{number}` needs a unit")
            } else {
                unexpected_at(tail, "a unit")
            }));
        }
        let (unit, tail) = tail.split_at(unit_len);
        let (rank, unit_ms): (u8, u64) = match unit {
            "d" => (0, 86_400_000),
            "h" => (1, 3_600_000),
            "m" => (2, 60_000),
            "s" => (3, 1_000),
            "ms" => (4, 1),
            "us" | "ns" => return Err(err("the smallest unit is ms".to_string())),
            other => return Err(err(format!("unknown unit `{other}`"))),
        };
        if previous_rank.is_some_and(|previous| previous >= rank) {
            return Err(err(
                "units must go from largest to smallest, each at most once".to_string(),
            ));
        }
        previous_rank = Some(rank);
        total_ms = number
            .parse::<u64>()
            .ok()
            .and_then(|value| value.checked_mul(unit_ms))
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(|| err("it is too large".to_string()))?;
        rest = tail;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Describes the character at the start of `rest` where `expected` was wanted.
fn unexpected_at(rest: &str, expected: &str) -> String {
    match rest.chars().next() {
        Some('.') => {
            format!("fractions are not supported (expected {expected}); write 1h30m, not 1.5h")
        }
        Some(c) => format!("unexpected `{c}` (expected {expected})"),
        None => format!("expected {expected}"),
    }
}

/// A duration value as YAML (a number of seconds or a text) or the environment gives it.
pub fn duration_value(v: &Value) -> Result<Duration, String> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .map(Duration::from_secs)
            .ok_or_else(|| format!("`{n}` is not a duration ({DURATION_HINT})")),
        Value::String(s) => parse_duration(s).map_err(|e| e.to_string()),
        other => Err(format!(
            "{} is not a duration ({DURATION_HINT})",
            kind(other)
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Booleans

/// Parses a boolean written as text: `true`/`yes`/`on`/`1` or `false`/`no`/`off`/`0`,
/// case-insensitive, surrounding white space ignored.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// A boolean value: YAML `true`/`false`, the number 1 or 0, or a text [`parse_bool`] accepts.
pub fn bool_value(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_u64() {
            Some(1) => Some(true),
            Some(0) => Some(false),
            _ => None,
        },
        Value::String(s) => parse_bool(s),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Secrets

/// The largest secret file read.
pub const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// Removes exactly one trailing newline (`\n` or `\r\n`), the one editors and `echo` add.
pub fn trim_one_newline(s: &str) -> &str {
    match s.strip_suffix('\n') {
        Some(rest) => rest.strip_suffix('\r').unwrap_or(rest),
        None => s,
    }
}

/// A secret read from a file under the secret-file rule.
pub struct SecretFile {
    pub secret: SecretString,
    /// A hash of the file's content, to notice a rotation without keeping or comparing the
    /// secret itself. Never printed.
    pub fingerprint: u64,
}

impl fmt::Debug for SecretFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretFile([REDACTED])")
    }
}

/// Reads a secret file: at most [`MAX_SECRET_FILE_BYTES`], UTF-8, exactly one trailing
/// newline removed, not empty. The error never quotes the content.
pub fn read_secret_file(path: &Path) -> Result<SecretFile, String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    if meta.len() > MAX_SECRET_FILE_BYTES {
        return Err(format!(
            "{} is larger than {} KiB, the limit for a secret file",
            path.display(),
            MAX_SECRET_FILE_BYTES / 1024
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let text =
        String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
    let value = trim_one_newline(&text);
    if value.trim().is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut h);
    Ok(SecretFile {
        secret: SecretString::from(value.to_string()),
        fingerprint: h.finish(),
    })
}

/// Where a secret comes from: written inline (or in an environment variable), or a file.
#[derive(Debug, Clone)]
pub enum SecretSource {
    Inline(SecretString),
    File(PathBuf),
}

impl SecretSource {
    /// The secret, reading the file if that is where it is.
    pub fn read(&self) -> Result<SecretString, String> {
        match self {
            SecretSource::Inline(s) => Ok(s.clone()),
            SecretSource::File(p) => read_secret_file(p).map(|f| f.secret),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// "Did you mean"

/// The known key closest to `k` by edit distance, if it is close enough to be a typo.
pub fn suggest<'a>(k: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|c| (levenshtein(k, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

// ---------------------------------------------------------------------------------------------
// Where values come from, and problems

/// Where a configuration value was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// In a file, at a line and column.
    File { file: PathBuf, pos: Pos },
    /// In an environment variable (which has no position worth giving).
    Env { var: String },
}

/// Where every value of a loaded configuration came from: key and value positions in the
/// file, and which keys environment variables set. Empty for settings built in code, whose
/// problems then carry no origin.
#[derive(Debug, Default)]
pub struct Origins {
    file: Option<PathBuf>,
    positions: Positions,
    /// Dotted key path (`soar.timeout`) -> the variable that set it.
    env: HashMap<String, String>,
}

impl Origins {
    /// `file` with its text (for positions) and the environment variables that set keys.
    pub fn new(file: Option<(PathBuf, &str)>, env: HashMap<String, String>) -> Origins {
        let (file, positions) = match file {
            Some((f, text)) => (Some(f), Positions::scan(text)),
            None => (None, Positions::default()),
        };
        Origins {
            file,
            positions,
            env,
        }
    }

    /// The config file, if one was read.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The variable that set `path` or one of its parents.
    fn env_var(&self, path: &str) -> Option<&str> {
        let mut p = path;
        loop {
            if let Some(v) = self.env.get(p) {
                return Some(v);
            }
            p = &p[..p.rfind('.')?];
        }
    }

    /// The first variable (by name) that set a key under `path`: a section only the
    /// environment wrote (`SOARJOBD__NOPE__X` makes a section `nope`) is located there.
    fn env_child(&self, path: &str) -> Option<&str> {
        let prefix = format!("{path}.");
        self.env
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v.as_str())
            .min()
    }

    fn at(&self, path: &str, value: bool) -> Option<Origin> {
        if let Some(var) = self.env_var(path) {
            return Some(Origin::Env {
                var: var.to_string(),
            });
        }
        let pos = if value {
            self.positions.value(path)
        } else {
            self.positions.key(path)
        };
        if pos.is_none()
            && let Some(var) = self.env_child(path)
        {
            return Some(Origin::Env {
                var: var.to_string(),
            });
        }
        let file = self.file.clone()?;
        Some(Origin::File {
            file,
            pos: pos.unwrap_or(Pos { line: 1, column: 1 }),
        })
    }

    /// Where the value at `path` was written.
    pub fn of_value(&self, path: &str) -> Option<Origin> {
        self.at(path, true)
    }

    /// Where the key at `path` was written.
    pub fn of_key(&self, path: &str) -> Option<Origin> {
        self.at(path, false)
    }

    /// Keys written twice in one mapping of the file.
    pub fn duplicates(&self) -> Vec<Problem> {
        let Some(file) = &self.file else {
            return Vec::new();
        };
        self.positions
            .duplicates()
            .iter()
            .map(|d| Problem {
                origin: Some(Origin::File {
                    file: file.clone(),
                    pos: d.second,
                }),
                message: format!(
                    "duplicate key `{}` (first defined at line {})",
                    d.key, d.first.line
                ),
            })
            .collect()
    }
}

/// One configuration problem and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub origin: Option<Origin>,
    pub message: String,
}

impl Problem {
    pub fn new(origin: Option<Origin>, message: impl Into<String>) -> Problem {
        Problem {
            origin,
            message: message.into(),
        }
    }

    /// Orders problems as a reader meets them: the file top to bottom, then the environment.
    pub fn sort(problems: &mut [Problem]) {
        problems.sort_by_key(|p| match &p.origin {
            Some(Origin::File { pos, .. }) => (0, pos.line, pos.column, String::new()),
            Some(Origin::Env { var }) => (1, 0, 0, var.clone()),
            None => (2, 0, 0, String::new()),
        });
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Some(Origin::File { file, pos }) => write!(
                f,
                "{}:{}:{}: {}",
                file.display(),
                pos.line,
                pos.column,
                self.message
            ),
            Some(Origin::Env { var }) => write!(f, "{var}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Joins problems one per line, as errors that hold them print them.
pub fn join(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n  ")
}

/// A configuration section a platform declares: its top-level key and how to check it. The
/// core config knows platforms only through these.
#[derive(Clone, Copy)]
pub struct SectionSpec {
    /// The section's top-level key.
    pub name: &'static str,
    /// Every problem of the section (the value is absent when the section is not written).
    pub check: fn(Option<&Value>, &Origins) -> Vec<Problem>,
}

impl fmt::Debug for SectionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SectionSpec")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------------------
// The section reader

/// Reads one mapping of the configuration key by key, collecting every problem: each getter
/// declares its key (so [`Section::finish`] can report the undeclared ones with a suggestion),
/// converts the value by the grammar, and on a problem records it at the value's position and
/// returns the default, so reading goes on.
pub struct Section<'a> {
    /// The dotted path of this mapping (`soar`, `log`; empty at the top level).
    path: String,
    map: Option<&'a Map<String, Value>>,
    origins: &'a Origins,
    known: Vec<&'static str>,
    /// Keys handled elsewhere (not read here, never reported unknown).
    accepted: Vec<String>,
    problems: Vec<Problem>,
}

impl<'a> Section<'a> {
    /// The section at `path` whose value is `value` (absent or null: an empty section).
    pub fn new(path: &str, value: Option<&'a Value>, origins: &'a Origins) -> Section<'a> {
        let mut s = Section {
            path: path.to_string(),
            map: None,
            origins,
            known: Vec::new(),
            accepted: Vec::new(),
            problems: Vec::new(),
        };
        match value {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => s.map = Some(m),
            Some(other) => {
                let msg = format!("`{path}` must be a mapping, not {}", kind(other));
                s.problems.push(Problem::new(origins.of_value(path), msg));
            }
        }
        s
    }

    /// The dotted path of `key` in this section.
    pub fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value of `key` (declaring it); `None` when absent or null.
    pub fn value(&mut self, key: &'static str) -> Option<&'a Value> {
        if !self.known.contains(&key) {
            self.known.push(key);
        }
        self.map?.get(key).filter(|v| !v.is_null())
    }

    /// Marks `key` as handled elsewhere: [`Section::finish`] does not report it.
    pub fn accept(&mut self, key: &str) {
        self.accepted.push(key.to_string());
    }

    /// Whether `key` is set (declaring it).
    pub fn is_set(&mut self, key: &'static str) -> bool {
        self.value(key).is_some()
    }

    /// Records a problem with the value of `key`.
    pub fn problem(&mut self, key: &str, message: impl Into<String>) {
        let origin = self.origins.of_value(&self.key_path(key));
        self.problems.push(Problem::new(origin, message));
    }

    /// Records a problem with the section as a whole (located at its key).
    pub fn section_problem(&mut self, message: impl Into<String>) {
        let origin = self.origins.of_key(&self.path);
        self.problems.push(Problem::new(origin, message));
    }

    /// Adds problems found elsewhere (a nested section).
    pub fn absorb(&mut self, problems: Vec<Problem>) {
        self.problems.extend(problems);
    }

    /// Whether a problem was recorded so far.
    pub fn has_problems(&self) -> bool {
        !self.problems.is_empty()
    }

    /// A text value (a YAML number is taken as its text).
    pub fn string(&mut self, key: &'static str) -> Option<String> {
        match self.value(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            other => {
                let msg = format!(
                    "`{}` must be a text, not {}",
                    self.key_path(key),
                    kind(other)
                );
                self.problem(key, msg);
                None
            }
        }
    }

    /// A text value that must be present and not empty.
    pub fn required_string(&mut self, key: &'static str) -> Option<String> {
        match self.string(key) {
            Some(s) if !s.trim().is_empty() => Some(s),
            Some(_) => {
                let msg = format!("`{}` must not be empty", self.key_path(key));
                self.problem(key, msg);
                None
            }
            None if self.value(key).is_none() => {
                let msg = format!("missing required key `{}`", self.key_path(key));
                self.section_problem(msg);
                None
            }
            None => None,
        }
    }

    /// A path.
    pub fn path(&mut self, key: &'static str) -> Option<PathBuf> {
        match self.string(key) {
            Some(s) if !s.trim().is_empty() => Some(PathBuf::from(s)),
            Some(_) => {
                let msg = format!("`{}` must be a path", self.key_path(key));
                self.problem(key, msg);
                None
            }
            None => None,
        }
    }

    /// A duration by the grammar ([`parse_duration`]).
    pub fn duration(&mut self, key: &'static str, default: Duration) -> Duration {
        self.opt_duration(key).unwrap_or(default)
    }

    /// A duration longer than zero.
    pub fn positive_duration(&mut self, key: &'static str, default: Duration) -> Duration {
        match self.opt_duration(key) {
            Some(d) if d.is_zero() => {
                let msg = format!("`{}` must be longer than 0s", self.key_path(key));
                self.problem(key, msg);
                default
            }
            Some(d) => d,
            None => default,
        }
    }

    fn opt_duration(&mut self, key: &'static str) -> Option<Duration> {
        let v = self.value(key)?;
        match duration_value(v) {
            Ok(d) => Some(d),
            Err(e) => {
                let msg = format!("`{}`: {e}", self.key_path(key));
                self.problem(key, msg);
                None
            }
        }
    }

    /// A boolean by the grammar ([`bool_value`]).
    pub fn bool(&mut self, key: &'static str, default: bool) -> bool {
        let Some(v) = self.value(key) else {
            return default;
        };
        match bool_value(v) {
            Some(b) => b,
            None => {
                let msg = format!(
                    "`{}` must be true or false (or yes/no, on/off, 1/0), got {}",
                    self.key_path(key),
                    shown(v)
                );
                self.problem(key, msg);
                default
            }
        }
    }

    /// A whole number of at least `min` (a YAML number or its text).
    pub fn uint<T: TryFrom<u64> + Copy>(&mut self, key: &'static str, default: T, min: u64) -> T {
        let Some(v) = self.value(key) else {
            return default;
        };
        let n = match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        match n.filter(|n| *n >= min).and_then(|n| T::try_from(n).ok()) {
            Some(n) => n,
            None => {
                let least = if min > 0 {
                    format!(" of at least {min}")
                } else {
                    String::new()
                };
                let msg = format!(
                    "`{}` must be a whole number{least}, got {}",
                    self.key_path(key),
                    shown(v)
                );
                self.problem(key, msg);
                default
            }
        }
    }

    /// An optional number greater than zero (a YAML number or its text; an empty text is
    /// "not set").
    pub fn positive_f64(&mut self, key: &'static str) -> Option<f64> {
        let v = self.value(key)?;
        let n = match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) if s.trim().is_empty() => return None,
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        match n {
            Some(n) if n.is_finite() && n > 0.0 => Some(n),
            _ => {
                let msg = format!(
                    "`{}` must be a number greater than 0, got {}",
                    self.key_path(key),
                    shown(v)
                );
                self.problem(key, msg);
                None
            }
        }
    }

    /// One of `options` (case-insensitive).
    pub fn choice<T: Copy>(&mut self, key: &'static str, options: &[(&str, T)], default: T) -> T {
        let Some(v) = self.value(key) else {
            return default;
        };
        let found = v.as_str().and_then(|s| {
            options
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(s.trim()))
        });
        match found {
            Some((_, t)) => *t,
            None => {
                let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
                let msg = format!(
                    "`{}` must be one of {}, got {}",
                    self.key_path(key),
                    names.join(", "),
                    shown(v)
                );
                self.problem(key, msg);
                default
            }
        }
    }

    /// A list of texts: a YAML list, or a comma-separated text (as environment values are).
    pub fn string_list(&mut self, key: &'static str) -> Option<Vec<String>> {
        let v = self.value(key)?;
        let list = match v {
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
            _ => None,
        };
        if list.is_none() {
            let msg = format!("`{}` must be a list of texts", self.key_path(key));
            self.problem(key, msg);
        }
        list
    }

    /// An `http(s)` URL with a host and no query or credentials (returned as written).
    pub fn http_url(&mut self, key: &'static str, example: &str) -> Option<String> {
        let raw = self.string(key)?;
        let problem = match url::Url::parse(raw.trim()) {
            Err(e) => Some(format!(
                "`{}` `{raw}` is not a URL: {e}",
                self.key_path(key)
            )),
            Ok(u) if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() => {
                Some(format!(
                    "`{}` must be an http(s) URL such as {example}, got `{raw}`",
                    self.key_path(key)
                ))
            }
            Ok(u) if u.query().is_some() || !u.username().is_empty() || u.password().is_some() => {
                Some(format!(
                    "`{}` must not carry a query or credentials",
                    self.key_path(key)
                ))
            }
            Ok(_) => None,
        };
        match problem {
            Some(msg) => {
                self.problem(key, msg);
                None
            }
            None => Some(raw),
        }
    }

    /// A secret: `key` inline or `file_key` naming a file, never both ([`SecretSource`]). The
    /// file is read now so that an unreadable or empty one is reported with the others.
    pub fn secret(&mut self, key: &'static str, file_key: &'static str) -> Option<SecretSource> {
        let inline = match self.value(key) {
            None => None,
            Some(Value::String(s)) => {
                let s = trim_one_newline(s);
                (!s.trim().is_empty()).then(|| SecretString::from(s.to_string()))
            }
            Some(other) => {
                // Never quote the value: it is a secret.
                let msg = format!(
                    "`{}` must be a text, not {}",
                    self.key_path(key),
                    kind(other)
                );
                self.problem(key, msg);
                None
            }
        };
        let file = self.path(file_key);
        match (inline, file) {
            (Some(_), Some(_)) => {
                let msg = format!(
                    "set `{}` or `{}`, not both",
                    self.key_path(key),
                    self.key_path(file_key)
                );
                self.problem(file_key, msg);
                None
            }
            (Some(s), None) => Some(SecretSource::Inline(s)),
            (None, Some(p)) => match read_secret_file(&p) {
                Ok(_) => Some(SecretSource::File(p)),
                Err(e) => {
                    let msg = format!("`{}`: {e}", self.key_path(file_key));
                    self.problem(file_key, msg);
                    None
                }
            },
            (None, None) => None,
        }
    }

    /// The mapping at `key`, read the same way; hand its problems back with
    /// [`Section::absorb`] (its `finish`).
    pub fn section(&mut self, key: &'static str) -> Section<'a> {
        let path = self.key_path(key);
        let value = self.value(key);
        Section::new(&path, value, self.origins)
    }

    /// Every problem, the unknown keys included (with a "did you mean").
    pub fn finish(mut self) -> Vec<Problem> {
        if let Some(map) = self.map {
            for k in map.keys() {
                if self.known.contains(&k.as_str()) || self.accepted.contains(k) {
                    continue;
                }
                let path = self.key_path(k);
                let hint = match suggest(k, &self.known) {
                    Some(s) => format!(" (did you mean `{s}`?)"),
                    None => format!(" (expected one of: {})", self.known.join(", ")),
                };
                let origin = self.origins.of_key(&path);
                self.problems
                    .push(Problem::new(origin, format!("unknown key `{path}`{hint}")));
            }
        }
        self.problems
    }
}

/// A value's kind, for messages that must not quote it.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "empty",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a text",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// A scalar as it was written, for messages about non-secret keys.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => format!("`{s}`"),
        Value::Number(n) => format!("`{n}`"),
        Value::Bool(b) => format!("`{b}`"),
        other => kind(other).to_string(),
    }
}

#[cfg(test)]
mod tests;

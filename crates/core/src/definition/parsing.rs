//! The validator of one parsed job file: [`Cx`] walks the YAML document, checks every key
//! and value, and collects located errors (all of them, not the first) while it builds the
//! [`JobDefinition`].

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use yaml_serde::Value as Yaml;

use super::marketplace::{self, SECOPS_ONLY_KEYS, job_id_from_stem, valid_id};
use super::model::{
    Catalog, DEFAULT_INTERVAL_SECS, DEFAULT_TIMEOUT, JobDefinition, JobSpec, LoadError,
    LoadOptions, Misfire, Overlap, RunLogMode,
};
use super::params::{self, ParamSpec, ParamType, ParamValue, Parameter, Parameters, RawValue};
use super::{alerts, secrets};
use crate::config::grammar::suggest;
use crate::config::located::{Pos, Positions};
use crate::schedule::{self, Schedule};

pub(super) const TOP_KEYS: &[&str] = &[
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
    "run_logs",
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

/// The merged pass of an instance file (`uses:` + `values:`): where its errors belong.
pub(super) struct InstanceCx {
    pub(super) definition: PathBuf,
    pub(super) def_pos: Positions,
    /// `parameters[i]` of the merged document -> `values.<Name>` of the instance, and whether
    /// the value was written as a plain scalar (no `value:` key under it).
    pub(super) aliases: Vec<(String, String, bool)>,
}

/// The descriptive keys of a job file (see [`Cx::about`]).
struct About {
    name: Option<String>,
    description: String,
    integration: Option<String>,
    creator: Option<String>,
    documentation_link: Option<String>,
    version: f64,
    is_custom: bool,
    enabled: bool,
}

/// The loading context of one file: positions and the errors found so far.
pub(super) struct Cx<'o> {
    pub(super) file: PathBuf,
    pub(super) pos: Positions,
    pub(super) errors: Vec<LoadError>,
    pub(super) fingerprint: std::collections::hash_map::DefaultHasher,
    pub(super) opts: &'o LoadOptions,
    /// Files read besides the job file.
    pub(super) inputs: Vec<PathBuf>,
    /// Warnings (located): they do not stop the job from loading.
    pub(super) warnings: Vec<LoadError>,
    /// Loading a marketplace definition for an instance file: mandatory values may be missing
    /// (the instance gives them) and the implementation's checks wait for the instance.
    pub(super) template: bool,
    /// Loading the merge of an instance file and its definition (see `marketplace`).
    pub(super) instance: Option<InstanceCx>,
}

impl Cx<'_> {
    /// An error about the key at `path`.
    pub(super) fn key_err(&mut self, path: &str, message: impl Into<String>) {
        let message = match self.instance_place(path, message.into(), false) {
            Ok((p, message)) => return self.push(p, message),
            Err(message) => message,
        };
        let p = self.pos.key(path).unwrap_or(Pos { line: 1, column: 1 });
        self.push(p, message);
    }

    /// An error about the value at `path`.
    pub(super) fn val_err(&mut self, path: &str, message: impl Into<String>) {
        let message = match self.instance_place(path, message.into(), true) {
            Ok((p, message)) => return self.push(p, message),
            Err(message) => message,
        };
        let p = self.pos.value(path).unwrap_or(Pos { line: 1, column: 1 });
        self.push(p, message);
    }

    pub(super) fn push(&mut self, p: Pos, message: String) {
        self.errors.push(LoadError {
            file: self.file.clone(),
            line: p.line,
            column: p.column,
            message,
        });
    }

    /// Checks a mapping's keys against `known`, reporting unknown ones with a suggestion.
    pub(super) fn check_keys(&mut self, prefix: &str, map: &yaml_serde::Mapping, known: &[&str]) {
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

    pub(super) fn definition(
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

        // The checks run in the order of the file's usual layout; errors are sorted by
        // position at the end anyway.
        let id = self.job_id(path);
        let (implementation, spec, inferred_script) = self.implementation(path, map, catalog);
        let ignored_keys = self.top_keys(map, spec);
        let about = self.about(map);
        let schedule = self.schedule(map);
        let (timeout, overlap, misfire) = self.run_policy(map);
        let alerts = self.alerts(map);
        let run_logs = self.run_logs(map);
        let parameters = self.parameters(path, map, spec);
        let extra = self.extra(path, map, spec, inferred_script, parameters.as_ref());

        Some(JobDefinition {
            id,
            name: about.name?,
            implementation: implementation?,
            description: about.description,
            integration: about.integration,
            creator: about.creator,
            documentation_link: about.documentation_link,
            version: about.version,
            is_custom: about.is_custom,
            enabled: about.enabled,
            schedule: schedule?,
            timeout: timeout?,
            overlap,
            misfire,
            run_logs,
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

    /// The job id from the file's stem (an error if the stem gives none).
    fn job_id(&mut self, path: &Path) -> String {
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
        id
    }

    /// Which implementation runs the job, its spec, and the script that named it if the file
    /// has no `job:`. Its extra keys decide what else is allowed. Without `job:`, a script of
    /// the file's stem beside it names it (a SecOps marketplace definition).
    fn implementation<'c>(
        &mut self,
        path: &Path,
        map: &yaml_serde::Mapping,
        catalog: &'c dyn Catalog,
    ) -> (Option<String>, Option<&'c dyn JobSpec>, Option<PathBuf>) {
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
        (implementation, spec, inferred_script)
    }

    /// Checks the top-level keys (ours, SecOps', the implementation's); returns the
    /// SecOps-only keys the file carries.
    fn top_keys(&mut self, map: &yaml_serde::Mapping, spec: Option<&dyn JobSpec>) -> Vec<String> {
        let mut known: Vec<&str> = TOP_KEYS.to_vec();
        known.extend_from_slice(SECOPS_ONLY_KEYS);
        if let Some(s) = spec {
            known.extend_from_slice(s.extra_keys());
        }
        if self.instance.is_none() {
            self.check_keys("", map, &known);
        }
        map.keys()
            .filter_map(Yaml::as_str)
            .filter(|k| SECOPS_ONLY_KEYS.contains(k))
            .map(str::to_string)
            .collect()
    }

    /// The descriptive keys: name, description, integration, creator, link, version, flags.
    fn about(&mut self, map: &yaml_serde::Mapping) -> About {
        let name = self.name(map);
        let description = self.description(map);
        let (integration, creator) = self.integration_and_creator(map);
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
        let enabled = self.enabled(map);
        About {
            name,
            description,
            integration,
            creator,
            documentation_link,
            version,
            is_custom,
            enabled,
        }
    }

    fn name(&mut self, map: &yaml_serde::Mapping) -> Option<String> {
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
        name
    }

    fn description(&mut self, map: &yaml_serde::Mapping) -> String {
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
        description
    }

    fn integration_and_creator(
        &mut self,
        map: &yaml_serde::Mapping,
    ) -> (Option<String>, Option<String>) {
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
        (integration, creator)
    }

    /// `enabled`, or its SecOps alias `is_enabled` (not both).
    fn enabled(&mut self, map: &yaml_serde::Mapping) -> bool {
        match (map.contains_key("enabled"), map.contains_key("is_enabled")) {
            (true, true) => {
                self.key_err(
                    "is_enabled",
                    "use either `enabled` or its alias `is_enabled`, not both",
                );
                true
            }
            (false, true) => self.opt_bool(map, "is_enabled").unwrap_or(true),
            _ => self.opt_bool(map, "enabled").unwrap_or(true),
        }
    }

    /// `timeout`, `overlap` and `misfire`, with their defaults.
    fn run_policy(&mut self, map: &yaml_serde::Mapping) -> (Option<Duration>, Overlap, Misfire) {
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
        (timeout, overlap, misfire)
    }

    /// The job's `run_logs` mode, if it sets one.
    fn run_logs(&mut self, map: &yaml_serde::Mapping) -> Option<RunLogMode> {
        let m = self.opt_str(map, "run_logs")?;
        let mode = RunLogMode::parse(&m);
        if mode.is_none() {
            self.val_err(
                "run_logs",
                format!("invalid run_logs `{m}` (expected all, problems or off)"),
            );
        }
        mode
    }

    /// The job's own `alerts:` rules.
    fn alerts(&mut self, map: &yaml_serde::Mapping) -> alerts::JobAlerts {
        match map.get("alerts") {
            None => Default::default(),
            Some(v) => {
                let (a, problems) = alerts::JobAlerts::from_json(&yaml_to_json(v));
                for (p, m) in problems {
                    self.val_err(&p, m);
                }
                a
            }
        }
    }

    /// The implementation's own keys as JSON (with the inferred `script`), checked by the
    /// implementation together with the parameters (not for a template: its instance is).
    fn extra(
        &mut self,
        path: &Path,
        map: &yaml_serde::Mapping,
        spec: Option<&dyn JobSpec>,
        inferred_script: Option<PathBuf>,
        parameters: Option<&Parameters>,
    ) -> serde_json::Map<String, serde_json::Value> {
        let mut extra = serde_json::Map::new();
        let Some(s) = spec else {
            return extra;
        };
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
        if let Some(p) = parameters
            && !self.template
        {
            for fe in s.validate_file(path, p, &extra) {
                let path = self.param_path(map, &fe.path);
                self.val_err(&path, fe.message);
            }
        }
        extra
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
            (Some(s), None) => self.schedule_mapping(s),
        }
    }

    /// The `schedule:` mapping: `every` or `cron`, `timezone`, `jitter`.
    fn schedule_mapping(&mut self, s: &Yaml) -> Option<Schedule> {
        let Some(sm) = s.as_mapping() else {
            self.val_err(
                "schedule",
                "`schedule` must be a mapping with `every` or `cron` \
                 (and optional `timezone`, `jitter`)",
            );
            return None;
        };
        self.check_keys("schedule", sm, SCHEDULE_KEYS);
        let tz = self.timezone(sm);
        let jitter = match sm.get("jitter") {
            None | Some(Yaml::Null) => Some(Duration::ZERO),
            Some(_) => self.duration(sm, "schedule.jitter"),
        };
        let base = self.schedule_base(sm, tz);
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

    /// `schedule.timezone` (UTC when absent).
    fn timezone(&mut self, sm: &yaml_serde::Mapping) -> Option<chrono_tz::Tz> {
        match sm.get("timezone") {
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
        }
    }

    /// `schedule.every` or `schedule.cron` (in `tz`), exactly one of them.
    fn schedule_base(
        &mut self,
        sm: &yaml_serde::Mapping,
        tz: Option<chrono_tz::Tz>,
    ) -> Option<Schedule> {
        match (sm.get("every"), sm.get("cron")) {
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
            let file = FileParam {
                i,
                item,
                job: map.get("job").and_then(Yaml::as_str).unwrap_or("?"),
                base_dir,
            };
            if let Some(p) = self.parameter(&file, &declared, &mut seen) {
                out.push(p);
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

    /// One entry of the file's `parameters:` list (`None`: its errors are reported).
    fn parameter(
        &mut self,
        file: &FileParam<'_>,
        declared: &[ParamSpec],
        seen: &mut BTreeMap<String, usize>,
    ) -> Option<Parameter> {
        let p = format!("parameters[{}]", file.i);
        let Some(m) = file.item.as_mapping() else {
            self.val_err(
                &p,
                "each parameter must be a mapping with `name` and `type`",
            );
            return None;
        };
        self.check_keys(&p, m, PARAM_KEYS);
        let name = self.param_name(&p, m, file.i, seen)?;
        let declared_spec = declared.iter().find(|d| d.name.eq_ignore_ascii_case(&name));
        let ty = self.param_type(&p, m, &name, declared_spec, file.job)?;
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
        let (raw, from) = self.raw_value(&p, m, file.base_dir, declared_spec)?;
        let parameter = |value| Parameter {
            snake_name: params::snake_case(&name),
            name: name.clone(),
            ty,
            mandatory,
            description,
            value,
        };
        // A template's default of the wrong type (SecOps does not check them): a warning,
        // and the value stays text, so it fails only where a job reads it typed.
        if from == Some("default_value")
            && let Err(e) = params::resolve(&name, ty, false, &raw)
        {
            self.warn(&format!("{p}.default_value"), format!("{e}; kept as text"));
            return Some(parameter(ParamValue::Str(
                raw.as_text().unwrap_or_default(),
            )));
        }
        match params::resolve(&name, ty, mandatory && !self.template, &raw) {
            Ok(value) => Some(parameter(value)),
            Err(e) => {
                match from {
                    Some(k) => self.val_err(&format!("{p}.{k}"), e),
                    // No value anywhere: point at the parameter itself.
                    None => self.key_err(&format!("{p}.name"), e),
                }
                None
            }
        }
    }

    /// A parameter's `name`: present, short, printable, not used by an earlier parameter
    /// (case-insensitively; `seen` records it).
    fn param_name(
        &mut self,
        p: &str,
        m: &yaml_serde::Mapping,
        i: usize,
        seen: &mut BTreeMap<String, usize>,
    ) -> Option<String> {
        let name = match m.get("name").and_then(Yaml::as_str) {
            Some(n) if !n.trim().is_empty() => n.trim().to_string(),
            _ => {
                self.key_err(p, "a parameter needs a `name`");
                return None;
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
            return None;
        }
        if let Some(first) = seen.insert(name.to_lowercase(), i) {
            self.val_err(
                &format!("{p}.name"),
                format!("parameter `{name}` is already defined at parameters[{first}]"),
            );
            return None;
        }
        Some(name)
    }

    /// A parameter's `type` (the declared one when the file gives none), which must agree
    /// with the type the implementation `job` declares.
    fn param_type(
        &mut self,
        p: &str,
        m: &yaml_serde::Mapping,
        name: &str,
        declared_spec: Option<&ParamSpec>,
        job: &str,
    ) -> Option<ParamType> {
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
                        return None;
                    }
                }
            }
            None => match declared_spec {
                Some(d) => d.ty,
                None => {
                    self.key_err(p, format!("parameter `{name}` needs a `type`"));
                    return None;
                }
            },
        };
        if let Some(d) = declared_spec
            && !compatible(d.ty, ty)
        {
            self.val_err(
                &format!("{p}.type"),
                format!("parameter `{name}` must have type {} for job `{job}`", d.ty),
            );
            return None;
        }
        Some(ty)
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
            let val = self.value_from_env(p, v)?;
            return Some((RawValue::Str(val), Some("value_from_env")));
        }
        if let Some(v) = m.get("value_from_file").filter(|v| !v.is_null()) {
            let val = self.value_from_file(p, v, base_dir)?;
            return Some((RawValue::Str(val), Some("value_from_file")));
        }
        if let Some(v) = m.get("default_value").filter(|v| !v.is_null()) {
            return Some((yaml_to_raw(v), Some("default_value")));
        }
        let declared_default = declared.and_then(|d| d.default.clone());
        Some((declared_default.unwrap_or(RawValue::Null), None))
    }

    /// The value of the environment variable `value_from_env` names (if the secrets policy
    /// allows it); it counts in the fingerprint.
    fn value_from_env(&mut self, p: &str, v: &Yaml) -> Option<String> {
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
        match std::env::var(var) {
            Ok(val) => {
                val.hash(&mut self.fingerprint);
                Some(val)
            }
            Err(_) => {
                self.val_err(
                    &format!("{p}.value_from_env"),
                    format!("environment variable `{var}` is not set"),
                );
                None
            }
        }
    }

    /// The text of the file `value_from_file` names (relative to the job file, if the secrets
    /// policy allows it), without its trailing newline; it counts in the fingerprint.
    fn value_from_file(&mut self, p: &str, v: &Yaml, base_dir: &Path) -> Option<String> {
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
        let read = secrets::read_regular(&file, secrets::MAX_SECRET_BYTES, self.opts.open)
            .and_then(|b| {
                String::from_utf8(b).map_err(|_| {
                    secrets::ReadError::Io(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "the file is not UTF-8 text",
                    ))
                })
            });
        match read {
            Ok(val) => {
                // A trailing newline is an artefact of how secret files are written.
                let val = val.strip_suffix('\n').unwrap_or(&val);
                let val = val.strip_suffix('\r').unwrap_or(val).to_string();
                val.hash(&mut self.fingerprint);
                Some(val)
            }
            Err(e) => {
                self.val_err(
                    &format!("{p}.value_from_file"),
                    format!("cannot read {}: {e}", file.display()),
                );
                None
            }
        }
    }
}

/// One entry of a file's `parameters:` list, with what checking it needs of the file.
struct FileParam<'a> {
    /// Its index in the list.
    i: usize,
    item: &'a Yaml,
    /// The file's `job:` (for messages).
    job: &'a str,
    /// The job file's folder (`value_from_file` paths are relative to it).
    base_dir: &'a Path,
}

impl Cx<'_> {
    /// A warning at `path` (not in the merged pass of an instance: its template pass already
    /// warned, located in the definition).
    pub(super) fn warn(&mut self, path: &str, message: String) {
        if self.instance.is_some() {
            return;
        }
        let p = self.pos.value(path).unwrap_or(Pos { line: 1, column: 1 });
        self.warnings.push(LoadError {
            file: self.file.clone(),
            line: p.line,
            column: p.column,
            message,
        });
    }

    /// In the merged pass of an instance file: where an error at `path` of the merged
    /// document belongs in the instance file, with a note pointing into the definition when
    /// the instance did not write that part. `Err(message)`: locate it as usual.
    pub(super) fn instance_place(
        &self,
        path: &str,
        message: String,
        value: bool,
    ) -> Result<(Pos, String), String> {
        let Some(inst) = self.instance.as_ref() else {
            return Err(message);
        };
        if path.starts_with("parameters[")
            && let Some(end) = path.find(']').map(|e| e + 1)
        {
            let (prefix, rest) = path.split_at(end);
            if let Some((_, alias, scalar)) = inst.aliases.iter().find(|(p, _, _)| p == prefix) {
                let target = match rest {
                    ".value" | ".name" | "" if *scalar => alias.clone(),
                    ".name" | "" => alias.clone(),
                    r => format!("{alias}{r}"),
                };
                let pos = if value {
                    self.pos.value(&target)
                } else {
                    self.pos.key(&target)
                };
                return Ok((pos.unwrap_or(Pos { line: 1, column: 1 }), message));
            }
        } else if self.pos.key(path).is_some() {
            return Err(message);
        }
        // A part of the definition the instance did not write.
        let at = self
            .pos
            .key("values")
            .or_else(|| self.pos.key("uses"))
            .unwrap_or(Pos { line: 1, column: 1 });
        // A parameter is best named by its `name` line in the definition.
        let def_path = match path.find(']') {
            Some(end) if path.starts_with("parameters[") => format!("{}.name", &path[..=end]),
            _ => path.to_string(),
        };
        let d = inst
            .def_pos
            .key(&def_path)
            .unwrap_or(Pos { line: 1, column: 1 });
        let hint = if message.starts_with("missing mandatory parameter") {
            "; give it under `values:`"
        } else {
            ""
        };
        Ok((
            at,
            format!(
                "{message}{hint} (note: defined at {}:{}:{})",
                inst.definition.display(),
                d.line,
                d.column
            ),
        ))
    }
}

/// A file may declare a string-like type where the implementation wants a csv (SecOps has no
/// csv type, so a SecOps file says `string` for `Tags`), and vice versa.
fn compatible(declared: ParamType, file: ParamType) -> bool {
    declared == file || matches!((declared, file), (ParamType::Csv, ParamType::String))
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

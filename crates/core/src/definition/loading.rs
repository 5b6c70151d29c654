//! Reading job files from disk: a folder (one report of every file's errors, ids and names
//! unique across files), one file, or text as if read from a file. Files are read bounded
//! and checked before the YAML parser runs; the parsed document goes to [`super::parsing`].
//! An instance file (`uses:`) loads the definition it uses here first, as a template, then
//! the two merged (see `marketplace`).

use std::collections::HashMap;
use std::hash::Hash;
use std::path::{Path, PathBuf};

use yaml_serde::Value as Yaml;

use super::marketplace::canonical;
use super::model::{Catalog, JobDefinition, LoadError, LoadOptions, LoadReport};
use super::parsing::{Cx, InstanceCx};
use super::secrets::OpenFile;
use super::{limits, marketplace, params, secrets};
use crate::config::grammar::suggest;
use crate::config::located::{Pos, Positions};

/// True for the file names the daemon loads from `jobs/`.
pub fn is_job_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

/// Loads every `*.yaml` / `*.yml` file of `dir` (not recursive), sorted by name, and checks
/// what spans files: unique ids and unique names. Uses the default [`LoadOptions`] for `dir`,
/// opening files with `open`.
pub fn load_dir(dir: &Path, catalog: &dyn Catalog, open: OpenFile) -> LoadReport {
    load_dir_with(dir, catalog, &LoadOptions::for_jobs_dir(dir, open))
}

/// [`load_dir`] with explicit options (the daemon's `secrets` settings).
///
/// Entries with a job file's name that are not loadable files (folders, FIFOs, sockets,
/// broken or looping symbolic links, names that are not UTF-8) are reported as errors rather
/// than skipped, so `check` and the log say why a job is missing. Nothing here blocks on a
/// FIFO: types are checked, and files are opened non-blocking (with `opts.open`).
pub fn load_dir_with(dir: &Path, catalog: &dyn Catalog, opts: &LoadOptions) -> LoadReport {
    let mut report = LoadReport::default();
    let Some(files) = job_files(dir, opts.open, &mut report) else {
        report.folder_unreadable = true;
        return report;
    };
    let mut inputs = std::collections::BTreeSet::new();
    let mut unique = Unique::default();
    for file in files {
        let (result, read) = load_file_inner(&file, catalog, opts);
        inputs.extend(read);
        match result {
            Ok(def) => unique.add(def, file, &mut report),
            Err(errs) => {
                report.errors.extend(errs);
                report.failed_files.push(file);
            }
        }
    }
    report.manifests = inputs
        .iter()
        .filter(|p| manifest_spec(p, catalog).is_some())
        .cloned()
        .collect();
    report.inputs = inputs.into_iter().collect();
    report
}

/// The job files of `dir`, sorted, without the marketplace definitions its instance files
/// use; entries named like job files that cannot be loaded are errors in `report`. `None`:
/// the folder cannot be listed (the error is in `report`).
fn job_files(dir: &Path, open: OpenFile, report: &mut LoadReport) -> Option<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            report.errors.push(LoadError {
                file: dir.to_path_buf(),
                line: 0,
                column: 0,
                message: format!("cannot read the jobs folder: {e}"),
            });
            return None;
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
                return None;
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
    let used = marketplace::used_definitions(&files, open);
    files.retain(|f| !used.contains(&marketplace::canonical(f)));
    report.errors.sort_by(|a, b| a.file.cmp(&b.file));
    Some(files)
}

/// What spans files: the ids and names taken so far, by the file that took them.
#[derive(Default)]
struct Unique {
    by_id: HashMap<String, PathBuf>,
    by_name: HashMap<String, PathBuf>,
}

impl Unique {
    /// Adds a loaded job to `report`, or its file to the failed ones if an earlier file has
    /// its id or name (located at the file's `name` key).
    fn add(&mut self, def: JobDefinition, file: PathBuf, report: &mut LoadReport) {
        let mut errs = Vec::new();
        if let Some(first) = self.by_id.get(&def.id) {
            errs.push(format!(
                "job id `{}` is already used by {}",
                def.id,
                first.display()
            ));
        }
        if let Some(first) = self.by_name.get(&def.name) {
            errs.push(format!(
                "job name `{}` is already used by {} (names must be unique)",
                def.name,
                first.display()
            ));
        }
        if errs.is_empty() {
            self.by_id.insert(def.id.clone(), file.clone());
            self.by_name.insert(def.name.clone(), file);
            report.warnings.extend(def.warnings.iter().cloned());
            report.jobs.push(def);
            return;
        }
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
        Err(e) if e.kind() != std::io::ErrorKind::NotFound && is_symlink_loop(path) => {
            Some("this is a symbolic link loop; it names no file".into())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Some("this is a symbolic link to a file that does not exist".into())
        }
        Err(e) => Some(format!("cannot read the file: {e}")),
    }
}

/// Whether following the symbolic links from `path` comes back to one it passed already, or
/// never ends (std names no `ELOOP` kind on stable Rust, and the core asks the OS through
/// std only: the links are followed here, one `readlink` at a time, as the kernel would, up
/// to its 40 hops).
fn is_symlink_loop(path: &Path) -> bool {
    const MAX_HOPS: usize = 40;
    let mut seen = std::collections::HashSet::new();
    let mut at = path.to_path_buf();
    for _ in 0..MAX_HOPS {
        let Ok(target) = std::fs::read_link(&at) else {
            return false;
        };
        at = at.parent().unwrap_or(Path::new("/")).join(target);
        if !seen.insert(at.clone()) {
            return true;
        }
    }
    true
}

/// Loads one job file, with the default [`LoadOptions`] for its folder (opening files with
/// `open`).
pub fn load_file(
    path: &Path,
    catalog: &dyn Catalog,
    open: OpenFile,
) -> Result<JobDefinition, Vec<LoadError>> {
    let dir = path.parent().unwrap_or(Path::new("."));
    load_file_with(path, catalog, &LoadOptions::for_jobs_dir(dir, open))
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
    match read_job_file(path, opts.open) {
        Ok(text) => load_text(path, &text, catalog, opts),
        Err(e) => (Err(vec![e]), Vec::new()),
    }
}

/// Reads a job file: regular files only, at most [`limits::MAX_FILE_BYTES`], UTF-8. Each
/// refusal is located (the limit at the byte where it is crossed, bad UTF-8 at its byte).
pub(super) fn read_job_file(path: &Path, open: OpenFile) -> Result<String, LoadError> {
    let max = limits::MAX_FILE_BYTES as u64;
    let bytes = secrets::read_regular_prefix(path, max, open)
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
/// default [`LoadOptions`] for its folder (secret files opened with `open`).
pub fn load_str(
    path: &Path,
    text: &str,
    catalog: &dyn Catalog,
    open: OpenFile,
) -> Result<JobDefinition, Vec<LoadError>> {
    let dir = path.parent().unwrap_or(Path::new("."));
    load_str_with(path, text, catalog, &LoadOptions::for_jobs_dir(dir, open))
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
pub(super) fn load_text_as(
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
    let def = cx.document(path, &doc, catalog);
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

impl Cx<'_> {
    /// A job file's document: an instance file (`uses:`, see `marketplace`) or a definition.
    fn document(
        &mut self,
        path: &Path,
        doc: &Yaml,
        catalog: &dyn Catalog,
    ) -> Option<JobDefinition> {
        if let Some(map) = doc.as_mapping()
            && map.contains_key("uses")
        {
            if self.template {
                self.key_err(
                    "uses",
                    "a definition used by an instance file cannot itself `uses:` another",
                );
                return None;
            }
            return self.instance_file(path, map, catalog);
        }
        self.definition(path, doc, catalog)
    }
}

const INSTANCE_KEYS: &[&str] = &[
    "uses",
    "name",
    "enabled",
    "is_enabled",
    "schedule",
    "run_interval_in_seconds",
    "timeout",
    "overlap",
    "misfire",
    "values",
];
const VALUE_KEYS: &[&str] = &["value", "value_from_env", "value_from_file"];

impl Cx<'_> {
    /// Loads an instance file (`uses:`): see the module documentation.
    pub(super) fn instance_file(
        &mut self,
        path: &Path,
        map: &yaml_serde::Mapping,
        catalog: &dyn Catalog,
    ) -> Option<JobDefinition> {
        let uses = match map.get("uses") {
            Some(Yaml::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
            _ => {
                self.val_err(
                    "uses",
                    "`uses` must be the path of a SecOps job definition, relative to this file",
                );
                return None;
            }
        };
        let def_path = path.parent().unwrap_or(Path::new(".")).join(&uses);
        let text = match read_job_file(&def_path, self.opts.open) {
            Ok(t) => t,
            Err(e) => {
                self.val_err("uses", format!("cannot use `{uses}`: {e}"));
                return None;
            }
        };
        // The definition is part of this job: a change to it is a change of the job.
        self.inputs.push(canonical(&def_path));
        text.hash(&mut self.fingerprint);

        // An app's manifest is turned into a definition document by the implementation that
        // claims its file name; the document is then loaded like a marketplace definition.
        let manifest = manifest_spec(&def_path, catalog);
        let def_text = match manifest {
            Some(spec) => match spec.manifest_definition(&canonical(&def_path), &text) {
                Ok(doc) => yaml_serde::to_string(&doc).unwrap_or_default(),
                Err(problems) => {
                    for m in problems {
                        self.errors.push(file_error(&def_path, m));
                    }
                    return None;
                }
            },
            None => text.clone(),
        };
        let (template, inputs) = load_text_as(&def_path, &def_text, catalog, self.opts, true);
        self.inputs.extend(inputs);
        let template = match template {
            Ok(t) => t,
            Err(mut errs) => {
                if manifest.is_some() {
                    // Located in the generated document, not in the manifest: whole-file.
                    for e in &mut errs {
                        (e.line, e.column) = (0, 0);
                    }
                }
                self.errors.extend(errs);
                return None;
            }
        };

        let mut known: Vec<&str> = INSTANCE_KEYS.to_vec();
        if let Some(s) = catalog.spec(&template.implementation) {
            known.extend_from_slice(s.extra_keys());
        }
        self.check_keys("", map, &known);

        let mut merged = merge_instance(map, &def_text, &template, &def_path)?;

        let secrets_only = catalog
            .spec(&template.implementation)
            .is_some_and(|s| s.passwords_from_secrets_only());
        let aliases = self.apply_values(map, &mut merged, secrets_only);
        self.instance = Some(InstanceCx {
            definition: canonical(&def_path),
            def_pos: Positions::scan(&text),
            aliases,
        });
        let mut def = self.definition(path, &Yaml::Mapping(merged), catalog)?;
        def.uses = Some(canonical(&def_path));
        def.ignored_keys = template.ignored_keys;
        def.warnings = template.warnings;
        Some(def)
    }

    /// Writes the instance's `values:` into the merged parameters; returns the aliases that
    /// locate their errors in the instance file.
    fn apply_values(
        &mut self,
        map: &yaml_serde::Mapping,
        merged: &mut yaml_serde::Mapping,
        secrets_only: bool,
    ) -> Vec<(String, String, bool)> {
        let mut aliases = Vec::new();
        let values = match map.get("values") {
            None | Some(Yaml::Null) => return aliases,
            Some(Yaml::Mapping(v)) => v.clone(),
            Some(_) => {
                self.val_err(
                    "values",
                    "`values` must be a mapping of parameter names to values",
                );
                return aliases;
            }
        };
        let names: Vec<String> = merged
            .get("parameters")
            .and_then(Yaml::as_sequence)
            .into_iter()
            .flatten()
            .map(|p| {
                p.get("name")
                    .and_then(Yaml::as_str)
                    .unwrap_or("")
                    .trim()
                    .to_string()
            })
            .collect();
        for (k, v) in &values {
            let Some(name) = k.as_str() else {
                self.key_err("values", "parameter names must be strings");
                continue;
            };
            let at = format!("values.{name}");
            let Some(i) = names.iter().position(|n| {
                n.eq_ignore_ascii_case(name.trim()) || params::snake_case(n) == name.trim()
            }) else {
                let known: Vec<&str> = names.iter().map(String::as_str).collect();
                let hint = suggest(name, &known)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_else(|| format!(" (the definition has: {})", known.join(", ")));
                self.key_err(&at, format!("unknown parameter `{name}`{hint}"));
                continue;
            };
            let Some(item) = merged
                .get_mut("parameters")
                .and_then(Yaml::as_sequence_mut)
                .and_then(|s| s.get_mut(i))
                .and_then(Yaml::as_mapping_mut)
            else {
                continue;
            };
            for key in VALUE_KEYS {
                item.remove(*key);
            }
            let ty = item
                .get("type")
                .and_then(Yaml::as_str)
                .and_then(|t| params::ParamType::parse(t).ok());
            let inline = match v {
                Yaml::Mapping(m) => m.get("value").is_some_and(|x| !x.is_null()),
                Yaml::Null => false,
                _ => true,
            };
            if secrets_only && inline && ty == Some(params::ParamType::Password) {
                self.key_err(
                    &at,
                    format!(
                        "`{name}` is a password: give it with `value_from_env` or \
                         `value_from_file`, not written in the file"
                    ),
                );
            }
            // A list for a csv parameter: its items, as the comma-separated text csv reads.
            let v = match (v, ty) {
                (Yaml::Sequence(items), Some(params::ParamType::Csv))
                    if items
                        .iter()
                        .all(|i| !matches!(i, Yaml::Sequence(_) | Yaml::Mapping(_))) =>
                {
                    let text: Vec<String> = items
                        .iter()
                        .map(|i| match i {
                            Yaml::String(s) => s.clone(),
                            other => yaml_serde::to_string(other)
                                .unwrap_or_default()
                                .trim()
                                .to_string(),
                        })
                        .collect();
                    Yaml::String(text.join(","))
                }
                (v, _) => v.clone(),
            };
            let scalar = match &v {
                Yaml::Mapping(m) => {
                    self.check_keys(&at, m, VALUE_KEYS);
                    for key in VALUE_KEYS {
                        if let Some(x) = m.get(*key) {
                            item.insert((*key).into(), x.clone());
                        }
                    }
                    false
                }
                other => {
                    item.insert("value".into(), other.clone());
                    true
                }
            };
            aliases.push((format!("parameters[{i}]"), at, scalar));
        }
        aliases
    }
}

/// The implementation that reads `path` as its manifest (by file name), if one does.
fn manifest_spec<'c>(path: &Path, catalog: &'c dyn Catalog) -> Option<&'c dyn super::JobSpec> {
    let name = path.file_name()?.to_str()?;
    catalog.ids().into_iter().find_map(|id| {
        let spec = catalog.spec(&id)?;
        (spec.manifest_name() == Some(name)).then_some(spec)
    })
}

/// The definition's document with the instance's keys over it (`values:` apart), `job:` set to
/// the template's implementation and its script's path made absolute.
fn merge_instance(
    map: &yaml_serde::Mapping,
    text: &str,
    template: &JobDefinition,
    def_path: &Path,
) -> Option<yaml_serde::Mapping> {
    // Parsed again as it was loaded just now: cannot fail.
    let def_doc: Yaml = yaml_serde::from_str(text).ok()?;
    let mut merged = def_doc.as_mapping()?.clone();
    if map.contains_key("schedule") || map.contains_key("run_interval_in_seconds") {
        merged.remove("schedule");
        merged.remove("run_interval_in_seconds");
    }
    if map.contains_key("enabled") || map.contains_key("is_enabled") {
        merged.remove("enabled");
        merged.remove("is_enabled");
    }
    for (k, v) in map {
        if !matches!(k.as_str(), Some("uses" | "values")) {
            merged.insert(k.clone(), v.clone());
        }
    }
    merged.insert("job".into(), Yaml::String(template.implementation.clone()));
    // The script stays beside the definition, wherever the instance is.
    if let Some(script) = template.extra.get("script").and_then(|v| v.as_str())
        && !map.contains_key("script")
    {
        let dir = def_path.parent().unwrap_or(Path::new("."));
        let full = canonical(&dir.join(script));
        merged.insert("script".into(), Yaml::String(full.display().to_string()));
    }
    Some(merged)
}

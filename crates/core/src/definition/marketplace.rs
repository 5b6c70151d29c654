//! SecOps marketplace definitions as they are, and the instance files that use them.
//!
//! A marketplace job is `jobs/<Name>.yaml` + `jobs/<Name>.py` (CamelCase or spaced names, no
//! `job:` key, SecOps-only keys). Such a definition is a template: its mandatory parameters
//! usually have no value. An instance file (`uses: ../integrations/tools/jobs/X.yaml`) gives
//! what a SecOps job instance gives — `schedule` (or `run_interval_in_seconds`), `enabled`,
//! `timeout`, `values:` — so the vendored files stay unmodified.
//!
//! Loading an instance is two passes over the ordinary loader: the definition alone in
//! template mode (its own errors located in its own file), then the definition merged with the
//! instance's keys, located in the instance file. A merged parameter path the instance did not
//! write (a missing mandatory value) is reported against the instance, with the definition's
//! location as a note.
//!
//! This module holds the names and the file rules (ids from file names, the script beside a
//! definition, which definitions a folder's instance files use); the two passes are
//! `loading`'s (`Cx::instance_file`), and locating a merged error is `parsing`'s
//! (`Cx::instance_place`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::model::Catalog;
use super::secrets::OpenFile;

/// Keys SecOps exports carry that soarjobd has no use for: accepted, and listed by
/// `check --verbose`. (Action/connector-shaped metadata some job files also carry.)
pub const SECOPS_ONLY_KEYS: &[&str] = &[
    "default_result_value",
    "dynamic_results_metadata",
    "script_result_name",
    "simulation_data_json",
    "is_async",
    "async_polling_interval_seconds",
    "async_total_timeout_seconds",
    "script_timeout",
    "python_version",
    "ai_generated",
    "synthetic",
    "job_definition_id",
    "identifier",
];

/// The keys an instance file may have (besides its implementation's own keys).
/// The job id a file name gives: today's ids (`[a-z0-9][a-z0-9_-]*`) unchanged; otherwise
/// lower-case, camel-case boundaries split, runs of other characters as one `-`:
/// `CloseCasesBasedOnSearch` -> `close-cases-based-on-search`, `DRP Deduplication Job` ->
/// `drp-deduplication-job`. Empty when the name has no letter or digit.
pub fn job_id_from_stem(stem: &str) -> String {
    if valid_id(stem) {
        return stem.to_string();
    }
    let chars: Vec<char> = stem.chars().collect();
    let mut out = String::new();
    let mut gap = false;
    for (i, &c) in chars.iter().enumerate() {
        if !(c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            gap = true;
            continue;
        }
        let prev = i.checked_sub(1).map(|j| chars[j]);
        let next = chars.get(i + 1).copied();
        let boundary = c.is_ascii_uppercase()
            && match prev {
                Some(p) if p.is_ascii_lowercase() || p.is_ascii_digit() => true,
                // `HTTPSync`: the last capital of an acronym starts the next word.
                Some(p) if p.is_ascii_uppercase() => next.is_some_and(|n| n.is_ascii_lowercase()),
                _ => false,
            };
        if (gap || boundary) && !out.is_empty() && !out.ends_with(['-', '_']) {
            out.push('-');
        }
        gap = false;
        out.push(c.to_ascii_lowercase());
    }
    out.trim_matches(|c| c == '-' || c == '_').to_string()
}

/// `path` resolved through symbolic links where it exists (so two spellings compare equal).
pub(super) fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

/// The definitions the instance files among `files` use (canonical paths). A light line scan
/// for a top-level `uses:` (no YAML parse: the full load parses and checks each file later).
pub(super) fn used_definitions(files: &[PathBuf], open: OpenFile) -> HashSet<PathBuf> {
    let mut used = HashSet::new();
    for f in files {
        let Ok(bytes) =
            super::secrets::read_regular_prefix(f, super::limits::MAX_FILE_BYTES as u64, open)
        else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("uses:") {
                let v = rest.split(" #").next().unwrap_or("").trim();
                let v = v.trim_matches(|c| c == '"' || c == '\'');
                if !v.is_empty() {
                    let base = f.parent().unwrap_or(Path::new("."));
                    used.insert(canonical(&base.join(v)));
                }
            }
        }
    }
    used
}

/// The implementation and script for a definition without `job:`: the first implementation
/// (in catalog order) whose script extension names a file of the definition's stem beside it.
pub(super) fn script_beside(path: &Path, catalog: &dyn Catalog) -> Option<(String, PathBuf)> {
    catalog.ids().into_iter().find_map(|id| {
        let ext = catalog.spec(&id)?.script_extension()?;
        let script = path.with_extension(ext);
        script.is_file().then(|| (id, canonical(&script)))
    })
}

/// What a file without `job:` and without a script beside it is told.
pub(super) fn missing_job_message(path: &Path, catalog: &dyn Catalog) -> String {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let scripts: Vec<String> = catalog
        .ids()
        .into_iter()
        .filter_map(|id| {
            let ext = catalog.spec(&id)?.script_extension()?;
            Some(format!(
                "script `{stem}.{ext}` beside this file to run as a `{id}` job"
            ))
        })
        .collect();
    if scripts.is_empty() {
        "missing required key `job`".into()
    } else {
        format!(
            "missing required key `job` (the implementation to run), and there is no {}",
            scripts.join(" nor ")
        )
    }
}

/// A job id: lowercase letters, digits, `_` and `-`, starting with a letter or digit.
pub(super) fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::job_id_from_stem as id;
    use crate::definition::tests::{load_dir, load_file};
    use crate::definition::{Catalog, FieldError, JobSpec, ParamValue, Parameters};

    #[test]
    fn ids_from_file_names() {
        assert_eq!(id("CloseCasesBasedOnSearch"), "close-cases-based-on-search");
        assert_eq!(id("DRP Deduplication Job"), "drp-deduplication-job");
        assert_eq!(id("HTTPSyncJob"), "http-sync-job");
        assert_eq!(id("Tag Untouched Cases"), "tag-untouched-cases");
        assert_eq!(id("sync_closed_incidents"), "sync_closed_incidents");
        assert_eq!(id("nightly-report"), "nightly-report");
        assert_eq!(id("Sync  (v2)"), "sync-v2");
        assert_eq!(id("_Hidden"), "hidden");
        assert_eq!(id("Sync2Cases"), "sync2-cases");
        assert_eq!(id("Émoji"), "moji");
        assert_eq!(id("!!!"), "");
    }

    /// A catalog with one script-running implementation, as `secops-script` is.
    struct Scripts;
    struct ScriptSpec;
    impl JobSpec for ScriptSpec {
        fn extra_keys(&self) -> &'static [&'static str] {
            &["script", "python"]
        }
        fn script_extension(&self) -> Option<&'static str> {
            Some("py")
        }
        fn validate(
            &self,
            _p: &Parameters,
            extra: &serde_json::Map<String, serde_json::Value>,
        ) -> Vec<FieldError> {
            match extra.get("script").and_then(|s| s.as_str()) {
                Some(s) if Path::new(s).is_file() => Vec::new(),
                _ => vec![FieldError::new("script", "no script")],
            }
        }
    }
    impl Catalog for Scripts {
        fn ids(&self) -> Vec<String> {
            vec!["run-script".into()]
        }
        fn spec(&self, id: &str) -> Option<&dyn JobSpec> {
            (id == "run-script").then_some(&ScriptSpec as &dyn JobSpec)
        }
    }

    const CLOSE_CASES: &str = "\
name: Close Cases Based On Search
integration: Google Chronicle
creator: Admin
description: Closes cases a search finds.
default_result_value: ''
script_result_name: is_success
run_interval_in_seconds: 900
parameters:
-   name: Search Query
    type: string
    default_value: ''
    is_mandatory: true
    description: The query.
-   name: Close Comment
    type: string
    default_value: Closed by job
    is_mandatory: false
    description: The comment.
-   name: Timezone String
    type: boolean
    default_value: UTC
    is_mandatory: false
    description: Declared boolean, a string in practice.
";

    fn vendored(root: &Path) -> std::path::PathBuf {
        let jobs = root.join("integrations/tools/jobs");
        std::fs::create_dir_all(&jobs).unwrap();
        std::fs::write(jobs.join("CloseCasesBasedOnSearch.yaml"), CLOSE_CASES).unwrap();
        std::fs::write(jobs.join("CloseCasesBasedOnSearch.py"), "print('hi')\n").unwrap();
        std::fs::create_dir_all(root.join("jobs")).unwrap();
        jobs.join("CloseCasesBasedOnSearch.yaml")
    }

    #[test]
    fn an_instance_file_uses_a_vendored_definition() {
        let tmp = tempfile::tempdir().unwrap();
        let def_path = vendored(tmp.path());
        std::fs::write(
            tmp.path().join("jobs/close-cases.yaml"),
            "uses: ../integrations/tools/jobs/CloseCasesBasedOnSearch.yaml\n\
             schedule: {every: 1h}\ntimeout: 5m\nvalues:\n  Search Query: 'status:open'\n",
        )
        .unwrap();
        let report = load_dir(&tmp.path().join("jobs"), &Scripts);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let d = &report.jobs[0];
        assert_eq!(d.id, "close-cases");
        assert_eq!(d.name, "Close Cases Based On Search");
        assert_eq!(d.implementation, "run-script");
        assert_eq!(d.timeout, std::time::Duration::from_secs(300));
        assert_eq!(d.schedule.describe(), "every 1h");
        assert_eq!(
            d.parameters.str("Search Query").unwrap(),
            Some("status:open")
        );
        assert_eq!(
            d.parameters.str("Close Comment").unwrap(),
            Some("Closed by job")
        );
        // The mistyped default is text: a warning in the definition, an error only when read
        // as the boolean it claims to be.
        assert!(matches!(
            &d.parameters.get("Timezone String").unwrap().value,
            ParamValue::Str(s) if s == "UTC"
        ));
        assert!(d.parameters.bool("Timezone String").is_err());
        assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
        assert!(
            report.warnings[0]
                .file
                .ends_with("CloseCasesBasedOnSearch.yaml")
        );
        assert_eq!(report.warnings[0].line, 21, "{}", report.warnings[0]);
        assert_eq!(
            d.ignored_keys,
            ["default_result_value", "script_result_name"]
        );
        let script = d.extra["script"].as_str().unwrap();
        assert!(script.ends_with("integrations/tools/jobs/CloseCasesBasedOnSearch.py"));
        // A change of the definition is a change of the job (reload).
        let canon = def_path.canonicalize().unwrap();
        assert!(report.inputs.contains(&canon), "{:?}", report.inputs);
    }

    #[test]
    fn a_change_of_the_used_definition_changes_the_job() {
        let tmp = tempfile::tempdir().unwrap();
        let def = vendored(tmp.path());
        std::fs::write(
            tmp.path().join("jobs/close-cases.yaml"),
            "uses: ../integrations/tools/jobs/CloseCasesBasedOnSearch.yaml\n\
             values: {Search Query: q}\n",
        )
        .unwrap();
        let jobs = tmp.path().join("jobs");
        let before = load_dir(&jobs, &Scripts).jobs[0].fingerprint;
        assert_eq!(load_dir(&jobs, &Scripts).jobs[0].fingerprint, before);
        std::fs::write(&def, CLOSE_CASES.replace("Closed by job", "Closed")).unwrap();
        let after = load_dir(&jobs, &Scripts);
        assert_ne!(
            after.jobs[0].fingerprint, before,
            "a reload would miss the change"
        );
        assert_eq!(
            after.jobs[0].parameters.str("Close Comment").unwrap(),
            Some("Closed")
        );
    }

    #[test]
    fn a_missing_mandatory_value_is_reported_against_the_instance() {
        let tmp = tempfile::tempdir().unwrap();
        vendored(tmp.path());
        let inst = tmp.path().join("jobs/close-cases.yaml");
        std::fs::write(
            &inst,
            "# instance\nuses: ../integrations/tools/jobs/CloseCasesBasedOnSearch.yaml\n\
             values:\n  Close Coment: x\n",
        )
        .unwrap();
        let errs = load_file(&inst, &Scripts).unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(errs.len(), 2, "{text:#?}");
        assert!(errs.iter().all(|e| e.file == inst), "{text:#?}");
        let unknown = text
            .iter()
            .find(|t| t.contains("unknown parameter"))
            .unwrap();
        assert!(unknown.contains(":4:3: ") && unknown.contains("did you mean `Close Comment`"));
        let missing = text.iter().find(|t| t.contains("Search Query")).unwrap();
        assert!(missing.contains("missing mandatory parameter"), "{missing}");
        assert!(
            missing.contains("CloseCasesBasedOnSearch.yaml:9:5"),
            "the note points at the definition: {missing}"
        );
    }

    #[test]
    fn definitions_beside_their_instances_are_templates_and_job_is_inferred() {
        let tmp = tempfile::tempdir().unwrap();
        let jobs = tmp.path();
        std::fs::write(jobs.join("DRP Deduplication Job.yaml"), CLOSE_CASES).unwrap();
        std::fs::write(jobs.join("DRP Deduplication Job.py"), "").unwrap();
        std::fs::write(
            jobs.join("Lonely.yaml"),
            CLOSE_CASES.replace("Close Cases", "L"),
        )
        .unwrap();
        std::fs::write(
            jobs.join("dedup.yaml"),
            "uses: DRP Deduplication Job.yaml\nvalues: {Search Query: x}\n",
        )
        .unwrap();
        let report = load_dir(jobs, &Scripts);
        let ids: Vec<&str> = report.jobs.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, ["dedup"], "{:?}", report.errors);
        assert!(
            report
                .errors
                .iter()
                .all(|e| e.file.ends_with("Lonely.yaml"))
        );
        let e = &report.errors[0];
        assert!(
            e.message.contains("missing required key `job`")
                && e.message.contains(
                    "no script `Lonely.py` beside this file to run as a `run-script` job"
                ),
            "{e}"
        );
    }

    #[test]
    fn a_definition_loaded_directly_needs_its_mandatory_values_and_ids_must_differ() {
        let tmp = tempfile::tempdir().unwrap();
        let jobs = tmp.path();
        let filled = CLOSE_CASES.replacen("default_value: ''", "default_value: 'q'", 1);
        std::fs::write(jobs.join("CloseCases.yaml"), &filled).unwrap();
        std::fs::write(jobs.join("CloseCases.py"), "").unwrap();
        std::fs::write(
            jobs.join("close cases.yml"),
            filled.replace("Close Cases B", "B"),
        )
        .unwrap();
        std::fs::write(jobs.join("close cases.py"), "").unwrap();
        let report = load_dir(jobs, &Scripts);
        assert_eq!(report.jobs.len(), 1, "{:?}", report.errors);
        assert_eq!(report.jobs[0].id, "close-cases");
        assert_eq!(report.errors.len(), 1);
        assert!(
            report.errors[0]
                .message
                .contains("job id `close-cases` is already used")
        );
    }
}

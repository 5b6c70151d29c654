use super::*;
use secrets::test_open;

// The loader with its default options, opening files as the daemon does (non-blocking): these
// names shadow the public ones, which take the opener as an argument.
pub(super) fn load_dir(dir: &Path, catalog: &dyn Catalog) -> LoadReport {
    super::load_dir(dir, catalog, test_open)
}
pub(super) fn load_file(
    path: &Path,
    catalog: &dyn Catalog,
) -> Result<JobDefinition, Vec<LoadError>> {
    super::load_file(path, catalog, test_open)
}
pub(super) fn load_str(
    path: &Path,
    text: &str,
    catalog: &dyn Catalog,
) -> Result<JobDefinition, Vec<LoadError>> {
    super::load_str(path, text, catalog, test_open)
}

/// A catalog with one implementation that declares parameters and an extra key, so the loader
/// is tested without any concrete job.
pub(super) struct TestCatalog;

struct Echo;

impl JobSpec for Echo {
    fn parameters(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::new("Tags", ParamType::Csv).mandatory(),
            ParamSpec::new("Max Hours Backwards", ParamType::Integer).default_value("24"),
        ]
    }
    fn extra_keys(&self) -> &'static [&'static str] {
        &["command"]
    }
    fn validate(
        &self,
        params: &Parameters,
        extra: &serde_json::Map<String, serde_json::Value>,
    ) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if params
            .int("Max Hours Backwards")
            .ok()
            .flatten()
            .unwrap_or(1)
            < 1
        {
            errs.push(FieldError::new(
                "parameters.Max Hours Backwards",
                "must be at least 1",
            ));
        }
        if let Some(c) = extra.get("command")
            && !c.is_array()
        {
            errs.push(FieldError::new("command", "`command` must be a list"));
        }
        errs
    }
}

impl Catalog for TestCatalog {
    fn ids(&self) -> Vec<String> {
        vec!["echo".into()]
    }
    fn spec(&self, id: &str) -> Option<&dyn JobSpec> {
        (id == "echo").then_some(&Echo as &dyn JobSpec)
    }
}

fn load(text: &str) -> Result<JobDefinition, Vec<LoadError>> {
    load_str(Path::new("jobs/sample-job.yaml"), text, &TestCatalog)
}

fn errors(text: &str) -> Vec<String> {
    load(text)
        .unwrap_err()
        .iter()
        .map(|e| format!("{}:{}: {}", e.line, e.column, e.message))
        .collect()
}

const GOOD: &str = "\
name: Sample job
job: echo
description: Says hello
integration: SecOps
creator: Admin
is_enabled: false
schedule:
  cron: \"0 */5 * * 1-5\"
  timezone: Europe/Berlin
  jitter: 30s
timeout: 10m
overlap: replace
misfire: skip
parameters:
  - name: Tags
    type: string
    default_value: Job Comment
    is_mandatory: true
    description: Case tags
    value: Phishing, Malware
  - name: Api Key
    type: password
    value: hunter2
command: [\"/bin/echo\"]
";

#[test]
fn a_full_definition_loads() {
    let d = load(GOOD).unwrap();
    assert_eq!(d.id, "sample-job");
    assert_eq!(d.name, "Sample job");
    assert_eq!(d.implementation, "echo");
    assert!(!d.enabled);
    assert_eq!(d.timeout, Duration::from_secs(600));
    assert_eq!(d.overlap, Overlap::Replace);
    assert_eq!(d.misfire, Misfire::Skip);
    assert_eq!(d.schedule.jitter(), Duration::from_secs(30));
    // `Tags` is declared csv by the implementation; the SecOps file says string: split anyway.
    assert_eq!(
        d.parameters.list("tags").unwrap(),
        vec!["Phishing", "Malware"]
    );
    // Declared but absent: the implementation's default.
    assert_eq!(d.parameters.int("max_hours_backwards").unwrap(), Some(24));
    assert!(
        !format!("{d:?}").contains("hunter2"),
        "password leaked into Debug"
    );
    assert_eq!(d.extra["command"], serde_json::json!(["/bin/echo"]));
}

#[test]
fn secops_interval_form_and_defaults() {
    let d = load("name: X\njob: echo\nrun_interval_in_seconds: 900\nparameters:\n  - {name: Tags, type: csv, value: a}\n").unwrap();
    assert_eq!(
        d.schedule.describe(),
        Schedule::every(Duration::from_secs(900))
            .unwrap()
            .describe()
    );
    assert!(d.enabled);
    assert_eq!(d.overlap, Overlap::Skip);
    assert_eq!(d.misfire, Misfire::RunOnce);
}

#[test]
fn every_error_is_reported_with_its_position() {
    let text = "\
name: X
job: echo
shedule:
  every: 15m
timeout: forever
parameters:
  - name: Tags
    type: csv
  - name: Max Hours Backwards
    type: integer
    value: abc
  - name: Extra
    type: colour
command: /bin/echo
";
    let errs = errors(text);
    assert_eq!(errs.len(), 5, "{errs:?}");
    assert_eq!(
        errs[0],
        "3:1: unknown key `shedule` (did you mean `schedule`?)"
    );
    assert!(
        errs[1].starts_with("5:10: invalid duration `forever`"),
        "{errs:?}"
    );
    assert_eq!(errs[2], "7:5: missing mandatory parameter Tags");
    assert_eq!(
        errs[3],
        "11:12: Invalid parameter \"Max Hours Backwards\". The value must be an integer. Wrong value provided: abc"
    );
    assert!(
        errs[4].starts_with("13:11: unknown parameter type `colour`"),
        "{errs:?}"
    );
    assert!(errs[1].contains("forever"), "{errs:?}");
}

#[test]
fn implementation_validation_is_located() {
    let errs = errors(
        "name: X\njob: echo\nparameters:\n  - name: Tags\n    type: csv\n    value: a\n  - name: Max Hours Backwards\n    type: integer\n    value: 0\ncommand: /bin/echo\n",
    );
    assert_eq!(
        errs,
        vec![
            "9:12: must be at least 1".to_string(),
            "10:10: `command` must be a list".to_string()
        ]
    );
}

#[test]
fn unknown_implementation_lists_the_known_ones() {
    let errs = errors("name: X\njob: nope\n");
    assert_eq!(
        errs,
        vec!["2:6: unknown job implementation `nope` (known: echo)"]
    );
}

#[test]
fn schedule_errors() {
    let errs = errors(
        "name: X\njob: echo\nschedule:\n  cron: \"61 * * * *\"\n  timezone: Mars/Olympus\nparameters: [{name: Tags, type: csv, value: a}]\n",
    );
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("5:13: unknown time zone `Mars/Olympus`"),
        "{errs:?}"
    );
    let errs = errors(
        "name: X\njob: echo\nschedule:\n  cron: \"61 * * * *\"\nparameters: [{name: Tags, type: csv, value: a}]\n",
    );
    assert!(
        errs[0].starts_with("4:9: invalid cron expression"),
        "{errs:?}"
    );
    let errs = errors(
        "name: X\njob: echo\nschedule: {every: 1m}\nrun_interval_in_seconds: 60\nparameters: [{name: Tags, type: csv, value: a}]\n",
    );
    assert_eq!(
        errs,
        vec!["4:1: use either `schedule` or `run_interval_in_seconds`, not both"]
    );
}

#[test]
fn yaml_syntax_errors_are_located() {
    let e = load("name: X\njob: [unclosed\n").unwrap_err();
    assert_eq!(e.len(), 1);
    assert!(e[0].message.starts_with("invalid YAML"), "{}", e[0]);
    assert!(e[0].line >= 2, "{}", e[0]);
}

#[test]
fn strict_yaml_12_booleans() {
    // `yes` is a string in YAML 1.2, so it is not a boolean.
    let errs = errors(
        "name: X\njob: echo\nenabled: yes\nparameters: [{name: Tags, type: csv, value: a}]\n",
    );
    assert_eq!(errs, vec!["3:10: `enabled` must be true or false"]);
}

#[test]
fn file_names_give_ids_and_names_without_letters_are_rejected() {
    // Marketplace file names (spaces, CamelCase) give a derived id (issue 12)...
    let body = "name: X\njob: echo\nparameters: [{name: Tags, type: csv, value: a}]\n";
    let d = load_str(Path::new("jobs/Bad Name.yaml"), body, &TestCatalog).unwrap();
    assert_eq!(d.id, "bad-name");
    let d = load_str(
        Path::new("jobs/CloseCasesBasedOnSearch.yaml"),
        body,
        &TestCatalog,
    )
    .unwrap();
    assert_eq!(d.id, "close-cases-based-on-search");
    // ...today's ids are unchanged...
    let d = load_str(Path::new("jobs/nightly_sync-2.yaml"), body, &TestCatalog).unwrap();
    assert_eq!(d.id, "nightly_sync-2");
    // ...and a name with no letter or digit is still an error.
    let e = load_str(Path::new("jobs/!!!.yaml"), body, &TestCatalog).unwrap_err();
    assert!(e[0].message.contains("gives no job id"), "{}", e[0]);
}

/// A policy that allows the test's variables (`value_from_env` is refused by default).
fn allowing(dir: &Path, vars: &[&str]) -> LoadOptions {
    let mut o = LoadOptions::for_jobs_dir(dir, test_open);
    o.secrets.env_allow = vars.iter().map(|v| v.to_string()).collect();
    o
}

#[test]
fn values_from_env_and_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret.txt"), "from-file\n").unwrap();
    // SAFETY: the variable name is unique to this test, so no other test reads it concurrently.
    unsafe { std::env::set_var("SOARJOBD_TEST_TAGS_3F1", "x, y") };
    let opts = allowing(dir.path(), &["SOARJOBD_TEST_*"]);
    let text = "name: X\njob: echo\nparameters:\n  - {name: Tags, type: csv, value_from_env: SOARJOBD_TEST_TAGS_3F1}\n  - {name: Key, type: password, value_from_file: secret.txt}\n  - {name: Missing, type: string, value_from_env: SOARJOBD_TEST_UNSET_3F1}\n";
    let path = dir.path().join("env-job.yaml");
    let errs = load_str_with(&path, text, &TestCatalog, &opts).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0]
            .message
            .contains("SOARJOBD_TEST_UNSET_3F1` is not set")
    );
    let text = text.lines().take(5).collect::<Vec<_>>().join("\n");
    let d = load_str_with(&path, &text, &TestCatalog, &opts).unwrap();
    assert_eq!(d.parameters.list("Tags").unwrap(), vec!["x", "y"]);
    use secrecy::ExposeSecret;
    assert_eq!(
        d.parameters.secret("Key").unwrap().unwrap().expose_secret(),
        "from-file"
    );
    // The default policy allows no variable at all.
    let errs = load_str(&path, &text, &TestCatalog).unwrap_err();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!((errs[0].line, errs[0].column), (4, 45), "{}", errs[0]);
    assert!(errs[0].message.contains("secrets.env_allow"), "{}", errs[0]);
}

#[test]
fn exfiltration_attempts_are_refused_with_located_errors() {
    let root = tempfile::tempdir().unwrap();
    let jobs = root.path().join("jobs");
    let secrets = root.path().join("secrets");
    std::fs::create_dir_all(&jobs).unwrap();
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(root.path().join("outside.txt"), "top secret").unwrap();
    std::fs::write(secrets.join("ok.txt"), "allowed-value").unwrap();
    std::os::unix::fs::symlink(root.path().join("outside.txt"), secrets.join("escape")).unwrap();
    // SAFETY: variable names unique to this test.
    unsafe {
        std::env::set_var("SOARJOBD__TEST_EXFIL_KEY", "daemon-secret");
        std::env::set_var("EXFIL_TEST_OTHER_9C2", "not-allowed");
        std::env::set_var("EXFIL_TEST_OK_9C2", "fine");
    }
    let mut opts = allowing(&jobs, &["EXFIL_TEST_OK_*", "SOARJOBD__TEST_*"]);
    opts.secrets.dirs.push(secrets.clone());
    let text = format!(
        "name: X\njob: echo\nparameters:\n  - {{name: Tags, type: csv, value: a}}\n\
         - {{name: A, type: password, value_from_env: SOARJOBD__TEST_EXFIL_KEY}}\n\
         - {{name: B, type: password, value_from_env: EXFIL_TEST_OTHER_9C2}}\n\
         - {{name: C, type: password, value_from_file: /proc/self/environ}}\n\
         - {{name: D, type: password, value_from_file: ../../etc/passwd}}\n\
         - {{name: E, type: password, value_from_file: {}}}\n\
         - {{name: F, type: password, value_from_file: /etc/passwd}}\n",
        secrets.join("escape").display()
    )
    .replace("\\\n", "");
    let text = text.replace("}\n- ", "}\n  - ");
    let errs = load_str_with(&jobs.join("x.yaml"), &text, &TestCatalog, &opts).unwrap_err();
    let got: Vec<String> = errs
        .iter()
        .map(|e| format!("{}:{} {}", e.line, e.column, e.message))
        .collect();
    assert_eq!(errs.len(), 6, "{got:#?}");
    for (i, e) in errs.iter().enumerate() {
        assert_eq!(e.line, 5 + i, "{got:#?}");
        assert!(e.column > 20, "{got:#?}");
    }
    assert!(got[0].contains("daemon's own"), "{got:#?}");
    assert!(got[1].contains("not allowed"), "{got:#?}");
    assert!(got[2].contains("outside the secrets folders"), "{got:#?}");
    assert!(got[3].contains("`..`"), "{got:#?}");
    assert!(got[4].contains("symbolic link"), "{got:#?}");
    assert!(got[5].contains("outside the secrets folders"), "{got:#?}");
    let all = format!("{got:?}");
    assert!(
        !all.contains("top secret") && !all.contains("daemon-secret"),
        "{all}"
    );

    // What is allowed still works.
    let ok = format!(
        "name: X\njob: echo\nparameters:\n  - {{name: Tags, type: csv, value: a}}\n  - {{name: A, type: password, value_from_env: EXFIL_TEST_OK_9C2}}\n  - {{name: B, type: password, value_from_file: {}}}\n",
        secrets.join("ok.txt").display()
    );
    let d = load_str_with(&jobs.join("x.yaml"), &ok, &TestCatalog, &opts).unwrap();
    use secrecy::ExposeSecret;
    assert_eq!(
        d.parameters.secret("A").unwrap().unwrap().expose_secret(),
        "fine"
    );
    assert_eq!(
        d.parameters.secret("B").unwrap().unwrap().expose_secret(),
        "allowed-value"
    );
}

#[test]
fn oversized_nested_and_many_node_files_give_located_limit_errors() {
    let dir = tempfile::tempdir().unwrap();
    let ok = "job: echo\nparameters: [{name: Tags, type: csv, value: a}]\n";
    std::fs::write(dir.path().join("good.yaml"), format!("name: Good\n{ok}")).unwrap();
    // 300 KB of nested flow sequences (this took 40 s of CPU before the limits).
    std::fs::write(
        dir.path().join("nested.yaml"),
        format!("name: N\n{ok}x: {}\n", "[".repeat(300_000)),
    )
    .unwrap();
    // Block-style nesting, by indentation.
    let block: String = (0..100)
        .map(|d| format!("{}k{d}:\n", "  ".repeat(d)))
        .collect();
    std::fs::write(
        dir.path().join("block.yaml"),
        format!("name: B\n{ok}x:\n{block}"),
    )
    .unwrap();
    // 2 MiB: over the size limit.
    let big = format!("name: Big\n{ok}description: {}\n", "y".repeat(2 << 20));
    std::fs::write(dir.path().join("big.yaml"), big).unwrap();
    // A flat map with too many nodes (under the size limit).
    let many: String = (0..60_000).map(|i| format!("k{i}: 1\n")).collect();
    std::fs::write(
        dir.path().join("many.yaml"),
        format!("name: M\n{ok}x:\n{many}"),
    )
    .unwrap();

    let r = load_dir(dir.path(), &TestCatalog);
    assert_eq!(r.jobs.len(), 1, "{:?}", r.errors);
    assert_eq!(r.jobs[0].id, "good");
    let msgs: Vec<String> = r.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(msgs.len(), 4, "{msgs:#?}");
    let find = |f: &str| {
        r.errors
            .iter()
            .find(|e| e.file.ends_with(f))
            .unwrap_or_else(|| panic!("no error for {f}: {msgs:#?}"))
    };
    let e = find("nested.yaml");
    assert!(e.message.contains("nesting deeper than 64"), "{e}");
    assert_eq!((e.line, e.column), (4, 3 + 64), "{e}");
    let e = find("block.yaml");
    assert!(e.message.contains("nesting deeper than 64"), "{e}");
    assert!(e.line > 60, "{e}");
    let e = find("big.yaml");
    assert!(e.message.contains("larger than 1024 KiB"), "{e}");
    assert_eq!(e.line, 4, "{e}");
    let e = find("many.yaml");
    assert!(e.message.contains("more than 100000 YAML nodes"), "{e}");
    assert!(e.line > 40_000, "{e}");
}

#[test]
fn binary_garbage_and_duplicate_keys_are_located() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bin.yaml");
    std::fs::write(&path, b"name: X\njob: echo\ndesc: ab\xff\xfe\x00\n").unwrap();
    let e = load_file(&path, &TestCatalog).unwrap_err();
    assert_eq!((e[0].line, e[0].column), (3, 9), "{}", e[0]);
    assert!(e[0].message.contains("not UTF-8"), "{}", e[0]);

    let e = load("name: X\njob: echo\nparameters: []\nname: Y\n").unwrap_err();
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(
        e[0].to_string(),
        "jobs/sample-job.yaml:4:1: duplicate key `name` (first defined at line 1)"
    );
    let e = load("name: X\njob: echo\nschedule:\n  every: 1m\n  every: 2m\n").unwrap_err();
    assert_eq!((e[0].line, e[0].column), (5, 3), "{}", e[0]);
    assert!(e[0].message.contains("`every`"), "{}", e[0]);
    // Control characters: the parser's own location.
    let e = load("name: X\njob: echo\ndescription: \u{1}\n").unwrap_err();
    assert_eq!(e[0].line, 3, "{}", e[0]);
}

#[test]
fn the_size_limit_is_located_even_inside_a_multibyte_character() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wide.yaml");
    // `é` is two bytes: byte 1 MiB falls in the middle of one.
    let text = format!("name: X\nd: a{}\n", "é".repeat(limits::MAX_FILE_BYTES / 2));
    std::fs::write(&path, &text).unwrap();
    let e = load_file(&path, &TestCatalog).unwrap_err();
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].message.contains("larger than 1024 KiB"), "{}", e[0]);
    assert_eq!(e[0].line, 2, "{}", e[0]);
    // The same text given directly is held to the same limit.
    let e = load_str(&path, &text, &TestCatalog).unwrap_err();
    assert!(e[0].message.contains("larger than 1024 KiB"), "{}", e[0]);
}

#[test]
fn odd_folder_entries_are_reported_not_skipped() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ok = "job: echo\nparameters: [{name: Tags, type: csv, value: a}]\n";
    std::fs::write(d.join("good.yaml"), format!("name: Good\n{ok}")).unwrap();
    std::fs::create_dir(d.join("folder.yaml")).unwrap();
    std::os::unix::fs::symlink(d.join("loop-b.yaml"), d.join("loop-a.yaml")).unwrap();
    std::os::unix::fs::symlink(d.join("loop-a.yaml"), d.join("loop-b.yaml")).unwrap();
    std::os::unix::fs::symlink(d.join("missing"), d.join("dangling.yaml")).unwrap();
    let fifo = std::ffi::CString::new(d.join("pipe.yaml").as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let latin1 = std::ffi::OsStr::from_bytes(b"caf\xe9.yaml");
    std::fs::write(d.join(latin1), format!("name: Cafe\n{ok}")).unwrap();
    // Not job files at all: still ignored.
    std::fs::create_dir(d.join("scripts")).unwrap();
    std::fs::write(d.join(".hidden.yaml"), "garbage: [").unwrap();

    // Never blocks on the FIFO (no writer ever opens it).
    let r = load_dir(d, &TestCatalog);
    assert_eq!(r.jobs.len(), 1);
    let msgs: Vec<String> = r.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(msgs.len(), 6, "{msgs:#?}");
    let has = |name: &str, what: &str| {
        assert!(
            msgs.iter().any(|m| m.contains(name) && m.contains(what)),
            "{name}: {what}: {msgs:#?}"
        )
    };
    has("folder.yaml: ", "is a folder");
    has("loop-a.yaml: ", "symbolic link loop");
    has("loop-b.yaml: ", "symbolic link loop");
    has("dangling.yaml: ", "does not exist");
    has("pipe.yaml: ", "FIFO");
    has("caf", "not valid UTF-8");
    assert_eq!(r.failed_files.len(), 6);
}

#[test]
fn a_folder_reports_every_broken_file_and_keeps_the_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    let ok = "job: echo\nparameters: [{name: Tags, type: csv, value: a}]\n";
    std::fs::write(dir.path().join("good.yaml"), format!("name: Good\n{ok}")).unwrap();
    std::fs::write(dir.path().join("dup-name.yml"), format!("name: Good\n{ok}")).unwrap();
    std::fs::write(
        dir.path().join("unknown-key.yaml"),
        format!("name: U\nnmae: x\n{ok}"),
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
    let r = load_dir(dir.path(), &TestCatalog);
    assert_eq!(r.jobs.len(), 1);
    assert_eq!(r.jobs[0].id, "dup-name", "files load in name order");
    let msgs: Vec<String> = r.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert!(
        msgs[0].contains("good.yaml:1:1: job name `Good` is already used"),
        "{msgs:?}"
    );
    assert!(
        msgs[1].contains("unknown-key.yaml:2:1: unknown key `nmae` (did you mean `name`?)"),
        "{msgs:?}"
    );
    assert_eq!(r.failed_files.len(), 2);
}

#[test]
fn suggestions() {
    assert_eq!(suggest("shedule", TOP_KEYS), Some("schedule"));
    assert_eq!(suggest("timeot", TOP_KEYS), Some("timeout"));
    assert_eq!(suggest("zzzzzz", TOP_KEYS), None);
}

#[test]
fn jitter_must_be_shorter_than_the_interval() {
    let errs = errors(
        "name: X\njob: echo\nschedule: {every: 1m, jitter: 2m}\nparameters: [{name: Tags, type: csv, value: a}]\n",
    );
    assert_eq!(
        errs,
        vec!["3:31: `jitter` must be shorter than the interval (1m)"]
    );
}

#[test]
fn alias_expansion_is_held_to_the_node_limit() {
    // 150 uses of a 1,000-item anchor: 150,000 nodes once expanded, from 6 KB of text.
    let text = format!(
        "name: X\njob: echo\nparameters: [{{name: Tags, type: csv, value: a}}]\nbase: &a [{}]\ncommand: [{}]\n",
        "x, ".repeat(1000),
        "*a, ".repeat(150)
    );
    let e = load(&text).unwrap_err();
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].message.contains("more than 100000 YAML nodes"),
        "{}",
        e[0]
    );
    assert!(e[0].line >= 4, "{}", e[0]);
    // A few aliases are fine.
    let ok =
        "name: X\njob: echo\nparameters: [{name: Tags, type: csv, value: &t a}]\ndescription: *t\n";
    assert_eq!(load(ok).unwrap().description, "a");
}

/// Job files read durations by the one config grammar: `500ms`, `30s`, `1h30m`, `2d`, a bare
/// number of seconds; an `every` period must still be whole seconds.
#[test]
fn job_file_durations_follow_the_config_grammar() {
    let tags = "parameters: [{name: Tags, type: csv, value: a}]\n";
    for (timeout, want) in [
        ("500ms", Duration::from_millis(500)),
        ("1h30m", Duration::from_secs(5_400)),
        ("2d", Duration::from_secs(172_800)),
        ("90", Duration::from_secs(90)),
        ("\"90\"", Duration::from_secs(90)),
    ] {
        let def = load(&format!(
            "name: X\njob: echo\nschedule: {{every: 1h30m, jitter: 250ms}}\ntimeout: {timeout}\n{tags}"
        ))
        .unwrap_or_else(|e| panic!("{timeout}: {e:?}"));
        assert_eq!(def.timeout, want, "{timeout}");
        assert_eq!(def.schedule.jitter(), Duration::from_millis(250));
    }
    let errs = errors(&format!(
        "name: X\njob: echo\nschedule: {{every: 1500ms}}\n{tags}"
    ));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("3:19: ") && errs[0].contains("whole seconds"),
        "{errs:?}"
    );
    let errs = errors(&format!("name: X\njob: echo\ntimeout: 1.5h\n{tags}"));
    assert!(
        errs[0].starts_with("3:10: invalid duration `1.5h`"),
        "{errs:?}"
    );
}

/// Control and bidirectional-formatting characters written as YAML escapes (raw control
/// characters are refused by the reader) are refused in every displayed name, each located.
#[test]
fn control_and_bidi_characters_in_names_are_refused() {
    let text = "\
name: \"Bell\\u0007 \\u001b[2J\"
job: echo
integration: \"Sec\\u202eOps\"
creator: \"Ad\\u2066min\\u2069\"
description: \"two\\nlines are fine, \\u202d is not\"
schedule: {every: 15m}
parameters:
  - name: \"Tags\\u200f\"
    type: csv
    value: a
  - name: Tags
    type: csv
    value: b
command: [\"/bin/echo\"]
";
    let errs = errors(text);
    assert_eq!(errs.len(), 5, "{errs:#?}");
    assert!(
        errs[0].starts_with(
            "1:7: `name` must not contain a control character (U+0007 at character 5)"
        ),
        "{errs:#?}"
    );
    assert!(
        errs[1].starts_with("3:14: `integration` must not contain a bidirectional"),
        "{errs:#?}"
    );
    assert!(errs[1].contains("U+202E"), "{errs:#?}");
    assert!(errs[2].starts_with("4:10: `creator`"), "{errs:#?}");
    assert!(errs[3].starts_with("5:14: `description`"), "{errs:#?}");
    assert!(
        errs[4].starts_with("8:11: a parameter name must not contain"),
        "{errs:#?}"
    );
    // A name in another script, with accents, is fine.
    let ok = GOOD.replace("name: Sample job", "name: \"Ñandú 日本 — jobs\"");
    assert_eq!(load(&ok).unwrap().name, "Ñandú 日本 — jobs");
}

//! Property tests of the job-file loader: whatever the bytes, loading returns jobs or located
//! errors, within the limits, and never panics. Run longer with `PROPTEST_CASES=100000`.
//! Crashes found this way are kept as regular tests at the end.

use proptest::prelude::*;

use super::tests::{TestCatalog, load_file, load_str};
use super::*;

/// Fragments job files (and broken ones) are made of.
const TOKENS: &[&str] = &[
    "name: X\n",
    "job: echo\n",
    "parameters:\n",
    "  - {name: Tags, type: csv, value: a}\n",
    "schedule: {every: 1m}\n",
    "schedule:\n  cron: \"0 * * * *\"\n",
    "timeout: 5m\n",
    "command: [/bin/echo]\n",
    "- ",
    "  ",
    "    ",
    "\n",
    "[",
    "]",
    "{",
    "}",
    ", ",
    ": ",
    ":",
    "'",
    "\"",
    "''",
    "\\\"",
    "# c\n",
    " #",
    "|\n",
    ">-\n",
    "|2\n",
    "&a ",
    "*a",
    "!!str ",
    "!t ",
    "? ",
    "---\n",
    "...\n",
    "key",
    "don't",
    "\\",
    "\t",
    "\r\n",
    "é",
    "\u{1}",
    "\u{0}",
    "\u{feff}",
    "value_from_env: HOME",
    "value_from_file: /etc/passwd",
    "value_from_file: ../x",
    "name: X\n",
    "enabled: yes\n",
    "version: 0.5\n",
    "1",
    "-1",
    "1e999",
    "~",
    "null",
    "true",
    "<<: *a\n",
    "%YAML 1.2\n",
    "%TAG ! tag:x:\n",
];

fn yamlish() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..120).prop_map(|t| t.concat())
}

/// Deeply nested documents around the depth limit, in every style, with noise that a naive
/// scanner would misread (quotes, apostrophes, comments and block scalars holding brackets).
fn nested() -> impl Strategy<Value = String> {
    let noise = prop::sample::select(
        &[
            "",
            "# [[[[\n",
            "d: '[[['\n",
            "e: \"{{\\\"[[\"\n",
            "f: it's\n",
            "g: |\n  [[[[\n",
            "h: [a, 'b]', \"c}\"]\n",
            "i: x#[\n",
        ][..],
    );
    (40usize..90, 0u8..4, noise.clone(), noise).prop_map(|(depth, style, pre, mid)| {
        let mut s = format!("name: X\njob: echo\n{pre}");
        match style {
            0 => s.push_str(&format!("x: {}{}\n", "[".repeat(depth), "]".repeat(depth))),
            1 => s.push_str(&format!(
                "x: {}1{}\n",
                "{a: ".repeat(depth),
                "}".repeat(depth)
            )),
            2 => {
                s.push_str("x:\n");
                for d in 0..depth {
                    s.push_str(&format!("{}k{d}:\n", "  ".repeat(d + 1)));
                    if d == depth / 2 {
                        s.push_str(&format!("{}{}", "  ".repeat(d + 2), mid));
                    }
                }
                s.push_str(&format!("{}leaf: 1\n", "  ".repeat(depth + 1)));
            }
            _ => s.push_str(&format!("x:\n{}1\n", "- ".repeat(depth))),
        }
        s
    })
}

fn depth(v: &Yaml) -> usize {
    match v {
        Yaml::Sequence(s) => 1 + s.iter().map(depth).max().unwrap_or(0),
        Yaml::Mapping(m) => {
            1 + m
                .iter()
                .map(|(k, v)| depth(k).max(depth(v)))
                .max()
                .unwrap_or(0)
        }
        Yaml::Tagged(t) => depth(&t.value),
        _ => 0,
    }
}

/// Every error is located inside the text (or names the file as a whole, line 0).
fn check_located(text: &str, result: &Result<JobDefinition, Vec<LoadError>>) {
    if let Err(errs) = result {
        assert!(!errs.is_empty(), "an error result with no error");
        let lines = text.split('\n').count();
        for e in errs {
            assert!(
                e.line >= 1 && e.line <= lines + 1,
                "{e} (text has {lines} lines)"
            );
            assert!(e.column >= 1, "{e}");
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_give_jobs_or_located_errors(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fuzz.yaml");
        std::fs::write(&path, &bytes).unwrap();
        let result = load_file(&path, &TestCatalog);
        let text = String::from_utf8_lossy(&bytes);
        check_located(&text, &result);
    }

    #[test]
    fn yamlish_text_gives_jobs_or_located_errors(text in yamlish()) {
        let result = load_str(Path::new("jobs/fuzz.yaml"), &text, &TestCatalog);
        check_located(&text, &result);
    }

    /// The pre-scan never lets a document deeper than the limit reach the parser.
    #[test]
    fn the_prescan_never_underestimates_depth(text in nested()) {
        if limits::prescan(&text).is_ok()
            && let Ok(v) = yaml_serde::from_str::<Yaml>(&text)
        {
            prop_assert!(depth(&v) <= limits::MAX_DEPTH, "depth {} passed the prescan:\n{text}", depth(&v));
        }
        let result = load_str(Path::new("jobs/fuzz.yaml"), &text, &TestCatalog);
        check_located(&text, &result);
    }

    #[test]
    fn the_prescan_never_underestimates_depth_with_noise(prefix in yamlish(), text in nested()) {
        let text = format!("{prefix}\n{text}");
        if limits::prescan(&text).is_ok()
            && let Ok(v) = yaml_serde::from_str::<Yaml>(&text)
        {
            prop_assert!(depth(&v) <= limits::MAX_DEPTH, "depth {} passed the prescan:\n{text}", depth(&v));
        }
    }
}

/// Mostly openers, with the characters that change how they are read.
fn bracket_heavy() -> impl Strategy<Value = String> {
    let t = prop::sample::select(
        &[
            "[", "[", "[", "[", "{", "{a: ", "a: ", "- ", "? ", "'", "\"", "\\", " #", "#", "\n",
            "  ", ", ", "]", "}", "|\n", ">\n", "x", "&a ", "!t ", ":", "\t",
        ][..],
    );
    prop::collection::vec(t, 0..600).prop_map(|t| t.concat())
}

proptest! {
    #[test]
    fn the_prescan_never_underestimates_depth_of_bracket_soup(text in bracket_heavy()) {
        if limits::prescan(&text).is_ok()
            && let Ok(v) = yaml_serde::from_str::<Yaml>(&text)
        {
            prop_assert!(depth(&v) <= limits::MAX_DEPTH, "depth {} passed the prescan:\n{text:?}", depth(&v));
        }
        let result = load_str(Path::new("jobs/fuzz.yaml"), &text, &TestCatalog);
        check_located(&text, &result);
    }
}

proptest! {
    /// Any Unicode text, including what the token lists do not think of.
    #[test]
    fn any_text_gives_jobs_or_located_errors(text in any::<String>()) {
        let result = load_str(Path::new("jobs/fuzz.yaml"), &text, &TestCatalog);
        check_located(&text, &result);
        let _ = located::Positions::scan(&text);
    }

    /// Valid job files with arbitrary parameter values and keys still load or fail located.
    #[test]
    fn mutated_job_files_give_jobs_or_located_errors(
        value in "[ -~é\\t]{0,40}",
        key in "[a-z_]{1,12}",
        at in 0usize..200,
    ) {
        let base = "name: X\njob: echo\nschedule:\n  every: 1m\nparameters:\n  - name: Tags\n    type: csv\n    value: a\n  - {name: N, type: integer, value: 3}\ncommand: [/bin/echo]\n";
        let at = (0..=at.min(base.len())).rev().find(|i| base.is_char_boundary(*i)).unwrap_or(0);
        let text = format!("{}{key}: {value}\n{}", &base[..at], &base[at..]);
        let result = load_str(Path::new("jobs/fuzz.yaml"), &text, &TestCatalog);
        check_located(&text, &result);
    }
}

/// Found by `any_text_gives_jobs_or_located_errors`: the parser counts U+2028 (and `\r`,
/// U+0085, U+2029) as line breaks, so its "line 3" was past the end of a one-line file.
/// Positions are now recomputed from the byte offset, with lines ending at `\n`.
#[test]
fn unicode_line_separators_do_not_shift_locations() {
    for text in [
        "A:\u{2028}\u{10837}",
        "a: 1\rb: [\n",
        "x: \u{85}y: [\u{2029}\n",
    ] {
        let result = load_str(Path::new("jobs/fuzz.yaml"), text, &TestCatalog);
        check_located(text, &result);
    }
    let e = load_str(
        Path::new("jobs/x.yaml"),
        "name: X\r\njob: [\n",
        &TestCatalog,
    )
    .unwrap_err();
    assert_eq!(e[0].line, 3, "{}", e[0]);
    assert!(!e[0].message.contains(" at line "), "{}", e[0]);
}

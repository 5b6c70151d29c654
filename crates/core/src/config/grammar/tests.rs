use std::collections::HashMap;

use secrecy::ExposeSecret;
use serde_json::json;

use super::*;

#[test]
fn durations_table() {
    let ok: &[(&str, Duration)] = &[
        ("500ms", Duration::from_millis(500)),
        ("30s", Duration::from_secs(30)),
        ("15m", Duration::from_secs(900)),
        ("1h30m", Duration::from_secs(5_400)),
        ("2d", Duration::from_secs(172_800)),
        ("1d12h", Duration::from_secs(129_600)),
        ("1m30s500ms", Duration::from_millis(90_500)),
        ("1d1h1m1s", Duration::from_secs(90_061)),
        ("90", Duration::from_secs(90)),
        ("0", Duration::ZERO),
        ("0s", Duration::ZERO),
        (" 5m ", Duration::from_secs(300)),
        ("100000s", Duration::from_secs(100_000)),
    ];
    for (text, want) in ok {
        assert_eq!(parse_duration(text), Ok(*want), "{text}");
    }
    let bad: &[(&str, &str)] = &[
        ("", "it is empty"),
        ("   ", "it is empty"),
        ("1.5h", "fractions are not supported"),
        ("-5m", "unexpected `-`"),
        ("m", "unexpected `m`"),
        ("15M", "unknown unit `M`"),
        ("15min", "unknown unit `min`"),
        ("10us", "the smallest unit is ms"),
        ("1h1h", "largest to smallest"),
        ("30m1h", "largest to smallest"),
        ("500ms1s", "largest to smallest"),
        ("15 m", "unexpected ` `"),
        ("1h30", "`30` needs a unit"),
        ("soon", "unexpected `s`"),
        ("99999999999999999999s", "too large"),
        ("99999999999999999999", "too large"),
        ("999999999999999d", "too large"),
    ];
    for (text, reason) in bad {
        let e = parse_duration(text).expect_err(text).to_string();
        assert!(
            e.contains(reason) && e.contains("500ms, 30s or 1h30m"),
            "{text}: {e}"
        );
    }
}

#[test]
fn duration_values_from_yaml_and_env_agree() {
    assert_eq!(duration_value(&json!(30)), Ok(Duration::from_secs(30)));
    assert_eq!(duration_value(&json!("30")), Ok(Duration::from_secs(30)));
    assert_eq!(
        duration_value(&json!("500ms")),
        Ok(Duration::from_millis(500))
    );
    assert!(duration_value(&json!(-1)).is_err());
    assert!(duration_value(&json!(1.5)).is_err());
    assert!(duration_value(&json!(true)).is_err());
}

#[test]
fn booleans_table() {
    for t in [
        "true", "TRUE", "True", "yes", "Yes", "on", "ON", "1", " true ",
    ] {
        assert_eq!(parse_bool(t), Some(true), "{t}");
        assert_eq!(bool_value(&json!(t)), Some(true), "{t}");
    }
    for f in ["false", "FALSE", "no", "No", "off", "Off", "0", " no\n"] {
        assert_eq!(parse_bool(f), Some(false), "{f}");
        assert_eq!(bool_value(&json!(f)), Some(false), "{f}");
    }
    for bad in ["", "y", "n", "2", "truee", "enabled", "-1"] {
        assert_eq!(parse_bool(bad), None, "{bad}");
    }
    assert_eq!(bool_value(&json!(true)), Some(true));
    assert_eq!(bool_value(&json!(false)), Some(false));
    assert_eq!(bool_value(&json!(1)), Some(true));
    assert_eq!(bool_value(&json!(0)), Some(false));
    assert_eq!(bool_value(&json!(2)), None);
    assert_eq!(bool_value(&json!(null)), None);
    assert_eq!(bool_value(&json!([true])), None);
}

#[test]
fn secret_files_lose_exactly_one_trailing_newline() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str)] = &[
        ("k", "k"),
        ("k\n", "k"),
        ("k\r\n", "k"),
        ("k\n\n", "k\n"),
        ("k \n", "k "),
        (" k\n", " k"),
    ];
    for (i, (content, want)) in cases.iter().enumerate() {
        let f = dir.path().join(format!("s{i}"));
        std::fs::write(&f, content).unwrap();
        let read = read_secret_file(&f).unwrap();
        assert_eq!(read.secret.expose_secret(), *want, "{content:?}");
        assert!(!format!("{read:?}").contains('k'));
    }
    // The fingerprint follows the content.
    let f = dir.path().join("rot");
    std::fs::write(&f, "one\n").unwrap();
    let a = read_secret_file(&f).unwrap().fingerprint;
    std::fs::write(&f, "one").unwrap();
    assert_eq!(read_secret_file(&f).unwrap().fingerprint, a);
    std::fs::write(&f, "two\n").unwrap();
    assert_ne!(read_secret_file(&f).unwrap().fingerprint, a);
    // Empty, missing, too big, not a file: errors that never quote content.
    for (content, reason) in [("\n", "empty"), ("", "empty"), ("  \n", "empty")] {
        std::fs::write(&f, content).unwrap();
        assert!(read_secret_file(&f).unwrap_err().contains(reason));
    }
    assert!(read_secret_file(&dir.path().join("nope")).is_err());
    assert!(
        read_secret_file(dir.path())
            .unwrap_err()
            .contains("regular file")
    );
    std::fs::write(&f, "x".repeat(70 * 1024)).unwrap();
    assert!(read_secret_file(&f).unwrap_err().contains("64 KiB"));
}

#[test]
fn suggestions() {
    let known = ["verify_tls", "timeout", "max_concurrency"];
    assert_eq!(suggest("verify_tsl", &known), Some("verify_tls"));
    assert_eq!(suggest("timeot", &known), Some("timeout"));
    assert_eq!(suggest("zzzzzz", &known), None);
}

/// `env`: (key path, the variable that set it).
fn origins_for(text: &str, env: &[(&str, &str)]) -> Origins {
    Origins::new(
        Some((PathBuf::from("c.yaml"), text)),
        env.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
    )
}

/// A section reads every key, reports every problem located, and suggests for unknown keys.
#[test]
fn section_reports_everything_located() {
    let text = "\
plat:
  url: http://h
  timeout: soon
  verify_tsl: yes
  retries: many
  key: inline
  key_file: /nonexistent/key
";
    let value = json!({"plat": {
        "url": "http://h", "timeout": "soon", "verify_tsl": "yes", "retries": "many",
        "key": "inline", "key_file": "/nonexistent/key", "extra": "x"
    }});
    let origins = origins_for(text, &[("plat.extra", "SOARJOBD__PLAT__EXTRA")]);
    let mut s = Section::new("plat", value.get("plat"), &origins);
    assert_eq!(s.string("url").as_deref(), Some("http://h"));
    assert_eq!(
        s.duration("timeout", Duration::from_secs(3)),
        Duration::from_secs(3)
    );
    assert!(s.bool("verify_tls", true));
    assert_eq!(s.uint("retries", 2u32, 0), 2);
    assert!(s.secret("key", "key_file").is_none());
    let problems = s.finish();
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(problems.len(), 5, "{text:#?}");
    assert!(
        text.contains(&format!(
            "c.yaml:3:12: `plat.timeout`: {}",
            parse_duration("soon").unwrap_err()
        )),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|t| t.starts_with("c.yaml:5:12: `plat.retries` must be a whole number")),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|t| t.starts_with("c.yaml:7:13: set `plat.key` or `plat.key_file`, not both")),
        "{text:#?}"
    );
    assert!(
        text.contains(
            &"c.yaml:4:3: unknown key `plat.verify_tsl` (did you mean `verify_tls`?)".to_string()
        ),
        "{text:#?}"
    );
    // A key set by an environment variable is named by it.
    assert!(
        text.iter()
            .any(|t| t.starts_with("SOARJOBD__PLAT__EXTRA: unknown key `plat.extra`")),
        "{text:#?}"
    );
}

#[test]
fn a_section_that_is_not_a_mapping() {
    let origins = origins_for("plat: 3\n", &[]);
    let v = json!(3);
    let s = Section::new("plat", Some(&v), &origins);
    let p = s.finish();
    assert_eq!(p.len(), 1);
    assert_eq!(
        p[0].to_string(),
        "c.yaml:1:7: `plat` must be a mapping, not a number"
    );
}

#[test]
fn secrets_never_quoted_in_problems() {
    let origins = Origins::default();
    let v = json!({"key": ["hunter2"], "n": "hunter3"});
    let mut s = Section::new("p", Some(&v), &origins);
    let _ = s.secret("key", "key_file");
    let p = grammar_join(s.finish());
    assert!(!p.contains("hunter2"), "{p}");
}

fn grammar_join(p: Vec<Problem>) -> String {
    join(&p)
}

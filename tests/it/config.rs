//! The configuration grammar through the real binary: every mistake of every section (the top
//! level, `soar`, `threatconnect`, the environment) reported at once and located, by `check`
//! and by `run`, and the same values accepted in every section.

use std::process::{Command, Output};

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_soarjobd");

fn soarjobd(app: &TestApp, config: &str, args: &[&str]) -> Command {
    let cfg = app.path("soarjobd.yaml");
    std::fs::write(&cfg, config).unwrap();
    let mut c = Command::new(BIN);
    c.arg("--config").arg(&cfg).args(args);
    c.current_dir(app.dir.path()).env_remove("RUST_LOG");
    for (k, _) in std::env::vars() {
        if k.starts_with("SOARJOBD") {
            c.env_remove(k);
        }
    }
    c.env("SOARJOBD__JOBS_DIR", app.jobs_dir()).env(
        "SOARJOBD__DATABASE_URL",
        format!("sqlite:{}", app.path("state.db").display()),
    );
    c
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const THREE_MISTAKES: &str = "\
shutdown_grace: 1h30m
histroy:
  keep_runs: 5
soar:
  url: https://soar.example.com
  app_key: k
  timeout: 500ms
  verify_tls: yes
  max_concurency: 4
threatconnect:
  url: https://tc.example.com/api
  token: t
  timeout: 1h30m
  verify_tls: yes
  poll_max: soon
";

#[test]
fn three_mistakes_in_three_sections_are_reported_together_and_located() {
    let app = TestApp::new();
    let cfg = app.path("soarjobd.yaml");
    let f = cfg.display().to_string();
    let expected = [
        format!("{f}:2:1: unknown key `histroy` (did you mean `history`?)"),
        format!("{f}:9:3: unknown key `soar.max_concurency` (did you mean `max_concurrency`?)"),
        format!("{f}:15:13: `threatconnect.poll_max`: invalid duration `soon`"),
    ];
    let out = soarjobd(&app, THREE_MISTAKES, &["check"]).output().unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    for e in &expected {
        assert!(t.contains(e.as_str()), "missing {e:?} in:\n{t}");
    }
    // `run` refuses the same file with the same three problems, in one error, exit 2.
    let out = soarjobd(&app, THREE_MISTAKES, &["run"]).output().unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    for e in &expected {
        assert!(t.contains(e.as_str()), "missing {e:?} in:\n{t}");
    }
    // An environment variable's mistake names the variable, reported with the file's.
    let out = soarjobd(&app, THREE_MISTAKES, &["check"])
        .env("SOARJOBD__SOAR__VERIFY_TLS", "maybe")
        .output()
        .unwrap();
    let t = text(&out);
    assert!(
        t.contains("SOARJOBD__SOAR__VERIFY_TLS: `soar.verify_tls` must be true or false"),
        "{t}"
    );
    assert!(t.contains(expected[0].as_str()), "{t}");
}

#[test]
fn the_same_values_are_accepted_in_every_section() {
    let app = TestApp::new();
    let dir = app.dir.path();
    std::fs::write(dir.join("soar.key"), "soar-key\n").unwrap();
    std::fs::write(dir.join("tc.token"), "tc-token\n").unwrap();
    let config = "\
shutdown_grace: 500ms
reload_poll: 1h30m
soar:
  url: https://soar.example.com
  app_key_file: soar.key
  timeout: 1h30m
  connect_timeout: 500ms
  verify_tls: yes
threatconnect:
  url: https://tc.example.com/api
  token_file: tc.token
  timeout: 500ms
  poll_max: 1h30m
  verify_tls: yes
";
    let out = soarjobd(&app, config, &["check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // And from the environment, the same spellings.
    let out = soarjobd(&app, "{}\n", &["check"])
        .env("SOARJOBD__SOAR__URL", "https://soar.example.com")
        .env("SOARJOBD__SOAR__APP_KEY", "k")
        .env("SOARJOBD__SOAR__VERIFY_TLS", "Off")
        .env("SOARJOBD__SOAR__TIMEOUT", "1h30m")
        .env("SOARJOBD__THREATCONNECT__URL", "https://tc.example.com/api")
        .env("SOARJOBD__THREATCONNECT__TOKEN", "t")
        .env("SOARJOBD__THREATCONNECT__VERIFY_TLS", "Off")
        .env("SOARJOBD__THREATCONNECT__TIMEOUT", "500ms")
        .env("SOARJOBD__SHUTDOWN_GRACE", "2d")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// Both platform sections read one value the same way: booleans, durations, secret files
/// (exactly one trailing newline removed), unknown keys with a suggestion.
#[test]
fn platform_sections_share_one_grammar() {
    use secrecy::ExposeSecret;
    use serde_json::json;
    use soarjobd_clients::soar::SoarConfig;
    use soarjobd_clients::threatconnect::{Auth, ThreatConnectConfig};
    use soarjobd_core::config::Origins;

    let origins = Origins::default();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("yes", true),
        ("No", false),
        ("on", true),
        ("OFF", false),
        ("1", true),
        ("0", false),
    ];
    for (text, want) in cases {
        for timeout in ["1h30m", "500ms", "45", "2d"] {
            let soar = json!({"url": "https://s.example", "app_key": "k",
                              "verify_tls": text, "timeout": timeout});
            let tc = json!({"url": "https://t.example/api", "token": "t",
                            "verify_tls": text, "timeout": timeout});
            let s = SoarConfig::read(Some(&soar), &origins).unwrap().unwrap();
            let t = ThreatConnectConfig::read(Some(&tc), &origins)
                .unwrap()
                .unwrap();
            assert_eq!((s.verify_tls, t.verify_tls), (want, want), "{text}");
            assert_eq!(s.timeout, t.timeout, "{timeout}");
        }
    }
    for content in [
        "secret\n",
        "secret\r\n",
        "secret",
        "secret \n",
        "secret\n\n",
    ] {
        let f = dir.path().join("key");
        std::fs::write(&f, content).unwrap();
        let path = f.display().to_string();
        let s = SoarConfig::read(
            Some(&json!({"url": "https://s.example", "app_key_file": path})),
            &origins,
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.app_key_file.as_deref(), Some(f.as_path()));
        let t = ThreatConnectConfig::read(
            Some(&json!({"url": "https://t.example/api", "access_id": "a",
                         "secret_key_file": path})),
            &origins,
        )
        .unwrap()
        .unwrap();
        let Auth::Hmac { secret_key, .. } = t.auth().unwrap() else {
            panic!("HMAC expected");
        };
        let want = content.strip_suffix('\n').unwrap_or(content);
        let want = want.strip_suffix('\r').unwrap_or(want);
        assert_eq!(secret_key.expose_secret(), want, "{content:?}");
        // SOAR reads its file with the same rule: the key it sends is `want`, so the client
        // builds exactly when `want` is a valid header value.
        let soar_client = soarjobd_clients::soar::SoarClient::new(&s);
        assert_eq!(soar_client.is_ok(), !want.contains('\n'), "{content:?}");
        let read = soarjobd_core::config::grammar::read_secret_file(&f).unwrap();
        assert_eq!(read.secret.expose_secret(), want, "{content:?}");
    }
    for (section, value) in [
        (
            "soar",
            json!({"url": "https://s.example", "app_key": "k", "verfy_tls": true}),
        ),
        (
            "threatconnect",
            json!({"url": "https://t.example/api", "token": "t", "verfy_tls": true}),
        ),
    ] {
        let problems = if section == "soar" {
            SoarConfig::read(Some(&value), &origins).unwrap_err()
        } else {
            ThreatConnectConfig::read(Some(&value), &origins).unwrap_err()
        };
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(
            problems[0].message,
            format!("unknown key `{section}.verfy_tls` (did you mean `verify_tls`?)")
        );
    }
}

//! Secrets a script prints never reach the logs, the run's row, `history` or the database
//! file: the daemon redacts every secret it handed out (password parameters, platform
//! credentials), in the forms a script prints them, before logging or storing anything.

use std::path::Path;
use std::process::Command;

use base64::Engine;

use crate::support::*;

/// The password parameter's value: `/` and `+` make its URL encoding differ.
const PASSWORD: &str = "hunter2/Secret+Value-9f3a";
/// A platform credential of the daemon.
const APP_KEY: &str = "platform-app-key-77c1d2";

fn soarjobd(dir: &Path, args: &[&str]) -> Command {
    let mut c = soarjobd_in(dir, args);
    c.env("SOARJOBD__SOAR__APP_KEY", APP_KEY);
    c
}

/// Every form of a secret the test has the script print.
fn forms(secret: &str) -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    vec![
        secret.to_string(),
        secret.replace('/', "%2F").replace('+', "%2B"),
        b64.encode(secret),
        b64url.encode(secret),
        secret.bytes().map(|b| format!("{b:02x}")).collect(),
        // Part of a longer base64 value (HTTP Basic auth).
        b64.encode(format!("admin:{secret}")),
    ]
}

#[test]
fn a_printed_password_is_redacted_from_logs_history_and_the_database() {
    let app = TestApp::new();
    let dir = app.dir.path();
    // The script reads its password from stdin and prints it in several encodings on
    // stderr (and once on stdout, and in a stats value), then fails.
    let script = r#"read -r doc
key=$(printf '%s' "$doc" | sed 's/.*"Api Key":"\([^"]*\)".*/\1/')
echo "auth failed key=$key" >&2
echo "url=$(printf '%s' "$key" | sed 's|/|%2F|g; s|+|%2B|g')" >&2
echo "b64=$(printf '%s' "$key" | base64 -w0)" >&2
echo "b64url=$(printf '%s' "$key" | base64 -w0 | tr '+/' '-_' | tr -d '=')" >&2
echo "hex=$(printf '%s' "$key" | od -An -tx1 | tr -d ' \n')" >&2
echo "basic=$(printf 'admin:%s' "$key" | base64 -w0)" >&2
echo "stdout key=$key platform=$APP"
echo "::stats {\"last_key\": \"$key\"}"
echo "platform key=$APP" >&2
exit 1"#;
    app.write_job(
        "leaky",
        &format!(
            "name: Leaky\njob: exec\nenv: {{APP: {APP_KEY}}}\nparameters:\n  - {{name: Api Key, type: password, value: {PASSWORD}}}\ncommand: [/bin/sh, -c, {script:?}]\n"
        ),
    );
    let out = soarjobd(dir, &["run-once", "leaky", "--log-format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let logs = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let history = soarjobd(dir, &["history", "leaky", "--json"])
        .output()
        .unwrap();
    let history = String::from_utf8_lossy(&history.stdout).into_owned();
    let history_text = soarjobd(dir, &["history", "leaky"]).output().unwrap();
    let history_text = String::from_utf8_lossy(&history_text.stdout).into_owned();
    // The database files, byte for byte (run-once closed the store: WAL checkpointed).
    let mut db = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        // The database, its WAL and journal (not the lock and owner files beside them).
        if p.is_file()
            && p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("state.db")
        {
            db.extend(std::fs::read(&p).unwrap());
        }
    }
    let db = String::from_utf8_lossy(&db).into_owned();

    // The script really printed them (else the test proves nothing)...
    assert!(logs.contains("auth failed key=[redacted]"), "{logs}");
    assert!(logs.contains("platform key=[redacted]"), "{logs}");
    for name in ["url", "b64", "b64url", "hex"] {
        assert!(
            logs.contains(&format!("{name}=[redacted]")),
            "{name} not redacted: {logs}"
        );
    }
    assert!(logs.contains("basic=YWRtaW46"), "{logs}");
    // ...and no form of either secret is anywhere.
    for secret in [PASSWORD, APP_KEY] {
        for form in forms(secret) {
            for (what, text) in [
                ("the log", &logs),
                ("run-once's output", &stdout),
                ("history --json", &history),
                ("history", &history_text),
                ("the database", &db),
            ] {
                assert!(!text.contains(&form), "{form:?} leaked into {what}");
            }
        }
    }
    let runs: serde_json::Value = serde_json::from_str(&history).unwrap();
    let message = runs[0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("exit status 1: auth failed key=[redacted]"),
        "{message}"
    );
    assert_eq!(runs[0]["stats"]["last_key"], "[redacted]");
}

#[tokio::test]
async fn the_in_process_runner_redacts_the_message_and_the_output_events() {
    let app = TestApp::new();
    app.write_job(
        "leaky",
        "name: Leaky\njob: exec\nparameters:\n  - {name: Api Key, type: password, value: s3cr3t-value-xyz}\n  - {name: Short, type: password, value: abc}\ncommand: [/bin/sh, -c, 'echo \"auth failed key=s3cr3t-value-xyz short=abc\" >&2; exit 1']\n",
    );
    let (logs, _g) = capture_logs();
    let code = soarjobd::inspect::run_once(&app.app(), "leaky", &[]).await;
    assert_eq!(code, 1);
    let text = logs.text();
    assert!(!text.contains("s3cr3t-value-xyz"), "{text}");
    assert!(
        text.contains("auth failed key=[redacted] short=abc"),
        "a secret shorter than 8 characters is not redacted: {text}"
    );
    let store = app.store().await;
    let r = &runs(&store, "leaky").await[0];
    assert_eq!(
        r.message.as_deref(),
        Some("exit status 1: auth failed key=[redacted] short=abc")
    );
}

/// Through the daemon (whose runner caches a redactor per loaded definition): every run is
/// redacted, and after the job file changes its password, the new one is.
#[tokio::test]
async fn scheduled_runs_redact_the_current_password_after_a_reload() {
    use soarjobd_core::store::RunStatus;
    use std::time::Duration;
    let app = TestApp::new();
    let job = |password: &str, version: &str| {
        format!(
            "name: Leaky\njob: exec\nschedule: {{every: 1s}}\nparameters:\n  - {{name: Key, type: password, value: {password}}}\n  - {{name: Version, type: string, value: {version}}}\ncommand: [/bin/sh, -c, 'read -r doc; echo \"$doc\" >&2; exit 1']\n"
        )
    };
    app.write_job("leaky", &job("first-password-123", "v1"));
    let (logs, _g) = capture_logs();
    let daemon = app.start().await;
    let store = daemon.store().clone();
    // A failed run whose message (the stdin document) names this version.
    let finished_with = |version: &'static str, n: usize| {
        let store = store.clone();
        async move {
            store
                .history("leaky", 100)
                .await
                .unwrap()
                .iter()
                .filter(|r| {
                    r.status == RunStatus::Failed
                        && r.message
                            .as_deref()
                            .is_some_and(|m| m.contains(&format!("\"Version\":\"{version}\"")))
                })
                .count()
                >= n
        }
    };
    assert!(eventually(Duration::from_secs(20), || finished_with("v1", 2)).await);
    app.write_job("leaky", &job("second-password-456", "v2"));
    assert!(eventually(Duration::from_secs(20), || finished_with("v2", 2)).await);
    daemon.shutdown().await;
    let text = logs.text();
    let store = app.store().await;
    let rows = format!("{:?}", store.history("leaky", 100).await.unwrap());
    for secret in ["first-password-123", "second-password-456"] {
        assert!(!text.contains(secret), "{secret} leaked into the logs");
        assert!(!rows.contains(secret), "{secret} leaked into the runs");
    }
    assert!(rows.contains("\\\"Key\\\":\\\"[redacted]\\\""), "{rows}");
}

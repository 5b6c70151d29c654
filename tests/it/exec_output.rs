//! What an `exec` program prints: bounded (a 50 MB line, tens of thousands of lines), escaped
//! (carriage returns, ANSI sequences), and `::context` lines whose write fails fail the run.

use std::path::Path;
use std::process::Command;

use soarjobd_core::store::RunStatus;
use soarjobd_jobs::exec::{LINE_MAX, RUN_LINES_MAX};

use crate::support::*;

async fn run_once(app: &TestApp, id: &str) -> i32 {
    soarjobd::inspect::run_once(&app.app(), id, &[]).await
}

fn job(name: &str, script: &str) -> String {
    format!("name: {name}\njob: exec\ntimeout: 2m\ncommand: [/bin/sh, -c, {script:?}]\n")
}

/// The captured JSON log events with this message.
fn events(text: &str, message: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == message)
        .collect()
}

#[tokio::test]
async fn a_50_mb_line_and_many_lines_are_logged_cut_and_capped_without_blocking() {
    let app = TestApp::new();
    const BIG: usize = 50 * 1024 * 1024;
    // One 50 MB line, 20,000 short ones, one on stderr; the program must not block on a full
    // pipe while the daemon decides what to log (it finishes and exits 0).
    app.write_job(
        "chatty",
        &job(
            "Chatty",
            &format!("head -c {BIG} /dev/zero | tr '\\0' x; echo; seq 1 20000; echo bye >&2"),
        ),
    );
    let (logs, _g) = capture_logs();
    assert_eq!(run_once(&app, "chatty").await, 0);
    let text = logs.text();
    assert!(text.len() < 8 * 1024 * 1024, "{} bytes of logs", text.len());
    let output = events(&text, "process output");
    assert_eq!(output.len(), RUN_LINES_MAX, "one event per logged line");
    let first = output[0]["line"].as_str().unwrap();
    let marker = format!(" … [cut {} bytes]", BIG - LINE_MAX);
    assert!(first.ends_with(&marker), "{}", &first[first.len() - 60..]);
    assert_eq!(first.len(), LINE_MAX + marker.len());
    assert_eq!(output[1]["line"], "1");
    let limit = events(
        &text,
        "process output limit reached; the rest of this run's output is not logged",
    );
    assert_eq!(limit.len(), 1, "one warning when the limit is reached");
    let summary = events(&text, "process output not logged (over the run's limit)");
    assert_eq!(summary.len(), 1);
    assert_eq!(summary[0]["lines"], 1 + 20_000 + 1 - RUN_LINES_MAX as u64);
    let store = app.store().await;
    assert_eq!(runs(&store, "chatty").await[0].status, RunStatus::Succeeded);
}

#[tokio::test]
async fn a_failed_context_write_fails_the_run() {
    let app = TestApp::new();
    // A real store failure: the database refuses one key.
    let store = soarjobd_store::SqliteStore::open(&app.settings.database_url)
        .await
        .unwrap();
    sqlx::query(
        "CREATE TRIGGER refuse_boom BEFORE INSERT ON job_context WHEN NEW.\"key\" = 'boom' \
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
    )
    .execute(store.pool())
    .await
    .unwrap();
    soarjobd_core::store::RunStore::close(&store).await;
    app.write_job(
        "ctx",
        &job(
            "Ctx",
            "echo '::context {\"cursor\": 42}'; echo '::context {\"boom\": 1}'; exit 0",
        ),
    );
    app.write_job("bad", &job("Bad", "echo '::context not json'; exit 0"));
    app.write_job(
        "half",
        &job(
            "Half",
            "echo '::context {\"boom\": 2}'; echo some failed >&2; exit 3",
        ),
    );
    let (_logs, _g) = capture_logs();
    assert_eq!(run_once(&app, "ctx").await, 1);
    assert_eq!(run_once(&app, "bad").await, 1);
    assert_eq!(run_once(&app, "half").await, 1);
    let store = app.store().await;
    let r = &runs(&store, "ctx").await[0];
    assert_eq!(r.status, RunStatus::Failed);
    let msg = r.message.as_deref().unwrap();
    assert!(
        msg.starts_with(
            "exit status 0, but a ::context write failed (the context key `boom` could not be saved: "
        ) && msg.contains("injected failure")
            && msg.ends_with("the job's context is incomplete"),
        "{msg}"
    );
    // What could be written is, but the window does not move.
    assert_eq!(
        store.context_get("ctx", "cursor").await.unwrap(),
        Some(serde_json::json!(42))
    );
    assert!(
        store
            .get_timestamp("ctx", "timestamp")
            .await
            .unwrap()
            .is_none()
    );
    let r = &runs(&store, "bad").await[0];
    assert_eq!(r.status, RunStatus::Failed);
    assert!(
        r.message
            .as_deref()
            .unwrap()
            .contains("a ::context line is not a JSON object"),
        "{:?}",
        r.message
    );
    let r = &runs(&store, "half").await[0];
    assert_eq!(r.status, RunStatus::Failed, "{:?}", r.message);
    assert!(
        r.message.as_deref().unwrap().starts_with(
            "exit status 3 (partial success): some failed; and a ::context write failed"
        ),
        "{:?}",
        r.message
    );
}

fn soarjobd(dir: &Path, args: &[&str]) -> Command {
    soarjobd_in(dir, args)
}

#[test]
fn carriage_returns_and_ansi_escapes_from_scripts_are_escaped() {
    let app = TestApp::new();
    app.write_job(
        "ansi",
        &job(
            "Ansi",
            r"printf '50%%\rdone \033[31mred\033[0m\n'; printf 'fake\r\033[2Kerror \302\233J\n' >&2; exit 1",
        ),
    );
    let out = soarjobd(
        app.dir.path(),
        &["run-once", "ansi", "--log-format", "pretty"],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let log = String::from_utf8(out.stderr).unwrap();
    assert!(
        !log.bytes().any(|b| b == 0x1b || b == b'\r') && !log.contains('\u{9b}'),
        "raw control characters reached the log: {log:?}"
    );
    assert!(log.contains(r"50%\rdone \x1b[31mred\x1b[0m"), "{log}");
    assert!(log.contains(r"fake\r\x1b[2Kerror \u{9b}J"), "{log}");
    // The stored message (shown by `history`) is escaped the same way.
    let out = soarjobd(app.dir.path(), &["history", "ansi", "--json"])
        .output()
        .unwrap();
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        runs[0]["message"],
        r"exit status 1: fake\r\x1b[2Kerror \u{9b}J"
    );
}

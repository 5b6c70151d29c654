//! Steering a daemon: pause and resume (CLI and the daemon's own control), per-run logs.

use std::process::{Child, Stdio};
use std::time::Duration;

use soarjobd_core::store::ops::PauseOutcome;
use soarjobd_core::store::{RunStatus, Trigger};
use soarjobd_engine::OpsError;

use crate::support::*;

fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}

fn stop(child: &mut Child) {
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    assert_eq!(wait_exit(child, Duration::from_secs(20)), Some(0));
}

fn daemon(dir: &std::path::Path) -> Child {
    soarjobd_in(dir, &["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn cli(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = soarjobd_in(dir, args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The real binary: a pause from the CLI applies to the running daemon, survives a restart
/// (no runs, no catch-up although `misfire: run_once`), shows in `list`, and a resume brings
/// the ticks back without a catch-up run. A run's log is read back with `soarjobd logs` after
/// the daemon stopped and after it restarted, without the run's secret.
#[tokio::test]
async fn a_pause_from_the_cli_survives_a_restart_and_run_logs_outlive_the_daemon() {
    let app = TestApp::new();
    let dir = app.dir.path();
    app.write_job(
        "tick",
        "name: Tick\njob: exec\nschedule: {every: 1s}\nmisfire: run_once\n\
         parameters:\n  - {name: Key, type: password, value: s3cr3t-pw-771}\n\
         command: [/bin/sh, -c, 'echo hello from the run; echo key=s3cr3t-pw-771; echo bye >&2']\n",
    );
    let (code, _, err) = cli(dir, &["pause", "nope", "--reason", "x"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no job `nope`"), "{err}");

    let mut child = daemon(dir);
    let store = app.store().await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            count(&runs(&store, "tick").await, RunStatus::Succeeded) >= 2
        })
        .await
    );
    let (code, out, err) = cli(dir, &["pause", "tick", "--reason", "platform maintenance"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("paused"), "{out}");
    // The daemon re-reads pauses every few seconds; after that, no new run starts.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = runs(&store, "tick").await;
    assert_eq!(count(&before, RunStatus::Running), 0, "{before:?}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        runs(&store, "tick").await.len(),
        before.len(),
        "a paused job ran"
    );

    let (code, out, _) = cli(dir, &["list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("paused") && out.contains("platform maintenance"),
        "{out}"
    );
    let (_, out, _) = cli(dir, &["list", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["paused"]["reason"], "platform maintenance");
    assert!(rows[0]["next"].is_null(), "{rows}");

    stop(&mut child);
    // The run's log, with the daemon stopped.
    let first = before
        .iter()
        .find(|r| r.status == RunStatus::Succeeded)
        .unwrap()
        .id;
    let (code, out, err) = cli(dir, &["logs", &first.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("run started"), "{out}");
    assert!(out.contains("hello from the run"), "{out}");
    assert!(out.contains("bye"), "{out}");
    assert!(out.contains("run finished"), "{out}");
    assert!(!out.contains("s3cr3t-pw-771"), "{out}");

    // Restarted while paused: still no run, and no catch-up for the ticks of the pause.
    let mut child = daemon(dir);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        runs(&store, "tick").await.len(),
        before.len(),
        "ran after restart"
    );
    let (code, out, err) = cli(dir, &["logs", &first.to_string(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines.iter().any(
            |l| l["message"] == "process output" && l["fields"]["line"] == "hello from the run"
        )
    );
    assert!(
        lines
            .windows(2)
            .all(|w| w[0]["seq"].as_i64() < w[1]["seq"].as_i64())
    );

    let (code, out, err) = cli(dir, &["resume", "tick"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("resumed"), "{out}");
    assert!(
        eventually(Duration::from_secs(15), || async {
            count(&runs(&store, "tick").await, RunStatus::Succeeded) > before.len()
        })
        .await,
        "the job did not resume"
    );
    stop(&mut child);
    let all = runs(&store, "tick").await;
    assert!(
        all.iter().all(|r| r.trigger != Trigger::CatchUp),
        "a catch-up ran for the paused ticks: {all:?}"
    );
    let (code, _, err) = cli(dir, &["logs", "999999"]);
    assert_eq!(code, 2, "{err}");
    store.close().await;
}

/// The daemon's own control applies at once; `resume` with catch-up makes exactly one
/// catch-up run for the ticks inside the pause; an unknown job is an error.
#[tokio::test]
async fn resume_with_catch_up_makes_one_catch_up_run() {
    let app = TestApp::new();
    app.write_job("s", &sleep_job("S", "{every: 1s}", 0, ""));
    let daemon = app.start().await;
    let store = app.store().await;
    let pauses = daemon.pauses();
    assert!(matches!(
        pauses.pause("nope", None, "test").await,
        Err(OpsError::UnknownJob(_))
    ));
    assert!(
        eventually(Duration::from_secs(10), || async {
            !runs(&store, "s").await.is_empty()
        })
        .await
    );
    let outcome = pauses
        .pause("s", Some("window"), "test:operator")
        .await
        .unwrap();
    assert!(matches!(outcome, PauseOutcome::Paused(_)));
    assert!(matches!(
        pauses.pause("s", None, "again").await.unwrap(),
        PauseOutcome::AlreadyPaused(p) if p.reason.as_deref() == Some("window")
    ));
    assert_eq!(pauses.pauses().await.unwrap().len(), 1);
    // Applied at once (the control wakes the scheduler): a claim made just before the pause
    // may still run, nothing after.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = runs(&store, "s").await.len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(runs(&store, "s").await.len(), before);
    let ended = pauses.resume("s", true, "test:operator").await.unwrap();
    assert!(ended.is_some_and(|e| e.catch_up));
    assert!(
        eventually(Duration::from_secs(10), || async {
            runs(&store, "s")
                .await
                .iter()
                .any(|r| r.trigger == Trigger::CatchUp && r.status.is_final())
        })
        .await,
        "no catch-up run"
    );
    assert!(pauses.resume("s", false, "t").await.unwrap().is_none());
    daemon.shutdown().await;
    let catch_ups = runs(&store, "s")
        .await
        .iter()
        .filter(|r| r.trigger == Trigger::CatchUp)
        .count();
    assert_eq!(catch_ups, 1);
    store.close().await;
}

/// `logs --follow` prints a run's lines as they come and returns once the run has ended.
#[tokio::test]
async fn logs_follow_prints_lines_until_the_run_ends() {
    // Run logs are captured by the subscriber's layer (the daemon's global one in production).
    let (_logs, _guard) = capture_logs();
    let app = TestApp::new();
    app.write_job(
        "slowly",
        "name: Slowly\njob: exec\nschedule: {every: 1h}\ncommand: [/bin/sh, -c, 'echo first line; sleep 2; echo second line']\n",
    );
    let store = app.store().await;
    let daemon = app.builder().run_at_start(true).start().await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            !runs(&store, "slowly").await.is_empty()
        })
        .await
    );
    let run = runs(&store, "slowly").await[0].id;
    let dir = app.dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        soarjobd_in(&dir, &["logs", &run.to_string(), "--follow"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let first = text.find("first line").expect("first line");
    let second = text.find("second line").expect("second line");
    let finished = text.find("run finished").expect("the end of the run");
    assert!(first < second && second < finished, "{text}");
    assert!(runs(&store, "slowly").await[0].status.is_final());
    daemon.shutdown().await;
    store.close().await;
}

/// A `resume --catch-up` made while no daemon ran is honoured when one starts.
#[tokio::test]
async fn a_catch_up_asked_while_the_daemon_was_down_runs_at_its_start() {
    let app = TestApp::new();
    app.write_job("s", &sleep_job("S", "{every: 1s}", 0, "misfire: skip\n"));
    let store = app.store().await;
    let now = chrono::Utc::now();
    store
        .pause_job(
            "s",
            Some("window"),
            "test",
            now - chrono::Duration::seconds(10),
        )
        .await
        .unwrap();
    store.resume_job("s", true, "test", now).await.unwrap();
    let daemon = app.start().await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            runs(&store, "s")
                .await
                .iter()
                .any(|r| r.trigger == Trigger::CatchUp)
        })
        .await,
        "no catch-up run"
    );
    daemon.shutdown().await;
    let all = runs(&store, "s").await;
    assert_eq!(
        all.iter().filter(|r| r.trigger == Trigger::CatchUp).count(),
        1
    );
    assert!(store.take_catch_ups().await.unwrap().is_empty());
    store.close().await;
}

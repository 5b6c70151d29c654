//! The real binary as a user runs it: `check`, `next`, SIGTERM and SIGKILL.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use soarjobd_core::store::RunStatus;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_soarjobd");

fn soarjobd(dir: &Path, args: &[&str]) -> Command {
    soarjobd_in(dir, args)
}

#[test]
fn check_lists_every_error_with_its_line_and_exits_1() {
    let app = TestApp::new();
    app.write_job(
        "good",
        "name: Good\njob: exec\nschedule: {every: 15m}\ncommand: [/bin/true]\n",
    );
    app.write_job(
        "unknown-key",
        "name: U\njob: exec\ncommand: [/bin/true]\ntimout: 5m\n",
    );
    app.write_job(
        "bad-cron",
        "name: C\njob: exec\nschedule:\n  cron: \"0 25 * * *\"\ncommand: [/bin/true]\n",
    );
    app.write_job(
        "no-param",
        "name: P\njob: exec\ncommand: [/bin/true]\nparameters:\n  - name: Tags\n    type: csv\n    is_mandatory: true\n",
    );
    let out = soarjobd(app.dir.path(), &["check"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let jobs = app.jobs_dir().display().to_string();
    assert!(
        stdout.contains("good  job=exec  enabled  every 15m"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "{jobs}/unknown-key.yaml:4:1: unknown key `timout` (did you mean `timeout`?)"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "{jobs}/bad-cron.yaml:4:9: invalid cron expression"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "{jobs}/no-param.yaml:5:5: missing mandatory parameter Tags"
        )),
        "{stdout}"
    );
    assert!(stdout.contains("1 job(s) valid, 3 error(s)"), "{stdout}");

    let out = soarjobd(app.dir.path(), &["check", "--json"])
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["jobs"][0]["id"], "good");
    assert_eq!(doc["jobs"][0]["next"].as_array().unwrap().len(), 3);
    assert_eq!(doc["errors"].as_array().unwrap().len(), 3);
    assert_eq!(doc["errors"][0]["line"], 4);
}

#[test]
fn check_never_prints_passwords() {
    let app = TestApp::new();
    app.write_job(
        "secret",
        "name: S\njob: exec\ncommand: [/bin/true]\nparameters:\n  - {name: Key, type: password, value: hunter2-xyz}\n  - {name: N, type: integer, value: nope}\n",
    );
    let out = soarjobd(app.dir.path(), &["check", "--json"])
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("hunter2-xyz"), "{all}");
}

#[test]
fn next_handles_the_spring_forward_gap() {
    let out = Command::new(BIN)
        .args([
            "next",
            "30 2 * * *",
            "--tz",
            "America/New_York",
            "--from",
            "2027-03-13T00:00:00Z",
            "-n",
            "3",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    // 2:30 does not exist on 2027-03-14 (clocks jump from 2:00 to 3:00): it fires once at
    // 3:00 EDT, the first instant after the gap.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "2027-03-13T02:30:00-05:00\n2027-03-14T03:00:00-04:00\n2027-03-15T02:30:00-04:00\n"
    );
    let out = Command::new(BIN)
        .args(["next", "61 * * * *"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid cron expression"));
}

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

fn signal(child: &Child, sig: i32) {
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

#[tokio::test]
async fn sigterm_waits_for_the_running_job_and_exits_0() {
    let app = TestApp::new();
    let marker = app.path("started");
    app.write_job(
        "slow",
        &format!(
            "name: Slow\njob: exec\nschedule: {{every: 1s}}\ncommand: [/bin/sh, -c, 'touch {}; sleep 2']\n",
            marker.display()
        ),
    );
    let mut child = soarjobd(app.dir.path(), &["run", "--log-format", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || async { marker.exists() }).await);
    signal(&child, libc::SIGTERM);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(20)), Some(0));
    let store = app.store().await;
    let runs = runs(&store, "slow").await;
    assert!(!runs.is_empty());
    assert_eq!(count(&runs, RunStatus::Running), 0);
    assert_eq!(
        count(&runs, RunStatus::Cancelled),
        0,
        "the running job was not allowed to finish"
    );
    assert_eq!(
        count(&runs, RunStatus::Succeeded),
        runs.len() - count(&runs, RunStatus::Skipped)
    );
}

#[tokio::test]
async fn a_sigkilled_daemon_neither_loses_nor_repeats_a_tick() {
    let app = TestApp::new();
    let log = app.path("ticks.log");
    // Each run appends its stdin document (with scheduled_at and run_id) to ticks.log.
    app.write_job(
        "tick",
        &format!(
            "name: Tick\njob: exec\nschedule: {{every: 1s}}\nmisfire: run_once\ncommand: [/bin/sh, -c, 'read -r doc; echo \"$doc\" >> {}; sleep 0.3']\n",
            log.display()
        ),
    );
    for round in 0..2 {
        let mut child = soarjobd(app.dir.path(), &["run"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Wait for two more runs to have started (not a fixed time: a loaded machine starts
        // the binary slowly). The second one is then in its `sleep`, so the signal lands
        // mid-run.
        let lines = |p: &std::path::Path| {
            std::fs::read_to_string(p)
                .map(|s| s.lines().count())
                .unwrap_or(0)
        };
        let before = lines(&log);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while lines(&log) < before + 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: the daemon ran no two ticks in 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if round == 0 {
            signal(&child, libc::SIGKILL);
            let _ = child.wait();
        } else {
            signal(&child, libc::SIGTERM);
            assert_eq!(wait_exit(&mut child, Duration::from_secs(20)), Some(0));
        }
    }
    let store = app.store().await;
    let runs = runs(&store, "tick").await;
    assert_eq!(
        count(&runs, RunStatus::Running),
        0,
        "a row was left running"
    );
    // Every tick that executed did so exactly once.
    let mut executed: HashMap<String, usize> = HashMap::new();
    for line in std::fs::read_to_string(&log).unwrap().lines() {
        let doc: serde_json::Value = serde_json::from_str(line).unwrap();
        *executed
            .entry(doc["scheduled_at"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    for (tick, n) in &executed {
        assert_eq!(*n, 1, "tick {tick} ran {n} times");
    }
    // Every finished run is still recorded, and its effect happened.
    let succeeded: Vec<_> = runs
        .iter()
        .filter(|r| r.status == RunStatus::Succeeded)
        .collect();
    assert!(succeeded.len() >= 3, "{runs:?}");
    for r in succeeded {
        assert!(
            executed.contains_key(&r.scheduled_at.to_rfc3339()),
            "run {} has no effect",
            r.id
        );
    }
}

#[test]
fn check_passes_on_the_repository_jobs_and_config() {
    let out = Command::new(BIN)
        .arg("check")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("SOARJOBD_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("comment-on-tagged-cases  job=comment-on-tagged-cases  enabled"),
        "{stdout}"
    );
    assert!(stdout.contains(" 0 error(s)"), "{stdout}");
}

#[test]
fn run_once_list_and_history_work_from_the_command_line() {
    let app = TestApp::new();
    app.write_job(
        "hello",
        "name: Hello\njob: exec\nschedule: {every: 10m}\nparameters:\n  - {name: Who, type: string, value: world}\ncommand: [/bin/sh, -c, 'read -r doc; echo \"::stats {\\\"greeted\\\": 1}\"']\n",
    );
    let out = soarjobd(app.dir.path(), &["run-once", "hello", "--param", "Who=you"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("succeeded"));
    let out = soarjobd(app.dir.path(), &["run-once", "hello", "--param", "Nope=1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    let out = soarjobd(app.dir.path(), &["list", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["id"], "hello");
    assert_eq!(list[0]["last_run"]["status"], "succeeded");
    assert!(list[0]["last_success"].is_string(), "{list}");
    assert!(list[0]["next"].is_string(), "{list}");

    let out = soarjobd(app.dir.path(), &["history", "hello", "--json"])
        .output()
        .unwrap();
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 1);
    assert_eq!(runs[0]["trigger"], "manual");
    assert_eq!(runs[0]["stats"]["greeted"], 1);
    let out = soarjobd(app.dir.path(), &["history", "hello"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("succeeded") && text.contains("manual"),
        "{text}"
    );
}

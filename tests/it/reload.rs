//! Hot reload as an operator sees it, with the real binary: no reload without a change, one
//! reload per edit, and a jobs folder that vanishes and comes back.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_soarjobd");

/// The daemon with JSON logs to `<dir>/daemon.log` and the given `reload_poll`.
fn start(app: &TestApp, poll: &str) -> (Child, PathBuf) {
    let log = app.path("daemon.log");
    let child = Command::new(BIN)
        .args(["run", "--log-format", "json", "--log-level", "info"])
        .current_dir(app.dir.path())
        .env_remove("RUST_LOG")
        .env_remove("SOARJOBD_CONFIG")
        .env("SOARJOBD__JOBS_DIR", app.jobs_dir())
        .env(
            "SOARJOBD__DATABASE_URL",
            format!("sqlite:{}", app.path("state.db").display()),
        )
        .env("SOARJOBD__RELOAD_POLL", poll)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    (child, log)
}

/// Log lines whose message is `message`.
fn lines(log: &Path, message: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == message)
        .collect()
}

fn stop(mut child: Child) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if let Some(s) = child.try_wait().unwrap() {
            assert_eq!(s.code(), Some(0));
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("the daemon did not stop on SIGTERM");
}

const JOB: &str = "name: Quiet\njob: exec\nschedule: {every: 1h}\ncommand: [/bin/true]\n";

#[tokio::test]
async fn no_reload_without_a_change_and_one_per_edit() {
    let app = TestApp::new();
    app.write_job("quiet", JOB);
    let (child, log) = start(&app, "1s");
    assert!(
        eventually(Duration::from_secs(20), || async {
            !lines(&log, "daemon started").is_empty()
        })
        .await
    );
    // Ten polls, each reading every job file: reads are not changes.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let reloads = lines(&log, "jobs folder reloaded");
    assert!(reloads.is_empty(), "reloads without a change: {reloads:#?}");

    // One edit: exactly one reload, whichever trigger (event or poll) sees it first.
    app.write_job("quiet", &JOB.replace("Quiet", "Quiet edited"));
    assert!(
        eventually(Duration::from_secs(20), || async {
            lines(&log, "job loaded")
                .iter()
                .any(|l| l["changed"] == true)
        })
        .await,
        "the edit was not loaded"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(lines(&log, "jobs folder reloaded").len(), 1);

    // A touch and a read change nothing: no reload, and certainly no storm.
    let file = app.jobs_dir().join("quiet.yaml");
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(std::time::SystemTime::now())
        .unwrap();
    let _ = std::fs::read_to_string(&file).unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        lines(&log, "jobs folder reloaded").len(),
        1,
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    stop(child);
}

#[tokio::test]
async fn a_vanished_jobs_folder_keeps_the_jobs_and_is_watched_again_when_it_returns() {
    let app = TestApp::new();
    let out = app.path("ticks");
    app.write_job(
        "tick",
        &format!(
            "name: Tick\njob: exec\nschedule: {{every: 1s}}\ncommand: [/bin/sh, -c, 'echo x >> {}']\n",
            out.display()
        ),
    );
    // A poll far away: whatever happens below is seen through the folder check and file
    // events only.
    let (child, log) = start(&app, "1h");
    let ticks = || {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert!(eventually(Duration::from_secs(20), || async { ticks() >= 1 }).await);

    // The folder goes away (a redeploy moves it, an NFS mount drops).
    let away = app.path("jobs.old");
    std::fs::rename(app.jobs_dir(), &away).unwrap();
    let gone = "the jobs folder is gone or unreadable; keeping the last good jobs until it returns";
    assert!(
        eventually(Duration::from_secs(20), || async {
            !lines(&log, gone).is_empty()
        })
        .await,
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    let before = ticks();
    // Several folder checks later: still one warning, the job still runs.
    assert!(eventually(Duration::from_secs(20), || async { ticks() >= before + 3 }).await);
    assert_eq!(lines(&log, gone).len(), 1);
    assert!(lines(&log, "job removed").is_empty());

    // A new folder of the same name comes back with the same job (moved into place whole, as
    // a redeploy does), then gets a second one: file events must see it long before the
    // one-hour poll.
    let new = app.path("jobs.new");
    std::fs::create_dir(&new).unwrap();
    std::fs::copy(away.join("tick.yaml"), new.join("tick.yaml")).unwrap();
    std::fs::rename(&new, app.jobs_dir()).unwrap();
    assert!(
        eventually(Duration::from_secs(20), || async {
            !lines(&log, "the jobs folder is back; watching it again").is_empty()
        })
        .await
    );
    app.write_job("second", JOB.replace("Quiet", "Second").as_str());
    assert!(
        eventually(Duration::from_secs(20), || async {
            lines(&log, "job loaded")
                .iter()
                .any(|l| l["job_id"] == "second")
        })
        .await,
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert_eq!(lines(&log, gone).len(), 1);
    assert!(lines(&log, "job removed").is_empty());
    stop(child);
}

#[tokio::test]
async fn a_changed_value_from_file_in_the_jobs_folder_reloads_its_job_without_the_poll() {
    let app = TestApp::new();
    let key = app.jobs_dir().join("api-key");
    std::fs::write(&key, "first\n").unwrap();
    app.write_job(
        "keyed",
        "name: Keyed\njob: exec\nschedule: {every: 1h}\ncommand: [/bin/true]\nparameters:\n  - {name: Key, type: password, value_from_file: api-key}\n",
    );
    let (child, log) = start(&app, "1h");
    assert!(
        eventually(Duration::from_secs(20), || async {
            !lines(&log, "daemon started").is_empty()
        })
        .await
    );
    // Rotate the secret (write-then-rename, as secret managers do).
    let tmp = app.jobs_dir().join(".api-key.tmp");
    std::fs::write(&tmp, "second\n").unwrap();
    std::fs::rename(&tmp, &key).unwrap();
    assert!(
        eventually(Duration::from_secs(20), || async {
            lines(&log, "job loaded")
                .iter()
                .any(|l| l["job_id"] == "keyed" && l["changed"] == true)
        })
        .await,
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    let all = std::fs::read_to_string(&log).unwrap();
    assert!(!all.contains("second") && !all.contains("first"), "{all}");
    stop(child);
}

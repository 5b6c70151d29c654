//! Several soarjobd processes on one database, with the real binary: a second daemon is
//! refused, `run-once` and the daemon apply `overlap` to each other's runs, and the row of a
//! killed `run-once` is found dead.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use soarjobd_core::store::{RunStatus, Trigger};

use crate::support::*;

fn soarjobd(dir: &Path, args: &[&str]) -> Command {
    let mut c = soarjobd_in(dir, args);
    c.stdout(Stdio::null()).stderr(Stdio::null());
    c
}

fn output(dir: &Path, args: &[&str]) -> Output {
    soarjobd(dir, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A job that touches `marker` when it starts, then sleeps.
fn marked_job(name: &str, schedule: &str, overlap: &str, marker: &Path, secs: f64) -> String {
    format!(
        "name: {name}\njob: exec\nschedule: {schedule}\noverlap: {overlap}\ncommand: [/bin/sh, -c, 'touch {}; sleep {secs}']\n",
        marker.display()
    )
}

async fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn signal(child: &Child, sig: i32) {
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

async fn exists(path: &Path) -> bool {
    eventually(Duration::from_secs(15), || async { path.exists() }).await
}

#[tokio::test]
async fn a_second_daemon_on_the_same_database_is_refused_while_the_cli_keeps_working() {
    let app = TestApp::new();
    let marker = app.path("ran");
    app.write_job(
        "tick",
        &marked_job("Tick", "{every: 1s}", "skip", &marker, 0.0),
    );
    app.write_job(
        "manual",
        "name: Manual\njob: exec\nschedule: {every: 1h}\ncommand: [/bin/true]\n",
    );
    let mut first = soarjobd(app.dir.path(), &["run"]).spawn().unwrap();
    assert!(exists(&marker).await, "the first daemon never ran its job");

    let second = output(app.dir.path(), &["run"]);
    assert_eq!(second.status.code(), Some(2), "{}", stderr(&second));
    assert!(
        stderr(&second).contains(&format!(
            "database is in use by soarjobd pid {} on host ",
            first.id()
        )),
        "{}",
        stderr(&second)
    );
    // The first daemon's runs were left alone and it goes on running its job.
    let store = app.store().await;
    let before = runs(&store, "tick").await.len();
    assert_eq!(
        count(&runs(&store, "tick").await, RunStatus::Interrupted),
        0
    );

    // The CLI works next to it.
    for args in [
        &["list"][..],
        &["history", "tick"][..],
        &["run-once", "manual"][..],
    ] {
        let o = output(app.dir.path(), args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
    }
    // `history` of a job that has neither a file nor runs is a usage error naming the jobs.
    let o = output(app.dir.path(), &["history", "tikc"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no job `tikc`") && stderr(&o).contains("known jobs: manual, tick"),
        "{}",
        stderr(&o)
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            runs(&store, "tick").await.len() > before + 1
        })
        .await
    );

    // The lock dies with its process, even with SIGKILL: a new daemon starts at once.
    signal(&first, libc::SIGKILL);
    let _ = first.wait();
    let mut third = soarjobd(app.dir.path(), &["run"]).spawn().unwrap();
    let last = runs(&store, "tick").await.len();
    assert!(
        eventually(Duration::from_secs(10), || async {
            runs(&store, "tick").await.len() > last
        })
        .await,
        "the daemon after the killed one did not run"
    );
    signal(&third, libc::SIGTERM);
    assert_eq!(
        wait_exit(&mut third, Duration::from_secs(20)).await,
        Some(0)
    );

    // A removed job's history is still shown.
    std::fs::remove_file(app.jobs_dir().join("tick.yaml")).unwrap();
    let o = output(app.dir.path(), &["history", "tick"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("succeeded"));
}

#[tokio::test]
async fn run_once_and_the_daemon_apply_overlap_skip_to_each_other() {
    let app = TestApp::new();
    let manual_marker = app.path("manual-started");
    let daemon_marker = app.path("daemon-started");
    let allow_marker = app.path("allow-started");
    let replace_marker = app.path("replace-started");
    // `shared` runs every second when the daemon runs it; the manual run below holds it.
    app.write_job(
        "shared",
        &marked_job("Shared", "{every: 1s}", "skip", &manual_marker, 3.0),
    );
    app.write_job(
        "busy",
        &marked_job("Busy", "{every: 1s}", "skip", &daemon_marker, 4.0),
    );
    app.write_job(
        "both",
        &marked_job("Both", "{every: 1s}", "allow", &allow_marker, 4.0),
    );
    app.write_job(
        "newest",
        &marked_job("Newest", "{every: 1s}", "replace", &replace_marker, 4.0),
    );

    // 1. A manual run starts before the daemon: the daemon's startup must not mark it
    //    interrupted, and its ticks of `shared` are skipped while the manual run lives.
    let mut manual = soarjobd(app.dir.path(), &["run-once", "shared"])
        .spawn()
        .unwrap();
    assert!(exists(&manual_marker).await);
    let mut daemon = soarjobd(app.dir.path(), &["run"]).spawn().unwrap();
    assert_eq!(
        wait_exit(&mut manual, Duration::from_secs(20)).await,
        Some(0)
    );

    // 2. The daemon runs `busy`: a manual run of it is refused, with the reason. The marker
    //    is removed first so that the wait ends at the start of a run (4 s left to live), not
    //    in a gap between two runs.
    assert!(exists(&daemon_marker).await);
    std::fs::remove_file(&daemon_marker).unwrap();
    assert!(exists(&daemon_marker).await);
    let refused = output(app.dir.path(), &["run-once", "busy"]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("job `busy` is already running: run ")
            && stderr(&refused).contains(&format!("soarjobd pid {}", daemon.id())),
        "{}",
        stderr(&refused)
    );

    // `overlap: replace` cannot cancel another process's run: run-once refuses as for skip.
    assert!(exists(&replace_marker).await);
    let refused = output(app.dir.path(), &["run-once", "newest"]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("replace, which cannot cancel a run of another process"),
        "{}",
        stderr(&refused)
    );

    // 3. `overlap: allow`: both run.
    assert!(exists(&allow_marker).await);
    let allowed = output(app.dir.path(), &["run-once", "both"]);
    assert_eq!(allowed.status.code(), Some(0), "{}", stderr(&allowed));

    // Let the daemon run `shared` on its own again after the manual run ended.
    let store = app.store().await;
    assert!(
        eventually(Duration::from_secs(15), || async {
            runs(&store, "shared")
                .await
                .iter()
                .any(|r| r.trigger == Trigger::Schedule && r.status == RunStatus::Succeeded)
        })
        .await
    );
    signal(&daemon, libc::SIGTERM);
    assert_eq!(
        wait_exit(&mut daemon, Duration::from_secs(30)).await,
        Some(0)
    );

    let shared = runs(&store, "shared").await;
    let manual_row = shared
        .iter()
        .find(|r| r.trigger == Trigger::Manual)
        .expect("the manual run is recorded");
    assert_eq!(manual_row.status, RunStatus::Succeeded, "{shared:?}");
    assert!(
        shared.iter().any(|r| r.status == RunStatus::Skipped
            && r.message
                .as_deref()
                .is_some_and(|m| m.contains("another process is running this job"))),
        "no tick was skipped for the manual run: {shared:?}"
    );
    // No two runs of an `overlap: skip` job ever ran at the same time.
    for job in ["shared", "busy"] {
        let ran: Vec<_> = runs(&store, job)
            .await
            .into_iter()
            .filter(|r| r.status != RunStatus::Skipped)
            .collect();
        for (i, a) in ran.iter().enumerate() {
            for b in &ran[i + 1..] {
                let (a_end, b_end) = (a.finished_at.unwrap(), b.finished_at.unwrap());
                assert!(
                    a_end <= b.started_at || b_end <= a.started_at,
                    "{job}: runs {} and {} overlap: {ran:?}",
                    a.id,
                    b.id
                );
            }
        }
    }
    let both = runs(&store, "both").await;
    assert!(
        both.iter()
            .any(|r| r.trigger == Trigger::Manual && r.status == RunStatus::Succeeded)
    );
}

#[tokio::test]
async fn the_row_of_a_killed_run_once_is_found_dead_and_does_not_block_the_job() {
    let app = TestApp::new();
    let marker = app.path("started");
    app.write_job(
        "long",
        &marked_job("Long", "{every: 1h}", "skip", &marker, 30.0),
    );
    let mut killed = soarjobd(app.dir.path(), &["run-once", "long"])
        .spawn()
        .unwrap();
    assert!(exists(&marker).await);
    signal(&killed, libc::SIGKILL);
    let _ = killed.wait();
    let store = app.store().await;
    let row = runs(&store, "long").await.remove(0);
    assert_eq!(row.status, RunStatus::Running);

    // The next claim of the job finds the row's process gone: it marks it interrupted and
    // runs, instead of refusing forever.
    std::fs::remove_file(&marker).unwrap();
    app.write_job(
        "long",
        &marked_job("Long", "{every: 1h}", "skip", &marker, 0.0),
    );
    let o = output(app.dir.path(), &["run-once", "long"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let all = runs(&store, "long").await;
    assert_eq!(all[0].status, RunStatus::Interrupted, "{all:?}");
    assert!(all[0].finished_at.unwrap() >= all[0].started_at);
    assert_eq!(all[1].status, RunStatus::Succeeded, "{all:?}");
}

/// A run claimed ahead of its instant (with its nominal start) that fires late because the
/// daemon was stopped records when it really started.
#[tokio::test]
async fn a_run_delayed_by_sigstop_records_its_real_start() {
    let app = TestApp::new();
    let log = app.path("starts.log");
    app.write_job(
        "tick",
        &format!(
            "name: Tick\njob: exec\nschedule: {{every: 1s}}\ncommand: [/bin/sh, -c, 'read -r doc; echo \"$(date +%s%3N) $doc\" >> {}']\n",
            log.display()
        ),
    );
    let mut daemon = soarjobd(app.dir.path(), &["run"]).spawn().unwrap();
    let store = app.store().await;
    assert!(
        eventually(Duration::from_secs(15), || async {
            count(&runs(&store, "tick").await, RunStatus::Succeeded) >= 2
        })
        .await
    );
    for _ in 0..2 {
        // Ticks are whole seconds, claimed 250 ms ahead: stopping 100 ms before the next one
        // lands between its claim and its fire.
        let now = chrono::Utc::now().timestamp_millis();
        let wait = 1_000 - now.rem_euclid(1_000);
        let wait = if wait > 150 { wait - 100 } else { wait + 900 };
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        signal(&daemon, libc::SIGSTOP);
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        signal(&daemon, libc::SIGCONT);
        tokio::time::sleep(Duration::from_millis(1_500)).await;
    }
    signal(&daemon, libc::SIGTERM);
    assert_eq!(
        wait_exit(&mut daemon, Duration::from_secs(20)).await,
        Some(0)
    );

    let all = runs(&store, "tick").await;
    let mut checked = 0;
    for line in std::fs::read_to_string(&log).unwrap().lines() {
        let (ms, doc) = line.split_once(' ').unwrap();
        let real: i64 = ms.parse().unwrap();
        let doc: serde_json::Value = serde_json::from_str(doc).unwrap();
        let run = all
            .iter()
            .find(|r| Some(r.id) == doc["run_id"].as_i64())
            .expect("the run is recorded");
        let recorded = run.started_at.timestamp_millis();
        assert!(
            (real - recorded).abs() < 1_000,
            "run {} really started at {real} but records {recorded}: {all:?}",
            run.id
        );
        checked += 1;
    }
    assert!(checked >= 4, "{all:?}");
}

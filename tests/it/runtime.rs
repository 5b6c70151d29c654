//! The daemon runtime in-process: ticks, overlap, timeout, panics, recovery, misfire,
//! shutdown and hot reload.

use std::time::Duration;

use chrono::{Timelike, Utc};
use soarjobd_core::store::{NewRun, RunStatus, Trigger};

use crate::support::*;

#[tokio::test]
async fn a_one_second_job_runs_once_per_tick() {
    let app = TestApp::new();
    app.write_job("tick", &sleep_job("Tick", "{every: 1s}", 0, ""));
    let d = app.start().await;
    tokio::time::sleep(Duration::from_millis(4500)).await;
    d.shutdown().await;
    let store = app.store().await;
    let runs = runs(&store, "tick").await;
    // 4.5 s of a 1 s schedule: 4 or 5 ticks depending on where in the second we started.
    assert!((3..=6).contains(&runs.len()), "{} runs", runs.len());
    let mut ticks: Vec<_> = runs.iter().map(|r| r.scheduled_at).collect();
    ticks.dedup();
    assert_eq!(ticks.len(), runs.len(), "a tick ran twice");
    for r in &runs {
        assert_eq!(r.status, RunStatus::Succeeded);
        assert_eq!(r.trigger, Trigger::Schedule);
        assert_eq!(
            r.scheduled_at.nanosecond(),
            0,
            "ticks are aligned to whole seconds"
        );
        assert!(
            r.started_at >= r.scheduled_at,
            "a run started before its tick"
        );
    }
    for w in runs.windows(2) {
        assert_eq!((w[1].scheduled_at - w[0].scheduled_at).num_seconds(), 1);
    }
}

#[tokio::test]
async fn overlap_skip_records_skipped_runs_and_never_overlaps() {
    let app = TestApp::new();
    app.write_job(
        "slow",
        &sleep_job("Slow", "{every: 1s}", 2500, "overlap: skip\n"),
    );
    let d = app.start().await;
    let store = d.store().clone();
    assert!(
        eventually(Duration::from_secs(10), || async {
            count(&runs(&store, "slow").await, RunStatus::Skipped) >= 2
        })
        .await
    );
    d.shutdown().await;
    let store = app.store().await;
    let runs = runs(&store, "slow").await;
    let skipped: Vec<_> = runs
        .iter()
        .filter(|r| r.status == RunStatus::Skipped)
        .collect();
    assert_eq!(
        skipped[0].message.as_deref(),
        Some("previous run still running")
    );
    for r in runs.iter().filter(|r| r.status == RunStatus::Succeeded) {
        assert_eq!(
            r.stats["max_in_flight"], 1,
            "two runs of a skip job overlapped"
        );
    }
}

#[tokio::test]
async fn overlap_allow_runs_concurrently() {
    let app = TestApp::new();
    app.write_job(
        "par",
        &sleep_job("Par", "{every: 1s}", 2500, "overlap: allow\n"),
    );
    let d = app.start().await;
    let store = d.store().clone();
    assert!(
        eventually(Duration::from_secs(10), || async {
            runs(&store, "par")
                .await
                .iter()
                .any(|r| r.stats["max_in_flight"].as_i64() >= Some(2))
        })
        .await,
        "runs never overlapped"
    );
    d.shutdown().await;
    let store = app.store().await;
    assert_eq!(count(&runs(&store, "par").await, RunStatus::Skipped), 0);
}

#[tokio::test]
async fn overlap_replace_cancels_the_running_run() {
    let app = TestApp::new();
    app.write_job(
        "rep",
        &sleep_job("Rep", "{every: 1s}", 5000, "overlap: replace\n"),
    );
    let d = app.start().await;
    let store = d.store().clone();
    assert!(
        eventually(Duration::from_secs(10), || async {
            count(&runs(&store, "rep").await, RunStatus::Cancelled) >= 2
        })
        .await
    );
    d.shutdown().await;
    let store = app.store().await;
    let runs = runs(&store, "rep").await;
    let c = runs
        .iter()
        .find(|r| r.status == RunStatus::Cancelled)
        .unwrap();
    assert!(
        c.message.as_deref().unwrap().contains("replace"),
        "{:?}",
        c.message
    );
}

#[tokio::test]
async fn a_run_over_its_timeout_is_timed_out() {
    let app = TestApp::new();
    app.write_job(
        "late",
        &sleep_job("Late", "{every: 1h}", 60_000, "timeout: 1s\n"),
    );
    let d = app.builder().run_at_start(true).start().await.unwrap();
    let store = d.store().clone();
    assert!(
        eventually(Duration::from_secs(10), || async {
            count(&runs(&store, "late").await, RunStatus::TimedOut) == 1
        })
        .await
    );
    d.shutdown().await;
    let store = app.store().await;
    let r = &runs(&store, "late").await[0];
    assert_eq!(r.message.as_deref(), Some("the run exceeded its timeout"));
    assert!(r.duration_ms.unwrap() < 5000, "{:?}", r.duration_ms);
}

#[tokio::test]
async fn a_job_that_ignores_cancellation_is_aborted_after_the_grace() {
    let app = TestApp::new();
    let yaml = "name: Stubborn\njob: sleep\nschedule: {every: 1h}\ntimeout: 1s\nparameters:\n  - {name: Millis, type: integer, value: 60000}\n  - {name: Ignore Cancel, type: boolean, value: true}\n";
    app.write_job("stubborn", yaml);
    let d = app.builder().run_at_start(true).start().await.unwrap();
    let store = d.store().clone();
    assert!(
        eventually(Duration::from_secs(20), || async {
            count(&runs(&store, "stubborn").await, RunStatus::TimedOut) == 1
        })
        .await
    );
    d.shutdown().await;
}

#[tokio::test]
async fn a_panic_fails_the_run_and_the_job_keeps_its_schedule() {
    let app = TestApp::new();
    app.write_job("boom", "name: Boom\njob: panics\nschedule: {every: 1s}\n");
    let d = app.start().await;
    let store = d.store().clone();
    assert!(
        eventually(Duration::from_secs(10), || async {
            count(&runs(&store, "boom").await, RunStatus::Failed) >= 2
        })
        .await,
        "the job did not run again after its panic"
    );
    d.shutdown().await;
    let store = app.store().await;
    let r = &runs(&store, "boom").await[0];
    assert_eq!(
        r.message.as_deref(),
        Some("the job panicked: boom in the job")
    );
}

#[tokio::test]
async fn running_rows_of_a_dead_process_become_interrupted() {
    let app = TestApp::new();
    app.write_job("x", &sleep_job("X", "{every: 1h}", 0, ""));
    let store = app.store().await;
    let now = Utc::now();
    store
        .claim_runs(&[NewRun {
            job_id: "x".into(),
            scheduled_at: now - chrono::Duration::hours(1),
            trigger: Trigger::Schedule,
            status: RunStatus::Running,
            started_at: now,
            message: None,
        }])
        .await
        .unwrap();
    store.close().await;
    let d = app.start().await;
    let store = d.store().clone();
    let r = &runs(&store, "x").await[0];
    assert_eq!(r.status, RunStatus::Interrupted);
    d.shutdown().await;
}

async fn misfire_case(policy: &str) -> Vec<soarjobd_core::store::RunRecord> {
    let app = TestApp::new();
    app.write_job(
        "m",
        &sleep_job("M", "{every: 1s}", 0, &format!("misfire: {policy}\n")),
    );
    // A tick claimed 30 s ago and nothing since: the daemon was down for 30 ticks.
    let store = app.store().await;
    let then = Utc::now() - chrono::Duration::seconds(30);
    let then = then.with_nanosecond(0).unwrap();
    store
        .claim_runs(&[NewRun {
            job_id: "m".into(),
            scheduled_at: then,
            trigger: Trigger::Schedule,
            status: RunStatus::Succeeded,
            started_at: then,
            message: None,
        }])
        .await
        .unwrap();
    store.close().await;
    let (logs, _g) = capture_logs();
    let d = app.start().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    d.shutdown().await;
    let store = app.store().await;
    let text = logs.text();
    assert!(text.contains("\"message\":\"ticks missed\""), "{text}");
    runs(&store, "m").await
}

#[tokio::test]
async fn misfire_run_once_makes_one_catch_up_run() {
    let runs = misfire_case("run_once").await;
    assert_eq!(
        runs.iter()
            .filter(|r| r.trigger == Trigger::CatchUp)
            .count(),
        1
    );
}

#[tokio::test]
async fn misfire_skip_waits_for_the_next_tick() {
    let runs = misfire_case("skip").await;
    assert_eq!(
        runs.iter()
            .filter(|r| r.trigger == Trigger::CatchUp)
            .count(),
        0
    );
}

#[tokio::test]
async fn shutdown_waits_for_a_running_job() {
    let app = TestApp::new();
    app.write_job("busy", &sleep_job("Busy", "{every: 1h}", 1500, ""));
    let d = app.builder().run_at_start(true).start().await.unwrap();
    assert!(eventually(Duration::from_secs(5), || async { d.running() == 1 }).await);
    d.shutdown().await;
    let store = app.store().await;
    let r = &runs(&store, "busy").await[0];
    assert_eq!(r.status, RunStatus::Succeeded, "{:?}", r.message);
}

#[tokio::test]
async fn shutdown_cancels_jobs_that_outlive_the_grace() {
    let mut app = TestApp::new();
    app.settings.shutdown_grace = Duration::from_millis(300);
    app.write_job("forever", &sleep_job("Forever", "{every: 1h}", 600_000, ""));
    let d = app.builder().run_at_start(true).start().await.unwrap();
    assert!(eventually(Duration::from_secs(5), || async { d.running() == 1 }).await);
    d.shutdown().await;
    let store = app.store().await;
    let r = &runs(&store, "forever").await[0];
    assert_eq!(r.status, RunStatus::Cancelled);
}

#[tokio::test]
async fn a_dropped_file_starts_running_and_a_broken_edit_keeps_the_last_good_version() {
    let app = TestApp::new();
    let d = app.start().await;
    let store = d.store().clone();
    app.write_job("new", &sleep_job("New", "{every: 1s}", 0, ""));
    assert!(
        eventually(Duration::from_secs(10), || async {
            count(&runs(&store, "new").await, RunStatus::Succeeded) >= 1
        })
        .await,
        "a new file was not picked up"
    );
    // A broken edit: the old definition keeps running.
    app.write_job(
        "new",
        "name: New\njob: sleep\nschedule: {every: nonsense}\n",
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = runs(&store, "new").await.len();
    assert!(
        eventually(Duration::from_secs(5), || async {
            runs(&store, "new").await.len() >= before + 2
        })
        .await,
        "the last good version stopped running"
    );
    // Removing the file stops the job.
    std::fs::remove_file(app.jobs_dir().join("new.yaml")).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after_remove = runs(&store, "new").await.len();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        runs(&store, "new").await.len(),
        after_remove,
        "a removed job kept running"
    );
    d.shutdown().await;
}

#[tokio::test]
async fn a_stalled_runtime_delays_ticks_but_never_stops_a_job() {
    let app = TestApp::new();
    app.write_job("tick", &sleep_job("Tick", "{every: 1s}", 0, ""));
    // Runs once at start and blocks the (single) runtime thread for 2.5 s.
    app.write_job(
        "stall",
        "name: Stall\njob: sleep\nschedule: {every: 1h}\nparameters:\n  - {name: Millis, type: integer, value: 2500}\n  - {name: Block, type: boolean, value: true}\n",
    );
    let (logs, _g) = capture_logs();
    let d = app.builder().run_at_start(true).start().await.unwrap();
    let store = d.store().clone();
    let stall_end = Utc::now() + chrono::Duration::milliseconds(2500);
    assert!(
        eventually(Duration::from_secs(10), || async {
            runs(&store, "tick")
                .await
                .iter()
                .filter(|r| r.started_at > stall_end + chrono::Duration::milliseconds(500))
                .count()
                >= 2
        })
        .await,
        "the 1 s job did not resume after the stall"
    );
    d.shutdown().await;
    let store = app.store().await;
    let ticks: Vec<_> = runs(&store, "tick")
        .await
        .iter()
        .map(|r| r.scheduled_at)
        .collect();
    let mut dedup = ticks.clone();
    dedup.dedup();
    assert_eq!(dedup, ticks, "a tick ran twice");
    assert!(
        logs.text().contains("\"message\":\"ticks missed\""),
        "the stall was not reported"
    );
}

#[tokio::test]
async fn json_logs_keep_the_event_message_and_carry_the_run_span() {
    let app = TestApp::new();
    app.write_job("once", &sleep_job("Once", "{every: 1h}", 0, ""));
    let (logs, _g) = capture_logs();
    let d = app.builder().run_at_start(true).start().await.unwrap();
    let store = d.store().clone();
    assert!(
        eventually(Duration::from_secs(5), || async {
            count(&runs(&store, "once").await, RunStatus::Succeeded) == 1
        })
        .await
    );
    d.shutdown().await;
    let finished: Vec<serde_json::Value> = logs
        .text()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["message"] == "run finished")
        .collect();
    assert_eq!(finished.len(), 1, "{}", logs.text());
    let e = &finished[0];
    // The outcome is its own field: a field named `message` would clash with the event's.
    assert_eq!(e["outcome"], "slept");
    assert_eq!(e["status"], "succeeded");
    assert_eq!(e["span"]["job_id"], "once");
    assert!(e["span"]["run_id"].as_i64().is_some(), "{e}");
}

//! Alerts against a local HTTP receiver: one notification per episode start and end, the
//! Slack shape, episodes kept across a restart, `job_invalid`, and a dead sink that delays
//! nothing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::routing::post;
use secrecy::SecretString;
use serde_json::Value;
use soarjobd_core::config::grammar::SecretSource;
use soarjobd_core::store::RunStatus;

use crate::support::*;

type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// A webhook receiver on 127.0.0.1: every POST to `/{name}` is kept with its JSON body.
async fn receiver() -> (String, Received) {
    let got: Received = Arc::default();
    let app =
        axum::Router::new()
            .route(
                "/{name}",
                post(
                    |State(got): State<Received>,
                     Path(name): Path<String>,
                     Json(body): Json<Value>| async move {
                        got.lock().unwrap().push((name, body));
                        "ok"
                    },
                ),
            )
            .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), got)
}

fn secret(url: String) -> Option<SecretSource> {
    Some(SecretSource::Inline(SecretString::from(url)))
}

fn bodies(got: &Received, sink: &str) -> Vec<Value> {
    got.lock()
        .unwrap()
        .iter()
        .filter(|(n, _)| n == sink)
        .map(|(_, b)| b.clone())
        .collect()
}

fn count_state(got: &Received, state: &str) -> usize {
    bodies(got, "hook")
        .iter()
        .filter(|b| b["state"] == state)
        .count()
}

/// Three failures in a row: exactly one firing notification on each sink, also across a
/// restart while the job keeps failing; recovery: exactly one resolve, whatever follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_in_a_row_fire_once_and_recovery_resolves_once() {
    let (base, got) = receiver().await;
    let mut app = TestApp::new();
    app.settings.alerts.webhook_url = secret(format!("{base}/hook"));
    app.settings.alerts.slack_url = secret(format!("{base}/slack"));
    let flag = app.path("fail");
    std::fs::write(&flag, "").unwrap();
    app.write_job(
        "flaky",
        &format!(
            "name: Flaky\njob: exec\nschedule: {{every: 1s}}\nmisfire: skip\ncommand: [/bin/sh, -c, 'test ! -e {}']\n",
            flag.display()
        ),
    );
    let store = app.store().await;
    let daemon = app.start().await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            count(&runs(&store, "flaky").await, RunStatus::Failed) >= 5
        })
        .await
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            count_state(&got, "firing") >= 1
        })
        .await
    );
    daemon.shutdown().await;

    // Restarted while still failing: the open episode is remembered, nothing is re-sent.
    let failed_before = count(&runs(&store, "flaky").await, RunStatus::Failed);
    let daemon = app.start().await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            count(&runs(&store, "flaky").await, RunStatus::Failed) >= failed_before + 3
        })
        .await
    );
    assert_eq!(count_state(&got, "firing"), 1, "{:?}", got.lock().unwrap());

    std::fs::remove_file(&flag).unwrap();
    assert!(
        eventually(Duration::from_secs(20), || async {
            count(&runs(&store, "flaky").await, RunStatus::Succeeded) >= 3
        })
        .await
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            count_state(&got, "resolved") >= 1
        })
        .await
    );
    daemon.shutdown().await;

    let hook = bodies(&got, "hook");
    assert_eq!(hook.len(), 2, "{hook:?}");
    let firing = &hook[0];
    assert_eq!(firing["state"], "firing");
    assert_eq!(firing["rule"], "failed_runs_in_a_row");
    assert_eq!(firing["subject"], "flaky");
    assert!(
        firing["summary"]
            .as_str()
            .unwrap()
            .contains("runs in a row"),
        "{firing}"
    );
    assert_eq!(hook[1]["state"], "resolved");
    assert_eq!(hook[1]["episode_id"], firing["episode_id"]);
    // Slack: `{"text": ...}` and nothing else, once per episode start and end.
    let slack = bodies(&got, "slack");
    assert_eq!(slack.len(), 2, "{slack:?}");
    for (b, state) in slack.iter().zip(["[FIRING]", "[RESOLVED]"]) {
        let obj = b.as_object().unwrap();
        assert_eq!(obj.len(), 1, "{b}");
        assert!(obj["text"].as_str().unwrap().starts_with(state), "{b}");
        assert!(obj["text"].as_str().unwrap().contains("flaky"), "{b}");
    }
    assert!(store.open_alerts().await.unwrap().is_empty());
    store.close().await;
}

/// A job file that does not load opens a `job_invalid` episode; fixing it resolves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_job_file_fires_and_resolves_when_fixed() {
    let (base, got) = receiver().await;
    let mut app = TestApp::new();
    app.settings.alerts.webhook_url = secret(format!("{base}/hook"));
    app.write_job(
        "broken",
        "name: Broken\njob: exec\nschedule: {every: 1h}\ncomand: [/bin/true]\n",
    );
    let daemon = app.start().await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            count_state(&got, "firing") >= 1
        })
        .await
    );
    let firing = bodies(&got, "hook")[0].clone();
    assert_eq!(firing["rule"], "job_invalid");
    assert!(
        firing["subject"].as_str().unwrap().ends_with("broken.yaml"),
        "{firing}"
    );
    assert!(
        firing["summary"]
            .as_str()
            .unwrap()
            .contains("does not load"),
        "{firing}"
    );
    app.write_job(
        "broken",
        "name: Broken\njob: exec\nschedule: {every: 1h}\ncommand: [/bin/true]\n",
    );
    assert!(
        eventually(Duration::from_secs(15), || async {
            count_state(&got, "resolved") >= 1
        })
        .await,
        "{:?}",
        got.lock().unwrap()
    );
    daemon.shutdown().await;
    assert_eq!(count_state(&got, "firing"), 1);
    assert_eq!(count_state(&got, "resolved"), 1);
}

/// A sink that accepts connections and never answers: runs go on at their pace, notifications
/// beyond its queue are dropped and counted, and shutdown does not wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_sink_delays_no_run() {
    // Connections complete in the kernel's backlog; nobody ever reads the request.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut app = TestApp::new();
    app.settings.alerts.webhook_url = secret(format!("http://{}/hook", dead.local_addr().unwrap()));
    app.settings.alerts.failed_runs_in_a_row = 1;
    app.settings.alerts.queue = 1;
    for i in 0..4 {
        app.write_job(
            &format!("f{i}"),
            &format!("name: F{i}\njob: exec\nschedule: {{every: 1s}}\ncommand: [/bin/false]\n"),
        );
    }
    let store = app.store().await;
    let daemon = app.start().await;
    // Every job's episode opens (four notifications for a queue of one behind a hung send),
    // and the jobs keep running meanwhile.
    assert!(
        eventually(Duration::from_secs(20), || async {
            store.open_alerts().await.unwrap().len() == 4
        })
        .await
    );
    assert!(
        eventually(Duration::from_secs(20), || async {
            let mut ok = true;
            for i in 0..4 {
                ok &= count(&runs(&store, &format!("f{i}")).await, RunStatus::Failed) >= 4;
            }
            ok
        })
        .await,
        "runs were held up by the dead sink"
    );
    let dropped: u64 = daemon.alerts_dropped().iter().map(|(_, n)| n).sum();
    assert!(dropped >= 2, "{dropped}");
    daemon.shutdown().await;
    drop(dead);
    store.close().await;
}

/// `no_success_for` (here a job's own override) fires for a job that has not succeeded for
/// that long, and resolves with its next success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_success_for_fires_and_resolves_with_a_success() {
    let (base, got) = receiver().await;
    let mut app = TestApp::new();
    app.settings.alerts.webhook_url = secret(format!("{base}/hook"));
    app.settings.alerts.check_every = Duration::from_secs(1);
    let flag = app.path("fail");
    std::fs::write(&flag, "").unwrap();
    app.write_job(
        "quiet",
        &format!(
            "name: Quiet\njob: exec\nschedule: {{every: 1s}}\nalerts: {{failed_runs_in_a_row: 0, no_success_for: 2s}}\ncommand: [/bin/sh, -c, 'test ! -e {}']\n",
            flag.display()
        ),
    );
    let daemon = app.start().await;
    assert!(
        eventually(Duration::from_secs(15), || async {
            count_state(&got, "firing") >= 1
        })
        .await
    );
    let firing = bodies(&got, "hook")[0].clone();
    assert_eq!(firing["rule"], "no_success_for");
    assert_eq!(firing["subject"], "quiet");
    assert!(
        firing["summary"]
            .as_str()
            .unwrap()
            .contains("has not succeeded for more than 2s"),
        "{firing}"
    );
    std::fs::remove_file(&flag).unwrap();
    assert!(
        eventually(Duration::from_secs(15), || async {
            count_state(&got, "resolved") >= 1
        })
        .await
    );
    daemon.shutdown().await;
    assert_eq!(count_state(&got, "firing"), 1, "{:?}", got.lock().unwrap());
    assert_eq!(count_state(&got, "resolved"), 1);
}

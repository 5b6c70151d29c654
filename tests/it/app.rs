//! The composition root: platform jobs hold their clients, and a job whose platform is not
//! configured fails its run with the keys to set.

use serde_json::json;
use soarjobd_core::store::RunStatus;

use crate::support::*;

const COMMENT_JOB: &str = "name: C\njob: comment-on-tagged-cases\nparameters:\n  - {name: Tags, type: string, value: x}\n  - {name: Comment, type: string, value: y}\n";
const PUSH_JOB: &str = "name: P\njob: push-case-iocs-to-threatconnect\nparameters:\n  - {name: Tags, type: string, value: x}\n  - {name: Owner, type: string, value: o}\n";

/// The message and status of the only run of `id`, run with `run-once`.
async fn run_once(app: &TestApp, id: &str) -> (i32, RunStatus, String) {
    let code = soarjobd::inspect::run_once(&app.app(), id, &[]).await;
    let store = app.store().await;
    let run = runs(&store, id).await.pop().expect("the run was recorded");
    (code, run.status, run.message.unwrap_or_default())
}

#[tokio::test]
async fn a_job_of_an_unconfigured_platform_fails_with_the_keys_to_set() {
    let app = TestApp::new();
    app.write_job("c", COMMENT_JOB);
    let (code, status, message) = run_once(&app, "c").await;
    assert_eq!((code, status), (1, RunStatus::Failed));
    assert!(
        message.starts_with("no SOAR platform is configured (set soar.url and soar.app_key"),
        "{message}"
    );
}

#[tokio::test]
async fn a_two_platform_job_gets_both_clients_and_names_the_missing_one() {
    let mut app = TestApp::new();
    // SOAR configured (nothing listens there: the job stops before any request), ThreatConnect
    // not: the ThreatConnect plugin handed the job the SOAR plugin's client and its own reason.
    app.settings.set_section(
        "soar",
        json!({ "url": "http://127.0.0.1:9", "app_key": "k" }),
    );
    app.write_job("p", PUSH_JOB);
    let (code, status, message) = run_once(&app, "p").await;
    assert_eq!((code, status), (1, RunStatus::Failed));
    assert!(
        message.starts_with("no ThreatConnect instance is configured (set threatconnect.url"),
        "{message}"
    );
}

#[test]
fn building_the_app_reports_the_problems_of_every_platform_section() {
    let mut settings = TestApp::new().settings;
    settings.set_section(
        "soar",
        json!({ "url": "http://soar", "app_key": "k", "timeot": "1s" }),
    );
    settings.set_section("threatconnect", json!({ "url": "http://tc/api" }));
    let err = match soarjobd::app::App::builder().settings(settings).build() {
        Ok(_) => panic!("the app must not build"),
        Err(e) => e,
    };
    assert_eq!(err.problems.len(), 2, "{:?}", err.problems);
    assert_eq!(
        err.problems[0],
        "unknown key `soar.timeot` (did you mean `timeout`?)"
    );
    assert!(
        err.problems[1].contains("no credentials"),
        "{:?}",
        err.problems
    );
}

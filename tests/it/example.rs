//! Runs `examples/custom_job.rs`'s job through the daemon, as a user's own binary would.

use std::time::Duration;

use soarjobd::store::RunStatus;

use crate::support::*;

#[allow(dead_code)]
#[path = "../../examples/custom_job.rs"]
mod custom_job;

#[tokio::test]
async fn the_custom_job_example_runs_and_handles_each_item_once() {
    let app = TestApp::new();
    app.write_job(
        "reminder",
        "name: Reminder\njob: stale-case-reminder\nschedule: {every: 1s}\nparameters:\n  - {name: Items, type: csv, value: 'c1, c2, c3'}\n",
    );
    let d = app
        .builder()
        .register(custom_job::StaleCaseReminder)
        .run_at_start(true)
        .start()
        .await
        .unwrap();
    let store = d.store().clone();
    assert!(
        eventually(Duration::from_secs(10), || async {
            count(&runs(&store, "reminder").await, RunStatus::Succeeded) >= 2
        })
        .await
    );
    d.shutdown().await;
    let store = app.store().await;
    let runs = runs(&store, "reminder").await;
    assert_eq!(runs[0].stats["reminded"], 3);
    assert_eq!(runs[1].stats["already_reminded"], 3);
    assert!(runs[1].stats.get("reminded").is_none());
}

#[test]
fn the_example_validates_its_parameters_at_load_time() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("r.yaml");
    std::fs::write(&f, "name: R\njob: stale-case-reminder\nparameters:\n  - {name: Items, type: csv, value: a}\n  - {name: Max Hours Backwards, type: integer, value: 0}\n").unwrap();
    let mut reg = soarjobd::job::Registry::new();
    reg.register(custom_job::StaleCaseReminder);
    let errs = soarjobd::definition::load_file(&f, &reg).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!((errs[0].line, errs[0].column), (5, 55));
    assert!(errs[0].message.contains(">= 1"));
}

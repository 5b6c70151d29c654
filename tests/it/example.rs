//! Runs `examples/custom_job.rs`'s job through the daemon, as a user's own binary would, and
//! the example's binary itself: its whole CLI knows its job.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use soarjobd_core::store::RunStatus;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_soarjobd");

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
    let mut reg = soarjobd_core::Registry::new();
    reg.register(custom_job::StaleCaseReminder);
    let errs =
        soarjobd_core::definition::load_file(&f, &reg, soarjobd_containment::open_nonblocking)
            .unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!((errs[0].line, errs[0].column), (5, 55));
    assert!(errs[0].message.contains(">= 1"));
}

/// The example's own binary, as cargo builds it for this profile: a no-op when `cargo test`
/// already built it (it builds every example), a build of the example alone (the library is
/// already built) under `cargo test --test it`, and never a stale copy.
fn example_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "--example", "custom_job", "--message-format=json"])
            .arg("--manifest-path")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo build --example custom_job");
        assert!(
            out.status.success(),
            "cargo build --example custom_job failed"
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "custom_job")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo names the example's executable")
    })
    .clone()
}

/// `bin` with this test's jobs folder and database and no config file.
fn command(bin: &Path, app: &TestApp, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .current_dir(app.dir.path())
        .env_remove("RUST_LOG")
        .env_remove("SOARJOBD_CONFIG")
        .env("SOARJOBD__JOBS_DIR", app.jobs_dir())
        .env("SOARJOBD__DATABASE_URL", &app.settings.database_url)
        .output()
        .expect("run the binary")
}

const REMINDER: &str = "name: Reminder\njob: stale-case-reminder\nschedule: {every: 1h}\nparameters:\n  - {name: Items, type: csv, value: 'c1, c2, c3'}\n";

/// A binary built on `cli::main_with` knows its own job in `check`, `list`, `run-once` and
/// `history`; the stock binary, which does not have the job, rejects the same file (so the
/// test sees the difference the registration makes).
#[tokio::test]
async fn a_custom_binary_checks_lists_and_run_onces_its_own_job() {
    let app = TestApp::new();
    app.write_job("reminder", REMINDER);
    let bin = example_bin();
    let text = |o: &Output| {
        format!(
            "status {:?}\nstdout:\n{}\nstderr:\n{}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };

    let stock = command(Path::new(BIN), &app, &["check"]);
    assert_eq!(stock.status.code(), Some(1), "{}", text(&stock));
    assert!(
        String::from_utf8_lossy(&stock.stdout).contains("stale-case-reminder"),
        "{}",
        text(&stock)
    );

    let check = command(&bin, &app, &["check", "--json"]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    let doc: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(doc["errors"], serde_json::json!([]), "{}", text(&check));
    assert_eq!(doc["jobs"][0]["id"], "reminder");
    assert_eq!(doc["jobs"][0]["job"], "stale-case-reminder");

    let run = command(&bin, &app, &["run-once", "reminder"]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    assert_eq!(
        String::from_utf8_lossy(&run.stdout).trim(),
        "run 1 succeeded: reminders sent",
        "{}",
        text(&run)
    );

    let list = command(&bin, &app, &["list", "--json"]);
    assert_eq!(list.status.code(), Some(0), "{}", text(&list));
    assert!(list.stderr.is_empty(), "{}", text(&list));
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(rows[0]["id"], "reminder");
    assert_eq!(rows[0]["job"], "stale-case-reminder");
    assert_eq!(
        rows[0]["last_run"]["status"],
        "succeeded",
        "{}",
        text(&list)
    );

    let history = command(&bin, &app, &["history", "reminder", "--json"]);
    assert_eq!(history.status.code(), Some(0), "{}", text(&history));
    let runs: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    assert_eq!(runs[0]["stats"]["reminded"], 3, "{}", text(&history));
    assert_eq!(runs[0]["trigger"], "manual");
}

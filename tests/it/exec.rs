//! `job: exec` through the same runner as `run-once`: stdin document, exit codes, timeouts.

use soarjobd_core::store::RunStatus;

use crate::support::*;

async fn run_once(app: &TestApp, id: &str, params: &[&str]) -> i32 {
    let params: Vec<String> = params.iter().map(|s| s.to_string()).collect();
    soarjobd::inspect::run_once(&app.app(), id, &params).await
}

fn exec_job(script: &str, extra: &str) -> String {
    // Names must be unique across files; the script is unique enough.
    let name = format!("E {:x}", script.len() * 31 + extra.len());
    format!(
        "name: {name}\njob: exec\nschedule: {{every: 1h}}\n{extra}parameters:\n  - {{name: Tags, type: csv, value: 'a, b'}}\n  - {{name: Api Key, type: password, value: s3cr3t-value}}\ncommand: [\"/bin/sh\", \"-c\", {script:?}]\n"
    )
}

#[tokio::test]
async fn parameters_arrive_on_stdin_and_exit_0_saves_the_timestamp() {
    let app = TestApp::new();
    let out = app.path("stdin.json");
    app.write_job("e", &exec_job(&format!("cat > {}", out.display()), ""));
    let (logs, _g) = capture_logs();
    assert_eq!(run_once(&app, "e", &[]).await, 0);
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(doc["job_id"], "e");
    assert_eq!(doc["trigger"], "manual");
    assert_eq!(doc["parameters"]["Tags"], serde_json::json!(["a", "b"]));
    assert_eq!(doc["parameters"]["Api Key"], "s3cr3t-value");
    assert!(doc["last_success_time"].is_null());
    assert!(doc["run_id"].as_i64().unwrap() > 0);
    let store = app.store().await;
    let ts = store.get_timestamp("e", "timestamp").await.unwrap();
    assert!(ts.is_some(), "a successful exec run saves its start time");
    let runs = runs(&store, "e").await;
    assert_eq!(runs[0].status, RunStatus::Succeeded);
    let text = logs.text();
    assert!(
        !text.contains("s3cr3t-value"),
        "the password leaked into the logs"
    );
}

#[tokio::test]
async fn param_overrides_are_validated_and_applied() {
    let app = TestApp::new();
    let out = app.path("stdin.json");
    app.write_job("e", &exec_job(&format!("cat > {}", out.display()), ""));
    assert_eq!(run_once(&app, "e", &["Tags=x,y,z"]).await, 0);
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(
        doc["parameters"]["Tags"],
        serde_json::json!(["x", "y", "z"])
    );
    assert_eq!(run_once(&app, "e", &["Nope=1"]).await, 2);
    assert_eq!(run_once(&app, "missing", &[]).await, 2);
}

#[tokio::test]
async fn exit_codes_map_to_statuses() {
    let app = TestApp::new();
    app.write_job("partial", &exec_job("echo half done >&2; exit 3", ""));
    app.write_job(
        "fails",
        &exec_job("echo first >&2; echo the real reason >&2; exit 7", ""),
    );
    app.write_job(
        "stats",
        &exec_job(
            "echo '::stats {\"items\": 4}'; echo '::context {\"cursor\": 42}'; echo plain output",
            "",
        ),
    );
    let (logs, _g) = capture_logs();
    assert_eq!(run_once(&app, "partial", &[]).await, 3);
    assert_eq!(run_once(&app, "fails", &[]).await, 1);
    assert_eq!(run_once(&app, "stats", &[]).await, 0);
    let store = app.store().await;
    let p = &runs(&store, "partial").await[0];
    assert_eq!(p.status, RunStatus::Partial);
    assert!(
        store
            .get_timestamp("partial", "timestamp")
            .await
            .unwrap()
            .is_none()
    );
    let f = &runs(&store, "fails").await[0];
    assert_eq!(f.status, RunStatus::Failed);
    assert_eq!(
        f.message.as_deref(),
        Some("exit status 7: first\nthe real reason")
    );
    let s = &runs(&store, "stats").await[0];
    assert_eq!(s.stats["items"], 4);
    assert_eq!(
        store.context_get("stats", "cursor").await.unwrap(),
        Some(serde_json::json!(42))
    );
    let text = logs.text();
    assert!(text.contains("\"line\":\"plain output\""), "{text}");
    assert!(
        text.contains("\"job_id\":\"stats\""),
        "output lines carry the run's span"
    );
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    let app = TestApp::new();
    let pid_file = app.path("child.pid");
    let script = format!("sleep 300 & echo $! > {}; wait", pid_file.display());
    app.write_job("hang", &exec_job(&script, "timeout: 1s\n"));
    assert_eq!(run_once(&app, "hang", &[]).await, 1);
    let store = app.store().await;
    assert_eq!(runs(&store, "hang").await[0].status, RunStatus::TimedOut);
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The grandchild was in the job's process group, so it is gone too.
    assert!(
        !alive(pid),
        "the background child {pid} survived the timeout"
    );
}

#[tokio::test]
async fn a_program_that_cannot_start_fails_with_a_clear_message() {
    let app = TestApp::new();
    // The program exists (so `check` accepts it) but its interpreter does not: exec fails.
    let prog = app.path("prog");
    std::fs::write(&prog, "#!/nonexistent/interpreter\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    app.write_job(
        "nope",
        &format!(
            "name: N\njob: exec\ncommand: [{:?}]\n",
            prog.display().to_string()
        ),
    );
    assert_eq!(run_once(&app, "nope", &[]).await, 1);
    let store = app.store().await;
    let r = &runs(&store, "nope").await[0];
    assert_eq!(r.status, RunStatus::Failed);
    let error = r.error.as_deref().unwrap();
    assert!(
        error.contains(&format!("cannot start `{}`", prog.display())),
        "{error}"
    );
    assert!(error.contains("caused by:"), "{error}");
    // Nothing of the run is left recorded.
    assert!(store.run_processes().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_missing_program_or_working_dir_is_a_located_load_error() {
    let app = TestApp::new();
    app.write_job(
        "nope",
        "name: N\njob: exec\nworking_dir: no-such-dir\ncommand: [\"/nonexistent/program\"]\n",
    );
    app.write_job(
        "nopath",
        "name: P\njob: exec\ncommand:\n  - no-such-program-xyz\n  - arg\n",
    );
    let built = app.app();
    let report = soarjobd_core::definition::load_dir(
        app.jobs_dir(),
        built.registry().as_ref(),
        soarjobd_containment::open_nonblocking,
    );
    let errors: Vec<String> = report.errors.iter().map(|e| e.to_string()).collect();
    let jobs = app.jobs_dir().display().to_string();
    assert!(
        errors.contains(&format!(
            "{jobs}/nope.yaml:3:14: working_dir `no-such-dir` does not exist ({jobs}/no-such-dir: No such file or directory (os error 2))"
        )),
        "{errors:#?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with(&format!("{jobs}/nope.yaml:4:1"))
                && e.contains("program `/nonexistent/program` does not exist")),
        "{errors:#?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with(&format!("{jobs}/nopath.yaml:4:3"))
                && e.contains("program `no-such-program-xyz` is not found in PATH")),
        "{errors:#?}"
    );
    // And `run-once` refuses the job instead of failing a run.
    assert_eq!(run_once(&app, "nope", &[]).await, 2);
}

/// True if `pid` is a live process (a zombie waiting for its reaper counts as dead).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

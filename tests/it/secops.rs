//! `secops-script` jobs: SecOps marketplace-shaped definitions and Python job scripts run
//! unchanged against the SOAR simulator, through the loopback SDK gateway, with the stand-in
//! SDK of `tests/secops_sdk/` (written from `specs/secops-sdk-launch.md`).
//!
//! Each test vendors an integration folder (`integrations/<name>/jobs/<Name>.yaml` + `.py`)
//! and points an instance file in `jobs/` at it with `uses:`. Expected results come from the
//! simulator's own view of its cases, never from what the script reports.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use soarjobd_core::store::{RunRecord, RunStatus};
use soarjobd_sim::soar as sim;
use soarjobd_sim::soar::{CasePatch, SimHandle, SoarSimConfig};

use crate::support::*;

/// The tenant's key. Distinctive, so a leak is found by a plain substring search.
const KEY: &str = "it-secops-tenant-key-5d1f0c7e-never-show";
/// A password parameter's value: allowed on the script's stdin, nowhere else.
const PASSWORD: &str = "it-secops-password-93ab";
const HOUR_MS: i64 = 3_600_000;

fn sdk_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/secops_sdk")
}

async fn start_sim() -> SimHandle {
    sim::start(
        SoarSimConfig {
            cases: 0,
            app_key: KEY.into(),
            ..SoarSimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .expect("the simulator starts")
}

fn app_for(sim: &SimHandle) -> TestApp {
    let mut app = TestApp::new();
    app.settings
        .set_section("soar", json!({ "url": sim.url(), "app_key": KEY }));
    app.settings
        .set_section("secops", json!({ "python": "python3" }));
    app
}

/// Vendors `integrations/<integration>/jobs/<name>.yaml` + `.py` and writes the instance
/// file `jobs/<id>.yaml` using it.
fn vendor(app: &TestApp, integration: &str, name: &str, def: &str, script: &str) -> PathBuf {
    let jobs = app.path("integrations").join(integration).join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    std::fs::write(jobs.join(format!("{name}.yaml")), def).unwrap();
    std::fs::write(jobs.join(format!("{name}.py")), script).unwrap();
    jobs
}

fn instance(app: &TestApp, id: &str, integration: &str, name: &str, rest: &str) {
    app.write_job(
        id,
        &format!(
            "uses: ../integrations/{integration}/jobs/{name}.yaml\n\
             env:\n  PYTHONPATH: {}\n{rest}",
            sdk_path().display()
        ),
    );
}

async fn run_job(app: &TestApp, id: &str) -> RunRecord {
    let code = soarjobd::inspect::run_once(&app.app(), id, &[]).await;
    let store = app.store().await;
    let run = runs(&store, id).await.pop().expect("the run was recorded");
    assert_eq!(code, soarjobd_core::exit::for_run(run.status), "{run:?}");
    run
}

fn add_case(sim: &SimHandle, now: i64, open: bool, updated_h: i64) -> u64 {
    sim.state()
        .upsert_case(CasePatch {
            status: Some(if open { "OPEN" } else { "CLOSE" }.into()),
            environment: Some("Default Environment".into()),
            tags: Some(vec![]),
            creation_time: Some(now - 200 * HOUR_MS),
            modification_time: Some(now - updated_h * HOUR_MS),
            alerts: Some(1),
            ..CasePatch::default()
        })
        .expect("add a case")
        .id
}

/// The shape of the marketplace's Tag Untouched Cases definition (our own words).
const TAG_UNTOUCHED_DEF: &str = "\
name: Tag Untouched Cases
integration: Tools
creator: Admin
description: Tags open cases nobody touched for a while.
script_result_name: is_success
default_result_value: ''
run_interval_in_seconds: 900
parameters:
-   name: Unmodified Time
    type: integer
    default_value: ''
    is_mandatory: true
    description: Hours without a change.
-   name: Tag
    type: string
    default_value: Untouched
    is_mandatory: false
    description: The tag to add.
-   name: Dump Path
    type: string
    default_value: ''
    is_mandatory: false
    description: Test only - where the script writes what it was given.
-   name: Remote Password
    type: password
    default_value: ''
    is_mandatory: false
    description: Test only - a secret parameter.
";

const TAG_UNTOUCHED_PY: &str = r#"
import json
import os
import sys

from soar_sdk.SiemplifyJob import SiemplifyJob
from soar_sdk.SiemplifyUtils import output_handler, unix_now

SCRIPT_NAME = "Tag Untouched Cases"


@output_handler
def main():
    siemplify = SiemplifyJob()
    siemplify.script_name = SCRIPT_NAME
    hours = siemplify.extract_job_param("Unmodified Time", input_type=int, is_mandatory=True)
    tag = siemplify.extract_job_param("Tag", default_value="Untouched")
    dump = siemplify.extract_job_param("Dump Path")
    if dump:
        with open(dump, "w") as f:
            json.dump({"argv": sys.argv, "env": dict(os.environ), "stdin": siemplify.context}, f)
    now = unix_now()
    ids = siemplify.get_cases_ids_by_filter(
        status="OPEN",
        start_time_from_unix_time_in_ms=now - 30 * 24 * 3600 * 1000,
        update_time_to_unix_time_in_ms=now - hours * 3600 * 1000,
        operator="AND",
    )
    for case_id in ids:
        siemplify.add_tag(tag, case_id)
        siemplify.LOGGER.info("tagged case {}".format(case_id))
    print("done with {} cases".format(len(ids)))
    siemplify.end("Tagged {} cases".format(len(ids)), True)


if __name__ == "__main__":
    main()
"#;

#[tokio::test]
async fn tag_untouched_cases_tags_exactly_the_right_cases_and_never_shows_the_tenant_key() {
    let (logs, _guard) = capture_logs();
    let now = Utc::now().timestamp_millis();
    let sim = start_sim().await;
    let mut expected = Vec::new();
    for (open, updated_h) in [(true, 30), (true, 2), (false, 40), (true, 50), (true, 0)] {
        let id = add_case(&sim, now, open, updated_h);
        if open && updated_h >= 24 {
            expected.push(id);
        }
    }
    let app = app_for(&sim);
    vendor(
        &app,
        "tools",
        "TagUntouchedCases",
        TAG_UNTOUCHED_DEF,
        TAG_UNTOUCHED_PY,
    );
    let dump = app.path("dump.json");
    instance(
        &app,
        "tag-untouched",
        "tools",
        "TagUntouchedCases",
        &format!(
            "values:\n  Unmodified Time: 24\n  Tag: Stale\n  Dump Path: {}\n  \
             Remote Password: {PASSWORD}\n",
            dump.display()
        ),
    );

    let run = run_job(&app, "tag-untouched").await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(run.message.as_deref(), Some("Tagged 2 cases"));
    // One search and one AddTag per case went through the gateway to SOAR.
    assert_eq!(run.stats["soar_requests"], json!(1 + expected.len()));

    let mut tagged: Vec<u64> = sim
        .state()
        .cases()
        .into_iter()
        .filter(|c| c.tags.iter().any(|t| t == "Stale"))
        .map(|c| c.id)
        .collect();
    tagged.sort();
    expected.sort();
    assert_eq!(tagged, expected);

    // What the script was given: the launch contract, a per-run token, never the tenant key.
    let given: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&dump).unwrap()).unwrap();
    let argv = given["argv"].as_array().unwrap();
    assert_eq!(argv.len(), 3, "{argv:?}");
    assert!(argv[0].as_str().unwrap().ends_with("TagUntouchedCases.py"));
    assert_eq!(argv[1].as_str().unwrap().len(), 64, "a per-run token");
    assert!(
        argv[2].as_str().unwrap().starts_with("--logPath="),
        "{argv:?}"
    );
    let env = &given["env"];
    assert_eq!(env["APP_IP"], "127.0.0.1");
    assert_eq!(env["APP_USE_SSL"], "False");
    assert!(env["APP_PORT"].as_str().unwrap().parse::<u16>().is_ok());
    let stdin = &given["stdin"];
    assert_eq!(stdin["unique_identifier"], "tag-untouched");
    assert_eq!(stdin["vault_settings"], serde_json::Value::Null);
    assert_eq!(stdin["use_proxy_settings"], false);
    assert_eq!(stdin["parameters"]["Unmodified Time"], "24");
    assert_eq!(stdin["parameters"]["Remote Password"], PASSWORD);
    let text = given.to_string();
    assert!(!text.contains(KEY), "the tenant key reached the script");
    let outside_stdin = format!("{} {}", given["argv"], given["env"]);
    assert!(
        !outside_stdin.contains(PASSWORD),
        "a password outside stdin"
    );

    // DebugOutput lines are the run's log events; no secret in any log line.
    let log = logs.text();
    assert!(log.contains("tagged case"), "{log}");
    assert!(log.contains("done with 2 cases"), "{log}");
    assert!(!log.contains(KEY), "the tenant key was logged");
    assert!(!log.contains(PASSWORD), "a password was logged");
}

const STATEFUL_DEF: &str = "\
name: Stateful Job
integration: Tools
creator: Admin
description: Remembers things between runs.
parameters:
-   {name: Note, type: string, default_value: kept, is_mandatory: false, description: n}
";

const STATEFUL_PY: &str = r#"
from soar_sdk.SiemplifyJob import SiemplifyJob
from soar_sdk.SiemplifyUtils import output_handler


@output_handler
def main():
    siemplify = SiemplifyJob()
    siemplify.script_name = "Stateful Job"
    previous = siemplify.fetch_timestamp()
    runs = int(siemplify.get_scoped_job_context_property("runs") or 0) + 1
    siemplify.set_scoped_job_context_property("runs", str(runs))
    first = siemplify.try_set_context_property(3, "Stateful Job", "first", "yes")
    installed = siemplify._request("GET", "external/v1/jobs/GetInstalledJobs")
    mine = [j for j in installed if j["uniqueIdentifier"] == siemplify.unique_identifier]
    assert [p["displayName"] for p in mine[0]["parameters"]] == ["Note"], installed
    assert mine[0]["parameters"][0]["value"] == "kept", installed
    siemplify.save_timestamp(new_timestamp=1700000000000 + runs)
    siemplify.end("previous={} runs={} first={}".format(previous, runs, first), True)


if __name__ == "__main__":
    main()
"#;

#[tokio::test]
async fn timestamps_and_context_saved_by_the_script_survive_runs_and_restarts() {
    let sim = start_sim().await;
    let app = app_for(&sim);
    vendor(&app, "tools", "StatefulJob", STATEFUL_DEF, STATEFUL_PY);
    instance(&app, "stateful", "tools", "StatefulJob", "");

    // Each run builds a new app (a new gateway, the store opened again): a restart.
    let first = run_job(&app, "stateful").await;
    assert_eq!(first.status, RunStatus::Succeeded, "{first:?}");
    assert_eq!(
        first.message.as_deref(),
        Some("previous=0 runs=1 first=True")
    );
    let second = run_job(&app, "stateful").await;
    assert_eq!(
        second.message.as_deref(),
        Some("previous=1700000000001 runs=2 first=False"),
        "{second:?}"
    );
    // The SDK's timestamp is the job's last-success timestamp in soarjobd's store.
    let store = app.store().await;
    assert_eq!(
        store
            .get_timestamp("stateful", "Stateful Job/timestamp")
            .await
            .unwrap(),
        Some(1_700_000_000_002)
    );
    assert_eq!(
        store
            .context_get("stateful", "stateful/runs")
            .await
            .unwrap(),
        Some(json!("2"))
    );

    // And through the real binary, as a separate process (a real restart).
    let mut cmd =
        tokio::process::Command::from(soarjobd_in(app.dir.path(), &["run-once", "stateful"]));
    let out = cmd
        .env("SOARJOBD__SOAR__URL", sim.url())
        .env("SOARJOBD__SOAR__APP_KEY", KEY)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(!stdout.contains(KEY) && !stderr.contains(KEY));
    let last = runs(&store, "stateful").await.pop().unwrap();
    assert_eq!(
        last.message.as_deref(),
        Some("previous=1700000000002 runs=3 first=False")
    );
}

#[tokio::test]
async fn a_script_with_package_relative_imports_runs_as_its_integrations_module() {
    let sim = start_sim().await;
    let app = app_for(&sim);
    let jobs = vendor(
        &app,
        "my_tools",
        "UsesCore",
        &STATEFUL_DEF.replace("Stateful Job", "Uses Core"),
        "from soar_sdk.SiemplifyJob import SiemplifyJob\n\
         from ..core.Greeter import greet\n\
         s = SiemplifyJob()\n\
         s.end(greet(__package__), True)\n",
    );
    let core = jobs.parent().unwrap().join("core");
    std::fs::create_dir_all(&core).unwrap();
    std::fs::write(core.join("__init__.py"), "").unwrap();
    std::fs::write(jobs.join("__init__.py"), "").unwrap();
    std::fs::write(jobs.parent().unwrap().join("__init__.py"), "").unwrap();
    std::fs::write(
        core.join("Greeter.py"),
        "def greet(who):\n    return 'hello from ' + who\n",
    )
    .unwrap();
    instance(&app, "uses-core", "my_tools", "UsesCore", "");
    let run = run_job(&app, "uses-core").await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(run.message.as_deref(), Some("hello from my_tools.jobs"));
}

#[tokio::test]
async fn a_script_that_raises_fails_with_the_tracebacks_last_line() {
    let sim = start_sim().await;
    let app = app_for(&sim);
    vendor(
        &app,
        "tools",
        "Raises",
        &STATEFUL_DEF.replace("Stateful Job", "Raises"),
        "from soar_sdk.SiemplifyJob import SiemplifyJob\n\
         from soar_sdk.SiemplifyUtils import output_handler\n\
         @output_handler\n\
         def main():\n    s = SiemplifyJob()\n    print('about to fail')\n    \
         raise ValueError('boom 42')\n\
         main()\n",
    );
    instance(&app, "raises", "tools", "Raises", "");
    let run = run_job(&app, "raises").await;
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    let msg = run.message.unwrap_or_default();
    assert!(msg.starts_with("ValueError: boom 42"), "{msg}");
}

#[tokio::test]
async fn a_script_that_reports_failure_or_timeout_gets_that_status() {
    let sim = start_sim().await;
    let app = app_for(&sim);
    for (name, state, want) in [
        ("ReportsFailure", 2, RunStatus::Failed),
        ("ReportsTimeout", 3, RunStatus::TimedOut),
    ] {
        vendor(
            &app,
            "tools",
            name,
            &STATEFUL_DEF.replace("Stateful Job", name),
            &format!(
                "from soar_sdk.SiemplifyJob import SiemplifyJob\n\
                 s = SiemplifyJob()\n\
                 s.end('{name} says so', False, {state})\n"
            ),
        );
        let id = soarjobd_core::definition::job_id_from_stem(name);
        instance(&app, &id, "tools", name, "");
        let run = run_job(&app, &id).await;
        assert_eq!(run.status, want, "{run:?}");
        assert_eq!(run.message.as_deref(), Some(&*format!("{name} says so")));
    }
}

#[tokio::test]
async fn a_script_past_its_timeout_is_stopped_and_leaves_no_process() {
    let sim = start_sim().await;
    let app = app_for(&sim);
    let pid_file = app.path("child.pid");
    vendor(
        &app,
        "tools",
        "Hangs",
        &STATEFUL_DEF.replace("Stateful Job", "Hangs"),
        &format!(
            "import subprocess, time\n\
             from soar_sdk.SiemplifyJob import SiemplifyJob\n\
             s = SiemplifyJob()\n\
             child = subprocess.Popen(['sleep', '300'])\n\
             open({:?}, 'w').write(str(child.pid))\n\
             time.sleep(300)\n",
            pid_file.display().to_string()
        ),
    );
    instance(&app, "hangs", "tools", "Hangs", "timeout: 2s\n");
    let run = run_job(&app, "hangs").await;
    assert_eq!(run.status, RunStatus::TimedOut, "{run:?}");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let gone = eventually(Duration::from_secs(10), || async move {
        // Gone, or a zombie waiting for init to reap it.
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat.split_whitespace().nth(2) == Some("Z"),
        }
    })
    .await;
    assert!(gone, "the script's child {pid} outlived the run");
}

#[tokio::test]
async fn a_finished_runs_token_is_rejected() {
    let (logs, _guard) = capture_logs();
    let sim = start_sim().await;
    let app = app_for(&sim);
    let dump = app.path("token.json");
    vendor(
        &app,
        "tools",
        "Token",
        &STATEFUL_DEF.replace("Stateful Job", "Token"),
        &format!(
            "import json, os, sys\n\
             from soar_sdk.SiemplifyJob import SiemplifyJob\n\
             s = SiemplifyJob()\n\
             json.dump({{'token': sys.argv[1], 'port': os.environ['APP_PORT']}}, open({:?}, 'w'))\n\
             s.end('ok', True)\n",
            dump.display().to_string()
        ),
    );
    instance(&app, "token", "tools", "Token", "");
    let soar_app = app.app();
    let code = soarjobd::inspect::run_once(&soar_app, "token", &[]).await;
    assert_eq!(code, 0);
    let given: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&dump).unwrap()).unwrap();
    let url = format!(
        "http://127.0.0.1:{}/api/external/v1/sdk/GetContextProperty",
        given["port"].as_str().unwrap()
    );
    let body = json!({"ContextType": 3, "Identifier": "Token", "PropertyKey": "timestamp"});
    let client = reqwest::Client::new();
    for token in [given["token"].as_str().unwrap(), "not-a-token", KEY] {
        let resp = client
            .post(&url)
            .header("AppKey", token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401, "token {token}");
    }
    let log = logs.text();
    assert!(log.contains("unknown or expired token"), "{log}");
    assert!(!log.contains(KEY));
}

#[test]
fn marketplace_shaped_definitions_and_instance_files_pass_check() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let int = dir.join("integrations/sample/jobs");
    std::fs::create_dir_all(&int).unwrap();
    std::fs::create_dir_all(dir.join("jobs")).unwrap();
    let def = |name: &str, body: &str| {
        std::fs::write(int.join(format!("{name}.yaml")), body).unwrap();
        std::fs::write(int.join(format!("{name}.py")), "print('x')\n").unwrap();
    };
    def("CloseCasesBasedOnSearch", TAG_UNTOUCHED_DEF);
    def(
        "DRP Deduplication Job",
        "name: DRP Deduplication Job\nintegration: Digital Risk Protection\ncreator: Admin\n\
         description: d\ndynamic_results_metadata: []\nparameters:\n\
         -   name: Timezone String\n    type: boolean\n    default_value: UTC\n    \
         is_mandatory: false\n    description: declared boolean, a zone name in practice\n",
    );
    std::fs::write(
        dir.join("jobs/close-cases.yaml"),
        "uses: ../integrations/sample/jobs/CloseCasesBasedOnSearch.yaml\n\
         run_interval_in_seconds: 3600\nvalues:\n  Unmodified Time: 12\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("jobs/dedup.yaml"),
        "uses: ../integrations/sample/jobs/DRP Deduplication Job.yaml\nenabled: false\n",
    )
    .unwrap();
    let out = soarjobd_in(dir, &["check", "--verbose"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("close-cases  job=secops-script"),
        "{stdout}"
    );
    assert!(
        stdout.contains("dedup  job=secops-script  disabled"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ignored SecOps-only keys: script_result_name, default_result_value"),
        "{stdout}"
    );
    assert!(
        stdout.contains("warning: ")
            && stdout
                .contains("DRP Deduplication Job.yaml:9:20: Invalid parameter \"Timezone String\""),
        "{stdout}"
    );
    assert!(stdout.contains("2 job(s) valid, 0 error(s)"), "{stdout}");

    // Without its mandatory value, the instance is the one reported.
    std::fs::write(
        dir.join("jobs/close-cases.yaml"),
        "uses: ../integrations/sample/jobs/CloseCasesBasedOnSearch.yaml\n",
    )
    .unwrap();
    let out = soarjobd_in(dir, &["check"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("jobs/close-cases.yaml:1:1: missing mandatory parameter Unmodified Time"),
        "{stdout}"
    );
    assert!(
        stdout.contains("CloseCasesBasedOnSearch.yaml:9:5)"),
        "{stdout}"
    );
}

/// The example shipped in `examples/secops/` (`SOARJOBD__JOBS_DIR=examples/secops/jobs
/// soarjobd demo`) runs against the simulator and tags what it says.
#[tokio::test]
async fn the_shipped_example_runs_against_the_simulator() {
    let now = Utc::now().timestamp_millis();
    let sim = start_sim().await;
    let stale = add_case(&sim, now, true, 72);
    add_case(&sim, now, true, 1);
    let mut app = app_for(&sim);
    app.settings.jobs_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/secops/jobs");
    let code = soarjobd::inspect::run_once(&app.app(), "tag-stale-cases", &[]).await;
    let store = app.store().await;
    let run = runs(&store, "tag-stale-cases").await.pop().unwrap();
    assert_eq!(code, 0, "{run:?}");
    assert_eq!(run.message.as_deref(), Some("Tagged 1 stale cases"));
    let tagged: Vec<u64> = sim
        .state()
        .cases()
        .into_iter()
        .filter(|c| c.tags.iter().any(|t| t == "Stale"))
        .map(|c| c.id)
        .collect();
    assert_eq!(tagged, [stale]);
    assert!(
        store
            .get_timestamp("tag-stale-cases", "Tag Stale Cases/timestamp")
            .await
            .unwrap()
            .is_some()
    );

    // As the README runs it: the real binary from the repository, a relative jobs folder
    // (the script runs elsewhere, so its paths must not stay relative). The first run's tag
    // touched the stale case, so nothing is stale now.
    // Async: the simulator serves from this test's (single-threaded) runtime meanwhile.
    let out = tokio::process::Command::new(SOARJOBD_BIN)
        .args(["run-once", "tag-stale-cases"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG")
        .env("SOARJOBD__JOBS_DIR", "examples/secops/jobs")
        .env(
            "SOARJOBD__DATABASE_URL",
            format!("sqlite:{}", app.path("cli.db").display()),
        )
        .env("SOARJOBD__SOAR__URL", sim.url())
        .env("SOARJOBD__SOAR__APP_KEY", KEY)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        format!("{stdout}{stderr}").contains("Tagged 0 stale cases"),
        "{stdout}\n{stderr}"
    );
}

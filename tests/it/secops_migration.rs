//! Moving a SecOps team's jobs over (issue 20): the gateway faithful to the platform, every
//! run's log kept, any file name, reasons and columns, local integration instances, state
//! import and provisioning. Scripts run unchanged with the stand-in SDK and TIPCommon of
//! `tests/secops_sdk/` (written from their public interfaces), against the SOAR simulator or,
//! where a test must see exactly what reached the platform, a recording upstream over
//! loopback.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use soarjobd_core::store::{RunRecord, RunStatus};

use crate::support::*;

/// The tenant's key. Distinctive, so a leak is found by a plain substring search.
const KEY: &str = "it-migration-tenant-key-7a41c9e2-never-show";
/// The login token the recording upstream hands out.
const LOGIN_TOKEN: &str = "login-token-3e8d61";

fn sdk_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/secops_sdk")
}

/// What reached the platform: method, raw path and query, `AppKey`, `Authorization`.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    app_key: Option<String>,
    authorization: Option<String>,
}

/// A strict fake SOAR that records every request as it arrived and answers:
/// * `POST .../accounts/Login` `{"Username":"svc","Password":"pw"}` -> `{"token": ...}`;
/// * `POST .../playbooks/SaveWorkflowDefinitions` only with `Authorization: Bearer <token>`;
/// * `POST .../sdk/AddTag` -> `500` with a body (the platform failed the write);
/// * anything else with the tenant key -> `200` echoing the raw path.
struct Upstream {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn start_upstream() -> Upstream {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let rec = seen.clone();
    let app = axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let rec = rec.clone();
            async move {
                let h = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                let target = uri
                    .path_and_query()
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_default();
                rec.lock().unwrap().push(Seen {
                    method: method.to_string(),
                    target: target.clone(),
                    app_key: h("appkey"),
                    authorization: h("authorization"),
                });
                if h("appkey").as_deref() != Some(KEY) {
                    return (StatusCode::UNAUTHORIZED, "no tenant key".to_string()).into_response();
                }
                let path = uri.path();
                if path == "/api/external/v1/accounts/Login" {
                    let creds: Value = serde_json::from_slice(&body).unwrap_or_default();
                    if creds["Username"] == "svc" && creds["Password"] == "pw" {
                        return axum::Json(json!({ "token": LOGIN_TOKEN })).into_response();
                    }
                    return (StatusCode::UNAUTHORIZED, "bad credentials".to_string())
                        .into_response();
                }
                if path == "/api/external/v1/playbooks/SaveWorkflowDefinitions" {
                    if h("authorization").as_deref() == Some(&*format!("Bearer {LOGIN_TOKEN}")) {
                        return axum::Json(json!({ "saved": true })).into_response();
                    }
                    return (StatusCode::UNAUTHORIZED, "login required".to_string())
                        .into_response();
                }
                if path == "/api/external/v1/sdk/AddTag" {
                    return (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        r#"{"ErrorMessage":"the case store is down"}"#.to_string(),
                    )
                        .into_response();
                }
                axum::Json(json!({ "path": path })).into_response()
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Upstream {
        url: format!("http://{addr}"),
        seen,
    }
}

/// A definition with one optional string parameter (`Note`).
fn def(name: &str) -> String {
    format!(
        "name: {name}\nintegration: Tools\ncreator: Admin\ndescription: d\nparameters:\n\
         -   {{name: Note, type: string, default_value: kept, is_mandatory: false, description: n}}\n"
    )
}

/// Vendors `integrations/<integration>/jobs/<file>.yaml` + `.py` (with `__init__.py` files,
/// so the integration is a package) and returns the jobs folder.
fn vendor(dir: &Path, integration: &str, file: &str, def: &str, script: &str) -> PathBuf {
    let jobs = dir.join("integrations").join(integration).join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    std::fs::write(jobs.join(format!("{file}.yaml")), def).unwrap();
    std::fs::write(jobs.join(format!("{file}.py")), script).unwrap();
    std::fs::write(jobs.join("__init__.py"), "").unwrap();
    std::fs::write(jobs.parent().unwrap().join("__init__.py"), "").unwrap();
    jobs
}

/// The instance file `jobs/<id>.yaml` using the vendored definition, with the stand-in SDK on
/// `PYTHONPATH` (`extra` is appended).
fn instance(dir: &Path, id: &str, integration: &str, file: &str, extra: &str) {
    std::fs::create_dir_all(dir.join("jobs")).unwrap();
    std::fs::write(
        dir.join("jobs").join(format!("{id}.yaml")),
        format!(
            "uses: ../integrations/{integration}/jobs/{file}.yaml\n\
             env:\n  PYTHONPATH: {}\n{extra}",
            sdk_path().display()
        ),
    )
    .unwrap();
}

/// `soarjobd <args>` in `dir` against `soar_url`, as a separate process (async, so servers of
/// this test's runtime keep serving meanwhile).
async fn cli(dir: &Path, soar_url: &str, args: &[&str]) -> (bool, String, String) {
    let mut cmd = tokio::process::Command::from(soarjobd_in(dir, args));
    let out = cmd
        .env("SOARJOBD__SOAR__URL", soar_url)
        .env("SOARJOBD__SOAR__APP_KEY", KEY)
        // What `value_from_env` instances read (every command loads the configuration).
        .env("IT_VT_KEY", VT_KEY)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !stdout.contains(KEY) && !stderr.contains(KEY),
        "the tenant key was shown"
    );
    (out.status.success(), stdout, stderr)
}

/// The job's newest run, read from its store.
async fn last_run(dir: &Path, job: &str) -> RunRecord {
    let store = soarjobd_store::open(&format!("sqlite:{}", dir.join("state.db").display()))
        .await
        .unwrap();
    let run = runs(&store, job).await.pop().expect("a run was recorded");
    store.close().await;
    run
}

/// `soarjobd logs <run>` of the job's newest run.
async fn stored_log(dir: &Path, soar_url: &str, job: &str) -> String {
    let run = last_run(dir, job).await;
    let (ok, stdout, stderr) = cli(dir, soar_url, &["logs", &run.id.to_string()]).await;
    assert!(ok, "{stdout}\n{stderr}");
    stdout
}

const FIDELITY_PY: &str = r#"
import json
import sys
import urllib.error
import urllib.request

from soar_sdk.SiemplifyJob import SiemplifyJob

DUMP = sys.argv[0] + ".out.json"


def call(s, method, path, body=None, headers=None):
    data = None if body is None else json.dumps(body).encode("utf-8")
    req = urllib.request.Request(s.API_ROOT + "/" + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return [r.status, r.read().decode("utf-8")]
    except urllib.error.HTTPError as e:
        return [e.code, e.read().decode("utf-8")]


s = SiemplifyJob()
key = {"AppKey": sys.argv[1]}
out = {}
out["login"] = call(s, "POST", "external/v1/accounts/Login",
                    {"Username": "svc", "Password": "pw"}, key)
token = json.loads(out["login"][1])["token"]
out["bearer"] = call(s, "POST", "external/v1/playbooks/SaveWorkflowDefinitions",
                     {"name": "p"}, {"Authorization": "Bearer " + token})
out["tag"] = call(s, "POST", "external/v1/sdk/AddTag?format=snake",
                  {"case_id": 1, "alert_identifier": None, "tag": "T"}, key)
out["escaped"] = call(s, "GET", "external/v1/sdk/GetCaseComments/x%20y%2Fz?format=snake",
                      None, key)
out["forged"] = call(s, "GET", "external/v1/sdk/GetCaseComments/1?format=snake", None,
                     {"Authorization": "Bearer forged-not-from-a-login"})
json.dump(out, open(DUMP, "w"))
s.end("done", True)
"#;

#[tokio::test]
async fn the_gateway_passes_answers_through_supports_login_and_logs_refusals_with_the_run() {
    let up = start_upstream().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let jobs = vendor(dir, "tools", "Fidelity", &def("Fidelity"), FIDELITY_PY);
    instance(dir, "fidelity", "tools", "Fidelity", "");

    let (ok, stdout, stderr) = cli(dir, &up.url, &["run-once", "fidelity"]).await;
    assert!(ok, "{stdout}\n{stderr}");
    let out: Value =
        serde_json::from_str(&std::fs::read_to_string(jobs.join("Fidelity.py.out.json")).unwrap())
            .unwrap();

    // The login went through, and its bearer token was accepted and forwarded.
    assert_eq!(out["login"][0], 200, "{out}");
    assert_eq!(out["bearer"][0], 200, "{out}");
    let seen = up.seen.lock().unwrap().clone();
    let save = seen
        .iter()
        .find(|s| s.target.contains("SaveWorkflowDefinitions"))
        .expect("the bearer request reached the platform");
    assert_eq!(
        save.authorization.as_deref(),
        Some(&*format!("Bearer {LOGIN_TOKEN}"))
    );
    assert_eq!(save.app_key.as_deref(), Some(KEY));
    // A 500 stays a 500, with the platform's body.
    assert_eq!(out["tag"][0], 500, "{out}");
    assert!(
        out["tag"][1]
            .as_str()
            .unwrap()
            .contains("the case store is down"),
        "{out}"
    );
    // Percent-escapes reach the platform as the script encoded them, once.
    assert_eq!(out["escaped"][0], 200, "{out}");
    assert!(
        seen.iter()
            .any(|s| s.target == "/api/external/v1/sdk/GetCaseComments/x%20y%2Fz?format=snake"),
        "{seen:?}"
    );
    // A bearer token no login gave is refused by the gateway, never forwarded...
    assert_eq!(out["forged"][0], 401, "{out}");
    assert!(!seen.iter().any(|s| {
        s.authorization
            .as_deref()
            .is_some_and(|a| a.contains("forged"))
    }));
    assert_eq!(seen.iter().filter(|s| s.method == "GET").count(), 1);
    // ...and the refusal, with its reason, is in the run's stored log.
    let log = stored_log(dir, &up.url, "fidelity").await;
    assert!(log.contains("refused a request"), "{log}");
    assert!(log.contains("unknown or expired bearer token"), "{log}");
    assert!(
        !log.contains(LOGIN_TOKEN),
        "a login token was logged: {log}"
    );
    assert_eq!(last_run(dir, "fidelity").await.status, RunStatus::Succeeded);
}

#[tokio::test]
async fn no_answer_is_a_502_naming_why() {
    // A port nothing listens on: the platform never answered.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let jobs = vendor(
        dir,
        "tools",
        "NoAnswer",
        &def("No Answer"),
        "import json, sys, urllib.request, urllib.error\n\
         from soar_sdk.SiemplifyJob import SiemplifyJob\n\
         s = SiemplifyJob()\n\
         req = urllib.request.Request(s.API_ROOT + '/external/v1/sdk/AddTag?format=snake', \
         data=b'{}', method='POST', headers={'AppKey': sys.argv[1]})\n\
         try:\n    urllib.request.urlopen(req, timeout=60)\n    got = 200\n\
         except urllib.error.HTTPError as e:\n    got = e.code\n\
         json.dump(got, open(sys.argv[0] + '.out.json', 'w'))\n\
         s.end('done', True)\n",
    );
    instance(dir, "no-answer", "tools", "NoAnswer", "");
    let (ok, stdout, stderr) =
        cli(dir, &format!("http://{closed}"), &["run-once", "no-answer"]).await;
    assert!(ok, "{stdout}\n{stderr}");
    let got = std::fs::read_to_string(jobs.join("NoAnswer.py.out.json")).unwrap();
    assert_eq!(got.trim(), "502");
}

#[tokio::test]
async fn context_keys_honour_the_identifier() {
    let up = start_upstream().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    vendor(
        dir,
        "tools",
        "TwoClocks",
        &def("Two Clocks"),
        "from soar_sdk.SiemplifyJob import SiemplifyJob\n\
         s = SiemplifyJob()\n\
         a = s.get_job_context_property('A', 'timestamp')\n\
         b = s.get_job_context_property('B', 'timestamp')\n\
         s.set_job_context_property('A', 'timestamp', '1700000000001')\n\
         s.set_job_context_property('B', 'timestamp', '1700000000002')\n\
         s.set_job_context_property('A', 'cursor', 'a-side')\n\
         s.set_job_context_property('B', 'cursor', 'b-side')\n\
         s.end('a={} b={} ca={} cb={}'.format(a, b, \
         s.get_job_context_property('A', 'cursor'), s.get_job_context_property('B', 'cursor')), True)\n",
    );
    instance(dir, "two-clocks", "tools", "TwoClocks", "");
    for _ in 0..2 {
        let (ok, stdout, stderr) = cli(dir, &up.url, &["run-once", "two-clocks"]).await;
        assert!(ok, "{stdout}\n{stderr}");
    }
    let run = last_run(dir, "two-clocks").await;
    assert_eq!(
        run.message.as_deref(),
        Some("a=1700000000001 b=1700000000002 ca=a-side cb=b-side"),
        "{run:?}"
    );
    // Nothing of it went to the platform: job context is the job's own state.
    assert!(up.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_script_without_end_script_keeps_its_sdk_log_lines_and_no_logger_traceback() {
    let up = start_upstream().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    vendor(
        dir,
        "tools",
        "Quiet",
        &def("Quiet"),
        "from soar_sdk.SiemplifyJob import SiemplifyJob\n\
         from soar_sdk.SiemplifyUtils import output_handler\n\
         @output_handler\n\
         def main():\n    s = SiemplifyJob()\n    s.script_name = 'Quiet'\n    \
         s.LOGGER.info('synced 3 cases')\n    s.LOGGER.warn('one case had no owner')\n\
         main()\n",
    );
    instance(dir, "quiet", "tools", "Quiet", "");
    let (ok, stdout, stderr) = cli(dir, &up.url, &["run-once", "quiet"]).await;
    assert!(ok, "{stdout}\n{stderr}");
    let run = last_run(dir, "quiet").await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    let log = stored_log(dir, &up.url, "quiet").await;
    assert!(log.contains("synced 3 cases"), "{log}");
    assert!(log.contains("one case had no owner"), "{log}");
    assert!(!log.contains("Error initializing"), "{log}");
    assert!(!log.contains("Traceback"), "{log}");
}

#[tokio::test]
async fn a_file_name_with_spaces_and_relative_imports_runs_unchanged() {
    let up = start_upstream().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let jobs = vendor(
        dir,
        "vectra_qux",
        "Clear Empty Cases Job",
        &def("Clear Empty Cases Job"),
        "from soar_sdk.SiemplifyJob import SiemplifyJob\n\
         from ..core.Constants import GREETING\n\
         if __name__ == '__main__':\n    s = SiemplifyJob()\n    \
         s.end('{} from {} as {}'.format(GREETING, __package__, __spec__.name), True)\n",
    );
    let core = jobs.parent().unwrap().join("core");
    std::fs::create_dir_all(&core).unwrap();
    std::fs::write(core.join("__init__.py"), "").unwrap();
    std::fs::write(core.join("Constants.py"), "GREETING = 'cleared'\n").unwrap();
    std::fs::create_dir_all(dir.join("jobs")).unwrap();
    std::fs::write(
        dir.join("jobs/clear-empty.yaml"),
        format!(
            "uses: \"../integrations/vectra_qux/jobs/Clear Empty Cases Job.yaml\"\n\
             env:\n  PYTHONPATH: {}\n",
            sdk_path().display()
        ),
    )
    .unwrap();
    let (ok, stdout, stderr) = cli(dir, &up.url, &["check"]).await;
    assert!(ok, "{stdout}\n{stderr}");
    let (ok, stdout, stderr) = cli(dir, &up.url, &["run-once", "clear-empty"]).await;
    assert!(ok, "{stdout}\n{stderr}");
    let run = last_run(dir, "clear-empty").await;
    assert_eq!(
        run.message.as_deref(),
        Some("cleared from vectra_qux.jobs as vectra_qux.jobs.Clear_Empty_Cases_Job"),
        "{run:?}"
    );
}

/// The shape of TIPCommon's `Job` failure: the cause first, then a bare re-raise.
const CHAINED_FAILURE_PY: &str = r#"
from soar_sdk.SiemplifyJob import SiemplifyJob
from soar_sdk.SiemplifyUtils import output_handler


def perform():
    raise ValueError('Invalid parameter "Max Hours". The value must be an integer')


@output_handler
def main():
    SiemplifyJob()
    try:
        perform()
    except Exception as e:
        raise RuntimeError from e


main()
"#;

#[tokio::test]
async fn a_failed_runs_reason_is_the_innermost_meaningful_exception() {
    let up = start_upstream().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    vendor(dir, "tools", "Chained", &def("Chained"), CHAINED_FAILURE_PY);
    instance(dir, "chained", "tools", "Chained", "");
    let (ok, _, _) = cli(dir, &up.url, &["run-once", "chained"]).await;
    assert!(!ok);
    let run = last_run(dir, "chained").await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(
        run.message.as_deref(),
        Some(
            "ValueError: Invalid parameter \"Max Hours\". The value must be an integer \
             (exit status 1)"
        ),
        "{run:?}"
    );
}

#[tokio::test]
async fn run_folder_and_client_address_are_the_jobs_and_list_shows_both_columns() {
    let up = start_upstream().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let script = "import os\n\
         from soar_sdk.SiemplifyJob import SiemplifyJob\n\
         s = SiemplifyJob()\n\
         s.script_name = 'Folders'\n\
         open(os.path.join(s.run_folder, 'marker'), 'w').write('x')\n\
         url = s.platform_url if os.environ.get('CLIENT_ADDRESS') else '-'\n\
         s.end('{}|{}'.format(s.run_folder, url), True)\n";
    vendor(dir, "tools", "Folders", &def("Folders"), script);
    instance(dir, "folders", "tools", "Folders", "");
    instance(
        dir,
        "folders-set",
        "tools",
        "Folders",
        &format!(
            "  RUN_FOLDER: {}\n  CLIENT_ADDRESS: soar.example.org/x\nname: Folders Set\n",
            dir.join("mine").display()
        ),
    );
    for job in ["folders", "folders-set"] {
        let (ok, stdout, stderr) = cli(dir, &up.url, &["run-once", job]).await;
        assert!(ok, "{stdout}\n{stderr}");
    }
    // Default: a per-job writable folder under the data directory (beside the database).
    let run = last_run(dir, "folders").await;
    let want = dir.join("secops/run/folders/SiemplifyJob/Folders");
    assert_eq!(
        run.message.as_deref(),
        Some(&*format!("{}|-", want.display())),
        "{run:?}"
    );
    assert!(want.join("marker").exists());
    let run = last_run(dir, "folders-set").await;
    assert_eq!(
        run.message.as_deref(),
        Some(&*format!(
            "{}|https://soar.example.org/",
            dir.join("mine/SiemplifyJob/Folders").display()
        )),
        "{run:?}"
    );

    // LAST SUCCESS is the run; these scripts save no timestamp, so TIMESTAMP is empty.
    let (ok, stdout, _) = cli(dir, &up.url, &["list", "--json"]).await;
    assert!(ok);
    let list: Value = serde_json::from_str(&stdout).unwrap();
    let row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "folders")
        .unwrap();
    assert!(row["last_success"].is_string(), "{row}");
    assert!(row["timestamp"].is_null(), "{row}");
    let (ok, stdout, _) = cli(dir, &up.url, &["list"]).await;
    assert!(ok);
    assert!(
        stdout.contains("LAST SUCCESS") && stdout.contains("TIMESTAMP"),
        "{stdout}"
    );
}

/// A TIPCommon-style job reading its integration's configuration (`get_configuration`).
const CONFIGURED_PY: &str = r#"
import json
import sys

from TIPCommon.base.job import Job
from TIPCommon.extraction import extract_configuration_param


class SyncJob(Job):
    def _init_api_clients(self):
        root = extract_configuration_param(self.soar_job, "VirusTotalV3", "Api Root",
                                           is_mandatory=True)
        key = extract_configuration_param(self.soar_job, "VirusTotalV3", "API Key",
                                          is_mandatory=True)
        verify = extract_configuration_param(self.soar_job, "VirusTotalV3", "Verify SSL",
                                             input_type=bool)
        return root, key, verify

    def _perform_job(self):
        root, key, verify = self.api_client
        with open(sys.argv[0] + ".out.json", "w") as f:
            json.dump({"root": root, "key": key, "verify": verify, "note": self.params.note}, f)
        self.logger.info("configured from {} with key {}".format(root, key))


if __name__ == "__main__":
    SyncJob("Sync Job").start()
"#;

const VT_KEY: &str = "vt-key-from-env-5c0ffee1";

#[tokio::test]
async fn a_job_reads_its_integrations_configuration_from_the_local_instance() {
    let up = start_upstream().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let jobs = vendor(
        dir,
        "virus_total",
        "SyncJob",
        &def("Sync Job"),
        CONFIGURED_PY,
    );
    instance(dir, "vt-sync", "virus_total", "SyncJob", "");
    std::fs::create_dir_all(dir.join("config")).unwrap();
    std::fs::write(
        dir.join("config/soarjobd.yaml"),
        "secops:\n  integrations:\n    VirusTotalV3:\n      Api Root: https://vt.example/api/v3\n      \
         API Key: {value_from_env: IT_VT_KEY}\n      Verify SSL: true\n",
    )
    .unwrap();
    let mut cmd = tokio::process::Command::from(soarjobd_in(dir, &["run-once", "vt-sync"]));
    let out = cmd
        .env("SOARJOBD__SOAR__URL", &up.url)
        .env("SOARJOBD__SOAR__APP_KEY", KEY)
        .env("IT_VT_KEY", VT_KEY)
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        !text.contains(VT_KEY),
        "an instance secret was shown: {text}"
    );
    let got: Value =
        serde_json::from_str(&std::fs::read_to_string(jobs.join("SyncJob.py.out.json")).unwrap())
            .unwrap();
    assert_eq!(
        got,
        json!({"root": "https://vt.example/api/v3", "key": VT_KEY, "verify": true, "note": "kept"})
    );
    // Answered locally: the tenant was never asked for the configuration.
    let seen = up.seen.lock().unwrap().clone();
    assert!(
        !seen.iter().any(|s| s.target.contains("configuration")),
        "{seen:?}"
    );
    // The script logged the key; the stored log has it redacted.
    let log = stored_log(dir, &up.url, "vt-sync").await;
    assert!(
        log.contains("configured from https://vt.example/api/v3"),
        "{log}"
    );
    assert!(!log.contains(VT_KEY), "{log}");
}

#[tokio::test]
async fn a_vault_placeholder_in_an_instance_is_a_located_configuration_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    vendor(
        dir,
        "virus_total",
        "SyncJob",
        &def("Sync Job"),
        CONFIGURED_PY,
    );
    instance(dir, "vt-sync", "virus_total", "SyncJob", "");
    std::fs::create_dir_all(dir.join("config")).unwrap();
    std::fs::write(
        dir.join("config/soarjobd.yaml"),
        "secops:\n  integrations:\n    VirusTotalV3:\n      \
         API Key: \"[AAA:::CyberArkVault:::CyberArkVault_1:::vt]\"\n",
    )
    .unwrap();
    let out = soarjobd_in(dir, &["check"]).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("secops.integrations.VirusTotalV3.API Key")
            && text.contains("vault placeholder")
            && text.contains("value_from_env"),
        "{text}"
    );
}

/// Comments on cases created since the last run (the SDK timestamp), then saves the
/// timestamp: re-run from scratch, it comments its whole lookback window again.
const COMMENT_NEW_PY: &str = r#"
from soar_sdk.SiemplifyJob import SiemplifyJob
from soar_sdk.SiemplifyUtils import output_handler, unix_now


@output_handler
def main():
    s = SiemplifyJob()
    s.script_name = "Comment New Cases"
    now = unix_now()
    since = max(s.fetch_timestamp(), now - 24 * 3600 * 1000)
    ids = s.get_cases_ids_by_filter(status="OPEN", start_time_from_unix_time_in_ms=since + 1,
                                    start_time_to_unix_time_in_ms=now)
    for case_id in ids:
        s.add_comment("triaged by the comment job", case_id)
    previous = s.get_scoped_job_context_property("batches") or "0"
    s.set_scoped_job_context_property("batches", str(int(previous) + 1))
    s.save_timestamp(new_timestamp=now)
    s.end("commented {} (batch {})".format(len(ids), int(previous) + 1), True)


if __name__ == "__main__":
    main()
"#;

#[tokio::test]
async fn import_state_then_a_run_comments_no_case_twice() {
    use soarjobd_sim::soar::{CasePatch, SoarSimConfig};
    const HOUR: i64 = 3_600_000;
    let sim = soarjobd_sim::soar::start(
        SoarSimConfig {
            cases: 0,
            app_key: KEY.into(),
            ..SoarSimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let case = |created_h: i64| {
        sim.state()
            .upsert_case(CasePatch {
                status: Some("OPEN".into()),
                environment: Some("Default Environment".into()),
                tags: Some(vec![]),
                creation_time: Some(now - created_h * HOUR),
                modification_time: Some(now - created_h * HOUR),
                alerts: Some(1),
                ..CasePatch::default()
            })
            .unwrap()
            .id
    };
    // What the platform's runs of the job did before the move: A and B commented, the
    // timestamp saved 5 h ago, a scoped counter. C came after.
    let (a, b) = (case(10), case(8));
    let c = case(1);
    let http = reqwest::Client::new();
    for id in [a, b] {
        let resp = http
            .post(format!(
                "{}/api/external/v1/cases/comments?format=snake",
                sim.url()
            ))
            .header("AppKey", KEY)
            .json(&json!({"case_id": id, "alert_identifier": null, "comment": "triaged by the comment job"}))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
    }
    let saved = now - 5 * HOUR;
    let st = sim.state();
    st.set_context_property(
        3,
        "Comment New Cases",
        "timestamp",
        json!(saved.to_string()),
    );
    st.set_context_property(3, "tenant-instance-42", "batches", json!("7"));

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    vendor(
        dir,
        "tools",
        "CommentNewCases",
        &def("Comment New Cases"),
        COMMENT_NEW_PY,
    );
    instance(dir, "comment-new", "tools", "CommentNewCases", "");
    let url = sim.url();
    let import = [
        "secops",
        "import-state",
        "comment-new",
        "--identifier",
        "tenant-instance-42",
        "--key",
        "batches",
    ];

    // A dry run shows what it would write, and writes nothing.
    let mut dry = import.to_vec();
    dry.push("--dry-run");
    let (ok, stdout, stderr) = cli(dir, &url, &dry).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "would write timestamp Comment New Cases/timestamp: {saved}"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("would write context comment-new/batches: \"7\""),
        "{stdout}"
    );
    let store = soarjobd_store::open(&format!("sqlite:{}", dir.join("state.db").display()))
        .await
        .unwrap();
    assert_eq!(
        store
            .get_timestamp("comment-new", "Comment New Cases/timestamp")
            .await
            .unwrap(),
        None
    );

    let (ok, stdout, stderr) = cli(dir, &url, &import).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert_eq!(
        store
            .get_timestamp("comment-new", "Comment New Cases/timestamp")
            .await
            .unwrap(),
        Some(saved)
    );
    store.close().await;

    let (ok, stdout, stderr) = cli(dir, &url, &["run-once", "comment-new"]).await;
    assert!(ok, "{stdout}\n{stderr}");
    let run = last_run(dir, "comment-new").await;
    assert_eq!(
        run.message.as_deref(),
        Some("commented 1 (batch 8)"),
        "{run:?}"
    );
    // The simulator's own view: every case has exactly one comment.
    for id in [a, b, c] {
        assert_eq!(
            sim.state().comments(Some(id)).len(),
            1,
            "case {id}: {:?}",
            sim.state().comments(Some(id))
        );
    }
}

/// Builds a pure-Python wheel by hand (a zip with the package and its `.dist-info`, RECORD
/// hashed as pip checks it): `python3 - <out dir> <dist name> <version> <package folder>`.
const MAKE_WHEEL: &str = r#"
import base64, hashlib, os, sys, zipfile
out, name, version, pkg = sys.argv[1:5]
dist = name.replace("-", "_")
info = "{}-{}.dist-info".format(dist, version)
files = {}
for root, dirs, names in os.walk(pkg):
    dirs[:] = [d for d in dirs if d != "__pycache__"]
    for n in names:
        full = os.path.join(root, n)
        rel = os.path.join(os.path.basename(pkg), os.path.relpath(full, pkg))
        files[rel] = open(full, "rb").read()
files[info + "/METADATA"] = "Metadata-Version: 2.1\nName: {}\nVersion: {}\n".format(name, version).encode()
files[info + "/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: soarjobd-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
record = []
for rel, data in files.items():
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    record.append("{},sha256={},{}".format(rel, digest, len(data)))
record.append(info + "/RECORD,,")
files[info + "/RECORD"] = ("\n".join(record) + "\n").encode()
path = os.path.join(out, "{}-{}-py3-none-any.whl".format(dist, version))
with zipfile.ZipFile(path, "w") as z:
    for rel, data in files.items():
        z.writestr(rel, data)
"#;

fn make_wheel(out: &Path, name: &str, version: &str, package: &Path) {
    use std::io::Write as _;
    let mut child = std::process::Command::new("python3")
        .arg("-")
        .arg(out)
        .arg(name)
        .arg(version)
        .arg(package)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(MAKE_WHEEL.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "building the {name} wheel");
}

const USES_ENV_PY: &str = r#"
import sys

import acme_helpers
import TIPCommon
from soar_sdk.SiemplifyJob import SiemplifyJob
from TIPCommon.extraction import extract_job_param

s = SiemplifyJob()
note = extract_job_param(s, "Note", default_value="none")
s.end("helpers {} TIPCommon {} note {} in {}".format(
    acme_helpers.VERSION, TIPCommon.__version__, note, sys.prefix), True)
"#;

#[tokio::test]
async fn secops_install_builds_an_offline_environment_that_check_accepts_and_a_job_uses() {
    let up = start_upstream().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Local wheels: the stand-in TIPCommon and a small helper package, built here.
    let wheels = dir.join("wheels");
    std::fs::create_dir_all(&wheels).unwrap();
    make_wheel(&wheels, "TIPCommon", "2.0.0", &sdk_path().join("TIPCommon"));
    let helpers = dir.join("src/acme_helpers");
    std::fs::create_dir_all(&helpers).unwrap();
    std::fs::write(helpers.join("__init__.py"), "VERSION = '1.2.0'\n").unwrap();
    make_wheel(&wheels, "acme-helpers", "1.2.0", &helpers);

    // A content-hub-shaped integration: pyproject.toml pins, jobs/ beside.
    let jobs = vendor(dir, "acme", "UsesEnv", &def("Uses Env"), USES_ENV_PY);
    let integration = jobs.parent().unwrap().to_path_buf();
    std::fs::write(
        integration.join("pyproject.toml"),
        "[project]\nname = \"Acme\"\nversion = \"3.0\"\ndependencies = [\n    \
         \"TIPCommon==2.0.0\",\n    \"acme-helpers>=1.0\",\n    \"soar-sdk\",\n]\n",
    )
    .unwrap();
    // No `python:` and no PYTHONPATH: the integration's environment is all it has.
    std::fs::create_dir_all(dir.join("jobs")).unwrap();
    std::fs::write(
        dir.join("jobs/uses-env.yaml"),
        "uses: ../integrations/acme/jobs/UsesEnv.yaml\nvalues:\n  Note: hi\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("config")).unwrap();
    std::fs::write(
        dir.join("config/soarjobd.yaml"),
        format!(
            "secops:\n  sdk: {}\n  wheels: [{}]\n",
            sdk_path().display(),
            wheels.display()
        ),
    )
    .unwrap();

    let (ok, stdout, _) = cli(dir, &up.url, &["check"]).await;
    assert!(!ok, "{stdout}");
    assert!(
        stdout.contains("declares dependencies but has no environment")
            && stdout.contains("soarjobd secops install"),
        "{stdout}"
    );

    let (ok, stdout, stderr) = cli(dir, &up.url, &["secops", "install", "integrations/acme"]).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("[1/1] acme: creating the environment"),
        "{stderr}"
    );
    assert!(stderr.contains("local wheels only"), "{stderr}");
    assert!(
        stdout.starts_with("installed integrations/acme -> "),
        "{stdout}"
    );
    let venv = PathBuf::from(stdout.trim().rsplit(" -> ").next().unwrap());
    assert!(venv.starts_with(dir.join("secops/venvs/acme")), "{venv:?}");
    // The SDK's package folder itself is on the environment's path.
    let (ok, stdout, stderr) = cli(dir, &up.url, &["secops", "install", "integrations/acme"]).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.starts_with("up to date integrations/acme -> "),
        "{stdout}"
    );
    let top_level = std::process::Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import SiemplifyUtils, soar_sdk; print(SiemplifyUtils.__file__)",
        ])
        .env_remove("PYTHONPATH")
        .output()
        .unwrap();
    assert!(
        top_level.status.success(),
        "{}",
        String::from_utf8_lossy(&top_level.stderr)
    );

    let (ok, stdout, stderr) = cli(dir, &up.url, &["check"]).await;
    assert!(ok, "{stdout}\n{stderr}");
    let (ok, stdout, stderr) = cli(dir, &up.url, &["run-once", "uses-env"]).await;
    assert!(ok, "{stdout}\n{stderr}");
    let run = last_run(dir, "uses-env").await;
    assert_eq!(
        run.message.as_deref(),
        Some(&*format!(
            "helpers 1.2.0 TIPCommon 2.0.0+standin note hi in {}",
            venv.display()
        )),
        "{run:?}"
    );

    // A job whose script imports what the environment lacks is reported before it runs.
    std::fs::write(jobs.join("Broken.yaml"), def("Broken")).unwrap();
    std::fs::write(
        jobs.join("Broken.py"),
        "import acme_helpers\nimport not_in_any_wheel\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("jobs/broken.yaml"),
        "uses: ../integrations/acme/jobs/Broken.yaml\n",
    )
    .unwrap();
    let (ok, stdout, _) = cli(dir, &up.url, &["check"]).await;
    assert!(!ok, "{stdout}");
    assert!(
        stdout.contains("cannot import not_in_any_wheel")
            && !stdout.contains("import acme_helpers,"),
        "{stdout}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name() == "__pycache__" {
            continue;
        }
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// The README's "Migrating from the SecOps platform", step by step, with the repository's
/// example integration as the vendored one and the simulator as the tenant.
#[tokio::test]
async fn the_readme_migration_walkthrough_reaches_a_running_marketplace_job() {
    use soarjobd_sim::soar::{CasePatch, SoarSimConfig};
    let sim = soarjobd_sim::soar::start(
        SoarSimConfig {
            cases: 0,
            app_key: KEY.into(),
            ..SoarSimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let stale = sim
        .state()
        .upsert_case(CasePatch {
            status: Some("OPEN".into()),
            environment: Some("Default Environment".into()),
            tags: Some(vec![]),
            creation_time: Some(now - 100 * 3_600_000),
            modification_time: Some(now - 48 * 3_600_000),
            alerts: Some(1),
            ..CasePatch::default()
        })
        .unwrap()
        .id;
    // The platform's last run of the job, before the move.
    let platform_ts = now - 3_600_000;
    sim.state().set_context_property(
        3,
        "Tag Stale Cases",
        "timestamp",
        json!(platform_ts.to_string()),
    );

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // 1. Vendor the integration (unmodified), the SDK and a wheels folder.
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/secops/integrations/soarjobd_examples"),
        &dir.join("integrations/soarjobd_examples"),
    );
    std::fs::create_dir_all(dir.join("wheels")).unwrap();
    // 2. Configure.
    std::fs::create_dir_all(dir.join("config")).unwrap();
    std::fs::write(
        dir.join("config/soarjobd.yaml"),
        format!(
            "secops:\n  sdk: {}\n  wheels: [{}]\n",
            sdk_path().display(),
            dir.join("wheels").display()
        ),
    )
    .unwrap();
    let url = sim.url();
    // 3. Build the integration's environment.
    let (ok, stdout, stderr) = cli(
        dir,
        &url,
        &["secops", "install", "integrations/soarjobd_examples"],
    )
    .await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stderr.contains("adding the SOAR SDK"), "{stderr}");
    // 4. The instance file (no python, no PYTHONPATH), then check.
    std::fs::create_dir_all(dir.join("jobs")).unwrap();
    std::fs::write(
        dir.join("jobs/tag-stale.yaml"),
        "uses: ../integrations/soarjobd_examples/jobs/TagStaleCases.yaml\n\
         schedule: {every: 15m}\nvalues:\n  Unmodified Hours: 24\n",
    )
    .unwrap();
    let (ok, stdout, stderr) = cli(dir, &url, &["check", "--verbose"]).await;
    assert!(ok, "{stdout}\n{stderr}");
    // 5. Import the job's state: dry run, then for real.
    let import = [
        "secops",
        "import-state",
        "tag-stale",
        "--identifier",
        "tenant-job-9",
    ];
    let mut dry = import.to_vec();
    dry.push("--dry-run");
    let (ok, stdout, stderr) = cli(dir, &url, &dry).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "would write timestamp Tag Stale Cases/timestamp: {platform_ts}"
        )),
        "{stdout}"
    );
    let (ok, stdout, stderr) = cli(dir, &url, &import).await;
    assert!(ok, "{stdout}\n{stderr}");
    // 6. Run it once and read its log.
    let (ok, stdout, stderr) = cli(dir, &url, &["run-once", "tag-stale"]).await;
    assert!(ok, "{stdout}\n{stderr}");
    let run = last_run(dir, "tag-stale").await;
    assert_eq!(
        run.message.as_deref(),
        Some("Tagged 1 stale cases"),
        "{run:?}"
    );
    let tagged: Vec<u64> = sim
        .state()
        .cases()
        .into_iter()
        .filter(|c| c.tags.iter().any(|t| t == "Stale"))
        .map(|c| c.id)
        .collect();
    assert_eq!(tagged, [stale]);
    let log = stored_log(dir, &url, "tag-stale").await;
    assert!(
        log.contains(&format!("previous run: {platform_ts}")),
        "{log}"
    );
    let (ok, stdout, _) = cli(dir, &url, &["list"]).await;
    assert!(ok && stdout.contains("tag-stale"), "{stdout}");
}

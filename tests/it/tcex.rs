//! `tcex-app` jobs: ThreatConnect TcEx job apps run unchanged, with the real tcex 3.0.11 from
//! PyPI (installed by the first test into a virtual environment cached under `target/`),
//! against the ThreatConnect simulator, through the daemon's loopback TC gateway.
//!
//! Two apps: the repository's example (`examples/tcex/ioc-feed`, copied into each test's
//! folder) and a probe written here, which records what it was given (argv, environment,
//! the params file before tcex deletes it) and what the gateway answers to requests it must
//! refuse. Expected results come from the simulator's own view, never from what the app says.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use soarjobd_core::store::{RunRecord, RunStatus};
use soarjobd_sim::threatconnect as tcsim;
use soarjobd_sim::threatconnect::{TcSimConfig, TcSimHandle};

use crate::support::*;

/// The daemon's real ThreatConnect credentials: distinctive, so a leak is a substring search.
const ACCESS_ID: &str = "it-tcex-access-id-4471";
const SECRET_KEY: &str = "it-tcex-secret-key-c0ffee-never-show";
/// The example's `encrypt: true` param: reaches the app, nothing else.
const FEED_KEY: &str = "it-tcex-feed-key-8e2a1b";
const OWNER: &str = "Example Org";
const TCEX_VERSION: &str = "3.0.11";

/// The venv's python, with tcex installed: made once per checkout (a file lock keeps parallel
/// test processes, and a mutex the tests of this one, from installing twice).
fn tcex_python() -> PathBuf {
    static ONCE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _in_process = ONCE.lock().unwrap_or_else(|p| p.into_inner());
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target).unwrap();
    let venv = target.join(format!("tcex-venv-{TCEX_VERSION}"));
    let python = venv.join("bin/python");
    let ok = venv.join(".installed");
    let lock =
        std::fs::File::create(target.join(format!("tcex-venv-{TCEX_VERSION}.lock"))).unwrap();
    {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a file this function owns; released when `lock` is dropped.
        assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    }
    if ok.exists() {
        return python;
    }
    let _ = std::fs::remove_dir_all(&venv);
    let run = |cmd: &mut std::process::Command, what: &str| {
        let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            out.status.success(),
            "{what} failed (`.ci/run` installs python3-venv): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(
        std::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv),
        "python3 -m venv",
    );
    run(
        std::process::Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &format!("tcex=={TCEX_VERSION}"),
        ]),
        "pip install tcex",
    );
    std::fs::write(&ok, TCEX_VERSION).unwrap();
    python
}

async fn start_sim() -> TcSimHandle {
    tcsim::start(
        TcSimConfig {
            access_id: ACCESS_ID.into(),
            secret_key: SECRET_KEY.into(),
            ..TcSimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .expect("the simulator starts")
}

fn app_for(sim: &TcSimHandle, python: &Path) -> TestApp {
    let mut app = TestApp::new();
    app.settings.set_section(
        "threatconnect",
        json!({ "url": sim.api_url(), "access_id": ACCESS_ID, "secret_key": SECRET_KEY }),
    );
    app.settings
        .set_section("tcex", json!({ "python": python.display().to_string() }));
    app
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Vendors the example app as `apps/ioc-feed/` of the test's folder.
fn vendor_example(app: &TestApp) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tcex/ioc-feed");
    let dst = app.path("apps/ioc-feed");
    copy_dir(&src, &dst);
    dst
}

fn feed_instance(app: &TestApp, id: &str, hosts: &str, rest: &str) {
    std::fs::write(app.jobs_dir().join("feed-key"), format!("{FEED_KEY}\n")).unwrap();
    app.write_job(
        id,
        &format!(
            "uses: ../apps/ioc-feed/install.json\n\
             schedule: {{every: 1h}}\n\
             values:\n  tc_owner: {OWNER}\n  indicators: [{hosts}]\n  tags: [phishing, c2]\n  \
             feed_key: {{value_from_file: feed-key}}\n{rest}"
        ),
    );
}

async fn run_job(app: &TestApp, id: &str) -> RunRecord {
    let code = soarjobd::inspect::run_once(&app.app(), id, &[]).await;
    let store = app.store().await;
    let Some(run) = runs(&store, id).await.pop() else {
        panic!("no run recorded: {:#?}", app.app().load_jobs().errors);
    };
    assert_eq!(code, soarjobd_core::exit::for_run(run.status), "{run:?}");
    run
}

async fn stored_log(app: &TestApp, run: &RunRecord) -> String {
    let store = app.store().await;
    store
        .run_logs(run.id, 0, 100_000)
        .await
        .unwrap()
        .iter()
        .map(|l| format!("{} {} {}\n", l.level.as_str(), l.message, l.fields))
        .collect()
}

async fn sim_view(sim: &TcSimHandle, owner: &str) -> Value {
    let mut view = serde_json::Map::new();
    for what in ["groups", "indicators", "associations"] {
        let url = format!(
            "http://{}/_sim/owners/{}/{what}",
            sim.addr(),
            owner.replace(' ', "%20")
        );
        let v: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        view.insert(what.into(), v);
    }
    Value::Object(view)
}

#[tokio::test]
async fn the_example_app_stores_its_batch_exactly_as_with_real_credentials() {
    let python = tcex_python();
    let (logs, _guard) = capture_logs();
    let sim = start_sim().await;
    let app = app_for(&sim, &python);
    let dir = vendor_example(&app);
    feed_instance(
        &app,
        "ioc-feed",
        "bad.example.com, evil.example.net",
        "timeout: 2m\n",
    );

    let run = run_job(&app, "ioc-feed").await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(
        run.message.as_deref(),
        Some("Sent 2 indicators and 2 groups to Example Org")
    );
    // indicatorTypes + createAndUpload, no more.
    assert_eq!(run.stats["tc_requests"], json!(2), "{:?}", run.stats);
    let through_gateway = sim_view(&sim, OWNER).await;
    assert_eq!(
        through_gateway["indicators"].as_array().map(Vec::len),
        Some(2),
        "{through_gateway:#}"
    );
    assert_eq!(through_gateway["groups"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        through_gateway["associations"].as_array().map(Vec::len),
        Some(4)
    );

    // The same app by hand, as a developer runs it with real credentials (a plain JSON
    // inputs file, HMAC), against a fresh simulator: the same data arrives.
    let by_hand = start_sim().await;
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("inputs.json");
    for d in ["in", "out", "temp", "log"] {
        std::fs::create_dir_all(work.path().join(d)).unwrap();
    }
    let folder = |d: &str| work.path().join(d).display().to_string();
    std::fs::write(
        &config,
        json!({
            "tc_api_path": by_hand.api_url(),
            "tc_api_access_id": ACCESS_ID,
            "tc_api_secret_key": SECRET_KEY,
            "tc_owner": OWNER,
            "feed_name": "Example Feed",
            "indicators": "bad.example.com|evil.example.net",
            "tags": "phishing|c2",
            "feed_key": FEED_KEY,
            "mode": "normal",
            "tc_log_level": "info",
            "tc_in_path": folder("in"), "tc_out_path": folder("out"),
            "tc_temp_path": folder("temp"), "tc_log_path": folder("log"),
        })
        .to_string(),
    )
    .unwrap();
    let out = tokio::process::Command::new(&python)
        .arg("run.py")
        .current_dir(&dir)
        .env("TCEX_APP_CONFIG_DEV", &config)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sim_view(&by_hand, OWNER).await, through_gateway);

    // The app got its `encrypt` value (it logs its hash), and it is nowhere else.
    let stored = stored_log(&app, &run).await;
    assert!(
        stored.contains(&format!(
            "feed key sha256={}",
            soarjobd_clients::threatconnect::sha256_hex(FEED_KEY)
        )),
        "{stored}"
    );
    assert!(
        stored.contains("inputs: "),
        "app.log lines are the run's log: {stored}"
    );
    let history = format!("{run:?}");
    let mut db = std::fs::read(app.path("state.db")).unwrap();
    db.extend(std::fs::read(app.path("state.db-wal")).unwrap_or_default());
    let daemon_log = logs.text();
    for (what, text) in [
        ("stored log", stored.as_str()),
        ("history", history.as_str()),
        ("daemon log", daemon_log.as_str()),
        ("database", &String::from_utf8_lossy(&db)),
    ] {
        for secret in [FEED_KEY, ACCESS_ID, SECRET_KEY] {
            assert!(!text.contains(secret), "{secret} is in the {what}");
        }
    }
}

#[tokio::test]
async fn rejected_items_end_partial_a_raising_app_failed_and_a_hanging_one_timed_out() {
    let python = tcex_python();
    let (_logs, _guard) = capture_logs();
    let sim = start_sim().await;
    let app = app_for(&sim, &python);
    let dir = vendor_example(&app);

    // The platform refuses one indicator: tcex reports it, the app exits 3.
    feed_instance(&app, "partial", "good.example.com, not a host!", "");
    let run = run_job(&app, "partial").await;
    assert_eq!(run.status, RunStatus::Partial, "{run:?}");
    let msg = run.message.clone().unwrap_or_default();
    assert!(
        msg.ends_with("of 4 items were rejected by ThreatConnect"),
        "{msg}"
    );
    let view = sim_view(&sim, OWNER).await;
    let summaries: Vec<&str> = view["indicators"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["summary"].as_str())
        .collect();
    assert_eq!(summaries, ["good.example.com"], "{view:#}");

    std::fs::write(app.jobs_dir().join("feed-key"), format!("{FEED_KEY}\n")).unwrap();
    app.write_job(
        "raises",
        &format!(
            "uses: ../apps/ioc-feed/install.json\nname: Raising feed\nvalues:\n  tc_owner: {OWNER}\n  \
             indicators: a.example.com\n  feed_key: {{value_from_file: feed-key}}\n  mode: raise\n"
        ),
    );
    let run = run_job(&app, "raises").await;
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    let msg = run.message.clone().unwrap_or_default();
    assert!(
        msg.starts_with("Generic Error.  See logs for more details (the feed is unreachable)."),
        "{msg}"
    );
    let stored = stored_log(&app, &run).await;
    assert!(
        stored.contains("RuntimeError: the feed is unreachable"),
        "{stored}"
    );

    app.write_job(
        "hangs",
        &format!(
            "uses: ../apps/ioc-feed/install.json\nname: Hanging feed\ntimeout: 3s\nvalues:\n  tc_owner: {OWNER}\n  \
             indicators: a.example.com\n  feed_key: {{value_from_file: feed-key}}\n  mode: hang\n"
        ),
    );
    let run = run_job(&app, "hangs").await;
    assert_eq!(run.status, RunStatus::TimedOut, "{run:?}");
    // No process of the app is left (its folder is this test's own).
    let app_dir = dir.display().to_string();
    let left = eventually(Duration::from_secs(10), || {
        let app_dir = app_dir.clone();
        async move {
            std::fs::read_dir("/proc").unwrap().flatten().all(|e| {
                let mut cmdline = String::new();
                let _ = std::fs::File::open(e.path().join("cmdline"))
                    .and_then(|mut f| f.read_to_string(&mut cmdline));
                !cmdline.contains(&app_dir)
            })
        }
    })
    .await;
    assert!(left, "a process of the timed-out app is still running");
}

const PROBE_INSTALL: &str = r#"{
  "displayName": "Probe", "programLanguage": "PYTHON", "programMain": "run",
  "programVersion": "0.1.0", "runtimeLevel": "Organization", "listDelimiter": "|",
  "features": ["fileParams"], "languageVersion": "3.11",
  "params": [
    {"name": "tc_owner", "label": "Owner", "type": "String", "required": true},
    {"name": "secret", "label": "Secret", "type": "String", "encrypt": true, "required": true},
    {"name": "flags", "label": "Flags", "type": "MultiChoice", "validValues": ["a", "b", "c"]},
    {"name": "verbose", "label": "Verbose", "type": "Boolean", "default": false},
    {"name": "tc_log_level", "label": "Logging Level", "type": "Choice", "validValues": ["debug", "info"], "default": "info"}
  ]
}"#;

/// Records what it was given and what the gateway answers, then exits 0.
const PROBE_PY: &str = r#"
import http.client, json, os, sys, time, urllib.parse

dump = {'argv': sys.argv, 'env': dict(os.environ), 'cwd': os.getcwd()}
pf, key = os.environ['TC_APP_PARAM_FILE'], os.environ['TC_APP_PARAM_KEY']
raw = open(pf, 'rb').read()
dump['params_raw_hex'] = raw.hex()
dump['params_mode'] = oct(os.stat(pf).st_mode & 0o777)
dump['dir_mode'] = oct(os.stat(os.path.dirname(pf)).st_mode & 0o777)
dump['run_dir'] = os.path.dirname(pf)
dump['key_len'] = len(key)
from tcex.utils import Utils
dump['params'] = json.loads(Utils.decrypt_aes_cbc(key, raw).decode())

from tcex import TcEx
tcex = TcEx()
inputs = tcex.inputs.contents_resolved
dump['params_file_left'] = os.path.exists(pf)
dump['secret_seen'] = inputs['secret']
dump['flags_seen'] = inputs.get('flags')
r = tcex.session_tc.get('/v2/types/indicatorTypes')
dump['types_status'] = r.status_code

api = urllib.parse.urlparse(inputs['tc_api_path'])
token = inputs['tc_token']
def send(target, headers):
    c = http.client.HTTPConnection(api.hostname, api.port, timeout=10)
    c.putrequest('GET', target, skip_host=True, skip_accept_encoding=True)
    for k, v in headers.items():
        c.putheader(k, v)
    c.endheaders()
    resp = c.getresponse()
    return [resp.status, resp.read().decode(errors='replace')]
host = {'Host': f'{api.hostname}:{api.port}'}
auth = dict(host, Authorization=f'TC-Token {token}')
dump['probes'] = {
    'owners': send('/api/v2/owners', auth),
    'internal': send('/api/internal/variable/runtime/TC/x', auth),
    'v1': send('/api/v1/owners', auth),
    'dotdot': send('/api/v2/../internal/x', auth),
    'encoded': send('/api/v2/%2E%2e/internal/x', auth),
    'absolute': send('http://example.com/api/v2/owners', auth),
    'other_host': send('/api/v2/owners', dict(auth, Host='example.com')),
    'hmac': send('/api/v2/owners', dict(host, Authorization='TC someone:c2lnbmF0dXJl')),
    'no_auth': send('/api/v2/owners', host),
    'renew': send(f'/api/appAuth?expiredToken={token}', host),
    'renew_bogus': send('/api/appAuth?expiredToken=' + 'f' * 64, host),
}
dump['token'] = token
dump['api_path'] = inputs['tc_api_path']
json.dump(dump, open(os.environ['PROBE_DUMP'], 'w'))
tcex.exit(0, 'probed')
"#;

#[tokio::test]
async fn the_launch_follows_the_contract_and_the_gateway_forwards_only_live_runs_api_calls() {
    let python = tcex_python();
    let (logs, _guard) = capture_logs();
    let sim = start_sim().await;
    let app = app_for(&sim, &python);
    let dir = app.path("apps/probe");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("install.json"), PROBE_INSTALL).unwrap();
    std::fs::write(dir.join("run.py"), PROBE_PY).unwrap();
    let dump = app.path("probe.json");
    std::fs::write(app.jobs_dir().join("secret"), "probe-secret-value-77\n").unwrap();
    app.write_job(
        "probe",
        &format!(
            "uses: ../apps/probe/install.json\ntimeout: 10m\n\
             env: {{PROBE_DUMP: {}}}\n\
             values:\n  tc_owner: {OWNER}\n  secret: {{value_from_file: secret}}\n  \
             flags: [a, c]\n  verbose: true\n",
            dump.display()
        ),
    );
    let started = chrono::Utc::now().timestamp();
    let run = run_job(&app, "probe").await;
    let ended = chrono::Utc::now().timestamp();
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(run.message.as_deref(), Some("probed"));
    let d: Value = serde_json::from_str(&std::fs::read_to_string(&dump).unwrap()).unwrap();

    // The launch: no arguments, cwd = the app folder, the params file private and gone.
    assert_eq!(d["argv"], json!([dir.join("run.py").display().to_string()]));
    assert_eq!(
        Path::new(d["cwd"].as_str().unwrap())
            .canonicalize()
            .unwrap(),
        dir.canonicalize().unwrap()
    );
    assert_eq!(d["params_mode"], "0o600");
    assert_eq!(d["dir_mode"], "0o700");
    assert_eq!(d["key_len"], 32);
    assert_eq!(d["params_file_left"], false, "tcex deletes the params file");
    assert!(
        !Path::new(d["run_dir"].as_str().unwrap()).exists(),
        "the run folder is removed"
    );
    let env = d["env"].as_object().unwrap();
    assert!(
        !env.contains_key("TCEX_APP_CONFIG_DEV") && !env.contains_key("TC_TOKEN_SLEEP_INTERVAL")
    );
    assert_eq!(env["PROBE_DUMP"], dump.display().to_string());

    // The params: the app's values in the platform's formats, the runtime inputs, no credentials.
    let p = &d["params"];
    assert_eq!(p["tc_owner"], OWNER);
    assert_eq!(p["secret"], "probe-secret-value-77");
    assert_eq!(p["flags"], "a|c");
    assert_eq!(p["verbose"], "true");
    assert_eq!(p["tc_log_level"], "info");
    assert_eq!(p["tc_log_to_api"], "false");
    assert_eq!(d["secret_seen"], "probe-secret-value-77");
    assert_eq!(d["flags_seen"], json!(["a", "c"]));
    let expires: i64 = p["tc_token_expires"].as_str().unwrap().parse().unwrap();
    assert!(
        expires >= started + 600 && expires <= ended + 600,
        "{expires}"
    );
    assert!(
        p["tc_api_path"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:")
    );
    for k in [
        "tc_api_access_id",
        "tc_api_secret_key",
        "api_access_id",
        "api_secret_key",
    ] {
        assert!(p.get(k).is_none(), "{k} in the params file");
    }
    let whole = d.to_string();
    for secret in [ACCESS_ID, SECRET_KEY] {
        assert!(!whole.contains(secret), "{secret} reached the app");
    }
    assert_eq!(d["types_status"], 200);

    // The gateway.
    let status = |k: &str| d["probes"][k][0].as_i64().unwrap();
    assert_eq!(status("owners"), 200, "{}", d["probes"]);
    assert_eq!(status("internal"), 404);
    assert_eq!(status("v1"), 404);
    assert_eq!(status("dotdot"), 400);
    assert_eq!(status("encoded"), 400);
    assert_eq!(status("absolute"), 400);
    assert_eq!(status("other_host"), 400);
    assert_eq!(status("hmac"), 401);
    assert_eq!(status("no_auth"), 401);
    assert_eq!(status("renew_bogus"), 401);
    assert_eq!(status("renew"), 200);
    let renewed: Value = serde_json::from_str(d["probes"]["renew"][1].as_str().unwrap()).unwrap();
    assert_eq!(renewed["apiToken"], d["token"]);
    assert_eq!(
        renewed["apiTokenExpires"],
        json!(expires),
        "never past the deadline"
    );
    // Forwarded: indicatorTypes and owners; the refusals were not.
    assert_eq!(run.stats["tc_requests"], json!(2), "{:?}", run.stats);
    let stored = stored_log(&app, &run).await;
    assert!(
        stored.matches("TC gateway: request refused").count() >= 6,
        "refusals are warnings in the run's log: {stored}"
    );
    assert!(!stored.contains(d["token"].as_str().unwrap()), "{stored}");
    let daemon_log = logs.text();
    for secret in [
        ACCESS_ID,
        SECRET_KEY,
        "probe-secret-value-77",
        d["token"].as_str().unwrap(),
    ] {
        assert!(!daemon_log.contains(secret), "{secret} in the daemon's log");
        assert!(!stored.contains(secret), "{secret} in the run's log");
    }

    // The run is over: its token is dead.
    let client = reqwest::Client::new();
    let api = d["api_path"].as_str().unwrap();
    let token = d["token"].as_str().unwrap();
    let r = client
        .get(format!("{api}/v2/owners"))
        .header("Authorization", format!("TC-Token {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .get(format!("{api}/appAuth?expiredToken={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[test]
fn check_lists_every_problem_of_an_instance_against_install_json() {
    let app = TestApp::new();
    let dir = app.path("apps/probe");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("install.json"), PROBE_INSTALL).unwrap();
    std::fs::write(dir.join("run.py"), "").unwrap();
    app.write_job(
        "probe",
        "uses: ../apps/probe/install.json\n\
         values:\n  secret: inline-password\n  flags: [a, b]\n  verbose: maybe\n  tc_ownr: x\n",
    );
    let errs = soarjobd_core::definition::load_file(
        &app.jobs_dir().join("probe.yaml"),
        app.app().registry().as_ref(),
        soarjobd_containment::open_nonblocking,
    )
    .unwrap_err();
    let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
    let has = |s: &str| text.iter().any(|t| t.contains(s));
    assert!(
        has("`secret` is a password: give it with `value_from_env`"),
        "{text:#?}"
    );
    assert!(has("The value must be true or false"), "{text:#?}");
    assert!(
        has("unknown parameter `tc_ownr` (did you mean `tc_owner`?)"),
        "{text:#?}"
    );
    assert!(has("missing mandatory parameter tc_owner"), "{text:#?}");
    assert!(
        errs.iter()
            .all(|e| e.file.ends_with("probe.yaml") && e.line > 0),
        "{text:#?}"
    );
    assert_eq!(errs.len(), 4, "{text:#?}");

    // Once the values parse, the app's own rules: literal validValues of a MultiChoice.
    std::fs::write(app.jobs_dir().join("secret"), "s\n").unwrap();
    app.write_job(
        "probe",
        "uses: ../apps/probe/install.json\n\
         values:\n  tc_owner: o\n  secret: {value_from_file: secret}\n  flags: [a, z]\n",
    );
    let errs = soarjobd_core::definition::load_file(
        &app.jobs_dir().join("probe.yaml"),
        app.app().registry().as_ref(),
        soarjobd_containment::open_nonblocking,
    )
    .unwrap_err();
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0]
            .message
            .contains("`z` is not a valid value of `flags` (expected one of: a, b, c)"),
        "{errs:#?}"
    );
    assert_eq!(errs[0].line, 5, "located at the value: {errs:#?}");
}

#[tokio::test]
async fn an_edit_of_install_json_reloads_its_jobs_without_waiting_for_the_poll() {
    let (_logs, _guard) = capture_logs();
    let sim = start_sim().await;
    // No tcex needed: the job is loaded, not run (its next tick is an hour away).
    let mut app = app_for(&sim, Path::new("python3"));
    app.settings.reload_poll = Duration::from_secs(3600);
    let dir = vendor_example(&app);
    feed_instance(&app, "ioc-feed", "a.example.com", "");
    let daemon = app.start().await;
    let jobs = daemon.jobs();
    let name = |jobs: &tokio::sync::watch::Receiver<soarjobd_core::definition::LoadedJobs>| {
        jobs.borrow().get("ioc-feed").map(|d| d.name.clone())
    };
    let loaded = eventually(Duration::from_secs(10), || {
        let jobs = jobs.clone();
        async move { name(&jobs).as_deref() == Some("IOC Feed Example") }
    })
    .await;
    assert!(loaded, "{:#?}", app.app().load_jobs().errors);
    // Changed the way an editor saves: a new file renamed over the old one.
    let install = dir.join("install.json");
    let text = std::fs::read_to_string(&install).unwrap();
    std::fs::write(
        dir.join(".install.json.new"),
        text.replace("IOC Feed Example", "IOC Feed Renamed"),
    )
    .unwrap();
    std::fs::rename(dir.join(".install.json.new"), &install).unwrap();
    let reloaded = eventually(Duration::from_secs(20), || {
        let jobs = jobs.clone();
        async move { name(&jobs).as_deref() == Some("IOC Feed Renamed") }
    })
    .await;
    assert!(
        reloaded,
        "the job still has the old manifest: {:?}",
        name(&jobs)
    );
    daemon.shutdown().await;
}

#[tokio::test]
async fn tcex_deps_builds_the_lib_folder_the_app_then_runs_with_from_its_source_checkout() {
    let venv_python = tcex_python();
    let (_logs, _guard) = capture_logs();
    let sim = start_sim().await;
    // The job's interpreter is the plain python3 the venv was made from (the same version):
    // tcex comes from the app's own lib folder only.
    let app = app_for(&sim, Path::new("python3"));
    let dir = vendor_example(&app);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_soarjobd"))
        .args(["tcex", "deps"])
        .arg(&dir)
        .arg("--python")
        .arg(&venv_python)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lib = PathBuf::from(stdout.trim());
    let name = lib.file_name().unwrap().to_str().unwrap().to_string();
    assert!(name.starts_with("lib_3."), "{name}");
    assert!(
        lib.join("tcex").is_dir(),
        "tcex was installed into {}",
        lib.display()
    );
    assert_eq!(
        std::fs::read_link(dir.join("lib_latest")).unwrap(),
        PathBuf::from(&name)
    );

    feed_instance(&app, "ioc-feed", "lib.example.com", "");
    let run = run_job(&app, "ioc-feed").await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    let view = sim_view(&sim, OWNER).await;
    assert_eq!(
        view["indicators"][0]["summary"], "lib.example.com",
        "{view:#}"
    );
}

/// `soarjobd run` as a replica on PostgreSQL, SIGKILLed on drop if still running.
struct Replica(std::process::Child);

impl Drop for Replica {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_postgres_run_each_tick_of_an_app_once() {
    use soarjobd_store::testdb::TestDb;
    let python = tcex_python();
    let sim = start_sim().await;
    let db = TestDb::create().await;
    let app = TestApp::new();
    vendor_example(&app);
    feed_instance(&app, "ioc-feed", "replica.example.com", "timeout: 2m\n");
    // One tick every 3 s (the default `overlap: skip` records a tick that finds the previous
    // run still going as skipped).
    let job = app.jobs_dir().join("ioc-feed.yaml");
    let text = std::fs::read_to_string(&job).unwrap();
    std::fs::write(
        &job,
        text.replace("schedule: {every: 1h}", "schedule: {every: 3s}"),
    )
    .unwrap();
    let api = sim.api_url();
    let replica = |name: &str| {
        let out = std::fs::File::create(app.path(&format!("{name}.log"))).unwrap();
        let err = out.try_clone().unwrap();
        let mut c = soarjobd_in(app.dir.path(), &["run"]);
        c.env_remove("SOARJOBD_CONFIG")
            .env("SOARJOBD__DATABASE_URL", db.url())
            .env("SOARJOBD__CLUSTER__HEARTBEAT", "500ms")
            .env("SOARJOBD__CLUSTER__DEAD_AFTER", "1500ms")
            .env("SOARJOBD__THREATCONNECT__URL", &api)
            .env("SOARJOBD__THREATCONNECT__ACCESS_ID", ACCESS_ID)
            .env("SOARJOBD__THREATCONNECT__SECRET_KEY", SECRET_KEY)
            .env("SOARJOBD__TCEX__PYTHON", &python)
            .stdout(out)
            .stderr(err);
        Replica(c.spawn().expect("spawn a replica"))
    };
    let mut replicas = [replica("a"), replica("b")];
    let pool = sqlx::postgres::PgPool::connect(db.url()).await.unwrap();
    let done = eventually(Duration::from_secs(90), || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM job_runs WHERE status = 'succeeded'")
            .fetch_one(&pool)
            .await
            .is_ok_and(|n| n >= 4)
    })
    .await;
    for r in &mut replicas {
        // SAFETY: a signal to a child this test spawned and has not reaped.
        unsafe { libc::kill(r.0.id() as i32, libc::SIGTERM) };
    }
    for r in &mut replicas {
        let status = tokio::task::block_in_place(|| r.0.wait()).unwrap();
        assert!(status.success(), "a replica did not stop cleanly: {status}");
    }
    let logs = format!(
        "{}\n{}",
        std::fs::read_to_string(app.path("a.log")).unwrap_or_default(),
        std::fs::read_to_string(app.path("b.log")).unwrap_or_default()
    );
    assert!(done, "fewer than 4 runs succeeded:\n{logs}");
    // Every tick ran at most once across the replicas...
    let doubled: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT scheduled_at, COUNT(*) FROM job_runs WHERE status <> 'skipped' \
         GROUP BY scheduled_at HAVING COUNT(*) > 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(doubled.is_empty(), "ticks run twice: {doubled:?}");
    let ran: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM job_runs WHERE status <> 'skipped'")
        .fetch_one(&pool)
        .await
        .unwrap();
    let failed: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM job_runs WHERE status NOT IN ('skipped', 'succeeded')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(failed, 0, "{logs}");
    // ...and each run's app sent its batch once: the simulator saw one batch per run.
    let stats: Value = reqwest::get(format!("http://{}/_sim/stats", sim.addr()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stats["jobs"].as_object().map(|j| j.len() as i64),
        Some(ran),
        "{stats:#}"
    );
    for secret in [ACCESS_ID, SECRET_KEY, FEED_KEY] {
        assert!(!logs.contains(secret), "{secret} in a replica's log");
    }
    pool.close().await;
}

#[tokio::test]
async fn first_run_params_then_the_values_an_app_persists_in_results_tc() {
    let python = tcex_python();
    let (_logs, _guard) = capture_logs();
    let sim = start_sim().await;
    let app = app_for(&sim, &python);
    let dir = app.path("apps/counter");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("install.json"),
        r#"{"displayName": "Counter", "programLanguage": "PYTHON", "programMain": "run",
            "programVersion": "1.0.0", "runtimeLevel": "Organization", "listDelimiter": "|",
            "features": ["fileParams"], "languageVersion": "3.11",
            "feeds": [{"sourceName": "Counter", "sourceCategory": "Premium",
              "sourceDescription": "A counter", "jobFile": "counter.job.json",
              "documentStorageLimitMb": 1, "indicatorLimit": 10,
              "firstRunParams": [{"param": "counter", "value": "10"}]}],
            "params": [
              {"name": "counter", "label": "Counter", "type": "String", "default": "0", "hidden": true},
              {"name": "secret", "label": "Secret", "type": "String", "encrypt": true}
            ]}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("run.py"),
        "from tcex import TcEx\n\
         tcex = TcEx()\n\
         n = int(tcex.inputs.contents_resolved['counter'])\n\
         tcex.results_tc('counter', str(n + 1))\n\
         tcex.results_tc('secret', 'persisted-password-never-kept')\n\
         tcex.exit(0, f'counter={n}')\n",
    )
    .unwrap();
    app.write_job("counter", "uses: ../apps/counter/install.json\n");
    let mut messages = Vec::new();
    for _ in 0..3 {
        let run = run_job(&app, "counter").await;
        assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
        messages.push(run.message.unwrap_or_default());
    }
    // The first run takes the feed's firstRunParams; later ones what the app persisted.
    assert_eq!(messages, ["counter=10", "counter=11", "counter=12"]);
    let mut db = std::fs::read(app.path("state.db")).unwrap();
    db.extend(std::fs::read(app.path("state.db-wal")).unwrap_or_default());
    assert!(
        !String::from_utf8_lossy(&db).contains("persisted-password-never-kept"),
        "an encrypt param was persisted"
    );
}

//! TcEx app overhead: the example app (`examples/tcex/ioc-feed`, real tcex 3.0.11 in a
//! virtual environment under `target/`, as the tests install it) run by hand (`python run.py`
//! with a plain JSON inputs file and the HMAC credentials, straight to the simulator) against
//! the same app as a `tcex-app` run (run folder, encrypted params file, the loopback TC gateway
//! forwarding to the same simulator). Prints a markdown table of medians.
//!
//! `cargo bench --bench tcex` runs 15 of each, alternating; under `cargo test` (no `--bench`
//! argument) one of each, so CI proves the benchmark still works. Every run is checked: it
//! must succeed and its batch must reach the simulator.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use soarjobd_core::config::Settings;
use soarjobd_sim::threatconnect as tcsim;
use soarjobd_sim::threatconnect::TcSimConfig;

const ACCESS_ID: &str = "bench-access-id";
const SECRET_KEY: &str = "bench-secret-key";
const TCEX_VERSION: &str = "3.0.11";
const JOB: &str = "ioc-feed";

/// The venv's python (made as `tests/it/tcex.rs` makes it, under the same lock).
fn tcex_python() -> PathBuf {
    use std::os::fd::AsRawFd;
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target).expect("target dir");
    let venv = target.join(format!("tcex-venv-{TCEX_VERSION}"));
    let lock = std::fs::File::create(target.join(format!("tcex-venv-{TCEX_VERSION}.lock")))
        .expect("lock file");
    // SAFETY: flock on a file this function owns; released when `lock` is dropped.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    if !venv.join(".installed").exists() {
        let _ = std::fs::remove_dir_all(&venv);
        let ok = std::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
            && std::process::Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .arg(format!("tcex=={TCEX_VERSION}"))
                .status()
                .is_ok_and(|s| s.success());
        assert!(
            ok,
            "cannot install tcex {TCEX_VERSION} into {}",
            venv.display()
        );
        std::fs::write(venv.join(".installed"), TCEX_VERSION).expect("marker");
    }
    venv.join("bin/python")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 15 } else { 1 };
    let python = tcex_python();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (by_hand, wall, run) = rt.block_on(measure(&python, n));
    let (h, w, r) = (median(by_hand), median(wall), median(run));
    println!("\n### TcEx app run: by hand vs `tcex-app` (example app, {n} runs each, medians)\n");
    println!("| how | median | overhead |");
    println!("|---|---:|---:|");
    println!(
        "| `python run.py` by hand (HMAC, straight to the simulator) | {:.0} ms | |",
        h.as_secs_f64() * 1e3
    );
    println!(
        "| `tcex-app` run (claim to recorded end) | {:.0} ms | {:+.0} ms |",
        r.as_secs_f64() * 1e3,
        (r.as_secs_f64() - h.as_secs_f64()) * 1e3
    );
    println!(
        "| `run-once` wall (app build, store open, job load, run, store close) | {:.0} ms | {:+.0} ms |",
        w.as_secs_f64() * 1e3,
        (w.as_secs_f64() - h.as_secs_f64()) * 1e3
    );
}

async fn measure(python: &Path, n: usize) -> (Vec<Duration>, Vec<Duration>, Vec<Duration>) {
    let sim = tcsim::start(
        TcSimConfig {
            access_id: ACCESS_ID.into(),
            secret_key: SECRET_KEY.into(),
            ..TcSimConfig::default()
        },
        "127.0.0.1:0".parse().expect("loopback address"),
    )
    .await
    .expect("the simulator starts");
    let app_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tcex/ioc-feed");
    let dir = tempfile::tempdir().expect("temp dir");
    let jobs = dir.path().join("jobs");
    std::fs::create_dir_all(&jobs).expect("jobs dir");
    std::fs::write(jobs.join("feed-key"), "bench-feed-key\n").expect("secret");
    std::fs::write(
        jobs.join(format!("{JOB}.yaml")),
        format!(
            "uses: {}\ntimeout: 5m\nvalues:\n  tc_owner: Bench Org\n  \
             indicators: [a.example.com, b.example.com, c.example.com]\n  \
             tags: [phishing]\n  feed_key: {{value_from_file: feed-key}}\n",
            app_dir.join("install.json").display()
        ),
    )
    .expect("job file");
    let mut settings = Settings {
        jobs_dir: jobs,
        database_url: format!("sqlite:{}", dir.path().join("state.db").display()),
        ..Settings::default()
    };
    settings.set_section(
        "threatconnect",
        json!({ "url": sim.api_url(), "access_id": ACCESS_ID, "secret_key": SECRET_KEY }),
    );
    settings.set_section("tcex", json!({ "python": python.display().to_string() }));

    let work = dir.path().join("by-hand");
    for d in ["in", "out", "temp", "log"] {
        std::fs::create_dir_all(work.join(d)).expect("folders");
    }
    let folder = |d: &str| work.join(d).display().to_string();
    let config = work.join("inputs.json");
    std::fs::write(
        &config,
        json!({
            "tc_api_path": sim.api_url(), "tc_api_access_id": ACCESS_ID,
            "tc_api_secret_key": SECRET_KEY, "tc_owner": "Bench Org",
            "feed_name": "Example Feed",
            "indicators": "a.example.com|b.example.com|c.example.com", "tags": "phishing",
            "feed_key": "bench-feed-key", "mode": "normal", "tc_log_level": "info",
            "tc_in_path": folder("in"), "tc_out_path": folder("out"),
            "tc_temp_path": folder("temp"), "tc_log_path": folder("log"),
        })
        .to_string(),
    )
    .expect("inputs file");

    let (mut by_hand, mut wall, mut run) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let t = Instant::now();
        let out = tokio::process::Command::new(python)
            .arg("run.py")
            .current_dir(&app_dir)
            .env("TCEX_APP_CONFIG_DEV", &config)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .await
            .expect("run the app by hand");
        by_hand.push(t.elapsed());
        assert!(out.status.success(), "the app failed by hand");

        let t = Instant::now();
        let app = soarjobd::app::App::builder()
            .settings(settings.clone())
            .build()
            .expect("the app builds");
        let code = soarjobd::inspect::run_once(&app, JOB, &[]).await;
        wall.push(t.elapsed());
        assert_eq!(code, 0, "the tcex-app run did not succeed");
        let store = soarjobd_store::open(&settings.database_url)
            .await
            .expect("open the store");
        let rec = store
            .history(JOB, 1)
            .await
            .expect("history")
            .pop()
            .expect("a run");
        run.push(Duration::from_millis(
            rec.duration_ms.unwrap_or_default() as u64
        ));
        store.close().await;
    }
    let stats: serde_json::Value = reqwest::get(format!("http://{}/_sim/stats", sim.addr()))
        .await
        .expect("stats")
        .json()
        .await
        .expect("stats json");
    assert_eq!(
        stats["jobs"].as_object().map(|j| j.len()),
        Some(2 * n),
        "one batch per run"
    );
    (by_hand, wall, run)
}

//! Jobs page benchmark (issue 21): the status page's jobs list for 1,000 jobs with a deep
//! history, served by a real daemon's admin server over loopback. Prints a markdown table.
//!
//! `cargo bench --bench jobs_page` seeds 1,000 job files and 100 finished runs each (100,000
//! rows in SQLite), then GETs each view 50 times. The server time is the page's own
//! `Server-Timing` (from the request's handler start to the rendered page: the store reads
//! included); the client time is the round trip over loopback. Side by side in the same run:
//! the JSON API's `/api/v1/jobs` (the existing list, no history), and the store read the page
//! makes (`recent_runs`, one query for the 30 newest runs of all 1,000 jobs) against the
//! 1,000 `history` queries it replaces. Under `cargo test` (no `--bench`) a small smoke version.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use serde_json::json;
use soarjobd::admin::Admin;
use soarjobd_core::config::Settings;
use soarjobd_core::store::{NewRun, RunFinish, RunStatus, Store, Trigger};

struct Size {
    jobs: usize,
    runs_per_job: usize,
    requests: usize,
}

const FULL: Size = Size {
    jobs: 1000,
    runs_per_job: 100,
    requests: 50,
};
const SMOKE: Size = Size {
    jobs: 60,
    runs_per_job: 5,
    requests: 3,
};

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let size = if full { FULL } else { SMOKE };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(size));
}

/// The status a seeded run ends with: mostly successes, a failing streak for every 25th job.
fn status_of(job: usize, k: usize, runs: usize) -> RunStatus {
    if job % 25 == 7 && k + 3 >= runs {
        return RunStatus::Failed;
    }
    match (job + k) % 40 {
        0 => RunStatus::Failed,
        1 => RunStatus::Partial,
        2 => RunStatus::TimedOut,
        3 => RunStatus::Skipped,
        _ => RunStatus::Succeeded,
    }
}

async fn seed(store: &Arc<dyn Store>, size: &Size) {
    let base = Utc::now() - TimeDelta::days(10);
    for job in 0..size.jobs {
        let mut claims = Vec::with_capacity(size.runs_per_job);
        for k in 0..size.runs_per_job {
            let started = base + TimeDelta::seconds((k * 3600 + job) as i64);
            claims.push(NewRun {
                job_id: format!("job-{job:04}"),
                scheduled_at: started,
                trigger: Trigger::Schedule,
                status: RunStatus::Running,
                started_at: started,
                message: None,
            });
        }
        let ids = store.claim_runs(&claims).await.expect("claim");
        for (k, (id, claim)) in ids.into_iter().zip(&claims).enumerate() {
            let status = status_of(job, k, size.runs_per_job);
            let end = RunFinish {
                status,
                finished_at: claim.started_at
                    + TimeDelta::milliseconds(200 + ((job * 7 + k * 13) % 900) as i64),
                message: Some(status.to_string()),
                error: None,
                stats: json!({"processed": k}),
            };
            store
                .finish_run(id.expect("claimed"), &end)
                .await
                .expect("finish");
        }
    }
}

struct Sample {
    server_ms: Vec<f64>,
    client_ms: Vec<f64>,
    bytes: usize,
    rows: usize,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}

async fn measure(http: &reqwest::Client, url: &str, requests: usize) -> Sample {
    let mut s = Sample {
        server_ms: Vec::new(),
        client_ms: Vec::new(),
        bytes: 0,
        rows: 0,
    };
    for _ in 0..requests {
        let t0 = Instant::now();
        let r = http.get(url).send().await.expect("answer");
        assert_eq!(r.status(), 200, "{url}");
        let timing = r
            .headers()
            .get("server-timing")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("page;dur="))
            .and_then(|v| v.parse::<f64>().ok());
        let body = r.bytes().await.expect("body");
        s.client_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        if let Some(ms) = timing {
            s.server_ms.push(ms);
        }
        s.bytes = body.len();
        s.rows = String::from_utf8_lossy(&body)
            .matches("<tr data-job=")
            .count();
    }
    s
}

async fn run(size: Size) {
    let dir = tempfile::tempdir().expect("tempdir");
    let jobs_dir = dir.path().join("jobs");
    std::fs::create_dir_all(&jobs_dir).expect("jobs dir");
    for job in 0..size.jobs {
        let integration = ["ThreatConnect", "SecOps", "Tools"][job % 3];
        // A schedule that does not fire during the benchmark: the page is measured alone.
        std::fs::write(
            jobs_dir.join(format!("job-{job:04}.yaml")),
            format!(
                "name: Job {job:04}\njob: exec\nintegration: {integration}\n\
                 schedule: {{cron: '0 0 1 1 *'}}\ncommand: [/bin/true]\n"
            ),
        )
        .expect("job file");
    }
    let url = format!("sqlite:{}", dir.path().join("state.db").display());
    let store = soarjobd_store::open(&url).await.expect("store");
    let t0 = Instant::now();
    seed(&store, &size).await;
    let seed_s = t0.elapsed().as_secs_f64();

    let mut settings = Settings {
        jobs_dir,
        database_url: url.clone(),
        ..Settings::default()
    };
    settings.set_section("admin", json!({"listen": "127.0.0.1:0"}));
    let app = soarjobd::app::App::builder()
        .settings(settings)
        .build()
        .expect("app");
    let admin = Admin::bind(app.settings()).await.expect("admin binds");
    let daemon = admin
        .daemon(app.daemon())
        .start()
        .await
        .expect("daemon starts");
    let server = admin.start(&daemon).expect("serves").expect("admin is on");
    let base = server.url();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ready = http.get(format!("{base}readyz")).send().await;
        if ready.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "the daemon got ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The store read alone, against the per-job reads it replaces.
    let ids: Vec<String> = (0..size.jobs).map(|j| format!("job-{j:04}")).collect();
    let mut one_query = Vec::new();
    let mut per_job = Vec::new();
    for _ in 0..size.requests.min(10) {
        let t0 = Instant::now();
        let marks = store.recent_runs(&ids, 30).await.expect("recent runs");
        one_query.push(t0.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(marks.len(), size.jobs * size.runs_per_job.min(30));
        let t0 = Instant::now();
        for id in &ids {
            store.history(id, 30).await.expect("history");
        }
        per_job.push(t0.elapsed().as_secs_f64() * 1000.0);
    }

    let views = [
        ("jobs page, default view (50 rows)", "".to_string()),
        ("jobs page, `?state=failing`", "?state=failing".to_string()),
        (
            "jobs page, `?platform=Tools&q=job-05`",
            "?platform=Tools&q=job-05".to_string(),
        ),
        ("jobs page, last page", "?page=20".to_string()),
        ("jobs page, `?per=500` (500 rows)", "?per=500".to_string()),
        (
            "baseline: JSON API `/api/v1/jobs` (no history)",
            "api/v1/jobs".to_string(),
        ),
    ];
    let mut results = Vec::new();
    for (name, path) in views {
        let s = measure(&http, &format!("{base}{path}"), size.requests).await;
        results.push((name, s));
    }
    daemon.shutdown().await;
    server.stop().await;
    store.close().await;

    println!(
        "\n### Jobs page: {} jobs, {} runs each in SQLite ({} rows; seeded in {seed_s:.0} s), {} requests per view\n",
        size.jobs,
        size.runs_per_job,
        size.jobs * size.runs_per_job,
        size.requests
    );
    println!("| view | rows | server time p50 | server time max | round trip p50 | bytes |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, mut s) in results {
        let (p50, mx) = if s.server_ms.is_empty() {
            ("–".to_string(), "–".to_string())
        } else {
            (
                format!("{:.1} ms", median(&mut s.server_ms.clone())),
                format!("{:.1} ms", max(&s.server_ms)),
            )
        };
        println!(
            "| {name} | {} | {p50} | {mx} | {:.1} ms | {:.0} KB |",
            s.rows,
            median(&mut s.client_ms),
            s.bytes as f64 / 1024.0
        );
    }
    println!(
        "\n| store read for the strips of all {} jobs | p50 | max |",
        size.jobs
    );
    println!("|---|---:|---:|");
    println!(
        "| `recent_runs`: one query, 30 runs per job | {:.1} ms | {:.1} ms |",
        median(&mut one_query.clone()),
        max(&one_query)
    );
    println!(
        "| baseline: `history(job, 30)` once per job | {:.1} ms | {:.1} ms |",
        median(&mut per_job.clone()),
        max(&per_job)
    );
}

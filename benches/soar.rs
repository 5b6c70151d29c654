//! `comment-on-tagged-cases` benchmark: one run of the job against the SOAR simulator (real
//! HTTP on loopback, fixed per-request latency) at several `Concurrency` values, against the
//! ideal bound `requests x latency / concurrency`. Prints a markdown table.
//!
//! `cargo bench --bench soar` runs the full benchmark: 10,000 matching cases at 20 ms per
//! request, at Concurrency 8 and 32, and 1,000 cases at Concurrency 1 (10,000 would take about
//! seven minutes: 20,000 requests one after the other). Under `cargo test` (no `--bench`
//! argument) it runs a small smoke version so CI proves the benchmark still works.
//!
//! Every level gets a fresh simulator and a fresh database, and is checked, not only timed: the
//! run must succeed and every case must end with exactly one comment. The transport's
//! `max_concurrency` (default 8) would cap in-flight requests below the job's `Concurrency`,
//! so the config raises it to 64.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;
use soarjobd_core::config::Settings;
use soarjobd_core::store::RunStatus;
use soarjobd_sim::soar as sim;
use soarjobd_sim::soar::{CasePatch, SoarSimConfig};

const JOB: &str = "bench";
const KEY: &str = "bench-app-key";
const COMMENT: &str = "Benchmarked by soarjobd";

/// One row of the table: how many cases at which `Concurrency`.
struct Level {
    concurrency: u32,
    cases: usize,
    /// Why this level has fewer cases than the others, if it has.
    note: &'static str,
}

struct Size {
    latency_ms: u64,
    levels: [Level; 3],
}

const FULL: Size = Size {
    latency_ms: 20,
    levels: [
        Level {
            concurrency: 1,
            cases: 1_000,
            note: " (10,000 would take ~7 min)",
        },
        Level {
            concurrency: 8,
            cases: 10_000,
            note: "",
        },
        Level {
            concurrency: 32,
            cases: 10_000,
            note: "",
        },
    ],
};

const SMOKE: Size = Size {
    latency_ms: 5,
    levels: [
        Level {
            concurrency: 1,
            cases: 20,
            note: "",
        },
        Level {
            concurrency: 8,
            cases: 150,
            note: "",
        },
        Level {
            concurrency: 32,
            cases: 150,
            note: "",
        },
    ],
};

/// What one level measured.
struct Measure {
    requests: u64,
    wall: Duration,
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let size = if full { FULL } else { SMOKE };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let results: Vec<Measure> = size
        .levels
        .iter()
        .map(|l| rt.block_on(measure(l, size.latency_ms)))
        .collect();

    println!(
        "\n### comment-on-tagged-cases: one run, simulator latency {} ms per request\n",
        size.latency_ms
    );
    println!(
        "Bound = requests x latency / concurrency (every request waits the latency, nothing \
         else costs). Ratio = wall time / bound.\n"
    );
    println!("| concurrency | cases | requests | wall time | bound | ratio |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for (l, m) in size.levels.iter().zip(&results) {
        let bound = Duration::from_millis(size.latency_ms)
            .mul_f64(m.requests as f64 / f64::from(l.concurrency));
        println!(
            "| {} | {}{} | {} | {:.2} s | {:.2} s | {:.2}x |",
            l.concurrency,
            thousands(l.cases as u64),
            l.note,
            thousands(m.requests),
            m.wall.as_secs_f64(),
            bound.as_secs_f64(),
            m.wall.as_secs_f64() / bound.as_secs_f64(),
        );
    }
}

/// One run of the job over `level.cases` matching cases; returns the requests the simulator
/// served and the run's wall time (from the run's claim to its recorded end: the store is
/// opened and the job file loaded before the clock starts).
async fn measure(level: &Level, latency_ms: u64) -> Measure {
    let sim = sim::start(
        SoarSimConfig {
            cases: level.cases,
            seed: 2024,
            app_key: KEY.into(),
            ..SoarSimConfig::default()
        },
        "127.0.0.1:0".parse().expect("loopback address"),
    )
    .await
    .expect("the simulator starts");
    // Every case matches (open, tagged, within 72 h) and has exactly one alert, so a run is
    // one query plus two requests per case.
    let st = sim.state().clone();
    for c in st.cases() {
        st.upsert_case(CasePatch {
            id: Some(c.id),
            status: Some("OPEN".into()),
            tags: Some(vec!["Phishing".into()]),
            alerts: Some(1),
            ..CasePatch::default()
        })
        .expect("patch a case");
    }
    st.set_latency_ms(latency_ms);

    let dir = tempfile::tempdir().expect("temp dir");
    let jobs = dir.path().join("jobs");
    std::fs::create_dir_all(&jobs).expect("jobs dir");
    std::fs::write(
        jobs.join(format!("{JOB}.yaml")),
        format!(
            "name: Bench\njob: comment-on-tagged-cases\ntimeout: 1h\nparameters:\n\
             \x20 - {{name: Tags, type: string, value: Phishing}}\n\
             \x20 - {{name: Comment, type: string, value: \"{COMMENT}\"}}\n\
             \x20 - {{name: Max Hours Backwards, type: integer, value: 72}}\n\
             \x20 - {{name: Concurrency, type: integer, value: {}}}\n",
            level.concurrency
        ),
    )
    .expect("write the job file");
    let mut settings = Settings {
        jobs_dir: jobs,
        database_url: format!("sqlite:{}", dir.path().join("state.db").display()),
        ..Settings::default()
    };
    settings.set_section(
        "soar",
        json!({ "url": sim.url(), "app_key": KEY, "max_concurrency": 64 }),
    );

    let started = Instant::now();
    let app = soarjobd::app::App::builder()
        .settings(settings.clone())
        .build()
        .expect("the app builds");
    let code = soarjobd::inspect::run_once(&app, JOB, &[]).await;
    let total = started.elapsed();
    assert_eq!(code, 0, "the benchmark run did not succeed");

    let store = soarjobd_store::open(&settings.database_url)
        .await
        .expect("open the store");
    let run = store
        .history(JOB, 1)
        .await
        .expect("read the history")
        .pop()
        .expect("the run was recorded");
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(run.stats["commented"], level.cases as i64, "{run:?}");
    let wall = run
        .duration_ms
        .map_or(total, |ms| Duration::from_millis(ms as u64));

    let mut per_case: HashMap<u64, usize> = HashMap::new();
    for c in st.comments(None) {
        *per_case.entry(c.case_id).or_default() += 1;
    }
    assert_eq!(per_case.len(), level.cases, "a case has no comment");
    assert!(
        per_case.values().all(|n| *n == 1),
        "a case was commented twice"
    );
    let requests = st.stats().requests.values().sum();
    store.close().await;
    sim.shutdown().await.expect("the simulator stops");
    Measure { requests, wall }
}

/// `20003` -> `20,003`.
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

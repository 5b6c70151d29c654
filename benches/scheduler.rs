//! Scheduler benchmark: our engine against tokio-cron-scheduler, job-file loading, and store
//! throughput. Prints a markdown table.
//!
//! `cargo bench --bench scheduler` runs the full benchmark (1,000 jobs `every: 1s` for 30 s
//! per engine, 10,000 job files, 5,000 store runs). Under `cargo test` (no `--bench`
//! argument) it runs a small smoke version so CI proves the benchmark still works.
//!
//! Each engine runs in a child process of this binary (re-executed with
//! `SOARJOBD_BENCH_ENGINE`), so its CPU seconds and peak RSS are its own. Lateness is measured
//! where the job body starts (so it includes our tick claim in SQLite): the instant the body
//! starts minus the tick's nominal instant.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{Timelike, Utc};
use serde_json::{Value, json};
use soarjobd_core::config::Settings;
use soarjobd_core::definition::JobSpec;
use soarjobd_core::store::{NewRun, RunFinish, RunStatus, Trigger};
use soarjobd_core::{Job, JobContext, JobError, Outcome};
use soarjobd_engine::Daemon;

struct Size {
    jobs: usize,
    secs: u64,
    files: usize,
    store_runs: usize,
}

const FULL: Size = Size {
    jobs: 1000,
    secs: 30,
    files: 10_000,
    store_runs: 5000,
};
const SMOKE: Size = Size {
    jobs: 20,
    secs: 3,
    files: 200,
    store_runs: 200,
};

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let size = if full { FULL } else { SMOKE };
    if let Ok(engine) = std::env::var("SOARJOBD_BENCH_ENGINE") {
        let out = engine_child(&engine, size.jobs, size.secs);
        println!("{out}");
        return;
    }
    let ours = run_child("ours", full);
    let ours_logs = run_child("ours+logs", full);
    let ours_admin = run_child("ours+admin", full);
    let ours_page = run_child("ours+page", full);
    let tcs = run_child("tokio-cron-scheduler", full);
    let (load_ms, loaded) = load_files(size.files);
    let (store_single, store_batched) = store_throughput(size.store_runs);

    println!(
        "\n### Scheduler: {} jobs `every: 1s` for {} s (lateness = body start - tick)\n",
        size.jobs, size.secs
    );
    println!("| engine | runs | p50 lateness | p99 lateness | max lateness | CPU s | peak RSS |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, r) in [
        ("soarjobd, no log subscriber", &ours),
        (
            "soarjobd, daemon log (JSON, info) + run logs stored (defaults)",
            &ours_logs,
        ),
        ("soarjobd + admin server, scraped every 100 ms", &ours_admin),
        (
            "soarjobd + admin server, jobs page served every second",
            &ours_page,
        ),
        ("tokio-cron-scheduler 0.15", &tcs),
    ] {
        println!(
            "| {name} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} | {:.1} MB |",
            r["runs"],
            r["p50_us"].as_f64().unwrap_or(0.0) / 1000.0,
            r["p99_us"].as_f64().unwrap_or(0.0) / 1000.0,
            r["max_us"].as_f64().unwrap_or(0.0) / 1000.0,
            r["cpu_s"].as_f64().unwrap_or(0.0),
            r["peak_rss_kb"].as_f64().unwrap_or(0.0) / 1024.0,
        );
    }
    println!("\n### Loading and store\n");
    println!("| measure | result |");
    println!("|---|---:|");
    println!("| load + validate + schedule {loaded} job files | {load_ms:.0} ms |");
    println!(
        "| SQLite runs/s, claim + finish one at a time ({} runs) | {store_single:.0} |",
        size.store_runs
    );
    println!(
        "| SQLite runs/s, ticks claimed 100 per transaction ({} runs) | {store_batched:.0} |",
        size.store_runs
    );
}

fn run_child(engine: &str, full: bool) -> Value {
    let exe = std::env::current_exe().expect("current exe");
    let mut cmd = Command::new(exe);
    if full {
        cmd.arg("--bench");
    }
    let out = cmd
        .env("SOARJOBD_BENCH_ENGINE", engine)
        .output()
        .expect("run engine child");
    assert!(
        out.status.success(),
        "{engine} child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or("{}");
    serde_json::from_str(line).expect("child output is JSON")
}

/// Records each run's lateness.
#[derive(Clone, Default)]
struct Probe {
    lateness_us: Arc<Mutex<Vec<i64>>>,
    by_tick: Arc<Mutex<std::collections::BTreeMap<i64, Vec<i64>>>>,
}

impl JobSpec for Probe {}

#[async_trait]
impl Job for Probe {
    fn id(&self) -> &'static str {
        "probe"
    }
    async fn run(&self, ctx: &mut JobContext) -> Result<Outcome, JobError> {
        let late = (Utc::now() - ctx.scheduled_at())
            .num_microseconds()
            .unwrap_or(i64::MAX);
        self.lateness_us.lock().unwrap().push(late);
        if std::env::var("SOARJOBD_BENCH_DEBUG").is_ok() {
            self.by_tick
                .lock()
                .unwrap()
                .entry(ctx.scheduled_at().timestamp())
                .or_default()
                .push(late);
        }
        Ok(Outcome::succeeded(""))
    }
}

fn engine_child(engine: &str, jobs: usize, secs: u64) -> Value {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let lateness = Arc::new(Mutex::new(Vec::<i64>::new()));
    if engine == "ours+logs" {
        // The daemon's own subscriber as `soarjobd` installs it with the default settings:
        // every run's lines stored with the run, and the process log at info as JSON. The
        // process log goes to a sink: its formatting is measured, not a terminal or journal.
        let sub = soarjobd_engine::telemetry::subscriber(
            soarjobd_core::config::LogFormat::Json,
            soarjobd_engine::telemetry::filter("info"),
            std::io::sink,
        );
        tracing::subscriber::set_global_default(sub).expect("one subscriber");
    }
    let cpu0 = cpu_seconds();
    rt.block_on(async {
        match engine {
            "ours" | "ours+logs" => run_ours(jobs, secs, lateness.clone(), None).await,
            "ours+admin" => run_ours(jobs, secs, lateness.clone(), Some(Scrape::Everything)).await,
            "ours+page" => run_ours(jobs, secs, lateness.clone(), Some(Scrape::JobsPage)).await,
            _ => run_tcs(jobs, secs, lateness.clone()).await,
        }
    });
    let cpu = cpu_seconds() - cpu0;
    let mut l = lateness.lock().unwrap().clone();
    l.sort_unstable();
    let pct = |p: f64| -> i64 {
        if l.is_empty() {
            return 0;
        }
        l[((l.len() - 1) as f64 * p).round() as usize]
    };
    json!({
        "runs": l.len(),
        "p50_us": pct(0.50),
        "p99_us": pct(0.99),
        "max_us": l.last().copied().unwrap_or(0),
        "cpu_s": cpu,
        "peak_rss_kb": peak_rss_kb(),
    })
}

/// How the admin server is read while the benchmark runs.
#[derive(Clone, Copy)]
enum Scrape {
    /// `/metrics`, `/api/v1/jobs` and the status page every 100 ms: far more often than
    /// Prometheus would, to show what the server costs the scheduler.
    Everything,
    /// The jobs page (the status page's front page) once a second, as an analyst's open
    /// browser tab refreshing it would.
    JobsPage,
}

/// Our daemon; with `admin`, its admin server too (metrics fed by every tick and run), read
/// as `admin` says while the benchmark runs.
async fn run_ours(jobs: usize, secs: u64, lateness: Arc<Mutex<Vec<i64>>>, admin: Option<Scrape>) {
    let dir = tempfile::tempdir().unwrap();
    let jobs_dir = dir.path().join("jobs");
    std::fs::create_dir_all(&jobs_dir).unwrap();
    for i in 0..jobs {
        std::fs::write(
            jobs_dir.join(format!("j{i:05}.yaml")),
            format!("name: Job {i}\njob: probe\nschedule: {{every: 1s}}\n"),
        )
        .unwrap();
    }
    let mut settings = Settings {
        jobs_dir,
        database_url: format!("sqlite:{}", dir.path().join("bench.db").display()),
        shutdown_grace: Duration::from_secs(5),
        ..Settings::default()
    };
    settings.set_section(
        "admin",
        json!({ "listen": if admin.is_some() { "127.0.0.1:0" } else { "off" } }),
    );
    let server = soarjobd::admin::Admin::bind(&settings).await.unwrap();
    let probe = Probe {
        lateness_us: lateness,
        by_tick: Default::default(),
    };
    let by_tick = probe.by_tick.clone();
    let d = server
        .daemon(Daemon::builder().settings(settings).register(probe))
        .start()
        .await
        .unwrap();
    let server = server.start(&d).unwrap();
    let scraper = server.as_ref().zip(admin).map(|(s, scrape)| {
        let base = s.url();
        let (period, paths): (u64, &[&str]) = match scrape {
            Scrape::Everything => (100, &["metrics", "api/v1/jobs", ""]),
            Scrape::JobsPage => (1000, &[""]),
        };
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut every = tokio::time::interval(Duration::from_millis(period));
            loop {
                every.tick().await;
                for path in paths {
                    let r = http.get(format!("{base}{path}")).send().await.unwrap();
                    assert!(r.status().is_success());
                    let _ = r.bytes().await;
                }
            }
        })
    });
    tokio::time::sleep(Duration::from_secs(secs)).await;
    if let Some(s) = scraper {
        s.abort();
    }
    d.shutdown().await;
    if let Some(s) = server {
        s.stop().await;
    }
    for (tick, mut l) in std::mem::take(&mut *by_tick.lock().unwrap()) {
        l.sort_unstable();
        eprintln!(
            "tick {tick}: n={} min={} p50={} max={}",
            l.len(),
            l[0],
            l[l.len() / 2],
            l[l.len() - 1]
        );
    }
}

async fn run_tcs(jobs: usize, secs: u64, lateness: Arc<Mutex<Vec<i64>>>) {
    use tokio_cron_scheduler::{Job as TJob, JobScheduler};
    let sched = JobScheduler::new().await.unwrap();
    for _ in 0..jobs {
        let l = lateness.clone();
        let job = TJob::new_async("* * * * * *", move |_id, _lock| {
            let l = l.clone();
            Box::pin(async move {
                // The nominal tick is the whole second this run belongs to.
                let now = Utc::now();
                let late = i64::from(now.nanosecond() / 1000);
                l.lock().unwrap().push(late);
            })
        })
        .unwrap();
        sched.add(job).await.unwrap();
    }
    sched.start().await.unwrap();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let mut sched = sched;
    let _ = sched.shutdown().await;
}

fn load_files(n: usize) -> (f64, usize) {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..n {
        std::fs::write(
            dir.path().join(format!("j{i:05}.yaml")),
            format!(
                "name: Job {i}\njob: exec\nschedule:\n  cron: \"*/5 * * * *\"\n  timezone: Europe/Berlin\nparameters:\n  - {{name: Tags, type: csv, value: 'a, b'}}\ncommand: [/bin/true]\n"
            ),
        )
        .unwrap();
    }
    let mut registry = soarjobd_core::Registry::new();
    registry.register(soarjobd_jobs::exec::Exec);
    let t = Instant::now();
    let report = soarjobd_core::definition::load_dir(
        dir.path(),
        &registry,
        soarjobd_containment::open_nonblocking,
    );
    let now = Utc::now();
    let mut scheduled = 0;
    for d in &report.jobs {
        if d.schedule.next_tick_after(now).is_some() {
            scheduled += 1;
        }
    }
    (t.elapsed().as_secs_f64() * 1000.0, scheduled)
}

fn store_throughput(n: usize) -> (f64, f64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = soarjobd_store::open(&format!("sqlite:{}", dir.path().join("s.db").display()))
            .await
            .unwrap();
        let base = Utc::now();
        let finish = |status| RunFinish {
            status,
            finished_at: Utc::now(),
            message: Some("ok".into()),
            error: None,
            stats: json!({"n": 1}),
        };
        let new_run = |i: usize, job: &str| NewRun {
            job_id: job.to_string(),
            scheduled_at: base + chrono::Duration::seconds(i as i64),
            trigger: Trigger::Schedule,
            status: RunStatus::Running,
            started_at: Utc::now(),
            message: None,
        };
        let t = Instant::now();
        for i in 0..n {
            let ids = store.claim_runs(&[new_run(i, "single")]).await.unwrap();
            store
                .finish_run(ids[0].unwrap(), &finish(RunStatus::Succeeded))
                .await
                .unwrap();
        }
        let single = n as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
            let runs: Vec<NewRun> = chunk.iter().map(|i| new_run(*i, "batched")).collect();
            let ids = store.claim_runs(&runs).await.unwrap();
            for id in ids.into_iter().flatten() {
                store
                    .finish_run(id, &finish(RunStatus::Succeeded))
                    .await
                    .unwrap();
            }
        }
        let batched = n as f64 / t.elapsed().as_secs_f64();
        store.close().await;
        (single, batched)
    })
}

fn cpu_seconds() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn peak_rss_kb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0.0)
}

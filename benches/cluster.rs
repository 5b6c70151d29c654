//! Cluster benchmark: replicas on PostgreSQL against one daemon on SQLite, and the takeover
//! of a killed replica's run. Prints a table.
//!
//! `cargo bench --bench cluster` runs the full benchmark: 1, 2, 3 and 5 replicas, 1,000 jobs
//! `every: 1s` for 60 s on PostgreSQL, the same jobs on SQLite with one daemon, then the
//! takeover with the default `cluster.*` timings (2 s heartbeat, dead after 6 s). Reported per
//! setup: runs/s, ticks lost and doubled, p50/p99 lateness, the replicas' CPU, the database
//! server's CPU (its backends for the run's database, from `/proc`), and how the runs spread
//! over the replicas. Under `cargo test` (no `--bench` argument) it runs a smoke version (20
//! jobs, 8 s, 3 replicas, cluster timings 500 ms / 1.5 s) so CI proves the benchmark works and
//! its invariants hold: no tick ran twice, and a killed replica's run is taken over and
//! caught up.
//!
//! Each daemon is a child process of this binary (re-executed with `SOARJOBD_CLUSTER_CHILD`),
//! so its CPU time is its own and it can be SIGKILLed. Its jobs append one line per run
//! (`job tick lateness_us`) to a shared file; what ran, twice or late, is read from there.
//! PostgreSQL is the test server (`SOARJOBD_TEST_PG`, default `postgres@127.0.0.1:5432`),
//! a fresh database per measurement.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use soarjobd_core::config::{LogFormat, Settings};
use soarjobd_core::definition::JobSpec;
use soarjobd_core::{Job, JobContext, JobError, Outcome};
use soarjobd_engine::Daemon;
use soarjobd_store::testdb::TestDb;

struct Size {
    /// The replica counts measured on PostgreSQL.
    replicas: &'static [usize],
    jobs: usize,
    secs: u64,
    warmup: u64,
    /// `cluster.heartbeat` / `cluster.dead_after` for the takeover (None: the defaults).
    takeover_timings: Option<(&'static str, &'static str)>,
    /// The long-ticks case: how long each setup runs, and a replica is killed this often.
    long_secs: u64,
    kill_every: u64,
}

const FULL: Size = Size {
    replicas: &[1, 2, 3, 5],
    jobs: 1000,
    secs: 60,
    warmup: 5,
    takeover_timings: None,
    long_secs: 60,
    kill_every: 10,
};
const SMOKE: Size = Size {
    replicas: &[3],
    jobs: 20,
    secs: 8,
    warmup: 2,
    // Short, but not so short that a loaded CI machine's stalls read as deaths.
    takeover_timings: Some(("500ms", "1500ms")),
    long_secs: 12,
    kill_every: 5,
};

/// Which parts run (`SOARJOBD_CLUSTER_BENCH_PARTS`, comma-separated: `load`, `long`,
/// `takeover`; all by default).
fn part(name: &str) -> bool {
    std::env::var("SOARJOBD_CLUSTER_BENCH_PARTS")
        .map(|v| v.split(',').any(|p| p.trim() == name))
        .unwrap_or(true)
}

fn main() {
    if std::env::var("SOARJOBD_CLUSTER_CHILD").is_ok() {
        daemon_child();
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let mut size = if full { FULL } else { SMOKE };
    // Shorter runs: `SOARJOBD_CLUSTER_BENCH_SECS=20`, `SOARJOBD_CLUSTER_BENCH_REPLICAS=3`.
    if let Some(secs) = std::env::var("SOARJOBD_CLUSTER_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        size.secs = secs;
        size.long_secs = secs;
    }
    if let Ok(list) = std::env::var("SOARJOBD_CLUSTER_BENCH_REPLICAS") {
        let counts: Vec<usize> = list
            .split(',')
            .filter_map(|n| n.trim().parse().ok())
            .collect();
        size.replicas = Box::leak(counts.into_boxed_slice());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let long = part("long").then(|| rt.block_on(long_ticks(&size)));
    let mut results = Vec::new();
    let replica_counts = if part("load") { size.replicas } else { &[] };
    for &n in replica_counts {
        eprintln!("cluster bench: {n} replica(s) on PostgreSQL...");
        let r = rt.block_on(load(&size, n, true));
        results.push((
            format!("PostgreSQL, {n} replica{}", if n == 1 { "" } else { "s" }),
            r,
        ));
    }
    if part("load") {
        eprintln!("cluster bench: 1 daemon on SQLite...");
        results.push((
            "SQLite, 1 daemon".to_string(),
            rt.block_on(load(&size, 1, false)),
        ));
    }
    let takeover = part("takeover").then(|| {
        eprintln!("cluster bench: takeover...");
        rt.block_on(takeover(&size))
    });
    println!();
    if let Some(long) = &long {
        long.print(&size);
    }
    if part("load") {
        print_load(&size, &results);
    }
    if let Some(takeover) = takeover {
        let timings = size.takeover_timings.unwrap_or(("2s (default)", "6s"));
        println!(
            "takeover (heartbeat {}, dead_after {}): SIGKILL -> interrupted {:.1} s, -> catch-up start {:.1} s",
            timings.0, timings.1, takeover.0, takeover.1
        );
    }
    for (name, r) in &results {
        assert_eq!(r.doubled, 0, "a tick ran twice: {name}");
        assert!(r.runs_per_s > 0.0, "nothing ran: {name}");
        if full {
            assert_eq!(r.lost, 0, "ticks were lost: {name}");
        }
    }
    if let Some(long) = &long {
        long.check();
    }
}

fn print_load(size: &Size, results: &[(String, Load)]) {
    println!(
        "cluster benchmark: {} jobs every 1s for {} s (measured after {} s)",
        size.jobs, size.secs, size.warmup
    );
    println!(
        "| setup | runs/s | lost | doubled | p50 lateness ms | p99 lateness ms | CPU s per replica | replicas' CPU s | database server CPU s | total CPU s | runs per replica (spread) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (name, r) in results {
        let replicas: f64 = r.cpu_s.iter().sum();
        let mean = r.per_replica.iter().sum::<usize>() as f64 / r.per_replica.len().max(1) as f64;
        let spread = r
            .per_replica
            .iter()
            .map(|n| (*n as f64 / mean.max(1.0) - 1.0).abs())
            .fold(0.0, f64::max);
        println!(
            "| {name} | {:.0} | {} | {} | {:.1} | {:.1} | {} | {replicas:.1} | {} | {:.1} | {} (±{:.0} %) |",
            r.runs_per_s,
            r.lost,
            r.doubled,
            r.p50_ms,
            r.p99_ms,
            r.cpu_s
                .iter()
                .map(|c| format!("{c:.1}"))
                .collect::<Vec<_>>()
                .join(" / "),
            r.db_cpu_s.map_or("-".to_string(), |c| format!("{c:.1}")),
            replicas + r.db_cpu_s.unwrap_or(0.0),
            r.per_replica
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(" / "),
            spread * 100.0,
        );
    }
}

// --- The daemon child --------------------------------------------------------------------

/// Appends one line per run to the executions file: the benchmark counts and times runs from
/// what the jobs saw, not from the rows.
struct Noop(Mutex<std::fs::File>);

impl JobSpec for Noop {}

#[async_trait]
impl Job for Noop {
    fn id(&self) -> &'static str {
        "noop"
    }
    async fn run(&self, ctx: &mut JobContext) -> Result<Outcome, JobError> {
        let late = (Utc::now() - ctx.scheduled_at())
            .num_microseconds()
            .unwrap_or(0);
        let line = format!(
            "{} {} {late} {}\n",
            ctx.job_id(),
            ctx.scheduled_at().timestamp_millis(),
            std::process::id()
        );
        let mut f = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let _ = f.write_all(line.as_bytes());
        Ok(Outcome::succeeded(""))
    }
}

/// Runs until cancelled (the takeover's victim).
struct Long;

impl JobSpec for Long {}

#[async_trait]
impl Job for Long {
    fn id(&self) -> &'static str {
        "long"
    }
    async fn run(&self, ctx: &mut JobContext) -> Result<Outcome, JobError> {
        tokio::select! {
            _ = ctx.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_secs(600)) => {}
        }
        Ok(Outcome::succeeded(""))
    }
}

fn daemon_child() {
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let dir = PathBuf::from(env("SOARJOBD_CLUSTER_CHILD"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    soarjobd_engine::telemetry::init(LogFormat::Json, "warn");
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("executions"))
        .expect("executions file");
    rt.block_on(async {
        let mut settings = Settings {
            jobs_dir: dir.join("jobs"),
            database_url: env("SOARJOBD_CLUSTER_DB"),
            shutdown_grace: Duration::from_secs(10),
            ..Settings::default()
        };
        if let Ok(h) = std::env::var("SOARJOBD_CLUSTER_HEARTBEAT") {
            settings.cluster.heartbeat =
                soarjobd_core::config::grammar::parse_duration(&h).unwrap();
            settings.cluster.dead_after =
                soarjobd_core::config::grammar::parse_duration(&env("SOARJOBD_CLUSTER_DEAD_AFTER"))
                    .unwrap();
        }
        let daemon = Daemon::builder()
            .settings(settings)
            .register(Noop(Mutex::new(out)))
            .register(Long)
            .start()
            .await
            .expect("daemon starts");
        daemon.run_until_signal().await;
    });
}

// --- The parent ----------------------------------------------------------------------------

struct Load {
    runs_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    doubled: usize,
    /// Ticks of the measured window that did not run.
    lost: usize,
    cpu_s: Vec<f64>,
    /// The database server's CPU for the run's database (PostgreSQL only).
    db_cpu_s: Option<f64>,
    /// Runs of the measured window per replica.
    per_replica: Vec<usize>,
}

/// utime + stime of the server backends connected to `db` now, in seconds (the replicas' pool
/// connections live for the whole run, so this is the server's work for them).
async fn backend_cpu(db: &TestDb) -> f64 {
    let Ok(pool) = sqlx::PgPool::connect(&soarjobd_store::testdb::server_url()).await else {
        return 0.0;
    };
    let pids: Vec<i32> = sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE datname = $1")
        .bind(db.name())
        .fetch_all(&pool)
        .await
        .unwrap_or_default();
    pool.close().await;
    pids.iter().map(|p| cpu_seconds(*p as u32)).sum()
}

/// A daemon child, SIGKILLed on drop if still running (a failed assertion must not leave
/// daemons behind).
struct Proc(Child);

impl std::ops::Deref for Proc {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn spawn(dir: &Path, db: &str, timings: Option<(&str, &str)>) -> Proc {
    let mut c = Command::new(std::env::current_exe().expect("current exe"));
    c.env("SOARJOBD_CLUSTER_CHILD", dir)
        .env("SOARJOBD_CLUSTER_DB", db)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(match std::env::var_os("SOARJOBD_CLUSTER_BENCH_LOGS") {
            Some(_) => Stdio::inherit(),
            None => Stdio::null(),
        });
    if let Some((h, d)) = timings {
        c.env("SOARJOBD_CLUSTER_HEARTBEAT", h)
            .env("SOARJOBD_CLUSTER_DEAD_AFTER", d);
    }
    Proc(c.spawn().expect("start a daemon child"))
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of /proc/PID/stat, counted after the `)`: indexes 11 and 12.
    (ticks(11) + ticks(12)) / 100.0
}

fn stop(child: &mut Child) {
    // SAFETY: a signal to our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let _ = child.wait();
}

async fn load(size: &Size, replicas: usize, postgres: bool) -> Load {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
    for i in 0..size.jobs {
        std::fs::write(
            dir.path().join(format!("jobs/j{i:05}.yaml")),
            format!("name: j{i}\njob: noop\nschedule: {{every: 1s}}\ntimeout: 30s\n"),
        )
        .unwrap();
    }
    let pg = if postgres {
        Some(TestDb::create().await)
    } else {
        None
    };
    let url = match &pg {
        Some(db) => db.url().to_string(),
        None => format!("sqlite:{}", dir.path().join("state.db").display()),
    };
    let start = Utc::now();
    let mut children: Vec<Proc> = (0..replicas)
        .map(|_| spawn(dir.path(), &url, None))
        .collect();
    tokio::time::sleep(Duration::from_secs(size.secs)).await;
    let cpu_s = children.iter().map(|c| cpu_seconds(c.id())).collect();
    let db_cpu_s = match &pg {
        Some(db) => Some(backend_cpu(db).await),
        None => None,
    };
    let pids: Vec<u32> = children.iter().map(|c| c.id()).collect();
    let end = Utc::now();
    for c in &mut children {
        stop(c);
    }
    let from = (start.timestamp() + size.warmup as i64) * 1000;
    let to = (end.timestamp() - 1) * 1000;
    let text = std::fs::read_to_string(dir.path().join("executions")).unwrap_or_default();
    let mut seen: HashMap<(&str, i64), usize> = HashMap::new();
    let mut late_us = Vec::new();
    let mut per_pid: HashMap<u32, usize> = HashMap::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(job), Some(tick), Some(late), Some(pid)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let tick: i64 = tick.parse().unwrap_or(0);
        *seen.entry((job, tick)).or_default() += 1;
        if (from..to).contains(&tick) {
            late_us.push(late.parse::<i64>().unwrap_or(0));
            *per_pid.entry(pid.parse().unwrap_or(0)).or_default() += 1;
        }
    }
    let in_window = seen.keys().filter(|(_, t)| (from..to).contains(t)).count();
    let expected = size.jobs * usize::try_from((to - from) / 1000).unwrap_or(0);
    late_us.sort_unstable();
    let pct = |p: f64| {
        late_us
            .get(((late_us.len() as f64 * p) as usize).min(late_us.len().saturating_sub(1)))
            .map_or(0.0, |us| *us as f64 / 1000.0)
    };
    Load {
        runs_per_s: late_us.len() as f64 / ((to - from) as f64 / 1000.0).max(1.0),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        doubled: seen.values().filter(|n| **n > 1).count(),
        lost: expected.saturating_sub(in_window),
        cpu_s,
        db_cpu_s,
        per_replica: pids
            .iter()
            .map(|p| per_pid.get(p).copied().unwrap_or(0))
            .collect(),
    }
}

/// SIGKILLs the replica running the `long` job; returns the seconds from the kill to the
/// run's `interrupted` mark and to the start of the catch-up run (on another replica).
async fn takeover(size: &Size) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
    std::fs::write(
        dir.path().join("jobs/long.yaml"),
        "name: long\njob: long\nschedule: {every: 1h}\nmisfire: run_once\noverlap: skip\n\
         timeout: 30m\n",
    )
    .unwrap();
    let db = TestDb::create().await;
    let pool = sqlx::PgPool::connect(db.url()).await.expect("connect");
    // The job's first run comes from the replicas' start-up catch-up: a past tick of the job
    // is recorded before they start (the schema made by opening the store here).
    let store = soarjobd_store::open(db.url())
        .await
        .expect("open the store");
    store.close().await;
    sqlx::query(
        "INSERT INTO job_runs (job_id, scheduled_at, \"trigger\", status, started_at, \
                               finished_at, duration_ms) \
         VALUES ('long', 0, 'schedule', 'succeeded', 0, 0, 0)",
    )
    .execute(&pool)
    .await
    .expect("seed a past tick");
    let mut children: Vec<Proc> = (0..3)
        .map(|_| spawn(dir.path(), db.url(), size.takeover_timings))
        .collect();
    let waited = Instant::now();
    let (run, pid) = loop {
        if waited.elapsed() > Duration::from_secs(60) {
            let rows: Vec<(i64, String, String, i64)> = sqlx::query_as(
                "SELECT id, \"trigger\", status, scheduled_at FROM job_runs ORDER BY id",
            )
            .fetch_all(&pool)
            .await
            .unwrap_or_default();
            panic!("the long job's catch-up run never started: {rows:?}");
        }
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT id, owner_pid FROM job_runs WHERE status = 'running' AND job_id = 'long'",
        )
        .fetch_optional(&pool)
        .await
        .unwrap_or(None);
        if let Some(r) = row {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let victim = children
        .iter()
        .position(|c| i64::from(c.id()) == pid)
        .expect("the owner is one of the replicas");
    let killed = Instant::now();
    // SAFETY: a signal to our own child.
    unsafe {
        libc::kill(children[victim].id() as i32, libc::SIGKILL);
    }
    let _ = children[victim].wait();
    let (mut interrupted, mut caught_up) = (None, None);
    let limit = killed + Duration::from_secs(90);
    while (interrupted.is_none() || caught_up.is_none()) && Instant::now() < limit {
        if interrupted.is_none() {
            let s: String = sqlx::query_scalar("SELECT status FROM job_runs WHERE id = $1")
                .bind(run)
                .fetch_one(&pool)
                .await
                .expect("status");
            if s == "interrupted" {
                interrupted = Some(killed.elapsed());
            }
        }
        if caught_up.is_none() {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM job_runs WHERE job_id = 'long' AND id > $1 \
                 AND \"trigger\" = 'catch_up'",
            )
            .bind(run)
            .fetch_one(&pool)
            .await
            .expect("count");
            if n > 0 {
                caught_up = Some(killed.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (i, c) in children.iter_mut().enumerate() {
        if i != victim {
            stop(c);
        }
    }
    pool.close().await;
    let interrupted = interrupted.expect("the killed replica's run was never taken over");
    let caught_up = caught_up.expect("no catch-up run after the takeover");
    (interrupted.as_secs_f64(), caught_up.as_secs_f64())
}

// --- Long ticks: 20 exec jobs whose runs take ~0.9 s ------------------------------------------

/// One setup of the long-ticks case, counted from the rows and from what the jobs ran.
struct LongSetup {
    name: String,
    /// Ticks of the measured window (jobs x seconds).
    possible: usize,
    ran: usize,
    /// `overlap: skip`: the previous run (here or on another replica) still going at the tick.
    skipped: usize,
    /// The killed replicas' runs going at the kill and their jobs' ticks until another replica
    /// took each over.
    lost_to_kills: usize,
    /// Ticks nobody ran otherwise (no row, or a row interrupted).
    missing: usize,
    /// Claim keys executed more than once.
    doubled: usize,
    /// Catch-up runs of the killed replicas' jobs, and (job, kill) pairs caught up more than
    /// once.
    catch_ups: usize,
    caught_up_twice: usize,
    /// Per victim job and kill: seconds from the SIGKILL to the job's first run elsewhere.
    takeovers: Vec<f64>,
}

struct LongTicks {
    setups: Vec<LongSetup>,
}

impl LongTicks {
    fn print(&self, size: &Size) {
        println!(
            "long ticks: 20 exec jobs every 1s (sh + sleep 0.9), overlap skip, misfire run_once, \
             {} s each (measured after {} s); kills every {} s",
            size.long_secs, size.warmup, size.kill_every
        );
        println!(
            "| setup | ticks | ran | skipped (overlap) | lost to kills | missing otherwise | doubled | catch-ups (twice) | takeover s mean / max |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for r in &self.setups {
            let takeover = if r.takeovers.is_empty() {
                "-".to_string()
            } else {
                let mean = r.takeovers.iter().sum::<f64>() / r.takeovers.len() as f64;
                let max = r.takeovers.iter().copied().fold(0.0, f64::max);
                format!("{mean:.1} / {max:.1}")
            };
            println!(
                "| {} | {} | {} ({:.1} %) | {} | {} | {} | {} | {} ({}) | {takeover} |",
                r.name,
                r.possible,
                r.ran,
                r.ran as f64 * 100.0 / r.possible.max(1) as f64,
                r.skipped,
                r.lost_to_kills,
                r.missing,
                r.doubled,
                r.catch_ups,
                r.caught_up_twice,
            );
        }
    }

    fn check(&self) {
        for r in &self.setups {
            assert_eq!(r.doubled, 0, "a tick ran twice: {}", r.name);
            assert_eq!(r.caught_up_twice, 0, "a job caught up twice: {}", r.name);
            assert!(r.ran > 0, "nothing ran: {}", r.name);
        }
    }
}

/// A `soarjobd run` process (the real binary) on `url`, its output in `<dir>/<name>.log`.
fn soarjobd(dir: &Path, url: &str, name: &str, timings: Option<(&str, &str)>) -> Proc {
    let out = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file");
    let err = out.try_clone().expect("log file");
    let mut c = Command::new(env!("CARGO_BIN_EXE_soarjobd"));
    c.arg("run")
        .current_dir(dir)
        .env_remove("SOARJOBD_CONFIG")
        .env_remove("RUST_LOG")
        .env("SOARJOBD__JOBS_DIR", dir.join("jobs"))
        .env("SOARJOBD__DATABASE_URL", url)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    if let Some((h, d)) = timings {
        c.env("SOARJOBD__CLUSTER__HEARTBEAT", h)
            .env("SOARJOBD__CLUSTER__DEAD_AFTER", d);
    }
    Proc(c.spawn().expect("start soarjobd"))
}

/// The three setups, one after the other: 3 replicas, 3 replicas with one SIGKILLed every
/// `kill_every` seconds (restarted half a second later), one SQLite daemon.
async fn long_ticks(size: &Size) -> LongTicks {
    let mut setups = Vec::new();
    for (name, replicas, kills) in [
        ("PostgreSQL, 3 replicas", 3, false),
        (
            "PostgreSQL, 3 replicas, one SIGKILLed every interval",
            3,
            true,
        ),
        ("SQLite, 1 daemon", 1, false),
    ] {
        eprintln!("cluster bench: long ticks, {name}...");
        setups.push(long_setup(size, name, replicas, kills).await);
    }
    LongTicks { setups }
}

async fn long_setup(size: &Size, name: &str, replicas: usize, kills: bool) -> LongSetup {
    const JOBS: usize = 20;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
    let ran_file = dir.path().join("ran");
    for n in 0..JOBS {
        std::fs::write(
            dir.path().join(format!("jobs/j{n:02}.yaml")),
            format!(
                "name: j{n:02}\njob: exec\nschedule: {{every: 1s}}\noverlap: skip\n\
                 misfire: run_once\n\
                 command: [/bin/sh, -c, 'echo $SOARJOBD_RUN_ID >> {}; sleep 0.9']\n",
                ran_file.display()
            ),
        )
        .unwrap();
    }
    let pg = if replicas > 1 {
        Some(TestDb::create().await)
    } else {
        None
    };
    let url = match &pg {
        Some(db) => db.url().to_string(),
        None => format!("sqlite:{}", dir.path().join("state.db").display()),
    };
    let timings = size.takeover_timings;
    let start = Utc::now();
    let mut procs: Vec<Proc> = (0..replicas)
        .map(|i| soarjobd(dir.path(), &url, &format!("r{i}-0"), timings))
        .collect();
    // (pid, unix ms of the SIGKILL)
    let mut killed: Vec<(i64, i64)> = Vec::new();
    let began = Instant::now();
    let mut round = 0;
    loop {
        let next = Duration::from_secs(size.kill_every * (round + 1));
        if !kills || next + Duration::from_secs(3) > Duration::from_secs(size.long_secs) {
            break;
        }
        tokio::time::sleep(next.saturating_sub(began.elapsed())).await;
        let i = round as usize % replicas;
        let pid = i64::from(procs[i].id());
        // SAFETY: a signal to our own child.
        unsafe {
            libc::kill(procs[i].id() as i32, libc::SIGKILL);
        }
        let _ = procs[i].wait();
        killed.push((pid, Utc::now().timestamp_millis()));
        tokio::time::sleep(Duration::from_millis(500)).await;
        round += 1;
        procs[i] = soarjobd(dir.path(), &url, &format!("r{i}-{round}"), timings);
    }
    tokio::time::sleep(Duration::from_secs(size.long_secs).saturating_sub(began.elapsed())).await;
    let end = Utc::now();
    for p in &mut procs {
        stop(p);
    }
    let store = soarjobd_store::open(&url).await.expect("open the store");
    let mut rows = Vec::new();
    for n in 0..JOBS {
        rows.extend(
            store
                .history(&format!("j{n:02}"), 100_000)
                .await
                .expect("history"),
        );
    }
    store.close().await;
    let executed: Vec<i64> = std::fs::read_to_string(&ran_file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    use soarjobd_core::store::{RunStatus, Trigger};
    let by_id: HashMap<i64, &soarjobd_core::store::RunRecord> =
        rows.iter().map(|r| (r.id, r)).collect();
    let ran_ids: std::collections::HashSet<i64> = executed.iter().copied().collect();
    let mut per_key: HashMap<(&str, i64), usize> = HashMap::new();
    for id in &executed {
        if let Some(r) = by_id.get(id) {
            *per_key
                .entry((r.job_id.as_str(), r.scheduled_at.timestamp_millis()))
                .or_default() += 1;
        }
    }
    let pid_of = |r: &soarjobd_core::store::RunRecord| r.owner.as_ref().map_or(0, |o| o.pid);
    let ms = |t: chrono::DateTime<Utc>| t.timestamp_millis();
    // Each kill's victim jobs (the killed replica claimed one of their ticks in the 1.5 s
    // before) and when each ran again elsewhere.
    let mut victims: Vec<(usize, String, i64)> = Vec::new();
    for (k, (pid, at)) in killed.iter().enumerate() {
        let mut jobs: Vec<&str> = rows
            .iter()
            .filter(|r| {
                pid_of(r) == *pid
                    && r.trigger == Trigger::Schedule
                    && (at - 1500..=*at).contains(&ms(r.scheduled_at))
            })
            .map(|r| r.job_id.as_str())
            .collect();
        jobs.sort_unstable();
        jobs.dedup();
        for job in jobs {
            let taken = rows
                .iter()
                .filter(|r| {
                    r.job_id == job
                        && pid_of(r) != *pid
                        && ms(r.started_at) > *at
                        && ran_ids.contains(&r.id)
                })
                .map(|r| ms(r.started_at))
                .min()
                .unwrap_or(i64::MAX);
            victims.push((k, job.to_string(), taken));
        }
    }
    let killed_pids: Vec<i64> = killed.iter().map(|(p, _)| *p).collect();
    let mut outcome: HashMap<(&str, i64), &str> = HashMap::new();
    for r in rows.iter().filter(|r| r.trigger == Trigger::Schedule) {
        let o = match r.status {
            RunStatus::Succeeded => "ran",
            RunStatus::Skipped => "skipped",
            RunStatus::Interrupted if killed_pids.contains(&pid_of(r)) => "killed",
            _ => "missing",
        };
        outcome.insert((r.job_id.as_str(), ms(r.scheduled_at)), o);
    }
    let from = (start.timestamp() + size.warmup as i64) * 1000;
    let to = (end.timestamp() - 2) * 1000;
    let mut setup = LongSetup {
        name: name.to_string(),
        possible: 0,
        ran: 0,
        skipped: 0,
        lost_to_kills: 0,
        missing: 0,
        doubled: per_key.values().filter(|n| **n > 1).count(),
        catch_ups: 0,
        caught_up_twice: 0,
        takeovers: victims
            .iter()
            .filter(|(_, _, taken)| *taken < i64::MAX)
            .map(|(k, _, taken)| (taken - killed[*k].1) as f64 / 1000.0)
            .collect(),
    };
    for n in 0..JOBS {
        let job = format!("j{n:02}");
        for t in (from..to).step_by(1000) {
            setup.possible += 1;
            match outcome.get(&(job.as_str(), t)).copied() {
                Some("ran") => setup.ran += 1,
                Some("skipped") => setup.skipped += 1,
                Some("killed") => setup.lost_to_kills += 1,
                _ => {
                    let excused = victims.iter().any(|(k, j, taken)| {
                        *j == job && (killed[*k].1 - 1000..=taken.saturating_add(1000)).contains(&t)
                    });
                    if excused {
                        setup.lost_to_kills += 1;
                    } else {
                        setup.missing += 1;
                    }
                }
            }
        }
    }
    let mut catch_ups: HashMap<(usize, &str), usize> = HashMap::new();
    for r in rows
        .iter()
        .filter(|r| r.trigger == Trigger::CatchUp && ran_ids.contains(&r.id) && r.started_at < end)
    {
        if let Some(k) = killed.iter().rposition(|(_, at)| ms(r.started_at) > *at) {
            *catch_ups.entry((k, r.job_id.as_str())).or_default() += 1;
        }
    }
    setup.catch_ups = catch_ups.values().sum();
    setup.caught_up_twice = catch_ups.values().filter(|n| **n > 1).count();
    if setup.caught_up_twice > 0 || setup.missing > 0 {
        eprintln!(
            "{name}: caught up twice {:?}; logs kept in {}",
            catch_ups
                .iter()
                .filter(|(_, n)| **n > 1)
                .collect::<Vec<_>>(),
            dir.path().display()
        );
        let _ = dir.keep();
    }
    setup
}

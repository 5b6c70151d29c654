//! Soak benchmark: the daemon over minutes, with a stall and a stream of edits. Prints a table.
//!
//! `cargo bench --bench soak` runs the full soak: 1,000 jobs `every: 1s` for 10 minutes, the
//! daemon frozen with SIGSTOP for 5 s in the middle, and one job file edited every 10 s. Under
//! `cargo test` (no `--bench` argument) it runs a small smoke version (20 jobs, 16 s) so CI
//! proves the benchmark still works and that its invariants hold: exactly one reload per edit
//! (and no reload without one), no tick run twice, and the daemon stops cleanly on SIGTERM.
//!
//! The daemon runs in a child process of this binary (re-executed with `SOARJOBD_SOAK_DIR`),
//! so its RSS and CPU time are its own and it can be frozen with SIGSTOP. It logs JSON to
//! stderr, which this process reads to count log lines and events; after it stops, the run
//! rows in its SQLite file tell which ticks ran.
//!
//! What is reported:
//! * RSS after warm-up and at the end (growth should stay within 5 %);
//! * CPU time of the daemon per run;
//! * ticks missed, split into those during the SIGSTOP (expected: a frozen process runs
//!   nothing) and those outside it (expected: 0);
//! * ticks run twice (must be 0: a tick is claimed once);
//! * log lines per minute, and reloads against edits (one each).

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use soarjobd_core::config::{LogFormat, Settings};
use soarjobd_core::definition::JobSpec;
use soarjobd_core::{Job, JobContext, JobError, Outcome};
use soarjobd_engine::Daemon;

struct Size {
    jobs: usize,
    /// Total length of the soak.
    secs: u64,
    /// Measurement starts after this warm-up (startup, first claims, page cache).
    warmup: u64,
    /// When the SIGSTOP starts, from the start, and how long it lasts.
    stop_at: u64,
    stop_for: u64,
    /// One job file is edited this often.
    edit_every: u64,
}

const FULL: Size = Size {
    jobs: 1000,
    secs: 600,
    warmup: 20,
    stop_at: 300,
    stop_for: 5,
    edit_every: 10,
};
const SMOKE: Size = Size {
    jobs: 20,
    secs: 16,
    warmup: 3,
    stop_at: 8,
    stop_for: 2,
    edit_every: 4,
};

fn main() {
    if let Ok(dir) = std::env::var("SOARJOBD_SOAK_DIR") {
        daemon_child(Path::new(&dir));
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let mut size = if full { FULL } else { SMOKE };
    // `SOARJOBD_SOAK_EXEC=N`: N `exec` jobs running `sh -c "echo tick N"` instead of the no-op
    // jobs (the process spawn, containment record and cgroup included).
    if let Some(n) = exec_jobs() {
        size.jobs = n;
    }
    let report = soak(&size);
    report.print(&size);
    // Invariants that hold on any machine, however loaded (no timing in them).
    assert!(
        report.clean_exit,
        "the daemon did not stop cleanly on SIGTERM"
    );
    assert_eq!(report.doubled, 0, "a tick ran twice");
    assert_eq!(
        report.job_changes, report.edits,
        "expected exactly one reload (changed job) per edit"
    );
    assert_eq!(
        report.folder_reloads, report.edits,
        "expected exactly one `jobs folder reloaded` per edit (no reload storm)"
    );
    assert!(report.runs > 0, "nothing ran");
}

/// A job that does nothing: the soak measures the daemon, not the work.
struct Noop;

impl JobSpec for Noop {}

#[async_trait]
impl Job for Noop {
    fn id(&self) -> &'static str {
        "noop"
    }
    async fn run(&self, _ctx: &mut JobContext) -> Result<Outcome, JobError> {
        Ok(Outcome::succeeded(""))
    }
}

/// The daemon under test: the library's daemon with the no-op job, logging JSON to stderr.
fn daemon_child(dir: &Path) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    soarjobd_engine::telemetry::init(LogFormat::Json, "info");
    rt.block_on(async {
        let settings = Settings {
            jobs_dir: dir.join("jobs"),
            database_url: format!("sqlite:{}", dir.join("soak.db").display()),
            shutdown_grace: Duration::from_secs(10),
            ..Settings::default()
        };
        // 300 runs per job (5 minutes of a job every second) instead of the default 1,000, so
        // the database reaches the bound in force half-way and the second half shows it hold.
        let mut settings = settings;
        settings.history.keep_runs = 300;
        let daemon = Daemon::builder()
            .settings(settings)
            .register(Noop)
            .register(soarjobd_jobs::exec::Exec)
            .start()
            .await
            .expect("daemon starts");
        daemon.run_until_signal().await;
    });
}

fn exec_jobs() -> Option<usize> {
    std::env::var("SOARJOBD_SOAK_EXEC").ok()?.parse().ok()
}

fn job_file(i: usize, edit: usize) -> String {
    if exec_jobs().is_some() {
        return format!(
            "name: Soak job {i}\njob: exec\ndescription: edit {edit}\nschedule: {{every: 1s}}\n\
             timeout: 30s\ncommand: [sh, -c, 'echo tick {i}']\n"
        );
    }
    format!(
        "name: Soak job {i}\njob: noop\ndescription: edit {edit}\nschedule: {{every: 1s}}\n\
         timeout: 30s\n"
    )
}

#[derive(Default)]
struct LogCounts {
    lines: u64,
    /// Lines per whole minute since the start.
    per_minute: BTreeMap<u64, u64>,
    /// `job loaded` with `changed: true`: a reload that applied an edit.
    job_changes: u64,
    /// `jobs folder reloaded` at info.
    folder_reloads: u64,
    errors: u64,
    /// Sum of `missed` over `ticks missed` events.
    missed_logged: u64,
    first_error: Option<String>,
}

struct Report {
    runs: u64,
    rss_start_kb: u64,
    rss_end_kb: u64,
    /// RSS, CPU and database size sampled every second.
    rss_samples: Vec<Sample>,
    cpu_s: f64,
    missed_in_stop: u64,
    missed_outside: u64,
    doubled: u64,
    edits: u64,
    job_changes: u64,
    folder_reloads: u64,
    log_lines_per_min: f64,
    /// None when the soak is shorter than a whole measured minute.
    max_lines_in_a_minute: Option<u64>,
    errors: u64,
    first_error: Option<String>,
    missed_logged: u64,
    clean_exit: bool,
    measured_s: u64,
}

/// One sample of the daemon, taken every second.
struct Sample {
    /// Seconds since the start.
    s: u64,
    rss_kb: u64,
    cpu_ticks: u64,
    /// The database file and its WAL.
    db_bytes: u64,
}

fn db_bytes(db: &Path) -> u64 {
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    size(db) + size(&db.with_extension("db-wal"))
}

fn soak(size: &Size) -> Report {
    let dir = tempfile::tempdir().expect("temp dir");
    let jobs_dir = dir.path().join("jobs");
    std::fs::create_dir_all(&jobs_dir).unwrap();
    for i in 0..size.jobs {
        std::fs::write(jobs_dir.join(format!("j{i:05}.yaml")), job_file(i, 0)).unwrap();
    }
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Command::new(exe)
        .env("SOARJOBD_SOAK_DIR", dir.path())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the daemon child");
    let pid = child.id() as libc::pid_t;
    let t0 = Instant::now();
    let counts = Arc::new(Mutex::new(LogCounts::default()));
    let reader = {
        let stderr = child.stderr.take().unwrap();
        let counts = counts.clone();
        std::thread::spawn(move || count_logs(stderr, t0, &counts))
    };

    let at = |s: u64| t0 + Duration::from_secs(s);
    sleep_until(at(size.warmup));
    let warm_wall = Utc::now();
    let rss_start_kb = rss_kb(pid);
    // RSS once a second, to tell a plateau (caches filling up) from steady growth (a leak).
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        let db = dir.path().join("soak.db");
        std::thread::spawn(move || {
            let mut out = Vec::new();
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                out.push(Sample {
                    s: t0.elapsed().as_secs(),
                    rss_kb: rss_kb(pid),
                    cpu_ticks: cpu_ticks(pid),
                    db_bytes: db_bytes(&db),
                });
                std::thread::sleep(Duration::from_secs(1));
            }
            out
        })
    };
    let cpu_start = cpu_ticks(pid);

    // Edits at fixed offsets; the stop in between. Edits are skipped while the daemon is
    // frozen (its watcher would see them all at once after SIGCONT, merged into one reload).
    let mut edits = 0u64;
    let mut stop_window: Option<(DateTime<Utc>, DateTime<Utc>)> = None;
    let mut next_edit = size.warmup + size.edit_every;
    let end = size.secs;
    loop {
        let stop_due = stop_window.is_none() && size.stop_at <= next_edit;
        let next = if stop_due { size.stop_at } else { next_edit };
        if next >= end {
            break;
        }
        sleep_until(at(next));
        if stop_due {
            let from = Utc::now();
            // SAFETY: signalling our own child process.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
            std::thread::sleep(Duration::from_secs(size.stop_for));
            unsafe { libc::kill(pid, libc::SIGCONT) };
            stop_window = Some((from, Utc::now()));
            // The next edit comes a full period after the daemon resumed.
            next_edit = next_edit.max(size.stop_at + size.stop_for + size.edit_every / 2);
        } else {
            edits += 1;
            write_atomically(&jobs_dir.join("j00000.yaml"), &job_file(0, edits as usize));
            next_edit += size.edit_every;
        }
    }
    sleep_until(at(end));
    let end_wall = Utc::now();
    let rss_end_kb = rss_kb(pid);
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let rss_samples = sampler.join().unwrap_or_default();
    let cpu_end = cpu_ticks(pid);

    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let clean_exit = wait_with_timeout(&mut child, Duration::from_secs(60));
    reader.join().ok();

    let ticks = tick_rows(&dir.path().join("soak.db"));
    let (runs, doubled, missed_in_stop, missed_outside) =
        tick_stats(&ticks, size.jobs, warm_wall, end_wall, stop_window);

    let c = counts.lock().unwrap();
    let measured_s = size.secs - size.warmup;
    let window_minutes: Vec<u64> = c
        .per_minute
        .iter()
        .filter(|(m, _)| **m * 60 >= size.warmup && (**m + 1) * 60 <= size.secs)
        .map(|(_, n)| *n)
        .collect();
    Report {
        runs,
        rss_start_kb,
        rss_end_kb,
        rss_samples,
        cpu_s: (cpu_end.saturating_sub(cpu_start)) as f64 / clock_ticks_per_s(),
        missed_in_stop,
        missed_outside,
        doubled,
        edits,
        job_changes: c.job_changes,
        folder_reloads: c.folder_reloads,
        log_lines_per_min: c.lines as f64 / (size.secs as f64 / 60.0),
        max_lines_in_a_minute: window_minutes.iter().copied().max(),
        errors: c.errors,
        first_error: c.first_error.clone(),
        missed_logged: c.missed_logged,
        clean_exit,
        measured_s,
    }
}

impl Report {
    fn print(&self, size: &Size) {
        let growth = if self.rss_start_kb > 0 {
            (self.rss_end_kb as f64 / self.rss_start_kb as f64 - 1.0) * 100.0
        } else {
            0.0
        };
        println!(
            "\n### Soak: {} jobs `every: 1s` for {} s, SIGSTOP {} s at {} s, an edit every {} s \
             (measured after {} s of warm-up)\n",
            size.jobs, size.secs, size.stop_for, size.stop_at, size.edit_every, size.warmup
        );
        println!("| measure | result |");
        println!("|---|---:|");
        println!(
            "| runs in the measured {} s | {} |",
            self.measured_s, self.runs
        );
        println!(
            "| RSS after warm-up -> at the end | {:.1} MB -> {:.1} MB ({growth:+.1} %) |",
            self.rss_start_kb as f64 / 1024.0,
            self.rss_end_kb as f64 / 1024.0
        );
        // RSS at each quarter of the measured time: a plateau is caches (SQLite's page cache
        // per connection, allocator arenas) filling up; steady growth would be a leak.
        let at = |q: u64| {
            let t = size.warmup + (size.secs - size.warmup) * q / 4;
            self.rss_samples
                .iter()
                .rfind(|x| x.s <= t)
                .map(|x| format!("{:.1}", x.rss_kb as f64 / 1024.0))
                .unwrap_or_else(|| "-".into())
        };
        println!(
            "| RSS at 1/4, 1/2, 3/4 of the measured time and at the end | {} / {} / {} / {:.1} MB |",
            at(1),
            at(2),
            at(3),
            self.rss_end_kb as f64 / 1024.0
        );
        println!(
            "| daemon CPU per run | {:.1} µs ({:.1} CPU s in all) |",
            if self.runs > 0 {
                self.cpu_s * 1e6 / self.runs as f64
            } else {
                0.0
            },
            self.cpu_s
        );
        // Per whole minute: RSS and database size at its end, daemon CPU per run in it (every
        // job runs once a second, so a minute holds jobs x 60 runs; the minute with the
        // SIGSTOP holds fewer).
        let tick = clock_ticks_per_s();
        let minutes = size.secs / 60;
        let mut per_minute = Vec::new();
        for m in 1..=minutes {
            let find = |t: u64| self.rss_samples.iter().rfind(|x| x.s <= t);
            if let (Some(a), Some(b)) = (find((m - 1) * 60), find(m * 60))
                && b.s > a.s
            {
                let runs = size.jobs as f64 * (b.s - a.s) as f64;
                let cpu_us = (b.cpu_ticks.saturating_sub(a.cpu_ticks)) as f64 / tick * 1e6;
                per_minute.push(format!(
                    "{m}: {:.0} µs, {:.1} MB, {:.1} MB",
                    cpu_us / runs,
                    b.rss_kb as f64 / 1024.0,
                    b.db_bytes as f64 / 1e6
                ));
            }
        }
        if !per_minute.is_empty() {
            println!(
                "| per minute: daemon CPU per run, RSS, database size | {} |",
                per_minute.join("; ")
            );
        }
        println!(
            "| ticks missed during the SIGSTOP (expected) | {} |",
            self.missed_in_stop
        );
        println!(
            "| ticks missed outside the SIGSTOP | {} |",
            self.missed_outside
        );
        println!(
            "| ticks missed, as logged (`ticks missed`) | {} |",
            self.missed_logged
        );
        println!("| ticks run twice | {} |", self.doubled);
        println!(
            "| log lines per minute (average / busiest whole minute) | {:.0} / {} |",
            self.log_lines_per_min,
            self.max_lines_in_a_minute
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into())
        );
        println!(
            "| edits -> reloads that changed a job / `jobs folder reloaded` lines | {} -> {} / {} |",
            self.edits, self.job_changes, self.folder_reloads
        );
        println!("| error lines | {} |", self.errors);
        if let Some(e) = &self.first_error {
            println!("\nfirst error line: {e}");
        }
    }
}

fn count_logs(stderr: impl std::io::Read, t0: Instant, counts: &Mutex<LogCounts>) {
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        let minute = t0.elapsed().as_secs() / 60;
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        let msg = v["message"].as_str().unwrap_or("");
        let mut c = counts.lock().unwrap();
        c.lines += 1;
        *c.per_minute.entry(minute).or_default() += 1;
        match msg {
            "job loaded" if v["changed"].as_bool() == Some(true) => c.job_changes += 1,
            "jobs folder reloaded" => c.folder_reloads += 1,
            "ticks missed" => c.missed_logged += v["missed"].as_u64().unwrap_or(0),
            _ => {}
        }
        if v["level"].as_str() == Some("ERROR") {
            c.errors += 1;
            c.first_error.get_or_insert(line.clone());
        }
    }
}

/// (job_id, scheduled_at ms) of every scheduled or catch-up run.
fn tick_rows(db: &Path) -> Vec<(String, i64)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = soarjobd_store::SqliteStore::open(&format!("sqlite:{}", db.display()))
            .await
            .expect("open the soak database");
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT job_id, scheduled_at FROM job_runs WHERE trigger IN ('schedule', 'catch_up')",
        )
        .fetch_all(store.pool())
        .await
        .expect("read runs");
        rows
    })
}

/// (runs, doubled, missed during the stop, missed outside it) over whole seconds in
/// `[from, to)`. A tick counts as "during the stop" if it falls within it or within a second
/// of either end (the one in flight when the process froze or thawed).
fn tick_stats(
    rows: &[(String, i64)],
    jobs: usize,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    stop: Option<(DateTime<Utc>, DateTime<Utc>)>,
) -> (u64, u64, u64, u64) {
    let first = from.timestamp() + 1;
    let last = to.timestamp() - 1;
    let mut seen = HashSet::new();
    let mut doubled = 0u64;
    let mut runs = 0u64;
    for (job, ms) in rows {
        if !seen.insert((job.as_str(), *ms)) {
            doubled += 1;
        }
        let s = ms.div_euclid(1000);
        if s >= first && s < last {
            runs += 1;
        }
    }
    let (mut in_stop, mut outside) = (0u64, 0u64);
    let per_second = {
        let mut m: BTreeMap<i64, u64> = BTreeMap::new();
        for (_, ms) in rows {
            if ms.rem_euclid(1000) == 0 {
                *m.entry(ms / 1000).or_default() += 1;
            }
        }
        m
    };
    for s in first..last {
        let have = per_second.get(&s).copied().unwrap_or(0);
        let missing = (jobs as u64).saturating_sub(have);
        if missing == 0 {
            continue;
        }
        let during = stop.is_some_and(|(a, b)| s >= a.timestamp() - 1 && s <= b.timestamp() + 1);
        if during {
            in_stop += missing;
        } else {
            outside += missing;
        }
    }
    (runs, doubled, in_stop, outside)
}

fn write_atomically(path: &PathBuf, text: &str) {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

fn wait_with_timeout(child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

fn rss_kb(pid: libc::pid_t) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: libc::pid_t) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // The command name (field 2) may hold spaces; the fields after its closing paren are
    // space-separated, utime and stime being the 14th and 15th fields of the whole line.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

//! Test support: an in-process daemon per test (its own temp dir, SQLite file and jobs
//! folder), test-only job implementations, and log capture (shown with `TEST_LOG=1`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use soarjobd_core::config::{LogFormat, Settings};
use soarjobd_core::definition::{JobSpec, ParamSpec, ParamType};
use soarjobd_core::store::{RunRecord, RunStatus, Store};
use soarjobd_core::{Job, JobContext, JobError, Outcome};
use soarjobd_engine::RunningDaemon;

/// A buffer that collects log output so tests can assert on it.
#[derive(Clone, Default)]
pub struct LogBuf(pub Arc<Mutex<Vec<u8>>>);

impl LogBuf {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if std::env::var("TEST_LOG").is_ok() {
            let _ = std::io::stderr().write_all(buf);
        }
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuf {
    type Writer = LogBuf;
    fn make_writer(&'a self) -> LogBuf {
        self.clone()
    }
}

/// Captures this test's logs (JSON lines) for the lifetime of the guard. The subscriber is
/// thread-local, so tests use the current-thread runtime (`#[tokio::test]`'s default).
pub fn capture_logs() -> (LogBuf, tracing::subscriber::DefaultGuard) {
    // While only one dispatcher exists, tracing-core caches each callsite's interest from
    // whichever thread reaches it first, for all threads: a test without a subscriber could
    // then disable an event for a test that captures. A second dispatcher kept alive for the
    // whole process keeps tracing-core on its general path (interest combined over live
    // dispatchers), and the rebuild drops anything cached before it existed.
    static SECOND: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
    SECOND.get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
    let buf = LogBuf::default();
    let sub = soarjobd_engine::telemetry::subscriber(
        LogFormat::Json,
        tracing_subscriber::EnvFilter::new("debug"),
        buf.clone(),
    );
    let guard = tracing::subscriber::set_default(sub);
    tracing::callsite::rebuild_interest_cache();
    (buf, guard)
}

/// One test's world: a temp folder with `jobs/` and a SQLite file.
pub struct TestApp {
    pub dir: tempfile::TempDir,
    pub settings: Settings,
}

impl TestApp {
    pub fn new() -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let jobs = dir.path().join("jobs");
        std::fs::create_dir_all(&jobs).unwrap();
        let settings = Settings {
            jobs_dir: jobs,
            database_url: format!("sqlite:{}", dir.path().join("state.db").display()),
            shutdown_grace: Duration::from_secs(10),
            reload_poll: Duration::from_secs(1),
            ..Settings::default()
        };
        TestApp { dir, settings }
    }

    pub fn jobs_dir(&self) -> &Path {
        &self.settings.jobs_dir
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `jobs/<id>.yaml`.
    pub fn write_job(&self, id: &str, yaml: &str) {
        let tmp = self.jobs_dir().join(format!(".{id}.tmp"));
        std::fs::write(&tmp, yaml).unwrap();
        // Rename, so the watcher never sees a half-written file.
        std::fs::rename(&tmp, self.jobs_dir().join(format!("{id}.yaml"))).unwrap();
    }

    /// Starts the daemon with the built-ins plus the test jobs.
    pub async fn start(&self) -> RunningDaemon {
        self.builder().start().await.expect("daemon starts")
    }

    /// The daemon of [`TestApp::app`].
    pub fn builder(&self) -> soarjobd_engine::DaemonBuilder {
        self.app().daemon()
    }

    /// This test's app: the built-in jobs and platforms plus the test jobs, from
    /// `self.settings`.
    pub fn app(&self) -> soarjobd::app::App {
        soarjobd::app::App::builder()
            .settings(self.settings.clone())
            .register(Sleep::default())
            .register(Panics)
            .build()
            .expect("the app builds from the test's settings")
    }

    pub async fn store(&self) -> Arc<dyn Store> {
        soarjobd_store::open(&self.settings.database_url)
            .await
            .unwrap()
    }
}

/// All runs of a job, oldest first.
pub async fn runs(store: &Arc<dyn Store>, job_id: &str) -> Vec<RunRecord> {
    let mut r = store.history(job_id, 10_000).await.unwrap();
    r.reverse();
    r
}

pub fn count(runs: &[RunRecord], status: RunStatus) -> usize {
    runs.iter().filter(|r| r.status == status).count()
}

/// Polls `f` until it returns true or `limit` passes; returns the last answer.
pub async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `job: sleep`: sleeps `Millis` ms (watching cancellation unless `Ignore Cancel`), tracking
/// how many runs are in flight at once.
#[derive(Clone, Default)]
pub struct Sleep {
    pub in_flight: Arc<Mutex<(usize, usize)>>,
}

impl JobSpec for Sleep {
    fn parameters(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::new("Millis", ParamType::Integer).default_value("0"),
            ParamSpec::new("Ignore Cancel", ParamType::Boolean).default_value("false"),
            ParamSpec::new("Block", ParamType::Boolean).default_value("false"),
        ]
    }
}

#[async_trait]
impl Job for Sleep {
    fn id(&self) -> &'static str {
        "sleep"
    }
    async fn run(&self, ctx: &mut JobContext) -> Result<Outcome, JobError> {
        let ms = ctx.params().int("Millis")?.unwrap_or(0) as u64;
        let ignore = ctx.params().bool("Ignore Cancel")?.unwrap_or(false);
        if ctx.params().bool("Block")?.unwrap_or(false) {
            // Stalls the whole runtime thread, as a careless blocking call would.
            std::thread::sleep(Duration::from_millis(ms));
            return Ok(Outcome::succeeded("blocked"));
        }
        {
            let mut f = self.in_flight.lock().unwrap();
            f.0 += 1;
            f.1 = f.1.max(f.0);
            ctx.stats().set("max_in_flight", f.1 as i64);
        }
        let sleep = tokio::time::sleep(Duration::from_millis(ms));
        let result = if ignore {
            sleep.await;
            Ok(Outcome::succeeded("slept"))
        } else {
            tokio::select! {
                _ = sleep => Ok(Outcome::succeeded("slept")),
                _ = ctx.cancelled() => Err(JobError::Cancelled),
            }
        };
        self.in_flight.lock().unwrap().0 -= 1;
        ctx.stats().incr("runs");
        result
    }
}

/// `job: panics`: always panics.
pub struct Panics;

impl JobSpec for Panics {}

#[async_trait]
impl Job for Panics {
    fn id(&self) -> &'static str {
        "panics"
    }
    async fn run(&self, _ctx: &mut JobContext) -> Result<Outcome, JobError> {
        panic!("boom in the job");
    }
}

/// A job file for `job: sleep`.
pub fn sleep_job(name: &str, schedule: &str, millis: u64, extra: &str) -> String {
    format!(
        "name: {name}\njob: sleep\nschedule: {schedule}\nparameters:\n  - {{name: Millis, type: integer, value: {millis}}}\n{extra}"
    )
}

/// The real `soarjobd` binary built by cargo for these tests.
pub const SOARJOBD_BIN: &str = env!("CARGO_BIN_EXE_soarjobd");

/// The real binary run in `dir`, on `dir/jobs` and `dir/state.db`, without the caller's
/// `RUST_LOG` (tests read its default output).
pub fn soarjobd_in(dir: &Path, args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(SOARJOBD_BIN);
    c.args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env("SOARJOBD__JOBS_DIR", dir.join("jobs"))
        .env(
            "SOARJOBD__DATABASE_URL",
            format!("sqlite:{}", dir.join("state.db").display()),
        );
    c
}
